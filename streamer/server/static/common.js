// What the live meter (app.js) and the wall (wall.js) share: URLs, the token, messages, colours, bars.

export const params = new URLSearchParams(location.search);

// The server's error codes (docs/protocol.md) in words; others are shown as "code: message".
const ERROR_TEXT = {
  bad_sample_rate: "the server does not accept this microphone's sample rate",
  too_many_streams: "the server is streaming its maximum number of streams; try again later",
  too_many_connections: "the server has its maximum number of connections; try again later",
  too_many_subscribers: "the server has its maximum number of viewers; try again later",
  stream_in_use: "another client is streaming under this stream name",
  idle_timeout: "the server closed the stream: no audio reached it for too long",
  internal: "the server hit an internal error",
};

export function errorText(msg) {
  const known = ERROR_TEXT[msg.code];
  return `Server error ${msg.code}: ${known || msg.message}`;
}

export function token() {
  const field = document.getElementById("token");
  const typed = field ? field.value.trim() : "";
  return typed || params.get("token") || "";
}

export function wsUrl(path, extra = {}) {
  const url = new URL(path, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const t = token();
  if (t) url.searchParams.set("token", t);
  for (const [k, v] of Object.entries(extra)) url.searchParams.set(k, v);
  return url.href;
}

// Why a WebSocket that never opened was refused: the handshake's HTTP status, asked again over fetch.
export async function refusalText(path) {
  try {
    const url = new URL(path, location.href);
    const t = token();
    if (t) url.searchParams.set("token", t);
    const response = await fetch(url, { cache: "no-store" });
    if (response.status === 401) return "The server wants a token: enter it above (or add ?token=... to the address).";
    if (response.status === 503) return "The server is full (too many connections); try again later.";
    return "The server refused the connection: this page's address is not an allowed origin (see --allow-origin).";
  } catch (e) {
    return "Cannot reach the server: is `emostream serve` running?";
  }
}

export function closeText(event) {
  const reason = event.reason ? ` (${event.reason})` : "";
  return `Connection closed by the server: code ${event.code}${reason}.`;
}

const PALETTE = ["#e4572e", "#f3a712", "#a8c256", "#29335c", "#669bbc", "#9b5de5", "#00a6a6", "#c44569", "#7f8c8d", "#3d5a80"];

export function colorFor(labels, label) {
  const i = labels.indexOf(label);
  return i < 0 ? "#bbb" : PALETTE[i % PALETTE.length];
}

// One row per class, in the model's order: name, bar, percentage. Returns label -> {bar, value}.
export function buildBars(container, labels) {
  container.replaceChildren();
  const rows = {};
  for (const label of labels) {
    const row = document.createElement("div");
    row.className = "bar-row";
    const name = document.createElement("span");
    name.className = "bar-name";
    name.textContent = label;
    const track = document.createElement("span");
    track.className = "bar-track";
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.background = colorFor(labels, label);
    track.append(bar);
    const value = document.createElement("span");
    value.className = "bar-value";
    row.append(name, track, value);
    container.append(row);
    rows[label] = { bar, value };
  }
  return rows;
}

export function setBars(rows, probs) {
  for (const [label, { bar, value }] of Object.entries(rows)) {
    const p = probs && label in probs ? probs[label] : 0;
    bar.style.width = `${(100 * p).toFixed(1)}%`;
    value.textContent = `${Math.round(100 * p)}%`;
  }
}

// The page's message line: a status text, or an error (kept in `errors`, which the tests read).
export function showMessage(text, isError, errors) {
  const el = document.getElementById("message");
  el.hidden = !text;
  el.textContent = text || "";
  el.classList.toggle("error", isError);
  if (isError && text) errors.push(text);
}
