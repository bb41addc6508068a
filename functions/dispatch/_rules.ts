/**
 * The WhatsApp error rules of an isolate: loaded from `api.waba_error_rules()`
 * on first use and kept for `ttlMs` (default 5 minutes), so a rule corrected in
 * the database reaches running isolates without a deploy. A failed load is not
 * cached (the next run tries again).
 *
 * The rules here only let a run act early (stop sending through a paused
 * channel, classify retries and opt-outs); the database applies the same table
 * to every report, so a run that could not load them still defers and pauses
 * correctly, it just learns it from the report instead.
 *
 * @module
 */
import { type WabaErrorRule, WabaErrorRules } from "../_shared/waba_errors.ts";

/**
 * Wraps a loader in a per-isolate cache.
 *
 * @example
 * const rules = cachedErrorRules(() => wabaErrorRules(getDb()));
 * const r = await rules(); // one RPC per isolate per 5 minutes
 */
export function cachedErrorRules(
  load: () => Promise<WabaErrorRule[]>,
  ttlMs = 300_000,
  now: () => number = Date.now,
): () => Promise<WabaErrorRules> {
  let cached: { at: number; rules: Promise<WabaErrorRules> } | undefined;
  return () => {
    const t = now();
    if (!cached || t - cached.at >= ttlMs) {
      const rules = load().then((rows) => new WabaErrorRules(rows));
      const entry = { at: t, rules };
      cached = entry;
      rules.catch(() => {
        if (cached === entry) cached = undefined;
      });
    }
    return cached.rules;
  };
}
