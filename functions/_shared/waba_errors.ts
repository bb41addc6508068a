/**
 * Classifies a failed WhatsApp Cloud API call: whether a retry can help, and
 * which *scope* the error is about (the message, the recipient, the template,
 * the phone number or the business account) with the action dispatch takes.
 *
 * The Graph codes are not listed here. They live in one table,
 * `app.waba_error_rules` (migration `*_waba_error_rules.sql`), which the database
 * applies when a send is reported and which the dispatch function loads once per
 * isolate through `api.waba_error_rules()` ({@link WabaErrorRules}); this module
 * only adds what happens before Meta answers with a code:
 *
 * | input                                   | kind      | code             | action / notes                          |
 * |-----------------------------------------|-----------|------------------|-----------------------------------------|
 * | timeout (no answer in time)             | retryable | `timeout`        | retry; the send may still have happened |
 * | network error (refused, reset, DNS)     | retryable | `network_error`  | retry                                   |
 * | HTTP 5xx (with or without a code)       | retryable | `http_<status>`  | retry; `wabaCode` kept when present     |
 * | a Graph code with a rule                | per rule  | `waba_<code>`    | the rule's scope, action and reason     |
 * | HTTP 401 / 403, code without a rule     | permanent | `waba_<code>` / `http_<status>` | as code 190 / 10 (token, permission) |
 * | unknown code, `is_transient` or 408/429 | retryable | `waba_<code>`    | retry                                   |
 * | unknown code, other HTTP 4xx            | permanent | `waba_<code>`    | fail                                    |
 * | no code, HTTP 408 / 429                 | retryable | `http_<status>`  | retry                                   |
 * | no code, other status                   | permanent | `http_<status>`  | fail                                    |
 *
 * A rule's action decides the kind: `retry` and `throttle` are retryable; `fail`,
 * `opt_out`, `pause_channel` and `pause_template` are permanent for the message's
 * current send. Meta asks integrators to branch on `code` (and `error_subcode`),
 * never on the message text or the HTTP status alone
 * (https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/).
 *
 * @example
 * const rules = new WabaErrorRules(await wabaErrorRules(db));
 * const e = classifyWhatsAppError({ httpStatus: 401, code: 190, subcode: 463 }, rules);
 * // { kind: "permanent", code: "waba_190", scope: "account", action: "pause_channel", reason: "access_token_expired", … }
 *
 * @module
 */
import { z } from "zod";

/** Whether sending the same message again later can succeed. */
export type ErrorKind = "retryable" | "permanent";

/** What an error is about. */
export const ErrorScopeSchema = z.enum(["message", "recipient", "template", "channel", "account"]);
export type ErrorScope = z.infer<typeof ErrorScopeSchema>;

/** What dispatch does about it (see the rules migration for each). */
export const ErrorActionSchema = z.enum([
  "retry",
  "fail",
  "opt_out",
  "throttle",
  "pause_channel",
  "pause_template",
]);
export type ErrorAction = z.infer<typeof ErrorActionSchema>;

/** One row of `app.waba_error_rules`, as `api.waba_error_rules()` returns it. */
export const WabaErrorRuleSchema = z.object({
  code: z.number().int().min(0),
  code_last: z.number().int().min(0),
  subcode: z.number().int().min(0).nullable(),
  scope: ErrorScopeSchema,
  action: ErrorActionSchema,
  reason: z.string().min(1),
  cooldown_seconds: z.number().int().positive().nullable(),
  title: z.string(),
  source: z.string(),
});
export type WabaErrorRule = z.infer<typeof WabaErrorRuleSchema>;

/**
 * The error rules, looked up exactly as `app.waba_error_rule(code, subcode)`
 * does: a rule naming the subcode wins over one for any subcode, a single code
 * over a range.
 *
 * @example
 * const rules = new WabaErrorRules(rows);
 * rules.lookup(130429)?.action; // "throttle"
 * rules.lookup(190, 463)?.reason; // "access_token_expired"
 */
export class WabaErrorRules {
  readonly rules: readonly WabaErrorRule[];

  constructor(rules: readonly WabaErrorRule[]) {
    // The same order as the SQL's ORDER BY: subcode-specific first, then the narrowest range.
    this.rules = [...rules].sort((a, b) =>
      Number(a.subcode === null) - Number(b.subcode === null) ||
      (a.code_last - a.code) - (b.code_last - b.code)
    );
  }

  /** No rules: only transport failures and HTTP statuses classify. */
  static empty(): WabaErrorRules {
    return new WabaErrorRules([]);
  }

  /** The rule for a Graph code and subcode, or undefined. */
  lookup(code: number, subcode?: number | null): WabaErrorRule | undefined {
    return this.rules.find((r) =>
      r.code <= code && code <= r.code_last && (r.subcode === null || r.subcode === subcode)
    );
  }
}

