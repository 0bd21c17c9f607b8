"""PyTorch as the independent oracle: forward outputs and every gradient of each layer,
activation and loss, the whole reference network, and the optimisers' steps, in float64."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from numpycnn.engine import (  # noqa: E402  (after the skip above)
    AvgPool2D,
    BatchNorm1D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
    losses,
    optim,
    reference_network,
)

torch.set_num_threads(1)

RTOL, ATOL = 1e-5, 1e-10


def close(actual, expected):
    if isinstance(expected, torch.Tensor):
        expected = expected.detach().numpy()
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


def t(a, grad=False):
    return torch.tensor(np.array(a, dtype=np.float64), requires_grad=grad)


def run_layer(layer, x, seed=0):
    """Forward and backward of one float64 layer with random parameters and upstream
    gradient; returns (params, out, upstream, dx, parameter gradients)."""
    rng = np.random.default_rng(seed)
    Sequential([layer], loss=None, input_shape=x.shape[1:], dtype="float64")
    layer.needs_input_grad = True
    for p in layer.params.values():
        p[...] = rng.standard_normal(p.shape)
    out = np.array(layer.forward(x))
    upstream = rng.standard_normal(out.shape)
    dx = np.array(layer.backward(upstream))
    params = {k: p.copy() for k, p in layer.params.items()}
    grads = {k: g.copy() for k, g in layer.grads.items()}
    return params, out, upstream, dx, grads


def torch_grads(fn, x, upstream, params=()):
    """Output of fn(x, *params) and the gradients of sum(out * upstream)."""
    xt = t(x, grad=True)
    pts = [t(p, grad=True) for p in params]
    out = fn(xt, *pts)
    (out * t(upstream)).sum().backward()
    return out, xt.grad, [p.grad for p in pts]


# ----- layers -----

CONV_CASES = [
    # (N, C, H, W), filters, kernel, stride, padding
    ((2, 1, 28, 28), 8, 5, 1, 0),
    ((2, 8, 24, 24), 8, 5, 1, 0),
    ((2, 3, 7, 9), 4, 3, 2, 1),
    ((3, 2, 10, 7), 5, 3, 1, 1),
    ((2, 2, 4, 5), 3, 1, 1, 0),
    ((2, 3, 11, 8), 2, 4, 3, 2),
    ((1, 4, 9, 9), 6, 2, 2, 0),
    ((2, 1, 9, 7), 3, 3, 2, 1),
    ((2, 2, 8, 8), 2, 2, 3, 1),
    ((1, 2, 5, 5), 2, 3, 1, 3),
]


@pytest.mark.parametrize("shape,filters,kernel,stride,padding", CONV_CASES)
def test_conv2d(shape, filters, kernel, stride, padding):
    x = np.random.default_rng(1).standard_normal(shape)
    layer = Conv2D(filters, kernel, stride=stride, padding=padding)
    params, out, up, dx, grads = run_layer(layer, x)
    assert params["weight"].shape == (filters, shape[1], kernel, kernel)
    assert params["bias"].shape == (filters, 1)

    def fn(xt, w, b):
        return F.conv2d(xt, w, b[:, 0], stride=stride, padding=padding)

    out_t, dx_t, (dw_t, db_t) = torch_grads(fn, x, up, [params["weight"], params["bias"]])
    assert out.shape == tuple(out_t.shape)
    close(out, out_t)
    close(dx, dx_t)
    close(grads["weight"], dw_t)
    close(grads["bias"], db_t)


POOL_CASES = [
    ((2, 8, 20, 20), 2, 2),
    ((2, 3, 7, 9), 3, 3),
    ((1, 2, 7, 7), 3, 2),
    ((2, 1, 5, 6), 2, 1),
    ((2, 3, 9, 8), 3, 2),
    ((2, 2, 8, 9), 2, 3),
]


@pytest.mark.parametrize("shape,size,stride", POOL_CASES)
def test_maxpool2d(shape, size, stride):
    # A permutation: no ties, where PyTorch's choice among equal maxima may differ.
    x = np.random.default_rng(2).permutation(np.prod(shape)).reshape(shape) / 7.0
    _, out, up, dx, _ = run_layer(MaxPool2D(size, stride), x)
    out_t, dx_t, _ = torch_grads(lambda a: F.max_pool2d(a, size, stride), x, up)
    close(out, out_t)
    close(dx, dx_t)


@pytest.mark.parametrize("shape,size,stride", POOL_CASES)
def test_avgpool2d(shape, size, stride):
    x = np.random.default_rng(3).standard_normal(shape)
    _, out, up, dx, _ = run_layer(AvgPool2D(size, stride), x)
    out_t, dx_t, _ = torch_grads(lambda a: F.avg_pool2d(a, size, stride), x, up)
    close(out, out_t)
    close(dx, dx_t)


@pytest.mark.parametrize("n_in,units", [(800, 128), (128, 10), (7, 3)])
def test_dense(n_in, units):
    x = np.random.default_rng(4).standard_normal((5, n_in))
    params, out, up, dx, grads = run_layer(Dense(units), x)
    assert params["weight"].shape == (units, n_in)
    assert params["bias"].shape == (units, 1)

    def fn(xt, w, b):
        return F.linear(xt, w, b[:, 0])

    out_t, dx_t, (dw_t, db_t) = torch_grads(fn, x, up, [params["weight"], params["bias"]])
    close(out, out_t)
    close(dx, dx_t)
    close(grads["weight"], dw_t)
    close(grads["bias"], db_t)


def test_flatten():
    x = np.random.default_rng(5).standard_normal((3, 8, 10, 10))
    _, out, up, dx, _ = run_layer(Flatten(), x)
    out_t, dx_t, _ = torch_grads(lambda a: torch.flatten(a, 1), x, up)
    close(out, out_t)
    close(dx, dx_t)


def test_flatten_after_conv():
    """Flatten of a conv output (channels-last memory behind it) is still C order of NCHW."""
    x = np.random.default_rng(6).standard_normal((2, 3, 6, 6))
    model = Sequential(
        [Conv2D(4, 3), Flatten()], loss=None, input_shape=(3, 6, 6), dtype="float64", seed=1
    )
    w, b = model.params[0], model.params[1]
    out = model.forward(x)
    close(out, torch.flatten(F.conv2d(t(x), t(w), t(b[:, 0])), 1))


# ----- activations -----

ACTIVATIONS = [
    (ReLU(), lambda a: F.relu(a)),
    (LeakyReLU(), lambda a: F.leaky_relu(a, 0.01)),
    (LeakyReLU(alpha=0.3), lambda a: F.leaky_relu(a, 0.3)),
    (Sigmoid(), torch.sigmoid),
    (Tanh(), torch.tanh),
    (Softmax(), lambda a: F.softmax(a, dim=-1)),
]


@pytest.mark.parametrize(
    "layer,fn",
    ACTIVATIONS,
    ids=["relu", "leaky_relu", "leaky_relu_0.3", "sigmoid", "tanh", "softmax"],
)
@pytest.mark.parametrize("shape", [(4, 10), (2, 3, 5, 4)])
def test_activation(layer, fn, shape):
    x = np.random.default_rng(7).standard_normal(shape) * 3
    _, out, up, dx, _ = run_layer(layer, x)
    out_t, dx_t, _ = torch_grads(fn, x, up)
    close(out, out_t)
    close(dx, dx_t)


# ----- losses -----


def torch_loss(name, zt, labels):
    y = torch.tensor(labels)
    onehot = F.one_hot(y, zt.shape[1]).to(torch.float64)
    if name == "softmax_cross_entropy":
        return F.cross_entropy(zt, y)
    if name == "binary_cross_entropy":
        return F.binary_cross_entropy(zt, onehot)
    if name == "mean_squared_error":
        return F.mse_loss(zt, onehot)
    if name == "half_sum_squared_error":
        return 0.5 * F.mse_loss(zt, onehot, reduction="sum") / zt.shape[0]
    if name == "mean_absolute_error":
        return F.l1_loss(zt, onehot)
    raise AssertionError(f"no PyTorch counterpart for loss {name!r}")


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_loss(name):
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 10, 6)
    if name == "binary_cross_entropy":
        z = rng.uniform(0.02, 0.98, (6, 10))
    else:
        z = rng.standard_normal((6, 10)) * 2
    loss = losses.get(name)
    value = loss.forward(z, labels)
    grad = loss.backward()
    zt = t(z, grad=True)
    value_t = torch_loss(name, zt, labels)
    value_t.backward()
    close(value, value_t)
    close(grad, zt.grad)


# ----- the whole reference network -----


def torch_reference(model):
    """The reference network in torch.nn with the model's parameters copied in."""
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 5),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 5),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2, 2),
        torch.nn.Flatten(),
        torch.nn.Linear(800, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 10),
    ).double()
    f1, f2, w3, w4, b1, b2, b3, b4 = model.get_params()
    ordered = [net[0].weight, net[2].weight, net[6].weight, net[8].weight]
    ordered += [net[0].bias, net[2].bias, net[6].bias, net[8].bias]
    with torch.no_grad():
        for dst, src in zip(ordered, [f1, f2, w3, w4, b1, b2, b3, b4]):
            dst.copy_(torch.from_numpy(src.reshape(dst.shape)))
    return net, ordered


