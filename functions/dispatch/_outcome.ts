/**
 * Turns a send's outcome into the verdict `api.report_message_results` takes,
 * by the error's rule (`app.waba_error_rules`, loaded by the handler):
 *
 * | send outcome                                                  | report                          |
 * |---------------------------------------------------------------|---------------------------------|
 * | accepted (wamid)                                              | `sent`                          |
 * | rule `throttle` (130429, 80007, 4)                            | `deferred`: the rate drops      |
 * | rule `pause_channel` (190, 131048, 368, 131031, …)            | `deferred`: the channel pauses  |
 * | rule `pause_template` (132000, 132001, 132015, 132016)        | `deferred`: its campaigns pause |
 * | retryable (5xx, timeout, network, 131000, 131056, …)          | `retry` (+ Retry-After floor)   |
 * |   … with no answer from WhatsApp (timeout, network, bare 5xx) | `retry` + `maybe_sent`          |
 * | rule `opt_out` (131050)                                       | `failed` + a global opt-out     |
 * | permanent (131026, 131047, 100, …)                            | `failed`                        |
 * | 2xx that is not a Cloud API answer                            | `failed` (may have been sent)   |
 *
 * A deferred message goes back to the queue without spending an attempt, so an
 * expired token or a restricted number can never make a message dead: the
 * channel pauses instead, and the campaign completes once it is resumed. The
 * report carries the Graph code and subcode; the database applies the same
 * rules (and defers on its own what they say to defer).
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

/** What stops the rest of a run from sending through a channel or a template. */
export type Halt =
  | { kind: "channel"; channelId: string; reason: string }
  | { kind: "template"; channelId: string; template: string; language: string; reason: string };

/** Verdict for one message, plus what else the run must do. */
export interface Outcome {
  result: MessageResult;
  /** The error behind a non-sent result, for counters and logs. */
  error?: ClassifiedError;
  /** True for an `opt_out` rule (131050): record a global opt-out for the recipient. */
  optOut: boolean;
  /** A pause rule: the run stops sending through this channel or template. */
  halt?: Halt;
}

function graph(error: ClassifiedError): { waba_code?: number; waba_subcode?: number } {
  return {
    ...(error.wabaCode !== undefined ? { waba_code: error.wabaCode } : {}),
    ...(error.wabaSubcode !== undefined ? { waba_subcode: error.wabaSubcode } : {}),
  };
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
  const retryAfter = error.retryAfterSeconds !== undefined
    ? { retry_after_seconds: error.retryAfterSeconds }
    : {};

  if (
    error.action === "throttle" || error.action === "pause_channel" ||
    error.action === "pause_template"
  ) {
    const reason = error.reason ?? error.code;
    return {
      result: {
        message_id,
        outcome: "deferred",
        error_code: error.code,
        error_message,
        ...retryAfter,
        ...graph(error),
      },
      error,
      optOut: false,
      ...(error.action === "pause_channel"
        ? { halt: { kind: "channel" as const, channelId: msg.channel_id, reason } }
        : error.action === "pause_template"
        ? {
          halt: {
            kind: "template" as const,
            channelId: msg.channel_id,
            template: msg.template_name,
            language: msg.template_language,
            reason,
          },
        }
        : {}),
    };
  }
  if (error.kind === "retryable") {
    return {
      result: {
        message_id,
        outcome: "retry",
        error_code: error.code,
        error_message,
        ...retryAfter,
        ...(maybeSent(error) ? { maybe_sent: true } : {}),
        ...graph(error),
      },
      error,
      optOut: false,
    };
  }
  return {
    result: {
      message_id,
      outcome: "failed",
      error_code: error.code,
      error_message,
      ...graph(error),
    },
    error,
    optOut: error.action === "opt_out",
  };
}

/** A claimed message that was not sent (released, halted): back without spending its attempt. */
export function deferredResult(msg: ClaimedMessage, code: string, why: string): MessageResult {
  return { message_id: msg.message_id, outcome: "deferred", error_code: code, error_message: why };
}
