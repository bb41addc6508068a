/**
 * `/functions/v1/waba-webhook`: WhatsApp Cloud API webhooks.
 *
 * - `GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…` — Meta's
 *   subscription check: 200 with the challenge as plain text when the token is
 *   `WABA_VERIFY_TOKEN` (compared in constant time), else 403.
 * - `POST` — verified first, on the raw bytes: `X-Hub-Signature-256` must be
 *   the HMAC-SHA256 of the body under `WABA_APP_SECRET`; a missing, malformed
 *   or wrong signature is 401 and nothing is read or written. Then:
 *   - status updates → `api.record_waba_statuses`, in batches of ≤ 1,000, each
 *     naming its message by our id (`biz_opaque_callback_data`, which the
 *     dispatcher sets) and its recipient (monotonic and idempotent in the
 *     database: replays and out-of-order deliveries are harmless; a failed
 *     status's error is classified by scope there, like a send's);
 *   - `message_template_status_update` → `api.record_template_status` (PAUSED,
 *     DISABLED, REJECTED pause the campaigns sending the template; APPROVED
 *     resumes them);
 *   - `phone_number_quality_update` → `api.record_phone_number_quality` (the
 *     number's quality event, and the portfolio's messaging tier);
 *   - an inbound opt-out keyword (`_stop_words.ts`: "STOP", "stop all",
 *     "unsubscribe", "opt out", … as the whole message) → `api.record_opt_out(+<from>, 'whatsapp_inbound')`;
 *   - a `failed` status with code 131050 (the user stopped marketing messages)
 *     → `api.record_opt_out(+<recipient>, 'waba_131050')`.
 *
 * Answers: 200 `{ok, statuses, opt_outs, templates, qualities, skipped}` once the database has the
 * updates (one or two short transactions — Meta allows seconds); 400 for a
 * signed body that is not a WhatsApp payload; 401 bad signature; 413 too
 * large; 500 when the database fails or the app secret is not configured, so
 * Meta retries (everything here is idempotent). Strings Postgres cannot store
 * (`\u0000`, lone surrogates) are cleaned before use, so such a payload is
 * recorded and answered 200 instead of failing the same way on every retry
 * (`_storable.ts`).
 *
 * Why not acknowledge first and write in the background: Meta only retries a
 * non-2xx answer, so an ack before the write would turn a database blip into a
 * lost opt-out. The write is one round trip; the answer stays fast.
 *
 * @module
 */
import { getDb, isTransientDbError, RpcError } from "../_shared/db.ts";
import { log } from "../_shared/log.ts";
import {
  type OptOutResult,
  type PhoneQualityInput,
  type PhoneQualityResult,
  recordOptOut,
  recordPhoneNumberQuality,
  recordTemplateStatus,
  recordWabaStatuses,
  RPC_BATCH_LIMIT,
  type StatusItem,
  type StatusSummary,
  type TemplateStatusInput,
  type TemplateStatusResult,
} from "../_shared/rpc.ts";
import { denoEnv, type EnvGetter, wabaConfigFromEnv } from "../_shared/waba_config.ts";
import type { WebhookStatus } from "../_shared/waba_schemas.ts";
import { WebhookVerificationQuerySchema } from "../_shared/waba_schemas.ts";
import { SIGNATURE_HEADER, verifySignature } from "../_shared/webhook_signature.ts";
import { extract, PayloadError } from "./_extract.ts";
import { parseStorableJson } from "./_storable.ts";
import { isOptOutRequest } from "./_stop_words.ts";

/** Largest body accepted (Meta batches are far smaller). */
export const MAX_BODY_BYTES = 3 * 1024 * 1024;

/** Opt-out sources written by this function. */
export const OPT_OUT_SOURCES = { inbound: "whatsapp_inbound", optedOut: "waba_131050" } as const;

/** Seams for tests; production uses the defaults. */
export interface WebhookDeps {
  env: EnvGetter;
  recordStatuses(items: StatusItem[]): Promise<StatusSummary>;
  recordOptOut(msisdn: string, source: string): Promise<OptOutResult>;
  recordTemplateStatus(input: TemplateStatusInput): Promise<TemplateStatusResult>;
  recordPhoneQuality(input: PhoneQualityInput): Promise<PhoneQualityResult>;
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
  });
}

const encoder = new TextEncoder();

