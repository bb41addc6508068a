/**
 * Addresses and keys of the local embedded stack, in one place.
 *
 * The JWT secret, the legacy anon / service_role keys and the
 * `sb_publishable_…` / `sb_secret_…` keys are Supabase's well-known
 * local-development values (the CLI's fixed defaults in
 * `apps/cli-go/pkg/config/apikeys.go` of github.com/supabase/cli), so tools and
 * snippets written for `supabase start` work unchanged. The ES256 signing key is
 * generated once per checkout under `.local/` (never committed) and published
 * as a JWKS at `/auth/v1/.well-known/jwks.json`, where hosted Supabase publishes
 * its asymmetric signing keys. Never use any of them anywhere but loopback.
 *
 * @module
 */
import { join } from "node:path";
import { exportJWK, generateKeyPair, importJWK, type JSONWebKeySet, type JWK, SignJWT } from "jose";
import { AUTHENTICATOR_URL, DB_URL, LOCAL_DIR, PG_PORT, SUPERUSER_URL } from "./cluster.ts";

export { AUTHENTICATOR_URL, DB_URL, PG_PORT, SUPERUSER_URL };

export const GATEWAY_PORT = Number(Deno.env.get("GATEWAY_PORT") ?? 54321);
export const FAKE_WABA_PORT = Number(Deno.env.get("FAKE_WABA_PORT") ?? 54330);
export const API_URL = `http://127.0.0.1:${GATEWAY_PORT}`;
export const FAKE_WABA_URL = `http://127.0.0.1:${FAKE_WABA_PORT}`;

export const JWT_SECRET = Deno.env.get("JWT_SECRET") ??
  "super-secret-jwt-token-with-at-least-32-characters-long";

/** Supabase local's anon key (role anon, expires 2032), signed with the default secret. */
export const ANON_KEY =
  "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6ImFub24iLCJleHAiOjE5ODM4MTI5OTZ9.CRXP1A7WOeoJeXxjNni43kdQwgnWNReilDMblYTn_I0";
/** Supabase local's service_role key (expires 2032), signed with the default secret. */
export const SERVICE_ROLE_KEY =
  "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6InNlcnZpY2Vfcm9sZSIsImV4cCI6MTk4MzgxMjk5Nn0.EGIM96RAZx35lJzdJsyH-qQwv8Hdp7fsn3W0YpN81IU";

/**
 * Supabase local's publishable key (the CLI's `defaultPublishableKey`): the
 * `anon` role, like {@link ANON_KEY}, but not a JWT.
 */
export const PUBLISHABLE_KEY = "sb_publishable_ACJWlzQHlZjBrEguHvfOxg_3BJgxAaH";
/**
 * Supabase local's secret key (the CLI's `defaultSecretKey`): the
 * `service_role` role, like {@link SERVICE_ROLE_KEY}, but not a JWT.
 */
export const SECRET_KEY = "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz";

/** Local fake WhatsApp credentials (the dispatch function reads them from env). */
export const WABA_ACCESS_TOKEN = Deno.env.get("WABA_ACCESS_TOKEN") ?? "local-waba-access-token";
export const WABA_APP_SECRET = Deno.env.get("WABA_APP_SECRET") ?? "local-waba-app-secret";
export const WABA_VERIFY_TOKEN = Deno.env.get("WABA_VERIFY_TOKEN") ?? "local-waba-verify-token";

/** Where the local ES256 signing key lives (a private JWK with `kid`, `alg`). */
export const SIGNING_KEY_FILE = join(LOCAL_DIR, "jwt_signing_key.json");

let signingKey: Promise<JWK> | undefined;

async function createSigningKey(): Promise<JWK> {
  const { privateKey } = await generateKeyPair("ES256", { extractable: true });
  const jwk = await exportJWK(privateKey);
  return { ...jwk, kid: crypto.randomUUID(), alg: "ES256", use: "sig" };
}

