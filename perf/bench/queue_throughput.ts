/**
 * Queue throughput benchmark (prints figures, asserts nothing).
 *
 * The same work on the same database, in the same run, three ways:
 *
 * - **ours** — the dispatch outbox (`supabase/migrations/20261128000500_dispatch.sql`,
 *   `20261128000800_dispatch_fast_claim.sql`): enqueue 50k messages
 *   (`app.enqueue_campaign_chunk`: one voucher per target through the issuance path,
 *   parameters rendered), then N workers each loop claim 100 (`app.claim_messages_at`,
 *   the function `api.claim_messages` wraps) → report 100 × `sent`, each call made
 *   the way the dispatcher makes it (`functions/_shared/rpc.ts`): one round trip
 *   holding the settings and the call, run by Postgres as one implicit transaction.
 *   The report is the dispatcher's own `reportMessageResults` (as service_role);
 *   the claim sends the same shape by hand, with the claims set but as the owner
 *   (service_role may not call `app.*`). The channel's rate limit is set out of
 *   reach; the per-recipient spacing guard stays on (it is part of every claim).
 *   Two rows: **ours** runs claim, then report, then claim (the same loop as the
 *   pg-boss round); **ours (claim ∥ report)** overlaps each claim with the previous
 *   batch's report, one of each in flight per worker on two connections, as a
 *   dispatch run does (`functions/dispatch/_run.ts`: background refill, batching
 *   reporter) and as graphile-worker's batched mode does with its local queue.
 * - **pg-boss** — `insert` 50k jobs, then N instances loop `fetch({batchSize: 100})`
 *   → `complete(ids)` (the loop pg-boss's own `work()` runs).
 * - **graphile-worker** — `addJobs` 50k jobs (`graphile_worker.add_jobs`), then N
 *   runners with a no-op task, in its batched mode (local queue of 100, batched
 *   completion) and with its defaults (one job per fetch).
 *
 * Our messages are dated a day ahead and claimed at that injected time, so a
 * dispatcher running against the same database (the local stack's ticker) never
 * sees them; pg-boss and graphile-worker use their own schemas (`pgboss`,
 * `graphile_worker`), which are dropped at the end, as is every row we created.
 *
 * Run: `deno run -A perf/bench/queue_throughput.ts`
 * Options (env): QUEUE_BENCH_MESSAGES (default 50000), QUEUE_BENCH_WORKERS ("1,2,4"),
 * QUEUE_BENCH_GRAPHILE_DEFAULTS=0 to skip graphile-worker's slow default mode,
 * QUEUE_BENCH_OURS_OVERLAP=0 to skip the overlapped row of ours.
 * Dependencies: `cd perf && npm ci` (pg-boss and graphile-worker are dev
 * dependencies of perf/ only; imported here by path).
 *
 * @module
 */
import postgres from "postgres";
import { DB_URL, SUPERUSER_URL } from "../../local/cluster.ts";
import { sqlValue } from "../../functions/_shared/db.ts";
import { reportMessageResults } from "../../functions/_shared/rpc.ts";

// The competitors live in perf/node_modules (npm dev dependencies of perf/ only).
// They are loaded by path at run time; these interfaces are the parts we use.

interface PgBossJob {
  id: string;
}
interface PgBossInstance {
  on(event: "error", listener: (err: unknown) => void): unknown;
  start(): Promise<unknown>;
  stop(options: { graceful: boolean; wait: boolean }): Promise<void>;
  createQueue(name: string): Promise<void>;
  deleteQueue(name: string): Promise<void>;
  insert(name: string, jobs: { data: object }[]): Promise<unknown>;
  fetch(name: string, options: { batchSize: number }): Promise<PgBossJob[]>;
  complete(name: string, ids: string[]): Promise<unknown>;
}
interface GraphileUtils {
  migrate(): Promise<void>;
  addJobs(specs: { identifier: string; payload: unknown }[]): Promise<unknown>;
  release(): Promise<void>;
}
interface GraphileRunner {
  stop(): Promise<void>;
}
interface GraphileWorker {
  Logger: new (factory: () => () => void) => unknown;
  makeWorkerUtils(options: Record<string, unknown>): Promise<GraphileUtils>;
  run(options: Record<string, unknown>): Promise<GraphileRunner>;
}

const PERF_MODULES = new URL("../node_modules/", import.meta.url);
const { PgBoss } = (await import(new URL("pg-boss/dist/index.js", PERF_MODULES).href)) as {
  PgBoss: new (options: Record<string, unknown>) => PgBossInstance;
};
const { Logger, makeWorkerUtils, run } = (await import(
  new URL("graphile-worker/dist/index.js", PERF_MODULES).href
)) as GraphileWorker;

