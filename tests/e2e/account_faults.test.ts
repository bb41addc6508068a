/**
 * What WhatsApp does to a whole number, template or account, end to end on the
 * local stack (the dispatch and webhook functions, Postgres, the fake WhatsApp
 * API configured through its control endpoints):
 *
 * - the access token expires mid-campaign: no message ends dead or failed
 *   because of it; the channel pauses with its reason; once the token works
 *   again and an admin resumes the channel, the campaign completes;
 * - the number is spam-flagged (131048): the channel pauses for its cool-down,
 *   resumes by itself when it is over, and every message goes out;
 * - a 130429 storm: the channel's effective rate drops and recovers, nothing is
 *   lost, and no window at the fake holds more than the configured rate allows;
 * - a template paused by webhook pauses its campaign; approved again, it resumes;
 * - a 250 tier: a campaign reaches 250 unique recipients, the rest wait; a day
 *   later (the clock moved in the database and at the fake) the rest go.
 *
 * Cool-downs and the 24 h window are real durations: the tests move the stored
 * times instead of waiting (the rules themselves are pgTAP's job, specs 18–20).
 */
import assert from "node:assert/strict";
import {
  campaignStats,
  closeFallback,
  configureFake,
  createCampaign,
  dispatch,
  driveUntilDone,
  fakeConfig,
  fakeControl,
  fakeMessages,
  fakeStats,
  maxInWindow,
  openStack,
  rpc,
  schedule,
  setUpFake,
  type Stack,
  waitForWebhooks,
  waitUntil,
} from "../../local/harness.ts";

const e2e = { sanitizeOps: false, sanitizeResources: false };

/** Message statuses of a campaign, counted. */
async function statuses(stack: Stack, campaignId: string): Promise<Record<string, number>> {
  const rows = await stack.sql`
    select status, count(*)::int as n from app.messages where campaign_id = ${campaignId} group by status`;
  return Object.fromEntries(rows.map((r) => [r.status, r.n]));
}

async function channel(stack: Stack, channelId: string) {
  const [c] = await stack.sql`
    select status, pause_reason, paused_until, pause_error_code, effective_rate_per_minute::float8 as rate
    from app.channels where id = ${channelId}`;
  return c;
}

/** Dispatch runs for the channel until `done()` or the time runs out. */
async function dispatchUntil(
  stack: Stack,
  channelId: string,
  done: () => Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await done())) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await dispatch(stack, { channel_id: channelId, budget_ms: 2000, idle_exit_ms: 300 });
  }
}

