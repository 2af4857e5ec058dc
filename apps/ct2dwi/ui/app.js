// Training page of the CT-to-DWI server: plain JS, same origin, no external resources.
// Everything shown is read from the server (status.json of the run, versions, samples); nothing is recomputed here.
"use strict";

const MODEL = "ct2dwi";
const $ = (id) => document.getElementById(id);
let sampleUrl = null;
let lastSampleEpoch = null;

function token() { return sessionStorage.getItem("ct2dwi-token") || ""; }

// the server's root as seen by the browser: the page lives at <root>ui/, so a reverse proxy may mount the server
// under any path prefix (e.g. https://host/ct2dwi/) and every call stays relative to it
const ROOT = new URL("..", window.location.href).pathname;
function url(path) { return ROOT + path.replace(/^\//, ""); }

// the server's access token arrives once in the address (?token=..., printed at start-up when sign-in is off):
// keep it for this tab and take it out of the address bar and history
(function takeTokenFromAddress() {
  const u = new URL(window.location.href);
  const t = u.searchParams.get("token");
  if (t) {
    sessionStorage.setItem("ct2dwi-token", t);
    u.searchParams.delete("token");
    window.history.replaceState(null, "", u.pathname + u.search + u.hash);
  }
})();

async function api(method, path, body) {
  const headers = {};
  if (token()) headers["Authorization"] = "Bearer " + token();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(url(path), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 401) throw new Error("401: sign-in required or token invalid/expired — enter a token above");
  if (r.status === 403) throw new Error("403: your account lacks the role for this action");
  if (!r.ok) {
    let detail = r.statusText;
    try { const j = await r.json(); detail = typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail); } catch (e) { /* not JSON */ }
    throw new Error(r.status + ": " + detail);
  }
  return r;
}

function fmt(v, d) { return v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(d); }

// ------------------------------------------------------------------ charts (hand-written SVG)
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"];

// series: [{name, points: [[x, y]...], dashed}]; opts: {log: y on a log10 axis, x: axis name}
function drawChart(svg, series, title, opts = {}) {
  const W = 420, H = 220, L = 48, R = 10, T = 14, B = 28;
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const ns = "http://www.w3.org/2000/svg";
  const el = (name, attrs, text) => {
    const e = document.createElementNS(ns, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e);
    return e;
  };
  const ok = (q) => q[1] !== null && Number.isFinite(q[1]) && (!opts.log || q[1] > 0);
  const ty = (y) => (opts.log ? Math.log10(y) : y);
  const pts = series.flatMap((s) => s.points.filter(ok));
  svg.setAttribute("data-points", String(pts.length));
  svg.setAttribute("data-series", String(series.filter((s) => s.points.some(ok)).length));
  svg.setAttribute("data-log", opts.log ? "1" : "0");
  if (!pts.length) { el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#777" }, "nothing recorded yet"); return; }
  let x0 = Math.min(...pts.map((p) => p[0])), x1 = Math.max(...pts.map((p) => p[0]));
  let y0 = Math.min(...pts.map((p) => ty(p[1]))), y1 = Math.max(...pts.map((p) => ty(p[1])));
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= 1; y1 += 1; }
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => H - B - ((ty(y) - y0) / (y1 - y0)) * (H - T - B);
  const label = (v) => (opts.log ? Number(10 ** v).toPrecision(2) : fmt(v, 3));
  el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999" });
  el("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#999" });
  el("text", { x: L - 4, y: T + 8, "text-anchor": "end", "font-size": 10 }, label(y1));
  el("text", { x: L - 4, y: H - B, "text-anchor": "end", "font-size": 10 }, label(y0));
  if (opts.log) el("text", { x: 2, y: H / 2, "font-size": 9, fill: "#555" }, "log");
  el("text", { x: L, y: H - 8, "font-size": 10 }, `${opts.x || "epoch"} ${x0}`);
  el("text", { x: W - R, y: H - 8, "text-anchor": "end", "font-size": 10 }, `${opts.x || "epoch"} ${x1}`);
  series.forEach((s, i) => {
    const p = s.points.filter(ok);
    if (!p.length) return;
    const color = COLORS[i % COLORS.length];
    el("polyline", { points: p.map((q) => sx(q[0]) + "," + sy(q[1])).join(" "), fill: "none", stroke: color,
      "stroke-width": s.dashed ? 1.2 : 2, "stroke-dasharray": s.dashed ? "4 3" : "none", "data-series": s.name });
    if (p.length <= 60) p.forEach((q) => el("circle", { cx: sx(q[0]), cy: sy(q[1]), r: 2.2, fill: color }));
    el("text", { x: L + 6 + (i % 3) * 120, y: T + 4 + Math.floor(i / 3) * 11, "font-size": 9, fill: color }, s.name);
  });
  svg.setAttribute("aria-label", title + ": " + series.map((s) => s.name).join(", "));
}

