/**
 * Smoke of the load harness against the running local stack: seed the default
 * dataset, run every scenario's smoke profile through the real CLI
 * (`perf/driver/main.ts`), and check that the harness did its job — requests
 * made, histograms populated, thresholds evaluated, evidence and report written.
 * It never asserts on latency values or on thresholds passing: that is what the
 * perf runs report, not what a test decides.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import postgres from "postgres";
import { DB_URL } from "../local/env.ts";
import { seedDataset, writeSummary } from "../perf/seed/seed.ts";
// Private modules of the harness under test (the seed's codes, the driver's histogram).
import { checkChar, codeSql, seededCode } from "../perf/seed/_deterministic.ts";
import { LatencyHistogram } from "../perf/driver/_histogram.ts";
import { loadSeedSummary } from "../perf/seed/summary_schema.ts";
import { targetEnv } from "../perf/driver/target_env.ts";
import { SCENARIOS } from "../perf/scenarios/index.ts";
import type { RunSummary } from "../perf/driver/summary.ts";

const ROOT = new URL("..", import.meta.url).pathname;

Deno.test("seeded voucher codes carry the same check character as app.code_check_char", async () => {
  const sql = postgres(DB_URL, { max: 1, onnotice: () => {} });
  try {
    const rows = await sql.unsafe(
      `select n::int, ${codeSql("n", "$1")} as code,
              app.code_check_char(left(${codeSql("n", "$1")}, 14)) as check
       from generate_series(1, 500) n`,
      [7],
    );
    assert.equal(rows.length, 500);
    for (const r of rows) {
      assert.equal(
        r.code,
        seededCode(7, r.n),
        `code ${r.n} differs between SQL and TypeScript`,
      );
      assert.equal(r.code.slice(14), r.check, `check character of ${r.code}`);
      assert.equal(checkChar(r.code.slice(0, 14)), r.check);
    }
  } finally {
    await sql.end();
  }
});

Deno.test({
  name: "every scenario's smoke profile runs end to end and leaves complete evidence",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const tmp = await Deno.makeTempDir({ prefix: "perf_smoke_" });
    try {
      // 1. The default dataset (idempotent: a second seed adds nothing).
      const summaryPath = join(tmp, "perf_seed_summary.json");
      const env = { ...targetEnv(), summaryPath };
      const summary = await seedDataset(env, { log: () => {}, tokenTtl: "1h" });
      await writeSummary(summaryPath, summary);
      const again = await seedDataset(env, { log: () => {}, tokenTtl: "1h" });
      assert.equal(
        again.counts.vouchers,
        summary.counts.vouchers,
        "re-seeding adds no vouchers",
      );
      const loaded = await loadSeedSummary(summaryPath);
      assert.equal(loaded.operators.length, 9);
      assert.equal(loaded.counts.stations, 50);
      assert.ok(
        loaded.codes.preview.length > 0 && loaded.codes.redeem_pool.length > 0,
      );

      // 2. The CLI, as ops run it.
      const out = join(tmp, "evidence");
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "perf/driver/main.ts",
          "--profile",
          "smoke",
          "--out",
          out,
        ],
        cwd: ROOT,
        env: { PERF_SUMMARY: summaryPath, NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(180_000),
      });
      const { code, stdout, stderr } = await child.output();
      const text = new TextDecoder().decode(stdout) +
        new TextDecoder().decode(stderr);
      assert.ok(
        [0, 99].includes(code),
        `perf:run exited ${code} (0 or 99 expected):\n${text}`,
      );

      // 3. The evidence.
      const run = JSON.parse(
        await Deno.readTextFile(join(out, "summary.json")),
      ) as RunSummary;
      assert.equal(
        run.exitCode,
        code,
        "summary.json records the process exit code",
      );
      assert.equal(run.profile, "smoke");
      assert.deepEqual(
        run.scenarios.map((s) => s.name).sort(),
        Object.keys(SCENARIOS).sort(),
      );
      let totalRequests = 0;
      for (const s of run.scenarios) {
        assert.ok(s.overall.requests > 0, `${s.name} made requests`);
        assert.ok(
          s.endpoints[s.slo.endpoint]?.requests > 0,
          `${s.name} hit its SLO endpoint ${s.slo.endpoint}`,
        );
        for (const [name, e] of Object.entries(s.endpoints)) {
          const h = LatencyHistogram.decode(e.histogram);
          assert.equal(
            h.count,
            e.requests,
            `${s.name}/${name} histogram holds every request`,
          );
          assert.ok(
            e.latency.max >= e.latency.p50 && e.latency.p50 > 0,
            `${s.name}/${name} has latency figures`,
          );
        }
        const thresholds = Object.values(SCENARIOS[s.name].options("smoke").thresholds).flat()
          .length;
        assert.equal(
          s.verdicts.length,
          thresholds,
          `${s.name}: every threshold has a verdict`,
        );
        for (const v of s.verdicts) {
          assert.equal(typeof v.ok, "boolean");
          assert.ok(
            v.noData || typeof v.observed === "number",
            `${v.metric} ${v.expression} was evaluated`,
          );
        }
        assert.ok(
          s.timeline.some((p) => p.requests > 0),
          `${s.name} timeline has data`,
        );
        totalRequests += s.overall.requests;
      }
      if (run.scenarios.some((s) => s.verdicts.some((v) => !v.ok))) {
        assert.equal(code, 99);
      } else assert.equal(code, 0);

      const samples = (await Deno.readTextFile(join(out, "samples.ndjson")))
        .trim().split("\n");
      assert.equal(
        samples.length,
        totalRequests,
        "one sample line per request",
      );
      assert.ok(typeof JSON.parse(samples[0]).durationMs === "number");

      const telemetry = (await Deno.readTextFile(join(out, "telemetry.ndjson")))
        .trim().split("\n");
      assert.ok(telemetry.length >= 2, "telemetry was sampled during the run");
      assert.ok(
        Array.isArray(
          JSON.parse(
            await Deno.readTextFile(join(out, "pg_stat_statements.json")),
          ),
        ),
      );
      assert.ok(run.telemetry && run.telemetry.samples >= 2);

      const bulk = await Deno.readTextFile(
        join(out, "campaign_bulk_send", "responses.ndjson"),
      );
      assert.ok(
        bulk.includes('"flow":"trigger"'),
        "the dispatcher's answers are kept",
      );

      const report = await Deno.readTextFile(join(out, "report.md"));
      assert.match(report, /## SLO table \(observed\)/);
      for (const s of run.scenarios) {
        assert.ok(
          report.includes(s.slo.title),
          `report has a row for ${s.slo.title}`,
        );
        const svg = await Deno.readTextFile(
          join(out, "charts", `${s.name}.svg`),
        );
        assert.ok(
          svg.startsWith("<svg") && svg.includes("</svg>"),
          `${s.name} chart is an SVG`,
        );
      }
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
