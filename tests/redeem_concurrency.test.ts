/**
 * Zero double redemptions under any retry pattern, through the gateway:
 * many stations hammering the same few codes, and an offline queue flushed
 * three times at once.
 */
import assert from "node:assert/strict";
import type postgres from "postgres";
import { client, createWorld, issueCodes, ownerDb } from "./_support.ts";

const CLIENTS = 32;
const ROUNDS = 3;

Deno.test("32 concurrent clients redeeming the same codes redeem each exactly once", async () => {
  const sql = ownerDb();
  try {
    const world = await createWorld(sql);
    const codes = await issueCodes(world, 8);
    // Half the clients are operators at one station, half at the other.
    const clients = Array.from(
      { length: CLIENTS },
      (_, i) => client(i % 2 ? world.operator.jwt : world.otherOperator.jwt),
    );
    const outcomes = await Promise.all(clients.map(async (c, i) => {
      const seen: string[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        // Each client walks the codes from a different offset, every attempt a new key.
        for (let k = 0; k < codes.length; k++) {
          const code = codes[(i + k) % codes.length];
          const { data, error } = await c.rpc("redeem_voucher", {
            code,
            idempotency_key: crypto.randomUUID(),
          });
          seen.push(error ? error.code : data.status);
        }
      }
      return seen;
    }));
    const all = outcomes.flat();
    const count = (s: string) => all.filter((x) => x === s).length;
    assert.equal(all.length, CLIENTS * ROUNDS * codes.length);
    assert.equal(count("redeemed"), codes.length, "each code redeemed exactly once");
    assert.equal(
      count("voucher_already_redeemed"),
      all.length - codes.length,
      "every other attempt is voucher_already_redeemed",
    );
    const [{ records, redeemed }] = await sql`
      select (select count(*)::int from app.redemptions r join app.vouchers v on v.id = r.voucher_id
              where v.campaign_id = ${world.campaignId}) as records,
             (select count(*)::int from app.vouchers
              where campaign_id = ${world.campaignId} and status = 'redeemed') as redeemed`;
    assert.deepStrictEqual({ records, redeemed }, { records: 8, redeemed: 8 }, "counts reconcile");
  } finally {
    await sql.end();
  }
});

Deno.test("an offline queue flushed three times at once gives identical results and no duplicates", async () => {
  const sql = ownerDb();
  try {
    const world = await createWorld(sql);
    const codes = await issueCodes(world, 40);
    const items = codes.map((code, i) => ({
      code,
      idempotency_key: `offline-${world.operator.id}-${i}`,
      client_redeemed_at: new Date(Date.now() - (40 - i) * 60_000).toISOString(),
    }));
    // The same voucher twice in the queue (taken twice offline): the second loses.
    items.push({ ...items[0], idempotency_key: `offline-dup-${world.operator.id}` });
    const pwa = client(world.operator.jwt);
    const flushes = await Promise.all(
      [0, 1, 2].map(() => pwa.rpc("redeem_vouchers", { items })),
    );
    for (const f of flushes) assert.equal(f.error, null);
    const normalise = (r: { results: Record<string, unknown>[] }) =>
      r.results.map(({ replayed: _, ...rest }) => rest);
    const [a, b, c] = flushes.map((f) => normalise(f.data));
    assert.deepStrictEqual(b, a, "second flush identical to the first");
    assert.deepStrictEqual(c, a, "third flush identical to the first");
    assert.equal(a.filter((r) => r.ok).length, 40, "each voucher redeemed by its own item");
    assert.equal((a[40].error as { code: string }).code, "voucher_already_redeemed");
    const [{ dupes }] = await sql`
      select count(*)::int as dupes from (
        select voucher_id from app.redemptions where reversed_at is null
        group by voucher_id having count(*) > 1) d`;
    assert.equal(dupes, 0, "no voucher has two active redemption records");
    const [{ n }] = await sql`
      select count(*)::int as n from app.redemptions r join app.vouchers v on v.id = r.voucher_id
      where v.campaign_id = ${world.campaignId}`;
    assert.equal(n, 40);
  } finally {
    await sql.end();
  }
});

