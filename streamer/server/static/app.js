// The live meter: microphone -> AudioWorklet (16-bit frames at the AudioContext's rate) -> /ingest,
// and the estimates coming back drawn as label, confidence, one bar per class of the model (the
// labels the server's "ready" message announces), a one-minute timeline, level and latency.
import {
  buildBars, closeText, colorFor, errorText, params, refusalText, setBars, showMessage, wsUrl,
} from "./common.js";

const FRAME_MS = 20;
const TIMELINE_S = 60;
const CLIP_PEAK = 0.99; // a frame whose peak reaches this clips: the estimate is level-invariant only below it
const CLIP_HOLD_MS = 3000; // the clipping warning stays this long after the last clipping frame
const $ = (id) => document.getElementById(id);

// Everything the page knows, also read by tests (tests/test_browser.py) and handy in the console.
const state = (window.emostream = {
  status: "idle",
  ready: null,
  estimates: [], // the last minute of estimates
  lastEstimate: null,
  latenciesMs: [], // measured here: estimate received - the frame holding the window's last sample sent
  nEstimates: 0,
  clippedFrames: 0, // frames sent whose peak reached CLIP_PEAK
  errors: [],
});

let session = null;
let bars = {};

const show = (text, isError = false) => showMessage(text, isError, state.errors);

function setStatus(status) {
  state.status = status;
  const running = status === "starting" || status === "streaming";
  $("start").disabled = running;
  $("stop").disabled = !running;
}

function micErrorText(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone permission was refused. Allow the microphone for this page (the icon in the address bar) and press Start.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found. Plug one in (or pick another in the list) and press Start.";
    case "NotReadableError":
    case "AbortError":
      return "The microphone could not be opened: another program may be using it.";
    default:
      return `The microphone could not be started: ${err && err.message ? err.message : err}`;
  }
}

async function listMicrophones() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  const select = $("mic");
  const chosen = select.value;
  const devices = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "audioinput");
  select.replaceChildren(new Option("default", ""));
  devices.forEach((d, i) => {
    if (d.deviceId && d.deviceId !== "default") select.add(new Option(d.label || `microphone ${i + 1}`, d.deviceId));
  });
  select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
}

