// @ts-check
// Slices: each slice's query, frozen versions, breakdown and latest verdict; freezing and
// diffs; and the dialog that saves a query as a slice (Explore, Search and Runs use it).

import { api } from "./api.js";
import { el, enc, errorBox, main, table, toast } from "./dom.js";
import { headline, percent, VERDICTS } from "./format.js";

/** The dialog that defines a slice from `query`: a name (`suggestion` to start with), an
 * optional threshold (`minAccuracy` to start with) and, when given, `comment`.
 * @param {string} query @param {string} [suggestion]
 * @param {{minAccuracy?: number, comment?: string}} [options] */
export function saveSliceDialog(query, suggestion = "", { minAccuracy, comment } = {}) {
  const name = el("input", { name: "name", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9_\\-]{0,63}", value: suggestion, "aria-label": "slice name" });
  const minAcc = el("input", { name: "min_accuracy", type: "number", min: 0, max: 1, step: 0.01, placeholder: "e.g. 0.8", value: minAccuracy, "aria-label": "minimum accuracy" });
  const problem = el("p", { class: "error" });
  const form = el("form", { method: "dialog" },
    el("h2", {}, "Save as slice"),
    el("p", { class: "muted" }, "The query must return image_id. Freeze it on the Slices page."),
    el("div", { class: "row" }, el("label", {}, "Name ", name)),
    el("div", { class: "row" }, el("label", {}, "Minimum accuracy ", minAcc)),
    el("code", { class: "query", title: query }, query),
    problem,
    el("div", { class: "row" },
      el("span", { class: "spacer" }),
      el("button", { type: "button", onclick: () => dialog.close() }, "Cancel"),
      el("button", { type: "submit", class: "primary", value: "save" }, "Create slice")));
  const dialog = el("dialog", { id: "save-slice" }, form);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { name: name.value.trim(), query };
    if (minAcc.value) body.min_accuracy = Number(minAcc.value);
    if (comment) body.comment = comment;
    try {
      await api("/slices", { method: "POST", body });
      dialog.close();
      toast(`slice ${body.name} created`);
      location.hash = `#/slices?created=${enc(body.name)}`;
    } catch (error) {
      problem.textContent = error.message;
    }
  });
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  name.focus();
}

// ---------------------------------------------------------------- Slices


const SEGMENTS = ["train", "val", "test", "holdout", "unsplit"];

function breakdownBar(b) {
  const bar = el("div", { class: "bar", title: SEGMENTS.map((s) => `${s} ${b[s]}`).join(", ") });
  for (const s of SEGMENTS) {
    if (!b.members || !b[s]) continue;
    const seg = el("span", { class: `seg-${s}` });
    seg.style.width = `${(100 * b[s]) / b.members}%`;
    bar.append(seg);
  }
  return bar;
}

/**
 * Each slice's verdict in the newest run of the slice's own dataset (a run scores the
 * slices of its dataset only, so the newest run of another dataset says nothing of them).
 * @param {{name: string, dataset: string}[]} slices
 * @param {{run: string, dataset: string, created_at: string}[]} runs
 * @returns {Promise<{runs: {run: string, dataset: string}[], bySlice: Record<string, any>, errors: string[]}>}
 */
export async function latestVerdicts(slices, runs) {
  /** @type {Record<string, {run: string, dataset: string, created_at: string}>} */
  const newest = {};
  for (const r of runs) {
    if (!newest[r.dataset] || r.created_at > newest[r.dataset].created_at) newest[r.dataset] = r;
  }
  const scored = [...new Set(slices.map((s) => s.dataset))].sort().map((d) => newest[d]).filter(Boolean);
  const datasetOf = Object.fromEntries(slices.map((s) => [s.name, s.dataset]));
  /** @type {Record<string, any>} */
  const bySlice = {};
  /** @type {string[]} */
  const errors = [];
  await Promise.all(scored.map(async (run) => {
    try {
      const test = await api(`/runs/${enc(run.run)}/test`);
      for (const score of test.slices) {
        if (datasetOf[score.slice] === run.dataset) bySlice[score.slice] = { ...score, run: run.run };
      }
    } catch (error) {
      errors.push(`could not score ${run.run}: ${error.message}`);
    }
  }));
  return { runs: scored, bySlice, errors };
}

/** Which runs the verdicts are of, in words: "the latest run: a" or, when slices of several
 * datasets are scored, "each dataset's latest run: a (photos), b (scans)".
 * @param {{run: string, dataset: string}[]} runs @param {(run: string) => Node | string} name */
export function verdictsOf(runs, name) {
  if (runs.length === 1) return ["the latest run: ", name(runs[0].run)];
  return ["each dataset's latest run: ", ...runs.flatMap((r, i) => [i ? ", " : "", name(r.run), ` (${r.dataset})`])];
}

