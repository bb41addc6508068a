/**
 * The project-owned PostgreSQL 15 cluster under `.local/pgdata` (port 54322).
 *
 * It stands in for Supabase's Postgres, privileges included: the cluster is
 * created by a bootstrap superuser, `supabase_admin` (as on Supabase), which
 * applies `sql/supabase_platform.sql` — the platform roles with Supabase's
 * attributes (`postgres` is NOSUPERUSER BYPASSRLS CREATEROLE CREATEDB
 * REPLICATION), the extensions (pg_cron, pgTAP, plpgsql_check,
 * pg_stat_statements, pgcrypto), `auth.*` helpers and stand-ins for pg_net and
 * Vault. Migrations are then applied as `postgres` with the real Supabase CLI
 * (`supabase db push --db-url`), so a privilege error surfaces here as it
 * would on `supabase db push`, and the ledger table is the one production uses.
 *
 * Postgres refuses to run as root, so when we are root every server command runs
 * as the `postgres` OS user that Debian's package creates.
 *
 * The server helpers (serverPaths, initdb, startServer, stopServer…) take the
 * server's paths and bin directory, so local/pg17.ts runs its Postgres 17
 * check cluster with them.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");
export const LOCAL_DIR = join(ROOT, ".local");
export const PG_PORT = Number(Deno.env.get("PGPORT_LOCAL") ?? 54322);
export const PG_BIN = "/usr/lib/postgresql/15/bin";
/**
 * The `postgres` role, as on Supabase: it applies the migrations, owns `app` and
 * `api`, and is not a superuser (it has BYPASSRLS). Tests and tools use it.
 */
export const DB_URL = `postgresql://postgres:postgres@127.0.0.1:${PG_PORT}/postgres`;
/**
 * The bootstrap superuser (Supabase's `supabase_admin`): the platform bootstrap,
 * and the few tools that need a superuser (loading auto_explain, CHECKPOINT in
 * benchmarks). Never what the application or its migrations run as.
 */
export const SUPERUSER_URL = `postgresql://supabase_admin:postgres@127.0.0.1:${PG_PORT}/postgres`;
/**
 * DB_URL for the Supabase CLI, which insists on TLS for any port but 54322 unless
 * told otherwise; the local server speaks plain TCP on loopback.
 */
export const CLI_DB_URL = `${DB_URL}?sslmode=disable`;
/** The role the API gateway logs in as, as PostgREST does on Supabase. */
export const AUTHENTICATOR_URL =
  `postgresql://authenticator:postgres@127.0.0.1:${PG_PORT}/postgres`;

/** Debian packages the cluster needs, beyond the PostgreSQL 15 server itself. */
export const DEBIAN_PACKAGES = [
  "postgresql-15",
  "postgresql-contrib",
  "postgresql-15-pgtap",
  "postgresql-15-cron",
  "postgresql-15-plpgsql-check",
  "libtap-parser-sourcehandler-pgtap-perl",
];

const isRoot = Deno.uid() === 0;

/** Runs a command, inheriting output; throws with the command line when it fails. */
export async function run(
  cmd: string[],
  opts: { asPostgres?: boolean; env?: Record<string, string>; quiet?: boolean; cwd?: string } = {},
): Promise<string> {
  const argv = opts.asPostgres ? asPostgresArgv(cmd) : cmd;
  const out = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    env: opts.env,
    cwd: opts.cwd ?? ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  if (!out.success) {
    throw new Error(`Command failed (${out.code}): ${cmd.join(" ")}\n${stdout}${stderr}`);
  }
  if (!opts.quiet && stderr.trim()) console.error(stderr.trim());
  return stdout;
}

