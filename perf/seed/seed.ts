/**
 * The perf dataset: `deno task perf:seed [--scale default|10k|100k|1m] [--seed 42] …`.
 *
 * Default = the readiness plan's dataset: 10 users (1 admin, 9 station
 * operators), 50 stations, 2 campaigns (an open one for preview/redeem/issuance
 * and a WhatsApp one), 170 vouchers, 10k targets. `--scale 1m` grows it to 1M
 * vouchers and 100k targets. Rows are written with set-based SQL over a
 * Postgres connection (`PERF_DB_URL`, default the local `postgres`), shaped
 * exactly as the RPCs write them (same columns, statuses, redemption records),
 * with identities derived from the seed (see `_deterministic.ts`): re-running
 * inserts nothing new, growing a scale only adds rows.
 *
 * Then it writes `perf/fixtures/generated/perf_seed_summary.json`: ids, JWTs
 * minted with the target's JWT secret (`PERF_JWT_SECRET`), sample codes, counts.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { dirname } from "node:path";
import postgres from "postgres";
import { mintJwt } from "../../local/env.ts";
import type { SeedSummary } from "../scenarios/_types.ts";
import { redactUrl, type TargetEnv, targetEnv } from "../driver/target_env.ts";
import {
  codeSql,
  displayCode,
  PHONES,
  seededCode,
  seededStatus,
  seededUuid,
  statusSql,
} from "./_deterministic.ts";

/** Size and identity of a dataset. */
export interface SeedOptions {
  seed: number;
  users: number;
  admins: number;
  stations: number;
  vouchers: number;
  targets: number;
  /** Messages per minute of the seed's WhatsApp channel. */
  channelRate: number;
  /** Issued codes listed in the summary for redeem runs that skip setup. */
  redeemPool: number;
  /** Codes listed in the summary for preview. */
  previewSample: number;
  /** Lifetime of the minted JWTs, e.g. "12h". */
  tokenTtl: string;
  /** Vouchers per batch (and per INSERT statement). */
  chunk: number;
  log: (line: string) => void;
}

/** Named sizes. */
export const SCALES: Record<string, Partial<SeedOptions>> = {
  default: { vouchers: 170, targets: 10_000 },
  "10k": { vouchers: 10_000, targets: 10_000 },
  "100k": { vouchers: 100_000, targets: 100_000 },
  "1m": { vouchers: 1_000_000, targets: 100_000 },
};

export const DEFAULT_OPTIONS: SeedOptions = {
  seed: 42,
  users: 10,
  admins: 1,
  stations: 50,
  vouchers: 170,
  targets: 10_000,
  channelRate: 1200,
  redeemPool: 2000,
  previewSample: 200,
  tokenTtl: "12h",
  chunk: 50_000,
  log: (line) => console.log(line),
};

/** Raised when the options or the target database cannot hold the dataset. */
export class SeedError extends Error {
  override name = "SeedError";
}

/** The deterministic ids of a seed's fixed rows. */
export function seedIds(
  o: Pick<SeedOptions, "seed" | "users" | "admins" | "stations">,
) {
  const s = o.seed;
  return {
    admins: Array.from(
      { length: o.admins },
      (_, i) => seededUuid(s, "admin", i + 1),
    ),
    operators: Array.from(
      { length: o.users - o.admins },
      (_, i) => seededUuid(s, "operator", i + 1),
    ),
    stations: Array.from(
      { length: o.stations },
      (_, i) => seededUuid(s, "station", i + 1),
    ),
    stationCode: (i: number) => `PF${s}-S${String(i + 1).padStart(3, "0")}`,
    redeemCampaign: seededUuid(s, "campaign", "redeem"),
    bulkCampaign: seededUuid(s, "campaign", "bulk_send"),
    channel: seededUuid(s, "channel", 1),
    phoneNumberId: `9${String(s).padStart(9, "0")}1`,
    batch: (k: number) => seededUuid(s, "batch", k),
  };
}