async function start() {
  if (session) return;
  show("");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || !window.AudioWorkletNode) {
    show("This page cannot use the microphone here: browsers allow it only on https:// or on http://localhost / http://127.0.0.1 (see the README on HTTPS).", true);
    return;
  }
  setStatus("starting");
  const s = (session = { stopped: false, frames: new Map(), sentSamples: 0, rate: 0, frameSamples: 0 });
  const deviceId = $("mic").value;
  try {
    s.media = await navigator.mediaDevices.getUserMedia({
      audio: { deviceId: deviceId ? { exact: deviceId } : undefined, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
  } catch (err) {
    session = null;
    setStatus("idle");
    show(micErrorText(err), true);
    return;
  }
  listMicrophones().catch(() => {});
  try {
    // At the microphone's own rate where the browser says it: Firefox cannot connect a microphone
    // to an AudioContext of another rate; Chromium resamples, and either way the server is told.
    const trackRate = s.media.getAudioTracks()[0]?.getSettings().sampleRate;
    try {
      s.ctx = new AudioContext(trackRate ? { sampleRate: trackRate } : {});
    } catch (err) {
      s.ctx = new AudioContext();
    }
    await s.ctx.audioWorklet.addModule("/static/capture-worklet.js");
  } catch (err) {
    stop(`The audio engine could not start: ${err.message || err}`);
    return;
  }
  s.rate = s.ctx.sampleRate;
  s.frameSamples = Math.round((s.rate * FRAME_MS) / 1000);
  const source = s.ctx.createMediaStreamSource(s.media);
  s.node = new AudioWorkletNode(s.ctx, "emostream-capture", { processorOptions: { frameSamples: s.frameSamples } });
  const mute = s.ctx.createGain();
  mute.gain.value = 0; // the graph must reach the destination to run; nothing is heard
  source.connect(s.node).connect(mute).connect(s.ctx.destination);
  s.node.port.onmessage = (e) => onFrame(s, e.data);
  if (s.ctx.state === "suspended") {
    await Promise.race([s.ctx.resume(), new Promise((r) => setTimeout(r, 500))]);
    if (s.ctx.state === "suspended") show("The browser keeps audio paused until you click: press Start.");
  }
  for (const track of s.media.getAudioTracks()) {
    track.onended = () => stop("The microphone was disconnected.");
  }
  connect(s);
}

function connect(s) {
  const ws = (s.ws = new WebSocket(wsUrl("/ingest")));
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    ws.send(JSON.stringify({ type: "start", sample_rate: s.rate, encoding: "pcm_s16le", channels: 1 }));
    $("audio").textContent = `${s.rate} Hz, 16-bit, ${FRAME_MS} ms frames`;
  };
  ws.onmessage = (e) => onMessage(s, JSON.parse(e.data));
  ws.onerror = () => {};
  ws.onclose = async (e) => {
    if (s.stopped) return;
    if (!s.opened) stop(await refusalText("/ingest"));
    else if (!s.failed) stop(closeText(e));
  };
  ws.addEventListener("open", () => (s.opened = true));
}

function onFrame(s, { pcm, rms, peak }) {
  const db = 20 * Math.log10(Math.max(rms, 1e-6));
  $("level").style.width = `${Math.max(0, Math.min(100, ((db + 60) / 60) * 100))}%`;
  if (peak >= CLIP_PEAK) {
    state.clippedFrames += 1;
    s.clippedAt = performance.now();
  }
  const clipping = s.clippedAt !== undefined && performance.now() - s.clippedAt < CLIP_HOLD_MS;
  $("level").style.background = clipping ? "#dc2626" : "";
  $("level-db").textContent =
    (db < -90 ? "silence" : `${db.toFixed(0)} dBFS`) + (clipping ? " · clipping: turn the input gain down" : "");
  if (!s.ws || s.ws.readyState !== WebSocket.OPEN) return;
  s.ws.send(pcm);
  const index = Math.floor(s.sentSamples / s.frameSamples);
  s.frames.set(index, performance.now());
  s.frames.delete(index - 3000); // keep a minute of send times
  s.sentSamples += s.frameSamples;
}

function onMessage(s, msg) {
  if (msg.type === "ready") {
    state.ready = msg;
    bars = buildBars($("bars"), msg.labels);
    buildLegend(msg.labels, msg.speech_gated !== false);
    $("stream").textContent = msg.stream;
    $("model").textContent = `${msg.model} (window ${msg.window_s} s, hop ${msg.hop_s} s)`;
    setStatus("streaming");
    show("");
  } else if (msg.type === "estimate") {
    onEstimate(s, msg);
  } else if (msg.type === "error") {
    s.failed = true;
    stop(errorText(msg));
  } else if (msg.type === "throttled") {
    show(`The server dropped ${msg.dropped_frames} frames: audio arrives faster than real time.`);
  } else if (msg.type === "window_error") {
    show(`One window could not be analysed: ${msg.message}`);
  }
}

function onEstimate(s, e) {
  const now = performance.now();
  // The window's last sample, counted at the microphone's rate, and the frame that carried it.
  const lastSample = Math.ceil(e.t_end_s * s.rate) - 1;
  const sentAt = s.frames.get(Math.floor(lastSample / s.frameSamples));
  const latency = sentAt === undefined ? null : now - sentAt;
  if (latency !== null) state.latenciesMs.push(latency);
  state.lastEstimate = e;
  state.nEstimates += 1;
  state.estimates.push(e);
  while (state.estimates.length && state.estimates[0].t_end_s < e.t_end_s - TIMELINE_S) state.estimates.shift();
  const label = $("label");
  label.textContent = e.speech ? e.label : "no speech";
  label.classList.toggle("silent", !e.speech);
  label.style.color = e.speech ? colorFor(state.ready.labels, e.label) : "";
  $("confidence").textContent = e.speech ? `confidence ${Math.round(100 * e.confidence)}%` : `speech probability ${Math.round(100 * e.speech_prob)}%`;
  setBars(bars, e.speech ? e.probs : null);
  $("latency").textContent = `${latency === null ? "–" : latency.toFixed(0)} ms here · ${e.latency_ms.toFixed(0)} ms in the server`;
  drawTimeline();
}

// gated: the server skips windows without speech (false for models of other sounds: no "no speech" entry)
function buildLegend(labels, gated) {
  const legend = $("legend");
  legend.replaceChildren();
  for (const label of gated ? [...labels, "no speech"] : labels) {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = label === "no speech" ? "#d5d8de" : colorFor(labels, label);
    item.append(swatch, label);
    legend.append(item);
  }
}

function drawTimeline() {
  const canvas = $("timeline");
  const g = canvas.getContext("2d");
  const w = canvas.width;
  const h = canvas.height;
  g.clearRect(0, 0, w, h);
  if (!state.ready || !state.estimates.length) return;
  const end = state.estimates[state.estimates.length - 1].t_end_s;
  const hop = state.ready.hop_s;
  for (const e of state.estimates) {
    const x0 = ((e.t_end_s - hop - (end - TIMELINE_S)) / TIMELINE_S) * w;
    const x1 = ((e.t_end_s - (end - TIMELINE_S)) / TIMELINE_S) * w;
    g.fillStyle = e.speech ? colorFor(state.ready.labels, e.label) : "#d5d8de";
    const bar = e.speech ? Math.max(0.15, e.confidence) * h : 0.15 * h;
    g.fillRect(Math.max(0, x0), h - bar, Math.max(1, x1 - x0), bar);
  }
  g.fillStyle = "#6b7280";
  g.font = "11px system-ui, sans-serif";
  g.fillText(`−${TIMELINE_S} s`, 4, 12);
  g.fillText("−30 s", w / 2 - 14, 12);
  g.fillText("now", w - 24, 12);
}

function stop(message = "") {
  const s = session;
  session = null;
  if (s) {
    s.stopped = true;
    if (s.ws && s.ws.readyState === WebSocket.OPEN) {
      s.ws.send(JSON.stringify({ type: "stop" }));
      setTimeout(() => s.ws.close(), 2000);
    } else if (s.ws) {
      s.ws.close();
    }
    if (s.node) s.node.port.onmessage = null;
    if (s.media) s.media.getTracks().forEach((t) => t.stop());
    if (s.ctx) s.ctx.close();
  }
  setStatus(message ? "error" : "idle");
  $("level").style.width = "0";
  show(message, Boolean(message));
}

$("start").onclick = () => start();
$("stop").onclick = () => stop();
$("mic").onchange = () => {
  if (session) {
    stop();
    start();
  }
};
$("token").value = params.get("token") || "";
$("wall-link").href = "/wall" + location.search.replace(/([?&])autostart=[^&]*&?/, "$1").replace(/[?&]$/, "");
if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
  navigator.mediaDevices.addEventListener("devicechange", () => listMicrophones().catch(() => {}));
}
listMicrophones().catch(() => {});
if (params.get("autostart") === "1") start();
