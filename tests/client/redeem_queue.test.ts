/**
 * The offline redeem queue against a scripted API: durable before the
 * network, batches of at most 500, final refusals never retried, backoff with
 * full jitter and Retry-After as a floor, auth failures stop it, a crash
 * mid-flush loses nothing, one flush at a time per lock name.
 */
import assert from "node:assert/strict";
import {
  ApiError,
  backoffDelay,
  type FlushApi,
  type FlushItem,
  type FlushResult,
  formatCode,
  generateCode,
  InvalidCodeChecksumError,
  MemoryFlushLock,
  MemoryQueueStore,
  NetworkError,
  parseRetryAfter,
  type QueueState,
  RedeemQueue,
} from "../../client/mod.ts";

type Answer = (items: FlushItem[]) => FlushResult | Error;

/** An API double: answers each call with the next scripted answer (default: all redeemed). */
class ScriptedApi implements FlushApi {
  calls: FlushItem[][] = [];
  inFlight = 0;
  maxInFlight = 0;
  readonly redeemed = new Map<string, string>(); // code → key that redeemed it
  constructor(public script: Answer[] = [], readonly delayMs = 0) {}

  async redeemVouchers(items: FlushItem[]): Promise<FlushResult> {
    this.calls.push(items);
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
      const answer = (this.script.shift() ?? ((i) => this.serve(i)))(items);
      if (answer instanceof Error) throw answer;
      return answer;
    } finally {
      this.inFlight--;
    }
  }

  /** What the server does: first key wins a code; a replayed key gets its stored success. */
  serve(items: FlushItem[]): FlushResult {
    const results = items.map((item, index) => {
      const winner = this.redeemed.get(item.code);
      if (winner === undefined || winner === item.idempotency_key) {
        const replayed = winner !== undefined;
        this.redeemed.set(item.code, item.idempotency_key);
        return { index, ok: true as const, ...redemption(item.code), replayed };
      }
      return {
        index,
        ok: false as const,
        error: {
          code: "voucher_already_redeemed",
          message: "already",
          status: 409,
          details: { station_code: "S2", redeemed_at: "2026-12-01T10:00:00Z" },
        },
      };
    });
    const redeemed = results.filter((r) => r.ok).length;
    return { results, redeemed, failed: items.length - redeemed };
  }
}

function redemption(code: string) {
  return {
    redemption_id: 1,
    code: formatCode(code),
    status: "redeemed" as const,
    amount_minor: 500,
    currency: "KES",
    campaign_id: "c",
    campaign_name: "C",
    station_id: "s",
    redeemed_at: new Date().toISOString(),
    client_redeemed_at: null,
  };
}

function queueWith(api: FlushApi, store = new MemoryQueueStore(), extra = {}) {
  return new RedeemQueue({
    api,
    store,
    lock: new MemoryFlushLock(),
    events: null,
    reconnectJitterMs: 0,
    backoff: { baseMs: 5, capMs: 20 },
    ...extra,
  });
}

Deno.test("enqueue() stores the item with its key and client_redeemed_at before any network call", async () => {
  const store = new MemoryQueueStore();
  let online = false;
  const api = new ScriptedApi();
  const q = queueWith(api, store, { isOnline: () => online });
  await q.start();
  const { item } = await q.enqueue(formatCode(generateCode()).toLowerCase());
  await q.flush();
  assert.equal(api.calls.length, 0, "offline: nothing was sent");
  const stored = await store.get(item.key);
  assert.equal(stored?.state, "queued");
  assert.match(stored!.key, /^[0-9a-f]{8}-[0-9a-f]{4}-7/);
  assert.ok(!Number.isNaN(Date.parse(stored!.clientRedeemedAt)));
  assert.equal(q.state.queued, 1);
  online = true;
  await q.flush();
  assert.equal((await store.get(item.key))?.state, "redeemed");
  assert.deepEqual(api.calls[0], [{
    code: item.code,
    idempotency_key: item.key,
    client_redeemed_at: item.clientRedeemedAt,
  }]);
  await q.stop();
});

Deno.test("enqueue() refuses a typo offline and stores nothing", async () => {
  const store = new MemoryQueueStore();
  const q = queueWith(new ScriptedApi(), store, { isOnline: () => false });
  const code = generateCode();
  const typo = code.slice(0, 3) + code[4] + code[3] + code.slice(5);
  await assert.rejects(
    () => q.enqueue(code[3] === code[4] ? code.slice(0, 14) + "U" : typo),
    (e: Error) => e instanceof InvalidCodeChecksumError || e.name === "InvalidCodeFormatError",
  );
  assert.equal(await store.countPending(), 0);
});

