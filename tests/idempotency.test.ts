/**
 * Durable idempotency across sessions: two transactions that use one key at the
 * same time execute it exactly once, and the loser gets the winner's response.
 */
import assert from "node:assert/strict";
import { createWorld, ownerDb } from "./_support.ts";

Deno.test("a key used concurrently by two sessions executes exactly once", async () => {
  const sql = ownerDb(4);
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

/** Thrown inside the first attempt's transaction, after the RPC answered, to roll it back. */
class AttemptDied extends Error {
  override name = "AttemptDied";
}

Deno.test("a key whose first use rolled back can be used again", async () => {
  const sql = ownerDb(2);
  try {
    const world = await createWorld(sql);
    const key = crypto.randomUUID();
    const claims = JSON.stringify({ sub: world.admin.id, role: "authenticated" });
    // The first attempt runs the RPC, then dies before commit: sql.begin rolls back
    // and rethrows. Asserting both (the RPC's answer, then exactly this error) tells
    // "ran and rolled back" apart from "never ran" (a failing RPC would reject with
    // its own error and leave `first` unset).
    let first: { batch_id: string; replayed: boolean } | undefined;
    await assert.rejects(
      sql.begin(async (tx) => {
        await tx`select set_config('request.jwt.claims', ${claims}, true), set_config('role', 'authenticated', true)`;
        const [row] = await tx`select api.issue_vouchers(${world.campaignId}, 5, ${key}) as r`;
        first = row.r;
        throw new AttemptDied("the first attempt dies before commit");
      }),
      AttemptDied,
    );
    assert.equal(first?.replayed, false, "the first attempt ran the RPC");
    const [gone] = await sql`
      select (select count(*)::int from app.voucher_batches where id = ${
      first!.batch_id
    }) as batches,
             (select count(*)::int from app.idempotency_keys where key = ${key}) as keys`;
    assert.deepStrictEqual(gone, { batches: 0, keys: 0 }, "its batch and its key were rolled back");

    const [row] = await sql.begin(async (tx) => {
      await tx`select set_config('request.jwt.claims', ${claims}, true), set_config('role', 'authenticated', true)`;
      return await tx`select api.issue_vouchers(${world.campaignId}, 5, ${key}) as r`;
    });
    assert.deepStrictEqual(
      row.r.replayed,
      false,
      "the retry executes: nothing was stored by the failed attempt",
    );
    assert.notEqual(row.r.batch_id, first!.batch_id, "the retry made its own batch");
    const [{ n }] = await sql`
      select count(*)::int as n from app.vouchers where campaign_id = ${world.campaignId}`;
    assert.deepStrictEqual(n, 5);
  } finally {
    await sql.end();
  }
});
