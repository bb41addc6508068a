/**
 * The local stand-in for pg_cron + pg_net: POSTs /functions/v1/dispatch with the
 * service_role key on an interval (production: a pg_cron job every minute, see
 * the dispatch migration). Overlapping ticks are harmless: the dispatcher's rate
 * limit and leases live in Postgres. Set DISPATCH_TICK_MS=0 to disable.
 *
 * @module
 */
import { API_URL, SERVICE_ROLE_KEY } from "./env.ts";

const intervalMs = Number(Deno.env.get("DISPATCH_TICK_MS") ?? 1000);
const url = `${API_URL}/functions/v1/dispatch`;

async function tick(): Promise<void> {
  try {
    const res = await fetch(url, {
      method: "POST",
      headers: {
        Authorization: `Bearer ${SERVICE_ROLE_KEY}`,
        "Content-Type": "application/json",
      },
      body: JSON.stringify({ source: "local-ticker" }),
      signal: AbortSignal.timeout(10_000),
    });
    await res.body?.cancel();
    if (!res.ok) {
      console.error(JSON.stringify({ event: "dispatch_tick_failed", status: res.status }));
    }
  } catch (err) {
    console.error(JSON.stringify({ event: "dispatch_tick_error", error: String(err) }));
  }
}

if (intervalMs > 0) {
  // Sequential ticks: the next one starts only after the previous answered.
  while (true) {
    const started = Date.now();
    await tick();
    await new Promise((r) => setTimeout(r, Math.max(0, intervalMs - (Date.now() - started))));
  }
} else {
  console.log("dispatch ticker disabled (DISPATCH_TICK_MS=0)");
  setInterval(() => {}, 1 << 30); // stay up so `status` reports it, do nothing
}
