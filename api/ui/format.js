// @ts-check
// How numbers, names and verdicts are written on every page.

/** "3 images", "1 image". @param {number} n @param {string} one @param {string} [many] */
export function plural(n, one, many = `${one}s`) {
  return `${Number(n).toLocaleString()} ${n === 1 ? one : many}`;
}

/** A dataset's name as a quoted SQL identifier. @param {string} name */
export function ident(name) {
  return `"${String(name).replace(/"/g, '""')}"`;
}

/** A share as a percentage, "–" when unknown. @param {number | null | undefined} x */
export function percent(x) {
  return x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`;
}

/** A value in at most 24 characters (numbers to 3 decimals). @param {any} value */
export function short(value) {
  const text = typeof value === "number" ? String(Math.round(value * 1000) / 1000) : String(value);
  return text.length > 24 ? `${text.slice(0, 23)}…` : text;
}

/** How each verdict of a slice test is shown. @type {Record<string, string>} */
export const VERDICTS = { pass: "pass", fail: "FAIL", "not-enough-data": "not enough data", "no-threshold": "no threshold" };

/** A slice test's number: accuracy, or a detection run's mAP (GET /runs/NAME/test). @param {any} score */
export function headline(score) {
  return score.map != null ? `mAP ${score.map.toFixed(3)}` : percent(score.accuracy?.value);
}
