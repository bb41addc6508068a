/**
 * Sends a claimed message as a WhatsApp template, with the channel's
 * credentials from the environment (`WABA_ACCESS_TOKEN_<PHONE_NUMBER_ID>`, then
 * `WABA_ACCESS_TOKEN`). One client per phone number id, created on first use.
 *
 * The message id travels as `biz_opaque_callback_data`, so status webhooks and
 * the fake's record can be traced back to the queue row.
 *
 * @module
 */
import type { ClaimedMessage } from "../_shared/rpc.ts";
import type { WabaConfig } from "../_shared/waba_config.ts";
import { type SendTemplateResult, WhatsAppClient } from "../_shared/whatsapp.ts";
import type { SendFn } from "./_run.ts";

/**
 * Builds the send function of a run.
 *
 * @example
 * const send = createSender(wabaConfigFromEnv());
 * const result = await send(claimedMessage); // { ok: true, wamid } | { ok: false, error }
 */
export function createSender(cfg: WabaConfig, fetchImpl?: typeof fetch): SendFn {
  const clients = new Map<string, WhatsAppClient>();
  return (msg: ClaimedMessage): Promise<SendTemplateResult> => {
    const pnid = msg.phone_number_id;
    let client = clients.get(pnid);
    if (!client) {
      const accessToken = cfg.accessTokenFor(pnid);
      if (!accessToken) {
        return Promise.resolve({
          ok: false,
          latencyMs: 0,
          error: {
            kind: "permanent",
            code: "missing_access_token",
            message:
              `No WhatsApp access token for phone number id "${pnid}": set WABA_ACCESS_TOKEN_${pnid} or WABA_ACCESS_TOKEN`,
            configError: true,
          },
        });
      }
      client = new WhatsAppClient({
        accessToken,
        baseUrl: cfg.baseUrl,
        version: cfg.version,
        timeoutMs: cfg.timeoutMs,
        fetch: fetchImpl,
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