// ------------------------------------------------------------------ polling
// what the run is doing, in words (the task is the server's process; the run is what the run folder says)
function describeRun(task, run, served) {
  const status = task.status;
  const where = () => {
    let t = "";
    if (run.epoch !== undefined) t += ` — epoch ${run.epoch} of ${run.epochs}`;
    if (run.global_step !== undefined) t += `, step ${run.global_step}${run.total_steps ? " of " + run.total_steps : ""}`;
    return t;
  };
  let text;
  if (status === "SUBMITTED") text = "Training is starting.";
  else if (status === "RUNNING") {
    text = "Training is running" + where();
    if (run.eta_seconds !== undefined) text += `, about ${Math.round(run.eta_seconds)} s left`;
    text += ".";
  } else if (status === "STOPPED") {
    text = "Training was stopped" + where() + ". The last completed epoch is kept: start again with “Resume the stopped run” to go on.";
  } else if (status === "DONE") {
    text = run.state === "stopped" ? "Training was stopped" + where() + "."
      : "Training finished" + where() + ". Its model is a candidate below: compare it with the served version and promote it if it is better.";
  } else if (status === "ERROR") {
    text = "Training failed" + where() + ". The served model is unchanged; the log below says why.";
  } else if (run.state) {
    const states = { finished: "finished", stopped: "was stopped", failed: "failed", starting: "was starting", running: "is still running in another process" };
    text = "No training run since the server started. The last run " + (states[run.state] || run.state) + where() + ".";
  } else text = "No training run yet.";
  if (run.stop_reason && (status === "STOPPED" || run.state === "stopped")) text += ` Why: ${run.stop_reason}.`;
  return text + ` Served model: version ${served ?? "none"}.`;
}

let earlierRuns = [];

function lossSeries(run, dashed, suffix) {
  const steps = run.steps || [];
  return ["loss_g", "loss_d", "loss_l1"].map((k, i) => ({ name: k + suffix, dashed, points: steps.map((s) => [s[0], s[i + 1]]) }));
}

function valSeries(hist, keys, dashed, suffix) {
  return keys.map((k) => ({ name: k + suffix, dashed, points: hist.filter((h) => h.val).map((h) => [h.epoch, h.val[k]]) }));
}

async function refreshStatus() {
  let st;
  try {
    st = await (await api("GET", `/train/${MODEL}/status`)).json();
    $("auth-error").textContent = "";
  } catch (e) { $("auth-error").textContent = e.message; return; }
  const task = st.task || {}, run = st.run || {};
  const hist = run.history || [];
  $("run-state").textContent = describeRun(task, run, st.served_version);
  $("run-state").setAttribute("data-task", task.status || "NONE");
  $("run-state").setAttribute("data-run", run.state || "none");
  const total = run.total_steps || (run.epochs && run.steps_per_epoch ? run.epochs * run.steps_per_epoch : 0);
  $("run-progress").max = total || 1;
  $("run-progress").value = total ? Math.min(run.global_step || 0, total) : (run.state === "finished" ? 1 : 0);
  $("stop").disabled = task.status !== "RUNNING" && task.status !== "SUBMITTED";
  $("log").textContent = (task.details || []).join("\n");
  const overlay = $("overlay").checked ? earlierRuns.filter((r) => r.id !== "current") : [];
  const log = $("log-scale").checked;
  drawChart($("loss-chart"), [...lossSeries(run, false, ""), ...overlay.flatMap((r) => lossSeries(r, true, " " + r.id).slice(0, 1))],
    "training losses per step", { log, x: "step" });
  const lesionKeys = ["lesion_sensitivity", "prob_sensitivity_at_2fp", "prob_ece"];
  drawChart($("val-chart"), [...valSeries(hist, lesionKeys, false, ""), ...overlay.flatMap((r) => valSeries(r.history, ["lesion_sensitivity"], true, " " + r.id))],
    "validation lesion metrics per epoch");
  drawChart($("psnr-chart"), [...valSeries(hist, ["psnr_brain"], false, ""), ...overlay.flatMap((r) => valSeries(r.history, ["psnr_brain"], true, " " + r.id))],
    "validation in-brain PSNR (dB) per epoch");
  $("tensorboard").disabled = !(run.history || []).length;
  const lastVal = hist.filter((h) => h.val).map((h) => h.epoch).pop();
  if (st.sample && lastVal !== lastSampleEpoch) {
    try {
      const blob = await (await api("GET", `/train/${MODEL}/sample.png`)).blob();
      if (sampleUrl) URL.revokeObjectURL(sampleUrl);
      sampleUrl = URL.createObjectURL(blob);
      $("sample").src = sampleUrl;
      $("sample").hidden = false;
      $("sample").setAttribute("data-epoch", String(lastVal));
      $("sample-none").hidden = true;
      lastSampleEpoch = lastVal;
    } catch (e) { /* next poll */ }
  }
}

