-- Dispatch queue: the claim returns rows instead of one JSON document, and the
-- outbox's number check moves to a domain that is checked on assignment only.
-- Same behaviour; less work per message on the two statements every message
-- goes through (claim, report).
--
-- Why: the queue benchmark (perf/bench/queue_throughput.ts) is still behind
-- graphile-worker's batched mode. Server time per message, one worker draining
-- 50k messages (pg_stat_statements, track = all), before this migration:
--   claim  23.6 µs (its leasing statement 20.9), report 15.9 µs (its update 13.7).
-- Two parts of that are overhead rather than queue work:
--
-- 1. JSON. The claim aggregated the leased rows into one json document
--    (json_agg over a record: ~0.6 ms per 100 messages, measured on its own);
--    returning the same rows as rows costs ~0.2 ms. Clients see no difference
--    through PostgREST, which renders a set of rows as the same JSON array of
--    objects (same keys, same order, bigint as a number, timestamptz in ISO 8601).
--    SQL callers now select from the function:
--      select * from api.claim_messages(channel_id => ..., max => 100)
--    instead of select api.claim_messages(...) — hence the drop and re-create
--    (a function's return type cannot be changed in place).
--
-- 2. The number check. Postgres evaluates every CHECK constraint of a table on
--    every UPDATE of a row, whether or not the update touches the constraint's
--    columns; messages_to_msisdn_check was the most expensive of the outbox's
--    ten (~1 µs, on the claim and again on the report), for a column neither
--    ever changes. A domain's check runs only when a value is assigned to the
--    column (insert, or an update that sets it). app.e164 accepts exactly the
--    strings the check accepted ('+', then 7 to 15 ASCII digits, the first not
--    0) and fails the same way (SQLSTATE 23514, check_violation).
--    The ALTER COLUMN TYPE rewrites app.messages under an ACCESS EXCLUSIVE lock
--    (a domain with a constraint must be checked row by row): seconds per million
--    rows; on a large production outbox, run this migration in a quiet window.
--
-- Measured on the 2-core development machine, same day, same database:
--   server time per message, one worker draining 50k messages: claim 23.6 → 16.9 µs
--   (its leasing statement 20.9 → 13.3), report 15.9 → 15.0.
--   perf/bench/queue_throughput.ts, ours (claim, then report), msgs/s at 1 / 2 / 4
--   workers: before 19,564 / 28,134 / 27,468 and 16,730 / 27,915 / 26,565; after
--   20,379 / 27,328 / 26,787, 21,114 / 25,955 / 25,682 and 21,367 / 27,018 / 26,400.
--   One worker gains ~12%; two and four do not move: there the two cores are
--   saturated (vmstat: ~18% idle during the drain) by what each call costs outside
--   these statements — parsing and planning the call, commit, the client (~10 µs
--   per message in the Deno process) — and by the second full row update every
--   message needs. The gap to graphile-worker's batched mode (0.61–0.85 of its
--   msgs/s in those runs) is that update: it deletes a finished job, a message stays
--   as the row webhooks update (status, unique wamid).
--   Tried and not kept: one call that reports the previous batch and claims the next
--   (one commit and round trip less per batch): +6–10% at one worker, no clear
--   change at two and four; dropping the report's separate validation pass
--   (validate while updating, raise to roll back): 15–25% slower on 20k reports,
--   likely because the inlined validity expression is computed once per use.

-- 1. The number domain --------------------------------------------------------------

-- The same test as everywhere else (app.is_e164): the regular expression costs
-- ~1 µs, but now only once per message, when it is enqueued.
create domain app.e164 as text
  constraint e164_format check (app.is_e164(value));

comment on domain app.e164 is
  'An E.164 phone number (app.is_e164: +, then 7 to 15 digits, the first not 0). Checked on assignment only.';

alter table app.messages
  drop constraint messages_to_msisdn_check,
  alter column to_msisdn type app.e164;

-- 2. The claim, as rows ---------------------------------------------------------------

-- One leased message, as api.claim_messages returns it (the names are the keys
-- the dispatcher reads: `to`, `attempt`, ...).
create type app.claimed_message as (
  message_id bigint,
  campaign_id uuid,
  channel_id uuid,
  phone_number_id text,
  "to" text,
  template_name text,
  template_language text,
  body_parameters text[],
  attempt integer,
  lease_owner text,
  lease_expires_at timestamptz
);

comment on type app.claimed_message is 'One message leased by api.claim_messages.';

drop function api.claim_messages(uuid, integer, integer, text);
drop function app.claim_messages_at(uuid, integer, integer, text, timestamptz);
drop function app.claim_channel_messages(uuid, integer, integer, text, timestamptz, boolean);