const MESSAGES = Number(Deno.env.get("QUEUE_BENCH_MESSAGES") ?? 50_000);
const WORKERS = (Deno.env.get("QUEUE_BENCH_WORKERS") ?? "1,2,4").split(",").map(
  Number,
);
const GRAPHILE_DEFAULTS = Deno.env.get("QUEUE_BENCH_GRAPHILE_DEFAULTS") !== "0";
const OURS_OVERLAP = Deno.env.get("QUEUE_BENCH_OURS_OVERLAP") !== "0";
const SYSTEMS = (Deno.env.get("QUEUE_BENCH_SYSTEMS") ?? "ours,pg-boss,graphile-worker").split(
  ",",
);
const BATCH = 100;
/** No single phase may run longer than this. */
const PHASE_TIMEOUT_MS = 10 * 60_000;

type Sql = postgres.Sql;

/** One measured phase. */
interface Row {
  system: string;
  workers: number;
  enqueueSeconds: number;
  drainSeconds: number;
  notes?: string;
}

const rows: Row[] = [];

/** Records a phase and prints it at once (a long run shows progress as it goes). */
function record(row: Row): void {
  rows.push(row);
  console.log(
    `  ${row.system}, ${row.workers} worker(s): enqueue ${row.enqueueSeconds.toFixed(2)} s, ` +
      `drain ${row.drainSeconds.toFixed(2)} s = ${Math.round(MESSAGES / row.drainSeconds)} msgs/s`,
  );
}
const silent = new Logger(() => () => {});

async function within<T>(what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`Timed out: ${what}`)),
      PHASE_TIMEOUT_MS,
    );
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function seconds(since: number): number {
  return (performance.now() - since) / 1000;
}

// Ours ------------------------------------------------------------------------------------------

interface OursFixture {
  channelId: string;
  campaignId: string;
  claimAt: string;
}

/**
 * A channel (rate limit out of reach), a dispatching campaign with MESSAGES
 * targets, and their messages — all in one transaction, so the pg_cron promote
 * job never sees a campaign with targets left to enqueue. Returns the fixture and
 * the time of the enqueue step itself (statement and commit):
 * `vouchers` is the product's path (`app.enqueue_campaign_chunk`, a voucher per
 * message); `raw` inserts bare outbox rows, the part comparable to a job insert.
 */
async function oursSetup(
  sql: Sql,
  enqueue: "vouchers" | "raw",
): Promise<OursFixture & { enqueueSeconds: number }> {
  // Rows an interrupted earlier run left behind.
  const stale = await sql`
    select id as "campaignId", channel_id as "channelId" from app.campaigns
    where name = 'queue_throughput bench' and created_at < now() - interval '1 minute'`;
  for (const f of stale) await oursTeardown(sql, f as unknown as OursFixture);

  let started = 0;
  const f = await sql.begin(async (tx) => {
    const [ch] = await tx`
      insert into app.channels (phone_number_id, display_name, rate_per_minute, burst, tokens, refilled_at)
      values (${
      // Phone number ids are digits (channels_phone_number_id_check).
      String(
        900_000_000_000 + (Date.now() % 100_000_000_000),
      )}, 'queue_throughput bench', 1000000000, 1000000000, 1000000000, now())
      returning id`;
    const [c] = await tx`
      insert into app.campaigns (name, amount_minor, currency, expires_at, channel_id, template_name,
                                 template_params, status, dispatch_started_at)
      values ('queue_throughput bench', 50000, 'KES', now() + interval '30 days', ${ch.id}, 'fuel_voucher',
              '["voucher_code", "amount", "expires_at"]', 'dispatching', now())
      returning id`;
    const prefix = `+2549${Math.floor(Math.random() * 90 + 10)}`;
    await tx`
      insert into app.campaign_targets (campaign_id, msisdn)
      select ${c.id}, ${prefix} || lpad(i::text, 7, '0') from generate_series(1, ${MESSAGES}) i`;
    const [{ at }] = await tx`select (now() + interval '2 days')::text as at`;
    // Dated a day ahead (claimed at `at`), so no other dispatcher ever sees them.
    started = performance.now();
    if (enqueue === "vouchers") {
      const [{ n }] = await tx`
        select app.enqueue_campaign_chunk(${c.id}, ${MESSAGES}, now() + interval '1 day') as n`;
      if (n !== MESSAGES) {
        throw new Error(`Enqueued ${n} of ${MESSAGES} messages`);
      }
    } else {
      await tx`
        insert into app.messages (campaign_id, id, channel_id, to_msisdn, template_name, template_language,
                                  body_parameters, next_attempt_at)
        select t.campaign_id, t.id, ${ch.id}, t.msisdn, 'fuel_voucher', 'en', array['CODE'],
               now() + interval '1 day'
        from app.campaign_targets t where t.campaign_id = ${c.id}`;
      await tx`
        update app.campaigns set enqueue_cursor = (select max(id) from app.campaign_targets
                                                    where campaign_id = ${c.id})
        where id = ${c.id}`;
    }
    return {
      channelId: ch.id as string,
      campaignId: c.id as string,
      claimAt: at as string,
    };
  });
  return { ...f, enqueueSeconds: seconds(started) };
}

