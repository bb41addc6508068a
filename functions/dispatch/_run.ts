/**
 * One dispatch run: claim → send → report, until the queue is empty for this
 * run's channels, its time budget is spent or it has claimed `maxMessages`.
 *
 * Shape: `concurrency` workers share a small buffer of claimed messages. A
 * worker that takes a message and sees the buffer below `concurrency` starts a
 * claim in the background (one at a time), so sending rarely waits for the
 * database. Verdicts go to a batching {@link Reporter}.
 *
 * Rate and safety come from Postgres, not from this loop: `api.claim_messages`
 * hands out no more than each channel's token bucket allows and leases what it
 * hands out, so any number of runs (in one isolate or many) can work at once.
 * A run that dies at any point loses nothing: its unreported messages come back
 * when their lease expires (the pg_cron reclaim job) and are sent again —
 * at-least-once, with duplicates bounded by what one run had sent but not yet
 * reported (at most `concurrency` in flight + one report batch).
 *
 * Halts: a send whose error pauses its channel (an expired token, a restricted
 * number) or its template stops this run from sending anything else through
 * that channel or template: what it still holds is released, as `deferred`,
 * without a request. The pause itself is the database's (the report applies the
 * error's rule); the halt only saves the requests that would fail the same way
 * before the report lands.
 *
 * Empty claims: an empty answer means the queue is empty *or* every bucket is
 * dry for now. The run polls again with growing pauses (50 ms … 1 s) and only
 * stops after `idleExitMs` of consecutive empty claims, so a rate-limited
 * channel keeps one run busy for the whole budget.
 *
 * @module
 */
import { isTransientDbError } from "../_shared/db.ts";
import { log } from "../_shared/log.ts";
import type { ClaimedMessage, MessageResult, OptOutResult, ReportSummary } from "../_shared/rpc.ts";
import type { SendTemplateResult } from "../_shared/whatsapp.ts";
import { deferredResult, type Halt, toOutcome } from "./_outcome.ts";
import { Reporter, type ReportTotals } from "./_reporter.ts";

/** The queue RPCs a run needs (bound to a worker id by the caller). */
export interface DispatchQueue {
  claim(opts: { channelId?: string | null; max: number; leaseSeconds: number }): Promise<
    ClaimedMessage[]
  >;
  report(results: MessageResult[]): Promise<ReportSummary>;
  optOut(msisdn: string, source: string): Promise<OptOutResult>;
}

/** Sends one claimed message to WhatsApp. Never throws for API failures. */
export type SendFn = (msg: ClaimedMessage) => Promise<SendTemplateResult>;

/** Tunables of a run; see `_request.ts` for defaults and bounds. */
export interface RunOptions {
  runId: string;
  /** Only this channel; all active channels when absent. */
  channelId?: string | null;
  /** Stop claiming after this many ms; in-flight sends finish and are reported. */
  budgetMs: number;
  /** Stop claiming once this many messages were claimed (bounds the run's CPU). */
  maxMessages: number;
  /** Sends in flight at most. */
  concurrency: number;
  /** Messages per claim call. */
  batchSize: number;
  leaseSeconds: number;
  /** Stop after this long without claiming anything. */
  idleExitMs: number;
  /** Results per report call, and the longest a result waits to be reported. */
  reportBatchSize: number;
  reportIntervalMs: number;
  /** Aborting stops claiming and sending; claimed-but-unsent messages are released. */
  signal?: AbortSignal;
}

/** What a run did; the JSON body of `?wait=1` and the `dispatch.run.done` log line. */
export interface RunSummary {
  run_id: string;
  worker: string;
  channel_id: string | null;
  stop_reason: "queue_empty" | "budget_spent" | "message_cap" | "aborted" | "error";
  duration_ms: number;
  claim_calls: number;
  claimed: number;
  sent: number;
  retried: number;
  /** Sent, refused for a reason that is not the message's (throttle, pause): back without an attempt. */
  deferred: number;
  failed: number;
  /** Claimed but never sent (abort, too little lease left, a halted channel or template): deferred. */
  released: number;
  /** Channels and templates this run stopped sending through, with the reason. */
  halted: string[];
  opt_outs: number;
  /** Outcome counts by error code (`http_503`, `waba_130429`, …). */
  errors: Record<string, number>;
  db_errors: number;
  report: ReportTotals;
  send_ms: { p50: number; p95: number; max: number };
  error?: string;
}

