/**
 * Benchmark (prints figures, asserts nothing): one phone number at Meta's highest
 * throughput tier — 1,000 messages/s (Meta's throughput page:
 * https://developers.facebook.com/documentation/business-messaging/whatsapp/throughput)
 * — with the fake WhatsApp API answering every send in 250 ms, a realistic Cloud
 * API latency. What it takes to keep up:
 *
 * - sends/s sustained at the fake (the middle 80% of the run, and the busiest second);
 * - sends in flight needed (Little's law: rate × latency) against those configured;
 * - CPU per message of the dispatch loop (this process's CPU over the messages its
 *   runs sent: claim, send, report — what a function isolate spends), and per
 *   dispatch run at the default 50 s budget, against the hosted Edge limit of 2 s
 *   CPU per request; the database's time per message from pg_stat_statements;
 * - claim → report latency per message (p50 / p95 / p99), from the rows
 *   (`last_attempt_at` is the claim, `sent_at` the report).
 *
 * The dispatch runs are the function's own (`runDispatch`, the RPC queue, the
 * sender) in this process, as `tests/e2e/_dispatch_worker.ts` runs them, so their
 * CPU can be measured; the channel is rate-limited to 980/s with a burst of 20 (so no
 * second holds more than the number's 1,000), its portfolio unlimited. The stack's ticker dispatches the channel too (one more
 * dispatcher): the share its own runs sent is printed, and CPU is divided by that.
 * Status webhooks are off unless BENCH_WEBHOOKS=1 (at 1,000/s they are 3,000
 * statuses/s for the webhook function on the same two cores).
 *
 * Needs the stack (`deno task start`). Run, on a quiet machine:
 *   deno run -A perf/bench/top_tier.ts
 * Env: BENCH_TARGETS (default 30000), BENCH_RUNS (4), BENCH_CONCURRENCY (64, the
 * trigger's maximum), BENCH_LATENCY_MS (250), BENCH_WEBHOOKS (0),
 * BENCH_RATE_PER_MINUTE (58800), BENCH_BURST (20).
 *
 * @module
 */
import process from "node:process";
import { DB_URL, FAKE_WABA_URL } from "../../local/env.ts";
import { LatencyHistogram } from "../driver/_histogram.ts";
import {
  createCampaign,
  fakeMessages,
  maxInWindow,
  openStack,
  schedule,
  setUpFake,
} from "../../local/harness.ts";

const TARGETS = Number(Deno.env.get("BENCH_TARGETS") ?? 30_000);
const RUNS = Number(Deno.env.get("BENCH_RUNS") ?? 4);
const CONCURRENCY = Number(Deno.env.get("BENCH_CONCURRENCY") ?? 64);
const LATENCY_MS = Number(Deno.env.get("BENCH_LATENCY_MS") ?? 250);
const WEBHOOKS = Deno.env.get("BENCH_WEBHOOKS") === "1";
// Meta counts 1,000 per any second; a token bucket lets burst + rate·W through in W
// seconds, so the channel is set to 980/s with a burst of 20: never more than 1,000 in
// any second at the number (a 1,000/s rate with any burst would draw 130429s).
const RATE_PER_MINUTE = Number(Deno.env.get("BENCH_RATE_PER_MINUTE") ?? 58_800);
const BURST = Number(Deno.env.get("BENCH_BURST") ?? 20);
const EDGE_CPU_LIMIT_MS = 2_000;
const DEFAULT_BUDGET_S = 50;

// The function's modules read their database and WhatsApp settings from the environment.
Deno.env.set("SUPABASE_DB_URL", DB_URL);
Deno.env.set("DB_POOL_MAX", String(Math.max(4, RUNS * 2)));
Deno.env.set("LOCAL_STACK", "1");
Deno.env.set("WABA_BASE_URL", FAKE_WABA_URL);
Deno.env.set("LOG_LEVEL", "error");

