/**
 * How the fake signs its webhooks, as Meta documents it for every webhook
 * ("Validate payloads": the `X-Hub-Signature-256` header carries `sha256=`
 * followed by the hex SHA-256 HMAC of the raw payload, keyed with the app
 * secret;
 * https://developers.facebook.com/docs/graph-api/webhooks/getting-started#validate-payloads).
 *
 * Written here with WebCrypto rather than imported from
 * `functions/_shared/webhook_signature.ts`, so the webhook function's
 * verification is tested against an independent signer.
 *
 * @example
 * await hubSignature256("test", "secret");
 * // "sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914"
 *
 * @module
 */

/** The header Meta signs webhook deliveries with. */
export const HUB_SIGNATURE_HEADER = "x-hub-signature-256";

const encoder = new TextEncoder();
let cached: { secret: string; key: Promise<CryptoKey> } | undefined;

function hmacKey(appSecret: string): Promise<CryptoKey> {
  if (cached?.secret !== appSecret) {
    const key = crypto.subtle.importKey(
      "raw",
      encoder.encode(appSecret),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    );
    cached = { secret: appSecret, key };
  }
  return cached.key;
}

/**
 * The `X-Hub-Signature-256` value for `rawBody` (the exact bytes POSTed).
 *
 * @example
 * const body = JSON.stringify(payload);
 * await fetch(url, { method: "POST", body, headers: { [HUB_SIGNATURE_HEADER]: await hubSignature256(body, secret) } });
 */
export async function hubSignature256(rawBody: string, appSecret: string): Promise<string> {
  const mac = await crypto.subtle.sign("HMAC", await hmacKey(appSecret), encoder.encode(rawBody));
  const hex = Array.from(new Uint8Array(mac), (b) => b.toString(16).padStart(2, "0")).join("");
  return `sha256=${hex}`;
}
