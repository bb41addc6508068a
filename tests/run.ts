/**
 * The whole test suite: `deno task test`.
 *
 * 1. brings the local stack up (idempotent; the same as `deno task start`),
 * 2. the committed schema dump (`supabase/schema.sql`) matches the migrations
 *    (one test; checked before any test creates objects of its own),
 * 3. `deno fmt --check`, `deno lint`, `deno check` (one test each),
 * 4. `supabase db lint` (plpgsql_check over `app` and `api`, fails on errors),
 * 5. `tsc` over the k6 entry files against `@types/k6` (installed under perf/k6),
 * 6. pgTAP: every `tests/db/*.test.sql` through `pg_prove`,
 * 7. pgTAP on 17: the same specs on a throwaway Postgres 17 cluster
 *    (local/pg17.ts) after the platform bootstrap and every migration, as
 *    hosted Supabase creates new projects on 17; the cluster is stopped after,
 * 8. Deno tests under `tests/` (unit, gateway contract, end-to-end, perf smoke, and
 *    the station PWA in headless Chromium through playwright-core),
 *
 * then prints one closing line `N passed, N failed` counting every assertion
 * (pgTAP) and every test (Deno), and exits non-zero when anything failed.
 *
 * @module
 */
import { join } from "node:path";
import { CLI_DB_URL, DB_URL, ROOT, supabaseCli } from "../local/cluster.ts";
import { checkSchemaDump } from "../local/schema_dump.ts";
import { start } from "../local/stack.ts";
import * as pg17 from "../local/pg17.ts";

interface Tally {
  suite: string;
  passed: number;
  failed: number;
  /** pgTAP's skip(): counted as passed, as pg_prove does, and shown beside the tally. */
  skipped?: number;
}

async function exec(
  cmd: string[],
  env?: Record<string, string>,
): Promise<{ code: number; out: string }> {
  const child = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    cwd: ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // Stream output as it comes (a CI log shows progress) and keep it for parsing.
  const chunks: string[] = [];
  const pump = async (stream: ReadableStream<Uint8Array>, sink: typeof Deno.stdout) => {
    for await (const chunk of stream) {
      chunks.push(new TextDecoder().decode(chunk));
      await sink.write(chunk);
    }
  };
  const [status] = await Promise.all([
    child.status,
    pump(child.stdout, Deno.stdout),
    pump(child.stderr, Deno.stderr),
  ]);
  return { code: status.code, out: chunks.join("") };
}

async function dbLint(): Promise<Tally> {
  console.log("\n== supabase db lint (app, api) ==");
  const { code, out } = await exec([
    supabaseCli(),
    "db",
    "lint",
    "--db-url",
    CLI_DB_URL,
    "--schema",
    "app,api",
    "--level",
    "warning",
    "--fail-on",
    "error",
  ]);
  const ok = code === 0 && !/"level":\s*"error"/.test(out);
  return { suite: "db lint", passed: ok ? 1 : 0, failed: ok ? 0 : 1 };
}

/** The committed schema dump is what the migrations build (`deno task db:dump` regenerates it). */
async function schemaDump(): Promise<Tally> {
  console.log("\n== supabase/schema.sql matches the migrations ==");
  const stale = await checkSchemaDump();
  if (stale) console.log(`supabase/schema.sql is stale; run \`deno task db:dump\`:\n${stale}`);
  return { suite: "schema", passed: stale ? 0 : 1, failed: stale ? 1 : 0 };
}

/** `deno fmt --check`, `deno lint` and `deno check` over the whole tree: one test each. */
async function denoStatic(): Promise<Tally> {
  console.log("\n== deno fmt --check, deno lint, deno check ==");
  let passed = 0;
  for (
    const args of [["fmt", "--check"], ["lint"], [
      "check",
      "client/",
      "local/",
      "functions/",
      "perf/",
      "station/",
      "tests/",
    ]]
  ) {
    const { code } = await exec([Deno.execPath(), ...args]);
    if (code === 0) passed++;
  }
  return { suite: "deno static", passed, failed: 3 - passed };
}

