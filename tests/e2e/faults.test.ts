/**
 * Dispatch under faults, end to end on the local stack:
 * - 5xx and 429 storms from WhatsApp: retried with backoff (Retry-After as a
 *   floor; a 130429 is deferred without spending the attempt), nothing lost,
 *   nothing sent twice;
 * - a message that keeps failing dies after the attempt limit;
 * - a dispatcher killed mid-batch: after its leases expire every message is
 *   sent; the duplicates (sent before the kill, never reported) are counted and
 *   bounded by what one worker can hold unreported.
 *
 * Backoff delays are real but can reach minutes (full jitter over 4^attempt s);
 * to keep the suite short the tests check the first delays, then "time-travel"
 * queued messages to be due now between rounds (the schedule itself is pgTAP's
 * job). Likewise the pg_cron lease-reclaim job is called directly once the
 * leases have expired instead of waiting up to a minute for its tick.
 */
import assert from "node:assert/strict";
import { DB_URL } from "../../local/env.ts";
import {
  campaignStats,
  closeFallback,
  createCampaign,
  dispatch,
  driveUntilDone,
  FAKE_WABA_URL,
  fakeMessages,
  fakeStats,
  http,
  openStack,
  schedule,
  setUpFake,
  type Stack,
  waitUntil,
} from "../../local/harness.ts";

const e2e = { sanitizeOps: false, sanitizeResources: false };

/** Makes every queued message of the campaign due now (compresses backoff). */
function timeTravel(stack: Stack, campaignId: string): () => Promise<void> {
  return async () => {
    await stack.sql`
      update app.messages set next_attempt_at = now()
      where campaign_id = ${campaignId} and status = 'queued' and next_attempt_at > now()`;
  };
}

Deno.test({
  name:
    "5xx and 429 storms: retried with backoff honouring Retry-After, nothing lost or duplicated",
  ...e2e,
  async fn() {
    const stack = await openStack();
    try {
      await setUpFake(stack, {
        mps: 0,
        pairSpacingMs: 0,
        throttleHttpStatus: 429, // a BSP that answers throttling with 429 + Retry-After
        rateLimitRetryAfterSeconds: 30,
        faults: { serverErrorRate: 0.25, serverErrorStatus: 503 },
      });
      const fx = await createCampaign(stack, {
        targets: 300,
        ratePerMinute: 60_000,
        burst: 1_000,
        minRecipientIntervalSeconds: 0,
      });
      await schedule(stack, fx.campaignId);
      // Room for the storm: nothing should die here.
      await stack
        .sql`update app.messages set max_attempts = 12 where campaign_id = ${fx.campaignId}`;

      await http(`${FAKE_WABA_URL}/_fake/storm`, {
        method: "POST",
        body: '{"ms": 400}',
      });
      const first = await dispatch(stack, {
        channel_id: fx.channelId,
        budget_ms: 3000,
        idle_exit_ms: 200,
        concurrency: 16,
      });
      assert.ok(first.claimed > 0);
      // Counted at the fake: the stack's ticker may have sent some of them too.
      const faults = (await fakeStats()).outcomes;
      assert.ok((faults.waba_130429 ?? 0) > 0, "the storm throttled some sends");
      assert.ok((faults.http_503 ?? 0) > 0, "some sends met a 503");

      // Backoff as scheduled by the database: 429 waits at least its Retry-After
      // (a throttle: deferred, so its attempt is refunded), a first 503 waits
      // within (0, 4 s] (full jitter over 4^1).
      const delays = await stack.sql`
        select last_error_code as code,
               extract(epoch from next_attempt_at - last_attempt_at)::float8 as delay
        from app.messages
        where campaign_id = ${fx.campaignId} and status = 'queued'
          and attempts = case when last_error_code = 'waba_130429' then 0 else 1 end`;
      const throttled = delays.filter((d) => d.code === "waba_130429");
      const unavailable = delays.filter((d) => d.code === "http_503");
      assert.ok(throttled.length > 0 && unavailable.length > 0);
      assert.ok(
        throttled.every((d) => d.delay >= 29),
        "429 retries wait for Retry-After (30 s)",
      );
      assert.ok(
        unavailable.every((d) => d.delay > 0 && d.delay <= 4.5),
        "503 retries back off ≤ 4 s",
      );

      await driveUntilDone(stack, fx, {
        timeoutMs: 45_000,
        run: { concurrency: 16 },
        between: timeTravel(stack, fx.campaignId),
      });

      const sent = await fakeMessages(fx.phoneNumberId);
      assert.equal(sent.length, 300, "each target accepted exactly once");
      assert.equal(new Set(sent.map((m) => m.to)).size, 300);
      const [row] = await stack.sql`
        select count(*) filter (where status in ('sent', 'delivered', 'read'))::int as ok,
               count(*) filter (where attempts > 1)::int as retried,
               max(attempts)::int as max_attempts
        from app.messages where campaign_id = ${fx.campaignId}`;
      assert.equal(row.ok, 300, "nothing lost");
      assert.ok(row.retried > 0);
      const outcomes = (await fakeStats()).outcomes;
      console.log(
        `[e2e] storm: 300 delivered; ${row.retried} needed retries (max ${row.max_attempts} attempts); ` +
          `fake answered http_503 ×${outcomes.http_503 ?? 0}, 130429 ×${outcomes.waba_130429 ?? 0}`,
      );
    } finally {
      await stack.close();
      await closeFallback();
    }
  },
});

