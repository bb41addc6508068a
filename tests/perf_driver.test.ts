/**
 * The load driver's machinery, against a tiny local HTTP target: arrival
 * schedules, the open model (no coordinated omission), dropped iterations,
 * HDR histograms and k6 threshold expressions. No latency values are asserted
 * beyond what the target itself enforces (a fixed server-side delay).
 */
import assert from "node:assert/strict";
import { maxIterations, parseDuration } from "../perf/scenarios/_common.ts";
import type { Executor, Scenario, SeedSummary } from "../perf/scenarios/_types.ts";
// Unit tests of the load driver's private modules (the module under test, as in Deno std).
import { buildSchedule } from "../perf/driver/_schedule.ts";
import { MetricStore, parseSelector } from "../perf/driver/_metrics.ts";
import {
  evaluateThresholds,
  parseThreshold,
  ThresholdSyntaxError,
} from "../perf/driver/_thresholds.ts";
import { LatencyHistogram } from "../perf/driver/_histogram.ts";
import { runScenario } from "../perf/driver/runner.ts";

Deno.test("parseDuration() reads k6 durations", () => {
  assert.deepEqual(parseDuration("500ms"), 500);
  assert.deepEqual(parseDuration("30s"), 30_000);
  assert.deepEqual(parseDuration("1m30s"), 90_000);
  assert.deepEqual(parseDuration("2h"), 7_200_000);
  assert.throws(() => parseDuration("ten seconds"), RangeError);
});

Deno.test("a constant arrival rate starts iterations evenly from time zero", () => {
  const s = buildSchedule({
    executor: "constant-arrival-rate",
    rate: 4,
    timeUnit: "1s",
    duration: "2s",
    preAllocatedVUs: 1,
  });
  assert.deepEqual(s.total, 8);
  assert.deepEqual([0, 1, 2, 7].map((i) => s.startOf(i)), [0, 250, 500, 1750]);
  assert.deepEqual(s.startOf(8), null);
});

Deno.test("a ramping arrival rate follows the integral of its stages", () => {
  const executor: Executor = {
    executor: "ramping-arrival-rate",
    startRate: 0,
    timeUnit: "1s",
    stages: [{ target: 10, duration: "2s" }, { target: 10, duration: "1s" }],
    preAllocatedVUs: 1,
  };
  const s = buildSchedule(executor);
  // 0→10/s over 2 s is 10 iterations, then 10 more in the flat second.
  assert.deepEqual(s.total, 20);
  assert.deepEqual(maxIterations(executor), 20);
  // n(t) = 2.5·t² in the ramp: iteration 10 starts at t = 2 s.
  assertNear(s.startOf(10)!, 2000, 1e-6);
  assertNear(s.startOf(5)!, Math.sqrt(5 / 2.5) * 1000, 1e-6);
  assertNear(s.startOf(15)!, 2500, 1e-6);
  const starts = Array.from({ length: 20 }, (_, i) => s.startOf(i)!);
  assert.ok(
    starts.every((t, i) => i === 0 || t > starts[i - 1]),
    "starts are increasing",
  );
});

Deno.test("threshold expressions parse as k6 writes them and reject nonsense", () => {
  assert.deepEqual(parseThreshold("p(95)<500"), {
    aggregation: "p(95)",
    percentile: 95,
    operator: "<",
    bound: 500,
  });
  assert.deepEqual(parseThreshold("rate <= 0.01").operator, "<=");
  assert.deepEqual(parseThreshold("count==0").bound, 0);
  assert.throws(() => parseThreshold("p95<500"), ThresholdSyntaxError);
  assert.throws(() => parseThreshold("avg<"), ThresholdSyntaxError);
  assert.deepEqual(
    parseSelector("http_req_duration{endpoint:redeem_voucher,batch:1000}"),
    {
      name: "http_req_duration",
      filter: { endpoint: "redeem_voucher", batch: "1000" },
    },
  );
});