const MIN_POLL_MS = 50;
const MAX_POLL_MS = 1000;

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0 || signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

/**
 * Runs until the queue is empty for the run's channels, the budget is spent,
 * `maxMessages` are claimed, or `signal` aborts. Never throws: failures end up in the summary.
 *
 * @example
 * const summary = await runDispatch(options, { queue, send, worker: `dispatch:${options.runId}` });
 */
export async function runDispatch(
  opts: RunOptions,
  deps: { queue: DispatchQueue; send: SendFn; worker: string },
): Promise<RunSummary> {
  const started = Date.now();
  const deadline = started + opts.budgetMs;
  const signal = opts.signal;
  const { queue, send, worker } = deps;
  const buffer: ClaimedMessage[] = [];
  const latencies: number[] = [];
  const optOuts: Promise<void>[] = [];
  const summary: RunSummary = {
    run_id: opts.runId,
    worker,
    channel_id: opts.channelId ?? null,
    stop_reason: "queue_empty",
    duration_ms: 0,
    claim_calls: 0,
    claimed: 0,
    sent: 0,
    retried: 0,
    deferred: 0,
    failed: 0,
    released: 0,
    halted: [],
    opt_outs: 0,
    errors: {},
    db_errors: 0,
    report: undefined as unknown as ReportTotals,
    send_ms: { p50: 0, p95: 0, max: 0 },
  };
  const reporter = new Reporter((items) => queue.report(items), {
    batchSize: opts.reportBatchSize,
    intervalMs: opts.reportIntervalMs,
  });

  let exhausted = false; // no more claims: queue empty, budget spent, abort or error
  let claiming: Promise<void> | undefined;
  let idleSince: number | undefined;
  let pollMs = MIN_POLL_MS;
  let dbFailures = 0;
  // Time a send may take (WhatsApp timeout) plus its report, capped for short test leases.
  const leaseGuardMs = Math.min(15_000, opts.leaseSeconds * 500);

  const stop = (reason: RunSummary["stop_reason"]) => {
    if (!exhausted) summary.stop_reason = reason;
    exhausted = true;
  };
  const canClaim = () => {
    if (exhausted) return false;
    if (signal?.aborted) stop("aborted");
    else if (Date.now() >= deadline) stop("budget_spent");
    else if (summary.claimed >= opts.maxMessages) stop("message_cap");
    return !exhausted;
  };

  const refill = async (): Promise<void> => {
    while (canClaim()) {
      let batch: ClaimedMessage[];
      try {
        summary.claim_calls++;
        batch = await queue.claim({
          channelId: opts.channelId,
          max: Math.min(opts.batchSize, opts.maxMessages - summary.claimed),
          leaseSeconds: opts.leaseSeconds,
        });
        dbFailures = 0;
      } catch (err) {
        summary.db_errors++;
        if (!isTransientDbError(err)) {
          summary.error = String((err as Error)?.message ?? err);
          log("error", "dispatch.claim.failed", { runId: opts.runId, error: err });
          stop("error");
          return;
        }
        dbFailures++;
        log("warn", "dispatch.claim.retry", { runId: opts.runId, error: err, attempt: dbFailures });
        await sleep(Math.min(2000, 100 * 2 ** Math.min(dbFailures, 5)), signal);
        continue;
      }
      if (batch.length > 0) {
        summary.claimed += batch.length;
        buffer.push(...batch);
        idleSince = undefined;
        pollMs = MIN_POLL_MS;
        return;
      }
      const now = Date.now();
      idleSince ??= now;
      if (now - idleSince >= opts.idleExitMs) {
        stop("queue_empty");
        return;
      }
      await sleep(Math.min(pollMs, deadline - now, opts.idleExitMs - (now - idleSince)), signal);
      pollMs = Math.min(MAX_POLL_MS, pollMs * 2);
    }
  };
  const ensureRefill = (): Promise<void> =>
    claiming ??= refill().finally(() => {
      claiming = undefined;
    });

  const optOut = (msg: ClaimedMessage) => {
    summary.opt_outs++;
    optOuts.push(
      queue.optOut(msg.to, "waba_131050").then(
        () => {},
        (err) => log("error", "dispatch.opt_out.failed", { to: msg.to, error: err }),
      ),
    );
  };

  const release = (msg: ClaimedMessage, code: string, why: string) => {
    summary.released++;
    reporter.add(deferredResult(msg, code, why), Date.parse(msg.lease_expires_at));
  };

  // Channels and templates a pause rule stopped (key → reason).
  const halts = new Map<string, string>();
  const channelKey = (channelId: string) => `channel ${channelId}`;
  const templateKey = (channelId: string, template: string, language: string) =>
    `template ${template} (${language}) on channel ${channelId}`;
  const halt = (h: Halt) => {
    const key = h.kind === "channel"
      ? channelKey(h.channelId)
      : templateKey(h.channelId, h.template, h.language);
    if (halts.has(key)) return;
    halts.set(key, h.reason);
    summary.halted.push(`${key}: ${h.reason}`);
    log("warn", "dispatch.run.halted", { runId: opts.runId, what: key, reason: h.reason });
  };
  const halted = (msg: ClaimedMessage): string | undefined =>
    halts.get(channelKey(msg.channel_id)) ??
      halts.get(templateKey(msg.channel_id, msg.template_name, msg.template_language));

  const process = async (msg: ClaimedMessage): Promise<void> => {
    // Never start a send that could outlive the lease: once it expires the message
    // can be claimed (and sent) by another run, which would be a duplicate.
    if (Date.parse(msg.lease_expires_at) - Date.now() < leaseGuardMs) {
      release(
        msg,
        "lease_too_short",
        `Lease ends within ${leaseGuardMs} ms; not sent by run ${opts.runId}`,
      );
      return;
    }
    const stopped = halted(msg);
    if (stopped !== undefined) {
      release(msg, "halted", `Not sent by run ${opts.runId}: ${stopped} stopped this run`);
      return;
    }
    const t0 = performance.now();
    const sent = await send(msg);
    latencies.push(performance.now() - t0);
    const outcome = toOutcome(msg, sent);
    reporter.add(outcome.result, Date.parse(msg.lease_expires_at));
    if (outcome.result.outcome === "sent") {
      summary.sent++;
      return;
    }
    const code = outcome.error?.code ?? "unknown";
    summary.errors[code] = (summary.errors[code] ?? 0) + 1;
    if (outcome.halt) halt(outcome.halt);
    if (outcome.result.outcome === "retry") {
      summary.retried++;
      log("debug", "dispatch.send.retry", { messageId: msg.message_id, to: msg.to, code });
    } else if (outcome.result.outcome === "deferred") {
      summary.deferred++;
      log("debug", "dispatch.send.deferred", { messageId: msg.message_id, to: msg.to, code });
    } else {
      summary.failed++;
      log("warn", "dispatch.send.failed", {
        messageId: msg.message_id,
        to: msg.to,
        code,
        message: outcome.error?.message,
      });
    }
    if (outcome.optOut) optOut(msg);
  };

  const workerLoop = async (): Promise<void> => {
    while (!signal?.aborted) {
      const msg = buffer.shift();
      if (msg) {
        if (buffer.length < opts.concurrency && canClaim()) void ensureRefill();
        await process(msg);
        continue;
      }
      if (!claiming && !canClaim()) return;
      await ensureRefill();
    }
  };

  log("debug", "dispatch.run.start", {
    runId: opts.runId,
    channelId: opts.channelId ?? null,
    budgetMs: opts.budgetMs,
    concurrency: opts.concurrency,
  });
  try {
    await Promise.all(Array.from({ length: opts.concurrency }, workerLoop));
    if (claiming) await claiming;
    if (signal?.aborted) stop("aborted");
  } catch (err) {
    // Defensive: workers do not throw, but a run must never leave its leases unreported.
    summary.error = String((err as Error)?.message ?? err);
    stop("error");
  }

  // Claimed but not sent (abort, error): release them so they come back without waiting for the lease.
  for (const msg of buffer.splice(0)) {
    release(msg, "released", `Dispatch run ${opts.runId} stopped before sending`);
  }
  await Promise.all(optOuts);
  await reporter.close();

  latencies.sort((a, b) => a - b);
  summary.send_ms = {
    p50: Math.round(percentile(latencies, 0.5)),
    p95: Math.round(percentile(latencies, 0.95)),
    max: Math.round(latencies.at(-1) ?? 0),
  };
  summary.report = reporter.totals;
  summary.duration_ms = Date.now() - started;
  // An idle tick (nothing claimed) is routine: debug, so a ticker every second stays quiet.
  const level = summary.stop_reason === "error" ? "error" : summary.claimed > 0 ? "info" : "debug";
  log(level, "dispatch.run.done", { ...summary });
  return summary;
}
