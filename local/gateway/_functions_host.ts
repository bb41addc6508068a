/**
 * `/functions/v1/<name>`: standing in for Supabase's Edge Runtime, each function
 * runs from its own `index.ts` in its own Deno process, with only the import map
 * `supabase functions deploy` would upload for it (`local/deploy_layout.ts`),
 * the environment Supabase injects, and `local/edge_runtime.ts` preloaded
 * (`EdgeRuntime.waitUntil`, WORKER_ERROR answers). What runs locally is what
 * deploys: a function that only works through the repository's root `deno.json`
 * fails to boot here as it would fail to bundle there.
 *
 * As on Supabase:
 * - `verify_jwt` (config.toml, default true) requires `Authorization: Bearer
 *   <jwt>` that the REST side would accept — HS256 with the project secret, or
 *   ES256 / RS256 with a key of the JWKS, claims valid — 401
 *   `{"msg":"Invalid JWT"}` otherwise. Like hosted, it knows nothing of
 *   `sb_publishable_` / `sb_secret_` keys (they are not JWTs): a function called
 *   with those needs `verify_jwt = false` and its own check
 *   (supabase.com/docs/guides/api/api-keys, "Known limitations"). OPTIONS passes
 *   unchecked so functions answer their own CORS;
 * - the function sees the path without the `/functions/v1` prefix
 *   (`/<name>/rest?query`);
 * - an unknown function is 404 `{"code":"NOT_FOUND",…}`, one whose process
 *   cannot start is 503 BOOT_ERROR, one whose handler throws answers 500
 *   WORKER_ERROR (from the preload);
 * - the environment: `SUPABASE_URL`, `SUPABASE_ANON_KEY`,
 *   `SUPABASE_SERVICE_ROLE_KEY`, `SUPABASE_PUBLISHABLE_KEYS`,
 *   `SUPABASE_SECRET_KEYS` (JSON dictionaries of the new keys, as hosted gives
 *   them), `SUPABASE_JWKS` (public keys only, no JWT secret), `SUPABASE_DB_URL`,
 *   plus the function secrets.
 *
 * Processes start with the gateway (a request waits for its function to be
 * ready), restart on the next request after a crash, and get SIGTERM at
 * shutdown, when the preload lets their `waitUntil` work finish (bounded).
 *
 * @module
 */
import { DB_URL } from "../env.ts";
import { type RunningFunction, startFunction } from "../function_runner.ts";
import type { FunctionConfig, GatewayConfig } from "./_config.ts";
import { JwtVerifier } from "./_jwt.ts";

const NAME = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;

/** Keys as hosted gives them to functions: `{"default": "sb_…", "key1": …}`. */
function keyDictionary(keys: string[]): string {
  return JSON.stringify(Object.fromEntries(keys.map((k, i) => [i ? `key${i}` : "default", k])));
}

function json(body: unknown, status: number): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json" },
  });
}

/** One function's process: started on demand, restarted after it exits. */
class FunctionProcess {
  #running: Promise<RunningFunction> | undefined;
  /** The environment the process gets; set by {@link FunctionsHost.startAll}. */
  env: Record<string, string> = {};

  constructor(readonly fn: FunctionConfig) {}

  /** A ready process, starting one when none runs. */
  ready(): Promise<RunningFunction> {
    if (!this.#running) {
      const running = startFunction(this.fn, this.env);
      this.#running = running;
      running.then(
        (fn) => fn.exited.then(() => this.#running === running && (this.#running = undefined)),
        () => this.#running === running && (this.#running = undefined), // the next request tries again
      );
    }
    return this.#running;
  }

  /** SIGTERM, then wait (the preload finishes `waitUntil` work, bounded by `graceMs`). */
  async stop(graceMs: number): Promise<void> {
    const running = this.#running;
    this.#running = undefined;
    await running?.then((fn) => fn.stop(graceMs), () => {});
  }
}

/** Routes `/functions/v1/*` to the functions' processes. */
export class FunctionsHost {
  readonly #config: GatewayConfig;
  readonly #jwt: JwtVerifier;
  readonly #processes = new Map<string, FunctionProcess>();

