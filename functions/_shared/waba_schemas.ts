/**
 * Zod schemas for every WhatsApp Cloud API payload that crosses our edge: the
 * template send request, its success response, the Graph API error body, the
 * `messages` webhook (statuses and inbound messages) and the webhook
 * verification handshake. The schemas are also the types (`z.infer`).
 *
 * Contracts follow Meta's Cloud API reference:
 * - `POST /{version}/{phone-number-id}/messages` with
 *   `{messaging_product: "whatsapp", recipient_type: "individual", to, type: "template", template}`;
 * - success `{messaging_product, contacts: [{input, wa_id}], messages: [{id: "wamid…", message_status?}]}`;
 * - error `{error: {message, type, code, error_data: {messaging_product, details}, error_subcode?, fbtrace_id}}`;
 * - webhook `{object: "whatsapp_business_account", entry: [{id, changes: [{field, value}]}]}`.
 *
 * Outbound schemas are strict (we only send what we mean); inbound schemas
 * accept extra properties Meta adds over time but insist on the fields we use.
 *
 * @example
 * const parsed = WebhookPayloadSchema.safeParse(JSON.parse(rawBody));
 * if (!parsed.success) return new Response("bad payload", { status: 400 });
 *
 * @module
 */
import { z } from "zod";

/** E.164 digits with an optional leading `+` (Meta also accepts the bare digits). */
export const RecipientSchema = z
  .string()
  .regex(/^\+?[1-9]\d{6,14}$/, "Expected an E.164 phone number such as +254712345678");

/** A template name as WhatsApp Manager allows it: lowercase letters, digits, underscores. */
export const TemplateNameSchema = z.string().regex(
  /^[a-z0-9_]{1,512}$/,
  "Expected a template name of lowercase letters, digits and underscores",
);

/** A template language code such as `en`, `en_US` or `pt_BR`. */
export const LanguageCodeSchema = z.string().regex(
  /^[a-z]{2,3}(_[A-Z]{2})?$/,
  "Expected a language code such as en or en_US",
);

/** `{type: "text", text}` — the parameter kind our voucher templates use. */
export const TextParameterSchema = z.strictObject({
  type: z.literal("text"),
  text: z.string().min(1).max(32_768),
});

/** `{type: "currency", currency: {fallback_value, code, amount_1000}}`. */
export const CurrencyParameterSchema = z.strictObject({
  type: z.literal("currency"),
  currency: z.strictObject({
    fallback_value: z.string().min(1),
    code: z.string().regex(/^[A-Z]{3}$/),
    amount_1000: z.number().int(),
  }),
});

/** `{type: "date_time", date_time: {fallback_value}}`. */
export const DateTimeParameterSchema = z.strictObject({
  type: z.literal("date_time"),
  date_time: z.strictObject({ fallback_value: z.string().min(1) }),
});

/** Any parameter a header or body component may carry. */
export const TemplateParameterSchema = z.discriminatedUnion("type", [
  TextParameterSchema,
  CurrencyParameterSchema,
  DateTimeParameterSchema,
]);

/** A `header` or `body` component with its positional parameters. */
export const TextComponentSchema = z.strictObject({
  type: z.enum(["header", "body"]),
  parameters: z.array(TemplateParameterSchema).min(1).max(100),
});

/** A `button` component (quick reply payload or URL suffix). */
export const ButtonComponentSchema = z.strictObject({
  type: z.literal("button"),
  sub_type: z.enum(["quick_reply", "url", "copy_code"]),
  index: z.union([z.number().int().min(0).max(9), z.string().regex(/^\d$/)]),
  parameters: z.array(
    z.union([
      z.strictObject({ type: z.literal("payload"), payload: z.string().min(1) }),
      z.strictObject({ type: z.literal("text"), text: z.string().min(1) }),
      z.strictObject({ type: z.literal("coupon_code"), coupon_code: z.string().min(1) }),
    ]),
  ).min(1),
});

/** One template component. */
export const TemplateComponentSchema = z.union([TextComponentSchema, ButtonComponentSchema]);

/** The body of `POST /{version}/{phone-number-id}/messages` for a template message. */
export const SendTemplateRequestSchema = z.strictObject({
  messaging_product: z.literal("whatsapp"),
  recipient_type: z.literal("individual").optional(),
  to: RecipientSchema,
  type: z.literal("template"),
  template: z.strictObject({
    name: TemplateNameSchema,
    language: z.strictObject({
      code: LanguageCodeSchema,
      policy: z.literal("deterministic").optional(),
    }),
    components: z.array(TemplateComponentSchema).max(10).optional(),
  }),
  biz_opaque_callback_data: z.string().max(512).optional(),
});
export type SendTemplateRequest = z.infer<typeof SendTemplateRequestSchema>;

