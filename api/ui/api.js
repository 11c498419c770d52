// @ts-check
// The JSON API: one `api()` for every call, and the navigation counter that keeps a slow
// response from writing into a page the user has already left.

/** An error answered by the server (`{"error": {code, message, …}}`). */
export class ApiError extends Error {
  /**
   * @param {number} status the HTTP status
   * @param {string} code the stable code (`not_found`, `query`, `no_embeddings`, …)
   * @param {string} message for a person
   * @param {Record<string, any>} details the whole error object: some codes carry more
   *   (no_embeddings: dataset, command, model; query errors: position {line, column})
   */
  constructor(status, code, message, details = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

// Every route change starts a new navigation. A response that arrives after the user moved
// on is dropped: its promise never settles, so the page code awaiting it never resumes and
// cannot replace the page now shown (nor show an error box for it).
let navigation = 0;

/** Starts a new navigation (the router calls it on every route change). */
export function navigated() {
  navigation += 1;
}

/** A promise that never settles: what a response for a page the user has left becomes. */
const dropped = () => new Promise(() => {});

/**
 * Calls the API; JSON in and out. Writes carry the token when one is set; a write the
 * server refuses for want of the right token (401) asks for it and, once given, is sent
 * again (once).
 * @param {string} path
 * @param {{method?: string, body?: any, json?: boolean, raw?: BodyInit}} [options]
 * @returns {Promise<any>}
 */
export async function api(path, options = {}) {
  const response = await request(path, options);
  if (options.json === false) return response;
  const startedIn = navigation;
  const value = await response.json();
  return startedIn === navigation ? value : dropped();
}

/**
 * The response of a call that succeeded (an ApiError otherwise).
 * @param {string} path
 * @param {{method?: string, body?: any, raw?: BodyInit}} options
 * @param {boolean} [retried] whether this is the write sent again after the token was given
 * @returns {Promise<Response>}
 */
async function request(path, { method = "GET", body, raw }, retried = false) {
  const startedIn = navigation;
  /** @type {Record<string, string>} */
  const headers = { Accept: "application/json" };
  const token = localStorage.getItem("slicetest-token");
  if (token && method !== "GET") headers.Authorization = `Bearer ${token}`;
  let payload = raw;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload });
  if (startedIn !== navigation) return dropped();
  if (!response.ok) {
    let error = { code: "http", message: `${response.status} ${response.statusText}` };
    try { error = (await response.json()).error; } catch { /* not JSON */ }
    if (startedIn !== navigation) return dropped();
    if (response.status === 401) {
      const given = askToken();
      if (given && !retried && method !== "GET") return request(path, { method, body, raw }, true);
    }
    throw new ApiError(response.status, error.code, error.message, error);
  }
  return response;
}

/**
 * The rows of a read-only query (a page of them with `limit`/`offset`, paged by the server).
 * @param {string} query
 * @param {{limit?: number, offset?: number}} [page]
 * @returns {Promise<Record<string, any>[]>}
 */
export function sql(query, page = {}) {
  return api("/sql", { method: "POST", body: { sql: query, ...page } });
}

/**
 * A page of a query's rows and the dataset whose images their `image_id`s are: the
 * server's `Slicetest-Dataset` header, null when the query reads more than one dataset
 * (or one cannot be told), so that no thumbnail or link takes an id for another
 * dataset's image.
 * @param {string} query
 * @param {{limit?: number, offset?: number, dataset?: string}} [page] `dataset`: the one
 *   unqualified names read (default: the workspace's default dataset)
 * @returns {Promise<{rows: Record<string, any>[], dataset: string | null}>}
 */
export async function sqlPage(query, page = {}) {
  const response = await request("/sql", { method: "POST", body: { sql: query, ...page } });
  const startedIn = navigation;
  const rows = await response.json();
  if (startedIn !== navigation) return dropped();
  return { rows, dataset: response.headers.get("Slicetest-Dataset") };
}

/**
 * @typedef {{name: string, type: string, non_null: number, distinct: number | null, min: any, max: any}} ColumnSummary
 * @typedef {{rows: number, columns: ColumnSummary[]}} QuerySummary
 */

/**
 * The whole result's row count and per-column counts and ranges (`"summary": true`).
 * @param {string} query
 * @param {string} [dataset] the one unqualified names read (default: the default dataset)
 * @returns {Promise<QuerySummary>}
 */
export function sqlSummary(query, dataset) {
  return api("/sql", { method: "POST", body: { sql: query, summary: true, ...(dataset ? { dataset } : {}) } });
}

/** Asks for the server's write token (slicetest serve --token) and keeps it; true when
 * one was given (a retry can use it). @returns {boolean} */
export function askToken() {
  const current = localStorage.getItem("slicetest-token") || "";
  const token = prompt("This server needs a token for writes (slicetest serve --token). Token:", current);
  if (token === null) return false;
  if (token) localStorage.setItem("slicetest-token", token);
  else localStorage.removeItem("slicetest-token");
  return Boolean(token);
}
