// @ts-check
// Home: what the workspace holds (datasets, slices with the latest run's verdicts, runs),
// each item a link, and a first look at the images.

import { api, sql } from "./api.js";
import { el, enc, errorBox, imageGrid, main } from "./dom.js";
import { headline, ident, VERDICTS } from "./format.js";
import { latestVerdicts, verdictsOf } from "./slices.js";

/** The landing page: what the workspace holds, each item a link, and a first look at the images. */
export async function homePage() {
  main.replaceChildren(el("h1", {}, "slicetest"), el("p", { class: "muted" }, "loading…"));
  let datasets, slices, runs;
  try {
    [datasets, slices, runs] = await Promise.all([api("/datasets"), api("/slices"), api("/runs")]);
  } catch (error) {
    main.replaceChildren(el("h1", {}, "slicetest"), errorBox(error));
    return;
  }
  if (!datasets.length) {
    main.replaceChildren(el("h1", {}, "slicetest"), el("div", { class: "panel", id: "home-empty" },
      el("p", {}, "This workspace has no datasets yet. Add one from the command line:"),
      el("pre", { class: "command" }, "slicetest ingest <folder | manifest.csv | coco.json | idx-dir>"),
      el("p", { class: "muted" }, "or try `slicetest demo`, which ingests Fashion-MNIST, tags it, freezes slices and scores two models.")));
    return;
  }
  const current = datasets.find((d) => d.default) || datasets[0];
  const verdicts = el("span", { class: "muted", id: "home-verdicts" }, runs.length && slices.length ? "scoring…" : "");
  const sliceRows = el("tbody", {}, slices.map((s) => {
    const latest = s.versions.length ? s.versions[s.versions.length - 1] : null;
    return el("tr", { "data-slice": s.name },
      el("td", {}, el("a", { href: `#/slices?slice=${enc(s.name)}`, title: s.name }, s.name)),
      el("td", {}, latest ? `v${latest.version}` : "not frozen"),
      el("td", { class: "num" }, latest ? latest.members : "–"),
      el("td", { class: "verdict-cell" }, ""));
  }));
  const preview = el("div", { id: "home-preview" }, el("p", { class: "muted" }, "loading images…"));
  main.replaceChildren(
    el("h1", {}, "slicetest"),
    el("div", { class: "home" },
      el("section", { class: "panel", id: "home-datasets" },
        el("h2", {}, "Datasets"),
        el("div", { class: "table-wrap" }, el("table", {},
          el("thead", {}, el("tr", {}, ["dataset", "images", "version", "search", "published"].map((h) => el("th", {}, h)))),
          el("tbody", {}, datasets.map((d) => el("tr", {},
            el("td", {}, el("a", { href: exploreLink(d), title: d.name }, d.name), d.default ? el("span", { class: "muted" }, " (default)") : null),
            el("td", { class: "num" }, Number(d.images).toLocaleString()),
            el("td", {}, `v${d.version}`, d.versions > 1 ? el("span", { class: "muted" }, ` of ${d.versions}`) : null),
            el("td", {}, d.embeddings.length
              ? el("span", {}, d.embeddings.join(", "))
              : d.default ? el("a", { href: "#/search" }, "not embedded: embed…") : el("span", { class: "muted" }, "not embedded")),
            el("td", { class: "muted" }, String(d.published_at).slice(0, 16).replace("T", " ")))))))),
      el("section", { class: "panel", id: "home-slices" },
        el("div", { class: "row" }, el("h2", {}, "Slices"), el("span", { class: "spacer" }), verdicts),
        slices.length
          ? el("div", { class: "table-wrap" }, el("table", {},
            el("thead", {}, el("tr", {}, ["slice", "frozen", "members", "latest verdict"].map((h) => el("th", {}, h)))), sliceRows))
          : el("p", { class: "muted" }, "No slices yet: write a query on ", el("a", { href: "#/explore" }, "Explore"), " and save it as a slice.")),
      el("section", { class: "panel", id: "home-runs" },
        el("h2", {}, "Latest runs"),
        runs.length
          ? el("div", { class: "table-wrap" }, el("table", {},
            el("thead", {}, el("tr", {}, ["run", "model", "dataset", "uploaded"].map((h) => el("th", {}, h)))),
            el("tbody", {}, [...runs].sort((a, b) => (a.created_at < b.created_at ? 1 : -1)).slice(0, 8).map((r) => el("tr", {},
              el("td", {}, el("a", { href: `#/runs/${enc(r.run)}`, title: r.run }, r.run)),
              el("td", {}, `${r.model} ${r.model_version}`),
              el("td", {}, `${r.dataset}@${r.dataset_version}`),
              el("td", { class: "muted" }, String(r.created_at).slice(0, 16).replace("T", " ")))))))
          : el("p", { class: "muted" }, "No runs yet: upload predictions with `slicetest run upload` or the Python client."))),
    el("section", {},
      el("div", { class: "row" }, el("h2", {}, `A look at ${current.name}`), el("span", { class: "spacer" }),
        el("a", { class: "button", href: exploreLink(current) }, "Explore all →")),
      preview));
  if (current.default) {
    sql("SELECT image_id, label FROM images ORDER BY image_id LIMIT 24")
      .then((rows) => preview.replaceChildren(rows.length ? imageGrid(rows, "label") : el("p", { class: "muted" }, "No images.")))
      .catch((error) => preview.replaceChildren(errorBox(error)));
  } else {
    preview.replaceChildren(el("p", { class: "muted" }, "No default dataset: pick one with `slicetest use <dataset>`."));
  }
  if (runs.length && slices.length) {
    // Each slice is scored by the newest run of its own dataset.
    const scored = await latestVerdicts(slices, runs);
    const link = (run) => el("a", { href: `#/runs/${enc(run)}` }, run);
    verdicts.replaceChildren(...(scored.runs.length ? ["verdicts of ", ...verdictsOf(scored.runs, link)] : ["no run of these slices' datasets"]),
      ...scored.errors.map((e) => el("span", { class: "error" }, ` ${e}`)));
    for (const [slice, score] of Object.entries(scored.bySlice)) {
      const cell = sliceRows.querySelector(`[data-slice="${CSS.escape(slice)}"] .verdict-cell`);
      if (!cell) continue;
      cell.replaceChildren(el("span", { class: `verdict ${score.verdict}`, title: `in run ${score.run}` },
        `${VERDICTS[score.verdict] || score.verdict} ${headline(score)}`));
    }
  }
}

/** Explore with a first query over dataset `d` (the server names the dataset of its ids,
 * so the grid shows that dataset's images). */
function exploreLink(d) {
  const table = d.default ? "images" : `${ident(d.name)}.images`;
  const q = `SELECT image_id, label, split\nFROM ${table}\nORDER BY image_id`;
  return `#/explore?q=${enc(q)}`;
}