Deno.test({
  name: "a message that keeps failing is dead after max_attempts, and never sent",
  ...e2e,
  async fn() {
    const stack = await openStack();
    try {
      await setUpFake(stack, {
        faults: { serverErrorRate: 1, serverErrorStatus: 502 },
      });
      const fx = await createCampaign(stack, {
        targets: 10,
        ratePerMinute: 60_000,
        burst: 1_000,
        minRecipientIntervalSeconds: 0,
      });
      await schedule(stack, fx.campaignId);
      await driveUntilDone(stack, fx, {
        timeoutMs: 30_000,
        between: timeTravel(stack, fx.campaignId),
      });
      const rows = await stack.sql`
        select status, attempts, max_attempts, last_error_code
        from app.messages where campaign_id = ${fx.campaignId}`;
      assert.equal(rows.length, 10);
      for (const r of rows) {
        assert.deepEqual(
          [r.status, r.attempts, r.last_error_code],
          ["dead", r.max_attempts, "http_502"],
        );
      }
      assert.equal(
        (await campaignStats(stack, fx.campaignId)).messages.dead,
        10,
      );
      assert.equal((await fakeMessages(fx.phoneNumberId)).length, 0);
      assert.ok(
        ((await fakeStats()).outcomes.http_502 ?? 0) >=
          10 * rows[0].max_attempts,
      );
    } finally {
      await stack.close();
      await closeFallback();
    }
  },
});