/** The k6 entry files type-check against @types/k6 (ops run them with their own k6). */
async function k6Types(): Promise<Tally> {
  console.log("\n== k6 entry files: tsc against @types/k6 ==");
  const k6Dir = join(ROOT, "perf", "k6");
  try {
    await Deno.stat(join(k6Dir, "node_modules", "@types", "k6"));
  } catch {
    await exec(["npm", "ci", "--prefix", k6Dir, "--no-audit", "--no-fund"]);
  }
  const { code } = await exec([join(k6Dir, "node_modules", ".bin", "tsc"), "-p", k6Dir]);
  return { suite: "k6 types", passed: code === 0 ? 1 : 0, failed: code === 0 ? 0 : 1 };
}

/** Every `tests/db/*.test.sql` through pg_prove against `dbUrl`: one test per assertion. */
async function prove(suite: string, dbUrl: string): Promise<Tally> {
  const files = [];
  for await (const entry of Deno.readDir(join(ROOT, "tests", "db"))) {
    if (entry.name.endsWith(".test.sql")) files.push(join("tests", "db", entry.name));
  }
  files.sort();
  const { code, out } = await exec(["pg_prove", "--verbose", "-d", dbUrl, ...files]);
  const passed = (out.match(/^\s*ok \d+/gm) ?? []).length;
  const skipped = (out.match(/^\s*ok \d+.*# skip/gim) ?? []).length;
  let failed = (out.match(/^\s*not ok \d+/gm) ?? []).length;
  // A file that dies before its plan completes (or bad plan) fails without "not ok" lines.
  if (code !== 0 && failed === 0) failed = 1;
  return { suite, passed, failed, skipped };
}

async function pgTap(): Promise<Tally> {
  console.log("\n== pgTAP (tests/db) ==");
  return await prove("pgTAP", DB_URL);
}

/**
 * The same specs on Postgres 17 (local/pg17.ts): create or start the cluster,
 * apply the bootstrap and every migration (a failure there is one failed test),
 * run the specs, stop the cluster. Prints how long it took.
 */
async function pgTap17(): Promise<Tally> {
  const suite = "pgTAP on 17";
  console.log(`\n== pgTAP on Postgres 17 (tests/db on local/pg17.ts, port ${pg17.PG17_PORT}) ==`);
  const started = performance.now();
  try {
    await pg17.up();
    return await prove(suite, pg17.PG17_DB_URL);
  } catch (error) {
    console.log(`The Postgres 17 cluster could not be brought up with every migration:\n${error}`);
    return { suite, passed: 0, failed: 1 };
  } finally {
    await pg17.down();
    console.log(`(Postgres 17 check: ${((performance.now() - started) / 1000).toFixed(1)} s)`);
  }
}

async function denoTests(): Promise<Tally> {
  console.log("\n== deno test (tests/) ==");
  const { code, out } = await exec([Deno.execPath(), "test", "-A", "--quiet", "tests/"], {
    NO_COLOR: "1",
  });
  const summary = out.match(/(ok|FAILED) \| (\d+) passed(?: \(\d+ steps?\))? \| (\d+) failed/);
  if (!summary) return { suite: "deno test", passed: 0, failed: 1 };
  const passed = Number(summary[2]);
  let failed = Number(summary[3]);
  if (code !== 0 && failed === 0) failed = 1; // e.g. a type error before any test ran
  return { suite: "deno test", passed, failed };
}

if (import.meta.main) {
  await start({ quiet: true });
  const tallies = [
    await schemaDump(),
    await denoStatic(),
    await dbLint(),
    await k6Types(),
    await pgTap(),
    await pgTap17(),
    await denoTests(),
  ];
  console.log("");
  for (const t of tallies) {
    const skipped = t.skipped ? ` (${t.skipped} skipped)` : "";
    console.log(`${t.suite.padEnd(11)} ${t.passed} passed, ${t.failed} failed${skipped}`);
  }
  const passed = tallies.reduce((n, t) => n + t.passed, 0);
  const failed = tallies.reduce((n, t) => n + t.failed, 0);
  console.log(`${passed} passed, ${failed} failed`);
  Deno.exit(failed === 0 && passed > 0 ? 0 : 1);
}
