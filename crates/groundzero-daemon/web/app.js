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
// null: the rate was not observed (no sampled journey reached that stage yet), never shown as 0.
const fmtPps = (x, est) => {
  if (x == null || !Number.isFinite(x)) return "not observed";
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
  // Each rate after XDP says whether it is counted or estimated (and for which population).
  const basis = Object.fromEntries((s.stage_rates || []).map((r) => [r.stage, r]));
  for (const [, b, key, est] of EDGES) {
    const el = document.getElementById(`rate-${key}`);
    if (!el) continue;
    const r = basis[EDGE_STAGE[b]];
    el.textContent = fmtPps(s.rates[key], r ? r.basis === "estimate" : est);
    if (r) el.dataset.basis = `${r.basis} (${r.population})`;
  }
  $("#nic").textContent = s.nic_to_xdp && !s.nic_to_xdp.measured
    ? `NIC → XDP: ${s.nic_to_xdp.why || "not observable on this driver"}` : "";
  // Measured stages with their figures; every other stage on the path reads "not observed".
  const v = s.verdict;
  const kernelMean = v && v.kernel_mean_ns != null ? `${fmtUs(v.kernel_mean_ns)} (every packet)` : "–";
  const measured = s.stages.map((x) =>
    `<tr data-stage="${esc(x.stage)}"><td>${esc(x.label)}</td><td>${x.count}</td><td>${fmtUs(x.p50_ns)}</td><td>${fmtUs(x.p99_ns)}</td><td>${x.stage === "xdp" ? kernelMean : ""}</td></tr>`);
  const seen = new Set(s.stages.map((x) => x.stage));
  const why = Object.fromEntries((s.not_observed || []).map((n) => [n.stage, n.why]));
  for (const m of t.stages_missing || []) why[m.stage] = why[m.stage] || m.why;
  const unobserved = PATH.filter((st) => !seen.has(st)).map((st) =>
    `<tr data-stage="${st}" class="muted"><td>${st}</td><td>0</td><td colspan="3" title="${esc(why[st] || "no samples yet")}">not observed${why[st] ? ` <small>(${esc(short(why[st]))})</small>` : ""}</td></tr>`);
  const verdictRow = v && v.samples > 0 && v.p50_ns != null
    ? [`<tr data-stage="verdict"><td title="${esc(v.span)}">whole XDP verdict</td><td>${v.samples}</td><td>${fmtUs(v.p50_ns)}</td><td>${fmtUs(v.p99_ns)}</td><td>${kernelMean}</td></tr>`] : [];
  $("#stages tbody").innerHTML = verdictRow.concat(measured, unobserved).join("");
  $("#drop-sites tbody").innerHTML = (s.drop_sites || []).map((d) =>
    `<tr><td>${esc(d.function)}</td><td>${esc(d.reason)}</td><td>${d.count}</td></tr>`).join("") || "<tr><td class=muted colspan=3>none observed</td></tr>";
  $("#outcomes").innerHTML = Object.entries(s.outcomes).map(([k, v]) => `<li class="o-${k}">${k}: <b>${v}</b></li>`).join("") +
    (s.totals && s.totals.filtered_seen != null ? `<li class="muted" title="counted by XDP since tracing first started">sample filter admitted: <b>${s.totals.filtered_seen}</b> (passed ${s.totals.filtered_passed}, dropped ${s.totals.filtered_dropped})</li>` : "");
  $("#kdrops").innerHTML = (s.kernel_drop_reasons || []).map((d) => `<li>${esc(d.reason)}: ${d.count}</li>`).join("") || "<li class=muted>none</li>";
  const c = s.cost;
  $("#cost").innerHTML = !c ? "<li class=muted>measuring…</li>" :
    `<li>XDP program: <b>${c.xdp_ns_per_packet == null ? "no packets" : `${c.xdp_ns_per_packet} ns`}</b> per packet</li>` +
    `<li>tracing observers: <b>${c.observers_cpu_ms_per_s} ms</b> of CPU per second` +
    (c.observers_ns_per_run == null ? "" : ` (${c.observers_runs_per_s} runs/s × ${c.observers_ns_per_run} ns)`) + `</li>`;
  $("#skipped").textContent = s.journeys_skipped ? `(${s.journeys_skipped} not streamed to keep up)` : "";
  drawTimeline(s);
}

// A long reason in a table cell: its start, the whole of it in the cell's title.
const short = (text) => (text.length > 90 ? `${text.slice(0, 90)}…` : text);
// The stages of a passed packet's path, in order, as the API labels them.
const PATH = ["xdp", "gro", "stack", "ip", "transport", "socket", "app"];
// The stage a flowchart box stands for, to find its rate's basis.
const EDGE_STAGE = { stack: "stack", socket: "socket", app: "app", kdrop: "kernel_drop" };

