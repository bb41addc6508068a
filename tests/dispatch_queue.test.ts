/**
 * The dispatch queue under real concurrency: several Postgres sessions (pgTAP
 * runs in one session, so these proofs live here).
 *
 * - Two sessions through the API, as the gateway calls it (`set local role
 *   service_role` + JWT claims): the second claimer waits for the first one's
 *   channel lock and gets only what the first did not take.
 * - Many sessions claiming at once never get the same message.
 * - The rate simulation: eight sessions claim from one 250/min channel over ten
 *   simulated minutes; in no window does the channel hand out more than
 *   burst + rate × window.
 *
 * Isolation on a shared database: the multi-session tests date their messages a
 * day ahead and claim with an injected time (`app.claim_messages_at`, the
 * function the API wraps with the real clock), so a dispatcher running against
 * the same database (the local stack's ticker) can never see them. The API test
 * enqueues and claims inside one transaction, so its messages only become
 * visible while the second session holds the channel lock.
 *
 * Run: `deno test -A tests/dispatch_queue.test.ts` (the local cluster must be up).
 *
 * @module
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { DB_URL } from "./_support.ts";
import { asServiceRole } from "../functions/_shared/db.ts";

type Sql = postgres.Sql;

/** One database session (a pool of one connection). */
function session(): Sql {
  return postgres(DB_URL, { max: 1, onnotice: () => {} });
}

/** Rejects when `promise` takes longer than `ms`: every test is bounded. */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

interface Fixture {
  channelId: string;
  campaignId: string;
}

/** A channel and a dispatching campaign with no messages yet. */
async function createFixture(
  sql: Sql,
  opts: { rate: number; burst: number; spacing?: number },
): Promise<Fixture> {
  await dropStaleFixtures(sql);
  const phone = `9${Date.now() % 1e9}${Math.floor(Math.random() * 1e6)}`;
  const [ch] = await sql`
    insert into app.channels (phone_number_id, display_name, rate_per_minute, burst,
                              min_recipient_interval_seconds, tokens, refilled_at)
    values (${phone}, 'dispatch_queue.test', ${opts.rate}, ${opts.burst}, ${opts.spacing ?? 0},
            ${opts.burst}, clock_timestamp())
    returning id`;
  const [c] = await sql`
    insert into app.campaigns (name, amount_minor, currency, channel_id, template_name, status,
                               dispatch_started_at)
    values ('dispatch_queue.test', 100, 'KES', ${ch.id}, 'fuel_voucher', 'dispatching', now())
    returning id`;
  return { channelId: ch.id, campaignId: c.id };
}

/** Adds `n` targets and their queued messages, due at now() + `dueIn`, in one statement. */
async function enqueue(
  sql: Sql | postgres.TransactionSql,
  f: Fixture,
  n: number,
  dueIn = "0 seconds",
): Promise<void> {
  const prefix = `+2549${Math.floor(Math.random() * 90 + 10)}`;
  await sql`
    with targets as (
      insert into app.campaign_targets (campaign_id, msisdn)
      select ${f.campaignId}, ${prefix} || lpad(i::text, 7, '0') from generate_series(1, ${n}) i
      returning id, msisdn
    ), messages as (
      insert into app.messages (campaign_id, id, channel_id, to_msisdn, template_name,
                                template_language, body_parameters, next_attempt_at)
      select ${f.campaignId}, t.id, ${f.channelId}, t.msisdn, 'fuel_voucher', 'en', array['CODE'],
             now() + ${dueIn}::interval
      from targets t
    )
    -- Every target has its message: the promote job has nothing to enqueue here.
    update app.campaigns set enqueue_cursor = (select max(id) from targets)
    where id = ${f.campaignId}`;
}

/** Removes fixtures a crashed earlier run left behind (older than ten minutes). */
async function dropStaleFixtures(sql: Sql): Promise<void> {
  const stale = await sql`
    select c.id as "campaignId", c.channel_id as "channelId" from app.campaigns c
    where c.name = 'dispatch_queue.test' and c.created_at < now() - interval '10 minutes'`;
  for (const f of stale) await dropFixture(sql, f as unknown as Fixture);
}

async function dropFixture(sql: Sql, f: Fixture): Promise<void> {
  await sql`delete from app.messages where campaign_id = ${f.campaignId}`;
  await sql`delete from app.campaign_targets where campaign_id = ${f.campaignId}`;
  await sql`delete from app.campaigns where id = ${f.campaignId}`;
  await sql`delete from app.dispatch_claims where channel_id = ${f.channelId}`;
  await sql`delete from app.lease_reclaims where channel_id = ${f.channelId}`;
  await sql`delete from app.channels where id = ${f.channelId}`;
}

