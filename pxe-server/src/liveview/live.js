// The live view: one EventSource on /api/v1/events (its query is the table's filter); each
// "frame" event carries the journey summary, the service counters and the first page of hosts.
// Everything from the server is written with textContent, never as HTML: MACs, names and
// error details come from the boot segment.
"use strict";

const PHASES = ["discover", "offer", "ack", "boot_file", "script", "kernel", "initrd", "template", "callback"];
const TABLE_LIMIT = 200;
const HISTORY = 600;

const state = {
  source: null,
  phase: "",
  stuck: false,
  last: null,          // previous frame's byte counters, for the throughput
  throughput: [],      // Gbit/s samples since the page opened
  open: new Set(),     // MACs whose timeline is expanded
};

function $(id) { return document.getElementById(id); }

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// SVG children must be made in the SVG namespace, or the browser does not draw them.
function svgEl(tag, attrs, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmtInt(n) { return Number(n || 0).toLocaleString("en-US"); }

function fmtAge(ms) {
  if (ms < 0) ms = 0;
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s ago";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min ago";
}

function fmtQuantiles(q, scale, digits) {
  if (!q || q.p50 === null || q.p50 === undefined) return "–";
  return [q.p50, q.p90, q.p99].map((v) => (v * scale).toFixed(digits)).join(" / ");
}

function connect() {
  if (state.source) state.source.close();
  const q = new URLSearchParams();
  if (state.phase) q.set("phase", state.phase);
  if (state.stuck) q.set("stuck", "1");
  q.set("limit", String(TABLE_LIMIT));
  const source = new EventSource("/api/v1/events?" + q.toString());
  source.addEventListener("open", () => { $("conn").textContent = "live"; $("conn").className = "conn on"; });
  source.addEventListener("error", () => { $("conn").textContent = "reconnecting"; $("conn").className = "conn off"; });
  source.addEventListener("frame", (ev) => render(JSON.parse(ev.data)));
  source.addEventListener("refused", (ev) => { $("conn").textContent = JSON.parse(ev.data).error; });
  state.source = source;
}

function render(frame) {
  const s = frame.summary;
  const st = frame.stats;
  $("hosts").textContent = fmtInt(s.hosts);
  $("completed").textContent = fmtInt(s.completed);
  $("stuck").textContent = fmtInt(s.stuck);
  $("active").textContent = fmtInt(st.tftp_sessions + st.http_connections);
  $("active-split").textContent = "TFTP " + fmtInt(st.tftp_sessions) + " · HTTP " + fmtInt(st.http_connections);
  $("dhcp-latency").textContent = fmtQuantiles(st.dhcp_latency, 1000, 1);
  $("transfer-duration").textContent = fmtQuantiles(st.transfer_duration, 1, 2);

  const bytes = st.tftp_sent_bytes + st.http_sent_bytes;
  if (state.last && frame.now_ms > state.last.now_ms) {
    const gbps = ((bytes - state.last.bytes) * 8) / ((frame.now_ms - state.last.now_ms) / 1000) / 1e9;
    state.throughput.push(Math.max(0, gbps));
    if (state.throughput.length > HISTORY) state.throughput.shift();
    $("throughput").textContent = gbps.toFixed(2);
  }
  state.last = { bytes, now_ms: frame.now_ms };

  renderPhases(s.phases, s.hosts);
  chart($("completed-chart"), s.completed_per_sec, "per s");
  chart($("throughput-chart"), state.throughput, "Gbit/s");
  renderHosts(frame.hosts, frame.now_ms);
}

function renderPhases(phases, total) {
  const box = $("phases");
  box.replaceChildren();
  const max = Math.max(1, ...PHASES.map((p) => phases[p] || 0));
  for (const p of PHASES) {
    const n = phases[p] || 0;
    const row = el("div", { class: "phase" + (state.phase === p ? " selected" : ""), id: "phase-" + p, "data-count": String(n) });
    row.append(el("span", { class: "name" }, p));
    const bar = el("div", { class: "bar" });
    bar.style.width = ((100 * n) / max).toFixed(1) + "%";
    const cell = el("div");
    cell.append(bar);
    row.append(cell, el("span", { class: "n" }, fmtInt(n)));
    row.addEventListener("click", () => setFilter(state.phase === p ? "" : p, state.stuck));
    box.append(row);
  }
  box.title = fmtInt(total) + " hosts";
}

function chart(svg, values, unit) {
  svg.replaceChildren();
  const w = 600, h = 140, pad = 12;
  const max = Math.max(1e-9, ...values);
  if (values.length > 1) {
    const pts = values.map((v, i) => {
      const x = (i / (values.length - 1)) * w;
      const y = h - pad - (v / max) * (h - 2 * pad);
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    svg.append(svgEl("polyline", { points: pts.join(" ") }));
  }
  const label = svgEl("text", { x: "4", y: "11" }, "max " + (max < 10 ? max.toFixed(2) : fmtInt(Math.round(max))) + " " + unit);
  svg.append(label);
}

function renderHosts(doc, now) {
  $("matched").textContent = fmtInt(doc.matched) + " of " + fmtInt(doc.total) +
    (doc.matched > doc.hosts.length ? " (first " + doc.hosts.length + " shown)" : "");
  const body = $("hosts-table").tBodies[0];
  body.replaceChildren();
  for (const h of doc.hosts) {
    const tr = el("tr", { class: "host" + (h.stuck ? " stuck" : ""), "data-mac": h.mac, "data-phase": h.phase, "data-stuck": String(h.stuck) });
    tr.append(
      el("td", { class: "mono" }, h.mac),
      el("td", { class: "mono" }, h.address || ""),
      el("td", {}, h.hostname || ""),
      el("td", {}, h.phase),
      el("td", {}, fmtAge(now - h.last_progress_ms)),
    );
    const stateCell = el("td");
    const kind = h.stuck ? "stuck" : h.finished ? "done" : "busy";
    stateCell.append(el("span", { class: "badge " + kind }, h.stuck ? "stuck" : h.finished ? "booted" : "in progress"));
    tr.append(stateCell);
    const err = h.last_error;
    tr.append(el("td", {}, err ? err.kind + (err.detail ? ": " + err.detail : "") : ""));
    tr.addEventListener("click", () => {
      if (state.open.has(h.mac)) state.open.delete(h.mac); else state.open.add(h.mac);
      renderHosts(doc, now);
    });
    body.append(tr);
    if (state.open.has(h.mac)) {
      const t0 = h.timeline.length ? h.timeline[0].at_ms : 0;
      const steps = h.timeline.map((t) => t.phase + " +" + ((t.at_ms - t0) / 1000).toFixed(2) + " s");
      const row = el("tr", { class: "timeline" });
      const td = el("td", { colspan: "7" }, "boot " + h.boot + (h.uuid ? " · uuid " + h.uuid : "") + " · " + steps.join(" → "));
      row.append(td);
      body.append(row);
    }
  }
}

function setFilter(phase, stuck) {
  state.phase = phase;
  state.stuck = stuck;
  $("filter-phase").value = phase;
  $("filter-stuck").checked = stuck;
  connect();
}

document.addEventListener("DOMContentLoaded", () => {
  const select = $("filter-phase");
  for (const p of PHASES) select.append(el("option", { value: p }, p));
  select.addEventListener("change", () => setFilter(select.value, state.stuck));
  $("filter-stuck").addEventListener("change", (e) => setFilter(state.phase, e.target.checked));
  connect();
});
