// The SDK in headless Debian chromium (driven by playwright-core, no downloaded browser)
// against the real `ferry serve` (FERRY_URL). Pages are served by the test proxy
// (proxy.mjs) in front of the hub, so they share its origin and the proxy can cut
// connections or block WebSocket upgrades. index.html loads the SDK from the hub itself:
// `import ... from "/sdk/ferry.js"`.
// Run by crates/ferry-cli/tests/js_sdk.rs: node --test clients/js/test/browser.test.mjs
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { build } from "esbuild";
import { chromium } from "playwright-core";
import WebSocket from "ws";
import { api, channel, hubUrl, loadSdk, next, range, root, token } from "./helpers.mjs";
import { startProxy } from "./proxy.mjs";

const executablePath = process.env.FERRY_CHROMIUM || "/usr/bin/chromium";
const page = (name) => readFileSync(join(root, "test/pages", name), "utf8");

let proxy;
let context;
let userDataDir;
const pageErrors = [];

before(async () => {
  const reactApp = await build({
    absWorkingDir: root,
    entryPoints: ["test/pages/react-app.jsx"],
    bundle: true,
    write: false,
    format: "esm",
    jsx: "automatic",
    define: { "process.env.NODE_ENV": '"development"' },
    logLevel: "warning",
  });
  proxy = await startProxy(hubUrl, {
    "index.html": { type: "text/html", body: page("index.html") },
    "react.html": { type: "text/html", body: page("react.html") },
    "react-app.js": { type: "text/javascript", body: reactApp.outputFiles[0].text },
    "example.html": { type: "text/html", body: readFileSync(join(root, "example/index.html"), "utf8") },
  });
  userDataDir = mkdtempSync(join(tmpdir(), "ferry-chromium-"));
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
});

after(async () => {
  await context?.close().catch(() => {});
  await proxy?.close();
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
});

async function open(path, params) {
  const p = await context.newPage();
  p.on("pageerror", (error) => pageErrors.push(String(error)));
  const url = new URL(`/__test/${path}`, proxy.url);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  const response = await p.goto(url.href, { waitUntil: "load" });
  assert.equal(response.status(), 200);
  return p;
}

async function publishMany(ch, count, tag) {
  for (let i = 0; i < count; i++) await api("publish", { channel: ch, data: { tag, i, text: `${tag}-${i}` } });
}

const waitFor = (p, fn, arg) => p.waitForFunction(fn, arg, { timeout: 60_000, polling: 50 });

test("the page loads /sdk/ferry.js from the hub, connects, subscribes, publishes and receives; cut and blocked connections recover", async () => {
  const { VERSION } = await loadSdk();
  const p = await open("index.html", { token: token("browser") });
  await waitFor(p, () => window.ferryLoaded === true);
  assert.equal(await p.evaluate(() => window.t.version), VERSION, "the hub serves the bundle built from src/");

  const ch = channel("browser");
  const state = await p.evaluate((ch) => window.t.start("a", [ch]), ch);
  assert.deepEqual([state.status, state.transport], ["connected", "websocket"]);
  const published = await p.evaluate((ch) => window.t.client("a").publish(ch, { text: "from the page" }), ch);
  assert.equal(published.offset, 1);
  await waitFor(p, (ch) => window.t.offsets("a", ch).length === 1, ch);
  const first = await p.evaluate((ch) => window.t.log("a").received[ch][0], ch);
  assert.deepEqual(first.data, { text: "from the page" });
  assert.equal(first.info.user, "browser");

  // The network drops while publications are made.
  proxy.cut();
  await waitFor(p, () => window.t.client("a").state.status === "reconnecting");
  await publishMany(ch, 10, "cut");
  proxy.restore();
  await waitFor(p, (ch) => window.t.log("a").recovered[ch].length === 1, ch);
  const recovered = await p.evaluate((ch) => window.t.log("a").recovered[ch][0], ch);
  assert.deepEqual([recovered.recovered, recovered.missed], [true, 10]);
  await publishMany(ch, 2, "live");
  await waitFor(p, (ch) => window.t.offsets("a", ch).length >= 13, ch);
  assert.deepEqual(await p.evaluate((ch) => window.t.offsets("a", ch), ch), range(1, 13));

  // Now a proxy that refuses WebSocket upgrades: the SDK falls back to SSE (the browser's
  // fetch) and resumes from where the WebSocket subscription was.
  proxy.state.blockUpgrades = true;
  proxy.cut();
  await waitFor(p, () => window.t.client("a").state.status !== "connected");
  await publishMany(ch, 5, "blocked");
  proxy.restore();
  await waitFor(p, () => window.t.client("a").state.transport === "sse" && window.t.client("a").state.status === "connected");
  await publishMany(ch, 2, "sse");
  await waitFor(p, (ch) => window.t.offsets("a", ch).length >= 20, ch);
  assert.deepEqual(await p.evaluate((ch) => window.t.offsets("a", ch), ch), range(1, 20), "no gap, no duplicate");
  proxy.state.blockUpgrades = false;
  await p.evaluate(() => window.t.client("a").close());
  await p.close();
  assert.deepEqual(pageErrors, []);
});

