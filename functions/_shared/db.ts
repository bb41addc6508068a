/**
 * The Edge Functions' database client: postgres.js on `SUPABASE_DB_URL`, and a
 * helper that runs RPCs as `service_role`, the way PostgREST would.
 *
 * Why direct SQL and not `POST /rest/v1/rpc/<fn>`: the dispatcher calls the
 * queue RPCs several times a second, so one hop fewer (function → pooler →
 * Postgres instead of function → API gateway → PostgREST → Postgres) matters,
 * and the RPCs authorise from `current_setting('role')` / `request.jwt.claims`,
 * which {@link asServiceRole} sets exactly as PostgREST does
 * (`set_config('role', 'service_role', true)` and the claims, transaction-local).
 * The grants the functions rely on are therefore the same as over HTTP: an RPC
 * not granted to `service_role` fails here too.
 *
 * On Supabase, `SUPABASE_DB_URL` goes through Supavisor in transaction mode:
 * a connection is only ours for one transaction, so prepared statements are off
 * (`prepare: false`) and every session setting is `set local` (third argument
 * `true` of `set_config`) inside the transaction that needs it.
 *
 * Two ways to run an RPC as `service_role`: {@link callAsServiceRole} sends the
 * settings and the call as one simple-protocol query (one round trip; what the
 * queue RPCs in `rpc.ts` use, several times a second), {@link asServiceRole}
 * opens a transaction for any number of statements (three round trips or more).
 *
 * @example
 * import { callAsServiceRole, getDb, sqlValue } from "./db.ts";
 * const [row] = await callAsServiceRole(
 *   getDb(),
 *   `select api.record_opt_out(msisdn => ${sqlValue("+254700000001")}, source => 'api') as r`,
 * );
 *
 * @module
 */
import postgres from "postgres";
import { quoteLiteral } from "./sql_literal.ts";

/** A postgres.js client (pool). */
export type Sql = postgres.Sql;
/** A postgres.js transaction handle, as given to {@link asServiceRole}'s callback. */
export type Tx = postgres.TransactionSql;

/** Thrown when no database URL is configured: a deployment problem, not a request problem. */
export class DbConfigError extends Error {
  override readonly name = "DbConfigError";
}

/**
 * A business error raised by an RPC through `app.raise_error` (PostgREST's
 * `raise sqlstate 'PGRST'` form), with its stable machine code and HTTP status.
 *
 * @example
 * try { await reportMessageResults(db, results, worker); }
 * catch (e) { if (e instanceof RpcError && e.code === "invalid_results") … }
 */
export class RpcError extends Error {
  override readonly name = "RpcError";

  constructor(
    /** The RPC's machine code, e.g. `invalid_claim`. */
    readonly code: string,
    message: string,
    /** The HTTP status PostgREST would answer with. */
    readonly status: number,
    /** `details` as the RPC raised it (parsed JSON when it is JSON). */
    readonly details: unknown = null,
  ) {
    super(message);
  }
}

/** Connection options; every field has an environment-based default. */
export interface DbOptions {
  /** Postgres URL; default `SUPABASE_DB_URL`. */
  url?: string;
  /** Pool size per isolate; default `DB_POOL_MAX` or 4. Transaction-mode pooling makes small pools cheap. */
  max?: number;
  /** `application_name`, visible in `pg_stat_activity`. */
  applicationName?: string;
}

let shared: Sql | undefined;

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/**
 * Creates a postgres.js pool suited to Supavisor's transaction mode.
 *
 * @throws {DbConfigError} when no URL is given and `SUPABASE_DB_URL` is unset.
 *
 * @example
 * const db = createDb({ url: "postgresql://postgres:postgres@127.0.0.1:54322/postgres", max: 2 });
 * await db.end();
 */
