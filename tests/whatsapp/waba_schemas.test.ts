import assert from "node:assert/strict";
import {
  GraphErrorBodySchema,
  inboundMessages,
  qualityUpdates,
  SendMessageResponseSchema,
  SendTemplateRequestSchema,
  statusUpdates,
  templateUpdates,
  WebhookPayloadSchema,
  WebhookVerificationQuerySchema,
} from "../../functions/_shared/waba_schemas.ts";
import { buildTemplateRequest } from "../../functions/_shared/whatsapp.ts";

const validRequest = () => ({
  messaging_product: "whatsapp",
  recipient_type: "individual",
  to: "+254712345678",
  type: "template",
  template: {
    name: "voucher_issued",
    language: { code: "en_US" },
    components: [{
      type: "body",
      parameters: [{ type: "text", text: "Jane" }, { type: "text", text: "7KQ2-M9XD-4TRC" }],
    }],
  },
});

Deno.test("SendTemplateRequestSchema accepts a Cloud API template body", () => {
  assert.ok(SendTemplateRequestSchema.safeParse(validRequest()).success);
  const built = buildTemplateRequest({
    phoneNumberId: "1",
    to: "254712345678",
    template: "voucher_issued",
    language: "en",
    bodyParameters: ["A"],
  });
  assert.ok(SendTemplateRequestSchema.safeParse(built).success);
});

Deno.test("SendTemplateRequestSchema rejects malformed template bodies", () => {
  const cases: [string, (r: ReturnType<typeof validRequest>) => unknown][] = [
    ["wrong product", (r) => ({ ...r, messaging_product: "sms" })],
    ["not a template", (r) => ({ ...r, type: "text" })],
    ["bad recipient", (r) => ({ ...r, to: "0712 345 678" })],
    ["missing language", (r) => ({ ...r, template: { name: r.template.name } })],
    ["bad template name", (r) => ({ ...r, template: { ...r.template, name: "Voucher Issued" } })],
    ["empty text parameter", (r) => ({
      ...r,
      template: {
        ...r.template,
        components: [{ type: "body", parameters: [{ type: "text", text: "" }] }],
      },
    })],
    ["unknown property", (r) => ({ ...r, extra: true })],
  ];
  for (const [why, mutate] of cases) {
    assert.equal(SendTemplateRequestSchema.safeParse(mutate(validRequest())).success, false, why);
  }
});

Deno.test("SendMessageResponseSchema accepts Meta's success response and rejects one without a message id", () => {
  const ok = {
    messaging_product: "whatsapp",
    contacts: [{ input: "16505555555", wa_id: "16505555555" }],
    messages: [{
      id: "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA",
      message_status: "accepted",
    }],
  };
  assert.ok(SendMessageResponseSchema.safeParse(ok).success);
  assert.equal(SendMessageResponseSchema.safeParse({ ...ok, messages: [] }).success, false);
  assert.equal(SendMessageResponseSchema.safeParse({ ...ok, contacts: undefined }).success, false);
});

Deno.test("GraphErrorBodySchema accepts Meta's error body and normalises string codes", () => {
  const meta = {
    error: {
      message: "(#130429) Rate limit hit",
      type: "OAuthException",
      code: 130429,
      error_data: {
        messaging_product: "whatsapp",
        details:
          "Message failed to send because there were too many messages sent from this phone number in a short period of time",
      },
      error_subcode: 2494055,
      fbtrace_id: "Az8or2yhqkZfEZ-_4Qn_Bam",
    },
  };
  const parsed = GraphErrorBodySchema.parse(meta);
  assert.equal(parsed.error.code, 130429);
  const bridged = GraphErrorBodySchema.parse({
    error: { ...meta.error, code: "131056" },
  });
  assert.equal(bridged.error.code, 131056);
  assert.equal(
    GraphErrorBodySchema.safeParse({ error: { message: "no code" } }).success,
    false,
  );
  assert.equal(GraphErrorBodySchema.safeParse({ message: "flat" }).success, false);
});

const statusWebhook = {
  object: "whatsapp_business_account",
  entry: [{
    id: "1314702302917944",
    changes: [{
      value: {
        messaging_product: "whatsapp",
        metadata: { display_phone_number: "15556459128", phone_number_id: "590968830767958" },
        statuses: [
          {
            id: "wamid.HBgNNTUxNjk5MjMxODIyMhUCABEYEjgxQkVFRDVBQTVDODFDOTg3MQA=",
            status: "sent",
            timestamp: "1750857384",
            recipient_id: "5516992318222",
            conversation: {
              id: "a75d17ad06104c51166f948319b03c6a",
              expiration_timestamp: "1750943820",
              origin: { type: "service" },
            },
            pricing: { billable: true, pricing_model: "CBP", category: "service" },
          },
          {
            id: "wamid.second",
            status: "failed",
            timestamp: "1750857385",
            recipient_id: "5516992318223",
            errors: [{
              code: 131026,
              title: "Message undeliverable",
              message: "Message undeliverable",
              error_data: { details: "Message Undeliverable." },
              href: "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
            }],
          },
        ],
      },
      field: "messages",
    }],
  }],
};

