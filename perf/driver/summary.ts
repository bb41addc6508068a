/**
 * Turns scenario results into the run summary (`summary.json` of an evidence
 * folder): per-scenario and per-endpoint latency from HDR histograms, errors by
 * status and code, dropped iterations, custom metrics, threshold verdicts and a
 * per-second (or per-5-second) timeline for the charts.
 *
 * @module
 */
import type { Scenario } from "../scenarios/_types.ts";
import { LatencyHistogram, type LatencyStats } from "./_histogram.ts";
import type { ThresholdVerdict } from "./_thresholds.ts";
import type { RequestRecord, ScenarioResult } from "./runner.ts";
import type { TelemetryReport } from "./telemetry.ts";
import { rpcOfStatement } from "./telemetry.ts";

/** One bucket of the timeline. */
export interface TimelinePoint {
  /** Bucket start, seconds since the load phase started. */
  t: number;
  requests: number;
  failed: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

/** Latency and error figures of one endpoint (or of the whole scenario). */
export interface EndpointSummary {
  requests: number;
  failed: number;
  failedRate: number;
  latency: LatencyStats;
  /** The HDR histogram, compressed base64 (HdrHistogram's standard encoding). */
  histogram: string;
}

/** The summary of one scenario run. */
export interface ScenarioSummary {
  name: string;
  slo: Scenario["slo"];
  profile: string;
  startedAt: string;
  durationSeconds: number;
  executors: Record<string, unknown>;
  iterations: number;
  dropped: number;
  interrupted: number;
  requestsPerSecond: number;
  overall: EndpointSummary;
  endpoints: Record<string, EndpointSummary>;
  errors: { byStatus: Record<string, number>; byCode: Record<string, number> };
  /** Custom metrics: counters (sum and per-second rate), gauges (last, min, max), rates. */
  metrics: Record<
    string,
    {
      type: string;
      count: number;
      sum: number;
      rate: number;
      last: number;
      min: number;
      max: number;
    }
  >;
  /** Scheduling lag of iteration starts (driver health: should stay near zero). */
  startLag: LatencyStats;
  verdicts: ThresholdVerdict[];
  setup: ScenarioResult["setup"];
  teardown: ScenarioResult["teardown"];
  bucketSeconds: number;
  timeline: TimelinePoint[];
}

/** Telemetry condensed for the report. */
export interface TelemetrySummary {
  intervalMs: number;
  samples: number;
  gatewayActiveMax: number;
  gatewayTotalMax: number;
  lockWaitsMax: number;
  hostCpuMean: number | null;
  hostCpuMax: number | null;
  driverCpuMean: number | null;
  /** Connections by application and state at the busiest sample. */
  busiest: { application: string; state: string; count: number }[];
  /** Top statements by total time, with the RPC they belong to when recognisable. */
  statements: {
    rpc: string | null;
    query: string;
    calls: number;
    meanMs: number;
    maxMs: number;
    totalMs: number;
  }[];
  warnings: string[];
}

/** Everything a run produced, as written to `summary.json`. */
export interface RunSummary {
  version: 1;
  runId: string;
  startedAt: string;
  finishedAt: string;
  profile: string;
  env: { name: string; baseUrl: string };
  machine: Record<string, string | number>;
  /** Pool size the gateway under test was configured with (null when unknown, e.g. staging). */
  poolSize: number | null;
  seed: { seed: number; counts: Record<string, number> } | null;
  scenarios: ScenarioSummary[];
  telemetry: TelemetrySummary | null;
  /** 0 when every threshold passed, 99 otherwise (k6's exit code). */
  exitCode: number;
  notes: string[];
}

function endpointSummary(records: RequestRecord[]): EndpointSummary {
  const h = new LatencyHistogram();
  let failed = 0;
  for (const r of records) {
    h.record(r.durationMs);
    if (r.failed) failed++;
  }
  return {
    requests: records.length,
    failed,
    failedRate: records.length ? failed / records.length : 0,
    latency: h.stats(),
    histogram: h.encode(),
  };
}

/** Buckets requests by send time. */
export function timeline(
  records: RequestRecord[],
  durationSeconds: number,
): { bucketSeconds: number; points: TimelinePoint[] } {
  const bucketSeconds = durationSeconds > 180 ? 5 : 1;
  const n = Math.max(1, Math.ceil(durationSeconds / bucketSeconds));
  const buckets = Array.from(
    { length: n },
    () => ({ h: new LatencyHistogram(), failed: 0 }),
  );
  for (const r of records) {
    const i = Math.min(
      n - 1,
      Math.max(0, Math.floor(r.t / 1000 / bucketSeconds)),
    );
    buckets[i].h.record(r.durationMs);
    if (r.failed) buckets[i].failed++;
  }
  return {
    bucketSeconds,
    points: buckets.map((b, i) => ({
      t: i * bucketSeconds,
      requests: b.h.count,
      failed: b.failed,
      p50: b.h.percentile(50),
      p95: b.h.percentile(95),
      p99: b.h.percentile(99),
      max: b.h.max,
    })),
  };
}

/** Summarises one scenario result. */
export function summarizeScenario(
  scenario: Scenario<unknown>,
  result: ScenarioResult,
): ScenarioSummary {
  const byEndpoint = new Map<string, RequestRecord[]>();
  const byStatus: Record<string, number> = {};
  const byCode: Record<string, number> = {};
  for (const r of result.requests) {
    let list = byEndpoint.get(r.endpoint);
    if (!list) byEndpoint.set(r.endpoint, list = []);
    list.push(r);
    byStatus[String(r.status)] = (byStatus[String(r.status)] ?? 0) + 1;
    if (r.code) byCode[r.code] = (byCode[r.code] ?? 0) + 1;
  }
  const endpoints: Record<string, EndpointSummary> = {};
  for (
    const [name, list] of [...byEndpoint].sort(([a], [b]) => a.localeCompare(b))
  ) {
    endpoints[name] = endpointSummary(list);
  }
  const metrics: ScenarioSummary["metrics"] = {};
  for (const name of Object.keys(scenario.metrics ?? {})) {
    const samples = result.store.select(name);
    const values = samples.map((s) => s.value);
    const sum = values.reduce((a, b) => a + b, 0);
    metrics[name] = {
      type: scenario.metrics![name],
      count: values.length,
      sum,
      rate: sum / Math.max(result.durationSeconds, 1e-9),
      last: values.length ? values[values.length - 1] : 0,
      min: values.length ? values.reduce((a, b) => Math.min(a, b)) : 0,
      max: values.length ? values.reduce((a, b) => Math.max(a, b)) : 0,
    };
  }
  const tl = timeline(result.requests, result.durationSeconds);
  return {
    name: scenario.name,
    slo: scenario.slo,
    profile: result.profile,
    startedAt: result.startedAt,
    durationSeconds: result.durationSeconds,
    executors: result.options.scenarios,
    iterations: result.iterations,
    dropped: result.dropped,
    interrupted: result.interrupted,
    requestsPerSecond: result.requests.length /
      Math.max(result.durationSeconds, 1e-9),
    overall: endpointSummary(result.requests),
    endpoints,
    errors: { byStatus, byCode },
    metrics,
    startLag: result.store.histogram("iteration_start_lag").stats(),
    verdicts: result.verdicts,
    setup: result.setup,
    teardown: result.teardown,
    bucketSeconds: tl.bucketSeconds,
    timeline: tl.points,
  };
}

const mean = (
  xs: number[],
) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);

