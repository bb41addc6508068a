/**
 * The dispatcher loop in its own process, so a test can kill it mid-batch
 * (SIGKILL: no cleanup, no final report — like an Edge Runtime isolate torn
 * down at its wall-clock limit or a crashed host).
 *
 *     deno run -A tests/e2e/_dispatch_worker.ts '{"channelId": "…", "leaseSeconds": 5}'
 *
 * Uses the same modules as the `dispatch` function (`runDispatch`, the RPC
 * queue, the WhatsApp sender) with `SUPABASE_DB_URL` and `LOCAL_STACK=1` set by
 * the caller. Prints `{"event":"started","worker":…}` and, if it lives that
 * long, `{"event":"done","summary":…}`.
 *
 * @module
 */
// The dispatch function's own run loop and sender: this worker is the function minus its
// HTTP trigger, so the test can kill it mid-batch.
import { runDispatch } from "../../functions/dispatch/_run.ts";
import { rpcQueue } from "../../functions/dispatch/handler.ts";
import { createSender } from "../../functions/dispatch/_sender.ts";
import { closeDb, getDb } from "../../functions/_shared/db.ts";
import { wabaErrorRules } from "../../functions/_shared/rpc.ts";
import { WabaErrorRules } from "../../functions/_shared/waba_errors.ts";
import { wabaConfigFromEnv } from "../../functions/_shared/waba_config.ts";

const args = JSON.parse(Deno.args[0] ?? "{}");
const runId = crypto.randomUUID();
const worker = `dispatch:${runId}`;
console.log(JSON.stringify({ event: "started", worker }));
const summary = await runDispatch({
  runId,
  channelId: args.channelId ?? null,
  budgetMs: args.budgetMs ?? 30_000,
  maxMessages: args.maxMessages ?? 100_000,
  concurrency: args.concurrency ?? 4,
  batchSize: args.batchSize ?? 20,
  leaseSeconds: args.leaseSeconds ?? 60,
  idleExitMs: args.idleExitMs ?? 500,
  reportBatchSize: args.reportBatchSize ?? 20,
  reportIntervalMs: args.reportIntervalMs ?? 100,
}, {
  queue: rpcQueue(worker),
  send: createSender(
    wabaConfigFromEnv(),
    undefined,
    new WabaErrorRules(await wabaErrorRules(getDb())),
  ),
  worker,
});
console.log(JSON.stringify({ event: "done", summary }));
await closeDb();