const inboundWebhook = {
  object: "whatsapp_business_account",
  entry: [{
    id: "0",
    changes: [{
      field: "messages",
      value: {
        messaging_product: "whatsapp",
        metadata: { display_phone_number: "16505551111", phone_number_id: "123456123" },
        contacts: [{ profile: { name: "test user name" }, wa_id: "16315551181" }],
        messages: [{
          from: "16315551181",
          id: "ABGGFlA5Fpa",
          timestamp: "1504902988",
          type: "text",
          text: { body: "STOP" },
        }],
      },
    }],
  }],
};

Deno.test("WebhookPayloadSchema accepts status webhooks, including failures with errors", () => {
  const parsed = WebhookPayloadSchema.parse(statusWebhook);
  const updates = statusUpdates(parsed);
  assert.deepEqual(updates.map((u) => [u.phoneNumberId, u.status.status]), [
    ["590968830767958", "sent"],
    ["590968830767958", "failed"],
  ]);
  assert.equal(updates[1].status.errors?.[0].code, 131026);
});

Deno.test("WebhookPayloadSchema accepts inbound text messages", () => {
  const parsed = WebhookPayloadSchema.parse(inboundWebhook);
  const inbound = inboundMessages(parsed);
  assert.equal(inbound.length, 1);
  assert.equal(inbound[0].message.text?.body, "STOP");
  assert.equal(inbound[0].message.from, "16315551181");
});

Deno.test("WebhookPayloadSchema accepts other subscribed fields without inspecting them", () => {
  const other = {
    object: "whatsapp_business_account",
    entry: [{
      id: "1",
      changes: [{ field: "account_update", value: { event: "VERIFIED_ACCOUNT" } }],
    }],
  };
  const parsed = WebhookPayloadSchema.parse(other);
  assert.deepEqual(statusUpdates(parsed), []);
  assert.deepEqual(templateUpdates(parsed), []);
});

Deno.test("WebhookPayloadSchema reads template status and quality updates, with their WABA id", () => {
  // The shapes of Meta's webhook references for the two fields.
  const payload = {
    object: "whatsapp_business_account",
    entry: [{
      id: "102290129340398",
      time: 1751247548,
      changes: [
        {
          value: {
            event: "APPROVED",
            message_template_id: 1689556908129832,
            message_template_name: "order_confirmation",
            message_template_language: "en-US",
            reason: "NONE",
            message_template_category: "UTILITY",
          },
          field: "message_template_status_update",
        },
        {
          value: {
            display_phone_number: "15550783881",
            event: "ONBOARDING",
            current_limit: "TIER_250",
            max_daily_conversations_per_business: "TIER_250",
          },
          field: "phone_number_quality_update",
        },
      ],
    }],
  };
  const parsed = WebhookPayloadSchema.parse(payload);
  assert.deepEqual(templateUpdates(parsed).map((t) => [t.wabaId, t.value.event]), [
    ["102290129340398", "APPROVED"],
  ]);
  assert.deepEqual(
    qualityUpdates(parsed).map((q) => q.value.max_daily_conversations_per_business),
    [
      "TIER_250",
    ],
  );
  const broken = structuredClone(payload);
  delete (broken.entry[0].changes[0].value as { message_template_name?: string })
    .message_template_name;
  assert.equal(
    WebhookPayloadSchema.safeParse(broken).success,
    false,
    "a handled field must be complete",
  );
});

Deno.test("WebhookPayloadSchema rejects bad statuses, wrong objects and messages changes without metadata", () => {
  const badStatus = structuredClone(statusWebhook);
  (badStatus.entry[0].changes[0].value.statuses[0] as { status: string }).status = "seen";
  assert.equal(WebhookPayloadSchema.safeParse(badStatus).success, false);

  const badTimestamp = structuredClone(statusWebhook);
  (badTimestamp.entry[0].changes[0].value.statuses[0] as { timestamp: unknown }).timestamp =
    1750857384;
  assert.equal(WebhookPayloadSchema.safeParse(badTimestamp).success, false);

  assert.equal(
    WebhookPayloadSchema.safeParse({ ...statusWebhook, object: "page" }).success,
    false,
  );

  const noMetadata = structuredClone(statusWebhook);
  delete (noMetadata.entry[0].changes[0].value as { metadata?: unknown }).metadata;
  assert.equal(WebhookPayloadSchema.safeParse(noMetadata).success, false);
});

Deno.test("WebhookVerificationQuerySchema requires subscribe mode, a token and a challenge", () => {
  const ok = { "hub.mode": "subscribe", "hub.verify_token": "t", "hub.challenge": "1158201444" };
  assert.ok(WebhookVerificationQuerySchema.safeParse(ok).success);
  assert.equal(
    WebhookVerificationQuerySchema.safeParse({ ...ok, "hub.mode": "unsubscribe" }).success,
    false,
  );
  assert.equal(
    WebhookVerificationQuerySchema.safeParse({ ...ok, "hub.challenge": "" }).success,
    false,
  );
});