async function refreshRuns() {
  try { earlierRuns = (await (await api("GET", `/train/${MODEL}/runs`)).json()).runs || []; } catch (e) { earlierRuns = []; }
  $("overlay-count").textContent = `(${earlierRuns.filter((r) => r.id !== "current").length} earlier)`;
}

// ------------------------------------------------------------------ versions: candidates beside the served version
const CMP_ROWS = [
  ["lesion_sensitivity", "lesions shown (all)", 2], ["qualifying_sensitivity", "qualifying lesions shown", 2],
  ["lesions_darker", "lesions darker than normal", 0], ["false_bright_ml", "false-bright mL / case", 1],
  ["psnr_brain", "in-brain PSNR dB", 2], ["ssim_brain", "in-brain SSIM", 3],
];

function comparisonTable(v) {
  const c = v.comparison || {};
  const wrap = document.createElement("div");
  wrap.className = "comparison";
  wrap.id = "comparison-" + v.id;
  const h = document.createElement("h3");
  h.textContent = `Candidate version ${v.id} beside the served version` + (c.served ? ` ${c.served.version}` : "");
  wrap.appendChild(h);
  if (!c.candidate) {
    const p = document.createElement("p");
    p.textContent = c.note || "Not compared yet.";
    wrap.appendChild(p);
    return wrap;
  }
  const t = document.createElement("table");
  const cap = document.createElement("caption");
  cap.textContent = `On the same ${c.cases.length} validation case(s) (${c.cases.join(", ")}), ${c.time}; lesion metrics first.`;
  t.appendChild(cap);
  const head = t.createTHead().insertRow();
  for (const x of ["measure", `candidate v${v.id}`, `served v${c.served ? c.served.version : "–"}`]) {
    const th = document.createElement("th"); th.scope = "col"; th.textContent = x; head.appendChild(th);
  }
  const body = t.createTBody();
  for (const [k, label, d] of CMP_ROWS) {
    const r = body.insertRow();
    r.insertCell().textContent = label;
    r.insertCell().textContent = fmt(c.candidate[k], d);
    r.insertCell().textContent = c.served ? fmt(c.served[k], d) : "–";
  }
  wrap.appendChild(t);
  const w = document.createElement("p");
  w.className = (c.worse_on_lesions || []).length ? "warning" : "ok";
  w.setAttribute("role", (c.worse_on_lesions || []).length ? "alert" : "status");
  w.textContent = (c.worse_on_lesions || []).length
    ? "WARNING: the candidate is worse on lesions than the served version: " + c.worse_on_lesions.join("; ") + ". Promoting it needs a confirmation."
    : "The candidate is not worse on lesions than the served version on these cases.";
  wrap.appendChild(w);
  return wrap;
}

async function promote(v) {
  const worse = ((v.comparison || {}).worse_on_lesions || []);
  let query = "";
  if (v.candidate && worse.length) {
    if (!window.confirm(`Version ${v.id} is worse on lesions than the served version:\n${worse.join("\n")}\n\nServe it anyway?`)) return;
    query = "?confirm=true";
  }
  await api("POST", `/train/${MODEL}/versions/${v.id}/promote${query}`);
}

async function refreshVersions() {
  let data;
  try { data = await (await api("GET", `/train/${MODEL}/versions`)).json(); } catch (e) { $("versions-error").textContent = e.message; return; }
  $("versions-error").textContent = "";
  const tbody = $("versions").querySelector("tbody");
  tbody.textContent = "";
  const panels = $("comparisons");
  panels.textContent = "";
  // a version that is not a candidate shows its own numbers from the newest comparison it took part in (as the
  // served side), so the served version - the demo included - is never a row of dashes once anything was compared
  const asServed = {};
  for (const x of data.versions) {
    const c = x.comparison || {};
    if (c.served && (!asServed[c.served.version] || asServed[c.served.version].time < c.time)) {
      asServed[c.served.version] = { ...c.served, time: c.time, cases: c.cases };
    }
  }
  for (const v of data.versions) {
    const tr = document.createElement("tr");
    tr.id = "version-" + v.id;
    if (v.served) tr.className = "served";
    else if (v.candidate) tr.className = "candidate";
    const c = v.comparison || {};
    const worse = (c.worse_on_lesions || []).length;
    const cells = [
      v.id === 0 ? "0 (demo)" : String(v.id), v.published || "shipped", v.source || (v.train_cases ? "training run" : "–"),
      v.train_cases ? `${v.train_cases.length}/${(v.val_cases || []).length}` : "–", v.steps ?? "–",
      c.candidate ? `${fmt(c.candidate.lesion_sensitivity, 2)} vs ${fmt((c.served || {}).lesion_sensitivity, 2)}`
        : (asServed[v.id] ? fmt(asServed[v.id].lesion_sensitivity, 2) + " (as compared)" : "–"),
      c.candidate ? `${fmt(c.candidate.psnr_brain, 2)} vs ${fmt((c.served || {}).psnr_brain, 2)}`
        : (asServed[v.id] ? fmt(asServed[v.id].psnr_brain, 2) + " (as compared)" : "–"),
      v.served ? "serving" : (v.candidate ? "candidate: not served until promoted" + (worse ? " — WORSE on lesions" : "") : ""),
    ];
    for (const x of cells) { const td = document.createElement("td"); td.textContent = x; tr.appendChild(td); }
    const td = document.createElement("td");
    if (!v.served) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = "Serve this version";
      b.setAttribute("aria-label", `Serve model version ${v.id}`);
      b.id = "promote-" + v.id;
      b.addEventListener("click", async () => {
        try { await promote(v); await refreshVersions(); await refreshStatus(); }
        catch (e) { $("versions-error").textContent = e.message; }
      });
      td.appendChild(b);
    }
    tr.appendChild(td);
    tbody.appendChild(tr);
    if (v.candidate) panels.appendChild(comparisonTable(v));
  }
}

