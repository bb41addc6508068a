/**
 * Benchmark (prints figures, asserts nothing): campaign dispatch end to end on
 * the local stack — the `dispatch` function claiming from Postgres, sending to
 * the fake WhatsApp Cloud API (20 ms latency, no throughput limit), reporting
 * back, with the fake's signed status webhooks flowing into `waba-webhook` —
 * and how fast the function acknowledges its trigger.
 *
 * Phases:
 *   1. sends/s with the rate limit off (a channel at 6,000,000/min), for a few
 *      shapes: 1 run × 16 sends in flight, 1 × 64, 4 runs × 16 (the ticker's
 *      overlapping runs), timed from the first to the last accepted message at the
 *      fake, plus the wall time until every message row is final;
 *   2. ack latency of `POST /functions/v1/dispatch` (no `wait`): an idle queue,
 *      then while a campaign is being dispatched — p50 / p95 / p99 / max of the
 *      time to the 202, measured by a client in this process.
 *
 * Needs the stack (`deno task start`). The functions run in a gateway process
 * started here with LOCAL_STACK=1 (the fake's webhooks are pointed at it and
 * restored at the end), so the acks measured are this isolate's own. The
 * stack's ticker still dispatches every active channel, bench channels
 * included — one more dispatcher, as in production; each shape prints the
 * share its own runs sent. For shapes in isolation, run with the ticker off
 * (`DISPATCH_TICK_MS=0` when the stack starts).
 *
 * Run: `deno run -A perf/bench/dispatch_e2e.ts`
 * Env: BENCH_TARGETS (per shape, default 5000), BENCH_ACKS (default 500), BENCH_LATENCY_MS (20).
 *
 * @module
 */
import { join } from "node:path";
import { ROOT } from "../../local/cluster.ts";
import { API_URL, FAKE_WABA_URL, SERVICE_ROLE_KEY } from "../../local/env.ts";
import {
  createCampaign,
  dispatch,
  fakeMessages,
  http,
  openStack,
  schedule,
  setUpFake,
  type Stack,
  unfinished,
} from "../../local/harness.ts";

const TARGETS = Number(Deno.env.get("BENCH_TARGETS") ?? 5000);
const ACKS = Number(Deno.env.get("BENCH_ACKS") ?? 500);
const LATENCY_MS = Number(Deno.env.get("BENCH_LATENCY_MS") ?? 20);
const OWN_GATEWAY_PORT = 54395;

function percentile(sorted: number[], p: number): number {
  return sorted[
    Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)
  ];
}

function fmt(ms: number): string {
  return ms < 10 ? ms.toFixed(2) : ms.toFixed(1);
}

/** A gateway process with LOCAL_STACK=1, for when the stack's gateway lacks WhatsApp settings. */
async function ownGateway(): Promise<
  { url: string; stop: () => Promise<void> }
> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "local/gateway/main.ts")],
    env: {
      GATEWAY_PORT: String(OWN_GATEWAY_PORT),
      LOCAL_STACK: "1",
      // The stack's fake wherever FAKE_WABA_PORT put it (LOCAL_STACK=1 alone means port 54330).
      WABA_BASE_URL: FAKE_WABA_URL,
      LOG_LEVEL: "error",
    },
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const url = `http://127.0.0.1:${OWN_GATEWAY_PORT}`;
  for (let i = 0; i < 100; i++) {
    const ok = await http(`${url}/health`, { timeoutMs: 500 }).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ok) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    stop: async () => {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

async function throughput(
  stack: Stack,
  shape: { runs: number; concurrency: number },
): Promise<string> {
  const fx = await createCampaign(stack, {
    targets: TARGETS,
    ratePerMinute: 6_000_000,
    burst: 100_000,
    minRecipientIntervalSeconds: 0,
  });
  const t0 = performance.now();
  await schedule(stack, fx.campaignId);
  const enqueueMs = performance.now() - t0;
  const started = performance.now();
  let rounds = 0;
  let byBench = 0;
  while ((await unfinished(stack, fx.campaignId)) > 0 && rounds < 20) {
    rounds++;
    const runs = await Promise.all(
      Array.from({ length: shape.runs }, () =>
        dispatch(stack, {
          channel_id: fx.channelId,
          concurrency: shape.concurrency,
          batch_size: Math.max(50, shape.concurrency * 2),
          budget_ms: 60_000,
          idle_exit_ms: 200,
        })),
    );
    byBench += runs.reduce((n, r) => n + r.sent, 0);
  }
  const wallS = (performance.now() - started) / 1000;
  const accepted = (await fakeMessages(fx.phoneNumberId)).map((m) => m.acceptedAtMs).sort((a, b) =>
    a - b
  );
  const spanS = (accepted.at(-1)! - accepted[0]) / 1000;
  await stack
    .sql`update app.channels set status = 'paused' where id = ${fx.channelId}`;
  return `${shape.runs} run × ${String(shape.concurrency).padStart(2)} in flight: ` +
    `${(accepted.length / spanS).toFixed(0).padStart(5)} sends/s at the fake ` +
    `(${accepted.length} in ${spanS.toFixed(2)} s, ${
      ((100 * byBench) / accepted.length).toFixed(0)
    }% by bench runs; all rows final after ${wallS.toFixed(2)} s; ` +
    `schedule+enqueue ${enqueueMs.toFixed(0)} ms)`;
}

async function acks(stack: Stack, n: number, label: string): Promise<string> {
  const url = `${stack.functionsUrl}/dispatch`;
  const times: number[] = [];
  let accepted = 0;
  let busy = 0;
  // An empty channel: each accepted run ends after one empty claim.
  const fx = await createCampaign(stack, {
    targets: 1,
    ratePerMinute: 60,
    burst: 1,
  });
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const res = await fetch(url, {
      method: "POST",
      headers: {
        Authorization: `Bearer ${SERVICE_ROLE_KEY}`,
        "Content-Type": "application/json",
      },
      body: JSON.stringify({ channel_id: fx.channelId, idle_exit_ms: 0 }),
    });
    const body = await res.json();
    times.push(performance.now() - t0);
    if (body.accepted) accepted++;
    else busy++;
  }
  times.sort((a, b) => a - b);
  return `${label.padEnd(28)} p50 ${fmt(percentile(times, 50))} ms, p95 ${
    fmt(percentile(times, 95))
  } ms, p99 ${fmt(percentile(times, 99))} ms, max ${fmt(times.at(-1)!)} ms ` +
    `(${accepted} accepted, ${busy} busy)`;
}

if (import.meta.main) {
  // The functions run in a gateway process of our own (LOCAL_STACK=1): its
  // isolate holds only the bench's runs, so acks are not answered "busy" because
  // of the stack ticker's runs. The fake's webhooks go to it too (restored after).
  const own = await ownGateway();
  const stack = await openStack({ functionsUrl: `${own.url}/functions/v1` });
  const tickerActive = await http(
    `${API_URL}/functions/v1/dispatch?wait=1&budget_ms=100&idle_exit_ms=0` +
      `&channel_id=00000000-0000-4000-8000-000000000000`,
    {
      method: "POST",
      headers: { Authorization: `Bearer ${SERVICE_ROLE_KEY}` },
    },
  ).then((r) => r.status === 200, () => false);
  try {
    console.log(
      `dispatch e2e benchmark — functions at ${stack.functionsUrl}` +
        ` (own gateway process, LOCAL_STACK=1); fake latency ${LATENCY_MS} ms; ` +
        `${TARGETS} targets per shape\n`,
    );
    await setUpFake(stack, {
      mps: 0,
      pairSpacingMs: 0,
      latency: { kind: "fixed", ms: LATENCY_MS },
      webhook: { batchIntervalMs: 50, maxBatchSize: 1000, concurrency: 8 },
    });
    console.log("1. sends/s, rate limit off");
    for (
      const shape of [{ runs: 1, concurrency: 16 }, {
        runs: 1,
        concurrency: 64,
      }, { runs: 4, concurrency: 16 }]
    ) {
      console.log("   " + await throughput(stack, shape));
    }

    console.log(
      "\n2. dispatcher ack latency (POST /functions/v1/dispatch → 202)",
    );
    console.log("   " + await acks(stack, ACKS, "idle queue"));
    const fx = await createCampaign(stack, {
      targets: TARGETS,
      ratePerMinute: 6_000_000,
      burst: 100_000,
      minRecipientIntervalSeconds: 0,
    });
    await schedule(stack, fx.campaignId);
    const load = dispatch(stack, {
      channel_id: fx.channelId,
      concurrency: 32,
      budget_ms: 60_000,
    });
    console.log("   " + await acks(stack, ACKS, "during a 32-in-flight send"));
    await load;
    console.log(
      tickerActive
        ? "\nNote: the stack's ticker also dispatches every active channel (one more dispatcher);" +
          " 'by bench runs' is the share the shape itself sent."
        : "\n(the stack's ticker is not dispatching)",
    );
  } finally {
    await stack.close();
    await own.stop();
  }
}