/** The 200 response to a send: the message was accepted, not yet delivered. */
export const SendMessageResponseSchema = z.object({
  messaging_product: z.literal("whatsapp"),
  contacts: z.array(z.object({ input: z.string(), wa_id: z.string().min(1) })).min(1),
  messages: z.array(
    z.object({
      id: z.string().min(1),
      // "accepted", "held_for_quality_assessment" or "paused"; only on template sends.
      message_status: z.string().optional(),
    }),
  ).min(1),
});

/** Graph codes are integers; a few bridges send them as numeric strings. */
const GraphCodeSchema = z.union([
  z.number().int(),
  z.string().regex(/^\d+$/).transform(Number),
]);

/** The Graph API error body returned with any non-2xx status. */
export const GraphErrorBodySchema = z.object({
  error: z.object({
    message: z.string(),
    type: z.string().optional(),
    code: GraphCodeSchema,
    error_subcode: GraphCodeSchema.optional(),
    error_data: z.object({
      messaging_product: z.string().optional(),
      details: z.string().optional(),
    }).optional(),
    error_user_title: z.string().optional(),
    error_user_msg: z.string().optional(),
    is_transient: z.boolean().optional(),
    fbtrace_id: z.string().optional(),
  }),
});
export type GraphErrorBody = z.infer<typeof GraphErrorBodySchema>;

/** An error object inside a webhook (`statuses[].errors[]`, `value.errors[]`). */
export const WebhookErrorSchema = z.object({
  code: z.number().int(),
  title: z.string().optional(),
  message: z.string().optional(),
  error_data: z.object({ details: z.string() }).optional(),
  href: z.string().optional(),
});

/** Unix seconds as a string, the way every webhook timestamp is sent. */
const UnixSecondsSchema = z.string().regex(/^\d{1,12}$/, "Expected unix seconds as a string");

/** Delivery states a status webhook can report for an outbound message. */
export const MessageStatusSchema = z.enum(["sent", "delivered", "read", "failed"]);
export type MessageStatus = z.infer<typeof MessageStatusSchema>;

/** One status update for a message we sent. */
export const WebhookStatusSchema = z.object({
  id: z.string().min(1),
  status: MessageStatusSchema,
  timestamp: UnixSecondsSchema,
  recipient_id: z.string().min(1),
  biz_opaque_callback_data: z.string().optional(),
  conversation: z.object({
    id: z.string(),
    expiration_timestamp: z.string().optional(),
    origin: z.object({ type: z.string() }).optional(),
  }).optional(),
  pricing: z.object({
    billable: z.boolean().optional(),
    pricing_model: z.string().optional(),
    type: z.string().optional(),
    category: z.string().optional(),
  }).optional(),
  errors: z.array(WebhookErrorSchema).optional(),
});
export type WebhookStatus = z.infer<typeof WebhookStatusSchema>;

/** One message a user sent to the business (text, button reply, media, …). */
export const InboundMessageSchema = z.object({
  from: z.string().min(1),
  id: z.string().min(1),
  timestamp: UnixSecondsSchema,
  type: z.string().min(1),
  text: z.object({ body: z.string() }).optional(),
  button: z.object({ payload: z.string().optional(), text: z.string().optional() }).optional(),
  errors: z.array(WebhookErrorSchema).optional(),
});
export type InboundMessage = z.infer<typeof InboundMessageSchema>;

/** `value` of a change whose `field` is `messages`. */
export const MessagesChangeValueSchema = z.object({
  messaging_product: z.literal("whatsapp"),
  metadata: z.object({
    display_phone_number: z.string(),
    phone_number_id: z.string().min(1),
  }),
  contacts: z.array(z.object({
    profile: z.object({ name: z.string() }).optional(),
    wa_id: z.string(),
  })).optional(),
  statuses: z.array(WebhookStatusSchema).optional(),
  messages: z.array(InboundMessageSchema).optional(),
  errors: z.array(WebhookErrorSchema).optional(),
});
export type MessagesChangeValue = z.infer<typeof MessagesChangeValueSchema>;

/** A `messages` change: statuses and inbound messages. */
export const MessagesChangeSchema = z.object({
  field: z.literal("messages"),
  value: MessagesChangeValueSchema,
});

/**
 * `value` of a `message_template_status_update` change
 * (https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/message_template_status_update):
 * `event` is APPROVED, REJECTED, PAUSED, DISABLED, PENDING_DELETION, … The
 * template is named by name and language; its WABA is the entry's `id`.
 */
export const TemplateStatusValueSchema = z.object({
  event: z.string().min(1),
  message_template_id: z.union([z.number(), z.string()]).optional(),
  message_template_name: z.string().min(1),
  message_template_language: z.string().min(1),
  reason: z.string().nullable().optional(),
});
export type TemplateStatusValue = z.infer<typeof TemplateStatusValueSchema>;

/** A `message_template_status_update` change. */
export const TemplateStatusChangeSchema = z.object({
  field: z.literal("message_template_status_update"),
  value: TemplateStatusValueSchema,
});

