/**
 * Typed calls to the dispatch-queue RPCs the Edge Functions use
 * (`supabase/migrations/*_outbox.sql`, `*_webhooks_and_opt_outs.sql`), over the direct
 * connection of `db.ts` as `service_role` (see there why not over HTTP).
 * Each call is one round trip ({@link callAsServiceRole}: the role, the claims
 * and the call in one simple-protocol query, one implicit transaction), so a
 * claim's channel lock is released by the server's commit, not held until the
 * client's COMMIT arrives. Arguments are passed by name with explicit casts,
 * rendered with {@link sqlValue} (the simple protocol has no bind parameters;
 * JSON goes as a quoted literal cast to jsonb); results are checked with
 * zod, so a migration that changes a shape fails loudly here, not deep in a loop.
 *
 * @example
 * const db = getDb();
 * const claimed = await claimMessages(db, { max: 50, leaseSeconds: 60, worker: "dispatch-1" });
 * await reportMessageResults(db, [{ message_id: claimed[0].message_id, outcome: "sent", wamid }], "dispatch-1");
 *
 * @module
 */
import { z } from "zod";
import { callAsServiceRole, type Sql, sqlValue } from "./db.ts";
import { type WabaErrorRule, WabaErrorRuleSchema } from "./waba_errors.ts";

/**
 * One message leased by `api.claim_messages` (one row each). Over this module's
 * connection a bigint arrives as a digit string and a timestamptz as a `Date`;
 * over PostgREST as a number and an ISO 8601 string. Both are accepted, and the
 * lease end is always handed on as an ISO string.
 */
export const ClaimedMessageSchema = z.object({
  message_id: z.union([z.number().int(), z.string().regex(/^\d{1,18}$/)]),
  campaign_id: z.string(),
  channel_id: z.string(),
  phone_number_id: z.string().min(1),
  to: z.string().min(1),
  template_name: z.string().min(1),
  template_language: z.string().min(1),
  body_parameters: z.array(z.string()),
  attempt: z.number().int().min(1),
  lease_owner: z.string(),
  lease_expires_at: z.union([z.string(), z.date()]).transform((v) =>
    typeof v === "string" ? v : v.toISOString()
  ),
});
export type ClaimedMessage = z.infer<typeof ClaimedMessageSchema>;

/** The Graph error behind a failure, for `app.waba_error_rules` (optional). */
interface GraphError {
  /** The Graph code the rules are looked up with. */
  waba_code?: number;
  /** Graph `error_subcode`. */
  waba_subcode?: number;
}

/**
 * What the dispatcher reports per message to `api.report_message_results`:
 * `sent`; `retry` (the attempt counts; backoff); `failed` (for good); `deferred`
 * (back to the queue without spending the attempt: the error was not the
 * message's — the channel or template is paused, the number throttled — or the
 * message was never sent). The database defers a `retry` or `failed` whose rule
 * says so, whatever the dispatcher decided.
 */
export type MessageResult =
  | { message_id: number | string; outcome: "sent"; wamid: string }
  | ({
    message_id: number | string;
    outcome: "retry";
    error_code: string;
    error_message?: string;
    retry_after_seconds?: number;
    /** The request may have reached WhatsApp (a timeout): never recorded as cancelled. */
    maybe_sent?: boolean;
  } & GraphError)
  | ({
    message_id: number | string;
    outcome: "deferred";
    error_code: string;
    error_message?: string;
    retry_after_seconds?: number;
  } & GraphError)
  | (
    & { message_id: number | string; outcome: "failed"; error_code: string; error_message?: string }
    & GraphError
  );

/** Counts returned by `api.report_message_results`; `stale` = reports whose lease was gone. */
export const ReportSummarySchema = z.object({
  applied: z.number().int(),
  stale: z.number().int(),
  sent: z.number().int(),
  retried: z.number().int(),
  deferred: z.number().int(),
  failed: z.number().int(),
  dead: z.number().int(),
  unknown: z.number().int(),
  cancelled: z.number().int(),
});
export type ReportSummary = z.infer<typeof ReportSummarySchema>;

