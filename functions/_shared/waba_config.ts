/**
 * WhatsApp settings of the Edge Functions, from their environment (Supabase:
 * `supabase secrets set …`). Credentials never live in the database.
 *
 * | variable                        | used by        | meaning                                               |
 * |---------------------------------|----------------|-------------------------------------------------------|
 * | `WABA_ACCESS_TOKEN`             | dispatch       | system-user / BSP token for every channel             |
 * | `WABA_ACCESS_TOKEN_<PNID>`      | dispatch       | token for one phone number id (overrides the above)   |
 * | `WABA_BASE_URL`                 | dispatch       | Graph-compatible API (default graph.facebook.com)     |
 * | `WABA_API_VERSION`              | dispatch       | e.g. `v21.0`                                          |
 * | `WABA_TIMEOUT_MS`               | dispatch       | per-send timeout (default 10 000)                     |
 * | `WABA_APP_SECRET`               | waba-webhook   | signs `X-Hub-Signature-256`                           |
 * | `WABA_VERIFY_TOKEN`             | waba-webhook   | the subscription handshake token                      |
 * | `LOCAL_STACK=1`                 | both           | fill unset values with the local stack's defaults     |
 *
 * The local defaults (fake WhatsApp API on 127.0.0.1:54330 and its well-known
 * test credentials, the same values as `local/env.ts`) apply only when
 * `LOCAL_STACK=1` is set explicitly, so a deployment with a missing secret fails
 * loudly instead of talking to a loopback fake.
 *
 * @example
 * const cfg = wabaConfigFromEnv();
 * const token = cfg.accessTokenFor("106540352242922"); // undefined when not configured
 *
 * @module
 */
import { DEFAULT_GRAPH_BASE_URL, DEFAULT_GRAPH_VERSION, DEFAULT_TIMEOUT_MS } from "./whatsapp.ts";

/** The local stack's values (keep in step with `local/env.ts`; a test checks it). */
export const LOCAL_STACK_DEFAULTS = Object.freeze({
  accessToken: "local-waba-access-token",
  appSecret: "local-waba-app-secret",
  verifyToken: "local-waba-verify-token",
  baseUrl: "http://127.0.0.1:54330",
});

/** WhatsApp settings resolved from the environment. */
export interface WabaConfig {
  /** True when `LOCAL_STACK=1` filled unset values with local defaults. */
  local: boolean;
  baseUrl: string;
  version: string;
  timeoutMs: number;
  /** App secret for webhook signatures; undefined when unset. */
  appSecret?: string;
  /** Subscription verify token; undefined when unset. */
  verifyToken?: string;
  /** The access token for a phone number id (per-number override, then the global one). */
  accessTokenFor(phoneNumberId: string): string | undefined;
  /** True when a global or at least one per-number access token is configured. */
  hasAccessToken: boolean;
}

/** Reads one environment variable; `undefined` for unset, empty or unreadable. */
export type EnvGetter = (name: string) => string | undefined;

/** `Deno.env.get`, tolerant of a missing `--allow-env`. */
export const denoEnv: EnvGetter = (name) => {
  try {
    const value = Deno.env.get(name);
    return value === undefined || value === "" ? undefined : value;
  } catch {
    return undefined;
  }
};

/**
 * Resolves the WhatsApp settings.
 *
 * @example
 * wabaConfigFromEnv((n) => ({ LOCAL_STACK: "1" } as Record<string, string>)[n]).baseUrl;
 * // "http://127.0.0.1:54330"
 */
export function wabaConfigFromEnv(get: EnvGetter = denoEnv): WabaConfig {
  const perNumber = (get === denoEnv ? envNames() : []).some((name) =>
    name.startsWith("WABA_ACCESS_TOKEN_") && denoEnv(name) !== undefined
  );
  const local = get("LOCAL_STACK") === "1";
  const fallback = <T>(value: T | undefined, localValue: T): T | undefined =>
    value ?? (local ? localValue : undefined);
  const globalToken = fallback(get("WABA_ACCESS_TOKEN"), LOCAL_STACK_DEFAULTS.accessToken);
  const timeout = Number(get("WABA_TIMEOUT_MS"));
  return {
    local,
    baseUrl: fallback(get("WABA_BASE_URL"), LOCAL_STACK_DEFAULTS.baseUrl) ?? DEFAULT_GRAPH_BASE_URL,
    version: get("WABA_API_VERSION") ?? DEFAULT_GRAPH_VERSION,
    timeoutMs: timeout > 0 ? timeout : DEFAULT_TIMEOUT_MS,
    appSecret: fallback(get("WABA_APP_SECRET"), LOCAL_STACK_DEFAULTS.appSecret),
    verifyToken: fallback(get("WABA_VERIFY_TOKEN"), LOCAL_STACK_DEFAULTS.verifyToken),
    hasAccessToken: globalToken !== undefined || perNumber,
    accessTokenFor: (phoneNumberId) =>
      get(`WABA_ACCESS_TOKEN_${phoneNumberId.replace(/[^A-Za-z0-9_]/g, "_")}`) ?? globalToken,
  };
}

function envNames(): string[] {
  try {
    return Object.keys(Deno.env.toObject());
  } catch {
    return [];
  }
}
