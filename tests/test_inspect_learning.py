"""Learn from this example (``inspector.learning``): the steps are the engine's own, the
optimiser is the one the file was trained with (its checkpoint state where there is one),
every weight's update recomputed in float64 agrees with the engine's optimiser, the model
file and the inspected model are never touched, and sessions stay bounded."""

import numpy as np
import pytest

from numpycnn.config import Config
from numpycnn.data import Normalization
from numpycnn.engine import Sequential, optim
from numpycnn.inspector.learning import Learner, Sessions, trained_optimizer
from numpycnn.inspector.tracing import InspectionError
from numpycnn.modelfile import load_model, save_model
from numpycnn.training import Trainer

F32 = float(np.finfo(np.float32).eps)
SMALL = [
    {"type": "conv2d", "filters": 4, "kernel": 5},
    {"type": "relu"},
    {"type": "maxpool2d", "size": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 10},
]


def model_file(path, mnist, name, hyper, checkpoint_steps=0):
    """A small network trained for ``checkpoint_steps`` steps of optimiser ``name`` (batches
    of 16 real MNIST images, by ``training.Trainer``), saved with its config and, when it
    trained, the trainer's checkpoint, as a run's last.pkl holds it."""
    model = Sequential(SMALL, init="he_normal", seed=1)
    norm = Normalization.fit("standard", mnist.train_images[:1000])
    opt = optim.get(name, **hyper)
    checkpoint = None
    if checkpoint_steps:
        n = 16 * checkpoint_steps
        x, y = norm.norm(mnist.train_images[:n]), mnist.train_labels[:n]
        trainer = Trainer(model, opt, x, y, epochs=1, batch_size=16)
        assert trainer.run()
        checkpoint = trainer.state_dict()
    config = Config().to_dict()
    config["training"]["optimizer"] = {"name": name, **opt.hyperparameters()}
    save_model(path, model, norm, [1.0], config, checkpoint=checkpoint)
    return load_model(path), norm


def engine_steps(saved, x, label, lr, steps):
    """The same steps by the engine alone: a copy of the model, the optimiser rebuilt from
    the file, ``train_step``: the parameters it ends with."""
    model = Sequential(saved.model.specs(), loss=saved.model.loss.kind)
    model.flat_params[...] = saved.model.flat_params
    opt, _ = trained_optimizer(saved)
    for _ in range(steps):
        opt.lr = lr
        model.train_step(x, np.array([label]), opt)
    return model.flat_params


@pytest.mark.parametrize(
    ("name", "hyper", "trained"),
    [
        ("sgd", {"lr": 0.05}, 0),
        ("momentum", {"lr": 0.02, "momentum": 0.9}, 3),
        ("adam", {"lr": 0.003}, 0),
        ("adam", {"lr": 0.003}, 4),
        ("escontrela", {}, 0),
    ],
)
def test_every_weights_update_agrees_with_the_engines_optimiser(
    tmp_path, mnist, name, hyper, trained
):
    path = tmp_path / "m.pkl"
    saved, norm = model_file(path, mnist, name, hyper, trained)
    on_disk = path.read_bytes()
    file_params = saved.model.flat_params.copy()
    learner = Learner(saved)
    assert learner.optimizer.kind == name and learner.optimizer.t == trained
    assert ("checkpoint" in learner.source) is bool(trained)
    x, label, lr = norm.norm(mnist.test_images[0]), 3, 0.01
    before = learner.evaluate(x, label)["loss"]
    seen, changes = learner.learn(x, label, lr, 2)
    # the steps are the engine's own: the same parameters as train_step by hand
    np.testing.assert_array_equal(learner.model.flat_params, engine_steps(saved, x, label, lr, 2))
    assert seen[0] == pytest.approx(before, rel=1e-6)
    assert learner.evaluate(x, label)["loss"] < before
    # every parameter's last update, recomputed in float64 from g and the state before it
    for flat in range(learner.model.num_params):
        u = learner.update_numbers(flat)
        # float32 rounding of the engine: a few ulps of the terms' magnitudes
        assert abs(u["w"] - u["engine"]) <= 4 * F32 * (abs(u["w_before"]) + abs(u["w"])), (flat, u)
        assert u["t"] == trained + 2 and u["lr"] == pytest.approx(lr)
        if name == "adam":
            scale = abs(0.9 * u["m_before"]) + abs(0.1 * u["g"])
            assert abs(u["m"] - u["m_engine"]) <= 4 * F32 * scale + 1e-15
            assert u["v"] == pytest.approx(u["v_engine"], rel=8 * F32, abs=1e-20)
            assert u["m_hat"] == pytest.approx(u["m"] / (1 - 0.9 ** u["t"]))
        if name == "momentum":
            scale = abs(u["mu"] * u["v_before"]) + abs(u["g"])
            assert abs(u["v"] - u["v_engine"]) <= 4 * F32 * scale + 1e-15
    # the tolerance is far below what a step moves: a wrong formula could not pass
    u = learner.update_numbers(learner.most_changed())
    assert abs(u["engine"] - u["w_before"]) > 1000 * 4 * F32 * (abs(u["w_before"]) + abs(u["w"]))
    assert {c["label"] for c in changes} == {"1-conv2d", "5-dense"}
    conv = changes[0]
    assert len(conv["filters"]) == 4 and conv["delta"].shape == (4, 1, 5, 5)
    assert np.linalg.norm(conv["filters"]) == pytest.approx(conv["weight_change"], rel=1e-6)
    # the file and the model it loaded are untouched; reset is the file again
    assert path.read_bytes() == on_disk
    np.testing.assert_array_equal(saved.model.flat_params, file_params)
    learner.reset()
    np.testing.assert_array_equal(learner.model.flat_params, file_params)
    assert learner.optimizer.t == trained and learner.evaluate(x, label)["loss"] == before


