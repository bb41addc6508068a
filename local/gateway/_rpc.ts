/**
 * `/rest/v1/rpc/<fn>`: PostgREST's function call, for what supabase-js uses.
 *
 * - POST with a JSON object of named arguments (or, for a function with a
 *   single unnamed json/jsonb parameter, the whole body). Other bodies as
 *   PostgREST's `payloadAttributes` (`src/PostgREST/ApiRequest/Payload.hs`)
 *   treats them: an array of objects with the same keys is read as its first
 *   object (`json_to_recordset … LIMIT 1`); an array with anything else, or
 *   objects with different keys, is 400 PGRST102 "All object keys must match";
 *   a scalar (`5`, `"x"`, `true`, `null`) or `[]` is truncated to an empty
 *   array, i.e. no arguments — exactly what `{}` would do;
 * - GET/HEAD with query parameters, each cast from text to its parameter's
 *   type (PostgREST's `DirectArgs`; a repeated parameter: the last value, or
 *   all of them for a variadic one), in a READ ONLY transaction (a volatile
 *   function that writes then fails with 25006 → 405, exactly as PostgREST);
 *   POST to a stable/immutable function is READ ONLY too;
 * - nesting is capped (`_nesting.ts`): JSON deeper than 64 levels, or an array
 *   argument of more than 6 dimensions, is 400 (PGRST102 in a body, PGRST100 in
 *   the query string) where hosted PostgREST would pass it to Postgres and
 *   answer 500 (54001 / 54000);
 * - `Content-Profile` (POST) / `Accept-Profile` (GET) choose the schema;
 * - results: scalar → JSON value, composite → object, SETOF → array,
 *   void → 204 without body; `Accept: application/vnd.pgrst.object+json`
 *   (supabase-js `.single()`), `nulls=stripped` and `Prefer: count=exact`;
 *   `Accept: text/csv` (supabase-js `.csv()`) renders CSV as PostgREST does (`_csv.ts`).
 *
 * Row filters, `select=` shaping, ordering and paging of RPC results are not
 * implemented: they answer PGRST127 instead of being silently ignored.
 *
 * @module
 */
import type { GatewayConfig } from "./_config.ts";
import {
  ApiError,
  fromDbFailure,
  invalidBody,
  invalidQueryParam,
  invalidRpcMethod,
  mediaTypeError,
  noSchemaCache,
  notImplemented,
  singularityError,
  unacceptableSchema,
} from "./_errors.ts";
import type { AuthResult } from "./_jwt.ts";
import { type Admission, isConnectionLoss, type RequestPool } from "./_pool.ts";
import { findRoutine, matchesParams, noRpcError, type SchemaCache } from "./_schema_cache.ts";
import { type CallArgs, quoteIdent, rpcStatement } from "./_sql.ts";
import { arrayDimensions, MAX_ARRAY_DIMS, MAX_JSON_DEPTH, nestingDepth } from "./_nesting.ts";
import type { Routine } from "./_schema_cache.ts";
import { CSV_CONTENT_TYPE, csvStatement, isCsvRange } from "./_csv.ts";

/** What the RPC handler needs from the gateway. */
export interface RpcContext {
  config: GatewayConfig;
  pool: RequestPool;
  cache: SchemaCache;
  admission: Admission;
}

const MAX_BODY_BYTES = 10 * 1024 * 1024;
const RESERVED = new Set(["select", "columns", "on_conflict"]);
const RESERVED_SUFFIX = new Set(["order", "limit", "offset", "and", "or"]);
/** PostgREST's filter operators: a query value starting with one is a filter, not an argument. */
const OPERATORS = new Set(
  ("eq gte gt lte lt neq like ilike cs cd ov sl sr nxr nxl adj match imatch " +
    "fts plfts phfts wfts not is in isdistinct").split(" "),
);

type Accept = { single: boolean; stripNulls: boolean; csv?: boolean };

