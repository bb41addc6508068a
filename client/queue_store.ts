/**
 * Where the redeem queue keeps its items: the store interface, and an
 * in-memory store for Deno, tests and benchmarks. The browser uses
 * `IndexedDbQueueStore` (`indexeddb_store.ts`), which survives reloads and
 * crashes.
 *
 * A store's promises resolve only once the write is durable (for IndexedDB:
 * the transaction's `complete`), so "the item is in the queue" means it will
 * still be there after a crash.
 *
 * Web APIs only: runs in browsers and in Deno.
 *
 * @example
 * ```ts
 * import { MemoryQueueStore } from "./queue_store.ts";
 * const queue = new RedeemQueue({ api, store: new MemoryQueueStore() });
 * ```
 *
 * @module
 */
import type { ItemError, Redemption } from "./rpc.ts";

/** Where an item is: waiting to be sent, redeemed, or refused for good. */
export type ItemState = "queued" | "redeemed" | "refused";

/** One redemption as staff took it, and what became of it. */
export interface QueuedRedemption {
  /** Its idempotency key (a UUIDv7: keys sort in the order items were taken). */
  key: string;
  /** Canonical code (15 characters). */
  code: string;
  /** When staff pressed redeem (ISO 8601), sent as `client_redeemed_at`. */
  clientRedeemedAt: string;
  state: ItemState;
  /** Flushes that carried this item and got no final answer for it. */
  attempts: number;
  /** The redemption, once `state` is `redeemed`. */
  result?: Redemption;
  /** The refusal, once `state` is `refused` (e.g. voucher_already_redeemed with its details). */
  error?: ItemError;
  /** When the final answer arrived (ISO 8601). */
  settledAt?: string;
}

/** The queue's persistence. Every method's promise resolves once the change is durable. */
export interface QueueStore {
  /** Adds a new item (its key must be new). */
  add(item: QueuedRedemption): Promise<void>;
  /** Writes these items (insert or replace by key), all or none. */
  put(items: QueuedRedemption[]): Promise<void>;
  /** Up to `limit` queued items, oldest first (by key). */
  pending(limit: number): Promise<QueuedRedemption[]>;
  /** How many items are queued. */
  countPending(): Promise<number>;
  /** One item by key. */
  get(key: string): Promise<QueuedRedemption | undefined>;
  /** The queued or redeemed item for a canonical code, if any (a refused one does not count). */
  findLive(code: string): Promise<QueuedRedemption | undefined>;
  /** Up to `limit` items of any state, newest first. */
  recent(limit: number): Promise<QueuedRedemption[]>;
  /** Deletes settled items beyond the newest `keep`; returns how many went. */
  prune(keep: number): Promise<number>;
  /** A small named value (the flush backoff state). */
  getMeta<T>(name: string): Promise<T | undefined>;
  setMeta<T>(name: string, value: T): Promise<void>;
}

/**
 * A {@link QueueStore} in memory: nothing survives the process. Items are
 * copied in and out (as IndexedDB does), so callers cannot change stored state
 * by accident.
 */
export class MemoryQueueStore implements QueueStore {
  readonly #items = new Map<string, QueuedRedemption>();
  readonly #meta = new Map<string, unknown>();

  add(item: QueuedRedemption): Promise<void> {
    if (this.#items.has(item.key)) {
      return Promise.reject(new Error(`Queue item "${item.key}" already exists`));
    }
    this.#items.set(item.key, structuredClone(item));
    return Promise.resolve();
  }

  put(items: QueuedRedemption[]): Promise<void> {
    for (const item of items) this.#items.set(item.key, structuredClone(item));
    return Promise.resolve();
  }

  pending(limit: number): Promise<QueuedRedemption[]> {
    return Promise.resolve(
      this.#sorted().filter((i) => i.state === "queued").slice(0, limit).map((i) =>
        structuredClone(i)
      ),
    );
  }

  countPending(): Promise<number> {
    let n = 0;
    for (const item of this.#items.values()) if (item.state === "queued") n++;
    return Promise.resolve(n);
  }

  get(key: string): Promise<QueuedRedemption | undefined> {
    const item = this.#items.get(key);
    return Promise.resolve(item && structuredClone(item));
  }

  findLive(code: string): Promise<QueuedRedemption | undefined> {
    const item = this.#sorted().find((i) => i.code === code && i.state !== "refused");
    return Promise.resolve(item && structuredClone(item));
  }

  recent(limit: number): Promise<QueuedRedemption[]> {
    return Promise.resolve(
      this.#sorted().reverse().slice(0, limit).map((i) => structuredClone(i)),
    );
  }

  prune(keep: number): Promise<number> {
    const settled = this.#sorted().filter((i) => i.state !== "queued").reverse();
    const doomed = settled.slice(keep);
    for (const item of doomed) this.#items.delete(item.key);
    return Promise.resolve(doomed.length);
  }

  getMeta<T>(name: string): Promise<T | undefined> {
    return Promise.resolve(structuredClone(this.#meta.get(name)) as T | undefined);
  }

  setMeta<T>(name: string, value: T): Promise<void> {
    this.#meta.set(name, structuredClone(value));
    return Promise.resolve();
  }

  #sorted(): QueuedRedemption[] {
    return [...this.#items.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }
}
