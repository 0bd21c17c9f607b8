"""The inspector's page in a real headless browser: Debian's chromium, driven by Playwright.

It draws digits with mouse and touch events, checks that the page shows what the API
computes, clicks and hovers units, walks the page with the keyboard, browses the test set,
and checks the layout at 1400 and 390 px. Every page fails its test on any console or page
error and on horizontal overflow. A screenshot of each width is saved as a test artefact;
with ``NUMPYCNN_INSPECT_SCREENSHOT=FILE`` the desktop one is also written to FILE and the
phone one beside it as ``FILE-phone.png`` (how docs/inspect.png and docs/inspect-phone.png
are made):

    NUMPYCNN_INSPECT_SCREENSHOT=docs/inspect.png python -m pytest tests/test_inspect_browser.py
"""

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_inspect_api import array, image_body, reference_inspector, request, serving

from numpycnn.inspector import Inspector
from numpycnn.modelfile import load_model, save_model

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
#: Counts the page's settled fetches in window.__settled, once the page's own code has
#: handled each answer (its .json()), so that a test can wait for stale answers to land.
SETTLED = """
window.__settled = 0;
const origFetch = window.fetch;
window.fetch = (...args) => origFetch(...args).then((r) => {
  const json = r.json.bind(r);
  r.json = () => json().finally(() => setTimeout(() => { window.__settled++; }, 0));
  return r;
}, (e) => { setTimeout(() => { window.__settled++; }, 0); throw e; });
"""


def js_number(v, digits=6):
    """What the page's fmt(v, 6) prints for an ordinary number (JavaScript's shortest form)."""
    text = repr(float(f"{v:.{digits}g}"))
    return text[:-2] if text.endswith(".0") else text


@pytest.fixture(scope="module")
def served(reference_params_path, mnist):
    """The reference network with the test set and, for the out-of-distribution cue, the
    training images."""
    base = reference_inspector(reference_params_path, mnist)
    inspector = Inspector(
        base.saved, test_set=base._test_set, threads=2, name=base.name,
        train_set=lambda: mnist.train_images,
    )  # fmt: skip
    inspector.warm()
    with serving(inspector) as (url, log):
        yield inspector, url, log


class Page:
    """A page of the inspector at one viewport width, collecting console and page errors."""

    def __init__(self, browser, url, width, height=1000, touch=False):
        self.context = browser.new_context(
            viewport={"width": width, "height": height}, has_touch=touch
        )
        self.context.set_default_timeout(15_000)
        self.page = page = self.context.new_page()
        self.problems, self.requested = [], []
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("console", self._console)
        page.on("request", lambda r: self.requested.append(r.url))
        page.add_init_script(SETTLED)
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready='1']")

    def _console(self, m):
        if m.type in ("error", "warning"):
            self.problems.append(f"console {m.type}: {m.text}")

    def overflow(self):
        """How far the page is wider than the viewport (0: no horizontal scrolling)."""
        return self.page.evaluate("document.documentElement.scrollWidth - innerWidth")

    def check(self, expected=()):
        """No console or page errors but `expected` ones, and no sideways scrolling."""
        assert [p for p in self.problems if p not in expected] == [], self.problems
        assert self.overflow() <= 0, f"the page scrolls sideways by {self.overflow()} px"

    def close(self):
        self.context.close()


@pytest.fixture
def open_page(browser, served):
    pages = []

    def opener(width=1400, height=1000, touch=False, url=None):
        p = Page(browser, url or served[1], width, height, touch)
        pages.append(p)
        return p

    yield opener
    for p in pages:
        p.close()


def draw(page, points, steps=8, scale=1.0, offset=(0, 0)):
    box = page.locator("#draw").bounding_box()
    k = box["width"] / 280
    pts = [(box["x"] + (offset[0] + x * scale) * k, box["y"] + (offset[1] + y * scale) * k)
           for x, y in points]  # fmt: skip
    page.mouse.move(*pts[0])
    page.mouse.down()
    for (ax, ay), (bx, by) in zip(pts, pts[1:]):
        for s in range(1, steps + 1):
            page.mouse.move(ax + (bx - ax) * s / steps, ay + (by - ay) * s / steps)
    page.mouse.up()


