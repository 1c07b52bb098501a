/**
 * One hub connection shared by every tab of an origin: `sharedClient(options)`.
 *
 * The tab holding the Web Lock `ferry:URL` is the leader: it runs the real connection (a
 * plain {@link FerryClient}, the "host"). Every tab, the leader's included, gets a
 * FerryClient whose "WebSocket" is a {@link TabSocket} speaking the same `ferry.json`
 * frames over a BroadcastChannel to the host. So reconnect, recovery, dedupe, the offline
 * queue and timeouts are the same code as for a direct connection. The host holds one hub
 * subscription per channel for all tabs; a tab's subscribe is answered from the host's
 * subscription (with the missed publications read from history when the tab asks for
 * recovery), and live publications are forwarded to the tabs subscribed to the channel.
 *
 * When the leader tab goes away, the browser releases its lock, the next tab in line
 * becomes the host and says so; every tab's socket then closes (1006), and the tab's
 * client reconnects to the new host and recovers from its own last positions: no gap,
 * no duplicate. Where Web Locks or BroadcastChannel are missing, `sharedClient` returns
 * an ordinary client.
 */
import { FerryClient, hubUrl, type ClientOptions, type WebSocketConstructor, type WebSocketLike } from "./client.js";
import type { FerryError } from "./errors.js";
import type { Subscription } from "./subscription.js";
import type { Publication } from "./types.js";

type Message =
  | { t: "leader"; leader: string }
  | { t: "open"; sock: string }
  | { t: "opened"; sock: string; leader: string }
  | { t: "close"; sock: string }
  | { t: "up"; sock: string; frame: string }
  | { t: "down"; sock: string; frame: string };

const random = () => Math.random().toString(36).slice(2, 10);

/**
 * A client whose connection is shared with the other tabs of this origin that use the
 * same hub URL (see the module comment). Same API as {@link FerryClient}.
 */
export function sharedClient(options: ClientOptions = {}): FerryClient {
  const g = globalThis as any;
  const locks = g.navigator?.locks;
  if (!locks || typeof g.BroadcastChannel !== "function") return new FerryClient(options);
  const name = `ferry:${hubUrl(options.url)}`;
  const link = new TabLink(name);
  locks.request(name, () => {
    const host = new Host(name, options);
    link.leader = host.id;
    host.announce();
    return new Promise(() => {}); // held for the life of the tab
  });
  const Socket = function (this: unknown, url: string) {
    return new TabSocket(link, url);
  } as unknown as WebSocketConstructor;
  // The host authenticates (and refreshes tokens); a tab's client needs no token of its own.
  return new FerryClient({ ...options, token: undefined, getToken: undefined, WebSocket: Socket, sseFallback: false });
}

/** A tab's end of the BroadcastChannel, shared by its sockets. */
class TabLink {
  readonly channel: BroadcastChannel;
  leader?: string;
  readonly sockets = new Map<string, TabSocket>();

  constructor(name: string) {
    this.channel = new BroadcastChannel(name);
    this.channel.onmessage = (event) => {
      const m = event.data as Message;
      if (m.t === "leader") {
        this.leader = m.leader;
        for (const s of this.sockets.values()) s.leaderChanged(m.leader);
      } else if (m.t === "opened" || m.t === "down" || m.t === "close") {
        this.sockets.get(m.sock)?.receive(m);
      }
    };
  }

  post(m: Message): void {
    this.channel.postMessage(m);
  }
}

/** The WebSocket a tab's client uses: ferry.json frames to and from the host. */
export class TabSocket implements WebSocketLike {
  readyState = 0;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  private readonly id = random();
  private host?: string;

  constructor(
    private readonly link: TabLink,
    _url: string,
  ) {
    link.sockets.set(this.id, this);
    link.post({ t: "open", sock: this.id });
  }

  /** @internal */
  receive(m: Message): void {
    if (m.t === "opened" && this.readyState === 0) {
      this.readyState = 1;
      this.host = m.leader;
      this.onopen?.({});
    } else if (m.t === "down" && this.readyState === 1) {
      this.onmessage?.({ data: m.frame });
    } else if (m.t === "close") {
      this.ended("the sharing tab closed the connection");
    }
  }

  /** @internal */
  leaderChanged(leader: string): void {
    if (this.readyState === 0) this.link.post({ t: "open", sock: this.id });
    else if (this.host !== leader) this.ended("the tab holding the connection went away");
  }

  private ended(reason: string): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.link.sockets.delete(this.id);
    this.onclose?.({ code: 1006, reason });
  }

  send(frame: string): void {
    if (this.readyState === 1) this.link.post({ t: "up", sock: this.id, frame });
  }

  close(): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.link.sockets.delete(this.id);
    this.link.post({ t: "close", sock: this.id });
  }
}

