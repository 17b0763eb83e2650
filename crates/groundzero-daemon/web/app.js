// The journey page: vanilla JS, no build step. Reads the daemon's API with the bearer token
// (from #token=… or the form), and follows /v1/journey/events with fetch (EventSource cannot
// send headers). DOM updates are batched per animation frame and lists are capped, so the page
// stays readable at thousands of packets per second.
"use strict";

const $ = (s) => document.querySelector(s);
let token = sessionStorage.getItem("gz-token") || "";
const m = location.hash.match(/token=([^&]+)/);
if (m) {
  token = decodeURIComponent(m[1]);
  sessionStorage.setItem("gz-token", token);
  history.replaceState(null, "", location.pathname); // keep the token out of the address bar
}

async function api(method, path, body) {
  const r = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || `HTTP ${r.status}`);
  return data;
}

const fmtUs = (ns) => (ns >= 1e6 ? `${(ns / 1e6).toFixed(2)} ms` : `${(ns / 1e3).toFixed(1)} µs`);
const fmtPps = (x, est) => {
  const s = x >= 1e6 ? `${(x / 1e6).toFixed(2)}M` : x >= 1e3 ? `${(x / 1e3).toFixed(1)}k` : `${Math.round(x)}`;
  return `${est ? "~" : ""}${s} pps`;
};
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

// ---- flowchart -------------------------------------------------------------------------
const NODES = {
  nic: [20, 100, "NIC"], xdp: [170, 100, "XDP hook"], drop: [350, 20, "XDP_DROP"],
  pass: [350, 180, "XDP_PASS"], stack: [530, 180, "TCP/IP stack"], socket: [710, 180, "socket"],
  app: [870, 180, "application"], kdrop: [710, 20, "kernel drop"],
};
const EDGES = [
  ["nic", "xdp", "seen_pps", false], ["xdp", "drop", "dropped_pps", false], ["xdp", "pass", "passed_pps", false],
  ["pass", "stack", "stack_pps", true], ["stack", "socket", "socket_pps", true], ["socket", "app", "app_pps", true],
  ["stack", "kdrop", "kernel_dropped_pps", true],
];
function drawFlow() {
  const svg = $("#flow");
  let h = `<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0L10,5L0,10z" fill="#539bf5"/></marker></defs>`;
  for (const [a, b, key] of EDGES) {
    const [x1, y1] = NODES[a], [x2, y2] = NODES[b];
    const sx = x1 + 110, sy = y1 + 22, ex = x2, ey = y2 + 22;
    h += `<path class="edge${b.includes("drop") ? " drop" : ""}" d="M${sx},${sy} C${(sx + ex) / 2},${sy} ${(sx + ex) / 2},${ey} ${ex},${ey}"/>`;
    // A short edge has no room for its label between the boxes. Along a row it goes above them;
    // a short edge that climbs to another row (stack → kernel drop) starts where the stack → socket
    // label sits, so its label goes left of the curve's middle instead.
    const short = ex - sx < 100;
    const [lx, ly, anchor] = !short ? [(sx + ex) / 2, (sy + ey) / 2 - 6, "middle"]
      : sy === ey ? [(sx + ex) / 2, y1 - 8, "middle"]
      : [(sx + ex) / 2 - 8, (sy + ey) / 2 + 4, "end"];
    h += `<text class="rate" id="rate-${key}" text-anchor="${anchor}" x="${lx}" y="${ly}">–</text>`;
  }
  for (const [id, [x, y, label]] of Object.entries(NODES)) {
    const cls = id.includes("drop") ? "drop" : id === "pass" || id === "app" ? "pass" : "";
    h += `<g class="node ${cls}" id="node-${id}"><rect x="${x}" y="${y}" width="110" height="44"/><text x="${x + 55}" y="${y + 27}" text-anchor="middle">${label}</text></g>`;
  }
  svg.innerHTML = h;
}

