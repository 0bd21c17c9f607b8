"""The backward pass in numbers and "Learn from this example" in a real headless browser
(Debian's chromium, driven by Playwright) at 1400 and 390 px: click a unit, read its
backward numbers (as the API computes them, agreeing with the engine), choose a weight, take
one learning step and see the loss fall; no console error, no sideways scrolling, no serious
accessibility violation. Screenshots of both widths are saved as test artefacts; with
``NUMPYCNN_INSPECT_LEARN_SCREENSHOT=docs/inspect.png`` they are also copied beside it as
``inspect-learn.png`` and ``inspect-backward.png`` (and ``-phone`` of each).
"""

import os
import shutil
from pathlib import Path

import pytest
import test_inspect_browser as pages
from test_inspect_api import reference_inspector, request, serving
from test_inspect_browser import CHROMIUM, THREE, click_unit, draw, js_number, wait_inspected

# the page tests' page opener (the browser fixture is conftest's)
open_page = pages.open_page

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")


@pytest.fixture(scope="module")
def served(reference_params_path, mnist):
    """The reference network on 127.0.0.1, without the training images (the page then says
    that the out-of-distribution cue is unavailable): (inspector, url, log)."""
    with serving(reference_inspector(reference_params_path, mnist)) as (url, log):
        yield None, url, log


def shoot(locator, tmp_path, name):
    shot = tmp_path / f"{name}.png"
    locator.screenshot(path=shot)
    print(f"screenshot: {shot}")
    target = os.environ.get("NUMPYCNN_INSPECT_LEARN_SCREENSHOT")
    if target:
        target = Path(target)
        suffix = "" if name.endswith("1400") else "-phone"
        part = "-learn" if "learn" in name else "-backward"
        shutil.copyfile(shot, target.with_name(target.stem + part + suffix + target.suffix))
    assert shot.stat().st_size > 10_000


@pytest.mark.parametrize("width", [1400, 390])
def test_backward_numbers_and_one_learning_step(open_page, served, tmp_path, width):
    _, url, _ = served
    P = open_page(width, 1000)
    page = P.page
    draw(page, THREE)
    wait_inspected(page, 3)
    # a conv unit of layer 3 (followed by its ReLU): the sum over what the ReLU feeds (max
    # pooling), then the ReLU's mask, each beside the engine's backward value
    click_unit(page, 2, 1, 4, 4)
    page.wait_for_selector("#backnums .step[data-rule='maxpool']")
    page.wait_for_selector("#backnums .step[data-rule='relu']")
    pixels = page.evaluate("() => current.pixels")
    _, api = request(url + "/api/unit_backward", {"pixels": pixels, "layer": 2, "unit": [1, 4, 4]})
    steps = page.locator("#backnums .step[data-rule]")
    assert steps.count() == 2
    for k, s in enumerate(api["steps"]):
        text = steps.nth(k).inner_text()
        assert js_number(s["value"]) in text and js_number(s["engine"]) in text
        assert api["equations"][s["rule"]]["name"] in text
        assert "Escontrela (seed 001)" in text  # each rule named as the papers write it
    assert page.locator("#backnums .eq.warn").count() == 0
    assert page.locator("#backnums .eq.ok").count() == 2
    # a weight of the unit's filter: dQ/dw as the sum over positions
    page.locator("table.wpick button").nth(7).click()
    page.wait_for_selector("#wback .eq.ok")
    assert "Σ of all 400 terms" in page.inner_text("#wback")
    shoot(page.locator("#unit"), tmp_path, f"backward-{width}")
    # one learning step on a label the network does not predict: the loss falls
    page.select_option("#learn-label", "5")
    page.locator("#learn-1").scroll_into_view_if_needed()
    page.click("#learn-1")
    page.wait_for_selector("#learn-loss")
    before = float(page.get_attribute("#learn-loss", "data-before"))
    after = float(page.get_attribute("#learn-loss", "data-after"))
    assert after < before
    assert "escontrela" in page.inner_text("#learn-opt")
    update = page.inner_text("#learn-update")
    assert "kernel" not in update and "3-conv2d weight[1," in update  # the weight chosen above
    assert page.locator("#learn-update .eq.ok").count() == 1
    page.click("#learn-10")
    page.wait_for_function(
        "() => document.getElementById('learn-opt').textContent.includes('11 steps')"
    )
    shoot(page.locator("#sec-learn"), tmp_path, f"learn-{width}")
    page.click("#learn-reset")
    page.wait_for_function(
        "() => document.getElementById('learn-opt').textContent.includes('0 steps')"
    )
    axe = pytest.importorskip("axe_playwright_python.sync_playwright")
    # this change's parts of the page (test_inspect_browser.py checks the whole page)
    results = axe.Axe().run(page, context={"include": [["#unit"], ["#sec-learn"]]})
    bad = [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert bad == [], bad
    P.check()