export function createDb(options: DbOptions = {}): Sql {
  const url = options.url ?? env("SUPABASE_DB_URL");
  if (!url) {
    throw new DbConfigError(
      "Cannot connect to the database: SUPABASE_DB_URL is not set (Supabase sets it for Edge Functions; " +
        "the local gateway sets it for the functions it hosts)",
    );
  }
  const max = options.max ?? (Number(env("DB_POOL_MAX")) || 4);
  installSocketRaceGuard();
  return postgres(url, {
    max,
    // Supavisor transaction mode: no named prepared statements across transactions.
    prepare: false,
    // We only exchange text and jsonb: skip the pg_type round trip on connect.
    fetch_types: false,
    idle_timeout: 20,
    connect_timeout: 10,
    max_lifetime: 60 * 30,
    onnotice: () => {},
    connection: { application_name: options.applicationName ?? "edge-function" },
  });
}

let guardInstalled = false;

/**
 * postgres.js 3.4.x can throw from a timer when the server drops a connection
 * that still has bytes queued to write (`nextWrite` runs after `closed()` set
 * the socket to null: "Cannot read properties of null (reading 'write')").
 * The queries on that connection have already failed with CONNECTION_CLOSED
 * and are retried by their callers, so this uncaught TypeError carries no
 * information — but uncaught, it would kill the isolate (and every run and
 * webhook in it) on a database restart or failover. Only that exact error,
 * raised from postgres.js's connection module, is swallowed and logged.
 */
function installSocketRaceGuard(): void {
  if (guardInstalled || typeof globalThis.addEventListener !== "function") return;
  guardInstalled = true;
  globalThis.addEventListener("error", (event) => {
    const err = (event as ErrorEvent).error as Error | undefined;
    if (
      err instanceof TypeError && /reading 'write'/.test(err.message) &&
      /postgres[\\/]src[\\/]connection\.js/.test(err.stack ?? "")
    ) {
      event.preventDefault();
      console.error(JSON.stringify({
        ts: new Date().toISOString(),
        level: "warn",
        event: "db.socket_closed_race",
        message: err.message,
      }));
    }
  });
}

/**
 * The isolate's shared pool, created on first use from `SUPABASE_DB_URL`.
 *
 * @example
 * const db = getDb();
 */
export function getDb(): Sql {
  shared ??= createDb();
  return shared;
}

/** Closes the shared pool (tests, graceful shutdown). A later {@link getDb} opens a new one. */
export async function closeDb(): Promise<void> {
  const db = shared;
  shared = undefined;
  await db?.end({ timeout: 5 });
}

/**
 * Runs `fn` in one transaction as `service_role` with service claims, like a
 * PostgREST request carrying the service_role key. Business errors raised by
 * the RPC come out as {@link RpcError}; anything else (connection loss, …) is
 * rethrown unchanged (see {@link isTransientDbError}).
 *
 * @example
 * const [row] = await asServiceRole(db, (tx) => tx.unsafe("select api.queue_health() as r"));
 */
export async function asServiceRole<T>(db: Sql, fn: (tx: Tx) => Promise<T>): Promise<T> {
  try {
    return await db.begin(async (tx) => {
      await tx.unsafe(
        "select set_config('role', 'service_role', true), set_config('request.jwt.claims', $1, true)",
        [SERVICE_CLAIMS],
      );
      return await fn(tx);
    }) as T;
  } catch (err) {
    throw toRpcError(err);
  }
}

const SERVICE_CLAIMS = JSON.stringify({ role: "service_role", iss: "supabase" });

/**
 * An argument rendered for {@link callAsServiceRole}'s statement: `null`, a finite
 * number as digits, a boolean, or a string as {@link quoteLiteral}. Cast it in the
 * SQL (`${sqlValue(id)}::uuid`) exactly as a bind parameter would be typed.
 *
 * @throws {TypeError} for a non-finite number.
 *
 * @example
 * sqlValue(null); // "null"
 * sqlValue(100); // "100"
 */
