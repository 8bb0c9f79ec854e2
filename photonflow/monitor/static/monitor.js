// photonflow monitor: polls api/runs and api/runs/{id} every data-interval seconds and updates the
// page in place. Values go in with textContent only (nothing from a run is parsed as HTML). Each
// plot <img> gets data-loaded="1", data-shown (its URL) and data-version (the run's data signature) once loaded,
// data-loaded="error" and a caption with the server's message when it cannot be drawn (tried again
// on a later poll, backing off).
//
// One poll at a time: a poll asked for while one is under way (the slider, a new #run=) runs right
// after it; an answer about a run that is no longer the selected one is dropped.
"use strict";

const INTERVAL_MS = 1000 * (parseFloat(document.body.dataset.interval) || 2);
const SLIDER_DEBOUNCE_MS = 250;
const MAX_BACKOFF_MS = 30000;
const $ = (id) => document.getElementById(id);
let timer = null;
let sliderTimer = null;
let busy = false;
let again = false;
let curveSel = 0;
let curveSelTouched = false;

function selectedId() {
  const m = location.hash.match(/run=([^&]+)/);
  if (!m) return null;
  try { return decodeURIComponent(m[1]); } catch (e) { return m[1]; }  // a malformed %-escape: as written
}

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store", credentials: "same-origin" });
  let body = null;
  try { body = await r.json(); } catch (e) { throw new Error(`${url}: HTTP ${r.status} (not JSON)`); }
  if (!r.ok) {
    const err = new Error((body && body.error) || `HTTP ${r.status}`);
    err.status = r.status;
    throw err;
  }
  return body;
}

function fmt(v, digits = 3) {
  if (v === null || v === undefined || (typeof v === "number" && !isFinite(v))) return "—";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(digits - 1) : v.toPrecision(digits);
}

function setValue(id, v, text) {
  const el = $(id);
  if (!el) return;
  el.textContent = text !== undefined ? text : fmt(v);
  el.dataset.value = v === null || v === undefined ? "" : String(v);
}

function setStatus(state, text) {
  const el = $("status");
  el.dataset.state = state;
  el.textContent = text;
}

function showMessage(text) {
  const el = $("message");
  if (text) { el.textContent = text; el.hidden = false; } else { el.textContent = ""; el.hidden = true; }
}

function renderList(list) {
  const ul = $("runs");
  const current = selectedId();
  $("runs-empty").hidden = list.runs.length > 0;
  const items = list.runs.map((r) => {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = "#run=" + encodeURIComponent(r.id);
    a.dataset.runId = r.id;
    a.dataset.state = r.state;
    if (r.id === current) a.className = "selected";
    a.textContent = r.name;
    const sub = document.createElement("span");
    sub.className = "sub";
    const total = r.total === null || r.total === undefined ? "?" : r.total;
    sub.textContent = `${r.kind || "?"} · ${r.state} · ${r.done}/${total} ${r.unit || ""}` + (r.failed ? ` · ${r.failed} failed` : "");
    a.appendChild(sub);
    li.appendChild(a);
    return li;
  });
  ul.replaceChildren(...items);
}

function plotUrl(run, name, extra) {
  let url = `api/runs/${encodeURIComponent(run.id)}/plot/${name}?v=${encodeURIComponent(run.signature)}`;
  if (extra) url += "&" + extra;
  return url;
}

function setPlot(run, name, extra) {
  const img = $("plot-" + name);
  if (!img) return;
  const fig = img.closest("figure");
  const available = run.plots.includes(name);
  fig.hidden = !available;
  if (!available) return;
  const url = plotUrl(run, name, extra);
  // one request at a time per plot: while one is drawn, newer data wait for the next poll (a plot
  // slower than the polling interval still shows, and updates as fast as it can be drawn)
  if (img.dataset.url === url || img.dataset.inflight === "1") return;
  // a plot that failed: the same URL again only after a back-off (a new URL, i.e. new data, at once)
  if (img.dataset.failedUrl === url && Date.now() < Number(img.dataset.retryAt || 0)) return;
  img.dataset.inflight = "1";
  img.dataset.url = url;
  const box = $("run");
  // one request: the picture, or the server's message about why there is none
  fetch(url, { credentials: "same-origin" }).then(async (r) => {
    if (!r.ok) {
      let text = `HTTP ${r.status}`;
      try { const body = await r.json(); if (body && body.error) text = body.error; } catch (e) { /* not JSON */ }
      throw new Error(text);
    }
    return r.blob();
  }).then((blob) => new Promise((resolve, reject) => {
    if (img.dataset.url !== url || box.dataset.runId !== run.id) { resolve(); return; }  // another run meanwhile
    const old = img.dataset.objectUrl;
    const objectUrl = URL.createObjectURL(blob);
    img.onload = () => {
      img.onload = img.onerror = null;
      if (old) URL.revokeObjectURL(old);
      if (img.dataset.url === url) {
        img.dataset.inflight = "0";
        img.dataset.shown = url;
        img.dataset.loaded = "1";
        img.dataset.version = run.signature;
        img.dataset.failures = "0";
        delete img.dataset.failedUrl;
        fig.querySelector("figcaption").textContent = "";
      }
      resolve();
    };
    img.onerror = () => { img.onload = img.onerror = null; reject(new Error("the image cannot be shown")); };
    img.src = objectUrl;  // the old plot stays until the new one is decoded
    img.dataset.objectUrl = objectUrl;
  })).catch((e) => {
    if (img.dataset.url !== url) return;
    const failures = (parseInt(img.dataset.failures || "0", 10) || 0) + 1;
    img.dataset.failures = String(failures);
    img.dataset.failedUrl = url;
    img.dataset.retryAt = String(Date.now() + Math.min(MAX_BACKOFF_MS, INTERVAL_MS * 2 ** (failures - 1)));
    delete img.dataset.url;  // asked again on a later poll
    img.dataset.inflight = "0";
    img.dataset.loaded = "error";
    fig.querySelector("figcaption").textContent = `${name}: ${e.message}`;
  });
}