Deno.test("thresholds are evaluated per sub-metric with k6's aggregations", () => {
  const store = new MetricStore();
  for (let i = 1; i <= 100; i++) {
    store.add("http_req_duration", i, { endpoint: "a" }, i);
    store.add("http_req_failed", i <= 2 ? 1 : 0, { endpoint: "a" }, i);
  }
  store.add("http_req_duration", 5000, { endpoint: "b" }, 1);
  const verdicts = evaluateThresholds(
    {
      "http_req_duration{endpoint:a}": [
        "p(95)<100",
        "max<100",
        "avg<=50.5",
        "med<50",
      ],
      "http_req_duration{endpoint:b}": ["p(99)<1000"],
      "http_req_failed{endpoint:a}": ["rate<0.01", "rate<0.05"],
      "dropped_iterations": ["count==0"],
      "http_req_duration{endpoint:none}": ["p(95)<1"],
    },
    store,
    10,
  );
  const byExpr = Object.fromEntries(
    verdicts.map((v) => [`${v.metric} ${v.expression}`, v]),
  );
  assert.deepEqual(byExpr["http_req_duration{endpoint:a} p(95)<100"].ok, true);
  assertNear(
    byExpr["http_req_duration{endpoint:a} p(95)<100"].observed!,
    95,
    0.1,
  );
  assert.deepEqual(byExpr["http_req_duration{endpoint:a} max<100"].ok, false);
  assert.deepEqual(byExpr["http_req_duration{endpoint:a} avg<=50.5"].ok, true);
  assert.deepEqual(byExpr["http_req_duration{endpoint:a} med<50"].ok, false);
  assert.deepEqual(
    byExpr["http_req_duration{endpoint:b} p(99)<1000"].ok,
    false,
  );
  assert.deepEqual(byExpr["http_req_failed{endpoint:a} rate<0.01"].ok, false);
  assert.deepEqual(
    byExpr["http_req_failed{endpoint:a} rate<0.05"].observed,
    0.02,
  );
  assert.deepEqual(byExpr["dropped_iterations count==0"].ok, true);
  assert.deepEqual(
    byExpr["http_req_duration{endpoint:none} p(95)<1"].noData,
    true,
  );
  assert.throws(
    () => evaluateThresholds({ http_req_failed: ["p(95)<1"] }, store, 1),
    ThresholdSyntaxError,
  );
});

Deno.test("latency histograms round-trip through the HDR encoding", () => {
  const h = new LatencyHistogram();
  for (let i = 1; i <= 1000; i++) h.record(i / 10);
  const back = LatencyHistogram.decode(h.encode());
  assert.deepEqual(back.count, 1000);
  assertNear(back.percentile(99), 99, 0.1);
  assertNear(back.max, 100, 0.1);
});

function assertNear(actual: number, expected: number, tolerance: number): void {
  assert.ok(
    Math.abs(actual - expected) <= tolerance,
    `${actual} is not within ${tolerance} of ${expected}`,
  );
}

const SUMMARY = {
  operators: [],
  codes: { preview: [], redeem_pool: [] },
} as unknown as SeedSummary;