test("a fresh page behind a proxy that blocks upgrades receives over SSE from the start", async () => {
  proxy.state.blockUpgrades = true;
  try {
    const p = await open("index.html", { token: token("browser2") });
    await waitFor(p, () => window.ferryLoaded === true);
    const ch = channel("sse-only");
    const state = await p.evaluate((ch) => window.t.start("b", [ch]), ch);
    assert.deepEqual([state.status, state.transport], ["connected", "sse"]);
    await publishMany(ch, 3, "x");
    await waitFor(p, (ch) => window.t.offsets("b", ch).length >= 3, ch);
    assert.deepEqual(await p.evaluate((ch) => window.t.offsets("b", ch), ch), [1, 2, 3]);
    const refused = await p.evaluate((ch) => window.t.client("b").publish(ch, 1).catch((e) => e.code), ch);
    assert.equal(refused, "NOT_AVAILABLE_OVER_SSE");
    await p.evaluate(() => window.t.client("b").close());
    await p.close();
  } finally {
    proxy.state.blockUpgrades = false;
  }
  assert.deepEqual(pageErrors, []);
});

test("token expiry in the page is refreshed through getToken() without losing the subscription", async () => {
  const p = await open("index.html", {});
  let calls = 0;
  // The first token lives 3 s; the hub then sends AUTH_EXPIRED.
  await p.exposeFunction("mintToken", () => token("tabby", ++calls === 1 ? 3 : 3600));
  await waitFor(p, () => window.ferryLoaded === true);
  const ch = channel("page-expiry");
  await p.evaluate((ch) => window.t.start("d", [ch], { exposedToken: true }), ch);
  await p.evaluate((ch) => window.t.client("d").publish(ch, "before"), ch);
  await waitFor(p, () => window.t.log("d").refreshed === 1);
  assert.equal(calls, 2);
  assert.deepEqual(await p.evaluate(() => window.t.log("d").errors), ["AUTH_EXPIRED"]);
  await p.evaluate((ch) => window.t.client("d").publish(ch, "after"), ch);
  await waitFor(p, (ch) => window.t.offsets("d", ch).length === 2, ch);
  const log = await p.evaluate(() => window.t.log("d"));
  assert.deepEqual(log.received[ch].map((x) => x.data), ["before", "after"]);
  assert.ok(!log.states.some((s) => s.status === "reconnecting"), "the same connection carried on");
  await p.evaluate(() => window.t.client("d").close());
  await p.close();
  assert.deepEqual(pageErrors, []);
});

test("commands made in the page while offline are flushed in order", async () => {
  const p = await open("index.html", { token: token("offline") });
  await waitFor(p, () => window.ferryLoaded === true);
  const ch = channel("page-queue");
  await p.evaluate((ch) => window.t.start("e", [ch]), ch);
  proxy.cut();
  await waitFor(p, () => window.t.client("e").state.status === "reconnecting");
  await p.evaluate((ch) => {
    window.answers = [];
    for (let i = 0; i < 8; i++) window.t.client("e").publish(ch, { i }).then((a) => window.answers.push([i, a.offset]));
  }, ch);
  proxy.restore();
  await waitFor(p, () => window.answers.length === 8);
  assert.deepEqual(await p.evaluate(() => window.answers), range(0, 7).map((i) => [i, i + 1]));
  await waitFor(p, (ch) => window.t.offsets("e", ch).length === 8, ch);
  assert.deepEqual(await p.evaluate((ch) => window.t.log("e").received[ch].map((x) => x.data.i), ch), range(0, 7));
  await p.evaluate(() => window.t.client("e").close());
  await p.close();
  assert.deepEqual(pageErrors, []);
});

