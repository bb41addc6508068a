import assert from "node:assert/strict";
import { verifySignature } from "../../functions/_shared/webhook_signature.ts";
import {
  inboundMessages,
  statusUpdates,
  WebhookPayloadSchema,
  WebhookVerificationQuerySchema,
} from "../../functions/_shared/waba_schemas.ts";
import { WhatsAppClient } from "../../functions/_shared/whatsapp.ts";
import {
  type FakeWabaConfigPatch,
  startFakeWaba,
  WebhookDisabledError,
} from "../../local/fake_waba/mod.ts";
import {
  PHONE_NUMBER_ID,
  type Receiver,
  startReceiver,
  TEST_SECRET,
  TEST_TOKEN,
  TEST_VERIFY_TOKEN,
  waitFor,
} from "./_helpers.ts";

/** Fast webhook timings so each test takes well under a second. */
const fastHooks = (url: string, extra: FakeWabaConfigPatch["webhook"] = {}) => ({
  url,
  sentDelayMs: 10,
  deliveredDelayMs: 30,
  readDelayMs: 60,
  batchIntervalMs: 10,
  retryBaseMs: 20,
  ...extra,
});

async function scenario(
  receiver: Receiver,
  patch: FakeWabaConfigPatch,
  fn: (ctx: {
    fake: Awaited<ReturnType<typeof startFakeWaba>>;
    send: (to: string) => Promise<string>;
  }) => Promise<void>,
) {
  const fake = await startFakeWaba({
    accessToken: TEST_TOKEN,
    appSecret: TEST_SECRET,
    verifyToken: TEST_VERIFY_TOKEN,
    pairSpacingMs: 0,
    ...patch,
  });
  const wa = new WhatsAppClient({ baseUrl: fake.url, accessToken: TEST_TOKEN });
  const send = async (to: string) => {
    const r = await wa.sendTemplate({
      phoneNumberId: PHONE_NUMBER_ID,
      to,
      template: "voucher_issued",
      language: "en",
      bodyParameters: ["X"],
    });
    if (!r.ok) throw new Error(`send failed: ${r.error.code}`);
    return r.wamid;
  };
  try {
    await fn({ fake, send });
  } finally {
    await fake.shutdown();
    await receiver.shutdown();
  }
}

Deno.test("the fake delivers sent, delivered and read statuses, signed with the app secret", async () => {
  const receiver = startReceiver();
  await scenario(receiver, { webhook: fastHooks(receiver.url) }, async ({ fake, send }) => {
    const id = await send("+254712345678");
    assert.ok(await fake.waitForWebhooks(5000));
    const seen: string[] = [];
    for (const hook of receiver.received) {
      assert.equal(hook.method, "POST");
      assert.ok(await verifySignature(hook.raw, hook.signature, TEST_SECRET), "signature verifies");
      assert.equal(await verifySignature(hook.raw, hook.signature, "other"), false);
      const payload = WebhookPayloadSchema.parse(JSON.parse(hook.raw));
      for (const u of statusUpdates(payload)) {
        assert.equal(u.phoneNumberId, PHONE_NUMBER_ID);
        assert.equal(u.status.id, id);
        assert.equal(u.status.recipient_id, "254712345678");
        seen.push(u.status.status);
      }
    }
    assert.deepEqual(seen, ["sent", "delivered", "read"]);
    assert.deepEqual(fake.stats().webhooks.statuses, { sent: 1, delivered: 1, read: 1, failed: 0 });
  });
});

Deno.test("the fake refuses a webhook URL that is not a URL", async () => {
  await assert.rejects(() =>
    startFakeWaba({ accessToken: TEST_TOKEN, webhook: { url: "not a url" } })
  );
});

Deno.test("the fake retries a failing webhook receiver with the same signed body", async () => {
  const receiver = startReceiver((n) => (n < 2 ? 500 : 200));
  await scenario(receiver, {
    webhook: fastHooks(receiver.url, { readRate: 0, deliveredDelayMs: 100_000 }),
  }, async ({ fake, send }) => {
    await send("+254712345678");
    await waitFor(() => receiver.received.some((h) => h.status === 200), 5000, "a 200");
    const [a, b, c] = receiver.received;
    assert.deepEqual([a.status, b.status, c.status], [500, 500, 200]);
    assert.equal(a.raw, c.raw, "the retry re-sends the same bytes");
    assert.equal(a.signature, c.signature);
    assert.ok(await verifySignature(c.raw, c.signature, TEST_SECRET));
    const stats = fake.stats().webhooks;
    assert.equal(stats.failedAttempts, 2);
    assert.equal(stats.delivered, 1);
  });
});

Deno.test("the fake gives up on a webhook after maxAttempts", async () => {
  const receiver = startReceiver(() => 503);
  await scenario(receiver, {
    webhook: fastHooks(receiver.url, { maxAttempts: 3, readRate: 0, deliveredDelayMs: 100_000 }),
  }, async ({ fake, send }) => {
    await send("+254712345678");
    await waitFor(() => fake.stats().webhooks.gaveUp === 1, 5000, "give-up");
    assert.equal(receiver.received.length, 3);
    assert.equal(fake.stats().webhooks.posts, 3);
  });
});

Deno.test("the fake reports failed messages with the configured error code", async () => {
  const receiver = startReceiver();
  await scenario(receiver, {
    webhook: fastHooks(receiver.url, { failRecipients: { "254700000050": 131050 } }),
  }, async ({ fake, send }) => {
    const failed = await send("+254700000050");
    const ok = await send("+254700000051");
    assert.ok(await fake.waitForWebhooks(5000));
    const updates = receiver.received.flatMap((h) =>
      statusUpdates(WebhookPayloadSchema.parse(JSON.parse(h.raw)))
    );
    const forFailed = updates.filter((u) => u.status.id === failed);
    assert.deepEqual(forFailed.map((u) => u.status.status), ["failed"]);
    assert.equal(forFailed[0].status.errors?.[0].code, 131050);
    assert.deepEqual(
      updates.filter((u) => u.status.id === ok).map((u) => u.status.status),
      ["sent", "delivered", "read"],
    );
  });
});