/**
 * Deletes everything a round created. Vouchers are never deleted in the product,
 * so messages.voucher_id has no index; the referential checks are skipped here
 * (session_replication_role = replica, superuser only) after deleting in an order
 * that leaves nothing dangling.
 */
async function oursTeardown(sql: Sql, f: OursFixture): Promise<void> {
  await sql.begin(async (tx) => {
    await tx`set local session_replication_role = replica`;
    await tx`delete from app.messages where campaign_id = ${f.campaignId}`;
    await tx`delete from app.campaign_targets where campaign_id = ${f.campaignId}`;
    await tx`delete from app.vouchers where campaign_id = ${f.campaignId}`;
    await tx`delete from app.voucher_batches where campaign_id = ${f.campaignId}`;
    await tx`delete from app.campaigns where id = ${f.campaignId}`;
    await tx`delete from app.dispatch_claims where channel_id = ${f.channelId}`;
    await tx`delete from app.channel_spacing where channel_id = ${f.channelId}`;
    await tx`delete from app.channels where id = ${f.channelId}`;
  });
}

interface Latency {
  claimMs: number[];
  reportMs: number[];
}

/**
 * One round of ours. Every call is made the way the dispatcher makes it: one round
 * trip (`callAsServiceRole`'s shape: the settings and the call in one
 * simple-protocol query, one implicit transaction, committed by the server as
 * soon as the call returns). `overlap` false: each worker claims, then reports,
 * then claims again (the loop the pg-boss round runs). `overlap` true: as a
 * dispatch run drives the queue (`functions/dispatch/_run.ts`: the next claim
 * starts in the background while the previous batch's verdicts are reported, one
 * claim and one report in flight at a time, on two connections of its pool).
 */
async function oursRound(admin: Sql, workers: number, overlap: boolean): Promise<Latency> {
  const f = await oursSetup(admin, "vouchers");
  try {
    const enqueueSeconds = f.enqueueSeconds;
    await admin`analyze app.messages`; // steady-state statistics, as for the other systems

    const session = () => postgres(DB_URL, { max: 1, onnotice: () => {} });
    const claimSessions = Array.from({ length: workers }, session);
    const reportSessions = overlap ? Array.from({ length: workers }, session) : claimSessions;
    const latency: Latency = { claimMs: [], reportMs: [] };
    const t = performance.now();
    try {
      await within(
        `ours, ${workers} workers`,
        Promise.all(claimSessions.map(async (sql, i) => {
          const worker = `bench-${i}`;
          // The claim as the owner (service_role may not call app.*), with the claims set.
          const claim =
            `select set_config('request.jwt.claims', '{"role":"service_role"}', true); ` +
            `select * from app.claim_messages_at(${sqlValue(f.channelId)}::uuid, ${BATCH}, 60, ` +
            `${sqlValue(worker)}, ${sqlValue(f.claimAt)}::timestamptz)`;
          // The report is the dispatcher's own call, as service_role.
          // message_id is a bigint: postgres.js (fetch_types off) hands it over as a string.
          const report = async (claimed: readonly { message_id: string }[]) => {
            const results = claimed.map((x) => ({
              message_id: x.message_id,
              outcome: "sent" as const,
              wamid: `wamid.bench.${x.message_id}`,
            }));
            const r0 = performance.now();
            const r = await reportMessageResults(reportSessions[i], results, worker);
            latency.reportMs.push(performance.now() - r0);
            if (r.applied !== claimed.length) {
              throw new Error(`Report applied ${r.applied} of ${claimed.length}`);
            }
          };
          let reporting: Promise<void> | undefined;
          try {
            for (;;) {
              const c0 = performance.now();
              const [, claimed] = await sql.unsafe(claim) as unknown as { message_id: string }[][];
              latency.claimMs.push(performance.now() - c0);
              if (claimed.length === 0) return;
              await reporting; // one report in flight at a time
              reporting = report(claimed);
              reporting.catch(() => {}); // not unhandled meanwhile: the next await rethrows
              if (!overlap) await reporting;
            }
          } finally {
            await reporting;
          }
        })),
      );
    } finally {
      await Promise.all([...new Set([...claimSessions, ...reportSessions])].map((s) => s.end()));
    }
    const drainSeconds = seconds(t);
    const [{ sent }] = await admin`
      select count(*)::int as sent from app.messages where campaign_id = ${f.campaignId} and status = 'sent'`;
    if (sent !== MESSAGES) {
      throw new Error(`Only ${sent} of ${MESSAGES} messages were sent`);
    }
    record({
      system: overlap ? "ours (claim ∥ report)" : "ours",
      workers,
      enqueueSeconds,
      drainSeconds,
      notes: "enqueue issues 1 voucher/message",
    });
    return latency;
  } finally {
    await oursTeardown(admin, f);
  }
}

