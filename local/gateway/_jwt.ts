/**
 * PostgREST's JWT authentication: the signature checked with `jose`, then the
 * claim checks PostgREST does itself (exp / nbf / iat with a 30 s skew, aud
 * shape), then the `role` claim (default: the anonymous role).
 *
 * Keys, as on a hosted project (supabase.com/docs/guides/auth/signing-keys):
 * HS256 tokens are checked against the project's JWT secret (legacy keys and
 * HS256-signed user tokens); ES256 / RS256 tokens against a JSON Web Key Set,
 * the key chosen by the token's `kid` (`createLocalJWKSet` for a JWKS the
 * gateway holds, `createRemoteJWKSet` for one it fetches, e.g. hosted's
 * `/auth/v1/.well-known/jwks.json`). Hosted PostgREST is configured the same way:
 * its `jwt-secret` is a JWKS holding the legacy secret and the public keys.
 *
 * Error codes and messages follow PostgREST (`src/PostgREST/Auth/Jwt.hs`,
 * `src/PostgREST/Error.hs`): PGRST301 for a token that cannot be decoded or
 * verified ("No suitable key or wrong key type" when no key matches its
 * `kid` / `alg`), PGRST303 for bad claims.
 *
 * @module
 */
import {
  compactVerify,
  createLocalJWKSet,
  createRemoteJWKSet,
  errors,
  type FlattenedJWSInput,
  type JSONWebKeySet,
  type JWSHeaderParameters,
} from "jose";
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

/** Algorithms the verifier accepts: the legacy secret's, and hosted's asymmetric ones. */
export const JWT_ALGORITHMS = ["HS256", "ES256", "RS256"] as const;

type KeyResolver = (
  header: JWSHeaderParameters,
  token: FlattenedJWSInput,
) => Promise<CryptoKey> | CryptoKey;

/** Where the verifier finds the public keys of asymmetric tokens. */
export type JwksSource = JSONWebKeySet | URL;

/**
 * Verifies bearer tokens: HS256 with the project secret, ES256 / RS256 with the
 * key of the token's `kid` in the JWKS. Verified claims are cached by token
 * (bounded), but the time-based claims are re-checked on every call.
 *
 * @example
 * const auth = new JwtVerifier(secret, "anon", await localJwks());
 * const { role, claimsJson } = await auth.authenticate(token); // throws ApiError
 */
export class JwtVerifier {
  readonly #secret: Uint8Array;
  readonly #jwks: KeyResolver | null;
  readonly #anonRole: string;
  readonly #cache = new Map<string, AuthResult>();
  readonly #anonymous: AuthResult;

  constructor(secret: string, anonRole: string, jwks?: JwksSource) {
    this.#secret = new TextEncoder().encode(secret);
    this.#jwks = jwks === undefined
      ? null
      : jwks instanceof URL
      ? createRemoteJWKSet(jwks)
      : createLocalJWKSet(jwks);
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

  /** The key for a token: the secret for HS256, else the JWKS entry of its `kid`. */
  #key = (header: JWSHeaderParameters, token: FlattenedJWSInput) => {
    if (header.alg === "HS256") return this.#secret;
    if (this.#jwks === null) throw new errors.JWKSNoMatchingKey();
    return this.#jwks(header, token);
  };

  async #decode(token: string): Promise<Record<string, unknown>> {
    if (token === "") throw jwtDecodeError("Empty JWT is sent in Authorization header");
    const parts = token.split(".").length;
    if (parts !== 3) throw jwtDecodeError(`Expected 3 parts in JWT; got ${parts}`);
    let payload: Uint8Array;
    try {
      ({ payload } = await compactVerify(token, this.#key, { algorithms: [...JWT_ALGORITHMS] }));
    } catch (err) {
      if (err instanceof errors.JOSEAlgNotAllowed) {
        throw jwtDecodeError("Wrong or unsupported encoding algorithm", err.message);
      }
      if (
        err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys
      ) {
        throw jwtDecodeError("No suitable key or wrong key type", err.message);
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
