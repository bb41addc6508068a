/**
 * The plan of the real claim function, not a copy of its query: auto_explain
 * logs the plans of the statements `app.claim_channel_messages` runs (nested
 * statements included), at a realistic size — 100,000 targets and messages on
 * one channel, half of them queued (two thirds of those in dispatching
 * campaigns), 20,000 opt-outs — with the statistics taken before that bulk load
 * (autovacuum re-analyzes only after 10% of a table changes), when the tables
 * held a history of 200 or of 3,000 small campaigns to a few repeated numbers,
 * and then with fresh statistics. The candidate scan must be the ordered index
 * scan of messages_claim_idx that stops after `take` rows (never a scan or sort
 * of the whole backlog), each candidate's opt-out and spacing probes must be
 * index probes, and nothing may be JIT-compiled. Last, the channel joins a
 * portfolio with a finite messaging tier (50,000 recipients counted in the
 * window; the recipients' statistics first from a fresh project's few hundred
 * rows, then fresh): each candidate's recipient is one primary-key probe and
 * the tier's usage a key range of at most 289 buckets.
 *
 * This is the evidence for the function's planner settings, each tried alone
 * and together: without enable_bitmapscan = off the spacing probe becomes a
 * sequential (or bitmap) scan of campaign_targets per candidate (200-campaign
 * history); without enable_sort = off the candidates come from
 * messages_pending_idx and a sort of every queued message (3,000-campaign
 * history); with enable_sort = off and JIT on, the disabled-path cost gets the
 * statement JIT-compiled on every call, hence jit = off. enable_seqscan = off
 * is not needed. Everything is rolled back.
 *
 * @module
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { SUPERUSER_URL } from "../local/env.ts";

const CHANNEL = "00000000-0000-4000-8000-00000000c1a1";
const MESSAGES = 100_000;

class Rollback extends Error {}

/** The part of a logged plan under `CTE candidates`, up to the next CTE. */
function candidatesPlan(plan: string): string {
  const start = plan.indexOf("CTE candidates");
  assert.ok(start >= 0, `no candidates CTE in the logged plan:\n${plan}`);
  const rest = plan.slice(start + "CTE candidates".length);
  const end = rest.search(/\n\s*CTE \w+/);
  return end < 0 ? rest : rest.slice(0, end);
}

/**
 * The claim's logged plans in one rolled-back transaction: after a history of
 * `historyCampaigns` small campaigns to the same 10 numbers (all read) has been
 * analyzed, a bulk load of {@link MESSAGES} new numbers arrives and the claim
 * runs on those stale statistics; then on fresh ones.
 */
