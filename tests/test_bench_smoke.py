"""``make bench`` in miniature: the benchmark script runs end to end on a few batches and
writes every figure it promises. No timing is asserted: speed belongs to the benchmark."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench.py"
TINY = [
    "--batches", "3", "--rounds", "1", "--infer-images", "500", "--infer-batch", "250",
    "--infer-reps", "2", "--threads", "1", "--workers", "2", "--predict-rounds", "1",
    "--tta-limit", "300", "--tta-epochs", "1",
]  # fmt: skip
# One thread each: on a busy machine, two-thread BLAS calls on tiny batches crawl. Two
# workers all the same, so that the pool is what is measured.


def run_bench(tmp_path, mnist_dir, *extra):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, str(BENCH), *TINY, "--mnist", str(mnist_dir), "--json", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout, json.loads(out.read_text())


def check_common(stdout, results, batch_sizes=("32", "128")):
    for heading in (
        *(f"training, batch {bs}" for bs in batch_sizes),
        "inference",
        "peak memory",
        "where numpycnn's time goes at batch 32",
        "synchronisation + contention",
        "vs numpycnn --workers 1",
        "0.16 s/image",
    ):
        assert heading in stdout
    cfg = results["config"]
    assert cfg["workers"] == 2 and cfg["rounds"] == 1 and cfg["threads"] == 1
    assert list(results["train"]) == list(batch_sizes)
    for bs in batch_sizes:
        train = results["train"][bs]
        assert train["images"] == 3 * int(bs) and train["workers"] == 2
        figures = train["numpycnn"]
        assert len(figures["seconds"]) == 1 and figures["seconds"][0] > 0
        assert 0 <= figures["train_accuracy"] <= 1 and 0 <= figures["test_accuracy"] <= 1
        assert "pss_peak_mb" not in figures  # timed runs are not sampled
        # the default workers (here 2) against the in-process path
        assert train["numpycnn-1"]["seconds"][0] > 0 and train["single_ratio"] > 0
    inference = results["inference"]
    assert inference["numpycnn"]["median_images_per_s"] > 0
    best = inference["numpycnn"]["best_images_per_s"]
    assert best >= inference["numpycnn"]["median_images_per_s"]
    assert len(inference["numpycnn"]["loads"]) == 1 and inference["max_load"] >= 0
    assert "best run of any process" in stdout and "load around each" in stdout
    # time to 99%: fast.yaml and default.yaml, seeds 0 and 1, a run of its own each
    tta = results["time_to_accuracy"]
    assert list(tta["runs"]) == ["fast", "default"] and tta["limit"] == 300
    for runs in tta["runs"].values():
        assert [r["seed"] for r in runs] == [0, 1]
        for r in runs:
            (epoch,) = r["epochs"]
            assert epoch["seconds"] >= epoch["train_seconds"] > 0
            assert 0 <= epoch["test_accuracy"] <= 1 and r["load_before"] >= 0
    assert "time to 99.0% test accuracy" in stdout
    memory = results["memory"]
    # all of MNIST loaded (a run this short may end before a sample sees its helper)
    assert memory["numpycnn_mb"] > 100 and memory["numpycnn_processes_seen"] >= 1
    assert memory["batches"] == 3  # --batches caps the memory run too
    assert isinstance(memory["pass"], bool) and memory["target_mb"] == 1000
    layers = results["layers"]
    assert layers["share_images"] == 16 and layers["steps"] == 3
    assert len(layers["share"]["forward_ms"]) == len(layers["layers"]) == 9
    assert layers["step_ms"] > 0 and layers["optimizer_ms"] > 0
    assert results["reference"]["train_images_per_s"] == pytest.approx(6.25)


def test_bench_numpycnn_alone(tmp_path, mnist_dir):
    stdout, results = run_bench(tmp_path, mnist_dir, "--skip-torch")
    check_common(stdout, results)
    assert "skipped (--skip-torch)" in stdout
    assert results["config"]["torch"] is False
    assert "torch" not in results["train"]["32"] and results["train"]["32"]["ratio"] is None
    assert results["train"]["32"]["pass"] is None and results["inference"]["ratio"] is None
    assert results["memory"]["torch_mb"] is None and "plain_torch" not in results


@pytest.mark.slow  # several processes import torch: half a minute on a busy machine
def test_bench_against_torch(tmp_path, mnist_dir):
    pytest.importorskip("torch")
    stdout, results = run_bench(tmp_path, mnist_dir, "--batch-sizes", "32")  # torch imports cost
    check_common(stdout, results, batch_sizes=("32",))
    assert results["config"]["torch_info"]["threads"] == 1
    # The same network from the same parameters: the same outputs before training.
    assert results["config"]["initial_logits_max_abs_diff"] < 1e-4
    train = results["train"]["32"]
    assert train["torch"]["seconds"][0] > 0 and train["ratio"] > 0
    assert isinstance(train["pass"], bool)
    assert results["inference"]["ratio"] > 0 and isinstance(results["inference"]["pass"], bool)
    assert results["memory"]["torch_mb"] > 0
    plain = results["plain_torch"]
    assert plain["predict_images_per_s"] > 0 and plain["train_32_images_per_s"] > 0
    assert "plain PyTorch process" in stdout
