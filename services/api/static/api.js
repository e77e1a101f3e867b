// Reading the API: authenticated JSON requests, history ranges, and the shapes of the
// signals and history bodies.

// The park page's chart ranges and the history bucket each is read at.
export const RANGES = {
  "1h": { ms: 3_600_000, bucket: "1m", bucketMs: 60_000 },
  "6h": { ms: 6 * 3_600_000, bucket: "5m", bucketMs: 300_000 },
  "24h": { ms: 24 * 3_600_000, bucket: "15m", bucketMs: 900_000 },
};

// With API keys on, the page signs in once (see SignInView): the session cookie is
// HttpOnly, so this script never sees a secret, and the browser sends the cookie with
// every request and with the live stream. No secret is ever put in a URL.
export async function getJSON(path, signal) {
  const headers = { Accept: "application/json" };
  const response = await fetch(path, { signal, headers, credentials: "same-origin" });
  if (!response.ok) {
    const error = new Error(`${response.status} ${path}`);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

function wholeMinute(ms) {
  return Math.floor(ms / 60_000) * 60_000;
}

// The last whole minute that ingest has most likely rolled up: history ends there, so
// the newest bucket is not a half-filled one that looks like a drop.
export function historyEnd() {
  return wholeMinute(Date.now() - 30_000);
}

export function historyUrl(parkId, rangeMs, bucket) {
  const end = historyEnd();
  const start = end - rangeMs;
  const q = new URLSearchParams({
    start: new Date(start).toISOString(),
    end: new Date(end).toISOString(),
    bucket,
  });
  return { url: `/v1/parks/${encodeURIComponent(parkId)}/signals/history?${q}`, start, end };
}

// ---- reading the API's shapes --------------------------------------------------------

export function signalOf(body, name) {
  const value = body?.signals?.[name];
  return value === undefined ? null : value;
}

export function countsOf(body) {
  return body?.counts ?? {};
}

export function coverageOf(body, name) {
  const c = body?.coverage?.[name];
  if (!c || typeof c !== "object") return null;
  const devices = c.devices ?? 0;
  const reporting = c.reporting ?? 0;
  return { devices, reporting, share: c.share ?? (devices ? reporting / devices : 1) };
}

export function componentsOf(body) {
  return body?.components ?? {};
}

// History points: [{ts, signals, totals|sums}] under `data`, `buckets` or `points`.
function historyRows(body) {
  return body?.data ?? body?.buckets ?? body?.points ?? [];
}

export function historySeries(body, pick) {
  return historyRows(body).map((row) => {
    const v = pick(row);
    return { t: Date.parse(row.ts ?? row.start), v: v === undefined ? null : v };
  });
}

// Per history bucket, the share of its factory-minutes with lines that are off shift
// (planned time); buckets wholly on shift are left out, so a fleet without calendars
// shades nothing.
export function offShiftShade(body) {
  return historyRows(body)
    .map((row) => {
      const all = row?.counts?.factory_minutes_with_lines ?? 0;
      const scheduled = row?.counts?.factory_minutes_scheduled ?? all;
      return { t: Date.parse(row.ts ?? row.start), share: all > 0 ? 1 - scheduled / all : 0 };
    })
    .filter((s) => s.share > 0);
}

export function rowOutput(row) {
  return row?.totals?.output_units ?? row?.sums?.output_units ?? row?.counts?.output_units_increase ?? null;
}

// Whether the bucket had any data at all (an empty bucket reads as a gap, not as zero).
export function rowHasData(row) {
  const cov = row?.coverage?.health_index ?? row?.coverage?.online_rate;
  if (cov && typeof cov === "object") return (cov.reporting ?? 0) > 0;
  const sums = row?.sums ?? row?.totals;
  if (sums && typeof sums === "object") return (sums.devices_reporting ?? sums.devices_online ?? 1) > 0;
  return true;
}

// The newest value and its change since the value an hour before it, from a history
// series; null until the history reaches back that far (no arrow rather than a wrong one).
// (Five minutes of slack: the 1-hour chart's first minute is 59 minutes before its last.)
export function trendOf(series, lookbackMs = 3_600_000) {
  const valid = series.filter((p) => p.v !== null && Number.isFinite(p.v));
  if (valid.length < 2) return null;
  const last = valid[valid.length - 1];
  let before = null;
  for (const p of valid) if (p.t <= last.t - lookbackMs + 300_000) before = p;
  if (before === null) return null;
  return { last: last.v, delta: last.v - before.v };
}
