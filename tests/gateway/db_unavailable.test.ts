/**
 * While Postgres goes down and comes back, the gateway answers every request
 * 503 with `Retry-After` and PostgREST's error body — what the README tells
 * clients to back off on — never a 500, and serves again once the server is
 * back. It runs against a scratch cluster of its own (`_scratch_cluster.ts`), so
 * the shared local cluster is never stopped.
 *
 * PostgREST sources: `src/PostgREST/Error.hs` (`mapSQLtoHTTP`: 57P01 → 503;
 * a connection that cannot be opened → PGRST000 503), `src/PostgREST/App.hs`
 * (`addRetryHint`: `Retry-After` on every 503).
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { PUBLISHABLE_KEY } from "../../local/env.ts";
import type { Gateway } from "../../local/gateway/mod.ts";
import { request, startGateway } from "./_helpers.ts";
import { startScratchCluster } from "./_scratch_cluster.ts";

const SCHEMA = `
create role anon nologin;
create schema api;
grant usage on schema api to anon;
create function api.ping() returns text language sql stable as $$ select 'pong' $$;
create function api.nap(s float8) returns text language sql volatile
  as $$ select 'rested' from pg_sleep(s) $$;
grant execute on all functions in schema api to anon;`;

/** Polls `check` every 50 ms until it is true; fails after `ms`. */
async function until(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The SQLSTATE a fresh connection attempt gets, or "ok". */
async function connectOutcome(url: string): Promise<string> {
  const sql = postgres(url, { max: 1, connect_timeout: 2, onnotice: () => {} });
  try {
    await sql`select 1`;
    return "ok";
  } catch (err) {
    return String((err as { code?: unknown }).code);
  } finally {
    await sql.end({ timeout: 1 }).catch(() => {});
  }
}

Deno.test("while Postgres stops and starts, every answer is 503 with Retry-After, then 200 again", async (t) => {
  const pg = await startScratchCluster();
  let gw: Gateway | undefined;
  try {
    await pg.sql(SCHEMA);
    // One pooled connection: each step knows which connection a request uses.
    gw = await startGateway({ dbUrl: pg.url, poolSize: 1 });
    const call = (fn: string, body: unknown = {}) =>
      request(`${gw!.url}/rest/v1/rpc/${fn}`, {
        method: "POST",
        headers: { apikey: PUBLISHABLE_KEY, "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });

    await t.step("up: 200", async () => {
      const res = await call("ping");
      assert.deepEqual([res.status, res.json], [200, "pong"]);
    });

    await t.step(
      "a connection the administrator terminates mid-request is 503 with Retry-After (Error.hs: 57P01 → 503)",
      async () => {
        const inFlight = call("nap", { s: 10 });
        await until(
          async () =>
            (await pg.sql(`select 1 from pg_stat_activity
              where application_name = 'local-gateway' and query like '%api"."nap"%'`)).length > 0,
          5000,
          "the nap to start",
        );
        await pg.sql(`select pg_terminate_backend(pid) from pg_stat_activity
          where application_name = 'local-gateway'`);
        const res = await inFlight;
        assert.equal(res.status, 503);
        // postgres.js reports the FATAL 57P01 as the closed connection that follows it.
        assert.match((res.json as { code: string }).code, /^(57P01|PGRST001)$/);
        assert.equal(res.headers.get("retry-after"), "1");
      },
    );

    await t.step(
      "while it shuts down, Postgres refuses new connections (57P03): 503 PGRST000 with Retry-After",
      async () => {
        // Smart shutdown waits for open sessions (the gateway's schema-cache listener
        // holds one), refusing new connections meanwhile.
        await pg.stop("smart", false);
        await until(async () => (await connectOutcome(pg.url)) === "57P03", 5000, "57P03");
        const res = await call("ping");
        assert.equal(res.status, 503);
        assert.equal(res.headers.get("retry-after"), "1");
        const body = res.json as { code: string; message: string; details: string };
        assert.deepEqual([body.code, body.message], ["PGRST000", "Database connection error."]);
        assert.match(body.details, /shutting down/);
      },
    );

    await t.step(
      "once it is down (connection refused): 503 PGRST000 with Retry-After",
      async () => {
        await pg.stop("fast");
        for (const fn of ["ping", "nap"]) {
          const res = await call(fn, fn === "nap" ? { s: 0 } : {});
          assert.equal(res.status, 503, fn);
          assert.equal(res.headers.get("retry-after"), "1");
          assert.match((res.json as { code: string }).code, /^PGRST00[01]$/);
        }
      },
    );

    await t.step("back up: 200 again, with only 503s in between", async () => {
      await pg.start();
      const seen: number[] = [];
      await until(
        async () => {
          const res = await call("ping");
          seen.push(res.status);
          return res.status === 200;
        },
        10_000,
        "the gateway to serve again",
      );
      assert.ok(seen.slice(0, -1).every((s) => s === 503), `statuses: ${seen.join(", ")}`);
    });
  } finally {
    await gw?.shutdown();
    await pg.destroy();
  }
});