async function claimPlans(historyCampaigns: number): Promise<Record<string, string>> {
  const notices: string[] = [];
  // auto_explain is loaded per session, which takes a superuser.
  const sql = postgres(SUPERUSER_URL, { max: 1, onnotice: (n) => notices.push(n.message) });
  const plans: Record<string, string> = {};
  const last = historyCampaigns + 10;
  try {
    await sql.begin(async (tx) => {
      await tx`insert into app.channels (id, phone_number_id, display_name, rate_per_minute, burst, tokens)
               values (${CHANNEL}, '777000001', 'Plan test', 600000, 10000, 10000)`;
      await tx.unsafe(`
        insert into app.campaigns (id, name, amount_minor, currency, channel_id, template_name, status)
        select ('00000000-0000-4000-8000-0000000c' || lpad(c::text, 4, '0'))::uuid, 'Plan ' || c, 100, 'KES',
               '${CHANNEL}', 'fuel_voucher', case when c <= 2 then 'dispatching' else 'completed' end
        from generate_series(1, ${last}) c;
        -- History: small campaigns to the same 10 numbers, all read. The
        -- statistics taken now describe a table of few, repeated numbers.
        insert into app.campaign_targets (campaign_id, msisdn)
        select ('00000000-0000-4000-8000-0000000c' || lpad(c::text, 4, '0'))::uuid, '+2546' || lpad(n::text, 8, '0')
        from generate_series(11, ${last}) c, generate_series(1, 10) n;
        insert into app.messages (id, campaign_id, channel_id, to_msisdn, template_name, template_language, status,
                                  wamid, last_attempt_at)
        select t.id, t.campaign_id, '${CHANNEL}', t.msisdn, 'fuel_voucher', 'en', 'read', 'wamid.plan.' || t.id,
               now() - interval '1 day'
        from app.campaign_targets t
        where t.campaign_id in (select id from app.campaigns where channel_id = '${CHANNEL}')
          and t.msisdn like '+2546%';
        analyze app.campaign_targets;
        analyze app.messages;
        analyze app.opt_outs;
        -- The bulk load autovacuum has not caught up with yet: 20,000 opt-outs and
        -- ${MESSAGES} new numbers on three campaigns, two of them dispatching. (Its
        -- own foreign-key checks are planned without sequential scans, or the load
        -- itself crawls.)
        set local enable_seqscan = off;
        insert into app.opt_outs (msisdn, source)
        select '+2558' || lpad(g::text, 8, '0'), 'plan test' from generate_series(1, 20000) g;
        insert into app.campaign_targets (campaign_id, msisdn)
        select ('00000000-0000-4000-8000-0000000c' || lpad((1 + g % 3)::text, 4, '0'))::uuid,
               '+2547' || lpad(g::text, 8, '0')
        from generate_series(1, ${MESSAGES}) g;
        insert into app.messages (id, campaign_id, channel_id, to_msisdn, template_name, template_language, status,
                                  next_attempt_at, wamid, last_attempt_at)
        select t.id, t.campaign_id, '${CHANNEL}', t.msisdn, 'fuel_voucher', 'en',
               case when t.id % 2 = 0 then 'queued' else 'read' end,
               now() - (t.id % 1000) * interval '1 second',
               case when t.id % 2 = 0 then null else 'wamid.plan.' || t.id end,
               case when t.id % 2 = 0 then null else now() - interval '1 day' end
        from app.campaign_targets t
        where t.campaign_id in (select id from app.campaigns where channel_id = '${CHANNEL}')
          and t.msisdn like '+2547%';
        reset enable_seqscan;
        load 'auto_explain';
        set local auto_explain.log_min_duration = 0;
        set local auto_explain.log_nested_statements = on;
        set local auto_explain.log_level = 'notice';
      `);
      const claim = async (label: string) => {
        notices.length = 0;
        const [{ n }] = await tx`
          select count(*)::integer as n from app.claim_channel_messages(${CHANNEL}, 100, 60, ${label})`;
        assert.ok(n > 0, `the ${label} claim leased messages`);
        const plan = notices.find((m) => m.includes("with candidates as materialized"));
        assert.ok(plan, `auto_explain logged the claim's statement (${label})`);
        plans[label] = plan;
      };
      await claim(`statistics from before a bulk load, after ${historyCampaigns} campaigns`);
      await tx.unsafe("analyze app.campaign_targets; analyze app.messages; analyze app.opt_outs");
      await claim(`fresh statistics, after ${historyCampaigns} campaigns`);
      // The same channel in a portfolio with a finite tier, half of whose 100,000
      // recipients were messaged in the window (a full 100K tier's day of usage),
      // with the recipients' statistics from before that day (a few rows).
      await tx.unsafe(`
        insert into app.portfolios (id, name, messaging_tier)
        values ('00000000-0000-4000-8000-00000000c1a2', 'Plan portfolio', 'TIER_100K');
        update app.channels set portfolio_id = '00000000-0000-4000-8000-00000000c1a2' where id = '${CHANNEL}';
        -- As on a fresh project (the truncate is rolled back with the rest): the
        -- statistics know a few hundred recipients in a few pages.
        truncate app.portfolio_recipients, app.portfolio_usage;
        insert into app.portfolio_recipients (portfolio_id, msisdn, last_at)
        select '00000000-0000-4000-8000-00000000c1a2', '+2549' || lpad(g::text, 8, '0'), now() - interval '1 hour'
        from generate_series(1, 300) g;
        analyze app.portfolio_recipients;
        analyze app.portfolio_usage;
        insert into app.portfolio_recipients (portfolio_id, msisdn, last_at)
        select '00000000-0000-4000-8000-00000000c1a2', '+2547' || lpad(g::text, 8, '0'),
               now() - (g % 1440) * interval '1 minute'
        from generate_series(1, ${MESSAGES}, 2) g;
        insert into app.portfolio_usage (portfolio_id, bucket_start, recipients)
        select '00000000-0000-4000-8000-00000000c1a2', app.usage_bucket(r.last_at), count(*)
        from app.portfolio_recipients r where r.portfolio_id = '00000000-0000-4000-8000-00000000c1a2'
        group by 2;
      `);
      const tier = `a finite messaging tier, after ${historyCampaigns} campaigns`;
      await claim(`${tier}, stale statistics`);
      await tx.unsafe("analyze app.portfolio_recipients; analyze app.portfolio_usage");
      await claim(tier);
      const usage = notices.find((m) => m.includes("from app.portfolio_usage u"));
      assert.ok(usage, `auto_explain logged the tier usage sum (${tier})`);
      plans[`tier usage, after ${historyCampaigns} campaigns`] = usage;
      throw new Rollback();
    });
  } catch (err) {
    if (!(err instanceof Rollback)) throw err;
  } finally {
    await sql.end();
  }
  return plans;
}

