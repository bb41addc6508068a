/**
 * The fake WhatsApp API's account-level behaviour, configurable from tests: an
 * expired token (190/463), a number spam-flagged after N sends (131048), the
 * portfolio's messaging limit per rolling 24 h (with a clock offset), paused and
 * disabled templates (132015 / 132016), the template-status and quality webhooks,
 * asynchronous failures in status webhooks, and its own check of Meta's rule for
 * text parameters (132018).
 */
import assert from "node:assert/strict";
import { verifySignature } from "../../functions/_shared/webhook_signature.ts";
import {
  qualityUpdates,
  statusUpdates,
  templateUpdates,
  WebhookPayloadSchema,
} from "../../functions/_shared/waba_schemas.ts";
import {
  type FakeWaba,
  type FakeWabaConfigPatch,
  startFakeWaba,
} from "../../local/fake_waba/mod.ts";
import { PHONE_NUMBER_ID, startReceiver, TEST_SECRET, TEST_TOKEN, waitFor } from "./_helpers.ts";

/** Sends a template straight to the fake; returns the HTTP status and the Graph error. */
async function send(
  fake: FakeWaba,
  to: string,
  opts: { token?: string; pnid?: string; template?: string; params?: string[] } = {},
): Promise<{ status: number; code?: number; subcode?: number; message?: string }> {
  const res = await fetch(`${fake.url}/v21.0/${opts.pnid ?? PHONE_NUMBER_ID}/messages`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${opts.token ?? TEST_TOKEN}`,
      "content-type": "application/json",
    },
    body: JSON.stringify({
      messaging_product: "whatsapp",
      to,
      type: "template",
      template: {
        name: opts.template ?? "voucher_issued",
        language: { code: "en" },
        components: [{
          type: "body",
          parameters: (opts.params ?? ["X"]).map((text) => ({ type: "text", text })),
        }],
      },
    }),
  });
  const body = await res.json();
  return {
    status: res.status,
    code: body.error?.code,
    subcode: body.error?.error_subcode,
    message: body.error?.message,
  };
}

async function withFake(patch: FakeWabaConfigPatch, fn: (fake: FakeWaba) => Promise<void>) {
  const fake = await startFakeWaba({
    accessToken: TEST_TOKEN,
    appSecret: TEST_SECRET,
    pairSpacingMs: 0,
    mps: 0,
    ...patch,
  });
  try {
    await fn(fake);
  } finally {
    await fake.shutdown();
  }
}

Deno.test("fake WABA: an expired token answers 401, code 190, subcode 463, until it is renewed", async () => {
  await withFake({ account: { tokenExpiresAfterSends: 2 } }, async (fake) => {
    assert.equal((await send(fake, "+254700000001")).status, 200);
    assert.equal((await send(fake, "+254700000002")).status, 200);
    const expired = await send(fake, "+254700000003");
    assert.deepEqual([expired.status, expired.code, expired.subcode], [401, 190, 463]);
    assert.match(expired.message ?? "", /Session has expired/);
    assert.equal(fake.stats().account.tokenExpired, true);
    fake.configure({ account: { tokenExpired: false } });
    assert.equal((await send(fake, "+254700000003")).status, 200, "a renewed token works again");
    assert.equal((await send(fake, "+254700000004")).status, 200, "and does not expire again");
    assert.equal(
      (await send(fake, "+254700000005", { token: "wrong" })).code,
      190,
      "a wrong token is 190 too",
    );
    assert.equal(
      (await send(fake, "+254700000005", { token: "wrong" })).subcode,
      undefined,
      "without 463",
    );
  });
});

Deno.test("fake WABA: a number is spam-flagged after N sends (131048) for a while, per number", async () => {
  await withFake({ account: { spamFlagAfterSends: 3, spamFlagDurationMs: 150 } }, async (fake) => {
    for (let i = 1; i <= 3; i++) assert.equal((await send(fake, `+25470000010${i}`)).status, 200);
    const flagged = await send(fake, "+254700000104");
    assert.deepEqual([flagged.status, flagged.code], [400, 131048]);
    assert.deepEqual(fake.stats().account.spamFlagged, [PHONE_NUMBER_ID]);
    assert.equal(
      (await send(fake, "+254700000105", { pnid: "106540352242923" })).status,
      200,
      "another number of the account is not flagged",
    );
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(
      (await send(fake, "+254700000106")).status,
      200,
      "the flag lifts after its duration",
    );
  });
});

Deno.test("fake WABA: the messaging limit counts unique recipients per rolling 24 h", async () => {
  await withFake({ account: { messagingLimit: 3 } }, async (fake) => {
    for (const to of ["+254700000201", "+254700000202", "+254700000203"]) {
      assert.equal((await send(fake, to)).status, 200);
    }
    assert.equal(
      (await send(fake, "+254700000201")).status,
      200,
      "a recipient already counted is free",
    );
    const over = await send(fake, "+254700000204");
    assert.deepEqual([over.status, over.code], [400, 131048]);
    assert.equal(fake.stats().outcomes.messaging_limit, 1);
    assert.equal(fake.stats().account.recipients24h, 3);
    fake.configure({ account: { clockOffsetMs: 24 * 3_600_000 + 1 } });
    assert.equal(
      (await send(fake, "+254700000204")).status,
      200,
      "a day later the window has room",
    );
  });
});

Deno.test("fake WABA: paused and disabled templates answer 132015 and 132016; text parameters follow 132018", async () => {
  await withFake({
    account: { templateStatus: { voucher_issued: "PAUSED", old_voucher: "DISABLED" } },
  }, async (fake) => {
    assert.equal((await send(fake, "+254700000301")).code, 132015);
    assert.equal((await send(fake, "+254700000301", { template: "old_voucher" })).code, 132016);
    assert.equal((await send(fake, "+254700000301", { template: "fine_voucher" })).status, 200);
    for (const text of ["two\nlines", "a\ttab", "five     spaces"]) {
      const refused = await send(fake, "+254700000302", {
        template: "fine_voucher",
        params: [text],
      });
      assert.deepEqual([refused.status, refused.code], [400, 132018], JSON.stringify(text));
    }
    assert.equal(
      (await send(fake, "+254700000302", { template: "fine_voucher", params: ["four    ok"] }))
        .status,
      200,
    );
  });
});

Deno.test("fake WABA: template-status and quality webhooks are signed, shaped like Meta's, and change the fake", async () => {
  const receiver = startReceiver();
  try {
    await withFake({ webhook: { url: receiver.url, batchIntervalMs: 10 } }, async (fake) => {
      fake.templateStatus({ name: "voucher_issued", event: "PAUSED", reason: "LOW_QUALITY" });
      fake.quality({ event: "DOWNGRADE", tier: "TIER_250" });
      await waitFor(() => receiver.received.length >= 2, 3000);
      const payloads = receiver.received.map((r) => WebhookPayloadSchema.parse(JSON.parse(r.raw)));
      for (const r of receiver.received) {
        assert.ok(await verifySignature(new TextEncoder().encode(r.raw), r.signature, TEST_SECRET));
      }
      const template = payloads.flatMap(templateUpdates)[0];
      assert.deepEqual(
        [
          template.wabaId,
          template.value.message_template_name,
          template.value.event,
          template.value.reason,
        ],
        [fake.config().wabaId, "voucher_issued", "PAUSED", "LOW_QUALITY"],
      );
      const quality = payloads.flatMap(qualityUpdates)[0];
      assert.deepEqual(
        [
          quality.value.event,
          quality.value.max_daily_conversations_per_business,
          quality.value.display_phone_number,
        ],
        ["DOWNGRADE", "TIER_250", fake.config().displayPhoneNumber],
      );
      assert.equal(
        (await send(fake, "+254700000401")).code,
        132015,
        "the paused template is refused",
      );
      assert.equal(
        fake.config().account.messagingLimit,
        250,
        "the tier in the webhook is the fake's limit now",
      );
    });
  } finally {
    await receiver.shutdown();
  }
});

Deno.test("fake WABA: an asynchronous failure arrives as a failed status with its error", async () => {
  const receiver = startReceiver();
  try {
    await withFake({
      webhook: {
        url: receiver.url,
        batchIntervalMs: 10,
        sentDelayMs: 5,
        failRecipients: { "254700000501": 131048 },
      },
    }, async (fake) => {
      assert.equal((await send(fake, "+254700000501")).status, 200, "accepted first");
      await waitFor(() => receiver.received.length >= 1, 3000);
      const [status] = statusUpdates(
        WebhookPayloadSchema.parse(JSON.parse(receiver.received[0].raw)),
      );
      assert.deepEqual([status.status.status, status.status.errors?.[0].code], ["failed", 131048]);
      assert.equal(fake.messages().length, 1);
    });
  } finally {
    await receiver.shutdown();
  }
});