@pytest.mark.parametrize("init", ["reference", "he_normal"])
def test_reference_network(init):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((6, 1, 28, 28))
    labels = rng.integers(0, 10, 6)
    model = reference_network(dtype="float64", seed=4, init=init)
    net, ordered = torch_reference(model)
    loss, logits = model.loss_on(x, labels)
    model.backward()

    logits_t = net(t(x))
    loss_t = F.cross_entropy(logits_t, torch.tensor(labels))
    loss_t.backward()
    close(logits, logits_t)
    close(loss, loss_t)
    close(model.predict_proba(x), F.softmax(logits_t, dim=1))
    assert len(model.grads) == len(ordered) == 8
    for name, grad, p in zip(model.param_names, model.grads, ordered):
        assert grad.shape[0] == p.shape[0], name
        close(grad.reshape(p.shape), p.grad)


# ----- optimisers -----


def run_steps(numpy_opt, torch_opt_factory, steps, size=40, seed=10):
    """Feed the same gradients to both optimisers; compare parameters after each step."""
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(size)
    pt = t(p, grad=True)
    opt_t = torch_opt_factory([pt])
    for _ in range(steps):
        g = rng.standard_normal(size) * rng.choice([1e-3, 1.0, 10.0], size)
        numpy_opt.step(p, g.copy())
        pt.grad = torch.from_numpy(g.copy())
        opt_t.step()
        close(p, pt)
    assert numpy_opt.t == steps


