/**
 * PostgREST's error contract: a `{code, message, details, hint}` body, the HTTP
 * status PostgREST derives from the SQLSTATE, and the headers it adds
 * (`WWW-Authenticate` on 401, `Proxy-Status`, custom headers of `RAISE SQLSTATE 'PGRST'`,
 * `Retry-After` on every 503).
 *
 * Mapping and messages follow PostgREST v14/v16 (`src/PostgREST/Error.hs`).
 *
 * While Postgres restarts, every failure is a 503 with `Retry-After`, so
 * clients back off instead of treating it as a server bug: a refused or broken
 * connection (PGRST000 / PGRST001, as PostgREST), `57P01` "terminating
 * connection due to administrator command" (503 in PostgREST too), `57P03`
 * "the database system is starting up / shutting down" — which Postgres sends
 * while a connection is being opened, so it is PGRST000, PostgREST's
 * connection error — and `57P02` "terminating connection because of crash of
 * another server process", which PostgREST maps with the rest of class 57 to
 * 500: the gateway answers 503, a deliberate difference, because the server
 * is recovering and a retry succeeds.
 *
 * @module
 */

/** The JSON body of every PostgREST error. */
export interface ErrorBody {
  code: string;
  message: string;
  details: string | null;
  hint: string | null;
}

/** An error answered with PostgREST's body, status and headers. */
export class ApiError extends Error {
  override name = "ApiError";
  constructor(
    readonly status: number,
    readonly body: ErrorBody,
    readonly headers: Record<string, string> = {},
  ) {
    super(body.message);
  }
}

/**
 * Seconds in the `Retry-After` of a 503. PostgREST adds the header to every
 * 503 (`addRetryHint` in `src/PostgREST/App.hs`) with its next connection retry
 * delay; the gateway reconnects on the next request, so it asks for the
 * shortest wait that is not an immediate retry, as its PGRST003 does.
 */
export const RETRY_AFTER_SECONDS = "1";

function apiError(
  status: number,
  code: string,
  message: string,
  details: string | null = null,
  hint: string | null = null,
  headers: Record<string, string> = {},
): ApiError {
  return new ApiError(status, { code, message, details, hint }, headers);
}

/**
 * PGRST000: the database cannot be reached. The message is PostgREST's since
 * 14.13 (CHANGELOG: "Remove redundant 'Retrying the connection.' from message").
 */
export function connectionError(details: string | null): ApiError {
  return apiError(503, "PGRST000", "Database connection error.", details);
}

/** PGRST001: the connection broke while serving the request. */
export function clientError(details: string | null): ApiError {
  return apiError(503, "PGRST001", "Database client error. Retrying the connection.", details);
}

/** PGRST002: the schema cache could not be loaded. */
export function noSchemaCache(): ApiError {
  return apiError(503, "PGRST002", "Could not query the database for the schema cache. Retrying.");
}

/**
 * PGRST003: no pool connection. PostgREST answers 504 when its acquisition
 * timeout elapses; the gateway also sheds load with 503 when the wait queue is
 * full. Both carry `Retry-After: 1` so well-behaved clients back off.
 */
export function poolTimeout(status: 503 | 504, details: string): ApiError {
  return apiError(
    status,
    "PGRST003",
    "Timed out acquiring connection from connection pool.",
    details,
    null,
    { "Retry-After": RETRY_AFTER_SECONDS },
  );
}

/** PGRST101: RPC accepts GET, HEAD and POST only. */
export function invalidRpcMethod(method: string): ApiError {
  return apiError(405, "PGRST101", `Cannot use the ${method} method on RPC`);
}

/** PGRST100: a query-string parameter the gateway cannot use. */
export function invalidQueryParam(message: string, hint: string | null = null): ApiError {
  return apiError(400, "PGRST100", message, null, hint);
}

/** PGRST102: the body is not JSON, or not a shape an RPC takes. */
export function invalidBody(
  message = "Empty or invalid json",
  hint: string | null = null,
): ApiError {
  return apiError(400, "PGRST102", message, null, hint);
}

/** PGRST106: the profile header names a schema that is not exposed. */
export function unacceptableSchema(schema: string, exposed: string[]): ApiError {
  return apiError(
    406,
    "PGRST106",
    `Invalid schema: ${schema}`,
    null,
    `Only the following schemas are exposed: ${exposed.join(", ")}`,
  );
}

/** PGRST107: the Accept header asks for a media type the gateway cannot produce. */
export function mediaTypeError(accepted: string[]): ApiError {
  return apiError(
    406,
    "PGRST107",
    `None of these media types are available: ${accepted.join(", ")}`,
  );
}

