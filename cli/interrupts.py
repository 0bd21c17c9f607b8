"""Ctrl-C and SIGTERM for every command: one true line on stderr, exit status 130 or 143.

While a command runs, SIGINT and SIGTERM raise ``Interrupted`` in the main thread. It is a
``KeyboardInterrupt``, so every ``finally`` block and context manager on the way out runs
(the worker pool stops its helpers and unlinks its shared memory, the run folder's lock is
released, a half-written file is removed), and a command whose normal end is Ctrl-C (the
``inspect`` server) can still catch it. The command group (``main.LazyGroup``) catches it,
prints its message and exits with 128 + the signal's number, the status a shell reports
for a process ended by that signal. A command that can stop cleanly between steps
(``train``) calls ``begin_requests()`` before them and ``end_requests()`` after: in between,
the first signal only sets a flag and a second one interrupts at once.

The handlers are installed for the whole command, before click parses anything; a signal
that arrives before the command proper starts (or while the interpreter starts) is held and
raised as soon as it does. Once the command has finished, further signals are ignored: only
the interpreter's exit remains, and it must not print a traceback.
"""

import contextlib
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)

# What a signal does now: "hold" (record it, raise it when the command starts), "raise",
# "request" (the first one only sets a flag) or "ignore" (the command has finished).
_mode = "hold"
_received = []  # signals recorded in "hold" and "request" modes


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the command. ``message`` is the line to print (a default
    naming the signal unless the command gives a truer one); ``exit_code`` is 128 + the
    signal's number; ``repeated`` is True when an earlier signal had asked for a clean stop.
    """

    def __init__(self, signum, message=None, repeated=False):
        self.signum, self.repeated = int(signum), repeated
        self.message_given = message is not None
        self.message = message or f"{verb(signum)} ({signal.Signals(signum).name})"
        super().__init__(self.message)

    @property
    def exit_code(self):
        return 128 + self.signum


def verb(signum):
    """The word for what ``signum`` did: interrupted (SIGINT) or terminated (SIGTERM)."""
    return "terminated" if signum == signal.SIGTERM else "interrupted"


def _handler(signum, frame):
    if _mode == "raise":
        raise Interrupted(signum)
    if _mode == "request":
        if not _received:
            _received.append(signum)
            return
        raise Interrupted(signum, repeated=True)
    if _mode == "hold":
        _received.append(signum)
    # "ignore": the command is over


def install():
    """Route SIGINT and SIGTERM (unless ignored) to this module, holding them until
    ``command`` starts. Returns the previous handlers (for ``restore``), or None outside the
    main thread, where Python cannot install handlers (and signals never raise anyway)."""
    global _mode
    if threading.current_thread() is not threading.main_thread():
        return None
    _mode = "hold"
    _received.clear()
    # A signal ignored from the start stays ignored (nohup, a background job of a script),
    # as Python itself leaves SIGINT then.
    return {s: signal.signal(s, _handler) for s in SIGNALS if signal.getsignal(s) != signal.SIG_IGN}


def restore(previous):
    """Put back the handlers ``install`` replaced (after a command run in-process)."""
    global _mode
    _mode = "ignore"
    for s, h in (previous or {}).items():
        signal.signal(s, h if h is not None else signal.SIG_DFL)


@contextlib.contextmanager
def command():
    """The command proper: a signal held so far is raised now, later ones raise at once;
    ``Interrupted`` becomes its message on stderr and exit status 128 + signum. Afterwards
    signals are ignored until ``restore``."""
    global _mode
    try:
        try:
            _mode = "raise"
            if _received:
                raise Interrupted(_received[0])
            yield
        finally:
            _mode = "ignore"
    except KeyboardInterrupt as exc:  # ours, or raised by other code: a Ctrl-C all the same
        if not isinstance(exc, Interrupted):
            exc = Interrupted(signal.SIGINT)
        import click  # not at import: the handlers are installed before click loads

        click.echo(exc.message, err=True)
        sys.exit(exc.exit_code)


def begin_requests():
    """From now on the first SIGINT or SIGTERM only records a request to stop, which the
    command checks between steps (``requested()``); a second one raises ``Interrupted``
    (``repeated``). Only under ``command()``; elsewhere (a library caller) nothing changes."""
    global _mode
    if _mode == "raise":
        _received.clear()
        _mode = "request"


def end_requests():
    """Signals raise at once again; returns the signal number of a pending request, if any
    (it is then the caller's to act on), else None."""
    global _mode
    if _mode == "request":
        _mode = "raise"
    return requested()


def requested():
    """The signal number of the pending stop request, or None."""
    return _received[0] if _received and _mode != "hold" else None


def ignore_further():
    """From now on signals do nothing: the command has stopped and only reports it."""
    global _mode
    if _mode != "hold":
        _mode = "ignore"
