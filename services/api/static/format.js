// How the dashboard writes figures, times and durations, in the page's language.

import { has, lang, t } from "./i18n.js";

export function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function nf(digits) {
  return new Intl.NumberFormat(lang() === "zh" ? "zh-CN" : "en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

export function num(value, digits = 1) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  return nf(digits).format(value);
}

export function pct(ratio, digits = 1) {
  if (ratio === null || ratio === undefined || !Number.isFinite(ratio)) return "—";
  return num(ratio * 100, digits);
}

// A ratio as "42%", or "—" when it is null (a rate with nothing scheduled).
export function pctText(ratio) {
  return ratio === null || ratio === undefined ? "—" : `${pct(ratio, 0)}%`;
}

// A chart figure: the read-out keeps about three significant places; an axis label as
// many decimals as its step needs.
export function chartNum(value, step) {
  if (step === undefined) return num(value, autoDigits(value));
  return num(value, step >= 1 ? 0 : step >= 0.1 ? 1 : 2);
}

// A measured value or a threshold as written (7.1 stays 7.1), up to three decimals.
export function exact(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  return new Intl.NumberFormat(lang() === "zh" ? "zh-CN" : "en-US", { maximumFractionDigits: 3 }).format(value);
}

// Digits that keep a figure at about three significant places.
export function autoDigits(value) {
  const a = Math.abs(value ?? 0);
  return a >= 100 ? 0 : a >= 10 ? 1 : 2;
}

export function clock(date) {
  if (!date) return "—";
  const d = new Date(date);
  return d.toLocaleTimeString(lang() === "zh" ? "zh-CN" : "en-GB", { hour12: false });
}

export function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return t("dur.s", { n: s });
  if (s < 3600) return t("dur.m", { n: Math.floor(s / 60) });
  if (s < 86400) return t("dur.h", { n: Math.floor(s / 3600), m: Math.floor((s % 3600) / 60) });
  return t("dur.d", { n: Math.floor(s / 86400), h: Math.floor((s % 86400) / 3600) });
}

export function industry(name) {
  const key = `industry.${name}`;
  return has(key) ? t(key) : name || "—";
}

export function trendHtml(delta, { digits = 1, scale = 1, inverse = false, suffix = "" } = {}) {
  if (delta === null || delta === undefined || !Number.isFinite(delta)) return "";
  const shown = delta * scale;
  const threshold = 0.5 * 10 ** -digits;
  const dir = Math.abs(shown) < threshold ? "flat" : shown > 0 ? "up" : "down";
  const arrow = dir === "flat" ? "→" : dir === "up" ? "▲" : "▼";
  const sign = shown > 0 ? "+" : "";
  const title = esc(t("overview.vs_1h"));
  return `<span class="trend ${dir}${inverse ? " inverse" : ""}" title="${title}">${arrow} ${sign}${num(shown, digits)}${suffix}</span>`;
}

export function healthClass(score) {
  if (score === null || score === undefined) return "";
  return score >= 75 ? "good" : score >= 50 ? "warn" : "bad";
}

export function healthColor(score) {
  const cls = healthClass(score);
  return cls === "good" ? "var(--good)" : cls === "warn" ? "var(--warn)" : cls === "bad" ? "var(--bad)" : "var(--faint)";
}
