/**
 * The local open-model driver: runs one scenario module the way k6 runs its
 * arrival-rate executors. Each flow's iterations start on their schedule
 * whether or not earlier ones finished (no coordinated omission); at most
 * `maxVUs` are in flight, and a start that finds none free is dropped and
 * counted in `dropped_iterations`, as in k6.
 *
 * @module
 */
import { parseDuration } from "../scenarios/_common.ts";
import type {
  Flow,
  K6Options,
  Outcome,
  Profile,
  Program,
  RequestSpec,
  ResponseLike,
  Scenario,
  SeedSummary,
  Target,
} from "../scenarios/_types.ts";
import { send, type TimedResponse } from "./_http.ts";
import { MetricStore } from "./_metrics.ts";
import { buildSchedule } from "./_schedule.ts";
import { evaluateThresholds, type ThresholdVerdict } from "./_thresholds.ts";

/** One request made by a flow iteration. */
export interface RequestRecord {
  /** Milliseconds since the scenario's load phase started, when the request was sent. */
  t: number;
  /** Scheduled start of the iteration (same clock). */
  scheduled: number;
  scenario: string;
  flow: string;
  endpoint: string;
  method: string;
  status: number;
  durationMs: number;
  failed: boolean;
  code: string | null;
}

/** A response body kept as evidence (flows with `recordBodies`). */
export interface BodyRecord {
  t: number;
  flow: string;
  status: number;
  durationMs: number;
  body: string | null;
}

/** Everything a scenario run produced. */
export interface ScenarioResult {
  scenario: string;
  profile: Profile;
  startedAt: string;
  /** Length of the load phase (first scheduled start until every iteration ended), seconds. */
  durationSeconds: number;
  options: K6Options;
  setup: { durationMs: number; requests: number; error: string | null };
  teardown: {
    durationMs: number;
    result: Record<string, unknown> | null;
    error: string | null;
  };
  requests: RequestRecord[];
  bodies: BodyRecord[];
  store: MetricStore;
  iterations: number;
  dropped: number;
  interrupted: number;
  verdicts: ThresholdVerdict[];
}

/** How to run a scenario. */
export interface RunOptions {
  profile: Profile;
  summary: SeedSummary;
  target: Target;
  /** Replaces `scenario.options(profile)` (pool sizing drives other rates). */
  options?: K6Options;
  /** Skip setup (flows then fall back to the seed summary's pools). */
  skipSetup?: boolean;
  /** Skip teardown. */
  skipTeardown?: boolean;
  /** Stops scheduling new iterations and aborts in-flight ones. */
  signal?: AbortSignal;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
  /** Sends a request; defaults to `fetch` (tests inject fakes). */
  transport?: (
    spec: RequestSpec,
    signal?: AbortSignal,
  ) => Promise<TimedResponse>;
}

/** Raised when a setup or teardown program fails; the load phase does not run. */
export class ScenarioSetupError extends Error {
  override name = "ScenarioSetupError";
}

/** Drives a setup/teardown generator with real requests. */
export async function runProgram<R>(
  program: Program<R>,
  transport: (spec: RequestSpec) => Promise<ResponseLike>,
): Promise<{ result: R; requests: number }> {
  let requests = 0;
  let step = program.next();
  while (!step.done) {
    requests++;
    const res = await transport(step.value);
    step = program.next(res);
  }
  return { result: step.value, requests };
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (ms <= 0 || signal?.aborted) return resolve();
    const id = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(id);
      resolve();
    }, { once: true });
  });

/**
 * Runs a scenario: setup, every flow's executor concurrently, teardown, then
 * threshold evaluation.
 *
 * @example
 * const result = await runScenario(stationRedeemPeak, { profile: "quick", summary, target });
 * result.verdicts.every((v) => v.ok);
 */
