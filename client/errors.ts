/**
 * The error codes a client can branch on, and the errors the client throws.
 *
 * `ERROR_CODES` is every code the API can answer with that this library knows:
 * the business codes the SQL raises (`app.raise_error` / `app.error_result`;
 * `tests/client_error_codes.test.ts` holds this list equal to the live
 * catalog) and the transport codes of PostgREST / the gateway that change what
 * a client does (retry, sign in again, update the app). Branch on `.code`,
 * never on the message.
 *
 * Web APIs only: runs in browsers and in Deno.
 *
 * @example
 * ```ts
 * import { ApiError, isRetryable } from "./errors.ts";
 *
 * try {
 *   await api.redeemVoucher({ code, idempotencyKey });
 * } catch (e) {
 *   if (e instanceof ApiError && e.code === "voucher_already_redeemed") {
 *     console.log(e.details?.station_name); // where it was redeemed first
 *   } else if (isRetryable(e)) {
 *     // same idempotency key, later
 *   }
 * }
 * ```
 *
 * @module
 */

/** Business error codes raised by the SQL (`app.raise_error` / `app.error_result`). */
export const SQL_ERROR_CODES = [
  "campaign_cancelled",
  "campaign_not_active",
  "campaign_not_draft",
  "campaign_not_found",
  "campaign_not_ready",
  "cannot_deactivate_self",
  "channel_exists",
  "channel_not_found",
  "idempotency_key_reused",
  "invalid_amount",
  "invalid_campaign",
  "invalid_channel",
  "invalid_claim",
  "invalid_code_checksum",
  "invalid_code_format",
  "invalid_consent",
  "invalid_consents",
  "invalid_count",
  "invalid_currency",
  "invalid_cursor",
  "invalid_date_range",
  "invalid_expiry",
  "invalid_filter",
  "invalid_idempotency_key",
  "invalid_item",
  "invalid_items",
  "invalid_msisdn",
  "invalid_opt_out_source",
  "invalid_page_size",
  "invalid_portfolio",
  "invalid_quality_event",
  "invalid_reason",
  "invalid_redemption_details",
  "invalid_results",
  "invalid_setting",
  "invalid_staff_role",
  "invalid_status",
  "invalid_statuses",
  "invalid_targets",
  "invalid_template",
  "invalid_template_event",
  "invalid_template_params",
  "invalid_time_zone",
  "invalid_transition",
  "invalid_undo_target",
  "message_not_found",
  "message_not_resendable",
  "message_pending",
  "not_authorized",
  "portfolio_not_found",
  "recipient_opted_out",
  "redemption_already_reversed",
  "redemption_not_found",
  "resend_limit_reached",
  "resend_too_soon",
  "staff_not_found",
  "station_exists",
  "station_not_allowed",
  "station_not_found",
  "station_required",
  "too_many_targets",
  "undo_window_expired",
  "user_not_found",
  "voucher_already_redeemed",
  "voucher_expired",
  "voucher_not_found",
  "voucher_not_issued",
  "voucher_not_redeemable",
  "voucher_not_redeemed",
  "voucher_not_yet_valid",
  "voucher_void",
] as const;

/**
 * Transport codes of PostgREST (and the local gateway) that the client acts on:
 * PGRST000–003 the database or its pool is unavailable (retry with backoff;
 * PGRST003 comes with `Retry-After`), PGRST202 the RPC does not exist (the app
 * and the database disagree), PGRST301/303 the JWT is invalid or expired (sign
 * in again), 42501 no execute privilege (e.g. signed out: anon).
 */
export const TRANSPORT_ERROR_CODES = [
  "PGRST000",
  "PGRST001",
  "PGRST002",
  "PGRST003",
  "PGRST202",
  "PGRST301",
  "PGRST303",
  "42501",
] as const;

/** Every code this library knows: the SQL's business codes and the transport codes. */
export const ERROR_CODES = [...SQL_ERROR_CODES, ...TRANSPORT_ERROR_CODES] as const;

