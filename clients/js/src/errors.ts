/**
 * Every failure the SDK reports is a `FerryError` with a stable `code`: one of the hub's
 * error codes (docs/PROTOCOL.md: `PERMISSION_DENIED`, `AUTH_EXPIRED`, ...) or one of the
 * client's own: `TIMEOUT`, `CONNECTION_LOST` (the command may or may not have been
 * carried out), `QUEUE_FULL`, `DISCONNECTED`, `NOT_AVAILABLE_OVER_SSE`, `TRANSPORT`.
 */
export class FerryError extends Error {
  /** Stable machine-readable code. */
  readonly code: string;
  /** The server's `details` object, when it sent one. */
  readonly details?: unknown;

  constructor(code: string, message: string, details?: unknown) {
    super(message);
    this.name = "FerryError";
    this.code = code;
    this.details = details;
  }
}
