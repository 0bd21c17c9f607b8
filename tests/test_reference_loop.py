"""Parity with the reference's own arithmetic.

The functions below are an executable specification of the 2018 reference network
(SPEC.md), written as plainly as possible: one image at a time, loops over filters and
positions, the batch gradient as the mean of per-image gradients, and the reference's
optimiser step. The vectorised engine must agree with them on real MNIST images.
"""

import numpy as np
import pytest

from numpycnn.engine import optim, reference_network

BATCH = 4


# ----- the specification, one image at a time -----


def conv(image, filters, bias):
    """Valid cross-correlation, stride 1: image (C, H, W), filters (F, C, K, K), bias (F, 1)."""
    n_f, _, k, _ = filters.shape
    side_h, side_w = image.shape[1] - k + 1, image.shape[2] - k + 1
    out = np.zeros((n_f, side_h, side_w))
    for f in range(n_f):
        for i in range(side_h):
            for j in range(side_w):
                out[f, i, j] = np.sum(filters[f] * image[:, i : i + k, j : j + k]) + bias[f, 0]
    return out


def conv_backward(dout, image, filters):
    """Gradients of conv(): (dimage, dfilters, dbias), accumulated position by position."""
    n_f, _, k, _ = filters.shape
    dimage = np.zeros(image.shape)
    dfilters = np.zeros(filters.shape)
    dbias = np.zeros((n_f, 1))
    for f in range(n_f):
        for i in range(dout.shape[1]):
            for j in range(dout.shape[2]):
                dfilters[f] += dout[f, i, j] * image[:, i : i + k, j : j + k]
                dimage[:, i : i + k, j : j + k] += dout[f, i, j] * filters[f]
        dbias[f, 0] = np.sum(dout[f])
    return dimage, dfilters, dbias


def maxpool(image, size=2, stride=2):
    """Max over each window; remembers where the first maximum (row-major) was."""
    c, h, w = image.shape
    side_h, side_w = (h - size) // stride + 1, (w - size) // stride + 1
    out = np.zeros((c, side_h, side_w))
    where = np.zeros((c, side_h, side_w, 2), dtype=int)
    for ch in range(c):
        for i in range(side_h):
            for j in range(side_w):
                best, best_pos = -np.inf, None
                for u in range(size):
                    for v in range(size):
                        value = image[ch, i * stride + u, j * stride + v]
                        if value > best:  # strict: a later equal value does not win
                            best, best_pos = value, (i * stride + u, j * stride + v)
                out[ch, i, j] = best
                where[ch, i, j] = best_pos
    return out, where


def maxpool_backward(dout, where, shape):
    dimage = np.zeros(shape)
    for ch in range(dout.shape[0]):
        for i in range(dout.shape[1]):
            for j in range(dout.shape[2]):
                r, s = where[ch, i, j]
                dimage[ch, r, s] += dout[ch, i, j]
    return dimage


def softmax(z):
    e = np.exp(z - np.max(z))
    return e / np.sum(e)


def image_forward_backward(image, label, params):
    """One image (1, 28, 28): class probabilities (10, 1), loss, and the 8 gradients."""
    f1, f2, w3, w4, b1, b2, b3, b4 = params
    conv1 = conv(image, f1, b1)
    conv1[conv1 <= 0] = 0
    conv2 = conv(conv1, f2, b2)
    conv2[conv2 <= 0] = 0
    pooled, where = maxpool(conv2)
    flat = pooled.reshape(-1, 1)  # C order
    z = w3 @ flat + b3
    z[z <= 0] = 0
    logits = w4 @ z + b4
    probs = softmax(logits)
    target = np.zeros((10, 1))
    target[label] = 1
    loss = -np.sum(target * np.log(probs))

    dlogits = probs - target
    dw4 = dlogits @ z.T
    db4 = dlogits
    dz = w4.T @ dlogits
    dz[z <= 0] = 0
    dw3 = dz @ flat.T
    db3 = dz
    dflat = w3.T @ dz
    dpooled = dflat.reshape(pooled.shape)
    dconv2 = maxpool_backward(dpooled, where, conv2.shape)
    dconv2[conv2 <= 0] = 0
    dconv1, df2, db2 = conv_backward(dconv2, conv1, f2)
    dconv1[conv1 <= 0] = 0
    _, df1, db1 = conv_backward(dconv1, image, f1)
    return probs, loss, [df1, df2, dw3, dw4, db1, db2, db3, db4]


