/**
 * The browser's {@link QueueStore}: IndexedDB, so queued redemptions survive a
 * reload, a crash or a closed tab, and every tab of one origin sees one queue.
 *
 * One database (default `station-redeem-queue`) with an object store `items`
 * keyed by idempotency key (UUIDv7: key order is the order items were taken),
 * indexes on `state` and `code`, and a `meta` store for the flush's backoff
 * state. A write resolves on the transaction's `complete` event, with
 * `durability: "strict"` where the browser supports it, so a resolved
 * {@link IndexedDbQueueStore.add} is on disk.
 *
 * The types below are the few IndexedDB members this file uses, so the module
 * type-checks without the DOM library (Deno) and runs wherever `indexedDB` exists.
 *
 * @example
 * ```ts
 * import { IndexedDbQueueStore } from "./indexeddb_store.ts";
 * const store = await IndexedDbQueueStore.open(); // browser only
 * ```
 *
 * @module
 */
import type { QueuedRedemption, QueueStore } from "./queue_store.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

interface IdbRequest<T = Any> {
  result: T;
  error: unknown;
  onsuccess: ((ev: unknown) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

interface IdbCursor {
  value: Any;
  continue(): void;
  delete(): IdbRequest;
}

interface IdbIndex {
  count(query?: Any): IdbRequest<number>;
  getAll(query?: Any, count?: number): IdbRequest<Any[]>;
  openCursor(query?: Any, direction?: string): IdbRequest<IdbCursor | null>;
}

interface IdbObjectStore {
  add(value: Any): IdbRequest;
  put(value: Any, key?: Any): IdbRequest;
  get(key: Any): IdbRequest<Any>;
  delete(key: Any): IdbRequest;
  index(name: string): IdbIndex;
  openCursor(query?: Any, direction?: string): IdbRequest<IdbCursor | null>;
  createIndex(name: string, keyPath: string | string[]): IdbIndex;
}

interface IdbTransaction {
  objectStore(name: string): IdbObjectStore;
  oncomplete: ((ev: unknown) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onabort: ((ev: unknown) => void) | null;
  error: unknown;
}

interface IdbDatabase {
  transaction(names: string[], mode: string, options?: { durability?: string }): IdbTransaction;
  createObjectStore(name: string, options?: { keyPath?: string }): IdbObjectStore;
  objectStoreNames: { contains(name: string): boolean };
  close(): void;
  onversionchange: ((ev: unknown) => void) | null;
}

interface IdbFactory {
  open(name: string, version?: number): IdbRequest<IdbDatabase> & {
    onupgradeneeded: ((ev: unknown) => void) | null;
    onblocked: ((ev: unknown) => void) | null;
  };
}

/** The database name used when none is given. */
export const DEFAULT_DATABASE = "station-redeem-queue";
const VERSION = 1;
const ITEMS = "items";
const META = "meta";

function settle<T>(request: IdbRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function done(tx: IdbTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
  });
}

/** {@link QueueStore} over IndexedDB (browsers). */
export class IndexedDbQueueStore implements QueueStore {
  private constructor(readonly db: IdbDatabase) {}

  /** Whether this runtime has IndexedDB. */
  static available(): boolean {
    return typeof (globalThis as { indexedDB?: unknown }).indexedDB !== "undefined";
  }

  /** Opens (and on first use creates) the queue database. */
  static async open(name: string = DEFAULT_DATABASE): Promise<IndexedDbQueueStore> {
    const factory = (globalThis as unknown as { indexedDB?: IdbFactory }).indexedDB;
    if (!factory) throw new Error("IndexedDB is not available in this runtime");
    const request = factory.open(name, VERSION);
    request.onupgradeneeded = () => {
      const db = request.result;
      if (!db.objectStoreNames.contains(ITEMS)) {
        const items = db.createObjectStore(ITEMS, { keyPath: "key" });
        items.createIndex("state", "state");
        items.createIndex("code", "code");
      }
      if (!db.objectStoreNames.contains(META)) db.createObjectStore(META);
    };
    request.onblocked = () => {};
    const db = await settle(request);
    // Another tab upgrading the schema: step aside rather than block it.
    db.onversionchange = () => db.close();
    return new IndexedDbQueueStore(db);
  }

  #tx(names: string[], mode: "readonly" | "readwrite"): IdbTransaction {
    return mode === "readwrite"
      ? this.db.transaction(names, mode, { durability: "strict" })
      : this.db.transaction(names, mode);
  }

  async add(item: QueuedRedemption): Promise<void> {
    const tx = this.#tx([ITEMS], "readwrite");
    const finished = done(tx);
    tx.objectStore(ITEMS).add(item);
    await finished;
  }

  async put(items: QueuedRedemption[]): Promise<void> {
    if (items.length === 0) return;
    const tx = this.#tx([ITEMS], "readwrite");
    const finished = done(tx);
    const store = tx.objectStore(ITEMS);
    for (const item of items) store.put(item);
    await finished;
  }

  async pending(limit: number): Promise<QueuedRedemption[]> {
    const tx = this.#tx([ITEMS], "readonly");
    // The state index orders equal states by primary key: oldest first.
    return await settle(tx.objectStore(ITEMS).index("state").getAll("queued", limit));
  }

  async countPending(): Promise<number> {
    const tx = this.#tx([ITEMS], "readonly");
    return await settle(tx.objectStore(ITEMS).index("state").count("queued"));
  }

  async get(key: string): Promise<QueuedRedemption | undefined> {
    const tx = this.#tx([ITEMS], "readonly");
    return (await settle(tx.objectStore(ITEMS).get(key))) ?? undefined;
  }

  async findLive(code: string): Promise<QueuedRedemption | undefined> {
    const tx = this.#tx([ITEMS], "readonly");
    const all: QueuedRedemption[] = await settle(tx.objectStore(ITEMS).index("code").getAll(code));
    return all.find((i) => i.state !== "refused");
  }

  recent(limit: number): Promise<QueuedRedemption[]> {
    const tx = this.#tx([ITEMS], "readonly");
    const out: QueuedRedemption[] = [];
    const request = tx.objectStore(ITEMS).openCursor(null, "prev");
    return new Promise((resolve, reject) => {
      request.onsuccess = () => {
        const cursor = request.result;
        if (!cursor || out.length >= limit) return resolve(out);
        out.push(cursor.value);
        cursor.continue();
      };
      request.onerror = () => reject(request.error);
    });
  }

  async prune(keep: number): Promise<number> {
    const tx = this.#tx([ITEMS], "readwrite");
    const finished = done(tx);
    let seen = 0;
    let deleted = 0;
    const request = tx.objectStore(ITEMS).openCursor(null, "prev");
    request.onsuccess = () => {
      const cursor = request.result;
      if (!cursor) return;
      if (cursor.value.state !== "queued" && ++seen > keep) {
        cursor.delete();
        deleted++;
      }
      cursor.continue();
    };
    await finished;
    return deleted;
  }

  async getMeta<T>(name: string): Promise<T | undefined> {
    const tx = this.#tx([META], "readonly");
    return (await settle(tx.objectStore(META).get(name))) ?? undefined;
  }

  async setMeta<T>(name: string, value: T): Promise<void> {
    const tx = this.#tx([META], "readwrite");
    const finished = done(tx);
    tx.objectStore(META).put(value, name);
    await finished;
  }

  /** Closes the connection. */
  close(): void {
    this.db.close();
  }
}
