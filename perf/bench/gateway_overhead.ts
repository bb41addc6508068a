/**
 * Benchmark (prints figures, asserts nothing): what the local gateway adds to
 * a trivial RPC compared with calling Postgres directly.
 *
 * Phases, each at the same concurrency after a warm-up:
 *   1. gateway — HTTP POST /rest/v1/rpc/gw_bench_add with a user JWT, to a
 *      gateway running in its own process (as `deno task start` runs it);
 *   2. direct, same SQL — postgres.js as `authenticator`, sending the very
 *      statement the gateway sends (role switch + set_config + call, one
 *      implicit transaction, one round trip);
 *   3. direct, sql.begin — the hand-written equivalent: BEGIN, one
 *      `select set_config(…)`, the call, COMMIT.
 *
 * Run: `deno run -A perf/bench/gateway_overhead.ts`
 * Env: BENCH_REQUESTS (per phase, default 10000), BENCH_CONCURRENCY (8), BENCH_PORT (54396).
 *
 * @module
 */
import { cpuUsage } from "node:process";
import postgres from "postgres";
import { ANON_KEY, AUTHENTICATOR_URL, DB_URL, mintJwt } from "../../local/env.ts";
import { ROOT } from "../../local/cluster.ts";
import { type Routine, rpcStatement } from "../../local/gateway/mod.ts";

const REQUESTS = Number(Deno.env.get("BENCH_REQUESTS") ?? 10_000);
const CONCURRENCY = Number(Deno.env.get("BENCH_CONCURRENCY") ?? 8);
const PORT = Number(Deno.env.get("BENCH_PORT") ?? 54396);
const WARMUP = 1000;
const USER_ID = "00000000-0000-4000-8000-00000000be4c";

const SETUP = `
drop function if exists api.gw_bench_add(integer, integer);
create function api.gw_bench_add(a integer, b integer) returns integer
language sql stable as $$ select a + b $$;
grant execute on function api.gw_bench_add(integer, integer) to authenticated;
notify pgrst, 'reload schema';`;
const TEARDOWN = `drop function if exists api.gw_bench_add(integer, integer);`;

interface PhaseResult {
  name: string;
  /** CPU of this (client) process per call, µs. */
  clientCpuUs: number;
  rps: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  errors: number;
}

function percentile(sorted: number[], p: number): number {
  return sorted[
    Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)
  ];
}

/** Runs `total` calls of `call` with `CONCURRENCY` workers; latency per call in ms. */
async function phase(
  name: string,
  total: number,
  call: (i: number) => Promise<boolean>,
): Promise<PhaseResult> {
  const latencies: number[] = [];
  let next = 0, errors = 0;
  const cpu0 = cpuUsage();
  const started = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next < total) {
      const i = next++;
      const t0 = performance.now();
      const ok = await call(i);
      latencies.push(performance.now() - t0);
      if (!ok) errors++;
    }
  }));
  const elapsed = (performance.now() - started) / 1000;
  const cpu = cpuUsage(cpu0);
  latencies.sort((a, b) => a - b);
  return {
    name,
    clientCpuUs: (cpu.user + cpu.system) / total,
    rps: total / elapsed,
    p50: percentile(latencies, 50),
    p95: percentile(latencies, 95),
    p99: percentile(latencies, 99),
    max: latencies.at(-1)!,
    errors,
  };
}

/** CPU time (µs) a process we started has used so far, from /proc (Linux). */
async function processCpuUs(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]); // utime + stime
  return ticks * 10_000; // USER_HZ = 100
}

async function waitHealthy(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(500) });
      await res.body?.cancel();
      if (res.ok) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(
    `Gateway at ${url} did not become healthy within ${timeoutMs} ms`,
  );
}

const admin = postgres(DB_URL, { max: 1, onnotice: () => {} });
await admin.unsafe(SETUP);

const gateway = new Deno.Command(Deno.execPath(), {
  args: ["run", "-A", "local/gateway/main.ts"],
  cwd: ROOT,
  env: { GATEWAY_PORT: String(PORT), GATEWAY_LOG: "0" },
  stdout: "null",
  stderr: "inherit",
}).spawn();

const direct = postgres(AUTHENTICATOR_URL, {
  max: CONCURRENCY,
  fetch_types: false,
  onnotice: () => {},
});

