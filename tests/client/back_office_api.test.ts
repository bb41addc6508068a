/**
 * The client library's back-office calls over the real API: the station's undo
 * (with its window), redeem details, staff and station lifecycle, settlement
 * as JSON and as CSV, and the audit log — each resolving with the RPC's JSON
 * or throwing ApiError with the server's code.
 */
import assert from "node:assert/strict";
import { ApiError, createApiClient, newIdempotencyKey, VoucherApi } from "../../client/mod.ts";
import { ANON_KEY, API_URL, createWorld, issueCodes, ownerDb } from "../_support.ts";

function apiFor(jwt: string): VoucherApi {
  return new VoucherApi(createApiClient(API_URL, ANON_KEY, { accessToken: jwt }));
}

Deno.test("VoucherApi back office: undo, details, lifecycle, settlement (JSON and CSV), audit", async (t) => {
  const sql = ownerDb();
  try {
    const world = await createWorld(sql);
    const admin = apiFor(world.admin.jwt);
    const operator = apiFor(world.operator.jwt);
    const other = apiFor(world.otherOperator.jwt);
    const [a, b] = await issueCodes(world, 2);
    const today = new Date().toISOString().slice(0, 10);

    await t.step(
      "a station redeems with till details and undoes it within the window",
      async () => {
        const r = await operator.redeemVoucher({
          code: a,
          idempotencyKey: newIdempotencyKey(),
          receiptRef: "T-77",
          quantity: 40.25,
          saleAmountMinor: 612500,
        });
        assert.deepEqual([r.receipt_ref, r.quantity, r.sale_amount_minor], ["T-77", 40.25, 612500]);
        const wrong = await other.undoRedemption({
          redemptionId: r.redemption_id,
          reason: "not ours",
          idempotencyKey: newIdempotencyKey(),
        }).catch((e) => e);
        assert.ok(wrong instanceof ApiError && wrong.code === "station_not_allowed", String(wrong));
        const key = newIdempotencyKey();
        const undone = await operator.undoRedemption({
          code: a,
          reason: "wrong voucher",
          idempotencyKey: key,
        });
        assert.deepEqual([undone.voucher_status, undone.reversal_reason, undone.replayed], [
          "issued",
          "wrong voucher",
          false,
        ]);
        const replay = await operator.undoRedemption({
          code: a,
          reason: "wrong voucher",
          idempotencyKey: key,
        });
        assert.equal(replay.replayed, true);
        const bad = await operator.redeemVoucher({
          code: b,
          idempotencyKey: newIdempotencyKey(),
          pump: "a-pump-name-that-is-too-long",
        }).catch((e) => e);
        assert.ok(bad instanceof ApiError && bad.code === "invalid_redemption_details");
        assert.equal(bad.details?.field, "pump");
        await operator.redeemVoucher({ code: a, idempotencyKey: newIdempotencyKey() });
      },
    );

    await t.step("settlement as JSON and as CSV; an operator may not read it", async () => {
      const rows = await admin.stationSettlement({
        fromDate: today,
        toDate: today,
        stationId: world.stationId,
      });
      assert.deepEqual(rows.map((r) => [r.redemptions, r.reversals, r.net_amount_minor]), [[
        2,
        1,
        1500,
      ]]);
      const csv = await admin.exportCsv("station_settlement", {
        from_date: today,
        to_date: today,
        station_id: world.stationId,
      });
      const [header, line] = csv.split("\n");
      assert.equal(header.split(",")[0], "day");
      assert.ok(line.startsWith(`${today},${world.stationId},`), line);
      const refused = await operator.exportCsv("station_settlement", {
        from_date: today,
        to_date: today,
      })
        .catch((e) => e);
      assert.ok(
        refused instanceof ApiError && refused.code === "not_authorized" && refused.status === 403,
      );
    });

    await t.step("staff and station lifecycle, and the audit log says who did it", async () => {
      const off = await admin.deactivateStaff(world.otherOperator.id);
      assert.equal(off.active, false);
      const locked = await other.previewVoucher(b).catch((e) => e);
      assert.ok(
        locked instanceof ApiError && locked.code === "not_authorized",
        "refused on the next request",
      );
      assert.equal((await admin.reactivateStaff(world.otherOperator.id)).active, true);
      assert.equal((await other.previewVoucher(b)).status, "issued");
      // Stations by code, page after page (benchmarks leave thousands in a local database).
      let found = false;
      let after: string | undefined;
      for (let page = 0; page < 100 && !found; page++) {
        const stations = await admin.listStations({ after, pageSize: 500 });
        found = stations.some((s) => s.id === world.stationId);
        if (stations.length < 500) break;
        after = stations.at(-1)!.code;
      }
      assert.ok(found, "list_stations pages reach the world's station");
      const log = await admin.listAuditLog({
        tableName: "staff",
        rowKey: { user_id: world.otherOperator.id },
      });
      assert.deepEqual(
        log.filter((row) => row.operation === "update").map((
          row,
        ) => [row.actor_id, row.changes.active]),
        [[world.admin.id, { old: false, new: true }], [world.admin.id, { old: true, new: false }]],
      );
      const self = await admin.deactivateStaff(world.admin.id).catch((e) => e);
      assert.ok(self instanceof ApiError && self.code === "cannot_deactivate_self");
    });

    await t.step("paging arguments are checked by the server", async () => {
      const tooMany = await admin.listRedemptions({ pageSize: 501 }).catch((e) => e);
      assert.ok(tooMany instanceof ApiError && tooMany.code === "invalid_page_size");
      const page = await admin.listVouchers({ campaignId: world.campaignId, pageSize: 1 });
      assert.equal(page.vouchers.length, 1, "listVouchers passes page_size");
    });
  } finally {
    await sql.end();
  }
});
