// bench-ui: time to first contentful paint of a 100-image grid, in Debian's headless
// Chromium on loopback (issue: web UI; target FCP <= 1 s).
//
//   slicetest -w slicetest-data serve &            # the demo's workspace (70,000 images)
//   node bench/scripts/ui_fcp.mjs http://127.0.0.1:7878 [runs]
//
// Each run opens a fresh browser context (empty cache) on Explore with a 100-row query and
// records the page's first-contentful-paint entry and the time until all 100 thumbnails
// have loaded. Prints the median and the worst run.

import { chromium } from "../../tests/ui/node_modules/playwright-core/index.mjs";

const [url = "http://127.0.0.1:7878", runsArg = "10"] = process.argv.slice(2);
const runs = Number(runsArg);
const query = "SELECT image_id, label FROM images ORDER BY image_id LIMIT 100";
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const fcp = [];
const grid = [];
for (let i = 0; i < runs; i++) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  await page.goto(`${url}/#/explore?q=${encodeURIComponent(query)}&view=grid`);
  // Thumbnails below the fold load lazily: "the grid" is the ones in the first screen.
  const done = await page.waitForFunction(() => {
    const imgs = [...document.querySelectorAll(".grid img.thumb")];
    const visible = imgs.filter((img) => img.getBoundingClientRect().top < innerHeight);
    return imgs.length === 100 && visible.length > 0 && visible.every((img) => img.complete && img.naturalWidth > 0)
      && performance.now();
  }, null, { timeout: 30_000, polling: "raf" });
  grid.push(await done.jsonValue());
  fcp.push(await page.evaluate(() => performance.getEntriesByName("first-contentful-paint")[0]?.startTime ?? NaN));
  await context.close();
}
await browser.close();
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(`100-image grid on ${url}, ${runs} cold runs (fresh context each):`);
console.log(`  first contentful paint: median ${median(fcp).toFixed(0)} ms, worst ${Math.max(...fcp).toFixed(0)} ms (target <= 1000 ms)`);
console.log(`  first screen of thumbnails loaded: median ${median(grid).toFixed(0)} ms, worst ${Math.max(...grid).toFixed(0)} ms`);