def touch_draw(page, points, steps=6):
    """Draw with touch events, as a finger does (Chrome makes pointer events of them)."""
    box = page.locator("#draw").bounding_box()
    k = box["width"] / 280
    pts = [(box["x"] + x * k, box["y"] + y * k) for x, y in points]
    cdp = page.context.new_cdp_session(page)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [
        {"x": pts[0][0], "y": pts[0][1]}]})  # fmt: skip
    for (ax, ay), (bx, by) in zip(pts, pts[1:]):
        for s in range(1, steps + 1):
            p = {"x": ax + (bx - ax) * s / steps, "y": ay + (by - ay) * s / steps}
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [p]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def wait_inspected(page, predicted=None):
    page.wait_for_selector('#acts .layer[data-layer="8"]')  # the last layer
    if predicted is not None:
        page.wait_for_function(
            f"() => document.getElementById('verdict').dataset.predicted === '{predicted}'"
        )


def rect(locator):
    return locator.bounding_box()


def click_unit(page, layer, channel, row, col):
    """Click the centre of unit (channel, row, col) of a map of layer `layer`."""
    cv = page.locator(f'#acts .layer[data-layer="{layer}"] canvas[data-channel="{channel}"]')
    cv.scroll_into_view_if_needed()
    b = rect(cv)
    w, h = page.evaluate("(c) => [c.width, c.height]", cv.element_handle())
    cv.click(position={"x": b["width"] * (col + 0.5) / w, "y": b["height"] * (row + 0.5) / h})


def panel_title(page):
    return page.inner_text("#unit .panel-title")


