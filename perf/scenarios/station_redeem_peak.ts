/**
 * Station redeem peak — SLO: 150 redeems/min sustained for 10 min, p95 ≤ 500 ms,
 * ≤ 1% failed redeems.
 *
 * Station operators (rotating over the seed's stations) redeem vouchers through
 * `POST /rest/v1/rpc/redeem_voucher`, each iteration a distinct voucher that
 * setup issued for this run through the real RPCs (`issue_vouchers` +
 * `list_vouchers`), with a fresh idempotency key. A redeem is failed unless it
 * answers 200 — except when the pool ran out and a code is reused on purpose:
 * then `409 voucher_already_redeemed` is the expected answer.
 *
 * @module
 */
import {
  classifyByStatus,
  errorCode,
  issueFreshCodes,
  maxIterations,
  newRunId,
  rpcPost,
} from "./_common.ts";
import type { Executor, K6Options, Profile, Scenario } from "./_types.ts";

/** What setup hands every iteration. */
export interface RedeemData {
  run_id: string;
  /** Fresh display-form codes, one per iteration (reused modulo length past the end). */
  codes: string[];
}

const EXECUTORS: Record<Profile, Executor> = {
  smoke: {
    executor: "constant-arrival-rate",
    rate: 10,
    timeUnit: "1s",
    duration: "2s",
    preAllocatedVUs: 5,
    maxVUs: 20,
    gracefulStop: "10s",
  },
  // 4× the SLO rate, compressed to a minute.
  quick: {
    executor: "constant-arrival-rate",
    rate: 10,
    timeUnit: "1s",
    duration: "1m",
    preAllocatedVUs: 10,
    maxVUs: 100,
  },
  full: {
    executor: "constant-arrival-rate",
    rate: 150,
    timeUnit: "1m",
    duration: "10m",
    preAllocatedVUs: 5,
    maxVUs: 50,
  },
};

/** Thresholds of the SLO row (the same in every profile). */
export const THRESHOLDS: K6Options["thresholds"] = {
  "http_req_duration{endpoint:redeem_voucher}": ["p(95)<500"],
  "http_req_failed{endpoint:redeem_voucher}": ["rate<0.01"],
  "dropped_iterations{scenario:station_redeem_peak}": ["count==0"],
};

/** The scenario module. */
export const stationRedeemPeak: Scenario<RedeemData> = {
  name: "station_redeem_peak",
  slo: {
    title: "Station redeem peak",
    throughput: "150 redeems/min sustained for 10 min",
    latency: "p95 ≤ 500 ms",
    errorBudget: "≤ 1% failed redeems",
    endpoint: "redeem_voucher",
  },
  options(profile) {
    return {
      scenarios: {
        station_redeem_peak: { ...EXECUTORS[profile], exec: "redeem" },
      },
      thresholds: THRESHOLDS,
      setupTimeout: "120s",
      summaryTrendStats: [
        "min",
        "med",
        "avg",
        "p(90)",
        "p(95)",
        "p(99)",
        "max",
      ],
    };
  },
  *setup({ summary, target, profile }) {
    const runId = newRunId();
    const needed = Math.ceil(maxIterations(EXECUTORS[profile]) * 1.1) + 5;
    const codes = yield* issueFreshCodes(
      target,
      summary.admin.jwt,
      summary.campaigns.redeem.id,
      needed,
      runId,
    );
    return { run_id: runId, codes };
  },
  flows: {
    redeem: {
      build({ summary, target, data, iteration }) {
        const pool = data?.codes?.length ? data.codes : summary.codes.redeem_pool;
        if (pool.length === 0) {
          throw new RangeError("No redeem codes: run setup or re-seed");
        }
        const runId = data?.run_id ?? `nosetup-${summary.generated_at}`;
        const operator = summary.operators[iteration % summary.operators.length];
        const reused = iteration >= pool.length;
        const spec = rpcPost(
          target,
          "redeem_voucher",
          {
            code: pool[iteration % pool.length],
            idempotency_key: `perf-redeem-${runId}-${iteration}`,
          },
          operator.jwt,
          reused ? [200, 409] : [200],
        );
        spec.tags.reused = String(reused);
        spec.timeoutMs = 30_000;
        return spec;
      },
      classify(res, req) {
        const outcome = classifyByStatus(res, req);
        // A reused code may only fail the expected way.
        if (
          res.status === 409 && errorCode(res) !== "voucher_already_redeemed"
        ) outcome.failed = true;
        return outcome;
      },
    },
  },
};

export default stationRedeemPeak;