def test_a_checkpoints_adam_state_is_used(tmp_path, mnist):
    saved, norm = model_file(tmp_path / "m.pkl", mnist, "adam", {"lr": 0.003}, 4)
    opt, source = trained_optimizer(saved)
    np.testing.assert_array_equal(opt.m, saved.checkpoint["optimizer"]["m"])
    assert opt.lr == 0.003 and "schedule" not in source  # a constant rate: nothing to say
    # a schedule that ended low (one-cycle: ~1e-8): the rate starts at the config's base rate
    saved.checkpoint["optimizer"]["spec"]["lr"] = 1.2e-8
    opt, source = trained_optimizer(saved)
    assert opt.lr == 0.003 and opt.t == 4
    assert "rate: the config's 0.003 (the schedule's last was 1.2e-08)" in source
    learner = Learner(saved)
    learner.learn(norm.norm(mnist.test_images[1]), 2, 0.001, 1)
    flat = learner.most_changed()
    u = learner.update_numbers(flat)
    assert u["m_before"] == pytest.approx(float(saved.checkpoint["optimizer"]["m"][flat]))
    assert u["t"] == 5


def test_sessions_are_bounded_and_refuse_bad_requests(tmp_path, mnist):
    saved, norm = model_file(tmp_path / "m.pkl", mnist, "sgd", {"lr": 0.05})
    sessions = Sessions(saved, limit=3)
    x = norm.norm(mnist.test_images[0])
    for k in range(10):
        sessions.answer({"session": f"s{k}", "label": 1, "steps": 1}, lambda: x)
        assert len(sessions) == min(k + 1, 3)
    first = sessions.get("s9")
    assert first.steps == 1  # the newest is kept
    assert sessions.get("s0").steps == 0  # the oldest was dropped: a fresh copy
    bad = [
        ({"session": "../x", "label": 1}, "session"),
        ({"session": "a" * 65, "label": 1}, "session"),
        ({"session": "a", "label": 10}, "label 10"),
        ({"session": "a", "label": True}, "label"),
        ({"session": "a", "label": 1, "steps": 101}, "steps"),
        ({"session": "a", "label": 1, "steps": -1}, "steps"),
        ({"session": "a", "label": 1, "lr": 0}, "lr"),
        ({"session": "a", "label": 1, "lr": float("nan")}, "lr"),
        ({"session": "a", "label": 1, "lr": 11}, "lr"),
        ({"session": "a", "label": 1, "lr": "0.1"}, "lr"),
        ({"session": "a", "label": 1, "reset": "yes"}, "reset"),
        ({"session": "a", "label": 1, "weight": {"layer": 1}}, "no parameter"),
        ({"session": "a", "label": 1, "weight": {"layer": 0, "index": [9, 0, 0, 0]}}, "outside"),
        ({"session": "a", "label": 1, "weight": [0]}, "weight"),
    ]
    for body, match in bad:
        with pytest.raises(InspectionError, match=match):
            sessions.answer(body, lambda: x)


def test_a_rate_far_too_high_diverges_without_an_error(tmp_path, mnist):
    saved, norm = model_file(tmp_path / "m.pkl", mnist, "sgd", {"lr": 0.05})
    sessions = Sessions(saved)
    r = sessions.answer(
        {"session": "s", "label": 4, "steps": 20, "lr": 10}, lambda: norm.norm(mnist.test_images[0])
    )
    assert r["total_steps"] == 20 and len(r["losses"]) == 20


def test_an_unusable_checkpoint_state_is_a_clear_error(tmp_path, mnist):
    saved, _ = model_file(tmp_path / "m.pkl", mnist, "adam", {"lr": 0.003}, 1)
    state = saved.checkpoint["optimizer"]
    saved.checkpoint["optimizer"] = {**state, "m": state["m"][:10], "v": state["v"][:10]}
    with pytest.raises(InspectionError, match="'m' has the wrong size"):
        trained_optimizer(saved)
    saved.checkpoint["optimizer"] = {**state, "spec": {"name": "rmsprop", "lr": 0.1}}
    with pytest.raises(InspectionError, match="unusable: unknown optimiser 'rmsprop'"):
        trained_optimizer(saved)
