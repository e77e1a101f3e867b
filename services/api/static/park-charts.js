// The park page's four charts over the chosen range: their series, titles and read-outs.

import { RANGES, historyEnd, historySeries, offShiftShade, rowHasData, rowOutput, signalOf } from "./api.js";
import { timeChart } from "./charts.js";
import { autoDigits, chartNum, num, pctText } from "./format.js";
import { t } from "./i18n.js";

function chartSpecs(historyRange) {
  const range = RANGES[historyRange];
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

export function renderChartTitles(root, { range, historyRange, signals }) {
  const title = root.querySelector('[data-role="charts-title"]');
  if (title) title.textContent = t("charts.title", { range: t(`range.${range}`) });
  const body = signals;
  for (const [key, spec] of Object.entries(chartSpecs(historyRange))) {
    const el = root.querySelector(`[data-chart="${key}"]`);
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

export function drawCharts(root, { range: rangeKey, history, historyState }) {
  const historyRange = history?.range ?? rangeKey;
  const specs = chartSpecs(historyRange);
  const range = RANGES[historyRange];
  for (const [key, spec] of Object.entries(specs)) {
    const el = root.querySelector(`[data-chart="${key}"] .chart-body`);
    if (!el) continue;
    const end = history?.end ?? historyEnd();
    const start = history?.start ?? end - range.ms;
    const points =
      historyState === "ok" && history ? historySeries(history.body, (r) => (rowHasData(r) ? spec.pick(r) : null)) : [];
    const emptyText =
      historyState === "loading" ? t("charts.loading") : historyState === "unavailable" ? t("charts.unavailable") : t("charts.empty");
    const shade = historyState === "ok" && history ? offShiftShade(history.body) : [];
    timeChart(el, { ...spec, points, start, end, bucketMs: range.bucketMs, emptyText, shade, shadeTitle: t("charts.off_shift") });
  }
}
