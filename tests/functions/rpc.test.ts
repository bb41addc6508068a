/**
 * functions/_shared/rpc.ts against the real queue RPCs (local Postgres with the
 * dispatch migration): argument types and result shapes match what the
 * migration defines, and the lease rules hold through these wrappers.
 */
import assert from "node:assert/strict";
import { DB_URL } from "../../local/env.ts";
import { asServiceRole, createDb, RpcError } from "../../functions/_shared/db.ts";
import {
  ClaimedMessageSchema,
  claimMessages,
  recordOptOut,
  recordPhoneNumberQuality,
  recordTemplateStatus,
  recordWabaStatuses,
  reportMessageResults,
  wabaErrorRules,
} from "../../functions/_shared/rpc.ts";

Deno.test("claim → report → statuses → opt-out through the typed RPC wrappers", async () => {
  const db = createDb({ url: DB_URL, max: 2 });
  try {
    const call = async (sql: string, params: unknown[]) =>
      (await asServiceRole(db, (tx) => tx.unsafe(sql, params as never[])))[0].r;
    const pnid = String(200_000_000_000_000 + Math.floor(Math.random() * 1e14));
    const channel = await call(
      "select api.create_channel(phone_number_id => $1::text, display_name => 'rpc test', " +
        "rate_per_minute => 60000, burst => 100, min_recipient_interval_seconds => 0) as r",
      [pnid],
    );
    const campaign = await call(
      "select api.create_campaign(name => 'rpc test', amount_minor => 100, currency => 'KES', " +
        "channel_id => $1::uuid, template_name => 'voucher_issued') as r",
      [channel.id],
    );
    const tag = String(Math.floor(Math.random() * 1e6)).padStart(6, "0");
    const targets = [1, 2, 3].map((i) => `+2549${tag}${i}0`);
    await call(
      "select api.add_campaign_targets(campaign_id => $1::uuid, targets => $2::text::jsonb) as r",
      [campaign.id, JSON.stringify(targets)],
    );
    await call("select api.schedule_campaign(campaign_id => $1::uuid) as r", [campaign.id]);

    const claimed = await claimMessages(db, {
      channelId: channel.id,
      max: 10,
      leaseSeconds: 30,
      worker: "rpc-test-w1",
    });
    assert.equal(claimed.length, 3);
    assert.deepEqual(claimed.map((m) => m.to).sort(), targets);
    assert.ok(claimed.every((m) => m.phone_number_id === pnid && m.attempt === 1));
    assert.ok(claimed.every((m) => m.lease_owner === "rpc-test-w1"));
    assert.ok(
      claimed.every((m) => Math.abs(Date.parse(m.lease_expires_at) - Date.now() - 30_000) < 10_000),
      "the lease end arrives as an ISO string, lease_seconds ahead",
    );
    assert.ok(
      claimed.every((m) => /^[0-9A-Z]{5}-[0-9A-Z]{5}-[0-9A-Z]{5}$/.test(m.body_parameters[0])),
    );
    assert.deepEqual(
      await claimMessages(db, { channelId: channel.id, max: 10, leaseSeconds: 30, worker: "w2" }),
      [],
      "leased messages are not claimed twice",
    );

    const wamid = `wamid.RPCTEST${tag}`;
    const [a, b, c] = claimed;
    const results = [
      { message_id: a.message_id, outcome: "sent" as const, wamid },
      {
        message_id: b.message_id,
        outcome: "retry" as const,
        error_code: "http_503",
        retry_after_seconds: 30,
      },
      {
        message_id: c.message_id,
        outcome: "failed" as const,
        error_code: "waba_131026",
        error_message: "x",
      },
    ];
    assert.deepEqual(await reportMessageResults(db, results, "someone-else"), {
      applied: 0,
      stale: 3,
      sent: 0,
      retried: 0,
      deferred: 0,
      failed: 0,
      dead: 0,
      unknown: 0,
      cancelled: 0,
    });
    assert.deepEqual(await reportMessageResults(db, results, "rpc-test-w1"), {
      applied: 3,
      stale: 0,
      sent: 1,
      retried: 1,
      deferred: 0,
      failed: 1,
      dead: 0,
      unknown: 0,
      cancelled: 0,
    });
    const [retry] = await db`
      select status, next_attempt_at > now() + interval '29 seconds' as honours_retry_after
      from app.messages where id = ${b.message_id}`;
    assert.deepEqual({ ...retry }, { status: "queued", honours_retry_after: true });

    assert.deepEqual(
      await recordWabaStatuses(db, [
        {
          wamid,
          status: "delivered",
          message_id: String(a.message_id),
          timestamp: String(Math.floor(Date.now() / 1000)),
        },
        { wamid: `${wamid}.unknown`, status: "read", recipient_id: b.to.slice(1) },
      ]),
      { applied: 1, ignored: 0, unknown: 1 },
    );

    const rules = await wabaErrorRules(db);
    assert.ok(rules.some((r) => r.code === 130429 && r.action === "throttle"));
    assert.deepEqual(
      await recordTemplateStatus(db, {
        wabaId: "102290129340398",
        templateName: "rpc_test_template_never_used",
        templateLanguage: "en",
        event: "PAUSED",
      }),
      { event: "PAUSED", action: "paused", campaigns: 0 },
    );
    await assert.rejects(
      recordPhoneNumberQuality(db, {
        wabaId: "not digits",
        displayPhoneNumber: null,
        event: "FLAGGED",
      }),
      (e) => e instanceof RpcError && e.code === "invalid_quality_event",
    );

    const first = await recordOptOut(db, c.to, "rpc_test");
    assert.deepEqual([first.msisdn, first.created, first.opted_out], [c.to, true, true]);
    assert.equal((await recordOptOut(db, c.to, "rpc_test")).created, false);
    await assert.rejects(
      recordOptOut(db, "not a number", "rpc_test"),
      (e) => e instanceof RpcError && e.code === "invalid_msisdn" && e.status === 400,
    );
  } finally {
    await db.end();
  }
});

Deno.test("ClaimedMessageSchema reads a claimed row from postgres.js and from PostgREST alike", () => {
  const row = {
    campaign_id: "c",
    channel_id: "ch",
    phone_number_id: "123",
    to: "+254700000001",
    template_name: "voucher_issued",
    template_language: "en",
    body_parameters: ["ABCDE-FGHJK-MNPQR"],
    attempt: 1,
    lease_owner: "w",
  };
  // postgres.js without fetched types: bigint as a digit string, timestamptz as a Date.
  const direct = ClaimedMessageSchema.parse({
    ...row,
    message_id: "42",
    lease_expires_at: new Date("2026-12-04T10:00:00.000Z"),
  });
  // PostgREST: bigint as a number, timestamptz as ISO 8601 text.
  const http = ClaimedMessageSchema.parse({
    ...row,
    message_id: 42,
    lease_expires_at: "2026-12-04T10:00:00+00:00",
  });
  assert.equal(direct.lease_expires_at, "2026-12-04T10:00:00.000Z");
  assert.equal(Date.parse(http.lease_expires_at), Date.parse(direct.lease_expires_at));
  assert.throws(() =>
    ClaimedMessageSchema.parse({ ...row, message_id: "4x", lease_expires_at: "" })
  );
});
