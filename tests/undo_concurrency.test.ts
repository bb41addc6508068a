/**
 * Undo against concurrent redeems and undos, in two sessions, each race set up
 * with one request held open (its row locks taken, not committed) while the
 * other runs:
 *
 * - a redeem while an undo is in flight sees the voucher as it was, redeemed,
 *   and is refused as if it had come first; once the undo commits the voucher
 *   redeems again;
 * - two stations redeeming a just-undone voucher at once: one wins, the other
 *   waits for its row lock and is refused;
 * - two undos of one redemption at once: the second waits, then is told it was
 *   already undone.
 *
 * Whatever the interleaving, a voucher has at most one active redemption.
 */
import assert from "node:assert/strict";
import type postgres from "postgres";
import { createWorld, issueCodes, ownerDb } from "./_support.ts";

type Outcome = { ok: true; result: Record<string, unknown> } | { ok: false; code: string };

function claimsOf(userId: string): string {
  return JSON.stringify({ sub: userId, role: "authenticated" });
}

/** Runs one RPC call as `userId` in its own transaction on a reserved connection. */
async function call(
  conn: postgres.ReservedSql,
  userId: string,
  rpc: string,
): Promise<Outcome> {
  await conn`begin`;
  try {
    const [row] = await conn.unsafe(
      `select set_config('request.jwt.claims', $1, true), ${rpc} as result`,
      [claimsOf(userId)],
    );
    await conn`commit`;
    return { ok: true, result: row.result };
  } catch (e) {
    await conn`rollback`;
    return { ok: false, code: JSON.parse((e as Error).message).code };
  }
}

/** One call on a connection of its own. */
async function callOnce(sql: postgres.Sql, userId: string, rpc: string): Promise<Outcome> {
  const conn = await sql.reserve();
  try {
    return await call(conn, userId, rpc);
  } finally {
    conn.release();
  }
}

/**
 * Runs `held` in a transaction on one connection and keeps it open; starts
 * `racing` on another; waits (bounded) until `racing` waits on a lock; commits
 * `held`; returns both outcomes.
 */
async function race(
  sql: postgres.Sql,
  held: { userId: string; rpc: string },
  racing: { userId: string; rpc: string },
): Promise<{ held: Record<string, unknown>; racing: Outcome; waited: boolean }> {
  const a = await sql.reserve();
  const b = await sql.reserve();
  try {
    const [{ pid }] = await b`select pg_backend_pid() as pid`;
    await a`begin`;
    const [heldRow] = await a.unsafe(
      `select set_config('request.jwt.claims', $1, true), ${held.rpc} as result`,
      [claimsOf(held.userId)],
    );
    const racingOutcome = call(b, racing.userId, racing.rpc);
    let waited = false;
    for (let i = 0; i < 100 && !waited; i++) {
      const [row] = await sql`
        select wait_event_type = 'Lock' as waiting from pg_stat_activity where pid = ${pid}`;
      waited = row?.waiting === true;
      if (!waited) await new Promise((r) => setTimeout(r, 20));
    }
    await a`commit`;
    return { held: heldRow.result, racing: await racingOutcome, waited };
  } finally {
    a.release();
    b.release();
  }
}

async function redemptionsOf(sql: postgres.Sql, code: string) {
  return await sql`
    select r.id, r.station_id, r.reversed_at is not null as reversed, v.status
    from app.redemptions r join app.vouchers v on v.id = r.voucher_id
    where v.code = app.normalize_code(${code}) order by r.id`;
}

