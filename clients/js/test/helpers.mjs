// Shared by the SDK tests (run by crates/ferry-cli/tests/js_sdk.rs, which starts
// `ferry serve` and passes FERRY_URL, FERRY_API_KEY, FERRY_JWT_SECRET and FERRY_BIN).
import { execFileSync, spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";

import { root, tempDir } from "./paths.mjs";

export { root, tempDir };

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`set ${name} (the tests are run by crates/ferry-cli/tests/js_sdk.rs)`);
  return value;
}

export const hubUrl = required("FERRY_URL");
export const apiKey = required("FERRY_API_KEY");
const jwtSecret = required("FERRY_JWT_SECRET");

/** The SDK as shipped: the minified bundle, built now from src/ into a temp dir. */
export async function loadSdk() {
  const out = tempDir("ferry-sdk-");
  execFileSync(process.execPath, [join(root, "scripts/build.mjs"), "--outdir", out], { stdio: "inherit" });
  return import(pathToFileURL(join(out, "ferry.min.js")).href);
}

/** An HS256 JWT for `user`, expiring in `seconds`, signed with the test server's secret. */
export function token(user, seconds = 3600) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: user, exp: Math.floor(Date.now() / 1000) + seconds })}`;
  return `${body}.${createHmac("sha256", jwtSecret).update(body).digest("base64url")}`;
}

/** POST /api/NAME on `base` with the API key; the JSON answer (throws on a non-200). */
export async function api(name, body, base = hubUrl) {
  const response = await fetch(`${base}/api/${name}`, {
    method: "POST",
    headers: { authorization: `apikey ${apiKey}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`/api/${name} answered ${response.status}: ${text}`);
  return JSON.parse(text);
}

/** A unique channel name for one test. */
let counter = 0;
export const channel = (name) => `chat:${name}-${process.pid}-${++counter}`;

/**
 * Resolve with the first `event` from `emitter` for which `predicate` holds. A safety net
 * rejects after `ms` (generous: it only turns a hang into a failure).
 */
export function next(emitter, event, predicate = () => true, ms = 60_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no \`${event}\` event within ${ms} ms`));
    }, ms);
    const off = emitter.on(event, (value) => {
      if (!predicate(value)) return;
      clearTimeout(timer);
      off();
      resolve(value);
    });
  });
}

/** Collect every publication of `sub`; `until(n)` resolves once `n` have arrived. */
export function collect(sub) {
  const received = [];
  const waiters = [];
  sub.on("publication", (p) => {
    received.push(p);
    for (const w of waiters.slice()) {
      if (received.length >= w.n) {
        waiters.splice(waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.resolve(received);
      }
    }
  });
  return {
    received,
    until(n, ms = 60_000) {
      if (received.length >= n) return Promise.resolve(received);
      return new Promise((resolve, reject) => {
        const w = { n, resolve };
        w.timer = setTimeout(() => reject(new Error(`${received.length} of ${n} publications within ${ms} ms`)), ms);
        waiters.push(w);
      });
    },
  };
}

/** Every state the client passes through, as `status[:transport]` strings. */
export function states(client) {
  const seen = [];
  client.on("state", (s) => seen.push(s));
  return seen;
}

/** Offsets 1..n. */
export const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/**
 * Start a `ferry serve` of our own (FERRY_BIN) on `port` (0: any) with the test secrets;
 * resolves once it prints its listening line. Used where a test restarts the server.
 */
export async function startServer(port = 0, dataDir = tempDir("ferry-data-"), extraArgs = []) {
  const child = spawn(
    required("FERRY_BIN"),
    [
      "serve", "--listen", `127.0.0.1:${port}`, "--api-key", apiKey, "--jwt-secret", jwtSecret,
      "--data-dir", dataDir, ...extraArgs,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const line = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("ferry serve printed nothing within 30 s")), 30_000);
    child.on("exit", (code) => reject(new Error(`ferry serve exited with ${code}`)));
    createInterface({ input: child.stdout }).once("line", (l) => {
      clearTimeout(timer);
      resolve(l);
    });
  });
  const url = line.replace("ferry listening on ", "").trim();
  return {
    url,
    port: Number(new URL(url).port),
    dataDir,
    /** SIGTERM (graceful: the hub closes WebSockets with 1001) and wait for the exit. */
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once("exit", resolve);
        child.kill("SIGTERM");
      }),
  };
}
