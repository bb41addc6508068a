/**
 * End to end on the local stack: a 2,000-target campaign goes out through the
 * dispatch function to the fake WhatsApp API, statuses come back through signed
 * webhooks to the waba-webhook function, an opted-out target gets nothing, and
 * `api.campaign_stats` reconciles with the fake's record.
 */
import assert from "node:assert/strict";
import {
  campaignStats,
  closeFallback,
  createCampaign,
  driveUntilDone,
  FAKE_WABA_URL,
  fakeMessages,
  fakeStats,
  http,
  openStack,
  schedule,
  setUpFake,
  voucherCodes,
  waitForWebhooks,
  waitUntil,
} from "../../local/harness.ts";

const e2e = { sanitizeOps: false, sanitizeResources: false };
const TARGETS = 2_000;

Deno.test({
  name:
    "a 2,000-target campaign: one message per target with its own voucher, statuses via signed webhooks",
  ...e2e,
  async fn() {
    const stack = await openStack();
    try {
      // A high-throughput number (Meta raises mps on request) and a channel limit to match:
      // any 1 s window holds at most burst + rate/60 = 100 + 200 = 300 claims, under 400 mps.
      await setUpFake(stack, {
        mps: 400,
        latency: { kind: "uniform", minMs: 5, maxMs: 25 },
        webhook: {
          sentDelayMs: 50,
          deliveredDelayMs: 150,
          readDelayMs: 300,
          readRate: 1,
          failRate: 0,
          batchIntervalMs: 50,
          maxBatchSize: 500,
          concurrency: 8,
        },
      });
      const fx = await createCampaign(stack, {
        targets: TARGETS + 1,
        ratePerMinute: 12_000, // 200/s
        burst: 100,
      });
      const optedOut = fx.recipients[TARGETS]; // the last target

      // The opted-out target says STOP on WhatsApp: a signed inbound webhook.
      const inbound = await http(`${FAKE_WABA_URL}/_fake/inbound`, {
        method: "POST",
        body: JSON.stringify({
          from: optedOut,
          text: "STOP",
          phoneNumberId: fx.phoneNumberId,
        }),
      });
      assert.equal(inbound.status, 200);
      await waitUntil(
        async () => {
          const [row] = await stack
            .sql`select source from app.opt_outs where msisdn = ${optedOut}`;
          return row?.source === "whatsapp_inbound";
        },
        10_000,
        "the inbound STOP to be recorded",
      );

      await schedule(stack, fx.campaignId);
      const t0 = Date.now();
      const runs = await driveUntilDone(stack, fx, {
        timeoutMs: 60_000,
        parallel: 2,
      });
      const elapsed = (Date.now() - t0) / 1000;

      assert.ok(
        await waitForWebhooks(20_000),
        "the fake delivered every status webhook",
      );
      await waitUntil(
        async () => (await campaignStats(stack, fx.campaignId)).messages.read === TARGETS,
        60_000, // the webhooks trail the sends; generous for a loaded machine
        "every message to be read",
      );

      // Exactly one message per target, carrying that target's own voucher code.
      const sent = await fakeMessages(fx.phoneNumberId);
      const codes = await voucherCodes(stack, fx.campaignId);
      assert.equal(sent.length, TARGETS);
      assert.equal(new Set(sent.map((m) => m.to)).size, TARGETS);
      for (const m of sent) {
        assert.equal(
          m.parameters[0],
          codes.get(m.to),
          `voucher code for ${m.to}`,
        );
        assert.equal(m.parameters[1], "500.00 KES");
        assert.equal(m.template, "voucher_issued");
      }
      assert.equal(
        sent.filter((m) => m.to === optedOut).length,
        0,
        "the opted-out target got nothing",
      );

      const stats = await campaignStats(stack, fx.campaignId);
      assert.equal(stats.targets, TARGETS + 1);
      assert.deepEqual(stats.messages, {
        queued: 0,
        held: 0,
        leased: 0,
        sent: 0,
        delivered: 0,
        read: TARGETS,
        failed: 0,
        dead: 0,
        unknown: 0,
        cancelled: 1,
      });
      assert.equal(
        stats.vouchers.issued,
        TARGETS,
        "no voucher for the opted-out target",
      );

      // Every status webhook was accepted (signature verified), none throttled.
      const fake = await fakeStats();
      assert.equal(fake.webhooks.failedAttempts, 0);
      assert.equal(fake.outcomes.waba_130429 ?? 0, 0);
      const [wamids] = await stack.sql`
        select count(*)::int as n from app.messages
        where campaign_id = ${fx.campaignId} and wamid = any(${sent.map((m) => m.wamid)})`;
      assert.equal(
        wamids.n,
        TARGETS,
        "each message row holds the wamid the fake issued",
      );

      // The pg_cron completion job (called directly instead of waiting for its minute).
      await stack.sql`select app.complete_campaigns()`;
      assert.equal(
        (await campaignStats(stack, fx.campaignId)).status,
        "completed",
      );

      const reported = runs.reduce((n, r) => n + r.report.sent, 0);
      console.log(
        `[e2e] ${TARGETS} targets sent in ${elapsed.toFixed(1)} s (${
          (TARGETS / elapsed).toFixed(0)
        } msg/s) by ${runs.length} foreground runs (${reported} reported by them; the rest by the ticker)`,
      );
    } finally {
      await stack.close();
      await closeFallback();
    }
  },
});
