/**
 * k6 entry file: campaign_bulk_send against staging (or the local stack).
 *
 *   k6 run -e BASE_URL=https://<ref>.supabase.co -e ANON_KEY=<anon key> -e PROFILE=quick perf/k6/campaign_bulk_send.js
 *
 * The scenario (options with the SLO thresholds, request builders, setup and
 * teardown) lives in perf/scenarios/campaign_bulk_send.ts and is shared with the local
 * driver; see _runtime.js for the environment variables.
 *
 * @module
 */
import { campaignBulkSend as scenario } from "../scenarios/campaign_bulk_send.ts";
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

/** Flow `trigger` (the executor's `exec`).
 * @param {any} data */
export function trigger(data) {
  runFlow(ctx, "trigger", data);
}

/** Flow `progress` (the executor's `exec`).
 * @param {any} data */
export function progress(data) {
  runFlow(ctx, "progress", data);
}

/** @param {any} data */
export function teardown(data) {
  runTeardown(ctx, data);
}