Deno.test("the fake batches statuses due in the same interval into one payload", async () => {
  const receiver = startReceiver();
  await scenario(receiver, {
    webhook: fastHooks(receiver.url, {
      readRate: 0,
      deliveredDelayMs: 100_000,
      batchIntervalMs: 200,
    }),
  }, async ({ fake, send }) => {
    await Promise.all(Array.from({ length: 10 }, (_, i) => send(`+2547000001${10 + i}`)));
    await waitFor(() => fake.stats().webhooks.statuses.sent === 10, 5000, "10 sent statuses");
    await waitFor(() => fake.stats().webhooks.delivered >= 1, 5000, "a delivery");
    assert.ok(
      receiver.received.length < 10,
      `${receiver.received.length} payloads for 10 statuses`,
    );
    const total = receiver.received.flatMap((h) =>
      statusUpdates(WebhookPayloadSchema.parse(JSON.parse(h.raw)))
    ).length;
    assert.equal(total, 10);
  });
});

Deno.test("the fake delivers payloads twice when duplicateRate is 1", async () => {
  const receiver = startReceiver();
  await scenario(receiver, {
    webhook: fastHooks(receiver.url, { duplicateRate: 1, readRate: 0, deliveredDelayMs: 100_000 }),
  }, async ({ fake, send }) => {
    await send("+254712345678");
    await waitFor(() => receiver.received.length === 2, 5000, "two deliveries");
    assert.equal(receiver.received[0].raw, receiver.received[1].raw);
    assert.equal(fake.stats().webhooks.duplicates, 1);
  });
});

Deno.test("the fake delivers an inbound STOP as a signed messages webhook", async () => {
  const receiver = startReceiver();
  await scenario(receiver, { webhook: fastHooks(receiver.url) }, async ({ fake }) => {
    const res = await fetch(`${fake.url}/_fake/inbound`, {
      method: "POST",
      body: JSON.stringify({ from: "+254712345678", text: "STOP" }),
    });
    const { id } = await res.json();
    assert.match(id, /^wamid\./);
    await waitFor(() => receiver.received.length === 1, 5000, "the inbound webhook");
    const hook = receiver.received[0];
    assert.ok(await verifySignature(hook.raw, hook.signature, TEST_SECRET));
    const [m] = inboundMessages(WebhookPayloadSchema.parse(JSON.parse(hook.raw)));
    assert.deepEqual([m.message.from, m.message.type, m.message.text?.body, m.message.id], [
      "254712345678",
      "text",
      "STOP",
      id,
    ]);
    assert.equal(fake.stats().webhooks.inbound, 1);
  });
});

Deno.test("the fake sends no webhooks and refuses inbound messages when no URL is set", async () => {
  const receiver = startReceiver();
  await scenario(receiver, {}, async ({ fake, send }) => {
    await send("+254712345678");
    assert.ok(await fake.waitForWebhooks(100), "nothing is scheduled");
    assert.throws(
      () => fake.inbound({ from: "+254712345678", text: "STOP" }),
      WebhookDisabledError,
    );
    const res = await fetch(`${fake.url}/_fake/inbound`, {
      method: "POST",
      body: JSON.stringify({ from: "+254712345678", text: "STOP" }),
    });
    assert.equal(res.status, 409);
    await res.body?.cancel();
    assert.equal(receiver.received.length, 0);
  });
});

Deno.test("the fake performs Meta's hub.challenge subscription check against the webhook", async () => {
  const receiver = startReceiver((_n, req) => {
    const q = WebhookVerificationQuerySchema.safeParse(
      Object.fromEntries(new URL(req.url).searchParams),
    );
    if (req.method !== "GET" || !q.success || q.data["hub.verify_token"] !== TEST_VERIFY_TOKEN) {
      return 403;
    }
    return new Response(q.data["hub.challenge"], { status: 200 });
  });
  await scenario(receiver, { webhook: fastHooks(receiver.url) }, async ({ fake }) => {
    assert.equal((await fake.verifyWebhook()).ok, true);
    fake.configure({ verifyToken: "wrong-token" });
    const bad = await fake.verifyWebhook();
    assert.deepEqual([bad.ok, bad.status], [false, 403]);
  });
});

Deno.test("shutdown() stops pending webhook retries and timers", async () => {
  const receiver = startReceiver(() => 500);
  const fake = await startFakeWaba({
    accessToken: TEST_TOKEN,
    appSecret: TEST_SECRET,
    webhook: fastHooks(receiver.url, { retryBaseMs: 60_000 }),
  });
  const wa = new WhatsAppClient({ baseUrl: fake.url, accessToken: TEST_TOKEN });
  await wa.sendTemplate({
    phoneNumberId: PHONE_NUMBER_ID,
    to: "+254712345678",
    template: "voucher_issued",
    language: "en",
  });
  await waitFor(() => fake.stats().webhooks.failedAttempts >= 1, 5000, "a failed attempt");
  assert.equal(fake.stats().webhooks.pending, 1, "a retry is waiting");
  await fake.shutdown();
  await receiver.shutdown();
  // Deno's op/resource sanitizers fail this test if a timer or fetch outlived shutdown.
  assert.equal(fake.stats().webhooks.pending, 0);
});
