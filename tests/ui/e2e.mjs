// End-to-end tests of the web UI in Debian's headless Chromium, driven by playwright-core.
//
//   node tests/ui/e2e.mjs URL ARTIFACT_DIR [BARE_URL] [DETECTION_URL] [SEGMENTATION_URL]
//
// URL is a running `slicetest serve` over the workspace built by tests/python/test_ui.py
// (22 clothes images in the split/label layout, embedded, a frozen slice `tops` with a
// threshold, and a run `always-coat` that fails it: wrong on every shirt, right on every
// coat, so discovery confirms `label = 'Shirt'`; and dataset `clash`: two 40×20 images
// whose ids are clothes' too, with a run `clash-run` newer than always-coat). BARE_URL, if given, serves the same
// images never embedded, with the tiny CLIP as the server's model (SLICETEST_CLIP_MODEL).
// DETECTION_URL, if given, serves a COCO dataset `shop` (image a.png: a shirt, a T-shirt
// and a bag) with a detection run `det-1` that takes the shirt for a T-shirt, finds the
// T-shirt, misses the bag and detects a bag where there is none; writes need the token
// `e2e-token`.
// SEGMENTATION_URL, if given, serves dataset `scenes` (street.png, 40×30) with mask set
// `seg` (sky, road, a 10×10 car, two ignored rows) and a segmentation run `unet` that sees
// the car 5 pixels to the right.
// Each step saves a screenshot to ARTIFACT_DIR; any step that fails, or any error in the
// page, exits non-zero.

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const [url, artifacts = "tests/ui/artifacts", bareUrl, detectionUrl, segmentationUrl] = process.argv.slice(2);
if (!url) throw new Error("usage: node e2e.mjs URL [ARTIFACT_DIR]");
mkdirSync(artifacts, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // The closed network of CI machines: no background connections (see /work/.library/env).
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(String(e)));
page.on("console", (m) => { if (m.type() === "error" && !/status of 4\d\d/.test(m.text())) pageErrors.push(m.text()); });
page.setDefaultTimeout(20_000);

let failed = 0;
async function step(name, body) {
  const file = `${artifacts}/${name.replace(/[^a-z0-9]+/gi, "-").toLowerCase()}.png`;
  try {
    await body();
    assert.deepEqual(pageErrors, [], "errors in the page");
    await page.screenshot({ path: file, fullPage: true });
    console.log(`ok   ${name}`);
  } catch (error) {
    failed++;
    await page.screenshot({ path: file.replace(/\.png$/, "-FAILED.png"), fullPage: true }).catch(() => {});
    console.log(`FAIL ${name}\n     ${String(error.stack || error).split("\n").slice(0, 6).join("\n     ")}`);
    pageErrors.length = 0;
  }
}

/** Waits until the grid shows thumbnails that have all loaded a real image; returns how many.
 * Counted in the same check that sees them loaded, so a grid replaced in between (a route
 * change re-renders the page) cannot be counted half-built. */
async function thumbnailsLoaded() {
  const count = await page.waitForFunction(() => {
    const thumbs = [...document.querySelectorAll(".grid img.thumb")];
    return thumbs.length > 0 && thumbs.every((img) => img.complete && img.naturalWidth > 0) && thumbs.length;
  });
  return count.jsonValue();
}

async function runQuery(sql) {
  await page.goto(`${url}/#/explore`);
  await page.fill("#sql", sql);
  await page.focus("#sql");
  await page.keyboard.press("Control+Enter");
}

/** No horizontal scrolling at 1280 px: long names are cut with an ellipsis, not overflowing. */
async function fitsTheWindow() {
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 1280, `the page is ${width} px wide at a 1280 px window`);
}

await step("the home page shows the workspace without a click", async () => {
  await page.goto(`${url}/`);
  await page.locator("#home-datasets tr:has-text('clothes')").waitFor();
  assert.match(await page.locator("#home-datasets tbody tr:has-text('clothes')").textContent(), /clothes \(default\)22v1tiny-clip/);
  assert.equal(await thumbnailsLoaded(), 22);
  // Each slice's verdict is its dataset's newest run's: always-coat, though clash-run (of
  // dataset clash) is newer.
  await page.locator("#home-slices tr[data-slice=tops] .verdict.fail").waitFor();
  assert.match(await page.locator("#home-verdicts").textContent(), /^verdicts of the latest run: always-coat$/);
  await page.locator("#home-runs a:has-text('always-coat')").waitFor();
  assert.equal(await page.locator("nav a.active").textContent(), "Home");
  await fitsTheWindow();
});

