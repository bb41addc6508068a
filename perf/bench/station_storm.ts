/**
 * Benchmark (prints, never asserts): the post-outage storm. N stations, each
 * its own client (own supabase-js client, own operator JWT, own queue), hold M
 * redeems taken offline, and all reconnect within the same second while live
 * redeems go on at other stations at the seed rate (150/min). Run twice on one
 * database, through the local gateway:
 *
 *  - naive clients: on reconnect each station sends its items in batches of
 *    `--naive-batch`, all at once, and retries a failed batch immediately (no
 *    backoff, no jitter) until it is answered;
 *  - library clients: `client/redeem_queue.ts` as the PWA runs it (one flush at
 *    a time, ≤ 500 items, full-jitter backoff with Retry-After as a floor, a
 *    random wait up to 1 s after reconnecting).
 *
 * Before both, the same run measures the batch-redeem capacity: `--workers`
 * closed-loop clients sending M-item `redeem_vouchers` batches back to back
 * until `--capacity-items` vouchers (default max(N × M, 10,000)) are redeemed,
 * after one untimed warm-up batch each (items/s). Each storm's drain rate (N × M /
 * time to drain) is reported as a ratio of that capacity.
 *
 * For each run it prints and writes (report.md + one SVG chart per run): time
 * to drain, offered vs served requests/s, HTTP statuses (503/504 = shed),
 * live-redeem p50/p95/p99 during the drain, duplicates (more than one
 * redemption per voucher, or a station told its own redemption was "already
 * redeemed") and lost redeems (taken offline, not in the database at the end).
 *
 * Usage (the stack must be up: `deno task start`):
 *   deno run -A perf/bench/station_storm.ts [--stations 1000] [--items 20] [--live-rate 2.5]
 *     [--naive-batch 5] [--workers 16] [--deadline 180] [--reconnect-jitter 1000] [--out DIR]
 * Keep --stations small (e.g. 50) on a shared machine; the full run is for a quiet one.
 *
 * @module
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import postgres from "postgres";
import {
  ApiError,
  createApiClient,
  type FlushItem,
  isRetryable,
  MemoryFlushLock,
  MemoryQueueStore,
  newIdempotencyKey,
  RedeemQueue,
  VoucherApi,
} from "../../client/mod.ts";
import { ANON_KEY, API_URL, DB_URL, mintJwt } from "../../local/env.ts";
import { LatencyHistogram } from "../driver/_histogram.ts";
import type { TimelinePoint } from "../driver/summary.ts";
import { renderChart } from "../report/svg.ts";

const { values: args } = parseArgs({
  args: Deno.args,
  options: {
    stations: { type: "string", default: "1000" },
    items: { type: "string", default: "20" },
    "live-rate": { type: "string", default: "2.5" },
    "live-stations": { type: "string", default: "5" },
    "naive-batch": { type: "string", default: "5" },
    workers: { type: "string", default: "16" },
    "capacity-items": { type: "string" },
    deadline: { type: "string", default: "180" },
    "reconnect-jitter": { type: "string", default: "1000" },
    out: { type: "string" },
  },
});
const N = Number(args.stations);
const M = Number(args.items);
const LIVE_RATE = Number(args["live-rate"]);
const LIVE_STATIONS = Number(args["live-stations"]);
const NAIVE_BATCH = Number(args["naive-batch"]);
const WORKERS = Number(args.workers);
/** Items for the capacity phase: at least 10,000, so start-up does not dominate. */
const CAPACITY_ITEMS = Number(
  args["capacity-items"] ?? Math.max(N * M, 10_000),
);
const DEADLINE_MS = Number(args.deadline) * 1000;
/** The library's random wait after reconnecting (its default: 1,000 ms). */
const RECONNECT_JITTER_MS = Number(args["reconnect-jitter"]);
const BUCKET_S = 0.5;
const OUT = args.out ??
  join(
    ".perf",
    `station-storm-${new Date().toISOString().replace(/[:.]/g, "-")}`,
  );

const sql = postgres(DB_URL, { max: 4, onnotice: () => {} });
const tag = `STORM-${crypto.randomUUID().slice(0, 8)}`.toUpperCase();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- fixtures ---------------------------------------------------------------------------------

interface Operator {
  userId: string;
  stationId: string;
  jwt: string;
}