interface Shared {
  sub: Subscription;
  socks: Set<string>;
}

/** The leader tab's side: one real connection, one hub subscription per channel. */
class Host {
  readonly id = random();
  private readonly channel: BroadcastChannel;
  private readonly client: FerryClient;
  private readonly socks = new Set<string>();
  private readonly channels = new Map<string, Shared>();

  constructor(name: string, options: ClientOptions) {
    this.channel = new BroadcastChannel(name);
    this.client = new FerryClient(options);
    this.client.on("direct", (data) => this.toAll({ type: "direct", payload: { data } }));
    this.client.connect().catch(() => {});
    this.channel.onmessage = (event) => this.receive(event.data as Message);
  }

  announce(): void {
    this.channel.postMessage({ t: "leader", leader: this.id } satisfies Message);
  }

  private down(sock: string, frame: object): void {
    this.channel.postMessage({ t: "down", sock, frame: JSON.stringify(frame) } satisfies Message);
  }

  private toAll(frame: object): void {
    for (const sock of this.socks) this.down(sock, frame);
  }

  private receive(m: Message): void {
    if (m.t === "open") {
      this.socks.add(m.sock);
      this.channel.postMessage({ t: "opened", sock: m.sock, leader: this.id } satisfies Message);
    } else if (m.t === "close") {
      this.socks.delete(m.sock);
      for (const channel of this.channels.keys()) this.leave(m.sock, channel);
    } else if (m.t === "up" && this.socks.has(m.sock)) {
      let frame: any;
      try {
        frame = JSON.parse(m.frame);
      } catch {
        return;
      }
      void this.command(m.sock, frame);
    }
  }

  private async command(sock: string, frame: any): Promise<void> {
    const { type, id } = frame;
    const payload = frame.payload ?? {};
    const answer = (p: object) => id !== undefined && this.down(sock, { type: "reply", id, payload: p });
    const fail = (e: FerryError) =>
      this.down(sock, { type: "error", id, payload: { code: e.code, message: e.message, details: e.details } });
    try {
      if (type === "ping" && id === undefined) this.down(sock, { type: "pong", payload: {} });
      else if (type === "auth") answer({}); // the host's own getToken keeps its connection authenticated
      else if (type === "subscribe") answer(await this.subscribe(sock, payload));
      else if (type === "unsubscribe") {
        this.leave(sock, payload.channel);
        answer({ channel: payload.channel });
      } else answer(await this.client.call(type, payload));
    } catch (error) {
      fail(error as FerryError);
    }
  }

  /** Answer a tab's subscribe from the shared subscription, recovering from history. */
  private async subscribe(sock: string, payload: any): Promise<object> {
    const channel = String(payload.channel);
    let shared = this.channels.get(channel);
    if (!shared) {
      const sub = this.client.subscribe(channel);
      const entry: Shared = { sub, socks: new Set() };
      shared = entry;
      this.channels.set(channel, entry);
      const forward = (type: string) => (value: unknown) => {
        const frame =
          type === "message" ? { type, payload: value } : { type, payload: { channel, info: value } };
        for (const s of entry.socks) this.down(s, frame);
      };
      sub.on("publication", forward("message") as (p: Publication) => void);
      sub.on("join", forward("join"));
      sub.on("leave", forward("leave"));
      sub.ready.catch(() => this.channels.delete(channel));
    }
    // Forward live publications from now on, so that none falls between the history read
    // and the first live one (the tab's client holds them back and deduplicates).
    shared.socks.add(sock);
    try {
      await shared.sub.ready;
      if (!payload.recover) {
        const top = await this.client.history(channel, { reverse: true, limit: 1 });
        return { channel, offset: top.offset, epoch: top.epoch };
      }
      // Read what the tab missed, page by page (a hub may split pages by size).
      const pubs: Publication[] = [];
      let page;
      for (let pages = 0; pages < 100; pages++) {
        const since = pubs.length ? pubs[pubs.length - 1].offset : payload.offset;
        page = await this.client.history(channel, { since, limit: 1000 });
        pubs.push(...page.publications);
        if (!page.has_more || !page.publications.length) break;
      }
      const top = page!;
      const contiguous = pubs.every((p, i) => p.offset === payload.offset + 1 + i && p.epoch === payload.epoch);
      const recovered = top.epoch === payload.epoch && contiguous && !top.has_more;
      return { channel, offset: top.offset, epoch: top.epoch, recovered, publications: recovered ? pubs : [] };
    } catch (error) {
      this.leave(sock, channel);
      throw error;
    }
  }

  private leave(sock: string, channel: string): void {
    const shared = this.channels.get(channel);
    if (!shared || !shared.socks.delete(sock) || shared.socks.size) return;
    this.channels.delete(channel);
    shared.sub.unsubscribe().catch(() => {});
  }
}
