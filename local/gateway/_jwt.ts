/**
 * PostgREST's JWT authentication: HS256 signature check with `jose`, then the
 * claim checks PostgREST does itself (exp / nbf / iat with a 30 s skew, aud
 * shape), then the `role` claim (default: the anonymous role).
 *
 * Error codes and messages follow PostgREST v13+ (`src/PostgREST/Auth/Jwt.hs`):
 * PGRST301 for a token that cannot be decoded or verified, PGRST303 for bad claims.
 *
 * @module
 */
import { compactVerify, errors } from "jose";
import { jwtClaimsError, jwtDecodeError } from "./_errors.ts";

/** Who the request runs as. */
export interface AuthResult {
  /** Database role for `set local role`. */
  role: string;
  /** JSON text of the claims (with `role` inserted), for `request.jwt.claims`. */
  claimsJson: string;
  /** The claims themselves. */
  claims: Record<string, unknown>;
}

const ALLOWED_SKEW_SECONDS = 30;
const CACHE_LIMIT = 1000;

/**
 * Verifies bearer tokens for one secret. Verified claims are cached by token
 * (bounded), but the time-based claims are re-checked on every call.
 *
 * @example
 * const auth = new JwtVerifier(secret, "anon");
 * const { role, claimsJson } = await auth.authenticate(token); // throws ApiError
 */
export class JwtVerifier {
  readonly #key: Uint8Array;
  readonly #anonRole: string;
  readonly #cache = new Map<string, AuthResult>();
  readonly #anonymous: AuthResult;

  constructor(secret: string, anonRole: string) {
    this.#key = new TextEncoder().encode(secret);
    this.#anonRole = anonRole;
    this.#anonymous = this.#result({});
  }

  /** Authenticates `token` (null = no Authorization header: the anonymous role). */
  async authenticate(token: string | null, nowMs = Date.now()): Promise<AuthResult> {
    if (token === null) return this.#anonymous;
    let result = this.#cache.get(token);
    if (!result) {
      result = this.#result(await this.#decode(token));
      if (this.#cache.size >= CACHE_LIMIT) {
        this.#cache.delete(this.#cache.keys().next().value as string);
      }
      this.#cache.set(token, result);
    }
    checkClaims(result.claims, Math.floor(nowMs / 1000));
    return result;
  }

  #result(claims: Record<string, unknown>): AuthResult {
    const raw = claims.role;
    const role = raw === undefined || raw === null
      ? this.#anonRole
      : typeof raw === "string"
      ? raw
      : JSON.stringify(raw);
    const withRole = { ...claims, role };
    return { role, claims: withRole, claimsJson: JSON.stringify(withRole) };
  }

  async #decode(token: string): Promise<Record<string, unknown>> {
    if (token === "") throw jwtDecodeError("Empty JWT is sent in Authorization header");
    const parts = token.split(".").length;
    if (parts !== 3) throw jwtDecodeError(`Expected 3 parts in JWT; got ${parts}`);
    let payload: Uint8Array;
    try {
      ({ payload } = await compactVerify(token, this.#key, { algorithms: ["HS256"] }));
    } catch (err) {
      if (err instanceof errors.JOSEAlgNotAllowed) {
        throw jwtDecodeError("Wrong or unsupported encoding algorithm", err.message);
      }
      throw jwtDecodeError("JWT cryptographic operation failed");
    }
    let claims: unknown;
    try {
      claims = JSON.parse(new TextDecoder().decode(payload));
    } catch {
      throw jwtClaimsError("Parsing claims failed");
    }
    if (typeof claims !== "object" || claims === null || Array.isArray(claims)) {
      throw jwtClaimsError("Parsing claims failed");
    }
    return claims as Record<string, unknown>;
  }
}

/** PostgREST's claim checks, in its order: exp, nbf, iat, aud. */
function checkClaims(claims: Record<string, unknown>, now: number): void {
  const time = (key: "exp" | "nbf" | "iat", invalid: (t: number) => boolean, msg: string) => {
    const value = claims[key];
    if (value === undefined || value === null) return;
    if (typeof value !== "number") {
      throw jwtClaimsError(`The JWT '${key}' claim must be a number`);
    }
    if (invalid(Math.floor(value))) throw jwtClaimsError(msg);
  };
  time("exp", (t) => now - ALLOWED_SKEW_SECONDS > t, "JWT expired");
  time("nbf", (t) => now + ALLOWED_SKEW_SECONDS < t, "JWT not yet valid");
  time("iat", (t) => now + ALLOWED_SKEW_SECONDS < t, "JWT issued at future");
  const aud = claims.aud;
  if (
    aud !== undefined && aud !== null && typeof aud !== "string" &&
    !(Array.isArray(aud) && aud.every((a) => typeof a === "string"))
  ) {
    throw jwtClaimsError("The JWT 'aud' claim must be a string or an array of strings");
  }
}

/**
 * Extracts the bearer token from an Authorization header. Returns null when
 * there is no bearer credential (PostgREST then uses the anonymous role).
 */
export function bearerToken(authorization: string | null): string | null {
  if (authorization === null) return null;
  const match = /^bearer(?:\s+(.*))?$/i.exec(authorization.trim());
  if (!match) return null;
  return (match[1] ?? "").trim();
}
