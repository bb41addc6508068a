/**
 * Durable idempotency across sessions: two transactions that use one key at the
 * same time execute it exactly once, and the loser gets the winner's response.
 */
import assert from "node:assert/strict";
import { createWorld, superuser } from "./_support.ts";

Deno.test("a key used concurrently by two sessions executes exactly once", async () => {
  const sql = superuser(4);
  try {
    const world = await createWorld(sql);
    const key = crypto.randomUUID();
    const claims = JSON.stringify({ sub: world.admin.id, role: "authenticated" });
    const issue = (conn: typeof sql) =>
      conn.begin(async (tx) => {
        await tx`select set_config('request.jwt.claims', ${claims}, true), set_config('role', 'authenticated', true)`;
        const [row] = await tx`select api.issue_vouchers(${world.campaignId}, 100, ${key}) as r`;
        // Hold the first transaction open so the second must wait on the key.
        await tx`select pg_sleep(0.3)`;
        return row.r;
      });
    const [a, b] = await Promise.all([issue(sql), issue(sql)]);
    assert.deepStrictEqual(a.batch_id, b.batch_id, "both sessions see one batch");
    assert.deepStrictEqual(
      [a.replayed, b.replayed].sort(),
      [false, true],
      "one executed, one replayed",
    );
    const [{ n }] = await sql`
      select count(*)::int as n from app.vouchers where campaign_id = ${world.campaignId}`;
    assert.deepStrictEqual(n, 100, "vouchers were issued once");
  } finally {
    await sql.end();
  }
});

Deno.test("a key whose first use rolled back can be used again", async () => {
  const sql = superuser(2);
  try {
    const world = await createWorld(sql);
    const key = crypto.randomUUID();
    const claims = JSON.stringify({ sub: world.admin.id, role: "authenticated" });
    await sql.begin(async (tx) => {
      await tx`select set_config('request.jwt.claims', ${claims}, true), set_config('role', 'authenticated', true)`;
      await tx`select api.issue_vouchers(${world.campaignId}, 5, ${key})`;
      await tx`rollback and chain`; // the first attempt dies before commit
    }).catch(() => {});
    const [row] = await sql.begin(async (tx) => {
      await tx`select set_config('request.jwt.claims', ${claims}, true), set_config('role', 'authenticated', true)`;
      return await tx`select api.issue_vouchers(${world.campaignId}, 5, ${key}) as r`;
    });
    assert.deepStrictEqual(
      row.r.replayed,
      false,
      "the retry executes: nothing was stored by the failed attempt",
    );
    const [{ n }] = await sql`
      select count(*)::int as n from app.vouchers where campaign_id = ${world.campaignId}`;
    assert.deepStrictEqual(n, 5);
  } finally {
    await sql.end();
  }
});
