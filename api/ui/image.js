// @ts-check
// One image: the picture with its boxes and masks, its metadata and tags, every run's
// prediction, the slices it is in, and images like it.

import { api } from "./api.js";
import { cell, el, enc, errorBox, imageGrid, main } from "./dom.js";
import { percent, plural } from "./format.js";

export async function imagePage(id, params) {
  const dataset = params.get("dataset");
  const suffix = dataset ? `?dataset=${enc(dataset)}` : "";
  main.replaceChildren(el("h1", {}, id), el("p", { class: "muted" }, "loading…"));
  let info;
  try {
    info = await api(`/images/${enc(id)}/info${suffix}`);
  } catch (error) {
    main.replaceChildren(el("h1", {}, id), errorBox(error));
    return;
  }
  const kv = el("table", { class: "kv" }, el("tbody", {}, Object.entries(info.image).map(([k, v]) => el("tr", {}, el("td", {}, k), cell(v)))));
  const truth = info.image.label;
  const predictions = info.predictions.length
    ? el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "run"), el("th", {}, "model"), el("th", {}, "predicted"), el("th", {}, ""))),
      el("tbody", {}, info.predictions.map((p) => el("tr", {},
        el("td", {}, el("a", { href: `#/runs/${enc(p.run)}` }, p.run)), el("td", {}, `${p.model} ${p.model_version}`),
        el("td", {}, p.predicted ?? "–"),
        el("td", { class: `verdict ${p.predicted === truth ? "pass" : "fail"}` }, p.predicted == null ? "" : p.predicted === truth ? "right" : "wrong")))))
    : el("p", { class: "muted" }, "No run has a prediction for this image.");
  const slices = info.slices.length
    ? el("ul", {}, info.slices.map((s) => el("li", {}, el("a", { href: "#/slices" }, s.slice), ` v${s.version}`, s.holdout ? " (hold-out)" : "")))
    : el("p", { class: "muted" }, "In no frozen slice.");
  const similar = el("div", { id: "similar" }, el("p", { class: "muted" }, "…"));
  const picture = el("img", { class: "picture", src: `/images/${enc(id)}${suffix}`, alt: id });
  const figure = el("div", { class: "figure" }, picture);
  const masks = maskView(id, info, params);
  const boxesNote = el("div", { id: "boxes-note" });
  const runs = info.detection_runs || [];
  // Which detection run's boxes are drawn: ?run=NAME, else the first; "" draws only the
  // ground truth.
  let shown = params.has("run") ? params.get("run") : (runs[0]?.run ?? "");
  const select = runs.length
    ? el("select", { id: "box-run", "aria-label": "detection run whose boxes are drawn" },
      el("option", { value: "" }, "ground truth only"),
      runs.map((r) => el("option", { value: r.run, selected: r.run === shown }, r.run)))
    : null;
  function draw() {
    const run = runs.find((r) => r.run === shown);
    figure.replaceChildren(picture, ...(masks ? [masks.overlay] : []), ...objectBoxes(info, run), ...(detectionBoxes(info) || []));
    boxesNote.replaceChildren(boxLegend(info, run));
  }
  select?.addEventListener("change", () => { shown = select.value; draw(); });
  draw();
  const detectionRuns = runs.length
    ? el("table", { id: "detection-runs" }, el("thead", {}, el("tr", {}, ["run", "model", "found", "missed", "false", "score ≥"].map((h) => el("th", {}, h)))),
      el("tbody", {}, runs.map((r) => el("tr", {},
        el("td", {}, el("a", { href: `#/runs/${enc(r.run)}` }, r.run)), el("td", {}, `${r.model} ${r.model_version}`),
        el("td", { class: "num" }, r.counts.tp), el("td", { class: `num${r.counts.fn ? " verdict fail" : ""}` }, r.counts.fn),
        el("td", { class: `num${r.counts.fp ? " verdict fail" : ""}` }, r.counts.fp), el("td", { class: "num" }, r.score_threshold.toFixed(3))))))
    : null;
  const boxCount = info.detections.length + (info.objects || []).length;
  main.replaceChildren(
    el("h1", {}, id),
    el("div", { class: "detail" },
      el("div", {}, figure, masks?.controls, select ? el("p", {}, el("label", {}, "boxes of ", select)) : null, boxesNote,
        el("p", { class: "muted" }, `${info.dataset} · ${info.format}`, boxCount ? ` · ${plural(boxCount, "box", "boxes")}` : "")),
      el("div", {}, el("h2", {}, "Metadata and tags"), kv, el("h2", {}, "Predictions"),
        info.predictions.length || !(runs.length || masks?.runs) ? predictions : null, detectionRuns, masks?.runs,
        el("h2", {}, "Slices"), slices)),
    el("h2", {}, "More like this"), similar);
  // Similar images are searched in the server's default dataset: an image of another one
  // is not looked up there (its id may be another image's, or none).
  if (dataset) {
    let datasets;
    try {
      datasets = await api("/datasets");
    } catch (error) {
      similar.replaceChildren(el("p", { class: "muted" }, error.message));
      return;
    }
    const current = datasets.find((d) => d.default);
    if (current?.name !== info.dataset) {
      similar.replaceChildren(el("p", { class: "muted", id: "similar-help" },
        `Similar images are searched in the default dataset${current ? ` (${current.name})` : ""} only, and this image is in ${info.dataset}. `,
        el("code", {}, `slicetest use ${info.dataset}`), " and a restart of the server make it the default."));
      return;
    }
  }
  try {
    const hits = await api(`/search/image/${enc(id)}?k=13`);
    similar.replaceChildren(imageGrid(hits.filter((h) => h.image_id !== id).slice(0, 12), null));
  } catch (error) {
    if (error.code === "no_embeddings") {
      const d = error.details;
      similar.replaceChildren(el("p", { class: "muted", id: "similar-help" },
        `Similar images are found by their CLIP embeddings, and ${d.dataset} has none yet. Embed it from the `,
        el("a", { href: "#/search" }, "Search page"), " or run ", el("code", {}, d.command), "."));
    } else {
      similar.replaceChildren(el("p", { class: "muted" }, error.message));
    }
  }
}

