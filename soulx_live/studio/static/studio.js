// soulx-live Studio page: plain JS, no build step, nothing loaded from elsewhere.
// Preview: each WebSocket binary message is one chunk (JPEG frames + the int16 audio that plays with them).
// The audio is scheduled on the AudioContext and every frame is shown when that clock reaches it, so the
// picture follows the voice exactly (before sound is enabled, the page clock stands in for the audio clock).
"use strict";

const LEAD_S = 0.08;         // playout buffer: absorbs network and decode jitter on loopback
const FLUSH_LEAD_S = 0.02;   // after an interrupt: the idle picture matters more than smooth playout
const MAX_AHEAD_S = 0.4;     // more than this scheduled ahead (a burst: the idle chunk after an interrupt):
                             // the chunk is skipped so the preview does not drift behind the daemon
const HISTORY = 120;         // chart points (one a health message: 60 s at 2 per second)
const $ = (id) => document.getElementById(id);

const stats = { chunks: 0, framesDrawn: 0, lastDrawMs: 0, healthCount: 0, latencyMs: null, pageAvMs: null,
                audioChunks: 0, audioScheduledS: 0, lastChunkRms: 0, flushes: 0, epoch: 0, speech: "idle", skipped: 0,
                clock: "page" };
window.studio = { stats };

// ---- API -----------------------------------------------------------------------------------------
function show(text, kind) {
  const m = $("message");
  m.textContent = text;
  m.className = "message " + (kind || "");
}

async function api(path, body, raw) {
  const opts = body === undefined ? {} : { method: "POST", body: raw ? body : JSON.stringify(body),
    headers: raw ? { "Content-Type": "application/octet-stream", "X-Filename": raw } : { "Content-Type": "application/json" } };
  const resp = await fetch(path, opts);
  let data = {};
  try { data = await resp.json(); } catch (e) { data = { message: resp.statusText }; }
  if (resp.status === 401 || resp.status === 403) {
    show("Refused: not logged in. Open the one-time link that soulx-live run printed (soulx-live studio prints a new one).", "error");
    throw new Error("refused");
  }
  if (!resp.ok) {
    show(data.message || ("error " + resp.status), "error");
    const err = new Error(data.message); err.code = data.code; throw err;
  }
  return data;
}

// ---- preview player ------------------------------------------------------------------------------
const player = { ctx: null, nextT: 0, queue: [], sources: [], epoch: 0, avErr: [], lead: LEAD_S };
const canvas = $("preview");
const view = canvas.getContext("2d");

function audioRunning() { return player.ctx !== null && player.ctx.state === "running"; }
function clockNow() { return audioRunning() ? player.ctx.currentTime : performance.now() / 1000; }

function setupAudio() {
  try { player.ctx = new AudioContext(); } catch (e) { player.ctx = null; }
  const update = () => {
    const on = audioRunning();
    $("sound").style.display = on ? "none" : "";
    const kind = on ? "audio" : "page";
    if (kind !== stats.clock) { stats.clock = kind; resetTimeline(); }
  };
  if (player.ctx) player.ctx.onstatechange = update;
  $("sound").onclick = () => { if (player.ctx) player.ctx.resume().then(update); };
  update();
}

function resetTimeline(keepEpoch) {
  // drops what was scheduled of epochs below keepEpoch (all of it without one)
  const keep = (item) => keepEpoch !== undefined && item.epoch >= keepEpoch;
  for (const s of player.sources) { if (!keep(s)) { try { s.stop(); } catch (e) { /* already ended */ } } }
  player.sources = player.sources.filter(keep);
  for (const f of player.queue) if (!keep(f)) f.bitmap.close();
  player.queue = player.queue.filter(keep);
  if (!player.sources.length && !player.queue.length) player.nextT = 0;
}

