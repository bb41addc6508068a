/**
 * Voucher preview spike — SLO: 500 previews over 5 minutes (with a spike),
 * p95 ≤ 1,000 ms, ≤ 1% non-2xx.
 *
 * Station operators look codes up with `preview_voucher`, half as supabase-js
 * sends it by default (POST) and half as `rpc(…, { get: true })` (GET), over the
 * seed's sample codes. The arrival rate ramps up, spikes to 6× the base for half
 * a minute, and settles back.
 *
 * @module
 */
import { classifyByStatus, rpcGet, rpcPost } from "./_common.ts";
import type { Executor, K6Options, Profile, Scenario } from "./_types.ts";

const EXECUTORS: Record<Profile, Executor> = {
  smoke: {
    executor: "ramping-arrival-rate",
    startRate: 0,
    timeUnit: "1s",
    stages: [{ target: 10, duration: "1s" }, { target: 10, duration: "1s" }],
    preAllocatedVUs: 5,
    maxVUs: 20,
    gracefulStop: "10s",
  },
  // The full shape, 5× faster and at 4× the rate (~410 previews in 60 s).
  quick: {
    executor: "ramping-arrival-rate",
    startRate: 0,
    timeUnit: "1s",
    stages: [
      { target: 4, duration: "6s" },
      { target: 4, duration: "18s" },
      { target: 24, duration: "3s" },
      { target: 24, duration: "6s" },
      { target: 4, duration: "3s" },
      { target: 4, duration: "24s" },
    ],
    preAllocatedVUs: 10,
    maxVUs: 100,
  },
  // ~510 previews in 5 minutes: 1/s base, a 6/s spike for 30 s.
  full: {
    executor: "ramping-arrival-rate",
    startRate: 0,
    timeUnit: "1s",
    stages: [
      { target: 1, duration: "30s" },
      { target: 1, duration: "90s" },
      { target: 6, duration: "15s" },
      { target: 6, duration: "30s" },
      { target: 1, duration: "15s" },
      { target: 1, duration: "120s" },
    ],
    preAllocatedVUs: 5,
    maxVUs: 50,
  },
};

/** Thresholds of the SLO row. */
export const THRESHOLDS: K6Options["thresholds"] = {
  "http_req_duration{endpoint:preview_voucher}": ["p(95)<1000"],
  "http_req_failed{endpoint:preview_voucher}": ["rate<0.01"],
  "dropped_iterations{scenario:voucher_preview_spike}": ["count==0"],
};

/** The scenario module. */
export const voucherPreviewSpike: Scenario<undefined> = {
  name: "voucher_preview_spike",
  slo: {
    title: "Voucher preview spike",
    throughput: "500 previews over 5 minutes",
    latency: "p95 ≤ 1,000 ms",
    errorBudget: "≤ 1% non-2xx",
    endpoint: "preview_voucher",
  },
  options(profile) {
    return {
      scenarios: {
        voucher_preview_spike: { ...EXECUTORS[profile], exec: "preview" },
      },
      thresholds: THRESHOLDS,
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
  flows: {
    preview: {
      build({ summary, target, iteration }) {
        const codes = summary.codes.preview;
        if (codes.length === 0) {
          throw new RangeError("No preview codes in the seed summary");
        }
        const code = codes[iteration % codes.length];
        const operator = summary.operators[iteration % summary.operators.length];
        const spec = iteration % 2 === 0
          ? rpcPost(target, "preview_voucher", { code }, operator.jwt)
          : rpcGet(target, "preview_voucher", { code }, operator.jwt);
        spec.timeoutMs = 30_000;
        return spec;
      },
      classify: classifyByStatus,
    },
  },
};

export default voucherPreviewSpike;
