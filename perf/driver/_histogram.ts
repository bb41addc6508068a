/**
 * Latency histograms: a thin wrapper over `hdr-histogram-js` recording
 * microseconds (1 µs to 1 h, 3 significant digits), with the summary the
 * reports print and a compact encoding for the evidence files.
 *
 * @module
 */
import * as hdr from "hdr-histogram-js";

/** Percentiles and extremes of a histogram, in milliseconds. */
export interface LatencyStats {
  count: number;
  min: number;
  mean: number;
  p50: number;
  p90: number;
  p95: number;
  p99: number;
  max: number;
}

const HIGHEST_US = 3_600_000_000;

/** An HDR histogram of durations; record in milliseconds, stored in microseconds. */
export class LatencyHistogram {
  readonly #h: hdr.Histogram;

  constructor(h?: hdr.Histogram) {
    this.#h = h ?? hdr.build({
      lowestDiscernibleValue: 1,
      highestTrackableValue: HIGHEST_US,
      numberOfSignificantValueDigits: 3,
    });
  }

  /** Records one duration in milliseconds (clamped to the trackable range). */
  record(ms: number): void {
    const us = Math.min(HIGHEST_US, Math.max(1, Math.round(ms * 1000)));
    this.#h.recordValue(us);
  }

  /** Adds every value of another histogram. */
  add(other: LatencyHistogram): void {
    this.#h.add(other.#h);
  }

  get count(): number {
    return this.#h.totalCount;
  }

  /** The value at percentile `p` (0–100), in milliseconds; 0 when empty. */
  percentile(p: number): number {
    return this.count === 0 ? 0 : this.#h.getValueAtPercentile(p) / 1000;
  }

  get mean(): number {
    return this.count === 0 ? 0 : this.#h.mean / 1000;
  }

  get min(): number {
    return this.count === 0 ? 0 : this.#h.minNonZeroValue / 1000;
  }

  get max(): number {
    return this.count === 0 ? 0 : this.#h.maxValue / 1000;
  }

  /** p50/p90/p95/p99/max and friends, in milliseconds. */
  stats(): LatencyStats {
    return {
      count: this.count,
      min: this.min,
      mean: this.mean,
      p50: this.percentile(50),
      p90: this.percentile(90),
      p95: this.percentile(95),
      p99: this.percentile(99),
      max: this.max,
    };
  }

  /** The standard compressed base64 encoding (readable by every HdrHistogram port). */
  encode(): string {
    return hdr.encodeIntoCompressedBase64(this.#h);
  }

  /** Decodes `encode()`'s output. */
  static decode(base64: string): LatencyHistogram {
    return new LatencyHistogram(hdr.decodeFromCompressedBase64(base64));
  }
}
