// Small SVG charts for the dashboard: lines over time and a bar histogram. No library: the
// page draws a few hundred points a second at most, which plain SVG paths handle easily.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const W = 320, H = 110, PAD_L = 40, PAD_B = 16, PAD_T = 6;

function el(name, attrs, text) {
  const e = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmtTick(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (v >= 1e3) return (v / 1e3).toFixed(1) + "k";
  return Number.isInteger(v) ? String(v) : v.toFixed(v < 1 ? 2 : 1);
}

// series: [{values: [[t, v|null], ...], cls}] over [t0, t1] (seconds).
function drawLines(svg, series, t0, t1) {
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren();
  let max = 0;
  for (const s of series) for (const [, v] of s.values) if (v !== null && v > max) max = v;
  max = niceMax(max);
  const x = (t) => PAD_L + (W - PAD_L - 4) * (t - t0) / Math.max(t1 - t0, 1);
  const y = (v) => PAD_T + (H - PAD_T - PAD_B) * (1 - v / max);
  svg.append(el("line", {class: "axis", x1: PAD_L, y1: y(0), x2: W - 4, y2: y(0)}));
  svg.append(el("line", {class: "grid", x1: PAD_L, y1: y(max), x2: W - 4, y2: y(max)}));
  svg.append(el("text", {class: "tick", x: PAD_L - 4, y: y(max) + 4, "text-anchor": "end"}, fmtTick(max)));
  svg.append(el("text", {class: "tick", x: PAD_L - 4, y: y(0), "text-anchor": "end"}, "0"));
  const mins = Math.round((t1 - t0) / 60);
  svg.append(el("text", {class: "tick", x: PAD_L, y: H - 2}, `-${mins} min`));
  svg.append(el("text", {class: "tick", x: W - 4, y: H - 2, "text-anchor": "end"}, "now"));
  for (const s of series) {
    let d = "", pen = false;
    for (const [t, v] of s.values) {
      if (v === null || t < t0) { pen = false; continue; }  // a gap (no data) breaks the line
      d += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    }
    if (d) svg.append(el("path", {class: "line " + s.cls, d}));
  }
}

// bars: [[label, count], ...]
function drawBars(svg, bars) {
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const max = niceMax(Math.max(0, ...bars.map((b) => b[1])));
  const bw = (W - PAD_L - 4) / Math.max(bars.length, 1);
  const y = (v) => PAD_T + (H - PAD_T - PAD_B) * (1 - v / max);
  svg.append(el("line", {class: "axis", x1: PAD_L, y1: y(0), x2: W - 4, y2: y(0)}));
  svg.append(el("text", {class: "tick", x: PAD_L - 4, y: y(max) + 4, "text-anchor": "end"}, fmtTick(max)));
  bars.forEach(([label, n], i) => {
    const bx = PAD_L + i * bw;
    const r = el("rect", {class: "bar", x: bx + 1, y: y(n), width: Math.max(bw - 2, 1), height: y(0) - y(n)});
    r.append(el("title", {}, `${label} rows: ${n} runs`));
    svg.append(r);
    svg.append(el("text", {class: "tick", x: bx + bw / 2, y: H - 2, "text-anchor": "middle"}, label));
  });
}

window.ZgCharts = {drawLines, drawBars};
