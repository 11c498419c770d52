// @ts-check
// Runs: the list, and one run's page: its verdict, the slices discovery suggests (with their
// failures first), and the HTML report.

import { api, sqlPage } from "./api.js";
import { el, enc, errorBox, imageGrid, main, table } from "./dom.js";
import { percent, plural } from "./format.js";
import { saveSliceDialog } from "./slices.js";

export async function runsPage() {
  main.replaceChildren(el("h1", {}, "Runs"), el("p", { class: "muted" }, "loading…"));
  try {
    const runs = await api("/runs");
    const rows = runs.map((r) => el("tr", {},
      el("td", {}, el("a", { href: `#/runs/${enc(r.run)}` }, r.run)), el("td", {}, `${r.model} ${r.model_version}`),
      el("td", {}, `${r.dataset}@${r.dataset_version}`), el("td", { class: "num" }, r.predictions), el("td", {}, r.created_at)));
    main.replaceChildren(el("h1", {}, "Runs"), runs.length
      ? el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, el("tr", {}, ["run", "model", "dataset", "predictions", "uploaded"].map((h) => el("th", {}, h)))), el("tbody", {}, rows)))
      : el("p", { class: "muted" }, "No runs yet: upload predictions with `slicetest run upload` or the Python client."));
  } catch (error) {
    main.replaceChildren(el("h1", {}, "Runs"), errorBox(error));
  }
}

export async function runPage(name, params) {
  const baseline = params.get("baseline") || "";
  main.replaceChildren(el("h1", {}, `Run ${name}`), el("p", { class: "muted" }, "scoring…"));
  try {
    const [runs, test, datasets] = await Promise.all([
      api("/runs"), api(`/runs/${enc(name)}/test${baseline ? `?baseline=${enc(baseline)}` : ""}`), api("/datasets")]);
    const defaultDataset = datasets.find((d) => d.default)?.name;
    const select = el("select", { "aria-label": "baseline run", id: "baseline" },
      el("option", { value: "" }, "no baseline"),
      runs.filter((r) => r.run !== name).map((r) => el("option", { value: r.run, selected: r.run === baseline }, r.run)));
    select.addEventListener("change", () => { location.hash = `#/runs/${enc(name)}${select.value ? `?baseline=${enc(select.value)}` : ""}`; });
    const summary = test.passed
      ? el("p", { class: "verdict pass", id: "verdict" }, "All slice tests pass.")
      : el("p", { class: "verdict fail", id: "verdict" }, `Failing: ${test.failing.join(", ")}`);
    const report = `/runs/${enc(name)}/report?format=html${baseline ? `&baseline=${enc(baseline)}` : ""}`;
    main.replaceChildren(
      el("div", { class: "row" }, el("h1", {}, `Run ${name}`), el("span", { class: "spacer" }),
        el("label", {}, "compare with ", select), el("a", { class: "button", href: report, target: "_blank" }, "Open report")),
      summary,
      suggestedSlices(runs.find((r) => r.run === name), defaultDataset),
      el("iframe", { class: "report", src: report, title: `report of ${name}`, onload: fitToContent }));
  } catch (error) {
    main.replaceChildren(el("h1", {}, `Run ${name}`), errorBox(error));
  }
}

/** Grows the report's frame to the report's height, so the page scrolls once instead of a
 * frame inside it (the report is served by this server: same origin, readable). */
function fitToContent(event) {
  const frame = /** @type {HTMLIFrameElement} */ (event.target);
  const height = frame.contentDocument?.documentElement?.scrollHeight;
  if (height) frame.style.height = `${Math.max(height + 4, 240)}px`;
}

// ---------------------------------------------------------------- Run: suggested slices

const GALLERY = 8;

/** Discovery's default support (30 images in the discovery half) suits thousands of
 * images; a small run gets a smaller one, so that it can find something at all. */
function defaultSupport(run) {
  return Math.min(30, Math.max(2, Math.floor((run?.predictions || 0) / 10)));
}

/** A slice name from predicates: "label = 'Shirt'", "contrast >= 0.39" → label_shirt_contrast_0_39. */
function sliceName(predicates) {
  const words = predicates.join(" ").toLowerCase().replace(/\bis null\b/g, "null").replace(/[^a-z0-9]+/g, "_");
  return words.replace(/^_+|_+$/g, "").slice(0, 64).replace(/_+$/, "") || "discovered";
}

/** The "Suggested slices" section of a run page: what `GET /runs/NAME/discover` confirms,
 * each with its numbers, its first images and a button that saves it as a slice.
 * Discovered queries name `images` unqualified, meaning the run's dataset: they are run
 * with it, and saved as slices only when it is the default one (slices are defined on the
 * default dataset). @param {string | undefined} defaultDataset */
