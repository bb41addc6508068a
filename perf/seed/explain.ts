/**
 * `deno task perf:explain [--compare 1m] [--rate 20] [--seconds 30]`
 *
 * Index validation at scale. Runs `EXPLAIN (ANALYZE, BUFFERS)` of the statement
 * behind every hot RPC path — with parameters sampled from the perf dataset,
 * writes inside a rolled-back transaction — and checks that the plan uses the
 * intended index. On a table too small for an index to pay off (< 10,000 rows)
 * a sequential scan is reported as inconclusive, not as a failure.
 *
 * With `--compare SCALE` it also measures preview and redeem latency through
 * the API at a fixed arrival rate on the current dataset, grows the dataset to
 * SCALE with the perf seed, re-runs the plans and the measurement, and reports
 * the ratio (the target: p95 at 1M within 20% of p95 at 10k).
 *
 * Writes explain.md / explain.json (and scale_compare.md) to `.perf/<timestamp>-explain/`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import postgres from "postgres";
import type { K6Options, Scenario, SeedSummary } from "../scenarios/_types.ts";
import { voucherPreviewSpike } from "../scenarios/voucher_preview_spike.ts";
import { stationRedeemPeak } from "../scenarios/station_redeem_peak.ts";
import { evidenceDir } from "../driver/evidence.ts";
import { runScenario } from "../driver/runner.ts";
import { LatencyHistogram, type LatencyStats } from "../driver/_histogram.ts";
import { type TargetEnv, targetEnv } from "../driver/target_env.ts";
import { loadSeedSummary } from "./summary_schema.ts";
import { SCALES, seedDataset, writeSummary } from "./seed.ts";

/** One hot statement and the index its plan must use. */
export interface PlanCheck {
  name: string;
  /** The RPC (or job) that runs it. */
  rpc: string;
  /** The table whose size decides whether an index pays off. */
  table: string;
  sql: string;
  params: (p: Samples) => unknown[];
  /** Index name pattern the plan must mention. */
  expect: RegExp;
  /** Runs inside a transaction that is rolled back (writes). */
  write?: boolean;
  /**
   * Counts the rows the predicate selects (same params). When they are most of
   * the table, a sequential scan is the right plan and the check is inconclusive:
   * the seed puts every target in one campaign, production has many.
   */
  matching?: string;
}

/** Parameter values sampled from the dataset. */
export interface Samples {
  issuedCode: string;
  redeemedVoucherId: number;
  campaignId: string;
  batchId: string;
  stationId: string;
  channelId: string | null;
  bulkCampaignId: string;
  msisdn: string;
  midId: number;
}

