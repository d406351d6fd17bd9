// The Ziggurat dashboard: models table with load/unload/reload, live metrics from the server's
// event stream, and a try-it form per model that runs the V2 infer endpoint.
"use strict";

const KEY_STORE = "ziggurat-api-key";  // sessionStorage: this tab only, never in a URL
const WINDOW_S = 300;
const $ = (sel) => document.querySelector(sel);
const state = {
  started: null, samples: [], models: [], rowKeys: "", samplesByModel: {},
  tryModel: null, streamTimer: null, retryMs: 1000, batchBuckets: [], keyDeclined: false,
};

// -- API calls with the key --------------------------------------------------------------
function apiKey() { return sessionStorage.getItem(KEY_STORE) || ""; }

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const k = apiKey();
  if (k) h["Authorization"] = "Bearer " + k;
  return h;
}

let keyPrompt = null;  // one dialog at a time; every caller waits for the same answer
function askKey(why) {
  if (keyPrompt) return keyPrompt;
  const dlg = $("#key-dialog");
  $("#key-why").textContent = why;
  $("#key-input").value = "";
  keyPrompt = new Promise((resolve) => {
    dlg.addEventListener("close", () => {
      keyPrompt = null;
      if (dlg.returnValue === "ok" && $("#key-input").value) {
        sessionStorage.setItem(KEY_STORE, $("#key-input").value);
        state.keyDeclined = false;
        resolve(true);
      } else {
        if (dlg.returnValue === "forget") sessionStorage.removeItem(KEY_STORE);
        state.keyDeclined = true;  // no more prompts until the "API key" button is used
        resolve(false);
      }
    }, {once: true});
  });
  dlg.showModal();
  $("#key-input").focus();
  return keyPrompt;
}

async function api(path, opts) {
  opts = opts || {};
  for (let attempt = 0; ; attempt++) {
    const resp = await fetch(path, Object.assign({}, opts, {headers: headers(opts.headers)}));
    if ((resp.status === 401 || resp.status === 403) && attempt < 2 && !state.keyDeclined) {
      const why = resp.status === 401 ? "This server needs an API key."
        : "The API key was refused; enter another.";
      if (await askKey(why + " It is kept in this tab's session storage only.")) continue;
    }
    return resp;
  }
}

async function errorText(resp) {
  try { return (await resp.json()).error || resp.statusText; } catch (e) { return resp.statusText; }
}

// -- formatting ------------------------------------------------------------------------------
function bytes(n) {
  if (n === null || n === undefined) return "–";
  const u = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + u[i];
}
const ms = (v) => (v === null || v === undefined ? "–" : v.toFixed(v < 10 ? 2 : 1) + " ms");
const shapeText = (s) => "[" + s.shape.map((d) => (d < 0 ? "?" : d)).join(", ") + "]";
const ioText = (list) => (list || []).map((s) => `${s.name} ${s.datatype} ${shapeText(s)}`).join("; ");

function setMetric(name, text) {
  const e = document.querySelector(`[data-metric="${name}"]`);
  if (e && e.textContent !== text) e.textContent = text;
}

// -- models table ----------------------------------------------------------------------------
function rowKey(m) { return `${m.name}/${m.version || ""}/${m.state}`; }

function cell(tr, text, metric) {
  const td = document.createElement("td");
  td.textContent = text;
  if (metric) td.dataset.metric = metric;
  tr.append(td);
  return td;
}

function actionButton(label, model, action, version) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.setAttribute("aria-label", `${label} ${model}` + (version ? ` version ${version}` : ""));
  b.dataset.action = action;
  b.addEventListener("click", () => modelAction(action, model, version, b));
  return b;
}

function buildRows(models) {
  const body = $("#models tbody");
  body.replaceChildren();
  for (const m of models) {
    const tr = document.createElement("tr");
    tr.dataset.model = m.name;
    if (m.version) tr.dataset.version = m.version;
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = m.name;
    if (m.description) th.title = m.description;
    tr.append(th);
    cell(tr, m.version || "–");
    cell(tr, m.state + (m.reason ? ` (${m.reason})` : ""), "state");
    cell(tr, m.device || "–");
    cell(tr, m.precision || "–");
    cell(tr, m.memory_bytes !== undefined ? bytes(m.memory_bytes) : "–");
    cell(tr, ioText(m.inputs));
    cell(tr, ioText(m.outputs));
    cell(tr, m.load_s !== undefined && m.load_s !== null ? m.load_s.toFixed(2) + " s" : "–");
    cell(tr, "", "model-requests");
    cell(tr, "", "model-errors");
    cell(tr, "", "model-p50");
    cell(tr, "", "model-p99");
    cell(tr, "", "model-batches");
    const actions = cell(tr, "");
    if (m.state === "READY") {
      actions.append(actionButton("Try", m.name, "try", m.version));
      actions.append(actionButton("Reload", m.name, "load", m.version));
      actions.append(actionButton("Unload", m.name, "unload", m.version));
    } else {
      actions.append(actionButton("Load", m.name, "load"));
    }
    body.append(tr);
  }
}

