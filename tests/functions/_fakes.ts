/**
 * In-memory stand-ins for the queue RPCs, so the function handlers can be
 * tested without a database. They keep the contract that matters: a claim
 * leases at most `max` messages once, a report only counts for leased ones.
 *
 * @module
 */
import type {
  ClaimedMessage,
  MessageResult,
  OptOutResult,
  ReportSummary,
} from "../../functions/_shared/rpc.ts";
// The dispatch function's queue seam, for its unit tests (the module under test).
import type { DispatchQueue } from "../../functions/dispatch/_run.ts";

/** A claimed message for phone number id `pnid` and recipient `to`. */
export function message(id: number, to: string, pnid = "106540352242922"): ClaimedMessage {
  return {
    message_id: id,
    campaign_id: "00000000-0000-4000-8000-0000000000c1",
    channel_id: "00000000-0000-4000-8000-0000000000c2",
    phone_number_id: pnid,
    to,
    template_name: "voucher_issued",
    template_language: "en",
    body_parameters: [`CODE-${id}`],
    attempt: 1,
    lease_owner: "test",
    lease_expires_at: new Date(Date.now() + 60_000).toISOString(),
  };
}

/** `n` messages to distinct recipients +2547000000001, +2547000000002, … */
export function messages(n: number, firstId = 1): ClaimedMessage[] {
  return Array.from(
    { length: n },
    (_, i) => message(firstId + i, `+2547${String(firstId + i).padStart(8, "0")}`),
  );
}

/** A queue with scripted failures; everything it saw is recorded. */
export class FakeQueue implements DispatchQueue {
  readonly waiting: ClaimedMessage[];
  readonly leased = new Set<number | string>();
  readonly reports: MessageResult[][] = [];
  readonly optOuts: { msisdn: string; source: string }[] = [];
  claimCalls = 0;
  /** Errors thrown by the next claim / report calls, in order. */
  claimErrors: unknown[] = [];
  reportErrors: unknown[] = [];

  constructor(initial: ClaimedMessage[] = []) {
    this.waiting = [...initial];
  }

  claim(opts: { max: number }): Promise<ClaimedMessage[]> {
    this.claimCalls++;
    const error = this.claimErrors.shift();
    if (error) return Promise.reject(error);
    const batch = this.waiting.splice(0, opts.max);
    for (const m of batch) this.leased.add(m.message_id);
    return Promise.resolve(batch);
  }

  report(results: MessageResult[]): Promise<ReportSummary> {
    const error = this.reportErrors.shift();
    if (error) return Promise.reject(error);
    this.reports.push(results);
    let applied = 0;
    const summary = {
      applied: 0,
      stale: 0,
      sent: 0,
      retried: 0,
      deferred: 0,
      failed: 0,
      dead: 0,
      unknown: 0,
      cancelled: 0,
    };
    for (const r of results) {
      if (!this.leased.delete(r.message_id)) continue;
      applied++;
      if (r.outcome === "sent") summary.sent++;
      else if (r.outcome === "failed") summary.failed++;
      else if (r.outcome === "deferred") summary.deferred++;
      else summary.retried++;
    }
    return Promise.resolve({ ...summary, applied, stale: results.length - applied });
  }

  optOut(msisdn: string, source: string): Promise<OptOutResult> {
    this.optOuts.push({ msisdn, source });
    return Promise.resolve({ msisdn, opted_out: true, created: true, cancelled_messages: 0 });
  }

  /** Every reported result, flattened. */
  results(): MessageResult[] {
    return this.reports.flat();
  }
}

/** An error shaped like postgres.js's when the server shuts a connection down. */
export function adminShutdown(): Error {
  return Object.assign(new Error("terminating connection due to administrator command"), {
    code: "57P01",
  });
}
