"""Large batches: the end-of-epoch telemetry runs in chunks whose memory does not grow with
the batch, with the results of one pass over the whole batch; and a batch larger than the
training set is refused, naming the setting and the set's size."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from cli_helpers import error_line, fake_mnist, invoke, tiny_config

from numpycnn.augment import Augmentation, step_rng
from numpycnn.engine import reference_network
from numpycnn.training import BatchImages, InProcessSteps, layer_telemetry


def unchunked_dead_fractions(model, images):
    """The dead fraction of each ReLU from one forward pass over all ``images``."""
    model.forward(images)
    return {
        f"{i + 1}-relu": float(1.0 - layer._active.any(axis=0).mean())
        for i, layer in enumerate(model.layers)
        if layer.kind == "relu"
    }


def test_chunked_telemetry_equals_one_pass_over_the_batch(mnist):
    model = reference_network(seed=2, init="he_normal")
    model.layers[6].params["bias"][:40] = -0.5  # some dense units die on some images
    x = (mnist.train_images[:300].astype(np.float32)[:, None] - 33) / 78
    model.loss_on(x[:32], mnist.train_labels[:32].astype(np.int64))
    model.backward()  # gradients for the norms
    whole = unchunked_dead_fractions(model, x)
    assert 0 < whole["8-relu"] < 1  # a mixed layer, where chunks must be combined right
    for chunk in (300, 256, 7, 1):
        stats = layer_telemetry(model, x, chunk_size=chunk)
        for label, fraction in whole.items():
            assert stats[label]["dead_fraction"] == pytest.approx(fraction, abs=1e-9)
        assert stats["1-conv2d"]["grad_norm"] == pytest.approx(
            float(np.linalg.norm(model.layers[0].grads["weight"]))
        )


def test_batch_images_gather_and_augment_each_slice_as_the_whole_batch(mnist):
    x = (mnist.train_images[:50].astype(np.float32)[:, None] - 33) / 78
    augment = Augmentation(shift=2, rotate=10, scale=0.1)
    steps = InProcessSteps(None, x, np.zeros(50), augment)
    idx = np.random.default_rng(0).permutation(50)[:40]
    aug = augment.draw(step_rng(0, 5), len(idx))
    whole, lazy = steps.images(idx, aug), BatchImages(steps, idx, aug)
    assert len(lazy) == 40
    np.testing.assert_allclose(
        np.concatenate([lazy[i : i + 16] for i in range(0, 40, 16)]), whole, atol=1e-6
    )


CHILD = textwrap.dedent(
    """
    import json, resource
    import numpy as np
    resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))
    from numpycnn.engine import reference_network
    from numpycnn.training import BatchImages, InProcessSteps, layer_telemetry
    model = reference_network()
    x = np.random.default_rng(0).standard_normal((20000, 1, 28, 28), dtype=np.float32)
    before = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
    steps = InProcessSteps(model, x, np.zeros(20000, dtype=np.int64))
    stats = layer_telemetry(model, BatchImages(steps, np.arange(20000)))
    peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
    print(json.dumps({"extra_mb": (peak - before) / 1024, "stats": stats}))
    """
)


def test_telemetry_memory_does_not_grow_with_the_batch():
    """A batch of 20,000 (63 MB of images): one pass took 5 GB, chunks take about 30 MB."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        capture_output=True,
        text=True,
        timeout=300,
        env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert "dead_fraction" in report["stats"]["2-relu"]
    assert report["extra_mb"] < 100, report["extra_mb"]


def test_a_batch_larger_than_the_training_set_is_refused(tmp_path, monkeypatch, mnist_dir):
    fake_mnist(monkeypatch, mnist_dir)
    config = tiny_config(tmp_path, limit=300)
    message = error_line(invoke("train", "--config", config, "--batch-size", 500, "--quiet"))
    assert message == (
        "training.batch_size (--batch-size) 500 is larger than the training set (300 images, "
        "with data.limit 300): lower the batch size or train on more images"
    )
    assert not (tmp_path / "runs").exists()  # refused before a run folder was claimed
    # the whole training set in one batch is fine
    result = invoke("train", "--config", config, "--batch-size", 300, "--quiet")
    assert result.exit_code == 0, result.output
