"""``numpycnn train --inspect``: the inspector's server on the run being trained, in a
background thread of the training process.

The server only reads the run folder (steps.csv, status.json, snapshots/), which the
training writes anyway; the training loop never calls it, waits for it or shares a lock
with it. Until the run's first snapshot lands, the API answers 503 and the page waits.
"""

import threading
import webbrowser
from pathlib import Path

import yaml

from .. import runs
from .run import RunView
from .server import make_server
from .sources import config_source, data_loaders

__all__ = ["LiveServer", "serve_run"]


class LiveServer:
    """A running inspector server on a run folder: ``url``, and ``stop()``."""

    def __init__(self, server, thread):
        self.server, self.thread = server, thread

    @property
    def url(self):
        return self.server.url

    def stop(self):
        """Stop serving and close the socket (waits at most a few seconds)."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def serve_run(
    folder,
    host="127.0.0.1",
    port=0,
    data_dir=None,
    mirrors=None,
    threads=1,
    log=None,
    open_browser=False,
):
    """Serve the inspector on run ``folder`` from a daemon thread; returns a
    ``LiveServer``. ``data_dir`` and ``mirrors``: where the test set is found (as for
    ``inspect``); ``open_browser``: open the page in the default browser. OSError when
    ``host``:``port`` cannot be bound."""
    folder = Path(folder)
    try:
        config = yaml.safe_load((folder / runs.CONFIG).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        config = None
    test_set, train_set = data_loaders(config_source(config), data_dir, mirrors, config)

    def opener():
        view = RunView.open(
            folder, test_set=test_set, train_set=train_set, threads=threads, name=folder.name
        )
        return view.base, view

    server = make_server(None, host, port, log=log, opener=opener)
    thread = threading.Thread(target=server.serve_forever, name="numpycnn-inspect", daemon=True)
    thread.start()
    if open_browser:
        threading.Thread(target=webbrowser.open, args=(server.url,), daemon=True).start()
    return LiveServer(server, thread)