async function operators(n: number, label: string): Promise<Operator[]> {
  const rows = await sql`
    with s as (
      insert into app.stations (code, name)
      select ${tag} || '-' || ${label} || '-' || g, 'Storm ' || ${label} || ' ' || g
      from generate_series(1, ${n}) g
      returning id, code
    ), u as (
      insert into auth.users (email)
      select lower(s.code) || '@storm.local' from s
      returning id, email
    ), st as (
      insert into app.staff (user_id, role, station_id)
      select u.id, 'station_operator', s.id
      from s join u on u.email = lower(s.code) || '@storm.local'
      returning user_id, station_id
    )
    select user_id, station_id from st`;
  return await Promise.all(rows.map(async (r) => ({
    userId: r.user_id as string,
    stationId: r.station_id as string,
    jwt: await mintJwt({ sub: r.user_id }, { expiresIn: "6h" }),
  })));
}

const [{ id: campaignId }] = await sql`
  insert into app.campaigns (name, amount_minor, currency, starts_at, expires_at)
  values (${"Storm " + tag}, 50000, 'KES', now() - interval '1 hour', now() + interval '30 days')
  returning id`;

/** `n` fresh display codes of the storm campaign. */
async function codes(n: number): Promise<string[]> {
  const out: string[] = [];
  for (let left = n; left > 0; left -= 5000) {
    const [{ batch }] = await sql`
      select (app.issue_batch(${campaignId}, ${
      Math.min(5000, left)
    }) ->> 'batch_id')::uuid as batch`;
    const rows = await sql`select code from app.vouchers where batch_id = ${batch} order by id`;
    for (const r of rows) out.push(r.code as string);
  }
  // Stations see codes in no particular order.
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

// ---- request accounting -------------------------------------------------------------------------

/** Every request the clients of one phase send: when, status (0 = no answer). */
class Ledger {
  readonly events: { t: number; status: number }[] = [];
  constructor(readonly t0: () => number) {}

  fetch(): typeof fetch {
    return async (input, init) => {
      const t = performance.now();
      try {
        const res = await fetch(input, init);
        this.events.push({ t, status: res.status });
        return res;
      } catch (e) {
        this.events.push({ t, status: 0 });
        throw e;
      }
    };
  }

  statuses(from: number, to: number): Record<string, number> {
    const out: Record<string, number> = {};
    for (const e of this.events) {
      if (e.t < from || e.t > to) continue;
      const k = e.status === 0 ? "network" : String(e.status);
      out[k] = (out[k] ?? 0) + 1;
    }
    return out;
  }
}

/** Live redeems at the seed rate, open model: each starts on schedule. */
class LiveTraffic {
  readonly samples: { t: number; ms: number; ok: boolean }[] = [];
  #stop = false;
  #inFlight = new Set<Promise<void>>();

  constructor(readonly ops: Operator[], readonly vouchers: string[]) {}

  async run(): Promise<void> {
    const apis = this.ops.map((op) =>
      new VoucherApi(
        createApiClient(API_URL, ANON_KEY, { accessToken: op.jwt }),
      )
    );
    const start = performance.now();
    for (let i = 0; !this.#stop && i < this.vouchers.length; i++) {
      const due = start + (i * 1000) / LIVE_RATE;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      if (this.#stop) break;
      const api = apis[i % apis.length];
      const code = this.vouchers[i];
      const t = performance.now();
      const p = api.redeemVoucher(
        { code, idempotencyKey: newIdempotencyKey() },
        { timeoutMs: 30_000 },
      )
        .then(
          () => this.samples.push({ t, ms: performance.now() - t, ok: true }),
          () => this.samples.push({ t, ms: performance.now() - t, ok: false }),
        ).then(() => {
          this.#inFlight.delete(p);
        });
      this.#inFlight.add(p);
    }
    await Promise.all(this.#inFlight);
  }

  stop(): void {
    this.#stop = true;
  }
}

// ---- capacity ---------------------------------------------------------------------------------

async function capacity(
  ops: Operator[],
  vouchers: string[],
): Promise<{ itemsPerS: number; seconds: number; items: number }> {
  const batches: FlushItem[][] = [];
  for (let i = 0; i < vouchers.length; i += M) {
    batches.push(
      vouchers.slice(i, i + M).map((code) => ({
        code,
        idempotency_key: newIdempotencyKey(),
        client_redeemed_at: new Date().toISOString(),
      })),
    );
  }
  const apis = Array.from(
    { length: WORKERS },
    (_, w) =>
      new VoucherApi(
        createApiClient(API_URL, ANON_KEY, {
          accessToken: ops[w % ops.length].jwt,
        }),
      ),
  );
  // Warm-up (connections, JWT cache): one batch per worker, not timed.
  let next = 0;
  await Promise.all(apis.map((api) => api.redeemVouchers(batches[next++])));
  let redeemed = 0;
  const refusals = new Map<string, number>();
  const t0 = performance.now();
  await Promise.all(apis.map(async (api) => {
    while (next < batches.length) {
      const batch = batches[next++];
      for (let attempt = 0; attempt < 100; attempt++) {
        try {
          const res = await api.redeemVouchers(batch);
          redeemed += res.redeemed;
          for (const r of res.results) {
            if (!r.ok) {
              refusals.set(r.error.code, (refusals.get(r.error.code) ?? 0) + 1);
            }
          }
          break;
        } catch (e) {
          if (!isRetryable(e)) throw e;
          await sleep(50);
        }
      }
    }
  }));
  const seconds = (performance.now() - t0) / 1000;
  if (refusals.size) {
    console.log("capacity refusals:", Object.fromEntries(refusals));
  }
  return { itemsPerS: redeemed / seconds, seconds, items: redeemed };
}

// ---- the storm --------------------------------------------------------------------------------

interface StormResult {
  mode: "naive" | "library";
  drainSeconds: number;
  drained: boolean;
  items: number;
  requests: number;
  served: number;
  statuses: Record<string, number>;
  live: {
    count: number;
    failed: number;
    p50: number;
    p95: number;
    p99: number;
    max: number;
  };
  duplicates: number;
  ownConflicts: number;
  lost: number;
  timeline: TimelinePoint[];
}

async function storm(
  mode: "naive" | "library",
  stations: Operator[],
  vouchers: string[],
  live: LiveTraffic,
): Promise<StormResult> {
  let t0 = 0;
  const ledger = new Ledger(() => t0);
  const perStation = stations.map((op, s) => ({
    op,
    codes: vouchers.slice(s * M, (s + 1) * M),
    api: new VoucherApi(
      createApiClient(API_URL, ANON_KEY, {
        accessToken: op.jwt,
        fetch: ledger.fetch(),
      }),
    ),
  }));
  // Every item keeps one key for life, for both kinds of client.
  const items = perStation.map((st) =>
    st.codes.map((code) => ({
      code,
      idempotency_key: newIdempotencyKey(),
      client_redeemed_at: new Date().toISOString(),
    }))
  );
  const settledAt: number[] = [];
  let ownConflicts = 0;
  const deadline = () => performance.now() - t0 > DEADLINE_MS;

  // Library clients take their redeems offline, through the queue (durable before the network).
  const queues: {
    q: RedeemQueue;
    online: { value: boolean };
    events: EventTarget;
  }[] = [];
  if (mode === "library") {
    for (const st of perStation) {
      const online = { value: false };
      const events = new EventTarget();
      const q = new RedeemQueue({
        api: st.api,
        store: new MemoryQueueStore(),
        // Each station is its own device: its own flush lock, and its own name, so
        // the queues in this one process do not hear each other's cross-tab
        // BroadcastChannel (1,000 queues on one name is a million deliveries per
        // round of changes, which only this process, never a device, would see).
        lock: new MemoryFlushLock(),
        name: `storm-station-${st.op.stationId}`,
        reconnectJitterMs: RECONNECT_JITTER_MS,
        isOnline: () => online.value,
        events,
        pollMs: 5_000,
      });
      await q.start();
      for (const code of st.codes) await q.enqueue(code);
      q.onSettled((item) => {
        settledAt.push(performance.now());
        if (
          item.state === "refused" &&
          item.error?.code === "voucher_already_redeemed" &&
          item.error.details?.station_id === st.op.stationId
        ) ownConflicts++;
      });
      queues.push({ q, online, events });
    }
  }

  const liveStart = live.samples.length;
  await sleep(2000); // live traffic alone first
  t0 = performance.now();

  const reconnects = perStation.map((st, s) =>
    (async () => {
      await sleep(Math.random() * 1000); // all within the same second
      if (mode === "library") {
        const { q, online, events } = queues[s];
        online.value = true;
        events.dispatchEvent(new Event("online"));
        while (q.state.queued > 0 && !deadline()) await sleep(50);
        return;
      }
      // Naive: every batch at once, failed ones again at once.
      const batches: FlushItem[][] = [];
      for (let i = 0; i < items[s].length; i += NAIVE_BATCH) {
        batches.push(items[s].slice(i, i + NAIVE_BATCH));
      }
      await Promise.all(batches.map(async (batch) => {
        while (!deadline()) {
          try {
            const res = await st.api.redeemVouchers(batch, {}, {
              timeoutMs: 30_000,
            });
            for (const r of res.results) {
              settledAt.push(performance.now());
              if (
                !r.ok && r.error.code === "voucher_already_redeemed" &&
                r.error.details?.station_id === st.op.stationId
              ) ownConflicts++;
            }
            return;
          } catch (e) {
            if (
              !(isRetryable(e) ||
                (e instanceof ApiError && e.code === "idempotency_key_reused"))
            ) {
              throw e;
            }
          }
        }
      }));
    })()
  );
  await Promise.all(reconnects);
  const tEnd = settledAt.length ? Math.max(...settledAt) : performance.now();
  const drained = settledAt.length >= N * M;
  await sleep(1000);
  for (const { q } of queues) await q.stop();

  // The database's word.
  const canonical = vouchers.slice(0, N * M);
  const [db] = await sql`
    select count(*)::int as redemptions,
           count(distinct r.voucher_id)::int as vouchers
    from app.redemptions r join app.vouchers v on v.id = r.voucher_id
    where v.code = any(${canonical}::text[])`;
  const lost = N * M - db.vouchers;
  const duplicates = db.redemptions - db.vouchers + ownConflicts;

  const liveSamples = live.samples.slice(liveStart).filter((s) => s.t >= t0 && s.t <= tEnd);
  const h = new LatencyHistogram();
  for (const s of liveSamples) h.record(s.ms);

  // Timeline: every request per bucket (shed ones red), live-redeem latency per bucket.
  const span = tEnd - t0;
  const buckets = Math.max(1, Math.ceil(span / 1000 / BUCKET_S) + 1);
  const timeline: TimelinePoint[] = [];
  for (let b = 0; b < buckets; b++) {
    const from = t0 + b * BUCKET_S * 1000, to = from + BUCKET_S * 1000;
    const reqs = ledger.events.filter((e) => e.t >= from && e.t < to);
    const lat = new LatencyHistogram();
    for (const s of live.samples) if (s.t >= from && s.t < to) lat.record(s.ms);
    timeline.push({
      t: b * BUCKET_S,
      requests: reqs.length,
      failed: reqs.filter((e) => e.status !== 200).length,
      p50: lat.percentile(50),
      p95: lat.percentile(95),
      p99: lat.percentile(99),
      max: lat.percentile(100),
    });
  }

  const statuses = ledger.statuses(t0, tEnd + 1);
  const requests = Object.values(statuses).reduce((a, b) => a + b, 0);
  return {
    mode,
    drainSeconds: span / 1000,
    drained,
    items: N * M,
    requests,
    served: statuses["200"] ?? 0,
    statuses,
    live: {
      count: h.count,
      failed: liveSamples.filter((s) => !s.ok).length,
      p50: h.percentile(50),
      p95: h.percentile(95),
      p99: h.percentile(99),
      max: h.percentile(100),
    },
    duplicates,
    ownConflicts,
    lost,
    timeline,
  };
}

// ---- run --------------------------------------------------------------------------------------

const f1 = (v: number) => v.toFixed(1);
const f2 = (v: number) => v.toFixed(2);

console.log(
  `Station storm: ${N} stations × ${M} offline redeems, live ${LIVE_RATE}/s, via ${API_URL} (tag ${tag})`,
);
const setupStart = performance.now();
const liveOps = await operators(LIVE_STATIONS, "LIVE");
const capOps = await operators(WORKERS, "CAP");
const naiveOps = await operators(N, "N");
const libOps = await operators(N, "L");
const liveCodes = await codes(
  Math.ceil(LIVE_RATE * (DEADLINE_MS / 1000 + 60) * 2),
);
const capCodes = await codes(CAPACITY_ITEMS + WORKERS * M);
const naiveCodes = await codes(N * M);
const libCodes = await codes(N * M);
console.log(`setup ${f1((performance.now() - setupStart) / 1000)} s`);

const cap = await capacity(capOps, capCodes);
console.log(
  `capacity: ${Math.round(cap.itemsPerS)} items/s (${WORKERS} workers, ${M}-item batches, ${
    f1(cap.seconds)
  } s)`,
);

const live = new LiveTraffic(liveOps, liveCodes);
const liveRun = live.run();
const results: StormResult[] = [];
try {
  for (
    const [mode, ops, vs] of [["naive", naiveOps, naiveCodes], [
      "library",
      libOps,
      libCodes,
    ]] as const
  ) {
    const r = await storm(mode, ops, vs, live);
    results.push(r);
    const drainRate = r.items / r.drainSeconds;
    console.log(
      `${mode.padEnd(7)} drain ${f1(r.drainSeconds)} s${r.drained ? "" : " (NOT drained)"}, ` +
        `${Math.round(drainRate)} items/s = ${f2(drainRate / cap.itemsPerS)}× capacity; ` +
        `offered ${Math.round(r.requests / r.drainSeconds)} req/s, served ${
          Math.round(r.served / r.drainSeconds)
        } req/s; statuses ${JSON.stringify(r.statuses)}; ` +
        `live n=${r.live.count} p50 ${f1(r.live.p50)} p95 ${f1(r.live.p95)} p99 ${
          f1(r.live.p99)
        } ms, failed ${r.live.failed}; duplicates ${r.duplicates}, lost ${r.lost}`,
    );
    await sleep(3000); // let the gateway settle between runs
  }
} finally {
  live.stop();
  await liveRun;
}

// ---- report -----------------------------------------------------------------------------------

await Deno.mkdir(OUT, { recursive: true });
const md: string[] = [
  `# Post-outage storm: ${N} stations × ${M} offline redeems`,
  "",
  `Run ${
    new Date().toISOString()
  } against ${API_URL}; live redeems at ${LIVE_RATE}/s at ${LIVE_STATIONS} other stations; ` +
  `naive batches of ${NAIVE_BATCH}; capacity by ${WORKERS} closed-loop workers with ${M}-item batches.`,
  "",
  `Batch-redeem capacity (same run): **${
    Math.round(cap.itemsPerS)
  } items/s** (${CAPACITY_ITEMS} items in ${f1(cap.seconds)} s).`,
  "",
  "| client | time to drain | drain rate | ÷ capacity | offered req/s | served req/s | statuses | live p50 / p95 / p99 (n) | live failed | duplicates | lost |",
  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
];
for (const r of results) {
  const rate = r.items / r.drainSeconds;
  md.push(
    `| ${r.mode} | ${f1(r.drainSeconds)} s${r.drained ? "" : " (not drained)"} | ${
      Math.round(rate)
    } items/s | ${f2(rate / cap.itemsPerS)} | ${Math.round(r.requests / r.drainSeconds)} | ${
      Math.round(r.served / r.drainSeconds)
    } | ${Object.entries(r.statuses).map(([k, v]) => `${k}: ${v}`).join(", ")} | ${
      f1(r.live.p50)
    } / ${f1(r.live.p95)} / ${
      f1(r.live.p99)
    } ms (${r.live.count}) | ${r.live.failed} | ${r.duplicates} | ${r.lost} |`,
  );
  const svg = renderChart({
    title: `Storm, ${r.mode} clients: live-redeem latency; all requests`,
    bucketSeconds: BUCKET_S,
    points: r.timeline,
    sloMs: 100,
  });
  await Deno.writeTextFile(join(OUT, `storm-${r.mode}.svg`), svg);
}
md.push(
  "",
  "Charts: `storm-naive.svg`, `storm-library.svg` (top: live-redeem p50/p95/p99 per bucket; bottom: every request the stations sent, shed ones in red).",
  "",
  "Duplicates = redemptions beyond one per voucher plus items a station was told were already redeemed at its own station; lost = offline redeems not in the database at the end.",
);
await Deno.writeTextFile(join(OUT, "report.md"), md.join("\n") + "\n");
await Deno.writeTextFile(
  join(OUT, "results.json"),
  JSON.stringify(
    { N, M, LIVE_RATE, NAIVE_BATCH, WORKERS, capacity: cap, results },
    null,
    2,
  ),
);
console.log(`report: ${join(OUT, "report.md")}`);
await sql.end();
