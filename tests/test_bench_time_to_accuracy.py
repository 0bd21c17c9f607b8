"""bench/time_to_accuracy.py trains as ``numpycnn train`` does, with one worker or a pool:
the two give the same accuracy (the pool once trained on raw pixels, never reaching 99%)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import time_to_accuracy  # noqa: E402


@pytest.mark.parametrize("config", ["fast", "default"])
def test_one_worker_and_a_pool_train_alike(config, mnist_dir):
    runs = [
        time_to_accuracy.run(config, 0, workers=w, limit=2000, epochs=1, mnist_dir=mnist_dir)
        for w in (1, 2)
    ]
    (one,), (two,) = (r["epochs"] for r in runs)
    assert one["test_accuracy"] > 0.5  # it learned: 2,000 images take any recipe past 50%
    assert two["test_accuracy"] == pytest.approx(one["test_accuracy"], abs=0.01)