/** Constant-time string equality (compares HMACs of both values under a fresh key). */
async function safeEqual(a: string, b: string): Promise<boolean> {
  const key = await crypto.subtle.generateKey({ name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
    "verify",
  ]);
  const mac = await crypto.subtle.sign("HMAC", key, encoder.encode(a));
  return await crypto.subtle.verify("HMAC", key, mac, encoder.encode(b));
}

/** A status as `api.record_waba_statuses` takes it. */
export function toStatusItem(status: WebhookStatus): StatusItem {
  const error = status.errors?.[0];
  const ourId = status.biz_opaque_callback_data;
  return {
    wamid: status.id,
    status: status.status,
    timestamp: status.timestamp,
    recipient_id: status.recipient_id,
    // Our message id, when the callback data is one (another sender may set anything there).
    ...(ourId !== undefined && /^\d{1,18}$/.test(ourId) ? { message_id: ourId } : {}),
    ...(error
      ? {
        error_code: `waba_${error.code}`,
        waba_code: error.code,
        error_message: [error.title, error.error_data?.details ?? error.message]
          .filter(Boolean).join(": ").slice(0, 1000),
      }
      : {}),
  };
}

/** E.164 from a WhatsApp id (digits, no `+`). */
function e164(waId: string): string {
  return waId.startsWith("+") ? waId : `+${waId}`;
}

async function readBody(req: Request): Promise<Uint8Array | null> {
  const declared = Number(req.headers.get("content-length"));
  if (declared > MAX_BODY_BYTES) {
    await req.body?.cancel();
    return null;
  }
  const raw = new Uint8Array(await req.arrayBuffer());
  return raw.byteLength > MAX_BODY_BYTES ? null : raw;
}

/**
 * Builds the handler; `overrides` replace the production dependencies.
 *
 * @example
 * const handler = createWebhookHandler({ env: (n) => ({ WABA_APP_SECRET: "s" })[n], recordStatuses, recordOptOut });
 */
