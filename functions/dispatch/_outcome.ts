/**
 * Turns a send's outcome into the verdict `api.report_message_results` takes.
 *
 * | send outcome                                         | report                         |
 * |------------------------------------------------------|--------------------------------|
 * | accepted (wamid)                                     | `sent`                         |
 * | retryable (5xx, timeout, network, 130429, 131056, …) | `retry` (+ Retry-After floor)  |
 * |   … with no answer from WhatsApp (timeout, network, bare 5xx) | `retry` + `maybe_sent`  |
 * | permanent, our configuration (token, template, …)    | `retry` after 10 min           |
 * | permanent, the message or recipient (131047, 131050…) | `failed`                      |
 * | 2xx that is not a Cloud API answer                   | `failed` (may have been sent)  |
 *
 * A configuration fault (expired token, unknown template, paused template,
 * locked account) is not the recipient's fault: failing the message for good
 * would lose it, so it is retried after {@link CONFIG_ERROR_RETRY_SECONDS}, and
 * it dies after the queue's attempt limit like any retry if nobody fixes the
 * configuration. 131050 (the user stopped marketing messages) also records a
 * global opt-out.
 *
 * @module
 */
import type { ClassifiedError } from "../_shared/waba_errors.ts";
import type { SendTemplateResult } from "../_shared/whatsapp.ts";
import type { ClaimedMessage, MessageResult } from "../_shared/rpc.ts";

/**
 * True when the request may have reached WhatsApp and been accepted although no
 * answer says so: it timed out, the connection failed, or a 5xx came back
 * without a Graph error body. The database then never records the message as
 * cancelled (see `app.returned_message_status`).
 */
export function maybeSent(error: ClassifiedError): boolean {
  return error.wabaCode === undefined &&
    (error.code === "timeout" || error.code === "network_error" || (error.httpStatus ?? 0) >= 500);
}

/** Delay before a message that hit a configuration error is tried again. */
export const CONFIG_ERROR_RETRY_SECONDS = 600;

/** Verdict for one message, plus whether its recipient must be opted out. */
export interface Outcome {
  result: MessageResult;
  /** The error behind a non-sent result, for counters and logs. */
  error?: ClassifiedError;
  /** True for 131050: record a global opt-out for the recipient. */
  optOut: boolean;
}

/**
 * Maps a send result to a report item.
 *
 * @example
 * toOutcome(msg, { ok: true, wamid: "wamid.X", waId: "254700000001", httpStatus: 200, latencyMs: 5 });
 * // { result: { message_id: msg.message_id, outcome: "sent", wamid: "wamid.X" }, optOut: false }
 */
export function toOutcome(msg: ClaimedMessage, sent: SendTemplateResult): Outcome {
  const message_id = msg.message_id;
  if (sent.ok) return { result: { message_id, outcome: "sent", wamid: sent.wamid }, optOut: false };
  const error = sent.error;
  const error_message = error.message.slice(0, 1000);
  if (error.kind === "retryable") {
    return {
      result: {
        message_id,
        outcome: "retry",
        error_code: error.code,
        error_message,
        ...(error.retryAfterSeconds !== undefined
          ? { retry_after_seconds: error.retryAfterSeconds }
          : {}),
        ...(maybeSent(error) ? { maybe_sent: true } : {}),
      },
      error,
      optOut: false,
    };
  }
  if (error.configError && error.code !== "invalid_response") {
    return {
      result: {
        message_id,
        outcome: "retry",
        error_code: error.code,
        error_message,
        retry_after_seconds: CONFIG_ERROR_RETRY_SECONDS,
      },
      error,
      optOut: false,
    };
  }
  return {
    result: { message_id, outcome: "failed", error_code: error.code, error_message },
    error,
    optOut: error.recipientOptedOut === true,
  };
}