try {
  const base = `http://127.0.0.1:${PORT}`;
  await waitHealthy(`${base}/health`, 15_000);
  const jwt = await mintJwt({ sub: USER_ID });
  const claimsJson = JSON.stringify({
    ...JSON.parse(
      atob(jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")),
    ),
    role: "authenticated",
  });
  const headers = {
    apikey: ANON_KEY,
    Authorization: `Bearer ${jwt}`,
    "Content-Type": "application/json",
    "Content-Profile": "api",
  };

  const viaGateway = async (i: number) => {
    const res = await fetch(`${base}/rest/v1/rpc/gw_bench_add`, {
      method: "POST",
      headers,
      body: JSON.stringify({ a: i, b: 1 }),
    });
    const body = await res.text();
    return res.status === 200 && body === String(i + 1);
  };

  const routine: Routine = {
    schema: "api",
    name: "gw_bench_add",
    params: [
      { name: "a", type: "integer", required: true, variadic: false },
      { name: "b", type: "integer", required: true, variadic: false },
    ],
    volatility: "s",
    returnsSet: false,
    returnsVoid: false,
    returnsComposite: false,
  };
  const requestHeaders = JSON.stringify(
    Object.fromEntries(
      Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]),
    ),
  );
  const sameSql = async (i: number) => {
    const statement = rpcStatement({
      readOnly: true,
      settings: [
        ["search_path", '"api", "extensions"'],
        ["role", "authenticated"],
        ["request.jwt.claims", claimsJson],
        ["request.method", "POST"],
        ["request.path", "/rpc/gw_bench_add"],
        ["request.headers", requestHeaders],
        ["request.cookies", "{}"],
        ["statement_timeout", "8s"],
      ],
      routine,
      args: {
        kind: "named",
        json: JSON.stringify({ a: i, b: 1 }),
        keys: ["a", "b"],
      },
      maxRows: null,
      countTotal: false,
      stripNulls: false,
    });
    const results = await direct.unsafe(statement) as unknown as {
      body: string;
    }[][];
    return results.at(-1)![0].body === String(i + 1);
  };

  const withBegin = async (i: number) => {
    const rows = await direct.begin(async (tx) => {
      await tx`select set_config('search_path', '"api", "extensions"', true),
        set_config('role', 'authenticated', true),
        set_config('request.jwt.claims', ${claimsJson}, true),
        set_config('request.method', 'POST', true),
        set_config('request.path', '/rpc/gw_bench_add', true),
        set_config('request.headers', ${requestHeaders}, true)`;
      return await tx`select api.gw_bench_add(${i}, 1) as v`;
    });
    return rows[0].v === i + 1;
  };

  for (
    const [name, fn] of [["gateway", viaGateway], ["same SQL", sameSql], [
      "begin",
      withBegin,
    ]] as const
  ) {
    const warm = await phase(`warm-up ${name}`, WARMUP, fn);
    if (warm.errors) {
      throw new Error(`Warm-up of ${name} had ${warm.errors} failed calls`);
    }
  }

  const gwCpu0 = await processCpuUs(gateway.pid);
  const gwPhase = await phase(
    "gateway (HTTP + JWT, separate process)",
    REQUESTS,
    viaGateway,
  );
  const gatewayCpuUs = (await processCpuUs(gateway.pid) - gwCpu0) / REQUESTS;
  const results = [
    gwPhase,
    await phase(
      "direct postgres.js, same single-round-trip SQL",
      REQUESTS,
      sameSql,
    ),
    await phase(
      "direct postgres.js, sql.begin + set_config + call",
      REQUESTS,
      withBegin,
    ),
  ];

  const f = (n: number) => n.toFixed(3).padStart(8);
  console.log(
    `\nTrivial RPC api.gw_bench_add, ${REQUESTS} calls per phase, concurrency ${CONCURRENCY}, ${navigator.hardwareConcurrency} CPUs\n`,
  );
  console.log(
    `${"phase".padEnd(52)} ${"req/s".padStart(8)} ${"p50 ms".padStart(8)} ${"p95 ms".padStart(8)} ${
      "p99 ms".padStart(8)
    } ${"max ms".padStart(8)} ${"client CPU µs/call".padStart(19)}  errors`,
  );
  for (const r of results) {
    console.log(
      `${r.name.padEnd(52)} ${r.rps.toFixed(0).padStart(8)} ${f(r.p50)} ${f(r.p95)} ${f(r.p99)} ${
        f(r.max)
      } ${r.clientCpuUs.toFixed(0).padStart(19)}  ${r.errors}`,
    );
  }
  const [gw, same, begin] = results;
  console.log(
    `\nGateway overhead at p50: ${
      (gw.p50 - same.p50).toFixed(3)
    } ms vs the same SQL sent directly, ` +
      `${(gw.p50 - begin.p50).toFixed(3)} ms vs the hand-written sql.begin transaction.`,
  );
  console.log(
    `Gateway process CPU: ${gatewayCpuUs.toFixed(0)} µs per request ` +
      `(the bench client spends ${
        gw.clientCpuUs.toFixed(0)
      } µs per HTTP call; both share ${navigator.hardwareConcurrency} CPUs with Postgres).`,
  );
  console.log(
    `Throughput: gateway ${(gw.rps / same.rps * 100).toFixed(0)}% of direct same-SQL, ` +
      `${(gw.rps / begin.rps * 100).toFixed(0)}% of direct sql.begin.`,
  );
} finally {
  gateway.kill("SIGTERM");
  await gateway.status;
  await direct.end({ timeout: 5 });
  await admin.unsafe(TEARDOWN);
  await admin.end({ timeout: 5 });
}
