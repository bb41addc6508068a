/**
 * Structured logs: one JSON object per line, `info`/`debug` on stdout and
 * `warn`/`error` on stderr, which is what Supabase's log explorer ingests.
 *
 * Secrets never reach the log: any field whose name mentions a token, secret,
 * password, authorization, cookie or API key is replaced by `"[REDACTED]"`,
 * at any depth, and a string that looks like a bearer credential is redacted
 * wherever it appears. Phone numbers in fields such as `to`, `from`, `phone`,
 * `wa_id` or `recipient_id` are masked to their last four digits.
 *
 * Set `LOG_LEVEL` (debug, info, warn, error; default info) to filter.
 *
 * @example
 * log("info", "waba.send.ok", { to: "+254712345678", wamid, accessToken });
 * // {"ts":"…","level":"info","event":"waba.send.ok","to":"+*******5678","wamid":"…","accessToken":"[REDACTED]"}
 *
 * @module
 */

/** Severity, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const SECRET_KEY = /token|secret|passw(or)?d|authorization|api[-_]?key|cookie|signature/i;
const PHONE_KEY =
  /^(to|from|phone|phone_?number|msisdn|wa_?id|recipient(_?id)?|display_phone_number)$/i;
const BEARER = /^(bearer|basic)\s+\S+/i;
const MAX_DEPTH = 6;
const REDACTED = "[REDACTED]";

function envLevel(): number {
  try {
    const value = Deno.env.get("LOG_LEVEL")?.toLowerCase();
    if (value && value in LEVELS) return LEVELS[value as LogLevel];
  } catch {
    // No env permission: keep the default.
  }
  return LEVELS.info;
}

let minLevel: number | undefined;

/**
 * Masks a phone number to its last four digits, keeping a leading `+`. The
 * mask has a fixed width so it does not reveal the number's length.
 *
 * @example
 * maskPhone("+254712345678"); // "+*******5678"
 * maskPhone("254712345678");  // "*******5678"
 */
export function maskPhone(phone: string): string {
  const digits = phone.replace(/\D/g, "");
  const plus = phone.trim().startsWith("+") ? "+" : "";
  if (digits.length <= 4) return `${plus}****`;
  return `${plus}*******${digits.slice(-4)}`;
}

/**
 * Returns a log-safe copy of `value`: secret-named fields redacted, phone
 * fields masked, errors reduced to `{name, message}`, cycles and deep nesting cut.
 *
 * @example
 * redact({ headers: { Authorization: "Bearer x" }, to: "+254712345678" });
 * // { headers: { Authorization: "[REDACTED]" }, to: "+*******5678" }
 */
export function redact(value: unknown): unknown {
  return redactValue(value, undefined, 0, new WeakSet());
}

function redactValue(
  value: unknown,
  key: string | undefined,
  depth: number,
  seen: WeakSet<object>,
): unknown {
  if (key !== undefined && SECRET_KEY.test(key)) return REDACTED;
  if (typeof value === "string") {
    if (BEARER.test(value)) return REDACTED;
    if (key !== undefined && PHONE_KEY.test(key)) return maskPhone(value);
    return value;
  }
  if (typeof value === "bigint") return value.toString();
  if (value === null || typeof value !== "object") return value;
  if (value instanceof Date) return value.toISOString();
  if (value instanceof Error) {
    return { name: value.name, message: value.message };
  }
  if (seen.has(value)) return "[Circular]";
  if (depth >= MAX_DEPTH) return "[Truncated]";
  seen.add(value);
  if (Array.isArray(value)) {
    return value.map((item) => redactValue(item, key, depth + 1, seen));
  }
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = redactValue(v, k, depth + 1, seen);
  return out;
}

/**
 * Writes one JSON line. `event` is a stable dotted name (`waba.send.retryable`);
 * `fields` are merged in after redaction and never overwrite `ts`, `level` or `event`.
 *
 * @example
 * log("warn", "waba.send.retryable", { code: "waba_130429", retryAfterSeconds: 4 });
 */
export function log(level: LogLevel, event: string, fields: Record<string, unknown> = {}): void {
  minLevel ??= envLevel();
  if (LEVELS[level] < minLevel) return;
  const { ts: _ts, level: _level, event: _event, ...safe } = redact(fields) as Record<
    string,
    unknown
  >;
  const line = JSON.stringify({ ts: new Date().toISOString(), level, event, ...safe });
  if (LEVELS[level] >= LEVELS.warn) console.error(line);
  else console.log(line);
}
