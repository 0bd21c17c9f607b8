"""The training loop: learning, exact resumption, divergence, and the evaluation metrics."""

import numpy as np
import pytest

from numpycnn.engine import Sequential, optim, reference_network
from numpycnn.training import Diverged, Trainer, evaluate


@pytest.fixture(scope="module")
def mnist_small(mnist):
    """The first 2,000 real training images, normalised as the reference does."""
    images = mnist.train_images[:2000].reshape(-1, 1, 28, 28)
    return (images.astype(np.float32) - 33) / 78, mnist.train_labels[:2000].astype(np.int64)


def make_trainer(data, epochs=2, seed=3, model_seed=1):
    x, y = data
    model = reference_network(seed=model_seed, init="he_normal")
    return Trainer(
        model,
        optim.Adam(1e-3),
        x[:1500],
        y[:1500],
        epochs=epochs,
        batch_size=32,
        seed=seed,
        val=(x[1500:], y[1500:]),
    )


def test_training_learns_and_reports_each_epoch(mnist_small):
    trainer = make_trainer(mnist_small)
    epochs = []
    assert trainer.run(on_epoch=lambda t, stats: epochs.append(stats))
    assert [s.epoch for s in epochs] == [1, 2]
    # 1,500 images in batches of 32: 47 batches per epoch, the last one of 28.
    assert len(trainer.cost) == 2 * 47
    assert epochs[1].train_loss < epochs[0].train_loss
    # Measured: about 0.88 validation accuracy after two epochs on 1,500 images.
    assert epochs[1].val_accuracy > 0.8


def test_resume_after_a_stop_mid_epoch_matches_an_uninterrupted_run(mnist_small):
    whole = make_trainer(mnist_small)
    whole.run()

    first = make_trainer(mnist_small)
    calls = iter(range(10**6))
    assert not first.run(should_stop=lambda: next(calls) >= 70)  # stops in epoch 2
    state, params = first.state_dict(), first.model.get_params()
    assert (state["epoch"], state["batch"]) == (1, 23)

    # A fresh model and trainer with other seeds: everything must come from the state.
    resumed = make_trainer(mnist_small, seed=99, model_seed=42)
    resumed.model.set_params(params)
    resumed.load_state_dict(state)
    assert resumed.run()
    assert resumed.cost == whole.cost
    for a, b in zip(resumed.model.get_params(), whole.model.get_params()):
        np.testing.assert_array_equal(a, b)


def test_divergence_stops_before_the_update(mnist_small):
    x, y = mnist_small
    model = reference_network(seed=0)
    trainer = Trainer(model, optim.SGD(1e6), x[:256], y[:256], epochs=3, batch_size=32)
    last_good = []
    with pytest.raises(Diverged, match="lower the learning rate"):
        trainer.run(on_batch=lambda t, loss, acc: last_good.append(model.get_params()))
    # The parameters are still those after the last finite batch: finite everywhere.
    assert all(np.isfinite(p).all() for p in model.get_params())
    for a, b in zip(model.get_params(), last_good[-1]):
        np.testing.assert_array_equal(a, b)


def test_mismatched_data_is_refused(mnist_small):
    x, y = mnist_small
    with pytest.raises(ValueError, match="labels"):
        Trainer(reference_network(), optim.SGD(0.1), x[:10], y[:9], epochs=1, batch_size=4)


def test_evaluate_counts_like_a_confusion_matrix():
    # A model whose prediction is the index of the largest input feature.
    model = Sequential([{"type": "flatten"}], loss="mean_squared_error", input_shape=(3,))
    x = np.eye(3, dtype=np.float32)[[0, 1, 2, 2, 1, 0]]
    labels = np.array([0, 1, 2, 0, 0, 1])  # predictions are 0, 1, 2, 2, 1, 0
    report = evaluate(model, x, labels, classes=3)
    assert report["correct"] == 3 and report["accuracy"] == 0.5
    assert report["confusion"] == [[1, 1, 1], [1, 1, 0], [0, 0, 1]]
    assert report["per_class"]["0"] == {"precision": 0.5, "recall": 1 / 3, "support": 3}
    assert report["per_class"]["2"]["precision"] == 0.5
    assert report["per_class"]["2"]["recall"] == 1.0
