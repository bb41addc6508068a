/**
 * Shared setup of the gateway tests: a throwaway set of `api.gw_test_*`
 * functions created as `postgres` (and dropped afterwards), a gateway
 * started on a spare port against the fixture config, and supabase-js clients.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { createClient } from "@supabase/supabase-js";
import { ANON_KEY, DB_URL } from "../../local/env.ts";
import { type Gateway, type GatewayOptions, serveGateway } from "../../local/gateway/mod.ts";

/** The fixture config.toml (exposes `api`, max_rows = 50, test functions). */
export const FIXTURE_CONFIG = fileURLToPath(
  new URL("./fixtures/supabase/config.toml", import.meta.url),
);

/** Opens a connection as `postgres` (the owner of app and api), runs `fn`, closes it. */
export async function withSuperuser<T>(fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(DB_URL, { max: 1, onnotice: () => {} });
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** Runs a SQL script (several statements) as `postgres`. */
export async function runSql(script: string): Promise<void> {
  await withSuperuser((sql) => sql.unsafe(script).then(() => undefined));
}

/**
 * Starts a gateway for the tests with the fixture config, on a free port (tests
 * read `gw.url`), so test runs in several checkouts never collide.
 */
export async function startGateway(options: GatewayOptions = {}): Promise<Gateway> {
  return await serveGateway({ port: 0, configPath: FIXTURE_CONFIG, log: false, ...options });
}

/**
 * A supabase-js client as an app would create it, pointed at the gateway, with
 * `key` as its API key (default the legacy anon key; `PUBLISHABLE_KEY` or
 * `SECRET_KEY` for today's keys). `accessToken` becomes `Authorization: Bearer …`
 * (a signed-in user); without it supabase-js sends the key as the bearer too,
 * as in a browser before sign-in.
 */
export function client(url: string, accessToken?: string, key: string = ANON_KEY) {
  return createClient(url, key, {
    db: { schema: "api" },
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    global: accessToken ? { headers: { Authorization: `Bearer ${accessToken}` } } : {},
  });
}

/** `fetch` that always consumes the body (Deno's test sanitizer requires it). */
export async function request(
  url: string,
  init: RequestInit = {},
): Promise<{ status: number; headers: Headers; text: string; json: unknown }> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  let json: unknown = undefined;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    // not JSON: callers assert on text
  }
  return { status: res.status, headers: res.headers, text, json };
}
