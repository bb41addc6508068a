/**
 * The database restarts in the middle of a dispatch run (pg_ctl restart -m fast:
 * every connection is cut). The run's claims and reports fail transiently, are
 * retried with backoff, and the run finishes the campaign: every target gets its
 * message, and nothing is sent twice unless its report was lost with the
 * connection (counted).
 *
 * This restarts the shared local cluster for about a second; it is the only
 * test that does.
 */
import assert from "node:assert/strict";
import { restart } from "../../local/cluster.ts";
import type { RunSummary } from "../../functions/dispatch/handler.ts";
import {
  closeFallback,
  createCampaign,
  dispatch,
  driveUntilDone,
  fakeMessages,
  openStack,
  schedule,
  setUpFake,
  waitUntil,
} from "../../local/harness.ts";

async function restartPostgres(): Promise<number> {
  const t0 = performance.now();
  await restart();
  return performance.now() - t0;
}

Deno.test({
  name: "the database restarted during dispatch: the worker recovers and finishes the campaign",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const stack = await openStack();
    try {
      await setUpFake(stack, {
        mps: 0,
        pairSpacingMs: 0,
        latency: { kind: "fixed", ms: 15 },
      });
      const fx = await createCampaign(stack, {
        targets: 800,
        ratePerMinute: 60_000,
        burst: 1_000,
        minRecipientIntervalSeconds: 0,
      });
      await schedule(stack, fx.campaignId);

      const run: Promise<RunSummary> = dispatch(stack, {
        channel_id: fx.channelId,
        budget_ms: 30_000,
        idle_exit_ms: 1_500,
        concurrency: 8,
      });
      await waitUntil(
        async () => (await fakeMessages(fx.phoneNumberId)).length >= 150,
        20_000,
        "150 messages before the restart",
      );
      const restartMs = await restartPostgres();
      const acceptedAtRestart = (await fakeMessages(fx.phoneNumberId)).length;
      const summary = await run;

      // Whatever the run could not finish (e.g. leases of reports lost in the cut)
      // comes back through the reclaim job; a short drive finishes the campaign.
      await stack.sql`select app.reclaim_expired_leases()`.catch(() => {});
      await driveUntilDone(stack, fx, { timeoutMs: 90_000 });

      const sent = await fakeMessages(fx.phoneNumberId);
      const recipients = new Set(sent.map((m) => m.to));
      assert.equal(recipients.size, 800, "every target got its message");
      const [row] = await stack.sql`
        select count(*) filter (where status in ('sent', 'delivered', 'read'))::int as ok
        from app.messages where campaign_id = ${fx.campaignId}`;
      assert.equal(row.ok, 800);
      assert.ok(acceptedAtRestart < 800, "the restart happened mid-campaign");
      const outage = summary.db_errors + summary.report.errors;
      console.log(
        `[e2e] db restart: took ${restartMs.toFixed(0)} ms with ${acceptedAtRestart}/800 sent; ` +
          `the run saw ${summary.db_errors} claim errors and ${summary.report.errors} report errors, ` +
          `sent ${summary.sent} and stopped (${summary.stop_reason}); ` +
          `duplicates ${
            sent.length - recipients.size
          }; abandoned reports ${summary.report.abandoned}`,
      );
      assert.ok(
        outage > 0 || summary.stop_reason !== "error",
        "the run recovered rather than failed",
      );
      assert.notEqual(summary.stop_reason, "error", summary.error);
    } finally {
      await stack.close();
      await closeFallback();
    }
  },
});
