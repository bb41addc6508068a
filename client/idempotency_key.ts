/**
 * Idempotency keys for state-changing RPCs: UUIDv7 (RFC 9562), time-ordered.
 *
 * Any 1–200 character string works as a key; this is the one we recommend.
 * The database keeps keys in a B-tree (`app.idempotency_keys`). Random keys
 * (UUIDv4) land each insert on a random leaf page, and the first change to a
 * page after a checkpoint writes the whole page to the WAL; keys that start
 * with the time land on the index's right edge, a handful of hot pages. On the
 * redeem path that was most of the write-ahead log a redeem produced
 * (`perf/bench/redeem.ts`). The key still carries 74 random bits, so keys made
 * by different devices in the same millisecond do not collide.
 *
 * Web APIs only: runs in Deno, Edge Functions and browsers (the station PWA).
 *
 * @example
 * ```ts
 * import { newIdempotencyKey } from "./idempotency_key.ts";
 *
 * const key = newIdempotencyKey(); // e.g. "019ad0c5-2f4e-7b1a-9c3d-5e6f7a8b9c0d"
 * // Store it with the offline redemption; every retry of that redemption reuses it.
 * ```
 *
 * @module
 */

/**
 * A new UUIDv7: 48 bits of Unix time in milliseconds, version 7, 74 random
 * bits (variant 0b10). Keys made in a later millisecond sort after earlier
 * ones, as strings and as bytes.
 *
 * @param now Unix time in milliseconds (defaults to `Date.now()`).
 */
export function newIdempotencyKey(now: number = Date.now()): string {
  if (!Number.isSafeInteger(now) || now < 0 || now >= 2 ** 48) {
    throw new RangeError(`newIdempotencyKey: ${now} is not a 48-bit millisecond timestamp`);
  }
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  for (let i = 5, t = now; i >= 0; i--, t = Math.floor(t / 256)) bytes[i] = t % 256;
  bytes[6] = 0x70 | (bytes[6] & 0x0f); // version 7
  bytes[8] = 0x80 | (bytes[8] & 0x3f); // variant 0b10
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${
    hex.slice(20)
  }`;
}
