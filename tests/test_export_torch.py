"""PyTorch interchange, with PyTorch as the oracle: every config's network and a network of
every layer type as a state_dict file and an nn.Sequential, from_torch back, and the
modules numpycnn has no equal of."""

import copy
import io
import sys

import numpy as np
import pytest
from shape_helpers import mnist_as
from test_export_common import (
    CONFIGS,
    COUNT,
    NORM,
    assert_agrees,
    config_model,
    every_layer_model,
)

import numpycnn
from numpycnn.export import ExportError, export
from numpycnn.export.torch_modules import torch_source

torch = pytest.importorskip("torch", reason="PyTorch not installed: pip install torch")
nn = torch.nn
torch.set_num_threads(1)


def torch_proba(net, model, images):
    """PyTorch's probabilities for raw images: normalised by the caller, softmax for
    softmax_cross_entropy models (as the README tells PyTorch users)."""
    x = torch.from_numpy(model.normalization.norm(images)).to(next(net.parameters()).dtype)
    with torch.no_grad():
        out = net(x)
    if model.network.loss.kind == "softmax_cross_entropy":
        out = torch.softmax(out, dim=1)
    return out.numpy()


def expected_keys(model):
    return [
        f"{i}.{p}"
        for i, layer in enumerate(model.network.layers)
        for p in ("weight", "bias")
        if layer.params
    ]


def load_state_dict_file(path, model):
    """The state_dict file, read back as the README says, into the printed Sequential."""
    state = torch.load(path, weights_only=True)
    net = eval(torch_source(model), {"nn": nn})  # the source `export` prints
    net.to(next(iter(state.values())).dtype)
    net.load_state_dict(state)  # strict: the same keys and shapes
    return net.eval(), state


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config(path, tmp_path, mnist):
    model = config_model(path, mnist)
    out = tmp_path / "weights.pt"
    export(model, out)
    net, state = load_state_dict_file(out, model)
    assert list(state) == expected_keys(model)
    images = mnist_as(mnist.test_images[:COUNT], model.network.input_shape)
    assert_agrees(torch_proba(net, model, images), model.predict_proba(images))
    # to_torch gives the same network with the same weights
    direct = numpycnn.to_torch(model)
    assert list(direct.state_dict()) == list(state)
    assert all(torch.equal(direct.state_dict()[k], v) for k, v in state.items())


@pytest.mark.parametrize("dtype, atol", [("float32", 1e-5), ("float64", 1e-12)])
def test_every_layer_type(dtype, atol, tmp_path, mnist):
    model = every_layer_model(dtype)
    net = numpycnn.to_torch(model)
    assert [type(m).__name__ for m in net] == [
        "Conv2d", "LeakyReLU", "AvgPool2d", "Tanh", "Conv2d", "ReLU", "MaxPool2d", "Sigmoid",
        "Flatten", "Linear", "ReLU", "Linear", "Softmax",
    ]  # fmt: skip
    assert next(net.parameters()).dtype == getattr(torch, dtype)
    images = mnist.test_images[:COUNT]
    assert_agrees(torch_proba(net, model, images), model.predict_proba(images), atol)
    # and back: the very same parameters, the very same predictions
    back = numpycnn.from_torch(net, NORM, loss="mean_squared_error")
    assert back.network.specs() == model.network.specs()
    for p, q in zip(back.network.get_params(), model.network.get_params()):
        assert p.dtype == q.dtype and np.array_equal(p, q)
    np.testing.assert_array_equal(back.predict_proba(images), model.predict_proba(images))


def test_to_torch_leaves_torch_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    numpycnn.to_torch(every_layer_model())
    assert torch.equal(torch.rand(3), expected)


def test_reference(reference_params_path, tmp_path, mnist):
    model = numpycnn.load(reference_params_path)
    out = tmp_path / "reference.pth"
    export(reference_params_path, out)
    net, state = load_state_dict_file(out, model)
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias", "6.weight", "6.bias",
                           "8.weight", "8.bias"]  # fmt: skip
    images = mnist.test_images[:1000]
    got, expected = torch_proba(net, model, images), model.predict_proba(images)
    assert float(np.abs(got - expected).max()) < 1e-12
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))


