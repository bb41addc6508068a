/**
 * Batches send verdicts into `api.report_message_results` calls.
 *
 * A verdict is flushed when `batchSize` are waiting or `intervalMs` after the
 * first one arrived, whichever comes first, so a crash loses at most that many
 * unreported sends (they come back after their lease and are sent again: the
 * at-least-once duplicates). A flush that hits a transient database error keeps
 * its items and retries with backoff until their lease expires — after that a
 * report would be stale anyway (the queue ignores and counts it), so the items
 * are dropped and counted as `abandoned`.
 *
 * @module
 */
import { isTransientDbError } from "../_shared/db.ts";
import { log } from "../_shared/log.ts";
import { type MessageResult, type ReportSummary, RPC_BATCH_LIMIT } from "../_shared/rpc.ts";

/** Calls `api.report_message_results`. */
export type ReportFn = (results: MessageResult[]) => Promise<ReportSummary>;

/** Running totals of everything reported. */
export interface ReportTotals {
  calls: number;
  applied: number;
  stale: number;
  sent: number;
  retried: number;
  deferred: number;
  failed: number;
  dead: number;
  unknown: number;
  cancelled: number;
  /** Verdicts never reported (lease gone while the database was unreachable, or a rejected batch). */
  abandoned: number;
  /** Report calls that failed (and were retried, or abandoned). */
  errors: number;
}

interface Pending {
  result: MessageResult;
  leaseExpiresAtMs: number;
}

/** Options of {@link Reporter}. */
export interface ReporterOptions {
  batchSize: number;
  intervalMs: number;
  now?: () => number;
}

/**
 * Batching reporter; `add` never blocks, `close` flushes what is left.
 *
 * @example
 * const reporter = new Reporter((items) => reportMessageResults(db, items, worker), { batchSize: 50, intervalMs: 200 });
 * reporter.add(result, Date.parse(msg.lease_expires_at));
 * await reporter.close();
 */
export class Reporter {
  readonly totals: ReportTotals = {
    calls: 0,
    applied: 0,
    stale: 0,
    sent: 0,
    retried: 0,
    deferred: 0,
    failed: 0,
    dead: 0,
    unknown: 0,
    cancelled: 0,
    abandoned: 0,
    errors: 0,
  };
  #queue: Pending[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #flushing: Promise<void> | undefined;
  #failures = 0;
  readonly #report: ReportFn;
  readonly #opts: Required<ReporterOptions>;

  constructor(report: ReportFn, opts: ReporterOptions) {
    this.#report = report;
    this.#opts = {
      now: Date.now,
      ...opts,
      batchSize: Math.max(1, Math.min(RPC_BATCH_LIMIT, opts.batchSize)),
    };
  }

  /** Verdicts waiting to be reported. */
  get pending(): number {
    return this.#queue.length;
  }

  /** Queues a verdict; `leaseExpiresAtMs` bounds how long it is worth retrying. */
  add(result: MessageResult, leaseExpiresAtMs: number): void {
    this.#queue.push({ result, leaseExpiresAtMs });
    if (this.#queue.length >= this.#opts.batchSize) this.#kick();
    else this.#timer ??= setTimeout(() => this.#kick(), this.#opts.intervalMs);
  }

  #kick(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#flushing ??= this.#drain().finally(() => {
      this.#flushing = undefined;
      if (this.#queue.length > 0) {
        this.#timer ??= setTimeout(() => this.#kick(), this.#opts.intervalMs);
      }
    });
  }

  /** Reports batches until the queue is empty or a transient error asks for a pause. */
  async #drain(): Promise<void> {
    while (this.#queue.length > 0) {
      this.#dropExpired();
      const batch = this.#queue.splice(0, this.#opts.batchSize);
      if (batch.length === 0) return;
      try {
        const summary = await this.#report(batch.map((p) => p.result));
        this.#failures = 0;
        const t = this.totals;
        t.calls++;
        t.applied += summary.applied;
        t.stale += summary.stale;
        t.sent += summary.sent;
        t.retried += summary.retried;
        t.deferred += summary.deferred;
        t.failed += summary.failed;
        t.dead += summary.dead;
        t.unknown += summary.unknown;
        t.cancelled += summary.cancelled;
        if (summary.stale > 0) {
          log("warn", "dispatch.report.stale", { stale: summary.stale, batch: batch.length });
        }
      } catch (err) {
        this.totals.errors++;
        if (isTransientDbError(err)) {
          this.#queue.unshift(...batch);
          this.#failures++;
          const waitMs = Math.min(2000, 100 * 2 ** Math.min(this.#failures, 5));
          log("warn", "dispatch.report.retry", { error: err, pending: this.#queue.length, waitMs });
          await new Promise((r) => setTimeout(r, waitMs));
          return; // the finally() reschedules
        }
        // A rejected batch (a contract bug): its messages come back after their lease.
        this.totals.abandoned += batch.length;
        log("error", "dispatch.report.rejected", { error: err, batch: batch.length });
      }
    }
  }

  #dropExpired(): void {
    const now = this.#opts.now();
    const before = this.#queue.length;
    this.#queue = this.#queue.filter((p) => p.leaseExpiresAtMs > now);
    const dropped = before - this.#queue.length;
    if (dropped > 0) {
      this.totals.abandoned += dropped;
      log("error", "dispatch.report.abandoned", { dropped, reason: "lease expired before report" });
    }
  }

  /** Flushes everything, retrying transient failures until `giveUpAtMs` (or the leases) run out. */
  async close(giveUpAtMs = Infinity): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    while (true) {
      if (this.#flushing) await this.#flushing;
      clearTimeout(this.#timer);
      this.#timer = undefined;
      if (this.#queue.length === 0) return;
      if (this.#opts.now() >= giveUpAtMs) {
        this.totals.abandoned += this.#queue.length;
        log("error", "dispatch.report.abandoned", {
          dropped: this.#queue.length,
          reason: "gave up at shutdown",
        });
        this.#queue = [];
        return;
      }
      this.#flushing ??= this.#drain().finally(() => this.#flushing = undefined);
    }
  }
}
