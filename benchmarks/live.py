"""Live mode's figures on this machine: images per second at each live size and step count (one
request after another over HTTP, as the page sends them), and the latency from the last keystroke
to the picture on the page (headless Chromium typing into the page with live mode on; the page's
own measurement, which includes its 250 ms debounce).

    python benchmarks/live.py MODEL TINY_VAE [--images 5] [--prompts 5]

Serves MODEL in this process (lcm-lite serve's Server) with the tiny VAE; prints JSON. Needs
Debian's chromium and chromium-driver for the latency. Not a test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
import urllib.request

from lcm_lite import LCMPipeline
from lcm_lite.server.running import Server

SIZES = (256, 384)
STEPS = (1, 2)
PROMPTS = ["a red cube", "a lighthouse at dusk", "a fox in the snow", "a bowl of ramen", "a ship"]


def generate_seconds(url: str, size: int, steps: int) -> float:
    """Wall seconds of one ``POST /api/generate?format=png`` as live mode sends it."""
    body = {"prompt": "a red cube", "width": size, "height": size, "steps": steps, "vae": "tiny"}
    request = urllib.request.Request(
        f"{url}api/generate?format=png",
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "Accept": "image/png"},
    )
    clock = time.perf_counter()
    with urllib.request.urlopen(request) as answer:
        answer.read()
    return time.perf_counter() - clock


def keystroke_latencies(url: str, size: int, steps: int, prompts: list[str]) -> list[float]:
    """The page's seconds from the last keystroke to each picture, typing ``prompts`` in turn."""
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    profile = tempfile.mkdtemp(prefix="lcm-lite-live-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    service = webdriver.ChromeService(shutil.which("chromedriver"))
    browser = webdriver.Chrome(service=service, options=options)
    try:
        browser.get(url)
        WebDriverWait(browser, 60).until(
            lambda b: " on " in b.find_element(By.ID, "model-info").text
        )
        Select(browser.find_element(By.ID, "live-size")).select_by_value(str(size))
        Select(browser.find_element(By.ID, "live-steps")).select_by_value(str(steps))
        browser.find_element(By.ID, "live-mode").click()
        field = browser.find_element(By.ID, "prompt")
        for count, prompt in enumerate(prompts, start=1):
            field.clear()
            field.send_keys(prompt)
            WebDriverWait(browser, 120, poll_frequency=0.05).until(
                lambda b, n=count: b.execute_script("return window.liveLatencies.length") >= n
            )
        return browser.execute_script("return window.liveLatencies")
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("tiny_vae")
    parser.add_argument("--images", type=int, default=5, help="timed images per size and steps")
    parser.add_argument("--prompts", type=int, default=5, help="prompts typed per size")
    args = parser.parse_args()
    pipe = LCMPipeline.from_pretrained(args.model, tiny_vae=args.tiny_vae)
    figures: dict = {"images_per_second": {}, "keystroke_to_picture": {}}
    with Server(pipe, port=0, model="live") as server:
        for size in SIZES:
            for steps in STEPS:
                generate_seconds(server.url, size, steps)  # compiles this size
                seconds = [generate_seconds(server.url, size, steps) for _ in range(args.images)]
                figures["images_per_second"][f"{size}/{steps}"] = 1 / statistics.median(seconds)
            typed = keystroke_latencies(server.url, size, 1, PROMPTS[: args.prompts])
            figures["keystroke_to_picture"][f"{size}/1"] = {
                "median": statistics.median(typed),
                "all": typed,
            }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
