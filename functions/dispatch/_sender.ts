/**
 * Sends a claimed message as a WhatsApp template, with the channel's
 * credentials from the environment (`WABA_ACCESS_TOKEN_<PHONE_NUMBER_ID>`, then
 * `WABA_ACCESS_TOKEN`). One client per phone number id, created on first use.
 *
 * The message id travels as `biz_opaque_callback_data`: WhatsApp echoes it in
 * every status webhook, and `api.record_waba_statuses` finds the message by it
 * (even before the send is reported).
 *
 * @module
 */
import type { ClaimedMessage } from "../_shared/rpc.ts";
import type { WabaConfig } from "../_shared/waba_config.ts";
import { classifyWhatsAppError, WabaErrorRules } from "../_shared/waba_errors.ts";
import { type SendTemplateResult, WhatsAppClient } from "../_shared/whatsapp.ts";
import type { SendFn } from "./_run.ts";

/**
 * Builds the send function of a run. `rules` classify WhatsApp's errors by scope
 * (`api.waba_error_rules()`); a missing token is classified as an invalid token
 * (code 190), so it pauses the channel instead of burning its messages.
 *
 * @example
 * const send = createSender(wabaConfigFromEnv(), undefined, rules);
 * const result = await send(claimedMessage); // { ok: true, wamid } | { ok: false, error }
 */
export function createSender(
  cfg: WabaConfig,
  fetchImpl?: typeof fetch,
  rules: WabaErrorRules = WabaErrorRules.empty(),
): SendFn {
  const clients = new Map<string, WhatsAppClient>();
  return (msg: ClaimedMessage): Promise<SendTemplateResult> => {
    const pnid = msg.phone_number_id;
    let client = clients.get(pnid);
    if (!client) {
      const accessToken = cfg.accessTokenFor(pnid);
      if (!accessToken) {
        const why =
          `No WhatsApp access token for phone number id "${pnid}": set WABA_ACCESS_TOKEN_${pnid} or WABA_ACCESS_TOKEN`;
        return Promise.resolve({
          ok: false,
          latencyMs: 0,
          error: {
            ...classifyWhatsAppError({ code: 190, message: why }, rules),
            code: "missing_access_token",
            message: why,
          },
        });
      }
      client = new WhatsAppClient({
        accessToken,
        baseUrl: cfg.baseUrl,
        version: cfg.version,
        timeoutMs: cfg.timeoutMs,
        fetch: fetchImpl,
        errorRules: rules,
      });
      clients.set(pnid, client);
    }
    return client.sendTemplate({
      phoneNumberId: pnid,
      to: msg.to,
      template: msg.template_name,
      language: msg.template_language,
      bodyParameters: msg.body_parameters,
      callbackData: String(msg.message_id),
    });
  };
}
