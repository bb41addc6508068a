/**
 * A minimal stand-in for Supabase Auth (GoTrue) under `/auth/v1`: just what
 * supabase-js's `auth.signInWithPassword`, session refresh, `auth.getUser` and
 * `auth.signOut` call, answering GoTrue's JSON shapes, so the station PWA signs
 * in locally with the same code it runs on hosted Supabase.
 *
 * - `POST /auth/v1/token?grant_type=password` `{email|phone, password}` →
 *   GoTrue's AccessTokenResponse `{access_token, token_type: "bearer",
 *   expires_in, expires_at, refresh_token, user}`; a wrong email or password is
 *   400 `invalid_credentials` ("Invalid login credentials").
 * - `POST /auth/v1/token?grant_type=refresh_token` `{refresh_token}` → a new session.
 * - `GET /auth/v1/user` (Bearer access token) → the user.
 * - `POST /auth/v1/logout` → 204.
 *
 * The access token is HS256 with the project's JWT secret and GoTrue's claims
 * (`aud`, `exp`, `iat`, `iss`, `sub`, `email`, `phone`, `app_metadata`,
 * `user_metadata`, `role`, `aal`, `amr`, `session_id`, `is_anonymous`), 1 h.
 * Passwords are checked against `auth.users.encrypted_password` (bcrypt via
 * pgcrypto's `crypt()`, as GoTrue stores them); locally `sql/demo_seed.sql`
 * adds that column and the demo users' passwords.
 *
 * Simplifications, all local-only: the refresh token is a signed token rather
 * than a row in `auth.refresh_tokens` (so it survives gateway restarts, and
 * logout revokes it only in this process's memory); no sign-up, OTP, MFA,
 * rate limits or email confirmation. Errors follow GoTrue's API version
 * 2024-01-01 body `{code, message}` (`X-Supabase-Api-Version` header), which
 * supabase-js requests.
 *
 * @module
 */
import { errors as joseErrors, jwtVerify, SignJWT } from "jose";
import type postgres from "postgres";

/** Lifetime of an access token, as GoTrue's default `jwt_exp`. */
export const ACCESS_TOKEN_SECONDS = 3600;
/** Lifetime of a local refresh token. */
const REFRESH_TOKEN_SECONDS = 30 * 24 * 3600;
const API_VERSION = "2024-01-01";

interface UserRow {
  id: string;
  email: string | null;
  phone: string | null;
  role: string | null;
  raw_app_meta_data: Record<string, unknown> | null;
  raw_user_meta_data: Record<string, unknown> | null;
  created_at: Date;
  updated_at: Date;
}

/** GoTrue's error answer. */
function authError(status: number, code: string, message: string): Response {
  return new Response(JSON.stringify({ code, message }), {
    status,
    headers: {
      "Content-Type": "application/json",
      "X-Supabase-Api-Version": API_VERSION,
    },
  });
}

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json", "X-Supabase-Api-Version": API_VERSION },
  });
}

/** The user object GoTrue returns. */
function userJson(u: UserRow, lastSignInAt: string | null) {
  const created = u.created_at.toISOString();
  return {
    id: u.id,
    aud: "authenticated",
    role: u.role ?? "authenticated",
    email: u.email ?? "",
    email_confirmed_at: created,
    phone: u.phone ?? "",
    confirmed_at: created,
    last_sign_in_at: lastSignInAt,
    app_metadata: { provider: "email", providers: ["email"], ...(u.raw_app_meta_data ?? {}) },
    user_metadata: u.raw_user_meta_data ?? {},
    identities: [],
    created_at: created,
    updated_at: u.updated_at.toISOString(),
    is_anonymous: false,
  };
}

/** Serves `/auth/v1/*`; `sql` must be able to read `auth.users` (GoTrue's role is privileged). */
export class AuthApi {
  readonly #key: Uint8Array;
  readonly #revokedSessions = new Set<string>();

  constructor(
    readonly sql: postgres.Sql,
    jwtSecret: string,
    readonly issuerBase: () => string,
  ) {
    this.#key = new TextEncoder().encode(jwtSecret);
  }

  async handle(req: Request, url: URL): Promise<Response> {
    const path = url.pathname.slice("/auth/v1".length);
    try {
      if (path === "/token" && req.method === "POST") {
        const grant = url.searchParams.get("grant_type");
        const body = await req.json().catch(() => null) as Record<string, unknown> | null;
        if (body === null || typeof body !== "object") {
          return authError(400, "bad_json", "Could not parse request body as JSON");
        }
        if (grant === "password") return await this.#password(body);
        if (grant === "refresh_token") return await this.#refresh(body);
        return authError(400, "validation_failed", `Unsupported grant_type "${grant}"`);
      }
      if (path === "/user" && req.method === "GET") return await this.#user(req);
      if (path === "/logout" && req.method === "POST") return await this.#logout(req);
      if (path === "/health" && req.method === "GET") {
        return json({ version: "local-stand-in", name: "GoTrue", description: "local stand-in" });
      }
      return authError(
        404,
        "not_found",
        `The local auth stand-in does not serve ${req.method} ${path}`,
      );
    } catch (err) {
      console.error("Auth stand-in error:", err);
      return authError(500, "unexpected_failure", "Unexpected failure, please check server logs");
    }
  }

