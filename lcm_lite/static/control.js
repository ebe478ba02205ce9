// The ControlNet controls, shown when the server has ControlNets loaded (/api/info's controlnets):
// a control picture for each, the preprocessor (control_preprocess's choices) with Canny's
// thresholds, each ControlNet's scale and the steps it steers. The control picture a job will use
// is shown as the server makes it (POST /api/control-preview: the runtime's own annotators).
// Its own file: app.js tells it /api/info (state.info, the "lcm-info" event) and asks it only for
// the request's fields (lcmControl.fields()). Uses app.js's $, state, ApiError, readPicture and
// authorization().
"use strict";

const lcmControl = (() => {
  const DEBOUNCE_MS = 250;
  const WINDOW = ["control_guidance_start", "control_guidance_end"];
  let rows = []; // per ControlNet: its picture (a data URL), its elements
  let timer = null;

  function setRange(input, limits, value) {
    input.min = String(limits.min);
    input.max = String(limits.max);
    input.value = String(value);
  }

  function showValue(input, output) {
    output.textContent = Number(input.value).toFixed(2);
  }

  function addRow(controlnet, index, info) {
    const row = $("control-picture-template").content.firstElementChild.cloneNode(true);
    const part = (name) => row.querySelector(`.${name}`);
    const made = {
      picture: null, asked: 0, url: null,
      file: part("control-file"), preview: part("control-preview"), note: part("control-note"),
      scale: part("control-scale"), scaleValue: part("control-scale-value"),
    };
    const name = controlnet.source.split(/[\\/]/).filter(Boolean).pop() || controlnet.source;
    made.file.id = `control-image-${index}`;
    part("control-file-label").htmlFor = made.file.id;
    part("control-file-label").textContent = `Control picture for ${name}`;
    part("control-file-label").title = controlnet.source;
    made.scale.id = `control-scale-${index}`;
    part("control-scale-label").htmlFor = made.scale.id;
    made.preview.id = `control-preview-${index}`;
    made.preview.alt = `the control picture ${name} will see`;
    setRange(made.scale, info.limits.controlnet_conditioning_scale, controlnet.scale);
    showValue(made.scale, made.scaleValue);
    made.scale.addEventListener("input", () => showValue(made.scale, made.scaleValue));
    made.file.addEventListener("change", () => readPicture(made.file.files[0], (dataUrl) => {
      made.picture = dataUrl;
      preview(made);
    }));
    $("control-pictures").append(row);
    return made;
  }

  function preprocessing() {
    const chosen = {};
    const kind = $("control_preprocess").value;
    if (kind) chosen.control_preprocess = kind;
    if (kind === "canny") {
      chosen.canny_thresholds = [Number($("canny-low").value), Number($("canny-high").value)];
    }
    return chosen;
  }

  // The control picture the server makes from the row's picture, shown in its place.
  async function preview(row) {
    if (!row.picture) return;
    const asked = ++row.asked;
    row.note.textContent = "Making the control picture…";
    const headers = { ...authorization(), "Content-Type": "application/json" };
    const body = JSON.stringify({ control_image: row.picture, ...preprocessing() });
    try {
      const response = await fetch("/api/control-preview", { method: "POST", headers, body });
      if (!response.ok) {
        const data = await response.json().catch(() => ({}));
        throw new Error(data.error || `HTTP ${response.status}`);
      }
      const blob = await response.blob();
      if (asked !== row.asked) return; // a newer one is on its way
      if (row.url) URL.revokeObjectURL(row.url);
      row.url = URL.createObjectURL(blob);
      row.preview.src = row.url;
      row.preview.hidden = false;
      row.note.textContent = "";
    } catch (error) {
      if (asked !== row.asked) return;
      row.preview.hidden = true;
      row.note.textContent = `Error: ${error.message}`;
    }
  }

  function previewAll() {
    clearTimeout(timer);
    timer = setTimeout(() => rows.forEach(preview), DEBOUNCE_MS);
  }

  function configure(info) {
    const box = $("control-box");
    box.hidden = !info.controlnets.length;
    $("control-pictures").replaceChildren();
    rows = info.controlnets.map((controlnet, index) => addRow(controlnet, index, info));
    const select = $("control_preprocess");
    select.replaceChildren(select.options[0]);
    for (const kind of info.choices.control_preprocess) {
      select.append(new Option(kind, kind));
    }
    ["canny-low", "canny-high"].forEach((id, index) => {
      setRange($(id), info.limits.canny_thresholds, info.defaults.canny_thresholds[index]);
    });
    for (const name of WINDOW) {
      setRange($(name), info.limits[name], info.defaults[name]);
      showValue($(name), $(`${name}-value`));
    }
  }

  // The request's ControlNet fields: none without control pictures (the ControlNets are optional
  // per request); an ApiError when some of several are missing.
  function fields() {
    const given = rows.filter((row) => row.picture).length;
    if ($("control-box").hidden || !given) return {};
    if (given < rows.length) {
      throw new ApiError(`choose a control picture for each ControlNet (${rows.length}), or none`);
    }
    const pictures = rows.map((row) => row.picture);
    const chosen = {
      control_image: pictures.length === 1 ? pictures[0] : pictures,
      controlnet_conditioning_scale: rows.map((row) => Number(row.scale.value)),
      ...preprocessing(),
    };
    for (const name of WINDOW) chosen[name] = Number($(name).value);
    return chosen;
  }

  function start() {
    $("control_preprocess").addEventListener("change", () => {
      $("canny-box").hidden = $("control_preprocess").value !== "canny";
      previewAll();
    });
    for (const id of ["canny-low", "canny-high"]) $(id).addEventListener("input", previewAll);
    for (const name of WINDOW) {
      $(name).addEventListener("input", () => showValue($(name), $(`${name}-value`)));
    }
    document.addEventListener("lcm-info", (event) => configure(event.detail));
    if (state.info) configure(state.info);
  }

  start();
  return { fields };
})();
window.lcmControl = lcmControl;
