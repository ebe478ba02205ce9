"""The mask painter (static/mask.js) in headless Chromium against the real server: paint the
area to repaint over the picture, erase, clear, invert, outpaint margins; the request the page
sends carries the mask (white where painted) and the margins, and the server inpaints."""
# ruff: noqa: F811

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_browser import a_picture, browser, server, wait_for_the_starting_picture  # noqa: F401

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

RECORD_REQUESTS = """
window.sentBodies = [];
const send = window.fetch;
window.fetch = (path, options) => {
  if (options && options.body) window.sentBodies.push(JSON.parse(options.body));
  return send(path, options);
};"""


def open_with_a_picture(browser, server, tmp_path: Path) -> None:
    browser.get(server.url)
    browser.execute_script(RECORD_REQUESTS)
    browser.find_element(By.ID, "picture").send_keys(str(a_picture(tmp_path / "start.png")))
    wait_for_the_starting_picture(browser)
    WebDriverWait(browser, 20).until(
        lambda b: (
            b.find_element(By.ID, "mask-box").is_displayed()
            and b.execute_script("return document.getElementById('mask-canvas').width") == 96
        )
    )


def drag(browser, start: tuple[float, float], end: tuple[float, float]) -> None:
    """A brush stroke between two points given in fractions of the canvas."""
    canvas = browser.find_element(By.ID, "mask-canvas")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    width, height = canvas.size["width"], canvas.size["height"]

    def offset(point):  # from the element's centre, as Selenium's offsets are
        return int((point[0] - 0.5) * width), int((point[1] - 0.5) * height)

    actions = ActionChains(browser)
    actions.move_to_element_with_offset(canvas, *offset(start)).click_and_hold()
    actions.move_to_element_with_offset(canvas, *offset(end)).release().perform()


def generate(browser, count: int) -> dict:
    """Press Generate, wait for the ``count``-th result; the request body the page sent."""
    WebDriverWait(browser, 20).until(
        lambda b: b.find_element(By.ID, "model-info").text.startswith("tiny on CPU")
    )
    if not browser.find_element(By.ID, "prompt").get_attribute("value"):
        browser.find_element(By.ID, "prompt").send_keys("a red door")
    browser.find_element(By.ID, "generate").click()
    WebDriverWait(browser, 90).until(
        lambda b: len(b.find_elements(By.CSS_SELECTOR, "#results .result")) == count
    )
    status = browser.find_element(By.ID, "status").text
    assert status.startswith("Done"), status
    bodies = browser.execute_script("return window.sentBodies")
    return [body for body in bodies if "prompt" in body][-1]


def mask_of(body: dict) -> np.ndarray:
    encoded = body["mask"].partition(",")[2]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))).convert("L"))


def test_painting_erasing_inverting_and_clearing_the_mask_on_the_page(
    server, browser, tmp_path: Path
) -> None:
    open_with_a_picture(browser, server, tmp_path)
    brush = browser.find_element(By.ID, "mask-brush")
    browser.execute_script("arguments[0].value = 40", brush)
    drag(browser, (0.1, 0.5), (0.9, 0.5))  # a horizontal band

    body = generate(browser, 1)
    mask = mask_of(body)
    assert mask.shape == (80, 96) and set(np.unique(mask)) == {0, 255}
    rows, columns = np.nonzero(mask)
    assert columns.max() - columns.min() > 70 and rows.max() - rows.min() < 25  # the band
    band = int(np.median(rows))
    assert mask[band, 20:76].min() == 255 and mask[0].max() == 0 and mask[79].max() == 0
    assert "outpaint" not in body

    browser.find_element(By.ID, "mask-eraser").click()
    drag(browser, (0.5, 0.1), (0.5, 0.9))  # erase across the middle of the band
    browser.find_element(By.ID, "mask-eraser").click()
    browser.find_element(By.ID, "mask-invert").click()
    inverted = mask_of(generate(browser, 2))
    assert inverted[0].min() == 255 and inverted[79].min() == 255  # was unpainted
    assert inverted[band, 15:30].max() == 0  # was painted
    assert inverted[band, 48] == 255  # erased, so painted once inverted

    browser.find_element(By.ID, "mask-clear").click()
    plain = generate(browser, 3)
    assert "mask" not in plain and plain["image"].startswith("data:image/png")


def test_outpaint_margins_are_sent_and_the_extended_canvas_is_made(
    server, browser, tmp_path: Path
) -> None:
    open_with_a_picture(browser, server, tmp_path)
    for side, value in (("left", "16"), ("bottom", "8")):
        field = browser.find_element(By.ID, f"outpaint-{side}")
        field.clear()
        field.send_keys(value)
    browser.execute_script(
        "const s = document.getElementById('strength'); s.value = '1';"
        "s.dispatchEvent(new Event('input'));"
    )

    body = generate(browser, 1)

    assert body["outpaint"] == [16, 0, 0, 8] and "mask" not in body
    details = browser.find_element(By.CSS_SELECTOR, "#results .details").text
    # the page sends its width and height: the extended canvas is made at that size
    assert "512×512" in details and "from a picture, strength 1" in details, json.dumps(details)
