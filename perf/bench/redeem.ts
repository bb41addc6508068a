/**
 * Benchmark (prints, never asserts): station redeem throughput and latency.
 *
 * In one run, on the same database:
 *  (a) `api.redeem_voucher` called directly over SQL by 8 connections, each call
 *      one transaction exactly as the gateway sends it (role + JWT claims + call),
 *      from pgbench's C client (the floor's client) and, as (a'), from postgres.js;
 *  (b) the same RPC through the gateway (HTTP, JWT verification, pool) at a fixed
 *      arrival rate (default 500/s for 30 s), open model: requests start on
 *      schedule whether or not earlier ones finished, so queueing shows up in
 *      the latency instead of silently lowering the rate;
 *  (c) `pgbench` with a single-row `UPDATE … WHERE id = :id` at the same
 *      concurrency: the floor for a one-row write transaction on this machine.
 * Prints throughput and p50/p95/p99 for each, WAL bytes per transaction for the
 * pgbench runs, and the ratio (a)/(c).
 *
 * Idempotency keys are made the way our clients make them
 * (`client/idempotency_key.ts`: UUIDv7, time-ordered); one more pgbench
 * run, (a-v4), repeats (a) with random UUIDv4 keys to show what that choice costs.
 * Codes are redeemed in random order, as stations do, not in issue order (which
 * would put concurrent redeems on the same heap pages).
 *
 * Usage: deno run -A perf/bench/redeem.ts [--seconds 15] [--rate 500] [--rate-seconds 30]
 *
 * @module
 */
import postgres from "postgres";
import { parseArgs } from "node:util";
import { ANON_KEY, API_URL, DB_URL, mintJwt, SUPERUSER_URL } from "../../local/env.ts";
import { newIdempotencyKey } from "../../client/idempotency_key.ts";
import { quoteLiteral } from "../../functions/_shared/sql_literal.ts";

const { values: args } = parseArgs({
  args: Deno.args,
  options: {
    seconds: { type: "string", default: "15" },
    rate: { type: "string", default: "500" },
    "rate-seconds": { type: "string", default: "30" },
    connections: { type: "string", default: "8" },
  },
});
const SECONDS = Number(args.seconds);
const RATE = Number(args.rate);
const RATE_SECONDS = Number(args["rate-seconds"]);
const CONNECTIONS = Number(args.connections);

function percentiles(
  samples: number[],
): { p50: number; p95: number; p99: number; max: number } {
  const s = Float64Array.from(samples).sort();
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { p50: at(0.5), p95: at(0.95), p99: at(0.99), max: s[s.length - 1] };
}

function line(
  label: string,
  n: number,
  seconds: number,
  lat: number[],
  errors = 0,
): number {
  const p = percentiles(lat);
  const rate = n / seconds;
  console.log(
    `${label.padEnd(34)} ${rate.toFixed(0).padStart(6)}/s  p50 ${p.p50.toFixed(2)} ms  p95 ${
      p.p95.toFixed(2)
    } ms  p99 ${p.p99.toFixed(2)} ms  max ${p.max.toFixed(1)} ms  errors ${errors}`,
  );
  return rate;
}

const sql = postgres(DB_URL, { max: CONNECTIONS + 2, onnotice: () => {} });
// CHECKPOINT (so every run starts from the same full-page-image state) takes a superuser.
const superuser = postgres(SUPERUSER_URL, { max: 1, onnotice: () => {} });

/** A station, an operator and `n` fresh vouchers to redeem. */
async function fixtures(n: number) {
  const tag = crypto.randomUUID().slice(0, 8).toUpperCase();
  const [station] = await sql`
    insert into app.stations (code, name) values (${"BENCH-" + tag}, 'Bench') returning id`;
  const [user] = await sql`insert into auth.users (email) values (${tag + "@bench"}) returning id`;
  await sql`insert into app.staff (user_id, role, station_id) values (${user.id}, 'station_operator', ${station.id})`;
  const [campaign] = await sql`
    insert into app.campaigns (name, amount_minor, currency, starts_at)
    values (${"bench redeem " + tag}, 1000, 'KES', now() - interval '1 hour') returning id`;
  await sql`select app.issue_batch(${campaign.id}, ${n})`;
  const codes = await sql`
    select app.format_code(code) as code from app.vouchers
    where campaign_id = ${campaign.id} order by md5(code)`;
  return {
    userId: user.id as string,
    stationId: station.id as string,
    codes: codes.map((r) => r.code as string),
  };
}