/** One webhook status for `api.record_waba_statuses`. */
export interface StatusItem {
  wamid: string;
  status: string;
  /** Our message id, from `biz_opaque_callback_data` (the message is found by it). */
  message_id?: string;
  /** The recipient's WhatsApp id: without `message_id`, the message is found by it and the wamid. */
  recipient_id?: string;
  /** Unix seconds as WhatsApp sends them. */
  timestamp?: string;
  error_code?: string;
  error_message?: string;
  /** The Graph code of a failed status, for `app.waba_error_rules`. */
  waba_code?: number;
}

/** Counts returned by `api.record_waba_statuses`. */
export const StatusSummarySchema = z.object({
  applied: z.number().int(),
  ignored: z.number().int(),
  unknown: z.number().int(),
});
export type StatusSummary = z.infer<typeof StatusSummarySchema>;

/** Result of `api.record_opt_out`. */
export const OptOutResultSchema = z.object({
  msisdn: z.string(),
  opted_out: z.boolean(),
  created: z.boolean(),
  cancelled_messages: z.number().int(),
});
export type OptOutResult = z.infer<typeof OptOutResultSchema>;

/** The most items `report_message_results` and `record_waba_statuses` take per call. */
export const RPC_BATCH_LIMIT = 1000;

/** Thrown when an RPC answers with a shape this module does not know (a contract drift). */
export class RpcShapeError extends Error {
  override readonly name = "RpcShapeError";
}

function parse<T>(schema: z.ZodType<T>, value: unknown, fn: string): T {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    throw new RpcShapeError(
      `api.${fn} returned an unexpected shape: ${
        parsed.error.issues.slice(0, 3).map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")
      }`,
    );
  }
  return parsed.data;
}

async function call(db: Sql, statement: string): Promise<unknown> {
  const rows = await callAsServiceRole(db, statement);
  return rows[0]?.result;
}

/**
 * `api.claim_messages`: leases up to `max` due messages (one channel, or every
 * active channel when `channelId` is absent), never more than each channel's
 * token bucket allows.
 *
 * @example
 * await claimMessages(db, { max: 50, leaseSeconds: 60, worker: "dispatch-abc" });
 */
export async function claimMessages(
  db: Sql,
  opts: { channelId?: string | null; max: number; leaseSeconds: number; worker: string },
): Promise<ClaimedMessage[]> {
  // body_parameters as json: without fetched type metadata a text[] would arrive unparsed.
  const rows = await callAsServiceRole(
    db,
    'select message_id, campaign_id, channel_id, phone_number_id, "to", template_name, ' +
      "template_language, to_json(body_parameters) as body_parameters, attempt, lease_owner, " +
      "lease_expires_at from api.claim_messages(" +
      `channel_id => ${sqlValue(opts.channelId ?? null)}::uuid, ` +
      `max => ${sqlValue(opts.max)}::integer, ` +
      `lease_seconds => ${sqlValue(opts.leaseSeconds)}::integer, ` +
      `worker => ${sqlValue(opts.worker)}::text)`,
  );
  return parse(z.array(ClaimedMessageSchema), rows, "claim_messages");
}

/**
 * `api.report_message_results`: at most {@link RPC_BATCH_LIMIT} results; only
 * the lease holder `worker`'s reports count (others come back as `stale`).
 *
 * @example
 * await reportMessageResults(db, [{ message_id: 1, outcome: "retry", error_code: "http_503" }], "dispatch-abc");
 */
export async function reportMessageResults(
  db: Sql,
  results: readonly MessageResult[],
  worker: string,
): Promise<ReportSummary> {
  const result = await call(
    db,
    "select api.report_message_results(" +
      `results => ${sqlValue(JSON.stringify(results))}::jsonb, ` +
      `worker => ${sqlValue(worker)}::text) as result`,
  );
  return parse(ReportSummarySchema, result, "report_message_results");
}

/**
 * `api.record_waba_statuses`: at most {@link RPC_BATCH_LIMIT} statuses; repeats
 * and out-of-order statuses are harmless (monotonic in the database).
 *
 * @example
 * await recordWabaStatuses(db, [{ wamid: "wamid.X", status: "delivered", timestamp: "1700000000" }]);
 */
export async function recordWabaStatuses(
  db: Sql,
  statuses: readonly StatusItem[],
): Promise<StatusSummary> {
  const result = await call(
    db,
    "select api.record_waba_statuses(" +
      `statuses => ${sqlValue(JSON.stringify(statuses))}::jsonb) as result`,
  );
  return parse(StatusSummarySchema, result, "record_waba_statuses");
}