  async #password(body: Record<string, unknown>): Promise<Response> {
    const { email, phone, password } = body;
    if (typeof password !== "string" || password === "") {
      return authError(400, "validation_failed", "Password is required");
    }
    if (typeof email !== "string" && typeof phone !== "string") {
      return authError(400, "validation_failed", "An email address or phone number is required");
    }
    const byEmail = typeof email === "string";
    const login = byEmail ? email.trim().toLowerCase() : String(phone);
    const rows = await this.sql<UserRow[]>`
      select id, email, phone, role, raw_app_meta_data, raw_user_meta_data, created_at, updated_at
      from auth.users
      where ${byEmail ? this.sql`lower(email) = ${login}` : this.sql`phone = ${login}`}
        and encrypted_password is not null
        and encrypted_password = extensions.crypt(${password}, encrypted_password)
      limit 1`;
    if (rows.length === 0) {
      return authError(400, "invalid_credentials", "Invalid login credentials");
    }
    return json(await this.#session(rows[0], crypto.randomUUID(), "password"));
  }

  async #refresh(body: Record<string, unknown>): Promise<Response> {
    const token = body.refresh_token;
    if (typeof token !== "string" || token === "") {
      return authError(400, "validation_failed", "refresh_token is required");
    }
    let sub: string, sessionId: string;
    try {
      const { payload } = await jwtVerify(token, this.#key, { algorithms: ["HS256"] });
      if (payload.typ !== "refresh" || typeof payload.sub !== "string") {
        throw new Error("not refresh");
      }
      sub = payload.sub;
      sessionId = String(payload.session_id);
    } catch {
      return authError(
        400,
        "refresh_token_not_found",
        "Invalid Refresh Token: Refresh Token Not Found",
      );
    }
    if (this.#revokedSessions.has(sessionId)) {
      return authError(
        400,
        "refresh_token_not_found",
        "Invalid Refresh Token: Refresh Token Not Found",
      );
    }
    const user = await this.#userById(sub);
    if (!user) return authError(404, "user_not_found", "User not found");
    return json(await this.#session(user, sessionId, "token_refresh"));
  }

  async #user(req: Request): Promise<Response> {
    const claims = await this.#accessClaims(req);
    if (claims instanceof Response) return claims;
    const user = await this.#userById(claims.sub);
    if (!user) return authError(404, "user_not_found", "User from sub claim in JWT does not exist");
    return json(userJson(user, null));
  }

  async #logout(req: Request): Promise<Response> {
    const claims = await this.#accessClaims(req);
    if (claims instanceof Response) return claims;
    if (claims.session_id) this.#revokedSessions.add(claims.session_id);
    return new Response(null, { status: 204 });
  }

  async #accessClaims(req: Request): Promise<{ sub: string; session_id?: string } | Response> {
    const match = /^bearer\s+(.+)$/i.exec(req.headers.get("authorization") ?? "");
    if (!match) {
      return authError(401, "no_authorization", "This endpoint requires a Bearer token");
    }
    try {
      const { payload } = await jwtVerify(match[1].trim(), this.#key, { algorithms: ["HS256"] });
      if (typeof payload.sub !== "string" || payload.typ === "refresh") throw new Error("no sub");
      const sessionId = typeof payload.session_id === "string" ? payload.session_id : undefined;
      if (sessionId && this.#revokedSessions.has(sessionId)) {
        return authError(
          403,
          "session_not_found",
          "Session from session_id claim in JWT does not exist",
        );
      }
      return { sub: payload.sub, session_id: sessionId };
    } catch (err) {
      const expired = err instanceof joseErrors.JWTExpired;
      return authError(
        403,
        "bad_jwt",
        expired ? "invalid JWT: token has invalid claims: token is expired" : "invalid JWT",
      );
    }
  }

  async #userById(id: string): Promise<UserRow | undefined> {
    if (!/^[0-9a-f-]{36}$/i.test(id)) return undefined;
    const [row] = await this.sql<UserRow[]>`
      select id, email, phone, role, raw_app_meta_data, raw_user_meta_data, created_at, updated_at
      from auth.users where id = ${id}`;
    return row;
  }

  async #session(user: UserRow, sessionId: string, method: string) {
    const now = Math.floor(Date.now() / 1000);
    const expiresAt = now + ACCESS_TOKEN_SECONDS;
    const u = userJson(user, new Date(now * 1000).toISOString());
    const accessToken = await new SignJWT({
      aud: "authenticated",
      email: u.email,
      phone: u.phone,
      app_metadata: u.app_metadata,
      user_metadata: u.user_metadata,
      role: u.role,
      aal: "aal1",
      amr: [{ method, timestamp: now }],
      session_id: sessionId,
      is_anonymous: false,
    })
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setIssuer(`${this.issuerBase()}/auth/v1`)
      .setSubject(user.id)
      .setIssuedAt(now)
      .setExpirationTime(expiresAt)
      .sign(this.#key);
    const refreshToken = await new SignJWT({ typ: "refresh", session_id: sessionId })
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setSubject(user.id)
      .setIssuedAt(now)
      .setJti(crypto.randomUUID())
      .setExpirationTime(now + REFRESH_TOKEN_SECONDS)
      .sign(this.#key);
    return {
      access_token: accessToken,
      token_type: "bearer",
      expires_in: ACCESS_TOKEN_SECONDS,
      expires_at: expiresAt,
      refresh_token: refreshToken,
      user: u,
    };
  }
}