def test_sgd():
    run_steps(optim.SGD(0.1), lambda ps: torch.optim.SGD(ps, lr=0.1), steps=3)


@pytest.mark.parametrize("momentum", [0.9, 0.5])
def test_momentum(momentum):
    run_steps(
        optim.Momentum(0.05, momentum=momentum),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=momentum, dampening=0),
        steps=5,
    )


@pytest.mark.parametrize(
    "lr,beta1,beta2,eps",
    [(1e-3, 0.9, 0.999, 1e-8), (0.02, 0.8, 0.95, 1e-4)],
)
def test_adam(lr, beta1, beta2, eps):
    run_steps(
        optim.Adam(lr, beta1=beta1, beta2=beta2, eps=eps),
        lambda ps: torch.optim.Adam(ps, lr=lr, betas=(beta1, beta2), eps=eps),
        steps=6,
    )


def test_escontrela_adam_follows_spec_formula():
    """Moments reset every batch, no bias correction: each step is the same closed form."""
    rng = np.random.default_rng(11)
    p = rng.standard_normal(50)
    opt = optim.EscontrelaAdam()
    for _ in range(3):
        g = rng.standard_normal(50) * rng.choice([1e-4, 1e-2, 1.0], 50)
        expected = p - 0.01 * (1 - 0.95) * g / np.sqrt((1 - 0.99) * g * g + 1e-7)
        opt.step(p, g)
        np.testing.assert_allclose(p, expected, rtol=1e-12, atol=1e-15)


def test_escontrela_adam_is_nearly_a_sign_step():
    """Large gradients move each parameter by about lr*(1-b1)/sqrt(1-b2) = 0.005."""
    p = np.zeros(4)
    optim.EscontrelaAdam().step(p, np.array([3.0, -3.0, 50.0, -0.5]))
    np.testing.assert_allclose(p, [-0.005, 0.005, -0.005, 0.005], rtol=1e-3)