def test_draw_inspect_click_and_browse_the_test_set(open_page, served, tmp_path, mnist):
    inspector, url, log = served
    P = open_page(1400, 1150)
    page = P.page
    assert "105,634 parameters" in page.inner_text("#model")
    assert page.locator("#filters .fgrid canvas").count() == 8 + 64  # every kernel

    # 1. draw a digit: the probabilities follow, and agree with the API on the same drawing
    draw(page, THREE)
    wait_inspected(page, 3)
    drawing = page.evaluate("document.getElementById('draw').toDataURL('image/png')")
    status, api = request(url + "/api/inspect", {"image": drawing})
    assert status == 200 and api["predicted"] == 3
    shown = page.locator("#probs .prob .v").all_inner_texts()
    assert len(shown) == 10
    top = float(shown[api["predicted"]].rstrip("%"))
    assert top == pytest.approx(100 * api["probabilities"][api["predicted"]], abs=0.06)
    seen = page.evaluate(
        "Array.from(document.getElementById('seen').getContext('2d')"
        ".getImageData(0, 0, 28, 28).data.filter((_, i) => i % 4 === 0))"
    )
    np.testing.assert_array_equal(np.array(seen).reshape(28, 28), array(api["digit"]))
    # the probabilities on a log scale: 1e-8 to 1 across the bar
    widths = page.locator("#probs .bar i").evaluate_all("(a) => a.map((e) => e.style.width)")
    page.check("#plog")
    logw = page.locator("#probs .bar i").evaluate_all("(a) => a.map((e) => e.style.width)")
    for p, linear, log in zip(api["probabilities"], widths, logw):
        assert float(linear.rstrip("%")) == pytest.approx(100 * p, abs=0.01)
        expect = 100 * min(1, max(0, (math.log10(max(p, 1e-30)) + 8) / 8))
        assert float(log.rstrip("%")) == pytest.approx(expect, abs=0.01)
    page.uncheck("#plog")
    # the softmax, with the API's logits
    page.click("#softmax summary")
    for k in (0, 3):
        assert js_number(api["logits"][k]) in page.inner_text("#softmax")

    # every unit is at least 8 px on screen: maps, the flatten vector as maps, bars
    for layer in range(9):
        for cv in page.locator(f'#acts .layer[data-layer="{layer}"] .units canvas').all():
            units = int(cv.get_attribute("data-units") or cv.evaluate("(c) => c.width"))
            assert rect(cv)["width"] / units >= 8, layer

    # hovering a unit: a read-out of which unit and its value, as the API computed it
    acts2 = array(api["activations"][2]["values"])
    cv = page.locator('#acts .layer[data-layer="2"] canvas[data-channel="2"]')
    cv.scroll_into_view_if_needed()
    b = rect(cv)
    page.mouse.move(b["x"] + b["width"] * 12.5 / 20, b["y"] + b["height"] * 7.5 / 20)
    page.wait_for_selector("#tip:not([hidden])")
    tip = page.inner_text("#tip")
    assert "3-conv2d" in tip and "channel 2, row 7, column 12" in tip
    assert js_number(float(acts2[2, 7, 12]), 5) in tip
    assert page.locator("#tip .k canvas").count() == 8  # the kernel it uses, per channel

    # ... and on the input: its grey level and the normalised value layer 1 reads
    cv = page.locator('#acts .layer[data-layer="in"] canvas')
    cv.scroll_into_view_if_needed()
    b = rect(cv)
    page.mouse.move(b["x"] + b["width"] * 14.5 / 28, b["y"] + b["height"] * 10.5 / 28)
    page.wait_for_function("() => document.getElementById('tip').textContent.includes('row 10,')")
    normalised = float(array(api["input"])[0, 10, 14])
    assert f"normalised {js_number(normalised, 5)}" in page.inner_text("#tip")

    # 3. click a unit of the second conv layer: its arithmetic, equal to the forward pass,
    # in a panel right under that layer; the unit and its receptive fields are outlined
    click_unit(page, 2, 2, 7, 12)
    page.wait_for_selector("#unit[data-kind='conv2d'] .eq.ok")
    assert panel_title(page) == "3-conv2d: channel 2, row 7, column 12"
    pixels = array(api["digit"]).ravel().tolist()
    _, unit = request(url + "/api/unit", {"pixels": pixels, "layer": 2, "unit": [2, 7, 12]})
    text = page.inner_text("#unit")
    assert f"pre-activation z = {js_number(unit['preactivation'])}" in text
    assert f"engine's forward pass: {js_number(unit['output'])}  (agrees" in text
    assert page.locator("#unit table.nums").count() == 3 * 8  # patch, kernel, products x C
    row = rect(page.locator('#acts .layer[data-layer="2"]'))
    box = rect(page.locator("#unit"))
    assert 0 <= box["y"] - (row["y"] + row["height"]) <= 16  # right under its layer
    sel = page.locator('#acts .layer[data-layer="2"] .hl-sel')
    assert sel.count() == 1  # the unit, not its whole channel
    s = rect(sel)
    assert 8 <= s["width"] <= 12 and 8 <= s["height"] <= 12
    # the receptive field the API computes, outlined on the layer before (2-relu: a 5x5
    # window in each of its 8 channels) and on the input (9x9 pixels); 8 px per unit on both
    _, field = request(url + "/api/field?layer=2&unit=2,7,12")
    assert field["input"]["ranges"][1:] == [[7, 16], [12, 21]]
    for key, where in (("previous", "1"), ("input", "in")):
        (c0, c1), (r0, r1), (q0, q1) = field[key]["ranges"]
        boxes = page.locator(f'#acts .layer[data-layer="{where}"] .hl-rf').all()
        assert len(boxes) == c1 - c0
        for box in boxes:
            style = box.evaluate(
                "(e) => [e.style.left, e.style.top, e.style.width, e.style.height]"
            )
            size = [f"{(q1 - q0) * 8 + 2}px", f"{(r1 - r0) * 8 + 2}px"]
            assert style == [f"{q0 * 8}px", f"{r0 * 8}px", *size]

    # a ReLU unit shows the conv unit it acts on: outlined on 3-conv2d, its window on 2-relu
    click_unit(page, 3, 2, 7, 12)
    page.wait_for_function("() => document.getElementById('unit').dataset.layer === '3'")
    assert page.locator('#acts .layer[data-layer="2"] .hl-rf').count() == 1
    assert page.locator('#acts .layer[data-layer="1"] .hl-rf').count() == 8

    # ... and a bar of the last layer: the class score, with its largest terms, marked
    bars = page.locator('#acts .layer[data-layer="8"] .barbox canvas')
    bars.scroll_into_view_if_needed()
    box = rect(bars)
    bars.click(position={"x": box["width"] * (api["predicted"] + 0.5) / 10, "y": 20})
    page.wait_for_selector("#unit[data-kind='dense'] table.terms")
    assert panel_title(page) == f"9-dense: unit {api['predicted']}"
    assert js_number(api["logits"][api["predicted"]]) in page.inner_text("#unit")
    assert page.locator('#acts .layer[data-layer="8"] .hl-sel').count() == 1
    assert page.locator('#acts .layer[data-layer="7"] .hl-rf').count() == 0  # reads all

    # 4. the backward pass for another class: the page says which quantity it shows
    page.select_option("#cls", "8")
    page.wait_for_function(
        "() => document.getElementById('quantity').textContent.includes('class 8')"
    )
    assert "Q = z8, the score of class 8" in page.inner_text("#quantity")

    # 6. the confusion matrix, a cell's images, and one of them loaded into the inspector
    page.click("#cm-run")
    page.wait_for_selector("table.cm td button")
    _, confusion = request(url + "/api/confusion")
    matrix = np.rint(array(confusion["matrix"])).astype(int)
    counts = [int(t) for t in page.locator("table.cm td").all_inner_texts()]
    np.testing.assert_array_equal(np.array(counts).reshape(10, 10), matrix)
    off = matrix - np.diag(np.diag(matrix))
    t, p = np.unravel_index(np.argmax(off), off.shape)
    page.click(f"table.cm td[data-true='{t}'][data-pred='{p}'] button")
    page.wait_for_selector("#cell .thumb")
    assert page.locator("#cell .thumb").count() == matrix[t, p]
    _, cell = request(url + f"/api/confusion/cell?true={t}&predicted={p}")
    first = page.locator("#cell .thumb").first
    assert first.get_attribute("data-index") == str(cell["indices"][0])
    first.click()
    page.wait_for_function(
        f"() => document.getElementById('source').textContent.includes('#{cell['indices'][0]}')"
    )
    wait_inspected(page, p)
    # a misclassified test image is flagged, and the backward pass is its true label's loss
    assert page.inner_text("#misclassified") == f"Misclassified: the true label is {t}"
    assert f"loss for true label {t}" in page.inner_text("#quantity")
    assert page.is_checked("#q-loss") and page.input_value("#lab") == str(t)

    # a file chosen in the picker goes through predict's preprocessing on the server; the
    # backward pass goes back to the predicted class's score, with no leftover label
    photo = tmp_path / "four.png"
    Image.fromarray(255 - mnist.test_images[4]).resize((150, 150)).save(photo)
    page.set_input_files("#file", photo)
    page.wait_for_function(
        "() => document.getElementById('source').textContent.includes('four.png')"
    )
    _, r = request(url + "/api/predict", image_body(photo.read_bytes()))
    assert page.get_attribute("#verdict", "data-predicted") == str(r["predicted"]) == "4"
    assert page.is_checked("#q-score") and page.input_value("#cls") == ""
    assert page.locator("#misclassified").count() == 0

    # 7. training: the reference pickle's per-batch cost
    assert "3,126 batches" in page.inner_text("#training")

    # no request ever left this server
    assert P.requested and all(r.startswith(url + "/") for r in P.requested), P.requested
    P.check()
    assert all(" 500 " not in line for line in log), log

    # back to a drawn digit, for the screenshot: from the drawing down to the arithmetic of
    # a unit of the first conv layer, with another unit hovered
    page.set_viewport_size({"width": 1400, "height": 1400})
    page.click("#clear")
    draw(page, THREE)
    wait_inspected(page, 3)
    click_unit(page, 0, 1, 9, 12)
    page.wait_for_selector("#unit[data-kind='conv2d'] .eq.ok")
    page.evaluate("window.scrollTo(0, 0)")
    cv = rect(page.locator('#acts .layer[data-layer="0"] canvas[data-channel="3"]'))
    page.mouse.move(cv["x"] + cv["width"] * 14.5 / 24, cv["y"] + cv["height"] * 6.5 / 24)
    page.wait_for_selector("#tip:not([hidden])")
    panel = page.evaluate(
        "(() => { const r = document.getElementById('unit')"
        ".getBoundingClientRect(); return r.bottom + scrollY; })()"
    )
    screenshot(page, tmp_path, "", clip={"x": 0, "y": 0, "width": 1400, "height": panel + 16})
    P.check()