export function sqlValue(value: string | number | boolean | null): string {
  if (value === null) return "null";
  if (typeof value === "boolean") return value ? "true" : "false";
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new TypeError(`Not a finite number: ${value}`);
    return String(value);
  }
  return quoteLiteral(value);
}

const SET_SERVICE_ROLE = "select set_config('role', 'service_role', true), " +
  `set_config('request.jwt.claims', ${quoteLiteral(SERVICE_CLAIMS)}, true)`;

/**
 * Runs one statement as `service_role` with service claims in ONE round trip:
 * the settings and `statement` go as a single simple-protocol query, which
 * Postgres runs as one implicit transaction — committed when the statement
 * succeeds, rolled back when it fails — with the role already set when
 * `statement` is parsed, so its privileges are checked as `service_role`, exactly
 * as with {@link asServiceRole} (which costs BEGIN, the statements and COMMIT:
 * three round trips, and holds any locks the call takes until the client's
 * COMMIT arrives). The simple protocol has no bind parameters: build `statement`
 * with {@link sqlValue} only. Business errors come out as
 * {@link RpcError}; anything else is rethrown unchanged.
 *
 * @example
 * const [row] = await callAsServiceRole(db, `select api.queue_health() as r`);
 */
export async function callAsServiceRole(db: Sql, statement: string): Promise<postgres.Row[]> {
  try {
    const results = await db.unsafe(
      `${SET_SERVICE_ROLE};\n${statement}`,
    ) as unknown as postgres.Row[][];
    return results[results.length - 1];
  } catch (err) {
    throw toRpcError(err);
  }
}

/**
 * Converts a PostgREST-style custom error (`sqlstate 'PGRST'`, message = JSON
 * `{code, message, details, hint}`, detail = JSON `{status}`) into an
 * {@link RpcError}; returns any other error unchanged.
 *
 * @example
 * toRpcError(err) instanceof RpcError; // true for app.raise_error(...)
 */
export function toRpcError(err: unknown): unknown {
  const e = err as { code?: unknown; message?: unknown; detail?: unknown };
  if (e?.code !== "PGRST" || typeof e.message !== "string") return err;
  try {
    const body = JSON.parse(e.message) as { code?: string; message?: string; details?: unknown };
    const detail = typeof e.detail === "string" ? JSON.parse(e.detail) as { status?: number } : {};
    let details = body.details ?? null;
    if (typeof details === "string") {
      try {
        details = JSON.parse(details);
      } catch { /* keep the text */ }
    }
    return new RpcError(
      body.code ?? "rpc_error",
      body.message ?? e.message,
      Number(detail.status) || 400,
      details,
    );
  } catch {
    return err;
  }
}

/** SQLSTATE classes/codes after which the same call can succeed on a fresh try. */
const TRANSIENT_SQLSTATE = /^(08...|57P0[1-3]|53300|40001|40P01|55P03|25006)$/;
/** postgres.js / socket error codes for a lost or refused connection. */
const TRANSIENT_CLIENT = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

/**
 * True when retrying the database call later can help: the connection was
 * refused, lost or timed out, the server is shutting down or starting up,
 * too many connections, or a serialization failure / deadlock. Business errors
 * ({@link RpcError}) and programming errors are not transient.
 *
 * @example
 * isTransientDbError(Object.assign(new Error("x"), { code: "57P01" })); // true (admin shutdown)
 */
export function isTransientDbError(err: unknown): boolean {
  if (err instanceof RpcError) return false;
  const code = (err as { code?: unknown })?.code;
  if (typeof code === "string") {
    if (TRANSIENT_CLIENT.has(code) || TRANSIENT_SQLSTATE.test(code)) return true;
  }
  const message = String((err as { message?: unknown })?.message ?? "");
  return /connection (refused|reset|closed|terminated)|terminating connection|the database system is (starting up|shutting down)|write CONNECTION_CLOSED|broken pipe/i
    .test(message);
}