-- Claims up to max_messages due messages of one channel and leases them to
-- `worker`. Unchanged from 20261128000800_dispatch_fast_claim.sql (see there for
-- the rate, time, selection and plan rules) except that the leased messages are
-- returned as rows, ordered by message id.
create function app.claim_channel_messages(
  channel_id uuid,
  max_messages integer,
  lease_seconds integer,
  worker text,
  at timestamptz default null,
  wait boolean default true
) returns setof app.claimed_message
language plpgsql
set search_path = ''
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
set enable_bitmapscan = off
set jit = off
as $$
declare
  channel app.channels;
  t timestamptz;
  available numeric;
  take integer;
  dispatching uuid[];
  spacing interval;
  spacing_campaign uuid;           -- app.channel_spacing, as the last claim left it
  spacing_other_at timestamptz;
  unprobed_campaign uuid;          -- candidates of this campaign need no spacing probe
begin
  if wait then
    select * into channel from app.channels c where c.id = claim_channel_messages.channel_id for update;
  else
    select * into channel from app.channels c where c.id = claim_channel_messages.channel_id
    for update skip locked;
  end if;
  if not found or channel.status <> 'active' then
    return;
  end if;

  t := greatest(coalesce(at, clock_timestamp()), channel.refilled_at);
  available := least(channel.burst,
    channel.tokens + extract(epoch from t - channel.refilled_at) * channel.rate_per_minute / 60.0);
  take := least(floor(available)::integer, max_messages);
  if take < 1 then
    return;  -- the bucket refills lazily: nothing to store
  end if;
  -- The channel's dispatching campaigns, as a filter (not a join): the candidate
  -- scan stays a single ordered index scan whatever the statistics say.
  dispatching := array(select c.id from app.campaigns c
                       where c.channel_id = channel.id and c.status = 'dispatching');
  spacing := make_interval(secs => channel.min_recipient_interval_seconds);
  select s.campaign_id, s.other_attempt_at into spacing_campaign, spacing_other_at
  from app.channel_spacing s where s.channel_id = channel.id;
  if spacing_other_at <= t - spacing then
    unprobed_campaign := spacing_campaign;
  end if;

  return query
  with candidates as materialized (
    select m.id, m.to_msisdn, m.next_attempt_at,
           exists (select from app.opt_outs o where o.msisdn = m.to_msisdn offset 0) as opted_out
    from app.messages m
    where m.channel_id = channel.id
      and m.status = 'queued'
      and m.next_attempt_at <= t
      and m.campaign_id = any (dispatching)
      -- Spacing: this message's own last attempt, then — unless no other
      -- campaign of the channel attempted anything within the interval (see
      -- app.channel_spacing) — the recipient's other messages on this channel,
      -- through their targets (rt.id <> m.id is decided on the target row).
      and (spacing = '0 seconds'::interval or (
        (m.last_attempt_at is null or m.last_attempt_at <= t - spacing)
        and (m.campaign_id = unprobed_campaign or not exists (
          select from app.campaign_targets rt join app.messages r on r.id = rt.id
          where rt.msisdn = m.to_msisdn and rt.id <> m.id
            and r.channel_id = channel.id and r.last_attempt_at > t - spacing
          offset 0))))
    order by m.next_attempt_at, m.id
    limit take
    for update of m skip locked
  ), picked as (
    -- At most one message per recipient in a batch (the first one due).
    select distinct on (c.to_msisdn) c.id
    from candidates c
    where not c.opted_out
    order by c.to_msisdn, c.next_attempt_at, c.id
  ), leased as (
    update app.messages m
    set status = 'leased', attempts = m.attempts + 1, last_attempt_at = t,
        lease_owner = worker, lease_expires_at = t + make_interval(secs => lease_seconds)
    where m.id = any (array(select p.id from picked p))  -- by primary key
    returning m.id, m.campaign_id, m.channel_id, m.to_msisdn, m.template_name, m.template_language,
              m.body_parameters, m.attempts, m.lease_owner, m.lease_expires_at
  ), cancelled as (
    -- Opted out since they were enqueued: cancelled here, never sent.
    update app.messages m
    set status = 'cancelled', cancelled_at = t, last_error_code = 'opted_out',
        last_error_message = 'The recipient opted out; the message was not sent.'
    where m.id = any (array(select c.id from candidates c where c.opted_out))
    returning m.voucher_id
  ), voided as (
    update app.vouchers v
    set status = 'void', voided_at = now(), void_reason = 'Recipient opted out before the message was sent.'
    from cancelled c
    where v.id = c.voucher_id and v.status = 'issued'
  ), counted as (
    select count(*)::integer as n, count(distinct x.campaign_id)::integer as campaigns,
           (array_agg(x.campaign_id))[1] as campaign
    from leased x
  ), spaced as (
    -- Leased from a campaign other than the exempt one, or from several: every
    -- attempt so far happened at or before the bucket's previous refill.
    insert into app.channel_spacing as s (channel_id, campaign_id, other_attempt_at)
    select channel.id, case when k.campaigns = 1 then k.campaign end, channel.refilled_at
    from counted k
    where k.n > 0 and (k.campaigns > 1 or k.campaign is distinct from spacing_campaign)
    on conflict on constraint channel_spacing_pkey do update
      set campaign_id = excluded.campaign_id, other_attempt_at = excluded.other_attempt_at
  ), settled as (
    update app.channels c set tokens = available - k.n, refilled_at = t
    from counted k
    where c.id = channel.id
  ), logged as (
    insert into app.dispatch_claims (channel_id, claimed_at, messages, worker)
    select channel.id, t, k.n, claim_channel_messages.worker from counted k where k.n > 0
  )
  select x.id, x.campaign_id, x.channel_id, channel.phone_number_id, x.to_msisdn::text, x.template_name,
         x.template_language, x.body_parameters, x.attempts, x.lease_owner, x.lease_expires_at
  from leased x
  order by x.id;
