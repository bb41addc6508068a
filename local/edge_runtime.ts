/**
 * What Supabase's Edge Runtime gives a function beyond plain Deno, for the local
 * stack: loaded with `deno run --preload` before a function's own `index.ts`
 * (see `local/gateway/_functions_host.ts`), so the function runs unmodified.
 *
 * - `EdgeRuntime.waitUntil(promise)`: background work that outlives the
 *   response. On SIGTERM (the gateway stopping) the process waits for it, at
 *   most `EDGE_WAIT_UNTIL_MS` (default 5 s), then exits — as a worker does
 *   when the runtime retires it.
 * - A handler that throws is answered `500 {"code":"WORKER_ERROR",…}`, the
 *   runtime's answer, instead of Deno's plain-text 500.
 *
 * Not reproduced: the per-request CPU (2 s) and wall-clock (150 s / 400 s)
 * limits, which the runtime enforces by terminating the worker; the dispatch
 * benchmark measures a run's CPU and wall time against them instead.
 *
 * @module
 */

const pending = new Set<Promise<unknown>>();
const waitUntilMs = Number(Deno.env.get("EDGE_WAIT_UNTIL_MS") ?? 5000);

interface EdgeRuntimeGlobal {
  waitUntil(promise: Promise<unknown>): void;
}

(globalThis as { EdgeRuntime?: EdgeRuntimeGlobal }).EdgeRuntime = {
  waitUntil(promise: Promise<unknown>): void {
    const tracked = Promise.resolve(promise)
      .catch((err) => console.error("EdgeRuntime.waitUntil() promise rejected:", err))
      .finally(() => pending.delete(tracked));
    pending.add(tracked);
  },
};

const WORKER_ERROR = JSON.stringify({
  code: "WORKER_ERROR",
  message: "Function exited due to an error (please check logs)",
});

type ServeHandler = (request: Request, info: Deno.ServeHandlerInfo) => Response | Promise<Response>;

const serve = Deno.serve.bind(Deno) as (...args: unknown[]) => Deno.HttpServer;
// Every call shape of Deno.serve: (handler), (options, handler), (options with handler).
(Deno as { serve: unknown }).serve = (...args: unknown[]): Deno.HttpServer => {
  const onError = (err: unknown) => {
    console.error("Function failed:", err);
    return new Response(WORKER_ERROR, {
      status: 500,
      headers: { "content-type": "application/json" },
    });
  };
  if (typeof args[0] === "function") return serve({ onError }, args[0] as ServeHandler);
  const options = { onError, ...(args[0] as Record<string, unknown>) };
  return args.length > 1 ? serve(options, args[1]) : serve(options);
};

Deno.addSignalListener("SIGTERM", async () => {
  if (pending.size > 0) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.allSettled([...pending]),
      new Promise((resolve) => timer = setTimeout(resolve, waitUntilMs)),
    ]);
    clearTimeout(timer);
  }
  Deno.exit(0);
});
