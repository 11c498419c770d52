// The slicetest web UI: one ES module, no framework and no build step. Pages are
// functions of the URL hash (#/ home, #/explore, #/search, #/slices, #/runs, #/runs/NAME,
// #/image/ID) that fetch the JSON API and build DOM nodes. Text from the server is only
// ever set as textContent, never as HTML.

const main = document.getElementById("main");
const PAGE = 100;

// ---------------------------------------------------------------- helpers

/** Builds an element: el("a", {href: "#"}, "text", child…). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function toast(message) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => box.classList.remove("show"), 3000);
}

class ApiError extends Error {
  /** `details` is the whole error object: some codes carry more (no_embeddings: dataset, command, model). */
  constructor(status, code, message, details = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** Calls the API; JSON in and out. Writes carry the token when one is set. */
async function api(path, { method = "GET", body, json = true, raw } = {}) {
  const headers = { Accept: "application/json" };
  const token = localStorage.getItem("slicetest-token");
  if (token && method !== "GET") headers.Authorization = `Bearer ${token}`;
  let payload = raw;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload });
  if (!response.ok) {
    let error = { code: "http", message: `${response.status} ${response.statusText}` };
    try { error = (await response.json()).error; } catch { /* not JSON */ }
    if (response.status === 401) askToken();
    throw new ApiError(response.status, error.code, error.message, error);
  }
  return json ? response.json() : response;
}

const sql = (query) => api("/sql", { method: "POST", body: { sql: query } });
const enc = encodeURIComponent;
const thumb = (id, size = 128) => `/images/${enc(id)}/thumbnail?size=${size}`;

function askToken() {
  const current = localStorage.getItem("slicetest-token") || "";
  const token = prompt("This server needs a token for writes (slicetest serve --token). Token:", current);
  if (token !== null) {
    if (token) localStorage.setItem("slicetest-token", token);
    else localStorage.removeItem("slicetest-token");
  }
}
document.getElementById("token").addEventListener("click", askToken);

function hashParams() {
  const [path, query = ""] = location.hash.slice(1).split("?");
  return { path: path || "/", params: new URLSearchParams(query) };
}

function errorBox(error) {
  return el("p", { class: "error", role: "alert" }, error.message || String(error));
}

function plural(n, one, many = `${one}s`) {
  return `${Number(n).toLocaleString()} ${n === 1 ? one : many}`;
}

/** A dataset's name as a quoted SQL identifier. */
function ident(name) {
  return `"${String(name).replace(/"/g, '""')}"`;
}

function percent(x) {
  return x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`;
}

// ---------------------------------------------------------------- image grid and table

/** A grid of image cards; `rows` have image_id and optionally score / a caption field. */
function imageGrid(rows, captionKey) {
  return el("div", { class: "grid" }, rows.map((row) => {
    const id = String(row.image_id);
    const caption = captionKey && row[captionKey] !== undefined ? String(row[captionKey]) : id;
    return el("a", { class: "card", href: `#/image/${enc(id)}`, title: id },
      el("img", { class: "thumb", loading: "lazy", alt: id, src: thumb(id), width: 120, height: 120 }),
      el("div", { class: "caption" }, caption),
      row.score !== undefined ? el("div", { class: "score" }, Number(row.score).toFixed(4)) : null);
  }));
}

function cell(value) {
  if (value === null || value === undefined) return el("td", { class: "muted" }, "NULL");
  if (typeof value === "number") return el("td", { class: "num" }, String(value));
  const text = typeof value === "object" ? JSON.stringify(value) : String(value);
  return el("td", { title: text }, text);
}

function table(columns, rows, summaries) {
  const head = el("tr", {}, columns.map((c) => el("th", { title: c }, c)));
  const summaryRow = summaries
    ? el("tr", { class: "summary" }, columns.map((c) => el("td", {}, summaries[c] || "")))
    : null;
  const body = rows.map((row) => el("tr", {}, columns.map((c) => {
    const td = cell(row[c]);
    if (c === "image_id" && row[c] !== null) {
      td.replaceChildren(el("a", { href: `#/image/${enc(row[c])}` }, String(row[c])));
    }
    return td;
  })));
  return el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, head, summaryRow), el("tbody", {}, body)));
}

// ---------------------------------------------------------------- SQL editor

const KEYWORDS = new Set(("select from where group by order limit offset having join left right inner outer full on as and or not " +
  "in is null like ilike between case when then else end distinct union all with asc desc true false cast count sum avg min max " +
  "exists over partition create slice freeze show describe drop").split(" "));

