/**
 * Voucher issuance — SLO: 1k and 5k batches, each under 2 s, 0 failures.
 *
 * An admin calls `issue_vouchers` with a fresh idempotency key per batch, two
 * flows interleaved: 1,000-voucher batches and 5,000-voucher batches (the API's
 * cap). The smoke profile issues small batches (100 / 500) to keep tests light.
 *
 * @module
 */
import { classifyByStatus, newRunId, parseJson, rpcPost } from "./_common.ts";
import type { Executor, Flow, K6Options, Profile, Scenario } from "./_types.ts";

/** What setup hands every iteration. */
export interface IssuanceData {
  run_id: string;
  profile: Profile;
}

interface ProfileShape {
  small: { count: number; executor: Executor };
  large: { count: number; executor: Executor };
}

const PROFILES: Record<Profile, ProfileShape> = {
  smoke: {
    small: {
      count: 100,
      executor: {
        executor: "constant-arrival-rate",
        rate: 1,
        timeUnit: "1s",
        duration: "2s",
        preAllocatedVUs: 2,
        gracefulStop: "10s",
      },
    },
    large: {
      count: 500,
      executor: {
        executor: "constant-arrival-rate",
        rate: 1,
        timeUnit: "2s",
        duration: "2s",
        preAllocatedVUs: 2,
        startTime: "500ms",
        gracefulStop: "10s",
      },
    },
  },
  quick: {
    small: {
      count: 1000,
      executor: {
        executor: "constant-arrival-rate",
        rate: 1,
        timeUnit: "3s",
        duration: "30s",
        preAllocatedVUs: 2,
        maxVUs: 4,
      },
    },
    large: {
      count: 5000,
      executor: {
        executor: "constant-arrival-rate",
        rate: 1,
        timeUnit: "6s",
        duration: "30s",
        preAllocatedVUs: 2,
        maxVUs: 4,
        startTime: "1500ms",
      },
    },
  },
  full: {
    small: {
      count: 1000,
      executor: {
        executor: "constant-arrival-rate",
        rate: 6,
        timeUnit: "1m",
        duration: "5m",
        preAllocatedVUs: 2,
        maxVUs: 4,
      },
    },
    large: {
      count: 5000,
      executor: {
        executor: "constant-arrival-rate",
        rate: 2,
        timeUnit: "1m",
        duration: "5m",
        preAllocatedVUs: 2,
        maxVUs: 4,
        startTime: "5s",
      },
    },
  },
};

function thresholds(shape: ProfileShape): K6Options["thresholds"] {
  const out: K6Options["thresholds"] = {};
  for (const { count } of [shape.small, shape.large]) {
    out[`http_req_duration{endpoint:issue_vouchers,batch:${count}}`] = [
      "max<2000",
    ];
  }
  out["http_req_failed{endpoint:issue_vouchers}"] = ["rate==0"];
  out["vouchers_issued"] = ["count>0"];
  return out;
}

/** Batch size of a flow in the profile setup recorded (the full profile's without setup). */
function batchSize(
  data: IssuanceData | undefined,
  size: "small" | "large",
): number {
  return PROFILES[data?.profile ?? "full"][size].count;
}

function issueFlow(size: "small" | "large"): Flow<IssuanceData> {
  return {
    build({ summary, target, data, iteration }) {
      const count = batchSize(data, size);
      const spec = rpcPost(target, "issue_vouchers", {
        campaign_id: summary.campaigns.redeem.id,
        count,
        idempotency_key: `perf-issue-${data?.run_id ?? summary.generated_at}-${size}-${iteration}`,
      }, summary.admin.jwt);
      spec.tags.batch = String(count);
      spec.timeoutMs = 30_000;
      return spec;
    },
    classify(res, req) {
      const outcome = classifyByStatus(res, req);
      const body = parseJson(res.body) as { issued?: number } | null;
      const issued = !outcome.failed && typeof body?.issued === "number" ? body.issued : 0;
      if (!outcome.failed && issued !== Number(req.tags.batch)) {
        return {
          failed: true,
          code: "short_batch",
          metrics: { vouchers_issued: issued },
        };
      }
      return { ...outcome, metrics: { vouchers_issued: issued } };
    },
  };
}

/** The scenario module. */
export const voucherIssuance: Scenario<IssuanceData> = {
  name: "voucher_issuance",
  slo: {
    title: "Voucher issuance",
    throughput: "1k and 5k batches",
    latency: "< 2 s per batch",
    errorBudget: "0 failures",
    endpoint: "issue_vouchers",
  },
  metrics: { vouchers_issued: "counter" },
  options(profile) {
    const shape = PROFILES[profile];
    return {
      scenarios: {
        voucher_issuance_small: {
          ...shape.small.executor,
          exec: "issue_small",
        },
        voucher_issuance_large: {
          ...shape.large.executor,
          exec: "issue_large",
        },
      },
      thresholds: thresholds(shape),
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
  // A program with no requests: it only fixes the run id and profile for every VU.
  // deno-lint-ignore require-yield
  *setup({ profile }) {
    return { run_id: newRunId(), profile };
  },
  flows: {
    issue_small: issueFlow("small"),
    issue_large: issueFlow("large"),
  },
};

export default voucherIssuance;
