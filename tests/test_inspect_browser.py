"""The inspector's page in a real headless browser: Debian's chromium, driven by Playwright.

It draws a digit with mouse events, checks that the page shows what the API computes,
clicks units and a confusion-matrix cell, and fails on any page or console error. A
screenshot is saved as a test artefact; with ``NUMPYCNN_INSPECT_SCREENSHOT=FILE`` it is
also written to FILE (how docs/inspect.png is made):

    NUMPYCNN_INSPECT_SCREENSHOT=docs/inspect.png python -m pytest tests/test_inspect_browser.py
"""

import os
import shutil

import numpy as np
import pytest
from PIL import Image
from test_inspect_api import array, image_body, reference_inspector, request, serving

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (Debian: apt-get install chromium); .ci/run installs it",
)
# Chromium flags for a sandboxless CI container that must never reach the network.
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: A "3" drawn as a polyline on the 280x280 canvas.
THREE = [(90, 70), (140, 55), (185, 75), (180, 115), (140, 140), (185, 165), (190, 210),
         (140, 235), (85, 215)]  # fmt: skip


def js_number(v, digits=6):
    """What the page's fmt(v, 6) prints for an ordinary number (JavaScript's shortest form)."""
    text = repr(float(f"{v:.{digits}g}"))
    return text[:-2] if text.endswith(".0") else text


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def served(reference_params_path, mnist):
    inspector = reference_inspector(reference_params_path, mnist)
    with serving(inspector) as (url, log):
        yield inspector, url, log


def draw(page, points, steps=8):
    box = page.locator("#draw").bounding_box()
    x0, y0 = box["x"], box["y"]
    page.mouse.move(x0 + points[0][0], y0 + points[0][1])
    page.mouse.down()
    for (ax, ay), (bx, by) in zip(points, points[1:]):
        for k in range(1, steps + 1):
            page.mouse.move(x0 + ax + (bx - ax) * k / steps, y0 + ay + (by - ay) * k / steps)
    page.mouse.up()