/**
 * `api.record_opt_out`: idempotent global opt-out; cancels the number's queued messages.
 *
 * @example
 * await recordOptOut(db, "+254700000001", "whatsapp_inbound");
 */
export async function recordOptOut(
  db: Sql,
  msisdn: string,
  source: string,
): Promise<OptOutResult> {
  const result = await call(
    db,
    "select api.record_opt_out(" +
      `msisdn => ${sqlValue(msisdn)}::text, source => ${sqlValue(source)}::text) as result`,
  );
  return parse(OptOutResultSchema, result, "record_opt_out");
}

/**
 * `api.waba_error_rules`: every WhatsApp error rule (the one table the report
 * path applies); the dispatch function loads it once per isolate.
 *
 * @example
 * const rules = new WabaErrorRules(await wabaErrorRules(db));
 */
export async function wabaErrorRules(db: Sql): Promise<WabaErrorRule[]> {
  const result = await call(db, "select api.waba_error_rules() as result");
  return parse(z.array(WabaErrorRuleSchema), result, "waba_error_rules");
}

/** Result of `api.record_template_status`. */
export const TemplateStatusResultSchema = z.object({
  event: z.string(),
  action: z.enum(["paused", "resumed", "none"]),
  campaigns: z.number().int(),
});
export type TemplateStatusResult = z.infer<typeof TemplateStatusResultSchema>;

/** A `message_template_status_update` webhook, as `api.record_template_status` takes it. */
export interface TemplateStatusInput {
  wabaId: string;
  templateName: string;
  templateLanguage: string;
  event: string;
  reason?: string | null;
}

/**
 * `api.record_template_status`: PAUSED / DISABLED / REJECTED pause the campaigns
 * sending the template; APPROVED resumes the ones a template reason paused.
 *
 * @example
 * await recordTemplateStatus(db, { wabaId: "102290129340398", templateName: "voucher_issued", templateLanguage: "en", event: "PAUSED" });
 */
export async function recordTemplateStatus(
  db: Sql,
  input: TemplateStatusInput,
): Promise<TemplateStatusResult> {
  const result = await call(
    db,
    "select api.record_template_status(" +
      `waba_id => ${sqlValue(input.wabaId)}::text, ` +
      `template_name => ${sqlValue(input.templateName)}::text, ` +
      `template_language => ${sqlValue(input.templateLanguage)}::text, ` +
      `event => ${sqlValue(input.event)}::text, ` +
      `reason => ${sqlValue(input.reason ?? null)}::text) as result`,
  );
  return parse(TemplateStatusResultSchema, result, "record_template_status");
}

/** Result of `api.record_phone_number_quality`. */
export const PhoneQualityResultSchema = z.object({
  event: z.string(),
  channels: z.number().int(),
  messaging_tier: z.string().nullable(),
  portfolios_updated: z.number().int(),
});
export type PhoneQualityResult = z.infer<typeof PhoneQualityResultSchema>;

/** A `phone_number_quality_update` webhook, as `api.record_phone_number_quality` takes it. */
export interface PhoneQualityInput {
  wabaId: string | null;
  displayPhoneNumber: string | null;
  event: string;
  currentLimit?: string | null;
  maxDailyConversations?: string | null;
}

/**
 * `api.record_phone_number_quality`: records the quality event on the number's
 * channels and the messaging tier on their portfolios.
 *
 * @example
 * await recordPhoneNumberQuality(db, { wabaId: "102290129340398", displayPhoneNumber: "15550783881", event: "UPGRADE", maxDailyConversations: "TIER_10K" });
 */
export async function recordPhoneNumberQuality(
  db: Sql,
  input: PhoneQualityInput,
): Promise<PhoneQualityResult> {
  const result = await call(
    db,
    "select api.record_phone_number_quality(" +
      `waba_id => ${sqlValue(input.wabaId)}::text, ` +
      `display_phone_number => ${sqlValue(input.displayPhoneNumber)}::text, ` +
      `event => ${sqlValue(input.event)}::text, ` +
      `current_limit => ${sqlValue(input.currentLimit ?? null)}::text, ` +
      `max_daily_conversations => ${
        sqlValue(input.maxDailyConversations ?? null)
      }::text) as result`,
  );
  return parse(PhoneQualityResultSchema, result, "record_phone_number_quality");
}