/** PGRST116: `Accept: application/vnd.pgrst.object+json` with other than one row. */
export function singularityError(rows: number): ApiError {
  return apiError(
    406,
    "PGRST116",
    "Cannot coerce the result to a single JSON object",
    `The result contains ${rows} rows`,
  );
}

/** PGRST121: `RAISE SQLSTATE 'PGRST'` whose MESSAGE or DETAIL is not the expected JSON. */
export function pgrstParseError(part: "message" | "detail" | "missing", raw: string): ApiError {
  const details = part === "message"
    ? `Invalid JSON value for MESSAGE: '${raw}'`
    : part === "detail"
    ? `Invalid JSON value for DETAIL: '${raw}'`
    : "DETAIL is missing in the RAISE statement";
  const hint = part === "message"
    ? "MESSAGE must be a JSON object with obligatory keys: 'code', 'message' and optional keys: 'details', 'hint'."
    : "DETAIL must be a JSON object with obligatory keys: 'status', 'headers' and optional key: 'status_text'.";
  return apiError(
    500,
    "PGRST121",
    `Could not parse JSON in the "RAISE SQLSTATE 'PGRST'" error`,
    details,
    hint,
  );
}

/** PGRST127: a PostgREST feature this local gateway does not implement. */
export function notImplemented(details: string): ApiError {
  return apiError(400, "PGRST127", "Feature not implemented", details);
}

/** PGRST202: no function matches the name and argument names. */
export function noRpc(
  schema: string,
  name: string,
  argNames: string[],
  isJsonPost: boolean,
  hint: string | null,
): ApiError {
  const func = `${schema}.${name}`;
  const prms = argNames.join(", ");
  const message = `Could not find the function ${func}${
    argNames.length ? `(${prms})` : " without parameters"
  } in the schema cache`;
  const withParams = argNames.length
    ? ` with parameter${argNames.length > 1 ? "s" : ""} ${prms}`
    : " without parameters";
  const details = `Searched for the function ${func}${withParams}${
    isJsonPost ? " or with a single unnamed json/jsonb parameter" : ""
  }, but no matches were found in the schema cache.`;
  return apiError(404, "PGRST202", message, details, hint);
}

/** PGRST203: several overloads match the argument names. */
export function ambiguousRpc(candidates: string[]): ApiError {
  return apiError(
    300,
    "PGRST203",
    `Could not choose the best candidate function between: ${candidates.join(", ")}`,
    null,
    "Try renaming the parameters or the function itself in the database so function overloading can be resolved",
  );
}

/** PGRST205: PostgREST's answer for an unknown table (the gateway exposes RPCs only). */
export function tableNotFound(schema: string, name: string): ApiError {
  return apiError(
    404,
    "PGRST205",
    `Could not find the table '${schema}.${name}' in the schema cache`,
  );
}

/** PGRST125: a path PostgREST does not route. */
export function invalidResourcePath(): ApiError {
  return apiError(404, "PGRST125", "Invalid path specified in request URL");
}

/** PGRST301: the JWT cannot be decoded or its signature is wrong. */
export function jwtDecodeError(message: string, details: string | null = null): ApiError {
  return apiError(401, "PGRST301", message, details, null, {
    "WWW-Authenticate": invalidTokenHeader(message),
  });
}

/** PGRST303: the JWT claims are invalid (expired, not yet valid, …). */
export function jwtClaimsError(message: string): ApiError {
  return apiError(401, "PGRST303", message, null, null, {
    "WWW-Authenticate": invalidTokenHeader(message),
  });
}

function invalidTokenHeader(message: string): string {
  return `Bearer error="invalid_token", error_description=${JSON.stringify(message)}`;
}

/** The fields of a Postgres error that PostgREST forwards (postgres.js `PostgresError`). */
export interface PgErrorLike {
  code: string;
  message: string;
  detail?: string;
  hint?: string;
}

/** True when `err` carries a SQLSTATE from the server (as opposed to a socket error). */
export function isPgError(err: unknown): err is PgErrorLike {
  return typeof err === "object" && err !== null && "severity" in err &&
    typeof (err as { code?: unknown }).code === "string";
}

/**
 * PostgREST's SQLSTATE → HTTP status map. `authed` is true when the request's
 * role is not the anonymous role (42501 is 403 then, 401 otherwise).
 */
