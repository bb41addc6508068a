/**
 * The project-owned PostgreSQL 15 cluster under `.local/pgdata` (port 54322).
 *
 * It stands in for Supabase's Postgres: the same extensions (pg_cron, pgTAP,
 * plpgsql_check, pg_stat_statements, pgcrypto), the platform roles and `auth.*`
 * helpers from `sql/supabase_platform.sql`, and migrations applied with the real
 * Supabase CLI (`supabase migration up --db-url`), so its ledger table is the
 * one production uses.
 *
 * Postgres refuses to run as root, so when we are root every server command runs
 * as the `postgres` OS user that Debian's package creates.
 *
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");
export const LOCAL_DIR = join(ROOT, ".local");
export const PG_PORT = Number(Deno.env.get("PGPORT_LOCAL") ?? 54322);
export const PG_BIN = "/usr/lib/postgresql/15/bin";
/** Superuser URL (Supabase local uses postgres/postgres too). */
export const DB_URL = `postgresql://postgres:postgres@127.0.0.1:${PG_PORT}/postgres`;
/** The role the API gateway logs in as, as PostgREST does on Supabase. */
export const AUTHENTICATOR_URL =
  `postgresql://authenticator:postgres@127.0.0.1:${PG_PORT}/postgres`;

const DATA_DIR = join(LOCAL_DIR, "pgdata");
const SOCKET_DIR = join(LOCAL_DIR, "run");
const LOG_FILE = join(LOCAL_DIR, "postgres.log");

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
  const argv = opts.asPostgres && isRoot ? ["runuser", "-u", "postgres", "--", ...cmd] : cmd;
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

async function exists(path: string): Promise<boolean> {
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

/** True when the postgres OS user can reach `path` (every ancestor searchable). */
async function postgresCanReach(path: string): Promise<boolean> {
  if (!isRoot) return true;
  const out = await new Deno.Command("runuser", {
    args: ["-u", "postgres", "--", "test", "-x", path],
    stderr: "null",
  }).output();
  return out.success;
}

/**
 * Where the data directory really lives. Normally `.local/pgdata`; when the
 * checkout sits under a directory the postgres user cannot enter (e.g. /root),
 * the data lives under /var/lib/voucher-platform and `.local/pgdata` links to it.
 */
async function prepareDirectories(): Promise<void> {
  await Deno.mkdir(LOCAL_DIR, { recursive: true });
  if (isRoot && !(await postgresCanReach(LOCAL_DIR))) {
    if (!(await exists(DATA_DIR))) {
      const key = Array.from(
        new Uint8Array(
          await crypto.subtle.digest("SHA-256", new TextEncoder().encode(ROOT)),
        ).slice(0, 6),
      ).map((b) => b.toString(16).padStart(2, "0")).join("");
      const real = `/var/lib/voucher-platform/${key}`;
      await Deno.mkdir(real, { recursive: true });
      await run(["chown", "-R", "postgres:postgres", "/var/lib/voucher-platform"]);
      await Deno.symlink(real, DATA_DIR);
    }
  }
  for (const dir of [DATA_DIR, SOCKET_DIR]) {
    await Deno.mkdir(dir, { recursive: true });
    if (isRoot) await run(["chown", "-R", "postgres:postgres", dir + "/"]);
  }
  await Deno.writeTextFile(LOG_FILE, "", { append: true });
  if (isRoot) await run(["chown", "postgres:postgres", LOG_FILE]);
}

/** Settings for a 2-core, 24 GiB development machine running tests and benchmarks. */
const SETTINGS = `
# --- voucher-platform local cluster (written by local/cluster.ts) ---
listen_addresses = '127.0.0.1'
port = ${PG_PORT}
unix_socket_directories = '${SOCKET_DIR}'
max_connections = 200
shared_buffers = '1GB'
effective_cache_size = '8GB'
work_mem = '16MB'
maintenance_work_mem = '512MB'
wal_buffers = '16MB'
max_wal_size = '4GB'
checkpoint_timeout = '15min'
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
  return await exists(join(DATA_DIR, "PG_VERSION"));
}

async function initdb(): Promise<void> {
  console.log(`Creating cluster in ${DATA_DIR}`);
  const pwfile = join(SOCKET_DIR, "pwfile");
  await Deno.writeTextFile(pwfile, "postgres\n");
  if (isRoot) await run(["chown", "postgres:postgres", pwfile]);
  await run([
    join(PG_BIN, "initdb"),
    "-D",
    DATA_DIR,
    "-U",
    "postgres",
    "--pwfile",
    pwfile,
    "--auth-local=trust",
    "--auth-host=scram-sha-256",
    "-E",
    "UTF8",
    "--locale=C.UTF-8",
  ], { asPostgres: true, quiet: true });
  await Deno.remove(pwfile);
  await Deno.writeTextFile(join(DATA_DIR, "postgresql.conf"), SETTINGS, { append: true });
}

export async function isRunning(): Promise<boolean> {
  if (!(await isInitialised())) return false;
  const out = await new Deno.Command(join(PG_BIN, "pg_isready"), {
    args: ["-h", "127.0.0.1", "-p", String(PG_PORT), "-q"],
  }).output();
  return out.success;
}

/** Starts the server (idempotent), recovering from a stale postmaster.pid after a crash. */
async function startServer(): Promise<void> {
  if (await isRunning()) return;
  const pidFile = join(DATA_DIR, "postmaster.pid");
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
    join(PG_BIN, "pg_ctl"),
    "-D",
    DATA_DIR,
    "-l",
    LOG_FILE,
    "-w",
    "-t",
    "60",
    "start",
  ], { asPostgres: true, quiet: true });
}

/** psql against the local cluster as the superuser; stops on the first error. */
export async function psql(args: string[], quiet = true): Promise<string> {
  return await run([
    "psql",
    "-X",
    "-v",
    "ON_ERROR_STOP=1",
    "-q",
    "-d",
    DB_URL,
    ...args,
  ], { quiet });
}

/** The Supabase CLI from node_modules (pinned in package.json). */
export function supabaseCli(): string {
  return join(ROOT, "node_modules", ".bin", "supabase");
}

/** Applies pending migrations with the real Supabase CLI and its ledger. */
export async function migrate(): Promise<void> {
  await run([supabaseCli(), "migration", "up", "--db-url", DB_URL], { quiet: true });
  // Tell the gateway's schema cache to reload, as PostgREST listens for.
  await psql(["-c", "notify pgrst, 'reload schema'"]);
}

/** Creates (if needed) and starts the cluster, bootstraps the platform, applies migrations. */
export async function up(): Promise<void> {
  await ensurePackages();
  await prepareDirectories();
  if (!(await isInitialised())) await initdb();
  await startServer();
  await psql(["-f", join(ROOT, "sql", "supabase_platform.sql")]);
  await migrate();
}

export async function down(): Promise<void> {
  if (!(await isInitialised())) return;
  if (!(await isRunning())) return;
  await run([join(PG_BIN, "pg_ctl"), "-D", DATA_DIR, "-m", "fast", "-w", "stop"], {
    asPostgres: true,
    quiet: true,
  });
}

/** Stops the server and deletes every byte of local state. */
export async function reset(): Promise<void> {
  await down();
  const real = await Deno.realPath(DATA_DIR).catch(() => DATA_DIR);
  await Deno.remove(real, { recursive: true }).catch(() => {});
  await Deno.remove(DATA_DIR, { recursive: true }).catch(() => {});
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
