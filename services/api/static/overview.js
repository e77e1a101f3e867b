// The overview: every park's live signals, refreshed every few seconds, with totals and
// each park's health over the last 6 hours.

import { RANGES, countsOf, getJSON, historySeries, historyUrl, rowHasData, signalOf, trendOf } from "./api.js";
import { ring, sparkline } from "./charts.js";
import { pollState, setConn } from "./connection.js";
import { autoDigits, clock, duration, esc, healthColor, num, pct, pctText, trendHtml } from "./format.js";
import { localName, t } from "./i18n.js";
import { app, openView, setCrumbs } from "./page.js";

// Overview: how often each park's live signals and its 6-hour history are fetched.
const OVERVIEW_REFRESH_MS = 5_000;
const OVERVIEW_HISTORY_MS = 60_000;

export class OverviewView {
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
    const body = await openView(
      [{ label: t("nav.overview") }],
      "/v1/parks",
      this.abort.signal,
      this.timers,
    );
    if (body === null) return;
    this.parks = body.data ?? [];
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
    const now = Date.now();
    const state = pollState({ lastOk: this.lastOk, failed: this.failed, now, refreshMs: OVERVIEW_REFRESH_MS });
    if (state === "stale") {
      setConn(state, t("conn.stale_detail", { age: duration((now - this.lastOk) / 1000) }));
    } else if (state === "polling") {
      setConn(state, t("conn.updated", { time: clock(this.lastOk) }));
    } else {
      setConn(state);
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
