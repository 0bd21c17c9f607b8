"""The page in a real headless Chromium (Playwright) on a colour model (#16) and on a run
as it trains (#18): a real `numpycnn train --inspect` on real MNIST, watched through the
page's step counter and loss curve, then the timeline's slider.

With ``NUMPYCNN_INSPECT_SCREENSHOT_LIVE=FILE`` the live view at 1400 px is also written to
FILE (how docs/inspect-live.png is made), and the colour model's page beside it as
``inspect-colour.png``:

    NUMPYCNN_INSPECT_SCREENSHOT_LIVE=docs/inspect-live.png \\
        python -m pytest tests/test_inspect_browser_live.py
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import tiny_config
from colour_model import CLASSES, colour_model
from test_inspect_api import request, serving
from test_inspect_browser import CHROMIUM, Page, serious_violations

from numpycnn.inspector import Inspector
from numpycnn.inspector.sources import data_loaders
from numpycnn.modelfile import load_model

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (Debian: apt-get install chromium); .ci/run installs it",
)
SHOT = os.environ.get("NUMPYCNN_INSPECT_SCREENSHOT_LIVE")


def shot(P, tmp_path, name, full=True):
    path = tmp_path / name
    P.page.screenshot(path=str(path), full_page=full)
    return path


def axe_check(page):
    axe = pytest.importorskip("axe_playwright_python.sync_playwright")
    assert serious_violations(axe, page) == []


@pytest.fixture(scope="module")
def colour(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("colour-page")
    path, ds, _ = colour_model(tmp)
    saved = load_model(path)
    test_set, _ = data_loaders(saved.data_source, tmp / "data")
    with serving(Inspector(saved, test_set=test_set, name=path.name)) as (url, _):
        yield url, tmp, ds


@pytest.mark.parametrize("width", [1400, 390])
def test_a_colour_model_takes_a_file_and_a_test_image_with_class_names(
    browser, colour, width, tmp_path
):
    url, tmp, ds = colour
    P = Page(browser, url, width)
    page = P.page
    assert page.inner_text("#h-input-text") == "Open or drop an image"
    assert not page.is_visible("#clear") and not page.is_visible("#pen")  # no drawing
    assert page.inner_text("#seen-title") == "What the network sees (colour, 16×16)"

    picture = tmp / "pictures" / "grass" / "2.png"
    page.set_input_files("#file", str(picture))
    page.wait_for_selector("#verdict[data-predicted]")
    labels = page.locator("#probs .prob .d").all_inner_texts()
    assert labels == list(CLASSES)
    _, api = request(url + "/api/predict", {"image": _b64(picture), "name": "2.png"})
    assert page.get_attribute("#verdict", "data-predicted") == str(api["predicted"])
    assert page.inner_text("#verdict").startswith(CLASSES[api["predicted"]])
    # the input in colour at its size, and each of its channels as a map
    assert page.evaluate("[$('seen').width, $('seen').height]") == [16, 16]
    assert (
        page.evaluate(
            "(() => { const d = $('seen').getContext('2d').getImageData(0, 0, 16, 16).data;"
            " let c = 0; for (let i = 0; i < d.length; i += 4) c += d[i] !== d[i + 1];"
            " return c; })()"
        )
        > 100
    )  # red and green differ: drawn in colour, not grey
    assert page.locator("#acts .layer[data-layer='in'] canvas[data-channel]").count() == 3
    assert page.locator("#acts .layer[data-layer='0'] canvas[data-channel]").count() == 4
    assert page.locator("#filters .fgrid .lab", has_text="RGB").count() == 1

    # a test image by click, from the confusion matrix with class names
    page.click("#cm-run")
    page.wait_for_selector("table.cm td button")
    heads = page.locator("table.cm tr").first.locator("th").all_inner_texts()[1:]
    assert heads == list(CLASSES)
    page.click("table.cm td[data-true='2'][data-pred='2'] button")
    page.wait_for_selector("#cell .thumb")
    thumb = page.locator("#cell .thumb").first
    index = int(thumb.get_attribute("data-index"))
    thumb.click()
    page.wait_for_function(f"() => $('source').textContent.startsWith('Test image #{index}')")
    assert f"true label {CLASSES[int(ds.test_labels[index])]}" in page.inner_text("#source")
    shot(P, tmp_path, f"colour-{width}.png")
    if SHOT and width == 1400:
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(Path(SHOT).with_name("inspect-colour.png")))
    axe_check(page)
    P.check()
    P.close()


def _b64(path):
    import base64

    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


@pytest.fixture
def live_training(tmp_path, mnist_dir):
    """A real `numpycnn train --inspect` (20 epochs of 20,000 images in batches of 10, long
    enough to watch; stopped by the test); yields (url, process); SIGINT and cleanup after."""
    config = tiny_config(tmp_path, epochs=20, limit=20_000, validation=2000, batch_size=10)
    command = [sys.executable, "-m", "numpycnn.cli.main", "train", "-c", config, "--inspect",
               "--no-browser", "-q", "--mirror", mnist_dir,
               "--data-dir", tmp_path / "data"]  # fmt: skip
    proc = subprocess.Popen(
        list(map(str, command)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stderr.readline()
        while line and not line.startswith("live view of "):
            line = proc.stderr.readline()
        assert line, proc.stderr.read()
        yield line.rsplit(" at ", 1)[1].strip().rstrip("/"), proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


PROBS = "[...document.querySelectorAll('#probs .prob')].map((e) => e.ariaLabel)"
#: The length of the loss curve's SVG path.
CURVE = (
    "document.querySelector('#run-charts svg path[stroke=\"#b3261e\"]').getAttribute('d').length"
)


def probabilities(page):
    return page.evaluate(PROBS)


@pytest.mark.parametrize("width", [1400, 390])
def test_the_live_view_grows_with_the_training_and_the_slider_replays_it(
    browser, live_training, width, tmp_path
):
    url, proc = live_training
    P = Page(browser, url, width, height=1000)
    page = P.page
    page.wait_for_selector("#sec-run:not([hidden])")
    page.wait_for_selector("#run-state[data-state='running']")
    page.wait_for_function("() => +$('run-step').dataset.step > 0")
    first = int(page.get_attribute("#run-step", "data-step"))
    page.wait_for_selector("#run-charts svg path[stroke='#b3261e']")
    length = page.evaluate(CURVE)
    page.wait_for_function(f"() => +$('run-step').dataset.step > {first} + 50", timeout=30_000)
    page.wait_for_function(f"() => {CURVE} > {length}", timeout=30_000)  # the loss curve grew
    # the probe (test image 0, loaded by itself) and its probabilities across the run
    page.wait_for_selector("#verdict[data-predicted]")
    page.wait_for_selector("#run-probe svg circle")

    # the slider: back to step 0, then forward to the latest; probabilities change
    page.wait_for_function("() => +$('snap').max >= 3", timeout=30_000)
    page.focus("#snap")
    page.keyboard.press("End")
    page.wait_for_function("() => $('snap-label').textContent.startsWith('step ')")
    latest = page.inner_text("#snap-label")
    page.wait_for_timeout(1000)  # the inspection at the latest snapshot lands
    late = probabilities(page)
    page.evaluate("(late) => { window.__late = JSON.stringify(late); }", late)
    page.keyboard.press("Home")
    page.wait_for_function("() => $('snap-label').textContent.startsWith('step 0 ')")
    assert not page.is_checked("#follow")
    page.wait_for_function(f"() => JSON.stringify({PROBS}) !== window.__late", timeout=15_000)
    early = probabilities(page)
    assert early != late, (early, late)
    assert latest != page.inner_text("#snap-label")
    # step 0's filters and probabilities agree with the API at step 0
    _, api0 = request(url + "/api/predict", {"test_index": 0, "snapshot": 0})
    assert page.get_attribute("#verdict", "data-predicted") == str(api0["predicted"])
    assert "at step 0" in page.inner_text("#filters h3 >> nth=0")
    page.wait_for_selector("#run-layers [data-step='0'] table")  # the layers at step 0

    # Play steps through the snapshots from step 0 by itself; a second click pauses
    page.click("#play")
    page.wait_for_function("() => !$('snap-label').textContent.startsWith('step 0 ')")
    assert page.get_attribute("#play", "aria-pressed") == "true"
    page.click("#play")
    assert page.get_attribute("#play", "aria-pressed") == "false"

    page.evaluate("window.scrollTo(0, 0)")
    shot(P, tmp_path, f"live-{width}.png", full=width != 1400)
    if SHOT and width == 1400:
        page.set_viewport_size({"width": 1400, "height": 1150})
        page.keyboard.press("End")
        page.wait_for_timeout(1500)
        page.evaluate("document.activeElement.blur(); window.scrollTo(0, 0)")
        P.page.screenshot(path=SHOT)
    axe_check(page)

    proc.send_signal(signal.SIGINT)  # train stops, saves, and its server with it
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    page.wait_for_selector("#run-state[data-state='offline']", timeout=15_000)
    assert "numpycnn inspect" in page.inner_text("#run-state")
    P.check(expected=[p for p in P.problems if "Failed to load resource" in p or "ERR_" in p])
    P.close()
