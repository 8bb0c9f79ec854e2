// photonflow monitor: polls api/runs and api/runs/{id} every data-interval seconds and updates the
// page in place. Values go in with textContent only (nothing from a run is parsed as HTML). Each
// plot <img> gets data-loaded="1", data-shown (its URL) and data-version (the run's data signature) once loaded,
// data-loaded="error" and a caption with the server's message when it cannot be drawn.
"use strict";

const INTERVAL_MS = 1000 * (parseFloat(document.body.dataset.interval) || 2);
const $ = (id) => document.getElementById(id);
let timer = null;
let curveSel = 0;
let curveSelTouched = false;

function selectedId() {
  const m = location.hash.match(/run=([^&]+)/);
  return m ? decodeURIComponent(m[1]) : null;
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
  img.dataset.inflight = "1";
  img.dataset.url = url;
  const probe = new Image();  // swap only when loaded: no flicker, and the old plot stays on an error
  probe.onload = () => {
    if (img.dataset.url !== url) return;  // another run was selected meanwhile
    img.dataset.inflight = "0";
    img.src = probe.src;
    img.dataset.shown = url;
    img.dataset.loaded = "1";
    img.dataset.version = run.signature;
    fig.querySelector("figcaption").textContent = "";
  };
  probe.onerror = async () => {
    let text = `${name}: not available`;
    try { await getJSON(url); } catch (e) { text = `${name}: ${e.message}`; }
    if (img.dataset.url !== url) return;
    img.dataset.inflight = "0";
    img.dataset.loaded = "error";
    fig.querySelector("figcaption").textContent = text;
  };
  probe.src = url;
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
      for (const k of ["url", "shown", "inflight", "loaded", "version"]) delete img.dataset[k];
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
    setValue("saxs-curves", s.curves);
    setValue("saxs-i0", s.latest && s.latest.I0);
    setValue("saxs-i2", s.latest && s.latest.I2);
    setValue("saxs-xi", s.latest && s.latest.correlation_length_nm);
    const range = $("curve-sel");
    range.max = String(Math.max(0, s.curves - 1));
    if (!curveSelTouched) curveSel = 0;
    curveSel = Math.min(curveSel, Math.max(0, s.curves - 1));
    range.value = String(curveSel);
    $("curve-sel-label").textContent = `#${curveSel}`;
    setPlot(run, "saxs-curve", "sel=" + curveSel);
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

async function tick() {
  clearTimeout(timer);
  try {
    const list = await getJSON("api/runs");
    let id = selectedId();
    if (id && !list.runs.some((r) => r.id === id)) {  // #run=NAME: the run whose directory is named so
      const named = list.runs.find((r) => r.name === id || r.name.endsWith("/" + id));
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
        renderRun(run);
      } catch (e) {
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
  } finally {
    timer = setTimeout(tick, INTERVAL_MS);
  }
}

window.addEventListener("hashchange", () => { curveSelTouched = false; tick(); });
$("curve-sel").addEventListener("input", (ev) => {
  curveSelTouched = true;
  curveSel = parseInt(ev.target.value, 10) || 0;
  $("curve-sel-label").textContent = `#${curveSel}`;
  tick();
});
tick();
