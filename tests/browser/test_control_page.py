"""The ControlNet controls (static/control.js) in headless Chromium against the real server with
the tiny ControlNet: hidden without ControlNets; with one, optional; the control picture the page
shows is the runtime's annotator's (canny), and Generate sends the control fields and shows the
image the pipeline makes from them."""
# ruff: noqa: F811

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_browser import browser, server  # noqa: F401
from test_mask_painter import RECORD_REQUESTS

from lcm_lite.images.annotators import annotate
from lcm_lite.pipeline.lcm_pipeline import LCMPipeline
from lcm_lite.server.running import Server

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

DRAWN_PIXELS = """
const img = arguments[0];
const canvas = document.createElement('canvas');
canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
const context = canvas.getContext('2d');
context.drawImage(img, 0, 0);
return [canvas.width, canvas.height, Array.from(context.getImageData(0, 0, canvas.width,
  canvas.height).data)];"""
LOADED = "return arguments[0].complete && arguments[0].naturalWidth > 0"


@pytest.fixture(scope="module")
def controlnet_server(controlnet_pipe: LCMPipeline) -> Iterator[Server]:
    with Server(controlnet_pipe, port=0, model="tiny") as server:
        yield server


def a_photo(path: Path) -> Path:
    """Shapes with edges for Canny to find, and a little noise."""
    picture = Image.effect_noise((96, 64), 20).convert("RGB")
    draw = ImageDraw.Draw(picture)
    draw.rectangle((10, 8, 50, 40), fill=(230, 200, 40))
    draw.ellipse((55, 20, 90, 58), fill=(30, 60, 200))
    picture.save(path)
    return path


def drawn(browser, element) -> np.ndarray:
    """The pixels of an ``img`` as the browser drew them (RGB)."""
    width, height, data = browser.execute_script(DRAWN_PIXELS, element)
    return np.array(data, dtype=np.uint8).reshape(height, width, 4)[..., :3]


def open_the_page(browser, server: Server) -> None:
    browser.get(server.url)
    browser.execute_script(RECORD_REQUESTS)
    WebDriverWait(browser, 20).until(
        lambda b: b.find_element(By.ID, "model-info").text.startswith("tiny on CPU")
    )


def set_range(browser, element_id: str, value: float) -> None:
    browser.execute_script(
        "const input = document.getElementById(arguments[0]); input.value = arguments[1];"
        "input.dispatchEvent(new Event('input'));",
        element_id,
        value,
    )


def test_the_control_section_is_hidden_without_controlnets(server: Server, browser) -> None:
    open_the_page(browser, server)

    assert not browser.find_element(By.ID, "control-box").is_displayed()
    assert browser.find_element(By.ID, "settings").is_displayed()


def test_generate_without_a_control_picture_makes_an_image_without_the_controlnet(
    controlnet_server: Server, browser
) -> None:
    open_the_page(browser, controlnet_server)
    assert browser.find_element(By.ID, "control-box").is_displayed()
    for name, value in (("width", 256), ("height", 256), ("steps", 1)):
        set_range(browser, name, value)
    browser.find_element(By.ID, "prompt").send_keys("a fox")
    browser.find_element(By.ID, "generate").click()

    WebDriverWait(browser, 120).until(
        lambda b: b.find_element(By.ID, "status").text.startswith(("Done", "Error"))
    )
    assert browser.find_element(By.ID, "status").text.startswith("Done")
    sent = [body for body in browser.execute_script("return window.sentBodies") if "prompt" in body]
    assert not {key for key in sent[-1] if key.startswith("control")}


def test_the_canny_control_picture_is_shown_and_generate_steers_with_it(
    controlnet_server: Server, browser, controlnet_pipe: LCMPipeline, tmp_path: Path
) -> None:
    photo = a_photo(tmp_path / "photo.png")
    open_the_page(browser, controlnet_server)
    choices = Select(browser.find_element(By.ID, "control_preprocess"))
    assert [option.text for option in choices.options][1:] == ["canny", "gray", "invert"]
    choices.select_by_value("canny")
    assert browser.find_element(By.ID, "canny-low").get_attribute("value") == "100"
    browser.find_element(By.ID, "control-image-0").send_keys(str(photo))

    preview = browser.find_element(By.ID, "control-preview-0")
    WebDriverWait(browser, 30).until(
        lambda b: preview.is_displayed() and b.execute_script(LOADED, preview)
    )
    edges = np.asarray(annotate(Image.open(photo).convert("RGB"), "canny"))
    assert np.array_equal(drawn(browser, preview), edges)
    assert 0 < (edges > 0).mean() < 0.5  # edges indeed, not a blank or a copy

    set_range(browser, "control-scale-0", 0.6)
    set_range(browser, "control_guidance_end", 0.8)
    for name, value in (("width", 256), ("height", 256), ("steps", 2)):
        set_range(browser, name, value)
    browser.find_element(By.ID, "randomize").click()
    browser.find_element(By.ID, "prompt").send_keys("a fox")
    browser.find_element(By.ID, "generate").click()
    WebDriverWait(browser, 120).until(
        lambda b: b.execute_script(
            "const img = document.querySelector('#results img');"
            "return img !== null && img.complete && img.naturalWidth > 0;"
        )
    )

    sent = [body for body in browser.execute_script("return window.sentBodies") if "prompt" in body]
    body = sent[-1]
    assert base64.b64decode(body["control_image"].partition(",")[2]) == photo.read_bytes()
    assert body["control_preprocess"] == "canny"
    assert body["canny_thresholds"] == [100, 200]
    assert body["controlnet_conditioning_scale"] == [0.6]
    assert (body["control_guidance_start"], body["control_guidance_end"]) == (0, 0.8)

    def made(scale: float) -> np.ndarray:
        return np.asarray(controlnet_pipe(
            "a fox", seed=body["seed"], width=256, height=256, steps=2,
            guidance_scale=body["guidance"], control_image=photo.read_bytes(),
            control_preprocess="canny", controlnet_conditioning_scale=scale,
            control_guidance_end=0.8,
        )[0])  # fmt: skip

    shown = drawn(browser, browser.find_element(By.CSS_SELECTOR, "#results img"))
    assert np.array_equal(shown, made(0.6))
    assert not np.array_equal(shown, made(0.0))  # the control picture steers indeed
