// Try-it forms generated from a model's input metadata, and the rendering of its outputs.
// Each input gets a JSON box (any tensor); image-shaped inputs also get an image upload that is
// resized and laid out to the model's shape; string tensors get a text box (one item a line).
"use strict";

const readers = {};  // input name -> async () => V2 tensor

function h(tag, props, ...kids) {
  const e = Object.assign(document.createElement(tag), props || {});
  for (const k of kids) e.append(k);
  return e;
}

function concrete(shape) { return shape.map((d) => (d < 0 ? 1 : d)); }
function count(shape) { return shape.reduce((a, b) => a * b, 1); }

// Image layout of an input shape, or null: NCHW / NHWC with 1 or 3 channels, CHW, or a
// flattened square grayscale picture [N, k*k] (k >= 4) such as the demo model's 8x8 digits.
function imageLayout(spec) {
  const s = spec.shape;
  if (!spec.datatype.startsWith("FP") && !spec.datatype.startsWith("UINT8")) return null;
  if (s.length === 4 && [1, 3].includes(s[1]) && s[2] > 0 && s[3] > 0) return {kind: "NCHW", c: s[1], h: s[2], w: s[3]};
  if (s.length === 4 && [1, 3].includes(s[3]) && s[1] > 0 && s[2] > 0) return {kind: "NHWC", c: s[3], h: s[1], w: s[2]};
  if (s.length === 3 && [1, 3].includes(s[0]) && s[1] > 0 && s[2] > 0) return {kind: "CHW", c: s[0], h: s[1], w: s[2]};
  if (s.length === 2 && s[1] >= 16 && Number.isInteger(Math.sqrt(s[1]))) {
    const k = Math.sqrt(s[1]);
    return {kind: "flat", c: 1, h: k, w: k};
  }
  return null;
}

function defaultData(spec) {
  const n = count(concrete(spec.shape));
  if (spec.datatype === "BYTES") return Array(n).fill("");
  if (spec.datatype === "BOOL") return Array(n).fill(false);
  return Array(n).fill(0);
}

function jsonField(spec, sample) {
  const id = `in-${spec.name}-json`;
  const ta = h("textarea", {id, rows: 4, spellcheck: false});
  ta.dataset.input = spec.name;
  const shape = sample ? sample.shape : concrete(spec.shape);
  ta.value = JSON.stringify(sample ? sample.data : defaultData(spec));
  const shapeBox = h("input", {id: `${id}-shape`, value: JSON.stringify(shape), size: 12});
  readers[spec.name] = async () => {
    let data, sh;
    try { data = JSON.parse(ta.value); } catch (e) { throw new Error(`${spec.name}: the values are not JSON (${e.message})`); }
    try { sh = JSON.parse(shapeBox.value); } catch (e) { throw new Error(`${spec.name}: the shape is not JSON, e.g. [1, 64]`); }
    return {name: spec.name, shape: sh, datatype: spec.datatype, data: data.flat ? data.flat(Infinity) : data};
  };
  return h("div", {className: "json-field"},
    h("label", {htmlFor: id, textContent: `${spec.name} values (JSON, row-major)`}), ta,
    h("label", {htmlFor: `${id}-shape`, textContent: "shape"}), shapeBox);
}

function textField(spec) {
  const id = `in-${spec.name}-text`;
  const ta = h("textarea", {id, rows: 3});
  ta.dataset.input = spec.name;
  readers[spec.name] = async () => {
    const lines = ta.value.split("\n");
    const shape = spec.shape.length === 2 ? [lines.length, 1] : [lines.length];
    return {name: spec.name, shape, datatype: "BYTES", data: lines};
  };
  return h("div", {}, h("label", {htmlFor: id, textContent: `${spec.name} (text, one item a line)`}), ta);
}

