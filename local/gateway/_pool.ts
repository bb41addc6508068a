/**
 * Bounded admission in front of the connection pool. postgres.js would queue
 * without limit when every connection is busy; the gateway instead lets at most
 * `size` requests use the database, `maxQueue` more wait, and none wait longer
 * than `timeoutMs`. Rejections are PostgREST's PGRST003 with `Retry-After: 1`
 * (503 when the queue is full, 504 when the wait times out, as PostgREST's
 * acquisition timeout does). Behind it, {@link RequestPool} swaps the
 * postgres.js client after a lost connection (see there why).
 *
 * @module
 */
import type { Sql } from "postgres";
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

/**
 * Failures that mean an established connection was lost mid-request: the
 * server closed it (postgres.js `CONNECTION_CLOSED`, a reset socket) or told
 * it why first (57P01 admin shutdown, 57P02 crash shutdown, class 08).
 */
export function isConnectionLoss(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  if (typeof code !== "string") return false;
  return ["CONNECTION_CLOSED", "ECONNRESET", "EPIPE", "57P01", "57P02"].includes(code) ||
    code.startsWith("08");
}

/**
 * The request pool, replaced after a connection is lost mid-request.
 *
 * Why: postgres.js (3.4.9, `src/connection.js`) keeps a reference to the query
 * that was running when its connection closed, and only clears it on the next
 * ReadyForQuery. Until the server accepts connections again, every reconnect
 * that Postgres refuses with a FATAL error (57P03 while it restarts) is then
 * taken for that old query's error and dropped, and the next request on that
 * connection waits — without bound — instead of failing (the same stale state
 * hangs `sql.end()`, porsager/postgres#1097). A fresh client has no such
 * connection, so requests fail fast with 503 while Postgres is away. The old
 * client finishes what it has in flight (at most `drainSeconds`, 2 s: a lost
 * connection mostly means Postgres is going down) and closes.
 *
 * @example
 * const pool = new RequestPool(() => postgres(url, { max: 8 }));
 * const sql = pool.sql;
 * try { await sql.unsafe(statement); } catch (err) { if (isConnectionLoss(err)) pool.replace(sql); throw err; }
 */
export class RequestPool {
  #sql: Sql;
  readonly #retired = new Set<Promise<void>>();

  constructor(readonly create: () => Sql, readonly drainSeconds = 2) {
    this.#sql = create();
  }

  /** The current client. */
  get sql(): Sql {
    return this.#sql;
  }

  /** Replaces `failed` with a fresh client, unless it was already replaced. */
  replace(failed: Sql): void {
    if (failed !== this.#sql) return;
    this.#sql = this.create();
    const ending = failed.end({ timeout: this.drainSeconds }).catch(() => {})
      .finally(() => this.#retired.delete(ending));
    this.#retired.add(ending);
  }

  /** Closes the current client and waits for the retired ones. */
  async end(timeoutSeconds: number): Promise<void> {
    await Promise.allSettled([this.#sql.end({ timeout: timeoutSeconds }), ...this.#retired]);
  }
}