# ----- a colour network: three input channels, padding, stride 2, both poolings -----


def test_colour_network():
    """A CIFAR-sized colour network, forward and every gradient (the input's too)."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((4, 3, 32, 32))
    labels = rng.integers(0, 10, 4)
    specs = [
        {"type": "conv2d", "filters": 6, "kernel": 3, "padding": 1},
        {"type": "relu"},
        {"type": "conv2d", "filters": 8, "kernel": 5, "stride": 2, "padding": 2},
        {"type": "relu"},
        {"type": "maxpool2d", "size": 2, "stride": 2},
        {"type": "avgpool2d", "size": 2, "stride": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 10},
    ]
    model = Sequential(specs, input_shape=(3, 32, 32), init="he_normal", dtype="float64", seed=7)
    assert model.output_shape == (10,) and model.shapes[5] == (8, 4, 4)
    model.layers[0].needs_input_grad = True
    loss, logits = model.loss_on(x, labels)
    dx = model.backward()

    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(6, 8, 5, stride=2, padding=2),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2, 2),
        torch.nn.AvgPool2d(2, 2),
        torch.nn.Flatten(),
        torch.nn.Linear(128, 10),
    ).double()
    f1, f2, w3, b1, b2, b3 = model.get_params()
    ordered = [net[0].weight, net[2].weight, net[7].weight, net[0].bias, net[2].bias, net[7].bias]
    with torch.no_grad():
        for dst, src in zip(ordered, [f1, f2, w3, b1, b2, b3]):
            dst.copy_(torch.from_numpy(src.reshape(dst.shape)))
    xt = t(x, grad=True)
    logits_t = net(xt)
    loss_t = F.cross_entropy(logits_t, torch.tensor(labels))
    loss_t.backward()
    close(logits, logits_t)
    close(loss, loss_t)
    close(dx, xt.grad)
    assert model.param_names == ["f1", "f2", "w3", "b1", "b2", "b3"]
    for grad, p in zip(model.grads, ordered):
        close(grad.reshape(p.shape), p.grad)


# ----- batch norm and dropout -----


@pytest.mark.parametrize(
    "cls,shape",
    [(BatchNorm2D, (4, 3, 5, 6)), (BatchNorm2D, (2, 2, 3, 3)), (BatchNorm1D, (6, 5))],
)
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm(cls, shape, training):
    """Forward and backward against torch's BatchNorm in both modes, and the running
    statistics one training forward leaves (unbiased variance, momentum 0.1)."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal(shape) * 3 + 1.5
    layer = cls()
    model = Sequential([layer], loss=None, input_shape=shape[1:], dtype="float64")
    layer.needs_input_grad = True
    running = [rng.random(shape[1]) - 0.5, rng.random(shape[1]) + 0.5, np.array([3.0])]
    model.set_state(running)
    model.train(training)
    for p in model.params:
        p[...] = rng.standard_normal(p.shape)
    params = {k: p.copy() for k, p in layer.params.items()}
    out = np.array(layer.forward(x))
    upstream = rng.standard_normal(out.shape)
    dx = np.array(layer.backward(upstream))
    grads = layer.grads
    bn = (torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d)(shape[1])
    bn = bn.double().train(training)
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(params["weight"][:, 0]))
        bn.bias.copy_(torch.from_numpy(params["bias"][:, 0]))
        bn.running_mean.copy_(torch.from_numpy(running[0]))
        bn.running_var.copy_(torch.from_numpy(running[1]))
        bn.num_batches_tracked.fill_(3)
    xt = t(x, grad=True)
    out_t = bn(xt)
    (out_t * t(upstream)).sum().backward()
    close(out, out_t)
    close(dx, xt.grad)
    close(grads["weight"][:, 0], bn.weight.grad)
    close(grads["bias"][:, 0], bn.bias.grad)
    mean, var, count = layer.state.values()
    close(mean, bn.running_mean)
    close(var, bn.running_var)
    assert count[0] == bn.num_batches_tracked.item() == (4 if training else 3)