async function onChunk(buf) {
  const dv = new DataView(buf);
  const hlen = dv.getUint32(0, true);
  const head = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, hlen)));
  if (head.epoch < player.epoch) return;  // an interrupted epoch's chunk still on the way
  if (head.epoch > player.epoch) onFlush(head.epoch);  // the new epoch's chunk came first: its flush is implied
  let off = 4 + hlen;
  const blobs = head.sizes.map((n) => { const b = new Blob([new Uint8Array(buf, off, n)], { type: "image/jpeg" }); off += n; return b; });
  const pcm = new Int16Array(buf.slice(off));
  const dur = pcm.length / head.sample_rate;
  const now = clockNow();
  if (player.nextT - now > MAX_AHEAD_S) { stats.skipped += 1; return; }
  if (player.nextT < now + 0.01) player.nextT = now + player.lead;  // first chunk, or the stream ran dry: re-anchor
  player.lead = LEAD_S;
  const t0 = player.nextT;
  player.nextT += dur;
  let sum = 0;
  for (let i = 0; i < pcm.length; i++) sum += pcm[i] * pcm[i];
  const rms = pcm.length ? Math.sqrt(sum / pcm.length) / 32768 : 0;  // loudness of the audio these frames go with
  stats.lastChunkRms = rms;
  if (audioRunning() && pcm.length) {
    const ab = player.ctx.createBuffer(1, pcm.length, head.sample_rate);
    const ch = ab.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) ch[i] = pcm[i] / 32768;
    const src = player.ctx.createBufferSource();
    src.buffer = ab;
    src.connect(player.ctx.destination);
    src.start(t0);
    src.epoch = head.epoch;
    src.onended = () => { player.sources = player.sources.filter((s) => s !== src); };
    player.sources.push(src);
    stats.audioChunks += 1;
    stats.audioScheduledS += dur;
  }
  const bitmaps = await Promise.all(blobs.map((b) => createImageBitmap(b)));
  if (head.epoch < player.epoch) { bitmaps.forEach((b) => b.close()); return; }
  bitmaps.forEach((bitmap, k) => player.queue.push({ t: t0 + k / head.fps, bitmap, epoch: head.epoch, sent: head.sent_ms,
                                                     rms, audible: audioRunning() }));
  player.queue.sort((a, b) => a.t - b.t);
  stats.chunks += 1;
}

function onFlush(epoch) {
  player.epoch = Math.max(player.epoch, epoch);
  stats.epoch = player.epoch;
  stats.flushes += 1;
  resetTimeline(player.epoch);  // what was scheduled of the interrupted epoch: silence and the next frames now
  if (!player.queue.length) player.lead = FLUSH_LEAD_S;
}

function drawDue() {
  const now = clockNow();
  let due = null;
  while (player.queue.length && player.queue[0].t <= now) {
    if (due) due.bitmap.close();
    due = player.queue.shift();
  }
  if (!due) return;
  if (canvas.width !== due.bitmap.width || canvas.height !== due.bitmap.height) {
    canvas.width = due.bitmap.width; canvas.height = due.bitmap.height;
  }
  view.drawImage(due.bitmap, 0, 0);
  due.bitmap.close();
  if (window.studio.onDraw) window.studio.onDraw(canvas, due);  // automation hook (the browser tests measure here)
  stats.framesDrawn += 1;
  stats.lastDrawMs = performance.now();
  stats.latencyMs = Date.now() - due.sent;  // from the daemon's preview sink to this screen
  player.avErr.push(Math.abs(now - due.t) * 1000);  // shown this late against its audio
  if (player.avErr.length > 50) player.avErr.shift();
  stats.pageAvMs = player.avErr.reduce((a, b) => a + b, 0) / player.avErr.length;
  $("latency").textContent = stats.latencyMs.toFixed(0) + " ms";
  $("page-av").textContent = stats.pageAvMs.toFixed(0) + " ms";
}

// ---- charts (canvas, hand-drawn) -------------------------------------------------------------------
const COLORS = ["#4fa3ff", "#ffb347", "#5ad17a", "#ff6b6b", "#c792ea", "#7fdbca", "#f78c6c"];

