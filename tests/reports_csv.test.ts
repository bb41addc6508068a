/**
 * The report and list RPCs through the gateway with the real supabase-js, as
 * finance's export calls them: JSON by default, CSV with `.csv()` (`Accept:
 * text/csv`), whose header is the row type's columns and whose rows carry the
 * same values as the JSON rows; errors stay JSON; admins only.
 */
import assert from "node:assert/strict";
import { client, createWorld, issueCodes, ownerDb } from "./_support.ts";

/** Splits a CSV answer of one-line rows into header and rows (fields split on commas outside quotes). */
function parseCsv(text: string): { header: string[]; rows: string[][] } {
  const split = (line: string) => {
    const fields: string[] = [];
    let field = "";
    let quoted = false;
    for (let i = 0; i < line.length; i++) {
      const ch = line[i];
      if (quoted) {
        if (ch === '"' && line[i + 1] === '"') {
          field += '"';
          i++;
        } else if (ch === '"') quoted = false;
        else field += ch;
      } else if (ch === '"') quoted = true;
      else if (ch === ",") {
        fields.push(field);
        field = "";
      } else field += ch;
    }
    fields.push(field);
    return fields;
  };
  const [header, ...rows] = text.split("\n");
  return { header: split(header), rows: rows.map(split) };
}

Deno.test("reports and lists export as CSV through supabase-js, with the JSON rows' values", async (t) => {
  const sql = ownerDb();
  try {
    const world = await createWorld(sql);
    const admin = client(world.admin.jwt);
    const operator = client(world.operator.jwt);
    const codes = await issueCodes(world, 3);
    for (const [i, code] of codes.entries()) {
      const { error } = await operator.rpc("redeem_voucher", {
        code,
        idempotency_key: crypto.randomUUID(),
        ...(i === 0
          ? { receipt_ref: "R, 42", pump: "3", quantity: 12.5, sale_amount_minor: 250000 }
          : {}),
      });
      assert.equal(error, null);
    }
    const { data: undone, error: undoError } = await operator.rpc("undo_redemption", {
      code: codes[2],
      reason: "aborted fuelling",
      idempotency_key: crypto.randomUUID(),
    });
    assert.equal(undoError, null);
    assert.equal(undone.voucher_status, "issued");
    const today = new Date().toISOString().slice(0, 10);

    await t.step("station_settlement: CSV header and values equal the JSON rows", async () => {
      const args = { from_date: today, to_date: today, station_id: world.stationId };
      const json = await admin.rpc("station_settlement", args);
      assert.equal(json.error, null);
      assert.equal(json.data.length, 1);
      assert.deepEqual(
        [json.data[0].redemptions, json.data[0].amount_minor, json.data[0].reversals],
        [3, 4500, 1],
      );
      const csv = await admin.rpc("station_settlement", args).csv();
      assert.equal(csv.error, null);
      assert.equal(typeof csv.data, "string");
      const { header, rows } = parseCsv(csv.data as unknown as string);
      assert.deepEqual(header, Object.keys(json.data[0]));
      assert.equal(rows.length, 1);
      const row = Object.fromEntries(header.map((h, i) => [h, rows[0][i]]));
      assert.deepEqual(
        [row.day, row.station_code, row.currency, row.redemptions, row.amount_minor, row.reversals],
        [today, json.data[0].station_code, "KES", "3", "4500", "1"],
      );
      assert.equal(row.reversed_amount_minor, "1500");
      assert.equal(row.net_amount_minor, "3000");
    });

    await t.step(
      "list_redemptions: quoted values, NULL as empty, GET works for a stable report",
      async () => {
        const args = { station_id: world.stationId };
        const csv = await admin.rpc("list_redemptions", args, { get: true }).csv();
        assert.equal(csv.error, null);
        const { header, rows } = parseCsv(csv.data as unknown as string);
        assert.equal(header[0], "id");
        assert.ok(header.includes("receipt_ref") && header.includes("reversal_reason"));
        assert.equal(rows.length, 3);
        const col = (name: string) => rows.map((r) => r[header.indexOf(name)]);
        assert.deepEqual(col("receipt_ref"), ["R, 42", "", ""], "a comma is quoted, NULL is empty");
        assert.deepEqual(col("quantity"), ["12.500", "", ""]);
        assert.deepEqual(col("reversal_reason"), ["", "", "aborted fuelling"]);
        assert.deepEqual(col("voucher_code"), codes);
        assert.match(
          csv.data as unknown as string,
          /"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}/,
          "timestamps as Postgres renders them",
        );
      },
    );

    await t.step("campaign_funnel and list_audit_log export too", async () => {
      const funnel = await admin.rpc("campaign_funnel", { campaign_id: world.campaignId }).csv();
      assert.equal(funnel.error, null);
      const parsed = parseCsv(funnel.data as unknown as string);
      assert.deepEqual(parsed.header, [
        "day",
        "targets",
        "sent",
        "delivered",
        "read",
        "failed",
        "redeemed",
        "reversed",
        "resends",
      ]);
      assert.deepEqual(parsed.rows, [[today, "0", "0", "0", "0", "0", "3", "1", "0"]]);

      const audit = await admin.rpc("list_audit_log", {
        table_name: "redemptions",
        row_key: { id: undone.redemption_id },
      }).csv();
      assert.equal(audit.error, null);
      const log = parseCsv(audit.data as unknown as string);
      assert.equal(log.rows.length, 1);
      const changes = JSON.parse(log.rows[0][log.header.indexOf("changes")]);
      assert.equal(changes.reversal_reason.new, "aborted fuelling");
      assert.equal(log.rows[0][log.header.indexOf("actor_id")], world.operator.id);
      assert.equal(log.rows[0][log.header.indexOf("rpc")], "undo_redemption");
    });

    await t.step("an empty result is an empty header line, as PostgREST answers", async () => {
      const csv = await admin.rpc("list_redemptions", {
        station_id: world.otherStationId,
      }).csv();
      assert.deepEqual([csv.status, csv.data], [200, "\n"]);
    });

    await t.step("errors stay JSON with their code; operators are refused", async () => {
      const bad = await admin.rpc("list_redemptions", { page_size: 501 }).csv();
      assert.deepEqual([bad.status, bad.error?.code], [400, "invalid_page_size"]);
      const refused = await operator.rpc("station_settlement", { from_date: today, to_date: today })
        .csv();
      assert.deepEqual([refused.status, refused.error?.code], [403, "not_authorized"]);
    });
  } finally {
    await sql.end();
  }
});
