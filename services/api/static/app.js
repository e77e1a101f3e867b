// parksense operators' dashboard: an overview of all parks and a live page per park.
// Hash routes: "#/" (overview) and "#/parks/{park_id}". The park page follows the park's
// Server-Sent Events stream; the overview refreshes each park's signals every few seconds.

import { has, lang, localName, setLang, t } from "./i18n.js";
import { ring, sparkline, timeChart } from "./charts.js";

// A stream that sent nothing for this long is shown as stale (the server sends signals at
// least every 2 s, so three missed updates and some slack).
const STALE_AFTER_MS = 7_000;
// Overview: how often each park's live signals and its 6-hour history are fetched.
const OVERVIEW_REFRESH_MS = 5_000;
const OVERVIEW_HISTORY_MS = 60_000;
// Park page: how often the charts' history is fetched again.
const HISTORY_REFRESH_MS = 60_000;
// Offline devices listed before "and N more".
const OFFLINE_LIST_MAX = 200;
const RANGES = {
  "1h": { ms: 3_600_000, bucket: "1m", bucketMs: 60_000 },
  "6h": { ms: 6 * 3_600_000, bucket: "5m", bucketMs: 300_000 },
  "24h": { ms: 24 * 3_600_000, bucket: "15m", bucketMs: 900_000 },
};
const SIGNALS = [
  "health_index",
  "operating_rate",
  "online_rate",
  "capacity_utilization",
  "power_kw",
  "energy_kwh",
  "energy_intensity_kwh_per_unit",
  "alarm_rate",
];
const RATIOS = new Set(["online_rate", "operating_rate", "capacity_utilization", "alarm_rate"]);
const COMPONENTS = ["operating_rate", "capacity_utilization", "online_rate", "no_alarm"];

const app = document.getElementById("app");
const crumbs = document.getElementById("crumbs");
const conn = document.getElementById("conn");
const connText = document.getElementById("conn-text");
const langButton = document.getElementById("lang");
const signOutButton = document.getElementById("signout");
const foot = document.getElementById("foot");

// ---- small helpers -------------------------------------------------------------------

function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function nf(digits) {
  return new Intl.NumberFormat(lang() === "zh" ? "zh-CN" : "en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

function num(value, digits = 1) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  return nf(digits).format(value);
}

function pct(ratio, digits = 1) {
  if (ratio === null || ratio === undefined || !Number.isFinite(ratio)) return "—";
  return num(ratio * 100, digits);
}

// A ratio as "42%", or "—" when it is null (a rate with nothing scheduled).
function pctText(ratio) {
  return ratio === null || ratio === undefined ? "—" : `${pct(ratio, 0)}%`;
}

// A chart figure: the read-out keeps about three significant places; an axis label as
// many decimals as its step needs.
function chartNum(value, step) {
  if (step === undefined) return num(value, autoDigits(value));
  return num(value, step >= 1 ? 0 : step >= 0.1 ? 1 : 2);
}

// A measured value or a threshold as written (7.1 stays 7.1), up to three decimals.
function exact(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  return new Intl.NumberFormat(lang() === "zh" ? "zh-CN" : "en-US", { maximumFractionDigits: 3 }).format(value);
}

// Digits that keep a figure at about three significant places.
function autoDigits(value) {
  const a = Math.abs(value ?? 0);
  return a >= 100 ? 0 : a >= 10 ? 1 : 2;
}

function clock(date) {
  if (!date) return "—";
  const d = new Date(date);
  return d.toLocaleTimeString(lang() === "zh" ? "zh-CN" : "en-GB", { hour12: false });
}

function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return t("dur.s", { n: s });
  if (s < 3600) return t("dur.m", { n: Math.floor(s / 60) });
  if (s < 86400) return t("dur.h", { n: Math.floor(s / 3600), m: Math.floor((s % 3600) / 60) });
  return t("dur.d", { n: Math.floor(s / 86400), h: Math.floor((s % 86400) / 3600) });
}

function industry(name) {
  const key = `industry.${name}`;
  return has(key) ? t(key) : name || "—";
}