// ---- state and batched rendering ----------------------------------------------------------
let summary = null;
const journeys = []; // newest first, capped
const MAX_ROWS = 200;
let dirty = false;
let selected = null;
// The rows as last drawn: new journeys arrive (unshift) between frames, so a click must be
// resolved against what the user saw, not against the live array.
let shown = [];
function schedule() {
  if (!dirty) { dirty = true; requestAnimationFrame(render); }
}

function render() {
  dirty = false;
  if (summary) renderSummary(summary);
  const tbody = $("#journeys tbody");
  shown = journeys.slice();
  tbody.innerHTML = shown.map((j, i) =>
    `<tr data-i="${i}" class="${selected === j ? "sel" : ""}"><td>${new Date(j.unix_ms).toLocaleTimeString()}</td><td>${esc(j.protocol)}</td><td>${esc(j.src)}</td><td>${esc(j.dst)}</td><td class="o-${j.outcome}">${esc(j.outcome)}</td><td>${fmtUs(j.total_ns)}</td></tr>`
  ).join("");
}

function renderSummary(s) {
  const t = s.tracing;
  const missing = (t.stages_missing || []).map((m) => m.hook).join(", ");
  $("#status").textContent = t.enabled
    ? `tracing 1 in ${t.sample_every} (${t.filter})${missing ? ` · not observable here: ${missing}` : ""}`
    : "journey tracing is off (PUT /v1/journey or [journey] enabled = true)";
  $("#status").className = t.enabled ? "ok" : "bad";
  $("#status").title = (t.stages_missing || []).map((m) => `${m.stage} at ${m.hook}: ${m.why}`).join("\n");
  for (const [, , key, est] of EDGES) {
    const el = document.getElementById(`rate-${key}`);
    if (el) el.textContent = fmtPps(s.rates[key] || 0, est);
  }
  $("#stages tbody").innerHTML = s.stages.map((x) =>
    `<tr><td>${esc(x.label)}</td><td>${x.count}</td><td>${fmtUs(x.p50_ns)}</td><td>${fmtUs(x.p99_ns)}</td></tr>`).join("");
  $("#outcomes").innerHTML = Object.entries(s.outcomes).map(([k, v]) => `<li class="o-${k}">${k}: <b>${v}</b></li>`).join("");
  $("#kdrops").innerHTML = (s.kernel_drop_reasons || []).map((d) => `<li>${esc(d.reason)}: ${d.count}</li>`).join("") || "<li class=muted>none</li>";
  const c = s.cost;
  $("#cost").innerHTML = !c ? "<li class=muted>measuring…</li>" :
    `<li>XDP program: <b>${c.xdp_ns_per_packet == null ? "no packets" : `${c.xdp_ns_per_packet} ns`}</b> per packet</li>` +
    `<li>tracing observers: <b>${c.observers_cpu_ms_per_s} ms</b> of CPU per second` +
    (c.observers_ns_per_run == null ? "" : ` (${c.observers_runs_per_s} runs/s × ${c.observers_ns_per_run} ns)`) + `</li>`;
  $("#skipped").textContent = s.journeys_skipped ? `(${s.journeys_skipped} not streamed to keep up)` : "";
  drawTimeline(s);
}

