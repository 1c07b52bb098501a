// Drives headless Debian chromium (via playwright-core, no downloaded browser) against a
// running `ferry serve --static tests/browser/page`:
//   1. opens the page; its native WebSocket and EventSource subscribe to one channel,
//   2. waits until the WebSocket subscribe reply and the EventSource `open` both happened,
//   3. publishes through POST /api/publish,
//   4. waits until BOTH transports received exactly that publication,
// then prints one JSON object with what each side saw on stdout and exits 0. Any failure
// prints a message on stderr and exits non-zero.
//
// Usage: node tests/browser/run.mjs BASE_URL
// Environment: FERRY_TOKEN (JWT that may subscribe to the channel), FERRY_API_KEY,
//   FERRY_CHANNEL (default chat:browser), FERRY_PUBLISH_DATA (JSON, default a small object),
//   FERRY_CHROMIUM (default /usr/bin/chromium), FERRY_BROWSER_TIMEOUT_MS (default 60000).

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`run.mjs: set ${name}`);
    process.exit(2);
  }
  return value;
}

const base = process.argv[2];
if (!base) {
  console.error("usage: node tests/browser/run.mjs BASE_URL   (e.g. http://127.0.0.1:8080)");
  process.exit(2);
}
const token = required("FERRY_TOKEN");
const apiKey = required("FERRY_API_KEY");
const channel = process.env.FERRY_CHANNEL || "chat:browser";
const data = JSON.parse(process.env.FERRY_PUBLISH_DATA || '{"text":"hello from the ferry browser test"}');
const executablePath = process.env.FERRY_CHROMIUM || "/usr/bin/chromium";
const timeoutMs = Number(process.env.FERRY_BROWSER_TIMEOUT_MS || 60000);

// A watchdog, not a wait: a hung browser or server must fail the run, not stall CI.
const watchdog = setTimeout(() => {
  console.error(`run.mjs: no result after ${timeoutMs} ms`);
  process.exit(3);
}, timeoutMs);
watchdog.unref();

const userDataDir = mkdtempSync(join(tmpdir(), "ferry-chromium-"));
let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const pageErrors = [];
  page.on("pageerror", (error) => pageErrors.push(String(error)));
  page.on("console", (message) => {
    if (message.type() === "error") pageErrors.push(message.text());
  });

  const url = new URL("/index.html", base);
  url.searchParams.set("channel", channel);
  url.searchParams.set("token", token);
  const response = await page.goto(url.href, { waitUntil: "load" });
  if (!response || !response.ok()) {
    throw new Error(`GET ${url.pathname} answered ${response ? response.status() : "nothing"}`);
  }

  // Module scripts run before `load`, so window.ferryTest exists now.
  const ready = await page.evaluate(() => window.ferryTest.ready);

  const publishResponse = await fetch(new URL("/api/publish", base), {
    method: "POST",
    headers: { authorization: `apikey ${apiKey}`, "content-type": "application/json" },
    body: JSON.stringify({ channel, data }),
  });
  const publishBody = await publishResponse.text();
  if (publishResponse.status !== 200) {
    throw new Error(`POST /api/publish answered ${publishResponse.status}: ${publishBody}`);
  }
  const published = JSON.parse(publishBody);

  const received = await page.evaluate(
    ({ offset, epoch }) => window.ferryTest.publication(offset, epoch),
    { offset: published.offset, epoch: published.epoch },
  );
  const counts = await page.evaluate(() => ({
    ws: window.ferryTest.received.ws.length,
    sse: window.ferryTest.received.sse.length,
  }));

  console.log(
    JSON.stringify({
      browser: context.browser()?.version() ?? null,
      userAgent: await page.evaluate(() => navigator.userAgent),
      channel,
      published: { ...published, data },
      ready,
      ws: received.ws,
      sse: received.sse,
      receivedCounts: counts,
      pageErrors,
    }),
  );
} catch (error) {
  console.error(`run.mjs: ${error?.stack ?? error}`);
  process.exitCode = 1;
} finally {
  await context?.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
  clearTimeout(watchdog);
}
