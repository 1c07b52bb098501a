// The browser side of the ferry browser test: the browser's own WebSocket and EventSource,
// no client library. Both subscribe to `?channel=` with the JWT from `?token=` and record
// every publication they receive. run.mjs drives it through `window.ferryTest`:
//   await ferryTest.ready                      -> both subscriptions are live
//   await ferryTest.publication(offset, epoch) -> what each transport received at that offset

const params = new URLSearchParams(location.search);
const channel = params.get("channel");
const token = params.get("token");
const logElement = document.getElementById("log");

const log = [];
function note(source, what, detail) {
  const entry = { source, what, detail, at: performance.now() };
  log.push(entry);
  logElement.textContent += `${source} ${what} ${detail === undefined ? "" : JSON.stringify(detail)}\n`;
}

// Received publications per transport, plus waiters woken on every arrival: no polling.
const received = { ws: [], sse: [] };
const waiters = [];
function record(source, publication) {
  received[source].push(publication);
  for (const wake of waiters.splice(0)) wake();
}
function waitFor(source, predicate) {
  return new Promise((resolve) => {
    const check = () => {
      const found = received[source].find(predicate);
      if (found) resolve(found);
      else waiters.push(check);
    };
    check();
  });
}

function openWebSocket() {
  return new Promise((resolve, reject) => {
    const wsUrl = new URL("/ws", location.href);
    wsUrl.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    wsUrl.searchParams.set("token", token);
    const ws = new WebSocket(wsUrl, "ferry.json");
    let authSuccess = null;
    let subscribed = false;
    ws.addEventListener("open", () => {
      note("ws", "open", { protocol: ws.protocol });
      ws.send(JSON.stringify({ type: "subscribe", id: "1", payload: { channel } }));
    });
    ws.addEventListener("message", (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (e) {
        note("ws", "unparsable frame", String(event.data).slice(0, 200));
        return;
      }
      if (frame.type === "auth_success") {
        authSuccess = frame.payload;
        note("ws", "auth_success", frame.payload);
      } else if (frame.type === "reply" && frame.id === "1") {
        subscribed = true;
        note("ws", "subscribed", frame.payload);
        resolve({ protocol: ws.protocol, authSuccess, subscribeReply: frame.payload });
      } else if (frame.type === "error") {
        note("ws", "error", frame);
        if (!subscribed) reject(new Error(`WebSocket subscribe failed: ${JSON.stringify(frame)}`));
      } else if (frame.type === "message") {
        note("ws", "message", frame.payload);
        record("ws", frame.payload);
      } else {
        note("ws", frame.type, frame.payload);
      }
    });
    ws.addEventListener("close", (event) => {
      note("ws", "close", { code: event.code, reason: event.reason });
      if (!subscribed) {
        reject(new Error(`WebSocket closed before the subscribe reply: ${event.code} ${event.reason}`));
      }
    });
  });
}

function openEventSource() {
  return new Promise((resolve, reject) => {
    const sseUrl = new URL("/sse", location.href);
    sseUrl.searchParams.set("channel", channel);
    sseUrl.searchParams.set("token", token);
    const source = new EventSource(sseUrl);
    source.addEventListener("open", () => {
      note("sse", "open");
      resolve({ readyState: source.readyState });
    });
    source.addEventListener("message", (event) => {
      const publication = JSON.parse(event.data);
      note("sse", "message", { lastEventId: event.lastEventId, publication });
      record("sse", { ...publication, lastEventId: event.lastEventId });
    });
    source.addEventListener("error", () => {
      note("sse", "error", { readyState: source.readyState });
      // CLOSED means the browser gave up (e.g. 401/403): it will not reconnect by itself.
      if (source.readyState === EventSource.CLOSED) {
        reject(new Error("EventSource failed (the server refused the stream)"));
      }
    });
  });
}

const matches = (offset, epoch) => (p) => p.offset === offset && p.epoch === epoch && p.channel === channel;

window.ferryTest = {
  channel,
  log,
  received,
  ready: Promise.all([openWebSocket(), openEventSource()]).then(([ws, sse]) => ({ ws, sse })),
  async publication(offset, epoch) {
    const [ws, sse] = await Promise.all([
      waitFor("ws", matches(offset, epoch)),
      waitFor("sse", matches(offset, epoch)),
    ]);
    return { ws, sse };
  },
};
