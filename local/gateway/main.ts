/**
 * Entry point of the local API gateway (PostgREST + Supabase API proxy + Edge
 * Runtime stand-in): `deno run -A local/gateway/main.ts` serves on
 * 127.0.0.1:$GATEWAY_PORT (54321).
 *
 * Environment: `GATEWAY_PORT`, `GATEWAY_DB_URL` (default: the `authenticator`
 * role), `JWT_SECRET`, `GATEWAY_POOL_SIZE` (8), `GATEWAY_MAX_QUEUE` (pool × 16),
 * `GATEWAY_QUEUE_TIMEOUT_MS` (2000), `GATEWAY_CONFIG` (supabase/config.toml),
 * `GATEWAY_AUTH_DB_URL` (the auth stand-in's connection; default `postgres`, which has Supabase's grants on auth),
 * `GATEWAY_LOG=1` for one JSON line per request.
 *
 * To start a gateway from code (tests), import `serveGateway` from `mod.ts`.
 *
 * @example
 * // deno run -A local/gateway/main.ts
 * // GATEWAY_PORT=54399 GATEWAY_POOL_SIZE=4 deno run -A local/gateway/main.ts
 *
 * @module
 */
import { serveGateway } from "./mod.ts";

if (import.meta.main) {
  let gateway;
  try {
    gateway = await serveGateway();
  } catch (err) {
    console.error("Gateway failed to start:", err instanceof Error ? err.message : err);
    Deno.exit(1);
  }
  console.log(`Gateway listening on ${gateway.url} (/rest/v1, /functions/v1, /health)`);
  const stop = async () => {
    await gateway.shutdown();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}
