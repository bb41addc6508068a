/**
 * The channel rate holds end to end, however many dispatchers run: with a
 * limit of N messages/min and a burst B, the fake WhatsApp API's record shows
 * no window of W seconds with more than B + N·W/60 accepted messages (for a 60 s
 * window that is N plus the burst; for shorter windows, the proportional share
 * plus the burst), and WhatsApp never answers 130429.
 */
import assert from "node:assert/strict";
import {
  closeFallback,
  createCampaign,
  dispatch,
  fakeMessages,
  fakeStats,
  maxInWindow,
  openStack,
  rpc,
  schedule,
  setUpFake,
} from "../../local/harness.ts";

const RATE_PER_MINUTE = 240; // 4 msg/s
const BURST = 8;
const RUN_MS = 15_000;
const DISPATCHERS = 3;

Deno.test("maxInWindow() counts the busiest window", () => {
  assert.equal(maxInWindow([0, 100, 999, 1000, 1500, 5000], 1000), 3);
  assert.equal(maxInWindow([0, 100, 999, 1000, 1500, 5000], 1001), 4);
  assert.equal(maxInWindow([0, 100, 999, 1000, 1500, 5000], 100), 2); // 999 and 1000
  assert.equal(maxInWindow([0, 100, 999, 1000, 1500, 5000], 1), 1);
  assert.equal(maxInWindow([], 1000), 0);
});

Deno.test({
  name:
    `a channel limited to ${RATE_PER_MINUTE}/min (burst ${BURST}) never exceeds it with ${DISPATCHERS} dispatchers`,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const stack = await openStack();
    try {
      await setUpFake(stack, {
        latency: { kind: "uniform", minMs: 5, maxMs: 40 },
      });
      const fx = await createCampaign(stack, {
        targets: 150, // more than the limit lets through in RUN_MS: the bucket is the bottleneck
        ratePerMinute: RATE_PER_MINUTE,
        burst: BURST,
      });
      await schedule(stack, fx.campaignId);
      const runs = await Promise.all(
        Array.from({ length: DISPATCHERS }, () =>
          dispatch(stack, {
            channel_id: fx.channelId,
            budget_ms: RUN_MS,
            idle_exit_ms: RUN_MS, // keep polling the dry bucket for the whole run
          })),
      );
      await rpc(stack, "cancel_campaign", { campaign_id: fx.campaignId }); // stop the ticker too

      const accepted = (await fakeMessages(fx.phoneNumberId)).map((m) => m.acceptedAtMs).sort((
        a,
        b,
      ) => a - b);
      const spanS = (accepted.at(-1)! - accepted[0]) / 1000;
      const lines: string[] = [];
      for (const w of [1, 2, 3, 5, 10, 15, 60]) {
        const seen = maxInWindow(accepted, w * 1000);
        // + 1: a claim and its send are a few ms apart, so a window at the fake can
        // straddle one claim more than the same window at the bucket.
        const limit = Math.floor(BURST + (RATE_PER_MINUTE * w) / 60) + 1;
        lines.push(`${w}s: ${seen} ≤ ${limit}`);
        assert.ok(
          seen <= limit,
          `window ${w}s holds ${seen} messages, above ${limit}`,
        );
      }
      assert.equal(
        (await fakeStats()).outcomes.waba_130429 ?? 0,
        0,
        "no 130429 from WhatsApp",
      );

      // The limiter does not starve the channel either: close to the allowed amount went out.
      const allowed = BURST + (RATE_PER_MINUTE * (RUN_MS / 1000)) / 60;
      assert.ok(
        accepted.length >= allowed * 0.6,
        `only ${accepted.length} sent of ${allowed} allowed`,
      );
      console.log(
        `[e2e] rate ${RATE_PER_MINUTE}/min burst ${BURST}: ${accepted.length} sent over ${
          spanS.toFixed(1)
        } s by ${DISPATCHERS} dispatchers (+ ticker); busiest windows ${lines.join(", ")}; ` +
          `claim calls ${runs.reduce((n, r) => n + r.claim_calls, 0)}`,
      );
    } finally {
      await stack.close();
      await closeFallback();
    }
  },
});