end;
$$;

comment on function app.claim_channel_messages is
  'Token-bucket claim for one channel (lock the channel row, refill, take ≤ floor(tokens) with SKIP LOCKED), one statement after the lock; returns the leased messages.';

-- The time-injectable claim: one channel (waiting for its lock), or, with a null
-- channel_id, the active channels that have due messages, oldest due first,
-- skipping channels another claimer holds right now.
create function app.claim_messages_at(
  channel_id uuid,
  max_messages integer,
  lease_seconds integer,
  worker text,
  at timestamptz default null
) returns setof app.claimed_message
language plpgsql
set search_path = ''
as $$
declare
  ch uuid;
  claimed integer := 0;
  n integer;
begin
  if channel_id is not null then
    return query select * from app.claim_channel_messages(channel_id, max_messages, lease_seconds, worker, at, true);
    return;
  end if;
  for ch in
    select c.id
    from app.channels c
    cross join lateral (
      select min(m.next_attempt_at) as oldest
      from app.messages m
      where m.channel_id = c.id and m.status = 'queued'
    ) q
    where c.status = 'active' and q.oldest <= coalesce(at, clock_timestamp())
    order by q.oldest
  loop
    return query select * from app.claim_channel_messages(ch, max_messages - claimed, lease_seconds, worker, at, false);
    get diagnostics n = row_count;
    claimed := claimed + n;
    exit when claimed >= max_messages;
  end loop;
end;
$$;

comment on function app.claim_messages_at is
  'api.claim_messages at an injectable time (tests, benchmarks): one channel, or every active channel with due messages.';

create function api.claim_messages(
  channel_id uuid default null,
  max integer default 100,
  lease_seconds integer default 60,
  worker text default null
) returns setof app.claimed_message
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform app.authorize(array['service']);
  if max is null or max not between 1 and 1000 then
    perform app.raise_error('invalid_claim', format('max must be between 1 and 1000, got %s.', max), 400,
      jsonb_build_object('field', 'max'));
  end if;
  if lease_seconds is null or lease_seconds not between 5 and 3600 then
    perform app.raise_error('invalid_claim',
      format('lease_seconds must be between 5 and 3600, got %s.', lease_seconds), 400,
      jsonb_build_object('field', 'lease_seconds'));
  end if;
  if worker is not null and length(worker) not between 1 and 200 then
    perform app.raise_error('invalid_claim', 'worker must be 1 to 200 characters.', 400,
      jsonb_build_object('field', 'worker'));
  end if;
  if claim_messages.channel_id is not null
    and not exists (select from app.channels c where c.id = claim_messages.channel_id) then
    perform app.raise_error('channel_not_found',
      format('Channel "%s" does not exist.', claim_messages.channel_id), 404);
  end if;
  if claim_messages.channel_id is not null then
    -- One channel: straight to the channel claim (each plpgsql layer that passes
    -- the rows on copies them once more).
    return query select * from app.claim_channel_messages(claim_messages.channel_id, max, lease_seconds,
                                                          coalesce(worker, 'worker-' || gen_random_uuid()));
  else
    return query select * from app.claim_messages_at(null, max, lease_seconds,
                                                     coalesce(worker, 'worker-' || gen_random_uuid()));
  end if;
end;
$$;

revoke execute on function app.claim_channel_messages from public;
revoke execute on function app.claim_messages_at from public;
revoke execute on function api.claim_messages from public;
grant execute on function api.claim_messages to service_role;

comment on function api.claim_messages is
  'Leases up to max due messages (service_role), one row each: never more than the channel token bucket allows; skips paused channels/campaigns, opted-out numbers and recipients messaged < min_recipient_interval_seconds ago.';
