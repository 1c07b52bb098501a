/** Reconnect delays: exponential backoff with full jitter, as the Rust client's `Backoff`. */
export interface BackoffOptions {
  /** Ceiling of the first delay, ms. Default 500. */
  initial: number;
  /** The ceiling never grows past this, ms. Default 30 000. */
  max: number;
  /** Growth factor of the ceiling per attempt. Default 2. */
  multiplier: number;
  /** Give up after this many consecutive failed attempts. Default: never. */
  maxAttempts: number;
  /** A connection open at least this long (ms) resets the attempt counter. Default 10 000. */
  stableAfter: number;
}

/** The defaults of {@link BackoffOptions}. */
export const DEFAULT_BACKOFF: BackoffOptions = {
  initial: 500,
  max: 30_000,
  multiplier: 2,
  maxAttempts: Infinity,
  stableAfter: 10_000,
};

/** The delay before attempt `attempt` (1-based) for a uniform sample `u` in [0, 1). */
export function backoffDelay(options: BackoffOptions, attempt: number, u: number): number {
  const ceiling = Math.min(
    options.max,
    options.initial * Math.max(1, options.multiplier) ** Math.max(0, attempt - 1),
  );
  return Math.round(ceiling * Math.min(1, Math.max(0, u)));
}