function highlight(text, errorAt) {
  const out = [];
  const re = /(--[^\n]*)|('(?:[^']|'')*'?)|("(?:[^"]|"")*"?)|(\b\d+(?:\.\d+)?\b)|([A-Za-z_][A-Za-z0-9_]*)|(\s+)|(.)/g;
  let match;
  while ((match = re.exec(text))) {
    const [token, comment, str, quoted, num, word] = match;
    let cls = null;
    if (comment) cls = "tok-com";
    else if (str) cls = "tok-str";
    else if (num) cls = "tok-num";
    else if (word && KEYWORDS.has(word.toLowerCase())) cls = "tok-kw";
    else if (word && text[re.lastIndex] === "(") cls = "tok-fn";
    else if (quoted) cls = null;
    const start = match.index;
    if (errorAt !== null && errorAt >= start && errorAt < start + token.length && !/^\s+$/.test(token)) {
      cls = `${cls || ""} tok-err`;
    }
    out.push(cls ? el("span", { class: cls }, token) : document.createTextNode(token));
  }
  out.push(document.createTextNode("\n"));
  return out;
}

function editor(initial, onRun) {
  const pre = el("pre", { "aria-hidden": "true" });
  const area = el("textarea", { spellcheck: "false", "aria-label": "SQL query (Ctrl+Enter runs)", id: "sql" });
  area.value = initial;
  const box = el("div", { class: "editor" }, pre, area);
  let errorAt = null;
  const paint = () => pre.replaceChildren(...highlight(area.value, errorAt));
  area.addEventListener("input", () => { errorAt = null; paint(); });
  area.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); onRun(area.value); }
  });
  paint();
  return {
    node: box,
    get value() { return area.value; },
    focus() { area.focus(); },
    /** Marks line/column (1-based) of the error and moves the caret there. */
    markError(line, column) {
      const lines = area.value.split("\n");
      if (line < 1 || line > lines.length) return;
      errorAt = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0) + Math.max(0, column - 1);
      paint();
      area.focus();
      area.setSelectionRange(errorAt, Math.min(area.value.length, errorAt + 1));
    },
  };
}

/** "… at Line: 2, Column: 15" in sqlparser's messages → {line, column}. */
function errorPosition(message) {
  const m = /Line: (\d+), Column: (\d+)/.exec(message);
  return m ? { line: Number(m[1]), column: Number(m[2]) } : null;
}

// ---------------------------------------------------------------- Home

/** The landing page: what the workspace holds, each item a link, and a first look at the images. */
async function homePage() {
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
  const latestRun = runs.length ? runs.reduce((a, b) => (a.created_at > b.created_at ? a : b)) : null;
  const verdicts = el("span", { class: "muted", id: "home-verdicts" }, latestRun ? "scoring…" : "");
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
  if (latestRun) {
    try {
      const test = await api(`/runs/${enc(latestRun.run)}/test`);
      verdicts.replaceChildren("verdicts of ", el("a", { href: `#/runs/${enc(latestRun.run)}` }, latestRun.run));
      for (const score of test.slices) {
        const cell = sliceRows.querySelector(`[data-slice="${CSS.escape(score.slice)}"] .verdict-cell`);
        if (!cell) continue;
        cell.replaceChildren(el("span", { class: `verdict ${score.verdict}` },
          `${VERDICTS[score.verdict] || score.verdict} ${headline(score)}`));
      }
    } catch (error) {
      verdicts.textContent = `could not score ${latestRun.run}: ${error.message}`;
    }
  }
}

/** A slice test's number: accuracy, or a detection run's mAP (GET /runs/NAME/test). */
function headline(score) {
  return score.map != null ? `mAP ${score.map.toFixed(3)}` : percent(score.accuracy?.value);
}

/** Explore with a first query over dataset `d` (a table for datasets other than the default,
 * whose thumbnails the grid cannot address). */
function exploreLink(d) {
  const table = d.default ? "images" : `${ident(d.name)}.images`;
  const q = `SELECT image_id, label, split\nFROM ${table}\nORDER BY image_id`;
  return `#/explore?q=${enc(q)}${d.default ? "" : "&view=table"}`;
}

// ---------------------------------------------------------------- Explore

const DEFAULT_QUERY = "SELECT image_id, label, split\nFROM images\nORDER BY image_id";