// With XDP: the cumulative time of sampled journeys since the XDP hook, per measured stage.
// Without XDP: only what the A/B measured with the program detached (run B), beside run A.
function drawTimeline(s) {
  const cum = Object.fromEntries((s.cumulative || []).map((c) => [c.stage, c]));
  const rows = [];
  for (const st of ["xdp", "gro", "stack", "socket", "app"]) {
    if (cum[st]) rows.push([`with XDP: ${st}`, cum[st].p50_ns, cum[st].p99_ns, "#e5534b"]);
  }
  const runs = ab ? ab.runs : [];
  for (const run of runs) {
    for (const x of run.stages) {
      rows.push([`${run.xdp_attached ? "A/B with" : "A/B without"}: ${x.label}`, x.p50.ns, x.p99.ns, run.xdp_attached ? "#539bf5" : "#c69026"]);
    }
  }
  const max = Math.max(1, ...rows.map((r) => r[2]));
  const w = (ns) => Math.max(2, (ns / max) * 330);
  let h = "", y = 6;
  if (!rows.length || !runs.length) {
    h += `<text class="rate" x="0" y="${y + 12}">${rows.length ? "" : "with XDP: no sampled journey yet · "}without XDP: run the A/B to measure</text>`;
    y += 24;
  }
  for (const [label, p50, p99, color] of rows) {
    h += `<text x="0" y="${y + 14}">${esc(label)}</text>` +
      `<rect x="230" y="${y}" width="${w(p99)}" height="16" fill="${color}" opacity="0.35"/>` +
      `<rect x="230" y="${y}" width="${w(p50)}" height="16" fill="${color}"/>` +
      `<text class="rate" x="${w(p99) > 250 ? 238 : 240 + w(p99)}" y="${y + 13}">${fmtUs(p50)} / ${fmtUs(p99)}</text>`;
    y += 24;
  }
  $("#timeline").setAttribute("viewBox", `0 0 600 ${Math.max(y, 40)}`);
  $("#timeline").innerHTML = h;
}

// ---- the A/B -------------------------------------------------------------------------------
let ab = null;
// A bound too few samples cannot give (null) reads "?".
const fmtBound = (ns) => (ns == null ? "?" : fmtUs(ns));
const fmtEst = (e) => `${fmtUs(e.ns)} <small class="muted">[${fmtBound(e.lo_ns)}–${fmtBound(e.hi_ns)}]</small>`;
const fmtCpu = (ns) => (ns == null ? "not measured" : `${Math.round(ns)} ns`);
function renderAb() {
  if (!ab) { $("#ab").innerHTML = `<p class="muted">run the A/B to measure</p>`; return; }
  const [a, b] = [ab.runs.find((r) => r.xdp_attached), ab.runs.find((r) => !r.xdp_attached)];
  const cell = (run, name, q) => { const x = run && run.stages.find((st) => st.name === name); return x ? fmtEst(x[q]) : "not measured"; };
  const stageRows = (a || b).stages.map((x) =>
    `<tr><td title="${esc(x.how)}">${esc(x.label)}</td><td>${cell(a, x.name, "p50")}</td><td>${cell(a, x.name, "p99")}</td><td>${cell(b, x.name, "p50")}</td><td>${cell(b, x.name, "p99")}</td></tr>`).join("");
  const runHead = (r) => r ? `${esc(r.label)}<br><small>${r.probes_measured} of ${r.probes_sent} probes measured</small>` : "not run";
  $("#ab").innerHTML =
    `<p class="muted">${new Date(ab.unix_ms).toLocaleString()} on ${esc(ab.interface)}, load ${esc(ab.load)}; intervals: ${esc(ab.ci_method)}</p>` +
    `<table id="ab-runs"><thead><tr><th>stage</th><th colspan="2" class="run-a">A: ${runHead(a)}</th><th colspan="2" class="run-b">B: ${runHead(b)}</th></tr>` +
    `<tr><th></th><th>p50</th><th>p99</th><th>p50</th><th>p99</th></tr></thead><tbody>${stageRows}` +
    `<tr><td title="${esc((a || b).cpu_how)}">CPU per packet, receiving side</td><td colspan="2">${fmtCpu(a && a.cpu_ns_per_packet)}</td><td colspan="2">${fmtCpu(b && b.cpu_ns_per_packet)}</td></tr></tbody></table>` +
    `<h3>What a blocked packet costs the node</h3><table id="ab-blocked"><thead><tr><th>dropped by</th><th>CPU per packet</th><th>packets</th></tr></thead><tbody>` +
    ab.blocked.map((d) => `<tr><td title="${esc(d.how)}">${esc(d.label)}</td><td>${fmtCpu(d.cpu_ns_per_packet)}</td><td>${d.packets}</td></tr>`).join("") +
    `</tbody></table><h3>How each figure is measured</h3><ul class="how">` +
    [...new Set((a || b).stages.map((x) => `${x.label}: ${x.how}`).concat([`CPU per packet: ${(a || b).cpu_how}`], ab.blocked.map((d) => `${d.label}: ${d.how}`)))]
      .map((x) => `<li>${esc(x)}</li>`).join("") + "</ul>";
}
async function loadAb() {
  ab = (await api("GET", "/v1/journey/ab")).last;
  renderAb();
  schedule();
}
$("#ab-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("#ab-run").disabled = true;
  $("#ab-status").textContent = "measuring (about 10 s)…";
  try {
    ab = await api("POST", "/v1/journey/ab", { probes: 1000 });
    $("#ab-status").textContent = "";
    renderAb();
    loadClaims().catch(() => {});
    schedule();
  } catch (err) {
    $("#ab-status").textContent = err.message;
  }
  $("#ab-run").disabled = false;
});