async function direct(userId: string, codes: string[]) {
  const claims = JSON.stringify({ sub: userId, role: "authenticated" });
  const latencies: number[] = [];
  let next = 0;
  let errors = 0;
  const deadline = performance.now() + SECONDS * 1000;
  const worker = async () => {
    while (performance.now() < deadline && next < codes.length) {
      const code = codes[next++];
      const t0 = performance.now();
      try {
        // One simple-protocol message, one implicit transaction: what the gateway sends.
        await sql.unsafe(
          `select set_config('role', 'authenticated', true), set_config('request.jwt.claims', ${
            quoteLiteral(claims)
          }, true); select api.redeem_voucher(${quoteLiteral(code)}, ${
            quoteLiteral(newIdempotencyKey())
          })`,
        ).simple();
        latencies.push(performance.now() - t0);
      } catch {
        errors++;
      }
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: CONNECTIONS }, worker));
  return {
    n: latencies.length,
    seconds: (performance.now() - t0) / 1000,
    latencies,
    errors,
  };
}

async function gateway(userId: string, codes: string[]) {
  const jwt = await mintJwt({ sub: userId });
  const total = Math.min(codes.length, RATE * RATE_SECONDS);
  const latencies: number[] = [];
  const statuses = new Map<number, number>();
  const intervalMs = 1000 / RATE;
  const t0 = performance.now();
  const inflight: Promise<void>[] = [];
  for (let i = 0; i < total; i++) {
    const due = t0 + i * intervalMs;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    inflight.push((async () => {
      // Latency is measured from the scheduled start: lateness counts.
      const res = await fetch(`${API_URL}/rest/v1/rpc/redeem_voucher`, {
        method: "POST",
        headers: {
          apikey: ANON_KEY,
          Authorization: `Bearer ${jwt}`,
          "Content-Type": "application/json",
          "Content-Profile": "api",
        },
        body: JSON.stringify({
          code: codes[i],
          idempotency_key: newIdempotencyKey(),
        }),
      });
      await res.arrayBuffer();
      latencies.push(performance.now() - due);
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
    })());
  }
  await Promise.all(inflight);
  const seconds = (performance.now() - t0) / 1000;
  const errors = [...statuses].filter(([s]) => s !== 200).reduce(
    (n, [, c]) => n + c,
    0,
  );
  return { n: latencies.length, seconds, latencies, errors, statuses };
}

/**
 * Runs a pgbench script at the benchmark's concurrency: per-transaction
 * latencies from its log, and the WAL the run wrote per transaction.
 */
async function pgbench(script: string) {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/script.sql`, script);
  const [{ lsn: before }] = await sql`select pg_current_wal_lsn() as lsn`;
  const out = await new Deno.Command("/usr/lib/postgresql/15/bin/pgbench", {
    args: [
      "-n",
      "-c",
      String(CONNECTIONS),
      "-j",
      "2",
      "-T",
      String(SECONDS),
      "-f",
      `${dir}/script.sql`,
      "-l",
      "--log-prefix",
      `${dir}/log`,
      DB_URL,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const [{ bytes }] = await sql`select pg_current_wal_lsn() - ${before}::pg_lsn as bytes`;
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`pgbench failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  const latencies: number[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.name.startsWith("log")) continue;
    for (
      const row of (await Deno.readTextFile(`${dir}/${entry.name}`)).split("\n")
    ) {
      const us = Number(row.split(" ")[2]); // client_id transaction_no time(us) …
      if (row && Number.isFinite(us)) latencies.push(us / 1000);
    }
  }
  await Deno.remove(dir, { recursive: true });
  const tps = Number(text.match(/tps = ([\d.]+)/)?.[1] ?? NaN);
  return {
    n: latencies.length,
    seconds: latencies.length / tps,
    latencies,
    walPerTx: Number(bytes) / latencies.length,
  };
}

