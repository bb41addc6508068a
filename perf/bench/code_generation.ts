/**
 * Benchmark: voucher code generation in Postgres (`app.new_codes`) and in
 * TypeScript (`generateCode`). Prints figures; asserts nothing.
 *
 *   deno run -A perf/bench/code_generation.ts [--runs 15]
 *
 * For each batch size it reports the wall time of
 * `select count(*) from app.new_codes(n)` seen by the client (one round trip on
 * loopback included) and the server's own execution time from
 * `explain (analyze, timing off)`, as min / median / max over the runs, with the
 * codes per second at the median. Needs the local cluster (`deno task start`).
 *
 * @module
 */
import postgres from "postgres";
import { parseArgs } from "node:util";
import { DB_URL } from "../../local/cluster.ts";
import { generateCode } from "../../client/voucher_code.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { runs: { type: "string" } },
});
const RUNS = Math.min(Math.max(Number(values.runs ?? 15), 3), 200);
const SIZES = [1_000, 5_000, 100_000];

interface Summary {
  min: number;
  median: number;
  max: number;
}

function summarise(samples: number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    min: sorted[0],
    median: sorted[Math.floor(sorted.length / 2)],
    max: sorted.at(-1)!,
  };
}

const ms = (x: number) => x.toFixed(2).padStart(8);
const rate = (n: number, millis: number) =>
  `${Math.round(n / (millis / 1000)).toLocaleString("en-US")} codes/s`;

const sql = postgres(DB_URL, {
  max: 1,
  connect_timeout: 5,
  onnotice: () => {},
  connection: {
    statement_timeout: 60_000,
    application_name: "bench_code_generation",
  },
});

try {
  console.log(
    `app.new_codes(n) — ${RUNS} runs per size (after 2 warm-up calls)`,
  );
  console.log(
    "       n |  wall min   median      max |  server min   median      max | at median (server)",
  );
  for (const n of SIZES) {
    for (let i = 0; i < 2; i++) {
      await sql`select count(*) from app.new_codes(${n}::integer)`;
    }
    const wall: number[] = [];
    const server: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t0 = performance.now();
      const [{ count }] = await sql`select count(*)::integer from app.new_codes(${n}::integer)`;
      wall.push(performance.now() - t0);
      if (count !== n) {
        throw new Error(`app.new_codes(${n}) returned ${count} codes`);
      }
      const [row] = await sql.unsafe(
        `explain (analyze, timing off, format json) select count(*) from app.new_codes(${n})`,
      );
      server.push(row["QUERY PLAN"][0]["Execution Time"]);
    }
    const w = summarise(wall);
    const s = summarise(server);
    console.log(
      `${n.toLocaleString("en-US").padStart(8)} | ${ms(w.min)} ${ms(w.median)} ${ms(w.max)} |` +
        `   ${ms(s.min)} ${ms(s.median)} ${ms(s.max)} | ${rate(n, s.median)}`,
    );
  }
} finally {
  await sql.end({ timeout: 5 });
}

// TypeScript, for comparison (what a station or a script can do client-side).
{
  const n = 100_000;
  for (let i = 0; i < 1_000; i++) generateCode();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) generateCode();
  const elapsed = performance.now() - t0;
  console.log(
    `generateCode() × ${n.toLocaleString("en-US")}: ${ms(elapsed)} ms, ${rate(n, elapsed)}`,
  );
}
