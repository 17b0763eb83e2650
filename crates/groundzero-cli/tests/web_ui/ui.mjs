// Drives the journey page in Debian's headless Chromium; run by tests/web_ui.rs, which starts
// the daemon and the traffic. Exits non-zero with a message when something is wrong.
// Usage: node ui.mjs URL TOKEN SCREENSHOT QUIET (a file to create when the traffic must stop)
import { chromium } from "playwright-core";

const [url, token, screenshot, quiet] = process.argv.slice(2);
const fail = (msg) => { console.error(`UI check failed: ${msg}`); process.exit(1); };
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1500 } });
  page.on("pageerror", (e) => fail(`page error: ${e.message}`));
  await page.goto(`${url}/#token=${token}`);
  // The flowchart renders.
  await page.waitForSelector("#node-xdp", { timeout: 10000 });
  for (const id of ["nic", "xdp", "drop", "pass", "stack", "socket", "app"]) {
    if (!(await page.$(`#node-${id}`))) fail(`flowchart node ${id} missing`);
  }
  if (page.url().includes("token=")) fail("the token stays in the address bar");
  // A rate the API gives as null (not observed) reads "not observed", never 0 or NaN.
  const unobserved = await page.evaluate("[fmtPps(null), fmtPps(undefined, true), fmtPps(0)]");
  if (unobserved[0] !== "not observed" || unobserved[1] !== "not observed" || unobserved[2] !== "0 pps") fail(`fmtPps: ${unobserved}`);
  // Counters move while traffic runs.
  const outcomes = async () => page.$eval("#outcomes", (e) => e.textContent);
  await page.waitForFunction(() => document.querySelector("#status").className === "ok", null, { timeout: 10000 });
  // The program's counts of the packets the sample filter admits, beside the outcomes.
  await page.waitForFunction(() => /sample filter admitted: [1-9]\d*/.test(document.querySelector("#outcomes").textContent), null, { timeout: 10000 })
    .catch(async () => fail(`filtered totals: ${await outcomes()}`));
  const before = await outcomes();
  await page.waitForFunction((b) => document.querySelector("#outcomes").textContent !== b, before, { timeout: 10000 });
  await page.waitForFunction(() => !document.querySelector("#rate-seen_pps").textContent.startsWith("0 pps")
      && document.querySelector("#rate-seen_pps").textContent !== "–", null, { timeout: 10000 });
  // The cost on this host, from the kernel's run-time stats, once a second with traffic in it.
  await page.waitForFunction(() => /XDP program: \d+(\.\d+)? ns per packet/.test(document.querySelector("#cost").textContent),
      null, { timeout: 10000 }).catch(async () => fail(`cost: ${await page.$eval("#cost", (e) => e.textContent)}`));
  // Opening a delivered journey shows its stages.
  await page.waitForSelector("#journeys td.o-delivered", { timeout: 10000 });
  await page.click("#journeys td.o-delivered");
  await page.waitForSelector("#sequence");
  const hops = await page.$$eval("#sequence text.hop", (t) => t.map((x) => x.textContent));
  if (hops.length < 4) fail(`a delivered journey shows ${hops.length} hops: ${hops}`);
  if (!hops.some((h) => h.includes("read by the application"))) fail(`no application hop: ${hops}`);
  // A dropped one shows the entry that matched.
  await page.waitForSelector("#journeys td.o-xdp_drop", { timeout: 10000 });
  await page.click("#journeys td.o-xdp_drop");
  await page.waitForSelector("#detail .entry");
  const entry = await page.$eval("#detail .entry", (e) => e.textContent);
  if (!entry.includes("198.18.7.3/32")) fail(`drop detail: ${entry}`);
  // The entry's reason holds markup: it is shown as text, never run.
  if (!entry.includes('<img src=x onerror="window.__xss=1">')) fail(`the reason is not shown as text: ${entry}`);
  if (await page.$("#detail img, #entries img")) fail("the reason became an element");
  if (await page.evaluate(() => window.__xss)) fail("the reason's markup ran");
  // No figure without a measurement: a stage row either has samples and times, or says
  // "not observed" and shows none; every stage of the path has a row.
  const rows = await page.$$eval("#stages tbody tr", (trs) => trs.map((tr) => [tr.dataset.stage, [...tr.cells].map((c) => c.textContent)]));
  for (const st of ["xdp", "gro", "stack", "ip", "transport", "socket", "app"]) {
    if (!rows.some(([s]) => s === st)) fail(`no row for stage ${st}: ${JSON.stringify(rows)}`);
  }
  for (const [st, cells] of rows) {
    const text = cells.join(" ");
    if (text.includes("not observed")) {
      if (/\d µs|\d ms/.test(text) || cells[1] !== "0") fail(`stage ${st} is not observed but shows a figure: ${text}`);
    } else if (!(Number(cells[1]) > 0) || !/µs|ms/.test(cells[2])) {
      fail(`stage ${st} shows a figure without samples: ${text}`);
    }
  }
  // Without an A/B run, "without XDP" is not drawn from XDP's figures: it says how to measure it.
  const ab = await page.$eval("#ab", (e) => e.textContent);
  if (!ab.includes("run the A/B to measure")) fail(`A/B panel without a run: ${ab}`);
  const timeline = await page.$eval("#timeline", (e) => e.textContent);
  if (!timeline.includes("without XDP: run the A/B to measure") || /without: /.test(timeline)) fail(`timeline: ${timeline}`);
  if (timeline.includes("all of this")) fail("the static 'without XDP' sentence is back");
  // Claims: each either measured (a time and whether it holds) or "not measured yet" (no verdict).
  await page.waitForSelector("#claims tbody tr", { timeout: 10000 });
  const claims = await page.$$eval("#claims tbody tr", (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
  if (claims.length !== 4) fail(`${claims.length} claims shown`);
  for (const [claim, measured, verdict] of claims) {
    if (measured === "not measured yet" ? !verdict.startsWith("not measured yet") : !/^\d+\.\d µs|ms$/.test(measured) || verdict.startsWith("not measured")) fail(`claim ${claim}: ${measured} / ${verdict}`);
  }
  // Exports: JSON (summary and journeys), Mermaid (µs with one decimal), PNG of the diagrams.
  const saved = async (button) => {
    const [d] = await Promise.all([page.waitForEvent("download", { timeout: 10000 }), page.click(button)]);
    const { readFileSync } = await import("node:fs");
    return readFileSync(await d.path());
  };
  const json = JSON.parse((await saved("#export-json")).toString());
  if (!json.summary || !Array.isArray(json.summary.stages) || !json.journeys.length) fail("the JSON export lacks the summary or the journeys");
  const mmd = (await saved("#export-mermaid")).toString();
  if (!mmd.startsWith("flowchart LR") || !/p50 \d+\.\d µs/.test(mmd)) fail(`mermaid export: ${mmd}`);
  if (/NaN/.test(mmd)) fail(`mermaid export holds NaN: ${mmd}`);
  // A run label holding a line break stays inside its `%%` comment.
  const injected = await page.evaluate(`(() => { const saved = ab; ab = { runs: [{ label: "x\\r\\nclick nic call evil()", stages: [{ label: "s", p50: { ns: 1000 }, p99: { ns: 2000 } }] }] };
    try { return mermaid(summary); } finally { ab = saved; } })()`);
  if (injected.split("\n").some((l) => l.includes("click nic") && !l.trim().startsWith("%%"))) fail(`a label escaped its comment: ${injected}`);
  const xdp = json.summary.stages.find((x) => x.stage === "xdp");
  if (xdp && xdp.p50_ns < 1000 && mmd.includes("XDP verdict<br/>p50 1.0 µs") && xdp.p50_ns < 950) fail("a sub-µs verdict was rounded up to 1 µs");
  const pngFile = await saved("#export-png");
  if (pngFile.length < 1000 || pngFile.readUInt32BE(0) !== 0x89504e47) fail(`the PNG export is not a PNG (${pngFile.length} bytes)`);
  // Drops by origin: the api's entry (blocked by the test) has dropped the bad source's packets.
  await page.waitForFunction(() => [...document.querySelectorAll("#origins tbody tr")].some((tr) =>
      tr.cells[0].textContent === "api" && Number(tr.cells[1].textContent) > 0), null, { timeout: 10000 })
    .catch(async () => fail(`drops by origin: ${await page.$eval("#origins", (e) => e.textContent)}`));
  // Every rate label of the flowchart stays readable: no label overlaps another or a box.
  const overlaps = await page.$$eval("#flow text.rate, #flow rect", (els) => {
    const boxes = els.map((e) => ({ id: e.id || `box ${e.nextElementSibling?.textContent}`, label: e.tagName === "text", r: e.getBoundingClientRect() }));
    const hit = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
    const out = [];
    for (let i = 0; i < boxes.length; i++)
      for (let j = i + 1; j < boxes.length; j++)
        if ((boxes[i].label || boxes[j].label) && hit(boxes[i].r, boxes[j].r)) out.push(`${boxes[i].id} / ${boxes[j].id}`);
    return out;
  });
  if (overlaps.length) fail(`flowchart labels overlap: ${overlaps.join(", ")}`);
  const rateLabels = await page.$$eval("#flow text.rate", (t) => t.map((x) => x.textContent));
  if (rateLabels.some((t) => /NaN/.test(t))) fail(`a rate reads NaN: ${rateLabels}`);
  await page.screenshot({ path: screenshot, fullPage: true });
  // Add and remove a block entry from the page; the API sees both.
  const entries = async () => (await (await fetch(`${url}/v1/entries?list=block`, { headers: { Authorization: `Bearer ${token}` } })).json()).entries.map((e) => e.entry);
  await page.fill("#b-entry", "198.18.9.9");
  await page.fill("#b-reason", "ui-test");
  await page.click("#block button");
  await page.waitForSelector('button[data-entry="198.18.9.9/32"]', { timeout: 5000 });
  if (!(await entries()).includes("198.18.9.9/32")) fail("the block from the page is not in the API");
  await page.fill("#b-entry", "not-an-address");
  await page.click("#block button");
  await page.waitForFunction(() => document.querySelector("#b-error").textContent.length > 0, null, { timeout: 5000 });
  await page.click('button[data-entry="198.18.9.9/32"]');
  await page.waitForFunction(() => !document.querySelector('button[data-entry="198.18.9.9/32"]'), null, { timeout: 5000 });
  if ((await entries()).includes("198.18.9.9/32")) fail("the removal from the page did not reach the API");
  // "Capture the next N drops" downloads a pcapng holding N packets from XDP, each with its
  // verdict as a comment (the blocked source's traffic keeps running).
  await page.fill("#c-count", "5");
  await page.fill("#c-duration", "20s");
  const [download] = await Promise.all([
    page.waitForEvent("download", { timeout: 25000 }),
    page.click("#capture button"),
  ]);
  const { readFileSync } = await import("node:fs");
  const file = readFileSync(await download.path());
  if (file.length < 12 || file.readUInt32LE(0) !== 0x0a0d0d0a) fail(`the download is not pcapng (${file.length} bytes)`);
  let packets = 0;
  for (let at = 0; at + 8 <= file.length;) {
    const [type, len] = [file.readUInt32LE(at), file.readUInt32LE(at + 4)];
    if (len < 12) fail(`a pcapng block of length ${len}`);
    if (type === 6) packets++; // enhanced packet block
    at += len;
  }
  if (packets !== 5) fail(`the capture holds ${packets} packets, not 5`);
  if (!file.toString("latin1").includes("verdict=drop reason=blocked_exact")) fail("no verdict comment in the capture");
  // The page's numbers are /v1/journey's: with the traffic stopped (the test's sender stops when
  // the file `quiet` exists), the stage table against a reply fetched at the same moment.
  const { writeFileSync } = await import("node:fs");
  writeFileSync(quiet, "");
  await page.waitForTimeout(2500);
  let same = null;
  for (let i = 0; i < 30 && !same; i++) {
    const [api, rows] = await page.evaluate(async (tok) => {
      const s = await (await fetch("/v1/journey", { headers: { Authorization: `Bearer ${tok}` } })).json();
      const rows = [...document.querySelectorAll("#stages tbody tr")].map((tr) => [tr.dataset.stage, [...tr.cells].map((c) => c.textContent)]);
      return [s, rows];
    }, token);
    const us = (ns) => (ns >= 1e6 ? `${(ns / 1e6).toFixed(2)} ms` : `${(ns / 1e3).toFixed(1)} µs`);
    const want = api.stages.map((x) => [x.stage, [String(x.count), us(x.p50_ns), us(x.p99_ns)]]);
    const got = Object.fromEntries(rows);
    if (want.length && want.every(([st, [n, p50, p99]]) => got[st] && got[st][1] === n && got[st][2] === p50 && got[st][3] === p99)) same = want;
    else await page.waitForTimeout(300);
  }
  if (!same) fail("the stage table never equalled /v1/journey's stages");
  console.log(`ok: ${hops.length} hops; ${entry.trim()}; stage table = /v1/journey (${same.length} stages); ${claims.length} claims; exports; a capture of ${packets} drops downloaded`);
} finally {
  await browser.close();
}
