// @ts-check
// Explore: a SQL editor, its results as an image grid or a table (a page at a time), and
// "Save as slice…".

import { sqlPage, sqlSummary } from "./api.js";
import { editor } from "./editor.js";
import { el, errorBox, imageGrid, main, table } from "./dom.js";
import { plural, short } from "./format.js";
import { saveSliceDialog } from "./slices.js";

/** Rows per page. */
const PAGE = 100;

const DEFAULT_QUERY = "SELECT image_id, label, split\nFROM images\nORDER BY image_id";

/** @param {URLSearchParams} params */
export async function explorePage(params) {
  const query = params.get("q") || localStorage.getItem("slicetest-query") || DEFAULT_QUERY;
  // A run page's discovered slice of a dataset other than the default one: its query's
  // unqualified names mean that dataset. Slices are defined on the default dataset, so
  // such a query is explored but not saved from here.
  const on = params.get("dataset") || undefined;
  let view = params.get("view") || "auto";
  let offset = 0;
  /** @type {string[]} */
  let lastColumns = [];
  // Each run supersedes the one before: a slow answer to an older run is ignored.
  let runs = 0;
  const status = el("span", { class: "muted", id: "status" });
  const results = el("div", { id: "results" });
  const ed = editor(query, () => run(0));
  const viewButtons = ["grid", "table"].map((v) => el("button", {
    type: "button", "data-view": v, onclick: () => { view = v; run(offset); },
  }, v === "grid" ? "Images" : "Table"));
  const saveButton = on
    ? el("button", { type: "button", disabled: true, title: `slices are defined on the default dataset: run \`slicetest use ${on}\` to save slices of ${on}` }, "Save as slice…")
    : el("button", { type: "button", onclick: () => saveSliceDialog(ed.value) }, "Save as slice…");
  main.replaceChildren(
    el("h1", {}, "Explore"),
    ...(on ? [el("p", { class: "muted", id: "on-dataset" }, `Unqualified names (images, embeddings, …) read dataset ${on}.`)] : []),
    ed.node,
    el("div", { class: "row" },
      el("button", { type: "button", class: "primary", id: "run", onclick: () => run(0) }, "Run"),
      el("span", { class: "muted" }, "Ctrl+Enter"), el("span", { class: "spacer" }), ...viewButtons, saveButton),
    el("div", { class: "row" }, status),
    results,
  );
  ed.focus();
  // A link with a query (a slice's members, the bench) runs it at once.
  if (params.get("q")) run(0);

  /** Runs the editor's query from row `at`: one page of rows (paged by the server), then
   * the total and the columns' summaries. @param {number} at */
  async function run(at) {
    offset = at;
    const ticket = ++runs;
    const text = ed.value.trim().replace(/;\s*$/, "");
    localStorage.setItem("slicetest-query", text);
    status.textContent = "running…";
    results.replaceChildren();
    const started = performance.now();
    let rows, dataset;
    try {
      ({ rows, dataset } = await sqlPage(text, { limit: PAGE + 1, offset, ...(on ? { dataset: on } : {}) }));
    } catch (error) {
      if (ticket !== runs) return;
      const at = error.details?.position;
      if (at) ed.markError(at.line, at.column);
      status.textContent = "";
      results.replaceChildren(errorBox(error));
      return;
    }
    if (ticket !== runs) return;
    const ms = performance.now() - started;
    const more = rows.length > PAGE;
    if (more) rows = rows.slice(0, PAGE);
    const columns = rows.length ? Object.keys(rows[0]) : lastColumns;
    lastColumns = columns;
    // Thumbnails and image links need the dataset the ids are of: the server names it,
    // unless the query reads more than one (then the ids are shown as plain text).
    const hasImages = columns.includes("image_id") && dataset !== null;
    const shown = view === "auto" ? (hasImages ? "grid" : "table") : (view === "grid" && !hasImages ? "table" : view);
    viewButtons.forEach((b) => b.classList.toggle("primary", b.dataset.view === shown));
    viewButtons[0].disabled = !hasImages;
    const count = el("span", { class: "muted", id: "count" });
    const pager = el("div", { class: "row" },
      el("button", { type: "button", disabled: offset === 0, onclick: () => run(Math.max(0, offset - PAGE)) }, "← Previous"),
      el("button", { type: "button", disabled: !more, onclick: () => run(offset + PAGE) }, "Next →"),
      count);
    status.textContent = rows.length ? `rows ${offset + 1}–${offset + rows.length} (${ms.toFixed(0)} ms)` : "no rows";
    const captionKey = ["label", "score", "predicted"].find((c) => columns.includes(c));
    const body = shown === "grid" ? imageGrid(rows, captionKey, dataset) : table(columns, rows, dataset ?? false);
    const mixed = columns.includes("image_id") && dataset === null
      ? el("p", { class: "muted", id: "mixed-datasets" },
        "Its image ids are not shown as images: the query reads more than one dataset (or one the server cannot name), so which images they are cannot be told.")
      : null;
    results.replaceChildren(pager, ...(mixed ? [mixed] : []), body);
    decorate(ticket, text, shown === "table" ? body : null, count);
  }

  /** The total row count and, under the table's header, per-column summaries: one
   * `summary` request describes the whole result.
   * @param {number} ticket @param {string} text @param {HTMLElement | null} tableNode @param {HTMLElement} countNode */
  async function decorate(ticket, text, tableNode, countNode) {
    let summary;
    try {
      summary = await sqlSummary(text, on);
    } catch { return; /* the page already shows the rows */ }
    if (ticket !== runs) return;
    countNode.textContent = `${plural(summary.rows, "row")} in all`;
    const thead = tableNode?.querySelector("thead");
    if (!thead) return;
    const texts = summary.columns.map((c) => {
      const distinct = c.distinct === null ? "" : ` · ≈${c.distinct} distinct`;
      const range = c.min === null ? "" : ` · ${short(c.min)} … ${short(c.max)}`;
      return `${c.non_null} non-null${distinct}${range}`;
    });
    thead.querySelector("tr.summary")?.remove();
    thead.append(el("tr", { class: "summary" }, texts.map((t) => el("td", { title: t }, t))));
  }
}
