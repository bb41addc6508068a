/**
 * Classifies a failed WhatsApp Cloud API call as retryable or permanent.
 *
 * Meta asks integrators to branch on the Graph error `code` (never on the
 * message text or the HTTP status alone), so the decision is table-driven on
 * `code`. Only a missing response (timeout, network) or a server-side 5xx
 * comes first; an unknown code falls back to `is_transient` and the status:
 *
 * | input                                   | kind      | code             | notes                              |
 * |-----------------------------------------|-----------|------------------|------------------------------------|
 * | timeout (no answer in time)             | retryable | `timeout`        | the send may still have happened   |
 * | network error (refused, reset, DNS)     | retryable | `network_error`  |                                    |
 * | HTTP 5xx (with or without a code)       | retryable | `http_<status>`  | `wabaCode` kept when present       |
 * | code 4, 80007, 130429, 131056           | retryable | `waba_<code>`    | throttling; back off 4^attempt s   |
 * | code 1, 2, 131000, 131016, 131057       | retryable | `waba_<code>`    | Meta-side transient                |
 * | code 131047, 131048, 131049, 131050, …  | permanent | `waba_<code>`    | stop sending this message          |
 * | code 0, 3, 10, 190, 200–299, 131031, …  | permanent | `waba_<code>`    | also `configError: true`           |
 * | unknown code with `is_transient: true`  | retryable | `waba_<code>`    |                                    |
 * | unknown code, HTTP 408 / 429            | retryable | `waba_<code>`    |                                    |
 * | unknown code, other HTTP 4xx            | permanent | `waba_<code>`    | 401/403 → `configError: true`      |
 * | no code, HTTP 408 / 429                 | retryable | `http_<status>`  |                                    |
 * | no code, HTTP 401 / 403                 | permanent | `http_<status>`  | `configError: true`                |
 * | no code, other status                   | permanent | `http_<status>`  |                                    |
 *
 * A `Retry-After` value is carried on retryable results so the scheduler can
 * wait at least that long; the backoff itself is the database's
 * (`api.report_message_results`: full jitter over `min(900 s, 4^attempt)`,
 * `Retry-After` as a floor).
 *
 * @example
 * const e = classifyWhatsAppError({ httpStatus: 400, code: 130429 });
 * // { kind: "retryable", code: "waba_130429", message: "Rate limit hit (throughput)", … }
 *
 * @module
 */

/** Whether sending the same message again later can succeed. */
export type ErrorKind = "retryable" | "permanent";

/** A failed send, reduced to what the dispatcher needs to decide. */
export interface ClassifiedError {
  kind: ErrorKind;
  /** Stable machine code: `waba_<graph code>`, `http_<status>`, `timeout`, `network_error`, `invalid_request`, `invalid_response`. */
  code: string;
  /** Human sentence (Meta's title plus details when known). Never branch on it. */
  message: string;
  /** Seconds to wait before retrying, from `Retry-After` (retryable only). */
  retryAfterSeconds?: number;
  /** HTTP status, when a response arrived. */
  httpStatus?: number;
  /** Graph error code, when the body carried one. */
  wabaCode?: number;
  /** True when the fault is ours to fix (token, permissions, template, account), not the message's. */
  configError?: boolean;
  /** True when the recipient opted out of marketing messages (131050): record an opt-out. */
  recipientOptedOut?: boolean;
}

/** What the caller observed. Any subset may be present. */
export interface WhatsAppErrorInput {
  httpStatus?: number;
  code?: number;
  subcode?: number;
  retryAfterSeconds?: number;
  /** Set when no HTTP response arrived. */
  networkError?: "timeout" | "network" | string;
  /** Graph's `is_transient` flag. */
  transient?: boolean;
  /** Graph's `error.message` / `error_data.details`, kept for the log. */
  message?: string;
  details?: string;
}

/** One row of the code table. */
export interface WabaCodeRule {
  kind: ErrorKind;
  title: string;
  configError?: boolean;
  recipientOptedOut?: boolean;
}

