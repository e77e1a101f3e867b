// A park's live page: signal tiles, charts, alarms, offline devices and factories, kept
// current by the park's Server-Sent Events stream.

import { RANGES, componentsOf, countsOf, coverageOf, getJSON, historySeries, historyUrl, rowHasData, signalOf, trendOf } from "./api.js";
import { ring } from "./charts.js";
import { openParkStream, setConn, streamState } from "./connection.js";
import { autoDigits, clock, duration, esc, exact, healthClass, healthColor, industry, num, pct, trendHtml } from "./format.js";
import { has, localName, t } from "./i18n.js";
import { isCurrent, showSignIn } from "./nav.js";
import { app, openView, setCrumbs } from "./page.js";
import { drawCharts, renderChartTitles } from "./park-charts.js";
import { loadSession } from "./session.js";

// Park page: how often the charts' history is fetched again.
const HISTORY_REFRESH_MS = 60_000;
// Offline devices listed before "and N more".
const OFFLINE_LIST_MAX = 200;
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
const COMPONENTS = ["operating_rate", "capacity_utilization", "online_rate", "no_alarm"];

export class ParkView {
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
    const detail = await openView(
      [{ label: t("nav.overview"), href: "#/" }, { label: this.parkId }],
      `/v1/parks/${encodeURIComponent(this.parkId)}`,
      this.abort.signal,
      this.timers,
      `<div class="err">${esc(t("park.unknown"))}<br><br><a href="#/">${esc(t("park.back"))}</a></div>`,
    );
    if (detail === null) return;
    this.detail = detail;
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
    this.source = openParkStream(this.parkId, {
      onEvent: () => {
        this.lastEventAt = Date.now();
      },
      onOpen: () => {
        this.connected = true;
        this.tick();
      },
      onError: (closed) => {
        this.connected = false;
        this.tick();
        // The browser retries by itself unless the server refused the stream outright.
        if (closed) {
          // Refused outright: an ended session shows the sign-in form, anything else retries.
          loadSession().then(
            (found) => {
              if (!found && isCurrent(this)) showSignIn();
            },
            () => {},
          );
          clearTimeout(this.reconnectTimer);
          this.reconnectTimer = setTimeout(() => this.connect(), 5_000);
        }
      },
      handlers: {
        signals: (data) => {
          this.signals = data;
          this.lastSignalsAt = Date.now();
          this.staleReason = null;
          if (data.as_of) this.serverOffsetMs = Date.parse(data.as_of) - Date.now();
          this.renderTiles();
          this.renderChartTitles();
          this.tick();
        },
        snapshot: (data) => {
          this.alarms = new Map((data.alarms ?? []).map((a) => [a.device_id, a]));
          this.offline = new Map((data.offline ?? []).map((o) => [o.device_id, o]));
          this.fresh.clear();
          this.renderAlarms();
          this.renderOffline();
        },
        alarm: (data) => {
          if (data.active) {
            this.alarms.set(data.device_id, data);
            this.flash(`alarm:${data.device_id}`);
          } else {
            this.alarms.delete(data.device_id);
          }
          this.renderAlarms();
        },
        availability: (data) => {
          if (data.online) {
            this.offline.delete(data.device_id);
          } else {
            this.offline.set(data.device_id, data);
            this.flash(`offline:${data.device_id}`);
          }
          this.renderOffline();
        },
        factories: (data) => {
          this.factories = data.factories ?? [];
          this.renderFactories();
        },
        stale: (data) => {
          this.staleReason = data;
          this.tick();
        },
      },
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
    const asOf = this.signals?.as_of ? clock(this.signals.as_of) : "—";
    const state = streamState({ connected: this.connected, age, staleReason: this.staleReason });
    let detail = "";
    if (state === "disconnected" || (state === "stale" && age !== null)) {
      detail = t("conn.stale_detail", { age: duration(age / 1000) });
    } else if (state === "live") {
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

  renderChartTitles() {
    renderChartTitles(app, { range: this.range, historyRange: this.history?.range ?? this.range, signals: this.signals });
  }

  drawCharts() {
    drawCharts(app, { range: this.range, history: this.history, historyState: this.historyState });
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