function suggestedSlices(run, defaultDataset) {
  const support = el("input", { type: "number", min: 1, step: 1, value: defaultSupport(run), id: "discover-support", "aria-label": "fewest images of a slice in the discovery half", size: 4 });
  const status = el("p", { class: "muted", id: "discover-status" }, "searching…");
  const list = el("div", { id: "suggestions" });
  const section = el("section", { class: "panel", id: "suggested" },
    el("div", { class: "row" }, el("h2", {}, "Suggested slices"), el("span", { class: "spacer" }),
      el("label", {}, "slices of at least ", support, " images per half"),
      el("button", { type: "button", onclick: () => load() }, "Search again")),
    status, list);
  if (!run) {
    status.textContent = "";
    return section;
  }
  load();
  return section;

  async function load() {
    status.textContent = "searching…";
    list.replaceChildren();
    let found;
    try {
      found = await api(`/runs/${enc(run.run)}/discover?min_support=${enc(support.value)}`);
    } catch (error) {
      status.textContent = "";
      list.replaceChildren(errorBox(error));
      return;
    }
    const confirmed = found.slices.filter((s) => s.confirmed);
    const rate = found.error === "loss" ? (x) => (x === null ? "–" : Number(x).toFixed(3)) : percent;
    status.textContent = `${plural(confirmed.length, "slice")} where ${run.run} errs more than elsewhere: found on ` +
      `${plural(found.halves[0], "image")}, confirmed on the other ${plural(found.halves[1], "image")} ` +
      `(false-discovery rate ${found.fdr}; ${plural(found.tested, "candidate")} tested).`;
    if (!confirmed.length) {
      const why = found.mean_error === 0 ? "the run makes no errors."
        : found.tested === 0 ? "no slice is worse than the rest by enough to score above 0."
          : "none of the candidates was confirmed on the held-apart half.";
      list.replaceChildren(el("p", { class: "muted" }, `No suggestion: ${why}`));
      return;
    }
    // The suggested threshold of `slicetest discover --save`: the run's accuracy rounded
    // down to 5 points, which the slice fails now and passes once the model is fixed.
    const minAccuracy = found.error === "misclassification" ? Math.floor((1 - found.mean_error) * 20) / 20 : undefined;
    const dataset = { name: run.dataset, isDefault: run.dataset === defaultDataset };
    list.replaceChildren(...confirmed.map((s, i) => suggestion(s, i, found, rate, minAccuracy, dataset)));
  }
}

/** @param {{name: string, isDefault: boolean}} dataset the run's */
function suggestion(s, i, found, rate, minAccuracy, dataset) {
  const c = s.confirmation;
  const lift = c.lift === null ? (c.rest_rate === 0 ? "∞" : "–") : `${c.lift.toFixed(1)}×`;
  const gallery = el("div", { class: "gallery" }, el("span", { class: "muted" }, "loading images…"));
  const comment = `discovered on run ${found.run}: ${s.predicates.join(" AND ")} (${rate(c.error_rate)} errors vs ` +
    `${rate(c.rest_rate)} for the rest, confirmed p = ${s.adjusted_p.toExponential(1)})`;
  const node = el("div", { class: "suggestion", "data-suggestion": i + 1 },
    el("div", { class: "predicates" }, s.predicates.map((p, j) => el("span", {}, j ? el("b", {}, " AND ") : null, el("code", {}, p)))),
    el("div", { class: "row numbers" },
      el("span", { title: "error rate on the confirmation half, with its 95% interval" },
        `error ${rate(c.error_rate)} [${rate(c.interval[0])}, ${rate(c.interval[1])}]`),
      el("span", { class: "muted" }, `vs ${rate(c.rest_rate)} for the rest`),
      el("span", { title: "error rate of the slice over the rest's" }, `lift ${lift}`),
      el("span", { title: "Benjamini–Hochberg adjusted p-value of the confirmation test" }, `adj. p ${s.adjusted_p.toExponential(1)}`),
      el("span", { class: "muted", title: "images in the discovery / confirmation half" }, `${s.discovery.size} / ${c.size} images`),
      el("span", { class: "spacer" }),
      el("a", { class: "button", href: `#/explore?q=${enc(s.query)}${dataset.isDefault ? "" : `&dataset=${enc(dataset.name)}`}` }, "Explore"),
      dataset.isDefault
        ? el("button", { type: "button", class: "primary", onclick: () => saveSliceDialog(s.query, sliceName(s.predicates), { minAccuracy, comment }) }, "Save as slice…")
        : el("button", { type: "button", disabled: true, title: `slices are defined on the default dataset: run \`slicetest use ${dataset.name}\` to save slices of ${dataset.name}` }, "Save as slice…")),
    s.explanation ? explanationOf(s.explanation) : null,
    el("code", { class: "query", title: s.query }, shortQuery(s.query)),
    gallery);
  members(s.query, s.failures || [], gallery, dataset.name);
  return node;
}

/** An embedding slice in words: the phrases its vectors lean towards, and the `images`
 * predicates that select it best. */
function explanationOf(e) {
  const parts = [];
  if (e.phrases.length) parts.push(el("span", {}, "looks like ", e.phrases.map(([text], j) => el("span", {}, j ? ", " : "", el("q", {}, text)))));
  if (e.tags.length) parts.push(el("span", { title: "Jaccard similarity of these predicates' images with the slice's" }, `in tags: ${e.tags.join(" AND ")} (Jaccard ${e.tags_jaccard.toFixed(2)})`));
  return el("div", { class: "explanation muted" }, parts.map((p, j) => [j ? " · " : null, p]).flat());
}

/** A query for reading: an embedding slice's centroid (hundreds of numbers) folded. */
function shortQuery(query) {
  return query.replace(/\[(-?[0-9.e-]+, ){8,}-?[0-9.e-]+\]/g, (list) => `[… ${list.split(",").length} numbers]`);
}

/** A slice's images into `gallery`: the ones the run gets wrong first (`failures`, from
 * discovery), then the others by id. */
async function members(query, failures, gallery, dataset) {
  const wrong = failures.slice(0, GALLERY).map((id) => `'${id.replaceAll("'", "''")}'`);
  const order = wrong.length ? `CASE WHEN i.image_id IN (${wrong.join(", ")}) THEN 0 ELSE 1 END, ` : "";
  try {
    const { rows, dataset: of } = await sqlPage(`SELECT i.image_id, i.label FROM images AS i JOIN (\n${query}\n) AS q ON i.image_id = q.image_id ORDER BY ${order}i.image_id LIMIT ${GALLERY}`, { dataset });
    gallery.replaceChildren(of === null ? table(["image_id", "label"], rows, false) : imageGrid(rows, "label", of));
  } catch (error) {
    gallery.replaceChildren(errorBox(error));
  }
}
