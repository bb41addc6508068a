/**
 * The offline-first redeem queue of a station.
 *
 * Staff press redeem → {@link RedeemQueue.enqueue} checks the code offline (a
 * typo is refused by its check character, no round trip), gives the redemption
 * its idempotency key (UUIDv7) and `client_redeemed_at`, and writes it to the
 * store — IndexedDB in a browser — before anything touches the network. Then a
 * flush sends the queued items to `api.redeem_vouchers`, oldest first, at most
 * 500 per call, and records each item's answer:
 *
 * - redeemed (or `replayed`: the server already had this key's success) → final;
 * - a business refusal (already redeemed at station X at time T, expired, void,
 *   not found, …) → final, never retried: staff see it;
 * - `voucher_not_redeemable` (the voucher changed mid-redeem) → stays queued.
 *
 * When the whole flush fails:
 *
 * - no answer, 5xx, PGRST000–003 (503/504 under overload) → the same items are
 *   sent again, with the same keys, after exponential backoff with full jitter,
 *   `Retry-After` as a floor (`backoff.ts`); the backoff state is stored, so a
 *   reload or another tab honours it too;
 * - a whole-flush `idempotency_key_reused` (a concurrent request raced one of
 *   our keys) → retried the same way;
 * - 401/403 (signed out, expired session, not staff) or a station or request
 *   problem → flushing stops and {@link QueueState.blocked} says why, until
 *   {@link RedeemQueue.resume}.
 *
 * One flush at a time per device: the drain runs under a named lock (Web Locks
 * across tabs; `flush_lock.ts`). Replays are safe whatever happens — a lost
 * answer, a crash mid-flush, two tabs — because each item keeps its key and
 * `client_redeemed_at` for life, and the server stores each key's success.
 * After a reload, {@link RedeemQueue.start} finds the queued items and flushes.
 *
 * Web APIs only (fetch, timers, optional Web Locks and BroadcastChannel): runs
 * in browsers and in Deno.
 *
 * @example
 * ```ts
 * import { IndexedDbQueueStore, RedeemQueue, VoucherApi, createApiClient } from "../client/mod.ts";
 *
 * const supabase = createApiClient(API_URL, ANON_KEY);
 * const queue = new RedeemQueue({
 *   api: new VoucherApi(supabase),
 *   store: await IndexedDbQueueStore.open(),
 * });
 * queue.subscribe((s) => banner.textContent = `${s.queued} waiting`);
 * await queue.start();
 * const { item } = await queue.enqueue("7KQ2M-9XD4T-RCB83"); // durable now; flushes when online
 * const settled = await queue.waitFor(item.key, 5000); // redeemed / refused / still queued
 * ```
 *
 * @module
 */
import { backoffDelay, type BackoffPolicy, DEFAULT_BACKOFF } from "./backoff.ts";
import { ApiError, isAuthError, isRetryable, UnexpectedResponseError } from "./errors.ts";
import { defaultFlushLock, type FlushLock } from "./flush_lock.ts";
import { newIdempotencyKey } from "./idempotency_key.ts";
import type { QueuedRedemption, QueueStore } from "./queue_store.ts";
import type { CallOptions, FlushItem, FlushResult } from "./rpc.ts";
import { parseCode } from "./voucher_code.ts";

/** The most items `api.redeem_vouchers` takes in one call. */
export const MAX_BATCH = 500;

/** What the queue needs of the API (a {@link VoucherApi}, or a test double). */
export interface FlushApi {
  redeemVouchers(
    items: FlushItem[],
    args?: { stationId?: string },
    opts?: CallOptions,
  ): Promise<FlushResult>;
}