const TEMPLATE = { name: "perf_voucher_offer", language: "en" };

/** Seeds the dataset and returns the summary (without writing it). */
export async function seedDataset(
  env: TargetEnv,
  options: Partial<SeedOptions> = {},
): Promise<SeedSummary> {
  const o: SeedOptions = { ...DEFAULT_OPTIONS, ...options };
  if (o.admins < 1 || o.users <= o.admins) {
    throw new SeedError(
      `Need at least one admin and one operator, got users=${o.users}, admins=${o.admins}`,
    );
  }
  if (o.stations < o.users - o.admins) {
    throw new SeedError(
      `Each operator needs its own station: ${
        o.users - o.admins
      } operators, ${o.stations} stations`,
    );
  }
  const ids = seedIds(o);
  const sql = postgres(env.dbUrl, {
    max: 2,
    onnotice: () => {},
    connection: { application_name: "perf-seed" },
  });
  const t0 = performance.now();
  const step = async (label: string, fn: () => Promise<unknown>) => {
    const t = performance.now();
    await fn();
    o.log(`  ${label} (${((performance.now() - t) / 1000).toFixed(1)} s)`);
  };
  try {
    o.log(
      `Seeding ${env.name} (${
        redactUrl(env.dbUrl)
      }) with seed ${o.seed}: ${o.vouchers} vouchers, ${o.targets} targets`,
    );
    const hasDispatch = (await sql`select to_regclass('app.campaign_targets') is not null as ok`)[
      0
    ].ok as boolean;
    const adminId = ids.admins[0];

    await step(
      `${o.users} users, ${o.stations} stations, staff`,
      () =>
        sql.begin(async (tx) => {
          const users = [
            ...ids.admins.map((id, i) => ({
              id,
              email: `perf${o.seed}-admin${i + 1}@perf.local`,
            })),
            ...ids.operators.map((id, i) => ({
              id,
              email: `perf${o.seed}-operator${i + 1}@perf.local`,
            })),
          ];
          await tx`insert into auth.users ${tx(users, "id", "email")} on conflict (id) do nothing`;
          const stations = ids.stations.map((id, i) => ({
            id,
            code: ids.stationCode(i),
            name: `Perf station ${i + 1}`,
            region: ["Nairobi", "Mombasa", "Kisumu", "Nakuru", "Eldoret"][i % 5],
          }));
          await tx`insert into app.stations ${
            tx(stations, "id", "code", "name", "region")
          } on conflict (id) do nothing`;
          const staff = [
            ...ids.admins.map((id) => ({
              user_id: id,
              role: "admin",
              station_id: null,
            })),
            ...ids.operators.map((id, i) => ({
              user_id: id,
              role: "station_operator",
              station_id: ids.stations[i],
            })),
          ];
          await tx`
          insert into app.staff ${tx(staff, "user_id", "role", "station_id")}
          on conflict (user_id) do update set role = excluded.role, station_id = excluded.station_id, active = true`;
        }),
    );

    await step(
      "campaigns" + (hasDispatch ? ", channel, template" : ""),
      () =>
        sql.begin(async (tx) => {
          await tx`
          insert into app.campaigns (id, name, amount_minor, currency, starts_at, expires_at, created_by)
          values (${ids.redeemCampaign}, ${`Perf ${o.seed}: open voucher campaign`}, 50000, 'KES',
                  now() - interval '1 day', now() + interval '365 days', ${adminId})
          on conflict (id) do nothing`;
          if (hasDispatch) {
            const burst = Math.max(1, Math.ceil(o.channelRate / 6));
            await tx`
            insert into app.channels (id, phone_number_id, display_name, rate_per_minute, burst, tokens, refilled_at)
            values (${ids.channel}, ${ids.phoneNumberId}, ${`Perf ${o.seed} sender`}, ${o.channelRate}, ${burst},
                    ${burst}, clock_timestamp())
            on conflict (id) do update
              set rate_per_minute = excluded.rate_per_minute, burst = excluded.burst,
                  tokens = least(app.channels.tokens, excluded.burst), updated_at = now()`;
            await tx`
            insert into app.campaigns (id, name, amount_minor, currency, starts_at, expires_at, created_by,
                                       channel_id, template_name, template_language, template_params)
            values (${ids.bulkCampaign}, ${`Perf ${o.seed}: WhatsApp campaign`}, 20000, 'KES',
                    now() - interval '1 day', now() + interval '90 days', ${adminId},
                    ${ids.channel}, ${TEMPLATE.name}, ${TEMPLATE.language}, '["voucher_code"]'::jsonb)
            on conflict (id) do nothing`;
          } else {
            await tx`
            insert into app.campaigns (id, name, amount_minor, currency, starts_at, expires_at, created_by)
            values (${ids.bulkCampaign}, ${`Perf ${o.seed}: WhatsApp campaign`}, 20000, 'KES',
                    now() - interval '1 day', now() + interval '90 days', ${adminId})
            on conflict (id) do nothing`;
          }
        }),
    );

    // Vouchers, one batch per chunk: voucher n (1-based) belongs to batch ceil(n / chunk).
    const operatorIds = ids.operators;
    const operatorStations = ids.operators.map((_, i) => ids.stations[i]);
    for (let lo = 1, k = 1; lo <= o.vouchers; lo += o.chunk, k++) {
      const hi = Math.min(o.vouchers, lo + o.chunk - 1);
      const batch = ids.batch(k);
      await step(`vouchers ${lo}–${hi}`, () =>
        sql.begin(async (tx) => {
          await tx`
            insert into app.voucher_batches (id, campaign_id, issued, expires_at, issued_by)
            select ${batch}, c.id, ${hi - lo + 1}, c.expires_at, ${adminId}
            from app.campaigns c where c.id = ${ids.redeemCampaign}
            on conflict (id) do update set issued = excluded.issued`;
          await tx.unsafe(
            `insert into app.vouchers (code, campaign_id, batch_id, status, amount_minor, currency, expires_at,
                                       issued_at, redeemed_at, redeemed_station_id, redeemed_by,
                                       voided_at, voided_by, void_reason)
             select s.code, c.id, $2::uuid, s.status, c.amount_minor, c.currency,
                    case when s.status = 'expired' then now() - interval '1 day' else c.expires_at end,
                    now() - interval '2 days',
                    case when s.status = 'redeemed' then now() - make_interval(mins => (s.n % 1440)::int) end,
                    case when s.status = 'redeemed' then ($5::uuid[])[(s.n % $7) + 1] end,
                    case when s.status = 'redeemed' then ($6::uuid[])[(s.n % $7) + 1] end,
                    case when s.status = 'void' then now() - interval '1 day' end,
                    case when s.status = 'void' then $8::uuid end,
                    case when s.status = 'void' then 'Perf seed: voided sample' end
             from (select n, ${codeSql("n", "$1")} as code, ${statusSql("n")} as status
                   from generate_series($3::bigint, $4::bigint) n) s,
                  app.campaigns c
             where c.id = $9::uuid
             on conflict (code) do nothing`,
            [
              o.seed,
              batch,
              lo,
              hi,
              operatorStations,
              operatorIds,
              operatorIds.length,
              adminId,
              ids.redeemCampaign,
            ],
          );
          // The redemption record the redeem RPC writes beside each redeemed voucher.
          await tx`
            insert into app.redemptions (voucher_id, station_id, redeemed_by, redeemed_at, idempotency_key,
                                         amount_minor, currency)
            select v.id, v.redeemed_station_id, v.redeemed_by, v.redeemed_at, 'perf-seed-' || v.code,
                   v.amount_minor, v.currency
            from app.vouchers v
            where v.batch_id = ${batch} and v.status = 'redeemed'
            on conflict (voucher_id) where reversed_at is null do nothing`;
        }));
    }

    if (hasDispatch && o.targets > 0) {
      await step(`${o.targets} campaign targets`, () =>
        sql`
          insert into app.campaign_targets (campaign_id, msisdn)
          select ${ids.bulkCampaign}, ${PHONES.prefix} || lpad(i::text, ${PHONES.digits}, '0')
          from generate_series(0, ${o.targets - 1}) i
          on conflict on constraint campaign_targets_campaign_msisdn_key do nothing`);
    }
    await step(
      "analyze",
      () =>
        hasDispatch
          ? sql`analyze app.vouchers, app.redemptions, app.campaigns, app.stations, app.campaign_targets`
          : sql`analyze app.vouchers, app.redemptions, app.campaigns, app.stations`,
    );

    // The summary --------------------------------------------------------------------------
    const previewNs = Array.from(
      { length: Math.min(o.previewSample, o.vouchers) },
      (_, i) =>
        1 +
        Math.floor((i * o.vouchers) / Math.min(o.previewSample, o.vouchers)),
    );
    const poolCandidates: string[] = [];
    for (
      let n = 1;
      n <= o.vouchers && poolCandidates.length < o.redeemPool * 2;
      n++
    ) {
      if (seededStatus(n) === "issued") {
        poolCandidates.push(seededCode(o.seed, n));
      }
    }
    // Only codes still issued now (an earlier run may have redeemed some).
    const stillIssued = new Set(
      (await sql`select code from app.vouchers where code = any(${poolCandidates}) and status = 'issued'
                 and (expires_at is null or expires_at > now())`).map((r) => r.code as string),
    );
    const redeemPool = poolCandidates.filter((c) => stillIssued.has(c)).slice(
      0,
      o.redeemPool,
    );
    const [counts] = await sql`
      select (select count(*) from app.vouchers v where v.campaign_id = ${ids.redeemCampaign})::int as vouchers,
             ${
      hasDispatch
        ? sql`(select count(*) from app.campaign_targets t where t.campaign_id = ${ids.bulkCampaign})::int`
        : sql`0`
    } as targets`;
    const ttlSeconds = parseTtl(o.tokenTtl);
    const jwtOpts = { expiresIn: ttlSeconds + "s", secret: env.jwtSecret };
    const summary: SeedSummary = {
      version: 1,
      generated_at: new Date().toISOString(),
      seed: o.seed,
      env: { name: env.name, base_url: env.baseUrl },
      tokens_expire_at: new Date(Date.now() + ttlSeconds * 1000).toISOString(),
      counts: {
        users: o.users,
        admins: o.admins,
        operators: o.users - o.admins,
        stations: o.stations,
        campaigns: 2,
        vouchers: counts.vouchers,
        targets: counts.targets,
        channels: hasDispatch ? 1 : 0,
      },
      admin: {
        user_id: adminId,
        jwt: await mintJwt({
          sub: adminId,
          email: `perf${o.seed}-admin1@perf.local`,
        }, jwtOpts),
      },
      service: {
        jwt: await mintJwt(
          { role: "service_role", iss: "supabase-perf" },
          jwtOpts,
        ),
      },
      operators: await Promise.all(ids.operators.map(async (id, i) => ({
        user_id: id,
        station_id: ids.stations[i],
        station_code: ids.stationCode(i),
        jwt: await mintJwt({
          sub: id,
          email: `perf${o.seed}-operator${i + 1}@perf.local`,
        }, jwtOpts),
      }))),
      campaigns: {
        redeem: {
          id: ids.redeemCampaign,
          name: `Perf ${o.seed}: open voucher campaign`,
        },
        bulk_send: {
          id: ids.bulkCampaign,
          name: `Perf ${o.seed}: WhatsApp campaign`,
          targets: counts.targets,
        },
      },
      channel: hasDispatch
        ? {
          id: ids.channel,
          phone_number_id: ids.phoneNumberId,
          rate_per_minute: o.channelRate,
        }
        : null,
      template: TEMPLATE,
      phones: { ...PHONES },
      codes: {
        preview: previewNs.map((n) => displayCode(seededCode(o.seed, n))),
        redeem_pool: redeemPool.map(displayCode),
      },
    };
    o.log(
      `Seeded in ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s: ${counts.vouchers} vouchers, ${counts.targets} targets`,
    );
    return summary;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** Seconds of a TTL like "12h", "30m", "3600s" or "3600". */
export function parseTtl(text: string): number {
  const m = text.match(/^(\d+)(s|m|h|d)?$/);
  if (!m) {
    throw new SeedError(`Cannot parse token TTL "${text}" (use e.g. 12h, 30m)`);
  }
  return Number(m[1]) *
    { s: 1, m: 60, h: 3600, d: 86400 }[(m[2] ?? "s") as "s" | "m" | "h" | "d"];
}

/** Writes a summary as pretty JSON, creating the folder. */
export async function writeSummary(
  path: string,
  summary: SeedSummary,
): Promise<void> {
  await Deno.mkdir(dirname(path), { recursive: true });
  await Deno.writeTextFile(path, JSON.stringify(summary, null, 2) + "\n");
}

const USAGE = `usage: deno task perf:seed [options]

  --scale NAME         default (170 vouchers, 10k targets) | 10k | 100k | 1m (1M vouchers, 100k targets)
  --vouchers N         override the voucher count
  --targets N          override the WhatsApp target count
  --seed N             identity of the dataset (default 42); same seed → same rows
  --users N            staff users, admins included (default 10)
  --admins N           admins among them (default 1)
  --stations N         stations (default 50)
  --channel-rate N     messages/min of the seed's WhatsApp channel (default 1200)
  --redeem-pool N      issued codes listed for redeem runs without setup (default 2000)
  --token-ttl T        JWT lifetime (default 12h)
  --out PATH           summary path (default $PERF_SUMMARY or perf/fixtures/generated/perf_seed_summary.json)

Environment (staging): PERF_DB_URL, PERF_BASE_URL, PERF_ANON_KEY, PERF_JWT_SECRET, PERF_ENV_NAME.`;

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      scale: { type: "string", default: "default" },
      vouchers: { type: "string" },
      targets: { type: "string" },
      seed: { type: "string" },
      users: { type: "string" },
      admins: { type: "string" },
      stations: { type: "string" },
      "channel-rate": { type: "string" },
      "redeem-pool": { type: "string" },
      "token-ttl": { type: "string" },
      out: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const scale = SCALES[values.scale!];
  if (!scale) {
    console.error(
      `Unknown scale "${values.scale}"; use one of ${Object.keys(SCALES).join(", ")}`,
    );
    Deno.exit(2);
  }
  const int = (v: string | undefined) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) {
      console.error(`Not a whole number: "${v}"`);
      Deno.exit(2);
    }
    return n;
  };
  const overrides: Partial<SeedOptions> = { ...scale };
  const set = <K extends keyof SeedOptions>(
    k: K,
    v: SeedOptions[K] | undefined,
  ) => {
    if (v !== undefined) overrides[k] = v;
  };
  set("vouchers", int(values.vouchers));
  set("targets", int(values.targets));
  set("seed", int(values.seed));
  set("users", int(values.users));
  set("admins", int(values.admins));
  set("stations", int(values.stations));
  set("channelRate", int(values["channel-rate"]));
  set("redeemPool", int(values["redeem-pool"]));
  set("tokenTtl", values["token-ttl"]);
  const env = targetEnv();
  try {
    const summary = await seedDataset(env, overrides);
    const out = values.out ?? env.summaryPath;
    await writeSummary(out, summary);
    console.log(
      `Summary written to ${out} (tokens valid until ${summary.tokens_expire_at})`,
    );
  } catch (err) {
    console.error(err instanceof Error ? err.message : err);
    Deno.exit(1);
  }
}