function renderChunks(id, states) {
  const row = $(id);
  const spans = (states || []).map((s, k) => {
    const span = document.createElement("span");
    span.className = "chunk chunk-" + (["done", "failed", "pending"].includes(s) ? s : "pending");
    span.title = `chunk ${k}: ${s}`;
    return span;
  });
  row.replaceChildren(...spans);
  row.dataset.done = String((states || []).filter((s) => s === "done").length);
  row.dataset.total = String((states || []).length);
}

function renderRun(run) {
  showMessage(run.message || "");
  const box = $("run");
  if (box.dataset.runId !== run.id) {  // another run: forget the plots of the previous one
    for (const img of box.querySelectorAll("figure img")) {
      img.removeAttribute("src");
      if (img.dataset.objectUrl) URL.revokeObjectURL(img.dataset.objectUrl);
      for (const k of ["url", "shown", "inflight", "loaded", "version", "objectUrl", "failures", "failedUrl", "retryAt"]) {
        delete img.dataset[k];
      }
      img.closest("figure").querySelector("figcaption").textContent = "";
    }
  }
  box.hidden = false;
  box.dataset.runId = run.id;
  box.dataset.state = run.state;
  box.dataset.kind = run.kind || "";
  box.dataset.signature = run.signature;
  $("run-name").textContent = run.name;
  $("run-kind").textContent = run.kind || "unknown kind";
  $("run-state").textContent = run.state;
  $("run-state").dataset.state = run.state;
  const times = [];
  if (run.started) times.push("started " + new Date(run.started).toLocaleString());
  if (run.finished) times.push("finished " + new Date(run.finished).toLocaleString());
  else if (run.updated) times.push("updated " + new Date(run.updated).toLocaleString());
  if (run.elapsed_s !== null && run.elapsed_s !== undefined) times.push(`${fmt(run.elapsed_s)} s`);
  $("run-times").textContent = times.join(" · ");
  const link = $("prefect-link");
  const prefect = run.prefect || {};
  link.hidden = !prefect.url;
  if (prefect.url) {
    link.href = prefect.url;
    link.textContent = "Prefect flow run" + (prefect.flow_run_name ? ` ${prefect.flow_run_name}` : "");
  }
  const runText = $("prefect-run");
  runText.dataset.flowRunId = prefect.flow_run_id || "";
  runText.textContent = prefect.flow_run_id
    ? (prefect.url ? "" : `Prefect flow run ${prefect.flow_run_name || ""} `) + `(id ${prefect.flow_run_id})` : "";
  $("notes").replaceChildren(...(run.notes || []).map((n) => { const li = document.createElement("li"); li.textContent = n; return li; }));
  const unit = run.unit || "frames";
  setValue("n-arrived", run.arrived);
  setValue("n-done", run.done);
  setValue("n-failed", run.failed);
  setValue("n-skipped", run.skipped);
  setValue("n-total", run.total);
  const rate = run.rate_recent_per_s !== null && run.rate_recent_per_s !== undefined ? run.rate_recent_per_s : run.rate_per_s;
  setValue("n-rate", rate, rate === null || rate === undefined ? "—" : `${fmt(rate)} ${unit}/s`);
  setPlot(run, "progress");

  for (const k of ["saxs", "sfx", "laue", "tomo"]) $("kind-" + k).hidden = true;
  if (run.saxs) {
    const s = run.saxs;
    $("kind-saxs").hidden = false;
    setValue("saxs-frames", s.frames);
    setValue("saxs-curves", s.curves, s.curves_total > s.curves && s.curve_integration
      ? `${s.curves} (${s.curve_integration}; ${s.curves_total} in all)` : undefined);
    setValue("saxs-i0", s.latest && s.latest.I0);
    setValue("saxs-i2", s.latest && s.latest.I2);
    setValue("saxs-xi", s.latest && s.latest.correlation_length_nm);
    const range = $("curve-sel");
    range.max = String(Math.max(0, s.curves - 1));
    if (!curveSelTouched) curveSel = 0;
    curveSel = Math.min(curveSel, Math.max(0, s.curves - 1));
    range.value = String(curveSel);
    $("curve-sel-label").textContent = `#${curveSel}`;
    // the slider numbers the curves of the newest curve's integration: the plot is asked for that one
    const integ = s.curve_integration === null || s.curve_integration === undefined
      ? "" : "&integration=" + encodeURIComponent(s.curve_integration);
    setPlot(run, "saxs-curve", "sel=" + curveSel + integ);
    setPlot(run, "saxs-params");
  }
  if (run.sfx) {
    const s = run.sfx;
    $("kind-sfx").hidden = false;
    setValue("sfx-frames", s.frames);
    setValue("sfx-hits", s.hits);
    setValue("sfx-rate", s.hit_rate_percent, s.hit_rate_percent === null ? "—" : `${fmt(s.hit_rate_percent)} %`);
    setValue("sfx-rate-recent", s.recent_hit_rate_percent,
      s.recent_hit_rate_percent === null ? "—" : `${fmt(s.recent_hit_rate_percent)} %`);
    setValue("sfx-peaks", s.mean_peaks_per_frame);
    setPlot(run, "sfx-hits");
    setPlot(run, "sfx-latest-hit");
  }
  if (run.laue) {
    const s = run.laue;
    $("kind-laue").hidden = false;
    setValue("laue-images", s.images);
    setValue("laue-spots", s.spots);
    setValue("laue-good", s.good_spots);
    setValue("laue-sim", s.mean_sim);
    setValue("laue-shape", s.map_shape ? s.map_shape.join(" × ") : null, s.map_shape ? s.map_shape.join(" × ") : "—");
    setPlot(run, "laue-maps");
  }
  if (run.tomo) {
    const s = run.tomo;
    $("kind-tomo").hidden = false;
    setValue("tomo-stage", s.stage || run.state);
    const chunks = run.chunks || {};
    for (const p of ["pass1", "pass2"]) {
      renderChunks("chunks-" + p, chunks[p]);
      const c = s.chunks[p] || { done: 0, total: 0, failed: 0 };
      $("chunks-" + p + "-count").textContent = ` ${c.done}/${c.total} done` + (c.failed ? `, ${c.failed} failed` : "");
    }
    const report = $("tomo-report");
    report.hidden = !s.report;
    if (s.report) report.href = `files/${encodeURIComponent(run.id)}/report.pdf`;
    setPlot(run, "tomo-slices");
  }
  $("files").replaceChildren(...(run.files || []).map((f) => {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = f.url.replace(/^\//, "");
    a.textContent = f.name;
    a.target = "_blank";
    a.rel = "noopener";
    li.appendChild(a);
    return li;
  }));
}

function clearRun() {
  $("run").hidden = true;
  $("run").dataset.runId = "";
}

function schedule(delay) {
  clearTimeout(timer);
  timer = setTimeout(tick, delay);
}

async function tick() {
  if (busy) { again = true; return; }  // single flight: once more right after the poll under way
  busy = true;
  clearTimeout(timer);
  timer = null;
  try {
    await poll();
  } finally {
    busy = false;
    if (again) { again = false; schedule(0); } else schedule(INTERVAL_MS);
  }
}

async function poll() {
  try {
    const list = await getJSON("api/runs");
    let id = selectedId();
    if (id && !list.runs.some((r) => r.id === id)) {  // #run=NAME: the run whose directory is named so
      const named = list.runs.find((r) => r.name === id || String(r.name).endsWith("/" + id));
      if (named) id = named.id;
      if (named) history.replaceState(null, "", "#run=" + encodeURIComponent(id));
    }
    if (!id && list.runs.length) {
      id = list.runs[0].id;
      history.replaceState(null, "", "#run=" + encodeURIComponent(id));
    }
    renderList(list);
    if (id) {
      try {
        const run = await getJSON("api/runs/" + encodeURIComponent(id));
        if (selectedId() !== id) return;  // another run was picked meanwhile: its poll is queued
        renderRun(run);
      } catch (e) {
        if (selectedId() !== id) return;
        clearRun();
        showMessage(e.status ? e.message : `cannot read run ${id}: ${e.message}`);
      }
    } else {
      clearRun();
      showMessage("");
    }
    setStatus("ok", "updated " + new Date().toLocaleTimeString());
    document.body.dataset.polls = String((parseInt(document.body.dataset.polls || "0", 10) || 0) + 1);
  } catch (e) {
    setStatus("error", "monitor not reachable: " + e.message);
  }
}

window.addEventListener("hashchange", () => { curveSelTouched = false; tick(); });
$("curve-sel").addEventListener("input", (ev) => {
  curveSelTouched = true;
  curveSel = parseInt(ev.target.value, 10) || 0;
  $("curve-sel-label").textContent = `#${curveSel}`;
  clearTimeout(sliderTimer);  // dragging the slider asks for one plot when it rests, not one per step
  sliderTimer = setTimeout(tick, SLIDER_DEBOUNCE_MS);
});
tick();
