/**
 * k6 glue shared by the entry files: turns a scenario module (the same one the
 * local Deno driver runs) into k6 `options`, `setup`, flow functions and
 * `teardown`. Plain JavaScript with JSDoc types, checked against @types/k6 by
 * `npx tsc -p perf/k6`.
 *
 * Environment: BASE_URL, ANON_KEY (required); PROFILE (smoke|quick|full, default
 * quick); SUMMARY_PATH (the seed summary, default
 * ../fixtures/generated/perf_seed_summary.json, resolved by each entry file's
 * `open()`); ADMIN_JWT, SERVICE_JWT, OPERATOR_JWTS (comma-separated) override
 * the summary's tokens; SKIP_SETUP=1 uses the summary's code pool.
 *
 * @module
 */
import http from "k6/http";
import exec from "k6/execution";
import { check } from "k6";
import { Counter, Gauge, Rate, Trend } from "k6/metrics";

/**
 * @typedef {import("../scenarios/_types.ts").Scenario<any>} AnyScenario
 * @typedef {import("../scenarios/_types.ts").SeedSummary} SeedSummary
 * @typedef {import("../scenarios/_types.ts").Target} Target
 * @typedef {import("../scenarios/_types.ts").RequestSpec} RequestSpec
 * @typedef {import("../scenarios/_types.ts").ResponseLike} ResponseLike
 * @typedef {import("../scenarios/_types.ts").Profile} Profile
 * @typedef {import("../scenarios/_types.ts").K6Options} K6Options
 * @typedef {import("k6/options").Options} Options
 */

/**
 * Everything an entry file needs, built once in the init context.
 * @typedef {object} K6Context
 * @property {AnyScenario} scenario
 * @property {SeedSummary} summary
 * @property {Target} target
 * @property {Profile} profile
 * @property {Options} options
 * @property {Record<string, Counter | Gauge | Rate | Trend>} metrics
 */

const PROFILES = ["smoke", "quick", "full"];

/**
 * Builds the context from a scenario and the text of the seed summary.
 * @param {AnyScenario} scenario
 * @param {string} summaryText what `open(SUMMARY_PATH)` returned
 * @returns {K6Context}
 */
export function k6Context(scenario, summaryText) {
  const baseUrl = (__ENV.BASE_URL || "").replace(/\/$/, "");
  const anonKey = __ENV.ANON_KEY || "";
  if (!baseUrl || !anonKey) {
    throw new Error(
      "Set BASE_URL (the project URL) and ANON_KEY (its anon key): k6 run -e BASE_URL=… -e ANON_KEY=…",
    );
  }
  const profile = /** @type {Profile} */ (__ENV.PROFILE || "quick");
  if (!PROFILES.includes(profile)) {
    throw new Error(
      `PROFILE must be one of ${PROFILES.join(", ")}, got "${profile}"`,
    );
  }
  /** @type {SeedSummary} */
  const summary = JSON.parse(summaryText);
  if (__ENV.ADMIN_JWT) summary.admin.jwt = __ENV.ADMIN_JWT;
  if (__ENV.SERVICE_JWT) summary.service.jwt = __ENV.SERVICE_JWT;
  if (__ENV.OPERATOR_JWTS) {
    const jwts = __ENV.OPERATOR_JWTS.split(",").map((s) => s.trim()).filter(
      Boolean,
    );
    summary.operators = summary.operators.slice(0, jwts.length).map((
      op,
      i,
    ) => ({ ...op, jwt: jwts[i] }));
  }
  /** @type {Record<string, Counter | Gauge | Rate | Trend>} */
  const metrics = {};
  for (const [name, type] of Object.entries(scenario.metrics ?? {})) {
    metrics[name] = type === "counter"
      ? new Counter(name)
      : type === "gauge"
      ? new Gauge(name)
      : type === "rate"
      ? new Rate(name)
      : new Trend(name, true);
  }
  /** @type {Options} */
  const options = scenario.options(profile);
  return {
    scenario,
    summary,
    target: { baseUrl, anonKey },
    profile,
    options,
    metrics,
  };
}

/**
 * @param {Record<string, string>} headers
 * @returns {Record<string, string>}
 */
function lower(headers) {
  /** @type {Record<string, string>} */
  const out = {};
  for (const [k, v] of Object.entries(headers)) out[k.toLowerCase()] = v;
  return out;
}

/**
 * Sends a RequestSpec with k6's http module; `http_req_failed` follows the
 * spec's expected statuses, every sample carries the spec's tags.
 * @param {RequestSpec} spec
 * @returns {ResponseLike}
 */
export function send(spec) {
  const res = http.request(spec.method, spec.url, spec.body ?? null, {
    headers: spec.headers,
    tags: spec.tags,
    timeout: `${spec.timeoutMs ?? 60000}ms`,
    responseCallback: http.expectedStatuses(...spec.expectedStatuses),
  });
  return {
    status: res.status,
    body: typeof res.body === "string" ? res.body : null,
    headers: lower(res.headers),
    error: res.error ? (res.error_code === 1050 ? "timeout" : res.error) : undefined,
  };
}

/**
 * Runs a setup/teardown program (a generator of requests) synchronously.
 * @template R
 * @param {Generator<RequestSpec, R, ResponseLike>} program
 * @returns {R}
 */
export function runProgram(program) {
  let step = program.next();
  while (!step.done) step = program.next(send(step.value));
  return step.value;
}

/**
 * k6 `setup()`: the scenario's setup program, unless SKIP_SETUP=1.
 * @param {K6Context} ctx
 * @returns {unknown}
 */
export function runSetup(ctx) {
  if (!ctx.scenario.setup || __ENV.SKIP_SETUP === "1") return undefined;
  return runProgram(
    ctx.scenario.setup({
      summary: ctx.summary,
      target: ctx.target,
      profile: ctx.profile,
    }),
  );
}

/**
 * k6 `teardown()`: the scenario's teardown program; logs its result.
 * @param {K6Context} ctx
 * @param {unknown} data
 */
export function runTeardown(ctx, data) {
  if (!ctx.scenario.teardown) return;
  const result = runProgram(
    ctx.scenario.teardown({
      summary: ctx.summary,
      target: ctx.target,
      profile: ctx.profile,
    }, data),
  );
  console.log(`teardown ${ctx.scenario.name}: ${JSON.stringify(result)}`);
}

/** Per-VU state of each flow (k6 gives every VU its own copy of this module). */
/** @type {Record<string, Record<string, unknown>>} */
const states = {};

/**
 * One iteration of a flow: build the request, send it, classify the answer,
 * record custom metrics and a check named after the endpoint.
 * @param {K6Context} ctx
 * @param {string} flowName
 * @param {unknown} data what setup returned
 */
export function runFlow(ctx, flowName, data) {
  const flow = ctx.scenario.flows[flowName];
  const state = (states[flowName] ??= {});
  const spec = flow.build({
    summary: ctx.summary,
    target: ctx.target,
    data,
    iteration: exec.scenario.iterationInTest,
  });
  const res = send(spec);
  const outcome = flow.classify(res, spec, state);
  check(outcome, {
    [`${spec.tags.endpoint} answered as expected`]: (o) => !o.failed,
  }, spec.tags);
  for (const [name, value] of Object.entries(outcome.metrics ?? {})) {
    const metric = ctx.metrics[name];
    if (metric) metric.add(value, spec.tags);
  }
}
