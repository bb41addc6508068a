/**
 * The SQL of one RPC request, sent as ONE simple-protocol message: Postgres runs
 * a multi-statement message as a single implicit transaction (rolled back on
 * any error), so "one transaction per request" costs one round trip:
 *
 * ```sql
 * set transaction read only;                       -- GET/HEAD, or a stable/immutable function
 * select set_config('search_path', …, true), set_config('role', 'anon', true),
 *        set_config('request.jwt.claims', …, true), …;   -- PostgREST's transaction-scoped settings
 * select to_json("api"."f"("a" := pgrst_args."a"))::text as body
 *   from json_to_record('{"a":1}'::json) as pgrst_args("a" integer);
 * ```
 *
 * JSON arguments go through `json_to_record`, as in PostgREST, so JSON values
 * are coerced to the parameter types by Postgres itself; query-string
 * arguments (GET) are text cast to each parameter's type (`name := '…'::type`),
 * as PostgREST binds them, so `?doc={"a":1}` reaches a jsonb parameter as an
 * object, not as a JSON string.
 * Values are inlined as escaped `E'…'` literals (safe whatever
 * `standard_conforming_strings` is); identifiers come from the catalog and are
 * double-quoted.
 *
 * @module
 */
import type { Routine } from "./_schema_cache.ts";
import { quoteLiteral } from "../../functions/_shared/sql_literal.ts";

export { quoteLiteral, SqlLiteralError } from "../../functions/_shared/sql_literal.ts";

/** Double-quoted identifier. */
export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** How the request's arguments reach the function. */
export type CallArgs =
  /**
   * Named arguments: JSON object text and the keys to bind. `firstElement`: the
   * JSON is an array of objects and its first element holds the arguments (what
   * PostgREST's `json_to_recordset(…) LIMIT 1` does with an array body).
   */
  | { kind: "named"; json: string; keys: string[]; firstElement?: boolean }
  /** The whole body to a single unnamed json/jsonb parameter. */
  | { kind: "whole"; json: string }
  /**
   * Query-string arguments (GET/HEAD): text values cast to the parameter types,
   * PostgREST's `DirectArgs`; an array of values for a variadic parameter.
   */
  | { kind: "direct"; values: [name: string, value: string | string[]][] };

/** Everything needed to render the request's SQL. */
export interface RpcStatement {
  readOnly: boolean;
  /** `[name, value]` pairs applied with `set_config(name, value, true)`, in order. */
  settings: [string, string][];
  routine: Routine;
  args: CallArgs;
  /** `[api] max_rows`: LIMIT on set-returning functions (null = none). */
  maxRows: number | null;
  /** `Prefer: count=exact`: also compute the total before max_rows. */
  countTotal: boolean;
  /** `nulls=stripped` media type parameter. */
  stripNulls: boolean;
}

/** The call expression and, for named arguments, the FROM item that binds them. */
export function callParts(routine: Routine, args: CallArgs): { call: string; from: string | null } {
  const fn = `${quoteIdent(routine.schema)}.${quoteIdent(routine.name)}`;
  if (args.kind === "whole") {
    return { call: `${fn}(${quoteLiteral(args.json)}::${routine.params[0].type})`, from: null };
  }
  const byName = new Map(routine.params.map((p) => [p.name, p]));
  if (args.kind === "direct") {
    const named = args.values.map(([name, value]) => {
      const p = byName.get(name)!;
      const text = Array.isArray(value)
        ? `array[${value.map(quoteLiteral).join(", ")}]`
        : quoteLiteral(value);
      return `${p.variadic ? "variadic " : ""}${quoteIdent(name)} := ${text}::${p.type}`;
    });
    return { call: `${fn}(${named.join(", ")})`, from: null };
  }
  if (args.keys.length === 0) return { call: `${fn}()`, from: null };
  const params = args.keys.map((k) => byName.get(k)!);
  const columns = params.map((p) => `${quoteIdent(p.name)} ${p.type}`).join(", ");
  const named = params.map((p) =>
    `${p.variadic ? "variadic " : ""}${quoteIdent(p.name)} := pgrst_args.${quoteIdent(p.name)}`
  ).join(", ");
  return {
    call: `${fn}(${named})`,
    from: `pg_catalog.json_to_record(${
      args.firstElement
        ? `pg_catalog.json_array_element(${quoteLiteral(args.json)}::json, 0)`
        : `${quoteLiteral(args.json)}::json`
    }) as pgrst_args(${columns})`,
  };
}

/**
 * The main query. Result columns: `body` (JSON text, null for void) and, for
 * set-returning functions, `n` (rows returned) and `total` (when counted).
 */
export function mainQuery(s: RpcStatement): string {
  const { call, from } = callParts(s.routine, s.args);
  const strip = (expr: string) => s.stripNulls ? `pg_catalog.json_strip_nulls(${expr})` : expr;
  const fromClause = from ? ` from ${from}` : "";
  const r = s.routine;
  if (r.returnsVoid) return `select (${call})::text as body${fromClause}`;
  if (!r.returnsSet && !r.returnsComposite) {
    return `select ${strip(`pg_catalog.to_json(${call})`)}::text as body${fromClause}`;
  }
  const item = r.returnsComposite ? `${call} as pgrst_row` : `${call} as pgrst_row(pgrst_scalar)`;
  const items = from ? `${from}, ${item}` : item;
  const value = r.returnsComposite ? "pgrst_row" : "pgrst_row.pgrst_scalar";
  if (!r.returnsSet) {
    return `select ${strip(`pg_catalog.to_json(${value})`)}::text as body from ${items}`;
  }
  const total = s.countTotal ? ", pg_catalog.count(*) over () as pgrst_total" : "";
  const limit = s.maxRows !== null ? ` limit ${s.maxRows}` : "";
  return `select pg_catalog.count(*)::int as n, ${
    s.countTotal ? "pg_catalog.max(pgrst_t.pgrst_total)::int" : "null::int"
  } as total, ${
    strip("coalesce(pg_catalog.json_agg(pgrst_t.pgrst_value), '[]')")
  }::text as body from (select ${value} as pgrst_value${total} from ${items}${limit}) pgrst_t`;
}

/**
 * The whole request as one multi-statement message (one round trip, one
 * transaction); `query` renders the main query (JSON by default; `_csv.ts`
 * passes its CSV form).
 */
export function rpcStatement(
  s: RpcStatement,
  query: (s: RpcStatement) => string = mainQuery,
): string {
  const parts: string[] = [];
  if (s.readOnly) parts.push("set transaction read only");
  if (s.settings.length) {
    parts.push(
      `select ${
        s.settings.map(([k, v]) =>
          `pg_catalog.set_config(${quoteLiteral(k)}, ${quoteLiteral(v)}, true)`
        )
          .join(", ")
      }`,
    );
  }
  parts.push(query(s));
  return parts.join(";\n");
}