Deno.test({
  name:
    "an access token that expires mid-campaign pauses the channel; nothing dies; fixed and resumed, the campaign completes",
  ...e2e,
  async fn() {
    const stack = await openStack();
    try {
      await setUpFake(stack, { mps: 0, pairSpacingMs: 0, account: { tokenExpiresAfterSends: 40 } });
      const fx = await createCampaign(stack, {
        targets: 120,
        ratePerMinute: 60_000,
        burst: 1_000,
        minRecipientIntervalSeconds: 0,
      });
      await schedule(stack, fx.campaignId);
      await dispatchUntil(
        stack,
        fx.channelId,
        async () => (await channel(stack, fx.channelId)).status === "paused",
        30_000,
        "the channel to pause",
      );
      const paused = await channel(stack, fx.channelId);
      assert.deepEqual(
        [paused.pause_reason, paused.paused_until, paused.pause_error_code],
        ["access_token_expired", null, "waba_190"],
        "paused for the expired token, until an admin resumes it",
      );
      // Whatever was in flight has been reported by now (the run waits for its reports).
      const during = await statuses(stack, fx.campaignId);
      assert.equal(
        (during.failed ?? 0) + (during.dead ?? 0),
        0,
        `nothing failed or died: ${JSON.stringify(during)}`,
      );
      const beforeExpiry = (await fakeMessages(fx.phoneNumberId)).length;
      assert.ok(
        beforeExpiry > 0 && beforeExpiry <= 40,
        `the fake accepted ${beforeExpiry} (≤ 40) before the token expired`,
      );
      const [{ max }] = await stack.sql`
        select max(attempts)::int as max from app.messages where campaign_id = ${fx.campaignId}`;
      assert.ok(max <= 1, `a refused send spent no attempt (max attempts ${max})`);
      const stats = await campaignStats(stack, fx.campaignId);
      assert.equal(stats.channel.pause.reason, "access_token_expired", "campaign_stats shows why");
      assert.match(stats.channel.pause.operator_action, /token/i);

      // The token is renewed (at the fake) and an admin resumes the channel.
      await configureFake(stack, { account: { tokenExpired: false } });
      assert.equal(
        (await rpc(stack, "resume_channel", { channel_id: fx.channelId })).status,
        "active",
      );
      await driveUntilDone(stack, fx, { timeoutMs: 30_000 });
      await stack.sql`select app.complete_campaigns()`;
      const after = await statuses(stack, fx.campaignId);
      assert.equal(
        (after.sent ?? 0) + (after.delivered ?? 0) + (after.read ?? 0),
        120,
        JSON.stringify(after),
      );
      assert.equal((await campaignStats(stack, fx.campaignId)).status, "completed");
      const accepted = await fakeMessages(fx.phoneNumberId);
      assert.equal(new Set(accepted.map((m) => m.to)).size, 120, "every target got its message");
      console.log(
        `[e2e] token expiry: paused after ${beforeExpiry} sends with reason ${paused.pause_reason}; ` +
          `${
            (await fakeStats()).outcomes.waba_190 ?? 0
          } sends refused with 190; resumed and completed`,
      );
    } finally {
      await stack.close();
      await closeFallback();
    }
  },
});

Deno.test({
  name:
    "a spam-flagged number (131048) pauses the channel for its cool-down, then it resumes by itself",
  ...e2e,
  async fn() {
    const stack = await openStack();
    try {
      await setUpFake(stack, {
        mps: 0,
        pairSpacingMs: 0,
        account: { spamFlagAfterSends: 20, spamFlagDurationMs: 1500 },
      });
      const fx = await createCampaign(stack, {
        targets: 60,
        ratePerMinute: 60_000,
        burst: 1_000,
        minRecipientIntervalSeconds: 0,
      });
      await schedule(stack, fx.campaignId);
      await dispatchUntil(
        stack,
        fx.channelId,
        async () => (await channel(stack, fx.channelId)).status === "paused",
        30_000,
        "the channel to pause",
      );
      const paused = await channel(stack, fx.channelId);
      assert.equal(paused.pause_reason, "spam_rate_limit");
      const coolDown = (paused.paused_until.getTime() - Date.now()) / 1000;
      assert.ok(
        coolDown > 3000 && coolDown <= 3600,
        `a cool-down of about an hour (${coolDown.toFixed(0)} s left)`,
      );
      const during = await statuses(stack, fx.campaignId);
      assert.equal((during.failed ?? 0) + (during.dead ?? 0), 0, JSON.stringify(during));
      const run = await dispatch(stack, {
        channel_id: fx.channelId,
        budget_ms: 500,
        idle_exit_ms: 200,
      });
      assert.equal(run.claimed, 0, "a paused channel gives the dispatcher nothing");

      // The hour passes (in the database; the fake's flag lasts 1.5 s).
      await new Promise((r) => setTimeout(r, 1600));
      await stack.sql`update app.channels set paused_until = now() where id = ${fx.channelId}`;
      await driveUntilDone(stack, fx, { timeoutMs: 30_000 });
      assert.deepEqual(
        [(await channel(stack, fx.channelId)).status],
        ["active"],
        "resumed by the claim",
      );
      const after = await statuses(stack, fx.campaignId);
      assert.equal((after.failed ?? 0) + (after.dead ?? 0), 0, JSON.stringify(after));
      assert.equal(new Set((await fakeMessages(fx.phoneNumberId)).map((m) => m.to)).size, 60);
    } finally {
      await stack.close();
      await closeFallback();
    }
  },
});

