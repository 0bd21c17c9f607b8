"""The out-of-distribution cue (issue #17, item 16) on real cases: held-out MNIST test
digits are rarely flagged; a tap, a letter A, a scribble, a filled square and noise, drawn
as a user would and uploaded to a real server, all are. Its numbers are recomputed from
the engine's forward pass."""

import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_inspect_api import image_body, load_model_like, png_bytes, request, serving

from numpycnn.inspector import Inspector
from numpycnn.inspector.novelty import CALIBRATION, PERCENTILE, feature_layer
from numpycnn.modelfile import load_model

#: Held-out test digits: not among the calibration images (the first CALIBRATION).
HELD_OUT = slice(5000, 6000)


@pytest.fixture(scope="module")
def served(reference_params_path, mnist):
    """The reference network with the MNIST training images to compare with."""
    test = (mnist.test_images[:CALIBRATION], mnist.test_labels[:CALIBRATION])
    inspector = Inspector(
        load_model(reference_params_path),
        test_set=lambda: test,
        train_set=lambda: mnist.train_images,
    )
    with serving(inspector) as (url, _):
        yield inspector, url


def drawn(paint, size=280, width=26):
    """A dark drawing on white, as the page's canvas or a photo of paper gives it."""
    image = Image.new("L", (size, size), 255)
    paint(ImageDraw.Draw(image), width)
    return png_bytes(image)


def letter_a(d, w):
    d.line((60, 240, 140, 40), fill=0, width=w)
    d.line((140, 40, 220, 240), fill=0, width=w)
    d.line((95, 160, 185, 160), fill=0, width=w)


ODD = {
    "a single tap": drawn(lambda d, w: d.ellipse((137, 137, 143, 143), fill=0)),
    "a letter A": drawn(letter_a),
    "a scribble": drawn(
        lambda d, w: d.line(
            [tuple(p) for p in np.random.default_rng(1).integers(30, 250, (12, 2))], fill=0, width=w
        )
    ),
    "a filled square": drawn(lambda d, w: d.rectangle((60, 60, 220, 220), fill=0)),
    "noise": png_bytes(
        Image.fromarray(np.random.default_rng(2).integers(0, 256, (28, 28)).astype(np.uint8))
    ),
}


@pytest.mark.parametrize("name", ODD)
def test_odd_inputs_are_flagged(served, name):
    _, url = served
    for path in ("/api/predict", "/api/inspect"):
        status, r = request(url + path, image_body(ODD[name]))
        assert status == 200, r
        ood = r["ood"]
        assert ood["flag"] is True, (name, ood)
        assert ood["distance_flag"] or ood["ink_flag"]
        assert "means little" in ood["text"]
    # the network is confident all the same: the probabilities alone could not say so
    assert max(r["probabilities"]) > 0.5


def test_held_out_test_digits_are_rarely_flagged(served, mnist):
    inspector, url = served
    novelty = inspector.novelty()
    digits = mnist.test_images[HELD_OUT]
    far = novelty.distances(novelty.features(digits)) > novelty.threshold
    ink = digits.reshape(len(digits), -1).sum(axis=1) / 255
    odd_ink = (ink < novelty.ink_range[0]) | (ink > novelty.ink_range[1])
    # by construction about 2.5% by distance (the 97.5th percentile) and 0.2% by ink
    assert np.mean(far | odd_ink) < 0.045, (np.mean(far), np.mean(odd_ink))
    for digit, flag in zip(digits[:50], far | odd_ink):  # the same verdict, one by one
        assert novelty.judge(digit)["flag"] == flag
    for index in (5000, 5001, 5002):  # through the API, as the page asks
        _, r = request(url + "/api/predict", {"test_index": index % CALIBRATION})
        assert r["ood"]["score"] == novelty.judge(mnist.test_images[index % CALIBRATION])["score"]
        status, r = request(
            url + "/api/predict", {"pixels": mnist.test_images[index].ravel().tolist()}
        )
        assert r["ood"] == novelty.judge(mnist.test_images[index])


def test_the_measure_recomputed_from_the_engine(served, mnist):
    """The distance, its threshold and the ink, recomputed in float64 from a fresh copy of
    the network: the last conv layer's output, unit length, nearest training sample."""
    inspector, _ = served
    novelty = inspector.novelty()
    model = load_model_like(inspector)
    last = feature_layer(model)
    assert model.layers[last].kind == "conv2d" and last == 2

    def features(digits):
        out = []
        for start in range(0, len(digits), 250):
            x = inspector.norm.norm(digits[start : start + 250]).astype(np.float64)
            for layer in model.layers[: last + 1]:
                x = layer.forward(x)
            out.append(x.reshape(len(x), -1))
        f = np.concatenate(out)
        return f / np.linalg.norm(f, axis=1, keepdims=True)

    bank = features(mnist.train_images[novelty.sample])
    assert len(novelty.sample) == len(set(novelty.sample.tolist())) == novelty.bank.shape[0]

    def nearest(f):  # |a - b|^2 = 2 - 2 a.b for unit vectors, in float64
        return np.sqrt(np.clip(2 - 2 * (f @ bank.T).max(axis=1), 0, None))

    calibration = nearest(features(mnist.test_images[:CALIBRATION]))
    assert novelty.threshold == pytest.approx(np.percentile(calibration, PERCENTILE), rel=1e-4)
    digit = mnist.test_images[5003]
    judged = novelty.judge(digit)
    explicit = np.linalg.norm(bank - features(digit[None]), axis=1).min()
    assert judged["score"] == pytest.approx(explicit, rel=1e-4)
    assert judged["ink"] == digit.astype(np.float64).sum() / 255
    ink = mnist.train_images[novelty.sample].reshape(len(novelty.sample), -1).sum(axis=1) / 255
    assert judged["ink_range"] == pytest.approx(np.percentile(ink, [0.1, 99.9]))
    assert judged["percentile"] == pytest.approx(np.mean(calibration < judged["score"]), abs=2e-3)
    assert f"{judged['threshold']:.3f}" in judged["measure"]


def test_without_training_images_the_cue_says_why(reference_params_path, mnist):
    inspector = Inspector(load_model(reference_params_path))
    with serving(inspector) as (url, _):
        _, r = request(url + "/api/predict", {"pixels": mnist.test_images[0].ravel().tolist()})
    assert r["ood"] == {
        "flag": None,
        "text": "no comparison with the training digits: started without them",
    }
