/**
 * The dispatch trigger: the options a call may set (who may call it is
 * `_shared/service_auth.ts`).
 *
 * Options come from the JSON body and/or the query string (query wins), each
 * bounded; unset ones fall back to the environment, then to the defaults below.
 * Unknown body fields (e.g. the local ticker's `source`) are ignored so any
 * scheduler can call it.
 *
 * | option          | env                       | default | bounds            |
 * |-----------------|---------------------------|---------|-------------------|
 * | `wait`          |                           | false   | answer with the summary instead of 202 |
 * | `channel_id`    |                           | all     | uuid              |
 * | `budget_ms`     | `DISPATCH_BUDGET_MS`      | 50 000  | 100 … 400 000     |
 * | `max_messages`  | `DISPATCH_MAX_MESSAGES`   | 3 000   | 1 … 100 000       |
 * | `concurrency`   | `DISPATCH_CONCURRENCY`    | 16      | 1 … 64            |
 * | `batch_size`    | `DISPATCH_BATCH_SIZE`     | 50      | 1 … 1000          |
 * | `lease_seconds` | `DISPATCH_LEASE_SECONDS`  | 60      | 5 … 3600          |
 * | `idle_exit_ms`  | `DISPATCH_IDLE_EXIT_MS`   | 3 000   | 0 … 400 000       |
 * | `report_batch`  | `DISPATCH_REPORT_BATCH`   | 50      | 1 … 1000          |
 * | `report_interval_ms` | `DISPATCH_REPORT_INTERVAL_MS` | 200 | 10 … 5 000 |
 *
 * The budget bounds claiming; sends in flight then finish (at most the WhatsApp
 * timeout) and are reported, so keep `budget_ms` + `WABA_TIMEOUT_MS` + a few
 * seconds under the runtime's wall-clock limit (150 s on Supabase's free plan,
 * 400 s on paid plans). `max_messages` bounds the run's CPU the same way: a
 * run costs about 0.3–0.45 ms of CPU per message (perf/bench/dispatch_run.ts,
 * perf/bench/top_tier.ts), and hosted Edge Functions get 2 s of CPU per
 * request, so 3,000 messages (~1.4 s) stay under it; a channel faster than
 * 3,000 messages per tick needs a faster tick, not a longer run (docs/deploy.md).
 *
 * @module
 */
import { z } from "zod";
import type { EnvGetter } from "../_shared/waba_config.ts";

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const flag = z.union([
  z.boolean(),
  z.enum(["1", "true", "yes", "0", "false", "no", ""]).transform((v) =>
    ["1", "true", "yes"].includes(v)
  ),
]);

/** Body and query fields a trigger may send. */
export const TriggerSchema = z.object({
  wait: flag.optional(),
  channel_id: z.uuid().optional(),
  budget_ms: int(100, 400_000).optional(),
  max_messages: int(1, 100_000).optional(),
  concurrency: int(1, 64).optional(),
  batch_size: int(1, 1000).optional(),
  lease_seconds: int(5, 3600).optional(),
  idle_exit_ms: int(0, 400_000).optional(),
  report_batch: int(1, 1000).optional(),
  report_interval_ms: int(10, 5000).optional(),
});

/** Resolved options of a trigger. */
export interface DispatchRequest {
  wait: boolean;
  channelId: string | null;
  budgetMs: number;
  maxMessages: number;
  concurrency: number;
  batchSize: number;
  leaseSeconds: number;
  idleExitMs: number;
  reportBatchSize: number;
  reportIntervalMs: number;
}

/** Defaults when neither the trigger nor the environment says otherwise. */
export const DISPATCH_DEFAULTS = Object.freeze({
  budgetMs: 50_000,
  maxMessages: 3_000,
  concurrency: 16,
  batchSize: 50,
  leaseSeconds: 60,
  idleExitMs: 3_000,
  reportBatchSize: 50,
  reportIntervalMs: 200,
});

/** A trigger that cannot be accepted; `status` is the HTTP answer. */
export class TriggerError extends Error {
  override readonly name = "TriggerError";
  constructor(message: string, readonly status: number) {
    super(message);
  }
}

function envInt(get: EnvGetter, name: string, fallback: number, min: number, max: number): number {
  const raw = get(name);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new TriggerError(
      `Environment variable ${name}="${raw}" must be a whole number between ${min} and ${max}`,
      500,
    );
  }
  return n;
}

/**
 * Reads and validates the trigger's options.
 *
 * @throws {TriggerError} 400 for an invalid body or query, 500 for an invalid environment.
 *
 * @example
 * await parseTrigger(new Request("http://x/dispatch?wait=1", { method: "POST" }), denoEnv);
 * // { wait: true, channelId: null, budgetMs: 50000, … }
 */
export async function parseTrigger(req: Request, get: EnvGetter): Promise<DispatchRequest> {
  let body: unknown = {};
  const text = await req.text();
  if (text.trim() !== "") {
    try {
      body = JSON.parse(text);
    } catch {
      throw new TriggerError("The request body is not valid JSON", 400);
    }
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new TriggerError("The request body must be a JSON object", 400);
  }
  const query = Object.fromEntries(new URL(req.url).searchParams);
  const parsed = TriggerSchema.safeParse({ ...body, ...query });
  if (!parsed.success) {
    const why = parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
    throw new TriggerError(`Invalid dispatch options: ${why}`, 400);
  }
  const t = parsed.data;
  const d = DISPATCH_DEFAULTS;
  return {
    wait: t.wait ?? false,
    channelId: t.channel_id ?? null,
    budgetMs: t.budget_ms ?? envInt(get, "DISPATCH_BUDGET_MS", d.budgetMs, 100, 400_000),
    maxMessages: t.max_messages ??
      envInt(get, "DISPATCH_MAX_MESSAGES", d.maxMessages, 1, 100_000),
    concurrency: t.concurrency ?? envInt(get, "DISPATCH_CONCURRENCY", d.concurrency, 1, 64),
    batchSize: t.batch_size ?? envInt(get, "DISPATCH_BATCH_SIZE", d.batchSize, 1, 1000),
    leaseSeconds: t.lease_seconds ?? envInt(get, "DISPATCH_LEASE_SECONDS", d.leaseSeconds, 5, 3600),
    idleExitMs: t.idle_exit_ms ?? envInt(get, "DISPATCH_IDLE_EXIT_MS", d.idleExitMs, 0, 400_000),
    reportBatchSize: t.report_batch ??
      envInt(get, "DISPATCH_REPORT_BATCH", d.reportBatchSize, 1, 1000),
    reportIntervalMs: t.report_interval_ms ??
      envInt(get, "DISPATCH_REPORT_INTERVAL_MS", d.reportIntervalMs, 10, 5000),
  };
}
