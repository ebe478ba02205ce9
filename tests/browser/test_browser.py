"""The demo page in a real browser: headless Chromium (Debian's chromium and chromium-driver)
driven by Selenium, against the real server with the tiny model."""

from __future__ import annotations

import base64
import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from lcm_lite.pipeline.lcm_pipeline import LCMPipeline
from lcm_lite.server.running import Server

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402 - only once selenium is known present
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver"
)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
]
TOKEN = "a-token-for-the-browser-test"


@pytest.fixture(scope="module")
def server(f32_pipe: LCMPipeline) -> Iterator[Server]:
    with Server(f32_pipe, port=0, model="tiny") as server:
        yield server


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def rendered_pixel_spread(browser: webdriver.Chrome, image: str = "#results img") -> float:
    """The range of the colour values of the first ``image`` (a CSS selector) as the browser drew
    it onto a canvas (0 for a blank image)."""
    return browser.execute_script(
        """
        const img = document.querySelector(arguments[0]);
        const canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        const context = canvas.getContext('2d');
        context.drawImage(img, 0, 0);
        const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
        let low = 255, high = 0;
        data.forEach((value, i) => {
          if (i % 4 !== 3) { low = Math.min(low, value); high = Math.max(high, value); }
        });
        return high - low;""",
        image,
    )


def generate_from_the_page(browser: webdriver.Chrome, prompt: str) -> None:
    WebDriverWait(browser, 20).until(
        lambda b: b.find_element(By.ID, "model-info").text.startswith("tiny on CPU")
    )
    browser.find_element(By.ID, "prompt").send_keys(prompt)
    browser.find_element(By.ID, "generate").click()
    WebDriverWait(browser, 60).until(
        lambda b: b.execute_script(
            "const img = document.querySelector('#results img');"
            "return img !== null && img.complete && img.naturalWidth > 0;"
        )
    )