/** Options of {@link RedeemQueue}. */
export interface RedeemQueueOptions {
  api: FlushApi;
  store: QueueStore;
  /** Station to redeem at (admins must name one; operators redeem at their own). */
  stationId?: string;
  /** Items per `redeem_vouchers` call (1–500, default 500). */
  batchSize?: number;
  /** Backoff after failed flushes (default base 250 ms, cap 30 s). */
  backoff?: BackoffPolicy;
  /** Longest wait for one flush's answer (default 30 s); then it counts as a network error. */
  requestTimeoutMs?: number;
  /** A random wait up to this long before the first flush after start or reconnect (default 1 s). */
  reconnectJitterMs?: number;
  /** While items wait, look again this often even without an `online` event (default 30 s). */
  pollMs?: number;
  /** Settled items kept for the UI's history (default 200). */
  keepSettled?: number;
  /** The lock that makes one flush at a time per device (default: Web Locks, else in-realm). */
  lock?: FlushLock;
  /** Name of the lock and of the cross-tab change channel (default `station-redeem-queue`). */
  name?: string;
  /** Whether the device is online (default `navigator.onLine`, else true). */
  isOnline?: () => boolean;
  /** Event source for `online` / `offline` (default `globalThis` where it has `addEventListener`). */
  events?: EventTarget | null;
  /** Clock (ms), for tests. */
  now?: () => number;
  /** Key maker, for tests (default UUIDv7). */
  newKey?: () => string;
  /** Uniform random in [0, 1), for tests. */
  random?: () => number;
}

/** Why flushing stopped until {@link RedeemQueue.resume}. */
export interface Blocked {
  /** The server's code (`PGRST303`, `not_authorized`, `station_not_found`, …). */
  code: string;
  message: string;
  /** True when signing in again is the fix. */
  signInNeeded: boolean;
}

/** What a UI shows. */
export interface QueueState {
  /** Items waiting to be sent. */
  queued: number;
  /** A flush is running in this tab. */
  flushing: boolean;
  /** When a flush last got an answer (ISO 8601). */
  lastSuccessAt: string | null;
  /** The last failed flush's reason, cleared by the next answer. */
  lastError: { code: string; message: string; at: string } | null;
  /** Set when flushing stopped and needs the user (sign in) or an admin. */
  blocked: Blocked | null;
  /** When the next try is due after a failure (ms since epoch), else null. */
  retryAt: number | null;
  /** The device's own view of connectivity. */
  online: boolean;
}

/** The answer of {@link RedeemQueue.enqueue}. */
export interface EnqueueResult {
  item: QueuedRedemption;
  /** True when the code was already queued or redeemed here: nothing new was added. */
  duplicate: boolean;
}

interface BackoffState {
  attempt: number;
  retryAt: number;
}

const BACKOFF_META = "backoff";
/** Bounds one drain: 20,000 rounds is 10 million items at 500 per flush. */
const MAX_ROUNDS = 20_000;

/** Whole-flush refusals that are worth retrying as they are (a race, not a mistake). */
const RACE_CODES = new Set(["idempotency_key_reused"]);
/** Item refusals that may succeed on a later flush. */
const ITEM_RETRY_CODES = new Set(["voucher_not_redeemable"]);

/** The offline-first redeem queue: see the module documentation. */
export class RedeemQueue {
  readonly #api: FlushApi;
  readonly #store: QueueStore;
  readonly #lock: FlushLock;
  readonly #name: string;
  readonly #stationId: string | undefined;
  readonly #batchSize: number;
  readonly #backoff: BackoffPolicy;
  readonly #timeoutMs: number;
  readonly #reconnectJitterMs: number;
  readonly #pollMs: number;
  readonly #keepSettled: number;
  readonly #isOnline: () => boolean;
  readonly #events: EventTarget | null;
  readonly #now: () => number;
  readonly #newKey: () => string;
  readonly #random: () => number;

  #state: QueueState;
  readonly #listeners = new Set<(state: QueueState) => void>();
  readonly #settledListeners = new Set<(item: QueuedRedemption) => void>();
  #running: Promise<void> | null = null;
  #again = false;
  #started = false;
  #stopped = false;
  #sleep: { timer: ReturnType<typeof setTimeout>; wake: () => void } | null = null;
  #poll: ReturnType<typeof setTimeout> | null = null;
  #kick: ReturnType<typeof setTimeout> | null = null;
  #channel: BroadcastChannel | null = null;

