/**
 * `FerryClient`: the hub protocol (`ferry.json`, docs/PROTOCOL.md) over one reconnecting
 * connection shared by every subscription, with the semantics of the Rust `HubClient`:
 * token or `getToken()` (asked before every attempt and on `AUTH_EXPIRED`), observable
 * state, full-jitter backoff that honours close codes, heartbeat, recovery by (offset,
 * epoch) with dedupe by offset, request/response with timeouts, a bounded offline queue,
 * and an SSE fallback when WebSocket upgrades are refused.
 */
import { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { FerryError } from "./errors.js";
import type { RecoveryOutput, SubscribeReply } from "./recovery.js";
import { openSse } from "./sse.js";
import { Subscription } from "./subscription.js";
import type {
  CloseReason,
  ConnectionState,
  HistoryOptions,
  HistoryPage,
  Position,
  PresenceInfo,
  Publication,
  Published,
  Transport,
} from "./types.js";

/** The subprotocol spoken on `/ws`. */
export const PROTOCOL = "ferry.json";

/** The part of the WebSocket API the client uses (browsers, Node 22+, or the `ws` package). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** Options of a {@link FerryClient}. Every field is optional. */
export interface ClientOptions {
  /**
   * The hub: `http(s)://host:port` (or `ws(s)://host:port/ws`, or with a path prefix).
   * Default in a browser: the page's origin.
   */
  url?: string;
  /** A fixed token (JWT). */
  token?: string;
  /**
   * Asked for a token before every connection attempt and when the hub reports
   * `AUTH_EXPIRED` (the fresh token is sent with `auth`, without reconnecting). Return
   * `null` to connect anonymously.
   */
  getToken?: () => string | null | undefined | Promise<string | null | undefined>;
  /** WebSocket implementation. Default `globalThis.WebSocket`; on Node 20 pass `ws`'s. */
  WebSocket?: WebSocketConstructor;
  /** `fetch` for the SSE fallback. Default `globalThis.fetch`. */
  fetch?: typeof fetch;
  /**
   * Fall back to SSE (receive only) when WebSocket connections fail while the hub answers
   * HTTP (a proxy that blocks upgrades). Default true.
   */
  sseFallback?: boolean;
  /** WebSocket attempts in a row that failed while the hub answered HTTP, before the fallback. Default 2. */
  sseFallbackAfter?: number;
  /** An SSE stream silent (no event, no keep-alive) this long is dead, ms. Default 45 000. */
  sseIdleTimeout?: number;
  /** Reconnect delays. */
  backoff?: Partial<BackoffOptions>;
  /**
   * Ping after `interval` ms without any frame; the connection is dead if nothing arrives
   * within `timeout` ms after. Default 25 000 / 10 000; `false` disables it.
   */
  heartbeat?: { interval: number; timeout: number } | false;
  /** A WebSocket handshake not done within this many ms is a failed attempt. Default 10 000. */
  connectTimeout?: number;
  /** Timeout of each command once sent, ms. Default 10 000. */
  requestTimeout?: number;
  /** Commands held while not connected, flushed in order on connect. Default 100. */
  queueLimit?: number;
  /** Also reconnect after close 1000 or 1008 (auth, abuse, kicked). Default false. */
  reconnectOnPolicyClose?: boolean;
}

/** What a client emits. */
export interface ClientEvents {
  /** Every state change. */
  state: ConnectionState;
  /** The hub accepted the connection's credentials (`user` is `""` for anonymous). */
  authSuccess: { user: string; client: string };
  /** A message to this connection or user from `POST /api/send`. */
  direct: unknown;
  /** An error not tied to a command: `AUTH_EXPIRED`, a refused token, a failed refresh. */
  error: FerryError;
  /** After `AUTH_EXPIRED`, a fresh token from `getToken()` was accepted on the same connection. */
  tokenRefreshed: undefined;
}

interface Command {
  type: string;
  payload: object;
  resolve(payload: any): void;
  reject(error: FerryError): void;
}

interface Pending {
  resolve(payload: any): void;
  reject(error: FerryError): void;
  timer: ReturnType<typeof setTimeout>;
}

const errorFrom = (payload: any): FerryError =>
  new FerryError(String(payload?.code ?? "INTERNAL_ERROR"), String(payload?.message ?? ""), payload?.details);

/** The hub's HTTP base URL for `url` (default: the page's origin), without `/ws` or `/sse`. */
export function hubUrl(url?: string): string {
  const location = (globalThis as { location?: { origin: string } }).location;
  const raw = url ?? location?.origin;
  if (!raw) throw new FerryError("INVALID_URL", "pass options.url (e.g. http://127.0.0.1:8080)");
  const u = new URL(raw, location?.origin);
  const scheme = u.protocol.replace(/^ws/, "http");
  return `${scheme}//${u.host}${u.pathname.replace(/\/+$/, "").replace(/\/(ws|sse)$/, "")}`;
}

/** A connection to a ferry hub, shared by all its subscriptions. */
export class FerryClient extends Emitter<ClientEvents> {
  /** The current state. */
  state: ConnectionState = { status: "disconnected" };
  /** The hub's HTTP base URL, e.g. `http://127.0.0.1:8080`. */
  readonly url: string;
  private readonly o: Required<Omit<ClientOptions, "url" | "token" | "getToken" | "backoff" | "heartbeat">> & {
    backoff: BackoffOptions;
    heartbeat: { interval: number; timeout: number } | false;
  };
  private transport: Transport = "websocket";
  /** Connection attempt number: callbacks of older attempts are ignored. */
  private conn = 0;
  private ws?: WebSocketLike;
  private stopSse?: () => void;
  private sseToken?: string;
  private attempt = 0;
  private wsFailures = 0;
  private openedAt = 0;
  private lastSeen = 0;
  private timer?: ReturnType<typeof setTimeout>;
  private beatTimer?: ReturnType<typeof setTimeout>;
  private nextId = 0;
  private readonly pending = new Map<string, Pending>();
  private queue: Command[] = [];
  private readonly subs = new Map<string, Subscription>();
  private opening?: { promise: Promise<void>; resolve(): void; reject(e: FerryError): void };

  constructor(private readonly options: ClientOptions = {}) {
    super();
    this.url = hubUrl(options.url);
    const WebSocketImpl = options.WebSocket ?? (globalThis as any).WebSocket;
    if (!WebSocketImpl) {
      throw new FerryError("TRANSPORT", "no WebSocket here: pass options.WebSocket (e.g. `ws` on Node 20)");
    }
    this.o = {
      WebSocket: WebSocketImpl,
      fetch: options.fetch ?? ((input, init) => globalThis.fetch(input, init)),
      sseFallback: options.sseFallback ?? true,
      sseFallbackAfter: options.sseFallbackAfter ?? 2,
      sseIdleTimeout: options.sseIdleTimeout ?? 45_000,
      backoff: { ...DEFAULT_BACKOFF, ...options.backoff },
      heartbeat: options.heartbeat ?? { interval: 25_000, timeout: 10_000 },
      connectTimeout: options.connectTimeout ?? 10_000,
      requestTimeout: options.requestTimeout ?? 10_000,
      queueLimit: options.queueLimit ?? 100,
      reconnectOnPolicyClose: options.reconnectOnPolicyClose ?? false,
    };
    // A browser that comes back online reconnects at once instead of after the backoff.
    (globalThis as { addEventListener?: (type: string, fn: () => void) => void }).addEventListener?.(
      "online",
      () => this.reconnectNow(),
    );
  }

  /** While waiting to reconnect, try now instead of after the backoff delay. */
  reconnectNow(): void {
    if (this.state.status !== "reconnecting") return;
    clearTimeout(this.timer);
    void this.open();
  }

  /** The transport in use (or being tried). */
  get currentTransport(): Transport {
    return this.transport;
  }

  /**
   * Start connecting (and keep reconnecting); resolves once connected, rejects if the
   * client ends up disconnected first (a policy close, too many attempts, `close()`).
   */
  connect(): Promise<void> {
    if (this.state.status === "connected") return Promise.resolve();
    if (!this.opening) {
      let resolve!: () => void;
      let reject!: (e: FerryError) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      promise.catch(() => {});
      this.opening = { promise, resolve, reject };
      if (this.state.status === "disconnected") {
        this.attempt = 0;
        this.wsFailures = 0;
        this.transport = "websocket";
        void this.open();
      }
    }
    return this.opening.promise;
  }

  /**
   * Close the connection (1000) and stop reconnecting. Queued and in-flight commands fail
   * with `DISCONNECTED`; subscriptions stay registered and resume, with recovery, on the
   * next `connect()` (unsubscribe them to end them).
   */
  close(): void {
    this.end({ code: 1000, reason: "closed by the client" });
  }

  /**
   * Subscribe to `channel`. Listen on the returned subscription before the next turn of
   * the event loop; `since`: recover every publication after this position first (e.g.
   * one saved before a page reload). Throws `ALREADY_SUBSCRIBED` if this client already is.
   */
  subscribe(channel: string, options: { since?: Position } = {}): Subscription {
    if (this.subs.has(channel)) {
      throw new FerryError("ALREADY_SUBSCRIBED", `this client is already subscribed to \`${channel}\``);
    }
    const sub = new Subscription(channel, options.since, (s) => this.leave(s));
    this.subs.set(channel, sub);
    if (this.state.status === "connected") {
      if (this.transport === "sse") this.startSse(this.conn);
      else this.sendSubscribe(sub);
    }
    return sub;
  }

  /** The subscription to `channel`, if any. */
  getSubscription(channel: string): Subscription | undefined {
    return this.subs.get(channel);
  }

  /** Publish `data` (any JSON value) to `channel`. Queued while disconnected. */
  publish(channel: string, data: unknown, options: { skipSelf?: boolean } = {}): Promise<Published> {
    return this.call("publish", { channel, data, skip_self: options.skipSelf ?? false });
  }

  /** Read a channel's history. */
  history<T = unknown>(channel: string, options: HistoryOptions = {}): Promise<HistoryPage<T>> {
    return this.call("history", { channel, ...options });
  }

  /** Who is subscribed to `channel`. */
  presence(channel: string): Promise<PresenceInfo> {
    return this.call("presence", { channel });
  }

  /** A round trip to the hub. */
  ping(): Promise<void> {
    return this.call("ping", {}).then(() => undefined);
  }

  /**
   * Send any command and resolve with its `reply` payload (reject with its `error`).
   * While connecting or reconnecting the command waits in the offline queue (at most
   * `queueLimit`, else `QUEUE_FULL`); once sent it must be answered within
   * `requestTimeout` (else `TIMEOUT`). `CONNECTION_LOST`: the connection dropped after it
   * was sent, so it may or may not have been carried out.
   */
  call<T = any>(type: string, payload: object): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const command: Command = { type, payload, resolve, reject };
      const status = this.state.status;
      if (status === "connected") {
        if (this.transport === "sse") reject(this.sseOnly(type));
        else this.sendNow(command);
      } else if (status === "disconnected") {
        reject(new FerryError("DISCONNECTED", `cannot send \`${type}\`: the client is disconnected; call connect()`));
      } else if (this.queue.length >= this.o.queueLimit) {
        reject(new FerryError("QUEUE_FULL", `the offline queue already holds ${this.o.queueLimit} commands`));
      } else {
        this.queue.push(command);
      }
    });
  }

  private sseOnly(type: string): FerryError {
    return new FerryError(
      "NOT_AVAILABLE_OVER_SSE",
      `\`${type}\` needs a WebSocket; this client fell back to SSE, which only receives publications`,
    );
  }

  private setState(state: ConnectionState): void {
    this.state = state;
    this.emit("state", state);
  }

  private async open(): Promise<void> {
    const conn = ++this.conn;
    this.setState({ status: "connecting", transport: this.transport });
    let token: string | undefined;
    try {
      token = this.options.getToken ? ((await this.options.getToken()) ?? undefined) : this.options.token;
    } catch (error) {
      // Not the transport's fault: retry later, without counting it toward the SSE fallback.
      if (conn === this.conn) {
        void this.retry(conn, { code: 1006, reason: `getToken() failed: ${(error as Error)?.message ?? error}` }, false);
      }
      return;
    }
    if (conn !== this.conn) return;
    if (this.transport === "sse") {
      this.sseToken = token;
      this.startSse(conn);
      return;
    }
    const url = `${this.url.replace(/^http/, "ws")}/ws${token ? `?token=${encodeURIComponent(token)}` : ""}`;
    let ws: WebSocketLike;
    try {
      ws = new this.o.WebSocket(url, PROTOCOL);
    } catch (error) {
      this.lost(conn, { code: 1006, reason: String((error as Error)?.message ?? error) }, false);
      return;
    }
    this.ws = ws;
    let opened = false;
    // A handshake that never completes (a black-holed network) counts as a failed attempt.
    this.timer = setTimeout(
      () => this.lost(conn, { code: 1006, reason: `not connected within ${this.o.connectTimeout} ms` }, false),
      this.o.connectTimeout,
    );
    ws.onopen = () => {
      opened = true;
      clearTimeout(this.timer);
      if (conn === this.conn) this.opened(conn);
    };
    ws.onmessage = (event) => {
      if (conn === this.conn && typeof event.data === "string") this.onFrame(event.data);
    };
    ws.onclose = (event) => {
      if (conn === this.conn) this.lost(conn, { code: event.code || 1006, reason: event.reason || "" }, opened);
    };
    ws.onerror = () => {};
  }

  /** The connection (or, over SSE, the client) is up: resubscribe, flush, then say so. */
  private opened(conn: number): void {
    this.openedAt = this.lastSeen = Date.now();
    if (this.transport === "websocket") this.wsFailures = 0;
    // The state changes before anything is sent, but is announced after the resubscribes
    // and the queue went out, so a listener's own command cannot overtake the queue.
    this.state = { status: "connected", transport: this.transport };
    const queue = this.queue;
    this.queue = [];
    if (this.transport === "websocket") {
      for (const sub of this.subs.values()) this.sendSubscribe(sub);
      for (const command of queue) this.sendNow(command);
      this.beat(conn);
    } else {
      for (const command of queue) command.reject(this.sseOnly(command.type));
    }
    this.emit("state", this.state);
    this.opening?.resolve();
    this.opening = undefined;
  }

  /** Drop the current transport without reporting it. */
  private teardown(): void {
    clearTimeout(this.beatTimer);
    clearTimeout(this.timer);
    this.stopSse?.();
    this.stopSse = undefined;
    const ws = this.ws;
    this.ws = undefined;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.onerror = () => {};
      try {
        ws.close();
      } catch {
        // Already closed.
      }
    }
  }

  private failPending(code: string, message: string): void {
    for (const [id, pending] of this.pending) {
      clearTimeout(pending.timer);
      this.pending.delete(id);
      pending.reject(new FerryError(code, message));
    }
  }

  /** The connection or attempt `conn` ended. */
  private lost(conn: number, reason: CloseReason, wasOpen: boolean, final = false): void {
    if (conn !== this.conn) return;
    this.teardown();
    this.failPending("CONNECTION_LOST", `the connection was lost (${reason.code} ${reason.reason})`.trim());
    const policy = reason.code === 1000 || reason.code === 1008;
    if (final || (wasOpen && policy && !this.o.reconnectOnPolicyClose)) {
      this.end(reason);
      return;
    }
    if (this.transport === "sse") {
      // Try WebSocket again first: the block may have been a passing one.
      this.transport = "websocket";
      this.wsFailures = this.o.sseFallbackAfter - 1;
      void this.retry(conn, reason, false);
      return;
    }
    void this.retry(conn, reason, !wasOpen && this.o.sseFallback);
  }

  /**
   * Schedule the next attempt. `probe`: a WebSocket attempt failed; if the hub answers
   * plain HTTP meanwhile, the upgrade is being blocked on the way, and after
   * `sseFallbackAfter` such failures in a row the next attempt uses SSE. A failure while
   * the hub is unreachable (down, restarting) resets the count: that is no reason to
   * fall back.
   */
  private async retry(conn: number, reason: CloseReason, probe: boolean): Promise<void> {
    if (probe) {
      const blocked = await this.reachable();
      if (conn !== this.conn) return;
      this.wsFailures = blocked ? this.wsFailures + 1 : 0;
      if (this.wsFailures >= this.o.sseFallbackAfter) this.transport = "sse";
    }
    if (conn !== this.conn) return;
    const b = this.o.backoff;
    if (this.openedAt && Date.now() - this.openedAt >= b.stableAfter) this.attempt = 0;
    this.openedAt = 0;
    if (++this.attempt > b.maxAttempts) {
      this.end({ code: reason.code, reason: `gave up after ${b.maxAttempts} attempts: ${reason.reason}` });
      return;
    }
    const delay = backoffDelay(b, this.attempt, Math.random());
    this.setState({ status: "reconnecting", attempt: this.attempt, delay, reason });
    if (conn !== this.conn) return; // a state listener closed the client
    this.timer = setTimeout(() => void this.open(), delay);
  }

  /** Whether the hub answers HTTP (then a failing WebSocket is being blocked on the way). */
  private async reachable(): Promise<boolean> {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), this.o.connectTimeout);
    try {
      // no-cors: any answer at all will do, and a cross-origin page cannot read one otherwise.
      const browser = typeof document !== "undefined";
      await this.o.fetch(`${this.url}/health`, {
        signal: abort.signal,
        ...(browser ? { mode: "no-cors", cache: "no-store" } : {}),
      });
      return true;
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Disconnected for good (until `connect()`). */
  private end(reason: CloseReason): void {
    this.conn++;
    this.teardown();
    this.failPending("DISCONNECTED", `the client disconnected (${reason.code} ${reason.reason})`);
    const queue = this.queue;
    this.queue = [];
    const error = new FerryError("DISCONNECTED", `the client disconnected (${reason.code} ${reason.reason})`);
    for (const command of queue) command.reject(error);
    for (const sub of this.subs.values()) {
      sub.sentOn = 0;
      // Whoever awaits `ready` learns now; the subscription stays for the next connect().
      sub.settle?.(error);
    }
    const opening = this.opening;
    this.opening = undefined;
    if (this.state.status !== "disconnected") this.setState({ status: "disconnected", reason });
    opening?.reject(error);
  }

  private beat(conn: number): void {
    const hb = this.o.heartbeat;
    if (!hb) return;
    clearTimeout(this.beatTimer);
    this.beatTimer = setTimeout(() => {
      if (conn !== this.conn) return;
      if (Date.now() - this.lastSeen < hb.interval) {
        this.beat(conn);
        return;
      }
      const pinged = Date.now();
      this.ws?.send(JSON.stringify({ type: "ping" }));
      this.beatTimer = setTimeout(() => {
        if (conn !== this.conn) return;
        if (this.lastSeen >= pinged) this.beat(conn);
        else this.lost(conn, { code: 1006, reason: `no answer to a ping within ${hb.timeout} ms` }, true);
      }, hb.timeout);
    }, hb.interval - (Date.now() - this.lastSeen));
  }

  private sendNow(command: Command): void {
    const id = String(++this.nextId);
    const timer = setTimeout(() => {
      if (this.pending.delete(id)) {
        command.reject(new FerryError("TIMEOUT", `no answer to \`${command.type}\` within ${this.o.requestTimeout} ms`));
      }
    }, this.o.requestTimeout);
    this.pending.set(id, { resolve: command.resolve, reject: command.reject, timer });
    this.ws?.send(JSON.stringify({ type: command.type, id, payload: command.payload }));
  }

  private onFrame(text: string): void {
    this.lastSeen = Date.now();
    let frame: any;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (!frame || typeof frame !== "object") return;
    const payload = frame.payload ?? {};
    if (frame.id !== undefined && frame.id !== null) {
      const pending = this.pending.get(String(frame.id));
      if (!pending) return; // answered after its timeout
      this.pending.delete(String(frame.id));
      clearTimeout(pending.timer);
      if (frame.type === "reply") pending.resolve(payload);
      else if (frame.type === "error") pending.reject(errorFrom(payload));
      else pending.reject(new FerryError("INVALID_MESSAGE", `expected a reply, got \`${frame.type}\``));
      return;
    }
    const sub = typeof payload.channel === "string" ? this.subs.get(payload.channel) : undefined;
    switch (frame.type) {
      case "message":
        if (sub && typeof payload.offset === "number" && typeof payload.epoch === "string") {
          const out: RecoveryOutput[] = [];
          sub.recovery.onPublication(payload as Publication, out);
          sub.output(out);
        }
        break;
      case "join":
      case "leave":
        if (sub && payload.info) sub.fire(frame.type, payload.info);
        break;
      case "auth_success":
        if (this.state.status === "connected") {
          this.setState({ ...this.state, user: payload.user, client: payload.client });
        }
        this.emit("authSuccess", { user: String(payload.user ?? ""), client: String(payload.client ?? "") });
        break;
      case "auth_error":
      case "error": {
        const error = errorFrom(payload);
        if (error.code === "AUTH_EXPIRED") void this.refreshToken();
        this.emit("error", error);
        break;
      }
      case "direct":
        this.emit("direct", payload.data);
        break;
      case "unsubscribe":
        // The hub ended a subscription (e.g. a refreshed token no longer allows it).
        if (sub) {
          const error = new FerryError(String(payload.code ?? "PERMISSION_DENIED"), String(payload.reason ?? ""));
          this.subs.delete(sub.channel);
          sub.generation++;
          sub.settle?.(error);
          sub.fire("error", error);
          sub.fire("unsubscribed", error);
        }
        break;
    }
  }

  /** The token expired on an open connection: send a fresh one from `getToken()`. */
  private async refreshToken(): Promise<void> {
    const getToken = this.options.getToken;
    if (!getToken) return;
    const conn = this.conn;
    try {
      const token = await getToken();
      if (!token || conn !== this.conn) return;
      await this.call("auth", { token });
      this.emit("tokenRefreshed", undefined);
    } catch (error) {
      this.emit("error", error instanceof FerryError ? error : new FerryError("AUTH_FAILED", String(error)));
    }
  }

  /** Send a subscribe for `sub` on the current WebSocket connection, unless it went out on it. */
  private sendSubscribe(sub: Subscription): void {
    if (sub.sentOn === this.conn) return;
    sub.sentOn = this.conn;
    const generation = ++sub.generation;
    sub.recovery.begin();
    const position = sub.recovery.position;
    const payload = position
      ? { channel: sub.channel, recover: true, offset: position.offset, epoch: position.epoch }
      : { channel: sub.channel };
    const current = () => this.subs.get(sub.channel) === sub && sub.generation === generation;
    this.call<SubscribeReply>("subscribe", payload).then(
      (reply) => {
        if (!current()) return;
        const out: RecoveryOutput[] = [];
        sub.recovery.onReply(reply, !!position, out);
        sub.settle?.();
        sub.output(out);
      },
      (error: FerryError) => {
        if (!current()) return;
        if (error.code === "CONNECTION_LOST" || error.code === "DISCONNECTED") {
          // The next connection resubscribes from the same position; what was held back
          // comes again in its reply (releasing it now could skip over a gap).
          sub.sentOn = 0;
          return;
        }
        const out: RecoveryOutput[] = [];
        sub.recovery.abort(out);
        sub.output(out);
        if (sub.settle) {
          this.subs.delete(sub.channel);
          sub.settle(error);
          sub.fire("error", error);
          sub.fire("unsubscribed", error);
        } else {
          sub.fire("error", error);
        }
      },
    );
  }

  private async leave(sub: Subscription): Promise<void> {
    if (this.subs.get(sub.channel) !== sub) return;
    this.subs.delete(sub.channel);
    sub.generation++;
    sub.settle?.(new FerryError("UNSUBSCRIBED", `unsubscribed from \`${sub.channel}\` before it was ready`));
    sub.fire("unsubscribed", undefined);
    if (this.state.status !== "connected") return;
    if (this.transport === "sse") {
      this.startSse(this.conn);
    } else if (sub.sentOn === this.conn) {
      await this.call("unsubscribe", { channel: sub.channel });
    }
  }

  /** (Re)open the SSE stream for the current subscriptions, resuming from their positions. */
  private startSse(conn: number): void {
    this.stopSse?.();
    this.stopSse = undefined;
    const subs = [...this.subs.values()];
    const connected = this.state.status === "connected";
    if (!subs.length) {
      // Nothing to stream: "connected" with no stream until something is subscribed.
      if (!connected) this.opened(conn);
      return;
    }
    const query = new URLSearchParams();
    for (const sub of subs) query.append("channel", sub.channel);
    if (this.sseToken) query.set("token", this.sseToken);
    const lastEventId = subs
      .map((s) => (s.recovery.position ? `${s.recovery.position.epoch}:${s.recovery.position.offset}` : ""))
      .join(";");
    let open = connected;
    this.stopSse = openSse(this.o.fetch, `${this.url}/sse?${query}`, lastEventId, this.o.sseIdleTimeout, {
      open: () => {
        if (conn !== this.conn) return;
        for (const sub of subs) {
          if (sub.settle) {
            sub.settle();
            sub.fire("subscribed", sub.recovery.position);
          }
        }
        if (!open) {
          open = true;
          this.opened(conn);
        }
      },
      event: (event) => {
        if (conn !== this.conn || event.event !== "message") return;
        let publication: Publication;
        try {
          publication = JSON.parse(event.data);
        } catch {
          return;
        }
        const sub = this.subs.get(publication?.channel);
        if (sub && typeof publication.offset === "number") {
          const out: RecoveryOutput[] = [];
          sub.recovery.deliver(publication, out);
          sub.output(out);
        }
        // The id holds the stream's position in every channel (query order): it gives a
        // position to subscriptions that had none, so a later reconnect can recover them.
        event.id.split(";").forEach((part, i) => {
          const s = subs[i];
          const colon = part.lastIndexOf(":");
          if (s && !s.recovery.position && colon > 0 && this.subs.get(s.channel) === s) {
            s.recovery.position = { epoch: part.slice(0, colon), offset: Number(part.slice(colon + 1)) };
          }
        });
      },
      closed: (reason, status, body) => {
        if (conn !== this.conn) return;
        // A 4xx answer (auth, permission, unknown channel) will not change by retrying.
        const final = !!status && status >= 400 && status < 500 && status !== 408 && status !== 429;
        let message = reason;
        try {
          message = body ? JSON.parse(body).message ?? body : reason;
        } catch {
          message = body || reason;
        }
        this.lost(conn, { code: final ? 1008 : 1006, reason: message }, open, final);
      },
    });
  }
}
