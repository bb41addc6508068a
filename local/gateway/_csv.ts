/**
 * `Accept: text/csv` on `/rest/v1/rpc/<fn>`, rendered as PostgREST renders it:
 * the CSV is built in SQL, in the request's one statement.
 *
 * PostgREST (src/library/PostgREST/Query/SqlFragment.hs, `asCsvF`) answers a
 * CSV request with
 *
 * - a header row: the column names of the first row, in order
 *   (`json_object_keys(row_to_json(first row))`), or an empty line when there
 *   are no rows;
 * - one line per row: the row's text as Postgres renders a record, without the
 *   enclosing parentheses (`substring(row::text, 2, length(row::text) - 2)`),
 *   so values are quoted, doubled and escaped by Postgres's record output rules
 *   (a value with a comma, quote, backslash, parenthesis or whitespace is
 *   double-quoted) and NULL is empty;
 * - lines joined with `\n` (no trailing newline), `Content-Type: text/csv;
 *   charset=utf-8`, and the same `Content-Range` as JSON.
 *
 * A function returning a scalar (or a set of scalars) has one column,
 * `pgrst_scalar`, as in PostgREST. Its tests (test/spec/Feature/Query/RpcSpec.hs,
 * "returns CSV") expect `id\n3\n4` for a set of two one-column rows.
 *
 * @example
 * ```ts
 * import { csvStatement } from "./_csv.ts";
 * const sql = csvStatement(statement); // same settings and call as rpcStatement(statement)
 * ```
 *
 * @module
 */
import { callParts, type RpcStatement, rpcStatement } from "./_sql.ts";

/** The `Content-Type` of a CSV answer, PostgREST's. */
export const CSV_CONTENT_TYPE = "text/csv; charset=utf-8";

/** Whether an `Accept` media range asks for CSV (`text/csv`, parameters ignored as PostgREST does). */
export function isCsvRange(type: string): boolean {
  return type === "text/csv";
}

/**
 * The main query of a CSV answer: columns `n` (rows), `total` (when counted)
 * and `body` (the CSV text), like `mainQuery`'s JSON form.
 */
export function csvQuery(s: RpcStatement): string {
  const { call, from } = callParts(s.routine, s.args);
  const r = s.routine;
  // The whole row, named pgrst_row: a composite result's columns, or a row of
  // the one column pgrst_scalar for a scalar result (a scalar function in FROM
  // would make pgrst_row the bare value, so it is selected, as PostgREST does).
  const item = r.returnsComposite
    ? `${call} as pgrst_row`
    : `${from ? "lateral " : ""}(select ${call} as pgrst_scalar) pgrst_row`;
  const items = from ? `${from}, ${item}` : item;
  const total = s.countTotal ? ", pg_catalog.count(*) over () as pgrst_total" : "";
  const limit = r.returnsSet && s.maxRows !== null ? ` limit ${s.maxRows}` : "";
  const text = "pgrst_source.pgrst_value::text";
  return `with pgrst_source as (select pgrst_row as pgrst_value${total} from ${items}${limit}) ` +
    `select pg_catalog.count(*)::int as n, ${
      s.countTotal ? "pg_catalog.max(pgrst_source.pgrst_total)::int" : "null::int"
    } as total, ` +
    `(select coalesce(pg_catalog.string_agg(pgrst_h.k, ','), '') from (` +
    `select pg_catalog.json_object_keys(pg_catalog.row_to_json(pgrst_first.pgrst_value)) as k ` +
    `from (select pgrst_value from pgrst_source limit 1) pgrst_first) pgrst_h)` +
    ` || E'\\n' || ` +
    `coalesce(pg_catalog.string_agg(pg_catalog.substr(${text}, 2, pg_catalog.length(${text}) - 2), E'\\n'), '')` +
    ` as body from pgrst_source`;
}

/** The whole request as one message, as `rpcStatement`, answering CSV. */
export function csvStatement(s: RpcStatement): string {
  return rpcStatement(s, csvQuery);
}
