/**
 * SQL string literals, for the few places that must send values inline: a
 * multi-statement simple-protocol query (one round trip, one implicit
 * transaction) has no bind parameters. Used by `db.ts` (the dispatcher's queue
 * calls) and by the local gateway (`local/gateway/_sql.ts`).
 *
 * @example
 * ```ts
 * import { quoteLiteral } from "./sql_literal.ts";
 *
 * quoteLiteral("it's a\\b"); // "E'it''s a\\\\b'"
 * ```
 *
 * @module
 */

/** Raised for a value that cannot be sent as an SQL literal (a NUL character). */
export class SqlLiteralError extends Error {
  override name = "SqlLiteralError";
}

/**
 * `value` as an `E'…'` literal: backslashes and single quotes doubled. An
 * escape-string literal reads back as exactly `value` whatever
 * `standard_conforming_strings` is. Postgres text cannot hold NUL, so a value
 * with one is refused rather than truncated.
 *
 * @throws {SqlLiteralError} when `value` contains U+0000.
 */
export function quoteLiteral(value: string): string {
  if (value.includes("\0")) {
    throw new SqlLiteralError("Cannot send a value containing a NUL character to Postgres");
  }
  return `E'${value.replaceAll("\\", "\\\\").replaceAll("'", "''")}'`;
}
