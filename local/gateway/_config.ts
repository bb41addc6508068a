/**
 * Gateway configuration: explicit options, then environment variables, then
 * `supabase/config.toml` (the file `supabase db push` / `functions deploy`
 * read), so the local gateway exposes exactly what production exposes.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { parse as parseToml } from "smol-toml";
import { z } from "zod";
import {
  ANON_KEY,
  AUTHENTICATOR_URL,
  GATEWAY_PORT,
  JWT_SECRET,
  localJwks,
  PUBLISHABLE_KEY,
  SECRET_KEY,
  SERVICE_ROLE_KEY,
} from "../env.ts";
import { ROOT } from "../cluster.ts";
import { type DeployedFunction, resolveFunction } from "../deploy_layout.ts";
import type { ApiKeySet } from "./_keys.ts";
import type { JwksSource } from "./_jwt.ts";

/** Options accepted by `serveGateway()`; every field is optional. */
export interface GatewayOptions {
  /** TCP port (default `GATEWAY_PORT` env or 54321; 0 picks a free port). */
  port?: number;
  /** Interface to bind (default 127.0.0.1: loopback only). */
  hostname?: string;
  /** Postgres URL of the login role PostgREST uses (default `authenticator`). */
  dbUrl?: string;
  /** HS256 secret the JWTs are signed with. */
  jwtSecret?: string;
  /** Connections in the request pool (default `GATEWAY_POOL_SIZE` or 8). */
  poolSize?: number;
  /** Requests allowed to wait for a connection (default `GATEWAY_MAX_QUEUE` or pool × 16). */
  maxQueue?: number;
  /** Longest wait for a connection before answering 504 (default `GATEWAY_QUEUE_TIMEOUT_MS` or 2000). */
  queueTimeoutMs?: number;
  /** Path of the Supabase `config.toml` (default `supabase/config.toml`). */
  configPath?: string;
  /** Overrides `[api].schemas` of config.toml. */
  schemas?: string[];
  /**
   * The project's API keys, the only values accepted in the `apikey` header
   * (default: `SUPABASE_PUBLISHABLE_KEYS` / `SUPABASE_SECRET_KEYS` as hosted sets
   * them for Edge Functions, `{"default": "sb_…"}`, and `SUPABASE_ANON_KEY` /
   * `SUPABASE_SERVICE_ROLE_KEY`; else Supabase local's fixed values).
   */
  keys?: Partial<ApiKeySet>;
  /**
   * Public keys for ES256 / RS256 user tokens: a JWKS, or the URL of one
   * (default `GATEWAY_JWKS_URL`, else the local signing key under `.local/`).
   */
  jwks?: JwksSource;
  /** Role used when a request carries no JWT (PostgREST's `db-anon-role`). */
  anonRole?: string;
  /** One JSON line per request on stdout (default `GATEWAY_LOG=1`). */
  log?: boolean;
  /** Longest wait for a function's `EdgeRuntime.waitUntil()` work at shutdown (default 5000 ms). */
  waitUntilTimeoutMs?: number;
  /** Environment every function process gets on top of the hosted `SUPABASE_*` variables (its secrets). */
  functionSecrets?: Record<string, string>;
}

/** One `[functions.<name>]` entry of config.toml, resolved as the Supabase CLI resolves it. */
export type FunctionConfig = DeployedFunction;

/** Fully resolved configuration. */
export interface GatewayConfig {
  port: number;
  hostname: string;
  dbUrl: string;
  jwtSecret: string;
  poolSize: number;
  maxQueue: number;
  queueTimeoutMs: number;
  schemas: string[];
  extraSearchPath: string[];
  maxRows: number | null;
  keys: ApiKeySet;
  /** What ES256 / RS256 tokens are verified with; also served at `/auth/v1/.well-known/jwks.json` when it is a JWKS. */
  jwks: JwksSource;
  anonRole: string;
  log: boolean;
  waitUntilTimeoutMs: number;
  /** Directory of config.toml; function entrypoints are relative to it. */
  configDir: string;
  functions: Map<string, FunctionConfig>;
  functionSecrets: Record<string, string>;
}

/** Raised when config.toml or an environment variable holds an unusable value. */
export class GatewayConfigError extends Error {
  override name = "GatewayConfigError";
}

const FunctionEntry = z.object({
  enabled: z.boolean().optional(),
  verify_jwt: z.boolean().optional(),
  entrypoint: z.string().optional(),
  import_map: z.string().optional(),
});

const ConfigToml = z.object({
  api: z.object({
    schemas: z.array(z.string().min(1)).min(1).default(["public"]),
    extra_search_path: z.array(z.string().min(1)).default(["public", "extensions"]),
    max_rows: z.number().int().positive().optional(),
  }).default({ schemas: ["public"], extra_search_path: ["public", "extensions"] }),
  functions: z.record(z.string(), FunctionEntry).default({}),
});

/**
 * The function secrets locally — what `supabase secrets set` gives every function
 * on Supabase: the gateway's environment variables with these names or prefixes
 * (the stack sets the WhatsApp ones; tests may set more).
 */