/**
 * `value` of a `phone_number_quality_update` change
 * (https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/phone_number_quality_update):
 * `event` (FLAGGED, UNFLAGGED, UPGRADE, DOWNGRADE, …) and the messaging tier as
 * `max_daily_conversations_per_business`, or the older `current_limit`
 * (TIER_250, TIER_2K, …, TIER_UNLIMITED).
 */
export const PhoneQualityValueSchema = z.object({
  display_phone_number: z.string().min(1),
  event: z.string().min(1),
  current_limit: z.string().optional(),
  old_limit: z.string().optional(),
  max_daily_conversations_per_business: z.string().optional(),
});
export type PhoneQualityValue = z.infer<typeof PhoneQualityValueSchema>;

/** A `phone_number_quality_update` change. */
export const PhoneQualityChangeSchema = z.object({
  field: z.literal("phone_number_quality_update"),
  value: PhoneQualityValueSchema,
});

/** The fields this platform acts on; a change of one of them must match its schema. */
export const HANDLED_FIELDS: readonly string[] = [
  "messages",
  "message_template_status_update",
  "phone_number_quality_update",
];

/** Any other subscribed field: accepted, ignored. */
export const OtherChangeSchema = z.object({
  field: z.string().refine(
    (field) => !HANDLED_FIELDS.includes(field),
    "handled changes must be valid",
  ),
  value: z.unknown(),
});

/** The body Meta POSTs to the webhook URL. */
export const WebhookPayloadSchema = z.object({
  object: z.literal("whatsapp_business_account"),
  entry: z.array(
    z.object({
      id: z.string(),
      changes: z.array(
        z.union([
          MessagesChangeSchema,
          TemplateStatusChangeSchema,
          PhoneQualityChangeSchema,
          OtherChangeSchema,
        ]),
      ),
    }),
  ),
});
export type WebhookPayload = z.infer<typeof WebhookPayloadSchema>;

/** Query of Meta's `GET` subscription check; answer with `hub.challenge` as plain text. */
export const WebhookVerificationQuerySchema = z.object({
  "hub.mode": z.literal("subscribe"),
  "hub.verify_token": z.string().min(1),
  "hub.challenge": z.string().min(1),
});

/**
 * Every status update in a webhook payload, flattened with its phone number id.
 *
 * @example
 * for (const s of statusUpdates(payload)) console.log(s.phoneNumberId, s.status.id, s.status.status);
 */
export function statusUpdates(
  payload: WebhookPayload,
): { phoneNumberId: string; status: WebhookStatus }[] {
  const out: { phoneNumberId: string; status: WebhookStatus }[] = [];
  for (const entry of payload.entry) {
    for (const change of entry.changes) {
      if (change.field !== "messages") continue;
      const value = change.value as MessagesChangeValue;
      for (const status of value.statuses ?? []) {
        out.push({ phoneNumberId: value.metadata.phone_number_id, status });
      }
    }
  }
  return out;
}

/**
 * Every inbound user message in a webhook payload, flattened with its phone number id.
 *
 * @example
 * const stops = inboundMessages(payload).filter((m) => m.message.text?.body.trim() === "STOP");
 */
export function inboundMessages(
  payload: WebhookPayload,
): { phoneNumberId: string; message: InboundMessage }[] {
  const out: { phoneNumberId: string; message: InboundMessage }[] = [];
  for (const entry of payload.entry) {
    for (const change of entry.changes) {
      if (change.field !== "messages") continue;
      const value = change.value as MessagesChangeValue;
      for (const message of value.messages ?? []) {
        out.push({ phoneNumberId: value.metadata.phone_number_id, message });
      }
    }
  }
  return out;
}

/**
 * Every template status update in a webhook payload, with its WABA id (the entry's id).
 *
 * @example
 * for (const t of templateUpdates(payload)) console.log(t.wabaId, t.value.message_template_name, t.value.event);
 */
export function templateUpdates(
  payload: WebhookPayload,
): { wabaId: string; value: TemplateStatusValue }[] {
  const out: { wabaId: string; value: TemplateStatusValue }[] = [];
  for (const entry of payload.entry) {
    for (const change of entry.changes) {
      if (change.field !== "message_template_status_update") continue;
      out.push({ wabaId: entry.id, value: change.value as TemplateStatusValue });
    }
  }
  return out;
}

/**
 * Every phone number quality update in a webhook payload, with its WABA id.
 *
 * @example
 * for (const q of qualityUpdates(payload)) console.log(q.value.display_phone_number, q.value.event);
 */
export function qualityUpdates(
  payload: WebhookPayload,
): { wabaId: string; value: PhoneQualityValue }[] {
  const out: { wabaId: string; value: PhoneQualityValue }[] = [];
  for (const entry of payload.entry) {
    for (const change of entry.changes) {
      if (change.field !== "phone_number_quality_update") continue;
      out.push({ wabaId: entry.id, value: change.value as PhoneQualityValue });
    }
  }
  return out;
}
