// The mask painter: once a starting picture is chosen, paint over it the area to repaint
// (inpainting), with a brush (size, eraser, clear, invert), and choose margins to add around it
// (outpainting). Its own file: app.js asks it only for the request's fields (lcmMask.fields()).
"use strict";

const lcmMask = (() => {
  const SIDES = ["left", "top", "right", "bottom"];
  const PAINT = "rgb(255, 40, 40)";
  const element = (tag, properties = {}, children = []) => {
    const made = Object.assign(document.createElement(tag), properties);
    made.append(...children);
    return made;
  };
  const label = (text, control) => element("label", { htmlFor: control.id, textContent: text });

  const picture = element("img", { id: "mask-picture", alt: "the picture to paint the mask on" });
  const canvas = element("canvas", { id: "mask-canvas" });
  const size = element("input", { id: "mask-brush", type: "range", min: 2, max: 128, value: 24 });
  const eraser = element("input", { id: "mask-eraser", type: "checkbox" });
  const clear = element("button", { id: "mask-clear", type: "button", textContent: "Clear" });
  const invert = element("button", { id: "mask-invert", type: "button", textContent: "Invert" });
  const margins = SIDES.map((side) =>
    element("input", { id: `outpaint-${side}`, type: "number", min: 0, max: 512, step: 8, value: 0 }),
  );
  const box = element("fieldset", { id: "mask-box", hidden: true }, [
    element("legend", { textContent: "Repaint part of the picture" }),
    element("p", {
      className: "hint",
      textContent: "Paint the area to repaint (none: the whole picture changes).",
    }),
    element("div", { className: "mask-stage" }, [picture, canvas]),
    element("div", { className: "mask-tools" }, [
      label("Brush", size), size,
      element("label", { className: "check" }, [eraser, " Eraser"]),
      clear, invert,
    ]),
    element("p", { className: "hint", textContent: "Outpaint: pixels to add on each side" }),
    element("div", { className: "mask-margins" }, margins.flatMap((input, index) => [
      label(SIDES[index][0].toUpperCase() + SIDES[index].slice(1), input), input,
    ])),
  ]);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  let last = null;

  function reset(source) {
    box.hidden = !source;
    for (const input of margins) input.value = 0;
    if (!source) return;
    picture.src = source;
    picture.decode().then(() => {
      canvas.width = picture.naturalWidth;
      canvas.height = picture.naturalHeight;
    }).catch(() => { box.hidden = true; });
  }

  function point(event) {
    const bounds = canvas.getBoundingClientRect();
    const scale = canvas.width / bounds.width;
    return [(event.clientX - bounds.left) * scale, (event.clientY - bounds.top) * scale, scale];
  }

  function stroke(event) {
    const [x, y, scale] = point(event);
    context.globalCompositeOperation = eraser.checked ? "destination-out" : "source-over";
    context.strokeStyle = PAINT;
    context.lineWidth = Number(size.value) * scale;
    context.lineCap = context.lineJoin = "round";
    context.beginPath();
    context.moveTo(...(last || [x, y]));
    context.lineTo(x, y);
    context.stroke();
    last = [x, y];
  }

  function invertMask() {
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
    for (let i = 0; i < pixels.data.length; i += 4) {
      const painted = pixels.data[i + 3] > 0;
      pixels.data.set(painted ? [0, 0, 0, 0] : [255, 40, 40, 255], i);
    }
    context.putImageData(pixels, 0, 0);
  }

  // The mask the server reads: white where painted, black elsewhere (a PNG data URL); none
  // when nothing is painted.
  function maskDataUrl() {
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
    let painted = false;
    for (let i = 0; i < pixels.data.length; i += 4) {
      const value = pixels.data[i + 3] > 0 ? 255 : 0;
      painted ||= value > 0;
      pixels.data.set([value, value, value, 255], i);
    }
    if (!painted) return null;
    const out = element("canvas", { width: canvas.width, height: canvas.height });
    out.getContext("2d").putImageData(pixels, 0, 0);
    return out.toDataURL("image/png");
  }

  function fields() {
    if (box.hidden) return {};
    const chosen = {};
    const mask = maskDataUrl();
    if (mask) chosen.mask = mask;
    const outpaint = margins.map((input) => Math.max(0, Math.round(Number(input.value) || 0)));
    if (outpaint.some((value) => value > 0)) chosen.outpaint = outpaint;
    return chosen;
  }

  function start() {
    const preview = document.getElementById("picture-preview");
    document.getElementById("picture-box").after(box);
    new MutationObserver(() => reset(preview.hidden ? null : preview.src))
      .observe(preview, { attributes: true, attributeFilter: ["src", "hidden"] });
    canvas.addEventListener("pointerdown", (event) => {
      canvas.setPointerCapture(event.pointerId);
      last = null;
      stroke(event);
    });
    canvas.addEventListener("pointermove", (event) => { if (last) stroke(event); });
    for (const end of ["pointerup", "pointercancel"]) {
      canvas.addEventListener(end, () => { last = null; });
    }
    clear.addEventListener("click", () => context.clearRect(0, 0, canvas.width, canvas.height));
    invert.addEventListener("click", invertMask);
  }

  start();
  return { fields };
})();
window.lcmMask = lcmMask;