function updateRows(models) {
  state.models = models;
  const key = models.map(rowKey).join("|");
  if (key !== state.rowKeys) {  // rows change only on load/unload: keep focus otherwise
    state.rowKeys = key;
    buildRows(models);
    fillModelSelect(models);
  }
  const rows = $("#models tbody").children;
  models.forEach((m, i) => {
    const tr = rows[i];
    const set = (metric, text) => {
      const td = tr.querySelector(`[data-metric="${metric}"]`);
      if (td && td.textContent !== text) td.textContent = text;
    };
    if (m.state !== "READY") return;
    set("model-requests", String(m.requests));
    set("model-errors", String(m.errors));
    set("model-p50", ms(m.p50_ms));
    set("model-p99", ms(m.p99_ms));
    const b = Object.entries(m.batch_sizes || {}).map(([k, v]) => `${k}: ${v}`).join(", ");
    set("model-batches", b || "–");
  });
  const demo = models.find((m) => m.state === "READY" && state.samplesByModel[m.name]);
  $("#demo-line").hidden = !demo;
}

async function refreshModels() {
  const resp = await api("/api/v1/dashboard/models");
  if (resp.ok) updateRows((await resp.json()).models);
}

async function modelAction(action, name, version, button) {
  if (action === "try") { chooseModel(name, version); $("#try-model").focus(); return; }
  const status = $("#action-status");
  const verb = action === "load" ? (version ? "Reloading" : "Loading") : "Unloading";
  status.textContent = `${verb} ${name}…`;
  button.disabled = true;
  const body = {model: name};
  if (version) body.version = version;
  try {
    const resp = await api(`/api/v1/models/${action}`, {
      method: "POST", body: JSON.stringify(body), headers: {"Content-Type": "application/json"},
    });
    status.textContent = resp.ok
      ? `${name}: ${action === "load" ? "ready" : "unloaded"}`
      : `${name}: ${action} failed (${resp.status}): ${await errorText(resp)}`;
    status.dataset.result = resp.ok ? "ok" : "error";
  } catch (e) {
    status.textContent = `${name}: ${action} failed: ${e.message}`;
    status.dataset.result = "error";
  }
  button.disabled = false;
  await refreshModels();
}

// -- live metrics --------------------------------------------------------------------------
function batchLabels(buckets) {  // upper bounds: the bar "8" counts runs of 5 to 8 rows
  return buckets.map((b) => `≤${b}`).concat([`>${buckets[buckets.length - 1]}`]);
}

function addSamples(list) {
  for (const s of list) {
    const last = state.samples[state.samples.length - 1];
    if (!last || s.t > last.t) state.samples.push(s);
  }
  const cut = Date.now() / 1000 - WINDOW_S - 5;
  while (state.samples.length && state.samples[0].t < cut) state.samples.shift();
}

function draw() {
  const s = state.samples;
  if (!s.length) return;
  const cur = s[s.length - 1];
  setMetric("requests", String(cur.req));
  setMetric("rps", cur.rps === null ? "–" : cur.rps.toFixed(1));
  const errs = Object.values(cur.err).reduce((a, b) => a + b, 0);
  setMetric("errors", String(errs));
  setMetric("errors-by-status",
    Object.entries(cur.err).map(([k, v]) => `${k}: ${v}`).join(", ") || "none");
  setMetric("latency", `${ms(cur.p50)} / ${ms(cur.p99)}`);
  setMetric("queue", `${cur.queue} queued, ${cur.in_flight} in flight`);
  setMetric("rss", bytes(cur.rss));
  setMetric("device-memory", cur.dev === null ? "no GPU in use" : bytes(cur.dev));
  const t1 = cur.t, t0 = t1 - WINDOW_S;
  const pts = (f) => s.map((x, i) => [x.t, f(x, i)]);
  const C = window.ZgCharts, chart = (n) => document.querySelector(`[data-chart="${n}"]`);
  C.drawLines(chart("rps"), [{cls: "k0", values: pts((x) => x.rps)}], t0, t1);
  C.drawLines(chart("latency"), ["p50", "p90", "p99"].map((p, i) =>
    ({cls: "k" + i, values: pts((x) => x[p])})), t0, t1);
  const errRate = (x, i) => {
    if (i === 0 || x.rps === null) return null;
    const sum = (o) => Object.values(o).reduce((a, b) => a + b, 0);
    return Math.max(sum(x.err) - sum(s[i - 1].err), 0) / Math.max(x.t - s[i - 1].t, 1e-3);
  };
  C.drawLines(chart("errors"), [{cls: "k2", values: pts(errRate)}], t0, t1);
  C.drawLines(chart("queue"), [{cls: "k0", values: pts((x) => x.queue)},
    {cls: "k1", values: pts((x) => x.in_flight)}], t0, t1);
  C.drawLines(chart("rss"), [{cls: "k0", values: pts((x) => x.rss / 1048576)}], t0, t1);
  const first = s.find((x) => x.t >= t0) || s[0];
  const labels = batchLabels(state.batchBuckets);
  C.drawBars(chart("batch"), cur.batch.map((n, i) => [labels[i], n - (first === cur ? 0 : first.batch[i])]));
}

