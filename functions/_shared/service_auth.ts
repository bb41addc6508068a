/**
 * Who may trigger server-side work: the project's service key, in either style,
 * or a verified `service_role` JWT. For functions deployed with
 * `verify_jwt = false` — the platform's check knows only legacy JWT keys
 * ("Edge Functions only support JWT verification via the anon and service_role
 * JWT-based API keys. You will need to use the --no-verify-jwt option when
 * using publishable and secret keys … Implement your own apikey-header
 * authorization logic inside the Edge Function code itself",
 * supabase.com/docs/guides/api/api-keys, "Known limitations").
 *
 * A caller is the service when the `apikey` header or the bearer token is:
 *
 * 1. one of the project's service keys from the function's environment, compared
 *    in constant time: `SUPABASE_SERVICE_ROLE_KEY` (legacy JWT key),
 *    `SUPABASE_SECRET_KEYS` (hosted: a JSON dictionary `{"default": "sb_secret_…"}`,
 *    supabase.com/docs/guides/functions/secrets) and `SUPABASE_SECRET_KEY` (the
 *    single-key fallback `@supabase/server` reads on self-hosted setups); or
 * 2. a JWT whose signature verifies against `SUPABASE_JWKS` (the project's
 *    public keys, "same value served at /auth/v1/jwks") with `role: service_role`.
 *
 * pg_cron's call (`app.invoke_dispatch`) sends the Vault key as `apikey`, and as
 * the bearer too when it is a legacy JWT, so either style matches rule 1.
 * Nothing here trusts a claim it has not verified.
 *
 * @example
 * const caller = await authoriseService(req, denoEnv);
 * if (!caller.ok) return Response.json({ error: "forbidden" }, { status: caller.status });
 *
 * @module
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { createLocalJWKSet, type JSONWebKeySet, jwtVerify } from "jose";
import type { EnvGetter } from "./waba_config.ts";

/** The outcome of {@link authoriseService}. */
export type ServiceAuth =
  | { ok: true; via: "service_key" | "jwt" }
  | {
    ok: false;
    /** 401: no usable credential; 403: a valid credential of another role; 500: nothing to check against. */
    status: 401 | 403 | 500;
    /** A sentence for the caller (never echoes the credential). */
    reason: string;
  };

/** Thrown when the function's environment holds a key setting it cannot read. */
export class ServiceAuthConfigError extends Error {
  override readonly name = "ServiceAuthConfigError";
}

function digest(value: string): Uint8Array {
  return createHash("sha256").update(value).digest();
}

/** Values of a hosted key dictionary (`{"default": "sb_…"}`), or [] when unset. */
export function keyDictionary(env: EnvGetter, name: string): string[] {
  const raw = env(name);
  if (raw === undefined || raw.trim() === "") return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new ServiceAuthConfigError(`${name} is not JSON; expected {"default":"sb_…"}`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new ServiceAuthConfigError(`${name} must be a JSON object of key names to keys`);
  }
  return Object.values(parsed).filter((v): v is string => typeof v === "string" && v !== "");
}

/** True when `presented` equals one of `keys`; every comparison runs, in constant time. */
function matchesAny(presented: string, keys: readonly Uint8Array[]): boolean {
  const d = digest(presented);
  let match = false;
  for (const k of keys) match = timingSafeEqual(d, k) || match;
  return match;
}

function bearer(req: Request): string | null {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.get("authorization") ?? "");
  return match ? match[1] : null;
}

const JWT_SHAPE = /^[\w-]+\.[\w-]+\.[\w-]*$/;

/**
 * Decides whether `req` comes from the project's service (see the module doc).
 *
 * @example
 * await authoriseService(new Request("http://x", { headers: { apikey: "sb_secret_…" } }), env);
 * // { ok: true, via: "service_key" } when env("SUPABASE_SECRET_KEYS") holds that key
 */
export async function authoriseService(req: Request, env: EnvGetter): Promise<ServiceAuth> {
  let serviceKeys: string[], otherKeys: string[];
  try {
    serviceKeys = [
      env("SUPABASE_SERVICE_ROLE_KEY"),
      ...keyDictionary(env, "SUPABASE_SECRET_KEYS"),
      env("SUPABASE_SECRET_KEY"),
    ].filter((k): k is string => !!k);
    otherKeys = [
      env("SUPABASE_ANON_KEY"),
      ...keyDictionary(env, "SUPABASE_PUBLISHABLE_KEYS"),
      env("SUPABASE_PUBLISHABLE_KEY"),
    ].filter((k): k is string => !!k);
  } catch (err) {
    if (err instanceof ServiceAuthConfigError) {
      return { ok: false, status: 500, reason: err.message };
    }
    throw err;
  }
  const jwksText = env("SUPABASE_JWKS");
  if (serviceKeys.length === 0 && !jwksText) {
    return {
      ok: false,
      status: 500,
      reason: "No service key is configured (SUPABASE_SECRET_KEYS, SUPABASE_SERVICE_ROLE_KEY)",
    };
  }

  const presented = [req.headers.get("apikey"), bearer(req)]
    .filter((v): v is string => v !== null && v !== "");
  if (presented.length === 0) {
    return { ok: false, status: 401, reason: "No apikey header or bearer token" };
  }
  const service = serviceKeys.map(digest);
  if (presented.some((p) => matchesAny(p, service))) return { ok: true, via: "service_key" };

  const token = bearer(req);
  let badToken = false;
  if (token !== null && JWT_SHAPE.test(token) && jwksText) {
    let role: unknown;
    try {
      const jwks = createLocalJWKSet(JSON.parse(jwksText) as JSONWebKeySet);
      ({ payload: { role } } = await jwtVerify(token, jwks, {
        algorithms: ["ES256", "RS256", "HS256"],
        clockTolerance: 30,
      }));
    } catch {
      badToken = true;
    }
    if (!badToken) {
      if (role === "service_role") return { ok: true, via: "jwt" };
      return {
        ok: false,
        status: 403,
        reason: `The caller's role is "${typeof role === "string" ? role : "none"}"`,
      };
    }
  }
  // The anon / publishable key (a legacy anon JWT cannot be verified without the
  // JWT secret, which hosted functions do not get: it is recognised as a key).
  const others = otherKeys.map(digest);
  if (presented.some((p) => matchesAny(p, others))) {
    return { ok: false, status: 403, reason: 'The caller\'s role is "anon"' };
  }
  if (badToken) {
    return { ok: false, status: 401, reason: "The bearer token is not a valid project JWT" };
  }
  return { ok: false, status: 401, reason: "The key is not one of the project's keys" };
}