/** The hot paths of the api.* RPCs and the pg_cron jobs. */
export const PLAN_CHECKS: PlanCheck[] = [
  {
    name: "voucher lookup by code",
    rpc: "preview_voucher, redeem_voucher (refusal), void_voucher",
    table: "app.vouchers",
    sql: "select * from app.vouchers v where v.code = $1",
    params: (p) => [p.issuedCode],
    expect: /Index Scan using vouchers_code_key/,
  },
  {
    name: "check-and-redeem update",
    rpc: "redeem_voucher, redeem_vouchers",
    table: "app.vouchers",
    sql: `update app.vouchers v
          set status = 'redeemed', redeemed_at = now(), redeemed_station_id = $2
          from app.campaigns c
          where v.code = $1 and v.status = 'issued' and (v.expires_at is null or v.expires_at > now())
            and c.id = v.campaign_id and c.starts_at <= now()
            and (cardinality(c.station_ids) = 0 or $2::uuid = any (c.station_ids))
          returning v.id`,
    params: (p) => [p.issuedCode, p.stationId],
    expect: /Index Scan using vouchers_code_key/,
    write: true,
  },
  {
    name: "winner of a redeemed voucher",
    rpc: "redeem_voucher (voucher_already_redeemed details)",
    table: "app.redemptions",
    sql: `select r.redeemed_at, r.station_id, s.code from app.redemptions r
          join app.stations s on s.id = r.station_id where r.voucher_id = $1 and r.reversed_at is null`,
    params: (p) => [p.redeemedVoucherId],
    expect: /redemptions_voucher_active_key/,
  },
  {
    name: "idempotency key lookup",
    rpc: "redeem_voucher, issue_vouchers, void_voucher",
    table: "app.idempotency_keys",
    sql: "select * from app.idempotency_keys k where k.scope = 'redeem_voucher' and k.key = $1",
    params: () => ["perf-explain-missing-key"],
    expect: /idempotency_keys_pkey/,
  },
  {
    name: "list_vouchers page by campaign",
    rpc: "list_vouchers",
    table: "app.vouchers",
    sql:
      "select v.* from app.vouchers v where v.campaign_id = $1 and v.id > $2 order by v.id limit 100",
    params: (p) => [p.campaignId, p.midId],
    expect: /vouchers_campaign_id_id_idx/,
    matching:
      "select count(*)::bigint as n from app.vouchers v where v.campaign_id = $1 and $2::bigint is not null",
  },
  {
    name: "list_vouchers page of issued vouchers",
    rpc: "list_vouchers(status => 'issued')",
    table: "app.vouchers",
    sql:
      `select v.* from app.vouchers v where v.campaign_id = $1 and v.status = 'issued' and v.id > $2
          order by v.id limit 100`,
    params: (p) => [p.campaignId, p.midId],
    expect: /vouchers_campaign_id_id_idx/,
  },
  {
    name: "list_vouchers page by batch",
    rpc: "list_vouchers(batch_id => …)",
    table: "app.vouchers",
    sql: `select v.* from app.vouchers v where v.campaign_id = $1 and v.batch_id = $2 and v.id > 0
          order by v.id limit 100`,
    params: (p) => [p.campaignId, p.batchId],
    expect: /vouchers_(batch_id_id|campaign_id_id)_idx/,
    matching:
      "select count(*)::bigint as n from app.vouchers v where v.campaign_id = $1 and v.batch_id = $2",
  },
  {
    name: "expiry job scan",
    rpc: "pg_cron vouchers-expire (app.expire_vouchers)",
    table: "app.voucher_batches",
    sql: `select b.id from app.voucher_batches b
          where b.expires_at <= now() and b.expiry_swept_at is null
          order by b.expires_at`,
    params: () => [],
    expect: /voucher_batches_expiry_due_idx/,
  },
  {
    name: "campaign_stats voucher counts",
    rpc: "campaign_stats",
    table: "app.vouchers",
    sql: "select v.status, count(*) from app.vouchers v where v.campaign_id = $1 group by 1",
    params: (p) => [p.bulkCampaignId],
    expect: /vouchers_campaign_id_id_idx/,
  },
  {
    name: "enqueue next targets",
    rpc: "pg_cron dispatch-promote-campaigns (app.enqueue_campaign_chunk)",
    table: "app.campaign_targets",
    sql: `select t.id, t.msisdn from app.campaign_targets t where t.campaign_id = $1 and t.id > 0
          order by t.id limit 5000`,
    params: (p) => [p.bulkCampaignId],
    expect: /campaign_targets_campaign_id_id_idx/,
    matching: "select count(*)::bigint as n from app.campaign_targets t where t.campaign_id = $1",
  },
  {
    name: "claim due messages of a channel",
    rpc: "claim_messages (app.claim_channel_messages)",
    table: "app.messages",
    sql: `select m.id from app.messages m
          where m.channel_id = $1 and m.status = 'queued' and m.next_attempt_at <= now()
          order by m.next_attempt_at, m.id limit 50 for update skip locked`,
    params: (p) => [p.channelId],
    expect: /messages_claim_idx/,
    write: true,
  },
  {
    name: "webhook status by our message id",
    rpc: "record_waba_statuses",
    table: "app.messages",
    sql: "select m.id from app.messages m where m.id = $1",
    params: () => [-1],
    expect: /messages_pkey/,
  },
  {
    name: "webhook status by recipient and wamid (no message id)",
    rpc: "record_waba_statuses",
    table: "app.campaign_targets",
    sql: "select m.id from app.campaign_targets t join app.messages m on m.id = t.id " +
      "where t.msisdn = $1 and m.wamid = $2",
    params: (p) => [p.msisdn, "wamid.perf-explain-missing"],
    expect: /campaign_targets_msisdn_idx/,
  },
  {
    name: "campaign_stats message counts",
    rpc: "campaign_stats",
    table: "app.campaign_targets",
    sql:
      "select m.status, count(*) from app.campaign_targets t join app.messages m on m.id = t.id " +
      "where t.campaign_id = $1 group by 1",
    params: (p) => [p.bulkCampaignId],
    expect: /campaign_targets_campaign_id_id_idx/,
    matching: "select count(*)::bigint as n from app.campaign_targets t where t.campaign_id = $1",
  },
  {
    name: "opt-out check",
    rpc: "add_campaign_targets, claim_messages",
    table: "app.opt_outs",
    sql: "select 1 from app.opt_outs o where o.msisdn = $1",
    params: (p) => [p.msisdn],
    expect: /opt_outs_pkey/,
  },
];

