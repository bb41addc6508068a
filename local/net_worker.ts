/**
 * The local stand-in for pg_net's background worker: it performs the HTTP
 * requests SQL queued with `net.http_post` / `net.http_get` / `net.http_delete`
 * (the local `net` schema of `sql/supabase_platform.sql`) and records each
 * answer in `net._http_response`, as pg_net does. This is what carries the
 * pg_cron job `dispatch-tick` (`app.invoke_dispatch()`) to
 * `/functions/v1/dispatch` locally, exactly as on Supabase.
 *
 * Like pg_net: requests are taken oldest first in batches and deleted from the
 * queue when taken (a request is tried once, never retried); only committed
 * requests are seen; a response row carries the status, content type, headers
 * and body, or `timed_out` / `error_msg`; responses older than 6 hours are
 * deleted (pg_net's default `pg_net.ttl`). `net.wake()` NOTIFYs `net_wake` at
 * commit, and the worker also polls every second.
 *
 * @module
 */
import postgres from "postgres";
import { DB_URL } from "./env.ts";

const BATCH = 200; // pg_net's default pg_net.batch_size
const POLL_MS = 1000;
const TTL = "6 hours";

interface QueuedRequest {
  id: string;
  method: string;
  url: string;
  headers: Record<string, string> | null;
  body: Uint8Array | null;
  timeout_milliseconds: number;
}

interface HttpResponseRow {
  id: string;
  status_code: number | null;
  content_type: string | null;
  headers: Record<string, string> | null;
  content: string | null;
  timed_out: boolean;
  error_msg: string | null;
}

/** Performs one queued request; never throws (failures become the response row). */
async function perform(req: QueuedRequest): Promise<HttpResponseRow> {
  const timeout = AbortSignal.timeout(req.timeout_milliseconds);
  try {
    const res = await fetch(req.url, {
      method: req.method.toUpperCase(),
      headers: req.headers ?? {},
      body: req.body?.slice(),
      signal: timeout,
    });
    const content = await res.text();
    return {
      id: req.id,
      status_code: res.status,
      content_type: res.headers.get("content-type"),
      headers: Object.fromEntries(res.headers),
      content,
      timed_out: false,
      error_msg: null,
    };
  } catch (err) {
    const timedOut = timeout.aborted;
    return {
      id: req.id,
      status_code: null,
      content_type: null,
      headers: null,
      content: null,
      timed_out: timedOut,
      error_msg: timedOut
        ? `Timeout of ${req.timeout_milliseconds} ms reached`
        : String((err as Error)?.message ?? err),
    };
  }
}

/**
 * Takes up to {@link BATCH} queued requests, performs them concurrently and
 * records their responses; returns how many it took.
 *
 * @example
 * const sql = postgres(DB_URL);
 * await drainOnce(sql); // 0 when the queue is empty
 */
export async function drainOnce(sql: postgres.Sql): Promise<number> {
  const taken = await sql<QueuedRequest[]>`
    delete from net.http_request_queue q
    where q.id in (select id from net.http_request_queue order by id limit ${BATCH} for update skip locked)
    returning q.id::text, q.method::text, q.url, q.headers, q.body, q.timeout_milliseconds`;
  if (taken.length === 0) return 0;
  const responses = await Promise.all(taken.map(perform));
  await sql`
    insert into net._http_response (id, status_code, content_type, headers, content, timed_out, error_msg)
    select r.id::bigint, r.status_code, r.content_type, r.headers, r.content, r.timed_out, r.error_msg
    from jsonb_to_recordset(${sql.json(responses as unknown as postgres.JSONValue)}) as r(
      id text, status_code integer, content_type text, headers jsonb, content text,
      timed_out boolean, error_msg text)`;
  return taken.length;
}

if (import.meta.main) {
  const sql = postgres(DB_URL, {
    max: 2,
    onnotice: () => {},
    connection: { application_name: "net-worker" },
  });
  let running = false;
  let again = false;
  const drain = async () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      do {
        again = false;
        while ((await drainOnce(sql)) === BATCH) { /* a full batch: more may wait */ }
      } while (again);
    } catch (err) {
      console.error(JSON.stringify({ event: "net_worker_error", error: String(err) }));
    } finally {
      running = false;
    }
  };
  await sql.listen("net_wake", () => void drain());
  setInterval(() => void drain(), POLL_MS);
  setInterval(() => {
    sql`delete from net._http_response where created < now() - ${TTL}::interval`.catch(() => {});
  }, 60_000);
  console.log("net worker: performing net.http_* requests");
  await drain();
}
