"""``make bench`` in miniature: the benchmark script runs end to end on a few batches and
writes every figure it promises. No timing is asserted: speed belongs to the benchmark."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench.py"
TINY = [
    "--batches", "3", "--chunks", "2", "--infer-images", "500", "--infer-batch", "250",
    "--infer-reps", "2", "--memory-batches", "2", "--threads", "1",
]  # fmt: skip
# One thread each: on a busy machine, two-thread BLAS calls on tiny batches crawl.


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


def check_common(stdout, results):
    for heading in ("training, batch 32", "training, batch 128", "inference", "peak memory"):
        assert heading in stdout
    assert "0.16 s/image" in stdout
    assert results["threads"]["numpy"]["threads"] in (1, None)  # None: not OpenBLAS
    for bs in ("32", "128"):
        train = results["train"][bs]
        assert train["batches"] == 3 and train["images"] == 3 * int(bs)
        figures = train["numpycnn"]
        assert figures["seconds"] > 0 and len(figures["chunk_seconds"]) == 2
        assert 0 <= figures["train_accuracy"] <= 1 and 0 <= figures["test_accuracy"] <= 1
    assert results["train"]["32"]["target"] == 1.5
    inference = results["inference"]
    assert inference["images"] == 500 and inference["batch_size"] == 250
    assert inference["numpycnn"]["median_images_per_s"] > 0
    memory = results["memory"]
    assert memory["train"]["batches"] == 2
    for task in ("train", "infer"):
        peak = memory[task]["numpycnn"]
        assert 0 < peak["imports_mb"] <= peak["data_mb"] <= peak["peak_mb"]
    assert isinstance(memory["pass"], bool)
    assert results["reference"]["train_images_per_s"] == pytest.approx(6.25)


def test_bench_numpycnn_alone(tmp_path, mnist_dir):
    stdout, results = run_bench(tmp_path, mnist_dir, "--skip-torch")
    check_common(stdout, results)
    assert "skipped (--skip-torch)" in stdout
    assert results["config"]["torch"] is False
    assert "torch" not in results["train"]["32"] and results["train"]["32"]["ratio"] is None
    assert results["train"]["32"]["median_chunk_ratio"] is None
    assert results["train"]["32"]["pass"] is None and results["inference"]["ratio"] is None
    assert "torch" not in results["memory"]["train"]


@pytest.mark.slow  # three processes import torch: half a minute on a busy machine
def test_bench_against_torch(tmp_path, mnist_dir):
    pytest.importorskip("torch")
    stdout, results = run_bench(tmp_path, mnist_dir)
    check_common(stdout, results)
    assert results["threads"]["torch"]["threads"] == 1
    # The same network from the same parameters: the same outputs before training.
    assert results["config"]["initial_logits_max_abs_diff"] < 1e-4
    for bs in ("32", "128"):
        train = results["train"][bs]
        assert train["torch"]["seconds"] > 0
        assert train["ratio"] > 0 and train["median_chunk_ratio"] > 0
    assert isinstance(results["train"]["32"]["pass"], bool)
    assert results["inference"]["ratio"] > 0 and isinstance(results["inference"]["pass"], bool)
    assert results["inference"]["median_run_ratio"] > 0
    assert results["memory"]["train"]["torch"]["peak_mb"] > 0
    assert results["memory"]["infer"]["torch"]["peak_mb"] > 0
