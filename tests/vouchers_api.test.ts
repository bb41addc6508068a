/**
 * Vouchers through the gateway with the real supabase-js client: the happy path
 * and each error as the admin app and the station PWA see it (HTTP status + code).
 */
import assert from "node:assert/strict";
import { client, createWorld, ownerDb } from "./_support.ts";

Deno.test("vouchers API: issue, preview, list and void as the apps call them", async (t) => {
  const sql = ownerDb();
  try {
    const world = await createWorld(sql);
    const admin = client(world.admin.jwt);
    const operator = client(world.operator.jwt);
    const key = crypto.randomUUID();

    let batchId = "";
    await t.step("an admin issues a batch and gets {batch_id, campaign_id, issued}", async () => {
      const { data, error, status } = await admin.rpc("issue_vouchers", {
        campaign_id: world.campaignId,
        count: 250,
        idempotency_key: key,
      });
      assert.deepStrictEqual(error, null);
      assert.deepStrictEqual(status, 200);
      assert.deepStrictEqual(data.issued, 250);
      assert.deepStrictEqual(data.campaign_id, world.campaignId);
      assert.deepStrictEqual(data.replayed, false);
      batchId = data.batch_id;
    });

    await t.step("replaying the key returns the stored batch, marked replayed", async () => {
      const { data } = await admin.rpc("issue_vouchers", {
        campaign_id: world.campaignId,
        count: 250,
        idempotency_key: key,
      });
      assert.deepStrictEqual(data.batch_id, batchId);
      assert.deepStrictEqual(data.replayed, true);
    });

    await t.step("reusing the key for another request is 409 idempotency_key_reused", async () => {
      const { error, status } = await admin.rpc("issue_vouchers", {
        campaign_id: world.campaignId,
        count: 10,
        idempotency_key: key,
      });
      assert.deepStrictEqual(status, 409);
      assert.deepStrictEqual(error?.code, "idempotency_key_reused");
    });

    let code = "";
    await t.step("list_vouchers pages the batch with a keyset cursor", async () => {
      const first = await admin.rpc("list_vouchers", {
        campaign_id: world.campaignId,
        batch_id: batchId,
        page_size: 200,
      });
      assert.deepStrictEqual(first.error, null);
      assert.deepStrictEqual(first.data.vouchers.length, 200);
      const second = await admin.rpc("list_vouchers", {
        campaign_id: world.campaignId,
        batch_id: batchId,
        after: first.data.next_cursor,
        page_size: 200,
      });
      assert.deepStrictEqual(second.data.vouchers.length, 50);
      assert.deepStrictEqual(second.data.next_cursor, null);
      code = first.data.vouchers[0].code;
      assert.ok(/^[0-9A-Z]{5}-[0-9A-Z]{5}-[0-9A-Z]{5}$/.test(code), `display code ${code}`);
    });

    await t.step("an operator previews with GET (stable function)", async () => {
      const { data, error, status } = await operator.rpc("preview_voucher", { code }, {
        get: true,
      });
      assert.deepStrictEqual(error, null);
      assert.deepStrictEqual(status, 200);
      assert.deepStrictEqual(data.status, "issued");
      assert.deepStrictEqual(data.amount_minor, 1500);
      assert.deepStrictEqual(data.redeemable_here, true);
    });

    await t.step("a typo is 400 invalid_code_checksum", async () => {
      const typo = code.slice(0, -1) + (code.endsWith("0") ? "1" : "0");
      const { error, status } = await operator.rpc("preview_voucher", { code: typo });
      assert.deepStrictEqual(status, 400);
      assert.deepStrictEqual(error?.code, "invalid_code_checksum");
    });

    await t.step("a malformed code is 400 invalid_code_format", async () => {
      const { error, status } = await operator.rpc("preview_voucher", { code: "hello" });
      assert.deepStrictEqual(status, 400);
      assert.deepStrictEqual(error?.code, "invalid_code_format");
    });

    await t.step("an operator cannot issue: 403 not_authorized", async () => {
      const { error, status } = await operator.rpc("issue_vouchers", {
        campaign_id: world.campaignId,
        count: 1,
        idempotency_key: crypto.randomUUID(),
      });
      assert.deepStrictEqual(status, 403);
      assert.deepStrictEqual(error?.code, "not_authorized");
    });

    await t.step("anon cannot call issue_vouchers: 401 permission denied", async () => {
      const { error, status } = await client().rpc("issue_vouchers", {
        campaign_id: world.campaignId,
        count: 1,
        idempotency_key: crypto.randomUUID(),
      });
      assert.deepStrictEqual(status, 401);
      assert.deepStrictEqual(error?.code, "42501");
    });

    await t.step("issuing 5,001 is 400 invalid_count; an unknown campaign is 404", async () => {
      const tooMany = await admin.rpc("issue_vouchers", {
        campaign_id: world.campaignId,
        count: 5001,
        idempotency_key: crypto.randomUUID(),
      });
      assert.deepStrictEqual([tooMany.status, tooMany.error?.code], [400, "invalid_count"]);
      const unknown = await admin.rpc("issue_vouchers", {
        campaign_id: crypto.randomUUID(),
        count: 1,
        idempotency_key: crypto.randomUUID(),
      });
      assert.deepStrictEqual([unknown.status, unknown.error?.code], [404, "campaign_not_found"]);
    });

    await t.step("void: an admin voids once; voiding again is 409 voucher_not_issued", async () => {
      const voidKey = crypto.randomUUID();
      const voided = await admin.rpc("void_voucher", {
        code,
        reason: "Lost",
        idempotency_key: voidKey,
      });
      assert.deepStrictEqual(voided.error, null);
      assert.deepStrictEqual(voided.data.status, "void");
      const again = await admin.rpc("void_voucher", {
        code,
        reason: "Lost",
        idempotency_key: crypto.randomUUID(),
      });
      assert.deepStrictEqual([again.status, again.error?.code], [409, "voucher_not_issued"]);
      const preview = await operator.rpc("preview_voucher", { code });
      assert.deepStrictEqual(preview.data.status, "void");
    });

    await t.step("an unknown code is 404 voucher_not_found", async () => {
      const [{ code: unknown }] = await sql`
        select app.format_code(d || app.code_check_char(d)) as code from (select 'ZZZZZZZZZZZZZX' as d) x`;
      const { error, status } = await operator.rpc("preview_voucher", { code: unknown });
      assert.deepStrictEqual([status, error?.code], [404, "voucher_not_found"]);
    });
  } finally {
    await sql.end();
  }
});