class Chart {
  constructor(id, opts) { this.canvas = $(id); this.opts = opts || {}; this.series = new Map(); this.draws = 0; }
  push(values) {
    for (const [name, v] of Object.entries(values)) {
      if (!this.series.has(name)) this.series.set(name, []);
    }
    for (const [name, pts] of this.series) {
      const v = values[name];
      pts.push(v === undefined || v === null || Number.isNaN(v) ? null : v);
      if (pts.length > HISTORY) pts.shift();
    }
    this.draw();
  }
  draw() {
    const c = this.canvas, g = c.getContext("2d"), w = c.width, h = c.height, pad = 4, top = 16;
    g.clearRect(0, 0, w, h);
    let max = this.opts.min || 1e-9;
    for (const pts of this.series.values()) for (const v of pts) if (v !== null) max = Math.max(max, v);
    max *= 1.15;
    g.strokeStyle = "#2a2e35"; g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) { const y = top + (h - top - pad) * i / 4; g.beginPath(); g.moveTo(0, y); g.lineTo(w, y); g.stroke(); }
    let k = 0, legendX = 4;
    g.font = "11px sans-serif";
    for (const [name, pts] of this.series) {
      const color = COLORS[k++ % COLORS.length];
      g.strokeStyle = color; g.lineWidth = 1.5;
      g.setLineDash(this.opts.dashed && this.opts.dashed.includes(name) ? [5, 4] : []);
      g.beginPath();
      let started = false;
      pts.forEach((v, i) => {
        if (v === null) { started = false; return; }
        const x = w - (pts.length - 1 - i) * (w / (HISTORY - 1));
        const y = top + (h - top - pad) * (1 - v / max);
        if (started) g.lineTo(x, y); else { g.moveTo(x, y); started = true; }
      });
      g.stroke();
      g.setLineDash([]);
      const last = [...pts].reverse().find((v) => v !== null);
      const label = name + (last === undefined ? "" : " " + (Math.abs(last) >= 100 ? last.toFixed(0) : last.toFixed(1)));
      g.fillStyle = color; g.fillText(label, legendX, 11); legendX += g.measureText(label).width + 10;
    }
    this.draws += 1;
  }
}

const charts = {
  compute: new Chart("chart-compute", { dashed: ["budget"] }),
  av: new Chart("chart-av", { min: 5 }),
  queues: new Chart("chart-queues", { min: 1 }),
  frames: new Chart("chart-frames", { min: 1 }),
  memory: new Chart("chart-memory"),
  restarts: new Chart("chart-restarts", { min: 1 }),
};
window.studio.charts = charts;

function ms(v) { return v === null || v === undefined ? null : v * 1000; }

function onHealth(h) {
  stats.healthCount += 1;
  charts.compute.push({ compute: ms(h.chunk_compute_s), budget: ms(h.chunk_budget_s), p99: ms(h.chunk_compute_p99_s) });
  const av = {};
  for (const [sink, v] of Object.entries(h.av_offset_s || {})) av[sink] = v * 1000;
  if (stats.pageAvMs !== null) av.page = stats.pageAvMs;
  charts.av.push(av);
  charts.queues.push(Object.keys(h.queues || {}).length ? h.queues : { none: 0 });
  const frames = { dropped: h.dropped_total, held: h.held_total };
  charts.frames.push(frames);
  charts.memory.push(h.gpu_memory_mb ? { rss: h.memory_mb, gpu: h.gpu_memory_mb } : { rss: h.memory_mb });
  charts.restarts.push({ restarts: h.restarts });
  $("health-note").textContent = h.metrics_on ? "" : "metrics.enabled is false: only the state is shown";
  setState(h.state, null, h.session);
}

// ---- state and controls ----------------------------------------------------------------------------
function setState(state, engine, session) {
  const el = $("state");
  el.textContent = state; el.className = "pill " + state;
  if (engine) $("engine").textContent = engine;
  if (session) $("session").textContent = session;
}

