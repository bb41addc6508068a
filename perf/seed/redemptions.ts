/**
 * Redemptions at scale for the settlement report's plan test and benchmark:
 * `n` redeemed vouchers (1M by default) spread evenly over `days` days before
 * now, across `stations` stations and two currencies, 1% of them undone an
 * hour after they were made, one in ten with till details. Written set-based
 * (one `insert … select` per table), with the columns the redeem RPC writes.
 *
 * Codes are `Z` + 14 digits: the shape the `app.voucher_code` domain checks,
 * and never a real code's (whose check character makes a digits-only code with
 * a leading Z unlikely, and which are random). Never seed production.
 *
 * @example
 * ```ts
 * import { seedRedemptions } from "./perf/seed/redemptions.ts";
 * await sql.begin(async (tx) => {
 *   const seeded = await seedRedemptions(tx, { n: 1_000_000 });
 *   // … EXPLAIN, time the report …
 *   throw new Rollback();
 * });
 * ```
 *
 * @module
 */
import type postgres from "postgres";

/** What {@link seedRedemptions} writes. */
export interface RedemptionSeed {
  /** Redemptions (and vouchers) to write. */
  n: number;
  /** Days before now they are spread over. */
  days?: number;
  /** Stations they are spread across. */
  stations?: number;
  /** A digit distinguishing seeds that live side by side (codes and station codes). */
  tag?: number;
}

/** What was seeded: the stations (by code), the two campaigns, the time span. */
export interface SeededRedemptions {
  stationIds: string[];
  campaignIds: string[];
  from: Date;
  to: Date;
  n: number;
}

/**
 * Seeds redemptions; idempotent for one `tag` (a second call with the same tag
 * writes only what is missing). Runs in the caller's transaction when given
 * one. There is no undo: vouchers are never deleted (a bulk delete would run
 * each referencing table's foreign-key check per voucher), so seed inside a
 * rolled-back transaction, or keep the seed.
 */
export async function seedRedemptions(
  sql: postgres.Sql | postgres.TransactionSql,
  opts: RedemptionSeed,
): Promise<SeededRedemptions> {
  const days = opts.days ?? 90;
  const stations = opts.stations ?? 100;
  const tag = opts.tag ?? 9;
  const prefix = `SET${tag}`;
  const campaignIds = [1, 2].map((c) => `00000000-0000-4000-8000-5e77${tag}000000${c}`);
  const batchIds = [1, 2].map((c) => `00000000-0000-4000-8000-5e77${tag}000100${c}`);
  await sql.unsafe(
    `insert into app.stations (code, name, region)
     select '${prefix}-' || lpad(g::text, 3, '0'), 'Settlement seed ' || g, 'Seed'
     from generate_series(1, ${stations}) g
     on conflict (code) do nothing;
     insert into app.campaigns (id, name, amount_minor, currency, starts_at) values
       ('${campaignIds[0]}', 'Settlement seed KES', 2500, 'KES', now() - interval '${
      days + 1
    } days'),
       ('${campaignIds[1]}', 'Settlement seed UGX', 5000, 'UGX', now() - interval '${
      days + 1
    } days')
     on conflict (id) do nothing;
     insert into app.voucher_batches (id, campaign_id, issued) values
       ('${batchIds[0]}', '${campaignIds[0]}', ${opts.n}), ('${batchIds[1]}', '${
      campaignIds[1]
    }', ${opts.n})
     on conflict (id) do nothing;`,
  );
  const stationRows = await sql.unsafe(
    `select id from app.stations where code like '${prefix}-%' order by code`,
  );
  const stationIds = stationRows.map((r) => r.id as string);
  // Idempotent per tag: vouchers and redemptions are numbered g = 1..n, and a
  // second call writes only those still missing.
  const [{ have }] = await sql.unsafe(
    `select count(*)::int as have from app.vouchers where batch_id = any($1::uuid[])`,
    [batchIds],
  );
  // Voucher g: redeemed at now - days + g·days/n (so id order is time order),
  // at station g·7919 mod stations, in KES (9 in 10) or UGX; every 100th undone.
  await sql.unsafe(
    `insert into app.vouchers (code, campaign_id, batch_id, status, amount_minor, currency, issued_at,
                               redeemed_at, redeemed_station_id)
     select 'Z${tag}' || lpad(g::text, 13, '0'), c.id, c.batch, case when g % 100 = 0 then 'issued' else 'redeemed' end,
            c.amount, c.currency, now() - interval '${days + 1} days',
            case when g % 100 <> 0 then s.at end, case when g % 100 <> 0 then s.station end
     from generate_series(${have + 1}, ${opts.n}) g
     cross join lateral (
       select now() - interval '${days} days' + (g::double precision / ${opts.n}) * interval '${days} days' as at,
              ($1::uuid[])[1 + ((g::bigint * 7919) % ${stations})::int] as station
     ) s
     cross join lateral (
       select case when g % 10 = 0 then $2::uuid else $3::uuid end as id,
              case when g % 10 = 0 then $4::uuid else $5::uuid end as batch,
              case when g % 10 = 0 then 5000 else 2500 end as amount,
              case when g % 10 = 0 then 'UGX' else 'KES' end as currency
     ) c`,
    [stationIds, campaignIds[1], campaignIds[0], batchIds[1], batchIds[0]],
  );
  const [{ recorded }] = await sql.unsafe(
    `select coalesce(max(substr(v.code, 3)::bigint), 0)::int as recorded
     from app.redemptions r join app.vouchers v on v.id = r.voucher_id
     where v.batch_id = any($1::uuid[])`,
    [batchIds],
  );
  await sql.unsafe(
    `insert into app.redemptions (voucher_id, station_id, redeemed_at, idempotency_key, amount_minor, currency,
                                  receipt_ref, pump, quantity, sale_amount_minor, reversed_at, reversal_reason)
     select v.id, ($1::uuid[])[1 + ((g::bigint * 7919) % ${stations})::int], s.at, 'seed-' || v.code,
            v.amount_minor, v.currency,
            case when g % 10 = 3 then 'R' || g end, case when g % 10 = 3 then (1 + g % 8)::text end,
            case when g % 10 = 3 then 20 + (g % 400) / 10.0 end, case when g % 10 = 3 then 300000 + g % 5000 end,
            case when g % 100 = 0 then s.at + interval '1 hour' end, case when g % 100 = 0 then 'seed' end
     from app.vouchers v
     cross join lateral (select substr(v.code, 3)::bigint as g) k
     cross join lateral (
       select now() - interval '${days} days' + (g::double precision / ${opts.n}) * interval '${days} days' as at
     ) s
     where v.batch_id = any($2::uuid[]) and k.g > ${recorded}`,
    [stationIds, batchIds],
  );
  const now = Date.now();
  return {
    stationIds,
    campaignIds,
    from: new Date(now - days * 86_400_000),
    to: new Date(now),
    n: opts.n,
  };
}
