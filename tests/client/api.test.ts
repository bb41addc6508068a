/**
 * The client library against the local stack with the real supabase-js: the
 * typed calls, errors as ApiError with the server's code and parsed details,
 * Retry-After carried from a 503, the queue draining into the database, and
 * the ErrorCode union held equal to the codes the live SQL can raise.
 */
import assert from "node:assert/strict";
import {
  ApiError,
  createApiClient,
  ERROR_CODES,
  formatCode,
  MemoryFlushLock,
  MemoryQueueStore,
  NetworkError,
  newIdempotencyKey,
  RedeemQueue,
  SQL_ERROR_CODES,
  TRANSPORT_ERROR_CODES,
  VoucherApi,
} from "../../client/mod.ts";
import { ANON_KEY, API_URL, createWorld, issueCodes, ownerDb, sqlErrorCodes } from "../_support.ts";
import { serveGateway } from "../../local/gateway/mod.ts";

function apiFor(jwt: string, url = API_URL): VoucherApi {
  return new VoucherApi(createApiClient(url, ANON_KEY, { accessToken: jwt }));
}

Deno.test("ErrorCode lists exactly the codes the live SQL raises, plus the transport codes", async () => {
  const sql = ownerDb(1);
  try {
    const live = await sqlErrorCodes(sql);
    const ours = new Set<string>(SQL_ERROR_CODES);
    const missing = [...live].filter((c) => !ours.has(c)).sort();
    const extra = [...ours].filter((c) => !live.has(c)).sort();
    assert.deepEqual(
      { missing, extra },
      { missing: [], extra: [] },
      `client/errors.ts SQL_ERROR_CODES is out of step with the database: add ${
        JSON.stringify(missing)
      }, remove ${JSON.stringify(extra)}`,
    );
    assert.deepEqual(
      new Set(ERROR_CODES),
      new Set([...live, ...TRANSPORT_ERROR_CODES]),
      "ERROR_CODES = SQL codes + transport codes",
    );
  } finally {
    await sql.end();
  }
});

Deno.test("VoucherApi: station and admin calls resolve with the RPC's JSON or throw ApiError", async (t) => {
  const sql = ownerDb();
  try {
    const world = await createWorld(sql);
    const admin = apiFor(world.admin.jwt);
    const operator = apiFor(world.operator.jwt);
    const other = apiFor(world.otherOperator.jwt);
    const [a, b, c, d] = await issueCodes(world, 4);

    await t.step(
      "preview, redeem, and the conflict with the winner's station in details",
      async () => {
        const view = await operator.previewVoucher(a.toLowerCase());
        assert.deepEqual([view.code, view.status, view.redeemable_here], [a, "issued", true]);
        const key = newIdempotencyKey();
        const r = await operator.redeemVoucher({ code: a, idempotencyKey: key });
        assert.deepEqual([r.code, r.status, r.replayed], [a, "redeemed", false]);
        const again = await operator.redeemVoucher({ code: a, idempotencyKey: key });
        assert.deepEqual([again.redemption_id, again.replayed], [r.redemption_id, true]);
        const e = await other.redeemVoucher({ code: a, idempotencyKey: newIdempotencyKey() }).then(
          () => assert.fail("a second redeem must be refused"),
          (e) => e,
        );
        assert.ok(e instanceof ApiError);
        assert.equal(e.code, "voucher_already_redeemed");
        assert.equal(e.status, 409);
        assert.equal(e.details?.station_id, world.stationId);
        assert.equal(typeof e.details?.redeemed_at, "string");
      },
    );

    await t.step("redeem_vouchers: per-item results in input order", async () => {
      const items = [b, a, "ZZZZZ-ZZZZZ-ZZZZZ", c].map((code) => ({
        code,
        idempotency_key: newIdempotencyKey(),
        client_redeemed_at: new Date().toISOString(),
      }));
      const res = await operator.redeemVouchers(items);
      assert.deepEqual(
        res.results.map((r) => (r.ok ? "ok" : r.error.code)),
        ["ok", "voucher_already_redeemed", "invalid_code_checksum", "ok"],
      );
      assert.deepEqual([res.redeemed, res.failed], [2, 2]);
    });

    await t.step("admin: issue, list, void, campaign lifecycle and stats", async () => {
      const issued = await admin.issueVouchers({
        campaignId: world.campaignId,
        count: 3,
        idempotencyKey: newIdempotencyKey(),
      });
      assert.equal(issued.issued, 3);
      const page = await admin.listVouchers({
        campaignId: world.campaignId,
        batchId: issued.batch_id,
      });
      assert.equal(page.vouchers.length, 3);
      const voided = await admin.voidVoucher({
        code: page.vouchers[0].code,
        reason: "test",
        idempotencyKey: newIdempotencyKey(),
      });
      assert.equal(voided.status, "void");
      const campaign = await admin.createCampaign({
        name: "client lifecycle",
        amount_minor: 100,
        currency: "kes",
      });
      assert.deepEqual([campaign.status, campaign.currency], ["draft", "KES"]);
      const refused = await admin.pauseCampaign(campaign.id).catch((e) => e);
      assert.ok(
        refused instanceof ApiError && refused.code === "invalid_transition",
        String(refused),
      );
      assert.equal((await admin.cancelCampaign(campaign.id)).status, "cancelled");
      const stats = await admin.campaignStats(world.campaignId);
      assert.equal(stats.vouchers.void, 1);
      assert.ok(stats.vouchers.redeemed >= 3);
      const notAdmin = await operator.campaignStats(world.campaignId).catch((e) => e);
      assert.ok(notAdmin instanceof ApiError && notAdmin.code === "not_authorized");
      assert.equal(notAdmin.status, 403);
    });

    await t.step("no answer at all is a NetworkError", async () => {
      const dead = apiFor(world.operator.jwt, "http://127.0.0.1:9");
      await assert.rejects(() => dead.previewVoucher(d), NetworkError);
    });
  } finally {
    await sql.end();
  }
});

