/**
 * Executes a scenario's RequestSpec with `fetch` and times it: from just before
 * the request is handed to the client to the last byte of the body (k6's
 * `http_req_duration` excludes connection setup; keep-alive makes that moot
 * after the first request of a connection).
 *
 * @module
 */
import type { RequestSpec, ResponseLike } from "../scenarios/_types.ts";

/** A response with its timing. */
export interface TimedResponse extends ResponseLike {
  durationMs: number;
}

const DEFAULT_TIMEOUT_MS = 60_000;

/** Lower-cased header names → values. */
function headersOf(h: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  h.forEach((v, k) => (out[k] = v));
  return out;
}

/**
 * Sends one request; never throws for HTTP or network failures (status 0 and
 * `error` instead), so a failing target shows up in the metrics, not as a crash.
 */
export async function send(
  spec: RequestSpec,
  signal?: AbortSignal,
): Promise<TimedResponse> {
  const timeout = AbortSignal.timeout(spec.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  const combined = signal ? AbortSignal.any([timeout, signal]) : timeout;
  const started = performance.now();
  try {
    const res = await fetch(spec.url, {
      method: spec.method,
      headers: spec.headers,
      body: spec.body,
      signal: combined,
    });
    const body = await res.text();
    return {
      status: res.status,
      body,
      headers: headersOf(res.headers),
      durationMs: performance.now() - started,
    };
  } catch (err) {
    const durationMs = performance.now() - started;
    const isTimeout = timeout.aborted ||
      (err instanceof DOMException && err.name === "TimeoutError");
    return {
      status: 0,
      body: null,
      error: isTimeout ? "timeout" : signal?.aborted ? "interrupted" : String(err),
      durationMs,
    };
  }
}
