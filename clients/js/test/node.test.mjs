// The SDK in Node against the real `ferry serve` (FERRY_URL), partly through the test proxy
// (proxy.mjs) that cuts connections, stalls them or blocks WebSocket upgrades.
// Run by crates/ferry-cli/tests/js_sdk.rs: node --test clients/js/test/node.test.mjs
import assert from "node:assert/strict";
import { after, test } from "node:test";
import WebSocket from "ws";
import { api, channel, collect, hubUrl, loadSdk, next, range, startServer, states, token } from "./helpers.mjs";
import { startProxy } from "./proxy.mjs";

const { FerryClient, FerryError, VERSION } = await loadSdk();
const clients = [];
const proxies = [];
after(async () => {
  for (const c of clients) c.close();
  for (const p of proxies) await p.close();
});

/** A client for `user` on `url`, quick to reconnect (the backoff is the SDK's, only smaller). */
function client(options = {}) {
  const c = new FerryClient({
    url: hubUrl,
    WebSocket,
    token: token(options.user ?? "alice"),
    backoff: { initial: 100, max: 400 },
    ...options,
  });
  clients.push(c);
  return c;
}

async function proxy() {
  const p = await startProxy(hubUrl);
  proxies.push(p);
  return p;
}

/** Publish offsets through the server API (not through the client under test). */
async function publishMany(ch, count, tag, base = hubUrl) {
  const offsets = [];
  for (let i = 0; i < count; i++) offsets.push((await api("publish", { channel: ch, data: { tag, i } }, base)).offset);
  return offsets;
}

test("connect, subscribe, publish and receive; history, presence, ping", async () => {
  assert.match(VERSION, /^\d+\.\d+\.\d+$/);
  const c = client();
  const seen = states(c);
  const ch = channel("basic");
  const sub = c.subscribe(ch);
  const got = collect(sub);
  const auth = next(c, "authSuccess");
  await c.connect();
  assert.equal((await auth).user, "alice");
  const start = await sub.ready;
  assert.deepEqual(start, { offset: 0, epoch: start.epoch });
  const published = await c.publish(ch, { text: "hi", n: 1 });
  assert.equal(published.offset, 1);
  const [p] = await got.until(1);
  assert.deepEqual(p.data, { text: "hi", n: 1 });
  assert.equal(p.info.user, "alice");
  assert.equal(p.epoch, start.epoch);
  assert.deepEqual(sub.position, { offset: 1, epoch: start.epoch });

  await c.publish(ch, { text: "two" });
  const page = await c.history(ch, { since: 0, limit: 10 });
  assert.deepEqual(page.publications.map((x) => x.offset), [1, 2]);
  const presence = await c.presence(ch);
  assert.equal(presence.count, 1);
  assert.equal(Object.values(presence.clients)[0].user, "alice");
  await c.ping();

  await assert.rejects(c.publish("nope:x", 1), (e) => e instanceof FerryError && e.code === "UNKNOWN_CHANNEL");
  assert.throws(() => c.subscribe(ch), (e) => e.code === "ALREADY_SUBSCRIBED");
  const refused = c.subscribe("#bob");
  await assert.rejects(refused.ready, (e) => e.code === "PERMISSION_DENIED");
  assert.equal(c.getSubscription("#bob"), undefined, "a refused subscription is dropped");

  assert.deepEqual(
    seen.map((s) => s.status),
    ["connecting", "connected", "connected"],
    "connecting, connected, then connected with the user from auth_success",
  );
  assert.equal(c.state.user, "alice");
  assert.equal(c.state.transport, "websocket");
  await sub.unsubscribe();
  c.close();
  assert.equal(c.state.status, "disconnected");
  await assert.rejects(c.publish(ch, 1), (e) => e.code === "DISCONNECTED");
});

test("connection cut while publications are made: reconnect and recover all, no gap, no duplicate", async () => {
  const px = await proxy();
  const c = client({ url: px.url });
  const ch = channel("cut");
  const sub = c.subscribe(ch);
  const got = collect(sub);
  await c.connect();
  await sub.ready;
  await publishMany(ch, 5, "before");
  await got.until(5);

  const reconnecting = next(c, "state", (s) => s.status === "reconnecting");
  px.cut();
  const state = await reconnecting;
  assert.equal(state.reason.code, 1006, "a cut connection is 1006");
  assert.ok(state.attempt >= 1 && state.delay >= 0 && state.delay <= 100, JSON.stringify(state));
  // While the client cannot reach the hub: 20 more publications, then let it back in.
  await publishMany(ch, 20, "during");
  const recovered = next(sub, "recovered");
  px.restore();
  const r = await recovered;
  assert.equal(r.recovered, true);
  assert.equal(r.missed, 20);
  await publishMany(ch, 5, "after");
  await got.until(30);
  assert.deepEqual(got.received.map((p) => p.offset), range(1, 30), "every offset exactly once, in order");
  assert.equal(c.state.status, "connected");
});