Deno.test("a 503 from the saturated gateway carries Retry-After into ApiError.retryAfterMs", async () => {
  const gw = await serveGateway({
    port: 0,
    poolSize: 1,
    maxQueue: 0,
    queueTimeoutMs: 200,
    log: false,
  });
  const sql = ownerDb();
  try {
    const world = await createWorld(sql);
    const api = apiFor(world.operator.jwt, gw.url);
    const [code] = await issueCodes(world, 1);
    // One connection and no wait queue: calls made together are shed but one.
    const holders = Array.from({ length: 4 }, () => api.previewVoucher(code).catch((e) => e));
    const results = await Promise.all(holders);
    const shed = results.filter((r) => r instanceof ApiError) as ApiError[];
    assert.ok(shed.length > 0, "some calls were shed");
    for (const e of shed) {
      assert.equal(e.code, "PGRST003");
      assert.equal(e.status, 503);
      assert.equal(e.retryAfterMs, 1000);
    }
  } finally {
    await gw.shutdown();
    await sql.end();
  }
});

Deno.test("RedeemQueue over the real API: 20 offline redeems drain into exactly 20 redemptions", async () => {
  const sql = ownerDb();
  let online = false;
  const world = await createWorld(sql);
  const q = new RedeemQueue({
    api: apiFor(world.operator.jwt),
    store: new MemoryQueueStore(),
    lock: new MemoryFlushLock(),
    events: null,
    isOnline: () => online,
    reconnectJitterMs: 0,
  });
  try {
    const codes = await issueCodes(world, 20);
    for (const code of codes) await q.enqueue(code.replaceAll("-", " ").toLowerCase());
    assert.equal(q.state.queued, 20);
    online = true;
    await q.flush();
    assert.equal(q.state.queued, 0);
    const items = await q.items(50);
    assert.deepEqual(items.map((i) => i.state), Array(20).fill("redeemed"));
    const [{ n }] = await sql`
      select count(*)::int as n from app.redemptions r join app.vouchers v on v.id = r.voucher_id
      where v.code = any(${codes.map((c) => c.replaceAll("-", ""))}::text[])`;
    assert.equal(n, 20);
    assert.deepEqual(new Set(items.map((i) => formatCode(i.code))), new Set(codes));
  } finally {
    await q.stop();
    await sql.end();
  }
});
