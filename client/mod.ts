/**
 * The voucher platform's client library, for the station PWA and the admin
 * app: typed RPCs over supabase-js, voucher codes with their offline check
 * character, time-ordered idempotency keys, and the offline-first redeem queue.
 *
 * Plain ESM over web APIs (and `@supabase/supabase-js`): runs in browsers and
 * in Deno. The README's "Station app" section shows a station using it.
 *
 * @example
 * ```ts
 * import { createApiClient, IndexedDbQueueStore, RedeemQueue, VoucherApi } from "./client/mod.ts";
 *
 * const supabase = createApiClient(API_URL, PUBLISHABLE_KEY);
 * await supabase.auth.signInWithPassword({ email, password });
 * const api = new VoucherApi(supabase);
 * const queue = new RedeemQueue({ api, store: await IndexedDbQueueStore.open() });
 * await queue.start();
 * await queue.enqueue("7KQ2M-9XD4T-RCB83");
 * ```
 *
 * @module
 */
export * from "./backoff.ts";
export * from "./errors.ts";
export * from "./flush_lock.ts";
export * from "./idempotency_key.ts";
export * from "./indexeddb_store.ts";
export * from "./queue_store.ts";
export * from "./redeem_queue.ts";
export * from "./rpc.ts";
export * from "./voucher_code.ts";
