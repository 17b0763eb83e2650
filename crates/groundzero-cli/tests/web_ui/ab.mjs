// The A/B panel of the journey page in Debian's headless Chromium; run by tests/journey_ab.rs
// after `groundzero journey --compare` ran once in the lab.
// Usage: node ab.mjs URL TOKEN SCREENSHOT
import { chromium } from "playwright-core";

const [url, token, screenshot] = process.argv.slice(2);
const fail = (msg) => { console.error(`UI check failed: ${msg}`); process.exit(1); };
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1600 } });
  page.on("pageerror", (e) => fail(`page error: ${e.message}`));
  await page.goto(`${url}/#token=${token}`);
  await page.waitForSelector("#ab-runs", { timeout: 10000 });
  const api = await page.evaluate(async (tok) =>
    (await (await fetch("/v1/journey/ab", { headers: { Authorization: `Bearer ${tok}` } })).json()).last, token);
  // Two measured runs, each headed by its label and how many probes it measured.
  const heads = await page.$$eval("#ab-runs thead th.run-a, #ab-runs thead th.run-b", (t) => t.map((x) => x.textContent));
  if (heads.length !== 2) fail(`${heads.length} runs shown`);
  const [a, b] = [api.runs.find((r) => r.xdp_attached), api.runs.find((r) => !r.xdp_attached)];
  if (!heads[0].includes(a.label) || !heads[0].includes(`${a.probes_measured} of ${a.probes_sent} probes measured`)) fail(`run A: ${heads[0]}`);
  if (!heads[1].includes(b.label) || !heads[1].includes(`${b.probes_measured} of ${b.probes_sent} probes measured`)) fail(`run B: ${heads[1]}`);
  // Every cell is run A's or run B's measured figure, as the API has it.
  const us = (ns) => (ns >= 1e6 ? `${(ns / 1e6).toFixed(2)} ms` : `${(ns / 1e3).toFixed(1)} µs`);
  const rows = await page.$$eval("#ab-runs tbody tr", (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
  for (const st of a.stages) {
    const row = rows.find((r) => r[0] === st.label);
    if (!row) fail(`no row for ${st.label}`);
    const bs = b.stages.find((x) => x.name === st.name);
    if (!row[1].startsWith(us(st.p50.ns)) || !row[3].startsWith(us(bs.p50.ns))) fail(`${st.label}: ${row} vs ${us(st.p50.ns)} / ${us(bs.p50.ns)}`);
    if (row.some((c) => c.includes("not measured"))) fail(`${st.label} has an unmeasured cell: ${row}`);
  }
  const blocked = await page.$eval("#ab-blocked", (e) => e.textContent);
  for (const d of api.blocked) if (!blocked.includes(d.label) || !blocked.includes(`${Math.round(d.cpu_ns_per_packet)} ns`)) fail(`drop cost ${d.label}: ${blocked}`);
  // "Without XDP" in the timeline is run B's, never XDP's figures.
  const timeline = await page.$eval("#timeline", (e) => e.textContent);
  const end = b.stages.find((x) => x.name === "end_to_end");
  if (!timeline.includes(`A/B without: ${end.label}`) || !timeline.includes(`${us(end.p50.ns)} / ${us(end.p99.ns)}`)) fail(`timeline: ${timeline}`);
  if (timeline.includes("run the A/B to measure")) fail("the timeline still asks for an A/B");
  // The claims now use the A/B.
  const claims = await page.$eval("#claims", (e) => e.textContent);
  if (!claims.includes("A/B run A")) fail(`claims: ${claims}`);
  await page.screenshot({ path: screenshot, fullPage: true });
  // The button runs it again.
  await page.click("#ab-run");
  await page.waitForFunction((t) => {
    const p = document.querySelector("#ab p.muted");
    return p && !document.querySelector("#ab-run").disabled && p.textContent !== t;
  }, await page.$eval("#ab p.muted", (e) => e.textContent), { timeout: 60000 })
    .catch(async () => fail(`the button's A/B: ${await page.$eval("#ab-status", (e) => e.textContent)}`));
  const status = await page.$eval("#ab-status", (e) => e.textContent);
  if (status) fail(`the button's A/B: ${status}`);
  console.log(`ok: A/B panel shows ${heads.length} measured runs; ${api.blocked.length} drop costs; the button ran it again`);
} finally {
  await browser.close();
}
