/**
 * Supabase's dispatch cadence, locally. On Supabase the pg_cron job
 * `dispatch-tick` runs `select app.invoke_dispatch()` every 10 seconds
 * (pg_cron 1.6); the local pg_cron 1.4 can only run it once a minute. This
 * process runs the same job command on the same connection role, every
 * `DISPATCH_TICK_MS` (default 10 000, hosted's cadence), so dispatch runs reach
 * `/functions/v1/dispatch` exactly as on Supabase: the command queues the
 * request with `net.http_post`, and the pg_net worker (`local/net_worker.ts`)
 * performs it. Overlapping ticks are harmless: the rate limit and leases live in
 * Postgres. `DISPATCH_TICK_MS=0` leaves only pg_cron's minute.
 *
 * @module
 */
import postgres from "postgres";
import { DB_URL } from "./env.ts";

const intervalMs = Number(Deno.env.get("DISPATCH_TICK_MS") ?? 10_000);

if (import.meta.main) {
  if (intervalMs > 0) {
    const sql = postgres(DB_URL, {
      max: 1,
      onnotice: () => {},
      connection: { application_name: "dispatch-ticker" },
    });
    console.log(`dispatch ticker: the dispatch-tick job's command every ${intervalMs} ms`);
    // Sequential ticks: the next one starts only after the previous answered.
    while (true) {
      const started = Date.now();
      try {
        const [job] = await sql`select command from cron.job where jobname = 'dispatch-tick'`;
        if (job) await sql.unsafe(job.command);
      } catch (err) {
        console.error(JSON.stringify({ event: "dispatch_tick_error", error: String(err) }));
      }
      await new Promise((r) => setTimeout(r, Math.max(0, intervalMs - (Date.now() - started))));
    }
  } else {
    console.log("dispatch ticker disabled (DISPATCH_TICK_MS=0): pg_cron's minute only");
    setInterval(() => {}, 1 << 30); // stay up so `status` reports it, do nothing
  }
}