// ---- claims --------------------------------------------------------------------------------
async function loadClaims() {
  const data = await api("GET", "/v1/journey/claims");
  $("#claims tbody").innerHTML = data.claims.map((c) =>
    `<tr data-claim="${esc(c.name)}"><td>${esc(c.claim)}</td><td>${c.measured_ns == null ? "not measured yet" : fmtUs(c.measured_ns)}</td>` +
    `<td class="${c.holds == null ? "muted" : c.holds ? "holds" : "fails"}">${esc(c.note)}</td><td>${esc(c.from)}</td></tr>`).join("");
}

// ---- per-minute history --------------------------------------------------------------------
const HISTORY_COLORS = ["#e5534b", "#c69026", "#57ab5a", "#539bf5", "#b083f0", "#8a96a3", "#f69d50"];
async function loadHistory() {
  const data = await api("GET", "/v1/journey/history");
  const minutes = data.minutes;
  if (!minutes.length) { $("#history").innerHTML = `<text class="rate" x="0" y="20">no minute recorded yet</text>`; return; }
  const stages = [...new Set(minutes.flatMap((m) => m.stages.map((x) => x.stage)))];
  const max = Math.max(1, ...minutes.flatMap((m) => m.stages.map((x) => x.p50_ns)));
  const x = (i) => 60 + (minutes.length === 1 ? 0 : (i / (minutes.length - 1)) * 760);
  const y = (ns) => 180 - (ns / max) * 160;
  let h = `<text class="rate" x="0" y="20">${fmtUs(max)}</text><text class="rate" x="0" y="180">0</text>`;
  stages.forEach((st, k) => {
    const color = HISTORY_COLORS[k % HISTORY_COLORS.length];
    const pts = minutes.map((m, i) => { const v = m.stages.find((q) => q.stage === st); return v ? `${x(i)},${y(v.p50_ns)}` : null; }).filter(Boolean);
    h += `<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.join(" ")}"/>`;
    pts.forEach((p) => { const [cx, cy] = p.split(","); h += `<circle cx="${cx}" cy="${cy}" r="3" fill="${color}"/>`; });
    h += `<text x="840" y="${20 + k * 18}" style="fill:${color}">${esc(st)}</text>`;
  });
  h += `<text class="rate" x="60" y="198">${new Date(minutes[0].start_unix * 1000).toLocaleTimeString()}</text>` +
    `<text class="rate" x="820" y="198" text-anchor="end">${new Date(minutes[minutes.length - 1].start_unix * 1000).toLocaleTimeString()}</text>`;
  $("#history").innerHTML = h;
}

