// Tidepool dashboard: polls /api/v1/dashboard every POLL_MS and redraws the figures and
// charts. Vanilla JS and <canvas>, no libraries: the page ships inside the master binary and
// must work without internet. Every figure also carries its raw number in data-value, so
// tests (and scripts) can compare it with /metrics exactly.
"use strict";

const POLL_MS = 1500;
const COLORS = ["#4fc3f7", "#81c784", "#ffb74d"];

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(v < 10 ? 2 : 1)) + " " + units[i];
}

function fmtCount(n) {
  return Number(n).toLocaleString("en-US");
}

function fmtDuration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  if (d) return d + "d " + h + "h";
  if (h) return h + "h " + m + "m";
  return m + "m " + (s % 60) + "s";
}

function fmtSeconds(s) {
  if (s < 1e-3) return (s * 1e6).toFixed(0) + " µs";
  if (s < 1) return (s * 1e3).toFixed(s < 1e-2 ? 2 : 1) + " ms";
  return s.toFixed(2) + " s";
}

function fmtRatio(r) {
  return r === null || r === undefined ? "–" : (100 * r).toFixed(1) + " %";
}

// Sets the text of #id and its raw value.
function put(id, raw, text) {
  const el = document.getElementById(id);
  if (!el) return;
  el.dataset.value = raw === null || raw === undefined ? "" : String(raw);
  el.textContent = text;
}

// Draws line series on a canvas. series: [{points: [[t_ms, y]], color}]; fmt formats the
// y axis. The x axis spans the last `spanMs` up to `nowMs`.
function drawChart(canvas, series, fmt, nowMs, spanMs, yMaxMin) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const left = 64, right = 8, top = 8, bottom = 20;
  const pw = w - left - right, ph = h - top - bottom;
  let ymax = yMaxMin || 0;
  for (const s of series) for (const p of s.points) if (p[1] !== null && p[1] > ymax) ymax = p[1];
  if (ymax <= 0) ymax = 1;
  ymax *= 1.1;
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#8b98a5";
  ctx.strokeStyle = "#223";
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const y = top + ph - ph * i / 4;
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + pw, y); ctx.stroke();
    ctx.fillText(fmt(ymax * i / 4), left - 6, y);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const t0 = nowMs - spanMs;
  const tick = spanMs <= 60000 ? 10000 : 60000;
  for (let k = 0; k * tick <= spanMs; k++) {
    const x = Math.max(left + 8, left + pw * (1 - k * tick / spanMs));
    const label = k === 0 ? "now" : tick < 60000 ? "-" + (k * tick / 1000) + "s" : "-" + (k * tick / 60000) + "m";
    ctx.fillText(label, x, top + ph + 4);
  }
  for (const s of series) {
    ctx.strokeStyle = s.color;
    ctx.lineWidth = 2;
    ctx.fillStyle = s.color;
    ctx.beginPath();
    let pen = false;
    const pts = s.points;
    for (let i = 0; i < pts.length; i++) {
      const [t, v] = pts[i];
      if (v === null || t < t0) { pen = false; continue; }
      const x = left + pw * (t - t0) / spanMs;
      const y = top + ph - ph * v / ymax;
      if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      // A point with no neighbour would draw nothing as a line: mark it with a dot.
      const next = pts[i + 1];
      if (!pen && (!next || next[1] === null)) ctx.fillRect(x - 2, y - 2, 4, 4);
      pen = true;
    }
    ctx.stroke();
  }
}

function rateFmt(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (v >= 1e3) return (v / 1e3).toFixed(1) + "k";
  return v.toFixed(v < 10 ? 1 : 0);
}

function gbFmt(v) { return v.toFixed(v < 1 ? 3 : 2); }