/** Below this many rows a sequential scan is the right plan; a check is then inconclusive. */
export const SMALL_TABLE_ROWS = 10_000;

/** The verdict on one plan. */
export interface PlanResult {
  name: string;
  rpc: string;
  table: string;
  rows: number;
  expected: string;
  verdict:
    | "uses index"
    | "WRONG PLAN"
    | "inconclusive (small table)"
    | "inconclusive (predicate selects most rows)"
    | "error";
  executionMs: number | null;
  plan: string;
}

class Rollback extends Error {
  constructor(readonly plan: string) {
    super("rollback");
  }
}

/** Picks realistic parameter values from the dataset of a seed summary. */
export async function sampleParams(
  sql: postgres.Sql,
  summary: SeedSummary,
): Promise<Samples> {
  const campaignId = summary.campaigns.redeem.id;
  const [issued] = await sql`
    select v.code from app.vouchers v
    where v.campaign_id = ${campaignId} and v.status = 'issued' order by v.id desc limit 1`;
  const [redeemed] = await sql`
    select r.voucher_id from app.redemptions r order by r.id desc limit 1`;
  const [batch] =
    await sql`select b.id from app.voucher_batches b where b.campaign_id = ${campaignId} limit 1`;
  const [mid] = await sql`
    select coalesce((min(v.id) + max(v.id)) / 2, 0)::bigint as id from app.vouchers v where v.campaign_id = ${campaignId}`;
  return {
    issuedCode: issued?.code ?? "000000000000000",
    redeemedVoucherId: Number(redeemed?.voucher_id ?? 0),
    campaignId,
    batchId: batch?.id ?? "00000000-0000-0000-0000-000000000000",
    stationId: summary.operators[0].station_id,
    channelId: summary.channel?.id ?? null,
    bulkCampaignId: summary.campaigns.bulk_send.id,
    msisdn: summary.phones.prefix + "0".repeat(summary.phones.digits),
    midId: Number(mid.id),
  };
}

