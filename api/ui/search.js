// @ts-check
// Search: by text and by an image file, and, for a dataset without embeddings, how to embed
// it (the command, or a job on the server followed to its end).

import { api } from "./api.js";
import { el, enc, errorBox, imageGrid, main, toast } from "./dom.js";
import { plural } from "./format.js";
import { saveSliceDialog } from "./slices.js";

export async function searchPage(params) {
  const q = el("input", { type: "search", name: "q", id: "search-text", placeholder: "a dimly lit factory floor", value: params.get("q") || "", size: 40, "aria-label": "search text" });
  const k = el("input", { type: "number", name: "k", min: 1, max: 1000, value: params.get("k") || 24, "aria-label": "results" });
  const results = el("div", { id: "results" });
  const file = el("input", { type: "file", accept: "image/*", "aria-label": "search by image file" });
  const drop = el("div", { class: "drop", tabindex: 0 }, "Drop an image here, or ", file);
  const form = el("form", { class: "row" }, q, el("label", {}, "k ", k),
    el("button", { type: "submit", class: "primary" }, "Search"));
  form.addEventListener("submit", (e) => { e.preventDefault(); searchText(); });
  const embedBox = el("div", { id: "embed-box" });
  main.replaceChildren(el("h1", {}, "Search"), embedBox, form, drop, results);
  q.focus();

  // A dataset without embeddings cannot be searched: say so, and how to embed it, before
  // anyone types a query (and resume showing a job that is already running).
  let embedded = true;
  try {
    const datasets = await api("/datasets");
    const current = datasets.find((d) => d.default);
    if (current && !current.embeddings.length) {
      embedded = false;
      const jobs = await api("/jobs");
      const running = jobs.find((j) => j.dataset === current.name && (j.state === "queued" || j.state === "running"));
      embedBox.replaceChildren(embedPanel(current.name, current.embed.command, current.embed.model, running, onEmbedded));
    }
  } catch (error) {
    embedBox.replaceChildren(errorBox(error));
  }

  function onEmbedded() {
    embedded = true;
    if (q.value.trim()) searchText();
    else q.focus();
  }

  async function show(promise, saveQuery) {
    results.replaceChildren(el("p", { class: "muted" }, "searching…"));
    try {
      const hits = await promise;
      const save = saveQuery
        ? el("button", { type: "button", onclick: () => saveSliceDialog(saveQuery) }, "Save as slice…") : null;
      results.replaceChildren(el("div", { class: "row" }, el("span", { class: "muted" }, `${hits.length} results`), el("span", { class: "spacer" }), save),
        imageGrid(hits, null));
    } catch (error) {
      if (error.code !== "no_embeddings") {
        results.replaceChildren(errorBox(error));
        return;
      }
      results.replaceChildren();
      if (!embedBox.querySelector("#embed-panel")) {
        const d = error.details;
        embedBox.replaceChildren(embedPanel(d.dataset, d.command, d.model, null, onEmbedded));
      }
      embedBox.querySelector("#embed-panel")?.scrollIntoView({ block: "nearest" });
    }
  }

  function searchText() {
    const text = q.value.trim();
    if (!text) return;
    history.replaceState(null, "", `#/search?q=${enc(text)}&k=${k.value}`);
    const literal = text.replace(/'/g, "''");
    show(api(`/search/text?q=${enc(text)}&k=${enc(k.value)}`), `SELECT image_id FROM text_search('${literal}', ${Number(k.value)})`);
  }

  function searchFile(blob) {
    show(api(`/search/image?k=${enc(k.value)}`, { method: "POST", raw: blob }));
  }

  file.addEventListener("change", () => {
    const chosen = file.files?.[0];
    if (chosen) searchFile(chosen);
  });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const dropped = e.dataTransfer?.files[0];
    if (dropped) searchFile(dropped);
  });
  if (q.value && embedded) searchText();
}

/** The CLIP model `slicetest embed` and `slicetest serve` use when none is named. */
const DEFAULT_CLIP = "openai/clip-vit-base-patch32";

/** Why search needs embeddings, the command that makes them, and a form that starts an
 * embedding job on the server and follows it to the end; then `onDone()`. */
