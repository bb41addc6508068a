/**
 * k6 entry file: station_redeem_peak against staging (or the local stack).
 *
 *   k6 run -e BASE_URL=https://<ref>.supabase.co -e ANON_KEY=<anon key> -e PROFILE=quick perf/k6/station_redeem_peak.js
 *
 * The scenario (options with the SLO thresholds, request builders, setup and
 * teardown) lives in perf/scenarios/station_redeem_peak.ts and is shared with the local
 * driver; see _runtime.js for the environment variables.
 *
 * @module
 */
import { stationRedeemPeak as scenario } from "../scenarios/station_redeem_peak.ts";
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

/** Flow `redeem` (the executor's `exec`).
 * @param {any} data */
export function redeem(data) {
  runFlow(ctx, "redeem", data);
}

/** @param {any} data */
export function teardown(data) {
  runTeardown(ctx, data);
}
