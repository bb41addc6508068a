/**
 * Every function in supabase/config.toml bundles the way `supabase functions
 * deploy` uploads it: its entrypoint and import map are resolved with the CLI's
 * rules (`local/deploy_layout.ts`), and `deno check` then resolves and
 * type-checks the whole module graph with that import map and no other
 * configuration (run from an empty directory, so no deno.json is discovered).
 * Before each function had its own deno.json, dispatch failed this check with
 * `Import "postgres" not a dependency`: only the repository's root deno.json
 * mapped it, and the CLI does not upload that file.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT } from "../local/cluster.ts";
import {
  denoConfigFlags,
  type DeployedFunction,
  deployedFunctions,
  resolveFunction,
} from "../local/deploy_layout.ts";

/** `deno check` of a function exactly as deployed, from an empty directory. */
async function checkAsDeployed(fn: DeployedFunction): Promise<{ ok: boolean; output: string }> {
  const empty = await Deno.makeTempDir({ prefix: "deploy-check-" });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["check", "--quiet", ...denoConfigFlags(fn), fn.entrypoint],
      cwd: empty,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const decode = (b: Uint8Array) => new TextDecoder().decode(b);
    return { ok: out.success, output: decode(out.stdout) + decode(out.stderr) };
  } finally {
    await Deno.remove(empty, { recursive: true });
  }
}

Deno.test("the CLI's rules: config import_map, else deno.json beside the entrypoint, else supabase/functions/<name>/", async () => {
  const dir = await Deno.makeTempDir({ prefix: "deploy-layout-" });
  try {
    const supabase = join(dir, "supabase");
    await Deno.mkdir(join(supabase, "functions", "plain"), { recursive: true });
    await Deno.mkdir(join(dir, "functions", "outside"), { recursive: true });
    await Deno.writeTextFile(join(dir, "functions", "outside", "deno.json"), "{}");
    await Deno.writeTextFile(join(supabase, "functions", "plain", "import_map.json"), "{}");

    const outside = resolveFunction(
      "outside",
      { entrypoint: "../functions/outside/index.ts" },
      supabase,
    );
    assert.equal(outside.entrypoint, join(dir, "functions", "outside", "index.ts"));
    assert.equal(outside.importMap, join(dir, "functions", "outside", "deno.json"));
    assert.deepEqual(denoConfigFlags(outside), ["--config", outside.importMap]);

    const explicit = resolveFunction("outside", {
      entrypoint: "../functions/outside/index.ts",
      import_map: "./import_map.json",
    }, supabase);
    assert.equal(
      explicit.importMap,
      join(supabase, "import_map.json"),
      "config.toml's import_map wins",
    );
    assert.deepEqual(denoConfigFlags(explicit), [
      "--no-config",
      "--import-map",
      explicit.importMap,
    ]);

    const plain = resolveFunction("plain", undefined, supabase);
    assert.equal(plain.entrypoint, join(supabase, "functions", "plain", "index.ts"));
    assert.equal(plain.importMap, join(supabase, "functions", "plain", "import_map.json"));

    const none = resolveFunction("bare", { entrypoint: "../functions/bare/index.ts" }, supabase);
    assert.equal(none.importMap, null, "no import map found: the function gets none");
    assert.deepEqual(denoConfigFlags(none), ["--no-config"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("every function in supabase/config.toml resolves and type-checks with only what the CLI uploads", async () => {
  const functions = await deployedFunctions();
  assert.deepEqual(functions.map((f) => f.name).sort(), ["dispatch", "waba-webhook"]);
  for (const fn of functions) {
    assert.ok(
      fn.importMap,
      `${fn.name}: the CLI finds an import map (a deno.json beside index.ts)`,
    );
    const { ok, output } = await checkAsDeployed(fn);
    assert.ok(ok, `${fn.name} does not bundle as deployed:\n${output}`);
  }
});

Deno.test("the check can fail: dispatch without its import map does not resolve", async () => {
  const [dispatch] = (await deployedFunctions()).filter((f) => f.name === "dispatch");
  const { ok, output } = await checkAsDeployed({ ...dispatch, importMap: null });
  assert.equal(ok, false);
  assert.match(output, /Import "postgres" not a dependency/);
});

Deno.test("the functions' import maps pin what the root deno.json pins", async () => {
  const root = JSON.parse(await Deno.readTextFile(join(ROOT, "deno.json"))).imports as Record<
    string,
    string
  >;
  for (const fn of await deployedFunctions()) {
    const own = JSON.parse(await Deno.readTextFile(fn.importMap!)).imports as Record<
      string,
      string
    >;
    for (const [name, target] of Object.entries(own)) {
      assert.equal(target, root[name], `${fn.name}: "${name}" differs from the root deno.json`);
    }
  }
});
