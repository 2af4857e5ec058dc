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
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];

function drawChart(svg, series, title) {
  const W = 420, H = 220, L = 44, R = 10, T = 12, B = 28;
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const ns = "http://www.w3.org/2000/svg";
  const el = (name, attrs, text) => {
    const e = document.createElementNS(ns, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e);
    return e;
  };
  const pts = series.flatMap((s) => s.points.filter((p) => p[1] !== null && Number.isFinite(p[1])));
  if (!pts.length) { el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#777" }, "no epochs yet"); return; }
  let x0 = Math.min(...pts.map((p) => p[0])), x1 = Math.max(...pts.map((p) => p[0]));
  let y0 = Math.min(...pts.map((p) => p[1])), y1 = Math.max(...pts.map((p) => p[1]));
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= 1; y1 += 1; }
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
  el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999" });
  el("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#999" });
  el("text", { x: L - 4, y: T + 8, "text-anchor": "end", "font-size": 10 }, fmt(y1, 3));
  el("text", { x: L - 4, y: H - B, "text-anchor": "end", "font-size": 10 }, fmt(y0, 3));
  el("text", { x: L, y: H - 8, "font-size": 10 }, "epoch " + x0);
  el("text", { x: W - R, y: H - 8, "text-anchor": "end", "font-size": 10 }, "epoch " + x1);
  series.forEach((s, i) => {
    const p = s.points.filter((q) => q[1] !== null && Number.isFinite(q[1]));
    if (!p.length) return;
    el("polyline", { points: p.map((q) => sx(q[0]) + "," + sy(q[1])).join(" "), fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 2, "data-series": s.name });
    p.forEach((q) => el("circle", { cx: sx(q[0]), cy: sy(q[1]), r: 2.5, fill: COLORS[i % COLORS.length] }));
    el("text", { x: L + 6 + i * 90, y: T + 4, "font-size": 10, fill: COLORS[i % COLORS.length] }, s.name);
  });
  svg.setAttribute("data-points", String(pts.length));
  svg.setAttribute("aria-label", title + ": " + series.map((s) => s.name).join(", "));
}

// ------------------------------------------------------------------ polling
async function refreshStatus() {
  let st;
  try {
    st = await (await api("GET", `/train/${MODEL}/status`)).json();
    $("auth-error").textContent = "";
  } catch (e) { $("auth-error").textContent = e.message; return; }
  const task = st.task || {}, run = st.run || {};
  const hist = run.history || [];
  let text = `Task: ${task.status || "NONE"}.`;
  if (run.state) text += ` Run ${run.state}`;
  if (run.epoch !== undefined) text += `, epoch ${run.epoch}/${run.epochs}`;
  if (run.global_step !== undefined) text += `, step ${run.global_step}${run.total_steps ? "/" + run.total_steps : ""}`;
  if (run.eta_seconds !== undefined && task.status === "RUNNING") text += `, about ${Math.round(run.eta_seconds)} s left`;
  text += `. Served model version: ${st.served_version ?? "none"}.`;
  $("run-state").textContent = text;
  const total = run.total_steps || (run.epochs && run.steps_per_epoch ? run.epochs * run.steps_per_epoch : 0);
  $("run-progress").max = total || 1;
  $("run-progress").value = total ? Math.min(run.global_step || 0, total) : (run.state === "finished" ? 1 : 0);
  $("stop").disabled = task.status !== "RUNNING" && task.status !== "SUBMITTED";
  $("log").textContent = (task.details || []).join("\n");
  drawChart($("loss-chart"), ["loss_g", "loss_d", "loss_l1"].map((k) => ({ name: k, points: hist.map((h) => [h.epoch, h[k]]) })), "training losses");
  drawChart($("val-chart"), ["psnr_brain", "ssim_brain", "lesion_sensitivity"].map((k) => ({
    name: k === "psnr_brain" ? "PSNR brain /40" : k, points: hist.filter((h) => h.val).map((h) => [h.epoch, k === "psnr_brain" ? h.val[k] / 40 : h.val[k]]),
  })), "validation");
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

// a candidate is compared with the served version on lesions first (validation of each run; the demo has none)
function candidateWarning(val, servedVal) {
  if (val.lesion_sensitivity === undefined || servedVal.lesion_sensitivity === undefined) return "";
  if (val.lesion_sensitivity < servedVal.lesion_sensitivity) return " — WORSE on lesions than the served version";
  if ((val.lesions_darker || 0) > (servedVal.lesions_darker || 0)) return " — renders more lesions darker than the served version";
  return "";
}

async function refreshVersions() {
  let data;
  try { data = await (await api("GET", `/train/${MODEL}/versions`)).json(); } catch (e) { $("versions-error").textContent = e.message; return; }
  $("versions-error").textContent = "";
  const tbody = $("versions").querySelector("tbody");
  tbody.textContent = "";
  const servedVal = (data.versions.find((x) => x.served) || {}).validation || {};
  for (const v of data.versions) {
    const tr = document.createElement("tr");
    tr.id = "version-" + v.id;
    if (v.served) tr.className = "served";
    else if (v.candidate) tr.className = "candidate";
    const val = v.validation || {};
    const cells = [
      v.id === 0 ? "0 (demo)" : String(v.id), v.published || "shipped",
      v.train_cases ? `${v.train_cases.length}/${(v.val_cases || []).length}` : "–", v.steps ?? "–",
      fmt(val.psnr_brain, 2), val.lesion_sensitivity === undefined ? "–" : fmt(val.lesion_sensitivity, 2),
      v.served ? "serving" : (v.candidate ? "candidate: not served until promoted" + candidateWarning(val, servedVal) : ""),
    ];
    for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); }
    const td = document.createElement("td");
    if (!v.served) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = "Serve this version";
      b.setAttribute("aria-label", `Serve model version ${v.id}`);
      b.id = "promote-" + v.id;
      b.addEventListener("click", async () => {
        try { await api("POST", `/train/${MODEL}/versions/${v.id}/promote`); await refreshVersions(); await refreshStatus(); }
        catch (e) { $("versions-error").textContent = e.message; }
      });
      td.appendChild(b);
    }
    tr.appendChild(td);
    tbody.appendChild(tr);
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
    catch (e) { $("start-error").textContent = e.message.startsWith("409") ? "A run is already in progress (409): stop it or wait. " + e.message : e.message; }
  });
  $("stop").addEventListener("click", async () => {
    $("stop-error").textContent = "";
    try { await api("DELETE", "/train/"); await refreshStatus(); } catch (e) { $("stop-error").textContent = e.message; }
  });
  await refreshStatus();
  await refreshVersions();
  setInterval(refreshStatus, 2000);
  setInterval(refreshVersions, 5000);
});
