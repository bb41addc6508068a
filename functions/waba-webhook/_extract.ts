/**
 * Pulls what the webhook acts on out of a (signed) payload: status updates,
 * inbound messages, template status updates and phone number quality updates.
 *
 * The whole payload is checked against `WebhookPayloadSchema` first. If that
 * fails — Meta adds status values and fields over time, and a payload we cannot
 * read completely must not be answered with an error (Meta would retry it for
 * days and eventually disable the subscription) — each status and message is
 * checked on its own: the valid ones are used, the others counted in `skipped`
 * and logged. Only a body that is not a WhatsApp Business Account payload at all
 * is rejected ({@link PayloadError}).
 *
 * @module
 */
import {
  type InboundMessage,
  inboundMessages,
  InboundMessageSchema,
  type PhoneQualityValue,
  PhoneQualityValueSchema,
  qualityUpdates,
  statusUpdates,
  type TemplateStatusValue,
  TemplateStatusValueSchema,
  templateUpdates,
  WebhookPayloadSchema,
  type WebhookStatus,
  WebhookStatusSchema,
} from "../_shared/waba_schemas.ts";

/** The body is not a `whatsapp_business_account` webhook. */
export class PayloadError extends Error {
  override readonly name = "PayloadError";
}

/** What a payload carries for us. */
export interface Extracted {
  statuses: { phoneNumberId: string; status: WebhookStatus }[];
  messages: { phoneNumberId: string; message: InboundMessage }[];
  /** Template status updates, with the WABA id they belong to. */
  templates: { wabaId: string; value: TemplateStatusValue }[];
  /** Phone number quality updates, with the WABA id. */
  qualities: { wabaId: string; value: PhoneQualityValue }[];
  /** Items (statuses, messages, changes) that did not match their schema. */
  skipped: number;
}

type Loose = Record<string, unknown>;

const isObject = (v: unknown): v is Loose =>
  typeof v === "object" && v !== null && !Array.isArray(v);
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

/**
 * Extracts statuses and inbound messages.
 *
 * @throws {PayloadError} when `json` is not an object with `object: "whatsapp_business_account"` and an `entry` array.
 *
 * @example
 * const { statuses, messages } = extract(JSON.parse(raw));
 */
export function extract(json: unknown): Extracted {
  const strict = WebhookPayloadSchema.safeParse(json);
  if (strict.success) {
    return {
      statuses: statusUpdates(strict.data),
      messages: inboundMessages(strict.data),
      templates: templateUpdates(strict.data),
      qualities: qualityUpdates(strict.data),
      skipped: 0,
    };
  }
  if (
    !isObject(json) || json.object !== "whatsapp_business_account" || !Array.isArray(json.entry)
  ) {
    throw new PayloadError(
      'Expected a WhatsApp webhook: {"object": "whatsapp_business_account", "entry": [...]}',
    );
  }
  const out: Extracted = { statuses: [], messages: [], templates: [], qualities: [], skipped: 0 };
  for (const entry of json.entry) {
    const wabaId = isObject(entry) && typeof entry.id === "string" ? entry.id : undefined;
    for (const change of list(isObject(entry) ? entry.changes : undefined)) {
      if (!isObject(change)) continue;
      if (
        change.field === "message_template_status_update" ||
        change.field === "phone_number_quality_update"
      ) {
        if (wabaId === undefined) {
          out.skipped++;
          continue;
        }
        if (change.field === "message_template_status_update") {
          const t = TemplateStatusValueSchema.safeParse(change.value);
          if (t.success) out.templates.push({ wabaId, value: t.data });
          else out.skipped++;
        } else {
          const q = PhoneQualityValueSchema.safeParse(change.value);
          if (q.success) out.qualities.push({ wabaId, value: q.data });
          else out.skipped++;
        }
        continue;
      }
      if (change.field !== "messages") continue;
      const value = change.value;
      const metadata = isObject(value) ? value.metadata : undefined;
      const phoneNumberId = isObject(metadata) ? metadata.phone_number_id : undefined;
      if (!isObject(value) || typeof phoneNumberId !== "string") {
        out.skipped++;
        continue;
      }
      for (const item of list(value.statuses)) {
        const s = WebhookStatusSchema.safeParse(item);
        if (s.success) out.statuses.push({ phoneNumberId, status: s.data });
        else out.skipped++;
      }
      for (const item of list(value.messages)) {
        const m = InboundMessageSchema.safeParse(item);
        if (m.success) out.messages.push({ phoneNumberId, message: m.data });
        else out.skipped++;
      }
    }
  }
  return out;
}
