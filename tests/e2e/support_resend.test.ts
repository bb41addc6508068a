/**
 * End to end on the local stack, "I didn't get my code": a campaign goes out
 * through the dispatch function to the fake WhatsApp API, one recipient's
 * message fails (a signed `failed` status webhook), support finds the number,
 * resends its message — the same voucher, a new message, through the unchanged
 * claim path — and the fake receives it; the campaign completes again; a number
 * that said STOP gets no resend.
 */
import assert from "node:assert/strict";
import { mintJwt } from "../../local/env.ts";
import {
  apiClient,
  closeFallback,
  configureFake,
  createCampaign,
  driveUntilDone,
  FAKE_WABA_URL,
  fakeMessages,
  http,
  openStack,
  schedule,
  setUpFake,
  waitForWebhooks,
  waitUntil,
} from "../../local/harness.ts";

const e2e = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name:
    "support resends a failed voucher message: same voucher, new message, delivered by the fake",
  ...e2e,
  async fn() {
    const stack = await openStack();
    try {
      const fx = await createCampaign(stack, {
        targets: 3,
        ratePerMinute: 6_000,
        minRecipientIntervalSeconds: 0,
      });
      const [ok, failing, stopping] = fx.recipients;
      await setUpFake(stack, {
        mps: 0,
        pairSpacingMs: 0,
        webhook: {
          sentDelayMs: 20,
          deliveredDelayMs: 50,
          readDelayMs: 100,
          readRate: 1,
          failRecipients: { [failing.slice(1)]: 131026 },
          batchIntervalMs: 20,
        },
      });
      // A staff admin, as the admin app signs in.
      const [user] = await stack.sql`
        insert into auth.users (email) values (${`support-${crypto.randomUUID()}@test`}) returning id`;
      await stack.sql`insert into app.staff (user_id, role) values (${user.id}, 'admin')`;
      const admin = apiClient(await mintJwt({ sub: user.id }));

      await schedule(stack, fx.campaignId);
      await driveUntilDone(stack, fx, { timeoutMs: 30_000 });
      assert.ok(await waitForWebhooks(10_000), "the fake delivered its status webhooks");
      const statusOf = async (msisdn: string) => {
        const { data, error } = await admin.rpc("find_customer", { msisdn });
        assert.equal(error, null);
        return data;
      };
      await waitUntil(
        async () => (await statusOf(failing)).messages[0]?.status === "failed",
        10_000,
        "the failed status to be recorded",
      );

      // Support looks the number up: one failed message, its voucher still issued.
      const before = await statusOf(failing);
      assert.equal(before.messages.length, 1);
      const original = before.messages[0];
      assert.equal(original.voucher.status, "issued");
      const code = original.voucher.code as string;
      assert.equal(
        (await fakeMessages(fx.phoneNumberId)).filter((m) => m.to === failing).length,
        1,
      );

      // The resend cooldown counts from the original message; it was minutes ago.
      await stack.sql`update app.messages set created_at = now() - interval '1 hour'
                      where campaign_id = ${fx.campaignId}`;
      await configureFake(stack, { webhook: { failRecipients: {} } });
      const key = crypto.randomUUID();
      const resent = await admin.rpc("resend_message", {
        message_id: original.message_id,
        idempotency_key: key,
      });
      assert.equal(resent.error, null);
      assert.equal(resent.data.voucher_code, code, "the resend carries the same voucher");
      assert.notEqual(resent.data.message_id, original.message_id, "in a new message");
      const replay = await admin.rpc("resend_message", {
        message_id: original.message_id,
        idempotency_key: key,
      });
      assert.deepEqual(
        replay.data,
        { ...resent.data, replayed: true },
        "a retried request is the same resend",
      );
      const pending = await admin.rpc("resend_message", {
        message_id: original.message_id,
        idempotency_key: crypto.randomUUID(),
      });
      assert.deepEqual([pending.status, pending.error?.code], [409, "message_pending"]);

      // The dispatch function sends it through the ordinary claim.
      await driveUntilDone(stack, fx, { timeoutMs: 30_000 });
      assert.ok(await waitForWebhooks(10_000));
      await waitUntil(
        async () =>
          (await statusOf(failing)).messages.find((m: { message_id: number }) =>
            m.message_id === resent.data.message_id
          )?.status === "read",
        10_000,
        "the resend to be read",
      );
      const sent = (await fakeMessages(fx.phoneNumberId)).filter((m) => m.to === failing);
      assert.equal(sent.length, 2, "the recipient got the original and the resend");
      assert.deepEqual(sent.map((m) => m.parameters[0]), [code, code], "both with the same code");
      assert.equal(
        (await fakeMessages(fx.phoneNumberId)).filter((m) => m.to === ok).length,
        1,
        "nobody else got anything more",
      );
      const [{ vouchers }] = await stack.sql`
        select count(*)::int as vouchers from app.vouchers where campaign_id = ${fx.campaignId}`;
      assert.equal(vouchers, 3, "no voucher was issued for the resend");
      await stack.sql`select app.complete_campaigns()`;
      const [{ status }] = await stack
        .sql`select status from app.campaigns where id = ${fx.campaignId}`;
      assert.equal(status, "completed", "the campaign completes again");

      // A number that said STOP gets no resend.
      const inbound = await http(`${FAKE_WABA_URL}/_fake/inbound`, {
        method: "POST",
        body: JSON.stringify({ from: stopping, text: "STOP", phoneNumberId: fx.phoneNumberId }),
      });
      assert.equal(inbound.status, 200);
      await waitUntil(
        async () => (await statusOf(stopping)).opted_out !== null,
        10_000,
        "the STOP to be recorded",
      );
      const stopped = await statusOf(stopping);
      const refused = await admin.rpc("resend_message", {
        message_id: stopped.messages[0].message_id,
        idempotency_key: crypto.randomUUID(),
      });
      assert.deepEqual([refused.status, refused.error?.code], [409, "recipient_opted_out"]);
      assert.equal(
        (await fakeMessages(fx.phoneNumberId)).filter((m) => m.to === stopping).length,
        1,
        "the opted-out number got nothing more",
      );
    } finally {
      await stack.close();
      await closeFallback();
    }
  },
});
