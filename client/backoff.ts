/**
 * Exponential backoff with full jitter, and `Retry-After` parsing.
 *
 * After the n-th consecutive failure (n = 1, 2, …) a client waits a uniformly
 * random time in [0, min(cap, base · 2^(n−1))) — "full jitter": clients that
 * failed together come back spread over the whole window instead of together.
 * When the server sent `Retry-After`, that is a floor and the jitter goes on
 * top of it: every client refused in one overload gets the same `Retry-After`,
 * and `max(retryAfter, jitter)` would bring most of them back in the same
 * instant — the storm again, one second later.
 *
 * Web APIs only: runs in browsers and in Deno.
 *
 * @example
 * ```ts
 * import { backoffDelay, DEFAULT_BACKOFF } from "./backoff.ts";
 *
 * backoffDelay(1, undefined, DEFAULT_BACKOFF); // 0–250 ms
 * backoffDelay(3, 1000, DEFAULT_BACKOFF); // 1000–2000 ms
 * ```
 *
 * @module
 */

/** The backoff schedule: first window, largest window, and the random source. */
export interface BackoffPolicy {
  /** Window after the first failure, in ms. */
  baseMs: number;
  /** Largest window, in ms. */
  capMs: number;
  /** Uniform random number in [0, 1); `Math.random` unless a test injects one. */
  random?: () => number;
}

/** base 250 ms, cap 30 s: the schedule the README documents for station clients. */
export const DEFAULT_BACKOFF: Readonly<BackoffPolicy> = { baseMs: 250, capMs: 30_000 };

/**
 * The wait before retry number `attempt` (1 = the first retry), in ms.
 *
 * @param attempt consecutive failures so far (≥ 1).
 * @param retryAfterMs the server's `Retry-After`, in ms, if it sent one: a floor.
 */
export function backoffDelay(
  attempt: number,
  retryAfterMs: number | undefined,
  policy: BackoffPolicy = DEFAULT_BACKOFF,
): number {
  const n = Math.max(1, Math.floor(attempt));
  // 2 ** 1023 is finite; min() keeps the window at the cap long before that.
  const window = Math.min(policy.capMs, policy.baseMs * 2 ** Math.min(n - 1, 1000));
  const jitter = (policy.random ?? Math.random)() * window;
  return Math.round((retryAfterMs !== undefined && retryAfterMs > 0 ? retryAfterMs : 0) + jitter);
}

/**
 * `Retry-After` in ms: delta-seconds (`"1"`) or an HTTP date; undefined when
 * absent or unparseable (never negative).
 *
 * @example
 * ```ts
 * parseRetryAfter("2"); // 2000
 * parseRetryAfter(null); // undefined
 * ```
 */
export function parseRetryAfter(
  value: string | null | undefined,
  now = Date.now(),
): number | undefined {
  if (value === null || value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}
