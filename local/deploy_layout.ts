/**
 * What `supabase functions deploy` uploads for each function: its entrypoint and
 * the one import map it finds — resolved here exactly as the Supabase CLI
 * resolves them, so the local stack runs (and the tests check) each function the
 * way it deploys. A bare import that resolves only through the repository's root
 * `deno.json` would work locally and fail to bundle on Supabase; running each
 * function with only this import map makes that failure happen here.
 *
 * The CLI's rules (supabase/cli, `apps/cli-go/pkg/config/config.go`, "Resolve
 * functions config", and `apps/cli-go/internal/functions/deploy/deploy.go`,
 * `GetFunctionConfig`), for a function `<name>`:
 *
 * 1. entrypoint: `[functions.<name>] entrypoint`, relative to `supabase/`
 *    (config.toml's directory); default `supabase/functions/<name>/index.ts`;
 * 2. import map, first found: `[functions.<name>] import_map` (relative to
 *    `supabase/`); `deno.json`, then `deno.jsonc`, beside the entrypoint (for a
 *    function listed in config.toml); `deno.json`, `deno.jsonc`, then the
 *    deprecated `import_map.json` in `supabase/functions/<name>/`; the deprecated
 *    fallback `supabase/functions/import_map.json`; else none.
 *
 * A `deno.json` beside the entrypoint is given to the bundler as Deno's own
 * configuration (`ShouldUseDenoJsonDiscovery`, `apps/cli-go/pkg/function/bundle.go`);
 * any other import map as `--import-map`.
 *
 * @module
 */
import { existsSync } from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { parse as parseToml } from "smol-toml";
import { z } from "zod";
import { ROOT } from "./cluster.ts";

/** One deployable function, as the CLI sees it. */
export interface DeployedFunction {
  name: string;
  enabled: boolean;
  /** Whether the platform checks the caller's JWT before the function runs. */
  verifyJwt: boolean;
  /** Absolute path of the entry module. */
  entrypoint: string;
  /** Absolute path of the import map the CLI uploads, or null when it finds none. */
  importMap: string | null;
  /** True when the import map is a `deno.json(c)` beside the entrypoint (used as Deno's config). */
  importMapIsConfig: boolean;
}

/** Raised when config.toml cannot be read or has an unusable `[functions.*]` entry. */
export class DeployLayoutError extends Error {
  override readonly name = "DeployLayoutError";
}

const FunctionEntry = z.object({
  enabled: z.boolean().default(true),
  verify_jwt: z.boolean().default(true),
  entrypoint: z.string().min(1).optional(),
  import_map: z.string().min(1).optional(),
});

const ConfigToml = z.object({ functions: z.record(z.string(), FunctionEntry).default({}) });

/** The project's `supabase/config.toml`. */
export const CONFIG_TOML = join(ROOT, "supabase", "config.toml");

function firstExisting(paths: string[]): string | null {
  return paths.find((p) => existsSync(p)) ?? null;
}

/**
 * Resolves one function from its config.toml entry (`undefined` when the
 * function is not listed: deployed by name from `supabase/functions/<name>`).
 *
 * @example
 * const fn = resolveFunction("dispatch", { entrypoint: "../functions/dispatch/index.ts" }, "/repo/supabase");
 * fn.importMap; // "/repo/functions/dispatch/deno.json" when that file exists
 */
export function resolveFunction(
  name: string,
  entry: z.input<typeof FunctionEntry> | undefined,
  supabaseDir: string,
): DeployedFunction {
  const parsed = FunctionEntry.parse(entry ?? {});
  const functionsDir = join(supabaseDir, "functions");
  const entrypoint = parsed.entrypoint === undefined
    ? join(functionsDir, name, "index.ts")
    : isAbsolute(parsed.entrypoint)
    ? parsed.entrypoint
    : resolve(supabaseDir, parsed.entrypoint);
  let importMap: string | null = null;
  if (parsed.import_map !== undefined) {
    importMap = isAbsolute(parsed.import_map)
      ? parsed.import_map
      : resolve(supabaseDir, parsed.import_map);
  } else {
    const beside = entry === undefined
      ? null
      : firstExisting(["deno.json", "deno.jsonc"].map((f) => join(dirname(entrypoint), f)));
    importMap = beside ??
      firstExisting(
        ["deno.json", "deno.jsonc", "import_map.json"].map((f) => join(functionsDir, name, f)),
      ) ??
      firstExisting([join(functionsDir, "import_map.json")]);
  }
  const importMapIsConfig = importMap !== null &&
    /^deno\.jsonc?$/.test(importMap.split("/").pop() ?? "") &&
    dirname(importMap) === dirname(entrypoint);
  return {
    name,
    enabled: parsed.enabled,
    verifyJwt: parsed.verify_jwt,
    entrypoint,
    importMap,
    importMapIsConfig,
  };
}

/**
 * Every `[functions.<name>]` of a config.toml, resolved.
 *
 * @example
 * for (const fn of await deployedFunctions()) console.log(fn.name, fn.importMap);
 */
export async function deployedFunctions(configPath = CONFIG_TOML): Promise<DeployedFunction[]> {
  let raw: unknown;
  try {
    raw = parseToml(await Deno.readTextFile(configPath));
  } catch (cause) {
    throw new DeployLayoutError(`Cannot read Supabase config "${configPath}"`, { cause });
  }
  const parsed = ConfigToml.safeParse(raw);
  if (!parsed.success) {
    throw new DeployLayoutError(`Invalid [functions] in "${configPath}": ${parsed.error.message}`);
  }
  return Object.entries(parsed.data.functions).map(([name, entry]) =>
    resolveFunction(name, entry, dirname(configPath))
  );
}

/**
 * The `deno` flags that give a function only what the CLI uploads: its import
 * map as Deno's config (or `--import-map`), and no other configuration file.
 *
 * @example
 * denoConfigFlags(fn); // ["--config", "/repo/functions/dispatch/deno.json"]
 */
export function denoConfigFlags(fn: DeployedFunction): string[] {
  if (fn.importMap === null) return ["--no-config"];
  if (fn.importMapIsConfig) return ["--config", fn.importMap];
  return ["--no-config", "--import-map", fn.importMap];
}
