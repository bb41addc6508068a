/**
 * Benchmark (prints, never asserts): voucher issuance.
 *
 * - `api.issue_vouchers(5000)` wall time over several runs, called as the gateway
 *   would (role + JWT claims in one transaction), versus in the same run
 * - the floor: a raw `insert … select` of 5,000 rows of the same shape (same
 *   columns, checks, indexes and batch foreign key, random 15-character codes)
 *   into a scratch copy of app.vouchers — what any insert of these rows into
 *   this table costs, so the ratio is the RPC's own overhead (authorisation,
 *   idempotency, code generation, collision handling) — and the same without
 *   the foreign key, to show what that constraint costs, and
 * - codes per second for one 100k batch through `app.issue_batch`.
 *
 * Usage: deno run -A perf/bench/issuance.ts [--runs 15]
 *
 * @module
 */
import postgres from "postgres";
import { DB_URL } from "../../local/env.ts";

const runsArg = Deno.args.indexOf("--runs");
const RUNS = runsArg >= 0 ? Number(Deno.args[runsArg + 1]) : 15;

const sql = postgres(DB_URL, { max: 1, onnotice: () => {} });

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

try {
  const [{ id: campaignId }] = await sql`
    insert into app.campaigns (name, amount_minor, currency, expires_at)
    values ('bench issuance ' || now(), 1000, 'KES', now() + interval '90 days') returning id`;
  const claims = JSON.stringify({ role: "service_role" });

  const [{ id: batchId }] = await sql`
    insert into app.voucher_batches (campaign_id, issued) values (${campaignId}, 5000) returning id`;
  // The floor tables live in a schema of the benchmark's own: `postgres` may not create
  // tables in `public` (owned by pg_database_owner), as on Supabase.
  await sql`create schema if not exists bench`;
  await sql`drop table if exists bench.vouchers_floor, bench.vouchers_floor_nofk`;
  await sql`create table bench.vouchers_floor (like app.vouchers including all)`;
  await sql`
    alter table bench.vouchers_floor add foreign key (batch_id, campaign_id)
      references app.voucher_batches (id, campaign_id)`;
  await sql`create table bench.vouchers_floor_nofk (like app.vouchers including all)`;

  const rpc: number[] = [];
  const floor: number[] = [];
  const floorNoFk: number[] = [];
  for (let i = 0; i < RUNS + 2; i++) {
    const tRpc = await timed(() =>
      sql.begin(async (tx) => {
        await tx`select set_config('role', 'service_role', true), set_config('request.jwt.claims', ${claims}, true)`;
        await tx`select api.issue_vouchers(${campaignId}, 5000, ${crypto.randomUUID()})`;
      })
    );
    const rawInsert = (table: string) =>
      timed(() =>
        sql.unsafe(
          `insert into bench.${table} (code, campaign_id, batch_id, amount_minor, currency, expires_at)
           select upper(substr(replace(gen_random_uuid()::text, '-', ''), 1, 15)), $1, $2, 1000, 'KES',
                  now() + interval '90 days'
           from generate_series(1, 5000)`,
          [campaignId, batchId],
        )
      );
    await sql`truncate bench.vouchers_floor, bench.vouchers_floor_nofk`;
    const tFloor = await rawInsert("vouchers_floor");
    const tFloorNoFk = await rawInsert("vouchers_floor_nofk");
    if (i >= 2) { // the first two runs warm caches and plans
      rpc.push(tRpc);
      floor.push(tFloor);
      floorNoFk.push(tFloorNoFk);
    }
  }

  const t100k = await timed(() => sql`select app.issue_batch(${campaignId}, 100000)`);

  const mRpc = median(rpc);
  const mFloor = median(floor);
  console.log(`issue_vouchers(5000), ${RUNS} runs after 2 warm-up runs`);
  console.log(
    `  api.issue_vouchers   median ${mRpc.toFixed(1)} ms  min ${Math.min(...rpc).toFixed(1)}  max ${
      Math.max(...rpc).toFixed(1)
    }`,
  );
  console.log(
    `  raw insert (floor)   median ${mFloor.toFixed(1)} ms  min ${
      Math.min(...floor).toFixed(1)
    }  max ${Math.max(...floor).toFixed(1)}`,
  );
  const mNoFk = median(floorNoFk);
  console.log(
    `  raw insert, no FK    median ${mNoFk.toFixed(1)} ms  min ${
      Math.min(...floorNoFk).toFixed(1)
    }  max ${Math.max(...floorNoFk).toFixed(1)}`,
  );
  console.log(
    `  ratio rpc/floor      ${(mRpc / mFloor).toFixed(2)}x   (target <= 1.5x; SLO 2000 ms)`,
  );
  console.log(`  ratio rpc/no-FK      ${(mRpc / mNoFk).toFixed(2)}x`);
  console.log(
    `  rows/s via rpc       ${Math.round(5000 / (mRpc / 1000)).toLocaleString("en")}`,
  );
  console.log(
    `issue_batch(100000)    ${t100k.toFixed(0)} ms = ${
      Math.round(100000 / (t100k / 1000)).toLocaleString("en")
    } codes/s`,
  );

  await sql`drop schema bench cascade`;
} finally {
  await sql.end();
}