def test_dropout_matches_torch_semantics():
    """Inverted dropout: the mask's values are 0 or 1 / (1 - p), kept at rate 1 - p; the
    output is x times the mask and the gradient the upstream times it, as torch's dropout
    is for its own mask; evaluation passes x through, as torch's does."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 4, 6, 6))
    layer = Dropout(0.3)
    model = Sequential([layer], loss=None, input_shape=x.shape[1:], dtype="float64").train()
    model.set_step(5, 17)
    _, out, upstream, dx, _ = run_layer(layer, x)
    mask = layer.mask(x.shape, x.dtype)
    assert set(np.unique(mask)) == {0.0, 1 / 0.7}
    assert abs((mask > 0).mean() - 0.7) < 0.02
    close(out, x * mask)
    close(dx, upstream * mask)
    drop = torch.nn.Dropout(0.3).double()
    torch.manual_seed(0)
    torch_out = drop(t(x)).numpy()
    scaled = torch_out[torch_out != 0] / x[torch_out != 0]
    np.testing.assert_allclose(scaled, 1 / 0.7)  # torch's kept values: the same scaling
    model.eval()
    close(layer.forward(x), drop.eval()(t(x)))


BN_NETWORK = [
    {"type": "conv2d", "filters": 4, "kernel": 3},
    {"type": "batchnorm2d"},
    {"type": "relu"},
    {"type": "maxpool2d", "size": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 16},
    {"type": "batchnorm1d", "momentum": 0.2},
    {"type": "relu"},
    {"type": "dropout", "p": 0.4},
    {"type": "dense", "units": 10},
]


class _Mask(torch.nn.Module):
    """torch's Dropout with numpycnn's mask of the step (the same values, not the same
    random stream): what the parity test compares."""

    def __init__(self):
        super().__init__()
        self.mask = None

    def forward(self, x):
        return x * self.mask if self.training else x


def test_batchnorm_network_after_optimiser_steps():
    """A conv-bn-relu-pool-dense-bn-relu-dropout-dense network trained 5 Adam steps by
    numpycnn and by torch (same start, batches and dropout masks): the same parameters,
    running statistics and evaluation outputs."""
    rng = np.random.default_rng(21)
    model = Sequential(BN_NETWORK, input_shape=(1, 12, 12), dtype="float64", init="he_normal")
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(100, 16),
        torch.nn.BatchNorm1d(16, momentum=0.2),
        torch.nn.ReLU(),
        _Mask(),
        torch.nn.Linear(16, 10),
    ).double()
    by_name = dict(zip(model.param_names, model.params))
    pairs = [("f1", "b1", 0), ("g2", "b2", 1), ("w3", "b3", 5), ("g4", "b4", 6), ("w5", "b5", 9)]
    for p in model.params:
        p[...] = rng.standard_normal(p.shape) * 0.3
    with torch.no_grad():
        for w, b, i in pairs:
            net[i].weight.copy_(torch.from_numpy(by_name[w].reshape(net[i].weight.shape)))
            net[i].bias.copy_(torch.from_numpy(by_name[b].reshape(-1)))
    opt = optim.Adam(0.01)
    opt_t = torch.optim.Adam(net.parameters(), lr=0.01)
    dropout = model.layers[8]
    for step in range(5):
        x = rng.standard_normal((8, 1, 12, 12))
        y = rng.integers(0, 10, 8)
        model.set_step(0, step)
        model.train()
        model.train_step(x, y, opt)
        net.train()
        net[8].mask = torch.from_numpy(dropout.mask((8, 16), np.dtype(np.float64)))
        opt_t.zero_grad()
        F.cross_entropy(net(t(x)), torch.tensor(y)).backward()
        opt_t.step()
    for w, b, i in pairs:
        close(by_name[w].reshape(net[i].weight.shape), net[i].weight)
        close(by_name[b].reshape(-1), net[i].bias)
    for i in (1, 6):
        mean, var, count = model.layers[i].state.values()
        close(mean, net[i].running_mean)
        close(var, net[i].running_var)
        assert count[0] == net[i].num_batches_tracked.item() == 5
    x = rng.standard_normal((5, 1, 12, 12))
    close(model.predict_proba(x), F.softmax(net.eval()(t(x)), dim=1))
