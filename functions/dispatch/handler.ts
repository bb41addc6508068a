/**
 * `POST /functions/v1/dispatch`: the campaign dispatch worker.
 *
 * Called by a scheduler with the project's service key (pg_cron + pg_net on
 * Supabase, the local ticker in the embedded stack): an `sb_secret_…` key or the
 * legacy service_role key as `apikey` or bearer, or a verified service_role JWT
 * (`_shared/service_auth.ts`). The platform's `verify_jwt` is off for this
 * function (`supabase/config.toml`): it cannot check `sb_secret_` keys, so the
 * function checks its callers itself. It acknowledges at once —
 * `202 {accepted: true, run_id}`, before touching the database — and runs in
 * the background under `EdgeRuntime.waitUntil`, so the trigger's latency is
 * that of parsing a small JSON body. With `?wait=1` (or `{"wait": true}`) it
 * runs in the foreground and answers `200` with the run's summary (tests, ops).
 *
 * Answers: 202 accepted; 202 `{accepted: false, reason: "busy"}` when this
 * isolate already runs `DISPATCH_MAX_RUNS` (4) background runs (triggers every
 * second would otherwise stack idle pollers; the running ones keep draining);
 * 200 summary (wait); 400 invalid options; 401 no service key or a bad token;
 * 403 a valid credential of another role (anon, a user); 405 not POST; 500 no
 * WhatsApp access token or no service key configured.
 *
 * All state and rules live in Postgres (`api.claim_messages`,
 * `api.report_message_results`, `api.record_opt_out`); see `_run.ts`.
 *
 * @module
 */
import { getDb } from "../_shared/db.ts";
import { log } from "../_shared/log.ts";
import {
  claimMessages,
  recordOptOut,
  reportMessageResults,
  wabaErrorRules,
} from "../_shared/rpc.ts";
import { denoEnv, type EnvGetter, wabaConfigFromEnv } from "../_shared/waba_config.ts";
import { authoriseService } from "../_shared/service_auth.ts";
import { WabaErrorRules } from "../_shared/waba_errors.ts";
import { parseTrigger, TriggerError } from "./_request.ts";
import { type DispatchQueue, runDispatch, type SendFn } from "./_run.ts";
import { createSender } from "./_sender.ts";
import { cachedErrorRules } from "./_rules.ts";

/** The `200` body of a `?wait=1` run: what callers outside the function read. */
export type { RunSummary } from "./_run.ts";

/** Seams for tests; production uses the defaults. */
export interface DispatchDeps {
  env: EnvGetter;
  /** The queue RPCs, bound to the run's worker (lease owner) id. */
  queueFor(worker: string): DispatchQueue;
  /** The send function of a run (WhatsApp client per phone number id). */
  sender(env: EnvGetter, rules: WabaErrorRules): SendFn;
  /** The WhatsApp error rules (`api.waba_error_rules()`, cached per isolate). */
  errorRules(): Promise<WabaErrorRules>;
  /** Keeps background work alive after the response (Supabase's `EdgeRuntime.waitUntil`). */
  waitUntil(promise: Promise<unknown>): void;
}

interface EdgeRuntimeLike {
  waitUntil(promise: Promise<unknown>): void;
}

function defaultWaitUntil(promise: Promise<unknown>): void {
  const runtime = (globalThis as { EdgeRuntime?: EdgeRuntimeLike }).EdgeRuntime;
  if (runtime?.waitUntil) runtime.waitUntil(promise);
  else promise.catch(() => {}); // plain Deno.serve: the process stays up anyway
}

/** The isolate's error rules: one `api.waba_error_rules()` call per 5 minutes. */
const isolateErrorRules = cachedErrorRules(() => wabaErrorRules(getDb()));

/** The production queue: the RPCs over the isolate's shared pool. */
export function rpcQueue(worker: string): DispatchQueue {
  return {
    claim: (o) => claimMessages(getDb(), { ...o, worker }),
    report: (results) => reportMessageResults(getDb(), results, worker),
    optOut: (msisdn, source) => recordOptOut(getDb(), msisdn, source),
  };
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
  });
}

/**
 * Builds the handler; `overrides` replace the production dependencies.
 *
 * @example
 * const handler = createDispatchHandler({ queueFor: () => fakeQueue, waitUntil: (p) => pending.push(p) });
 * const res = await handler(new Request("http://x/dispatch?wait=1", { method: "POST", headers }));
 */
export function createDispatchHandler(
  overrides: Partial<DispatchDeps> = {},
): (req: Request) => Promise<Response> {
  const deps: DispatchDeps = {
    env: denoEnv,
    queueFor: rpcQueue,
    sender: (env, rules) => createSender(wabaConfigFromEnv(env), undefined, rules),
    errorRules: isolateErrorRules,
    waitUntil: defaultWaitUntil,
    ...overrides,
  };
  let backgroundRuns = 0;

  return async (req: Request): Promise<Response> => {
    if (req.method !== "POST") {
      await req.body?.cancel();
      return json(405, {
        error: "method_not_allowed",
        message: "Use POST to trigger a dispatch run",
      });
    }
    const caller = await authoriseService(req, deps.env);
    if (!caller.ok) {
      await req.body?.cancel();
      if (caller.status === 500) log("error", "dispatch.config.invalid", { reason: caller.reason });
      return json(caller.status, {
        error: caller.status === 401
          ? "unauthorized"
          : caller.status === 403
          ? "forbidden"
          : "not_configured",
        message: `Dispatch needs the project's service key: ${caller.reason}`,
      });
    }
    let options;
    try {
      options = await parseTrigger(req, deps.env);
    } catch (err) {
      if (err instanceof TriggerError) {
        if (err.status >= 500) log("error", "dispatch.config.invalid", { error: err });
        return json(err.status, { error: "invalid_request", message: err.message });
      }
      throw err;
    }
    if (!wabaConfigFromEnv(deps.env).hasAccessToken) {
      log("error", "dispatch.config.missing", { missing: "WABA_ACCESS_TOKEN" });
      return json(500, {
        error: "not_configured",
        message:
          "No WhatsApp access token: set WABA_ACCESS_TOKEN (or WABA_ACCESS_TOKEN_<PHONE_NUMBER_ID>)",
      });
    }

    const maxRuns = Number(deps.env("DISPATCH_MAX_RUNS")) || 4;
    if (!options.wait && backgroundRuns >= maxRuns) {
      return json(202, { accepted: false, reason: "busy", active_runs: backgroundRuns });
    }

    const runId = crypto.randomUUID();
    const worker = `dispatch:${runId}`;
    // Every trigger option but `wait` is a run option of the same name.
    const { wait, ...runOptions } = options;
    const start = async () => {
      let rules: WabaErrorRules;
      try {
        rules = await deps.errorRules();
      } catch (err) {
        // The database applies the rules to every report anyway: run without them.
        log("error", "dispatch.rules.unavailable", { runId, error: err });
        rules = WabaErrorRules.empty();
      }
      return await runDispatch(
        { runId, ...runOptions },
        { queue: deps.queueFor(worker), send: deps.sender(deps.env, rules), worker },
      );
    };
    if (wait) return json(200, await start());

    // Start on the next macrotask: the 202 is written before the first claim is even sent.
    backgroundRuns++;
    const run = new Promise((resolve) => setTimeout(resolve, 0)).then(start);
    deps.waitUntil(run.finally(() => backgroundRuns--));
    return json(202, { accepted: true, run_id: runId });
  };
}

/** The handler the gateway and `index.ts` serve. */
export const handler: (req: Request) => Promise<Response> = createDispatchHandler();