def batch_forward_backward(images, labels, params):
    """Probabilities (N, 10), mean loss and mean gradients over the batch."""
    results = [image_forward_backward(im, lab, params) for im, lab in zip(images, labels)]
    probs = np.array([r[0][:, 0] for r in results])
    loss = np.mean([r[1] for r in results])
    grads = [np.mean([r[2][k] for r in results], axis=0) for k in range(8)]
    return probs, loss, grads


def reference_step(params, grads, lr=0.01, beta1=0.95, beta2=0.99):
    """The reference's "Adam": moments created as zeros each batch, no bias correction."""
    updated = []
    for p, g in zip(params, grads):
        m = beta1 * np.zeros(p.shape) + (1 - beta1) * g
        v = beta2 * np.zeros(p.shape) + (1 - beta2) * g**2
        updated.append(p - lr * m / np.sqrt(v + 1e-7))
    return updated


# ----- the comparison -----


@pytest.fixture(scope="module")
def batch(mnist):
    """The first BATCH training images, normalised as the reference does: (x - 33) / 78."""
    x = mnist.train_images[:BATCH].reshape(BATCH, 1, 28, 28).astype(np.float64)
    x -= 33
    x /= 78
    return x, mnist.train_labels[:BATCH].astype(np.int64)


@pytest.fixture(scope="module", params=["reference", "he_normal"])
def spec(request, batch):
    """Parameters (two initialisations) and the specification's results on them."""
    x, labels = batch
    params = reference_network(dtype="float64", seed=5, init=request.param).get_params()
    return params, batch_forward_backward(x, labels, params)


def engine_model(params):
    model = reference_network(dtype="float64", seed=99)
    model.set_params(params)
    return model


def test_specification_sanity(batch):
    """The loop code itself: a softmax per image and the loss of uniform outputs."""
    x, labels = batch
    model = reference_network(dtype="float64")
    params = [np.zeros_like(p) for p in model.get_params()]
    probs, loss, grads = batch_forward_backward(x, labels, params)
    np.testing.assert_allclose(probs, 0.1)
    assert loss == pytest.approx(np.log(10))
    np.testing.assert_allclose(grads[7][:, 0], 0.1 - np.bincount(labels, minlength=10) / BATCH)


def test_forward_and_loss(batch, spec):
    x, labels = batch
    params, (probs, loss, _) = spec
    model = engine_model(params)
    loss_engine, logits = model.loss_on(x, labels)
    np.testing.assert_allclose(model.loss.probabilities(logits), probs, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(model.predict_proba(x), probs, rtol=1e-10, atol=1e-15)
    assert loss_engine == pytest.approx(loss, rel=1e-12)


def test_gradients(batch, spec):
    x, labels = batch
    params, (_, _, grads) = spec
    model = engine_model(params)
    model.loss_on(x, labels)
    model.backward()
    assert model.param_names == ["f1", "f2", "w3", "w4", "b1", "b2", "b3", "b4"]
    for name, engine, spec in zip(model.param_names, model.grads, grads):
        assert engine.shape == spec.shape, name
        scale = np.abs(spec).max()
        assert scale > 0, name
        np.testing.assert_allclose(engine, spec, rtol=1e-9, atol=1e-12 * scale, err_msg=name)


def test_optimiser_step(batch, spec):
    x, labels = batch
    params, (_, _, grads) = spec
    expected = reference_step(params, grads)
    model = engine_model(params)
    optimizer = optim.EscontrelaAdam()
    model.train_step(x, labels, optimizer)
    for name, engine, spec, before in zip(model.param_names, model.params, expected, params):
        assert not np.array_equal(engine, before), name
        np.testing.assert_allclose(engine, spec, rtol=1e-9, atol=1e-12, err_msg=name)
