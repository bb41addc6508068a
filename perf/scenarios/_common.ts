/**
 * Pure helpers the scenarios share: PostgREST/Edge Function request specs,
 * error-body parsing, durations. No runtime APIs (Deno and k6 import this).
 *
 * @module
 */
import type { Outcome, Program, RequestSpec, ResponseLike, Target } from "./_types.ts";

/** Headers of a PostgREST RPC call as supabase-js sends them with `.schema("api")`. */
export function rpcHeaders(
  target: Target,
  jwt: string,
  method: "GET" | "POST",
): Record<string, string> {
  const headers: Record<string, string> = {
    apikey: target.anonKey,
    Authorization: `Bearer ${jwt}`,
    Accept: "application/json",
  };
  if (method === "POST") {
    headers["Content-Type"] = "application/json";
    headers["Content-Profile"] = "api";
  } else {
    headers["Accept-Profile"] = "api";
  }
  return headers;
}

/**
 * `POST /rest/v1/rpc/<fn>` with JSON named arguments.
 *
 * @example
 * rpcPost(target, "redeem_voucher", { code, idempotency_key }, jwt, [200]);
 */
export function rpcPost(
  target: Target,
  fn: string,
  args: Record<string, unknown>,
  jwt: string,
  expectedStatuses: number[] = [200],
  endpoint: string = fn,
): RequestSpec {
  return {
    method: "POST",
    url: `${target.baseUrl}/rest/v1/rpc/${fn}`,
    headers: rpcHeaders(target, jwt, "POST"),
    body: JSON.stringify(args),
    tags: { endpoint },
    expectedStatuses,
  };
}

/** `GET /rest/v1/rpc/<fn>?arg=…` for a stable function (PostgREST allows GET for those). */
export function rpcGet(
  target: Target,
  fn: string,
  args: Record<string, string>,
  jwt: string,
  expectedStatuses: number[] = [200],
  endpoint: string = fn,
): RequestSpec {
  const query = Object.entries(args)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
    .join("&");
  return {
    method: "GET",
    url: `${target.baseUrl}/rest/v1/rpc/${fn}${query ? `?${query}` : ""}`,
    headers: rpcHeaders(target, jwt, "GET"),
    tags: { endpoint },
    expectedStatuses,
  };
}

/** `POST /functions/v1/<name>` with a JSON body, as pg_net or supabase-js `functions.invoke` would. */
export function functionPost(
  target: Target,
  name: string,
  body: Record<string, unknown>,
  jwt: string,
  expectedStatuses: number[] = [200, 202],
): RequestSpec {
  return {
    method: "POST",
    url: `${target.baseUrl}/functions/v1/${name}`,
    headers: {
      apikey: target.anonKey,
      Authorization: `Bearer ${jwt}`,
      "Content-Type": "application/json",
    },
    body: JSON.stringify(body),
    tags: { endpoint: `fn:${name}` },
    expectedStatuses,
  };
}

/** Parses a JSON body, or returns null when it is absent or not JSON. */
export function parseJson(body: string | null): unknown {
  if (body === null || body === "") return null;
  try {
    return JSON.parse(body);
  } catch {
    return null;
  }
}

/**
 * The machine code of an error response: PostgREST's `code` (`voucher_expired`,
 * `PGRST003`, `23505`…), `http_<status>` when the body has none, `network_error`
 * / `timeout` when no response arrived, null for a 2xx.
 */
export function errorCode(res: ResponseLike): string | null {
  if (res.status === 0) {
    return res.error === "timeout" ? "timeout" : "network_error";
  }
  if (res.status >= 200 && res.status < 300) return null;
  const body = parseJson(res.body);
  if (
    body && typeof body === "object" && "code" in body &&
    typeof body.code === "string"
  ) {
    return body.code;
  }
  return `http_${res.status}`;
}

/** The default judgement: failed when the status is not one of the request's expected statuses. */
export function classifyByStatus(res: ResponseLike, req: RequestSpec): Outcome {
  const failed = !req.expectedStatuses.includes(res.status);
  return { failed, code: errorCode(res) };
}

const UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/**
 * Milliseconds of a k6 duration string (`"500ms"`, `"30s"`, `"1m30s"`, `"2h"`).
 *
 * @example
 * parseDuration("1m30s"); // 90000
 */
