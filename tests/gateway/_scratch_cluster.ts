/**
 * A throwaway Postgres cluster for tests that stop and start the server, so the
 * shared local cluster (and every other test) is never disturbed. Real Postgres
 * 15 from the same Debian packages, in a temporary directory, on a free
 * loopback port, trust authentication; removed by `destroy()`.
 *
 * @module
 */
import { join } from "node:path";
import postgres from "postgres";
import { PG_BIN } from "../../local/cluster.ts";

const isRoot = Deno.uid() === 0;

async function exec(cmd: string[]): Promise<void> {
  const argv = isRoot ? ["runuser", "-u", "postgres", "--", ...cmd] : cmd;
  const out = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `Command failed (${out.code}): ${cmd.join(" ")}\n${new TextDecoder().decode(out.stderr)}`,
    );
  }
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** A running scratch cluster. */
export interface ScratchCluster {
  /** Superuser URL (`postgres`, trust). */
  url: string;
  /** Runs SQL as the superuser on a connection of its own. */
  sql(text: string): Promise<postgres.Row[]>;
  /** `pg_ctl stop` in the given mode; `wait: false` returns at once (smart shutdown waits for sessions). */
  stop(mode: "smart" | "fast", wait?: boolean): Promise<void>;
  start(): Promise<void>;
  destroy(): Promise<void>;
}

/**
 * Creates and starts a scratch cluster (about two seconds).
 *
 * @example
 * const pg = await startScratchCluster();
 * try { await pg.sql("select 1"); } finally { await pg.destroy(); }
 */
export async function startScratchCluster(): Promise<ScratchCluster> {
  const base = await Deno.makeTempDir({ prefix: "gw-scratch-pg-" });
  const dataDir = join(base, "data");
  const logFile = join(base, "postgres.log");
  if (isRoot) await new Deno.Command("chown", { args: ["postgres:postgres", base] }).output();
  const port = freePort();
  await exec([join(PG_BIN, "initdb"), "-D", dataDir, "-U", "postgres", "-A", "trust", "--no-sync"]);
  const options = [
    `-p ${port}`,
    "-c listen_addresses=127.0.0.1",
    `-k ${base}`,
    "-c fsync=off",
    "-c shared_buffers=16MB",
    "-c max_connections=20",
  ].join(" ");
  const start = () =>
    exec([join(PG_BIN, "pg_ctl"), "-D", dataDir, "-l", logFile, "-o", options, "-w", "start"]);
  await start();
  const url = `postgresql://postgres@127.0.0.1:${port}/postgres`;
  return {
    url,
    async sql(text) {
      const sql = postgres(url, { max: 1, onnotice: () => {} });
      try {
        return await sql.unsafe(text);
      } finally {
        await sql.end({ timeout: 1 });
      }
    },
    stop: (mode, wait = true) =>
      exec([join(PG_BIN, "pg_ctl"), "-D", dataDir, "-m", mode, wait ? "-w" : "-W", "stop"]),
    start,
    async destroy() {
      await exec([join(PG_BIN, "pg_ctl"), "-D", dataDir, "-m", "immediate", "-w", "stop"])
        .catch(() => {});
      await Deno.remove(base, { recursive: true });
    },
  };
}