// Segmentation masks over the image: one layer at a time (a mask set's ground truth, a
// segmentation run's prediction, or where the run is wrong), as a PNG of the image's size
// stacked over the picture, with an opacity slider and a legend of its colours. ?layer=
// picks the first layer (`source:SET`, `run:RUN`, `errors:RUN`); else ?run= names a
// segmentation run whose prediction is shown, else the first mask set's ground truth.
function maskView(id, info, params) {
  const sets = info.masks || [], segRuns = info.segmentation_runs || [];
  if (!sets.length && !segRuns.length) return null;
  const dataset = params.get("dataset");
  const url = (query) => `/images/${enc(id)}/mask?${query}${dataset ? `&dataset=${enc(dataset)}` : ""}`;
  const iou = (c) => (c.iou == null ? "" : ` · IoU ${c.iou.toFixed(2)}`);
  const layers = [
    ...sets.map((s) => ({
      key: `source:${s.source}`, label: `${s.source}: ground truth`, src: url(`source=${enc(s.source)}`),
      legend: () => s.classes.map((c) => swatch(c.colour, `${c.class} ${percent(c.share)}`, `${plural(c.pixels, "pixel")} of ${c.class}`)),
    })),
    ...segRuns.flatMap((r) => [
      {
        key: `run:${r.run}`, label: `${r.run}: prediction`, src: url(`run=${enc(r.run)}`),
        legend: () => r.classes.filter((c) => c.predicted > 0).map((c) => swatch(c.colour, `${c.class} ${percent(c.share)}${iou(c)}`,
          `${plural(c.predicted, "pixel")} predicted ${c.class}, ${plural(c.pixels, "pixel")} true`)),
      },
      {
        key: `errors:${r.run}`, label: `${r.run}: errors`, src: url(`run=${enc(r.run)}&view=errors`),
        legend: () => [swatch(r.right.colour, `right ${percent(r.right.share)}`, plural(r.right.pixels, "pixel")),
          swatch(r.wrong.colour, `wrong ${percent(r.wrong.share)}`, plural(r.wrong.pixels, "pixel"))],
      },
    ]),
  ];
  const asked = params.get("layer") ?? (segRuns.some((r) => r.run === params.get("run")) ? `run:${params.get("run")}` : null);
  let shown = layers.find((l) => l.key === asked) ?? layers[0];
  const overlay = el("img", { class: "mask", alt: "", "aria-hidden": "true" });
  const select = el("select", { id: "mask-layer", "aria-label": "masks drawn over the image" },
    el("option", { value: "" }, "none"), layers.map((l) => el("option", { value: l.key, selected: l === shown }, l.label)));
  const opacity = el("input", { id: "mask-opacity", type: "range", min: 0, max: 100, value: 60, "aria-label": "opacity of the masks" });
  const legend = el("div", { id: "mask-legend", class: "legend" });
  function show() {
    overlay.hidden = !shown;
    if (shown) overlay.src = shown.src;
    overlay.style.opacity = String(Number(opacity.value) / 100);
    legend.replaceChildren(...(shown ? shown.legend() : []));
  }
  select.addEventListener("change", () => { shown = layers.find((l) => l.key === select.value) ?? null; show(); });
  opacity.addEventListener("input", show);
  show();
  const controls = el("div", { class: "mask-controls" },
    el("p", { class: "row" }, el("label", {}, "masks ", select), el("label", {}, "opacity ", opacity)), legend);
  const runs = segRuns.length
    ? el("table", { id: "segmentation-runs" }, el("thead", {}, el("tr", {}, ["run", "model", "pixel accuracy", "mIoU", "wrong pixels"].map((h) => el("th", {}, h)))),
      el("tbody", {}, segRuns.map((r) => el("tr", {},
        el("td", {}, el("a", { href: `#/runs/${enc(r.run)}` }, r.run)), el("td", {}, `${r.model} ${r.model_version}`),
        el("td", { class: "num" }, percent(r.pixel_accuracy)), el("td", { class: "num" }, r.mean_iou == null ? "–" : r.mean_iou.toFixed(3)),
        el("td", { class: `num${r.wrong.pixels ? " verdict fail" : ""}` }, r.wrong.pixels.toLocaleString())))))
    : null;
  return { overlay, controls, runs };
}

