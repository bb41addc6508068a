/**
 * Open-model arrival schedules: when each iteration of a `constant-arrival-rate`
 * or `ramping-arrival-rate` executor starts, as an offset from the executor's
 * start. The schedule depends only on the executor, never on how fast earlier
 * iterations finished — that is what keeps coordinated omission out.
 *
 * @module
 */
import { parseDuration } from "../scenarios/_common.ts";
import type { Executor } from "../scenarios/_types.ts";

/** Raised for an executor the driver cannot run. */
export class ExecutorError extends Error {
  override name = "ExecutorError";
}

/** A linear piece of the arrival rate: from `r0` to `r1` (iterations per ms) over [t0, t0+len). */
interface Segment {
  t0: number;
  len: number;
  r0: number;
  r1: number;
  /** Iterations started before t0. */
  n0: number;
}

/** An arrival schedule: `startOf(i)` is the offset (ms) of iteration i, or null past the end. */
export interface Schedule {
  /** Total length of the executor in ms (without graceful stop). */
  durationMs: number;
  /** Offset where the executor starts (its `startTime`). */
  startTimeMs: number;
  /** Most iterations in flight at once. */
  maxInFlight: number;
  /** Iterations the schedule will start in total. */
  total: number;
  startOf(i: number): number | null;
}

/**
 * Builds the schedule of an executor. The i-th iteration (0-based) starts when the
 * integral of the rate reaches i, so a constant rate of r per second starts
 * iterations at 0, 1/r, 2/r, … seconds.
 *
 * @example
 * const s = buildSchedule({ executor: "constant-arrival-rate", rate: 2, duration: "1s", preAllocatedVUs: 1 });
 * [s.startOf(0), s.startOf(1), s.startOf(2)]; // [0, 500, null]
 */
export function buildSchedule(executor: Executor): Schedule {
  const unit = parseDuration(executor.timeUnit ?? "1s");
  const startTimeMs = executor.startTime ? parseDuration(executor.startTime) : 0;
  const maxInFlight = Math.max(executor.maxVUs ?? 0, executor.preAllocatedVUs);
  if (!(maxInFlight >= 1)) {
    throw new ExecutorError("An executor needs preAllocatedVUs >= 1");
  }
  const segments: Segment[] = [];
  if (executor.executor === "constant-arrival-rate") {
    if (!(executor.rate > 0)) {
      throw new ExecutorError(`rate must be positive, got ${executor.rate}`);
    }
    const len = parseDuration(executor.duration);
    const r = executor.rate / unit;
    segments.push({ t0: 0, len, r0: r, r1: r, n0: 0 });
  } else if (executor.executor === "ramping-arrival-rate") {
    let t = 0;
    let n = 0;
    let rate = (executor.startRate ?? 0) / unit;
    for (const stage of executor.stages) {
      const len = parseDuration(stage.duration);
      const r1 = stage.target / unit;
      if (r1 < 0) {
        throw new ExecutorError(
          `Stage target must not be negative, got ${stage.target}`,
        );
      }
      segments.push({ t0: t, len, r0: rate, r1, n0: n });
      n += ((rate + r1) / 2) * len;
      t += len;
      rate = r1;
    }
  } else {
    throw new ExecutorError(
      `Executor "${
        (executor as { executor: string }).executor
      }" is not supported (use constant-arrival-rate or ramping-arrival-rate)`,
    );
  }
  const last = segments[segments.length - 1];
  const durationMs = last ? last.t0 + last.len : 0;
  const totalArea = last ? last.n0 + ((last.r0 + last.r1) / 2) * last.len : 0;
  // Iteration i starts where the cumulative count reaches i; i < total.
  const total = Math.max(0, Math.ceil(totalArea - 1e-9));

  function startOf(i: number): number | null {
    if (i < 0 || i >= total) return null;
    for (const s of segments) {
      const area = ((s.r0 + s.r1) / 2) * s.len;
      if (i > s.n0 + area + 1e-9) continue;
      const need = i - s.n0; // iterations to accumulate within this segment
      if (need <= 0) return s.t0;
      const a = (s.r1 - s.r0) / (2 * s.len); // n(τ) = r0·τ + a·τ²
      let tau: number;
      if (Math.abs(a) < 1e-15) tau = need / s.r0;
      else tau = (-s.r0 + Math.sqrt(s.r0 * s.r0 + 4 * a * need)) / (2 * a);
      if (!Number.isFinite(tau)) continue;
      return s.t0 + Math.min(Math.max(tau, 0), s.len);
    }
    return null;
  }

  return { durationMs, startTimeMs, maxInFlight, total, startOf };
}
