/**
 * k6 entry file: voucher_preview_spike against staging (or the local stack).
 *
 *   k6 run -e BASE_URL=https://<ref>.supabase.co -e ANON_KEY=<anon key> -e PROFILE=quick perf/k6/voucher_preview_spike.js
 *
 * The scenario (options with the SLO thresholds, request builders, setup and
 * teardown) lives in perf/scenarios/voucher_preview_spike.ts and is shared with the local
 * driver; see _runtime.js for the environment variables.
 *
 * @module
 */
import { voucherPreviewSpike as scenario } from "../scenarios/voucher_preview_spike.ts";
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

/** Flow `preview` (the executor's `exec`).
 * @param {any} data */
export function preview(data) {
  runFlow(ctx, "preview", data);
}

/** @param {any} data */
export function teardown(data) {
  runTeardown(ctx, data);
}
