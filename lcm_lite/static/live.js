// Live mode: while its switch is on, the page regenerates as the prompt changes: debounced, small
// (256² or 384²), in 1 or 2 steps, with the tiny VAE when the server has one. A newer request
// aborts the one in flight, and the server cancels the job of a client that hung up
// (lcm_lite/server/routing.py). Uses app.js's $, state and authorization().
"use strict";
{
  const DEBOUNCE_MS = 250;
  const live = { timer: null, controller: null, typedAt: 0, url: null };
  window.liveLatencies = []; // seconds from the last keystroke to each picture shown

  function schedule() {
    live.typedAt = performance.now();
    clearTimeout(live.timer);
    if ($("live-mode").checked) live.timer = setTimeout(regenerate, DEBOUNCE_MS);
  }

  function liveRequest(prompt) {
    const size = Number($("live-size").value);
    return {
      prompt, seed: Number($("seed").value) || 0, width: size, height: size,
      steps: Number($("live-steps").value), guidance: Number($("guidance").value),
      vae: state.previews ? "tiny" : "full",
    };
  }

  async function regenerate() {
    const prompt = $("prompt").value.trim();
    if (!prompt) return;
    if (live.controller) live.controller.abort(); // its job is cancelled by the server
    const controller = new AbortController();
    live.controller = controller;
    const typedAt = live.typedAt;
    const headers = { ...authorization(), "Content-Type": "application/json", Accept: "image/png" };
    const request = liveRequest(prompt);
    $("live-status").textContent = `Making “${prompt}”…`;
    try {
      Object.assign(request, window.lcmControl ? window.lcmControl.fields() : {}); // control.js
      const response = await fetch("/api/generate?format=png", {
        method: "POST", headers, body: JSON.stringify(request), signal: controller.signal,
      });
      if (!response.ok) {
        const data = await response.json().catch(() => ({}));
        throw new Error(data.error || `HTTP ${response.status}`);
      }
      const blob = await response.blob();
      if (controller === live.controller) show(blob, request, typedAt);
    } catch (error) {
      if (error.name !== "AbortError" && controller === live.controller) {
        $("live-status").textContent = `Live: ${error.message}`;
      }
    } finally {
      if (controller === live.controller) live.controller = null;
    }
  }

  function show(blob, request, typedAt) {
    const image = $("live-image");
    if (live.url) URL.revokeObjectURL(live.url);
    live.url = URL.createObjectURL(blob);
    image.onload = () => {
      const seconds = (performance.now() - typedAt) / 1000;
      window.liveLatencies.push(seconds);
      $("live-status").textContent = `“${request.prompt}” · ${request.width}×${request.height}` +
        ` · ${request.steps} step${request.steps > 1 ? "s" : ""} · ${seconds.toFixed(2)} s` +
        " after the last keystroke";
    };
    image.alt = request.prompt;
    image.src = live.url;
    $("live-result").hidden = false;
    $("empty").hidden = true;
  }

  $("prompt").addEventListener("input", schedule);
  for (const id of ["live-mode", "live-size", "live-steps"]) {
    $(id).addEventListener("change", schedule);
  }
}