def test_from_a_network_trained_in_pytorch(mnist, tmp_path):
    """A PyTorch network (its own initialisation, a few steps of its own training, 'same'
    padding, bias-free dense) runs the same in numpycnn, and saves as a numpycnn file."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding="same"),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, (3, 3), stride=(2, 2)),
        nn.Tanh(),
        nn.AvgPool2d(2, stride=1),
        nn.Flatten(),
        nn.Linear(150, 32, bias=False),
        nn.LeakyReLU(0.2),
        nn.Linear(32, 10),
    )
    mean, std = 0.1307 * 255, 0.3081 * 255  # torchvision's MNIST Normalize, in pixels
    x = torch.from_numpy((mnist.train_images[:256, None] - np.float32(mean)) / np.float32(std))
    y = torch.from_numpy(mnist.train_labels[:256].astype(np.int64))
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for i in range(0, 256, 64):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[i : i + 64]), y[i : i + 64]).backward()
        opt.step()
    model = numpycnn.from_torch(net.eval(), (mean, std))
    assert model.network.specs()[0] == {
        "type": "conv2d", "filters": 4, "kernel": 3, "stride": 1, "padding": 1}  # fmt: skip
    images = mnist.test_images[:COUNT]
    assert_agrees(model.predict_proba(images), torch_proba(net, model, images))
    out = tmp_path / "from-torch.safetensors"
    numpycnn.modelfile.save_model(out, model.network, model.normalization)
    np.testing.assert_array_equal(
        numpycnn.load(out).predict_proba(images), model.predict_proba(images)
    )


BAD_MODULES = [
    (lambda: [nn.Flatten(), nn.Dropout(0.5), nn.Linear(784, 10)],
     r"module 1 \(Dropout\): not a layer numpycnn has"),
    (lambda: [nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)], r"module 1 \(BatchNorm2d\): not a layer"),
    (lambda: [nn.Conv2d(1, 4, 3, dilation=2)], r"module 0 \(Conv2d\): unsupported dilation"),
    (lambda: [nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3, groups=2)],
     r"module 1 \(Conv2d\): unsupported groups=2"),
    (lambda: [nn.Conv2d(1, 4, (3, 5))], r"module 0 \(Conv2d\): unsupported kernel_size=\(3, 5\)"),
    (lambda: [nn.Conv2d(1, 4, 4, padding="same")], r"0 \(Conv2d\): unsupported padding='same'"),
    (lambda: [nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect")], r"unsupported padding_mode"),
    (lambda: [nn.Conv2d(3, 4, 3)], r"module 0 \(Conv2d\): unsupported in_channels=3 for"),
    (lambda: [nn.MaxPool2d(2, padding=1)], r"module 0 \(MaxPool2d\): unsupported padding=1"),
    (lambda: [nn.MaxPool2d(3, ceil_mode=True)], r"module 0 \(MaxPool2d\): unsupported ceil_mode"),
    (lambda: [nn.AvgPool2d(2, divisor_override=3)], r"unsupported divisor_override=3"),
    (lambda: [nn.Flatten(2)], r"module 0 \(Flatten\): unsupported start_dim=2"),
    (lambda: [nn.Softmax(dim=1), nn.Flatten()], r"module 0 \(Softmax\): unsupported dim=1"),
    (lambda: [nn.Flatten(), nn.Linear(700, 10)], r"1 \(Linear\): unsupported in_features=700"),
    (lambda: [nn.Linear(784, 10)], r"in_features=784 for input \(1, 28, 28\)"),
    (lambda: [nn.MaxPool2d(40)], r"module 0 \(MaxPool2d\): maxpool2d window 40 does not fit"),
    (lambda: [nn.Flatten(), nn.Linear(784, 10), nn.Softmax(dim=-1)],
     r"module 2 \(Softmax\): softmax_cross_entropy models end in logits"),
    (lambda: [nn.Sequential(nn.Flatten())], r"module 0 \(Sequential\): not a layer"),
    (lambda: [], r"the torch.nn.Sequential is empty"),
]  # fmt: skip


@pytest.mark.parametrize("make, message", BAD_MODULES, ids=lambda v: getattr(v, "pattern", None))
def test_unsupported_modules(make, message):
    with pytest.raises(ExportError, match=message):
        numpycnn.from_torch(nn.Sequential(*make()), NORM)


def test_from_torch_bad_arguments():
    with pytest.raises(ExportError, match="expected a torch.nn.Sequential, got Linear"):
        numpycnn.from_torch(nn.Linear(784, 10), NORM)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with pytest.raises(ExportError, match="normalization must be"):
        numpycnn.from_torch(net, "standard")
    with pytest.raises(ExportError, match="float32 or float64"):
        numpycnn.from_torch(copy.deepcopy(net).to(torch.float16), NORM)
    assert numpycnn.from_torch(net, (0, 255)).normalization.strategy == "unit"


def test_without_torch(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ExportError, match=r"^PyTorch interchange needs the torch package: pip"):
        export(every_layer_model(), tmp_path / "w.pt")
    with pytest.raises(ExportError, match="needs the torch package"):
        numpycnn.to_torch(every_layer_model())
    assert list(tmp_path.iterdir()) == []


def test_state_dict_file_is_plain_tensors(tmp_path):
    out = tmp_path / "w.pt"
    export(every_layer_model(), out)
    state = torch.load(io.BytesIO(out.read_bytes()), weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert state["0.bias"].shape == (3,) and state["11.weight"].shape == (10, 12)