Deno.test("a redeem while an undo is in flight is refused as if it came first; then the voucher redeems again", async () => {
  const sql = ownerDb(6);
  try {
    const world = await createWorld(sql);
    const [code] = await issueCodes(world, 1);
    const first = await callOnce(
      sql,
      world.operator.id,
      `api.redeem_voucher('${code}', '${crypto.randomUUID()}')`,
    );
    assert.ok(first.ok);
    const { held, racing, waited } = await race(
      sql,
      {
        userId: world.admin.id,
        rpc: `api.undo_redemption('wrong voucher', '${crypto.randomUUID()}', code => '${code}')`,
      },
      {
        userId: world.otherOperator.id,
        rpc: `api.redeem_voucher('${code}', '${crypto.randomUUID()}')`,
      },
    );
    assert.equal(held.voucher_status, "issued", "the undo returned the voucher");
    assert.equal(waited, false, "the redeem did not wait: the voucher it sees is redeemed");
    assert.deepEqual(racing, { ok: false, code: "voucher_already_redeemed" });
    const again = await callOnce(
      sql,
      world.otherOperator.id,
      `api.redeem_voucher('${code}', '${crypto.randomUUID()}')`,
    );
    assert.ok(again.ok, "once the undo committed, the voucher redeems again");
    const rows = await redemptionsOf(sql, code);
    assert.deepEqual(
      rows.map((r) => [r.station_id, r.reversed, r.status]),
      [[world.stationId, true, "redeemed"], [world.otherStationId, false, "redeemed"]],
      "one reversed redemption, one active one at the other station",
    );
  } finally {
    await sql.end();
  }
});

Deno.test("two stations redeem a just-undone voucher at once: exactly one wins", async () => {
  const sql = ownerDb(6);
  try {
    const world = await createWorld(sql);
    const [code] = await issueCodes(world, 1);
    assert.ok(
      (await callOnce(
        sql,
        world.operator.id,
        `api.redeem_voucher('${code}', '${crypto.randomUUID()}')`,
      )).ok,
    );
    assert.ok(
      (await callOnce(
        sql,
        world.admin.id,
        `api.undo_redemption('aborted', '${crypto.randomUUID()}', code => '${code}')`,
      )).ok,
    );
    const { held, racing, waited } = await race(
      sql,
      { userId: world.operator.id, rpc: `api.redeem_voucher('${code}', '${crypto.randomUUID()}')` },
      {
        userId: world.otherOperator.id,
        rpc: `api.redeem_voucher('${code}', '${crypto.randomUUID()}')`,
      },
    );
    assert.equal(held.status, "redeemed");
    assert.ok(waited, "the second redeem waited for the first one's row lock");
    assert.deepEqual(racing, { ok: false, code: "voucher_already_redeemed" });
    const rows = await redemptionsOf(sql, code);
    assert.deepEqual(rows.map((r) => [r.station_id, r.reversed]), [
      [world.stationId, true],
      [world.stationId, false],
    ]);
  } finally {
    await sql.end();
  }
});

Deno.test("two undos of one redemption at once: one undoes it, the other is told it already was", async () => {
  const sql = ownerDb(6);
  try {
    const world = await createWorld(sql);
    const [code] = await issueCodes(world, 1);
    const redeemed = await callOnce(
      sql,
      world.operator.id,
      `api.redeem_voucher('${code}', '${crypto.randomUUID()}')`,
    );
    assert.ok(redeemed.ok);
    const id = redeemed.result.redemption_id;
    const { held, racing, waited } = await race(
      sql,
      {
        userId: world.operator.id,
        rpc: `api.undo_redemption('mistake', '${crypto.randomUUID()}', redemption_id => ${id})`,
      },
      {
        userId: world.admin.id,
        rpc: `api.undo_redemption('refund', '${crypto.randomUUID()}', redemption_id => ${id})`,
      },
    );
    assert.equal(held.reversal_reason, "mistake");
    assert.ok(waited, "the second undo waited for the first");
    assert.deepEqual(racing, { ok: false, code: "redemption_already_reversed" });
    const rows = await redemptionsOf(sql, code);
    assert.deepEqual(rows.map((r) => [r.reversed, r.status]), [[true, "issued"]]);
    const [{ n }] = await sql`
      select count(*)::int as n from app.audit_log
      where table_name = 'redemptions' and row_key = ${sql.json({ id: Number(id) })}`;
    assert.equal(n, 1, "the redemption's reversal is audited once");
  } finally {
    await sql.end();
  }
});
