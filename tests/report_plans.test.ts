/**
 * The plans of the real report functions at 1M redemptions, not copies of their
 * queries: auto_explain logs the plans of the statements the functions run
 * (nested statements included) while an admin calls them, over 1,000,000
 * redemptions spread over 90 days at 100 stations (perf/seed/redemptions.ts) —
 * once with the statistics taken before that bulk load and once with fresh
 * ones. Each report must reach its rows through the index made for it and stop
 * early where it pages, never scanning or sorting the whole table:
 *
 * - settlement of every station for a day: redemptions_redeemed_at_idx;
 * - settlement of one station for a month: redemptions_station_time_idx;
 * - the reversals of the period: the partial index of reversals;
 * - a page of list_redemptions: an ordered index scan under Limit;
 * - the redeem's "who won" and the undo's "active redemption" lookups: the
 *   partial unique index of active redemptions.
 *
 * Everything is rolled back. (Seeding takes most of this test's time.)
 *
 * @module
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { SUPERUSER_URL } from "../local/env.ts";
import { seedRedemptions } from "../perf/seed/redemptions.ts";

const N = 1_000_000;

class Rollback extends Error {}

/** The logged plan of the statement whose text contains `marker`. */
function planOf(notices: string[], marker: string): string {
  const plan = notices.find((n) => n.includes(marker));
  assert.ok(
    plan,
    `auto_explain logged no statement containing "${marker}":\n${notices.join("\n---\n")}`,
  );
  return plan;
}

Deno.test("the settlement report and the redemption lists use their indexes at 1M redemptions, whatever the statistics", async () => {
  const notices: string[] = [];
  // auto_explain is loaded per session, which takes a superuser.
  const sql = postgres(SUPERUSER_URL, { max: 1, onnotice: (n) => notices.push(n.message) });
  const plans: Record<string, Record<string, string>> = {};
  try {
    await sql.begin(async (tx) => {
      const [admin] =
        await tx`insert into auth.users (email) values ('plans-admin@test') returning id`;
      await tx`insert into app.staff (user_id, role) values (${admin.id}, 'admin')`;
      // Statistics of a small table, as autovacuum left them before the bulk load.
      await tx`analyze app.redemptions`;
      await tx`set local enable_seqscan = off`; // the load's own foreign-key probes
      const seeded = await seedRedemptions(tx, { n: N, tag: 7 });
      await tx`reset enable_seqscan`;
      const [{ n }] = await tx`select count(*)::int as n from app.redemptions`;
      assert.ok(n >= N, `at least ${N} redemptions (${n})`);
      // Seeded codes carry no valid check character; give two vouchers (one
      // per run: the undo changes it) a real code.
      const samples = await tx`
        update app.vouchers v set code = 'Y' || substr(v.code, 3) || app.code_check_char('Y' || substr(v.code, 3))
        where v.id in (select w.id from app.vouchers w
                       where w.campaign_id = ${seeded.campaignIds[0]} and w.status = 'redeemed'
                       order by w.id desc limit 2)
        returning app.format_code(v.code) as code`;
      const station = seeded.stationIds[3];
      const day = new Date(Date.now() - 10 * 86_400_000).toISOString().slice(0, 10);
      const monthStart = new Date(Date.now() - 40 * 86_400_000).toISOString().slice(0, 10);
      const since = new Date(Date.now() - 30 * 86_400_000).toISOString();
      await tx.unsafe(`
        select set_config('request.jwt.claims', '{"sub": "${admin.id}", "role": "authenticated"}', true);
        load 'auto_explain';
        set local auto_explain.log_min_duration = 0;
        set local auto_explain.log_nested_statements = on;
        set local auto_explain.log_level = 'notice';
      `);
      const run = async (label: string, sample: postgres.Row) => {
        const got: Record<string, string> = {};
        const capture = async (name: string, statement: string, marker: string) => {
          notices.length = 0;
          await tx.unsafe(statement);
          got[name] = planOf(notices, marker);
        };
        await capture(
          "settlement, every station, one day",
          `select count(*) from api.station_settlement('${day}', '${day}')`,
          "from app.redemptions r",
        );
        await capture(
          "settlement, one station, a month",
          `select count(*) from api.station_settlement('${monthStart}', '${day}', station_id => '${station}')`,
          "from app.redemptions r",
        );
        await capture(
          "list_redemptions, every station",
          `select count(*) from api.list_redemptions(since => '${since}')`,
          "from app.redemptions r",
        );
        await capture(
          "list_redemptions, one station",
          `select count(*) from api.list_redemptions(station_id => '${station}', since => '${since}')`,
          "from app.redemptions r",
        );
        await capture(
          "undo by code: the voucher's active redemption",
          `select api.undo_redemption('plan', 'plan-undo-${label.length}', code => '${sample.code}')`,
          "r.voucher_id = voucher.id and r.reversed_at is null",
        );
        plans[label] = got;
      };
      await run("statistics from before the bulk load", samples[0]);
      await tx`analyze app.redemptions`;
      await run("fresh statistics", samples[1]);
      throw new Rollback();
    });
  } catch (err) {
    if (!(err instanceof Rollback)) throw err;
  } finally {
    await sql.end();
  }

  for (const [label, got] of Object.entries(plans)) {
    const day = got["settlement, every station, one day"];
    assert.match(
      day,
      /redemptions_redeemed_at_idx/,
      `${label}: one day of every station by time:\n${day}`,
    );
    assert.match(
      day,
      /Index Scan using redemptions_reversed_at_idx/,
      `${label}: the day's reversals through their partial index:\n${day}`,
    );
    const month = got["settlement, one station, a month"];
    assert.match(
      month,
      /redemptions_station_time_idx/,
      `${label}: one station by (station, time):\n${month}`,
    );
    for (const name of ["list_redemptions, every station", "list_redemptions, one station"]) {
      const plan = got[name];
      assert.match(
        plan,
        /Limit[\s\S]*Index Scan using redemptions_(redeemed_at|station_time)_idx/,
        `${label}: ${name} pages an index:\n${plan}`,
      );
      assert.doesNotMatch(
        plan,
        /Seq Scan on redemptions|Sort Method: external/,
        `${label}: ${name}:\n${plan}`,
      );
    }
    const undo = got["undo by code: the voucher's active redemption"];
    assert.match(
      undo,
      /redemptions_voucher_active_key/,
      `${label}: the active redemption by its unique index:\n${undo}`,
    );
    for (const [name, plan] of Object.entries(got)) {
      assert.doesNotMatch(
        plan,
        /Seq Scan on redemptions/,
        `${label}: ${name} never scans redemptions:\n${plan}`,
      );
      assert.doesNotMatch(plan, /\bJIT:/, `${label}: ${name} is not JIT-compiled`);
    }
  }
});