/** A failed send, reduced to what the dispatcher needs to decide. */
export interface ClassifiedError {
  kind: ErrorKind;
  /** Stable machine code: `waba_<graph code>`, `http_<status>`, `timeout`, `network_error`, `invalid_request`, `invalid_response`, `missing_access_token`. */
  code: string;
  /** Human sentence (Meta's title plus details when known). Never branch on it. */
  message: string;
  /** Seconds to wait before retrying, from `Retry-After` (retryable only). */
  retryAfterSeconds?: number;
  /** HTTP status, when a response arrived. */
  httpStatus?: number;
  /** The Graph code the rules were looked up with (190 / 10 for a bare 401 / 403). */
  wabaCode?: number;
  /** Graph `error_subcode`, when the body carried one. */
  wabaSubcode?: number;
  /** What the error is about, when a rule (or the transport) says. */
  scope?: ErrorScope;
  /** What dispatch does about it. */
  action?: ErrorAction;
  /** The rule's machine reason (a channel's or campaign's pause_reason). */
  reason?: string;
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

function isRetryableStatus(status: number): boolean {
  return status >= 500 || status === 408 || status === 429;
}

function describe(title: string, input: WhatsAppErrorInput): string {
  const extra = input.details ?? input.message;
  return extra && extra !== title ? `${title}: ${extra}` : title;
}

function fromRule(
  rule: WabaErrorRule,
): Pick<ClassifiedError, "kind" | "scope" | "action" | "reason"> {
  return {
    kind: rule.action === "retry" || rule.action === "throttle" ? "retryable" : "permanent",
    scope: rule.scope,
    action: rule.action,
    reason: rule.reason,
  };
}

/**
 * Classifies a failed send. Never throws.
 *
 * @example
 * classifyWhatsAppError({ httpStatus: 503, retryAfterSeconds: 2 }, rules);
 * // { kind: "retryable", code: "http_503", message: "HTTP 503", retryAfterSeconds: 2, httpStatus: 503, scope: "message", action: "retry" }
 * classifyWhatsAppError({ networkError: "timeout" }, rules).code; // "timeout"
 */
export function classifyWhatsAppError(
  input: WhatsAppErrorInput,
  rules: WabaErrorRules,
): ClassifiedError {
  const result = classifyBase(input, rules);
  if (result.kind === "retryable" && validRetryAfter(input.retryAfterSeconds)) {
    result.retryAfterSeconds = input.retryAfterSeconds;
  }
  return result;
}

function validRetryAfter(value: number | undefined): value is number {
  return value !== undefined && Number.isFinite(value) && value >= 0;
}

const RETRY = { scope: "message", action: "retry" } as const;
const FAIL = { scope: "message", action: "fail" } as const;

function classifyBase(input: WhatsAppErrorInput, rules: WabaErrorRules): ClassifiedError {
  const httpStatus = input.httpStatus;
  const base = httpStatus === undefined ? {} : { httpStatus };
  const subcode = input.subcode === undefined ? {} : { wabaSubcode: input.subcode };

  if (input.networkError !== undefined && input.code === undefined) {
    const timedOut = input.networkError === "timeout";
    return {
      kind: "retryable",
      code: timedOut ? "timeout" : "network_error",
      message: timedOut
        ? "No response before the timeout; the message may or may not have been sent"
        : describe("Network error", { message: input.networkError }),
      ...RETRY,
      ...base,
    };
  }

  if (httpStatus !== undefined && httpStatus >= 500) {
    // Graph pairs 5xx with transient codes (1, 2); the status says more.
    const rule = input.code === undefined ? undefined : rules.lookup(input.code, input.subcode);
    return {
      kind: "retryable",
      code: `http_${httpStatus}`,
      message: describe(rule?.title ?? `HTTP ${httpStatus}`, input),
      ...RETRY,
      httpStatus,
      ...(input.code !== undefined ? { wabaCode: input.code } : {}),
      ...subcode,
    };
  }

  if (input.code !== undefined) {
    const code = input.code;
    const rule = rules.lookup(code, input.subcode);
    if (rule) {
      return {
        ...fromRule(rule),
        code: `waba_${code}`,
        message: describe(rule.title, input),
        wabaCode: code,
        ...subcode,
        ...base,
      };
    }
    const authRule = authFallback(httpStatus, rules);
    if (authRule) {
      return {
        ...fromRule(authRule),
        code: `waba_${code}`,
        message: describe(`Graph error ${code}`, input),
        wabaCode: authRule.code,
        ...subcode,
        ...base,
      };
    }
    const retryable = input.transient === true ||
      (httpStatus !== undefined && isRetryableStatus(httpStatus));
    return {
      kind: retryable ? "retryable" : "permanent",
      code: `waba_${code}`,
      message: describe(`Graph error ${code}`, input),
      ...(retryable ? RETRY : FAIL),
      wabaCode: code,
      ...subcode,
      ...base,
    };
  }

  if (httpStatus === undefined) {
    return {
      kind: "permanent",
      code: "unknown_error",
      message: describe("Unknown error", input),
      ...FAIL,
    };
  }
  const authRule = authFallback(httpStatus, rules);
  if (authRule) {
    return {
      ...fromRule(authRule),
      code: `http_${httpStatus}`,
      message: describe(`HTTP ${httpStatus}`, input),
      wabaCode: authRule.code,
      ...base,
    };
  }
  if (isRetryableStatus(httpStatus) || input.transient === true) {
    return {
      kind: "retryable",
      code: `http_${httpStatus}`,
      message: describe(`HTTP ${httpStatus}`, input),
      ...RETRY,
      ...base,
    };
  }
  return {
    kind: "permanent",
    code: `http_${httpStatus}`,
    message: describe(`HTTP ${httpStatus}`, input),
    ...FAIL,
    ...base,
  };
}

/** A 401 is an unusable token (code 190), a 403 a missing permission (code 10). */
function authFallback(httpStatus: number | undefined, rules: WabaErrorRules) {
  if (httpStatus === 401) return rules.lookup(190);
  if (httpStatus === 403) return rules.lookup(10);
  return undefined;
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