Deno.test("claim_messages(): a second session waits for the channel lock and gets only what the first left", async () => {
  const admin = session();
  const a = session();
  const b = session();
  let fixture: Fixture | undefined;
  try {
    fixture = await createFixture(admin, { rate: 6_000_000, burst: 1_000_000 });
    const f = fixture;
    const [{ pid: bPid }] = await b`select pg_backend_pid() as pid`;

    let aHasClaimed!: (ids: number[]) => void;
    const aClaimed = new Promise<number[]>((resolve) => (aHasClaimed = resolve));
    let letACommit!: () => void;
    const aMayCommit = new Promise<void>((resolve) => (letACommit = resolve));

    // Session A enqueues 300 messages and claims 100 in one transaction, then holds it open.
    const aDone = a.begin(async (tx) => {
      await enqueue(tx, f, 300);
      await tx`select set_config('request.jwt.claims', '{"role":"service_role"}', true)`;
      await tx`set local role service_role`;
      const claimed =
        await tx`select message_id from api.claim_messages(${f.channelId}, 100, 60, 'session-a')`;
      aHasClaimed(claimed.map((r) => Number(r.message_id)));
      await aMayCommit;
    });
    const aIds = await within(10_000, "session A claims", aClaimed);

    // Session B asks for everything while A holds the channel row.
    const bDone = asServiceRole(b, async (tx) => {
      const claimed =
        await tx`select message_id from api.claim_messages(${f.channelId}, 1000, 60, 'session-b')`;
      return claimed.map((r) => Number(r.message_id));
    });
    const bWaited = await within(
      10_000,
      "session B waits on the channel lock",
      (async () => {
        for (;;) {
          const [row] = await admin`
            select wait_event_type from pg_stat_activity where pid = ${bPid}`;
          if (row?.wait_event_type === "Lock") return true;
          await new Promise((r) => setTimeout(r, 20));
        }
      })(),
    );
    assert.equal(bWaited, true, "B is blocked on A's channel lock");
    letACommit();
    await within(10_000, "session A commits", aDone);
    const bIds = await within(10_000, "session B claims", bDone);

    assert.equal(aIds.length, 100, "A got the 100 it asked for");
    assert.equal(bIds.length, 200, "B got the 200 A left, nothing more");
    assert.equal(new Set([...aIds, ...bIds]).size, 300, "A and B never got the same message");
    const owners = await admin`
      select lease_owner, count(*)::int as n, max(attempts)::int as attempts
      from app.messages where campaign_id = ${f.campaignId} and status = 'leased'
      group by lease_owner order by lease_owner`;
    assert.deepEqual(
      owners.map((r) => [r.lease_owner, r.n, r.attempts]),
      [["session-a", 100, 1], ["session-b", 200, 1]],
      "each message is leased once, to the session that got it",
    );
  } finally {
    if (fixture) await dropFixture(admin, fixture);
    await Promise.all([a.end(), b.end(), admin.end()]);
  }
});

Deno.test("claim_messages(): six sessions claiming at once never get the same message", async () => {
  const admin = session();
  const claimers = Array.from({ length: 6 }, session);
  let fixture: Fixture | undefined;
  try {
    fixture = await createFixture(admin, { rate: 6_000_000, burst: 1_000_000 });
    const f = fixture;
    await enqueue(admin, f, 3000, "1 day");
    const [{ at }] = await admin`select (now() + interval '1 day 1 minute')::text as at`;

    const claimed = await within(
      60_000,
      "six sessions drain 3,000 messages",
      Promise.all(claimers.map(async (sql, i) => {
        const mine: number[] = [];
        let empty = 0;
        while (empty < 3) {
          const max = 1 + Math.floor(Math.random() * 100);
          const claimed = await sql`
            select message_id from app.claim_messages_at(${f.channelId}, ${max}, 60, ${
            "claimer-" + i
          }, ${at}::timestamptz)`;
          const ids = claimed.map((r) => Number(r.message_id));
          empty = ids.length === 0 ? empty + 1 : 0;
          mine.push(...ids);
        }
        return mine;
      })),
    );

    const all = claimed.flat();
    assert.equal(all.length, 3000, "all 3,000 messages were claimed");
    assert.equal(new Set(all).size, 3000, "no message was handed to two claimers");
    assert.ok(
      claimed.filter((ids) => ids.length > 0).length >= 2,
      "the work was shared between sessions",
    );
    const [row] = await admin`
      select count(*)::int as n, bool_and(attempts = 1) as once
      from app.messages where campaign_id = ${f.campaignId} and status = 'leased'`;
    assert.deepEqual(
      { n: row.n, once: row.once },
      { n: 3000, once: true },
      "each message leased exactly once",
    );
    const mismatched = claimed.flatMap((ids, i) => ids.map((id) => [id, `claimer-${i}`] as const));
    const [{ wrong }] = await admin`
      select count(*)::int as wrong
      from jsonb_to_recordset(${
      JSON.stringify(mismatched.map(([id, owner]) => ({ id, owner })))
    }::text::jsonb)
        as c(id bigint, owner text)
      join app.messages m on m.id = c.id
      where m.lease_owner <> c.owner`;
    assert.equal(wrong, 0, "every message is leased to the session that received it");
  } finally {
    if (fixture) await dropFixture(admin, fixture);
    await Promise.all([...claimers.map((c) => c.end()), admin.end()]);
  }
});

