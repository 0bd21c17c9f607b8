"""The training loop: learning, exact resumption, divergence, and the evaluation metrics."""

import numpy as np
import pytest

from numpycnn import schedules
from numpycnn.augment import Augmentation
from numpycnn.engine import Sequential, optim, reference_network
from numpycnn.training import Diverged, Trainer, evaluate, layer_telemetry, score


@pytest.fixture(scope="module")
def mnist_small(mnist):
    """The first 2,000 real training images, normalised as the reference does."""
    images = mnist.train_images[:2000].reshape(-1, 1, 28, 28)
    return (images.astype(np.float32) - 33) / 78, mnist.train_labels[:2000].astype(np.int64)


def make_trainer(data, epochs=2, seed=3, model_seed=1, images=1500, lr=1e-3, **options):
    x, y = data
    model = reference_network(seed=model_seed, init="he_normal")
    return Trainer(
        model,
        optim.Adam(lr),
        x[:images],
        y[:images],
        epochs=epochs,
        batch_size=32,
        seed=seed,
        val=(x[1500:], y[1500:]),
        **options,
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


# ----- schedules, augmentation and telemetry in the loop -----


def make_augmented_trainer(data, schedule, seed=3, model_seed=1):
    """600 images, moved as best.yaml moves them, on ``schedule``."""
    augment = Augmentation(shift=2, rotate=10, scale=0.1, fill=-33 / 78)
    return make_trainer(
        data, seed=seed, model_seed=model_seed, images=600, lr=2e-3, schedule=schedule,
        augment=augment,
    )  # fmt: skip


@pytest.mark.parametrize(
    "schedule", [schedules.OneCycle(), schedules.Cosine(warmup=0.1)], ids=["onecycle", "cosine"]
)
def test_augmented_scheduled_training_resumes_exactly(mnist_small, schedule):
    whole = make_augmented_trainer(mnist_small, schedule)
    rates = []
    whole.run(on_batch=lambda t, loss, acc: rates.append(t.optimizer.lr))
    total = whole.total_steps
    assert rates == [schedule.lr(k, 2e-3, whole.batches_per_epoch, total) for k in range(total)]

    first = make_augmented_trainer(mnist_small, schedule)
    calls = iter(range(10**6))
    assert not first.run(should_stop=lambda: next(calls) >= 25)  # stops in epoch 2
    resumed = make_augmented_trainer(mnist_small, schedule, seed=99, model_seed=42)
    resumed.model.set_params(first.model.get_params())
    resumed.load_state_dict(first.state_dict())
    assert resumed.run()
    assert resumed.cost == whole.cost
    for a, b in zip(resumed.model.get_params(), whole.model.get_params()):
        np.testing.assert_array_equal(a, b)
    assert [s.lr for s in resumed.history] == [s.lr for s in whole.history]


def test_augmentation_moves_training_batches_only(mnist_small):
    trainer = make_augmented_trainer(mnist_small, schedules.Exponential())
    x_before, val_before = trainer.x.copy(), trainer.val[0].copy()
    seen = []
    original = trainer.local.step

    def spy(idx, aug):
        seen.append((idx, trainer.local.images(idx, aug)))
        return original(idx, aug)

    trainer.local.step = spy
    trainer.steps = trainer.local
    trainer.run()
    np.testing.assert_array_equal(trainer.x, x_before)  # the stored images never change
    np.testing.assert_array_equal(trainer.val[0], val_before)
    # every batch the network saw was moved, none was the plain images
    assert all(not np.array_equal(images, x_before[idx]) for idx, images in seen)
    # validation was scored on the plain validation images
    loss, accuracy = score(trainer.model, *trainer.val)
    assert trainer.history[-1].val_accuracy == accuracy
    assert accuracy == float((trainer.model.predict(trainer.val[0]) == trainer.val[1]).mean())


def test_epoch_stats_carry_speed_rate_validation_loss_and_layer_telemetry(mnist_small):
    trainer = make_trainer(mnist_small, epochs=1)
    trainer.run()
    (stats,) = trainer.history
    assert stats.images_per_second == pytest.approx(1500 / stats.seconds)
    assert stats.lr == 1e-3 and stats.val_loss > 0
    assert set(stats.layers) == {"1-conv2d", "2-relu", "3-conv2d", "4-relu", "7-dense", "8-relu",
                                 "9-dense"}  # fmt: skip

    # Recompute the telemetry by hand: norms of the weights and of the last batch's
    # gradient, and the units of each ReLU that no image of the last batch activates.
    model = trainer.model
    for i, layer in enumerate(model.layers):
        entry = stats.layers.get(f"{i + 1}-{layer.kind}")
        if "weight" in layer.params:
            assert entry["weight_norm"] == pytest.approx(
                np.sqrt((layer.params["weight"] ** 2).sum())
            )
            assert entry["grad_norm"] == pytest.approx(np.sqrt((layer.grads["weight"] ** 2).sum()))
    xb = mnist_small[0][:1500]
    state = np.random.default_rng(3).permutation(1500)  # epoch 1's shuffle, seed 3
    batch = xb[state[46 * 32 :]]
    activations, h = [], model._as_input(batch)
    for layer in model.layers:
        h = layer.forward(h)
        if layer.kind == "relu":
            activations.append(h)
    relus = [f"{i + 1}-relu" for i, layer in enumerate(model.layers) if layer.kind == "relu"]
    for label, a in zip(relus, activations):
        dead = float((~(a > 0).any(axis=0)).mean())
        assert stats.layers[label]["dead_fraction"] == pytest.approx(dead)
    assert stats.layers["8-relu"]["dead_fraction"] < 0.5  # a healthy run


def test_dead_relus_are_counted_when_a_layer_dies():
    # A dense layer whose bias is very negative: every unit is dead on every image.
    model = Sequential(
        [{"type": "flatten"}, {"type": "dense", "units": 6}, {"type": "relu"},
         {"type": "dense", "units": 3}],
        input_shape=(1, 2, 2),
    )  # fmt: skip
    model.layers[1].params["bias"][:4] = -1e3
    x = np.random.default_rng(0).normal(size=(16, 1, 2, 2)).astype(np.float32)
    stats = layer_telemetry(model, x)
    assert stats["3-relu"]["dead_fraction"] >= 4 / 6


@pytest.mark.parametrize("network", ["reference", "batch norm and dropout"])
def test_validation_scores_are_the_evaluation_forward_pass(mnist_small, network):
    """``score`` runs the prediction plan in evaluation mode: the loss and accuracy that the
    layers' own forward pass gives in evaluation mode, even when the model was left in
    training mode (batch statistics, dropout)."""
    x, y = mnist_small[0][:600], mnist_small[1][:600]
    if network == "reference":
        model = reference_network(seed=2, init="he_normal")
    else:
        model = Sequential(
            [{"type": "conv2d", "filters": 6, "kernel": 5}, {"type": "maxpool2d", "size": 2},
             {"type": "batchnorm2d"}, {"type": "relu"}, {"type": "flatten"},
             {"type": "dense", "units": 32}, {"type": "batchnorm1d"}, {"type": "relu"},
             {"type": "dropout", "p": 0.5}, {"type": "dense", "units": 10}],
            init="he_normal", seed=2,
        )  # fmt: skip
    adam = optim.Adam(3e-3)
    for step, i in enumerate(range(0, 320, 32)):  # running statistics away from 0 and 1
        model.set_step(0, step)
        model.train_step(x[i : i + 32], y[i : i + 32], adam)
    with model.mode(False):
        out = np.concatenate([model.forward(x[i : i + 100]) for i in range(0, 600, 100)])
        expected_loss = model.loss.forward(out, y)
    expected_accuracy = float((out.argmax(axis=1) == y).mean())
    model.train()  # left in training mode: score still evaluates
    loss, accuracy = score(model, x, y)
    assert accuracy == expected_accuracy and 0.5 < accuracy < 1.0
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert model.training  # and the mode is given back
