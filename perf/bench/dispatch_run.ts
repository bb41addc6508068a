/**
 * Benchmark (prints figures, asserts nothing): one dispatch run measured
 * against Supabase Edge Functions' limits — 2 s of CPU per request, 150 s
 * (free) / 400 s (paid) of wall clock.
 *
 * The `dispatch` function is started here in its own process exactly as the
 * local stack runs it (`local/function_runner.ts`: its index.ts, its import map,
 * the Edge Runtime preload), so its CPU can be read from /proc (user + system
 * time of the process, before and after the run). It then drains a campaign of
 * `--messages` on one channel (`POST /dispatch?wait=1&channel_id=…`) against the
 * fake WhatsApp API answering in `--latency-ms`, and this prints:
 *
 *   - the run's wall time, and against 150 s / 400 s;
 *   - the process's CPU during the run, per message, and against 2 s;
 *   - how many messages one request could send within 2 s of CPU at that cost;
 *   - sends/s, the sends in flight (`--concurrency`), and claim → report latency
 *     (p50 / p95 / p99 of sent_at − last_attempt_at per message).
 *
 * Needs the stack (`deno task start`). The stack's own ticks may start runs that
 * claim some of the campaign too; the figures are this run's own (it reports
 * what it sent), and the claims of other runs are printed. For a clean run, stop
 * the ticker (`DISPATCH_TICK_MS=0` when the stack starts).
 *
 * Run: `deno run -A perf/bench/dispatch_run.ts [--messages 5000] [--latency-ms 250]
 *        [--rate-per-minute 60000] [--concurrency 64] [--batch 100]`
 *
 * @module
 */
import { parseArgs } from "node:util";
import { deployedFunctions } from "../../local/deploy_layout.ts";
import { DB_URL, FAKE_WABA_URL, SERVICE_ROLE_KEY } from "../../local/env.ts";
import { startFunction } from "../../local/function_runner.ts";
import { createCampaign, openStack, setUpFake } from "../../local/harness.ts";

const { values: args } = parseArgs({
  args: Deno.args,
  options: {
    messages: { type: "string", default: "5000" },
    "latency-ms": { type: "string", default: "250" },
    "rate-per-minute": { type: "string", default: "60000" },
    concurrency: { type: "string", default: "64" },
    batch: { type: "string", default: "100" },
  },
});
const MESSAGES = Number(args.messages);
const LATENCY_MS = Number(args["latency-ms"]);
const RATE = Number(args["rate-per-minute"]);
const CONCURRENCY = Number(args.concurrency);
const BATCH = Number(args.batch);

/** User + system CPU time of a process so far, in ms (/proc/<pid>/stat, clock ticks of 10 ms). */
async function cpuMs(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10; // utime, stime (fields 14, 15)
}

const stack = await openStack();
const dispatchFn = (await deployedFunctions()).find((f) => f.name === "dispatch")!;
const fn = await startFunction(dispatchFn, {
  SUPABASE_DB_URL: DB_URL,
  SUPABASE_SERVICE_ROLE_KEY: SERVICE_ROLE_KEY,
  LOCAL_STACK: "1",
  WABA_BASE_URL: FAKE_WABA_URL,
  LOG_LEVEL: "error",
});
try {
  await setUpFake(stack, {
    mps: 100_000,
    latency: { kind: "fixed", ms: LATENCY_MS },
  });
  const fx = await createCampaign(stack, {
    targets: MESSAGES,
    ratePerMinute: RATE,
    burst: Math.max(1, Math.ceil(RATE / 60)),
    minRecipientIntervalSeconds: 0,
  });
  // Dispatching, every target enqueued (the cron job would do it 5,000 a minute).
  await stack.sql`
    update app.campaigns set status = 'dispatching', dispatch_started_at = now(),
      scheduled_for = now(), scheduled_at = now() where id = ${fx.campaignId}`;
  for (let enqueued = 0; enqueued < MESSAGES;) {
    const [{ n }] = await stack
      .sql`select app.enqueue_campaign_chunk(${fx.campaignId}, 5000) as n`;
    if (n === 0) break;
    enqueued += n;
  }

  const idleBefore = await cpuMs(fn.pid);
  await new Promise((r) => setTimeout(r, 1000));
  const idleCpu = (await cpuMs(fn.pid)) - idleBefore; // baseline: an idle isolate for 1 s
  const before = await cpuMs(fn.pid);
  const started = performance.now();
  const res = await fetch(
    `${fn.url}/dispatch?wait=1&channel_id=${fx.channelId}&concurrency=${CONCURRENCY}` +
      `&batch_size=${BATCH}&budget_ms=380000&idle_exit_ms=1000`,
    {
      method: "POST",
      headers: { Authorization: `Bearer ${SERVICE_ROLE_KEY}` },
    },
  );
  const summary = await res.json();
  const wallMs = performance.now() - started;
  const cpu = (await cpuMs(fn.pid)) - before;

  const [latency] = await stack.sql`
    select percentile_cont(array[0.5, 0.95, 0.99]) within group (
             order by extract(epoch from m.sent_at - m.last_attempt_at) * 1000) as ms
    from app.messages m where m.campaign_id = ${fx.campaignId} and m.sent_at is not null`;
  const [others] = await stack.sql`
    select coalesce(sum(messages), 0)::integer as n from app.dispatch_claims
    where channel_id = ${fx.channelId} and worker <> ${summary.worker}`;

  const sent = summary.sent as number;
  const perMessageUs = (cpu * 1000) / Math.max(1, sent);
  const [p50, p95, p99] = (latency.ms as number[] ?? [0, 0, 0]).map((v) => v.toFixed(0));
  console.log(
    `dispatch run: ${MESSAGES} messages, fake latency ${LATENCY_MS} ms, channel ${RATE}/min, ` +
      `${CONCURRENCY} in flight, claims of ${BATCH}`,
  );
  console.log(
    `  status ${res.status}, stop ${summary.stop_reason}, sent ${sent} (other runs claimed ${others.n})`,
  );
  console.log(
    `  wall ${(wallMs / 1000).toFixed(1)} s = ${(wallMs / 1500).toFixed(1)}% of 150 s, ` +
      `${(wallMs / 4000).toFixed(1)}% of 400 s; ${(sent / (wallMs / 1000)).toFixed(0)} sends/s`,
  );
  console.log(
    `  CPU ${cpu} ms = ${(cpu / 20).toFixed(0)}% of 2 s; ${
      perMessageUs.toFixed(0)
    } µs per message ` +
      `(idle isolate: ${idleCpu} ms/s); 2 s of CPU sends ~${
        Math.floor(2_000_000 / Math.max(1, perMessageUs))
      } messages`,
  );
  console.log(`  claim → report p50 ${p50} ms, p95 ${p95} ms, p99 ${p99} ms`);
} finally {
  await fn.stop();
  await stack.close();
}
