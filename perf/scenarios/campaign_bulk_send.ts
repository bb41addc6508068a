/**
 * Campaign bulk send — SLO: 10k targets at ≥ 100 messages/min, dispatcher ack
 * ≤ 2,000 ms (p95), ≤ 5% 429/5xx.
 *
 * Setup creates a fresh WhatsApp campaign on the seed's channel through the real
 * RPCs (`create_campaign`, `add_campaign_targets` in chunks of 10,000 — the seed's
 * deterministic phone numbers — and `schedule_campaign`, which starts dispatch).
 * Two flows then run side by side:
 *
 * - `trigger`: `POST /functions/v1/dispatch` with a service-role JWT, as pg_cron +
 *   pg_net do in production — its latency is the dispatcher's ack, its answers
 *   are kept as evidence;
 * - `progress`: `campaign_stats` every few seconds; the growth of sent messages
 *   feeds the `messages_sent` counter (whose rate is the throughput).
 *
 * Teardown reads the final stats and cancels the campaign if it has not
 * completed, so leftovers never leak into the next run.
 *
 * @module
 */
import { classifyByStatus, functionPost, newRunId, parseJson, rpcPost } from "./_common.ts";
import { expectJson } from "./_common.ts";
import type { Executor, K6Options, Outcome, Profile, Scenario, SeedSummary } from "./_types.ts";

/** What setup hands every iteration. */
export interface BulkSendData {
  run_id: string;
  campaign_id: string;
  channel_id: string;
  targets: number;
}

interface Shape {
  trigger: Executor;
  progress: Executor;
  /** Targets of the run's campaign (null = all the seed's targets). */
  targets: number | null;
}

const SHAPES: Record<Profile, Shape> = {
  smoke: {
    trigger: {
      executor: "constant-arrival-rate",
      rate: 2,
      timeUnit: "1s",
      duration: "3s",
      preAllocatedVUs: 2,
      maxVUs: 4,
      gracefulStop: "10s",
    },
    progress: {
      executor: "constant-arrival-rate",
      rate: 1,
      timeUnit: "1s",
      duration: "3s",
      preAllocatedVUs: 1,
      maxVUs: 1,
      gracefulStop: "10s",
    },
    targets: 20,
  },
  quick: {
    trigger: {
      executor: "constant-arrival-rate",
      rate: 1,
      timeUnit: "1s",
      duration: "1m",
      preAllocatedVUs: 2,
      maxVUs: 10,
    },
    progress: {
      executor: "constant-arrival-rate",
      rate: 1,
      timeUnit: "5s",
      duration: "1m",
      preAllocatedVUs: 1,
      maxVUs: 1,
    },
    targets: 10_000,
  },
  full: {
    trigger: {
      executor: "constant-arrival-rate",
      rate: 1,
      timeUnit: "1s",
      duration: "10m",
      preAllocatedVUs: 2,
      maxVUs: 10,
    },
    progress: {
      executor: "constant-arrival-rate",
      rate: 1,
      timeUnit: "5s",
      duration: "10m",
      preAllocatedVUs: 1,
      maxVUs: 1,
    },
    targets: null,
  },
};

/** Thresholds of the SLO row. `messages_sent` rate is per second: 100/min ≈ 1.67/s. */
export const THRESHOLDS: K6Options["thresholds"] = {
  "http_req_duration{endpoint:fn:dispatch}": ["p(95)<2000"],
  "http_req_failed{endpoint:fn:dispatch}": ["rate<0.05"],
  "http_req_failed{endpoint:campaign_stats}": ["rate<0.05"],
  messages_sent: ["rate>=1.6667"],
};

/** Counts of a `campaign_stats` answer. */
interface Stats {
  status: string;
  targets: number;
  messages: Record<string, number>;
}

function sentOf(stats: Stats): number {
  const m = stats.messages ?? {};
  return (m.sent ?? 0) + (m.delivered ?? 0) + (m.read ?? 0);
}

function phone(summary: SeedSummary, i: number): string {
  return summary.phones.prefix + String(i).padStart(summary.phones.digits, "0");
}