const FUNCTION_SECRETS =
  /^(WABA_|DISPATCH_|DB_POOL_MAX$|LOG_LEVEL$|LOCAL_STACK$|EDGE_WAIT_UNTIL_MS$)/;

function functionSecretsFromEnv(): Record<string, string> {
  return Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([name]) => FUNCTION_SECRETS.test(name)),
  );
}

/**
 * A key dictionary as hosted Supabase gives it to Edge Functions
 * (`SUPABASE_SECRET_KEYS={"default":"sb_secret_…"}`, supabase.com/docs/guides/functions/secrets).
 */
export function envKeyDictionary(name: string): string[] | undefined {
  const raw = Deno.env.get(name);
  if (raw === undefined || raw === "") return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    parsed = null;
  }
  const values = parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)
    ? Object.values(parsed)
    : [];
  if (values.length === 0 || !values.every((v) => typeof v === "string" && v !== "")) {
    throw new GatewayConfigError(
      `Environment variable ${name} must be a JSON object of key names to keys, e.g. {"default":"sb_…"}`,
    );
  }
  return values as string[];
}

function envInt(name: string): number | undefined {
  const raw = Deno.env.get(name);
  if (raw === undefined || raw === "") return undefined;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0) {
    throw new GatewayConfigError(`Environment variable ${name}="${raw}" is not a whole number`);
  }
  return value;
}

/**
 * Reads and validates config.toml, resolving each function's entrypoint and
 * import map exactly as `supabase functions deploy` does (`local/deploy_layout.ts`).
 */
export async function readConfigToml(path: string): Promise<{
  schemas: string[];
  extraSearchPath: string[];
  maxRows: number | null;
  functions: Map<string, FunctionConfig>;
}> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (cause) {
    throw new GatewayConfigError(`Cannot read Supabase config "${path}"`, { cause });
  }
  const parsed = ConfigToml.safeParse(parseToml(text));
  if (!parsed.success) {
    throw new GatewayConfigError(`Invalid Supabase config "${path}": ${parsed.error.message}`);
  }
  const dir = dirname(path);
  const functions = new Map<string, FunctionConfig>();
  for (const [name, entry] of Object.entries(parsed.data.functions)) {
    functions.set(name, resolveFunction(name, entry, dir));
  }
  return {
    schemas: parsed.data.api.schemas,
    extraSearchPath: parsed.data.api.extra_search_path,
    maxRows: parsed.data.api.max_rows ?? null,
    functions,
  };
}

/** Merges explicit options, environment variables and config.toml. */
export async function resolveConfig(options: GatewayOptions = {}): Promise<GatewayConfig> {
  const configPath = options.configPath ?? Deno.env.get("GATEWAY_CONFIG") ??
    join(ROOT, "supabase", "config.toml");
  const toml = await readConfigToml(configPath);
  const poolSize = options.poolSize ?? envInt("GATEWAY_POOL_SIZE") ?? 8;
  if (poolSize < 1) throw new GatewayConfigError(`Pool size must be at least 1, got ${poolSize}`);
  const keys: ApiKeySet = {
    publishable: options.keys?.publishable ?? envKeyDictionary("SUPABASE_PUBLISHABLE_KEYS") ??
      [PUBLISHABLE_KEY],
    secret: options.keys?.secret ?? envKeyDictionary("SUPABASE_SECRET_KEYS") ?? [SECRET_KEY],
    anon: options.keys?.anon ?? Deno.env.get("SUPABASE_ANON_KEY") ?? ANON_KEY,
    serviceRole: options.keys?.serviceRole ?? Deno.env.get("SUPABASE_SERVICE_ROLE_KEY") ??
      SERVICE_ROLE_KEY,
  };
  const jwksUrl = Deno.env.get("GATEWAY_JWKS_URL");
  return {
    port: options.port ?? GATEWAY_PORT,
    hostname: options.hostname ?? "127.0.0.1",
    dbUrl: options.dbUrl ?? Deno.env.get("GATEWAY_DB_URL") ?? AUTHENTICATOR_URL,
    jwtSecret: options.jwtSecret ?? JWT_SECRET,
    poolSize,
    maxQueue: options.maxQueue ?? envInt("GATEWAY_MAX_QUEUE") ?? poolSize * 16,
    queueTimeoutMs: options.queueTimeoutMs ?? envInt("GATEWAY_QUEUE_TIMEOUT_MS") ?? 2000,
    schemas: options.schemas ?? toml.schemas,
    extraSearchPath: toml.extraSearchPath,
    maxRows: toml.maxRows,
    keys,
    jwks: options.jwks ?? (jwksUrl ? new URL(jwksUrl) : await localJwks()),
    anonRole: options.anonRole ?? "anon",
    log: options.log ?? Deno.env.get("GATEWAY_LOG") === "1",
    waitUntilTimeoutMs: options.waitUntilTimeoutMs ?? 5000,
    configDir: dirname(configPath),
    functions: toml.functions,
    functionSecrets: options.functionSecrets ?? functionSecretsFromEnv(),
  };
}