def screenshot(page, tmp_path, suffix, clip=None):
    shot = tmp_path / f"inspect{suffix}.png"
    page.screenshot(path=shot, clip=clip, full_page=clip is not None)
    print(f"screenshot: {shot}")
    target = os.environ.get("NUMPYCNN_INSPECT_SCREENSHOT")
    if target:
        target = Path(target)
        target = target.with_name(target.stem + suffix + target.suffix)
        shutil.copyfile(shot, target)
        print(f"screenshot copied to {target}")
    assert shot.stat().st_size > 30_000


def test_clear_drops_answers_to_requests_still_in_flight(open_page):
    """Issue 17.1: Clear before the last request returns must not bring the old result back."""
    P = open_page(1400)
    page = P.page
    held = []
    page.route("**/api/{predict,inspect}", lambda route: held.append(route))
    with page.expect_request("**/api/inspect"):  # sent at the pointer's release
        draw(page, THREE)
    for _ in range(100):  # until the route handler has it too
        if any(r.request.url.endswith("/api/inspect") for r in held):
            break
        page.wait_for_timeout(20)
    urls = [r.request.url.rsplit("/", 1)[1] for r in held]
    assert urls.count("predict") == 1 and urls.count("inspect") == 1, urls
    settled = page.evaluate("window.__settled")
    page.click("#clear")
    page.unroute("**/api/{predict,inspect}")
    for route in held:
        try:
            route.continue_()
        except Exception:  # an aborted request's route is already handled
            pass
    page.wait_for_function(f"() => window.__settled >= {settled + len(held)}")
    page.evaluate("() => new Promise((r) => setTimeout(r, 50))")
    assert page.inner_text("#verdict") == "–"
    assert page.locator("#acts .layer").count() == 0
    assert page.locator("#probs .prob").count() == 0
    ink = page.evaluate(
        "Array.from(document.getElementById('seen').getContext('2d')"
        ".getImageData(0, 0, 28, 28).data).some((v) => v > 0)"
    )
    assert not ink
    P.check()
    # and the page still works
    draw(page, THREE)
    wait_inspected(page, 3)
    P.check()


