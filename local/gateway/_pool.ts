/**
 * Bounded admission in front of the connection pool. postgres.js would queue
 * without limit when every connection is busy; the gateway instead lets at most
 * `size` requests use the database, `maxQueue` more wait, and none wait longer
 * than `timeoutMs`. Rejections are PostgREST's PGRST003 with `Retry-After: 1`
 * (503 when the queue is full, 504 when the wait times out, as PostgREST's
 * acquisition timeout does).
 *
 * @module
 */
import { poolTimeout } from "./_errors.ts";

interface Waiter {
  resolve: () => void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * A counting semaphore with a bounded, time-limited wait queue.
 *
 * @example
 * const admission = new Admission(8, 128, 2000);
 * const rows = await admission.run(() => sql.unsafe(statement)); // may throw ApiError 503/504
 */
export class Admission {
  #active = 0;
  #queue: Waiter[] = [];

  constructor(
    readonly size: number,
    readonly maxQueue: number,
    readonly timeoutMs: number,
  ) {}

  /** Requests currently holding a slot. */
  get active(): number {
    return this.#active;
  }

  /** Requests currently waiting. */
  get waiting(): number {
    return this.#queue.length;
  }

  /** Runs `fn` once a slot is free; rejects with PGRST003 instead of waiting without bound. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    await this.#acquire();
    try {
      return await fn();
    } finally {
      this.#release();
    }
  }

  #acquire(): Promise<void> | void {
    if (this.#active < this.size) {
      this.#active++;
      return;
    }
    if (this.#queue.length >= this.maxQueue) {
      throw poolTimeout(
        503,
        `All ${this.size} connections are busy and ${this.#queue.length} requests are already waiting`,
      );
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        timer: setTimeout(() => {
          this.#queue.splice(this.#queue.indexOf(waiter), 1);
          reject(poolTimeout(504, `Waited ${this.timeoutMs} ms for a free connection`));
        }, this.timeoutMs),
      };
      this.#queue.push(waiter);
    });
  }

  #release(): void {
    const next = this.#queue.shift();
    if (next) {
      clearTimeout(next.timer);
      next.resolve(); // the slot passes straight to the next waiter
    } else {
      this.#active--;
    }
  }
}
