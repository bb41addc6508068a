/**
 * Starts one Edge Function as the local stand-in for Supabase's Edge Runtime
 * runs it: a Deno process of its own, from its `index.ts`, with only the import
 * map `supabase functions deploy` uploads (`deploy_layout.ts`), the given
 * environment, `edge_runtime.ts` preloaded, and `Deno.serve` bound to a free
 * loopback port (`DENO_SERVE_ADDRESS`). The gateway routes `/functions/v1/<name>`
 * to it; benchmarks start one directly to measure its CPU.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { denoConfigFlags, type DeployedFunction } from "./deploy_layout.ts";

const PRELOAD = fileURLToPath(new URL("./edge_runtime.ts", import.meta.url));
const BOOT_TIMEOUT_MS = 60_000;

/** A function's process, listening. */
export interface RunningFunction {
  /** Base URL; the function sees the path after it (`/<name>/…`). */
  url: string;
  pid: number;
  /** Resolves when the process exits. */
  exited: Promise<Deno.CommandStatus>;
  /** SIGTERM (the preload lets `waitUntil` work finish), SIGKILL after `graceMs` + 1 s. */
  stop(graceMs?: number): Promise<void>;
}

/** Raised when a function's process exits, or never listens, before it is ready. */
export class FunctionBootError extends Error {
  override readonly name = "FunctionBootError";
}

/** A free TCP port on loopback (closed again at once; the child binds it next). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

async function listening(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

/**
 * Starts `fn` and resolves once it listens.
 *
 * @throws {FunctionBootError} when the process exits first, or does not listen within 60 s.
 *
 * @example
 * const dispatch = await startFunction(fn, { SUPABASE_DB_URL: DB_URL });
 * await fetch(`${dispatch.url}/dispatch?wait=1`, { method: "POST", headers });
 * await dispatch.stop();
 */
export async function startFunction(
  fn: DeployedFunction,
  env: Record<string, string>,
): Promise<RunningFunction> {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--no-prompt",
      ...denoConfigFlags(fn),
      "--allow-net",
      "--allow-env",
      "--allow-read",
      "--allow-sys",
      "--allow-write=/tmp",
      "--preload",
      PRELOAD,
      fn.entrypoint,
    ],
    env: { ...env, DENO_SERVE_ADDRESS: `tcp:127.0.0.1:${port}` },
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    if (!s.success && s.signal !== "SIGTERM") {
      console.error(`Function "${fn.name}" exited with code ${s.code}`);
    }
    return s;
  });
  const deadline = Date.now() + BOOT_TIMEOUT_MS;
  while (!(await listening(port))) {
    if (exited) throw new FunctionBootError(`Function "${fn.name}" exited while booting`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new FunctionBootError(
        `Function "${fn.name}" did not listen within ${BOOT_TIMEOUT_MS} ms`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `http://127.0.0.1:${port}`,
    pid: child.pid,
    exited: status,
    async stop(graceMs = 5000) {
      if (exited) return;
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }, graceMs + 1000);
      await status;
      clearTimeout(timer);
    },
  };
}