/** The scenario module. */
export const campaignBulkSend: Scenario<BulkSendData> = {
  name: "campaign_bulk_send",
  slo: {
    title: "Campaign bulk send",
    throughput: "10k targets @ ≥ 100/min",
    latency: "dispatcher ack p95 ≤ 2,000 ms",
    errorBudget: "≤ 5% 429/5xx",
    endpoint: "fn:dispatch",
  },
  metrics: {
    messages_sent: "counter",
    messages_remaining: "gauge",
    messages_failed: "gauge",
  },
  options(profile) {
    const shape = SHAPES[profile];
    return {
      scenarios: {
        campaign_bulk_send_trigger: { ...shape.trigger, exec: "trigger" },
        campaign_bulk_send_progress: { ...shape.progress, exec: "progress" },
      },
      thresholds: THRESHOLDS,
      setupTimeout: "300s",
      teardownTimeout: "60s",
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
    if (!summary.channel) {
      throw new RangeError(
        "The seed has no WhatsApp channel: apply the dispatch migration and re-seed",
      );
    }
    const runId = newRunId();
    const want = SHAPES[profile].targets ?? summary.campaigns.bulk_send.targets;
    const targets = Math.max(
      1,
      Math.min(want, summary.campaigns.bulk_send.targets || want),
    );
    // The seed's channel, found by phone number id (re-created if someone removed it).
    const channels = (yield* expectJson(
      rpcPost(target, "list_channels", {}, summary.admin.jwt),
    )) as { id: string; phone_number_id: string }[];
    let channelId = channels.find((c) => c.phone_number_id === summary.channel!.phone_number_id)
      ?.id;
    if (!channelId) {
      const created = (yield* expectJson(rpcPost(target, "create_channel", {
        phone_number_id: summary.channel.phone_number_id,
        display_name: `Perf ${summary.seed} sender`,
        rate_per_minute: summary.channel.rate_per_minute,
      }, summary.admin.jwt))) as { id: string };
      channelId = created.id;
    }
    const campaign = (yield* expectJson(rpcPost(target, "create_campaign", {
      name: `Perf bulk send ${runId}`,
      amount_minor: 20000,
      currency: "KES",
      expires_at: new Date(Date.now() + 30 * 86_400_000).toISOString(),
      channel_id: channelId,
      template_name: summary.template.name,
      template_language: summary.template.language,
    }, summary.admin.jwt))) as { id: string };
    for (let lo = 0; lo < targets; lo += 10_000) {
      const chunk: string[] = [];
      for (let i = lo; i < Math.min(targets, lo + 10_000); i++) {
        chunk.push(phone(summary, i));
      }
      yield* expectJson(
        rpcPost(target, "add_campaign_targets", {
          campaign_id: campaign.id,
          targets: chunk,
        }, summary.admin.jwt),
      );
    }
    yield* expectJson(
      rpcPost(
        target,
        "schedule_campaign",
        { campaign_id: campaign.id },
        summary.admin.jwt,
      ),
    );
    return {
      run_id: runId,
      campaign_id: campaign.id,
      channel_id: channelId,
      targets,
    };
  },
  flows: {
    trigger: {
      recordBodies: true,
      build({ summary, target, data }) {
        // The body pg_net would send, narrowed to the seed's channel (unknown keys are ignored).
        const body: Record<string, unknown> = {
          source: "perf",
          run_id: data?.run_id ?? null,
        };
        const channelId = data?.channel_id ?? summary.channel?.id;
        if (channelId) body.channel_id = channelId;
        const spec = functionPost(
          target,
          "dispatch",
          body,
          summary.service.jwt,
        );
        spec.timeoutMs = 30_000;
        return spec;
      },
      classify: classifyByStatus,
    },
    progress: {
      recordBodies: true,
      build({ summary, target, data }) {
        return rpcPost(target, "campaign_stats", {
          campaign_id: data?.campaign_id ?? summary.campaigns.bulk_send.id,
        }, summary.admin.jwt);
      },
      classify(res, req, state): Outcome {
        const outcome = classifyByStatus(res, req);
        const stats = parseJson(res.body) as Stats | null;
        if (
          outcome.failed || !stats || typeof stats !== "object" ||
          !stats.messages
        ) return outcome;
        const sent = sentOf(stats);
        const last = typeof state.sent === "number" ? state.sent : 0;
        state.sent = Math.max(last, sent);
        const m = stats.messages;
        const finished = sent + (m.failed ?? 0) + (m.dead ?? 0) +
          (m.cancelled ?? 0);
        return {
          ...outcome,
          metrics: {
            messages_sent: Math.max(0, sent - last),
            messages_remaining: Math.max(0, (stats.targets ?? 0) - finished),
            messages_failed: (m.failed ?? 0) + (m.dead ?? 0),
          },
        };
      },
    },
  },
  *teardown({ summary, target }, data) {
    if (!data?.campaign_id) return { skipped: true };
    const stats = (yield* expectJson(
      rpcPost(
        target,
        "campaign_stats",
        { campaign_id: data.campaign_id },
        summary.admin.jwt,
      ),
    )) as Stats;
    let cancelled = false;
    if (stats.status !== "completed" && stats.status !== "cancelled") {
      yield* expectJson(
        rpcPost(
          target,
          "cancel_campaign",
          { campaign_id: data.campaign_id },
          summary.admin.jwt,
        ),
      );
      cancelled = true;
    }
    return {
      campaign_id: data.campaign_id,
      targets: data.targets,
      final_stats: stats,
      cancelled,
    };
  },
};

export default campaignBulkSend;