/**
 * Graph / Cloud API error codes we know, from Meta's "WhatsApp error codes"
 * reference. Codes 200–299 (API permission) are handled as a range.
 */
export const WABA_ERROR_CODES: Readonly<Record<number, WabaCodeRule>> = Object.freeze({
  // Authorization: permanent for the message, and a configuration problem.
  0: { kind: "permanent", title: "AuthException", configError: true },
  3: { kind: "permanent", title: "API method (capability or permissions)", configError: true },
  10: { kind: "permanent", title: "Permission denied", configError: true },
  190: { kind: "permanent", title: "Access token has expired or is invalid", configError: true },
  // Transient Meta-side failures.
  1: { kind: "retryable", title: "API unknown (possible server error)" },
  2: { kind: "retryable", title: "API service temporarily unavailable" },
  131000: { kind: "retryable", title: "Something went wrong" },
  131016: { kind: "retryable", title: "Service unavailable" },
  131057: { kind: "retryable", title: "Business account is in maintenance mode" },
  // Throttling: retry with backoff.
  4: { kind: "retryable", title: "Too many API calls (app rate limit)" },
  80007: { kind: "retryable", title: "Rate limit issue (WABA rate limit)" },
  130429: { kind: "retryable", title: "Rate limit hit (throughput)" },
  131056: { kind: "retryable", title: "Pair rate limit hit (too many messages to this user)" },
  // Request problems: permanent.
  100: { kind: "permanent", title: "Invalid parameter" },
  131008: { kind: "permanent", title: "Required parameter is missing" },
  131009: { kind: "permanent", title: "Parameter value is not valid" },
  131021: { kind: "permanent", title: "Recipient cannot be sender" },
  131051: { kind: "permanent", title: "Unsupported message type" },
  132005: { kind: "permanent", title: "Translated text too long" },
  132007: { kind: "permanent", title: "Template format character policy violated" },
  132012: { kind: "permanent", title: "Template parameter format mismatch" },
  // Recipient / policy outcomes: stop, do not hammer.
  131026: { kind: "permanent", title: "Message undeliverable" },
  131047: { kind: "permanent", title: "Re-engagement message (outside the 24 h window)" },
  131048: { kind: "permanent", title: "Spam rate limit hit" },
  131049: { kind: "permanent", title: "Meta chose not to deliver (ecosystem engagement)" },
  131050: {
    kind: "permanent",
    title: "User stopped marketing messages",
    recipientOptedOut: true,
  },
  130472: { kind: "permanent", title: "User's number is part of an experiment" },
  // Account or template configuration: permanent and flagged.
  368: { kind: "permanent", title: "Temporarily blocked for policy violations", configError: true },
  131031: { kind: "permanent", title: "Business account locked", configError: true },
  131042: { kind: "permanent", title: "Business eligibility payment issue", configError: true },
  131005: { kind: "permanent", title: "Access denied", configError: true },
  132000: {
    kind: "permanent",
    title: "Number of template parameters does not match",
    configError: true,
  },
  132001: { kind: "permanent", title: "Template does not exist", configError: true },
  132015: { kind: "permanent", title: "Template is paused", configError: true },
  132016: { kind: "permanent", title: "Template is disabled", configError: true },
  133010: { kind: "permanent", title: "Phone number not registered", configError: true },
});

/** Looks a Graph code up in {@link WABA_ERROR_CODES}, including the 200–299 permission range. */
export function wabaCodeRule(code: number): WabaCodeRule | undefined {
  const rule = WABA_ERROR_CODES[code];
  if (rule) return rule;
  if (code >= 200 && code <= 299) {
    return { kind: "permanent", title: "API permission not granted", configError: true };
  }
  return undefined;
}

function isRetryableStatus(status: number): boolean {
  return status >= 500 || status === 408 || status === 429;
}

function isAuthStatus(status: number): boolean {
  return status === 401 || status === 403;
}

function describe(title: string, input: WhatsAppErrorInput): string {
  const extra = input.details ?? input.message;
  return extra && extra !== title ? `${title}: ${extra}` : title;
}