async function loadOrCreateSigningKey(): Promise<JWK> {
  try {
    return JSON.parse(await Deno.readTextFile(SIGNING_KEY_FILE)) as JWK;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  // Written to a temporary file, then linked into place: link() fails when the
  // file exists, so two processes starting at once agree on one complete key.
  await Deno.mkdir(LOCAL_DIR, { recursive: true });
  const tmp = `${SIGNING_KEY_FILE}.${crypto.randomUUID()}.tmp`;
  await Deno.writeTextFile(tmp, JSON.stringify(await createSigningKey(), null, 2), {
    mode: 0o600,
  });
  try {
    await Deno.link(tmp, SIGNING_KEY_FILE);
  } catch (err) {
    if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
  return JSON.parse(await Deno.readTextFile(SIGNING_KEY_FILE)) as JWK;
}

/**
 * The local asymmetric signing key (ES256, private JWK with `kid`), generated
 * under `.local/` on first use and reused afterwards.
 *
 * @example
 * const { kid } = await localSigningKey(); // "3a18cfe2-…"
 */
export function localSigningKey(): Promise<JWK> {
  signingKey ??= loadOrCreateSigningKey();
  return signingKey;
}

/**
 * The public half of {@link localSigningKey} as a JSON Web Key Set: what the
 * gateway serves at `/auth/v1/.well-known/jwks.json` and verifies ES256 tokens with.
 *
 * @example
 * const jwks = await localJwks(); // { keys: [{ kty: "EC", crv: "P-256", x, y, kid, alg: "ES256", use: "sig" }] }
 */
export async function localJwks(): Promise<JSONWebKeySet> {
  const { kty, crv, x, y, kid, alg } = await localSigningKey();
  return { keys: [{ kty, crv, x, y, kid, alg, use: "sig" }] };
}

/** Options of {@link mintJwt}. */
export interface MintOptions {
  /** `exp`: seconds since the epoch, or a jose time span such as `"1h"` (default). */
  expiresIn?: string | number;
  /** HS256 secret (default {@link JWT_SECRET}); ignored for ES256. */
  secret?: string;
  /**
   * `HS256` (the legacy JWT secret, default), `ES256` (the local signing key,
   * with its `kid`) or `RS256` (needs `privateJwk`).
   */
  alg?: "HS256" | "ES256" | "RS256";
  /** Asymmetric only: sign with this private JWK (and its `kid`) instead of the local signing key. */
  privateJwk?: JWK;
}

/**
 * Mints an access token like Supabase Auth's for `sub`: HS256 with the project
 * secret, or ES256 with the local signing key and its `kid` in the header (what
 * a project on asymmetric JWT signing keys issues).
 *
 * @example
 * const jwt = await mintJwt({ sub: userId }); // HS256, role "authenticated", 1 h
 * const es = await mintJwt({ sub: userId }, { alg: "ES256" }); // header {alg: "ES256", kid, typ: "JWT"}
 */
export async function mintJwt(
  claims: { sub?: string; role?: string; [claim: string]: unknown },
  opts: MintOptions = {},
): Promise<string> {
  const role = claims.role ?? "authenticated";
  const jwt = new SignJWT({ aud: "authenticated", ...claims, role })
    .setIssuedAt()
    .setExpirationTime(opts.expiresIn ?? "1h");
  if (opts.alg === "ES256" || opts.alg === "RS256") {
    const jwk = opts.privateJwk ?? (opts.alg === "ES256" ? await localSigningKey() : undefined);
    if (!jwk) throw new TypeError("mintJwt(): RS256 needs opts.privateJwk");
    return await jwt.setProtectedHeader({ alg: opts.alg, kid: jwk.kid, typ: "JWT" })
      .sign(await importJWK(jwk, opts.alg));
  }
  return await jwt.setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .sign(new TextEncoder().encode(opts.secret ?? JWT_SECRET));
}
