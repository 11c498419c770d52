// @ts-check
// DOM helpers shared by the pages: building elements, tables, image grids, messages.
// Text from the server is only ever set as textContent, never as HTML.

/** The element every page renders into. */
export const main = /** @type {HTMLElement} */ (document.getElementById("main"));

/**
 * @typedef {Node | string | number | null | undefined | false} Child
 * @typedef {Child | Child[] | Child[][]} Children
 */

/**
 * Builds an element: el("a", {href: "#"}, "text", child…). `on…` attributes are listeners,
 * `class` the class name; null, undefined and false attributes and children are left out.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, any>} [attrs]
 * @param {...Children} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(2)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** @type {ReturnType<typeof setTimeout> | undefined} */
let toastTimer;

/** A short message at the bottom of the window for three seconds. @param {string} message */
export function toast(message) {
  const box = /** @type {HTMLElement} */ (document.getElementById("toast"));
  box.textContent = message;
  box.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => box.classList.remove("show"), 3000);
}

/** @param {any} error @returns {HTMLElement} */
export function errorBox(error) {
  return el("p", { class: "error", role: "alert" }, error.message || String(error));
}

export const enc = encodeURIComponent;

/** `?dataset=NAME` when a dataset is named, else nothing (the server's default dataset).
 * @param {string | null | undefined} dataset */
const datasetParam = (dataset) => (dataset ? `dataset=${enc(dataset)}` : "");

/** A thumbnail's URL: the image `id` of `dataset` (default: the server's default dataset).
 * @param {string} id @param {number} [size] @param {string | null} [dataset] */
export const thumb = (id, size = 128, dataset = null) =>
  `/images/${enc(id)}/thumbnail?size=${size}${dataset ? `&${datasetParam(dataset)}` : ""}`;

/** The link to an image's page (`#/image/ID?dataset=NAME`).
 * @param {string} id @param {string | null} [dataset] */
export const imageLink = (id, dataset = null) => `#/image/${enc(id)}${dataset ? `?${datasetParam(dataset)}` : ""}`;

/**
 * A grid of image cards; `rows` have image_id and optionally score / a caption field; the
 * ids are images of `dataset` (default: the server's default dataset).
 * @param {Record<string, any>[]} rows
 * @param {string | null | undefined} captionKey
 * @param {string | null} [dataset]
 */
export function imageGrid(rows, captionKey, dataset = null) {
  return el("div", { class: "grid" }, rows.map((row) => {
    const id = String(row.image_id);
    const caption = captionKey && row[captionKey] !== undefined ? String(row[captionKey]) : id;
    return el("a", { class: "card", href: imageLink(id, dataset), title: id },
      el("img", { class: "thumb", loading: "lazy", alt: id, src: thumb(id, 128, dataset), width: 120, height: 120 }),
      el("div", { class: "caption" }, caption),
      row.score !== undefined ? el("div", { class: "score" }, Number(row.score).toFixed(4)) : null);
  }));
}

/** A table cell for any JSON value. @param {any} value */
export function cell(value) {
  if (value === null || value === undefined) return el("td", { class: "muted" }, "NULL");
  if (typeof value === "number") return el("td", { class: "num" }, String(value));
  const text = typeof value === "object" ? JSON.stringify(value) : String(value);
  return el("td", { title: text }, text);
}

/**
 * A table of `rows` (objects) with `columns`; image ids link to the image page of
 * `dataset`'s image (default: the server's default dataset), or to none when `dataset` is
 * false (ids of a result that reads more than one dataset).
 * @param {string[]} columns
 * @param {Record<string, any>[]} rows
 * @param {string | null | false} [dataset]
 */
export function table(columns, rows, dataset = null) {
  const head = el("tr", {}, columns.map((c) => el("th", { title: c }, c)));
  const body = rows.map((row) => el("tr", {}, columns.map((c) => {
    const td = cell(row[c]);
    if (c === "image_id" && row[c] !== null && dataset !== false) {
      td.replaceChildren(el("a", { href: imageLink(String(row[c]), dataset) }, String(row[c])));
    }
    return td;
  })));
  return el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, head), el("tbody", {}, body)));
}
