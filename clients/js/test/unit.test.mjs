// The SDK's pure parts, without a server: recovery bookkeeping (the same cases as the Rust
// client's subscription.rs), the SSE parser and the backoff. Bundled from src/ by esbuild.
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";
import { build } from "esbuild";
import { root, tempDir } from "./paths.mjs";

const out = tempDir("ferry-unit-");
await build({
  absWorkingDir: root,
  entryPoints: ["src/recovery.ts", "src/sse.ts", "src/backoff.ts"],
  outdir: out,
  bundle: true,
  format: "esm",
  logLevel: "warning",
});
const load = (name) => import(pathToFileURL(join(out, `${name}.js`)).href);
const { Recovery } = await load("recovery");
const { SseParser } = await load("sse");
const { backoffDelay, DEFAULT_BACKOFF } = await load("backoff");

const pub = (offset, epoch = "e") => ({ channel: "c", offset, epoch, data: offset, time: 1 });
const offsets = (out) => out.filter((o) => o.kind === "publication").map((o) => o.publication.offset);

test("live publications are delivered once, in order", () => {
  const r = new Recovery();
  const out = [];
  r.begin();
  r.onReply({ offset: 3, epoch: "e" }, false, out);
  for (const o of [4, 5, 5, 4, 6]) r.onPublication(pub(o), out);
  assert.deepEqual(out[0], { kind: "subscribed", position: { offset: 3, epoch: "e" } });
  assert.deepEqual(offsets(out), [4, 5, 6]);
});

test("a resubscribe merges recovered and held-back publications without gap or duplicate", () => {
  const r = new Recovery({ offset: 2, epoch: "e" });
  const out = [];
  r.begin();
  r.onPublication(pub(6), out);
  r.onPublication(pub(5), out);
  assert.deepEqual(out, [], "held back while the reply is pending");
  r.onReply({ offset: 5, epoch: "e", recovered: true, publications: [2, 3, 4, 5].map((o) => pub(o)) }, true, out);
  assert.deepEqual(out[0], { kind: "recovered", recovered: true, missed: 3, position: { offset: 5, epoch: "e" } });
  assert.deepEqual(offsets(out), [3, 4, 5, 6]);
  assert.deepEqual(r.position, { offset: 6, epoch: "e" });
});

test("an unrecoverable gap is reported and skipped", () => {
  const r = new Recovery({ offset: 2, epoch: "old" });
  const out = [];
  r.begin();
  r.onReply({ offset: 9, epoch: "new", recovered: false, publications: [] }, true, out);
  r.onPublication(pub(9, "new"), out);
  r.onPublication(pub(10, "new"), out);
  assert.deepEqual(out[0], { kind: "recovered", recovered: false, missed: 0, position: { offset: 9, epoch: "new" } });
  assert.deepEqual(offsets(out), [10]);
});

test("the SSE parser follows the WHATWG rules across chunk boundaries", () => {
  const events = [];
  const parser = new SseParser((e) => events.push(e));
  const stream = ": ferry\nretry: 2000\n\nevent: message\nid: a:1\ndata: {\"x\":\r\ndata:1}\r\r" + "data: no id change\n\n" + "id: b:2\r\nevent: other\ndata\n\n";
  // Every split point, including between a CR and its LF.
  for (let cut = 0; cut <= stream.length; cut++) {
    events.length = 0;
    const p = new SseParser((e) => events.push(e));
    p.push(stream.slice(0, cut));
    p.push(stream.slice(cut));
    assert.deepEqual(
      events,
      [
        { event: "message", data: '{"x":\n1}', id: "a:1" },
        { event: "message", data: "no id change", id: "a:1" },
        { event: "other", data: "", id: "b:2" },
      ],
      `split at ${cut}`,
    );
  }
  parser.push("data: unterminated");
  assert.equal(events.length, 3, "nothing is dispatched before the blank line");
});

test("backoff: full jitter under a ceiling that doubles up to the cap", () => {
  const b = { ...DEFAULT_BACKOFF, initial: 500, max: 3000 };
  assert.deepEqual([1, 2, 3, 4, 5].map((n) => backoffDelay(b, n, 1)), [500, 1000, 2000, 3000, 3000]);
  assert.equal(backoffDelay(b, 3, 0), 0);
  assert.equal(backoffDelay(b, 3, 0.5), 1000);
  assert.equal(backoffDelay(b, 2, 7), 1000, "a sample above 1 is clamped");
  assert.equal(backoffDelay({ ...b, multiplier: 0.5 }, 4, 1), 500, "a backoff never shrinks");
});