function render(d) {
  put("role", d.role, d.role + " · " + d.ha_state);
  put("version", d.version, d.version);
  put("uptime", d.uptime_s, fmtDuration(d.uptime_s));
  put("epoch", d.epoch, String(d.epoch));
  put("key-count", d.key_count, fmtCount(d.key_count));
  put("soft-pin-key-count", d.soft_pin_key_count, fmtCount(d.soft_pin_key_count));
  const pct = d.capacity_bytes ? 100 * d.allocated_bytes / d.capacity_bytes : 0;
  put("used-percent", pct, pct.toFixed(1) + " %");
  put("allocated-bytes", d.allocated_bytes, fmtBytes(d.allocated_bytes));
  put("capacity-bytes", d.capacity_bytes, fmtBytes(d.capacity_bytes));
  put("hit-ratio", d.hit_ratio, fmtRatio(d.hit_ratio));
  put("get-hits", d.get_hits, fmtCount(d.get_hits));
  put("get-total", d.get_total, fmtCount(d.get_total));
  put("exist-hit-ratio", d.exist_hit_ratio, fmtRatio(d.exist_hit_ratio));
  put("exist-hits", d.exist_hits, fmtCount(d.exist_hits));
  put("exist-keys", d.exist_keys, fmtCount(d.exist_keys));
  put("active-clients", d.active_clients, fmtCount(d.active_clients));
  put("segment-count", d.segment_count, fmtCount(d.segment_count));
  put("evicted-keys", d.evicted_keys, fmtCount(d.evicted_keys));
  put("evicted-bytes", d.evicted_bytes, fmtBytes(d.evicted_bytes));
  put("dead-clients", d.dead_clients, fmtCount(d.dead_clients));
  put("revoked-puts", d.revoked_puts, fmtCount(d.revoked_puts));

  const body = document.querySelector("#segments tbody");
  body.replaceChildren();
  for (const s of d.segments) {
    const tr = document.createElement("tr");
    tr.dataset.segment = s.segment_name;
    tr.dataset.used = String(s.allocator_used_bytes);
    tr.dataset.capacity = String(s.allocator_capacity_bytes);
    const cells = [
      [s.segment_name, ""], [s.te_endpoint, ""], [s.client_id, ""],
      [fmtBytes(s.allocator_used_bytes), "num"], [fmtBytes(s.allocator_capacity_bytes), "num"],
    ];
    for (const [text, cls] of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    const td = document.createElement("td");
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("div");
    fill.style.width = Math.min(100, s.allocator_usage_percent).toFixed(1) + "%";
    bar.appendChild(fill);
    td.appendChild(bar);
    td.appendChild(document.createTextNode(" " + s.allocator_usage_percent.toFixed(1) + " %"));
    tr.appendChild(td);
    body.appendChild(tr);
  }

  const lat = document.querySelector("#latency tbody");
  lat.replaceChildren();
  for (const l of d.latency) {
    const tr = document.createElement("tr");
    tr.dataset.op = l.op;
    tr.dataset.requests = String(l.requests);
    for (const [text, cls] of [[l.op, ""], [fmtCount(l.requests), "num"], [fmtSeconds(l.p50_s), "num"], [fmtSeconds(l.p99_s), "num"]]) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    lat.appendChild(tr);
  }

  const h = d.history;
  const now = d.now_ms;
  // Show the history the master has, between one and five minutes of it.
  const have = h.length ? now - h[0].t_ms : 0;
  const span = Math.min(5 * 60000, Math.max(60000, Math.ceil(have / 60000) * 60000));
  const pts = (f) => h.map((r) => [r.t_ms, f(r)]);
  drawChart(document.getElementById("chart-ops"), [
    { points: pts((r) => r.put_ops), color: COLORS[0] },
    { points: pts((r) => r.get_ops), color: COLORS[1] },
    { points: pts((r) => r.other_ops), color: COLORS[2] },
  ], rateFmt, now, span);
  drawChart(document.getElementById("chart-gbps"), [
    { points: pts((r) => r.put_bytes_per_s / 1e9), color: COLORS[0] },
    { points: pts((r) => r.get_bytes_per_s / 1e9), color: COLORS[1] },
  ], gbFmt, now, span);
  drawChart(document.getElementById("chart-hits"), [
    { points: pts((r) => (r.hit_ratio === null ? null : 100 * r.hit_ratio)), color: COLORS[1] },
    { points: pts((r) => (r.exist_hit_ratio === null ? null : 100 * r.exist_hit_ratio)), color: COLORS[0] },
  ], (v) => v.toFixed(0), now, span, 100 / 1.1);
  drawChart(document.getElementById("chart-used"), [
    { points: pts((r) => r.allocated_bytes), color: COLORS[0] },
  ], fmtBytes, now, span, d.capacity_bytes / 1.1);
  document.body.dataset.historyPoints = String(h.length);
}

let updates = 0;

async function poll() {
  const conn = document.getElementById("conn");
  try {
    const r = await fetch("/api/v1/dashboard", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const d = await r.json();
    render(d);
    updates++;
    document.body.dataset.updates = String(updates);
    conn.dataset.state = "live";
    conn.textContent = "live · " + new Date(d.now_ms).toLocaleTimeString();
  } catch (e) {
    conn.dataset.state = "down";
    conn.textContent = "master unreachable (" + e.message + "), retrying";
  }
  setTimeout(poll, POLL_MS);
}

poll();