/** True when `path` exists (a dangling symlink does not). */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Installs the Debian packages that are missing (as root), or explains how to. */
export async function ensurePackages(): Promise<void> {
  const missing: string[] = [];
  for (const pkg of DEBIAN_PACKAGES) {
    const out = await new Deno.Command("dpkg-query", {
      args: ["-W", "-f=${Status}", pkg],
      stdout: "piped",
      stderr: "null",
    }).output();
    if (!new TextDecoder().decode(out.stdout).includes("install ok installed")) missing.push(pkg);
  }
  if (missing.length === 0) return;
  const cmd = `apt-get update && apt-get install -y ${missing.join(" ")}`;
  if (!isRoot) {
    throw new Error(
      `Missing Debian packages: ${missing.join(", ")}. Install them first:\n  sudo sh -c '${cmd}'`,
    );
  }
  console.log(`Installing Debian packages: ${missing.join(" ")}`);
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  await run(["apt-get", "update", "-qq"], { env, quiet: true });
  await run(["apt-get", "install", "-y", "-qq", ...missing], { env, quiet: true });
}

/** The argv that runs `cmd` as the postgres OS user when we are root. */
function asPostgresArgv(cmd: string[]): string[] {
  return isRoot ? ["runuser", "-u", "postgres", "--", ...cmd] : cmd;
}

/** True when `cmd`, run as the postgres OS user, exits 0 (its output is discarded). */
async function succeedsAsPostgres(cmd: string[]): Promise<boolean> {
  const argv = asPostgresArgv(cmd);
  const out = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdout: "null",
    stderr: "null",
  }).output();
  return out.success;
}

/** True when the postgres OS user can reach `path` (every ancestor searchable). */
async function postgresCanReach(path: string): Promise<boolean> {
  return !isRoot || await succeedsAsPostgres(["test", "-x", path]);
}

/** Where a server keeps its files; see serverPaths(). */
export interface ServerPaths {
  /** The directory holding the three below (and whatever else belongs to this server). */
  base: string;
  dataDir: string;
  socketDir: string;
  logFile: string;
}

const pathsByName = new Map<string, ServerPaths>();

/**
 * A server's data directory, socket directory and log. Normally under
 * `.local/<name>/` (`.local/server/` for this cluster); when the checkout sits
 * where the postgres OS user cannot enter (e.g. under /root), they live in
 * /var/lib/voucher-platform/<hash of the checkout path>[-<name>] and
 * `.local/<name>` is a symlink to it, for humans.
 *
 * @example Another cluster of this checkout (local/pg17.ts)
 * ```ts
 * const { dataDir } = await serverPaths("pg17"); // .local/pg17/pgdata
 * ```
 */
export async function serverPaths(name = "server"): Promise<ServerPaths> {
  const known = pathsByName.get(name);
  if (known) return known;
  await Deno.mkdir(LOCAL_DIR, { recursive: true });
  const link = join(LOCAL_DIR, name);
  let base = link;
  if (isRoot && !(await postgresCanReach(LOCAL_DIR))) {
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(ROOT));
    const key = Array.from(new Uint8Array(digest).slice(0, 6))
      .map((b) => b.toString(16).padStart(2, "0")).join("");
    base = `/var/lib/voucher-platform/${key}${name === "server" ? "" : `-${name}`}`;
    await Deno.mkdir(base, { recursive: true });
    await run(["chown", "postgres:postgres", "/var/lib/voucher-platform", base]);
    if (!(await exists(link))) await Deno.symlink(base, link);
  }
  const paths = {
    base,
    dataDir: join(base, "pgdata"),
    socketDir: join(base, "run"),
    logFile: join(base, "postgres.log"),
  };
  pathsByName.set(name, paths);
  return paths;
}

/** Creates a server's data and socket directories and its log, owned by the postgres OS user. */
export async function prepareDirectories(name = "server"): Promise<ServerPaths> {
  const p = await serverPaths(name);
  for (const dir of [p.dataDir, p.socketDir]) {
    await Deno.mkdir(dir, { recursive: true });
    if (isRoot) await run(["chown", "postgres:postgres", dir]);
  }
  if (isRoot) await run(["chown", "postgres:postgres", dirname(p.dataDir)]);
  await Deno.writeTextFile(p.logFile, "", { append: true });
  if (isRoot) await run(["chown", "postgres:postgres", p.logFile]);
  return p;
}