Deno.test({
  name:
    "a dispatcher killed mid-batch: after lease expiry every message is sent; duplicates are bounded",
  ...e2e,
  async fn() {
    const stack = await openStack();
    const LEASE_S = 5;
    const CONCURRENCY = 4;
    const REPORT_BATCH = 20;
    let child: Deno.ChildProcess | undefined;
    try {
      // No pair spacing at the fake: a duplicate must show up as a duplicate.
      await setUpFake(stack, {
        mps: 0,
        pairSpacingMs: 0,
        latency: { kind: "fixed", ms: 20 },
      });
      const fx = await createCampaign(stack, {
        targets: 400,
        ratePerMinute: 60_000,
        burst: 1_000,
        minRecipientIntervalSeconds: 0,
      });
      child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("./_dispatch_worker.ts", import.meta.url).pathname,
          JSON.stringify({
            channelId: fx.channelId,
            leaseSeconds: LEASE_S,
            concurrency: CONCURRENCY,
            batchSize: 20,
            reportBatchSize: REPORT_BATCH,
            reportIntervalMs: 100,
            idleExitMs: 10_000, // it starts before the messages exist
          }),
        ],
        // WABA_BASE_URL: the stack's fake, wherever FAKE_WABA_PORT put it (LOCAL_STACK=1
        // alone would mean the default port, which may be another stack's fake).
        env: {
          SUPABASE_DB_URL: DB_URL,
          LOCAL_STACK: "1",
          WABA_BASE_URL: FAKE_WABA_URL,
          LOG_LEVEL: "error",
        },
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      // The worker must be up before the campaign is scheduled: the stack's ticker
      // dispatches every channel too, and on a busy machine it could send the first
      // 100 messages while the worker is still loading, so the kill would hit a
      // process that never claimed anything (and had not yet announced itself).
      const stdout = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let output = "";
      const deadline = Date.now() + 20_000;
      while (!output.includes('"event":"started"')) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const timeout = new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error("Timed out waiting for the worker to start")),
            Math.max(0, deadline - Date.now()),
          );
        });
        const chunk = await Promise.race([stdout.read(), timeout]).finally(() =>
          clearTimeout(timer)
        );
        if (chunk.done) throw new Error(`The worker exited before starting: ${output}`);
        output += chunk.value;
      }
      await schedule(stack, fx.campaignId);
      await waitUntil(
        async () => (await fakeMessages(fx.phoneNumberId)).length >= 100,
        20_000,
        "the worker to send 100 messages",
      );
      child.kill("SIGKILL");
      const status = await child.status;
      assert.equal(status.signal, "SIGKILL");
      for (let r = await stdout.read(); !r.done; r = await stdout.read()) output += r.value;
      assert.ok(
        !output.includes('"event":"done"'),
        "the worker died before finishing",
      );
      const acceptedAtKill = (await fakeMessages(fx.phoneNumberId)).length;

      // Its leases expire; the pg_cron reclaim job puts the messages back.
      const worker = /"worker":"([^"]+)"/.exec(output)?.[1];
      assert.ok(worker, "the worker announced its lease owner id");
      // Only the dead worker's leases matter (the stack's ticker may hold others).
      const [lease] = await stack.sql`
        select max(lease_expires_at) as until, count(*)::int as leased from app.messages
        where campaign_id = ${fx.campaignId} and status = 'leased' and lease_owner = ${worker}`;
      if (lease.until) {
        await new Promise((r) =>
          setTimeout(r, Math.max(0, lease.until.getTime() - Date.now()) + 200)
        );
      }
      const [{ reclaimed }] = await stack
        .sql`select app.reclaim_expired_leases() as reclaimed`;

      await driveUntilDone(stack, fx, { timeoutMs: 30_000 });

      const sent = await fakeMessages(fx.phoneNumberId);
      const perRecipient = new Map<string, number>();
      for (const m of sent) {
        perRecipient.set(m.to, (perRecipient.get(m.to) ?? 0) + 1);
      }
      assert.equal(perRecipient.size, 400, "every target got its message");
      const duplicates = sent.length - perRecipient.size;
      const [row] = await stack.sql`
        select count(*) filter (where status in ('sent', 'delivered', 'read'))::int as ok
        from app.messages where campaign_id = ${fx.campaignId}`;
      assert.equal(row.ok, 400, "every message ends sent");
      // At-least-once: only what the dead worker had sent but not yet reported goes
      // out twice — at most its sends in flight plus its unflushed report buffer.
      const bound = CONCURRENCY + 2 * REPORT_BATCH;
      assert.ok(
        duplicates <= bound,
        `${duplicates} duplicates, above the bound ${bound}`,
      );
      assert.ok(
        duplicates <= lease.leased,
        `${duplicates} duplicates but only ${lease.leased} messages were left leased`,
      );
      assert.ok(
        [...perRecipient.values()].every((n) => n <= 2),
        "nobody got more than two copies",
      );
      console.log(
        `[e2e] crash: worker killed after ${acceptedAtKill} sends with ${lease.leased} messages leased; ` +
          `${reclaimed} reclaimed after ${LEASE_S} s; duplicates ${duplicates} (bound ${bound} = ` +
          `concurrency ${CONCURRENCY} + 2 × report batch ${REPORT_BATCH})`,
      );
    } finally {
      try {
        child?.kill("SIGKILL");
      } catch { /* already dead */ }
      await child?.stdout.cancel().catch(() => {});
      await stack.close();
      await closeFallback();
    }
  },
});