test("tabs share one hub connection; when the leader tab closes another takes over and recovers", async () => {
  const ch = channel("tabs");
  const tabs = [];
  for (const name of ["t1", "t2"]) {
    const p = await open("index.html", { token: token("tabs") });
    await waitFor(p, () => window.ferryLoaded === true);
    await p.evaluate(({ name, ch }) => window.t.start(name, [ch], { shared: true }), { name, ch });
    tabs.push(p);
  }
  const [leader, follower] = tabs;
  assert.equal((await api("presence", { channel: ch })).count, 1, "one hub connection for both tabs");
  await publishMany(ch, 2, "api");
  const sent = await follower.evaluate((ch) => window.t.client("t2").publish(ch, { text: "from tab 2" }), ch);
  assert.equal(sent.offset, 3, "a follower's publish goes through the leader's connection");
  await waitFor(leader, (ch) => window.t.offsets("t1", ch).length === 3, ch);
  await waitFor(follower, (ch) => window.t.offsets("t2", ch).length === 3, ch);

  // The leader tab goes away while publications are made: tab 2 takes the connection
  // over and recovers from its own position.
  await leader.close();
  await publishMany(ch, 5, "handover");
  await waitFor(follower, (ch) => window.t.offsets("t2", ch).length >= 8, ch);
  await publishMany(ch, 1, "after");
  await waitFor(follower, (ch) => window.t.offsets("t2", ch).length >= 9, ch);
  assert.deepEqual(await follower.evaluate((ch) => window.t.offsets("t2", ch), ch), range(1, 9), "no gap, no duplicate");
  assert.equal((await api("presence", { channel: ch })).count, 1);
  await follower.close();
  assert.deepEqual(pageErrors, []);
});

test("React hooks: useChannel renders publications, usePresence follows joins, unmount unsubscribes", async () => {
  const { FerryClient } = await loadSdk();
  const ch = channel("react");
  const p = await open("react.html", { token: token("reactor"), channel: ch });
  await waitFor(p, () => document.querySelector("#subscribed")?.textContent === "true");
  assert.equal(await p.textContent("#state"), "connected");
  assert.equal(await p.textContent("#error"), "", "two components share one subscription");
  await waitFor(p, () => document.querySelector("#count")?.textContent === "1");

  await publishMany(ch, 3, "hello");
  await waitFor(p, () => document.querySelectorAll("#messages li").length === 3);
  assert.deepEqual(await p.locator("#messages li").allTextContents(), ["1:hello-0", "2:hello-1", "3:hello-2"]);

  // Someone else joins: the presence count follows.
  const other = new FerryClient({ url: hubUrl, WebSocket, token: token("zed") });
  const sub = other.subscribe(ch);
  await other.connect();
  await sub.ready;
  await waitFor(p, () => document.querySelector("#count")?.textContent === "2");

  // Unmounting both components ends the page's subscription: zed sees it leave.
  const left = next(sub, "leave", (info) => info.user === "reactor");
  await p.click("#toggle");
  await left;
  assert.equal((await api("presence", { channel: ch })).count, 1);
  other.close();
  await p.close();
  assert.deepEqual(pageErrors, []);
});

test("the example chat page (example/index.html, no build step) sends and shows messages", async () => {
  const p = await open("example.html", { token: token("sam") });
  await waitFor(p, () => document.querySelector("#state")?.textContent === "connected (websocket)");
  await p.fill("#say input", "hello from the example");
  await p.press("#say input", "Enter");
  await waitFor(p, () => document.querySelectorAll("#log li").length === 1);
  assert.equal(await p.textContent("#log li"), "sam: hello from the example");
  await api("publish", { channel: "chat:lobby", data: { text: "from the API" } });
  await waitFor(p, () => document.querySelectorAll("#log li").length === 2);
  assert.equal(await p.locator("#log li").nth(1).textContent(), "server: from the API");
  await p.close();
  assert.deepEqual(pageErrors, []);
});