/** Picks the response media type from `Accept`, as PostgREST's content negotiation does. */
function negotiate(accept: string | null): Accept {
  if (!accept) return { single: false, stripNulls: false };
  const ranges = accept.split(",").map((r) => r.trim()).filter(Boolean);
  for (const range of ranges) {
    const [type, ...params] = range.split(";").map((p) => p.trim().toLowerCase());
    const stripNulls = params.includes("nulls=stripped");
    if (type === "application/json" || type === "*/*" || type === "application/*") {
      return { single: false, stripNulls: false };
    }
    if (type === "application/vnd.pgrst.object+json" || type === "application/vnd.pgrst.object") {
      return { single: true, stripNulls };
    }
    if (type === "application/vnd.pgrst.array+json" || type === "application/vnd.pgrst.array") {
      return { single: false, stripNulls };
    }
    if (isCsvRange(type)) return { single: false, stripNulls: false, csv: true };
  }
  throw mediaTypeError(ranges);
}

/** PostgREST's `hasOperator || hasFtsOperator` on a query-string value. */
function hasOperator(value: string): boolean {
  const parts = value.split(".");
  if (parts[0] === "not") return parts.length > 1;
  return OPERATORS.has(parts[0]) || /^(fts|plfts|phfts|wfts)\(/.test(value);
}

/** Splits the query string into RPC arguments (GET) and rejects what is not implemented. */
function queryArguments(url: URL, isRead: boolean): Map<string, string[]> {
  const args = new Map<string, string[]>();
  for (const [key, value] of url.searchParams) {
    if (key === "apikey") continue; // Kong's key-auth credential, not an argument
    const last = key.split(".").at(-1)!;
    if (key === "select") {
      if (value.trim() !== "*" && value.trim() !== "") {
        throw notImplemented(`The local gateway does not shape RPC results (select=${value})`);
      }
      continue;
    }
    if (RESERVED.has(key) || RESERVED_SUFFIX.has(last)) {
      throw notImplemented(`The local gateway does not support the "${key}" parameter on RPC`);
    }
    if (key.includes(".") || hasOperator(value)) {
      throw notImplemented(`The local gateway does not filter RPC results (${key}=${value})`);
    }
    if (isRead) args.set(key, [...(args.get(key) ?? []), value]);
  }
  return args;
}

async function readBody(req: Request): Promise<string> {
  const length = Number(req.headers.get("content-length") ?? 0);
  if (length > MAX_BODY_BYTES) {
    throw new ApiError(413, {
      code: "PGRST102",
      message: `Request body larger than ${MAX_BODY_BYTES} bytes`,
      details: null,
      hint: null,
    });
  }
  return await req.text();
}

interface Payload {
  keys: Set<string>;
  /** JSON text bound to the arguments (the raw body for POST). */
  json: string;
  /** The parsed body (POST), to check array arguments once the function is known. */
  value?: unknown;
  /** The body is an array of objects: the arguments are its first element. */
  firstElement?: boolean;
}

function tooDeep(where: string): string {
  return `${where} nests JSON deeper than ${MAX_JSON_DEPTH} levels`;
}

const NESTING_HINT =
  `Arguments may nest JSON at most ${MAX_JSON_DEPTH} levels and arrays at most ${MAX_ARRAY_DIMS} dimensions`;

/** A POST body as PostgREST's `payloadAttributes` reads it (see the module doc). */
async function postPayload(req: Request): Promise<Payload> {
  const contentType = (req.headers.get("content-type") ?? "application/json").split(";")[0]
    .trim().toLowerCase();
  if (contentType !== "application/json" && contentType !== "") {
    throw invalidBody(`Content-Type not acceptable: ${contentType}`);
  }
  const text = await readBody(req);
  // PostgREST: an empty body to an RPC is `{}`; anything else must be JSON.
  if (text === "") return { keys: new Set(), json: "{}", value: {} };
  if (nestingDepth(text, "json", MAX_JSON_DEPTH) > MAX_JSON_DEPTH) {
    throw invalidBody(tooDeep("The request body"), NESTING_HINT);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw invalidBody();
  }
  if (typeof value !== "object" || value === null) {
    return { keys: new Set(), json: "[]", value: [] }; // "truncate everything else to an empty array"
  }
  if (!Array.isArray(value)) return { keys: new Set(Object.keys(value)), json: text, value };
  if (value.length === 0) return { keys: new Set(), json: "[]", value };
  const isObject = (v: unknown): v is Record<string, unknown> =>
    typeof v === "object" && v !== null && !Array.isArray(v);
  if (!isObject(value[0])) throw invalidBody("All object keys must match");
  const keys = new Set(Object.keys(value[0]));
  const uniform = value.every((v) =>
    isObject(v) && Object.keys(v).length === keys.size && Object.keys(v).every((k) => keys.has(k))
  );
  if (!uniform) throw invalidBody("All object keys must match");
  return { keys, json: text, value, firstElement: true };
}

function getPayload(args: Map<string, string[]>): Payload {
  return { keys: new Set(args.keys()), json: "" };
}

function isJsonType(type: string): boolean {
  return type === "json" || type === "jsonb";
}

/** Refuses arguments Postgres could not parse without a 5xx (see `_nesting.ts`). */
function checkNesting(routine: Routine, args: CallArgs, payload: Payload): void {
  if (args.kind === "direct") {
    for (const [name, value] of args.values) {
      const type = routine.params.find((p) => p.name === name)!.type;
      for (const text of Array.isArray(value) ? value : [value]) {
        if (
          isJsonType(type.replace(/\[\]$/, "")) &&
          nestingDepth(text, "json", MAX_JSON_DEPTH) > MAX_JSON_DEPTH
        ) {
          throw invalidQueryParam(tooDeep(`The argument "${name}"`), NESTING_HINT);
        }
        if (type.endsWith("[]") && nestingDepth(text, "array", MAX_ARRAY_DIMS) > MAX_ARRAY_DIMS) {
          throw invalidQueryParam(
            `The argument "${name}" has more than ${MAX_ARRAY_DIMS} array dimensions`,
            NESTING_HINT,
          );
        }
      }
    }
    return;
  }
  if (args.kind !== "named") return;
  const values = (payload.firstElement ? (payload.value as unknown[])[0] : payload.value) as
    | Record<string, unknown>
    | undefined;
  for (const p of routine.params) {
    if (!p.type.endsWith("[]") || values === undefined || !(p.name in values)) continue;
    // A variadic parameter's JSON array is its list of values: one dimension is the list itself.
    if (arrayDimensions(values[p.name]) > MAX_ARRAY_DIMS) {
      throw invalidBody(
        `The argument "${p.name}" has more than ${MAX_ARRAY_DIMS} array dimensions`,
        NESTING_HINT,
      );
    }
  }
}

/** PostgREST's `toRpcParams`: the last of repeated values, all of them for a variadic parameter. */
function directArgs(routine: Routine, query: Map<string, string[]>): CallArgs {
  const values: [string, string | string[]][] = [];
  for (const [name, list] of query) {
    const param = routine.params.find((p) => p.name === name);
    if (!param) continue;
    values.push([name, param.variadic ? list : list[list.length - 1]]);
  }
  return { kind: "direct", values };
}

function preferCount(prefer: string | null): boolean {
  return !!prefer && /(^|[\s,])count=(exact|planned|estimated)\b/.test(prefer);
}

/**
 * PostgREST's `request.headers`: lower-case names (Headers already are), every
 * header but `cookie`, which PostgREST leaves out (cookies are
 * `request.cookies`; `iHdrs = [… | (k,v) <- hdrs, k /= hCookie]` in
 * `src/PostgREST/ApiRequest.hs`). `authorization` is what the API gateway
 * forwarded (see `_keys.ts`), as Kong's request-transformer rewrites it.
 */
function headersJson(req: Request, authorization: string | null): string {
  const obj: Record<string, string> = {};
  req.headers.forEach((value, key) => {
    if (key !== "cookie") obj[key] = value;
  });
  if (authorization !== null) obj.authorization = authorization;
  return JSON.stringify(obj);
}

function cookiesJson(req: Request): string {
  const header = req.headers.get("cookie");
  if (!header) return "{}";
  const obj: Record<string, string> = {};
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0) obj[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  return JSON.stringify(obj);
}

/**
 * Handles one `/rest/v1/rpc/<fnName>` request for an authenticated caller.
 * `authorization` is the Authorization header the API gateway forwards (null:
 * the request's own).
 */
export async function handleRpc(
  req: Request,
  url: URL,
  fnName: string,
  auth: AuthResult,
  ctx: RpcContext,
  authorization: string | null = null,
): Promise<Response> {
  const { config, cache } = ctx;
  const method = req.method;
  const isRead = method === "GET" || method === "HEAD";
  if (!isRead && method !== "POST") throw invalidRpcMethod(method);

  const profile = req.headers.get(isRead ? "accept-profile" : "content-profile");
  const schema = profile ?? config.schemas[0];
  if (!config.schemas.includes(schema)) throw unacceptableSchema(schema, config.schemas);

  const accept = negotiate(req.headers.get("accept"));
  const queryArgs = queryArguments(url, isRead);
  const payload = isRead ? getPayload(queryArgs) : await postPayload(req);
  const isJsonPost = !isRead;

  let snapshot = cache.snapshot;
  if (!snapshot) throw noSchemaCache();
  let routine = findRoutine(snapshot, schema, fnName, payload.keys, isJsonPost);
  if (!routine && await cache.reloadOnMiss()) {
    snapshot = cache.snapshot!;
    routine = findRoutine(snapshot, schema, fnName, payload.keys, isJsonPost);
  }
  if (!routine) throw noRpcError(snapshot, schema, fnName, payload.keys, isJsonPost);

  const args: CallArgs = isRead
    ? directArgs(routine, queryArgs)
    : matchesParams(routine, payload.keys)
    ? {
      kind: "named",
      json: payload.json,
      keys: [...payload.keys],
      firstElement: payload.firstElement,
    }
    : { kind: "whole", json: payload.json };
  checkNesting(routine, args, payload);

  const countTotal = preferCount(req.headers.get("prefer"));
  const searchPath = [schema, ...config.extraSearchPath].map(quoteIdent).join(", ");
  const settings: [string, string][] = [
    ["search_path", searchPath],
    ["role", auth.role],
    ["request.jwt.claims", auth.claimsJson],
    ["request.method", method],
    ["request.path", `/rpc/${fnName}`],
    ["request.headers", headersJson(req, authorization)],
    ["request.cookies", cookiesJson(req)],
    ...(snapshot.roleSettings.get(auth.role) ?? []),
  ];
  const statement = (accept.csv ? csvStatement : rpcStatement)({
    readOnly: isRead || routine.volatility !== "v",
    settings,
    routine,
    args,
    maxRows: config.maxRows,
    countTotal,
    stripNulls: accept.stripNulls,
  });

  let row: { body: string | null; n?: number; total?: number | null };
  try {
    const sql = ctx.pool.sql;
    const results = await ctx.admission.run(() => sql.unsafe(statement)).catch((err) => {
      if (isConnectionLoss(err)) ctx.pool.replace(sql);
      throw err;
    });
    const last = (results as unknown as unknown[][]).at(-1)!;
    row = last[0] as typeof row;
  } catch (err) {
    throw fromDbFailure(err, auth.role !== config.anonRole);
  }

  if (routine.returnsVoid) return new Response(null, { status: 204 });

  let body = row.body ?? "null";
  let range = countTotal ? "0-0/1" : "0-0/*";
  if (routine.returnsSet) {
    const n = row.n ?? 0;
    const total = countTotal ? String(row.total ?? 0) : "*";
    range = n > 0 ? `0-${n - 1}/${total}` : `*/${total}`;
    if (accept.single) {
      if (n !== 1) throw singularityError(n);
      body = body.slice(1, -1); // json_agg of one element is "[<element>]"
    }
  }
  const headers: Record<string, string> = {
    "Content-Type": accept.csv
      ? CSV_CONTENT_TYPE
      : accept.single
      ? "application/vnd.pgrst.object+json; charset=utf-8"
      : "application/json; charset=utf-8",
    "Content-Range": range,
  };
  if (countTotal) headers["Preference-Applied"] = "count=exact";
  return new Response(method === "HEAD" ? null : body, { status: 200, headers });
}