export function parseDuration(text: string): number {
  const parts = text.trim().match(/(\d+(?:\.\d+)?)(ms|s|m|h)/g);
  if (!parts || parts.join("") !== text.trim()) {
    throw new RangeError(
      `Cannot parse duration "${text}": expected e.g. "500ms", "30s", "1m30s"`,
    );
  }
  let ms = 0;
  for (const part of parts) {
    const [, n, unit] = part.match(/(\d+(?:\.\d+)?)(ms|s|m|h)/)!;
    ms += Number(n) * UNIT_MS[unit];
  }
  return ms;
}

/** Formats milliseconds as a k6 duration (`90000` → `"1m30s"`). */
export function formatDuration(ms: number): string {
  if (ms % 60_000 === 0 && ms >= 60_000) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/** An identifier for one run (idempotency keys, campaign names), from the clock and a random part. */
export function newRunId(): string {
  const rand = Math.floor(Math.random() * 0x100000000).toString(36).padStart(
    7,
    "0",
  );
  return `${Date.now().toString(36)}-${rand}`;
}

/** Raised by a setup program when a request it depends on fails. */
export class SetupError extends Error {
  override name = "SetupError";
}

/**
 * Runs a request inside a setup program and returns the parsed JSON body, or
 * throws SetupError quoting the endpoint, status and body.
 */
export function* expectJson(
  spec: RequestSpec,
): Generator<RequestSpec, unknown, ResponseLike> {
  const res: ResponseLike = yield spec;
  if (!spec.expectedStatuses.includes(res.status)) {
    throw new SetupError(
      `Setup request ${spec.method} ${spec.url} failed with status ${res.status}: ${
        (res.body ?? res.error ?? "").slice(0, 500)
      }`,
    );
  }
  return parseJson(res.body);
}

/**
 * Issues `count` fresh vouchers into a campaign through the real RPCs (admin JWT):
 * `issue_vouchers` in batches of at most 5,000, then `list_vouchers` by batch, 500
 * a page. Returns display-form codes in issue order.
 */
export function* issueFreshCodes(
  target: Target,
  adminJwt: string,
  campaignId: string,
  count: number,
  runId: string,
): Program<string[]> {
  const codes: string[] = [];
  let batchNo = 0;
  while (codes.length < count) {
    const n = Math.min(5000, count - codes.length);
    const issued = (yield* expectJson(rpcPost(target, "issue_vouchers", {
      campaign_id: campaignId,
      count: n,
      idempotency_key: `perf-setup-${runId}-${batchNo++}`,
    }, adminJwt))) as { batch_id: string };
    let after: number | null = null;
    for (let page = 0; page < 20; page++) {
      const args: Record<string, unknown> = {
        campaign_id: campaignId,
        batch_id: issued.batch_id,
        status: "issued",
        page_size: 500,
      };
      if (after !== null) args.after = after;
      const listed = (yield* expectJson(
        rpcPost(target, "list_vouchers", args, adminJwt),
      )) as {
        vouchers: { code: string }[];
        next_cursor: number | null;
      };
      for (const v of listed.vouchers) codes.push(v.code);
      if (listed.next_cursor === null || listed.next_cursor === undefined) {
        break;
      }
      after = listed.next_cursor;
    }
  }
  return codes.slice(0, count);
}

/** Iterations a profile's executor may start at most (for sizing pools of fresh data). */
export function maxIterations(executor: {
  executor: string;
  rate?: number;
  timeUnit?: string;
  duration?: string;
  startRate?: number;
  stages?: { target: number; duration: string }[];
}): number {
  const unit = parseDuration(executor.timeUnit ?? "1s");
  if (executor.executor === "constant-arrival-rate") {
    return Math.ceil(
      ((executor.rate ?? 0) * parseDuration(executor.duration ?? "0s")) / unit,
    );
  }
  let total = 0;
  let rate = executor.startRate ?? 0;
  for (const stage of executor.stages ?? []) {
    const ms = parseDuration(stage.duration);
    total += ((rate + stage.target) / 2) * (ms / unit);
    rate = stage.target;
  }
  return Math.ceil(total);
}