def test_typing_a_prompt_and_clicking_generate_shows_the_image_with_its_seed(
    server: Server, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    browser.get(server.url)
    generate_from_the_page(browser, "a red cube on a table")

    image = browser.find_element(By.CSS_SELECTOR, "#results img")
    assert browser.execute_script(
        "return [arguments[0].naturalWidth, arguments[0].naturalHeight]", image
    ) == [512, 512]
    assert image.get_attribute("alt") == "a red cube on a table"
    assert rendered_pixel_spread(browser) > 0
    seed = browser.find_element(By.ID, "seed").get_attribute("value")
    assert (
        f"seed {seed} · 512×512 · 4 steps"
        in browser.find_element(By.CSS_SELECTOR, "#results .details").text
    )
    download = browser.find_element(By.LINK_TEXT, "Download")
    assert download.get_attribute("href").startswith("blob:")
    assert download.get_attribute("download") == f"lcm-lite-{seed}-0.png"
    assert browser.find_element(By.ID, "status").text.startswith("Done in")
    assert browser.find_element(By.ID, "progress").get_attribute("value") == "4"

    screenshot = tmp_path / "page.png"
    assert browser.save_screenshot(str(screenshot))
    with Image.open(screenshot) as shot:
        assert shot.width == 1280


def test_results_stay_on_the_page_newest_first(server: Server, browser: webdriver.Chrome) -> None:
    browser.get(server.url)
    generate_from_the_page(browser, "first prompt")
    prompt = browser.find_element(By.ID, "prompt")
    prompt.clear()
    prompt.send_keys("second prompt")
    browser.find_element(By.ID, "generate").click()
    WebDriverWait(browser, 60).until(
        lambda b: len(b.find_elements(By.CSS_SELECTOR, "#results .result")) == 2
    )
    assert [p.text for p in browser.find_elements(By.CSS_SELECTOR, "#results .prompt")] == [
        "second prompt",
        "first prompt",
    ]


def test_behind_a_token_the_page_asks_for_it_then_generates(
    f32_pipe: LCMPipeline, browser: webdriver.Chrome
) -> None:
    with Server(f32_pipe, port=0, token=TOKEN, model="tiny") as guarded:
        browser.get(guarded.url)
        token = browser.find_element(By.ID, "token")
        WebDriverWait(browser, 20).until(lambda b: token.is_displayed())
        assert browser.find_element(By.ID, "status").text == "Enter the access token."
        token.send_keys(TOKEN)
        browser.find_element(By.ID, "prompt").click()  # leaving the field saves the token
        generate_from_the_page(browser, "a guarded cube")


def a_picture(path: Path) -> Path:
    Image.effect_noise((96, 80), 60).convert("RGB").save(path)
    return path


def wait_for_the_starting_picture(browser: webdriver.Chrome) -> None:
    WebDriverWait(browser, 20).until(
        lambda b: (
            b.find_element(By.ID, "picture-preview").is_displayed()
            and b.execute_script("return document.getElementById('picture-preview').naturalWidth")
            > 0
        )
    )
    assert browser.find_element(By.ID, "strength-box").is_displayed()


def test_a_chosen_picture_starts_image_to_image_at_the_chosen_strength(
    server: Server, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    browser.get(server.url)
    assert not browser.find_element(By.ID, "strength-box").is_displayed()
    browser.find_element(By.ID, "picture").send_keys(str(a_picture(tmp_path / "start.png")))
    wait_for_the_starting_picture(browser)
    browser.execute_script(
        "const s = document.getElementById('strength'); s.value = '0.5';"
        "s.dispatchEvent(new Event('input'));"
    )
    assert browser.find_element(By.ID, "strength-value").text == "0.50"
    generate_from_the_page(browser, "a blue cube")
    details = browser.find_element(By.CSS_SELECTOR, "#results .details").text
    assert "512×512" in details and "from a picture, strength 0.5" in details
    assert rendered_pixel_spread(browser) > 0
    browser.find_element(By.ID, "clear-picture").click()
    assert not browser.find_element(By.ID, "picture-preview").is_displayed()


def test_a_picture_dropped_on_the_page_becomes_the_starting_picture(
    server: Server, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    browser.get(server.url)
    encoded = base64.b64encode(a_picture(tmp_path / "drop.png").read_bytes()).decode()
    browser.execute_script(
        """const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], "drop.png", { type: "image/png" }));
        document.getElementById("dropzone").dispatchEvent(
          new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));""",
        encoded,
    )
    wait_for_the_starting_picture(browser)
    source = browser.find_element(By.ID, "picture-preview").get_attribute("src")
    assert source == f"data:image/png;base64,{encoded}"


def test_use_as_input_makes_a_result_the_next_starting_picture(
    server: Server, browser: webdriver.Chrome
) -> None:
    browser.get(server.url)
    generate_from_the_page(browser, "a red cube")
    browser.find_element(By.CSS_SELECTOR, "#results .use-as-input").click()
    wait_for_the_starting_picture(browser)
    browser.find_element(By.ID, "generate").click()
    WebDriverWait(browser, 60).until(
        lambda b: len(b.find_elements(By.CSS_SELECTOR, "#results .result")) == 2
    )
    newest = browser.find_element(By.CSS_SELECTOR, "#results .details").text
    assert "from a picture, strength 0.8" in newest


def test_the_page_shows_step_previews_until_the_image_replaces_them(
    previews_pipe: LCMPipeline, browser: webdriver.Chrome
) -> None:
    with Server(previews_pipe, port=0, model="tiny") as previewing:
        browser.get(previewing.url)
        WebDriverWait(browser, 20).until(
            lambda b: b.find_element(By.ID, "model-info").text.startswith("tiny on CPU")
        )
        browser.execute_script(
            """for (const [name, value] of [["width", 256], ["height", 256], ["steps", 8],
                                           ["num_images", 4]]) {
              const slider = document.getElementById(name);
              slider.value = String(value);
              slider.dispatchEvent(new Event("input"));
            }
            window.captions = [];
            new MutationObserver(() => window.captions.push(
                document.getElementById("live").hidden ? "hidden"
                : document.getElementById("live-caption").textContent))
              .observe(document.getElementById("live"),
                       { attributes: true, childList: true, subtree: true });"""
        )
        generate_from_the_page(browser, "a lighthouse")
        captions = browser.execute_script("return window.captions")
        shown = [caption for caption in captions if caption.startswith("Preview after step")]
        assert shown and captions[-1] == "hidden", captions
        assert not browser.find_element(By.ID, "live").is_displayed()
        assert len(browser.find_elements(By.CSS_SELECTOR, "#results img")) == 4


def test_the_negative_prompt_field_is_hidden_for_a_latent_consistency_model(
    server: Server, browser: webdriver.Chrome
) -> None:
    browser.get(server.url)
    WebDriverWait(browser, 20).until(
        lambda b: b.find_element(By.ID, "model-info").text.startswith("tiny on CPU")
    )
    assert not browser.find_element(By.ID, "negative_prompt").is_displayed()


def test_a_negative_prompt_typed_on_the_page_guides_an_lcm_lora_model(
    sd_lcm_lora_pipe: LCMPipeline, browser: webdriver.Chrome
) -> None:
    with Server(sd_lcm_lora_pipe, port=0, model="tiny") as served:
        browser.get(served.url)
        field = browser.find_element(By.ID, "negative_prompt")
        WebDriverWait(browser, 20).until(lambda b: field.is_displayed())
        field.send_keys("blurry")
        generate_from_the_page(browser, "a red cube")
        details = browser.find_element(By.CSS_SELECTOR, "#results .details").text
        assert "not “blurry”" in details
        assert served.jobs.outcomes["done"] == 1


def test_the_weighted_prompt_switch_sends_prompt_weighting(
    server: Server, browser: webdriver.Chrome
) -> None:
    browser.get(server.url)
    browser.find_element(By.ID, "prompt_weighting").click()
    generate_from_the_page(browser, "a (red:1.4) cube")
    job = list(server.jobs._jobs.values())[-1]
    assert (job.request.prompts, job.request.prompt_weighting) == (["a (red:1.4) cube"], True)


@contextlib.contextmanager
def worker_held(pipe: LCMPipeline) -> Iterator[None]:
    """The server's worker waits for the pipeline's own lock while the block runs: a job it takes
    stays running until then, whatever the machine's speed."""
    with pipe._lock:
        yield


def test_live_mode_regenerates_as_one_types_and_cancels_the_stale_job(
    previews_pipe: LCMPipeline, browser: webdriver.Chrome
) -> None:
    with Server(previews_pipe, port=0, model="tiny") as served:
        browser.get(served.url)
        WebDriverWait(browser, 20).until(
            lambda b: b.find_element(By.ID, "model-info").text.startswith("tiny on CPU")
        )
        browser.find_element(By.ID, "live-mode").click()
        prompt = browser.find_element(By.ID, "prompt")
        with worker_held(previews_pipe):
            prompt.send_keys("a red")
            WebDriverWait(browser, 20).until(lambda b: served.jobs.running is not None)
            stale = served.jobs.running
            assert stale.request.prompt == ["a red"]  # resolved: a list of prompts
            prompt.send_keys(" cube")
            # the page aborts the stale request; the server sees the client go and cancels it
            WebDriverWait(browser, 20).until(lambda b: stale.cancelled and served.jobs.waiting)
        WebDriverWait(browser, 60).until(
            lambda b: b.execute_script(
                "const img = document.getElementById('live-image');"
                "return img.complete && img.naturalWidth > 0 && window.liveLatencies.length > 0;"
            )
        )
        image = browser.find_element(By.ID, "live-image")
        assert image.get_attribute("alt") == "a red cube"
        assert browser.execute_script("return arguments[0].naturalWidth", image) == 256
        caption = browser.find_element(By.ID, "live-status").text
        assert caption.startswith("“a red cube” · 256×256 · 1 step · ")
        assert caption.endswith(" s after the last keystroke")
        assert stale.state == "failed" and "cancelled" in str(stale.error)
        assert served.jobs.outcomes["cancelled"] == 1
        assert served.jobs.outcomes["done"] == 1
        assert rendered_pixel_spread(browser, "#live-image") > 0
