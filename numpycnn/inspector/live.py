"""``numpycnn train --inspect``: the inspector's server on the run being trained.

The server runs in a process of its own, started by ``start_server`` when the command
starts, before the training reads its data: the training process binds the socket
(so that a port that cannot be bound fails at once, in one line, and the URL is known
before the first request), and a child process, at a lower CPU priority (``NICE``),
serves on it. Measured on 2 shared cores (scripts/bench_live.py), a server thread inside
the training process slowed training by 44% (median of 4 rounds) while a page polled it:
every request's Python work held the interpreter's lock that the training loop needs
between its NumPy calls. A process of its own shares no lock; what remains is its CPU time
(docs/inspect.md, "Speed of the live view"), whose start-up is over before the first batch:
the process imports what it needs, then waits for the run folder (``LiveServer.serve``).

The server only reads the run folder (steps.csv, status.json, snapshots/), which the
training writes anyway; until the first snapshot lands the API answers 503 and the page
waits. The child dies with the training process (``PR_SET_PDEATHSIG`` on Linux, and a
check of its parent), and ``LiveServer.stop`` ends it.
"""

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import webbrowser
from pathlib import Path

import yaml

from .. import runs
from .run import RunView
from .server import make_server
from .sources import config_source, data_loaders

__all__ = ["NICE", "LiveServer", "start_server"]

#: How much lower the server's CPU priority is than the training's (nice(2) increment).
NICE = 10


class LiveServer:
    """The inspector's server process: ``url``, ``process``, ``serve(folder)``, ``stop()``."""

    def __init__(self, process, url):
        self.process, self.url = process, url

    def serve(self, folder, open_browser=False):
        """Serve run ``folder`` (the server waits for it; later calls change nothing but
        the browser), and open the page in the default browser if ``open_browser``."""
        self._hand_over(os.fsencode(folder) + b"\n")
        if open_browser:
            threading.Thread(target=webbrowser.open, args=(self.url,), daemon=True).start()

    def _hand_over(self, line):
        """Write ``line`` (the run folder, or nothing) to the waiting server and close its
        stdin; once only. A server that died meanwhile is left to ``stop`` to reap."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.write(line)
                self.process.stdin.close()
            self.process.stdin = None

    def stop(self):
        """End the server process (SIGTERM, then SIGKILL after 5 s) and reap it."""
        self._hand_over(b"")  # a server still waiting for its folder reads EOF and exits
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(host="127.0.0.1", port=0, data_dir=None, mirrors=None, nice=NICE):
    """Bind ``host``:``port`` and start the server process, which imports what it needs
    and then waits for ``LiveServer.serve(folder)``: ``train --inspect`` starts it before
    it reads its data, so that the server's start-up (about 0.2 s of CPU importing NumPy
    and the inspector) is done before the first batch. ``data_dir`` and ``mirrors``: where
    the test set is found (as for ``inspect``); ``nice``: the server's priority below the
    caller's. OSError when ``host``:``port`` cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family)
    try:
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        # Lowered before anything is imported: Linux gives each thread its own nice value,
        # and NumPy's BLAS starts its threads on import. One BLAS thread: no thread pool
        # spinning on the cores the training needs.
        boot = (
            f"import os, runpy; os.nice({int(nice)}); "
            f"runpy.run_module({__name__!r}, run_name='__main__')"
        )
        command = [sys.executable, "-c", boot, "--fd", str(sock.fileno()),
                   "--parent", str(os.getpid())]  # fmt: skip
        if data_dir is not None:
            command += ["--data-dir", str(data_dir)]
        for mirror in mirrors or ():
            command += ["--mirror", str(mirror)]
        one = {k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        process = subprocess.Popen(
            command,
            env={**os.environ, **one},
            pass_fds=(sock.fileno(),),
            stdin=subprocess.PIPE,  # the run folder, one line (LiveServer.serve)
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    finally:
        sock.close()  # the child holds its own copy
    return LiveServer(process, f"http://{shown}:{bound}/")


#: What the out-of-distribution cue says during train --inspect, which leaves it out.
NO_NOVELTY = (
    "no comparison with the training digits while the run trains: it takes seconds of "
    "CPU that the training needs (numpycnn inspect RUN has it)"
)


def opener_for(folder, data_dir=None, mirrors=None, threads=1, novelty=True):
    """A callable opening run ``folder`` as (its base Inspector, its RunView), for
    ``make_server(opener=...)``: it raises RunFolderError until the first snapshot.
    ``novelty=False`` leaves the out-of-distribution cue out (``NO_NOVELTY``): its
    sample's features are the largest piece of work the page asks for, which during
    ``train --inspect`` would all be taken from the training."""
    folder = Path(folder)
    try:
        config = yaml.safe_load((folder / runs.CONFIG).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        config = None
    test_set, train_set = data_loaders(config_source(config), data_dir, mirrors, config)

    def opener():
        view = RunView.open(
            folder,
            test_set=test_set,
            train_set=train_set if novelty else None,
            threads=threads,
            name=folder.name,
        )
        if not novelty:
            view.base.novelty_error = NO_NOVELTY
        return view.base, view

    return opener


def _die_with(parent):
    """Ask Linux to send SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG), and exit
    now if it is already gone."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:
        sys.exit(0)


def main(argv=None):
    """The server process: serve the run folder named by the one line read from stdin on
    the listening socket ``--fd`` (started by ``start_server``, which lowers its priority
    first)."""
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--data-dir")
    parser.add_argument("--mirror", action="append", default=[])
    args = parser.parse_args(argv)
    _die_with(args.parent)
    sock = socket.socket(fileno=args.fd)
    try:
        folder = os.fsdecode(sys.stdin.buffer.readline().rstrip(b"\n"))  # LiveServer.serve
        if not folder:  # the training ended first (stdin closed)
            return
        server = make_server(
            None,
            sock=sock,
            opener=opener_for(folder, args.data_dir, args.mirror or None, novelty=False),
        )
        try:
            server.serve_forever()
        finally:
            server.server_close()
    except KeyboardInterrupt:  # a Ctrl-C to the terminal's process group: the parent ends us
        pass
    finally:
        sock.close()


if __name__ == "__main__":
    main()
