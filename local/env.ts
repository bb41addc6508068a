/**
 * Addresses and keys of the local embedded stack, in one place.
 *
 * The JWT secret and the anon / service_role keys are Supabase's well-known
 * local-development values, so tools and snippets written for `supabase start`
 * work unchanged. Never use them anywhere but loopback.
 *
 * @module
 */
import { SignJWT } from "jose";
import { AUTHENTICATOR_URL, DB_URL, PG_PORT, SUPERUSER_URL } from "./cluster.ts";

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

/** Local fake WhatsApp credentials (the dispatch function reads them from env). */
export const WABA_ACCESS_TOKEN = Deno.env.get("WABA_ACCESS_TOKEN") ?? "local-waba-access-token";
export const WABA_APP_SECRET = Deno.env.get("WABA_APP_SECRET") ?? "local-waba-app-secret";
export const WABA_VERIFY_TOKEN = Deno.env.get("WABA_VERIFY_TOKEN") ?? "local-waba-verify-token";

/**
 * Mints an HS256 access token like Supabase Auth's for `sub`.
 *
 * @example
 * const jwt = await mintJwt({ sub: userId }); // role "authenticated", 1 h
 */
export async function mintJwt(
  claims: { sub?: string; role?: string; [claim: string]: unknown },
  opts: { expiresIn?: string | number; secret?: string } = {},
): Promise<string> {
  const role = claims.role ?? "authenticated";
  return await new SignJWT({ aud: "authenticated", ...claims, role })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setIssuedAt()
    .setExpirationTime(opts.expiresIn ?? "1h")
    .sign(new TextEncoder().encode(opts.secret ?? JWT_SECRET));
}
