/**
 * A small WhatsApp Cloud API client for template sends.
 *
 * It speaks Meta's Graph API (`POST {baseUrl}/{version}/{phoneNumberId}/messages`
 * with a bearer token), so pointing `baseUrl` at a BSP or bridge that speaks
 * the same API, or at the local fake (`local/fake_waba`), needs no code change.
 *
 * API failures never throw: {@link WhatsAppClient.sendTemplate} returns
 * `{ok: false, error}` with a {@link ClassifiedError} saying whether a retry can
 * help. Requests and responses are validated with zod on both sides; a request
 * that would be rejected is not sent.
 *
 * @example
 * const wa = new WhatsAppClient({ accessToken: Deno.env.get("WABA_ACCESS_TOKEN")!, errorRules });
 * const r = await wa.sendTemplate({
 *   phoneNumberId: "106540352242922", to: "+254712345678",
 *   template: "voucher_issued", language: "en", bodyParameters: ["Jane", "7KQ2-M9XD-4TRC"],
 * });
 * if (r.ok) console.log(r.wamid); else if (r.error.kind === "retryable") retryLater(r.error);
 *
 * @module
 */
import {
  type GraphErrorBody,
  GraphErrorBodySchema,
  SendMessageResponseSchema,
  type SendTemplateRequest,
  SendTemplateRequestSchema,
} from "./waba_schemas.ts";
import {
  type ClassifiedError,
  classifyWhatsAppError,
  parseRetryAfter,
  WabaErrorRules,
} from "./waba_errors.ts";

/** Meta's Graph API host. */
export const DEFAULT_GRAPH_BASE_URL = "https://graph.facebook.com";
/** Graph API version used when none is configured. */
export const DEFAULT_GRAPH_VERSION = "v21.0";
/** Per-request timeout when none is configured. */
export const DEFAULT_TIMEOUT_MS = 10_000;

/** Constructor options. */
export interface WhatsAppClientOptions {
  /** System-user (or BSP) access token, sent as `Authorization: Bearer …`. */
  accessToken: string;
  /** Scheme and host (and optional path prefix) of the Graph-compatible API. */
  baseUrl?: string;
  /** Graph API version path segment, e.g. `v21.0`. */
  version?: string;
  /** Abort and report `timeout` (retryable) after this many milliseconds. */
  timeoutMs?: number;
  /** Injected `fetch`, for tests or instrumentation. */
  fetch?: typeof fetch;
  /**
   * The error rules (`api.waba_error_rules()`) that classify Graph codes by scope;
   * without them only transport failures and HTTP statuses classify.
   */
  errorRules?: WabaErrorRules;
}

/** One template send. */
export interface SendTemplateInput {
  /** The business phone number id (not the phone number). */
  phoneNumberId: string;
  /** Recipient in E.164 (`+254712345678`) or bare digits. */
  to: string;
  /** Approved template name. */
  template: string;
  /** Template language code, e.g. `en` or `en_US`. */
  language: string;
  /** Positional `{{1}}`, `{{2}}` … values of the body component. */
  bodyParameters?: readonly string[];
  /** Echoed back on status webhooks as `biz_opaque_callback_data`. */
  callbackData?: string;
  /** Caller's cancellation, combined with the timeout. */
  signal?: AbortSignal;
}

/** Outcome of a send. */
export type SendTemplateResult =
  | {
    ok: true;
    /** WhatsApp message id (`wamid.…`): status webhooks refer to it. */
    wamid: string;
    /** The recipient's WhatsApp id (digits). */
    waId: string;
    /** `accepted`, `held_for_quality_assessment` or `paused`, when reported. */
    messageStatus?: string;
    httpStatus: number;
    latencyMs: number;
  }
  | { ok: false; error: ClassifiedError; latencyMs: number };

/** Thrown by the constructor for unusable options (a programming error). */
export class WhatsAppClientConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WhatsAppClientConfigError";
  }
}

/** Builds the Cloud API body for a template message with text body parameters. */
export function buildTemplateRequest(input: SendTemplateInput): SendTemplateRequest {
  const params = input.bodyParameters ?? [];
  return {
    messaging_product: "whatsapp",
    recipient_type: "individual",
    to: input.to,
    type: "template",
    template: {
      name: input.template,
      language: { code: input.language },
      ...(params.length > 0
        ? {
          components: [{
            type: "body",
            parameters: params.map((text) => ({ type: "text" as const, text })),
          }],
        }
        : {}),
    },
    ...(input.callbackData !== undefined ? { biz_opaque_callback_data: input.callbackData } : {}),
  };
}

/** Client for the WhatsApp Cloud API (or a compatible BSP / bridge). */
export class WhatsAppClient {
  readonly baseUrl: string;
  readonly version: string;
  readonly timeoutMs: number;
  readonly #accessToken: string;
  readonly #fetch: typeof fetch;
  readonly #rules: WabaErrorRules;