/** (c) The floor: a one-row UPDATE by primary key on a 100k-row table. */
async function updateFloor() {
  await sql`drop table if exists bench.update_floor`;
  await sql`create table bench.update_floor (id integer primary key, n bigint not null default 0)`;
  await sql`insert into bench.update_floor (id) select generate_series(1, 100000)`;
  await sql`vacuum analyze bench.update_floor`;
  await superuser`checkpoint`;
  try {
    return await pgbench(
      "\\set id random(1, 100000)\nUPDATE bench.update_floor SET n = n + 1 WHERE id = :id;\n",
    );
  } finally {
    await sql`drop table bench.update_floor`;
  }
}

/**
 * (a) redeem_voucher over SQL from pgbench's C client, so the client costs the
 * same as the floor's: each transaction is the gateway's message (role + claims,
 * then the call) and takes the next unused code, with its key, from a numbered
 * list. Keys: UUIDv7 made now, in list order (as a station makes them when it
 * takes redemptions), or random UUIDv4.
 */
async function redeemPgbench(
  userId: string,
  codes: string[],
  keys: "v7" | "v4",
  call = "api.redeem_voucher(c.code, c.key)",
) {
  const keyList = codes.map(() => keys === "v7" ? newIdempotencyKey() : crypto.randomUUID());
  await sql`drop table if exists bench.redeem_codes`;
  await sql`create table bench.redeem_codes (id bigint primary key, code text not null, key text not null)`;
  await sql`
    insert into bench.redeem_codes
    select n, code, key from unnest(${codes}::text[], ${keyList}::text[]) with ordinality u(code, key, n)`;
  await sql`create sequence if not exists bench.redeem_seq`;
  await sql`alter sequence bench.redeem_seq restart`;
  await sql`grant select on bench.redeem_codes to authenticated`;
  await sql`grant usage on sequence bench.redeem_seq to authenticated`;
  await superuser`checkpoint`;
  const claims = JSON.stringify({ sub: userId, role: "authenticated" });
  try {
    return await pgbench(
      `select set_config('role', 'authenticated', true), set_config('request.jwt.claims', ${
        quoteLiteral(claims)
      }, true) \\; select ${call} from bench.redeem_codes c where c.id = (select nextval('bench.redeem_seq'));\n`,
    );
  } finally {
    await sql`drop table bench.redeem_codes`;
    await sql`drop sequence bench.redeem_seq`;
  }
}

/**
 * (w) A second baseline: the three rows a redeem must write — the voucher's
 * status, the redemption record, the idempotency key with a response — by the
 * same statement shapes as api.redeem_voucher, in a security definer function
 * like it, but with no authorisation, validation, lookup or response building.
 * (a)/(w) is how close the RPC is to its own writes. (w1) is the first of them
 * alone: the voucher's status update, the one write check-and-redeem needs.
 */
async function writesOnly(
  userId: string,
  stationId: string,
  codes: string[],
  writes: "all three" | "voucher only",
) {
  // The redemption and key inserts read from `recorded`, which is empty for (w1).
  const recordRedemption = writes === "all three";
  await sql.unsafe(`
    create or replace function bench.redeem_writes(code text, key text, station uuid, actor uuid)
    returns boolean
    language plpgsql security definer set search_path = ''
    as $$
    begin
      with redeemed as (
        update app.vouchers v
        set status = 'redeemed', redeemed_at = now(), redeemed_station_id = station, redeemed_by = actor
        where v.code = app.normalize_code(redeem_writes.code) and v.status = 'issued'
        returning v.id, v.amount_minor, v.currency
      ), recorded as (
        insert into app.redemptions (voucher_id, station_id, redeemed_by, idempotency_key, amount_minor, currency)
        select r.id, station, actor, redeem_writes.key, r.amount_minor, r.currency from redeemed r
        where ${recordRedemption}
        returning id
      )
      insert into app.idempotency_keys (scope, key, request_hash, response)
      select 'redeem_voucher', redeem_writes.key, '\\x00'::bytea, jsonb_build_object('redemption_id', rec.id)
      from recorded rec;
      return found;
    end;
    $$`);
  await sql`grant execute on function bench.redeem_writes to authenticated`;
  try {
    return await redeemPgbench(
      userId,
      codes,
      "v7",
      `bench.redeem_writes(c.code, c.key, '${stationId}', '${userId}')`,
    );
  } finally {
    await sql`drop function bench.redeem_writes`;
  }
}

