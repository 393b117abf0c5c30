"""The draw-a-digit page: ``hmnist export``, ``hmnist serve``, and the page
itself driven in headless Chromium (Debian's chromium and chromium-driver,
``make browser``); the browser tests skip where those are not installed.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from hmnist.cli import main
from hmnist.data import FILES, find_file, read_images
from hmnist.images import centre_of_mass, preprocess
from hmnist.network import Network
from hmnist.page import PAGE_FILES, arrays_sha256, make_server

REPO = Path(__file__).resolve().parents[1]
CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=900,720",
]
# A "7" on the 280x280 pad, in pixels from its top-left corner: the bar,
# then the stem.
SEVEN = [(70, 60), (210, 60), (180, 130), (150, 200), (130, 240)]
# A "1": one slanted line.
ONE = [(150, 40), (130, 240)]
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def test_pixels(real_data_dir):
    """Return twenty real test digits as float pixels ``(20, 784)``."""
    images = read_images(find_file(real_data_dir, FILES["test_images"]))
    return images[:20] / 255


def tiny_model(path, sizes=(784, 5, 10), dtype="float64"):
    """Save an untrained network at ``path``; return it."""
    net = Network(sizes, seed=1, dtype=dtype)
    net.save(path)
    return net


def read_model_js(path):
    """Return the document that ``model.js`` assigns to HMNIST_MODEL."""
    text = Path(path).read_text()
    match = re.search(r"window\.HMNIST_MODEL = (\{.*\});\s*$", text, re.S)
    assert match, "model.js does not set window.HMNIST_MODEL"
    return json.loads(match.group(1))


# ----------------------------------------------------------------------------
# hmnist export


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_export_writes_the_page_and_an_exact_model(tmp_path, capsys, dtype):
    net = tiny_model(tmp_path / "model.npz", dtype=dtype)
    out = tmp_path / "page"
    assert main(["export", str(tmp_path / "model.npz"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*PAGE_FILES, "model.js", "model.json"]
    )
    document = json.loads((out / "model.json").read_text())
    assert read_model_js(out / "model.js") == document
    assert document["sizes"] == [784, 5, 10] and document["dtype"] == dtype
    source = hashlib.sha256((tmp_path / "model.npz").read_bytes()).hexdigest()
    assert document["source"] == {"file": "model.npz", "sha256": source}
    # The JSON numbers rebuild the parameters bit for bit.
    for layer, w, b in zip(document["layers"], net.weights, net.biases):
        np.testing.assert_array_equal(np.array(layer["weights"]), w)
        np.testing.assert_array_equal(np.array(layer["biases"]), b)
    rebuilt = object.__new__(Network)
    rebuilt.weights = [np.array(layer["weights"]) for layer in document["layers"]]
    rebuilt.biases = [np.array(layer["biases"]) for layer in document["layers"]]
    assert arrays_sha256(rebuilt) == document["sha256"] == arrays_sha256(net)
    assert document["sha256"] in capsys.readouterr().out


def test_export_a_bad_model_is_one_line_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"PK not really")
    out = tmp_path / "page"
    assert main(["export", str(bad), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "Traceback" not in err
    assert not out.exists()


def test_export_needs_784_inputs_and_10_outputs(tmp_path, capsys):
    tiny_model(tmp_path / "small.npz", sizes=(4, 3, 2))
    assert main(["export", str(tmp_path / "small.npz"), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "784 inputs" in err


# ----------------------------------------------------------------------------
# hmnist serve, without a browser


def fetch(url):
    """Return ``(status, content type, body)`` of a GET of ``url``."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as err:
        return err.code, None, b""