function drawTimeline(s) {
  const cum = Object.fromEntries((s.cumulative || []).map((c) => [c.stage, c]));
  const xdp = cum.xdp || { p50_ns: 0, p99_ns: 0 };
  const end = cum.app || cum.socket || cum.stack || xdp;
  const max = Math.max(end.p99_ns, xdp.p99_ns, 1);
  const w = (ns) => Math.max(2, (ns / max) * 420);
  const bar = (y, label, c, color) =>
    `<text x="0" y="${y + 14}">${label}</text>` +
    `<rect x="150" y="${y}" width="${w(c.p99_ns)}" height="18" fill="${color}" opacity="0.35"/>` +
    `<rect x="150" y="${y}" width="${w(c.p50_ns)}" height="18" fill="${color}"/>` +
    // A long bar carries its label inside, or the label would run off the drawing.
    `<text class="rate" x="${w(c.p99_ns) > 300 ? 158 : 160 + w(c.p99_ns)}" y="${y + 14}">${fmtUs(c.p50_ns)} / ${fmtUs(c.p99_ns)}</text>`;
  let h = bar(10, "with XDP (drop)", xdp, "#e5534b");
  h += bar(45, "without: stack", cum.stack || xdp, "#c69026");
  h += bar(80, "without: socket", cum.socket || cum.stack || xdp, "#c69026");
  h += bar(115, "without: read", end, "#c69026");
  h += `<text class="rate" x="150" y="160">Blocked: it ends at the XDP verdict. Without XDP: all of this.</text>`;
  $("#timeline").innerHTML = h;
}

// ---- journey detail: a sequence diagram ----------------------------------------------------
const LANES = ["xdp", "stack", "socket", "app"];
function laneOf(stage) {
  if (stage.startsWith("xdp")) return 0;
  if (["gro", "stack", "ip", "transport", "kernel_drop", "consumed"].includes(stage)) return 1;
  if (stage === "socket") return 2;
  return 3;
}
function showDetail(j) {
  selected = j;
  const hops = j.hops;
  const rowH = 34, height = 50 + hops.length * rowH;
  let svg = `<svg id="sequence" viewBox="0 0 520 ${height}">`;
  LANES.forEach((l, i) => {
    const x = 60 + i * 130;
    svg += `<text x="${x}" y="16" text-anchor="middle">${["XDP", "stack", "socket", "application"][i]}</text><line x1="${x}" y1="24" x2="${x}" y2="${height}" stroke="#3d4b59"/>`;
  });
  hops.forEach((h, i) => {
    const y = 44 + i * rowH, x = 60 + laneOf(h.stage) * 130;
    const prev = i ? 60 + laneOf(hops[i - 1].stage) * 130 : x;
    if (i && prev !== x) svg += `<line class="edge" x1="${prev}" y1="${y - rowH / 2}" x2="${x}" y2="${y}" stroke="#539bf5" marker-end="url(#arrow)"/>`;
    svg += `<circle cx="${x}" cy="${y}" r="5" fill="${h.stage.includes("drop") || h.label.startsWith("XDP_DROP") ? "#e5534b" : "#57ab5a"}"/>`;
    svg += `<text class="hop" x="${x + 10}" y="${y + 4}">+${fmtUs(h.t_ns)} ${esc(h.label)}</text>`;
  });
  svg += "</svg>";
  const entry = j.entry
    ? `<p class="entry">matched <b>${esc(j.entry.entry)}</b> (source ${esc(j.entry.source)}${j.entry.reason ? `, reason “${esc(j.entry.reason)}”` : ""})</p>`
    : "";
  const why = j.drop_reason ? `<p>kernel drop reason: <b>${esc(j.drop_reason)}</b></p>` : "";
  $("#detail").innerHTML = `<h3>${esc(j.protocol)} ${esc(j.src)} → ${esc(j.dst)} on ${esc(j.interface)}: <span class="o-${j.outcome}">${esc(j.outcome)}</span> (${esc(j.reason)})</h3>${entry}${why}${svg}`;
  schedule();
}
$("#journeys tbody").addEventListener("click", (e) => {
  const tr = e.target.closest("tr");
  const j = tr && shown[Number(tr.dataset.i)];
  if (j) showDetail(j);
});