// With API keys on, the page signs in once (see SignInView): the session cookie is
// HttpOnly, so this script never sees a secret, and the browser sends the cookie with
// every request and with the live stream. No secret is ever put in a URL.
async function getJSON(path, signal) {
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
function historyEnd() {
  return wholeMinute(Date.now() - 30_000);
}

function historyUrl(parkId, rangeMs, bucket) {
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

function signalOf(body, name) {
  const value = body?.signals?.[name];
  return value === undefined ? null : value;
}

function countsOf(body) {
  return body?.counts ?? {};
}

function coverageOf(body, name) {
  const c = body?.coverage?.[name];
  if (!c || typeof c !== "object") return null;
  const devices = c.devices ?? 0;
  const reporting = c.reporting ?? 0;
  return { devices, reporting, share: c.share ?? (devices ? reporting / devices : 1) };
}

function componentsOf(body) {
  return body?.components ?? {};
}

// History points: [{ts, signals, totals|sums}] under `data`, `buckets` or `points`.
function historyRows(body) {
  return body?.data ?? body?.buckets ?? body?.points ?? [];
}

function historySeries(body, pick) {
  return historyRows(body).map((row) => {
    const v = pick(row);
    return { t: Date.parse(row.ts ?? row.start), v: v === undefined ? null : v };
  });
}

// Per history bucket, the share of its factory-minutes with lines that are off shift
// (planned time); buckets wholly on shift are left out, so a fleet without calendars
// shades nothing.
function offShiftShade(body) {
  return historyRows(body)
    .map((row) => {
      const all = row?.counts?.factory_minutes_with_lines ?? 0;
      const scheduled = row?.counts?.factory_minutes_scheduled ?? all;
      return { t: Date.parse(row.ts ?? row.start), share: all > 0 ? 1 - scheduled / all : 0 };
    })
    .filter((s) => s.share > 0);
}

function rowOutput(row) {
  return row?.totals?.output_units ?? row?.sums?.output_units ?? row?.counts?.output_units_increase ?? null;
}

// Whether the bucket had any data at all (an empty bucket reads as a gap, not as zero).
function rowHasData(row) {
  const cov = row?.coverage?.health_index ?? row?.coverage?.online_rate;
  if (cov && typeof cov === "object") return (cov.reporting ?? 0) > 0;
  const sums = row?.sums ?? row?.totals;
  if (sums && typeof sums === "object") return (sums.devices_reporting ?? sums.devices_online ?? 1) > 0;
  return true;
}

// The newest value and its change since the value an hour before it, from a history
// series; null until the history reaches back that far (no arrow rather than a wrong one).
// (Five minutes of slack: the 1-hour chart's first minute is 59 minutes before its last.)
function trendOf(series, lookbackMs = 3_600_000) {
  const valid = series.filter((p) => p.v !== null && Number.isFinite(p.v));
  if (valid.length < 2) return null;
  const last = valid[valid.length - 1];
  let before = null;
  for (const p of valid) if (p.t <= last.t - lookbackMs + 300_000) before = p;
  if (before === null) return null;
  return { last: last.v, delta: last.v - before.v };
}

function trendHtml(delta, { digits = 1, scale = 1, inverse = false, suffix = "" } = {}) {
  if (delta === null || delta === undefined || !Number.isFinite(delta)) return "";
  const shown = delta * scale;
  const threshold = 0.5 * 10 ** -digits;
  const dir = Math.abs(shown) < threshold ? "flat" : shown > 0 ? "up" : "down";
  const arrow = dir === "flat" ? "→" : dir === "up" ? "▲" : "▼";
  const sign = shown > 0 ? "+" : "";
  const title = esc(t("overview.vs_1h"));
  return `<span class="trend ${dir}${inverse ? " inverse" : ""}" title="${title}">${arrow} ${sign}${num(shown, digits)}${suffix}</span>`;
}

function healthClass(score) {
  if (score === null || score === undefined) return "";
  return score >= 75 ? "good" : score >= 50 ? "warn" : "bad";
}

function healthColor(score) {
  const cls = healthClass(score);
  return cls === "good" ? "var(--good)" : cls === "warn" ? "var(--warn)" : cls === "bad" ? "var(--bad)" : "var(--faint)";
}

// ---- connection pill -----------------------------------------------------------------

function setConn(state, detail = "") {
  conn.dataset.state = state;
  document.body.dataset.conn = state;
  connText.innerHTML = `${esc(t(`conn.${state}`))}${detail ? `<span class="conn-detail"> · ${esc(detail)}</span>` : ""}`;
}

// ---- views ---------------------------------------------------------------------------

let view = null;

function setCrumbs(items) {
  crumbs.innerHTML = items
    .map((item, i) => {
      const sep = i ? '<span class="sep">/</span>' : "";
      return item.href
        ? `${sep}<a href="${esc(item.href)}">${esc(item.label)}</a>`
        : `${sep}<span class="here">${esc(item.label)}</span>`;
    })
    .join("");
}

function route() {
  if (view) view.destroy();
  const match = window.location.hash.match(/^#\/parks\/([a-z0-9][a-z0-9_-]{0,63})\/?$/);
  view = match ? new ParkView(match[1]) : new OverviewView();
  view.start();
}

function renderChrome() {
  langButton.textContent = t("lang.toggle");
  signOutButton.textContent = t("signin.signout");
  foot.innerHTML = `${esc(t("foot.text"))} <a href="/docs">/docs</a>`;
}

// ---- overview ------------------------------------------------------------------------

class OverviewView {
  constructor() {
    this.abort = new AbortController();
    this.timers = [];
    this.parks = [];
    this.live = new Map();
    this.history = new Map();
    this.lastOk = null;
    this.failed = false;
  }

  async start() {
    setCrumbs([{ label: t("nav.overview") }]);
    setConn("idle");
    app.innerHTML = `<div class="err">${esc(t("charts.loading"))}</div>`;
    try {
      const body = await getJSON("/v1/parks", this.abort.signal);
      this.parks = body.data ?? [];
    } catch (err) {
      if (this.abort.signal.aborted) return;
      if (err.status === 401) {
        showSignIn();
        return;
      }
      setConn("error");
      app.innerHTML = `<div class="err">${esc(t("conn.error"))}</div>`;
      this.timers.push(setTimeout(() => route(), 5_000));
      return;
    }
    this.render();
    this.refresh();
    this.refreshHistory();
    this.timers.push(setInterval(() => this.refresh(), OVERVIEW_REFRESH_MS));
    this.timers.push(setInterval(() => this.refreshHistory(), OVERVIEW_HISTORY_MS));
    this.timers.push(setInterval(() => this.tick(), 1_000));
  }

  destroy() {
    this.abort.abort();
    for (const timer of this.timers) clearInterval(timer);
  }

  relabel() {
    setCrumbs([{ label: t("nav.overview") }]);
    this.render();
    this.tick();
  }

  async refresh() {
    const results = await Promise.allSettled(
      this.parks.map((p) => getJSON(`/v1/parks/${encodeURIComponent(p.park_id)}/signals`, this.abort.signal)),
    );
    if (this.abort.signal.aborted) return;
    let ok = 0;
    results.forEach((result, i) => {
      if (result.status === "fulfilled") {
        ok += 1;
        this.live.set(this.parks[i].park_id, result.value);
      }
    });
    if (ok || !this.parks.length) this.lastOk = Date.now();
    this.failed = this.parks.length > 0 && ok === 0;
    this.update();
    this.tick();
  }

  async refreshHistory() {
    await Promise.allSettled(
      this.parks.map(async (p) => {
        const { url } = historyUrl(p.park_id, RANGES["6h"].ms, "15m");
        const body = await getJSON(url, this.abort.signal);
        this.history.set(p.park_id, body);
      }),
    );
    if (!this.abort.signal.aborted) this.update();
  }

  tick() {
    if (this.lastOk === null) {
      setConn(this.failed ? "error" : "idle");
    } else if (Date.now() - this.lastOk > 3 * OVERVIEW_REFRESH_MS) {
      setConn("stale", t("conn.stale_detail", { age: duration((Date.now() - this.lastOk) / 1000) }));
    } else {
      setConn("polling", t("conn.updated", { time: clock(this.lastOk) }));
    }
  }

  render() {
    if (!this.parks.length) {
      app.innerHTML = `<div class="page-head"><h1>${esc(t("overview.title"))}</h1></div><div class="panel none">${esc(t("overview.empty"))}</div>`;
      return;
    }
    const cards = this.parks
      .map(
        (p) => `<a class="panel park-card" href="#/parks/${esc(p.park_id)}" data-park="${esc(p.park_id)}">
          <div class="park-card-head">
            <div class="titles"><h3>${esc(localName(p, p.park_id))}</h3>
              <div class="city">${esc(p.city)} · ${esc(t("park.factories_n", { n: p.factories }))} · ${esc(t("park.devices_n", { n: p.devices }))}</div>
            </div>
            <div class="score" data-role="score"></div>
          </div>
          <div class="park-stats live-figures" data-role="stats"></div>
          <div class="park-spark" data-role="spark"></div>
        </a>`,
      )
      .join("");
    const devices = this.parks.reduce((sum, p) => sum + (p.devices ?? 0), 0);
    app.innerHTML = `
      <div class="page-head">
        <h1>${esc(t("overview.title"))}</h1>
        <div class="meta" data-role="subtitle">${esc(t("overview.subtitle", { parks: this.parks.length, devices, window: "5 min" }))}</div>
      </div>
      <div class="summary live-figures" data-role="summary"></div>
      <div class="parks">${cards}</div>`;
    this.update();
  }

  update() {
    if (!this.parks.length) return;
    const total = { online: 0, registered: 0, operating: 0, withLines: 0, offShift: 0, power: 0, inAlarm: 0, energy: 0 };
    let windowS = null;
    for (const p of this.parks) {
      const body = this.live.get(p.park_id);
      const card = app.querySelector(`.park-card[data-park="${CSS.escape(p.park_id)}"]`);
      if (!card || !body) continue;
      const hist = this.history.get(p.park_id);
      const series = (pick) => (hist ? historySeries(hist, (r) => (rowHasData(r) ? pick(r) : null)) : []);
      const c = countsOf(body);
      windowS = body.window_s ?? windowS;
      total.online += c.devices_online ?? 0;
      total.registered += c.devices_registered ?? 0;
      total.operating += c.factories_operating ?? 0;
      total.withLines += c.factories_scheduled ?? c.factories_with_lines ?? 0;
      total.offShift += (c.factories_with_lines ?? 0) - (c.factories_scheduled ?? c.factories_with_lines ?? 0);
      total.power += signalOf(body, "power_kw") ?? 0;
      total.energy += signalOf(body, "energy_kwh") ?? 0;
      total.inAlarm += c.devices_in_alarm ?? 0;

      const score = signalOf(body, "health_index");
      card.querySelector('[data-role="score"]').innerHTML = `${ring(score, { color: healthColor(score) })}<div class="val" data-signal="health_index" data-value="${score ?? ""}">${num(score, 0)}</div>`;
      const ratioTrend = (name) => {
        const tr = trendOf(series((r) => r.signals?.[name]));
        return tr ? trendHtml(tr.delta, { digits: 0, scale: 100, suffix: "%", inverse: name === "alarm_rate" }) : "";
      };
      const powerTrend = trendOf(series((r) => r.signals?.power_kw));
      const stat = (label, value, trendMarkup = "") =>
        `<div class="stat"><div class="k">${esc(label)}</div><div class="v">${value}</div><div class="t">${trendMarkup || "&nbsp;"}</div></div>`;
      const alarms = c.devices_in_alarm ?? 0;
      card.querySelector('[data-role="stats"]').innerHTML = [
        stat(t("ov.online"), `${pct(signalOf(body, "online_rate"), 0)}%`, ratioTrend("online_rate")),
        stat(t("ov.operating"), pctText(signalOf(body, "operating_rate")), ratioTrend("operating_rate")),
        stat(t("ov.power"), num(signalOf(body, "power_kw"), 0), powerTrend ? trendHtml(powerTrend.delta, { digits: 0 }) : ""),
        stat(t("ov.alarms"), alarms ? `<span class="reason bad">${num(alarms, 0)}</span>` : "0", ratioTrend("alarm_rate")),
      ].join("");
      const health = series((r) => r.signals?.health_index);
      const healthTrend = trendOf(health);
      card.querySelector('[data-role="spark"]').innerHTML = `<div class="spark-head"><span>${esc(t("overview.health_6h"))}</span>${healthTrend ? trendHtml(healthTrend.delta) : ""}</div>${sparkline(
        health.map((pt) => pt.v),
        { width: 300, height: 30, color: healthColor(score), yMin: 0, yMax: 100 },
      )}`;
    }
    const summary = app.querySelector('[data-role="summary"]');
    if (summary && this.live.size) {
      const windowText = `${Math.round((windowS ?? 300) / 60)} min`;
      const tile = (label, value, unit, sub) =>
        `<div class="panel tile"><div class="tile-label">${esc(label)}</div><div class="tile-value"><span class="num">${value}</span><span class="unit">${esc(unit)}</span></div><div class="tile-sub">${esc(sub)}</div></div>`;
      summary.innerHTML = [
        tile(t("sig.online_rate"), pct(total.registered ? total.online / total.registered : null), "%", t("sub.online", { a: total.online, b: total.registered })),
        tile(
          t("sig.operating_rate"),
          pct(total.withLines ? total.operating / total.withLines : null),
          "%",
          !total.withLines && total.offShift ? t("sub.none_scheduled") : t(total.offShift ? "sub.operating_planned" : "sub.operating", { a: total.operating, b: total.withLines }),
        ),
        tile(t("sig.power_kw"), num(total.power, autoDigits(total.power)), t("unit.kw"), t("overview.totals")),
        tile(t("sig.energy_kwh"), num(total.energy, autoDigits(total.energy)), t("unit.kwh"), t("sub.energy", { window: windowText })),
        tile(t("alarms.title"), num(total.inAlarm, 0), "", t("sub.alarm", { a: total.inAlarm, b: total.online })),
      ].join("");
    }
  }
}

// ---- one park ------------------------------------------------------------------------

class ParkView {
  constructor(parkId) {
    this.parkId = parkId;
    this.abort = new AbortController();
    this.timers = [];
    this.source = null;
    this.detail = null;
    this.signals = null;
    this.lastEventAt = null;
    this.lastSignalsAt = null;
    this.serverOffsetMs = 0;
    this.alarms = new Map();
    this.offline = new Map();
    this.factories = [];
    this.fresh = new Set();
    this.staleReason = null;
    this.connected = false;
    const asked = new URLSearchParams(window.location.search).get("range");
    this.range = asked in RANGES ? asked : "6h";
    this.history = null;
    this.historyState = "loading";
    this.reconnectTimer = null;
  }

  async start() {
    setCrumbs([{ label: t("nav.overview"), href: "#/" }, { label: this.parkId }]);
    setConn("idle");
    app.innerHTML = `<div class="err">${esc(t("charts.loading"))}</div>`;
    try {
      this.detail = await getJSON(`/v1/parks/${encodeURIComponent(this.parkId)}`, this.abort.signal);
    } catch (err) {
      if (this.abort.signal.aborted) return;
      if (err.status === 404) {
        setConn("idle");
        app.innerHTML = `<div class="err">${esc(t("park.unknown"))}<br><br><a href="#/">${esc(t("park.back"))}</a></div>`;
      } else {
        if (err.status === 401) {
          showSignIn();
          return;
        }
        setConn("error");
        app.innerHTML = `<div class="err">${esc(t("conn.error"))}</div>`;
        this.timers.push(setTimeout(() => route(), 5_000));
      }
      return;
    }
    this.render();
    this.connect();
    this.loadHistory();
    this.timers.push(setInterval(() => this.loadHistory(), HISTORY_REFRESH_MS));
    this.timers.push(setInterval(() => this.tick(), 1_000));
    this.ro = new ResizeObserver(() => this.drawCharts());
    this.ro.observe(app.querySelector(".charts"));
  }

  destroy() {
    this.abort.abort();
    for (const timer of this.timers) clearInterval(timer);
    clearTimeout(this.reconnectTimer);
    if (this.source) this.source.close();
    if (this.ro) this.ro.disconnect();
  }

  relabel() {
    this.render();
    this.renderAll();
  }

  // -- stream --

  connect() {
    if (this.source) this.source.close();
    const source = new EventSource(`/v1/parks/${encodeURIComponent(this.parkId)}/stream`);
    this.source = source;
    const on = (name, handler) =>
      source.addEventListener(name, (ev) => {
        this.lastEventAt = Date.now();
        let data;
        try {
          data = JSON.parse(ev.data);
        } catch {
          return;
        }
        handler(data);
      });
    source.onopen = () => {
      this.connected = true;
      this.tick();
    };
    source.onerror = () => {
      this.connected = false;
      this.tick();
      // The browser retries by itself unless the server refused the stream outright.
      if (source.readyState === EventSource.CLOSED) {
        // Refused outright: an ended session shows the sign-in form, anything else retries.
        loadSession().then(
          (found) => {
            if (!found && view === this) showSignIn();
          },
          () => {},
        );
        clearTimeout(this.reconnectTimer);
        this.reconnectTimer = setTimeout(() => this.connect(), 5_000);
      }
    };
    on("signals", (data) => {
      this.signals = data;
      this.lastSignalsAt = Date.now();
      this.staleReason = null;
      if (data.as_of) this.serverOffsetMs = Date.parse(data.as_of) - Date.now();
      this.renderTiles();
      this.renderChartTitles();
      this.tick();
    });
    on("snapshot", (data) => {
      this.alarms = new Map((data.alarms ?? []).map((a) => [a.device_id, a]));
      this.offline = new Map((data.offline ?? []).map((o) => [o.device_id, o]));
      this.fresh.clear();
      this.renderAlarms();
      this.renderOffline();
    });
    on("alarm", (data) => {
      if (data.active) {
        this.alarms.set(data.device_id, data);
        this.flash(`alarm:${data.device_id}`);
      } else {
        this.alarms.delete(data.device_id);
      }
      this.renderAlarms();
    });
    on("availability", (data) => {
      if (data.online) {
        this.offline.delete(data.device_id);
      } else {
        this.offline.set(data.device_id, data);
        this.flash(`offline:${data.device_id}`);
      }
      this.renderOffline();
    });
    on("factories", (data) => {
      this.factories = data.factories ?? [];
      this.renderFactories();
    });
    on("stale", (data) => {
      this.staleReason = data;
      this.tick();
    });
  }

  flash(key) {
    this.fresh.add(key);
    setTimeout(() => this.fresh.delete(key), 2_500);
  }

  // Stream state: live, stale (connected but no fresh signals) or disconnected.
  tick() {
    const now = Date.now();
    const age = this.lastSignalsAt === null ? null : now - this.lastSignalsAt;
    let state;
    let detail = "";
    const asOf = this.signals?.as_of ? clock(this.signals.as_of) : "—";
    if (!this.connected && this.lastSignalsAt !== null) {
      state = "disconnected";
      detail = t("conn.stale_detail", { age: duration(age / 1000) });
    } else if (!this.connected) {
      state = "idle";
    } else if (this.staleReason || (age !== null && age > STALE_AFTER_MS)) {
      state = "stale";
      detail = age === null ? "" : t("conn.stale_detail", { age: duration(age / 1000) });
    } else if (age === null) {
      state = "idle";
    } else {
      state = "live";
      detail = t("conn.updated", { time: asOf });
    }
    setConn(state, detail);
    const banner = app.querySelector('[data-role="banner"]');
    if (banner) {
      if (state === "disconnected") {
        banner.className = "banner disconnected";
        banner.textContent = t("disc.banner", { time: asOf });
        banner.hidden = false;
      } else if (state === "stale") {
        banner.className = "banner stale";
        const reason = this.staleReason?.reason;
        banner.textContent =
          reason === "park_removed"
            ? t("stale.removed", { time: asOf })
            : reason
              ? t("stale.database", { time: asOf })
              : t("stale.banner", { age: duration((age ?? 0) / 1000) });
        banner.hidden = false;
      } else {
        banner.hidden = true;
      }
    }
    this.renderOfflineDurations();
  }

  serverNow() {
    return Date.now() + this.serverOffsetMs;
  }

  // -- history --

  async loadHistory() {
    const range = RANGES[this.range];
    const { url, start, end } = historyUrl(this.parkId, range.ms, range.bucket);
    try {
      const body = await getJSON(url, this.abort.signal);
      this.history = { body, start, end, range: this.range };
      this.historyState = "ok";
    } catch (err) {
      if (this.abort.signal.aborted) return;
      this.historyState = "unavailable";
    }
    this.drawCharts();
    this.renderTiles();
  }

  // -- rendering --

  render() {
    const d = this.detail;
    setCrumbs([{ label: t("nav.overview"), href: "#/" }, { label: localName(d, d.park_id) }]);
    const devices = d.factories.reduce((sum, f) => sum + f.devices.length, 0);
    const tiles = SIGNALS.map(
      (name) => `<div class="panel tile${name === "health_index" ? " health" : ""}" data-signal="${name}"></div>`,
    ).join("");
    const rangeButtons = Object.keys(RANGES)
      .map((key) => `<button type="button" data-range="${key}" aria-pressed="${key === this.range}">${esc(t(`range.${key}`))}</button>`)
      .join("");
    const chart = (key) =>
      `<div class="panel chart" data-chart="${key}"><div class="chart-title"><span data-role="title"></span><span class="last" data-role="last"></span></div><div class="chart-body"></div></div>`;
    app.innerHTML = `
      <div class="page-head">
        <div>
          <h1>${esc(localName(d, d.park_id))}</h1>
          <div class="meta"><span>${esc(d.city)}</span><span>${esc(t("park.factories_n", { n: d.factories.length }))}</span><span>${esc(t("park.devices_n", { n: devices }))}</span><span data-role="window"></span></div>
        </div>
        <div class="meta" data-role="asof"></div>
      </div>
      <div class="banner" data-role="banner" role="alert" hidden></div>
      <section class="tiles live-figures" aria-label="signals">${tiles}</section>
      <div class="charts-head"><h2 data-role="charts-title"></h2><div class="seg" role="group">${rangeButtons}</div></div>
      <section class="charts">${chart("power")}${chart("output")}${chart("operating")}${chart("health")}</section>
      <section class="lists">
        <div class="panel"><div class="panel-head"><h2>${esc(t("alarms.title"))}<span class="count" data-role="alarm-count">0</span></h2></div><div class="list" data-role="alarms"></div></div>
        <div class="panel"><div class="panel-head"><h2>${esc(t("offline.title"))}<span class="count" data-role="offline-count">0</span></h2></div><div class="list" data-role="offline"></div></div>
      </section>
      <section class="panel">
        <div class="panel-head"><h2>${esc(t("factories.title"))}</h2></div>
        <div class="table live-figures" data-role="factories"></div>
      </section>`;
    for (const button of app.querySelectorAll("[data-range]")) {
      button.addEventListener("click", () => {
        this.range = button.dataset.range;
        for (const b of app.querySelectorAll("[data-range]")) b.setAttribute("aria-pressed", String(b === button));
        this.historyState = "loading";
        this.drawCharts();
        this.loadHistory();
      });
    }
    if (this.ro) this.ro.observe(app.querySelector(".charts"));
  }

  renderAll() {
    this.renderTiles();
    this.renderChartTitles();
    this.drawCharts();
    this.renderAlarms();
    this.renderOffline();
    this.renderFactories();
    this.tick();
  }

  historyTrend(pick) {
    if (!this.history) return null;
    return trendOf(historySeries(this.history.body, (r) => (rowHasData(r) ? pick(r) : null)));
  }

  renderTiles() {
    const body = this.signals;
    if (!body) return;
    const c = countsOf(body);
    const windowMin = Math.round((body.window_s ?? 300) / 60);
    const windowText = `${windowMin} min`;
    const asofEl = app.querySelector('[data-role="asof"]');
    if (asofEl) asofEl.textContent = t("park.as_of", { time: clock(body.as_of) });
    const winEl = app.querySelector('[data-role="window"]');
    if (winEl) winEl.textContent = t("park.window", { window: windowText });

    const coverageLine = (name) => {
      const cov = coverageOf(body, name);
      if (!cov || !cov.devices) return "";
      const p = `${Math.round(cov.share * 100)}%`;
      return cov.share < 0.8
        ? `<span class="cov-low" title="${esc(t("sub.coverage_low", { pct: p, a: cov.reporting, b: cov.devices }))}">${esc(t("sub.coverage", { pct: p }))}</span>`
        : `<span title="${esc(t("sub.coverage_low", { pct: p, a: cov.reporting, b: cov.devices }))}">${esc(t("sub.coverage", { pct: p }))}</span>`;
    };
    const ratioTile = (name, sub, opts = {}) => {
      const v = signalOf(body, name);
      // A null rate means nothing is scheduled (planned time), not "no data".
      if (v === null && opts.unscheduled) sub = opts.unscheduled;
      const trend = this.historyTrend((r) => r.signals?.[name]);
      const level = v === null ? "" : opts.inverse ? (v > 0.1 ? "bad" : v > 0 ? "warn" : "good") : v >= 0.8 ? "good" : v >= 0.5 ? "warn" : "bad";
      return {
        cls: level,
        html: `<div class="tile-label"><span>${esc(t(`sig.${name}`))}</span>${trend ? trendHtml(trend.delta, { scale: 100, suffix: "%", inverse: opts.inverse }) : ""}</div>
          <div class="tile-value"><span class="num">${pct(v)}</span><span class="unit">%</span></div>
          <div class="bar"><span style="width:${Math.max(0, Math.min(100, (v ?? 0) * 100)).toFixed(1)}%"></span></div>
          <div class="tile-sub">${esc(sub)}</div>
          <div class="tile-foot">${coverageLine(name)}</div>`,
        value: v,
      };
    };
    const plainTile = (name, value, unit, sub, trend) => ({
      cls: "",
      html: `<div class="tile-label"><span>${esc(t(`sig.${name}`))}</span>${trend ?? ""}</div>
        <div class="tile-value"><span class="num">${value}</span><span class="unit">${esc(unit)}</span></div>
        <div class="tile-sub">${esc(sub)}</div>
        <div class="tile-foot">${coverageLine(name)}</div>`,
    });

    const offShift = (c.factories_with_lines ?? 0) > (c.factories_scheduled ?? c.factories_with_lines ?? 0);
    const health = signalOf(body, "health_index");
    const comps = componentsOf(body);
    const compRows = COMPONENTS.map((key) => {
      // A component left out of the index (its rate is null: nothing scheduled).
      if (!comps[key]) return `<span>${esc(t(`comp.${key}`))}</span><span class="cbar"></span><span class="pts">—</span>`;
      const comp = comps[key];
      const max = (comp.weight ?? 0) * 100;
      const points = comp.points ?? (comp.weight ?? 0) * (comp.value ?? 0) * 100;
      return `<span>${esc(t(`comp.${key}`))}</span><span class="cbar"><span style="width:${max ? Math.min(100, (points / max) * 100).toFixed(0) : 0}%"></span></span><span class="pts">${num(points, 1)}/${num(max, 0)}</span>`;
    }).join("");
    const healthTrend = this.historyTrend((r) => r.signals?.health_index);
    const tiles = {
      health_index: {
        cls: healthClass(health),
        html: `<div class="tile-label"><span>${esc(t("sig.health_index"))}</span>${healthTrend ? trendHtml(healthTrend.delta) : ""}</div>
          <div class="health-body">
            <div class="score">${ring(health, { color: healthColor(health) })}<div class="val num">${num(health, 1)}</div></div>
            <div class="components">${compRows}</div>
          </div>
          <div class="tile-foot">${coverageLine("health_index")}</div>`,
      },
      operating_rate: ratioTile(
        "operating_rate",
        t(offShift ? "sub.operating_planned" : "sub.operating", { a: c.factories_operating ?? 0, b: c.factories_scheduled ?? c.factories_with_lines ?? 0 }),
        { unscheduled: t("sub.none_scheduled") },
      ),
      online_rate: ratioTile("online_rate", t("sub.online", { a: c.devices_online ?? 0, b: c.devices_registered ?? 0 })),
      capacity_utilization: ratioTile(
        "capacity_utilization",
        t("sub.capacity", {
          a: num(c.output_units_increase ?? 0, 0),
          b: num(Math.max(0, ((c.line_capacity_units_per_hour ?? 0) * (body.window_s ?? 300)) / 3600 - (c.capacity_units_off_shift ?? 0)), 0),
        }),
        { unscheduled: t("sub.none_scheduled_window") },
      ),
      power_kw: plainTile(
        "power_kw",
        num(signalOf(body, "power_kw"), autoDigits(signalOf(body, "power_kw"))),
        t("unit.kw"),
        t("sub.power", { a: c.meters_online ?? 0, b: c.meters ?? 0 }),
        (() => {
          const tr = this.historyTrend((r) => r.signals?.power_kw);
          return tr ? trendHtml(tr.delta, { digits: 0 }) : "";
        })(),
      ),
      energy_kwh: plainTile(
        "energy_kwh",
        num(signalOf(body, "energy_kwh"), autoDigits(signalOf(body, "energy_kwh"))),
        t("unit.kwh"),
        t("sub.energy", { window: windowText }),
      ),
      energy_intensity_kwh_per_unit: plainTile(
        "energy_intensity_kwh_per_unit",
        signalOf(body, "energy_intensity_kwh_per_unit") === null ? "—" : num(signalOf(body, "energy_intensity_kwh_per_unit"), 3),
        t("unit.kwh_per_unit"),
        signalOf(body, "energy_intensity_kwh_per_unit") === null ? t("sub.intensity_none") : t("sub.intensity"),
      ),
      alarm_rate: ratioTile("alarm_rate", t("sub.alarm", { a: c.devices_in_alarm ?? 0, b: c.devices_online ?? 0 }), { inverse: true }),
    };
    for (const name of SIGNALS) {
      const el = app.querySelector(`.tile[data-signal="${name}"]`);
      if (!el) continue;
      const tile = tiles[name];
      el.className = `panel tile${name === "health_index" ? " health" : ""}${tile.cls ? ` ${tile.cls}` : ""}`;
      el.dataset.value = String(signalOf(body, name) ?? "");
      el.innerHTML = tile.html;
    }
  }

  chartSpecs() {
    const range = RANGES[this.history?.range ?? this.range];
    return {
      power: { title: t("charts.power"), color: "var(--c-power)", pick: (r) => r.signals?.power_kw, format: chartNum, unit: "kW" },
      output: {
        title: t("charts.output", { bucket: t(`bucket.${range.bucket}`) }),
        color: "var(--c-output)",
        pick: (r) => rowOutput(r),
        format: (v, step) => (step === undefined ? num(v, 0) : chartNum(v, step)),
        unit: t("unit.units"),
        kind: "bars",
      },
      operating: { title: t("charts.operating"), color: "var(--c-operating)", pick: (r) => (r.signals?.operating_rate ?? null) === null ? null : r.signals.operating_rate * 100, format: (v) => num(v, 0), unit: "%", yMin: 0, yMax: 100 },
      health: { title: t("charts.health"), color: "var(--c-health)", pick: (r) => r.signals?.health_index, format: (v, step) => num(v, step === undefined ? 1 : 0), yMin: 0, yMax: 100 },
    };
  }

  renderChartTitles() {
    const title = app.querySelector('[data-role="charts-title"]');
    if (title) title.textContent = t("charts.title", { range: t(`range.${this.range}`) });
    const body = this.signals;
    for (const [key, spec] of Object.entries(this.chartSpecs())) {
      const el = app.querySelector(`[data-chart="${key}"]`);
      if (!el) continue;
      el.querySelector('[data-role="title"]').textContent = spec.title;
      let last = "";
      if (body) {
        if (key === "power") last = `${num(signalOf(body, "power_kw"), autoDigits(signalOf(body, "power_kw")))} kW`;
        if (key === "operating") last = pctText(signalOf(body, "operating_rate"));
        if (key === "health") last = num(signalOf(body, "health_index"), 1);
      }
      el.querySelector('[data-role="last"]').textContent = last;
    }
  }

  drawCharts() {
    const specs = this.chartSpecs();
    const range = RANGES[this.history?.range ?? this.range];
    for (const [key, spec] of Object.entries(specs)) {
      const el = app.querySelector(`[data-chart="${key}"] .chart-body`);
      if (!el) continue;
      const end = this.history?.end ?? historyEnd();
      const start = this.history?.start ?? end - range.ms;
      const points =
        this.historyState === "ok" && this.history ? historySeries(this.history.body, (r) => (rowHasData(r) ? spec.pick(r) : null)) : [];
      const emptyText =
        this.historyState === "loading" ? t("charts.loading") : this.historyState === "unavailable" ? t("charts.unavailable") : t("charts.empty");
      const shade = this.historyState === "ok" && this.history ? offShiftShade(this.history.body) : [];
      timeChart(el, { ...spec, points, start, end, bucketMs: range.bucketMs, emptyText, shade, shadeTitle: t("charts.off_shift") });
    }
    this.renderChartTitles();
  }

  reasonText(reason) {
    const unit = reason.unit ?? "";
    if (reason.reason === "state") {
      const state = reason.text ?? "";
      return { text: t("reason.state", { value: has(`state.${state}`) ? t(`state.${state}`) : state }), cls: "bad" };
    }
    const key = reason.reason === "below_min" ? "reason.below_min" : "reason.above_max";
    return {
      text: t(key, { metric: reason.metric, value: exact(reason.value), threshold: exact(reason.threshold), unit }).trim(),
      cls: "warn",
    };
  }

  factoryName(factoryId, row) {
    const f = this.detail?.factories?.find((x) => x.factory_id === factoryId);
    return localName(f ?? row, factoryId);
  }

  renderAlarms() {
    const el = app.querySelector('[data-role="alarms"]');
    if (!el) return;
    const count = app.querySelector('[data-role="alarm-count"]');
    count.textContent = String(this.alarms.size);
    count.className = `count${this.alarms.size ? " bad" : ""}`;
    if (!this.alarms.size) {
      el.innerHTML = `<div class="none">${esc(t("alarms.none"))}</div>`;
      return;
    }
    const rows = [...this.alarms.values()]
      .sort((a, b) => String(b.since ?? "").localeCompare(String(a.since ?? "")) || a.device_id.localeCompare(b.device_id))
      .map((a) => {
        const reasons = (a.reasons ?? [])
          .map((r) => {
            const { text, cls } = this.reasonText(r);
            return `<div class="reason ${cls}">${esc(text)}</div>`;
          })
          .join("");
        const fresh = this.fresh.has(`alarm:${a.device_id}`) ? ' class="fresh"' : "";
        return `<tr${fresh} data-device="${esc(a.device_id)}">
          <td><div class="dev">${esc(a.device_id)}</div><div class="sub">${esc(this.factoryName(a.factory_id))}</div></td>
          <td>${reasons}</td>
          <td class="num"><div>${esc(a.since ? clock(a.since) : "—")}</div><div class="sub" data-since="${esc(a.since ?? "")}"></div></td>
        </tr>`;
      })
      .join("");
    el.innerHTML = `<table><thead><tr><th>${esc(t("col.device"))}</th><th>${esc(t("col.reason"))}</th><th class="num">${esc(t("col.since"))}</th></tr></thead><tbody>${rows}</tbody></table>`;
    this.renderOfflineDurations();
  }

  renderOffline() {
    const el = app.querySelector('[data-role="offline"]');
    if (!el) return;
    const count = app.querySelector('[data-role="offline-count"]');
    count.textContent = String(this.offline.size);
    count.className = `count${this.offline.size ? " warn" : ""}`;
    if (!this.offline.size) {
      el.innerHTML = `<div class="none">${esc(t("offline.none"))}</div>`;
      return;
    }
    // Longest offline first; devices that never reported last.
    const items = [...this.offline.values()].sort((a, b) => {
      if (!a.since !== !b.since) return a.since ? -1 : 1;
      return String(a.since ?? "").localeCompare(String(b.since ?? "")) || a.device_id.localeCompare(b.device_id);
    });
    const rows = items
      .slice(0, OFFLINE_LIST_MAX)
      .map((o) => {
        const reasonKey = has(`reason.${o.reason}`) ? `reason.${o.reason}` : "reason.offline";
        const fresh = this.fresh.has(`offline:${o.device_id}`) ? ' class="fresh"' : "";
        return `<tr${fresh} data-device="${esc(o.device_id)}">
          <td><div class="dev">${esc(o.device_id)}</div><div class="sub">${esc(this.factoryName(o.factory_id))}</div></td>
          <td><span class="reason">${esc(t(reasonKey))}</span></td>
          <td class="num"><span data-since="${esc(o.since ?? "")}">${o.since ? "" : "—"}</span></td>
        </tr>`;
      })
      .join("");
    const more = items.length > OFFLINE_LIST_MAX ? `<div class="none">${esc(t("offline.more", { n: items.length - OFFLINE_LIST_MAX }))}</div>` : "";
    el.innerHTML = `<table><thead><tr><th>${esc(t("col.device"))}</th><th>${esc(t("col.reason"))}</th><th class="num">${esc(t("col.for"))}</th></tr></thead><tbody>${rows}</tbody></table>${more}`;
    this.renderOfflineDurations();
  }

  renderOfflineDurations() {
    const now = this.serverNow();
    for (const el of app.querySelectorAll("[data-since]")) {
      const since = el.dataset.since;
      if (!since) continue;
      el.textContent = duration((now - Date.parse(since)) / 1000);
    }
  }

  renderFactories() {
    const el = app.querySelector('[data-role="factories"]');
    if (!el) return;
    const rows = this.factories.length ? this.factories : (this.detail?.factories ?? []).map((f) => ({ factory_id: f.factory_id, name: f.name, industry: f.industry, devices: f.devices.length }));
    const status = (f) => {
      if (f.devices_online === 0 && f.devices > 0) return `<span class="pill bad">${esc(t("factory.offline"))}</span>`;
      if ((f.devices_in_alarm ?? 0) > 0) return `<span class="pill warn">${esc(t("factory.alarm"))}</span>`;
      if (!f.lines) return `<span class="pill idle">${esc(t("factory.no_lines"))}</span>`;
      if (f.scheduled === false) return `<span class="pill offshift" data-status="off_shift">${esc(t("factory.off_shift"))}</span>`;
      return f.operating ? `<span class="pill good">${esc(t("factory.running"))}</span>` : `<span class="pill idle">${esc(t("factory.idle"))}</span>`;
    };
    const body = rows
      .map((f) => {
        const known = f.devices_online !== undefined;
        const cap = f.capacity_utilization;
        return `<tr data-factory="${esc(f.factory_id)}">
          <td><div>${esc(this.factoryName(f.factory_id, f))}</div><div class="sub dev hide-narrow">${esc(f.factory_id)}</div></td>
          <td class="hide-narrow">${esc(industry(f.industry))}</td>
          <td>${known ? status(f) : "—"}</td>
          <td class="num">${known ? `${num(f.devices_online, 0)}/${num(f.devices, 0)}` : "—"}</td>
          <td class="num">${known && f.lines ? `${num(f.lines_running, 0)}/${num(f.lines, 0)}` : "—"}</td>
          <td class="num hide-narrow">${known && f.lines ? `<span class="mini"><span style="width:${Math.min(100, (cap ?? 0) * 100).toFixed(0)}%"></span></span>${cap === null ? "—" : `${pct(cap, 0)}%`}` : "—"}</td>
          <td class="num">${known && f.meters !== 0 ? num(f.power_kw, autoDigits(f.power_kw)) : "—"}</td>
          <td class="num">${known ? (f.devices_in_alarm ? `<span class="reason bad">${num(f.devices_in_alarm, 0)}</span>` : "0") : "—"}</td>
        </tr>`;
      })
      .join("");
    el.innerHTML = `<table><thead><tr>
      <th>${esc(t("col.factory"))}</th><th class="hide-narrow">${esc(t("col.industry"))}</th><th>${esc(t("col.status"))}</th>
      <th class="num">${esc(t("col.devices"))}</th><th class="num">${esc(t("col.lines"))}</th><th class="num hide-narrow">${esc(t("col.capacity"))}</th>
      <th class="num">${esc(t("col.power"))}</th><th class="num">${esc(t("col.alarms"))}</th></tr></thead><tbody>${body}</tbody></table>`;
  }
}

// ---- sign-in -------------------------------------------------------------------------

// Who the page is signed in as (GET /v1/session), or null when a key is needed.
let session = null;

async function loadSession() {
  try {
    session = await getJSON("/v1/session");
  } catch (err) {
    if (err.status !== 401) throw err;
    session = null;
  }
  signOutButton.hidden = session?.via !== "session";
  return session;
}

function showSignIn(reason = "") {
  if (view) view.destroy();
  view = new SignInView(reason);
  view.start();
}

class SignInView {
  constructor(reason) {
    this.reason = reason;
  }

  start() {
    setCrumbs([{ label: t("signin.title") }]);
    setConn("signedout");
    signOutButton.hidden = true;
    app.innerHTML = `<form class="signin" data-role="signin" autocomplete="off">
      <h1>${esc(t("signin.title"))}</h1>
      <p class="muted">${esc(t("signin.explain"))}</p>
      <label for="signin-key">${esc(t("signin.key"))}</label>
      <input id="signin-key" name="key" type="password" required maxlength="256" spellcheck="false" autocomplete="off">
      <button type="submit">${esc(t("signin.submit"))}</button>
      <p class="signin-error" data-role="signin-error" data-reason="${esc(this.reason)}" role="alert">${esc(this.reason ? t(this.reason) : "")}</p>
    </form>`;
    const form = app.querySelector("form");
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.submit(form);
    });
    form.querySelector("input").focus();
  }

  async submit(form) {
    const input = form.querySelector("input");
    const error = form.querySelector('[data-role="signin-error"]');
    const button = form.querySelector("button");
    button.disabled = true;
    let response;
    try {
      response = await fetch("/v1/session", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        credentials: "same-origin",
        body: JSON.stringify({ key: input.value.trim() }),
      });
    } catch {
      response = null;
    }
    button.disabled = false;
    if (response && response.status === 201) {
      input.value = "";
      await loadSession().catch(() => {});
      route();
      return;
    }
    this.reason = response && [401, 422].includes(response.status) ? "signin.bad" : "conn.error";
    error.dataset.reason = this.reason;
    error.textContent = t(this.reason);
  }

  destroy() {}

  relabel() {
    this.start();
  }
}

async function signOut() {
  await fetch("/v1/session", { method: "DELETE", credentials: "same-origin" }).catch(() => {});
  session = null;
  showSignIn("signin.out");
}

// ---- start ---------------------------------------------------------------------------

langButton.addEventListener("click", () => {
  setLang(lang() === "zh" ? "en" : "zh");
  renderChrome();
  if (view) view.relabel();
});

signOutButton.addEventListener("click", signOut);
window.addEventListener("hashchange", route);
renderChrome();
loadSession().then(
  (found) => (found ? route() : showSignIn()),
  () => route(),
);
