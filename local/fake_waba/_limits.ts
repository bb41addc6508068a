/**
 * The two send limits the fake enforces like Meta: per-number throughput
 * (sliding one-second window) and per-recipient pair spacing.
 *
 * Checks and commits are separate so a request rejected by one limit does
 * not consume the other.
 *
 * @module
 */

/**
 * At most `limit` events in any window of `windowMs`, exact and O(1): a ring
 * of the last `limit` accepted timestamps; a new event fits when the ring is
 * not full or its oldest entry has left the window.
 *
 * @example
 * const w = new SlidingWindow(80, 1000);
 * if (w.allows(now)) w.record(now);
 */
export class SlidingWindow {
  readonly #ring: number[];
  #next = 0;
  #size = 0;

  constructor(readonly limit: number, readonly windowMs: number) {
    this.#ring = new Array(Math.max(1, limit)).fill(0);
  }

  /** True when one more event at `now` stays within the limit. */
  allows(now: number): boolean {
    if (this.limit <= 0) return true;
    if (this.#size < this.limit) return true;
    return this.#ring[this.#next] <= now - this.windowMs;
  }

  /** Records an event at `now` (call only after {@link allows}). */
  record(now: number): void {
    if (this.limit <= 0) return;
    this.#ring[this.#next] = now;
    this.#next = (this.#next + 1) % this.limit;
    if (this.#size < this.limit) this.#size++;
  }
}

/** Per-key sliding windows (one per phone number id). */
export class ThroughputLimiter {
  readonly #windows = new Map<string, SlidingWindow>();

  constructor(readonly perSecond: number) {}

  /** True when `key` may send one more message at `now`. */
  allows(key: string, now: number): boolean {
    return this.#window(key).allows(now);
  }

  /** Counts one accepted message for `key`. */
  record(key: string, now: number): void {
    this.#window(key).record(now);
  }

  #window(key: string): SlidingWindow {
    let w = this.#windows.get(key);
    if (!w) {
      w = new SlidingWindow(this.perSecond, 1000);
      this.#windows.set(key, w);
    }
    return w;
  }
}

/**
 * Minimum spacing between accepted messages from one number to one user
 * (Meta's pair rate, about one per 6 s). Memory is bounded: entries older
 * than the spacing are swept as the map grows.
 */
export class PairSpacing {
  readonly #last = new Map<string, number>();
  #sinceSweep = 0;

  constructor(readonly spacingMs: number) {}

  /** True when `to` may receive from `from` at `now`. */
  allows(from: string, to: string, now: number): boolean {
    if (this.spacingMs <= 0) return true;
    const last = this.#last.get(`${from}|${to}`);
    return last === undefined || now - last >= this.spacingMs;
  }

  /** Records an accepted message. */
  record(from: string, to: string, now: number): void {
    if (this.spacingMs <= 0) return;
    const key = `${from}|${to}`;
    // Re-insert so the map stays ordered by last use and sweeping can stop early.
    this.#last.delete(key);
    this.#last.set(key, now);
    if (++this.#sinceSweep >= 10_000) this.#sweep(now);
  }

  /** Number of tracked pairs (for tests of boundedness). */
  get size(): number {
    return this.#last.size;
  }

  #sweep(now: number): void {
    this.#sinceSweep = 0;
    for (const [key, at] of this.#last) {
      if (now - at < this.spacingMs) break;
      this.#last.delete(key);
    }
  }
}

/**
 * Meta's messaging limit: at most `limit` unique recipients per rolling window
 * (24 h) for the business portfolio. A recipient already messaged within the
 * window costs nothing; a new one fits while fewer than `limit` are counted.
 * Entries older than the window are swept as time passes.
 *
 * @example
 * const w = new UniqueRecipientWindow(86_400_000);
 * if (w.allows("254700000001", now, 250)) w.record("254700000001", now);
 */
export class UniqueRecipientWindow {
  readonly #last = new Map<string, number>();

  constructor(readonly windowMs: number) {}

  /** Recipients counted at `now`. */
  count(now: number): number {
    this.#sweep(now);
    return this.#last.size;
  }

  /** True when `key` may be messaged at `now` under `limit`. */
  allows(key: string, now: number, limit: number): boolean {
    this.#sweep(now);
    return this.#last.has(key) || this.#last.size < limit;
  }

  /** Records a message to `key` at `now`. */
  record(key: string, now: number): void {
    // Re-insert so the map stays ordered by last message and sweeping can stop early.
    this.#last.delete(key);
    this.#last.set(key, now);
  }

  #sweep(now: number): void {
    for (const [key, at] of this.#last) {
      if (now - at < this.windowMs) break;
      this.#last.delete(key);
    }
  }
}