function renderSinks(sinks) {
  const ul = $("sinks");
  ul.textContent = "";
  for (const s of sinks) {
    const li = document.createElement("li");
    const box = document.createElement("input");
    box.type = "checkbox"; box.checked = s.enabled; box.id = "sink-" + s.name;
    box.disabled = !s.enabled && !s.can_reopen;
    box.onchange = async () => {
      try { await api("/api/sinks/" + encodeURIComponent(s.name), { enabled: box.checked });
            show("sink " + s.name + (box.checked ? " enabled" : " disabled"), "ok"); }
      catch (e) { box.checked = !box.checked; }
    };
    const label = document.createElement("label");
    label.htmlFor = box.id; label.textContent = s.name;
    const st = document.createElement("span");
    st.className = "small"; st.textContent = s.state;
    li.append(box, label, st);
    ul.append(li);
  }
}

let firstState = true;
async function refreshState() {
  let s;
  try { s = await api("/api/state"); } catch (e) { return; }
  setState(s.state, s.engine, s.session);
  $("avatar-name").textContent = s.avatar;
  if (firstState) {
    $("say-voice").value = s.tts.voice; $("say-rate").value = s.tts.rate_wpm;
    $("audio-source").value = s.audio.pick;
    const dl = $("audio-devices"); dl.textContent = "";
    for (const d of s.audio.devices) { const o = document.createElement("option"); o.value = d; dl.append(o); }
    firstState = false;
  }
  if (!s.tts.available) $("say-btn").title = "needs audio.source=push";
  const focused = document.activeElement && document.activeElement.type === "checkbox";
  if (!focused) renderSinks(s.sinks);
}

function wire() {
  $("say-btn").onclick = async () => {
    const text = $("say-text").value;
    try {
      const r = await api("/api/say", { text, voice: $("say-voice").value, rate: $("say-rate").value });
      show("speaking " + r.duration_s.toFixed(1) + " s", "ok");
    } catch (e) { /* shown */ }
  };
  $("interrupt-btn").onclick = async () => {
    try { const r = await api("/api/interrupt", {}); show("interrupted (epoch " + r.epoch + ")", "ok"); } catch (e) { /* shown */ }
  };
  $("avatar-btn").onclick = async () => {
    const file = $("avatar-file").files[0];
    if (!file) { show("pick a photo first", "error"); return; }
    try {
      const r = await api("/api/avatar", await file.arrayBuffer(), file.name || "upload");
      show("new avatar " + r.avatar + ": a new session starts", "ok");
      $("avatar-name").textContent = r.avatar;
    } catch (e) { /* shown */ }
  };
  $("audio-btn").onclick = async () => {
    try { const r = await api("/api/audio", { source: $("audio-source").value, device: $("audio-device").value || null });
          show("audio input: " + r.source, "ok"); } catch (e) { /* shown */ }
  };
  $("obs-load").onclick = async () => {
    try {
      const r = await api("/api/obs/scenes");
      const sel = $("obs-scene"); sel.textContent = "";
      for (const name of r.scenes) { const o = document.createElement("option"); o.value = o.textContent = name; sel.append(o); }
      if (r.current) sel.value = r.current;
      show(r.scenes.length + " OBS scenes", "ok");
    } catch (e) { /* shown */ }
  };
  $("obs-btn").onclick = async () => {
    try { const r = await api("/api/obs/scene", { scene: $("obs-scene").value }); show("OBS: " + r.scene, "ok"); } catch (e) { /* shown */ }
  };
}

function connect() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/live");
  ws.binaryType = "arraybuffer";
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") { onChunk(ev.data); return; }
    const msg = JSON.parse(ev.data);
    if (msg.type === "health") onHealth(msg);
    else if (msg.type === "flush") onFlush(msg.epoch);
    else if (msg.type === "speech") { stats.speech = msg.kind; $("speech").textContent = msg.kind; }
  };
  ws.onclose = () => { setState("disconnected"); setTimeout(connect, 1000); };
}

setupAudio();
wire();
refreshState();
setInterval(refreshState, 2000);
setInterval(drawDue, 8);
connect();
