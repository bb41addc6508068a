/**
 * Which system the harness talks to. Defaults are the local stack; the `PERF_*`
 * environment variables point it at a staging project instead:
 *
 * | variable | meaning | local default |
 * | --- | --- | --- |
 * | `PERF_ENV_NAME` | label in summaries and reports | `local` |
 * | `PERF_BASE_URL` | project URL (`https://<ref>.supabase.co`) | `http://127.0.0.1:54321` |
 * | `PERF_ANON_KEY` | the project's anon key (`apikey` header) | Supabase local's |
 * | `PERF_JWT_SECRET` | the project's JWT secret (the seed mints staff tokens with it) | Supabase local's |
 * | `PERF_DB_URL` | Postgres URL with rights on `app`/`auth` (seed, telemetry, EXPLAIN) | local `postgres` |
 * | `PERF_SUMMARY` | path of the seed summary | `perf/fixtures/generated/perf_seed_summary.json` |
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { ANON_KEY, API_URL, DB_URL, JWT_SECRET } from "../../local/env.ts";

/** The repository root. */
export const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url))
  .replace(/\/$/, "");

/** Default location of the seed summary. */
export const DEFAULT_SUMMARY_PATH = `${REPO_ROOT}/perf/fixtures/generated/perf_seed_summary.json`;

/** Resolved target environment. */
export interface TargetEnv {
  name: string;
  baseUrl: string;
  anonKey: string;
  jwtSecret: string;
  dbUrl: string;
  summaryPath: string;
  /** True when every value is the local stack's default. */
  isLocal: boolean;
}

/** Reads the `PERF_*` variables (falling back to the local stack). */
export function targetEnv(
  env: { get(name: string): string | undefined } = Deno.env,
): TargetEnv {
  const baseUrl = (env.get("PERF_BASE_URL") ?? API_URL).replace(/\/$/, "");
  const dbUrl = env.get("PERF_DB_URL") ?? DB_URL;
  const isLocal = baseUrl === API_URL && dbUrl === DB_URL;
  return {
    name: env.get("PERF_ENV_NAME") ?? (isLocal ? "local" : "staging"),
    baseUrl,
    anonKey: env.get("PERF_ANON_KEY") ?? ANON_KEY,
    jwtSecret: env.get("PERF_JWT_SECRET") ?? JWT_SECRET,
    dbUrl,
    summaryPath: env.get("PERF_SUMMARY") ?? DEFAULT_SUMMARY_PATH,
    isLocal,
  };
}

/** A Postgres URL with its password masked, for logs and reports. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "<unparseable url>";
  }
}
