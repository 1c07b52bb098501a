/** Wire types of the `ferry.json` protocol (docs/PROTOCOL.md). */

/** Who published, or who joined or left. */
export interface ClientInfo {
  /** The user id (`""` for anonymous). */
  user: string;
  /** The connection id. */
  client: string;
}

/** One publication on a channel. */
export interface Publication<T = unknown> {
  channel: string;
  /** Grows by exactly 1 per publication in a channel; the first is 1. */
  offset: number;
  /** Names the lifetime of the channel's history. */
  epoch: string;
  /** Any JSON value, as published. */
  data: T;
  /** Absent for publications made through the server API. */
  info?: ClientInfo;
  /** Server time, ms since the Unix epoch. */
  time: number;
}

/** A position in a channel's history: resume after it with `subscribe(channel, { since })`. */
export interface Position {
  offset: number;
  epoch: string;
}

/** Where a publication landed. */
export interface Published {
  channel: string;
  offset: number;
  epoch: string;
}

/** Options of a history query. */
export interface HistoryOptions {
  /** Only publications after this offset (or before it, with `reverse`). */
  since?: number;
  /** At most this many (default 100, the server caps it at 1000). */
  limit?: number;
  /** Newest first. */
  reverse?: boolean;
}

/** One page of history. */
export interface HistoryPage<T = unknown> {
  channel: string;
  publications: Publication<T>[];
  /** The channel's current top offset. */
  offset: number;
  epoch: string;
  /** More publications exist in this direction. */
  has_more?: boolean;
}

/** Who is subscribed to a channel. */
export interface PresenceInfo {
  channel: string;
  count: number;
  /** Connection id → who. */
  clients: Record<string, ClientInfo>;
}

/** A close code and reason (WebSocket close codes; 1006 for a lost connection). */
export interface CloseReason {
  code: number;
  reason: string;
}

/** The transport a connection uses. */
export type Transport = "websocket" | "sse";

/** The observable state of a {@link FerryClient}. */
export type ConnectionState =
  | { status: "disconnected"; reason?: CloseReason }
  | { status: "connecting"; transport: Transport }
  | { status: "connected"; transport: Transport; user?: string; client?: string }
  | { status: "reconnecting"; attempt: number; delay: number; reason?: CloseReason };
