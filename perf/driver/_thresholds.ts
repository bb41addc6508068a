/**
 * k6 threshold expressions, evaluated over a MetricStore: `p(95)<500`,
 * `avg<200`, `med<=100`, `min>0`, `max<2000`, `rate<0.01`, `count==0`,
 * `value>=1`, on a metric or a `metric{tag:value}` sub-metric.
 *
 * @module
 */
import type { Threshold } from "../scenarios/_types.ts";
import { MetricError, type MetricStore, type MetricType, parseSelector } from "./_metrics.ts";

/** Raised for an expression k6 would also reject. */
export class ThresholdSyntaxError extends Error {
  override name = "ThresholdSyntaxError";
}

/** A parsed expression. */
export interface ThresholdExpression {
  /** `avg`, `min`, `max`, `med`, `count`, `rate`, `value`, or `p(N)`. */
  aggregation: string;
  /** The N of `p(N)`, else null. */
  percentile: number | null;
  operator: "<" | "<=" | ">" | ">=" | "==" | "===" | "!=";
  bound: number;
}

/** The verdict on one threshold. */
export interface ThresholdVerdict {
  metric: string;
  expression: string;
  /** Observed aggregate (null when the metric has no matching samples). */
  observed: number | null;
  ok: boolean;
  /** True when no sample matched: as k6, the threshold passes vacuously. */
  noData: boolean;
  abortOnFail: boolean;
}

const EXPR =
  /^\s*(avg|min|max|med|count|rate|value|p\(\s*(\d+(?:\.\d+)?)\s*\))\s*(<=|>=|===|==|!=|<|>)\s*(-?\d+(?:\.\d+)?(?:e-?\d+)?)\s*$/;

/**
 * Parses `p(95)<500` and friends.
 *
 * @example
 * parseThreshold("p(99.9) <= 1500"); // {aggregation: "p(99.9)", percentile: 99.9, operator: "<=", bound: 1500}
 */
export function parseThreshold(expression: string): ThresholdExpression {
  const m = expression.match(EXPR);
  if (!m) {
    throw new ThresholdSyntaxError(`Cannot parse threshold "${expression}"`);
  }
  const percentile = m[2] !== undefined ? Number(m[2]) : null;
  if (percentile !== null && (percentile < 0 || percentile > 100)) {
    throw new ThresholdSyntaxError(
      `Percentile out of range in threshold "${expression}"`,
    );
  }
  return {
    aggregation: percentile !== null ? `p(${percentile})` : m[1],
    percentile,
    operator: m[3] as ThresholdExpression["operator"],
    bound: Number(m[4]),
  };
}

const ALLOWED: Record<MetricType, (agg: string) => boolean> = {
  trend: (a) => ["avg", "min", "max", "med", "count"].includes(a) || a.startsWith("p("),
  rate: (a) => a === "rate",
  counter: (a) => a === "count" || a === "rate",
  gauge: (a) => ["value", "min", "max"].includes(a),
};

function compare(
  observed: number,
  op: ThresholdExpression["operator"],
  bound: number,
): boolean {
  switch (op) {
    case "<":
      return observed < bound;
    case "<=":
      return observed <= bound;
    case ">":
      return observed > bound;
    case ">=":
      return observed >= bound;
    case "==":
    case "===":
      return observed === bound;
    case "!=":
      return observed !== bound;
  }
}

/**
 * Evaluates every threshold of a k6 `options.thresholds` object.
 * `durationSeconds` is the run's length (a counter's `rate` is count per second).
 */
export function evaluateThresholds(
  thresholds: Record<string, Threshold[]>,
  store: MetricStore,
  durationSeconds: number,
): ThresholdVerdict[] {
  const verdicts: ThresholdVerdict[] = [];
  for (const [key, list] of Object.entries(thresholds)) {
    const selector = parseSelector(key);
    const type = store.typeOf(selector.name);
    if (!type) {
      throw new MetricError(`Threshold on unknown metric "${selector.name}"`);
    }
    for (const item of list) {
      const text = typeof item === "string" ? item : item.threshold;
      const abortOnFail = typeof item === "string" ? false : item.abortOnFail === true;
      const expr = parseThreshold(text);
      if (!ALLOWED[type](expr.aggregation)) {
        throw new ThresholdSyntaxError(
          `Threshold "${text}" uses ${expr.aggregation}, which a ${type} metric ("${selector.name}") does not have`,
        );
      }
      const samples = store.select(selector.name, selector.filter);
      // A counter with no samples is a real zero (k6 reports dropped_iterations=0 so).
      if (samples.length === 0 && type !== "counter") {
        verdicts.push({
          metric: key,
          expression: text,
          observed: null,
          ok: true,
          noData: true,
          abortOnFail,
        });
        continue;
      }
      let observed: number;
      if (type === "trend") {
        const values = samples.map((s) => s.value);
        if (expr.aggregation === "avg") {
          observed = values.reduce((a, b) => a + b, 0) / values.length;
        } else if (expr.aggregation === "min") {
          observed = values.reduce((a, b) => Math.min(a, b));
        } else if (expr.aggregation === "max") {
          observed = values.reduce((a, b) => Math.max(a, b));
        } else if (expr.aggregation === "count") observed = values.length;
        else {
          const h = store.histogram(selector.name, selector.filter);
          observed = h.percentile(
            expr.aggregation === "med" ? 50 : expr.percentile!,
          );
        }
      } else if (type === "rate") {
        observed = samples.filter((s) => s.value !== 0).length / samples.length;
      } else if (type === "counter") {
        const sum = samples.reduce((a, s) => a + s.value, 0);
        observed = expr.aggregation === "count" ? sum : sum / Math.max(durationSeconds, 1e-9);
      } else {
        const values = samples.map((s) => s.value);
        observed = expr.aggregation === "value"
          ? values[values.length - 1]
          : expr.aggregation === "min"
          ? values.reduce((a, b) => Math.min(a, b))
          : values.reduce((a, b) => Math.max(a, b));
      }
      verdicts.push({
        metric: key,
        expression: text,
        observed,
        ok: compare(observed, expr.operator, expr.bound),
        noData: false,
        abortOnFail,
      });
    }
  }
  return verdicts;
}