def test_draw_inspect_click_and_browse_the_test_set(browser, served, tmp_path, mnist):
    inspector, url, log = served
    problems = []
    page = browser.new_page(viewport={"width": 1400, "height": 1150})
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on(
        "console",
        lambda m: (
            problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning")
            else None
        ),
    )  # noqa: E501
    requested = []
    page.on("request", lambda r: requested.append(r.url))

    page.goto(url + "/")
    page.wait_for_selector("body[data-ready='1']")
    assert "105,634 parameters" in page.inner_text("#model")
    assert (
        page.locator("#filters .fgrid canvas").count() == 8 + 64
    )  # every kernel of both conv layers

    # 1. draw a digit: the probabilities follow, and agree with the API on the same drawing
    draw(page, THREE)
    page.wait_for_selector("#acts .layer")
    page.wait_for_function("() => document.querySelectorAll('#acts .layer').length === 9")
    drawing = page.evaluate("document.getElementById('draw').toDataURL('image/png')")
    status, api = request(url + "/api/inspect", {"image": drawing})
    assert status == 200
    assert api["predicted"] == 3
    assert page.get_attribute("#verdict", "data-predicted") == str(api["predicted"])
    shown = page.locator("#probs .prob .v").all_inner_texts()
    assert len(shown) == 10
    top = float(shown[api["predicted"]].rstrip("%"))
    assert top == pytest.approx(100 * api["probabilities"][api["predicted"]], abs=0.06)
    # the 28x28 the page shows is, pixel for pixel, what the network saw
    seen = page.evaluate(
        "Array.from(document.getElementById('seen').getContext('2d')"
        ".getImageData(0, 0, 28, 28).data.filter((_, i) => i % 4 === 0))"
    )
    np.testing.assert_array_equal(np.array(seen).reshape(28, 28), array(api["digit"]))

    # 3. click a unit of the second conv layer: its arithmetic, equal to the forward pass
    page.locator('#acts .layer[data-layer="2"] canvas[data-channel="2"]').click(
        position={"x": 38, "y": 30}
    )
    page.wait_for_selector("#unit[data-kind='conv2d'] .eq.ok")
    title = page.inner_text("#unit .panel-title")
    assert title.startswith("3-conv2d: channel 2, row ")
    row, col = (int(w.strip(",")) for w in title.split()[4::2])
    pixels = array(api["digit"]).ravel().tolist()
    _, unit = request(url + "/api/unit", {"pixels": pixels, "layer": 2, "unit": [2, row, col]})
    text = page.inner_text("#unit")
    assert f"pre-activation z = {js_number(unit['preactivation'])}" in text
    assert f"engine's forward pass: {js_number(unit['output'])}  (agrees" in text
    assert page.locator("#unit table.nums").count() == 3 * 8  # patch, kernel, products x C

    # ... and a bar of the last layer: the class score, with its largest terms
    bars = page.locator('#acts .layer[data-layer="8"] canvas.bars')
    box = bars.bounding_box()
    bars.click(position={"x": box["width"] * (api["predicted"] + 0.5) / 10, "y": box["height"] / 2})
    page.wait_for_selector("#unit[data-kind='dense'] table.terms")
    assert page.inner_text("#unit .panel-title") == f"9-dense: unit {api['predicted']}"
    assert js_number(api["logits"][api["predicted"]]) in page.inner_text("#unit")

    # 4. the backward pass for another class: the page says which quantity it shows
    page.select_option("#cls", "8")
    page.wait_for_function(
        "() => document.getElementById('quantity').textContent.includes('class 8')"
    )
    assert "Q = z8, the score of class 8" in page.inner_text("#quantity")

    # 6. the confusion matrix, a cell's images, and one of them loaded into the inspector
    page.click("#cm-run")
    page.wait_for_selector("table.cm td")
    _, confusion = request(url + "/api/confusion")
    matrix = np.rint(array(confusion["matrix"])).astype(int)
    counts = [int(t) for t in page.locator("table.cm td").all_inner_texts()]
    np.testing.assert_array_equal(np.array(counts).reshape(10, 10), matrix)
    off = matrix - np.diag(np.diag(matrix))
    t, p = np.unravel_index(np.argmax(off), off.shape)
    page.click(f"table.cm td[data-true='{t}'][data-pred='{p}']")
    page.wait_for_selector("#cell .thumb")
    assert page.locator("#cell .thumb").count() == matrix[t, p]
    _, cell = request(url + f"/api/confusion/cell?true={t}&predicted={p}")
    first = page.locator("#cell .thumb").first
    assert first.get_attribute("data-index") == str(cell["indices"][0])
    first.click()
    page.wait_for_function(
        f"() => document.getElementById('source').textContent.includes('#{cell['indices'][0]}')"
    )
    page.wait_for_function(f"() => document.getElementById('verdict').dataset.predicted === '{p}'")

    # a file chosen in the picker goes through predict's preprocessing on the server
    photo = tmp_path / "four.png"
    Image.fromarray(255 - mnist.test_images[4]).resize((150, 150)).save(photo)
    page.set_input_files("#file", photo)
    page.wait_for_function(
        "() => document.getElementById('source').textContent.includes('four.png')"
    )
    _, r = request(url + "/api/predict", image_body(photo.read_bytes()))
    assert page.get_attribute("#verdict", "data-predicted") == str(r["predicted"]) == "4"

    # 7. training: the reference pickle's per-batch cost
    assert "3,126 batches" in page.inner_text("#training")

    # no request ever left this server
    assert requested and all(r.startswith(url + "/") for r in requested), requested
    assert problems == [], problems
    assert all(" 500 " not in line for line in log), log

    # back to a drawn digit with a unit selected, for the screenshot
    page.click("#clear")
    draw(page, THREE)
    page.wait_for_function("() => document.getElementById('verdict').dataset.predicted === '3'")
    page.wait_for_selector("#acts .layer")
    page.locator('#acts .layer[data-layer="2"] canvas[data-channel="2"]').click(
        position={"x": 38, "y": 30}
    )
    page.wait_for_selector("#unit[data-kind='conv2d'] .eq.ok")
    page.evaluate("window.scrollTo(0, 0)")
    shot = tmp_path / "inspect.png"
    page.screenshot(path=shot)
    print(f"screenshot: {shot}")
    target = os.environ.get("NUMPYCNN_INSPECT_SCREENSHOT")
    if target:
        shutil.copyfile(shot, target)
        print(f"screenshot copied to {target}")
    assert shot.stat().st_size > 50_000
    assert problems == [], problems

    # a file that is no image: the server's one-line error is shown on the page
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    page.set_input_files("#file", text)
    page.wait_for_selector("#status.error")
    assert (
        page.inner_text("#status")
        == "uploaded image: not an image (or a format Pillow cannot read)"
    )
    page.close()
