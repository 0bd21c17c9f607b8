"""Training time with `train --inspect` and a page polling it, against training without.

Each round trains the same config twice in fresh processes, once plain and once with
``--inspect --no-browser`` while a poller does what the page does: ``/api/run?since=``
every second, ``/api/snapshots``, and at each new snapshot ``/api/inspect`` and
``/api/timeline`` of a test image, and ``/api/filters`` and ``/api/layers`` at that
snapshot (the page asks for the layers only once a step has settled for 1.5 s). Rounds alternate
which goes first. The figure is the training loop's time (results.csv's seconds, summed
over epochs: no start-up, no test evaluation), best against best and median against
median, with the load average before each run; and, since a shared machine's noise can
exceed the effect, the CPU time the server process used against the training's own (the
most it can take from a training that has the CPUs to itself). Target: at most 3% slower.

    python scripts/bench_live.py --rounds 3 --epochs 2   # the default recipe, 2 epochs
"""

import argparse
import csv
import json
import os
import resource
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


class Poller:
    """The page's requests: /api/run and /api/snapshots once a second (one thread), and at
    each new snapshot an inspection, the probe's timeline and the filters (another), as
    the page makes them; ``stop()`` ends both."""

    def __init__(self, url):
        self.url, self.done, self.requests, self.failed = url, threading.Event(), 0, 0
        self.latest, self.new = None, threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self.poll, self.look)]
        for t in self.threads:
            t.start()

    def ask(self, path, body=None):
        try:
            answer = get(self.url + path, body)
            self.requests += 1
            return answer
        except OSError:  # 503 before the first snapshot, a refused connection at the end
            self.failed += 1
            return None

    def poll(self):
        last = -1
        while not self.done.is_set():
            run = self.ask(f"/api/run?since={last}")
            if run and run["per_batch"]["step"]:
                last = run["per_batch"]["step"][-1]
            snaps = self.ask("/api/snapshots")
            if snaps and snaps["snapshots"] and snaps["snapshots"][-1]["step"] != self.latest:
                self.latest = snaps["snapshots"][-1]["step"]
                self.new.set()
            self.done.wait(1.0)

    def look(self):
        while not self.done.is_set():
            if not self.new.wait(0.5):
                continue
            self.new.clear()
            step = self.latest
            self.ask("/api/inspect", {"test_index": 0, "snapshot": step})
            self.ask("/api/timeline", {"test_index": 0})
            self.ask(f"/api/filters?snapshot={step}")
            if not self.new.wait(1.5):  # the layers, once the step has settled for 1.5 s
                self.ask(f"/api/layers?snapshot={step}")

    def stop(self):
        self.done.set()
        for t in self.threads:
            t.join(70)


def cpu_seconds(pid):
    """User + system CPU seconds of process ``pid`` so far (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pid(train_pid):
    """The live server process: the child of ``train_pid`` that runs numpycnn's live module."""
    try:
        children = Path(f"/proc/{train_pid}/task/{train_pid}/children").read_text().split()
    except OSError:
        return None
    for pid in children:
        try:
            if b"inspector.live" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
        except OSError:
            continue
    return None


def train(config, args, folder, live):
    """One training in its own process: (loop seconds, wall seconds, requests answered,
    CPU seconds of the whole process tree, CPU seconds of the live server)."""
    command = [sys.executable, "-m", "numpycnn.cli.main", "train", "-c", config, "-q",
               "--epochs", str(args.epochs), "--limit", str(args.limit),
               "--runs-dir", str(folder), "--out", str(folder / "m.pkl"),
               "--data-dir", args.data_dir]  # fmt: skip
    if args.workers:
        command += ["--workers", str(args.workers)]
    if args.mirror:
        command += ["--mirror", args.mirror]
    if live:
        command += ["--inspect", "--no-browser"]
    start, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    poller, server_cpu = None, [0.0]
    if live:
        line = proc.stderr.readline()
        while line and not line.startswith("live view of "):
            line = proc.stderr.readline()
        poller = Poller(line.rsplit(" at ", 1)[1].strip().rstrip("/"))

        def watch():  # the server's CPU time, read until it ends with the training
            pid = None
            while proc.poll() is None:
                pid = pid or server_pid(proc.pid)
                used = cpu_seconds(pid) if pid else None
                server_cpu[0] = used if used is not None else server_cpu[0]
                time.sleep(0.2)

        threading.Thread(target=watch, daemon=True).start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    if poller:
        poller.stop()
    if proc.returncode:
        raise SystemExit(f"train failed ({proc.returncode}): {err.strip()[-400:]}")
    run = next(p for p in folder.iterdir() if p.is_dir())
    with open(run / "results.csv", encoding="utf-8") as f:
        loop = sum(float(row["seconds"]) for row in csv.DictReader(f))
    return loop, wall, (poller.requests if poller else 0), cpu, server_cpu[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=55_000)
    parser.add_argument("--workers", type=int, default=None, help="default: train's own")
    parser.add_argument("--data-dir", default=os.environ.get("NUMPYCNN_DATA_DIR", "data"))
    parser.add_argument("--mirror", default=None)
    args = parser.parse_args()
    times, shares = {False: [], True: []}, []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            for live in order:
                load = os.getloadavg()
                folder = Path(tmp) / f"r{r}-{'live' if live else 'plain'}"
                folder.mkdir()
                loop, wall, requests, cpu, server = train(args.config, args, folder, live)
                times[live].append(loop)
                if live:
                    shares.append(server / (cpu - server))
                what = f"--inspect + poller ({requests} requests)" if live else "plain"
                print(f"round {r + 1}: {what:34} loop {loop:7.2f} s  wall {wall:7.2f} s  "
                      f"CPU {cpu:6.1f} s (server {server:5.2f} s)  "
                      f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)  # fmt: skip
    plain, live = times[False], times[True]
    print(f"server CPU / training CPU: {', '.join(f'{100 * x:.1f}%' for x in shares)} "
          f"(median {100 * statistics.median(shares):.1f}%)")  # fmt: skip
    print(f"best:   plain {min(plain):.2f} s, --inspect {min(live):.2f} s: "
          f"{100 * (min(live) / min(plain) - 1):+.1f}%")  # fmt: skip
    print(f"median: plain {statistics.median(plain):.2f} s, --inspect "
          f"{statistics.median(live):.2f} s: "
          f"{100 * (statistics.median(live) / statistics.median(plain) - 1):+.1f}%")  # fmt: skip


if __name__ == "__main__":
    main()