  constructor(config: GatewayConfig) {
    this.#config = config;
    this.#jwt = new JwtVerifier(config.jwtSecret, config.anonRole, config.jwks);
    for (const fn of config.functions.values()) {
      if (fn.enabled) this.#processes.set(fn.name, new FunctionProcess(fn));
    }
  }

  /**
   * Gives every function its environment — Supabase's variables (the project URL
   * is the gateway's) and the function secrets — and starts its process without
   * waiting for it (requests wait instead).
   */
  startAll(gatewayUrl: string): void {
    const env = {
      ...this.#config.functionSecrets,
      // What Supabase injects into every function.
      SUPABASE_URL: gatewayUrl,
      SUPABASE_ANON_KEY: this.#config.keys.anon,
      SUPABASE_SERVICE_ROLE_KEY: this.#config.keys.serviceRole,
      SUPABASE_PUBLISHABLE_KEYS: keyDictionary(this.#config.keys.publishable),
      SUPABASE_SECRET_KEYS: keyDictionary(this.#config.keys.secret),
      ...(this.#config.jwks instanceof URL
        ? {}
        : { SUPABASE_JWKS: JSON.stringify(this.#config.jwks) }),
      SUPABASE_DB_URL: Deno.env.get("SUPABASE_DB_URL") ?? DB_URL,
      NO_COLOR: "1",
    };
    for (const process of this.#processes.values()) {
      process.env = env;
      process.ready().catch(() => {});
    }
  }

  /** Stops every process, letting `waitUntil` work finish within the configured grace. */
  async stopAll(): Promise<void> {
    await Promise.all(
      [...this.#processes.values()].map((p) => p.stop(this.#config.waitUntilTimeoutMs)),
    );
  }

  async #verify(req: Request): Promise<Response | null> {
    const header = req.headers.get("authorization");
    if (!header) return json({ msg: "Error: Missing authorization header" }, 401);
    const [scheme, token] = header.split(" ");
    if (scheme !== "Bearer") {
      return json({ msg: "Error: Auth header is not 'Bearer {token}'" }, 401);
    }
    try {
      await this.#jwt.authenticate(token ?? "");
      return null;
    } catch {
      return json({ msg: "Invalid JWT" }, 401);
    }
  }

  /** Handles a request whose path starts with `/functions/v1/`. */
  async handle(req: Request, url: URL): Promise<Response> {
    const rest = url.pathname.slice("/functions/v1/".length);
    const slash = rest.indexOf("/");
    let name: string;
    try {
      name = decodeURIComponent(slash === -1 ? rest : rest.slice(0, slash));
    } catch {
      name = ""; // malformed %-escape: not a function name
    }
    const process = NAME.test(name) ? this.#processes.get(name) : undefined;
    if (!process) {
      return json({ code: "NOT_FOUND", message: "Requested function was not found" }, 404);
    }
    if (req.method !== "OPTIONS" && process.fn.verifyJwt) {
      const denied = await this.#verify(req);
      if (denied) return denied;
    }
    let running: RunningFunction;
    try {
      running = await process.ready();
    } catch (err) {
      console.error(err);
      return json(
        { code: "BOOT_ERROR", message: "Worker failed to boot (please check logs)" },
        503,
      );
    }
    const body = req.method === "GET" || req.method === "HEAD"
      ? undefined
      : await req.arrayBuffer();
    try {
      const res = await fetch(`${running.url}/${rest}${url.search}`, {
        method: req.method,
        headers: req.headers,
        body,
        redirect: "manual",
      });
      return new Response(res.body, { status: res.status, headers: res.headers });
    } catch (err) {
      console.error(`Function "${name}" failed:`, err);
      return json({
        code: "WORKER_ERROR",
        message: "Function exited due to an error (please check logs)",
      }, 500);
    }
  }
}