/** EXPLAIN (ANALYZE, BUFFERS) of every check. */
export async function explainAll(
  sql: postgres.Sql,
  samples: Samples,
): Promise<PlanResult[]> {
  const results: PlanResult[] = [];
  for (const check of PLAN_CHECKS) {
    // Exact size (a constant table name from PLAN_CHECKS, never user input).
    const [{ rows }] = await sql.unsafe(
      `select count(*)::bigint as rows from ${check.table}`,
    );
    let plan = "";
    try {
      const explain = `explain (analyze, buffers, format text) ${check.sql}`;
      const params = check.params(samples) as postgres.ParameterOrJSON<never>[];
      try {
        await sql.begin(async (tx) => {
          const lines = await tx.unsafe(explain, params);
          throw new Rollback(lines.map((l) => l["QUERY PLAN"]).join("\n"));
        });
      } catch (err) {
        if (!(err instanceof Rollback)) throw err;
        plan = err.plan;
      }
      const uses = check.expect.test(plan);
      const matching = check.matching ? Number((await sql.unsafe(check.matching, params))[0].n) : 0;
      const execution = plan.match(/Execution Time: ([\d.]+) ms/);
      results.push({
        name: check.name,
        rpc: check.rpc,
        table: check.table,
        rows: Number(rows),
        expected: check.expect.source,
        verdict: uses
          ? "uses index"
          : Number(rows) < SMALL_TABLE_ROWS
          ? "inconclusive (small table)"
          : matching > Number(rows) / 2
          ? "inconclusive (predicate selects most rows)"
          : "WRONG PLAN",
        executionMs: execution ? Number(execution[1]) : null,
        plan,
      });
    } catch (err) {
      results.push({
        name: check.name,
        rpc: check.rpc,
        table: check.table,
        rows: Number(rows),
        expected: check.expect.source,
        verdict: "error",
        executionMs: null,
        plan: err instanceof Error ? err.message : String(err),
      });
    }
  }
  return results;
}

/** Markdown table of plan verdicts. */
export function renderExplain(results: PlanResult[], title: string): string {
  const out = [
    `## ${title}`,
    "",
    "| Hot path | RPC / job | Table rows | Intended index | Verdict | Execution |",
    "| --- | --- | --- | --- | --- | --- |",
  ];
  for (const r of results) {
    out.push(
      `| ${r.name} | ${r.rpc} | ${r.rows.toLocaleString("en-US")} | \`${r.expected}\` | ` +
        `${
          r.verdict === "uses index"
            ? "✅ uses index"
            : r.verdict === "WRONG PLAN"
            ? "❌ wrong plan"
            : r.verdict
        } | ` +
        `${r.executionMs === null ? "–" : `${r.executionMs.toFixed(3)} ms`} |`,
    );
  }
  out.push("");
  return out.join("\n");
}