Deno.test({
  name:
    "a 130429 storm lowers the effective rate, which recovers; nothing is lost and no window exceeds the configured rate",
  ...e2e,
  async fn() {
    const RATE = 600; // per minute: 10/s
    const BURST = 10;
    const stack = await openStack();
    try {
      await setUpFake(stack, { mps: 0, pairSpacingMs: 0, latency: { kind: "fixed", ms: 5 } });
      const fx = await createCampaign(stack, {
        targets: 160,
        ratePerMinute: RATE,
        burst: BURST,
        minRecipientIntervalSeconds: 0,
      });
      await schedule(stack, fx.campaignId);
      await fakeControl("/_fake/storm", { ms: 1500 });
      let lowest = RATE;
      const watch = setInterval(async () => {
        const c = await channel(stack, fx.channelId).catch(() => null);
        if (c?.rate !== null && c?.rate !== undefined) lowest = Math.min(lowest, c.rate);
      }, 100);
      try {
        await driveUntilDone(stack, fx, { timeoutMs: 60_000 });
      } finally {
        clearInterval(watch);
      }
      const throttled = (await fakeStats()).outcomes.waba_130429 ?? 0;
      assert.ok(throttled > 0, "the storm throttled some sends");
      assert.ok(lowest <= RATE / 2, `the effective rate dropped (lowest ${lowest}/min)`);
      // Successes raised it back (5% of the configured rate per second of sending).
      assert.equal(
        (await channel(stack, fx.channelId)).rate,
        null,
        "back at the configured rate, never above",
      );

      const after = await statuses(stack, fx.campaignId);
      assert.equal((after.failed ?? 0) + (after.dead ?? 0), 0, JSON.stringify(after));
      const accepted = (await fakeMessages(fx.phoneNumberId)).map((m) => m.acceptedAtMs).sort((
        a,
        b,
      ) => a - b);
      assert.equal(accepted.length, 160, "each target accepted once");
      const lines: string[] = [];
      for (const w of [1, 2, 5, 10, 60]) {
        const seen = maxInWindow(accepted, w * 1000);
        const limit = Math.floor(BURST + (RATE * w) / 60) + 1;
        lines.push(`${w}s: ${seen} ≤ ${limit}`);
        assert.ok(seen <= limit, `window ${w}s holds ${seen} messages, above ${limit}`);
      }
      console.log(
        `[e2e] 130429 storm: ${throttled} throttled answers; effective rate fell to ${lowest}/min and recovered; ` +
          `busiest windows ${lines.join(", ")}`,
      );
    } finally {
      await stack.close();
      await closeFallback();
    }
  },
});

Deno.test({
  name:
    "a template paused by webhook pauses its campaign; approved again, the campaign resumes and completes",
  ...e2e,
  async fn() {
    const stack = await openStack();
    const template = `e2e_paused_${crypto.randomUUID().slice(0, 8).replaceAll("-", "")}`;
    try {
      await setUpFake(stack, {
        mps: 0,
        pairSpacingMs: 0,
        webhook: { sentDelayMs: 20, batchIntervalMs: 20 },
      });
      const wabaId = (await fakeConfig()).wabaId;
      const fx = await createCampaign(stack, {
        targets: 30,
        ratePerMinute: 120, // 2/s: the campaign is still sending when the webhook lands
        burst: 2,
        minRecipientIntervalSeconds: 0,
        templateName: template,
        wabaId,
      });
      await schedule(stack, fx.campaignId);
      await dispatch(stack, { channel_id: fx.channelId, budget_ms: 1500, idle_exit_ms: 1500 });
      await fakeControl("/_fake/template-status", {
        name: template,
        event: "PAUSED",
        reason: "LOW_QUALITY",
      });
      await waitForWebhooks(10_000);
      await waitUntil(
        async () => (await campaignStats(stack, fx.campaignId)).status === "paused",
        10_000,
        "the campaign to pause",
      );
      const stats = await campaignStats(stack, fx.campaignId);
      assert.deepEqual([stats.pause.reason, /LOW_QUALITY/.test(stats.pause.detail)], [
        "template_paused",
        true,
      ]);
      const run = await dispatch(stack, {
        channel_id: fx.channelId,
        budget_ms: 500,
        idle_exit_ms: 200,
      });
      assert.equal(run.claimed, 0, "a paused campaign's messages are not claimed");
      const sentBefore = (await fakeMessages(fx.phoneNumberId)).length;

      await fakeControl("/_fake/template-status", { name: template, event: "APPROVED" });
      await waitForWebhooks(10_000);
      await waitUntil(
        async () => (await campaignStats(stack, fx.campaignId)).status === "dispatching",
        10_000,
        "the campaign to resume",
      );
      await rpc(stack, "update_channel", {
        channel_id: fx.channelId,
        rate_per_minute: 60_000,
        burst: 1000,
      });
      await driveUntilDone(stack, fx, { timeoutMs: 30_000 });
      const after = await statuses(stack, fx.campaignId);
      assert.equal((after.failed ?? 0) + (after.dead ?? 0), 0, JSON.stringify(after));
      assert.equal(new Set((await fakeMessages(fx.phoneNumberId)).map((m) => m.to)).size, 30);
      console.log(
        `[e2e] template paused by webhook after ${sentBefore} sends; approved, the other ${
          30 - sentBefore
        } went`,
      );
    } finally {
      await stack.close();
      await closeFallback();
    }
  },
});