// ---- exports -------------------------------------------------------------------------------
function download(name, blob) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
}
// Exact values: µs with one decimal, never rounded up to 1 µs.
const mUs = (ns) => `${(ns / 1e3).toFixed(1)} µs`;
function mermaid(s) {
  const r = s.rates, out = ["flowchart LR"];
  const est = (stage) => { const b = (s.stage_rates || []).find((x) => x.stage === stage); return b ? b.basis === "estimate" : true; };
  const st = Object.fromEntries(s.stages.map((x) => [x.stage, x]));
  const box = (id, label, stage) => `${id}["${label}${st[stage] ? `<br/>p50 ${mUs(st[stage].p50_ns)} · p99 ${mUs(st[stage].p99_ns)}` : ""}"]`;
  out.push(`  ${box("nic", "NIC")} -->|"${fmtPps(r.seen_pps)}"| ${box("xdp", "XDP verdict", "xdp")}`);
  out.push(`  xdp -->|"${fmtPps(r.dropped_pps)}"| drop["XDP_DROP"]`);
  out.push(`  xdp -->|"${fmtPps(r.passed_pps)}"| ${box("stack", "stack", "stack")}`);
  out.push(`  stack -->|"${fmtPps(r.socket_pps, est("socket"))}"| ${box("socket", "socket", "socket")}`);
  out.push(`  socket -->|"${fmtPps(r.app_pps, est("app"))}"| ${box("app", "application", "app")}`);
  out.push(`  stack -->|"${fmtPps(r.kernel_dropped_pps, est("kernel_drop"))}"| kdrop["kernel drop"]`);
  for (const x of PATH) if (!st[x]) out.push(`  %% ${x}: not observed`);
  // A `%%` comment ends at the line's end: a label holding CR/LF would start a Mermaid statement.
  const line = (t) => String(t).replace(/[\r\n]+/g, " ");
  if (ab) for (const run of ab.runs) for (const x of run.stages) out.push(`  %% A/B ${line(run.label)}: ${line(x.label)} p50 ${mUs(x.p50.ns)} p99 ${mUs(x.p99.ns)}`);
  return out.join("\n") + "\n";
}
$("#export-json").addEventListener("click", async () => {
  const claims = await api("GET", "/v1/journey/claims").catch(() => null);
  download("groundzero-journey.json", new Blob([JSON.stringify({ summary, journeys, ab, claims }, null, 2)], { type: "application/json" }));
});
$("#export-mermaid").addEventListener("click", () => {
  if (summary) download("groundzero-journey.mmd", new Blob([mermaid(summary)], { type: "text/plain" }));
});
// The drawings as they are on the page: SVG (with the page's styles inlined, since an image
// does not see the stylesheet) → canvas → PNG.
async function svgImage(svg) {
  const copy = svg.cloneNode(true);
  const live = svg.querySelectorAll("*"), copies = copy.querySelectorAll("*");
  live.forEach((el, i) => {
    const cs = getComputedStyle(el);
    for (const prop of ["fill", "stroke", "opacity", "font-size", "font-family", "stroke-width"]) copies[i].style.setProperty(prop, cs.getPropertyValue(prop));
  });
  const box = svg.getBoundingClientRect();
  copy.setAttribute("width", box.width);
  copy.setAttribute("height", box.height);
  const img = new Image();
  img.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(new XMLSerializer().serializeToString(copy))}`;
  await img.decode();
  return [img, box];
}
async function png() {
  const parts = await Promise.all(["#flow", "#timeline"].map((id) => svgImage($(id))));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(...parts.map(([, b]) => b.width));
  canvas.height = parts.reduce((t, [, b]) => t + b.height, 0);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#0f1419";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  let at = 0;
  for (const [img, b] of parts) { ctx.drawImage(img, 0, at, b.width, b.height); at += b.height; }
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}
$("#export-png").addEventListener("click", async () => download("groundzero-journey.png", await png()));

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
    svg += `<text class="hop" x="${x + 10}" y="${y + 4}">+${fmtUs(h.t_ns)} ${esc(h.label)}${h.cpu == null ? "" : ` (CPU ${h.cpu})`}</text>`;
  });
  svg += "</svg>";
  const entry = j.entry
    ? `<p class="entry">matched <b>${esc(j.entry.entry)}</b> (source ${esc(j.entry.source)}${j.entry.reason ? `, reason “${esc(j.entry.reason)}”` : ""})` +
      (j.entry.resolved ? ` <small class="muted">${j.entry.resolved === "kernel_key" ? "the kernel's key" : "looked up when the drop arrived"}${j.entry.resolved_unix_ms ? `, recorded ${new Date(j.entry.resolved_unix_ms).toLocaleTimeString()}` : ""}</small>` : "") + `</p>`
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
    // Each panel shows its own error: one missing endpoint (an older daemon) leaves the rest.
    const into = (id) => (err) => { $(id).innerHTML = `<p class="error">${esc(err.message)}</p>`; };
    loadAb().catch(into("#ab"));
    loadClaims().catch(into("#claims tbody"));
    loadHistory().catch((err) => { $("#history").innerHTML = `<text class="rate" x="0" y="20">history: ${esc(err.message)}</text>`; });
    setInterval(() => { loadEntries(); loadOrigins(); loadClaims().catch(into("#claims tbody")); }, 5000);
    setInterval(() => loadHistory().catch(() => {}), 60000);
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
