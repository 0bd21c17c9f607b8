"""A batch-norm and dropout network in the inspector's page (Chromium, 1400 and 390 px):
a batchnorm2d unit, a batchnorm1d unit and a dropout unit each show their arithmetic with
the numbers the API computes from the engine, and the backward numbers through them."""

import numpy as np
import pytest
from test_inspect_api import request, serving
from test_inspect_browser import CHROMIUM, THREE, Page, click_unit, draw

from numpycnn.data import Normalization
from numpycnn.engine import Sequential, optim
from numpycnn.inspector import Inspector
from numpycnn.modelfile import load_model, save_model
from numpycnn.training import Trainer

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")

NETWORK = [
    {"type": "conv2d", "filters": 4, "kernel": 5},
    {"type": "maxpool2d", "size": 2, "stride": 2},
    {"type": "batchnorm2d"},
    {"type": "relu"},
    {"type": "flatten"},
    {"type": "dropout", "p": 0.3},
    {"type": "dense", "units": 16},
    {"type": "batchnorm1d"},
    {"type": "relu"},
    {"type": "dense", "units": 10},
]


@pytest.fixture(scope="module")
def served(tmp_path_factory, mnist):
    """The network trained on 1,000 real digits (its running statistics moved), served."""
    model = Sequential(NETWORK, init="he_normal", seed=0)
    norm = Normalization.fit("standard", mnist.train_images[:1000])
    x, y = norm.norm(mnist.train_images[:1000]), mnist.train_labels[:1000]
    assert Trainer(model, optim.get("adam", lr=0.01), x, y, epochs=2, batch_size=50).run()
    path = tmp_path_factory.mktemp("bn") / "bn.pkl"
    save_model(path, model, norm, [1.0])
    test = (mnist.test_images[:50], mnist.test_labels[:50])
    with serving(Inspector(load_model(path), test_set=lambda: test, name="bn.pkl")) as (url, _):
        yield url


def click_bar(page, layer, unit, units):
    bars = page.locator(f'#acts .layer[data-layer="{layer}"] .barbox canvas').first
    bars.scroll_into_view_if_needed()
    box = bars.bounding_box()
    bars.click(position={"x": box["width"] * (unit + 0.5) / units, "y": box["height"] / 2})


@pytest.mark.parametrize("width", [1400, 390])
def test_batch_norm_and_dropout_units_on_the_page(browser, served, width):
    p = Page(browser, served, width)
    page = p.page
    try:
        draw(page, THREE)
        page.wait_for_selector('#acts .layer[data-layer="9"]')
        pixels = page.evaluate("() => current.pixels")

        click_unit(page, 2, 1, 3, 5)  # batchnorm2d: channel 1, row 3, column 5
        page.wait_for_selector("#unit[data-kind='batchnorm2d']")
        _, api = request(served + "/api/unit", {"pixels": pixels, "layer": 2, "unit": [1, 3, 5]})
        text = page.inner_text("#unit")
        assert "running mean μ" in text and "(agrees" in text
        for key in ("mean", "var", "gamma", "beta", "value"):
            assert f"{api[key]:.6g}" in text, key  # as the page's fmt(v, 6) prints it
        page.wait_for_selector("#backnums .step[data-rule]")
        assert "undefined" not in page.inner_text("#unit") and "NaN" not in text

        click_bar(page, 7, 3, 16)  # batchnorm1d: feature 3
        page.wait_for_selector("#unit[data-kind='batchnorm1d']")
        assert "feature 3" in page.inner_text("#unit")

        click_bar(page, 5, 40, 4 * 12 * 12)  # dropout after flatten: the identity
        page.wait_for_selector("#unit[data-kind='dropout']")
        assert "off at inference" in page.inner_text("#unit")

        # the maxpool unit before batch norm: its gradient through gamma / sqrt(var + eps)
        click_unit(page, 1, 1, 3, 5)
        page.wait_for_selector("#backnums .step[data-rule='batchnorm']")
        assert "undefined" not in page.inner_text("#unit")
        p.check()
    finally:
        p.close()
    assert np.isfinite(api["value"])