Deno.test("app.claim_channel_messages plans an ordered index scan and index probes at realistic size, whatever the statistics", async () => {
  const plans = { ...await claimPlans(200), ...await claimPlans(3000) };
  for (const [label, plan] of Object.entries(plans)) {
    if (label.startsWith("tier usage")) {
      assert.match(
        plan,
        /Index (Only )?Scan using portfolio_usage_pkey on portfolio_usage u/,
        `${label}: the tier usage is a range of at most 289 buckets of the portfolio's key, not a scan:\n${plan}`,
      );
      continue;
    }
    const candidates = candidatesPlan(plan);
    assert.match(
      candidates,
      /Limit[\s\S]*LockRows[\s\S]*Index Scan using messages_claim_idx on messages m/,
      `${label}: the candidates come from an ordered scan of messages_claim_idx under LockRows and Limit:\n${candidates}`,
    );
    // With an unlimited tier the recipient probe never runs, and the planner may
    // scan portfolio_recipients when the table is physically tiny (it scales
    // stale statistics by the current number of pages); with a finite tier it
    // must be the primary-key probe (below).
    const finiteTier = label.startsWith("a finite messaging tier");
    assert.doesNotMatch(
      candidates,
      finiteTier
        ? /Seq Scan|Bitmap Heap Scan|Sort\b/
        : /Seq Scan on (?!portfolio_recipients\b)|Bitmap Heap Scan|Sort\b/,
      `${label}: no scan or sort of a whole table:\n${candidates}`,
    );
    assert.match(
      candidates,
      /Index (Only )?Scan using opt_outs_pkey on opt_outs/,
      `${label}: the opt-out probe is an index probe:\n${candidates}`,
    );
    assert.match(
      candidates,
      /Index Scan using campaign_targets_msisdn_idx on campaign_targets rt/,
      `${label}: the spacing probe finds the recipient's targets by number:\n${candidates}`,
    );
    assert.doesNotMatch(plan, /\bJIT:/, `${label}: the claim is not JIT-compiled`);
    if (finiteTier) {
      assert.match(
        candidates,
        /Index Scan using portfolio_recipients_pkey on portfolio_recipients r/,
        `${label}: each candidate's recipient is one primary-key probe of the portfolio's recipients:\n${candidates}`,
      );
    }
  }
});
