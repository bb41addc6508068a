/**
 * `/functions/v1/<name>`: hosts each Edge Function in-process, standing in for
 * Supabase's Edge Runtime.
 *
 * Convention: `functions/<name>/index.ts` is the deployable file (it calls
 * `Deno.serve(handler)`); next to it `handler.ts` exports
 * `handler(req: Request): Response | Promise<Response>`, which the gateway
 * imports lazily on the first call. As on Supabase:
 *
 * - `verify_jwt` (config.toml, default true) requires `Authorization: Bearer
 *   <jwt>` that the REST side would accept — HS256 with the project secret, or
 *   ES256 / RS256 with a key of the JWKS, claims valid — 401
 *   `{"msg":"Invalid JWT"}` otherwise. Like hosted, it knows nothing of
 *   `sb_publishable_` / `sb_secret_` keys (they are not JWTs): a function called
 *   with those needs `verify_jwt = false` and its own check
 *   (supabase.com/docs/guides/api/api-keys, "Known limitations"). OPTIONS passes
 *   unchecked so functions answer their own CORS;
 * - the function sees the path without the `/functions/v1` prefix
 *   (`/<name>/rest?query`), like behind Supabase's API gateway;
 * - an unknown function is 404 `{"code":"NOT_FOUND",…}`, a module that fails to
 *   load is 503 BOOT_ERROR, a handler that throws is 500 WORKER_ERROR;
 * - `EdgeRuntime.waitUntil(promise)` keeps background work alive: shutdown
 *   awaits pending promises (bounded).
 *
 * @module
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { FunctionConfig, GatewayConfig } from "./_config.ts";
import { JwtVerifier } from "./_jwt.ts";

/** The export every `functions/<name>/handler.ts` provides. */
export type FunctionHandler = (req: Request) => Response | Promise<Response>;

const NAME = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;

/** Promises handed to `EdgeRuntime.waitUntil()`, shared by every gateway in the process. */
const pending = new Set<Promise<unknown>>();

interface EdgeRuntimeLike {
  waitUntil(promise: Promise<unknown>): void;
}

/** Installs `globalThis.EdgeRuntime.waitUntil` unless a real Edge Runtime provides it. */
export function installEdgeRuntime(): void {
  const g = globalThis as { EdgeRuntime?: EdgeRuntimeLike };
  if (g.EdgeRuntime) return;
  g.EdgeRuntime = {
    waitUntil(promise: Promise<unknown>): void {
      const tracked = Promise.resolve(promise)
        .catch((err) => console.error("EdgeRuntime.waitUntil() promise rejected:", err))
        .finally(() => pending.delete(tracked));
      pending.add(tracked);
    },
  };
}

/** Waits for `waitUntil` promises, at most `timeoutMs`; returns how many were still pending. */
export async function drainWaitUntil(timeoutMs: number): Promise<number> {
  if (pending.size === 0) return 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<void>((r) => timer = setTimeout(r, timeoutMs));
  await Promise.race([Promise.allSettled([...pending]), timeout]);
  clearTimeout(timer);
  return pending.size;
}

function json(body: unknown, status: number): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json" },
  });
}

/** Raised when `handler.ts` cannot be imported or exports no `handler` function. */
export class FunctionBootError extends Error {
  override name = "FunctionBootError";
}

/** Routes `/functions/v1/*` to the functions' handlers. */
export class FunctionsHost {
  readonly #config: GatewayConfig;
  readonly #jwt: JwtVerifier;
  readonly #modules = new Map<string, Promise<FunctionHandler>>();

  constructor(config: GatewayConfig) {
    this.#config = config;
    this.#jwt = new JwtVerifier(config.jwtSecret, config.anonRole, config.jwks);
    installEdgeRuntime();
  }

  /** The function's config entry, or a default for a `functions/<name>/index.ts` not listed. */
  #lookup(name: string): FunctionConfig | null {
    if (!NAME.test(name)) return null;
    const listed = this.#config.functions.get(name);
    if (listed && !listed.enabled) return null;
    const fn = listed ??
      {
        name,
        dir: resolve(this.#config.configDir, "..", "functions", name),
        verifyJwt: true,
        enabled: true,
      };
    // Not deployed (no files yet) is "not found", as on Supabase.
    const deployed = this.#modules.has(name) || existsSync(join(fn.dir, "index.ts")) ||
      existsSync(join(fn.dir, "handler.ts"));
    return deployed ? fn : null;
  }

  #load(fn: FunctionConfig): Promise<FunctionHandler> {
    let loading = this.#modules.get(fn.name);
    if (!loading) {
      const file = join(fn.dir, "handler.ts");
      loading = (async () => {
        let mod: { handler?: unknown };
        try {
          mod = await import(pathToFileURL(file).href);
        } catch (cause) {
          throw new FunctionBootError(`Cannot load function "${fn.name}" from ${file}`, { cause });
        }
        if (typeof mod.handler !== "function") {
          throw new FunctionBootError(`Function "${fn.name}": ${file} does not export handler()`);
        }
        return mod.handler as FunctionHandler;
      })();
      this.#modules.set(fn.name, loading);
      loading.catch(() => this.#modules.delete(fn.name)); // retry after the file is fixed
    }
    return loading;
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
    const fn = this.#lookup(name);
    if (!fn) return json({ code: "NOT_FOUND", message: "Requested function was not found" }, 404);
    if (req.method !== "OPTIONS" && fn.verifyJwt) {
      const denied = await this.#verify(req);
      if (denied) return denied;
    }
    let handler: FunctionHandler;
    try {
      handler = await this.#load(fn);
    } catch (err) {
      console.error(err);
      return json(
        { code: "BOOT_ERROR", message: "Worker failed to boot (please check logs)" },
        503,
      );
    }
    const forwarded = new Request(new URL(`/${rest}${url.search}`, url.origin), req);
    try {
      const res = await handler(forwarded);
      if (!(res instanceof Response)) {
        throw new TypeError(`Function "${name}" returned no Response`);
      }
      return res;
    } catch (err) {
      console.error(`Function "${name}" failed:`, err);
      return json({
        code: "WORKER_ERROR",
        message: "Function exited due to an error (please check logs)",
      }, 500);
    }
  }
}