try {
  // The benchmark's own tables and functions live in schema `bench`, created here and
  // dropped at the end: `postgres` may create schemas in the database but, as on
  // Supabase, not tables in `public` (owned by pg_database_owner).
  await sql`create schema if not exists bench`;
  await sql`grant usage on schema bench to authenticated`;
  const pgbenchRun = await fixtures(Math.max(100_000, 3000 * SECONDS));
  const v4Run = await fixtures(Math.max(100_000, 3000 * SECONDS));
  const writesRun = await fixtures(Math.max(100_000, 3000 * SECONDS));
  const voucherWriteRun = await fixtures(Math.max(100_000, 3000 * SECONDS));
  const directRun = await fixtures(Math.max(100_000, 3000 * SECONDS));
  const gatewayRun = await fixtures(RATE * RATE_SECONDS);
  await superuser`checkpoint`;

  console.log(
    `redeem benchmark: ${CONNECTIONS} connections, ${SECONDS} s each for (a) and (c), gateway ${RATE}/s for ${RATE_SECONDS} s`,
  );
  const wal = (r: { walPerTx: number }) =>
    console.log(`    WAL ${r.walPerTx.toFixed(0)} bytes per transaction`);
  const c = await updateFloor();
  const floor = line(
    "(c) pgbench 1-row UPDATE (floor)",
    c.n,
    c.seconds,
    c.latencies,
  );
  wal(c);
  const a = await redeemPgbench(pgbenchRun.userId, pgbenchRun.codes, "v7");
  const rateA = line(
    "(a) redeem_voucher, pgbench client",
    a.n,
    a.seconds,
    a.latencies,
  );
  wal(a);
  const a4 = await redeemPgbench(v4Run.userId, v4Run.codes, "v4");
  line("(a-v4) same, random UUIDv4 keys", a4.n, a4.seconds, a4.latencies);
  wal(a4);
  const w = await writesOnly(writesRun.userId, writesRun.stationId, writesRun.codes, "all three");
  const rateW = line("(w) the three writes alone", w.n, w.seconds, w.latencies);
  wal(w);
  const w1 = await writesOnly(
    voucherWriteRun.userId,
    voucherWriteRun.stationId,
    voucherWriteRun.codes,
    "voucher only",
  );
  const rateW1 = line("(w1) the voucher update alone", w1.n, w1.seconds, w1.latencies);
  wal(w1);
  const a2 = await direct(directRun.userId, directRun.codes);
  line(
    "(a') redeem_voucher, postgres.js",
    a2.n,
    a2.seconds,
    a2.latencies,
    a2.errors,
  );
  const b = await gateway(gatewayRun.userId, gatewayRun.codes);
  line(
    `(b) redeem_voucher via gateway @${RATE}/s`,
    b.n,
    b.seconds,
    b.latencies,
    b.errors,
  );
  console.log(
    `    gateway statuses: ${JSON.stringify(Object.fromEntries(b.statuses))}`,
  );
  console.log(`ratio (a)/(c) = ${(rateA / floor).toFixed(2)}  (target >= 0.5)`);
  console.log(
    `ratio (w)/(c) = ${(rateW / floor).toFixed(2)}  (the writes alone)   ratio (a)/(w) = ${
      (rateA / rateW).toFixed(2)
    }  (the RPC against its writes)`,
  );
  console.log(
    `ratio (w1)/(c) = ${(rateW1 / floor).toFixed(2)}  (one row update, in a definer function)`,
  );
} finally {
  await sql`drop schema if exists bench cascade`;
  await sql.end();
  await superuser.end();
}
