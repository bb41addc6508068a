/**
 * Time-ordered idempotency keys (client/idempotency_key.ts): the
 * UUIDv7 layout, uniqueness within one millisecond, and the property the
 * database relies on — later keys sort after earlier ones, also in Postgres.
 *
 * @module
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { DB_URL } from "../local/cluster.ts";
import { newIdempotencyKey } from "../client/idempotency_key.ts";

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

Deno.test("a key is a UUIDv7 carrying the millisecond it was made", () => {
  const now = Date.UTC(2026, 10, 28, 15, 30, 0, 123);
  const key = newIdempotencyKey(now);
  assert.match(key, UUID_V7);
  assert.equal(parseInt(key.replaceAll("-", "").slice(0, 12), 16), now);
  assert.match(newIdempotencyKey(), UUID_V7);
});

Deno.test("keys made in one millisecond are distinct", () => {
  const keys = new Set(Array.from({ length: 10_000 }, () => newIdempotencyKey(1_700_000_000_000)));
  assert.equal(keys.size, 10_000);
});

Deno.test("a timestamp that does not fit 48 bits is refused", () => {
  for (const bad of [-1, 2 ** 48, 1.5, Number.NaN]) {
    assert.throws(() => newIdempotencyKey(bad), RangeError);
  }
});

Deno.test("later keys sort after earlier ones, in TypeScript and in Postgres", async () => {
  const start = Date.UTC(2026, 0, 1);
  // Steps from one millisecond to years, so every timestamp byte changes somewhere.
  const times = Array.from({ length: 150 }, (_, i) => start + i + Math.floor(1.2 ** i));
  const keys = times.map((t) => newIdempotencyKey(t));
  assert.deepStrictEqual([...keys].sort(), keys);

  const sql = postgres(DB_URL, { max: 1, onnotice: () => {} });
  try {
    const rows = await sql`
      select k from unnest(${keys}::text[]) as u(k) order by k`;
    assert.deepStrictEqual(rows.map((r) => r.k), keys, "text order in the database");
  } finally {
    await sql.end();
  }
});
