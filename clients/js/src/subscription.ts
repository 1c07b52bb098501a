/** One channel subscription of a {@link FerryClient}. */
import { Emitter } from "./emitter.js";
import type { FerryError } from "./errors.js";
import { Recovery, type RecoveryOutput } from "./recovery.js";
import type { ClientInfo, Position, Publication } from "./types.js";

/** What a subscription emits, in order. */
export interface SubscriptionEvents {
  /** The first subscribe succeeded; publications after `position` follow. */
  subscribed: Position | undefined;
  /** A publication, in offset order, each at most once. */
  publication: Publication;
  /**
   * After a reconnect (or `subscribe(channel, { since })`) the subscription was restored.
   * `recovered: true`: the `missed` publications follow, no gap. `false`: the hub could not
   * fill the gap (history trimmed, epoch changed); reload the application's state.
   */
  recovered: { recovered: boolean; missed: number; position: Position };
  /** Someone subscribed to the channel (namespaces with join/leave). */
  join: ClientInfo;
  /** Someone left the channel. */
  leave: ClientInfo;
  /** The subscription failed; after the first success it is retried on the next reconnect. */
  error: FerryError;
  /**
   * The subscription ended: `unsubscribe()`, the first subscribe refused, or the hub ended
   * it (an `unsubscribe` push, e.g. a refreshed token no longer allows the channel).
   */
  unsubscribed: FerryError | undefined;
}

/** A channel subscription. Listen with `on("publication", ...)`; end it with `unsubscribe()`. */
export class Subscription extends Emitter<SubscriptionEvents> {
  /** Resolves with the channel's position once the first subscribe succeeded; rejects if refused. */
  readonly ready: Promise<Position | undefined>;
  /** @internal */
  recovery: Recovery;
  /** @internal the connection number the last subscribe went out on. */
  sentOn = 0;
  /** @internal counts subscribe attempts; a reply to an older one is ignored. */
  generation = 0;
  /** @internal */
  settle?: (error?: FerryError) => void;

  constructor(
    /** The channel. */
    readonly channel: string,
    since: Position | undefined,
    private readonly leave: (sub: Subscription) => Promise<void>,
  ) {
    super();
    this.recovery = new Recovery(since);
    this.ready = new Promise<Position | undefined>((resolve, reject) => {
      this.settle = (error) => {
        this.settle = undefined;
        if (error) reject(error);
        else resolve(this.recovery.position);
      };
    });
    // Whoever does not await `ready` still sees the `error` event; no unhandled rejection.
    this.ready.catch(() => {});
  }

  /** The last position delivered: save it to resume with `subscribe(channel, { since })`. */
  get position(): Position | undefined {
    return this.recovery.position;
  }

  /** End the subscription (locally at once, on the hub when connected). */
  unsubscribe(): Promise<void> {
    return this.leave(this);
  }

  /** @internal */
  output(out: RecoveryOutput[]): void {
    for (const o of out) {
      if (o.kind === "publication") this.emit("publication", o.publication);
      else if (o.kind === "subscribed") this.emit("subscribed", o.position);
      else this.emit("recovered", { recovered: o.recovered, missed: o.missed, position: o.position });
    }
  }

  /** @internal */
  fire<K extends keyof SubscriptionEvents>(event: K, value: SubscriptionEvents[K]): void {
    this.emit(event, value);
  }
}
