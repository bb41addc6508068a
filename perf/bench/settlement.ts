/**
 * Benchmark (prints, never asserts): the station settlement report at 1M
 * redemptions.
 *
 * Seeds 1,000,000 redemptions over 90 days at 100 stations in two currencies
 * (1% undone) with set-based SQL (perf/seed/redemptions.ts), committed and
 * vacuumed so the timings see what a production table looks like, then times
 * `api.station_settlement` called as an admin — every station for 1, 7 and 31
 * days, one station for 31 days — and a page of `api.list_redemptions`, each
 * `--runs` times; prints p50 / p95 and the redemptions aggregated per second
 * (rows in the period ÷ p50). Last, a 31-day settlement of every station
 * exported page by page as CSV through the gateway (`Accept: text/csv`),
 * timed end to end.
 *
 * The seed (tag 9) stays in the local database and the next run reuses it:
 * vouchers are never deleted, and deleting a million would run each
 * referencing table's foreign-key check per voucher (`deno task reset` starts
 * afresh).
 *
 * Usage: deno run -A perf/bench/settlement.ts [--n 1000000] [--runs 7]
 *
 * @module
 */
import postgres from "postgres";
import { parseArgs } from "node:util";
import { ANON_KEY, API_URL, DB_URL, mintJwt } from "../../local/env.ts";
import { LatencyHistogram } from "../driver/_histogram.ts";
import { seedRedemptions } from "../seed/redemptions.ts";

const { values: args } = parseArgs({
  args: Deno.args,
  options: {
    n: { type: "string", default: "1000000" },
    runs: { type: "string", default: "7" },
  },
});
const N = Number(args.n);
const RUNS = Number(args.runs);
const TAG = 9;

const sql = postgres(DB_URL, { max: 2, onnotice: () => {} });

const isoDay = (msAgo: number) => new Date(Date.now() - msAgo).toISOString().slice(0, 10);
const DAY = 86_400_000;

try {
  const t0 = performance.now();
  const seeded = await seedRedemptions(sql, { n: N, tag: TAG });
  await sql`vacuum analyze app.redemptions`;
  await sql`vacuum analyze app.vouchers`;
  const [{ total }] = await sql`select count(*)::int as total from app.redemptions`;
  console.log(
    `settlement benchmark: ${total.toLocaleString("en")} redemptions in app.redemptions ` +
      `(${N.toLocaleString("en")} seeded over 90 days, 100 stations; seed and vacuum ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s); ${RUNS} runs each. Shared 2-core machine: figures vary between runs.`,
  );

  const [user] = await sql`
    insert into auth.users (email) values (${`settlement-bench-${crypto.randomUUID()}@bench`}) returning id`;
  await sql`insert into app.staff (user_id, role) values (${user.id}, 'admin')`;
  const claims = JSON.stringify({ sub: user.id, role: "authenticated" });
  const station = seeded.stationIds[0];

  const cases: { label: string; call: string; from: string; to: string; station?: string }[] = [
    {
      label: "settlement, every station, 1 day",
      from: isoDay(10 * DAY),
      to: isoDay(10 * DAY),
      call: "",
    },
    {
      label: "settlement, every station, 7 days",
      from: isoDay(16 * DAY),
      to: isoDay(10 * DAY),
      call: "",
    },
    {
      label: "settlement, every station, 31 days",
      from: isoDay(40 * DAY),
      to: isoDay(10 * DAY),
      call: "",
    },
    {
      label: "settlement, one station, 31 days",
      from: isoDay(40 * DAY),
      to: isoDay(10 * DAY),
      station,
      call: "",
    },
  ];
  for (const c of cases) {
    c.call = `select count(*)::int as n from api.station_settlement('${c.from}', '${c.to}'${
      c.station ? `, station_id => '${c.station}'` : ""
    }, page_size => 500)`;
  }
  const since = new Date(Date.now() - 40 * DAY).toISOString();
  cases.push({
    label: "list_redemptions, one page of 200",
    from: since,
    to: since,
    call: `select count(*)::int as n from api.list_redemptions(since => '${since}')`,
  });

  for (const c of cases) {
    const [{ input }] = c.label.startsWith("settlement")
      ? await sql.unsafe(
        `select count(*)::int as input from app.redemptions
         where redeemed_at >= $1::date and redeemed_at < $2::date + 1 ${
          c.station ? "and station_id = $3" : ""
        }`,
        c.station ? [c.from, c.to, c.station] : [c.from, c.to],
      )
      : [{ input: 200 }];
    const times = new LatencyHistogram();
    let rows = 0;
    for (let i = 0; i < RUNS; i++) {
      const start = performance.now();
      const [, [r]] = await sql.unsafe(
        `select set_config('request.jwt.claims', '${claims}', false); ${c.call}`,
      ).simple() as unknown as [unknown, { n: number }[]];
      times.record(performance.now() - start);
      rows = r.n;
    }
    const p50 = times.percentile(50);
    console.log(
      `${c.label.padEnd(38)} p50 ${p50.toFixed(1).padStart(7)} ms  p95 ${
        times.percentile(95).toFixed(1).padStart(7)
      } ms  ${rows.toString().padStart(4)} rows out  ${
        input.toLocaleString("en").padStart(9)
      } redemptions in  ${
        Math.round(input / (p50 / 1000)).toLocaleString("en").padStart(11)
      } redemptions/s`,
    );
  }

  // The whole 31-day export of every station, page by page, as CSV through the gateway.
  const jwt = await mintJwt({ sub: user.id });
  const exportTimes = new LatencyHistogram();
  let lines = 0;
  let pages = 0;
  for (let i = 0; i < Math.min(RUNS, 3); i++) {
    const start = performance.now();
    let after: string | null = null;
    lines = 0;
    pages = 0;
    while (true) {
      const res: Response = await fetch(`${API_URL}/rest/v1/rpc/station_settlement`, {
        method: "POST",
        headers: {
          apikey: ANON_KEY,
          Authorization: `Bearer ${jwt}`,
          "Content-Type": "application/json",
          "Content-Profile": "api",
          Accept: "text/csv",
        },
        body: JSON.stringify({
          from_date: isoDay(40 * DAY),
          to_date: isoDay(10 * DAY),
          page_size: 500,
          ...(after ? { after } : {}),
        }),
      });
      const text: string = await res.text();
      if (res.status !== 200) throw new Error(`export answered ${res.status}: ${text}`);
      const body: string[] = text.split("\n").slice(1).filter((l: string) => l !== "");
      pages++;
      lines += body.length;
      if (body.length < 500) break;
      after = body.at(-1)!.split(",").at(-1)!;
    }
    exportTimes.record(performance.now() - start);
  }
  const p50 = exportTimes.percentile(50);
  console.log(
    `${"CSV export via gateway, 31 days, all".padEnd(38)} p50 ${
      p50.toFixed(0).padStart(7)
    } ms  p95 ${
      exportTimes.percentile(95).toFixed(0).padStart(7)
    } ms  ${lines} rows in ${pages} pages  ${
      Math.round(lines / (p50 / 1000)).toLocaleString("en")
    } rows/s`,
  );
  await sql`update app.staff set active = false where user_id = ${user.id}`;
} finally {
  await sql.end();
}
