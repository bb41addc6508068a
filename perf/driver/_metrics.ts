/**
 * Metric samples as k6 models them: named metrics of four types (counter,
 * rate, trend, gauge), each sample carrying tags, queried with k6's
 * `metric{tag:value,…}` sub-metric filters.
 *
 * @module
 */
import { LatencyHistogram } from "./_histogram.ts";

/** k6's metric types. */
export type MetricType = "counter" | "rate" | "trend" | "gauge";

/** One recorded value. */
export interface Sample {
  value: number;
  tags: Readonly<Record<string, string>>;
  /** Milliseconds since the run started. */
  t: number;
}

/** Built-in metrics the driver records, with k6's names and types. */
export const BUILTIN_METRICS: Readonly<Record<string, MetricType>> = {
  http_reqs: "counter",
  http_req_duration: "trend",
  http_req_failed: "rate",
  iterations: "counter",
  iteration_duration: "trend",
  dropped_iterations: "counter",
  /** How late an iteration started against its schedule (driver health, not in k6). */
  iteration_start_lag: "trend",
};

/** Raised when a metric is used with a type or name the store does not know. */
export class MetricError extends Error {
  override name = "MetricError";
}

/** A parsed `name{tag:value,…}` selector. */
export interface MetricSelector {
  name: string;
  filter: Record<string, string>;
}

/**
 * Parses a k6 threshold key such as `http_req_duration{endpoint:redeem_voucher}`.
 *
 * @example
 * parseSelector("http_req_failed{scenario:x,endpoint:y}");
 * // { name: "http_req_failed", filter: { scenario: "x", endpoint: "y" } }
 */
export function parseSelector(key: string): MetricSelector {
  const m = key.trim().match(/^([A-Za-z_][A-Za-z0-9_]*)(?:\{(.*)\})?$/);
  if (!m) throw new MetricError(`Cannot parse metric selector "${key}"`);
  const filter: Record<string, string> = {};
  if (m[2] !== undefined && m[2].trim() !== "") {
    for (const part of m[2].split(",")) {
      const idx = part.indexOf(":");
      if (idx <= 0) {
        throw new MetricError(`Cannot parse tag filter "${part}" in "${key}"`);
      }
      filter[part.slice(0, idx).trim()] = part.slice(idx + 1).trim();
    }
  }
  return { name: m[1], filter };
}

function matches(
  tags: Readonly<Record<string, string>>,
  filter: Record<string, string>,
): boolean {
  for (const [k, v] of Object.entries(filter)) if (tags[k] !== v) return false;
  return true;
}

/** Every sample of a run, by metric. */
export class MetricStore {
  readonly #types = new Map<string, MetricType>(
    Object.entries(BUILTIN_METRICS),
  );
  readonly #samples = new Map<string, Sample[]>();

  /** Declares a custom metric (idempotent; a conflicting type is an error). */
  define(name: string, type: MetricType): void {
    const known = this.#types.get(name);
    if (known && known !== type) {
      throw new MetricError(
        `Metric "${name}" is a ${known}; cannot redefine it as a ${type}`,
      );
    }
    this.#types.set(name, type);
  }

  typeOf(name: string): MetricType | undefined {
    return this.#types.get(name);
  }

  add(
    name: string,
    value: number,
    tags: Readonly<Record<string, string>>,
    t: number,
  ): void {
    if (!this.#types.has(name)) {
      throw new MetricError(`Unknown metric "${name}": define it first`);
    }
    let list = this.#samples.get(name);
    if (!list) this.#samples.set(name, list = []);
    list.push({ value, tags, t });
  }

  /** Samples of a metric matching a tag filter. */
  select(name: string, filter: Record<string, string> = {}): Sample[] {
    return (this.#samples.get(name) ?? []).filter((s) => matches(s.tags, filter));
  }

  /** Names of metrics that have samples. */
  names(): string[] {
    return [...this.#samples.keys()];
  }

  /** A latency histogram of a trend's matching samples. */
  histogram(
    name: string,
    filter: Record<string, string> = {},
  ): LatencyHistogram {
    const h = new LatencyHistogram();
    for (const s of this.select(name, filter)) h.record(s.value);
    return h;
  }
}