// ---- blocklist ---------------------------------------------------------------------------
async function loadEntries() {
  const data = await api("GET", "/v1/entries?list=block&limit=200");
  $("#entries tbody").innerHTML = data.entries.map((e) => {
    const h = e.holders[0] || {};
    return `<tr><td>${esc(e.entry)}</td><td>${esc(e.kind)}</td><td>${esc(h.source)}</td><td>${esc(h.reason)}</td><td>${e.hits}</td><td><button class="small" data-entry="${esc(e.entry)}">remove</button></td></tr>`;
  }).join("");
}
// Drops summed by the source holding the entries (feed:x, auto-ban, app:x, api, ...).
async function loadOrigins() {
  const data = await api("GET", "/v1/stats");
  $("#origins tbody").innerHTML = data.drops_by_origin.map((o) =>
    `<tr><td>${esc(o.origin)}</td><td>${o.packets}</td></tr>`).join("");
}
$("#entries").addEventListener("click", async (e) => {
  const entry = e.target.dataset && e.target.dataset.entry;
  if (!entry) return;
  try { await api("POST", "/v1/unblock", { entries: [entry] }); $("#b-error").textContent = ""; }
  catch (err) { $("#b-error").textContent = err.message; }
  loadEntries();
});
$("#block").addEventListener("submit", async (e) => {
  e.preventDefault();
  const body = { entries: [$("#b-entry").value.trim()], source: "manual" };
  if ($("#b-reason").value) body.reason = $("#b-reason").value;
  if ($("#b-ttl").value) body.ttl = $("#b-ttl").value;
  try { await api("POST", "/v1/block", body); $("#b-error").textContent = ""; $("#b-entry").value = ""; }
  catch (err) { $("#b-error").textContent = err.message; }
  loadEntries();
});

// Capture the next N drops: the daemon streams pcapng until N packets or the duration; the
// file is then offered as a download.
$("#capture").addEventListener("submit", async (e) => {
  e.preventDefault();
  const count = encodeURIComponent($("#c-count").value);
  const duration = encodeURIComponent($("#c-duration").value.trim() || "60s");
  $("#c-status").textContent = "capturing…";
  try {
    const r = await fetch(`/v1/capture?count=${count}&duration=${duration}&verdict=drop`,
      { headers: { Authorization: `Bearer ${token}` } });
    if (!r.ok) throw new Error((await r.json().catch(() => ({}))).error || `HTTP ${r.status}`);
    const file = await r.blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(file);
    link.download = "groundzero-drops.pcapng";
    document.body.appendChild(link);
    link.click();
    link.remove();
    $("#c-status").textContent = `saved groundzero-drops.pcapng (${file.size} bytes)`;
  } catch (err) {
    $("#c-status").textContent = err.message;
  }
});

// ---- live stream ---------------------------------------------------------------------------
async function stream() {
  const r = await fetch("/v1/journey/events", { headers: { Authorization: `Bearer ${token}` } });
  if (!r.ok) throw new Error((await r.json().catch(() => ({}))).error || `HTTP ${r.status}`);
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error("stream ended");
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let ev = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) ev = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (!data) continue;
      const v = JSON.parse(data);
      if (ev === "summary") summary = v;
      else if (ev === "journey") { journeys.unshift(v); if (journeys.length > MAX_ROWS) journeys.length = MAX_ROWS; }
      schedule();
    }
  }
}

async function start() {
  drawFlow();
  try {
    const recent = await api("GET", "/v1/journey/recent?limit=100");
    journeys.push(...recent.journeys);
    summary = await api("GET", "/v1/journey");
    schedule();
    loadEntries();
    loadOrigins();
    setInterval(() => { loadEntries(); loadOrigins(); }, 5000);
  } catch (err) {
    $("#status").textContent = err.message;
    $("#status").className = "bad";
    $("#login").hidden = false;
    return;
  }
  for (;;) {
    try { await stream(); } catch (err) { $("#status").textContent = `live stream: ${err.message}; retrying`; }
    await new Promise((r) => setTimeout(r, 1000));
  }
}
$("#login").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("#token").value.trim();
  sessionStorage.setItem("gz-token", token);
  $("#login").hidden = true;
  start();
});
start();
