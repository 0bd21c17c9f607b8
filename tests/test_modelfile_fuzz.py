"""Fuzzing the model-file loader: seeded byte flips, insertions, deletions and truncations of
real model files (the 2018 reference pickle and a file written by ``save_model``) are each
either loaded or refused with ModelFileError, in a child process of bounded memory."""

import json
import subprocess
import sys
import textwrap

import numpy as np

from numpycnn.engine import Sequential, optim
from numpycnn.modelfile import save_model

#: Peak resident memory the child may reach (it needs about 35 MB), and its address space.
MAX_RSS_MB = 200
ADDRESS_SPACE = 2**30
#: CPU seconds for all the cases together: about 6 s here; a hang or a quadratic blow-up
#: shows far beyond this.
MAX_CPU_SECONDS = 120

CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
    from numpycnn.modelfile import ModelFileError, load_model

    def mutants(data, rng, count):
        for _ in range(count):
            how = rng.integers(4)
            b = bytearray(data)
            # half the edits fall in the first 2 KB, where the headers and dtypes are
            near = rng.random() < 0.5
            at = int(rng.integers(min(len(b), 2048)) if near else rng.integers(len(b)))
            if how == 0:
                for _ in range(int(rng.integers(1, 4))):
                    b[int(rng.integers(len(b)))] = int(rng.integers(256))
                b[at] = int(rng.integers(256))
            elif how == 1:
                b[at:at] = bytes(rng.integers(256, size=int(rng.integers(1, 9)), dtype=np.uint8))
            elif how == 2:
                del b[at : at + int(rng.integers(1, 9))]
            else:
                del b[at:]
            yield bytes(b)

    out, seed = sys.argv[1], int(sys.argv[2])
    outcomes = {{"loaded": 0, "refused": 0, "other": []}}
    rng = np.random.default_rng(seed)
    for base, count in zip(sys.argv[3::2], sys.argv[4::2]):
        data = open(base, "rb").read()
        for case in mutants(data, rng, int(count)):
            with open(out, "wb") as f:
                f.write(case)
            try:
                load_model(out)
                outcomes["loaded"] += 1
            except ModelFileError as exc:
                if "\\n" in str(exc) or "MemoryError" in str(exc):  # the limit was hit
                    outcomes["other"].append(str(exc)[:300])
                outcomes["refused"] += 1
            except BaseException as exc:  # anything else is a failure of the loader
                outcomes["other"].append(f"{{type(exc).__name__}}: {{exc}}"[:300])
    status = open("/proc/self/status").read()  # VmHWM: this program's own peak memory
    outcomes["max_rss_mb"] = int(status.split("VmHWM:")[1].split()[0]) / 1024
    usage = resource.getrusage(resource.RUSAGE_SELF)
    outcomes["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    print(json.dumps(outcomes))
    """
).format(limit=ADDRESS_SPACE)


def small_model_file(path):
    """A small model written by save_model, with a checkpoint (optimiser state, RNG state,
    a shuffle), metrics and history, as train writes them."""
    model = Sequential(
        [
            {"type": "conv2d", "filters": 2, "kernel": 3, "stride": 2},
            {"type": "relu"},
            {"type": "maxpool2d", "size": 2},
            {"type": "flatten"},
            {"type": "dense", "units": 10},
        ],
        dtype="float32",
    )
    adam = optim.Adam(lr=0.01)
    rng = np.random.default_rng(3)
    model.train_step(rng.standard_normal((4, 1, 28, 28)), np.arange(4), adam)
    save_model(
        path,
        model,
        {"strategy": "standard", "mean": 33.3, "std": 78.6},
        cost=[2.3, 2.1],
        config={"training": {"epochs": 1, "batch_size": 4}},
        metrics={"test_accuracy": np.float64(0.5)},
        checkpoint={
            "optimizer": {"name": "adam", **adam.state_dict()},
            "rng": rng.bit_generator.state,
            "order": rng.permutation(20),
        },
        history=[{"epoch": 1, "train_loss": 2.2, "layers": {"1-conv2d": {"weight_norm": 1.0}}}],
    )


def test_mutated_and_truncated_model_files_load_or_are_refused(tmp_path, reference_params_path):
    small = tmp_path / "small.pkl"
    small_model_file(small)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(tmp_path / "case.pkl"),
            "21",
            str(small),
            "500",
            str(reference_params_path),
            "100",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-2000:]  # a crash (say, SIGSEGV) fails here
    outcomes = json.loads(done.stdout)
    assert outcomes["other"] == []
    assert outcomes["loaded"] + outcomes["refused"] == 600
    assert outcomes["refused"] > 300  # most edits break the file; some leave it loadable
    assert outcomes["max_rss_mb"] < MAX_RSS_MB
    assert outcomes["cpu_seconds"] < MAX_CPU_SECONDS