function imageField(spec, model, layout, jsonReader) {
  const id = `in-${spec.name}-image`;
  const file = h("input", {id, type: "file", accept: "image/*"});
  // A range stated in the model's description ("0..16") is the default scale.
  const stated = /(\d+(?:\.\d+)?)\s*\.\.\s*(\d+(?:\.\d+)?)/.exec(model.description || "");
  const scale = h("select", {id: `${id}-scale`});
  for (const [v, t] of [["unit", "0..1 (pixel / 255)"], ["byte", "0..255 (pixel)"],
    ["imagenet", "ImageNet mean/std ((pixel/255 - mean) / std)"], ["stated", stated ? `${stated[1]}..${stated[2]} (from the model's description)` : ""]]) {
    if (t) scale.append(h("option", {value: v, textContent: t}));
  }
  if (stated) scale.value = "stated";
  const invert = h("input", {id: `${id}-invert`, type: "checkbox", checked: layout.kind === "flat"});
  const note = h("p", {className: "note"});
  const describe = () => {
    note.textContent = `Resized to ${layout.w}×${layout.h} (aspect ratio not kept), ` +
      `${layout.c === 1 ? "grayscale (0.299 R + 0.587 G + 0.114 B)" : "RGB"}, laid out as ${layout.kind}` +
      `${invert.checked ? ", inverted (dark ink on light paper becomes high values)" : ""}, scaled to ` +
      `${scale.options[scale.selectedIndex].textContent}.`;
  };
  scale.addEventListener("change", describe);
  invert.addEventListener("change", describe);
  describe();
  const mode = h("input", {type: "checkbox", id: `${id}-use`});
  file.addEventListener("change", () => { mode.checked = file.files.length > 0; });
  readers[spec.name] = async () => {
    if (!mode.checked || !file.files.length) return jsonReader();
    const bmp = await createImageBitmap(file.files[0]);
    const cv = h("canvas", {width: layout.w, height: layout.h});
    const ctx = cv.getContext("2d");
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(bmp, 0, 0, layout.w, layout.h);
    const px = ctx.getImageData(0, 0, layout.w, layout.h).data;
    const hi = stated ? parseFloat(stated[2]) : 1, lo = stated ? parseFloat(stated[1]) : 0;
    const mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225];
    const val = (p, ch) => {
      let v = invert.checked ? 255 - p : p;
      if (scale.value === "unit") return v / 255;
      if (scale.value === "byte") return v;
      if (scale.value === "imagenet") return (v / 255 - mean[ch]) / std[ch];
      return lo + (v / 255) * (hi - lo);
    };
    const plane = layout.h * layout.w, data = new Array(plane * layout.c);
    for (let i = 0; i < plane; i++) {
      const [r, g, b] = [px[4 * i], px[4 * i + 1], px[4 * i + 2]];
      if (layout.c === 1) data[i] = val(0.299 * r + 0.587 * g + 0.114 * b, 0);
      else for (let ch = 0; ch < 3; ch++) {
        const p = [r, g, b][ch];
        if (layout.kind === "NHWC") data[i * 3 + ch] = val(p, ch); else data[ch * plane + i] = val(p, ch);
      }
    }
    const shape = layout.kind === "flat" ? [1, plane] : layout.kind === "CHW" ? [layout.c, layout.h, layout.w]
      : layout.kind === "NCHW" ? [1, layout.c, layout.h, layout.w] : [1, layout.h, layout.w, layout.c];
    return {name: spec.name, shape, datatype: spec.datatype, data};
  };
  return h("div", {className: "image-field"},
    h("label", {htmlFor: id, textContent: `${spec.name} from an image`}), file,
    h("label", {htmlFor: `${id}-use`}, mode, " use the image instead of the values"),
    h("label", {htmlFor: `${id}-scale`, textContent: "scaling"}), scale,
    h("label", {htmlFor: `${id}-invert`}, invert, " invert"), note);
}

function field(spec, model, samples) {
  const sample = samples && samples.inputs && samples.inputs[spec.name];
  const fs = h("fieldset", {}, h("legend", {textContent: `${spec.name}: ${spec.datatype} [${spec.shape.map((d) => (d < 0 ? "?" : d)).join(", ")}]`}));
  fs.dataset.input = spec.name;
  if (samples && samples.note) fs.append(h("p", {className: "note", textContent: `Sample: ${samples.note}`}));
  if (spec.datatype === "BYTES") { fs.append(textField(spec)); return fs; }
  fs.append(jsonField(spec, sample));
  const layout = imageLayout(spec);
  if (layout) fs.append(imageField(spec, model, layout, readers[spec.name]));
  return fs;
}

async function read(spec) { return readers[spec.name](); }

function showOutputs(box, outputs, model) {
  box.replaceChildren();
  for (const o of outputs) {
    const sec = h("section", {className: "output"});
    sec.dataset.output = o.name;
    sec.append(h("h3", {textContent: `${o.name}: ${o.datatype} [${o.shape.join(", ")}]`}));
    const labels = model.labels;
    const rows = o.shape.length === 2 ? o.shape[0] : 1;
    const k = o.shape.length === 2 ? o.shape[1] : 0;
    if (o.datatype.startsWith("FP") && k >= 2 && rows === 1) {
      // A score per class: top-k, labelled from the model's metadata when it has labels.
      const top = o.data.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0]).slice(0, Math.min(5, k));
      const ol = h("ol", {className: "topk"});
      for (const [v, i] of top) {
        const name = labels && labels[i] !== undefined ? `${labels[i]} (class ${i})` : `class ${i}`;
        ol.append(h("li", {textContent: `${name}: ${Number(v).toPrecision(4)}`}));
      }
      sec.append(h("p", {className: "note", textContent: `top ${top.length} of ${k}`}), ol);
    }
    {
      const vals = o.data.slice(0, 64).map((v) => (typeof v === "number" && !Number.isInteger(v) ? v.toPrecision(5) : String(v)));
      let text = vals.join(", ") + (o.data.length > 64 ? ` … (${o.data.length} values)` : "");
      if (labels && o.datatype.startsWith("INT") && o.data.length === 1 && labels[o.data[0]] !== undefined) text += ` (${labels[o.data[0]]})`;
      sec.append(h("p", {className: "values", textContent: text}));
    }
    box.append(sec);
  }
}

window.ZgInputs = {field, read, showOutputs, imageLayout};