/** Settings for a 2-core, 24 GiB development machine running tests and benchmarks. */
const settings = (socketDir: string) => `
# --- voucher-platform local cluster (written by local/cluster.ts) ---
listen_addresses = '127.0.0.1'
port = ${PG_PORT}
unix_socket_directories = '${socketDir}'
max_connections = 200
shared_buffers = '1GB'
effective_cache_size = '8GB'
work_mem = '16MB'
maintenance_work_mem = '512MB'
wal_buffers = '16MB'
max_wal_size = '4GB'
checkpoint_timeout = '15min'
# The first change to a page after a checkpoint logs the whole 8 kB page. Redeems
# touch random voucher pages and random index leaves, so those images were ~80% of
# a redeem's WAL (17 kB); lz4 shrinks them ~5x for little CPU.
wal_compression = 'lz4'
random_page_cost = 1.1
effective_io_concurrency = 200
max_worker_processes = 16
max_parallel_workers_per_gather = 1
max_parallel_workers = 2
shared_preload_libraries = 'pg_cron,pg_stat_statements'
cron.database_name = 'postgres'
cron.use_background_workers = on
cron.timezone = 'UTC'
pg_stat_statements.track = all
track_io_timing = on
timezone = 'UTC'
log_min_duration_statement = -1
log_line_prefix = '%m [%p] %q%u@%d '
`;

export async function isInitialised(): Promise<boolean> {
  return await exists(join((await serverPaths()).dataDir, "PG_VERSION"));
}

/**
 * Creates a cluster owned by the bootstrap superuser `supabase_admin` (password
 * `postgres`, trust on the socket, scram-sha-256 over TCP) with `bin`'s initdb,
 * and appends `conf` to its postgresql.conf.
 */
export async function initdb(
  { dataDir, socketDir }: ServerPaths,
  bin = PG_BIN,
  conf = settings(socketDir),
): Promise<void> {
  console.log(`Creating cluster in ${dataDir}`);
  const pwfile = join(socketDir, "pwfile");
  await Deno.writeTextFile(pwfile, "postgres\n");
  if (isRoot) await run(["chown", "postgres:postgres", pwfile]);
  await run([
    join(bin, "initdb"),
    "-D",
    dataDir,
    "-U",
    "supabase_admin",
    "--pwfile",
    pwfile,
    "--auth-local=trust",
    "--auth-host=scram-sha-256",
    "-E",
    "UTF8",
    "--locale=C.UTF-8",
  ], { asPostgres: true, quiet: true });
  await Deno.remove(pwfile);
  await Deno.writeTextFile(join(dataDir, "postgresql.conf"), conf, { append: true });
}

/** True when this checkout's server is running (not merely something on the port). */
export async function isRunning(): Promise<boolean> {
  return await serverRunning(await serverPaths());
}

/** True when the server in `p.dataDir` is running; `bin` holds its pg_ctl. */
export async function serverRunning(p: ServerPaths, bin = PG_BIN): Promise<boolean> {
  if (!(await exists(join(p.dataDir, "PG_VERSION")))) return false;
  return await succeedsAsPostgres([join(bin, "pg_ctl"), "-D", p.dataDir, "status"]);
}

/** Starts a server (idempotent), recovering from a stale postmaster.pid after a crash. */
export async function startServer(p: ServerPaths, bin = PG_BIN): Promise<void> {
  const { dataDir, logFile } = p;
  if (await serverRunning(p, bin)) return;
  const pidFile = join(dataDir, "postmaster.pid");
  if (await exists(pidFile)) {
    const pid = Number((await Deno.readTextFile(pidFile)).split("\n")[0]);
    let alive = false;
    try {
      Deno.kill(pid, "SIGCONT");
      alive = true;
    } catch { /* no such process: the pid file is stale */ }
    if (!alive) await Deno.remove(pidFile);
  }
  await run([
    join(bin, "pg_ctl"),
    "-D",
    dataDir,
    "-l",
    logFile,
    "-w",
    "-t",
    "60",
    "start",
  ], { asPostgres: true, quiet: true });
}