  constructor(opts: WhatsAppClientOptions) {
    if (!opts.accessToken) {
      throw new WhatsAppClientConfigError("Cannot create a WhatsApp client: accessToken is empty");
    }
    const baseUrl = (opts.baseUrl ?? DEFAULT_GRAPH_BASE_URL).replace(/\/+$/, "");
    try {
      new URL(baseUrl);
    } catch {
      throw new WhatsAppClientConfigError(
        `Cannot create a WhatsApp client: baseUrl "${baseUrl}" is not a URL`,
      );
    }
    const version = opts.version ?? DEFAULT_GRAPH_VERSION;
    if (!/^v\d+\.\d+$/.test(version)) {
      throw new WhatsAppClientConfigError(
        `Cannot create a WhatsApp client: version "${version}" is not like v21.0`,
      );
    }
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!(timeoutMs > 0)) {
      throw new WhatsAppClientConfigError(
        `Cannot create a WhatsApp client: timeoutMs ${timeoutMs} must be positive`,
      );
    }
    this.baseUrl = baseUrl;
    this.version = version;
    this.timeoutMs = timeoutMs;
    this.#accessToken = opts.accessToken;
    this.#fetch = opts.fetch ?? globalThis.fetch.bind(globalThis);
    this.#rules = opts.errorRules ?? WabaErrorRules.empty();
  }

  /** The messages endpoint for a phone number id. */
  messagesUrl(phoneNumberId: string): string {
    return `${this.baseUrl}/${this.version}/${encodeURIComponent(phoneNumberId)}/messages`;
  }

  /**
   * Sends one template message. Resolves with the wamid, or with a classified
   * error; rejects only if the caller's own `signal` aborts.
   */
  async sendTemplate(input: SendTemplateInput): Promise<SendTemplateResult> {
    const started = performance.now();
    const elapsed = () => Math.round(performance.now() - started);

    const request = SendTemplateRequestSchema.safeParse(buildTemplateRequest(input));
    if (!request.success || !/^\d{1,32}$/.test(input.phoneNumberId)) {
      const why = request.success
        ? `phoneNumberId "${input.phoneNumberId}" is not numeric`
        : request.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
      return {
        ok: false,
        latencyMs: elapsed(),
        error: {
          kind: "permanent",
          code: "invalid_request",
          message: `Cannot send template "${input.template}": ${why}`,
          scope: "message",
          action: "fail",
        },
      };
    }

    const timeout = AbortSignal.timeout(this.timeoutMs);
    const signal = input.signal ? AbortSignal.any([timeout, input.signal]) : timeout;
    let response: Response;
    let text: string;
    try {
      response = await this.#fetch(this.messagesUrl(input.phoneNumberId), {
        method: "POST",
        headers: {
          "authorization": `Bearer ${this.#accessToken}`,
          "content-type": "application/json",
          "accept": "application/json",
        },
        body: JSON.stringify(request.data),
        signal,
      });
      text = await response.text();
    } catch (err) {
      if (input.signal?.aborted) throw input.signal.reason ?? err;
      const timedOut = timeout.aborted ||
        (err instanceof DOMException && (err.name === "TimeoutError" || err.name === "AbortError"));
      return {
        ok: false,
        latencyMs: elapsed(),
        error: classifyWhatsAppError({
          networkError: timedOut ? "timeout" : String((err as Error)?.message ?? err),
        }, this.#rules),
      };
    }

    const json = parseJson(text);
    if (response.ok) {
      const parsed = SendMessageResponseSchema.safeParse(json);
      if (!parsed.success) {
        // The request may have gone through; retrying could double-send, so stop
        // and flag it: a 2xx that is not a Cloud API answer means a wrong baseUrl.
        return {
          ok: false,
          latencyMs: elapsed(),
          error: {
            kind: "permanent",
            code: "invalid_response",
            message:
              `HTTP ${response.status} from ${this.baseUrl} is not a Cloud API send response`,
            httpStatus: response.status,
            scope: "channel",
            action: "fail",
          },
        };
      }
      return {
        ok: true,
        wamid: parsed.data.messages[0].id,
        waId: parsed.data.contacts[0].wa_id,
        messageStatus: parsed.data.messages[0].message_status,
        httpStatus: response.status,
        latencyMs: elapsed(),
      };
    }

    const body = GraphErrorBodySchema.safeParse(json);
    const graph: GraphErrorBody["error"] | undefined = body.success ? body.data.error : undefined;
    return {
      ok: false,
      latencyMs: elapsed(),
      error: classifyWhatsAppError({
        httpStatus: response.status,
        code: graph?.code,
        subcode: graph?.error_subcode,
        transient: graph?.is_transient,
        message: graph?.message,
        details: graph?.error_data?.details,
        retryAfterSeconds: parseRetryAfter(response.headers.get("retry-after")),
      }, this.#rules),
    };
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