const { runDispatch } = await import("../../functions/dispatch/_run.ts");
const { rpcQueue } = await import("../../functions/dispatch/handler.ts");
const { createSender } = await import("../../functions/dispatch/_sender.ts");
const { closeDb, getDb } = await import("../../functions/_shared/db.ts");
const { wabaErrorRules } = await import("../../functions/_shared/rpc.ts");
const { WabaErrorRules } = await import(
  "../../functions/_shared/waba_errors.ts"
);
const { wabaConfigFromEnv } = await import(
  "../../functions/_shared/waba_config.ts"
);

if (import.meta.main) {
  const stack = await openStack();
  try {
    await setUpFake(stack, {
      mps: 1000,
      pairSpacingMs: 0,
      latency: { kind: "fixed", ms: LATENCY_MS },
      ...(WEBHOOKS ? {} : { webhook: { url: null } }),
    });
    const fx = await createCampaign(stack, {
      targets: TARGETS,
      ratePerMinute: RATE_PER_MINUTE,
      burst: BURST,
      minRecipientIntervalSeconds: 0,
    });
    const t0 = performance.now();
    await schedule(stack, fx.campaignId);
    // Enqueue every target now (the promote job would add 5,000 a minute).
    await stack
      .sql`select app.enqueue_campaign_chunk(${fx.campaignId}, ${TARGETS})`;
    const enqueueS = (performance.now() - t0) / 1000;
    const statements = async () =>
      await stack.sql`
        select coalesce(sum(total_exec_time) filter (where query ilike '%claim_messages%'), 0)::float8 as claim_ms,
               coalesce(sum(total_exec_time) filter (where query ilike '%report_message_results%'), 0)::float8
                 as report_ms
        from pg_stat_statements`.then(
        (r) => r[0],
        () => ({ claim_ms: NaN, report_ms: NaN }),
      );

    const rules = new WabaErrorRules(await wabaErrorRules(getDb()));
    const before = await statements();
    const cpu0 = process.cpuUsage();
    const started = performance.now();
    const summaries = await Promise.all(Array.from({ length: RUNS }, (_, i) => {
      const runId = `top-tier-${i}-${crypto.randomUUID().slice(0, 8)}`;
      const worker = `dispatch:${runId}`;
      return runDispatch({
        runId,
        channelId: fx.channelId,
        budgetMs: 400_000,
        // Unbounded here: the benchmark measures what a run costs, so it can size the cap.
        maxMessages: TARGETS,
        concurrency: CONCURRENCY,
        batchSize: 100,
        leaseSeconds: 60,
        idleExitMs: 1500,
        reportBatchSize: 100,
        reportIntervalMs: 200,
      }, {
        queue: rpcQueue(worker),
        send: createSender(wabaConfigFromEnv(), undefined, rules),
        worker,
      });
    }));
    const wallS = (performance.now() - started) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const after = await statements();

    const accepted = (await fakeMessages(fx.phoneNumberId)).map((m) => m.acceptedAtMs).sort((
      a,
      b,
    ) => a - b);
    const ours = summaries.reduce((n, s) => n + s.sent, 0);
    const lo = accepted[Math.floor(accepted.length * 0.1)];
    const hi = accepted[Math.floor(accepted.length * 0.9)];
    const sustained = (accepted.length * 0.8) / ((hi - lo) / 1000);
    const busiest = maxInWindow(accepted, 1000);
    const cpuMs = (cpu.user + cpu.system) / 1000;
    const cpuPerMsg = cpuMs / Math.max(1, ours);
    const perRun = ours / RUNS / wallS; // sends/s one run kept up
    const runCpuS = (perRun * DEFAULT_BUDGET_S * cpuPerMsg) / 1000;
    const rows = await stack.sql`
      select extract(epoch from sent_at - last_attempt_at) * 1000 as ms
      from app.messages
      where campaign_id = ${fx.campaignId} and status in ('sent', 'delivered', 'read') and sent_at is not null`;
    const latency = new LatencyHistogram();
    for (const r of rows) latency.record(Number(r.ms));
    const deferred = summaries.reduce((n, s) => n + s.deferred, 0);
    const throttled = summaries.reduce(
      (n, s) => n + (s.errors.waba_130429 ?? 0),
      0,
    );
    const [ch] = await stack.sql`
      select effective_rate_per_minute::float8 as rate from app.channels where id = ${fx.channelId}`;

    console.log(
      `top-tier benchmark — 1 number (1,000/s at the fake), channel ${
        RATE_PER_MINUTE / 60
      }/s burst ${BURST}, ` +
        `fake latency ${LATENCY_MS} ms, ` +
        `${TARGETS} targets, ${RUNS} runs × ${CONCURRENCY} in flight, webhooks ${
          WEBHOOKS ? "on" : "off"
        }\n`,
    );
    console.log(
      `enqueue (schedule + one chunk of every target): ${enqueueS.toFixed(2)} s`,
    );
    console.log(
      `sends/s sustained at the fake: ${
        sustained.toFixed(0)
      } (middle 80% of ${accepted.length} sends); ` +
        `busiest second ${busiest}; all sent in ${wallS.toFixed(1)} s (${
          (accepted.length / wallS).toFixed(0)
        }/s overall)`,
    );
    console.log(
      `in flight: needed ${
        (1000 * LATENCY_MS / 1000).toFixed(0)
      } for 1,000/s at ${LATENCY_MS} ms ` +
        `(Little's law); configured ${RUNS * CONCURRENCY}; measured throughput × latency ` +
        `${(sustained * LATENCY_MS / 1000).toFixed(0)}`,
    );
    console.log(
      `this process's runs sent ${ours} of ${accepted.length} (${
        ((100 * ours) / accepted.length).toFixed(0)
      }%; ` +
        `the stack's ticker the rest); 130429 answers ${throttled}, deferred ${deferred}; ` +
        `effective rate at the end ${ch.rate === null ? "the configured rate" : `${ch.rate}/min`}`,
    );
    console.log(
      `CPU (dispatch loop, this process): ${cpuMs.toFixed(0)} ms for ${ours} messages = ` +
        `${cpuPerMsg.toFixed(3)} ms/message (${
          (1000 / cpuPerMsg).toFixed(0)
        } messages per CPU second)`,
    );
    console.log(
      `per dispatch run: ${perRun.toFixed(0)} sends/s each → a ${DEFAULT_BUDGET_S} s run spends ` +
        `${runCpuS.toFixed(2)} s CPU vs the hosted Edge limit of ${EDGE_CPU_LIMIT_MS / 1000} s; ` +
        `a run fits ${(EDGE_CPU_LIMIT_MS / cpuPerMsg).toFixed(0)} messages in 2 s CPU ` +
        `(budget_ms ≤ ${Math.floor((EDGE_CPU_LIMIT_MS / cpuPerMsg / perRun) * 1000)} at this rate)`,
    );
    console.log(
      `database time per message (pg_stat_statements): claim ${
        ((after.claim_ms - before.claim_ms) / accepted.length).toFixed(3)
      } ms, report ${((after.report_ms - before.report_ms) / accepted.length).toFixed(3)} ms`,
    );
    console.log(
      `claim → report per message: p50 ${latency.percentile(50).toFixed(0)} ms, p95 ${
        latency.percentile(95).toFixed(0)
      } ms, p99 ${latency.percentile(99).toFixed(0)} ms, max ${latency.max.toFixed(0)} ms ` +
        `(${latency.count} messages)`,
    );
    await stack
      .sql`update app.campaigns set status = 'cancelled', cancelled_at = now() where id = ${fx.campaignId}
                    and status = 'dispatching'`;
    await stack
      .sql`update app.channels set status = 'paused', pause_reason = 'admin', paused_at = now()
                    where id = ${fx.channelId}`;
  } finally {
    await closeDb();
    await stack.close();
  }
}