function setConn(kind, text) {
  const c = $("#conn");
  c.dataset.state = kind;
  c.textContent = text;
}

function handleEvent(name, data) {
  if (name === "hello") {
    if (state.started !== null && data.started !== state.started) state.samples = [];  // restarted
    state.started = data.started;
    state.batchBuckets = data.batch_buckets;
    addSamples(data.history);
    updateRows(data.models);
    setConn("live", "live");
  } else if (name === "sample") {
    const models = data.models;
    delete data.models;
    addSamples([data]);
    updateRows(models);
  }
  draw();
}

// EventSource cannot send the API key header; fetch can, and reads the stream as it comes.
async function stream() {
  state.streamTimer = null;
  const last = state.samples[state.samples.length - 1];
  const since = last && state.started !== null ? last.t : 0;
  try {
    const resp = await api(`/api/v1/dashboard/events?since=${since}`);
    if (resp.status === 401 || resp.status === 403) {
      setConn("down", "an API key is needed: use the API key button");
      state.streamTimer = setTimeout(stream, 10000);  // or sooner, when a key is entered
      return;
    }
    if (!resp.ok) throw new Error(`${resp.status} ${await errorText(resp)}`);
    state.retryMs = 1000;
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += value;
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let name = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) name = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (data) handleEvent(name, JSON.parse(data));
      }
    }
    setConn("reconnecting", "reconnecting…");
  } catch (e) {
    setConn("down", `server unreachable; retrying (${e.message})`);
    state.retryMs = Math.min(state.retryMs * 2, 10000);
  }
  state.streamTimer = setTimeout(stream, state.retryMs);
}

// -- try it --------------------------------------------------------------------------------
function fillModelSelect(models) {
  const sel = $("#try-model");
  const prev = sel.value;
  sel.replaceChildren();
  for (const m of models) {
    if (m.state !== "READY") continue;
    const o = document.createElement("option");
    o.value = `${m.name}/${m.version}`;
    o.textContent = `${m.name} (version ${m.version})`;
    sel.append(o);
  }
  if ([...sel.options].some((o) => o.value === prev)) sel.value = prev;
  if (sel.value !== state.tryModel) buildTryForm();
}

function chooseModel(name, version) {
  $("#try-model").value = `${name}/${version}`;
  buildTryForm();
}

function currentModel() {
  const v = $("#try-model").value;
  return state.models.find((m) => `${m.name}/${m.version}` === v);
}

function buildTryForm() {
  const m = currentModel();
  state.tryModel = m ? `${m.name}/${m.version}` : null;
  const box = $("#try-inputs");
  box.replaceChildren();
  $("#try-outputs").replaceChildren();
  if (!m) return;
  const sample = state.samplesByModel[m.name];
  for (const spec of m.inputs) box.append(window.ZgInputs.field(spec, m, sample));
}

async function runTry(ev) {
  if (ev) ev.preventDefault();
  const m = currentModel();
  if (!m) return;
  const out = $("#try-outputs");
  let inputs;
  try {
    inputs = await Promise.all(m.inputs.map((spec) => window.ZgInputs.read(spec)));
  } catch (e) {
    out.replaceChildren(Object.assign(document.createElement("p"), {className: "error", textContent: e.message}));
    return;
  }
  const t0 = performance.now();
  const resp = await api(`/v2/models/${encodeURIComponent(m.name)}/versions/${m.version}/infer`, {
    method: "POST", body: JSON.stringify({inputs}), headers: {"Content-Type": "application/json"},
  });
  const took = performance.now() - t0;
  setMetric("try-latency", `${took.toFixed(1)} ms round trip`);
  if (!resp.ok) {
    out.replaceChildren(Object.assign(document.createElement("p"),
      {className: "error", textContent: `${resp.status}: ${await errorText(resp)}`}));
    return;
  }
  window.ZgInputs.showOutputs(out, (await resp.json()).outputs, m);
}

async function tryDemo() {
  const m = state.models.find((x) => x.state === "READY" && state.samplesByModel[x.name]);
  if (!m) return;
  chooseModel(m.name, m.version);
  $("#try").scrollIntoView();
  await runTry();
  $("#try-run").focus();
}

// -- start -----------------------------------------------------------------------------------
async function main() {
  $("#key-button").addEventListener("click", async () => {
    if (!(await askKey("Enter the server's API key."))) return;
    await refreshModels();
    if (state.streamTimer !== null) { clearTimeout(state.streamTimer); state.streamTimer = null; stream(); }
  });
  $("#try-model").addEventListener("change", buildTryForm);
  $("#try-form").addEventListener("submit", runTry);
  $("#demo-button").addEventListener("click", tryDemo);
  try {
    const r = await fetch("/dashboard/samples.json");
    if (r.ok) state.samplesByModel = await r.json();
  } catch (e) { /* samples are a convenience */ }
  await refreshModels().catch(() => setConn("down", "server unreachable"));
  stream();
}

document.addEventListener("DOMContentLoaded", main);
