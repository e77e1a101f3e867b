// The connection to the live data: the top bar's pill, the park's Server-Sent Events
// stream, and the states of the stream and of the overview's polling.

import { esc } from "./format.js";
import { t } from "./i18n.js";

// A stream that sent nothing for this long is shown as stale (the server sends signals at
// least every 2 s, so three missed updates and some slack).
const STALE_AFTER_MS = 7_000;

const conn = document.getElementById("conn");
const connText = document.getElementById("conn-text");

export function setConn(state, detail = "") {
  conn.dataset.state = state;
  document.body.dataset.conn = state;
  connText.innerHTML = `${esc(t(`conn.${state}`))}${detail ? `<span class="conn-detail"> · ${esc(detail)}</span>` : ""}`;
}

// Open a park's stream. `handlers` maps event names to functions of the event's parsed
// data (an event that is not JSON is skipped); `onEvent` runs on every event, `onOpen` when
// the stream connects and `onError(closed)` when it fails, `closed` when the browser will
// not retry by itself (the server refused the stream outright).
export function openParkStream(parkId, { handlers, onEvent, onOpen, onError }) {
  const source = new EventSource(`/v1/parks/${encodeURIComponent(parkId)}/stream`);
  for (const [name, handler] of Object.entries(handlers)) {
    source.addEventListener(name, (ev) => {
      onEvent();
      let data;
      try {
        data = JSON.parse(ev.data);
      } catch {
        return;
      }
      handler(data);
    });
  }
  source.onopen = onOpen;
  source.onerror = () => onError(source.readyState === EventSource.CLOSED);
  return source;
}

// The park stream's state, from whether it is connected and the age (ms) of its last
// signals (null before the first): live, stale (connected but no fresh signals, or the
// server said so), disconnected (it had signals and lost the connection), or idle.
export function streamState({ connected, age, staleReason }) {
  if (!connected && age !== null) return "disconnected";
  if (!connected) return "idle";
  if (staleReason || (age !== null && age > STALE_AFTER_MS)) return "stale";
  if (age === null) return "idle";
  return "live";
}

// The overview's polling state, from the time (ms) of the last answered refresh (null
// before the first): error or idle before it, stale after three missed refreshes, polling.
export function pollState({ lastOk, failed, now, refreshMs }) {
  if (lastOk === null) return failed ? "error" : "idle";
  return now - lastOk > 3 * refreshMs ? "stale" : "polling";
}