/** A legend entry: a colour swatch and its text. Colours go through the CSSOM (the CSP forbids inline styles). */
function swatch(colour, text, title) {
  const key = el("i");
  key.style.background = colour;
  return el("span", { class: "class-key", title }, key, text);
}

// A box over the image, in percent of its size so it follows the scaled picture.
// Positions go through the CSSOM: the page's CSP forbids inline style attributes.
function overlayBox(info, [x, y, w, h], cls, label, title) {
  const width = Number(info.image.width), height = Number(info.image.height);
  if (!(width > 0 && height > 0)) return null;
  const clamp = (v, max) => Math.min(Math.max(v, 0), max);
  const [x0, y0, x1, y1] = [clamp(x, width), clamp(y, height), clamp(x + w, width), clamp(y + h, height)];
  const box = el("div", { class: `box ${cls}`, title }, label ? el("span", {}, label) : null);
  Object.assign(box.style, {
    left: `${(100 * x0) / width}%`, top: `${(100 * y0) / height}%`,
    width: `${(100 * (x1 - x0)) / width}%`, height: `${(100 * (y1 - y0)) / height}%`,
  });
  return box;
}

const OUTCOMES = { tp: "found", fp: "false detection", fn: "missed", ignored: "in a crowd" };

// The ground-truth objects (dashed blue), and a detection run's boxes at its operating
// point: found (green), false (orange), missed objects (red).
function objectBoxes(info, run) {
  const truth = (info.objects || []).map((o) => overlayBox(info, o.bbox, `gt${o.iscrowd ? " crowd" : ""}`,
    run ? "" : o.category, `${o.category} (ground truth${o.iscrowd ? ", crowd" : ""}, object ${o.object_id})`));
  const predicted = (run?.boxes || []).map((b) => {
    const score = b.score == null ? "" : ` ${b.score.toFixed(2)}`;
    return overlayBox(info, b.bbox, b.outcome, `${b.category}${score}`, `${OUTCOMES[b.outcome]}: ${b.category}${score} (${run.run})`);
  });
  return [...truth, ...predicted].filter(Boolean);
}

function boxLegend(info, run) {
  if (!run) return (info.objects || []).length ? el("p", { class: "legend" }, el("span", { class: "key gt" }, "ground truth")) : "";
  const c = run.counts;
  return el("p", { class: "legend" }, `${run.run} at score ≥ ${run.score_threshold.toFixed(3)}, IoU 0.5: `,
    el("span", { class: "key tp" }, `${c.tp} found`), " ", el("span", { class: "key fn" }, `${c.fn} missed`), " ",
    el("span", { class: "key fp" }, `${c.fp} false`), " ", el("span", { class: "key gt" }, "ground truth"));
}

// Taggers' boxes (faces, imported detectors) drawn over the image.
function detectionBoxes(info) {
  if (!info.detections.length) return null;
  return info.detections.map((d) => {
    const score = d.score == null ? "" : ` ${d.score.toFixed(2)}`;
    return overlayBox(info, [d.x0, d.y0, d.x1 - d.x0, d.y1 - d.y0], "tagger", d.label, `${d.label}${score} (${d.tagger})`);
  }).filter(Boolean);
}