/** Preview and redeem latency at a fixed arrival rate through the API. */
export async function measureLatency(
  env: TargetEnv,
  summary: SeedSummary,
  rate: number,
  seconds: number,
): Promise<Record<string, LatencyStats & { failed: number }>> {
  const out: Record<string, LatencyStats & { failed: number }> = {};
  const runs: [Scenario<unknown>, string, string][] = [
    [voucherPreviewSpike as Scenario<unknown>, "preview", "preview_voucher"],
    [stationRedeemPeak as Scenario<unknown>, "redeem", "redeem_voucher"],
  ];
  for (const [scenario, flow, endpoint] of runs) {
    const options: K6Options = {
      scenarios: {
        [scenario.name]: {
          executor: "constant-arrival-rate",
          rate,
          timeUnit: "1s",
          duration: `${seconds}s`,
          preAllocatedVUs: 10,
          maxVUs: 200,
          exec: flow,
        },
      },
      thresholds: {},
    };
    const result = await runScenario(scenario, {
      profile: "quick",
      summary,
      target: { baseUrl: env.baseUrl, anonKey: env.anonKey },
      options,
    });
    const h = new LatencyHistogram();
    let failed = 0;
    for (const r of result.requests) {
      h.record(r.durationMs);
      if (r.failed) failed++;
    }
    out[endpoint] = { ...h.stats(), failed };
  }
  return out;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      compare: { type: "string" },
      rate: { type: "string", default: "20" },
      seconds: { type: "string", default: "30" },
      out: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(
      "usage: deno task perf:explain [--compare 10k|100k|1m] [--rate 20] [--seconds 30] [--out DIR]",
    );
    Deno.exit(0);
  }
  if (values.compare && !SCALES[values.compare]) {
    console.error(
      `Unknown scale "${values.compare}"; use one of ${Object.keys(SCALES).join(", ")}`,
    );
    Deno.exit(2);
  }
  const env = targetEnv();
  let summary = await loadSeedSummary(env.summaryPath);
  const dir = values.out ?? `${evidenceDir()}-explain`;
  await Deno.mkdir(dir, { recursive: true });
  const sql = postgres(env.dbUrl, {
    max: 1,
    onnotice: () => {},
    connection: { application_name: "perf-explain" },
  });
  const rate = Number(values.rate);
  const seconds = Number(values.seconds);
  const md: string[] = ["# Index validation", ""];
  const json: Record<string, unknown> = {};
  try {
    const countVouchers = async () =>
      Number((await sql`select count(*)::bigint as n from app.vouchers`)[0].n);
    const before = await countVouchers();
    const plans = await explainAll(sql, await sampleParams(sql, summary));
    md.push(
      renderExplain(
        plans,
        `Plans with ${before.toLocaleString("en-US")} vouchers`,
      ),
    );
    json.before = { vouchers: before, plans };
    console.log(md.join("\n"));
    if (values.compare) {
      console.log(
        `Measuring preview/redeem at ${rate}/s for ${seconds} s with ${before} vouchers…`,
      );
      const small = await measureLatency(env, summary, rate, seconds);
      console.log(`Growing the dataset to scale ${values.compare}…`);
      summary = await seedDataset(env, {
        ...SCALES[values.compare],
        seed: summary.seed,
      });
      await writeSummary(env.summaryPath, summary);
      const after = await countVouchers();
      const plansAfter = await explainAll(
        sql,
        await sampleParams(sql, summary),
      );
      console.log(`Measuring again with ${after} vouchers…`);
      const large = await measureLatency(env, summary, rate, seconds);
      const cmp = [
        `# Preview and redeem latency: ${before.toLocaleString("en-US")} vs ${
          after.toLocaleString("en-US")
        } vouchers`,
        "",
        `Fixed arrival rate ${rate}/s for ${seconds} s per endpoint, through ${env.baseUrl}. Target: p95 at the large size within 20% of the small size.`,
        "",
        "| Endpoint | p50 small | p50 large | p95 small | p95 large | p99 small | p99 large | p95 ratio | Within 20% |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
      ];
      for (const ep of Object.keys(small)) {
        const a = small[ep];
        const b = large[ep];
        const ratio = b.p95 / a.p95;
        cmp.push(
          `| ${ep} | ${a.p50.toFixed(2)} ms | ${b.p50.toFixed(2)} ms | ${a.p95.toFixed(2)} ms | ${
            b.p95.toFixed(2)
          } ms | ` +
            `${a.p99.toFixed(2)} ms | ${b.p99.toFixed(2)} ms | ${ratio.toFixed(2)} | ${
              ratio <= 1.2 ? "✅" : "❌"
            } |`,
        );
      }
      cmp.push(
        "",
        renderExplain(
          plansAfter,
          `Plans with ${after.toLocaleString("en-US")} vouchers`,
        ),
      );
      await Deno.writeTextFile(join(dir, "scale_compare.md"), cmp.join("\n"));
      json.after = { vouchers: after, plans: plansAfter };
      json.latency = { small, large, rate, seconds };
      console.log(cmp.join("\n"));
    }
  } finally {
    await sql.end({ timeout: 5 });
  }
  await Deno.writeTextFile(join(dir, "explain.md"), md.join("\n"));
  await Deno.writeTextFile(
    join(dir, "explain.json"),
    JSON.stringify(json, null, 2) + "\n",
  );
  console.log(`Written to ${dir}`);
  const results = [
    ...((json.before as { plans: PlanResult[] }).plans),
    ...(((json.after as { plans: PlanResult[] } | undefined)?.plans) ?? []),
  ];
  Deno.exit(
    results.some((r) => r.verdict === "WRONG PLAN" || r.verdict === "error") ? 1 : 0,
  );
}