def test_server_sends_the_page_and_the_model(tmp_path):
    tiny_model(tmp_path / "model.npz")
    server = make_server(tmp_path / "model.npz", "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        status, kind, body = fetch(base + "/")
        assert status == 200 and kind.startswith("text/html")
        assert b'<script src="model.js">' in body
        assert fetch(base + "/hmnist.js")[1].startswith("text/javascript")
        status, kind, body = fetch(base + "/model.json")
        assert json.loads(body)["sha256"] == server.document["sha256"]
        assert fetch(base + "/model.js?v=1")[0] == 200
        assert fetch(base + "/../pyproject.toml")[0] == 404
        assert fetch(base + "/network.py")[0] == 404
    finally:
        server.shutdown()
        server.server_close()


def test_serve_without_a_model_says_how_to_make_one(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["serve", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hmnist train --save model.npz" in err


# ----------------------------------------------------------------------------
# The page in headless Chromium


def find_browser():
    """Return ``(chromium, chromedriver)`` paths, or skip saying what is missing."""
    pytest.importorskip("selenium", reason="selenium not installed (test extra)")
    chromium = next(
        filter(None, map(shutil.which, ["chromium", "chromium-browser"])), None
    )
    driver = shutil.which("chromedriver") or next(
        (p for p in ["/usr/lib/chromium/chromedriver"] if Path(p).is_file()), None
    )
    if not chromium or not driver:
        pytest.skip(
            "headless Chromium not found: `make browser` installs Debian's "
            "chromium and chromium-driver (needs root and apt-get)"
        )
    return chromium, driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Yield a headless Chromium driven by Selenium, with a fresh profile."""
    chromium, driver_path = find_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    profile = tmp_path_factory.mktemp("chromium-profile")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def served(model):
    """Yield the URL of ``hmnist serve`` running the model in a subprocess."""
    command = [sys.executable, "-m", "hmnist", "serve", "--model", str(model[0])]
    process = subprocess.Popen(
        [*command, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=REPO,
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        match = re.search(r"http://\S+/", line)
        if not match:
            process.kill()
            pytest.fail(f"hmnist serve did not start: {line}{process.stderr.read()}")
        yield match.group(0)
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()
        process.stderr.close()


def open_page(browser, url):
    """Load ``url`` and wait until the page has its model; return hmnist's state."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 20).until(
        lambda d: d.execute_script(
            "return !!window.hmnist && (window.hmnist.ready || !!window.hmnist.error)"
        )
    )
    return browser.execute_script(
        "return {ready: hmnist.ready, error: hmnist.error,"
        " sha256: hmnist.model && hmnist.model.sha256,"
        " status: document.getElementById('status').textContent}"
    )


def draw(browser, points, kind="mouse"):
    """Draw one stroke through ``points`` (pad pixels) with a mouse or a finger."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    pad = browser.find_element("id", "pad")
    builder = ActionBuilder(browser, mouse=PointerInput(kind, kind), duration=20)
    pointer = builder.pointer_action
    # Selenium measures offsets in an element from its centre.
    x, y = points[0]
    pointer.move_to(pad, x - pad.size["width"] // 2, y - pad.size["height"] // 2)
    pointer.pointer_down()
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        # Steps of about 10 pixels: the page sees many pointermove events.
        steps = max(1, max(abs(x1 - x0), abs(y1 - y0)) // 10)
        for k in range(1, steps + 1):
            nx, ny = x0 + (x1 - x0) * k // steps, y0 + (y1 - y0) * k // steps
            pointer.move_by(nx - x, ny - y)
            x, y = nx, ny
    pointer.pointer_up()
    builder.perform()


def page_state(browser):
    """Return the page's last grey image, input, output and shown digit."""
    return browser.execute_script(
        "var h = window.hmnist;"
        "return {grey: h.lastGrey && Array.from(h.lastGrey.data),"
        " width: h.lastGrey && h.lastGrey.width,"
        " height: h.lastGrey && h.lastGrey.height,"
        " input: h.lastInput, output: h.lastOutput, digit: h.lastDigit,"
        " shown: document.getElementById('digit').textContent}"
    )


def test_drawn_digit_matches_the_network(browser, served, model, tmp_path):
    path, net = model
    state = open_page(browser, served)
    assert state["ready"], state["status"]
    assert state["sha256"] == arrays_sha256(net)
    draw(browser, SEVEN)
    page = page_state(browser)
    assert page["output"] is not None, "the page classified nothing"
    x = np.array(page["input"])
    assert x.shape == (784,) and x.min() >= 0 and x.max() <= 1

    # The page's forward pass is the network's, on the page's own input.
    expected = net.feedforward(x[None, :])[0]
    np.testing.assert_allclose(page["output"], expected, rtol=0, atol=TOLERANCE)
    assert page["digit"] == int(np.argmax(expected))
    assert page["shown"] == str(page["digit"])
    # The quick model (89.6% on the test set) reads the stroke as a 7.
    assert page["digit"] == 7

    # The page's preprocessing is hmnist.images', on the page's own drawing.
    grey = np.array(page["grey"]).reshape(page["height"], page["width"])
    assert grey.min() < 0.1 < 0.9 < grey.max(), "no stroke on the canvas"
    np.testing.assert_allclose(preprocess(grey), x, rtol=0, atol=TOLERANCE)
    rows, cols = centre_of_mass(x.reshape(28, 28))
    assert abs(rows - 14) <= 1 and abs(cols - 14) <= 1

    browser.save_screenshot(str(tmp_path / "draw.png"))
    # The README's screenshot is refreshed on request, not by every test run.
    if os.environ.get("HMNIST_UPDATE_SCREENSHOT"):
        (REPO / "docs").mkdir(exist_ok=True)
        browser.save_screenshot(str(REPO / "docs" / "draw.png"))

    browser.find_element("id", "clear").click()
    page = page_state(browser)
    assert page["output"] is None and page["input"] is None
    assert page["shown"] == "\u2013"


def test_drawing_with_a_finger(browser, served, model):
    path, net = model
    assert open_page(browser, served)["ready"]
    draw(browser, ONE, kind="touch")
    page = page_state(browser)
    assert page["output"] is not None, "a touch stroke drew nothing"
    x = np.array(page["input"])
    expected = net.feedforward(x[None, :])[0]
    np.testing.assert_allclose(page["output"], expected, rtol=0, atol=TOLERANCE)
    assert page["digit"] == 1


def test_pixels_set_directly_match_the_network(browser, served, model, test_pixels):
    path, net = model
    assert open_page(browser, served)["ready"]
    for x in test_pixels:
        output = browser.execute_script(
            "return window.hmnist.show(arguments[0]);", x.tolist()
        )
        expected = net.feedforward(x[None, :])[0]
        np.testing.assert_allclose(output, expected, rtol=0, atol=TOLERANCE)
        page = page_state(browser)
        np.testing.assert_array_equal(page["input"], x)
        assert page["shown"] == str(int(np.argmax(expected)))


def test_page_opened_from_the_file_system(browser, model, test_pixels, tmp_path):
    path, net = model
    out = tmp_path / "page"
    assert main(["export", str(path), "--out", str(out)]) == 0
    state = open_page(browser, (out / "index.html").as_uri())
    assert state["ready"], state["status"]
    assert state["sha256"] == arrays_sha256(net)
    assert "784-30-10" in state["status"]
    output = browser.execute_script(
        "return window.hmnist.show(arguments[0]);", test_pixels[0].tolist()
    )
    expected = net.feedforward(test_pixels[:1])[0]
    np.testing.assert_allclose(output, expected, rtol=0, atol=TOLERANCE)


def test_page_without_model_js_says_how_to_get_one(browser, model, tmp_path):
    out = tmp_path / "page"
    assert main(["export", str(model[0]), "--out", str(out)]) == 0
    (out / "model.js").unlink()
    state = open_page(browser, (out / "index.html").as_uri())
    assert not state["ready"]
    assert "no model" in state["status"] and "hmnist serve" in state["status"]