def test_a_refused_upload_changes_nothing_and_names_the_file(open_page, tmp_path, mnist):
    """Issue 17.3: a blank or non-image file leaves the previous input as it was."""
    P = open_page(1400)
    page = P.page
    good = tmp_path / "four.png"
    Image.fromarray(255 - mnist.test_images[4]).resize((150, 150)).save(good)
    page.set_input_files("#file", good)
    wait_inspected(page, 4)
    page.wait_for_function("() => document.getElementById('source').textContent.includes('four')")

    def state():
        return page.evaluate(
            """() => [document.getElementById('draw').toDataURL(),
                 document.getElementById('seen').toDataURL(),
                 document.getElementById('probs').innerText,
                 document.getElementById('source').innerText,
                 document.querySelectorAll('#acts .layer').length]"""
        )

    before = state()
    blank = tmp_path / "blank page.png"
    Image.new("L", (200, 200), 255).save(blank)
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    for bad in (blank, text):
        page.set_input_files("#file", bad)
        page.wait_for_function(
            f"() => document.getElementById('status').textContent.startsWith({bad.name!r})"
        )
        assert page.get_attribute("#status", "class") == "error"
        assert state() == before
    assert page.inner_text("#status") == "notes.png: not an image (or a format Pillow cannot read)"
    # Chromium logs each 4xx answer as a console error: those two, and nothing else
    refused = "console error: Failed to load resource: the server responded with a status of 400"
    assert [p.split(" (")[0] for p in P.problems] == [refused] * 2, P.problems
    P.check(expected=P.problems[:2])


def test_phone_layout_touch_and_the_arithmetic_next_to_the_unit(open_page, tmp_path):
    """Issues 17.6-8 at 390 px: no sideways scrolling, a compact header, the probabilities
    just under the drawing, touch drawing, and the arithmetic right under a tapped unit."""
    P = open_page(390, 800, touch=True)
    page = P.page
    assert page.evaluate("document.querySelector('header').offsetHeight") <= 56
    touch_draw(page, THREE)
    wait_inspected(page, 3)
    # the prediction just under the drawing, and all ten probabilities within one screen
    canvas, verdict = rect(page.locator("#draw")), rect(page.locator("#verdict"))
    probs = rect(page.locator("#probs"))
    below = canvas["y"] + canvas["height"]
    assert verdict["y"] - below <= 120 and probs["y"] + probs["height"] - below <= 450
    P.check()
    # a tap on a unit of the pool layer: the panel opens right under that layer
    cv = page.locator('#acts .layer[data-layer="4"] canvas[data-channel="0"]')
    cv.scroll_into_view_if_needed()
    b = rect(cv)
    cv.tap(position={"x": b["width"] * 0.35, "y": b["height"] * 0.55})
    page.wait_for_selector("#unit[data-kind='maxpool2d'] .eq")
    assert panel_title(page) == "5-maxpool2d: channel 0, row 5, column 3"
    row, box = rect(page.locator('#acts .layer[data-layer="4"]')), rect(page.locator("#unit"))
    assert 0 <= box["y"] - (row["y"] + row["height"]) <= 16
    assert box["y"] < 800  # on screen
    # each section's link lands with its heading below the sticky header
    for section in ("sec-backward", "sec-test", "sec-training"):
        page.click(f"header nav a[href='#{section}']")
        # at the header's height plus 8 px, or lower when the page ends first
        page.wait_for_function(
            f"""() => {{ const t = document.getElementById('{section}').getBoundingClientRect().top,
                  h = document.querySelector('header').offsetHeight;
                  return Math.abs(t - h - 8) < 2 || (t > h && t < innerHeight / 2 &&
                    scrollY >= document.documentElement.scrollHeight - innerHeight - 1); }}"""
        )
    page.click("#cm-run")
    page.wait_for_selector("table.cm td button")
    P.check()
    page.evaluate("window.scrollTo(0, 0); document.querySelector('header nav').scrollLeft = 0")
    screenshot(page, tmp_path, "-phone")
    P.check()


