// The README's tour in a real browser: a page served from ANOTHER origin (a plain node
// HTTP server on its own loopback port, as a dev server on :5173 would be) subscribes to
// a channel on `ferry serve --dev` with a token minted by `ferry token`, using exactly the
// README's snippet (native WebSocket, subprotocol ferry.json).
//
// Protocol with the Rust test (crates/ferry-cli/tests/readme_tour.rs), one JSON object per
// stdout line:
//   1. {"ready": {...}} once the page is subscribed; the test then runs `ferry pub`,
//   2. {"result": {...}} once the page received a publication; then exit 0.
// Any failure: a message on stderr and a non-zero exit.
//
// Usage: node tests/browser/tour.mjs HUB_URL   (e.g. http://127.0.0.1:8080)
// Environment: FERRY_TOKEN (required), FERRY_CHANNEL (default chat:lobby),
//   FERRY_CHROMIUM (default /usr/bin/chromium), FERRY_BROWSER_TIMEOUT_MS (default 60000).

import { createServer } from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const hub = process.argv[2];
const token = process.env.FERRY_TOKEN;
if (!hub || !token) {
  console.error("usage: FERRY_TOKEN=JWT node tests/browser/tour.mjs HUB_URL");
  process.exit(2);
}
const channel = process.env.FERRY_CHANNEL || "chat:lobby";
const executablePath = process.env.FERRY_CHROMIUM || "/usr/bin/chromium";
const timeoutMs = Number(process.env.FERRY_BROWSER_TIMEOUT_MS || 60000);

const watchdog = setTimeout(() => {
  console.error(`tour.mjs: no result after ${timeoutMs} ms`);
  process.exit(3);
}, timeoutMs);
watchdog.unref();

// The README's snippet, with the hub's address and the channel filled in.
const wsUrl = new URL("/ws", hub);
wsUrl.protocol = wsUrl.protocol === "https:" ? "wss:" : "ws:";
const page = `<!doctype html><meta charset="utf-8"><title>ferry tour</title>
<script type="module">
const jwt = new URLSearchParams(location.search).get("token");
const log = { authSuccess: null, subscribed: null, messages: [], errors: [] };
window.tour = log;
let resolveSubscribed, resolveMessage;
window.subscribed = new Promise((r) => (resolveSubscribed = r));
window.message = new Promise((r) => (resolveMessage = r));
const ws = new WebSocket(\`${wsUrl.href}?token=\${jwt}\`, "ferry.json");
ws.onopen = () => ws.send(JSON.stringify({type: "subscribe", id: "1", payload: {channel: ${JSON.stringify(channel)}}}));
ws.onerror = () => log.errors.push("websocket error");
ws.onclose = (e) => log.errors.push(\`closed \${e.code} \${e.reason}\`);
ws.onmessage = (e) => {
  const frame = JSON.parse(e.data);
  if (frame.type === "auth_success") log.authSuccess = frame.payload;
  else if (frame.type === "reply" && frame.id === "1") { log.subscribed = frame.payload; resolveSubscribed(log); }
  else if (frame.type === "message") { log.messages.push(frame.payload); resolveMessage(log); }
  else if (frame.type === "error" || frame.type === "auth_error") { log.errors.push(frame.payload); resolveSubscribed(log); }
};
</script>`;

const devServer = createServer((req, res) => {
  res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
  res.end(page);
});
await new Promise((resolve) => devServer.listen(0, "127.0.0.1", resolve));
const pageOrigin = `http://127.0.0.1:${devServer.address().port}`;

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
  const tab = context.pages()[0] ?? (await context.newPage());
  const pageErrors = [];
  tab.on("pageerror", (error) => pageErrors.push(String(error)));
  await tab.goto(`${pageOrigin}/?token=${encodeURIComponent(token)}`, { waitUntil: "load" });
  const ready = await tab.evaluate(() => window.subscribed);
  console.log(JSON.stringify({ ready: { ...ready, pageOrigin, hubOrigin: new URL(hub).origin } }));
  if (ready.errors.length > 0 || !ready.subscribed) {
    throw new Error(`the page could not subscribe: ${JSON.stringify(ready.errors)}`);
  }
  const received = await tab.evaluate(() => window.message);
  console.log(JSON.stringify({ result: { ...received, pageOrigin, pageErrors } }));
} catch (error) {
  console.error(`tour.mjs: ${error?.stack ?? error}`);
  process.exitCode = 1;
} finally {
  await context?.close().catch(() => {});
  devServer.close();
  rmSync(userDataDir, { recursive: true, force: true });
  clearTimeout(watchdog);
}