export async function runScenario<D>(
  scenario: Scenario<D>,
  opts: RunOptions,
): Promise<ScenarioResult> {
  const transport = opts.transport ?? send;
  const log = opts.log ?? (() => {});
  const options = opts.options ?? scenario.options(opts.profile);
  const store = new MetricStore();
  for (const [name, type] of Object.entries(scenario.metrics ?? {})) {
    store.define(name, type);
  }
  const ctx = {
    summary: opts.summary,
    target: opts.target,
    profile: opts.profile,
  };

  // Setup ------------------------------------------------------------------------
  const setupStarted = performance.now();
  let data = undefined as D;
  let setupRequests = 0;
  if (scenario.setup && !opts.skipSetup) {
    try {
      const out = await runProgram(
        scenario.setup(ctx),
        (spec) => transport(spec, opts.signal),
      );
      data = out.result;
      setupRequests = out.requests;
    } catch (err) {
      throw new ScenarioSetupError(
        `Setup of scenario "${scenario.name}" failed: ${err instanceof Error ? err.message : err}`,
        { cause: err },
      );
    }
  }
  const setupMs = performance.now() - setupStarted;
  log(
    `${scenario.name}: setup done in ${(setupMs / 1000).toFixed(1)} s (${setupRequests} requests)`,
  );

  // Load phase -------------------------------------------------------------------
  const requests: RequestRecord[] = [];
  const bodies: BodyRecord[] = [];
  const abort = new AbortController();
  const onOuterAbort = () => abort.abort();
  opts.signal?.addEventListener("abort", onOuterAbort, { once: true });
  const startedAt = new Date().toISOString();
  const t0 = performance.now();
  const now = () => performance.now() - t0;
  let iterations = 0;
  let dropped = 0;
  let interrupted = 0;

  async function iterate(
    flowName: string,
    flow: Flow<D>,
    state: Record<string, unknown>,
    i: number,
    scheduled: number,
  ) {
    const t = now();
    const baseTags = { scenario: scenario.name, flow: flowName };
    store.add("iteration_start_lag", Math.max(0, t - scheduled), baseTags, t);
    let spec: RequestSpec;
    try {
      spec = flow.build({
        summary: opts.summary,
        target: opts.target,
        data,
        iteration: i,
      });
    } catch (err) {
      // A builder that throws is a harness bug: count it as a failed iteration, loudly.
      log(
        `${scenario.name}/${flowName}: iteration ${i} could not build its request: ${err}`,
      );
      store.add(
        "http_req_failed",
        1,
        { ...baseTags, endpoint: "build_error" },
        t,
      );
      return;
    }
    const res = await transport(spec, abort.signal);
    const sentAt = t;
    let outcome: Outcome;
    try {
      outcome = flow.classify(res, spec, state);
    } catch (err) {
      outcome = { failed: true, code: `classify_error: ${err}` };
    }
    if (res.error === "interrupted") interrupted++;
    const tags = {
      ...baseTags,
      ...spec.tags,
      method: spec.method,
      status: String(res.status),
      expected_response: String(!outcome.failed),
    };
    const done = now();
    store.add("http_reqs", 1, tags, sentAt);
    store.add("http_req_duration", res.durationMs, tags, sentAt);
    store.add("http_req_failed", outcome.failed ? 1 : 0, tags, sentAt);
    store.add("iterations", 1, baseTags, sentAt);
    store.add("iteration_duration", done - t, baseTags, sentAt);
    for (const [metric, value] of Object.entries(outcome.metrics ?? {})) {
      store.add(metric, value, tags, sentAt);
    }
    iterations++;
    requests.push({
      t: sentAt,
      scheduled,
      scenario: scenario.name,
      flow: flowName,
      endpoint: spec.tags.endpoint,
      method: spec.method,
      status: res.status,
      durationMs: res.durationMs,
      failed: outcome.failed,
      code: outcome.code,
    });
    if (flow.recordBodies) {
      bodies.push({
        t: sentAt,
        flow: flowName,
        status: res.status,
        durationMs: res.durationMs,
        body: res.body,
      });
    }
  }

  async function runExecutor(
    execName: string,
    executor: K6Options["scenarios"][string],
  ) {
    const flowName = executor.exec ?? "default";
    const flow = scenario.flows[flowName];
    if (!flow) {
      throw new ScenarioSetupError(
        `Scenario "${scenario.name}" has no flow "${flowName}" (executor "${execName}")`,
      );
    }
    const schedule = buildSchedule(executor);
    const state: Record<string, unknown> = {};
    const inFlight = new Set<Promise<void>>();
    for (let i = 0; !abort.signal.aborted; i++) {
      const offset = schedule.startOf(i);
      if (offset === null) break;
      const scheduled = schedule.startTimeMs + offset;
      await sleep(scheduled - now(), abort.signal);
      if (abort.signal.aborted) break;
      if (inFlight.size >= schedule.maxInFlight) {
        dropped++;
        store.add("dropped_iterations", 1, {
          scenario: scenario.name,
          flow: flowName,
        }, now());
        continue;
      }
      const p: Promise<void> = iterate(flowName, flow, state, i, scheduled)
        .finally(() => inFlight.delete(p));
      inFlight.add(p);
    }
    // As k6, the executor lasts its whole duration even when the last start came earlier.
    await sleep(
      schedule.startTimeMs + schedule.durationMs - now(),
      abort.signal,
    );
    // Graceful stop: let in-flight iterations finish, then interrupt them.
    const grace = parseDuration(executor.gracefulStop ?? "30s");
    const endOfSchedule = schedule.startTimeMs + schedule.durationMs;
    const deadline = Math.max(endOfSchedule, now()) + grace;
    const stopper = new AbortController();
    const timer = sleep(deadline - now(), stopper.signal).then(() => {
      if (inFlight.size > 0 && !stopper.signal.aborted) abort.abort();
    });
    await Promise.all([...inFlight]);
    stopper.abort();
    await timer;
  }

  try {
    await Promise.all(
      Object.entries(options.scenarios).map(([name, executor]) => runExecutor(name, executor)),
    );
  } finally {
    opts.signal?.removeEventListener("abort", onOuterAbort);
  }
  const durationSeconds = now() / 1000;
  log(
    `${scenario.name}: ${iterations} iterations, ${dropped} dropped in ${
      durationSeconds.toFixed(1)
    } s`,
  );

  // Teardown ---------------------------------------------------------------------
  const tdStarted = performance.now();
  let teardownResult: Record<string, unknown> | null = null;
  let teardownError: string | null = null;
  if (scenario.teardown && !opts.skipTeardown) {
    try {
      teardownResult = (await runProgram(scenario.teardown(ctx, data), (spec) =>
        transport(spec))).result;
    } catch (err) {
      teardownError = err instanceof Error ? err.message : String(err);
      log(`${scenario.name}: teardown failed: ${teardownError}`);
    }
  }

  const verdicts = evaluateThresholds(
    options.thresholds,
    store,
    durationSeconds,
  );
  return {
    scenario: scenario.name,
    profile: opts.profile,
    startedAt,
    durationSeconds,
    options,
    setup: { durationMs: setupMs, requests: setupRequests, error: null },
    teardown: {
      durationMs: performance.now() - tdStarted,
      result: teardownResult,
      error: teardownError,
    },
    requests,
    bodies,
    store,
    iterations,
    dropped,
    interrupted,
    verdicts,
  };
}