def test_keyboard_reaches_everything_and_arrows_move_between_units(open_page):
    """Issue 17.11: Tab reaches every control, in order; arrow keys move between units."""
    P = open_page(1400)
    page = P.page
    draw(page, THREE)
    wait_inspected(page, 3)
    page.click("#cm-run")
    page.wait_for_selector("table.cm td button")
    page.focus("header nav a")
    order = []
    for _ in range(60):
        page.keyboard.press("Tab")
        order.append(
            page.evaluate(
                """() => { const e = document.activeElement;
                   const row = e.closest('.layer');
                   return e.id || (row ? 'layer-' + row.dataset.layer
                   : e.getAttribute('href') || e.tagName.toLowerCase()); }"""
            )
        )
    for a, b in [("clear", "pen"), ("pen", "file"), ("file", "layer-0"), ("layer-0", "layer-8")]:
        assert a in order and b in order and order.index(a) < order.index(b), order
    assert "plog" in order and "q-score" in order and "cls" in order
    # every select and input has a label; every canvas a text alternative
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, button')].filter((e) =>
             !(e.labels && e.labels.length) && !e.getAttribute('aria-label') &&
             !e.textContent.trim() && e.type !== 'radio').map((e) => e.outerHTML.slice(0, 80))"""
    )
    assert unlabelled == []
    bare = page.evaluate(
        """() => [...document.querySelectorAll('canvas')].filter((c) =>
             !c.getAttribute('aria-label') && !c.closest('[aria-hidden=true]')).length"""
    )
    assert bare == 0
    # arrow keys on the second conv layer
    page.focus('#acts .layer[data-layer="2"] .units')
    page.keyboard.press("Enter")
    page.wait_for_selector("#unit[data-kind='conv2d'] .eq.ok")
    assert panel_title(page) == "3-conv2d: channel 0, row 0, column 0"
    for key, title in [
        ("ArrowRight", "channel 0, row 0, column 1"),
        ("ArrowDown", "channel 0, row 1, column 1"),
        ("PageDown", "channel 1, row 1, column 1"),
        ("ArrowLeft", "channel 1, row 1, column 0"),
    ]:
        page.keyboard.press(key)
        page.wait_for_function(
            "(t) => document.querySelector('#unit .panel-title').textContent.endsWith(t)"
            " && document.querySelector('#unit .eq.ok')",
            arg=title,
        )
    assert page.inner_text("#readout").startswith("3-conv2d, channel 1, row 1, column 0: ")
    assert page.get_attribute("#verdict", "aria-live") == "polite"
    # the confusion matrix's cells and the thumbnails are buttons
    page.focus("table.cm td[data-true='3'][data-pred='3'] button")
    page.keyboard.press("Enter")
    page.wait_for_selector("#cell .thumb")
    page.focus("#cell .thumb")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.getElementById('source').textContent.includes('#')")
    P.check()


@pytest.mark.parametrize("width", [1400, 390])
def test_no_serious_accessibility_violations(open_page, width):
    """axe-core finds no serious or critical violation on the page, with a digit drawn, a
    unit's arithmetic open and the confusion matrix shown."""
    axe_playwright = pytest.importorskip(
        "axe_playwright_python.sync_playwright",
        reason="axe-playwright-python is not installed (pip install axe-playwright-python)",
    )
    P = open_page(width, 900)
    page = P.page
    draw(page, THREE)
    wait_inspected(page, 3)
    click_unit(page, 2, 1, 4, 4)
    page.wait_for_selector("#unit[data-kind='conv2d'] .eq.ok")
    page.click("#cm-run")
    page.wait_for_selector("table.cm td button")
    assert serious_violations(axe_playwright, page) == []
    P.check()