export function pgErrorStatus(code: string, message: string, authed: boolean): number {
  const c2 = code.slice(0, 2);
  switch (code) {
    case "23503":
    case "23505":
      return 409;
    case "25006":
      return 405;
    case "21000":
      return message.endsWith("requires a WHERE clause") ? 400 : 500;
    case "22023":
      return message.startsWith("role") && message.endsWith("does not exist") ? 401 : 400;
    case "53400":
      return 500;
    case "57P01": // admin shutdown (PostgREST: 503)
    case "57P02": // crash shutdown (PostgREST: 500; see the module doc)
    case "57P03": // cannot connect now: starting up or shutting down
      return 503;
    case "P0001":
      return 400;
    case "42883":
      return message.startsWith("function xmlagg(") ? 406 : 404;
    case "42P01":
      return 404;
    case "42P17":
      return 500;
    case "42501":
      return authed ? 403 : 401;
  }
  switch (c2) {
    case "08":
      return 503;
    case "09":
      return 500;
    case "0L":
    case "0P":
      return 403;
    case "25":
      return 500;
    case "28":
      return 403;
    case "2D":
    case "38":
    case "39":
    case "3B":
    case "40":
      return 500;
    case "53":
      return 503;
    case "54":
    case "55":
    case "57":
    case "58":
    case "F0":
    case "HV":
    case "P0":
    case "XX":
      return 500;
    case "PT": {
      const status = Number(code.slice(2));
      return Number.isInteger(status) && status >= 100 && status <= 599 ? status : 500;
    }
  }
  return 400;
}

const RaiseMessage = (value: unknown): value is {
  code: string;
  message: string;
  details?: string | null;
  hint?: string | null;
} => {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const v = value as Record<string, unknown>;
  const optionalText = (x: unknown) => x === undefined || x === null || typeof x === "string";
  return typeof v.code === "string" && typeof v.message === "string" && optionalText(v.details) &&
    optionalText(v.hint);
};

const RaiseDetail = (value: unknown): value is {
  status: number;
  headers: Record<string, string>;
} => {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const v = value as Record<string, unknown>;
  return Number.isInteger(v.status) && typeof v.headers === "object" && v.headers !== null &&
    !Array.isArray(v.headers) &&
    Object.values(v.headers as Record<string, unknown>).every((h) => typeof h === "string");
};

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Turns a Postgres error into PostgREST's response, including `RAISE SQLSTATE 'PGRST'`. */
export function fromPgError(err: PgErrorLike, authed: boolean): ApiError {
  if (err.code === "PGRST") {
    const message = parseJson(err.message);
    if (!RaiseMessage(message)) return pgrstParseError("message", err.message);
    if (err.detail === undefined) return pgrstParseError("missing", "");
    const detail = parseJson(err.detail);
    if (!RaiseDetail(detail)) return pgrstParseError("detail", err.detail);
    return new ApiError(detail.status, {
      code: message.code,
      message: message.message,
      details: message.details ?? null,
      hint: message.hint ?? null,
    }, detail.headers);
  }
  const status = pgErrorStatus(err.code, err.message, authed);
  return new ApiError(
    status,
    { code: err.code, message: err.message, details: err.detail ?? null, hint: err.hint ?? null },
    status === 401 ? { "WWW-Authenticate": "Bearer" } : {},
  );
}

const CONNECT_CODES = new Set(["ECONNREFUSED", "CONNECT_TIMEOUT", "ENOTFOUND", "EHOSTUNREACH"]);

/** Maps any failure of a database call to PostgREST's response. */
export function fromDbFailure(err: unknown, authed: boolean): ApiError {
  if (err instanceof ApiError) return err;
  // Postgres refuses new connections while it starts or stops: a connection error.
  if (isPgError(err) && err.code === "57P03") return connectionError(err.message);
  if (isPgError(err)) return fromPgError(err, authed);
  const code = (err as { code?: unknown })?.code;
  const message = err instanceof Error ? err.message : String(err);
  return typeof code === "string" && CONNECT_CODES.has(code)
    ? connectionError(message)
    : clientError(message);
}

/**
 * Renders an `ApiError` as PostgREST does (JSON body, `Proxy-Status`, extra
 * headers, `Retry-After` on a 503).
 */
export function errorResponse(err: ApiError, extraHeaders: Record<string, string> = {}): Response {
  const headers: Record<string, string> = {
    "Content-Type": "application/json; charset=utf-8",
    "Proxy-Status": `PostgREST; error=${err.body.code}`,
    ...err.headers,
    ...extraHeaders,
  };
  if (err.status === 503 && !Object.keys(headers).some((h) => h.toLowerCase() === "retry-after")) {
    headers["Retry-After"] = RETRY_AFTER_SECONDS;
  }
  return new Response(JSON.stringify(err.body), { status: err.status, headers });
}
