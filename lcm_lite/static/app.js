// The lcm-lite demo page: submit a job, poll its progress (and its step previews when the server
// has a tiny VAE), show the images; optionally start from a picture. No dependencies.
"use strict";

const $ = (id) => document.getElementById(id);
const SLIDERS = ["width", "height", "guidance", "steps", "num_images"];
const PICTURE_TYPES = ["image/png", "image/jpeg", "image/webp"];
const state = { picture: null, previews: false, pictureBytes: 8 * 1024 * 1024, info: null };
const MAX_RESULTS = 24; // images kept on the page; older ones are dropped
const POLL_MS = 250;
const TOKEN_KEY = "lcm-lite-token";

class ApiError extends Error {
  constructor(message, status, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

function authorization() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(method, path, body) {
  const headers = authorization();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) $("token-box").hidden = false;
  if (!response.ok) {
    throw new ApiError(data.error || `HTTP ${response.status}`, response.status,
                       response.headers.get("Retry-After"));
  }
  return data;
}

function setStatus(text) {
  $("status").textContent = text;
}

function showSlider(name) {
  const value = Number($(name).value);
  const digits = { guidance: 1, strength: 2 }[name];
  $(`${name}-value`).textContent = digits ? value.toFixed(digits) : String(value);
}

function setSlider(name, value) {
  const slider = $(name);
  const step = Number(slider.step);
  const clamped = Math.min(Math.max(value, Number(slider.min)), Number(slider.max));
  slider.value = String(Math.round(clamped / step) * step);
  showSlider(name);
}

async function loadInfo() {
  try {
    const info = await api("GET", "/api/info");
    $("model-info").textContent = `${info.model} on ${info.device} · lcm-lite ${info.version}`;
    for (const name of [...SLIDERS, "strength"]) setSlider(name, info.defaults[name]);
    state.previews = info.previews;
    $("negative-prompt-box").hidden = !info.negative_prompt;
    state.pictureBytes = info.limits.picture_bytes;
    state.info = info;
    document.dispatchEvent(new CustomEvent("lcm-info", { detail: info })); // control.js
    setStatus("");
  } catch (error) {
    $("model-info").textContent = "Not connected";
    setStatus(error.status === 401 ? "Enter the access token." : `Error: ${error.message}`);
  }
}

function readSeed() {
  if ($("randomize").checked) $("seed").value = String(Math.floor(Math.random() * 2 ** 31));
  const seed = Number($("seed").value);
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new ApiError(`the seed must be a whole number from 0 to ${Number.MAX_SAFE_INTEGER}`);
  }
  return seed;
}

function usePicture(dataUrl) {
  state.picture = dataUrl;
  $("picture-preview").src = dataUrl || "";
  for (const id of ["picture-preview", "clear-picture", "strength-box"]) $(id).hidden = !dataUrl;
  if (!dataUrl) $("picture").value = "";
}

function readPicture(file, use = usePicture) {
  if (!file) return;
  if (!PICTURE_TYPES.includes(file.type)) {
    setStatus("The picture must be a PNG, JPEG or WebP file.");
    return;
  }
  if (file.size > state.pictureBytes) {
    setStatus(`The picture must be at most ${state.pictureBytes / 1024 / 1024} MiB.`);
    return;
  }
  const reader = new FileReader();
  reader.addEventListener("load", () => {
    use(reader.result);
    setStatus("");
  });
  reader.readAsDataURL(file);
}

function showLivePreview(job) {
  if (job.preview_png_base64) {
    $("live-preview").src = `data:image/png;base64,${job.preview_png_base64}`;
    $("live-caption").textContent = `Preview after step ${job.step} of ${job.steps}`;
    $("live").hidden = false;
    $("empty").hidden = true;
  }
}

function showProgress(job) {
  const progress = $("progress");
  progress.hidden = false;
  progress.max = job.steps;
  progress.value = job.step;
  showLivePreview(job);
  if (job.state === "queued") setStatus("Waiting for the jobs ahead…");
  else if (job.step === 0) setStatus("Encoding the prompt (the first run at a size compiles)…");
  else setStatus(`Step ${job.step} of ${job.steps}`);
}

function pngUrl(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
}