/**
 * Redeems `code` under `key` as `operatorId` in a transaction held open (its key
 * written, not committed) while `race()` starts; commits 300 ms later, when the
 * racing request has reached the key's unique index and waits there. Returns how
 * the race ended: "accepted" or the error code it was refused with.
 */
async function raceAgainstHeldKey(
  sql: postgres.Sql,
  operatorId: string,
  code: string,
  key: string,
  race: () => Promise<unknown>,
): Promise<string> {
  const claims = JSON.stringify({ sub: operatorId, role: "authenticated" });
  let release!: () => void;
  const holding = new Promise<void>((resolve) => (release = resolve));
  let redeemed!: () => void;
  const isIn = new Promise<void>((resolve) => (redeemed = resolve));
  const held = sql.begin(async (tx) => {
    const [row] = await tx`select set_config('request.jwt.claims', ${claims}, true),
                                  api.redeem_voucher(${code}, ${key}) as result`;
    redeemed();
    await holding;
    assert.equal(row.result.status, "redeemed", "the held request redeems");
  });
  await isIn;
  const racing = race().then(
    () => "accepted",
    (e: postgres.PostgresError) => JSON.parse(e.message).code as string,
  );
  await new Promise((r) => setTimeout(r, 300));
  const [waiting] = await sql`
    select count(*)::int as n from pg_stat_activity
    where wait_event_type = 'Lock' and query like '%api.redeem_voucher%'`;
  release();
  await held;
  assert.equal(waiting.n, 1, "the racing request waited on the held key");
  return await racing;
}

Deno.test("one key used at the same moment for two vouchers redeems only the first", async () => {
  const sql = ownerDb();
  try {
    const world = await createWorld(sql);
    const [first, second] = await issueCodes(world, 2);
    const key = crypto.randomUUID();
    const claims = JSON.stringify({ sub: world.operator.id, role: "authenticated" });
    // The racing request is a single redeem of another voucher under the same key.
    const racing = () =>
      sql.begin((tx) =>
        tx`select set_config('request.jwt.claims', ${claims}, true),
                  api.redeem_voucher(${second}, ${key})`
      );
    const outcome = await raceAgainstHeldKey(sql, world.operator.id, first, key, racing);
    assert.equal(outcome, "idempotency_key_reused");

    const rows = await sql`
      select app.format_code(v.code) as code, v.status, count(r.id)::int as records
      from app.vouchers v left join app.redemptions r on r.voucher_id = v.id
      where v.campaign_id = ${world.campaignId} group by v.code, v.status order by 1`;
    const byCode = Object.fromEntries(rows.map((r) => [r.code, `${r.status}/${r.records}`]));
    assert.deepStrictEqual(byCode, { [first]: "redeemed/1", [second]: "issued/0" });
  } finally {
    await sql.end();
  }
});

Deno.test("a flush racing another request's key is refused whole, and its retry answers per item", async () => {
  const sql = ownerDb();
  try {
    const world = await createWorld(sql);
    const [held, reused, other] = await issueCodes(world, 3);
    const key = crypto.randomUUID();
    const claims = JSON.stringify({ sub: world.operator.id, role: "authenticated" });
    const items = [
      { code: reused, idempotency_key: key },
      { code: other, idempotency_key: crypto.randomUUID() },
    ];
    const flush = () =>
      sql.begin((tx) =>
        tx`select set_config('request.jwt.claims', ${claims}, true),
                  api.redeem_vouchers(${sql.json(items)}) as result`
      );

    const outcome = await raceAgainstHeldKey(sql, world.operator.id, held, key, flush);
    assert.equal(outcome, "idempotency_key_reused", "the racing flush is refused whole");
    const [{ n }] = await sql`
      select count(*)::int as n from app.vouchers
      where campaign_id = ${world.campaignId} and status = 'redeemed'`;
    assert.equal(n, 1, "the refused flush redeemed nothing");

    const [{ result }] = await flush();
    assert.deepStrictEqual(
      result.results.map((r: { ok: boolean; error?: { code: string } }) => r.ok || r.error?.code),
      ["idempotency_key_reused", true],
      "retried, the flush answers each item",
    );
  } finally {
    await sql.end();
  }
});