// ------------------------------------------------------------------ actions
function startOptions() {
  const num = (id) => { const s = $(id).value.trim(); const n = Number(s); return s === "" || Number.isNaN(n) ? s : n; };
  return {
    epochs: num("epochs"), batch_size: num("batch_size"), lr: num("lr"), max_steps_per_epoch: num("max_steps_per_epoch"),
    val_fraction: num("val_fraction"), device: $("device").value.trim(), fine_tune: $("fine_tune").checked, resume: $("resume").checked,
    multi_gpu: $("multi_gpu").checked, gpus: $("gpus").value.trim(), nproc_per_node: num("nproc_per_node"),
  };
}

document.addEventListener("DOMContentLoaded", async () => {
  try {
    const a = await (await fetch(url("/auth/"))).json();
    $("auth-state").textContent = a.enabled ? `This server requires a bearer token from ${a.realm}.` : "Authentication is off on this server (local use): changes use the access token from the address this page was opened with.";
  } catch (e) { $("auth-state").textContent = "Cannot reach the server."; }
  $("token").value = token();
  $("token-form").addEventListener("submit", (ev) => { ev.preventDefault(); sessionStorage.setItem("ct2dwi-token", $("token").value.trim()); refreshStatus(); refreshVersions(); });
  $("token-clear").addEventListener("click", () => { sessionStorage.removeItem("ct2dwi-token"); $("token").value = ""; });
  $("start-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("start-error").textContent = "";
    try { await api("POST", `/train/${MODEL}`, startOptions()); lastSampleEpoch = null; await refreshStatus(); }
    catch (e) { $("start-error").textContent = e.message.startsWith("409") ? "Not started: " + e.message.replace(/^409: /, "") : e.message; }
  });
  $("overlay").addEventListener("change", async () => { await refreshRuns(); await refreshStatus(); });
  $("log-scale").addEventListener("change", refreshStatus);
  $("tensorboard").addEventListener("click", async () => {
    $("tensorboard-error").textContent = "";
    try {
      const blob = await (await api("GET", `/train/${MODEL}/tensorboard.tar.gz`)).blob();
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = "ct2dwi_tensorboard.tar.gz";
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    } catch (e) { $("tensorboard-error").textContent = e.message; }
  });
  $("publish-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("publish-error").textContent = "";
    const f = $("model-file").files[0];
    if (!f) { $("publish-error").textContent = "Choose a model file first."; return; }
    const form = new FormData();
    form.append("model", f, f.name);
    const headers = token() ? { Authorization: "Bearer " + token() } : {};
    $("publish-state").textContent = "Checking and comparing the model with the served version…";
    try {
      const r = await fetch(url(`/train/${MODEL}/versions`), { method: "POST", headers, body: form });
      const j = await r.json();
      if (!r.ok) throw new Error(r.status + ": " + (typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail)));
      $("publish-state").textContent = `Published as candidate version ${j.version} (${j.format}); compare it below before serving it.`;
      await refreshVersions();
    } catch (e) { $("publish-state").textContent = ""; $("publish-error").textContent = e.message; }
  });
  $("stop").addEventListener("click", async () => {
    $("stop-error").textContent = "";
    try { await api("DELETE", "/train/"); await refreshStatus(); } catch (e) { $("stop-error").textContent = e.message; }
  });
  await refreshRuns();
  await refreshStatus();
  await refreshVersions();
  setInterval(refreshStatus, 2000);
  setInterval(refreshVersions, 5000);
  setInterval(refreshRuns, 15000);
});