/** Outbox rows alone (no vouchers, no rendering): the part comparable to a job insert. */
async function oursRawInsertSeconds(admin: Sql): Promise<number> {
  const f = await oursSetup(admin, "raw");
  await oursTeardown(admin, f);
  return f.enqueueSeconds;
}

// pg-boss -----------------------------------------------------------------------------------------

function boss(max: number, migrate: boolean): PgBossInstance {
  const b = new PgBoss({
    connectionString: DB_URL,
    max,
    supervise: false,
    schedule: false,
    migrate,
    createSchema: migrate,
  });
  b.on("error", (err: unknown) => console.error("pg-boss:", err));
  return b;
}

async function pgBossRound(admin: Sql, workers: number): Promise<void> {
  const queue = `bench_${workers}_${Date.now()}`;
  const setup = boss(4, true);
  await setup.start();
  try {
    await setup.createQueue(queue);
    let t = performance.now();
    for (let i = 0; i < MESSAGES; i += 10_000) {
      const jobs = Array.from(
        { length: Math.min(10_000, MESSAGES - i) },
        (_, k) => ({ data: { i: i + k } }),
      );
      await setup.insert(queue, jobs);
    }
    const enqueueSeconds = seconds(t);
    await admin`analyze pgboss.job`;

    const instances = Array.from({ length: workers }, () => boss(2, false));
    await Promise.all(instances.map((b) => b.start()));
    t = performance.now();
    try {
      await within(
        `pg-boss, ${workers} workers`,
        Promise.all(instances.map(async (b) => {
          for (;;) {
            const jobs = await b.fetch(queue, { batchSize: BATCH });
            if (jobs.length === 0) return;
            await b.complete(queue, jobs.map((j) => j.id));
          }
        })),
      );
    } finally {
      await Promise.all(
        instances.map((b) => b.stop({ graceful: false, wait: true })),
      );
    }
    const drainSeconds = seconds(t);
    const [{ done }] = await admin.unsafe(
      `select count(*)::int as done from pgboss.job where name = $1 and state = 'completed'`,
      [queue],
    );
    if (done !== MESSAGES) {
      throw new Error(`pg-boss completed ${done} of ${MESSAGES}`);
    }
    record({ system: "pg-boss", workers, enqueueSeconds, drainSeconds });
    await setup.deleteQueue(queue);
  } finally {
    await setup.stop({ graceful: false, wait: true });
  }
}

// graphile-worker ----------------------------------------------------------------------------------

async function graphileRound(
  admin: Sql,
  workers: number,
  batched: boolean,
): Promise<void> {
  const utils = await makeWorkerUtils({
    connectionString: DB_URL,
    logger: silent,
  });
  try {
    await utils.migrate();
    let t = performance.now();
    for (let i = 0; i < MESSAGES; i += 10_000) {
      await utils.addJobs(
        Array.from({ length: Math.min(10_000, MESSAGES - i) }, (_, k) => ({
          identifier: "noop",
          payload: { i: i + k },
        })),
      );
    }
    const enqueueSeconds = seconds(t);
    await admin`analyze graphile_worker._private_jobs`;

    t = performance.now();
    const runners = await Promise.all(
      Array.from({ length: workers }, () =>
        run({
          connectionString: DB_URL,
          concurrency: 1,
          maxPoolSize: 4,
          noHandleSignals: true,
          pollInterval: 100,
          logger: silent,
          taskList: { noop: async () => {} },
          preset: batched
            ? {
              worker: { localQueue: { size: BATCH }, completeJobBatchDelay: 0 },
            }
            : {},
        })),
    );
    try {
      await within(
        `graphile-worker, ${workers} workers`,
        (async () => {
          for (;;) {
            const [{ left }] =
              await admin`select count(*)::int as left from graphile_worker._private_jobs`;
            if (left === 0) return;
            await new Promise((r) => setTimeout(r, 20));
          }
        })(),
      );
    } finally {
      await Promise.all(runners.map((r) => r.stop()));
    }
    const drainSeconds = seconds(t);
    record({
      system: batched ? "graphile-worker (batched)" : "graphile-worker (defaults)",
      workers,
      enqueueSeconds,
      drainSeconds,
      notes: batched ? "localQueue 100, completeJobBatchDelay 0" : "one job per fetch",
    });
  } finally {
    await utils.release();
  }
}

