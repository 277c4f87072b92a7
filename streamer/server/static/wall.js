// The operator's wall: every live stream of the server on one page, from /feed (all streams).
import {
  buildBars, closeText, colorFor, errorText, params, refusalText, setBars, showMessage, wsUrl,
} from "./common.js";

const STALE_S = 5; // a card greys out after this long without an estimate
const GONE_S = 60; // and leaves the wall after this long
const $ = (id) => document.getElementById(id);

const state = (window.emostream = { status: "idle", labels: [], streams: {}, nEstimates: 0, errors: [] });
let ws = null;
let retryMs = 1000;

const show = (text, isError = false) => showMessage(text, isError, state.errors);

function connect() {
  if (ws) ws.close();
  const socket = (ws = new WebSocket(wsUrl("/feed")));
  let opened = false;
  $("status").textContent = "connecting…";
  socket.onopen = () => {
    opened = true;
    retryMs = 1000;
  };
  socket.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    if (msg.type === "subscribed") {
      state.labels = msg.labels;
      state.status = "subscribed";
      $("status").textContent = `connected · model ${msg.model}`;
      show("");
    } else if (msg.type === "estimate") {
      onEstimate(msg);
    } else if (msg.type === "error") {
      show(errorText(msg), true);
    } else if (msg.type === "lag") {
      show(`This page reads too slowly: ${msg.dropped} updates were skipped.`);
    }
  };
  socket.onclose = async (e) => {
    if (socket !== ws) return;
    state.status = "closed";
    $("status").textContent = "disconnected";
    show(`${opened ? closeText(e) : await refusalText("/feed")} Retrying in ${Math.round(retryMs / 1000)} s.`, true);
    setTimeout(() => socket === ws && connect(), retryMs);
    retryMs = Math.min(retryMs * 2, 30000);
  };
}

function card(stream) {
  let c = state.streams[stream];
  if (c) return c;
  const el = document.createElement("article");
  el.className = "card";
  const title = document.createElement("h3");
  title.textContent = stream;
  const label = document.createElement("div");
  label.className = "label";
  const detail = document.createElement("div");
  detail.className = "confidence";
  const bars = document.createElement("div");
  el.append(title, label, detail, bars);
  $("cards").append(el);
  c = state.streams[stream] = { el, label, detail, rows: buildBars(bars, state.labels), seen: 0, last: null };
  $("empty").hidden = true;
  return c;
}

function onEstimate(e) {
  state.nEstimates += 1;
  const c = card(e.stream);
  c.seen = performance.now();
  c.last = e;
  c.el.classList.remove("stale");
  c.label.textContent = e.speech ? e.label : "no speech";
  c.label.classList.toggle("silent", !e.speech);
  c.label.style.color = e.speech ? colorFor(state.labels, e.label) : "";
  const what = e.speech ? `confidence ${Math.round(100 * e.confidence)}%` : "—";
  c.detail.textContent = `${what} · at ${e.t_end_s.toFixed(1)} s · ${e.latency_ms.toFixed(0)} ms`;
  setBars(c.rows, e.speech ? e.probs : null);
}

function sweep() {
  const now = performance.now();
  for (const [stream, c] of Object.entries(state.streams)) {
    const age = (now - c.seen) / 1000;
    c.el.classList.toggle("stale", age > STALE_S);
    if (age > GONE_S) {
      c.el.remove();
      delete state.streams[stream];
    }
  }
  $("empty").hidden = Object.keys(state.streams).length > 0;
}

$("token").value = params.get("token") || "";
$("meter-link").href = "/" + location.search;
$("connect").onclick = () => connect();
setInterval(sweep, 1000);
connect();
