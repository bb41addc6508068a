/**
 * functions/_shared/db.ts against the local Postgres: RPCs run as service_role
 * with service claims in one transaction (three round trips, or one for
 * callAsServiceRole), values render as SQL literals, business
 * errors become RpcError with their machine code and status, and connection
 * losses are classified transient.
 */
import assert from "node:assert/strict";
import { DB_URL } from "../../local/env.ts";
import {
  asServiceRole,
  callAsServiceRole,
  createDb,
  DbConfigError,
  isTransientDbError,
  RpcError,
  sqlValue,
  toRpcError,
} from "../../functions/_shared/db.ts";

Deno.test("asServiceRole() runs as service_role with the claims set, only inside its transaction", async () => {
  const db = createDb({ url: DB_URL, max: 1 });
  try {
    const [row] = await asServiceRole(db, (tx) =>
      tx.unsafe(
        "select current_user as who, auth.role() as role, current_setting('request.jwt.claims') as claims",
      ));
    assert.equal(row.who, "service_role");
    assert.equal(row.role, "service_role");
    assert.equal(JSON.parse(row.claims).role, "service_role");
    const [after] = await db.unsafe(
      "select current_user as who, coalesce(current_setting('request.jwt.claims', true), '') as claims",
    );
    assert.equal(after.who, "postgres", "set local: nothing leaks to the next transaction");
    assert.equal(after.claims, "");
  } finally {
    await db.end();
  }
});

Deno.test("asServiceRole() turns app.raise_error into an RpcError with code, status and details", async () => {
  const db = createDb({ url: DB_URL, max: 1 });
  try {
    await assert.rejects(
      asServiceRole(db, (tx) =>
        // Exactly what app.raise_error raises (PostgREST's custom-error form).
        tx.unsafe(
          `do $$ begin raise sqlstate 'PGRST' using
             message = '{"code":"voucher_expired","message":"Voucher \\"X\\" expired.","details":"{\\"at\\": \\"2026-01-01\\"}","hint":null}',
             detail = '{"status":410,"headers":{}}'; end $$`,
        )),
      (e) =>
        e instanceof RpcError && e.code === "voucher_expired" && e.status === 410 &&
        e.message === 'Voucher "X" expired.' &&
        (e.details as { at: string }).at === "2026-01-01",
    );
    const other = new Error("plain");
    assert.equal(toRpcError(other), other);
  } finally {
    await db.end();
  }
});

Deno.test("sqlValue() renders null, numbers, booleans and quoted strings", () => {
  assert.equal(sqlValue(null), "null");
  assert.equal(sqlValue(100), "100");
  assert.equal(sqlValue(false), "false");
  assert.equal(sqlValue("x'y"), "E'x''y'");
  assert.throws(() => sqlValue(Number.NaN), TypeError);
  assert.throws(() => sqlValue(Infinity), TypeError);
});

Deno.test("callAsServiceRole() runs one statement as service_role in one implicit transaction", async () => {
  const db = createDb({ url: DB_URL, max: 1 });
  try {
    const [row] = await callAsServiceRole(
      db,
      "select current_user as who, auth.role() as role, current_setting('request.jwt.claims') as claims, " +
        `${sqlValue("it's")}::text as echoed, '{"a": [1]}'::json as doc`,
    );
    assert.equal(row.who, "service_role");
    assert.equal(row.role, "service_role");
    assert.equal(JSON.parse(row.claims).role, "service_role");
    assert.equal(row.echoed, "it's");
    assert.deepEqual(row.doc, { a: [1] }, "json results are parsed as with bind parameters");
    const [after] = await db.unsafe(
      "select current_user as who, coalesce(current_setting('request.jwt.claims', true), '') as claims",
    );
    assert.equal(after.who, "postgres", "transaction-local: nothing leaks to the next query");
    assert.equal(after.claims, "");

    // The role is set before the statement is parsed: privileges are service_role's.
    await assert.rejects(
      callAsServiceRole(db, "select count(*) from app.messages"),
      (e) => (e as { code?: string }).code === "42501",
      "service_role has no access to the private schema",
    );
    // A failure rolls the whole implicit transaction back.
    await assert.rejects(
      callAsServiceRole(
        db,
        "do $$ begin perform api.record_opt_out(msisdn => '+254799999998', source => 'db.test'); " +
          "perform 1 / 0; end $$",
      ),
      (e) => (e as { code?: string }).code === "22012",
    );
    const [{ n }] = await db.unsafe(
      "select count(*)::int as n from app.opt_outs where msisdn = '+254799999998'",
    );
    assert.equal(n, 0, "the opt-out written before the error was rolled back");
    await assert.rejects(
      callAsServiceRole(db, `select * from api.claim_messages(max => 0)`),
      (e) => e instanceof RpcError && e.code === "invalid_claim" && e.status === 400,
    );
  } finally {
    await db.end();
  }
});

Deno.test("isTransientDbError() is true for lost connections and shutdowns, false for business errors", () => {
  const err = (code: string, message = "x") => Object.assign(new Error(message), { code });
  for (
    const code of [
      "57P01",
      "57P03",
      "08006",
      "08001",
      "53300",
      "40001",
      "40P01",
      "CONNECTION_CLOSED",
      "ECONNREFUSED",
    ]
  ) {
    assert.equal(isTransientDbError(err(code)), true, code);
  }
  assert.equal(isTransientDbError(new Error("connect ECONNREFUSED 127.0.0.1:54322")), false);
  assert.equal(isTransientDbError(new Error("Connection refused (os error 111)")), true);
  assert.equal(isTransientDbError(new RpcError("invalid_claim", "x", 400)), false);
  assert.equal(isTransientDbError(err("42501", "permission denied")), false);
  assert.equal(isTransientDbError(err("PGRST")), false);
});

Deno.test("a refused connection surfaces as a transient error", async () => {
  const db = createDb({ url: "postgresql://postgres:postgres@127.0.0.1:1/postgres", max: 1 });
  try {
    await assert.rejects(db.unsafe("select 1"), (e) => isTransientDbError(e));
  } finally {
    await db.end();
  }
});

Deno.test("createDb() without a URL and without SUPABASE_DB_URL is a DbConfigError", () => {
  if (Deno.env.get("SUPABASE_DB_URL")) return;
  assert.throws(() => createDb(), DbConfigError);
});
