/**
 * The local API gateway: what Supabase's API proxy (Kong), PostgREST and the
 * Edge Runtime do for this project, in one Deno process on 127.0.0.1.
 *
 * - `/rest/v1/*`: CORS (preflight answered before auth, `Access-Control-Allow-Origin: *`
 *   on every answer), Kong's API-key check (`_keys.ts`: an `apikey` header or
 *   query parameter is required, and must be one of the project's publishable,
 *   secret or legacy keys), PostgREST JWT auth (`_jwt.ts`: HS256 or JWKS), then RPC.
 * - `/functions/v1/<name>`: the function's handler (see `_functions_host.ts`).
 * - `/auth/v1/*`: a minimal Supabase Auth stand-in (password sign-in, refresh,
 *   user, logout; see `_auth.ts`), checked for an API key as Kong does, except
 *   `/auth/v1/.well-known/jwks.json`, the public signing keys (public on hosted too).
 * - `/health`: 200 once the schema cache is loaded.
 *
 * @module
 */
import postgres from "postgres";
import { type GatewayConfig, type GatewayOptions, resolveConfig } from "./_config.ts";
import {
  ApiError,
  errorResponse,
  invalidResourcePath,
  notImplemented,
  tableNotFound,
  unacceptableSchema,
} from "./_errors.ts";
import { AuthApi } from "./_auth.ts";
import { FunctionsHost } from "./_functions_host.ts";
import { bearerToken, JwtVerifier } from "./_jwt.ts";
import { type ApiKey, ApiKeys } from "./_keys.ts";
import { Admission, RequestPool } from "./_pool.ts";
import { handleRpc, type RpcContext } from "./_rpc.ts";
import { SchemaCache } from "./_schema_cache.ts";
import { SqlLiteralError } from "./_sql.ts";
import { DB_URL } from "../env.ts";

export type { GatewayOptions };

/** A running gateway. */
export interface Gateway {
  /** Base URL, e.g. `http://127.0.0.1:54321`. */
  url: string;
  port: number;
  /** Stops accepting requests, awaits in-flight ones and `waitUntil` work, closes the pools. */
  shutdown(): Promise<void>;
}

/** Kong's CORS plugin, as configured by Supabase (any origin). */
const CORS_ALLOW_HEADERS =
  "authorization, x-client-info, apikey, content-type, content-profile, accept-profile, prefer, x-idempotency-key, range, x-upsert";
const CORS_METHODS = "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS";
const EXPOSE_HEADERS =
  "Content-Encoding, Content-Location, Content-Range, Content-Type, Date, Location, Server, Transfer-Encoding, Range-Unit";

function withCors(res: Response): Response {
  res.headers.set("Access-Control-Allow-Origin", "*");
  res.headers.set("Access-Control-Expose-Headers", EXPOSE_HEADERS);
  return res;
}

function preflight(req: Request): Response {
  return new Response(null, {
    status: 200,
    headers: {
      "Access-Control-Allow-Origin": "*",
      "Access-Control-Allow-Methods": CORS_METHODS,
      "Access-Control-Allow-Headers": req.headers.get("access-control-request-headers") ??
        CORS_ALLOW_HEADERS,
      "Access-Control-Max-Age": "3600",
    },
  });
}

function kongError(status: number, message: string, hint?: string): Response {
  return new Response(JSON.stringify(hint ? { message, hint } : { message }), {
    status,
    headers: { "Content-Type": "application/json; charset=utf-8" },
  });
}

/** Kong's key-auth answers (401) for a missing or unknown `apikey`. */
const NO_API_KEY = () =>
  kongError(
    401,
    "No API key found in request",
    "No `apikey` request header or url param was found.",
  );
const INVALID_API_KEY = () =>
  kongError(
    401,
    "Invalid API key",
    "Double check your Supabase `anon` or `service_role` API key.",
  );

function safeDecode(segment: string): string | null {
  try {
    return decodeURIComponent(segment);
  } catch {
    return null; // malformed %-escape
  }
}

class RestApi {
  readonly #jwt: JwtVerifier;
  readonly #keys: ApiKeys;

  constructor(readonly config: GatewayConfig, readonly rpc: RpcContext, keys: ApiKeys) {
    this.#jwt = new JwtVerifier(config.jwtSecret, config.anonRole, config.jwks);
    this.#keys = keys;
  }

  async handle(req: Request, url: URL, log: RequestLog): Promise<Response> {
    if (req.method === "OPTIONS") return preflight(req);
    // Kong's key-auth runs first and needs the apikey whatever else the request
    // carries (a user JWT is not an API key).
    const apikey = req.headers.get("apikey") ?? url.searchParams.get("apikey");
    if (apikey === null) return NO_API_KEY();
    const key: ApiKey | null = this.#keys.resolve(apikey);
    if (key === null) return INVALID_API_KEY();
    const authorization = req.headers.get("authorization");
    try {
      // What Kong forwards: the key's JWT when there is no user token, else the user's.
      const bearer = authorization === null ? undefined : bearerToken(authorization);
      const forwarded = ApiKeys.forwardedBearer(key, apikey, bearer);
      const auth = await this.#jwt.authenticate(forwarded);
      log.role = auth.role;
      const path = url.pathname.slice("/rest/v1".length);
      const rpc = /^\/rpc\/([^/]+)$/.exec(path);
      const fnName = rpc ? safeDecode(rpc[1]) : null;
      if (fnName !== null) {
        log.fn = fnName;
        return await handleRpc(
          req,
          url,
          fnName,
          auth,
          this.rpc,
          forwarded !== bearer && forwarded !== null ? `Bearer ${forwarded}` : null,
        );
      }
      if (path === "" || path === "/") {
        throw notImplemented("The local gateway serves no OpenAPI document");
      }
      const table = /^\/([^/]+)$/.exec(path);
      if (table) {
        const isRead = req.method === "GET" || req.method === "HEAD";
        const schema = req.headers.get(isRead ? "accept-profile" : "content-profile") ??
          this.config.schemas[0];
        if (!this.config.schemas.includes(schema)) {
          throw unacceptableSchema(schema, this.config.schemas);
        }
        throw tableNotFound(schema, safeDecode(table[1]) ?? table[1]);
      }
      throw invalidResourcePath();
    } catch (err) {
      if (err instanceof ApiError) return errorResponse(err);
      if (err instanceof SqlLiteralError) {
        return errorResponse(
          new ApiError(400, {
            code: "PGRST102",
            message: err.message,
            details: null,
            hint: null,
          }),
        );
      }
      throw err;
    }
  }
}

