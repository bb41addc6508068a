/**
 * Fixtures for Deno tests that run against the local stack (`deno task start`):
 * staff accounts with their JWTs and a campaign, created directly in SQL. The
 * connections (a ownerDb, supabase-js clients pointed at the gateway) come
 * from `local/harness.ts`, shared with the benchmarks.
 *
 * @module
 */
import type postgres from "postgres";
import { ANON_KEY, API_URL, DB_URL, mintJwt, SERVICE_ROLE_KEY } from "../local/env.ts";
import { type ApiClient, apiClient, loadErrorRules, ownerDb } from "../local/harness.ts";
import type { WabaErrorRules } from "../functions/_shared/waba_errors.ts";

export { ANON_KEY, API_URL, DB_URL, ownerDb, SERVICE_ROLE_KEY };

let rules: Promise<WabaErrorRules> | undefined;

/**
 * The WhatsApp error rules of the running database (`app.waba_error_rules`), loaded
 * once per test process: the classifier's tests use the real table, not a copy.
 */
export function errorRules(): Promise<WabaErrorRules> {
  rules ??= (async () => {
    const sql = ownerDb(1);
    try {
      return await loadErrorRules(sql);
    } finally {
      await sql.end();
    }
  })();
  return rules;
}

/** A supabase-js client that sends `jwt` (or only the anon key) to the local gateway. */
export const client: (jwt?: string) => ApiClient = apiClient;

/** A unique suffix so tests never collide with each other or with demo data. */
export function unique(prefix: string): string {
  return `${prefix}-${crypto.randomUUID().slice(0, 8)}`.toUpperCase();
}

export interface World {
  sql: postgres.Sql;
  stationId: string;
  otherStationId: string;
  admin: { id: string; jwt: string };
  operator: { id: string; jwt: string };
  otherOperator: { id: string; jwt: string };
  campaignId: string;
}

/**
 * Two stations, an admin, an operator at each station and an open campaign,
 * all with fresh ids. Everything is created directly in SQL (fast, and the RPCs
 * under test are not used to build their own fixtures).
 */
export async function createWorld(sql: postgres.Sql): Promise<World> {
  const tag = unique("T");
  const [s1] = await sql`insert into app.stations (code, name) values (${
    tag + "-A"
  }, 'Test A') returning id`;
  const [s2] = await sql`insert into app.stations (code, name) values (${
    tag + "-B"
  }, 'Test B') returning id`;
  const staff = async (role: string, stationId: string | null) => {
    const [u] =
      await sql`insert into auth.users (email) values (${`${role}-${crypto.randomUUID()}@test`}) returning id`;
    await sql`insert into app.staff (user_id, role, station_id) values (${u.id}, ${role}, ${stationId})`;
    return { id: u.id as string, jwt: await mintJwt({ sub: u.id }) };
  };
  const [c] = await sql`
    insert into app.campaigns (name, amount_minor, currency, starts_at, expires_at)
    values (${
    "Campaign " + tag
  }, 1500, 'KES', now() - interval '1 hour', now() + interval '30 days')
    returning id`;
  return {
    sql,
    stationId: s1.id,
    otherStationId: s2.id,
    admin: await staff("admin", null),
    operator: await staff("station_operator", s1.id),
    otherOperator: await staff("station_operator", s2.id),
    campaignId: c.id,
  };
}

/** Issues `n` vouchers for the world's campaign and returns their display codes. */
export async function issueCodes(world: World, n: number): Promise<string[]> {
  const [{ batch }] = await world.sql`
    select (app.issue_batch(${world.campaignId}, ${n}) ->> 'batch_id')::uuid as batch`;
  const rows = await world.sql`
    select app.format_code(code) as code from app.vouchers where batch_id = ${batch} order by id`;
  return rows.map((r) => r.code as string);
}

/**
 * Every business error code the database can raise: the literal first argument
 * of each `app.raise_error(…)` / `app.error_result(…)` call in the functions of
 * schemas `app` and `api`, read from the live catalog (so it is the code that
 * runs, whichever migration defined it). Tests keep the docs and the client's
 * error-code union in step with this set.
 *
 * @example
 * const codes = await sqlErrorCodes(sql); // Set { "voucher_expired", … }
 */
export async function sqlErrorCodes(sql: postgres.Sql): Promise<Set<string>> {
  const rows = await sql`
    select distinct m[1] as code
    from pg_proc p
    join pg_namespace n on n.oid = p.pronamespace and n.nspname in ('app', 'api')
    cross join lateral regexp_matches(p.prosrc, '(?:raise_error|error_result)\\(\\s*''([a-z_]+)''', 'g') m
    order by 1`;
  return new Set(rows.map((r) => r.code as string));
}
