/**
 * One flush at a time per device: the lock the redeem queue holds while it
 * drains. In a browser it is a Web Lock (`navigator.locks`), shared by every
 * tab and worker of the origin and released by the browser when a tab closes
 * or crashes; elsewhere an in-process lock with the same name semantics.
 *
 * Web APIs only: runs in browsers and in Deno.
 *
 * @example
 * ```ts
 * import { defaultFlushLock } from "./flush_lock.ts";
 * await defaultFlushLock().run("station-redeem-flush", async () => {
 *   // no other tab of this origin is in here now
 * });
 * ```
 *
 * @module
 */

/** An exclusive lock by name: `run` waits its turn, then runs `fn` holding it. */
export interface FlushLock {
  run<T>(name: string, fn: () => Promise<T>): Promise<T>;
}

interface LockManagerLike {
  request<T>(name: string, callback: () => Promise<T>): Promise<T>;
}

/** The Web Locks API, where the runtime has it. */
export function webLocks(): FlushLock | undefined {
  const locks = (globalThis as { navigator?: { locks?: LockManagerLike } }).navigator?.locks;
  if (!locks || typeof locks.request !== "function") return undefined;
  return { run: (name, fn) => locks.request(name, () => fn()) };
}

/**
 * An exclusive lock by name within this JavaScript realm: callers with the same
 * name run one after another, in call order.
 */
export class MemoryFlushLock implements FlushLock {
  readonly #tails = new Map<string, Promise<unknown>>();

  run<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const before = this.#tails.get(name) ?? Promise.resolve();
    const result = before.then(fn, fn);
    const tail = result.then(() => {}, () => {});
    this.#tails.set(name, tail);
    tail.then(() => {
      if (this.#tails.get(name) === tail) this.#tails.delete(name);
    });
    return result;
  }
}

const realmLock = new MemoryFlushLock();

/** Web Locks in a browser, else one lock shared by this realm. */
export function defaultFlushLock(): FlushLock {
  return webLocks() ?? realmLock;
}