  constructor(opts: RedeemQueueOptions) {
    this.#api = opts.api;
    this.#store = opts.store;
    this.#lock = opts.lock ?? defaultFlushLock();
    this.#name = opts.name ?? "station-redeem-queue";
    this.#stationId = opts.stationId;
    this.#batchSize = Math.min(MAX_BATCH, Math.max(1, Math.floor(opts.batchSize ?? MAX_BATCH)));
    this.#backoff = opts.backoff ?? DEFAULT_BACKOFF;
    this.#timeoutMs = opts.requestTimeoutMs ?? 30_000;
    this.#reconnectJitterMs = opts.reconnectJitterMs ?? 1000;
    this.#pollMs = opts.pollMs ?? 30_000;
    this.#keepSettled = opts.keepSettled ?? 200;
    const nav = (globalThis as { navigator?: { onLine?: boolean } }).navigator;
    this.#isOnline = opts.isOnline ??
      (() => (typeof nav?.onLine === "boolean" ? nav.onLine : true));
    const g = globalThis as unknown as Partial<EventTarget>;
    this.#events = opts.events !== undefined
      ? opts.events
      : typeof g.addEventListener === "function"
      ? (globalThis as unknown as EventTarget)
      : null;
    this.#now = opts.now ?? Date.now;
    this.#newKey = opts.newKey ?? (() => newIdempotencyKey(this.#now()));
    this.#random = opts.random ?? Math.random;
    this.#state = {
      queued: 0,
      flushing: false,
      lastSuccessAt: null,
      lastError: null,
      blocked: null,
      retryAt: null,
      online: this.#isOnline(),
    };
  }

  /** The current state (a copy). */
  get state(): QueueState {
    return { ...this.#state };
  }

  /** Calls `listener` with the state now and on every change; returns the unsubscribe. */
  subscribe(listener: (state: QueueState) => void): () => void {
    this.#listeners.add(listener);
    listener(this.state);
    return () => this.#listeners.delete(listener);
  }

  /** Calls `listener` whenever an item gets its final answer in this tab. */
  onSettled(listener: (item: QueuedRedemption) => void): () => void {
    this.#settledListeners.add(listener);
    return () => this.#settledListeners.delete(listener);
  }

  /**
   * Loads the stored queue, listens for connectivity and other tabs, and
   * flushes what a previous page or process left queued (after a short random
   * wait, so many stations coming back at once do not arrive together).
   */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    this.#events?.addEventListener("online", this.#onOnline);
    this.#events?.addEventListener("offline", this.#onOffline);
    if (typeof BroadcastChannel === "function") {
      try {
        this.#channel = new BroadcastChannel(this.#name);
        this.#channel.onmessage = () => void this.#refresh();
      } catch {
        this.#channel = null;
      }
    }
    const backoff = await this.#store.getMeta<BackoffState>(BACKOFF_META);
    this.#state.retryAt = backoff && backoff.retryAt > this.#now() ? backoff.retryAt : null;
    await this.#refresh();
    if (this.#state.queued > 0) this.#kickSoon(this.#reconnectJitterMs);
  }

  /** Stops listening and flushing (a drain in progress ends after its current call). */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#events?.removeEventListener("online", this.#onOnline);
    this.#events?.removeEventListener("offline", this.#onOffline);
    this.#channel?.close();
    this.#channel = null;
    if (this.#poll !== null) clearTimeout(this.#poll);
    if (this.#kick !== null) clearTimeout(this.#kick);
    this.#poll = this.#kick = null;
    this.#wake();
    await this.#running?.catch(() => {});
  }

  /**
   * Takes a redemption: validates the code offline, then stores it with a new
   * idempotency key and `client_redeemed_at` = now, then starts a flush (not
   * awaited). Resolves once the item is durable.
   *
   * @throws {InvalidCodeFormatError | InvalidCodeChecksumError} for a typo; nothing is stored.
   */
  async enqueue(input: string): Promise<EnqueueResult> {
    const code = parseCode(input);
    const existing = await this.#store.findLive(code);
    if (existing) return { item: existing, duplicate: true };
    const item: QueuedRedemption = {
      key: this.#newKey(),
      code,
      clientRedeemedAt: new Date(this.#now()).toISOString(),
      state: "queued",
      attempts: 0,
    };
    await this.#store.add(item);
    await this.#changed();
    void this.flush();
    return { item, duplicate: false };
  }

  /**
   * Resolves with the item once it is settled, or as it is after `timeoutMs`
   * (still `queued`: offline, or the server is busy).
   */
  async waitFor(key: string, timeoutMs: number): Promise<QueuedRedemption | undefined> {
    const current = await this.#store.get(key);
    if (!current || current.state !== "queued") return current;
    return await new Promise((resolve) => {
      const done = (item: QueuedRedemption | undefined) => {
        clearTimeout(timer);
        off();
        resolve(item);
      };
      const off = this.onSettled((item) => {
        if (item.key === key) done(item);
      });
      const timer = setTimeout(async () => done(await this.#store.get(key)), timeoutMs);
    });
  }

  /** Items of any state, newest first (the UI's list of outcomes). */
  items(limit = 50): Promise<QueuedRedemption[]> {
    return this.#store.recent(limit);
  }

  /** Clears {@link QueueState.blocked} (e.g. after signing in again) and flushes. */
  resume(): Promise<void> {
    this.#state.blocked = null;
    this.#emit();
    return this.flush();
  }

  /**
   * Sends what is queued, one flush at a time per device. Resolves when this
   * tab's drain ends: queue empty, offline, blocked, or stopped. Calls made
   * while a drain runs join it.
   */
  flush(): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = (async () => {
      try {
        do {
          this.#again = false;
          await this.#lock.run(this.#name, () => this.#drain());
        } while (this.#again && !this.#stopped && !this.#state.blocked && this.#isOnline());
      } finally {
        this.#running = null;
        this.#schedulePoll();
      }
    })();
    return this.#running;
  }

  // ---- the drain ------------------------------------------------------------------------------

  async #drain(): Promise<void> {
    this.#state.flushing = true;
    this.#emit();
    try {
      for (let round = 0; round < MAX_ROUNDS; round++) {
        if (this.#stopped || this.#state.blocked) return;
        if (!this.#isOnline()) {
          this.#state.online = false;
          return; // the online event starts the next drain
        }
        const backoff = await this.#store.getMeta<BackoffState>(BACKOFF_META);
        const wait = backoff ? backoff.retryAt - this.#now() : 0;
        if (wait > 0) {
          this.#state.retryAt = backoff!.retryAt;
          this.#emit();
          await this.#pause(wait);
          continue; // look at connectivity and the stored backoff again
        }
        const batch = await this.#store.pending(this.#batchSize);
        if (batch.length === 0) return;
        await this.#send(batch, backoff?.attempt ?? 0);
      }
    } finally {
      this.#state.flushing = false;
      await this.#refresh();
    }
  }

  async #send(batch: QueuedRedemption[], attempt: number): Promise<void> {
    let answer: FlushResult;
    try {
      answer = await this.#api.redeemVouchers(
        batch.map((i) => ({
          code: i.code,
          idempotency_key: i.key,
          client_redeemed_at: i.clientRedeemedAt,
        })),
        this.#stationId ? { stationId: this.#stationId } : {},
        { timeoutMs: this.#timeoutMs },
      );
    } catch (error) {
      await this.#failed(batch, attempt, error);
      return;
    }

    const at = new Date(this.#now()).toISOString();
    const settled: QueuedRedemption[] = [];
    let retryLater = false;
    for (const [i, item] of batch.entries()) {
      const r = answer.results[i];
      if (r.ok) {
        const { index: _index, ok: _ok, ...redemption } = r;
        Object.assign(item, { state: "redeemed", result: redemption, settledAt: at });
        settled.push(item);
      } else if (ITEM_RETRY_CODES.has(r.error.code)) {
        item.attempts++;
        retryLater = true;
      } else {
        Object.assign(item, { state: "refused", error: r.error, settledAt: at });
        settled.push(item);
      }
    }
    await this.#store.put(batch);
    await this.#setBackoff(retryLater ? attempt + 1 : 0);
    this.#state.lastSuccessAt = at;
    this.#state.lastError = null;
    await this.#changed();
    for (const item of settled) for (const l of this.#settledListeners) l(item);
    if (settled.length > 0) await this.#store.prune(this.#keepSettled);
  }

  async #failed(batch: QueuedRedemption[], attempt: number, error: unknown): Promise<void> {
    const code = error instanceof ApiError || error instanceof UnexpectedResponseError
      ? error.code
      : (error as { code?: string })?.code ?? "network_error";
    const message = error instanceof Error ? error.message : String(error);
    this.#state.lastError = { code, message, at: new Date(this.#now()).toISOString() };
    const retry = isRetryable(error) || error instanceof UnexpectedResponseError ||
      (error instanceof ApiError && RACE_CODES.has(error.code));
    if (!retry) {
      // Not a question of time: the user (sign in) or an admin must act.
      this.#state.blocked = { code, message, signInNeeded: isAuthError(error) };
      this.#emit();
      return;
    }
    for (const item of batch) item.attempts++;
    await this.#store.put(batch);
    const retryAfter = error instanceof ApiError ? error.retryAfterMs : undefined;
    await this.#setBackoff(attempt + 1, retryAfter);
    this.#emit();
  }

  async #setBackoff(attempt: number, retryAfterMs?: number): Promise<void> {
    if (attempt === 0) {
      await this.#store.setMeta<BackoffState>(BACKOFF_META, { attempt: 0, retryAt: 0 });
      this.#state.retryAt = null;
      return;
    }
    const delay = backoffDelay(attempt, retryAfterMs, { ...this.#backoff, random: this.#random });
    const retryAt = this.#now() + delay;
    await this.#store.setMeta<BackoffState>(BACKOFF_META, { attempt, retryAt });
    this.#state.retryAt = retryAt;
  }

  // ---- waking up --------------------------------------------------------------------------------

  readonly #onOnline = () => {
    this.#state.online = true;
    this.#emit();
    this.#kickSoon(this.#reconnectJitterMs);
  };

  readonly #onOffline = () => {
    this.#state.online = false;
    this.#emit();
  };

  /** Flushes after a random wait in [0, maxMs). */
  #kickSoon(maxMs: number): void {
    if (this.#stopped || this.#kick !== null) return;
    this.#kick = setTimeout(() => {
      this.#kick = null;
      void this.flush();
    }, Math.round(this.#random() * maxMs));
  }

  #schedulePoll(): void {
    if (this.#stopped || this.#poll !== null || this.#state.queued === 0) return;
    this.#poll = setTimeout(() => {
      this.#poll = null;
      if (!this.#state.blocked) void this.flush();
    }, this.#pollMs);
  }

  /** Sleeps up to `ms`; {@link stop} wakes it. */
  #pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.#sleep = null;
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.#sleep = { timer, wake };
    });
  }

  #wake(): void {
    this.#sleep?.wake();
  }

  // ---- state ------------------------------------------------------------------------------------

  /** Our change: refresh, and tell the other tabs. */
  async #changed(): Promise<void> {
    await this.#refresh();
    try {
      this.#channel?.postMessage("changed");
    } catch { /* channel closed */ }
  }

  async #refresh(): Promise<void> {
    this.#state.queued = await this.#store.countPending();
    this.#state.online = this.#isOnline();
    this.#emit();
  }

  #emit(): void {
    const snapshot = this.state;
    for (const listener of this.#listeners) {
      try {
        listener(snapshot);
      } catch { /* a listener's bug is not the queue's */ }
    }
  }
}
