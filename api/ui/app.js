// @ts-check
// The slicetest web UI: native ES modules, no framework and no build step. Pages are
// functions of the URL hash (#/ home, #/explore, #/search, #/slices, #/runs, #/runs/NAME,
// #/image/ID) that fetch the JSON API (api.js) and build DOM nodes (dom.js); one module
// per page. This module is the router.

import { askToken, navigated } from "./api.js";
import { explorePage } from "./explore.js";
import { homePage } from "./home.js";
import { imagePage } from "./image.js";
import { runPage, runsPage } from "./runs.js";
import { searchPage } from "./search.js";
import { slicesPage } from "./slices.js";

/** The page and its parameters from the URL hash (`#/runs/NAME?baseline=…`). */
function hashParams() {
  const [path, query = ""] = location.hash.slice(1).split("?");
  return { path: path || "/", params: new URLSearchParams(query) };
}

function route() {
  navigated();
  const { path, params } = hashParams();
  const [, page, arg] = path.split("/");
  const section = page === "image" ? "search" : page || "home";
  document.querySelectorAll("nav a").forEach((a) => {
    a.classList.toggle("active", /** @type {HTMLElement} */ (a).dataset.page === section);
  });
  const name = arg === undefined ? undefined : decodeURIComponent(path.slice(page.length + 2));
  if (page === "search") return searchPage(params);
  if (page === "slices") return slicesPage(params);
  if (page === "runs" && name) return runPage(name, params);
  if (page === "runs") return runsPage();
  if (page === "image" && name) return imagePage(name, params);
  if (page === "explore") return explorePage(params);
  return homePage();
}

document.getElementById("token")?.addEventListener("click", askToken);
window.addEventListener("hashchange", route);
route();