function embedPanel(dataset, command, model, running, onDone) {
  const subset = `${command} --where "split = 'test'"`;
  const modelInput = el("input", { name: "model", id: "embed-model", value: model, size: 42, "aria-label": "CLIP model: a Hugging Face id or a checkpoint directory on the server" });
  const where = el("input", { name: "where", id: "embed-where", placeholder: "split = 'test'", size: 24, "aria-label": "only images where (SQL)" });
  const limit = el("input", { name: "limit", id: "embed-limit", type: "number", min: 1, placeholder: "all", size: 6, "aria-label": "at most this many images" });
  const start = el("button", { type: "submit", class: "primary", id: "embed-start" }, `Embed ${dataset}`);
  const bar = el("progress", { id: "embed-progress", max: 1 });
  const status = el("span", { id: "embed-status", class: "muted", role: "status" });
  const progress = el("div", { class: "row embed-progress", hidden: true }, bar, status);
  const problem = el("p", { class: "error", role: "alert" });
  const form = el("form", { id: "embed-form" },
    el("div", { class: "row" }, el("label", {}, "model ", modelInput)),
    el("div", { class: "row" }, el("label", {}, "where ", where), el("label", {}, "limit ", limit), start));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    problem.textContent = "";
    const body = { model: modelInput.value.trim() };
    if (where.value.trim()) body.where = where.value.trim();
    if (limit.value) body.limit = Number(limit.value);
    try {
      follow(await api(`/datasets/${enc(dataset)}/embed`, { method: "POST", body }));
    } catch (error) {
      if (error.code === "job_running" && error.details.job) follow(error.details.job);
      else problem.textContent = error.message;
    }
  });
  const title = el("h2", {}, `${dataset} has no embeddings yet`);
  const panel = el("section", { class: "panel", id: "embed-panel" },
    title,
    el("p", {}, "Text and image search compare CLIP vectors of the images, so the dataset is embedded once first. On the command line:"),
    el("pre", { class: "command", id: "embed-command" }, command),
    el("p", { class: "muted" }, "or a subset to start with, e.g. the test split:"),
    el("pre", { class: "command" }, subset),
    el("p", { class: "muted" },
      model === DEFAULT_CLIP
        ? `The default model, ${DEFAULT_CLIP}, is read from the Hugging Face cache or downloaded once (about 600 MB); `
        : `The server's model is ${model}. `,
      "A ViT-B/32 embeds some 15–20 images/s on two CPU cores, and embedding resumes where it stopped. ",
      "Or start it here, on the server (a directory model is a path on the server):"),
    form, progress, problem);
  if (running) follow(running);
  return panel;

  async function follow(job) {
    start.disabled = true;
    progress.hidden = false;
    for (;;) {
      show(job);
      if (job.state === "done") {
        start.disabled = false;
        title.textContent = `${dataset} is embedded`;
        form.hidden = true;
        toast(`${dataset}: ${plural(job.embedded, "image")} embedded`);
        onDone();
        return;
      }
      if (job.state === "failed") {
        start.disabled = false;
        problem.textContent = `The embedding job failed: ${job.error}`;
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
      if (!panel.isConnected) return;
      try {
        job = await api(`/jobs/${enc(job.id)}`);
      } catch (error) {
        start.disabled = false;
        problem.textContent = error.message;
        return;
      }
    }
  }

  function show(job) {
    if (job.total === null) {
      bar.removeAttribute("value");
      status.textContent = job.state === "queued" ? "queued…" : "loading the model…";
      return;
    }
    bar.max = Math.max(job.total, 1);
    bar.value = job.state === "done" ? bar.max : job.done;
    const already = job.already_embedded ? `, ${job.already_embedded} were already` : "";
    const warning = job.warning ? ` (warning: ${job.warning})` : "";
    // Every image done, the job readies the search index (`indexed` vectors linked so far).
    const linked = job.indexed === null ? "" : ` (${job.indexed} vectors linked)`;
    status.textContent = job.state === "done"
      ? `embedded ${plural(job.embedded, "image")}${already}${job.failed ? `, ${job.failed} could not be read` : ""}${warning}`
      : job.phase === "indexing"
        ? `${plural(job.total, "image")} embedded, building the search index…${linked}`
        : job.phase === "merging"
          ? `${plural(job.total, "image")} embedded, merging the embedding parts…`
          : `${job.done} of ${plural(job.total, "image")}${already}`;
  }
}