function resultCard(job, image) {
  const url = pngUrl(image.png_base64);
  const card = document.createElement("li");
  card.className = "result";
  card.dataset.url = url;
  const picture = document.createElement("img");
  picture.src = url;
  picture.alt = job.prompt;
  picture.width = job.width;
  picture.height = job.height;
  const caption = document.createElement("div");
  caption.className = "caption";
  const prompt = document.createElement("p");
  prompt.className = "prompt";
  prompt.textContent = job.prompt;
  const details = document.createElement("p");
  details.className = "details";
  const start = job.strength === null ? "" : ` · from a picture, strength ${job.strength}`;
  const negative = job.negative_prompt === null ? "" : ` · not “${job.negative_prompt}”`;
  details.textContent = `seed ${job.seed} · ${job.width}×${job.height} · ${job.steps} steps · ` +
    `guidance ${job.guidance}${negative}${start} · ${job.seconds.toFixed(2)} s`;
  const download = document.createElement("a");
  download.href = url;
  download.download = `lcm-lite-${job.seed}-${image.index}.png`;
  download.textContent = "Download";
  const reuse = document.createElement("button");
  reuse.type = "button";
  reuse.className = "link";
  reuse.textContent = "Use this seed";
  reuse.addEventListener("click", () => {
    $("seed").value = String(job.seed);
    $("randomize").checked = false;
    $("seed").focus();
  });
  const asInput = document.createElement("button");
  asInput.type = "button";
  asInput.className = "link use-as-input";
  asInput.textContent = "Use as input";
  asInput.addEventListener("click", () => {
    usePicture(`data:image/png;base64,${image.png_base64}`);
    $("prompt").focus();
  });
  const actions = document.createElement("p");
  actions.className = "actions";
  actions.append(download, reuse, asInput);
  caption.append(prompt, details, actions);
  card.append(picture, caption);
  return card;
}

function addResults(job) {
  const list = $("results");
  for (const image of [...job.images].reverse()) list.prepend(resultCard(job, image));
  while (list.children.length > MAX_RESULTS) {
    URL.revokeObjectURL(list.lastElementChild.dataset.url);
    list.lastElementChild.remove();
  }
  $("empty").hidden = true;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function generate(event) {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt) {
    setStatus("Type a prompt first.");
    $("prompt").focus();
    return;
  }
  const button = $("generate");
  button.disabled = true;
  try {
    const request = { prompt, seed: readSeed(), previews: state.previews };
    for (const name of SLIDERS) request[name] = Number($(name).value);
    const negative = $("negative_prompt").value.trim();
    if (!$("negative-prompt-box").hidden && negative) request.negative_prompt = negative;
    if ($("prompt_weighting").checked) request.prompt_weighting = true;
    if (state.picture) {
      request.image = state.picture;
      request.strength = Number($("strength").value);
      Object.assign(request, window.lcmMask ? window.lcmMask.fields() : {}); // mask.js
    }
    Object.assign(request, window.lcmControl ? window.lcmControl.fields() : {}); // control.js
    let job = await api("POST", "/api/jobs", request);
    while (job.state === "queued" || job.state === "running") {
      showProgress(job);
      await sleep(POLL_MS);
      job = await api("GET", `/api/jobs/${job.id}`);
    }
    if (job.state === "failed") throw new ApiError(job.error);
    showProgress(job);
    $("live").hidden = true;
    addResults(job);
    setStatus(`Done in ${job.seconds.toFixed(2)} s (seed ${job.seed}).`);
  } catch (error) {
    const retry = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : "";
    setStatus(`${error.status === 503 ? "Busy" : "Error"}: ${error.message}.${retry}`);
    $("progress").hidden = true;
    $("live").hidden = true;
  } finally {
    button.disabled = false;
  }
}

function start() {
  for (const name of SLIDERS) {
    $(name).addEventListener("input", () => showSlider(name));
    showSlider(name);
  }
  $("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
  $("token").addEventListener("change", () => {
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    loadInfo();
  });
  $("settings").addEventListener("submit", generate);
  $("strength").addEventListener("input", () => showSlider("strength"));
  showSlider("strength");
  $("picture").addEventListener("change", () => readPicture($("picture").files[0]));
  $("clear-picture").addEventListener("click", () => usePicture(null));
  const zone = $("dropzone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    readPicture(event.dataTransfer.files[0]);
  });
  loadInfo();
}

start();