/**
 * Classifies a failed send. Never throws.
 *
 * @example
 * classifyWhatsAppError({ httpStatus: 503, retryAfterSeconds: 2 });
 * // { kind: "retryable", code: "http_503", message: "HTTP 503", retryAfterSeconds: 2, httpStatus: 503 }
 * classifyWhatsAppError({ networkError: "timeout" }).code; // "timeout"
 */
export function classifyWhatsAppError(input: WhatsAppErrorInput): ClassifiedError {
  const result = classifyBase(input);
  if (result.kind === "retryable" && validRetryAfter(input.retryAfterSeconds)) {
    result.retryAfterSeconds = input.retryAfterSeconds;
  }
  return result;
}

function validRetryAfter(value: number | undefined): value is number {
  return value !== undefined && Number.isFinite(value) && value >= 0;
}

function classifyBase(input: WhatsAppErrorInput): ClassifiedError {
  const httpStatus = input.httpStatus;
  const base = httpStatus === undefined ? {} : { httpStatus };

  if (input.networkError !== undefined && input.code === undefined) {
    const timedOut = input.networkError === "timeout";
    return {
      kind: "retryable",
      code: timedOut ? "timeout" : "network_error",
      message: timedOut
        ? "No response before the timeout; the message may or may not have been sent"
        : describe("Network error", { message: input.networkError }),
      ...base,
    };
  }

  if (httpStatus !== undefined && httpStatus >= 500) {
    // Graph pairs 5xx with transient codes (1, 2); the status says more.
    const rule = input.code === undefined ? undefined : wabaCodeRule(input.code);
    return {
      kind: "retryable",
      code: `http_${httpStatus}`,
      message: describe(rule?.title ?? `HTTP ${httpStatus}`, input),
      httpStatus,
      ...(input.code !== undefined ? { wabaCode: input.code } : {}),
    };
  }

  if (input.code !== undefined) {
    const code = input.code;
    const rule = wabaCodeRule(code);
    if (rule) {
      return {
        kind: rule.kind,
        code: `waba_${code}`,
        message: describe(rule.title, input),
        wabaCode: code,
        ...base,
        ...(rule.configError ? { configError: true } : {}),
        ...(rule.recipientOptedOut ? { recipientOptedOut: true } : {}),
      };
    }
    const retryable = input.transient === true ||
      (httpStatus !== undefined && isRetryableStatus(httpStatus));
    return {
      kind: retryable ? "retryable" : "permanent",
      code: `waba_${code}`,
      message: describe(`Graph error ${code}`, input),
      wabaCode: code,
      ...base,
      ...(!retryable && httpStatus !== undefined && isAuthStatus(httpStatus)
        ? { configError: true }
        : {}),
    };
  }

  if (httpStatus === undefined) {
    return { kind: "permanent", code: "unknown_error", message: describe("Unknown error", input) };
  }
  if (isRetryableStatus(httpStatus) || input.transient === true) {
    return {
      kind: "retryable",
      code: `http_${httpStatus}`,
      message: describe(`HTTP ${httpStatus}`, input),
      ...base,
    };
  }
  return {
    kind: "permanent",
    code: `http_${httpStatus}`,
    message: describe(`HTTP ${httpStatus}`, input),
    ...base,
    ...(isAuthStatus(httpStatus) ? { configError: true } : {}),
  };
}

/**
 * Parses a `Retry-After` header: delta seconds or an HTTP date. Returns whole
 * seconds (never negative), or `undefined` when absent or unreadable.
 *
 * @example
 * parseRetryAfter("3"); // 3
 * parseRetryAfter(new Date(Date.now() + 10_000).toUTCString()); // ≈ 10
 */
export function parseRetryAfter(
  header: string | null | undefined,
  nowMs: number = Date.now(),
): number | undefined {
  if (header === null || header === undefined) return undefined;
  const value = header.trim();
  if (value === "") return undefined;
  if (/^\d+(\.\d+)?$/.test(value)) return Math.ceil(Number(value));
  const at = Date.parse(value);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, Math.ceil((at - nowMs) / 1000));
}