export function createWebhookHandler(
  overrides: Partial<WebhookDeps> = {},
): (req: Request) => Promise<Response> {
  const deps: WebhookDeps = {
    env: denoEnv,
    recordStatuses: (items) => recordWabaStatuses(getDb(), items),
    recordOptOut: (msisdn, source) => recordOptOut(getDb(), msisdn, source),
    recordTemplateStatus: (input) => recordTemplateStatus(getDb(), input),
    recordPhoneQuality: (input) => recordPhoneNumberQuality(getDb(), input),
    ...overrides,
  };

  const verify = async (url: URL): Promise<Response> => {
    const query = WebhookVerificationQuerySchema.safeParse(Object.fromEntries(url.searchParams));
    const expected = wabaConfigFromEnv(deps.env).verifyToken;
    if (!expected) {
      log("error", "waba_webhook.config.missing", { missing: "WABA_VERIFY_TOKEN" });
      return new Response("verification is not configured", { status: 500 });
    }
    if (!query.success || !(await safeEqual(query.data["hub.verify_token"], expected))) {
      log("warn", "waba_webhook.verify.refused", {});
      return new Response("forbidden", { status: 403 });
    }
    log("info", "waba_webhook.verify.ok", {});
    return new Response(query.data["hub.challenge"], {
      status: 200,
      headers: { "content-type": "text/plain" },
    });
  };

  const receive = async (req: Request): Promise<Response> => {
    const appSecret = wabaConfigFromEnv(deps.env).appSecret;
    if (!appSecret) {
      await req.body?.cancel();
      log("error", "waba_webhook.config.missing", { missing: "WABA_APP_SECRET" });
      return json(500, { error: "not_configured" });
    }
    const raw = await readBody(req);
    if (raw === null) return json(413, { error: "payload_too_large" });
    if (!(await verifySignature(raw, req.headers.get(SIGNATURE_HEADER), appSecret))) {
      log("warn", "waba_webhook.signature.invalid", {
        present: req.headers.has(SIGNATURE_HEADER),
        bytes: raw.byteLength,
      });
      return json(401, { error: "invalid_signature" });
    }

    let payload;
    try {
      // Strings Postgres cannot store (NUL, lone surrogates) are cleaned here,
      // not refused: Meta would retry a refusal for days (see _storable.ts).
      const { value, cleaned } = parseStorableJson(new TextDecoder().decode(raw));
      if (cleaned > 0) log("warn", "waba_webhook.payload.cleaned", { strings: cleaned });
      payload = extract(value);
    } catch (err) {
      const message = err instanceof PayloadError ? err.message : "The body is not valid JSON";
      log("warn", "waba_webhook.payload.invalid", { message });
      return json(400, { error: "invalid_payload", message });
    }
    if (payload.skipped > 0) {
      log("warn", "waba_webhook.payload.partial", { skipped: payload.skipped });
    }

    const optOuts = new Map<string, string>(); // msisdn → source
    for (const { message } of payload.messages) {
      const texts = [message.text?.body, message.button?.text, message.button?.payload];
      if (texts.some(isOptOutRequest)) optOuts.set(e164(message.from), OPT_OUT_SOURCES.inbound);
    }
    for (const { status } of payload.statuses) {
      if (status.status === "failed" && status.errors?.some((e) => e.code === 131050)) {
        const msisdn = e164(status.recipient_id);
        if (!optOuts.has(msisdn)) optOuts.set(msisdn, OPT_OUT_SOURCES.optedOut);
      }
    }

    const totals: StatusSummary = { applied: 0, ignored: 0, unknown: 0 };
    try {
      const items = payload.statuses.map(({ status }) => toStatusItem(status));
      for (let i = 0; i < items.length; i += RPC_BATCH_LIMIT) {
        const s = await deps.recordStatuses(items.slice(i, i + RPC_BATCH_LIMIT));
        totals.applied += s.applied;
        totals.ignored += s.ignored;
        totals.unknown += s.unknown;
      }
      for (const [msisdn, source] of optOuts) {
        try {
          const r = await deps.recordOptOut(msisdn, source);
          log("info", "waba_webhook.opt_out", {
            msisdn,
            source,
            created: r.created,
            cancelledMessages: r.cancelled_messages,
          });
        } catch (err) {
          // A number the database refuses (not E.164) will never be accepted: a retry
          // of the whole delivery cannot help, so log it for a person and go on.
          if (!(err instanceof RpcError)) throw err;
          log("error", "waba_webhook.opt_out.refused", { msisdn, source, code: err.code });
        }
      }
      // Account-level events: a value the database refuses (a malformed name or id)
      // will never be accepted, so it is logged for a person, not retried.
      for (const { wabaId, value } of payload.templates) {
        try {
          const r = await deps.recordTemplateStatus({
            wabaId,
            templateName: value.message_template_name,
            templateLanguage: value.message_template_language,
            event: value.event,
            reason: value.reason ?? null,
          });
          log(r.action === "none" ? "debug" : "warn", "waba_webhook.template_status", {
            wabaId,
            template: value.message_template_name,
            language: value.message_template_language,
            event: r.event,
            action: r.action,
            campaigns: r.campaigns,
          });
        } catch (err) {
          if (!(err instanceof RpcError)) throw err;
          log("error", "waba_webhook.template_status.refused", { wabaId, code: err.code });
        }
      }
      for (const { wabaId, value } of payload.qualities) {
        try {
          const r = await deps.recordPhoneQuality({
            wabaId,
            displayPhoneNumber: value.display_phone_number,
            event: value.event,
            currentLimit: value.current_limit ?? null,
            maxDailyConversations: value.max_daily_conversations_per_business ?? null,
          });
          log("warn", "waba_webhook.phone_quality", {
            wabaId,
            displayPhoneNumber: value.display_phone_number,
            ...r,
          });
        } catch (err) {
          if (!(err instanceof RpcError)) throw err;
          log("error", "waba_webhook.phone_quality.refused", { wabaId, code: err.code });
        }
      }
    } catch (err) {
      // A database blip is routine (Meta retries); anything else needs a look.
      log(isTransientDbError(err) ? "warn" : "error", "waba_webhook.store.failed", { error: err });
      return json(500, { error: "store_failed" });
    }
    log("debug", "waba_webhook.received", {
      statuses: payload.statuses.length,
      messages: payload.messages.length,
      ...totals,
    });
    return json(200, {
      ok: true,
      statuses: { received: payload.statuses.length, ...totals },
      opt_outs: optOuts.size,
      templates: payload.templates.length,
      qualities: payload.qualities.length,
      skipped: payload.skipped,
    });
  };

  return async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    if (req.method === "GET") return await verify(url);
    if (req.method === "POST") return await receive(req);
    await req.body?.cancel();
    return json(405, { error: "method_not_allowed" });
  };
}

/** The handler the gateway and `index.ts` serve. */
export const handler: (req: Request) => Promise<Response> = createWebhookHandler();