/**
 * psql against the local cluster as `postgres` (or, with `superuser`, as the
 * bootstrap superuser; or against another database, `url`); stops on the first
 * error.
 */
export async function psql(
  args: string[],
  opts: { quiet?: boolean; superuser?: boolean; url?: string } = {},
): Promise<string> {
  return await run([
    "psql",
    "-X",
    "-v",
    "ON_ERROR_STOP=1",
    "-q",
    "-d",
    opts.url ?? (opts.superuser ? SUPERUSER_URL : DB_URL),
    ...args,
  ], { quiet: opts.quiet ?? true });
}

/**
 * Throws when the cluster was created before the bootstrap superuser existed
 * (by an older checkout, with `postgres` as its superuser): its `postgres`
 * cannot be demoted, so it must be recreated.
 */
async function assertHostedPrivileges(): Promise<void> {
  const out = await new Deno.Command("psql", {
    args: [
      "-X",
      "-At",
      "-d",
      SUPERUSER_URL,
      "-c",
      "select rolsuper from pg_roles where rolname = current_user",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success || new TextDecoder().decode(out.stdout).trim() !== "t") {
    throw new Error(
      "The local cluster predates hosted privileges (its superuser is not supabase_admin). " +
        "Recreate it with `npx deno task reset` (this deletes the local database).",
    );
  }
}

/** The Supabase CLI from node_modules (pinned in package.json). */
export function supabaseCli(): string {
  return join(ROOT, "node_modules", ".bin", "supabase");
}

/**
 * Applies pending migrations as `postgres` with the command that deploys them,
 * `supabase db push` (its ledger, its order, its transaction per file).
 */
export async function migrate(): Promise<void> {
  await run([supabaseCli(), "db", "push", "--yes", "--db-url", CLI_DB_URL], { quiet: true });
  // Tell the gateway's schema cache to reload, as PostgREST listens for.
  await psql(["-c", "notify pgrst, 'reload schema'"]);
}

/** Creates (if needed) and starts the cluster, bootstraps the platform, applies migrations. */
export async function up(): Promise<void> {
  await ensurePackages();
  const p = await prepareDirectories();
  if (!(await isInitialised())) await initdb(p);
  await startServer(p);
  await assertHostedPrivileges();
  await psql(["-f", join(ROOT, "sql", "supabase_platform.sql")], { superuser: true });
  await migrate();
}

export async function down(): Promise<void> {
  await stopServer(await serverPaths());
}

/** Stops a server if it runs (fast shutdown: sessions are disconnected). */
export async function stopServer(p: ServerPaths, bin = PG_BIN): Promise<void> {
  if (!(await serverRunning(p, bin))) return;
  await run([join(bin, "pg_ctl"), "-D", p.dataDir, "-m", "fast", "-w", "stop"], {
    asPostgres: true,
    quiet: true,
  });
}

/** Restarts a running server (fast shutdown): what a crash-recovery test needs. */
export async function restart(): Promise<void> {
  const { dataDir, logFile } = await serverPaths();
  await run([
    join(PG_BIN, "pg_ctl"),
    "-D",
    dataDir,
    "-l",
    logFile,
    "-m",
    "fast",
    "-w",
    "-t",
    "30",
    "restart",
  ], { asPostgres: true, quiet: true });
}

/** Stops the server and deletes every byte of local state. */
export async function reset(): Promise<void> {
  await down();
  const { dataDir } = await serverPaths();
  await Deno.remove(dataDir, { recursive: true }).catch(() => {});
}

if (import.meta.main) {
  const cmd = Deno.args[0];
  if (cmd === "up") await up();
  else if (cmd === "down") await down();
  else if (cmd === "reset") await reset();
  else if (cmd === "migrate") await migrate();
  else if (cmd === "status") console.log((await isRunning()) ? "running" : "stopped");
  else {
    console.error("usage: deno run -A local/cluster.ts up|down|reset|migrate|status");
    Deno.exit(2);
  }
}