Deno.test("claim_messages(): eight sessions over ten simulated minutes never exceed burst + rate × window", async () => {
  const RATE = 250; // per minute
  const BURST = 42;
  const SIMULATED_MS = 10 * 60_000;
  const admin = session();
  const claimers = Array.from({ length: 8 }, session);
  let fixture: Fixture | undefined;
  try {
    fixture = await createFixture(admin, { rate: RATE, burst: BURST, spacing: 6 });
    const f = fixture;
    await enqueue(admin, f, 4000, "1 day");
    const [{ start }] =
      await admin`select extract(epoch from now() + interval '1 day')::float8 * 1000 as start`;

    // A shared simulated clock: each claimer reads it, moving it forward 1–400 ms,
    // then claims at that time. Claims reach the database in any order; the bucket
    // keeps its own clock monotonic (greatest(at, refilled_at)).
    let clock = start as number;
    const end = clock + SIMULATED_MS;
    const tick = () => (clock += 1 + Math.floor(Math.random() * 400));

    const calls = await within(
      120_000,
      "ten simulated minutes of claims",
      Promise.all(claimers.map(async (sql, i) => {
        let n = 0;
        for (let at = tick(); at <= end; at = tick()) {
          const max = 1 + Math.floor(Math.random() * 60);
          await sql`
            select count(*) from app.claim_messages_at(${f.channelId}, ${max}, 60, ${"sim-" + i},
                                                       to_timestamp(${at / 1000}))`;
          n++;
        }
        return n;
      })),
    );

    // The claim log holds the bucket's (effective) time of every successful claim.
    const rows = await admin`
      select extract(epoch from claimed_at)::float8 * 1000 as t, messages
      from app.dispatch_claims where channel_id = ${f.channelId} order by claimed_at`;
    const claims = rows.map((r) => ({ t: r.t as number, n: r.messages as number }));
    const total = claims.reduce((s, c) => s + c.n, 0);
    const [{ leased, distinct }] = await admin`
      select count(*)::int as leased, count(distinct id)::int as distinct
      from app.messages where campaign_id = ${f.campaignId} and status = 'leased'`;
    assert.equal(leased, total, "the claim log accounts for every leased message");
    assert.equal(distinct, total);

    const windowsSeconds = [1, 5, 10, 30, 60];
    const worst: Record<number, number> = {};
    for (const w of windowsSeconds) {
      const limit = Math.floor(BURST + (RATE * w) / 60);
      let j = 0;
      let inWindow = 0;
      let max = 0;
      // Two pointers over claims sorted by time: the window [t_i, t_i + w].
      for (let i = 0; i < claims.length; i++) {
        while (j < claims.length && claims[j].t <= claims[i].t + w * 1000) {
          inWindow += claims[j++].n;
        }
        max = Math.max(max, inWindow);
        assert.ok(
          inWindow <= limit,
          `${inWindow} messages in the ${w} s from ${
            new Date(claims[i].t).toISOString()
          } exceed ${limit}`,
        );
        inWindow -= claims[i].n;
      }
      worst[w] = max;
    }

    const ceiling = BURST + RATE * (SIMULATED_MS / 60_000);
    assert.ok(total <= ceiling, `${total} claimed in 10 minutes exceeds ${ceiling}`);
    assert.ok(
      total >= 0.97 * RATE * 10,
      `only ${total} claimed: the simulation did not saturate the bucket`,
    );
    console.log(
      `rate simulation: ${
        calls.reduce((s, n) => s + n, 0)
      } claim calls by 8 sessions, ${total} messages ` +
        `in 10 simulated minutes (ceiling ${ceiling}); busiest windows: ` +
        windowsSeconds.map((w) => `${w}s=${worst[w]}/${Math.floor(BURST + (RATE * w) / 60)}`).join(
          " ",
        ),
    );
  } finally {
    if (fixture) await dropFixture(admin, fixture);
    await Promise.all([...claimers.map((c) => c.end()), admin.end()]);
  }
});