Deno.test("enqueue() of a code already queued or redeemed here adds nothing", async () => {
  const q = queueWith(new ScriptedApi(), new MemoryQueueStore(), { isOnline: () => false });
  const code = generateCode();
  const first = await q.enqueue(code);
  const again = await q.enqueue(formatCode(code));
  assert.equal(again.duplicate, true);
  assert.equal(again.item.key, first.item.key);
  assert.equal(q.state.queued, 1);
});

Deno.test("flush() sends at most 500 items per call, oldest first, and drains everything", async () => {
  const api = new ScriptedApi();
  const store = new MemoryQueueStore();
  let online = false;
  const q = queueWith(api, store, { isOnline: () => online });
  const keys: string[] = [];
  for (let i = 0; i < 1203; i++) keys.push((await q.enqueue(generateCode())).item.key);
  online = true;
  await q.flush();
  assert.deepEqual(api.calls.map((c) => c.length), [500, 500, 203]);
  // Keys are UUIDv7: sorted by key is the order taken (to the millisecond).
  assert.deepEqual(api.calls.flat().map((i) => i.idempotency_key), [...keys].sort());
  assert.equal(await store.countPending(), 0);
  assert.equal(q.state.queued, 0);
  assert.ok(q.state.lastSuccessAt);
});

Deno.test("business refusals are final outcomes, never retried; voucher_not_redeemable stays queued", async () => {
  const api = new ScriptedApi([(items) => ({
    results: items.map((_, index) => ({
      index,
      ok: false as const,
      error: index === 0
        ? {
          code: "voucher_already_redeemed",
          message: "Voucher was already redeemed at S2",
          status: 409,
          details: { station_code: "S2", station_name: "Two", redeemed_at: "2026-12-01T10:00:00Z" },
        }
        : { code: "voucher_not_redeemable", message: "try again", status: 409, details: null },
    })),
    redeemed: 0,
    failed: items.length,
  })]);
  const store = new MemoryQueueStore();
  let online = false;
  let n = 0;
  const newKey = () => `key-${++n}`;
  const q = queueWith(api, store, { isOnline: () => online, newKey });
  const settled: string[] = [];
  q.onSettled((i) => settled.push(`${i.state}:${i.error?.code}`));
  const a = (await q.enqueue(generateCode())).item;
  const b = (await q.enqueue(generateCode())).item;
  online = true;
  await q.flush();
  assert.deepEqual(settled, ["refused:voucher_already_redeemed", "redeemed:undefined"]);
  const refused = await store.get(a.key);
  assert.equal(refused?.error?.details?.station_code, "S2");
  assert.equal(api.calls.length, 2, "only the not_redeemable item went again");
  assert.deepEqual(api.calls[1].map((i) => i.idempotency_key), [b.key]);
  assert.equal((await store.get(b.key))?.state, "redeemed");
});

Deno.test("503 with Retry-After and network errors back off and resend the same keys", async () => {
  const slept: number[] = [];
  let clock = 1_000_000;
  const api = new ScriptedApi([
    () => new ApiError(503, { code: "PGRST003", message: "busy" }, 1000),
    () => new NetworkError("connection refused"),
  ]);
  const store = new MemoryQueueStore();
  let online = false;
  const q = queueWith(api, store, {
    isOnline: () => online,
    now: () => clock,
    random: () => 0.5,
    backoff: { baseMs: 100, capMs: 10_000 },
  });
  // Make the queue's pause advance the fake clock instead of waiting.
  const realSetTimeout = globalThis.setTimeout;
  const fakeTimeout = ((fn: () => void, ms?: number) => {
    if (ms && ms > 0) {
      slept.push(ms);
      clock += ms;
    }
    return realSetTimeout(fn, 0);
  }) as typeof setTimeout;
  globalThis.setTimeout = fakeTimeout;
  try {
    const item = (await q.enqueue(generateCode())).item;
    online = true;
    await q.flush();
    assert.equal(api.calls.length, 3);
    for (const call of api.calls) assert.equal(call[0].idempotency_key, item.key);
    // attempt 1: Retry-After 1000 + 0.5 × 100; attempt 2: 0.5 × 200 (no Retry-After).
    assert.deepEqual(slept.slice(0, 2), [1050, 100]);
    const stored = await store.get(item.key);
    assert.equal(stored?.state, "redeemed");
    assert.equal(stored?.attempts, 2);
    assert.equal(q.state.lastError, null, "an answer clears the last error");
  } finally {
    globalThis.setTimeout = realSetTimeout;
    await q.stop();
  }
});

Deno.test("401/403 stop the flush and say sign-in is needed; resume() carries on", async () => {
  const api = new ScriptedApi([
    () => new ApiError(401, { code: "PGRST303", message: "JWT expired" }),
  ]);
  const store = new MemoryQueueStore();
  let online = false;
  const q = queueWith(api, store, { isOnline: () => online });
  await q.enqueue(generateCode());
  online = true;
  await q.flush();
  assert.equal(api.calls.length, 1);
  assert.deepEqual(
    { code: q.state.blocked?.code, signIn: q.state.blocked?.signInNeeded },
    { code: "PGRST303", signIn: true },
  );
  assert.equal(q.state.queued, 1, "nothing was lost");
  await q.flush();
  assert.equal(api.calls.length, 1, "blocked: no more calls until resume()");
  await q.resume();
  assert.equal(q.state.blocked, null);
  assert.equal(q.state.queued, 0);
});