Deno.test({
  name:
    "a 250 tier: a campaign reaches 250 unique recipients in 24 h and waits; a day later the rest go",
  ...e2e,
  async fn() {
    const stack = await openStack();
    try {
      // Meta enforces the limit too: the fake refuses any 251st recipient.
      await setUpFake(stack, { mps: 0, pairSpacingMs: 0, account: { messagingLimit: 250 } });
      const portfolio = await rpc(stack, "create_portfolio", {
        name: `e2e tier ${crypto.randomUUID().slice(0, 8)}`,
        messaging_tier: "TIER_250",
      });
      const fx = await createCampaign(stack, {
        targets: 300,
        ratePerMinute: 60_000,
        burst: 1_000,
        minRecipientIntervalSeconds: 0,
        portfolioId: portfolio.portfolio_id,
      });
      await schedule(stack, fx.campaignId);
      await dispatchUntil(
        stack,
        fx.channelId,
        async () => (await campaignStats(stack, fx.campaignId)).waiting_for_tier === 50,
        30_000,
        "50 messages to wait for the tier",
      );
      const accepted = await fakeMessages(fx.phoneNumberId);
      assert.equal(new Set(accepted.map((m) => m.to)).size, 250, "250 unique recipients");
      assert.equal(
        (await fakeStats()).outcomes.messaging_limit ?? 0,
        0,
        "WhatsApp never had to refuse one",
      );
      const stats = await campaignStats(stack, fx.campaignId);
      assert.deepEqual(
        [stats.status, stats.channel.portfolio.remaining, stats.waiting_for_tier],
        ["dispatching", 0, 50],
      );

      // A day passes: in the database (the window's stored times) and at the fake.
      await stack.sql`
        update app.portfolio_usage set bucket_start = bucket_start - interval '25 hours'
        where portfolio_id = ${portfolio.portfolio_id}`;
      await stack.sql`
        update app.portfolio_recipients set last_at = last_at - interval '25 hours'
        where portfolio_id = ${portfolio.portfolio_id}`;
      await stack.sql`
        update app.messages set next_attempt_at = now()
        where campaign_id = ${fx.campaignId} and status = 'queued' and last_error_code = 'messaging_limit'`;
      await configureFake(stack, { account: { clockOffsetMs: 25 * 3_600_000 } });
      await driveUntilDone(stack, fx, { timeoutMs: 30_000 });
      assert.equal(new Set((await fakeMessages(fx.phoneNumberId)).map((m) => m.to)).size, 300);
      assert.equal((await fakeStats()).outcomes.messaging_limit ?? 0, 0);
      const after = await statuses(stack, fx.campaignId);
      assert.equal((after.failed ?? 0) + (after.dead ?? 0), 0, JSON.stringify(after));
    } finally {
      await stack.close();
      await closeFallback();
    }
  },
});