interface RequestLog {
  role?: string;
  fn?: string;
}

/**
 * Starts a gateway. Resolves once the schema cache is loaded and the server
 * listens; rejects (after closing the pools) when the database is unreachable.
 *
 * @example
 * const gw = await serveGateway({ port: 54399, poolSize: 4 });
 * // … fetch(`${gw.url}/rest/v1/rpc/fn`, …)
 * await gw.shutdown();
 */
export async function serveGateway(options: GatewayOptions = {}): Promise<Gateway> {
  const config = await resolveConfig(options);
  const pool = new RequestPool(() =>
    postgres(config.dbUrl, {
      max: config.poolSize,
      fetch_types: false, // results are text/int only; skips a catalog query per connection
      onnotice: () => {},
      connection: { application_name: "local-gateway" },
    })
  );
  const meta = postgres(config.dbUrl, {
    max: 1,
    onnotice: () => {},
    connection: { application_name: "local-gateway-schema-cache" },
  });
  // Supabase Auth reads auth.users with its own privileged role; locally, `postgres`, which has Supabase's grants on auth.
  const authSql = postgres(Deno.env.get("GATEWAY_AUTH_DB_URL") ?? DB_URL, {
    max: 2,
    onnotice: () => {},
    connection: { application_name: "local-gateway-auth" },
  });
  const cache = new SchemaCache(meta, config.schemas);
  try {
    await cache.reload();
    await cache.listen((err) => console.error("Schema cache reload failed:", err));
  } catch (err) {
    await Promise.allSettled([
      pool.end(1),
      meta.end({ timeout: 1 }),
      authSql.end({ timeout: 1 }),
    ]);
    throw err;
  }

  const admission = new Admission(config.poolSize, config.maxQueue, config.queueTimeoutMs);
  const keys = new ApiKeys(config.keys);
  const rest = new RestApi(config, { config, pool, cache, admission }, keys);
  const functions = new FunctionsHost(config);
  let baseUrl = "";
  const auth = new AuthApi(authSql, config.jwtSecret, () => baseUrl);

  const handler = async (req: Request): Promise<Response> => {
    const started = performance.now();
    const url = new URL(req.url);
    const log: RequestLog = {};
    let res: Response;
    try {
      if (url.pathname === "/health") {
        res = Response.json({ status: "ok" });
      } else if (url.pathname.startsWith("/functions/v1/")) {
        res = await functions.handle(req, url);
      } else if (url.pathname === "/rest/v1" || url.pathname.startsWith("/rest/v1/")) {
        res = withCors(await rest.handle(req, url, log));
      } else if (
        url.pathname === "/auth/v1/.well-known/jwks.json" && !(config.jwks instanceof URL)
      ) {
        // Public, as on hosted: anyone may fetch the keys that verify tokens.
        res = withCors(
          req.method === "OPTIONS" ? preflight(req) : Response.json(config.jwks, {
            headers: { "Cache-Control": "public, max-age=600" },
          }),
        );
      } else if (url.pathname.startsWith("/auth/v1/")) {
        const apikey = req.headers.get("apikey") ?? url.searchParams.get("apikey");
        res = withCors(
          req.method === "OPTIONS"
            ? preflight(req)
            : apikey === null
            ? NO_API_KEY()
            : keys.resolve(apikey) === null
            ? INVALID_API_KEY()
            : await auth.handle(req, url),
        );
        // GoTrue's own CORS exposes its API version header, which supabase-js reads.
        res.headers.set(
          "Access-Control-Expose-Headers",
          "X-Total-Count, Link, X-Supabase-Api-Version",
        );
      } else {
        res = withCors(kongError(404, "no Route matched with those values"));
      }
    } catch (err) {
      console.error("Gateway error:", err);
      res = withCors(kongError(500, "An unexpected error occurred"));
    }
    if (config.log) {
      console.log(JSON.stringify({
        ts: new Date().toISOString(),
        method: req.method,
        path: url.pathname,
        status: res.status,
        duration_ms: Math.round((performance.now() - started) * 100) / 100,
        ...log,
      }));
    }
    return res;
  };

  const server = Deno.serve({
    hostname: config.hostname,
    port: config.port,
    onListen: () => {},
  }, handler);
  const port = server.addr.port;
  const url = `http://${config.hostname}:${port}`;
  baseUrl = url;
  functions.startAll(url);

  let closing: Promise<void> | null = null;
  return {
    url,
    port,
    shutdown() {
      closing ??= (async () => {
        await server.shutdown();
        await functions.stopAll();
        await cache.close();
        await Promise.allSettled([
          pool.end(5),
          meta.end({ timeout: 5 }),
          authSql.end({ timeout: 5 }),
        ]);
      })();
      return closing;
    },
  };
}