// Report --------------------------------------------------------------------------------------------------

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[
    Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))
  ] ?? NaN;
}

function printTable(): void {
  const rate = (r: Row) => MESSAGES / r.drainSeconds;
  const header = [
    "system",
    "workers",
    "enqueue 50k (s)",
    "enqueue msgs/s",
    "claim+complete msgs/s",
  ];
  const lines = rows.map((r) => [
    r.system,
    String(r.workers),
    r.enqueueSeconds.toFixed(2),
    Math.round(MESSAGES / r.enqueueSeconds).toLocaleString("en-US"),
    Math.round(rate(r)).toLocaleString("en-US"),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const fmt = (cells: string[]) =>
    cells.map((c, i) => (i < 1 ? c.padEnd(widths[i]) : c.padStart(widths[i])));
  console.log(
    `\nQueue throughput, ${MESSAGES.toLocaleString("en-US")} messages, batches of ${BATCH}`,
  );
  console.log(fmt(header).join("  "));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const l of lines) console.log(fmt(l).join("  "));

  const isOurs = (r: Row) => r.system.startsWith("ours");
  for (const variant of ["ours", "ours (claim ∥ report)"]) {
    if (!rows.some((r) => r.system === variant)) continue;
    console.log(`\nRatios (${variant} ÷ other, claim+complete msgs/s):`);
    for (const w of WORKERS) {
      const ours = rows.find((r) => r.system === variant && r.workers === w);
      if (!ours) continue;
      const parts = rows.filter((r) => !isOurs(r) && r.workers === w)
        .map((r) => `${r.system} ×${(rate(ours) / rate(r)).toFixed(2)}`);
      console.log(`  ${w} worker${w > 1 ? "s" : ""}: ${parts.join(", ")}`);
    }
  }
}

async function main(): Promise<void> {
  // Teardown skips referential checks (session_replication_role), which takes a superuser.
  const admin = postgres(SUPERUSER_URL, { max: 2, onnotice: () => {} });
  try {
    // Start from nothing: schemas an interrupted run may have left.
    await admin`drop schema if exists pgboss cascade`;
    await admin`drop schema if exists graphile_worker cascade`;
    console.log(
      `Outbox insert only (no vouchers), ${MESSAGES} rows: ${
        (await oursRawInsertSeconds(admin)).toFixed(2)
      } s`,
    );
    const latency: Latency = { claimMs: [], reportMs: [] };
    for (const w of WORKERS) {
      if (SYSTEMS.includes("ours")) {
        const l = await oursRound(admin, w, false);
        latency.claimMs.push(...l.claimMs);
        latency.reportMs.push(...l.reportMs);
        if (OURS_OVERLAP) await oursRound(admin, w, true);
      }
      if (SYSTEMS.includes("pg-boss")) await pgBossRound(admin, w);
      if (SYSTEMS.includes("graphile-worker")) {
        await graphileRound(admin, w, true);
        if (GRAPHILE_DEFAULTS) await graphileRound(admin, w, false);
      }
    }
    printTable();
    console.log(
      `\nOurs (claim, then report), per call (all rounds, client-side): claim ${BATCH} p50 ${
        percentile(latency.claimMs, 50).toFixed(2)
      } ms ` +
        `p95 ${percentile(latency.claimMs, 95).toFixed(2)} ms; report ${BATCH} p50 ` +
        `${percentile(latency.reportMs, 50).toFixed(2)} ms p95 ${
          percentile(latency.reportMs, 95).toFixed(2)
        } ms`,
    );
    console.log(
      "Ours' enqueue issues a voucher per message and renders its parameters; the others insert bare jobs.",
    );
  } finally {
    await admin`drop schema if exists pgboss cascade`;
    await admin`drop schema if exists graphile_worker cascade`;
    await admin.end();
  }
}

if (import.meta.main) {
  await main();
}
