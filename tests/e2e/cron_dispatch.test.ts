/**
 * The production schedule path, end to end on the local stack: the pg_cron job
 * `dispatch-tick` runs `app.invoke_dispatch()`, which queues a POST of
 * `/functions/v1/dispatch` with `net.http_post` (URL and key from Vault); the
 * pg_net worker performs it; the dispatch runs it starts claim and send the
 * campaign's messages. Every dispatch run of the local stack starts that way
 * (pg_cron every minute, the local ticker at Supabase's 10 s cadence, both
 * running the job's command), so the test checks that each run that claimed
 * the campaign's messages answered one of the requests in `net._http_response`
 * (its `run_id`, and the lease owner `dispatch:<run_id>` in app.dispatch_claims).
 */
import assert from "node:assert/strict";
import {
  closeFallback,
  createCampaign,
  fakeMessages,
  openStack,
  schedule,
  setUpFake,
  waitUntil,
} from "../../local/harness.ts";

const e2e = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name:
    "the dispatch-tick job's command → net.http_post → the pg_net worker → dispatch moves messages",
  ...e2e,
  async fn() {
    const stack = await openStack();
    try {
      if (stack.fallback) {
        console.warn("skipped: the stack's own functions are not configured");
        return;
      }
      await setUpFake(stack, { latency: { kind: "fixed", ms: 5 } });
      const fx = await createCampaign(stack, { targets: 20, ratePerMinute: 6000, burst: 100 });

      const [job] = await stack.sql`
        select command, schedule from cron.job where jobname = 'dispatch-tick'`;
      assert.equal(job.command, "select app.invoke_dispatch()");
      await schedule(stack, fx.campaignId);

      // Exactly what pg_cron runs, in its own transaction: the request goes out at commit.
      const [{ id }] = await stack.sql.unsafe(`${job.command} as id`);
      let response: { status_code: number; content: string } | undefined;
      await waitUntil(
        async () => {
          [response] = await stack.sql`
          select status_code, content from net._http_response where id = ${id}`;
          return response !== undefined;
        },
        15_000,
        "the pg_net worker to perform the dispatch request",
      );
      assert.equal(response!.status_code, 202, response!.content);
      assert.equal(typeof JSON.parse(response!.content).accepted, "boolean");

      await waitUntil(
        async () => (await fakeMessages(fx.phoneNumberId)).length === 20,
        30_000,
        "all 20 messages to reach the fake WhatsApp API",
      );
      const runs = await stack.sql`
        select distinct c.worker from app.dispatch_claims c where c.channel_id = ${fx.channelId}`;
      assert.ok(runs.length > 0, "some run claimed the campaign's messages");
      const answers = await stack
        .sql`select content from net._http_response where status_code = 202`;
      const started = new Set(answers.map(({ content }) => {
        try {
          return `dispatch:${JSON.parse(content).run_id}`;
        } catch {
          return null;
        }
      }));
      for (const { worker } of runs) {
        assert.ok(started.has(worker), `run ${worker} was started by a net.http_post request`);
      }
    } finally {
      await stack.close();
    }
  },
});

Deno.test({
  name: "pg_cron itself runs the dispatch tick, and it succeeds",
  ...e2e,
  async fn() {
    const stack = await openStack();
    try {
      // pg_cron 1.4 ticks once a minute: wait for one run that started after the
      // stack stored its Vault secrets (at most a minute and a bit).
      await waitUntil(
        async () => {
          const [run] = await stack.sql`
          select d.status, d.return_message from cron.job_run_details d join cron.job j using (jobid)
          where j.jobname = 'dispatch-tick'
            and d.start_time > (select max(updated_at) from vault.secrets where name = 'service_key')
          order by d.start_time desc limit 1`;
          if (run === undefined || ["starting", "running"].includes(run.status)) return false;
          assert.equal(run.status, "succeeded", run.return_message);
          return true;
        },
        75_000,
        "a dispatch-tick run by pg_cron",
      );
    } finally {
      await stack.close();
    }
  },
});

Deno.test({ name: "close the e2e fallback gateway", ...e2e, fn: closeFallback });