await step("the home page links to its slices and datasets", async () => {
  await page.goto(`${url}/#/`);
  await page.click("#home-slices a:has-text('tops')");
  await page.locator("[data-slice=tops].focus").waitFor();
  await page.goBack();
  await page.click("#home-datasets a:has-text('clothes')");
  // The home page has a grid of its own: wait for Explore's before counting.
  await page.waitForURL(/#\/explore/);
  await page.waitForSelector("#count:has-text('22 rows in all')");
  assert.equal(await thumbnailsLoaded(), 22);
});

await step("a query shows thumbnails", async () => {
  await runQuery("SELECT image_id, label FROM images ORDER BY image_id");
  assert.equal(await thumbnailsLoaded(), 22);
  await page.waitForSelector("#count:has-text('22 rows in all')");
  await page.click("button[data-view=table]");
  await page.waitForSelector("table tr.summary td:has-text('distinct')");
  assert.equal(await page.locator("tbody tr").count(), 22);
  await fitsTheWindow();
});

await step("a SQL error is shown at its position", async () => {
  await runQuery("SELECT image_id\nFROM images\nWHER label = 'Coat'");
  const message = await page.locator("#results .error").textContent();
  assert.match(message, /Line: 3, Column: 6/);
  assert.equal((await page.locator(".editor .tok-err").textContent()).trim(), "label");
  // The planner's errors too: the server answers where the unknown column is.
  await runQuery("SELECT image_id,\n       colour\nFROM images");
  await page.locator("#results .error").waitFor();
  assert.equal((await page.locator(".editor .tok-err").textContent()).trim(), "colour");
});

await step("statements that are no SELECT run and page too", async () => {
  await runQuery("EXPLAIN SELECT label, count(*) FROM images GROUP BY label");
  await page.waitForSelector("#results td:has-text('logical_plan')");
  assert.equal(await page.locator("#results .error").count(), 0);
});

await step("a slow response never replaces a page the user has left", async () => {
  // The run page waits for its scores; the user goes on to the list of runs before they come.
  const scores = "**/runs/always-coat/test";
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  await page.route(scores, async (route) => { await held; await route.continue(); });
  try {
    await page.goto(`${url}/#/runs/always-coat`);
    await page.waitForSelector("main p:has-text('scoring…')");
    await page.goto(`${url}/#/runs`);
    await page.locator("main td a:has-text('always-coat')").waitFor();
    const answered = page.waitForResponse(scores);
    release();
    await answered;
    await page.waitForTimeout(500);
    assert.equal(await page.locator("main h1").first().textContent(), "Runs");
    assert.equal(await page.locator("#verdict").count(), 0, "the left page's answer was dropped");
  } finally {
    release();
    await page.unroute(scores);
  }
});

await step("a text search shows a scored grid", async () => {
  await page.goto(`${url}/#/search`);
  await page.fill("#search-text", "a photo of a shirt");
  await page.keyboard.press("Enter");
  assert.equal(await thumbnailsLoaded(), 22);
  const scores = await page.locator(".grid .score").allTextContents();
  const numbers = scores.map(Number);
  assert.deepEqual([...numbers].sort((a, b) => b - a), numbers, "best first");
  await page.click(".grid .card >> nth=0");
  await page.waitForSelector("h2:has-text('More like this')");
  await page.waitForSelector("#similar .grid img.thumb");
});

await step("an image's detail shows its tags, predictions and slices", async () => {
  await page.goto(`${url}/#/image/${encodeURIComponent("test/Shirt/shirt0.png")}`);
  await page.waitForSelector("a:has-text('always-coat')");
  assert.equal(await page.locator("td.verdict.fail:has-text('wrong')").count(), 1);
  await page.waitForSelector(".kv td:has-text('label')");
  await page.waitForSelector(".kv td:has-text('brightness')");
  await page.waitForSelector("li:has-text('tops')");
  // The imported detector's box is drawn over the picture, scaled with it.
  const box = page.locator(".figure .box");
  assert.equal(await box.count(), 1);
  assert.equal(await box.textContent(), "collar");
  const image = await page.locator(".figure img").boundingBox();
  const drawn = await box.boundingBox();
  assert.ok(Math.abs(drawn.x - image.x - (2 / 12) * image.width) < 1.5, "box left edge");
  assert.ok(Math.abs(drawn.width - (7 / 12) * image.width) < 1.5, "box width");
});

await step("a query over another dataset shows that dataset's images and opens their pages", async () => {
  // clash's ids are clothes' ids too: its thumbnails and links must name clash.
  await runQuery("SELECT image_id, width, height FROM clash.images ORDER BY image_id");
  assert.equal(await thumbnailsLoaded(), 2);
  const cards = await page.locator(".grid .card").evaluateAll((as) => as.map((a) => ({
    href: a.getAttribute("href"), src: a.querySelector("img").getAttribute("src"), width: a.querySelector("img").naturalWidth,
  })));
  for (const card of cards) {
    assert.match(card.href, /^#\/image\/test%2F\w+%2F\w+\.png\?dataset=clash$/);
    assert.match(card.src, /&dataset=clash$/);
    assert.equal(card.width, 40, "clash's 40x20 picture, not clothes' 12x10 one");
  }
  // The table's links too.
  await page.click("button[data-view=table]");
  await page.waitForSelector("#results tbody a");
  const queries = await page.locator("#results tbody a").evaluateAll((as) => as.map((a) => a.getAttribute("href").split("?")[1]));
  assert.deepEqual(queries, ["dataset=clash", "dataset=clash"]);
  await page.click("button[data-view=grid]");
  await page.click(".grid .card[title='test/Shirt/shirt0.png']");
  await page.waitForURL(/#\/image\/test%2FShirt%2Fshirt0\.png\?dataset=clash$/);
  await page.waitForSelector("a:has-text('clash-run')");
  assert.equal(await page.locator("a:has-text('always-coat')").count(), 0, "clothes' predictions are not this image's");
  assert.match(await page.locator(".kv tr:has(td:text-is('width'))").textContent(), /40/);
  // Similar images are searched in the default dataset, which does not hold this image.
  await page.locator("#similar-help:has-text('default dataset (clothes)')").waitFor();
  assert.equal(await page.locator("#similar .grid").count(), 0);
  await fitsTheWindow();
});

await step("a query opened for another dataset reads that dataset's images and is not saved as a slice", async () => {
  // What a run page links for a discovered slice of a run on a dataset other than the
  // default: unqualified `images` means that dataset.
  await page.goto(`${url}/#/explore?q=${encodeURIComponent("SELECT image_id, width FROM images ORDER BY image_id")}&dataset=clash`);
  assert.equal(await thumbnailsLoaded(), 2);
  assert.match(await page.locator("#on-dataset").textContent(), /read dataset clash/);
  const cards = await page.locator(".grid .card").evaluateAll((as) => as.map((a) => a.getAttribute("href")));
  assert.ok(cards.every((href) => href.endsWith("?dataset=clash")), String(cards));
  // The count comes from a request of its own, which may answer after the thumbnails.
  await page.waitForSelector("#count:has-text('rows in all')");
  assert.match(await page.locator("#count").textContent(), /^2 rows in all$/);
  const save = page.locator("button:has-text('Save as slice')");
  assert.equal(await save.isDisabled(), true);
  assert.match(await save.getAttribute("title"), /slicetest use clash/);
});

await step("a query over two datasets does not guess whose images its ids are", async () => {
  await runQuery("SELECT image_id FROM images UNION ALL SELECT image_id FROM clash.images");
  await page.waitForSelector("#mixed-datasets");
  await page.waitForSelector("#results tbody tr");
  assert.equal(await page.locator("#results .grid").count(), 0);
  assert.equal(await page.locator("#results tbody a").count(), 0, "no link to a page of the wrong image");
  assert.equal(await page.locator("button[data-view=grid]").isDisabled(), true);
});

await step("a slice is created from a query and frozen", async () => {
  await runQuery("SELECT image_id FROM images WHERE label = 'Coat'");
  await thumbnailsLoaded();
  await page.click("text=Save as slice…");
  await page.fill("#save-slice input[name=name]", "coats");
  await page.fill("#save-slice input[name=min_accuracy]", "0.9");
  await page.click("#save-slice button[type=submit]");
  await page.waitForURL(/#\/slices/);
  const card = page.locator("[data-slice=coats]");
  await card.locator("text=not frozen yet").waitFor();
  await card.locator("input[type=number]").fill("0.25");
  await card.locator("button:has-text('Freeze')").click();
  await page.waitForSelector("#toast:has-text('froze version 1')");
  await page.locator("[data-slice=coats]:has-text('v1 · 11 members')").waitFor();
  await page.locator("[data-slice=coats] .bar span").first().waitFor();
  // The hold-out input shows the frozen share; a smaller one is said, with the images it
  // no longer holds out; a freeze with the share unchanged keeps it (and its seed).
  assert.equal(await card.locator("input[type=number]").inputValue(), "0.25");
  const held = Number((await card.textContent()).match(/(\d+) held out/)[1]);
  await card.locator("input[type=number]").fill("0");
  await card.locator("button:has-text('Freeze again')").click();
  await card.locator(".diff:has-text('hold-out changed from 0.25 (seed 0) in v1 to 0 (seed 0) in v2')").waitFor();
  if (held) await card.locator(`.diff [role=alert]:has-text('${held} image')`).waitFor();
  assert.equal(await card.locator("input[type=number]").inputValue(), "0");
  await card.locator("button:has-text('Freeze again')").click();
  await page.waitForSelector("#toast:has-text('unchanged since version 2')");
  await fitsTheWindow();
});

await step("a run report shows the failing slice", async () => {
  await page.goto(`${url}/#/runs`);
  await page.click("a:has-text('always-coat')");
  await page.waitForSelector("#verdict:has-text('Failing: tops')");
  const report = page.frameLocator("iframe.report");
  await report.locator("tr.fail:has-text('tops')").first().waitFor();
  assert.match(await report.locator("tr.fail").first().textContent(), /fail/i);
  // The frame is as tall as the report: no scrolling inside it.
  await page.waitForFunction(() => {
    const frame = document.querySelector("iframe.report");
    const inner = frame?.contentDocument?.documentElement;
    return inner && inner.scrollHeight <= frame.clientHeight;
  });
  await fitsTheWindow();
});

await step("the run page suggests a discovered slice and saves it as a slice", async () => {
  await page.goto(`${url}/#/runs/always-coat`);
  const first = page.locator("#suggestions [data-suggestion='1']");
  await first.waitFor();
  assert.equal(await first.locator(".predicates").textContent(), "label = 'Shirt'");
  const numbers = await first.locator(".numbers > span").allTextContents();
  assert.match(numbers[0], /^error 100\.0% \[\d+\.\d%, 100\.0%\]$/, "error rate and interval on the confirmation half");
  assert.deepEqual(numbers.slice(1, 3), ["vs 0.0% for the rest", "lift ∞"]);
  assert.match(numbers[3], /^adj\. p \d\.\de-\d+$/);
  assert.match(numbers[4], /^\d+ \/ \d+ images$/);
  assert.equal(await first.locator("code.query").textContent(), "SELECT image_id FROM images WHERE label = 'Shirt'");
  assert.match(await page.locator("#discover-status").textContent(), /^1 slice where always-coat errs more/);
  // Its first images, all shirts.
  await first.locator(".gallery img.thumb").first().waitFor();
  await page.waitForFunction(() => [...document.querySelectorAll("#suggestions .gallery img.thumb")]
    .every((img) => img.complete && img.naturalWidth > 0));
  const captions = await first.locator(".gallery .caption").allTextContents();
  assert.ok(captions.length === 8 && captions.every((c) => c === "Shirt"), String(captions));
  // The gallery opens with the images discovery names as the slice's failures.
  const failures = await page.evaluate(async () => {
    const support = document.querySelector("#discover-support").value;
    return (await (await fetch(`/runs/always-coat/discover?min_support=${support}`)).json()).slices[0].failures;
  });
  const shown = await first.locator(".gallery img.thumb").evaluateAll((imgs) => imgs.map((img) => img.alt));
  assert.ok(failures.length === 8, String(failures));
  assert.deepEqual(shown, failures);
  await fitsTheWindow();
  // Saved with a name (and the suggested threshold: the run's accuracy, rounded down).
  await first.locator("button:has-text('Save as slice')").click();
  assert.equal(await page.inputValue("#save-slice input[name=name]"), "label_shirt");
  assert.equal(await page.inputValue("#save-slice input[name=min_accuracy]"), "0.5");
  await page.fill("#save-slice input[name=name]", "discovered-shirts");
  await page.click("#save-slice button[type=submit]");
  await page.waitForURL(/#\/slices/);
  const card = page.locator("[data-slice=discovered-shirts]");
  await card.locator("text=not frozen yet").waitFor();
  assert.equal(await card.locator("code.query").textContent(), "SELECT image_id FROM images WHERE label = 'Shirt'");
  assert.match(await card.textContent(), /accuracy ≥ 50\.0%/);
});

await step("a link with a query runs it", async () => {
  await page.goto(`${url}/#/slices`);
  await page.click("[data-slice=tops] a:has-text('Members')");
  assert.equal(await thumbnailsLoaded(), 11);
});

await step("long names do not break the layout", async () => {
  await page.goto(`${url}/#/slices`);
  await page.locator(`[data-slice="${"x".repeat(64)}"]`).waitFor();
  await fitsTheWindow();
});

await step("the slices page shows each slice's verdict of its own dataset's newest run", async () => {
  await page.goto(`${url}/#/slices`);
  await page.locator("[data-slice=tops] .verdict.fail").waitFor();
  assert.match(await page.locator("#verdicts-of").textContent(), /always-coat/);
  assert.doesNotMatch(await page.locator("#verdicts-of").textContent(), /clash-run/);
});

await step("every page fits a 390 px phone", async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  try {
    const image = encodeURIComponent("test/Shirt/shirt0.png");
    const pages = [
      ["/#/", "#home-slices .verdict"],
      [`/#/explore?q=${encodeURIComponent("SELECT * FROM images ORDER BY image_id")}`, ".grid img.thumb"],
      ["/#/search?q=a%20shirt", ".grid img.thumb"],
      ["/#/slices", "[data-slice=tops] .verdict"],
      ["/#/runs", "main td a"],
      ["/#/runs/always-coat", "#suggestions [data-suggestion='1'] img.thumb"],
      [`/#/image/${image}`, "#similar .grid img.thumb"],
    ];
    for (const [path, ready] of pages) {
      await page.goto(`${url}${path}`);
      await page.locator(ready).first().waitFor();
      const width = await page.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(width <= 390, `${path} is ${width} px wide at a 390 px window`);
      // The nav wraps: every link and the token button are on screen.
      const ends = await page.locator("header a, header button").evaluateAll((els) => els.map((e) => e.getBoundingClientRect().right));
      assert.ok(Math.max(...ends) <= 390, `${path}: a header item ends at ${Math.max(...ends)} px`);
    }
    // A wide table scrolls inside its own box.
    await page.goto(`${url}/#/explore?q=${encodeURIComponent("SELECT * FROM images ORDER BY image_id")}&view=table`);
    await page.waitForSelector("#results tbody tr");
    assert.ok(await page.locator("#results .table-wrap").evaluate((w) => w.scrollWidth > w.clientWidth), "the table scrolls");
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth) <= 390);
    // The image page is one column: its details below the picture.
    await page.goto(`${url}/#/image/${image}`);
    await page.locator(".kv").waitFor();
    const [picture, details] = await page.locator(".detail > div").evaluateAll((divs) => divs.map((d) => d.getBoundingClientRect().toJSON()));
    assert.ok(details.top >= picture.bottom, "the details are below the picture");
  } finally {
    await page.setViewportSize({ width: 1280, height: 800 });
  }
});

if (bareUrl) {
  await step("search on a dataset without embeddings shows the command, not an error", async () => {
    await page.goto(`${bareUrl}/#/search`);
    const command = await page.locator("#embed-command").textContent();
    assert.match(command, /^slicetest -w \S+ embed clothes --model \S+tiny-clip$/);
    assert.match(await page.locator("#embed-panel").textContent(), /--where "split = 'test'"/);
    assert.match(await page.inputValue("#embed-model"), /tiny-clip$/);
    // A search typed anyway leads back to the explanation, not to an error.
    await page.fill("#search-text", "a photo of a shirt");
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => !document.querySelector("#results")?.textContent.includes("searching"));
    assert.equal(await page.locator(".error:not(:empty)").count(), 0, "no error is shown");
    assert.doesNotMatch(await page.locator("main").textContent(), /Error during planning|DataFusion/);
    await fitsTheWindow();
  });

  await step("more like this explains what is missing", async () => {
    await page.goto(`${bareUrl}/#/image/${encodeURIComponent("test/Shirt/shirt0.png")}`);
    await page.locator("#similar-help:has-text('has none yet')").waitFor();
    assert.match(await page.locator("#similar-help code").textContent(), /embed clothes/);
    assert.equal(await page.locator(".error:not(:empty)").count(), 0);
  });

  await step("an embedding job started from the UI shows progress and then results", async () => {
    await page.goto(`${bareUrl}/#/search`);
    await page.fill("#search-text", "a photo of a shirt");
    await page.click("#embed-start");
    await page.locator("#embed-progress").waitFor({ state: "visible" });
    // The tiny CLIP has random weights: results appear, their order means nothing.
    assert.equal(await thumbnailsLoaded(), 22);
    assert.match(await page.locator("#embed-status").textContent(), /embedded 22 images/);
    assert.equal(await page.locator("#embed-progress").evaluate((bar) => bar.value === bar.max), true);
    await page.locator("#embed-panel h2:has-text('clothes is embedded')").waitFor();
    // Now the image page finds similar images too.
    await page.click(".grid .card >> nth=0");
    await page.waitForSelector("#similar .grid img.thumb");
  });
}

if (detectionUrl) {
  await step("an image page draws the ground truth and a detection run's boxes", async () => {
    await page.goto(`${detectionUrl}/#/image/a.png`);
    await page.waitForSelector(".figure .box.tp");
    const count = (cls) => page.locator(`.figure .box.${cls}`).count();
    assert.deepEqual([await count("gt"), await count("tp"), await count("fp"), await count("fn")], [3, 1, 2, 2]);
    assert.match(await page.locator("#boxes-note").textContent(), /1 found.*2 missed.*2 false/);
    assert.equal(await page.locator("#detection-runs td:has-text('det-1')").count(), 1);
    // The found T-shirt is drawn where its box is: x 60..90 of a 100-pixel-wide image.
    const image = await page.locator(".figure img").boundingBox();
    const found = await page.locator(".figure .box.tp").boundingBox();
    assert.ok(Math.abs(found.x - image.x - 0.6 * image.width) < 1.5, "box left edge");
    assert.ok(Math.abs(found.width - 0.3 * image.width) < 1.5, "box width");
    assert.match(await page.locator(".figure .box.tp").getAttribute("title"), /found: t-shirt 0\.80/);
    // Ground truth only: the run's boxes go, the objects get their labels.
    await page.selectOption("#box-run", "");
    assert.deepEqual([await count("gt"), await count("tp"), await count("fp")], [3, 0, 0]);
    assert.deepEqual(await page.locator(".figure .box.gt span").allTextContents(), ["shirt", "t-shirt", "bag"]);
  });

  await step("a write the token is asked for is sent again once it is given", async () => {
    await page.goto(`${detectionUrl}/#/explore`);
    await page.evaluate(() => localStorage.removeItem("slicetest-token"));
    await page.fill("#sql", "SELECT image_id FROM images");
    await page.click("#run");
    await thumbnailsLoaded();
    const prompts = [];
    const answer = (dialog) => { prompts.push(dialog.message()); dialog.accept("e2e-token"); };
    page.on("dialog", answer);
    const statuses = [];
    const seen = (response) => {
      if (new URL(response.url()).pathname === "/slices" && response.request().method() === "POST") statuses.push(response.status());
    };
    page.on("response", seen);
    try {
      await page.click("text=Save as slice…");
      await page.fill("#save-slice input[name=name]", "with-token");
      await page.click("#save-slice button[type=submit]");
      // One click: the 401, the token asked for, the same request again, the new slice.
      await page.waitForURL(/#\/slices\?created=with-token$/, { timeout: 10_000 });
      await page.locator("[data-slice=with-token]").waitFor();
      assert.equal(prompts.length, 1);
      assert.match(prompts[0], /token/);
      assert.deepEqual(statuses, [401, 201]);
    } finally {
      page.off("dialog", answer);
      page.off("response", seen);
    }
  });

  await step("a detection run's page shows the mAP chart and the class confusions", async () => {
    await page.goto(`${detectionUrl}/#/runs/det-1`);
    const report = page.frameLocator("iframe.report");
    await report.locator("#map-chart").waitFor();
    assert.equal(await report.locator("#detection-table tr[data-slice='first']").count(), 1);
    const header = await report.locator("table.confusion >> nth=0").locator("tr >> nth=0").locator("th").allTextContents();
    assert.deepEqual(header, ["true \\ predicted", "shirt", "t-shirt", "bag", "background"]);
    await report.locator("figure.detections svg rect.box.fn").first().waitFor();
  });
}

if (segmentationUrl) {
  /** Waits until the mask overlay has loaded a PNG of the image's size. */
  const overlayLoaded = () => page.waitForFunction(() => {
    const mask = document.querySelector(".figure img.mask");
    return mask && !mask.hidden && mask.complete && mask.naturalWidth === 40;
  });
  /** The overlay's RGBA at (x, y) of the image, read back through a canvas. */
  const overlayPixel = (x, y) => page.evaluate(([x, y]) => {
    const mask = document.querySelector(".figure img.mask");
    const canvas = document.createElement("canvas");
    [canvas.width, canvas.height] = [mask.naturalWidth, mask.naturalHeight];
    const context = canvas.getContext("2d");
    context.drawImage(mask, 0, 0);
    return [...context.getImageData(x, y, 1, 1).data];
  }, [x, y]);
  const legend = () => page.locator("#mask-legend .class-key").allTextContents();

  await step("an image page overlays its masks, with a layer picker, opacity and a legend", async () => {
    await page.goto(`${segmentationUrl}/#/image/street.png`);
    const overlay = page.locator(".figure img.mask");
    await overlayLoaded();
    // The ground truth first, stacked over the picture at its scale.
    assert.match(await overlay.getAttribute("src"), /\/images\/street\.png\/mask\?source=seg$/);
    const picture = await page.locator(".figure img.picture").boundingBox();
    const drawn = await overlay.boundingBox();
    for (const side of ["x", "y", "width", "height"]) assert.ok(Math.abs(drawn[side] - picture[side]) < 1, `overlay ${side}`);
    assert.ok(picture.width >= 180, "the picture is scaled up, the overlay with it");
    assert.deepEqual(await overlayPixel(12, 20), [70, 130, 180, 255], "the car in its class colour");
    assert.equal((await overlayPixel(0, 29))[3], 0, "ignored pixels are transparent");
    assert.deepEqual(await legend(), ["road 55.4%", "sky 35.7%", "car 8.9%"]);
    const swatch = await page.locator("#mask-legend .class-key i").first().evaluate((i) => getComputedStyle(i).backgroundColor);
    assert.equal(swatch, "rgb(128, 64, 128)", "the legend's road is the overlay's");
    assert.deepEqual(await page.locator("#mask-layer option").allTextContents(),
      ["none", "seg: ground truth", "unet: prediction", "unet: errors"]);
    assert.match(await page.locator("#segmentation-runs tr:has-text('unet')").textContent(), /91\.1%0\.728100/);

    // The run's prediction, then where it is wrong: another PNG, another legend.
    await page.selectOption("#mask-layer", "run:unet");
    assert.match(await overlay.getAttribute("src"), /\/mask\?run=unet$/);
    await overlayLoaded();
    assert.deepEqual(await legend(), ["road 55.4% · IoU 0.85", "car 8.9% · IoU 0.33", "sky 35.7% · IoU 1.00"]);
    await page.selectOption("#mask-layer", "errors:unet");
    assert.match(await overlay.getAttribute("src"), /\/mask\?run=unet&view=errors$/);
    await overlayLoaded();
    await page.waitForFunction(() => document.querySelector(".figure img.mask").src.endsWith("view=errors"));
    assert.deepEqual(await overlayPixel(12, 20), [220, 38, 38, 255], "car taken for road: red");
    assert.deepEqual(await overlayPixel(0, 0), [46, 160, 67, 255], "sky: green");
    assert.deepEqual(await legend(), ["right 91.1%", "wrong 8.9%"]);

    // Opacity follows the slider; "none" takes the overlay away.
    await page.locator("#mask-opacity").fill("25");
    assert.equal(await overlay.evaluate((m) => getComputedStyle(m).opacity), "0.25");
    await page.selectOption("#mask-layer", "");
    assert.equal(await overlay.isHidden(), true);
    assert.deepEqual(await legend(), []);
    await fitsTheWindow();
  });

  await step("?layer= opens the image page on a layer", async () => {
    await page.goto(`${segmentationUrl}/#/image/street.png?layer=errors:unet`);
    await overlayLoaded();
    assert.match(await page.locator(".figure img.mask").getAttribute("src"), /view=errors$/);
    assert.equal(await page.inputValue("#mask-layer"), "errors:unet");
  });
}

await browser.close();
if (failed) {
  console.log(`${failed} UI step(s) failed; screenshots in ${artifacts}`);
  process.exit(1);
}
