// The chat example in headless Debian chromium (npm playwright-core from tests/browser):
// two users in two browser contexts. alice types and sends in #general, bob sees her typing
// and her message; bob reloads and finds it in the history; alice opens a private
// conversation with bob and bob reads it. Prints one JSON object and exits 0, or a reason
// on stderr and exits non-zero.
//
// Usage: node examples/chat/test.mjs BASE_URL   (a hub serving examples/chat/web)
// Environment: ALICE_TOKEN, BOB_TOKEN, FERRY_CHROMIUM (default /usr/bin/chromium).
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../../tests/browser/package.json"));
const { chromium } = require("playwright-core");

const base = process.argv[2];
const fail = (why) => { console.error(`chat test: ${why}`); process.exit(1); };
setTimeout(() => fail("no result after 90 s"), 90_000).unref();

const browser = await chromium.launch({
  executablePath: process.env.FERRY_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
const errors = [];
async function user(token) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${base}/?token=${token}`, { waitUntil: "load" });
  await page.waitForFunction(() => document.getElementById("title").textContent === "#general");
  return page;
}
const logHas = (page, text) =>
  page.waitForFunction((t) => [...document.querySelectorAll("#log li")].some((li) => li.textContent === t), text);

try {
  const alice = await user(process.env.ALICE_TOKEN);
  const bob = await user(process.env.BOB_TOKEN);
  // Both are in the room: bob's presence list shows alice.
  await bob.waitForFunction(() => [...document.querySelectorAll("#people button")].some((b) => b.textContent === "alice"));

  await alice.type("#say input", "hello bob", { delay: 20 });
  await bob.waitForFunction(() => document.getElementById("typing").textContent === "alice is typing…");
  await alice.press("#say input", "Enter");
  await logHas(bob, "alice: hello bob");
  await logHas(alice, "alice: hello bob");

  // A reload starts from nothing: the message comes back from history.
  await bob.reload({ waitUntil: "load" });
  await bob.waitForFunction(() => document.getElementById("title").textContent === "#general");
  await logHas(bob, "alice: hello bob");

  // A private conversation: alice picks bob in the presence list.
  await alice.waitForFunction(() => [...document.querySelectorAll("#people button")].some((b) => b.textContent === "bob"));
  await alice.click("#people button");
  await alice.waitForFunction(() => document.getElementById("title").textContent === "@bob");
  await alice.fill("#say input", "psst");
  await alice.press("#say input", "Enter");
  await logHas(alice, "alice: psst");
  await bob.evaluate(() => window.chat.open("dm:pair#alice,bob", "@alice"));
  await logHas(bob, "alice: psst");

  if (errors.length) fail(`page errors: ${errors.join("; ")}`);
  const bobLog = await bob.$$eval("#log li", (lis) => lis.map((li) => li.textContent));
  console.log(JSON.stringify({ ok: true, bob_dm_log: bobLog }));
} catch (e) {
  fail(`${e.message}${errors.length ? `; page errors: ${errors.join("; ")}` : ""}`);
} finally {
  await browser.close();
}
