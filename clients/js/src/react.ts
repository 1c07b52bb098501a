/**
 * React hooks over a {@link FerryClient} (`@ferry/client/react`). Components that use the
 * same channel share one subscription, which ends when the last of them unmounts.
 *
 * ```jsx
 * function Lobby({ client }) {
 *   const { publications } = useChannel(client, "chat:lobby");
 *   const { count } = usePresence(client, "chat:lobby");
 *   return <ul title={`${count} here`}>{publications.map((p) => <li key={p.offset}>{p.data.text}</li>)}</ul>;
 * }
 * ```
 */
import { useEffect, useState } from "react";
import type { FerryClient } from "./client.js";
import type { FerryError } from "./errors.js";
import type { Subscription } from "./subscription.js";
import type { ClientInfo, ConnectionState, Publication } from "./types.js";

const shared = new WeakMap<FerryClient, Map<string, { sub: Subscription; users: number }>>();

/** Borrow the client's subscription to `channel`; the returned function gives it back. */
function borrow(client: FerryClient, channel: string): [Subscription, () => void] {
  let byChannel = shared.get(client);
  if (!byChannel) shared.set(client, (byChannel = new Map()));
  let entry = byChannel.get(channel);
  if (!entry) {
    const sub = client.getSubscription(channel) ?? client.subscribe(channel);
    entry = { sub, users: 0 };
    byChannel.set(channel, entry);
  }
  entry.users++;
  const held = entry;
  return [
    held.sub,
    () => {
      if (--held.users > 0) return;
      byChannel.delete(channel);
      held.sub.unsubscribe().catch(() => {});
    },
  ];
}

/** What {@link useChannel} returns. */
export interface ChannelView<T> {
  /** The latest publications, oldest first (at most `limit`). */
  publications: Publication<T>[];
  /** Whether the subscription is established. */
  subscribed: boolean;
  /** The last error of the subscription, if any. */
  error?: FerryError;
}

/**
 * Subscribe to `channel` while the component is mounted and keep its latest `limit`
 * (default 100) publications, recovered ones included, in order.
 */
export function useChannel<T = unknown>(
  client: FerryClient,
  channel: string,
  options: { limit?: number } = {},
): ChannelView<T> {
  const limit = options.limit ?? 100;
  const [view, setView] = useState<ChannelView<T>>({ publications: [], subscribed: false });
  useEffect(() => {
    setView({ publications: [], subscribed: false });
    const [sub, giveBack] = borrow(client, channel);
    const offs = [
      sub.on("publication", (p) =>
        setView((v) => ({ ...v, publications: [...v.publications, p as Publication<T>].slice(-limit) })),
      ),
      sub.on("subscribed", () => setView((v) => ({ ...v, subscribed: true, error: undefined }))),
      sub.on("recovered", () => setView((v) => ({ ...v, subscribed: true, error: undefined }))),
      sub.on("error", (error) => setView((v) => ({ ...v, error }))),
    ];
    sub.ready.then(
      () => setView((v) => ({ ...v, subscribed: true })),
      (error: FerryError) => setView((v) => ({ ...v, subscribed: false, error })),
    );
    return () => {
      for (const off of offs) off();
      giveBack();
    };
  }, [client, channel, limit]);
  return view;
}

/** What {@link usePresence} returns. */
export interface PresenceView {
  /** How many connections are subscribed. */
  count: number;
  /** Connection id → who. */
  clients: Record<string, ClientInfo>;
  error?: FerryError;
}

/**
 * Who is subscribed to `channel`: read when the component mounts and after every
 * recovery, and again on each join/leave push (only where the namespace has `join_leave`
 * on). The component is subscribed to the channel while mounted. Needs a WebSocket.
 */
export function usePresence(client: FerryClient, channel: string): PresenceView {
  const [view, setView] = useState<PresenceView>({ count: 0, clients: {} });
  useEffect(() => {
    let live = true;
    const [sub, giveBack] = borrow(client, channel);
    const refresh = () =>
      client.presence(channel).then(
        (p) => live && setView({ count: p.count, clients: p.clients }),
        (error: FerryError) => live && setView((v) => ({ ...v, error })),
      );
    const offs = [sub.on("join", refresh), sub.on("leave", refresh), sub.on("recovered", refresh)];
    sub.ready.then(refresh, () => {});
    return () => {
      live = false;
      for (const off of offs) off();
      giveBack();
    };
  }, [client, channel]);
  return view;
}

/** The client's connection state, re-rendering on every change. */
export function useConnectionState(client: FerryClient): ConnectionState {
  const [state, setState] = useState(client.state);
  useEffect(() => {
    setState(client.state);
    return client.on("state", setState);
  }, [client]);
  return state;
}