def serious_violations(axe_playwright, page):
    """axe-core's serious and critical violations on the page: (rule, impact, targets)."""
    results = axe_playwright.Axe().run(page)
    return [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_pen_label_says_the_width_the_network_sees(open_page):
    """Issue 17.12: a small digit is enlarged to 20x20, and its strokes with it."""
    P = open_page(1400)
    page = P.page
    draw(page, THREE, scale=0.3, offset=(100, 100))
    wait_inspected(page)
    xs, ys = [100 + 0.3 * x for x, _ in THREE], [100 + 0.3 * y for _, y in THREE]
    side = max(max(xs) - min(xs), max(ys) - min(ys)) + 22  # plus the pen's width
    label = page.inner_text("#penv")
    assert f"about {22 * 20 / side:.1f} px at 28×28" in label, label
    P.check()


def test_saliency_is_drawn_over_the_digit(open_page, served):
    """Issue 17.10: where the gradient is small, the digit shows through the saliency map."""
    P = open_page(1400)
    page = P.page
    draw(page, THREE)
    wait_inspected(page, 3)
    drawing = page.evaluate("document.getElementById('draw').toDataURL('image/png')")
    _, api = request(served[1] + "/api/inspect", {"image": drawing})
    g = array(api["backward"]["input"]).ravel()
    digit = np.array(
        page.evaluate(
            "Array.from(document.getElementById('seen').getContext('2d')"
            ".getImageData(0, 0, 28, 28).data.filter((_, i) => i % 4 === 0))"
        )
    )
    sal = np.array(
        page.evaluate(
            "Array.from(document.getElementById('sal').getContext('2d')"
            ".getImageData(0, 0, 28, 28).data)"
        )
    ).reshape(-1, 4)[:, :3]
    lum = sal.mean(axis=1)
    # background the gradient barely colours: white
    blank = (np.abs(g) <= 1e-3 * np.abs(g).max()) & (digit == 0)
    assert blank.sum() > 50 and lum[blank].min() >= 250
    # ink where the gradient is small: the digit shows, dark grey (a colour scale alone
    # would draw it nearly white)
    ink = (np.abs(g) <= 0.1 * np.abs(g).max()) & (digit > 200)
    assert ink.sum() >= 5 and lum[ink].mean() < 180, (ink.sum(), lum[ink])
    P.check()


def history_model(tmp_path, reference_params_path):
    """The reference parameters with a 20-epoch history like configs/best.yaml's."""
    saved = load_model(reference_params_path)
    acc = np.linspace(0.7947, 0.9951, 20) ** 0.3 * 0.9951 / 0.9951**0.3
    history = [
        {
            "epoch": e + 1,
            "train_loss": 0.6 * 0.8**e,
            "train_accuracy": float(acc[e]) - 0.01,
            "val_loss": 0.3 * 0.85**e + 0.015,
            "val_accuracy": float(acc[e]),
            "lr": 0.003 * math.sin(math.pi * (e + 0.5) / 20) if e < 19 else 1.2e-8,  # one-cycle
            "seconds": 30.0,
            "images_per_second": 1800.0,
        }
        for e in range(20)
    ]
    rng = np.random.default_rng(0)
    cost = list(np.exp(-np.linspace(0, 4, 20 * 50)) + 0.02 * rng.random(1000))
    path = tmp_path / "with-history.pkl"
    save_model(path, saved.model, saved.normalization, cost=cost, history=history)
    return path


def test_training_charts_have_nice_ticks_and_every_series(
    open_page, browser, tmp_path, reference_params_path
):
    """Issue 17.13: nice ticks, the top percent readable, no overlapping labels, the data
    where the axis ends, learning rate, validation loss and epoch marks."""
    inspector = Inspector(load_model(history_model(tmp_path, reference_params_path)))
    with serving(inspector) as (url, _):
        P = open_page(1400, url=url)
        page = P.page
        charts = page.locator("#training .chart")
        titles = charts.locator("h3").all_inner_texts()
        assert titles[0].startswith("Per-batch training cost (1,000 batches)")
        assert "Error rate per epoch (log scale)" in titles
        assert "Learning rate" in titles and "Loss per epoch (log scale)" in titles
        loss = charts.nth(titles.index("Loss per epoch (log scale)"))
        assert "validation" in loss.inner_text()
        # 19 epoch marks on the cost chart, whose x axis ends at the last batch
        cost = charts.nth(0)
        assert cost.locator("line[stroke-dasharray]").count() == 19
        ticks = [t.replace(",", "") for t in cost.locator("svg text").all_text_contents()]
        assert "1000" in ticks and all(not t.isdigit() or int(t) <= 1000 for t in ticks)
        for chart in charts.all():
            labels = chart.locator("svg text").all()
            boxes = [rect(t) for t in labels]
            for i, a in enumerate(boxes):  # no two labels overlap
                for b in boxes[i + 1 :]:
                    overlap_x = min(a["x"] + a["width"], b["x"] + b["width"]) - max(a["x"], b["x"])
                    overlap_y = min(a["y"] + a["height"], b["y"] + b["height"]) - max(
                        a["y"], b["y"]
                    )
                    assert overlap_x <= 0.5 or overlap_y <= 0.5, (chart.text_content(), a, b)
        err = charts.nth(titles.index("Error rate per epoch (log scale)"))
        yt = [t for t in err.locator("svg text").all_text_contents() if t.endswith("%")]
        assert len(yt) >= 3
        for t in yt:  # 1, 2, 3 or 5 times a power of ten
            mantissa = float(t.rstrip("%")) / 10 ** math.floor(math.log10(float(t.rstrip("%"))))
            assert round(mantissa, 6) in (1, 2, 3, 5), yt
        assert min(float(t.rstrip("%")) for t in yt) <= 1  # the last percent is on the scale
        P.check()


def test_negligible_gradients_are_said_and_drawn_pale(open_page, served):
    """Issue 17.9: the loss of a confident, correct digit has gradients ~1e-9: the legend says
    they are negligible and the map is not drawn at full colour; numbers never break."""
    P = open_page(1400)
    page = P.page
    draw(page, THREE)
    wait_inspected(page, 3)
    drawing = page.evaluate("document.getElementById('draw').toDataURL('image/png')")
    _, api = request(served[1] + "/api/inspect", {"image": drawing, "label": 3})
    assert api["backward"]["input_negligible"] is True  # the API's verdict, shown below
    page.select_option("#lab", "3")
    page.wait_for_function(
        "() => document.getElementById('quantity').textContent.includes('for true label 3')"
    )
    page.wait_for_selector("#sal-legend[data-negligible='1'] .neg")
    assert page.inner_text("#sal-legend .neg").startswith("Negligible (")
    sal = np.array(
        page.evaluate(
            "Array.from(document.getElementById('sal').getContext('2d')"
            ".getImageData(0, 0, 28, 28).data)"
        )
    ).reshape(-1, 4)[:, :3]
    assert (sal.max(axis=1) - sal.min(axis=1)).max() <= 12  # grey: no vivid colour
    # every legend number is on one line
    for span in page.locator("#sec-backward .legend span:not(.neg)").all():
        assert span.evaluate("(e) => getComputedStyle(e).whiteSpace") == "nowrap"
    P.check()


def test_out_of_distribution_inputs_are_flagged_by_the_prediction(open_page):
    """Issue 17.16: a tap is "0, 99.9%" to the network; the page says it is unlike a digit."""
    P = open_page(1400)
    page = P.page
    draw(page, THREE)
    wait_inspected(page, 3)
    page.wait_for_selector("#ood[data-flag='0']")
    page.click("#clear")
    box = rect(page.locator("#draw"))
    page.mouse.click(box["x"] + 140, box["y"] + 140)  # a single tap
    page.wait_for_selector("#ood[data-flag='1']")
    assert page.inner_text("#ood").startswith("Unlike a training digit.")
    verdict, ood = rect(page.locator("#verdict")), rect(page.locator("#ood"))
    assert 0 < ood["y"] - verdict["y"] < 120  # right by the prediction
    P.check()


def test_the_arithmetic_opens_under_its_layer_at_1024_px(open_page):
    """Issue 17.6: below 1100 px the arithmetic used to open below all activations."""
    P = open_page(1024, 800)
    page = P.page
    draw(page, THREE)
    wait_inspected(page, 3)
    click_unit(page, 4, 3, 2, 5)
    page.wait_for_selector("#unit[data-kind='maxpool2d'] .eq")
    row, box = rect(page.locator('#acts .layer[data-layer="4"]')), rect(page.locator("#unit"))
    assert 0 <= box["y"] - (row["y"] + row["height"]) <= 16
    assert box["y"] < 800
    P.check()