test("a stalled connection is found dead by the heartbeat and recovered", async () => {
  const px = await proxy();
  const c = client({ url: px.url, heartbeat: { interval: 300, timeout: 300 } });
  const ch = channel("stall");
  const sub = c.subscribe(ch);
  const got = collect(sub);
  await c.connect();
  await sub.ready;
  await publishMany(ch, 2, "before");
  await got.until(2);
  const lost = next(c, "state", (s) => s.status === "reconnecting");
  px.state.stall = true;
  await publishMany(ch, 3, "stalled");
  const state = await lost;
  assert.match(state.reason.reason, /no answer to a ping/);
  px.state.stall = false;
  await next(sub, "recovered", (r) => r.recovered);
  await got.until(5);
  assert.deepEqual(got.received.map((p) => p.offset), range(1, 5));
});

/** Subscribe, see 3 publications, restart the server (SIGTERM, then the same port and
 * data dir), and return what the client reports after it reconnected on its own. */
async function restartWhileSubscribed(name, extraArgs) {
  const first = await startServer(0, undefined, extraArgs);
  const c = client({ url: first.url });
  const ch = channel(name);
  const sub = c.subscribe(ch);
  const got = collect(sub);
  await c.connect();
  await sub.ready;
  await publishMany(ch, 3, "before", first.url);
  await got.until(3);
  const closed = next(c, "state", (s) => s.status === "reconnecting");
  await first.stop();
  assert.equal((await closed).reason.code, 1001, "the hub says it is shutting down");
  const again = await startServer(first.port, first.dataDir, extraArgs);
  try {
    const recovered = await next(sub, "recovered");
    await api("publish", { channel: ch, data: "new life" }, again.url);
    const [, , , p] = await got.until(4);
    return { recovered, before: got.received[0], after: p };
  } finally {
    c.close();
    await again.stop();
  }
}

test("server restarted (graceful 1001) with durable history: the client reconnects on its own and recovers", async () => {
  const { recovered, before, after } = await restartWhileSubscribed("restart", []);
  assert.equal(recovered.recovered, true);
  assert.equal(recovered.position.epoch, before.epoch, "the epoch survives the restart");
  assert.deepEqual([after.offset, after.data, after.epoch], [4, "new life", before.epoch]);
});

test("server restarted with memory history: the client says the history is gone", async () => {
  const { recovered, before, after } = await restartWhileSubscribed("restart-mem", ["--history", "memory"]);
  // The memory store starts a new epoch: the SDK must say the gap cannot be filled
  // rather than pretend (docs/PROTOCOL.md, "epoch").
  assert.equal(recovered.recovered, false);
  assert.notEqual(recovered.position.epoch, before.epoch);
  assert.deepEqual([after.offset, after.data], [1, "new life"]);
});

test("token expiry is refreshed through getToken() without losing the subscription", async () => {
  let calls = 0;
  const c = client({
    token: undefined,
    getToken: async () => {
      calls++;
      // The first token lives 3 s; the hub then sends AUTH_EXPIRED and waits for `auth`.
      return token("carol", calls === 1 ? 3 : 3600);
    },
  });
  const seen = states(c);
  const ch = channel("expiry");
  const sub = c.subscribe(ch);
  const got = collect(sub);
  const expired = next(c, "error", (e) => e.code === "AUTH_EXPIRED");
  const refreshed = next(c, "tokenRefreshed");
  await c.connect();
  await sub.ready;
  await c.publish(ch, "before");
  await expired;
  await refreshed;
  assert.equal(calls, 2, "asked once to connect and once on AUTH_EXPIRED");
  await c.publish(ch, "after");
  await got.until(2);
  assert.deepEqual(got.received.map((p) => p.data), ["before", "after"]);
  assert.ok(!seen.some((s) => s.status === "reconnecting"), "the same connection carried on");
});

