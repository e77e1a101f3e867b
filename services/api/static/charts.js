// Hand-written SVG charts: a time-series chart with axes and a hover read-out, and sparklines.
// No library and no build step: every chart is an SVG string rendered into its container.

const SVG_NS = "http://www.w3.org/2000/svg";
const PAD = { top: 10, right: 12, bottom: 22, left: 44 };

function esc(text) {
  return String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

// Round axis bounds to "nice" steps (1, 2, 2.5, 5 × 10^k) so that gridlines read well.
function niceStep(span, ticks) {
  const raw = span / Math.max(ticks, 1);
  const power = 10 ** Math.floor(Math.log10(raw || 1));
  const unit = raw / power;
  const nice = unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 2.5 ? 2.5 : unit <= 5 ? 5 : 10;
  return nice * power;
}

function yScale(values, fixedMin, fixedMax) {
  const finite = values.filter((v) => v !== null && Number.isFinite(v));
  let lo = fixedMin ?? Math.min(0, ...finite);
  let hi = fixedMax ?? Math.max(...finite, lo + 1);
  if (hi <= lo) hi = lo + 1;
  const step = niceStep(hi - lo, 4);
  lo = fixedMin ?? Math.floor(lo / step) * step;
  hi = fixedMax ?? Math.ceil(hi / step) * step;
  const ticks = [];
  for (let v = lo; v <= hi + step / 1000; v += step) ticks.push(v);
  return { lo, hi, ticks };
}

function timeTicks(start, end, width) {
  const span = end - start;
  const target = Math.max(2, Math.floor(width / 90));
  const steps = [5, 10, 15, 30, 60, 120, 180, 360, 720, 1440].map((m) => m * 60_000);
  const step = steps.find((s) => span / s <= target) ?? steps[steps.length - 1];
  const ticks = [];
  const offset = new Date(start).getTimezoneOffset() * 60_000;
  let t = Math.ceil((start - offset) / step) * step + offset;
  for (; t <= end; t += step) ticks.push(t);
  return ticks;
}

function hhmm(ms) {
  const d = new Date(ms);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

// Split a series at nulls so a gap in the data is a gap in the line, not a slope.
function segments(points) {
  const out = [];
  let run = [];
  for (const p of points) {
    if (p.v === null || !Number.isFinite(p.v)) {
      if (run.length) out.push(run);
      run = [];
    } else {
      run.push(p);
    }
  }
  if (run.length) out.push(run);
  return out;
}

/**
 * Render a time-series chart into `el`.
 *
 * options: points [{t: ms, v: number|null}], start/end (ms), color, kind ("area" | "bars"),
 * yMin/yMax (fixed bounds), format (value, axisStep) → text (axisStep is given for axis
 * labels, so they can use as many digits as the step needs), unit (text after the
 * read-out), bucketMs (bar width for "bars"), emptyText, shade [{t: ms, share: 0..1}]
 * (buckets drawn behind the data, darker the more of them is off shift) and shadeTitle.
 */
export function timeChart(el, options) {
  const width = Math.max(240, Math.round(el.clientWidth || 320));
  const height = Math.max(120, Math.round(el.clientHeight || 150));
  const { points, start, end, color = "var(--accent)", kind = "area", format = String } = options;
  const hasData = points.some((p) => p.v !== null && Number.isFinite(p.v));
  const iw = width - PAD.left - PAD.right;
  const ih = height - PAD.top - PAD.bottom;
  const { lo, hi, ticks } = yScale(points.map((p) => p.v), options.yMin, options.yMax);
  const x = (t) => PAD.left + ((t - start) / (end - start || 1)) * iw;
  const y = (v) => PAD.top + ih - ((v - lo) / (hi - lo)) * ih;

  const parts = [];
  const shadeWidth = ((options.bucketMs ?? 0) / (end - start || 1)) * iw;
  for (const s of options.shade ?? []) {
    const x0 = Math.max(PAD.left, x(s.t));
    const x1 = Math.min(PAD.left + iw, x(s.t) + shadeWidth);
    if (x1 <= x0) continue;
    parts.push(
      `<rect class="offshift" x="${x0.toFixed(1)}" y="${PAD.top}" width="${(x1 - x0).toFixed(1)}" height="${ih}" fill-opacity="${(0.35 * s.share).toFixed(3)}"><title>${esc(options.shadeTitle ?? "")}</title></rect>`,
    );
  }
  const step = ticks.length > 1 ? ticks[1] - ticks[0] : 1;
  for (const v of ticks) {
    const yy = y(v).toFixed(1);
    parts.push(`<line class="grid" x1="${PAD.left}" x2="${width - PAD.right}" y1="${yy}" y2="${yy}"/>`);
    // An empty chart has no scale worth reading; gridlines alone keep its shape.
    if (hasData) {
      parts.push(`<text class="axis" x="${PAD.left - 6}" y="${yy}" text-anchor="end" dominant-baseline="middle">${esc(format(v, step))}</text>`);
    }
  }
  for (const tt of timeTicks(start, end, iw)) {
    const xx = x(tt).toFixed(1);
    parts.push(`<line class="tick" x1="${xx}" x2="${xx}" y1="${PAD.top + ih}" y2="${PAD.top + ih + 4}"/>`);
    parts.push(`<text class="axis" x="${xx}" y="${height - 6}" text-anchor="middle">${hhmm(tt)}</text>`);
  }
  if (hasData && kind === "bars") {
    const bw = Math.max(1, (options.bucketMs / (end - start || 1)) * iw - 1);
    for (const p of points) {
      if (p.v === null || !Number.isFinite(p.v)) continue;
      const top = y(Math.max(p.v, lo));
      parts.push(`<rect class="bar" x="${x(p.t).toFixed(1)}" y="${top.toFixed(1)}" width="${bw.toFixed(1)}" height="${Math.max(0, y(lo) - top).toFixed(1)}" fill="${color}"/>`);
    }
  } else if (hasData) {
    for (const run of segments(points)) {
      const line = run.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join("");
      if (run.length === 1) {
        parts.push(`<circle cx="${x(run[0].t).toFixed(1)}" cy="${y(run[0].v).toFixed(1)}" r="2" fill="${color}"/>`);
        continue;
      }
      const base = y(Math.max(lo, Math.min(0, hi))).toFixed(1);
      const area = `${line}L${x(run[run.length - 1].t).toFixed(1)},${base}L${x(run[0].t).toFixed(1)},${base}Z`;
      parts.push(`<path class="area" d="${area}" fill="${color}"/>`);
      parts.push(`<path class="line" d="${line}" stroke="${color}"/>`);
    }
  }
  if (!hasData) {
    parts.push(`<text class="empty" x="${PAD.left + iw / 2}" y="${PAD.top + ih / 2}" text-anchor="middle">${esc(options.emptyText ?? "")}</text>`);
  }
  parts.push(`<line class="cursor" x1="0" x2="0" y1="${PAD.top}" y2="${PAD.top + ih}" visibility="hidden"/>`);
  parts.push(`<circle class="cursor-dot" r="3.5" fill="${color}" visibility="hidden"/>`);
  el.innerHTML = `<svg xmlns="${SVG_NS}" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img">${parts.join("")}</svg><div class="readout" hidden></div>`;

  const svg = el.querySelector("svg");
  const readout = el.querySelector(".readout");
  const cursor = svg.querySelector(".cursor");
  const dot = svg.querySelector(".cursor-dot");
  const valid = points.filter((p) => p.v !== null && Number.isFinite(p.v));
  const hide = () => {
    readout.hidden = true;
    cursor.setAttribute("visibility", "hidden");
    dot.setAttribute("visibility", "hidden");
  };
  svg.addEventListener("pointerleave", hide);
  svg.addEventListener("pointermove", (ev) => {
    if (!valid.length) return;
    const rect = svg.getBoundingClientRect();
    const px = ((ev.clientX - rect.left) / rect.width) * width;
    const t = start + ((px - PAD.left) / iw) * (end - start);
    let best = valid[0];
    for (const p of valid) if (Math.abs(p.t - t) < Math.abs(best.t - t)) best = p;
    const cx = kind === "bars" ? x(best.t) + ((options.bucketMs / (end - start || 1)) * iw) / 2 : x(best.t);
    cursor.setAttribute("x1", cx.toFixed(1));
    cursor.setAttribute("x2", cx.toFixed(1));
    cursor.setAttribute("visibility", "visible");
    dot.setAttribute("cx", cx.toFixed(1));
    dot.setAttribute("cy", y(best.v).toFixed(1));
    dot.setAttribute("visibility", "visible");
    readout.hidden = false;
    readout.textContent = `${hhmm(best.t)}  ${format(best.v)}${options.unit ? ` ${options.unit}` : ""}`;
    const left = (cx / width) * rect.width;
    readout.style.left = `${Math.min(Math.max(left, 40), rect.width - 40)}px`;
  });
}

/** Return a sparkline SVG string for values (nulls are gaps), scaled to [yMin, yMax]. */
export function sparkline(values, { width = 120, height = 28, color = "var(--accent)", yMin = null, yMax = null } = {}) {
  const finite = values.filter((v) => v !== null && Number.isFinite(v));
  if (finite.length < 2) {
    return `<svg class="spark" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" preserveAspectRatio="none" aria-hidden="true"><line x1="0" x2="${width}" y1="${height - 1}" y2="${height - 1}" class="spark-base" vector-effect="non-scaling-stroke"/></svg>`;
  }
  const lo = yMin ?? Math.min(...finite);
  let hi = yMax ?? Math.max(...finite);
  if (hi - lo < 1e-9) hi = lo + 1;
  const step = width / Math.max(values.length - 1, 1);
  const pts = values.map((v, i) => ({ t: i, v }));
  const paths = segments(pts)
    .map((run) => run.map((p, i) => `${i ? "L" : "M"}${(p.t * step).toFixed(1)},${(height - 2 - ((p.v - lo) / (hi - lo)) * (height - 4)).toFixed(1)}`).join(""))
    .map((d) => `<path d="${d}" fill="none" stroke="${color}" stroke-width="1.6" stroke-linejoin="round" stroke-linecap="round" vector-effect="non-scaling-stroke"/>`)
    .join("");
  return `<svg class="spark" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" preserveAspectRatio="none" aria-hidden="true">${paths}</svg>`;
}

/** Return a ring gauge SVG string for a 0–100 score. */
export function ring(score, { size = 64, stroke = 7, color = "var(--accent)" } = {}) {
  const r = (size - stroke) / 2;
  const c = 2 * Math.PI * r;
  const share = Math.max(0, Math.min(1, (score ?? 0) / 100));
  return `<svg class="ring" viewBox="0 0 ${size} ${size}" width="${size}" height="${size}" aria-hidden="true">
    <circle cx="${size / 2}" cy="${size / 2}" r="${r}" fill="none" stroke="var(--track)" stroke-width="${stroke}"/>
    <circle cx="${size / 2}" cy="${size / 2}" r="${r}" fill="none" stroke="${color}" stroke-width="${stroke}"
      stroke-linecap="round" stroke-dasharray="${(c * share).toFixed(2)} ${c.toFixed(2)}"
      transform="rotate(-90 ${size / 2} ${size / 2})"/>
  </svg>`;
}