Deno.test("a whole-flush idempotency_key_reused (a racing request) is retried, not final", async () => {
  const api = new ScriptedApi([
    () => new ApiError(409, { code: "idempotency_key_reused", message: "raced" }),
  ]);
  const q = queueWith(api, new MemoryQueueStore(), { isOnline: () => true });
  const item = (await q.enqueue(generateCode())).item;
  await q.flush();
  assert.equal(api.calls.length, 2);
  assert.equal((await q.items())[0].key, item.key);
  assert.equal((await q.items())[0].state, "redeemed");
});

Deno.test("a crash after the server redeemed but before the answer was stored replays safely", async () => {
  const api = new ScriptedApi();
  const store = new MemoryQueueStore();
  // First process: the server redeems, then the answer is lost (the process dies).
  const lost = new ScriptedApi([(items) => {
    api.serve(items);
    void first.stop(); // the process dies with the answer in flight
    return new NetworkError("the tab crashed");
  }]);
  const first: RedeemQueue = queueWith(lost, store, { isOnline: () => true });
  const code = generateCode();
  await first.enqueue(code);
  await first.flush();
  await first.stop();
  assert.equal(await store.countPending(), 1, "still queued after the crash");
  // Second process, same store: resumes, the server replays the stored success.
  const second = queueWith(api, store, { isOnline: () => true, backoff: { baseMs: 1, capMs: 1 } });
  await second.start();
  await second.flush();
  const [item] = await second.items();
  assert.equal(item.state, "redeemed");
  assert.equal(item.result?.replayed, true);
  assert.equal(api.redeemed.size, 1);
  await second.stop();
});

Deno.test("two queues sharing a lock name (two tabs) never flush at the same time", async () => {
  const api = new ScriptedApi([], 5);
  const store = new MemoryQueueStore();
  const lock = new MemoryFlushLock();
  let online = false;
  const opts = { isOnline: () => online, lock, batchSize: 10 };
  const tabA = queueWith(api, store, opts);
  const tabB = queueWith(api, store, opts);
  for (let i = 0; i < 40; i++) await (i % 2 ? tabA : tabB).enqueue(generateCode());
  online = true;
  await Promise.all([tabA.flush(), tabB.flush(), tabA.flush(), tabB.flush()]);
  assert.equal(api.maxInFlight, 1);
  assert.equal(api.redeemed.size, 40);
  assert.equal(api.calls.flat().length, 40, "every item sent exactly once");
});

Deno.test("the state a UI shows: queued count, flushing, last success", async () => {
  const api = new ScriptedApi([], 5);
  let online = false;
  const q = queueWith(api, new MemoryQueueStore(), { isOnline: () => online });
  const seen: QueueState[] = [];
  q.subscribe((s) => seen.push(s));
  await q.enqueue(generateCode());
  await q.enqueue(generateCode());
  online = true;
  await q.flush();
  assert.deepEqual(seen[0].queued, 0);
  assert.ok(seen.some((s) => s.queued === 2 && !s.flushing));
  assert.ok(seen.some((s) => s.flushing));
  const last = seen.at(-1)!;
  assert.deepEqual([last.queued, last.flushing, typeof last.lastSuccessAt], [0, false, "string"]);
});

Deno.test("backoffDelay(): full jitter under min(cap, base·2^(n−1)), Retry-After as a floor", () => {
  const policy = { baseMs: 250, capMs: 30_000 };
  assert.equal(backoffDelay(1, undefined, { ...policy, random: () => 0.999999 }), 250);
  assert.equal(backoffDelay(3, undefined, { ...policy, random: () => 0.5 }), 500);
  assert.equal(backoffDelay(40, undefined, { ...policy, random: () => 0.5 }), 15_000);
  assert.equal(backoffDelay(2, 1000, { ...policy, random: () => 0 }), 1000);
  assert.equal(backoffDelay(2, 1000, { ...policy, random: () => 0.5 }), 1250);
  for (let i = 0; i < 100; i++) {
    const d = backoffDelay(5, undefined, policy);
    assert.ok(d >= 0 && d <= 4000, `${d} within [0, 4000]`);
  }
  assert.equal(parseRetryAfter("1"), 1000);
  assert.equal(parseRetryAfter(null), undefined);
  assert.equal(parseRetryAfter("soon"), undefined);
  assert.equal(parseRetryAfter(new Date(10_000).toUTCString(), 7_000), 3000);
});