async function explorePage(params) {
  const query = params.get("q") || localStorage.getItem("slicetest-query") || DEFAULT_QUERY;
  let view = params.get("view") || "auto";
  let offset = 0;
  let lastColumns = [];
  const status = el("span", { class: "muted", id: "status" });
  const results = el("div", { id: "results" });
  const ed = editor(query, () => run(0));
  const viewButtons = ["grid", "table"].map((v) => el("button", {
    type: "button", "data-view": v, onclick: () => { view = v; run(offset); },
  }, v === "grid" ? "Images" : "Table"));
  const saveButton = el("button", { type: "button", onclick: () => saveSliceDialog(ed.value) }, "Save as slice…");
  main.replaceChildren(
    el("h1", {}, "Explore"),
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

  async function run(at) {
    offset = at;
    const text = ed.value.trim().replace(/;\s*$/, "");
    localStorage.setItem("slicetest-query", text);
    status.textContent = "running…";
    results.replaceChildren();
    // The user's query goes on its own line, so the parser's line numbers shift by one
    // and its columns not at all.
    const paged = `SELECT * FROM (\n${text}\n) AS q LIMIT ${PAGE + 1} OFFSET ${offset}`;
    const started = performance.now();
    let rows;
    let lineShift = 1;
    try {
      rows = await sql(paged);
    } catch (error) {
      // Statements that cannot be a subquery (EXPLAIN, SHOW …) run as they are.
      try { rows = await sql(text); lineShift = 0; } catch (plain) {
        const pos = errorPosition(plain.message);
        if (pos) ed.markError(pos.line, pos.column);
        status.textContent = "";
        results.replaceChildren(errorBox(plain));
        return;
      }
    }
    const ms = performance.now() - started;
    const more = lineShift === 1 && rows.length > PAGE;
    if (more) rows = rows.slice(0, PAGE);
    const columns = rows.length ? Object.keys(rows[0]) : lastColumns;
    lastColumns = columns;
    const hasImages = columns.includes("image_id");
    const shown = view === "auto" ? (hasImages ? "grid" : "table") : (view === "grid" && !hasImages ? "table" : view);
    viewButtons.forEach((b) => b.classList.toggle("primary", b.dataset.view === shown));
    const pager = el("div", { class: "row" },
      el("button", { type: "button", disabled: offset === 0, onclick: () => run(Math.max(0, offset - PAGE)) }, "← Previous"),
      el("button", { type: "button", disabled: !more, onclick: () => run(offset + PAGE) }, "Next →"),
      el("span", { class: "muted", id: "count" }));
    status.textContent = rows.length ? `rows ${offset + 1}–${offset + rows.length} (${ms.toFixed(0)} ms)` : "no rows";
    const captionKey = ["label", "score", "predicted"].find((c) => columns.includes(c));
    const body = shown === "grid" ? imageGrid(rows, captionKey) : table(columns, rows);
    results.replaceChildren(pager, body);
    if (lineShift === 1) decorate(text, columns, shown === "table" ? body : null, pager.lastChild);
  }

  /** The total row count and, under the table's header, per-column summaries. */
  async function decorate(text, columns, tableNode, countNode) {
    try {
      const [{ n }] = await sql(`SELECT count(*) AS n FROM (\n${text}\n) AS q`);
      countNode.textContent = `${Number(n).toLocaleString()} rows in all`;
    } catch { /* the page already shows the rows */ }
    if (!tableNode || !columns.length) return;
    const parts = columns.flatMap((c, i) => {
      const q = `"${c.replace(/"/g, '""')}"`;
      return [`count(${q}) AS n${i}`, `approx_distinct(${q}) AS d${i}`, `min(${q}) AS lo${i}`, `max(${q}) AS hi${i}`];
    });
    try {
      const [s] = await sql(`SELECT ${parts.join(", ")} FROM (\n${text}\n) AS q`);
      const summaries = {};
      columns.forEach((c, i) => {
        const range = s[`lo${i}`] === null ? "" : ` · ${short(s[`lo${i}`])} … ${short(s[`hi${i}`])}`;
        summaries[c] = `${s[`n${i}`]} non-null · ≈${s[`d${i}`]} distinct${range}`;
      });
      const thead = tableNode.querySelector("thead");
      thead.querySelector("tr.summary")?.remove();
      thead.append(el("tr", { class: "summary" }, columns.map((c) => el("td", { title: summaries[c] }, summaries[c]))));
    } catch { /* list or struct columns have no min/max: no summaries */ }
  }
}

function short(value) {
  const text = typeof value === "number" ? String(Math.round(value * 1000) / 1000) : String(value);
  return text.length > 24 ? `${text.slice(0, 23)}…` : text;
}

// ---------------------------------------------------------------- slices: create / freeze

/** The dialog that defines a slice from `query`: a name (`suggestion` to start with), an
 * optional threshold (`minAccuracy` to start with) and, when given, `comment`. */
function saveSliceDialog(query, suggestion = "", { minAccuracy, comment } = {}) {
  const name = el("input", { name: "name", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9_\\-]{0,63}", value: suggestion, "aria-label": "slice name" });
  const minAcc = el("input", { name: "min_accuracy", type: "number", min: 0, max: 1, step: 0.01, placeholder: "e.g. 0.8", value: minAccuracy, "aria-label": "minimum accuracy" });
  const problem = el("p", { class: "error" });
  const dialog = el("dialog", { id: "save-slice" },
    el("form", { method: "dialog" },
      el("h2", {}, "Save as slice"),
      el("p", { class: "muted" }, "The query must return image_id. Freeze it on the Slices page."),
      el("div", { class: "row" }, el("label", {}, "Name ", name)),
      el("div", { class: "row" }, el("label", {}, "Minimum accuracy ", minAcc)),
      el("code", { class: "query", title: query }, query),
      problem,
      el("div", { class: "row" },
        el("span", { class: "spacer" }),
        el("button", { type: "button", onclick: () => dialog.close() }, "Cancel"),
        el("button", { type: "submit", class: "primary", value: "save" }, "Create slice"))));
  dialog.querySelector("form").addEventListener("submit", async (e) => {
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

// ---------------------------------------------------------------- Search

async function searchPage(params) {
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

  file.addEventListener("change", () => file.files[0] && searchFile(file.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) searchFile(e.dataTransfer.files[0]);
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
  const panel = el("section", { class: "panel", id: "embed-panel" },
    el("h2", {}, `${dataset} has no embeddings yet`),
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
        panel.querySelector("h2").textContent = `${dataset} is embedded`;
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
    status.textContent = job.state === "done"
      ? `embedded ${plural(job.embedded, "image")}${already}${job.failed ? `, ${job.failed} could not be read` : ""}`
      : `${job.done} of ${plural(job.total, "image")}${already}`;
  }
}

// ---------------------------------------------------------------- Image detail

async function imagePage(id, params) {
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
    overlay.style.opacity = String(opacity.value / 100);
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

// ---------------------------------------------------------------- Slices

const SEGMENTS = ["train", "val", "test", "holdout", "unsplit"];
const VERDICTS = { pass: "pass", fail: "FAIL", "not-enough-data": "not enough data", "no-threshold": "no threshold" };

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

async function latestVerdicts() {
  const runs = await api("/runs");
  if (!runs.length) return { run: null, bySlice: {} };
  const latest = runs.reduce((a, b) => (a.created_at > b.created_at ? a : b));
  const test = await api(`/runs/${enc(latest.run)}/test`);
  return { run: latest.run, bySlice: Object.fromEntries(test.slices.map((s) => [s.slice, s])) };
}

async function slicesPage(params) {
  main.replaceChildren(el("h1", {}, "Slices"), el("p", { class: "muted" }, "loading…"));
  let slices;
  let verdicts = { run: null, bySlice: {} };
  try {
    [slices, verdicts] = await Promise.all([api("/slices"), latestVerdicts().catch(() => verdicts)]);
  } catch (error) {
    main.replaceChildren(el("h1", {}, "Slices"), errorBox(error));
    return;
  }
  const legend = el("div", { class: "legend" }, SEGMENTS.map((s) => el("span", {}, el("i", { class: `seg-${s}` }), s)));
  const list = el("div", { class: "slice-list" }, slices.map((s) => sliceCard(s, verdicts)));
  main.replaceChildren(
    el("div", { class: "row" }, el("h1", {}, "Slices"), el("span", { class: "spacer" }),
      el("a", { class: "button", href: "#/explore" }, "New slice from a query")),
    el("div", { class: "row" }, legend, el("span", { class: "spacer" }),
      el("span", { class: "muted" }, verdicts.run ? `verdicts of the latest run: ${verdicts.run}` : "no runs yet")),
    slices.length ? list : el("p", { class: "muted" }, "No slices yet: write a query on Explore and save it as a slice."));
  const created = params.get("created");
  if (created) list.querySelector(`[data-slice="${CSS.escape(created)}"] input`)?.focus();
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
  const holdout = el("input", { type: "number", min: 0, max: 0.9, step: 0.05, value: 0.2, "aria-label": `hold-out share of ${s.name}`, size: 4 });
  const out = el("div", { class: "diff" });
  const freeze = async () => {
    try {
      const r = await api(`/slices/${enc(s.name)}/freeze`, { method: "POST", body: { holdout: Number(holdout.value), seed: 0 } });
      toast(r.created ? `${s.name}: froze version ${r.frozen.version} (${r.frozen.members} members)` : `${s.name}: unchanged since version ${r.frozen.version}`);
      slicesPage(new URLSearchParams());
    } catch (error) {
      out.replaceChildren(errorBox(error));
    }
  };
  const diff = async () => {
    try {
      const rows = await api(`/slices/${enc(s.name)}/diff`);
      out.replaceChildren(rows.length ? table(["change", "image_id"], rows) : el("p", { class: "muted" }, "No change since the latest freeze."));
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
        v ? el("span", { class: `verdict ${v.verdict}` }, `${VERDICTS[v.verdict] || v.verdict} ${headline(v)}`) : null),
      out),
    el("div", {},
      el("div", { class: "row" }, el("label", {}, "hold-out ", holdout),
        el("button", { type: "button", class: "primary", onclick: freeze }, latest ? "Freeze again" : "Freeze")),
      el("div", { class: "row" },
        el("button", { type: "button", onclick: diff, disabled: !latest }, "Diff"),
        el("a", { class: "button", href: `#/explore?q=${enc(`SELECT * FROM slice('${s.name}')`)}` }, "Members"))));
}

// ---------------------------------------------------------------- Runs

async function runsPage() {
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

async function runPage(name, params) {
  const baseline = params.get("baseline") || "";
  main.replaceChildren(el("h1", {}, `Run ${name}`), el("p", { class: "muted" }, "scoring…"));
  try {
    const [runs, test] = await Promise.all([api("/runs"), api(`/runs/${enc(name)}/test${baseline ? `?baseline=${enc(baseline)}` : ""}`)]);
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
      suggestedSlices(runs.find((r) => r.run === name)),
      el("iframe", { class: "report", src: report, title: `report of ${name}` }));
  } catch (error) {
    main.replaceChildren(el("h1", {}, `Run ${name}`), errorBox(error));
  }
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
 * each with its numbers, its first images and a button that saves it as a slice. */
function suggestedSlices(run) {
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
    list.replaceChildren(...confirmed.map((s, i) => suggestion(s, i, found, rate, minAccuracy)));
  }
}

function suggestion(s, i, found, rate, minAccuracy) {
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
      el("a", { class: "button", href: `#/explore?q=${enc(s.query)}` }, "Explore"),
      el("button", { type: "button", class: "primary", onclick: () => saveSliceDialog(s.query, sliceName(s.predicates), { minAccuracy, comment }) }, "Save as slice…")),
    s.explanation ? explanationOf(s.explanation) : null,
    el("code", { class: "query", title: s.query }, shortQuery(s.query)),
    gallery);
  members(s.query, s.failures || [], gallery);
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
async function members(query, failures, gallery) {
  const wrong = failures.slice(0, GALLERY).map((id) => `'${id.replaceAll("'", "''")}'`);
  const order = wrong.length ? `CASE WHEN i.image_id IN (${wrong.join(", ")}) THEN 0 ELSE 1 END, ` : "";
  try {
    const rows = await sql(`SELECT i.image_id, i.label FROM images AS i JOIN (\n${query}\n) AS q ON i.image_id = q.image_id ORDER BY ${order}i.image_id LIMIT ${GALLERY}`);
    gallery.replaceChildren(imageGrid(rows, "label"));
  } catch (error) {
    gallery.replaceChildren(errorBox(error));
  }
}

// ---------------------------------------------------------------- router

async function route() {
  const { path, params } = hashParams();
  const [, page, arg] = path.split("/");
  const section = page === "image" ? "search" : page || "home";
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === section));
  const name = arg === undefined ? undefined : decodeURIComponent(path.slice(page.length + 2));
  if (page === "search") return searchPage(params);
  if (page === "slices") return slicesPage(params);
  if (page === "runs" && name) return runPage(name, params);
  if (page === "runs") return runsPage();
  if (page === "image" && name) return imagePage(name, params);
  if (page === "explore") return explorePage(params);
  return homePage();
}

window.addEventListener("hashchange", route);
route();