test("WebSocket blocked on the way: the SSE fallback delivers and keeps recovery through Last-Event-ID", async () => {
  const px = await proxy();
  const c = client({ url: px.url });
  const ch = channel("fallback");
  const sub = c.subscribe(ch);
  const got = collect(sub);
  await c.connect();
  await sub.ready;
  assert.equal(c.state.transport, "websocket");
  await publishMany(ch, 3, "ws");
  await got.until(3);

  // A proxy that starts refusing upgrades and drops the open connection; the next
  // connection must go over SSE and resume from the position the WebSocket subscription
  // reached. It is restored at once, in the same turn: every reconnect attempt reaches
  // the proxy and is counted, however long the publications below take.
  px.state.blockUpgrades = true;
  const sse = next(c, "state", (s) => s.status === "connected" && s.transport === "sse");
  px.cut();
  px.restore();
  await publishMany(ch, 4, "while-cut");
  await sse;
  assert.ok(px.state.refusedUpgrades >= 2, "WebSocket was tried first, twice");
  await publishMany(ch, 3, "sse");
  await got.until(10);
  assert.deepEqual(got.received.map((p) => p.offset), range(1, 10), "no gap, no duplicate across the switch");
  await assert.rejects(c.publish(ch, 1), (e) => e.code === "NOT_AVAILABLE_OVER_SSE");

  // The SSE stream cut too: it resumes from its Last-Event-ID.
  px.cut();
  await publishMany(ch, 5, "sse-cut");
  px.restore();
  await got.until(15);
  // A second subscription on the fallback reopens the stream with both channels.
  const ch2 = channel("fallback-2");
  const sub2 = c.subscribe(ch2);
  const got2 = collect(sub2);
  await sub2.ready;
  await api("publish", { channel: ch2, data: "second" });
  await publishMany(ch, 1, "sse-more");
  await got2.until(1);
  await got.until(16);
  assert.deepEqual(got.received.map((p) => p.offset), range(1, 16));
  assert.equal(got2.received[0].data, "second");
  assert.equal(c.state.transport, "sse");
});

test("the offline queue flushes in order on reconnect, and says when it is full", async () => {
  const px = await proxy();
  const c = client({ url: px.url, queueLimit: 10 });
  const ch = channel("queue");
  const listener = client({ user: "dave" });
  const sub = listener.subscribe(ch);
  const got = collect(sub);
  await Promise.all([c.connect(), listener.connect()]);
  await sub.ready;

  const reconnecting = next(c, "state", (s) => s.status === "reconnecting");
  px.cut();
  await reconnecting;
  const sent = range(0, 9).map((i) => c.publish(ch, { i }));
  await assert.rejects(c.publish(ch, "overflow"), (e) => e.code === "QUEUE_FULL");
  px.restore();
  const answers = await Promise.all(sent);
  assert.deepEqual(answers.map((a) => a.offset), range(1, 10), "published in the order they were made");
  await got.until(10);
  assert.deepEqual(got.received.map((p) => p.data.i), range(0, 9));
});

test("close codes: 1008 (disconnected by the server) is final, 1013 reconnects and recovers", async () => {
  const c = client({ user: "erin" });
  const ch = channel("codes");
  const sub = c.subscribe(ch);
  const got = collect(sub);
  await c.connect();
  await sub.ready;

  const back = next(sub, "recovered");
  const retry = next(c, "state", (s) => s.status === "reconnecting");
  await api("disconnect", { user: "erin", reconnect: true });
  assert.equal((await retry).reason.code, 1013);
  await back;
  await api("publish", { channel: ch, data: "after 1013" });
  await got.until(1);

  const gone = next(c, "state", (s) => s.status === "disconnected");
  await api("disconnect", { user: "erin" });
  assert.equal((await gone).reason.code, 1008);
  // No blind reconnect: still disconnected after longer than the largest backoff delay
  // (400 ms here). This waits for the absence of an event, so it cannot be awaited.
  await new Promise((resolve) => setTimeout(resolve, 1000));
  assert.equal(c.state.status, "disconnected");
});

test("a getToken() that fails is retried with backoff, and its reason is shown", async () => {
  let calls = 0;
  const c = client({
    token: undefined,
    getToken: async () => {
      if (++calls === 1) throw new Error("token service unavailable");
      return token("frank");
    },
  });
  const retrying = next(c, "state", (s) => s.status === "reconnecting");
  await c.connect();
  const state = await retrying;
  assert.match(state.reason.reason, /getToken\(\) failed: token service unavailable/);
  assert.equal(c.state.transport, "websocket", "not a reason to fall back to SSE");
  assert.equal(calls, 2);
  await c.ping();
});
