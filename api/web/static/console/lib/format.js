// Times in the reader's zone (UTC on hover) and numbers with their units.
import { html } from "./html.js";

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const shortTime = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayOnly = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });

function asDate(value) {
  return value instanceof Date ? value : new Date(value);
}

/** "2026-12-04 20:31:05 UTC" */
export function utc(value) {
  return asDate(value).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC").replace(/Z$/, " UTC");
}

export function localTime(value, style = "full") {
  const d = asDate(value);
  if (style === "short") return shortTime.format(d);
  if (style === "day") return dayOnly.format(d);
  return dateTime.format(d);
}

/** A <time> in the reader's zone with the UTC time as its title. */
export function Time({ value, style = "full", empty = "—" }) {
  if (value === null || value === undefined || value === "") return html`<span class="muted">${empty}</span>`;
  const d = asDate(value);
  return html`<time datetime=${d.toISOString()} title=${utc(d)}>${localTime(d, style)}</time>`;
}

const numberFormats = new Map();
/** `value` with at most `digits` (at least `min`) decimals, grouped in the reader's locale. */
export function formatNumber(value, digits = 2, min = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  const key = `${digits}:${min}`;
  let f = numberFormats.get(key);
  if (!f) {
    f = new Intl.NumberFormat(undefined, { maximumFractionDigits: digits, minimumFractionDigits: min });
    numberFormats.set(key, f);
  }
  return f.format(value);
}

/** A number and its unit; `unit` is always shown, so no number stands alone. */
export function Num({ value, unit, digits = 2, min = 0 }) {
  return html`<span class="num">${formatNumber(value, digits, min)}<span class="unit"> ${unit}</span></span>`;
}

/** A price per kWh as recorded (four decimals). */
export function Price({ value, currency }) {
  return html`<${Num} value=${Number(value)} unit=${`${currency}/kWh`} digits=${4} min=${4} />`;
}

// Storage units are SI base units (Wh, W, varh, var); show kilo from 1000 upwards.
const KILO = { Wh: "kWh", W: "kW", varh: "kvarh", var: "kvar" };
export function readable(value, unit) {
  if (KILO[unit] && Math.abs(value) >= 1000) return { value: value / 1000, unit: KILO[unit] };
  if (unit === "1") return { value, unit: "(ratio)" };
  return { value, unit };
}

export function Quantity({ value, unit, digits = 3 }) {
  const r = readable(value, unit);
  return html`<${Num} value=${r.value} unit=${r.unit} digits=${digits} />`;
}

/** Readable name of a quantity alias: energy_import → "Energy import". */
export function label(alias) {
  const text = String(alias || "").replace(/_/g, " ").replace(/\bl(\d)\b/, "L$1");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** "just now", "4 min ago", "3 h ago" (the full time is in the title). */
export function Ago({ value, empty = "never" }) {
  if (!value) return html`<span class="muted">${empty}</span>`;
  const d = asDate(value);
  const seconds = Math.round((Date.now() - d.getTime()) / 1000);
  let text;
  if (seconds < 45) text = "just now";
  else if (seconds < 3600) text = `${Math.round(seconds / 60)} min ago`;
  else if (seconds < 86400 * 2) text = `${Math.round(seconds / 3600)} h ago`;
  else text = `${Math.round(seconds / 86400)} days ago`;
  return html`<time datetime=${d.toISOString()} title=${`${localTime(d)} (${utc(d)})`}>${text}</time>`;
}