/** A target that answers every request after `delayMs`; `/fail` answers 503. */
function slowTarget(delayMs: number) {
  const ac = new AbortController();
  let count = 0;
  const server = Deno.serve({
    port: 0,
    hostname: "127.0.0.1",
    signal: ac.signal,
    onListen: () => {},
  }, async (req) => {
    count++;
    await new Promise((r) => setTimeout(r, delayMs));
    const status = new URL(req.url).pathname === "/fail" ? 503 : 200;
    return Response.json({
      ok: status === 200,
      code: status === 200 ? undefined : "PGRST003",
    }, {
      status,
    });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    count: () => count,
    close: async () => {
      ac.abort();
      await server.finished;
    },
  };
}

function probeScenario(
  url: string,
  rate: number,
  maxVUs: number,
  path = "/ok",
): Scenario<undefined> {
  return {
    name: "probe",
    slo: {
      title: "probe",
      throughput: "",
      latency: "",
      errorBudget: "",
      endpoint: "probe",
    },
    options: () => ({
      scenarios: {
        probe: {
          executor: "constant-arrival-rate",
          rate,
          timeUnit: "1s",
          duration: "1s",
          preAllocatedVUs: maxVUs,
          maxVUs,
          exec: "hit",
          gracefulStop: "5s",
        },
      },
      thresholds: {
        "http_req_duration{endpoint:probe}": ["p(95)<100"],
        "http_req_failed{endpoint:probe}": ["rate<0.5"],
        "dropped_iterations{scenario:probe}": ["count==0"],
      },
    }),
    flows: {
      hit: {
        build: ({ iteration }) => ({
          method: "GET",
          url: `${url}${path}?i=${iteration}`,
          headers: {},
          tags: { endpoint: "probe" },
          expectedStatuses: [200],
        }),
        classify: (res, req) => ({
          failed: !req.expectedStatuses.includes(res.status),
          code: res.status === 200 ? null : "PGRST003",
        }),
      },
    },
  };
}

Deno.test({
  name: "iterations start on schedule even when responses are slower than the arrival interval",
  sanitizeResources: false,
  fn: async () => {
    const target = slowTarget(300);
    try {
      const result = await runScenario(probeScenario(target.url, 20, 50), {
        profile: "smoke",
        summary: SUMMARY,
        target: { baseUrl: target.url, anonKey: "x" },
      });
      assert.deepEqual(result.iterations, 20);
      assert.deepEqual(result.dropped, 0);
      // Closed-model drivers would space requests by the 300 ms response time;
      // the open model sends every 50 ms regardless, so all 20 go out within ~1 s.
      const sends = result.requests.map((r) => r.t).sort((a, b) => a - b);
      assert.ok(
        sends[sends.length - 1] < 1200,
        `last request sent at ${sends[sends.length - 1]} ms`,
      );
      // Every response took at least the server's delay, and the histogram saw them all.
      const h = result.store.histogram("http_req_duration", {
        endpoint: "probe",
      });
      assert.deepEqual(h.count, 20);
      assert.ok(
        h.min >= 295,
        `fastest response ${h.min} ms is below the server's 300 ms delay`,
      );
      const p95 = result.verdicts.find((v) => v.expression === "p(95)<100")!;
      assert.deepEqual(p95.ok, false);
      assert.ok(result.verdicts.find((v) => v.expression === "rate<0.5")!.ok);
    } finally {
      await target.close();
    }
  },
});

Deno.test({
  name: "starts that find every VU busy are dropped and counted, as in k6",
  sanitizeResources: false,
  fn: async () => {
    const target = slowTarget(400);
    try {
      const result = await runScenario(probeScenario(target.url, 20, 2), {
        profile: "smoke",
        summary: SUMMARY,
        target: { baseUrl: target.url, anonKey: "x" },
      });
      assert.deepEqual(result.iterations + result.dropped, 20);
      assert.ok(result.dropped >= 10, `only ${result.dropped} dropped`);
      assert.deepEqual(target.count(), result.iterations);
      assert.deepEqual(
        result.verdicts.find((v) => v.metric.startsWith("dropped_iterations"))!
          .ok,
        false,
      );
    } finally {
      await target.close();
    }
  },
});

Deno.test({
  name: "error responses count towards http_req_failed with their code",
  sanitizeResources: false,
  fn: async () => {
    const target = slowTarget(1);
    try {
      const result = await runScenario(
        probeScenario(target.url, 10, 5, "/fail"),
        {
          profile: "smoke",
          summary: SUMMARY,
          target: { baseUrl: target.url, anonKey: "x" },
        },
      );
      assert.deepEqual(result.requests.length, 10);
      assert.ok(
        result.requests.every((r) => r.failed && r.status === 503 && r.code === "PGRST003"),
      );
      const failed = result.verdicts.find((v) => v.expression === "rate<0.5")!;
      assert.deepEqual([failed.ok, failed.observed], [false, 1]);
    } finally {
      await target.close();
    }
  },
});

Deno.test("every scenario profile is runnable: executors map to flows, thresholds parse", async () => {
  const { SCENARIOS } = await import("../perf/scenarios/index.ts");
  const { PROFILES } = await import("../perf/scenarios/_types.ts");
  const { MetricStore } = await import("../perf/driver/_metrics.ts");
  for (const [name, scenario] of Object.entries(SCENARIOS)) {
    assert.equal(scenario.name, name);
    for (const profile of PROFILES) {
      const options = scenario.options(profile);
      for (const [exec, executor] of Object.entries(options.scenarios)) {
        assert.ok(
          scenario.flows[executor.exec ?? "default"],
          `${name}/${profile}/${exec} has a flow`,
        );
        assert.ok(
          buildSchedule(executor).total > 0,
          `${name}/${profile}/${exec} starts iterations`,
        );
      }
      const store = new MetricStore();
      for (const [m, type] of Object.entries(scenario.metrics ?? {})) {
        store.define(m, type);
      }
      const verdicts = evaluateThresholds(options.thresholds, store, 1);
      assert.equal(
        verdicts.length,
        Object.values(options.thresholds).flat().length,
      );
      assert.ok(
        Object.keys(options.thresholds).some((k) =>
          k.startsWith(`http_req_duration{endpoint:${scenario.slo.endpoint}`)
        ),
        `${name}/${profile} has a latency threshold on its SLO endpoint`,
      );
    }
  }
});

Deno.test("each k6 entry file exports options, setup, teardown and one function per flow", async () => {
  const { SCENARIOS } = await import("../perf/scenarios/index.ts");
  for (const [name, scenario] of Object.entries(SCENARIOS)) {
    const text = await Deno.readTextFile(
      new URL(`../perf/k6/${name}.js`, import.meta.url),
    );
    assert.match(text, new RegExp(`from "\\.\\./scenarios/${name}\\.ts"`));
    assert.match(text, /export const options = ctx\.options;/);
    for (const fn of ["setup", "teardown", ...Object.keys(scenario.flows)]) {
      assert.match(
        text,
        new RegExp(`export function ${fn}\\(`),
        `${name}.js exports ${fn}()`,
      );
    }
  }
});

Deno.test("the redeem flow gives every iteration its own code and key, and accepts 409 only on reuse", async () => {
  const { stationRedeemPeak } = await import(
    "../perf/scenarios/station_redeem_peak.ts"
  );
  const summary = {
    operators: [{
      jwt: "a.b.c",
      user_id: "u",
      station_id: "s",
      station_code: "S",
    }],
    codes: { preview: [], redeem_pool: [] },
    generated_at: "x",
  } as unknown as SeedSummary;
  const data = { run_id: "r1", codes: ["C1", "C2"] };
  const target = { baseUrl: "http://x", anonKey: "k" };
  const flow = stationRedeemPeak.flows.redeem;
  const specs = [0, 1, 2].map((iteration) => flow.build({ summary, target, data, iteration }));
  const bodies = specs.map((s) => JSON.parse(s.body!));
  assert.deepEqual(bodies.map((b) => b.code), ["C1", "C2", "C1"]);
  assert.equal(new Set(bodies.map((b) => b.idempotency_key)).size, 3);
  assert.deepEqual(specs.map((s) => s.expectedStatuses), [[200], [200], [
    200,
    409,
  ]]);
  const conflict = (code: string) => ({
    status: 409,
    body: JSON.stringify({ code, message: "", details: null, hint: null }),
  });
  assert.equal(
    flow.classify(conflict("voucher_already_redeemed"), specs[0], {}).failed,
    true,
  );
  assert.equal(
    flow.classify(conflict("voucher_already_redeemed"), specs[2], {}).failed,
    false,
  );
  assert.equal(
    flow.classify(conflict("idempotency_key_reused"), specs[2], {}).failed,
    true,
  );
  assert.equal(
    flow.classify({ status: 200, body: "{}" }, specs[0], {}).failed,
    false,
  );
});

Deno.test("the report renders observed p95/p99 beside each SLO target", async () => {
  const { renderMarkdown, sloLatencyMs } = await import(
    "../perf/report/markdown.ts"
  );
  const { renderChart } = await import("../perf/report/svg.ts");
  const { summarizeScenario } = await import("../perf/driver/summary.ts");
  const { stationRedeemPeak } = await import(
    "../perf/scenarios/station_redeem_peak.ts"
  );
  const store = new MetricStore();
  const requests = [];
  for (let i = 0; i < 100; i++) {
    const durationMs = i < 90 ? 10 : 900;
    const tags = { endpoint: "redeem_voucher" };
    store.add("http_req_duration", durationMs, tags, i * 10);
    store.add("http_req_failed", 0, tags, i * 10);
    requests.push({
      t: i * 10,
      scheduled: i * 10,
      scenario: "station_redeem_peak",
      flow: "redeem",
      endpoint: "redeem_voucher",
      method: "POST",
      status: 200,
      durationMs,
      failed: false,
      code: null,
    });
  }
  const options = stationRedeemPeak.options("smoke");
  const s = summarizeScenario(stationRedeemPeak as Scenario<unknown>, {
    scenario: "station_redeem_peak",
    profile: "smoke",
    startedAt: "2026-01-01T00:00:00Z",
    durationSeconds: 1,
    options,
    setup: { durationMs: 1, requests: 0, error: null },
    teardown: { durationMs: 0, result: null, error: null },
    requests,
    bodies: [],
    store,
    iterations: 100,
    dropped: 0,
    interrupted: 0,
    verdicts: evaluateThresholds(options.thresholds, store, 1),
  });
  assert.equal(sloLatencyMs(s), 500);
  assertNear(s.endpoints.redeem_voucher.latency.p99, 900, 1);
  const md = renderMarkdown({
    version: 1,
    runId: "r",
    startedAt: "a",
    finishedAt: "b",
    profile: "smoke",
    env: { name: "test", baseUrl: "http://x" },
    machine: { cpus: 2 },
    poolSize: 8,
    seed: null,
    scenarios: [s],
    telemetry: null,
    exitCode: 99,
    notes: [],
  });
  const row = md.split("\n").find((l) => l.startsWith("| Station redeem peak"))!;
  assert.ok(row.includes("p95 ≤ 500 ms") && row.includes("900 ms"), row);
  assert.ok(
    row.includes("❌"),
    "the p95 threshold failed (p95 lands on the 900 ms tail)",
  );
  const svg = renderChart({
    title: "t",
    bucketSeconds: 1,
    points: s.timeline,
    sloMs: 500,
  });
  assert.ok(svg.startsWith("<svg") && svg.includes("SLO 500 ms"));
});

Deno.test("the bulk send's WhatsApp error share counts 130429 and 5xx answers only", async () => {
  const { wabaOutcomeNote } = await import("../perf/driver/main.ts");
  const note = wabaOutcomeNote(
    { outcomes: { accepted: 100, waba_130429: 1 } },
    { outcomes: { accepted: 190, waba_130429: 6, http_503: 5, waba_131056: 10 } },
  )!;
  // 90 accepted + 5 throttled + 5 × 503 + 10 pair-rate = 110 answers, 10 of them 429/5xx.
  assert.match(note, /answered 110 sends/);
  assert.match(note, /9\.09% 429\/5xx/);
  assert.equal(wabaOutcomeNote({ outcomes: { accepted: 5 } }, { outcomes: { accepted: 5 } }), null);
});

Deno.test("pg_stat_statements rows are attributed to the API RPC the gateway called", async () => {
  const { rpcOfStatement } = await import("../perf/driver/telemetry.ts");
  assert.equal(
    rpcOfStatement(
      'select pg_catalog.to_json("api"."redeem_voucher"("code" := pgrst_args."code"))::text as body from p',
    ),
    "redeem_voucher",
  );
  assert.equal(
    rpcOfStatement("select api.report_message_results($1::text::jsonb, $2) as r"),
    "report_message_results",
  );
  assert.equal(rpcOfStatement("select * from app.vouchers v where v.code = $1"), null);
});