/** A code the SQL raises. */
export type SqlErrorCode = typeof SQL_ERROR_CODES[number];
/** A PostgREST / gateway transport code the client acts on. */
export type TransportErrorCode = typeof TRANSPORT_ERROR_CODES[number];
/** Every known error code. */
export type ErrorCode = typeof ERROR_CODES[number];
/** A code from a newer server (or a proxy) that this library does not know yet. */
export type UnknownErrorCode = string & Record<never, never>;

const KNOWN = new Set<string>(ERROR_CODES);

/** Whether `code` is one of {@link ERROR_CODES}. */
export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === "string" && KNOWN.has(code);
}

/** The parsed `details` of an error: a JSON object where the server sent one. */
export type ErrorDetails = Record<string, unknown> | null;

/**
 * An error answered by the API: HTTP status plus PostgREST's body
 * `{code, message, details, hint}`. `details` is parsed when it is JSON (the
 * business errors send a JSON document as a string), otherwise `{text}`.
 *
 * @example
 * ```ts
 * const e = new ApiError(409, { code: "voucher_already_redeemed", message: "…", details: '{"station_code":"S1"}' });
 * e.details?.station_code; // "S1"
 * ```
 */
export class ApiError extends Error {
  override readonly name = "ApiError";
  /** The server's machine code (`voucher_expired`, `PGRST003`, …); "" when it sent none. */
  readonly code: ErrorCode | UnknownErrorCode;
  /** HTTP status (0 never: network failures are {@link NetworkError}). */
  readonly status: number;
  readonly details: ErrorDetails;
  readonly hint: string | null;
  /** `Retry-After` in milliseconds, when the answer carried one the client could read. */
  readonly retryAfterMs: number | undefined;

  constructor(
    status: number,
    body: { code?: unknown; message?: unknown; details?: unknown; hint?: unknown },
    retryAfterMs?: number,
  ) {
    const message = typeof body.message === "string" && body.message !== ""
      ? body.message
      : `The API answered HTTP ${status}`;
    super(message);
    this.status = status;
    this.code = typeof body.code === "string" ? body.code : "";
    this.details = parseDetails(body.details);
    this.hint = typeof body.hint === "string" && body.hint !== "" ? body.hint : null;
    this.retryAfterMs = retryAfterMs;
  }
}

/** The request never got an answer (offline, connection refused or reset, timeout). */
export class NetworkError extends Error {
  override readonly name = "NetworkError";
  readonly code = "network_error";

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The answer was not the shape this library expects (a proxy's page, a newer server). */
export class UnexpectedResponseError extends Error {
  override readonly name = "UnexpectedResponseError";
  readonly code = "unexpected_response";
}

function parseDetails(details: unknown): ErrorDetails {
  if (details === null || details === undefined || details === "") return null;
  if (typeof details === "object" && !Array.isArray(details)) {
    return details as Record<string, unknown>;
  }
  if (typeof details === "string") {
    try {
      const parsed = JSON.parse(details);
      if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) return parsed;
      if (parsed === null) return null;
    } catch { /* not JSON: keep the text */ }
    return { text: details };
  }
  return { value: details };
}

const RETRYABLE_CODES = new Set<string>(["PGRST000", "PGRST001", "PGRST002", "PGRST003"]);

/**
 * Whether the same request may succeed later unchanged: no answer at all, the
 * database or pool unavailable (PGRST000–003, 502/503/504), a 500, or a 429.
 * Business refusals are never retryable: they are answers.
 *
 * @example
 * ```ts
 * isRetryable(new NetworkError("offline")); // true
 * isRetryable(new ApiError(409, { code: "voucher_already_redeemed" })); // false
 * ```
 */
export function isRetryable(error: unknown): boolean {
  if (error instanceof NetworkError) return true;
  if (!(error instanceof ApiError)) return false;
  if (RETRYABLE_CODES.has(error.code)) return true;
  return error.status === 429 || error.status === 500 || error.status === 502 ||
    error.status === 503 || error.status === 504;
}

const AUTH_CODES = new Set<string>(["PGRST301", "PGRST303", "42501", "not_authorized"]);

/**
 * Whether the caller must sign in again (or is not staff): 401, invalid or
 * expired JWT, no privilege, or `not_authorized`.
 */
export function isAuthError(error: unknown): boolean {
  if (!(error instanceof ApiError)) return false;
  return error.status === 401 || AUTH_CODES.has(error.code);
}
