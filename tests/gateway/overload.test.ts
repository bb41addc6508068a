/**
 * Under overload the gateway answers at once instead of queueing without
 * bound: PGRST003 with `Retry-After: 1` — 503 when the wait queue is full,
 * 504 (PostgREST's status) when a request waited too long for a connection.
 */
import assert from "node:assert/strict";
import { ANON_KEY } from "../../local/env.ts";
import { request, runSql, startGateway } from "./_helpers.ts";

const SETUP = `
drop function if exists api.gw_test_ov_sleep(integer);
create function api.gw_test_ov_sleep(ms integer) returns integer
language sql volatile as $$ select ms from pg_sleep(ms / 1000.0) $$;
grant execute on function api.gw_test_ov_sleep(integer) to anon;`;
const TEARDOWN = `drop function if exists api.gw_test_ov_sleep(integer);`;

Deno.test("a saturated pool sheds load with PGRST003 and Retry-After instead of queueing", async () => {
  await runSql(SETUP);
  const gw = await startGateway({ poolSize: 1, maxQueue: 1, queueTimeoutMs: 300 });
  const sleep = (ms: number) =>
    request(`${gw.url}/rest/v1/rpc/gw_test_ov_sleep`, {
      method: "POST",
      headers: { apikey: ANON_KEY, "Content-Type": "application/json" },
      body: JSON.stringify({ ms }),
    });
  try {
    let holderDone = false;
    const holder = sleep(1500).finally(() => holderDone = true); // takes the only connection
    await new Promise((r) => setTimeout(r, 150));
    const queued = sleep(0); // waits in the queue (limit 1) …
    await new Promise((r) => setTimeout(r, 20));
    const rejected = await sleep(0); // … so this one finds the queue full

    assert.equal(rejected.status, 503);
    assert.equal(holderDone, false, "the rejection did not wait for the busy connection");
    assert.equal(rejected.headers.get("retry-after"), "1");
    assert.deepEqual(rejected.json, {
      code: "PGRST003",
      message: "Timed out acquiring connection from connection pool.",
      details: "All 1 connections are busy and 1 requests are already waiting",
      hint: null,
    });

    const timedOut = await queued;
    assert.equal(timedOut.status, 504);
    assert.equal(holderDone, false, "the queued request gave up before the holder finished");
    assert.equal(timedOut.headers.get("retry-after"), "1");
    assert.equal((timedOut.json as { code: string }).code, "PGRST003");

    assert.deepEqual([(await holder).status, (await holder).json], [200, 1500]);
    const after = await sleep(0);
    assert.deepEqual([after.status, after.json], [200, 0], "the pool serves again once free");
  } finally {
    await gw.shutdown();
    await runSql(TEARDOWN);
  }
});