/** Condenses telemetry for the report. */
export function summarizeTelemetry(
  report: TelemetryReport,
  topStatements = 15,
): TelemetrySummary {
  const s = report.samples;
  const busiest = s.reduce<(typeof s)[number] | null>(
    (best, x) => (!best || x.gatewayActive > best.gatewayActive ? x : best),
    null,
  );
  const cpu = s.map((x) => x.hostCpu).filter((x): x is number => x !== null);
  const driver = s.map((x) => x.driverCpu).filter((x): x is number => x !== null);
  return {
    intervalMs: report.intervalMs,
    samples: s.length,
    gatewayActiveMax: s.reduce((a, x) => Math.max(a, x.gatewayActive), 0),
    gatewayTotalMax: s.reduce((a, x) => Math.max(a, x.gatewayTotal), 0),
    lockWaitsMax: s.reduce((a, x) => Math.max(a, x.lockWaits), 0),
    hostCpuMean: mean(cpu),
    hostCpuMax: cpu.length ? cpu.reduce((a, b) => Math.max(a, b)) : null,
    driverCpuMean: mean(driver),
    busiest: busiest?.connections ?? [],
    // The top statements overall, then every API RPC call the top missed.
    statements: [
      ...report.statements.slice(0, topStatements),
      ...report.statements.slice(topStatements).filter((st) => rpcOfStatement(st.query) !== null),
    ].map((st) => ({
      rpc: rpcOfStatement(st.query),
      query: st.query,
      calls: st.calls,
      meanMs: st.meanMs,
      maxMs: st.maxMs,
      totalMs: st.totalMs,
    })),
    warnings: report.warnings,
  };
}

/** k6's exit code for a set of verdicts: 99 when any threshold failed. */
export function exitCodeFor(
  scenarios: { verdicts: ThresholdVerdict[] }[],
): number {
  return scenarios.some((s) => s.verdicts.some((v) => !v.ok)) ? 99 : 0;
}