export async function slicesPage(params) {
  main.replaceChildren(el("h1", {}, "Slices"), el("p", { class: "muted" }, "loading…"));
  let slices, runs;
  try {
    [slices, runs] = await Promise.all([api("/slices"), api("/runs").catch(() => [])]);
  } catch (error) {
    main.replaceChildren(el("h1", {}, "Slices"), errorBox(error));
    return;
  }
  const verdicts = await latestVerdicts(slices, runs);
  const legend = el("div", { class: "legend" }, SEGMENTS.map((s) => el("span", {}, el("i", { class: `seg-${s}` }), s)));
  const list = el("div", { class: "slice-list" }, slices.map((s) => sliceCard(s, verdicts)));
  main.replaceChildren(
    el("div", { class: "row" }, el("h1", {}, "Slices"), el("span", { class: "spacer" }),
      el("a", { class: "button", href: "#/explore" }, "New slice from a query")),
    el("div", { class: "row" }, legend, el("span", { class: "spacer" }),
      el("span", { class: "muted", id: "verdicts-of" }, verdicts.runs.length
        ? ["verdicts of ", ...verdictsOf(verdicts.runs, (run) => run)] : runs.length ? "no run of these slices' datasets" : "no runs yet"),
      ...verdicts.errors.map((e) => el("span", { class: "error" }, e))),
    slices.length ? list : el("p", { class: "muted" }, "No slices yet: write a query on Explore and save it as a slice."));
  const created = params.get("created");
  const input = created ? list.querySelector(`[data-slice="${CSS.escape(created)}"] input`) : null;
  if (input instanceof HTMLInputElement) input.focus();
  const wanted = params.get("slice");
  const card = wanted && list.querySelector(`[data-slice="${CSS.escape(wanted)}"]`);
  if (card) {
    card.classList.add("focus");
    card.scrollIntoView({ block: "center" });
  }
}

function sliceCard(s, verdicts) {
  const b = s.breakdown || {};
  const v = verdicts.bySlice[s.name];
  const latest = s.versions.length ? s.versions[s.versions.length - 1] : null;
  // The share the latest version holds out (0 before a first freeze). Freezing sends a
  // share only when it was changed here, and never a seed, so the server keeps the latest
  // version's: the same images stay held out.
  const current = latest ? latest.holdout_share : 0;
  const holdout = el("input", { type: "number", min: 0, max: 1, step: 0.05, value: current, "aria-label": `hold-out share of ${s.name}`, size: 4, title: latest ? `v${latest.version} holds out ${current} (seed ${latest.seed})` : "share of the members held out" });
  const out = el("div", { class: "diff" });
  const freeze = async () => {
    const body = holdout.value !== "" && Number(holdout.value) !== current ? { holdout: Number(holdout.value) } : {};
    try {
      const r = await api(`/slices/${enc(s.name)}/freeze`, { method: "POST", body });
      toast(r.created ? `${s.name}: froze version ${r.frozen.version} (${r.frozen.members} members)` : `${s.name}: unchanged since version ${r.frozen.version}`);
      await slicesPage(new URLSearchParams());
      // A changed hold-out, and above all images it no longer holds out, stay said on the redrawn card.
      const box = main.querySelector(`[data-slice="${CSS.escape(s.name)}"] .diff`);
      if (box) {
        box.replaceChildren(...(r.notes || []).map((n) => el("p", { class: "muted" }, n)),
          ...(r.warnings || []).map((w) => el("p", { class: "error", role: "alert" }, `Warning: ${w}`)));
      }
    } catch (error) {
      out.replaceChildren(errorBox(error));
    }
  };
  const diff = async () => {
    try {
      const rows = await api(`/slices/${enc(s.name)}/diff`);
      out.replaceChildren(rows.length ? table(["change", "image_id"], rows, s.dataset) : el("p", { class: "muted" }, "No change since the latest freeze."));
    } catch (error) {
      out.replaceChildren(errorBox(error));
    }
  };
  return el("div", { class: "panel", "data-slice": s.name },
    el("div", {},
      el("div", { class: "name", title: s.name }, s.name),
      el("code", { class: "query", title: s.query }, s.query),
      el("div", { class: "row" },
        latest ? breakdownBar(b) : el("span", { class: "muted" }, "not frozen yet"),
        el("span", { class: "muted" }, latest ? `v${latest.version} · ${latest.members} members · ${b.holdout} held out · ${percent(b.coverage)} of ${s.dataset}` : s.dataset),
        s.min_accuracy != null ? el("span", { class: "muted" }, `test: accuracy ≥ ${percent(s.min_accuracy)}`) : null,
        s.min_map != null ? el("span", { class: "muted" }, `test: mAP ≥ ${s.min_map}`) : null,
        s.min_mask_map != null ? el("span", { class: "muted" }, `test: mask mAP ≥ ${s.min_mask_map}`) : null,
        s.min_keypoint_map != null ? el("span", { class: "muted" }, `test: keypoint AP ≥ ${s.min_keypoint_map}`) : null,
        v ? el("span", { class: `verdict ${v.verdict}`, title: `in run ${v.run}` }, `${VERDICTS[v.verdict] || v.verdict} ${headline(v)}`) : null),
      out),
    el("div", {},
      el("div", { class: "row" }, el("label", {}, "hold-out ", holdout),
        el("button", { type: "button", class: "primary", onclick: freeze }, latest ? "Freeze again" : "Freeze")),
      el("div", { class: "row" },
        el("button", { type: "button", onclick: diff, disabled: !latest }, "Diff"),
        el("a", { class: "button", href: `#/explore?q=${enc(`SELECT * FROM slice('${s.name}')`)}` }, "Members"))));
}
