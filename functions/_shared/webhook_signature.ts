/**
 * Meta webhook signatures: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>`.
 *
 * Verification must run on the raw request bytes (before any JSON parsing)
 * and uses `crypto.subtle.verify`, which compares MACs in constant time.
 *
 * @example
 * const raw = new Uint8Array(await req.arrayBuffer());
 * if (!await verifySignature(raw, req.headers.get("x-hub-signature-256"), appSecret)) {
 *   return new Response("invalid signature", { status: 401 });
 * }
 *
 * @module
 */

/** Name of the header Meta signs webhooks with. */
export const SIGNATURE_HEADER = "X-Hub-Signature-256";

/** Thrown when the app secret itself is unusable: a configuration error, not a bad request. */
export class WebhookSecretError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WebhookSecretError";
  }
}

const encoder = new TextEncoder();
const keyCache = new Map<string, Promise<CryptoKey>>();
const KEY_CACHE_LIMIT = 8;

function hmacKey(appSecret: string): Promise<CryptoKey> {
  if (appSecret.length === 0) {
    throw new WebhookSecretError("Cannot verify webhook signatures: the app secret is empty");
  }
  let key = keyCache.get(appSecret);
  if (!key) {
    if (keyCache.size >= KEY_CACHE_LIMIT) keyCache.clear();
    key = crypto.subtle.importKey(
      "raw",
      encoder.encode(appSecret),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign", "verify"],
    );
    keyCache.set(appSecret, key);
  }
  return key;
}

function bytes(rawBody: Uint8Array | string): Uint8Array<ArrayBuffer> {
  if (typeof rawBody === "string") return encoder.encode(rawBody);
  // Copy into a plain ArrayBuffer-backed view (WebCrypto rejects shared buffers).
  return new Uint8Array(rawBody);
}

function toHex(buf: ArrayBuffer): string {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
}

function fromHex(hex: string): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/**
 * Computes the header value Meta would send for `rawBody`.
 *
 * @example
 * await sign("test", "secret");
 * // "sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914"
 */
export async function sign(rawBody: Uint8Array | string, appSecret: string): Promise<string> {
  const mac = await crypto.subtle.sign("HMAC", await hmacKey(appSecret), bytes(rawBody));
  return `sha256=${toHex(mac)}`;
}

/**
 * True when `header` is a well-formed `sha256=<64 hex>` value whose MAC matches
 * `rawBody` under `appSecret`. Missing or malformed headers are `false`; an
 * empty secret throws {@link WebhookSecretError}.
 *
 * @example
 * await verifySignature(body, "sha256=" + "0".repeat(64), secret); // false
 */
export async function verifySignature(
  rawBody: Uint8Array | string,
  header: string | null,
  appSecret: string,
): Promise<boolean> {
  const key = await hmacKey(appSecret);
  if (header === null) return false;
  const match = /^sha256=([0-9a-fA-F]{64})$/.exec(header.trim());
  if (!match) return false;
  return await crypto.subtle.verify("HMAC", key, fromHex(match[1]), bytes(rawBody));
}
