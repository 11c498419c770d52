// @ts-check
// The SQL editor: a textarea over a highlighted copy of its text, which can mark the place
// of an error (the server's `position`, 1-based line and column).

import { el } from "./dom.js";

const KEYWORDS = new Set(("select from where group by order limit offset having join left right inner outer full on as and or not " +
  "in is null like ilike between case when then else end distinct union all with asc desc true false cast count sum avg min max " +
  "exists over partition create slice freeze show describe drop").split(" "));

/** The tokens of `text` as highlighted nodes; `errorAt` (an offset, or null) is marked.
 * @param {string} text @param {number | null} errorAt @returns {Node[]} */
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

/** An editor holding `initial`; Ctrl+Enter calls `onRun` with its text.
 * @param {string} initial @param {(text: string) => void} onRun */
export function editor(initial, onRun) {
  const pre = el("pre", { "aria-hidden": "true" });
  const area = el("textarea", { spellcheck: "false", "aria-label": "SQL query (Ctrl+Enter runs)", id: "sql" });
  area.value = initial;
  const box = el("div", { class: "editor" }, pre, area);
  /** @type {number | null} */
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
    /** Marks line/column (1-based) of the error and moves the caret there.
     * @param {number} line @param {number} column */
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
