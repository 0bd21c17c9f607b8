"""Training time with `train --inspect` and a page polling it, against training without.

Each round trains the same config twice in fresh processes, once plain and once with
``--inspect --no-browser`` while a poller does what the page does: ``/api/run?since=``
every second, ``/api/snapshots``, and at each new snapshot ``/api/inspect`` and
``/api/timeline`` of a test image and ``/api/filters`` at that snapshot. Rounds alternate
which goes first. The figure is the training loop's time (results.csv's seconds, summed
over epochs: no start-up, no test evaluation), best against best and median against
median, with the load average before each run. Target: at most 3% slower.

    python scripts/bench_live.py --rounds 4 --limit 20000
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def get(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


class Poller(threading.Thread):
    """The page's requests, once a second, until ``stop`` is set."""

    def __init__(self, url):
        super().__init__(daemon=True)
        self.url, self.stop, self.requests, self.snapshots_seen = url, threading.Event(), 0, 0

    def run(self):
        last, known = -1, None
        while not self.stop.is_set():
            try:
                run = get(f"{self.url}/api/run?since={last}")
                steps = run["per_batch"]["step"]
                last = steps[-1] if steps else last
                snaps = get(f"{self.url}/api/snapshots")["snapshots"]
                self.requests += 2
                if snaps and snaps[-1]["step"] != known:
                    known = snaps[-1]["step"]
                    self.snapshots_seen += 1
                    get(f"{self.url}/api/inspect", {"test_index": 0, "snapshot": known})
                    get(f"{self.url}/api/timeline", {"test_index": 0})
                    get(f"{self.url}/api/filters?snapshot={known}")
                    self.requests += 3
            except OSError:
                pass  # not up yet (503), or gone at the end
            self.stop.wait(1.0)


def train(config, args, folder, live):
    """One training in its own process; (loop seconds, wall seconds, requests answered)."""
    command = [sys.executable, "-m", "numpycnn.cli.main", "train", "-c", config, "-q",
               "--epochs", str(args.epochs), "--limit", str(args.limit), "--workers",
               str(args.workers), "--runs-dir", str(folder), "--out", str(folder / "m.pkl"),
               "--data-dir", args.data_dir]  # fmt: skip
    if args.mirror:
        command += ["--mirror", args.mirror]
    if live:
        command += ["--inspect", "--no-browser"]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    poller = None
    if live:
        line = proc.stderr.readline()
        while line and not line.startswith("live view of "):
            line = proc.stderr.readline()
        poller = Poller(line.rsplit(" at ", 1)[1].strip().rstrip("/"))
        poller.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    if poller:
        poller.stop.set()
        poller.join(5)
    if proc.returncode:
        raise SystemExit(f"train failed ({proc.returncode}): {err.strip()[-400:]}")
    run = next(p for p in folder.iterdir() if p.is_dir())
    with open(run / "results.csv", encoding="utf-8") as f:
        loop = sum(float(row["seconds"]) for row in csv.DictReader(f))
    return loop, wall, (poller.requests if poller else 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--limit", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--data-dir", default=os.environ.get("NUMPYCNN_DATA_DIR", "data"))
    parser.add_argument("--mirror", default=None)
    args = parser.parse_args()
    times = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            for live in order:
                load = os.getloadavg()
                folder = Path(tmp) / f"r{r}-{'live' if live else 'plain'}"
                folder.mkdir()
                loop, wall, requests = train(args.config, args, folder, live)
                times[live].append(loop)
                what = f"--inspect + poller ({requests} requests)" if live else "plain"
                print(f"round {r + 1}: {what:34} loop {loop:7.2f} s  wall {wall:7.2f} s  "
                      f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)  # fmt: skip
    plain, live = times[False], times[True]
    print(f"best:   plain {min(plain):.2f} s, --inspect {min(live):.2f} s: "
          f"{100 * (min(live) / min(plain) - 1):+.1f}%")  # fmt: skip
    print(f"median: plain {statistics.median(plain):.2f} s, --inspect "
          f"{statistics.median(live):.2f} s: "
          f"{100 * (statistics.median(live) / statistics.median(plain) - 1):+.1f}%")  # fmt: skip


if __name__ == "__main__":
    main()
