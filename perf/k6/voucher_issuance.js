/**
 * k6 entry file: voucher_issuance against staging (or the local stack).
 *
 *   k6 run -e BASE_URL=https://<ref>.supabase.co -e ANON_KEY=<anon key> -e PROFILE=quick perf/k6/voucher_issuance.js
 *
 * The scenario (options with the SLO thresholds, request builders, setup and
 * teardown) lives in perf/scenarios/voucher_issuance.ts and is shared with the local
 * driver; see _runtime.js for the environment variables.
 *
 * @module
 */
import { voucherIssuance as scenario } from "../scenarios/voucher_issuance.ts";
import { k6Context, runFlow, runSetup, runTeardown } from "./_runtime.js";

const ctx = k6Context(
  scenario,
  open(__ENV.SUMMARY_PATH || "../fixtures/generated/perf_seed_summary.json"),
);

/** k6 options: executors of the PROFILE and the SLO thresholds. */
export const options = ctx.options;

/** Issues this run's fresh data through the real RPCs (see the scenario's setup). */
export function setup() {
  return runSetup(ctx);
}

/** Flow `issue_small` (the executor's `exec`).
 * @param {any} data */
export function issue_small(data) {
  runFlow(ctx, "issue_small", data);
}

/** Flow `issue_large` (the executor's `exec`).
 * @param {any} data */
export function issue_large(data) {
  runFlow(ctx, "issue_large", data);
}

/** @param {any} data */
export function teardown(data) {
  runTeardown(ctx, data);
}
