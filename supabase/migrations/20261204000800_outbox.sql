-- The outbox: one message per campaign target, drained by the `dispatch` Edge
-- Function through three service_role RPCs:
--
--   api.claim_messages          lease up to `max` due messages, never more than the
--                               channel's token bucket allows
--   api.report_message_results  sent (wamid) | retry (backoff) | failed, per message
--   (pg_cron)                   app.reclaim_expired_leases: a crashed worker's
--                               messages come back
--
-- Message states:
--
--   queued ──claim──▶ leased ──sent──▶ sent ──▶ delivered ──▶ read   (webhooks)
--     ▲   │             │  └──failed──▶ failed                        (webhook: failed from sent)
--     │   │             └──returned──▶ queued | held | dead | unknown | cancelled
--     │   └──campaign paused──▶ held ──resumed──▶ queued
--   queued | held ──opt-out / campaign cancelled──▶ cancelled
--
-- A message is *returned* when its send did not succeed but may be tried again (a
-- `retry` report) or when its lease expires (the worker crashed or hung). Where a
-- returned message goes is decided in one place, app.returned_message_status.
--
-- What each final state means for the message's voucher (this is the one place
-- that says it; tests/db/17_message_voucher_invariants checks it):
--
--   sent, delivered, read  the customer has (or is getting) the code: the voucher
--                          stays issued.
--   cancelled              never sent (opted out, or the campaign was cancelled
--                          before the send): the voucher is void. Enforced by the
--                          trigger messages_cancelled_void_voucher, whatever path
--                          cancels the message.
--   failed                 WhatsApp refused it for good (e.g. not a WhatsApp
--                          number) or reported it failed: the code did not arrive.
--   dead                   every attempt hit a retryable error.
--   unknown                an attempt may have reached WhatsApp (its lease expired
--                          after the request went out, or it timed out: maybe_sent)
--                          and the message was then stopped (campaign cancelled,
--                          recipient opted out), so it will not be tried again.
--   For failed, dead and unknown the voucher stays issued: it may have reached the
--   customer (dead, unknown), and either way support can resend that same voucher
--   in a new message. It expires with its campaign like any other.

-- Messages ---------------------------------------------------------------------------

-- One row per target, and it shares the target's id: a target is messaged at
-- most once (retries are the same row), with no extra unique index to maintain.
--
-- The claim and the report each rewrite the row (status is in index predicates,
-- so neither update is HOT), and usually webhooks twice more. Hence few indexes,
-- fillfactor 50 (the new versions stay on their page: one page touched and
-- logged), the number as a domain (checked on insert, not on every update), and
-- by-recipient lookups (opt-out, spacing guard) through campaign_targets(msisdn),
-- which never changes after insert.
create table app.messages (
  id bigint primary key references app.campaign_targets (id),
  campaign_id uuid not null references app.campaigns (id),
  channel_id uuid not null references app.channels (id),
  voucher_id bigint references app.vouchers (id),
  to_msisdn app.e164 not null,
  template_name text not null,
  template_language text not null,
  -- Rendered at enqueue time, so editing a campaign never changes queued messages.
  body_parameters text[] not null default '{}',
  status text not null default 'queued' check (status in
    ('queued', 'held', 'leased', 'sent', 'delivered', 'read', 'failed', 'dead', 'unknown', 'cancelled')),
  -- Claims so far (a claim is an attempt: the dispatcher sends what it claims).
  attempts integer not null default 0 check (attempts >= 0),
  max_attempts integer not null default 5 check (max_attempts between 1 and 20),
  next_attempt_at timestamptz not null default now(),
  last_attempt_at timestamptz,
  lease_owner text check (length(lease_owner) between 1 and 200),
  lease_expires_at timestamptz,
  -- WhatsApp message id, from the send response; webhooks find the message by it.
  wamid text check (length(wamid) between 1 and 200),
  -- An attempt may have reached WhatsApp without our knowing (a timeout, an
  -- expired lease). Such a message is never recorded as cancelled.
  maybe_sent boolean not null default false,
  last_error_code text check (length(last_error_code) <= 100),
  last_error_message text check (length(last_error_message) <= 1000),
  created_at timestamptz not null default now(),
  sent_at timestamptz,
  delivered_at timestamptz,
  read_at timestamptz,
  failed_at timestamptz,
  cancelled_at timestamptz,
  constraint messages_lease_fields check (
    (status = 'leased') = (lease_owner is not null and lease_expires_at is not null)),
  constraint messages_sent_has_wamid check (status not in ('sent', 'delivered', 'read') or wamid is not null),
  -- A cancelled message says why (app.stop_message_text has the sentence).
  constraint messages_cancelled_reason check (
    status <> 'cancelled' or coalesce(last_error_code in ('opted_out', 'campaign_cancelled'), false))
) with (fillfactor = 50);

-- Claim path: due queued messages of a channel, oldest first.
create index messages_claim_idx on app.messages (channel_id, next_attempt_at, id) where status = 'queued';
-- Webhook lookup.
create unique index messages_wamid_key on app.messages (wamid) where wamid is not null;
-- Pending messages by status, then campaign: status leads so that the reclaim job
-- (status = 'leased') is a range scan; the campaign queries (pause, resume,
-- cancel, completion, back-pressure, queue_health) give both columns. Partial:
-- sent and later messages are not in it, so a report adds no entry here.
create index messages_pending_idx on app.messages (status, campaign_id)
  where status in ('queued', 'held', 'leased');

comment on table app.messages is
  'The outbox: one row per campaign target; queued → leased → sent → delivered → read, or failed / dead / unknown / cancelled (see the outbox migration for what each final state means for the voucher).';
comment on column app.messages.attempts is 'Number of claims (send attempts); at max_attempts a retry becomes dead.';
comment on column app.messages.status is
  'queued | held (campaign paused) | leased | sent | delivered | read | failed | dead (attempts exhausted) | unknown (may have been sent; not retried) | cancelled (never sent; voucher void).';

alter table app.messages enable row level security;

-- One row per claim call that got messages: the "sends in the last minute" figure.
create table app.dispatch_claims (
  id bigint generated always as identity primary key,
  channel_id uuid not null references app.channels (id),
  claimed_at timestamptz not null,
  messages integer not null check (messages > 0),
  worker text not null
);

create index dispatch_claims_channel_time_idx on app.dispatch_claims (channel_id, claimed_at);

comment on table app.dispatch_claims is 'Claim log (one row per successful claim call), kept a day, for send-rate figures.';

alter table app.dispatch_claims enable row level security;

-- One row per channel per lease-reclaim run that found expired leases.
create table app.lease_reclaims (
  id bigint generated always as identity primary key,
  reclaimed_at timestamptz not null default now(),
  channel_id uuid not null references app.channels (id),
  messages integer not null check (messages > 0),
  dead integer not null default 0 check (dead >= 0)
);

create index lease_reclaims_reclaimed_at_idx on app.lease_reclaims (reclaimed_at);

comment on table app.lease_reclaims is 'Log of expired leases returned to the queue (or dead), for ops; kept 7 days.';

alter table app.lease_reclaims enable row level security;

-- Spacing state. The per-recipient spacing guard needs, per candidate, "did this
-- recipient get a message from this channel less than
-- min_recipient_interval_seconds ago?": an index probe through the recipient's
-- targets. A campaign's targets are unique by number, so only *another*
-- campaign's message can make a candidate wait for its recipient (its own
-- previous attempt is on the row). This row per channel says when no other
-- campaign can have: every message attempted on the channel by a campaign other
-- than `campaign_id` was attempted at or before `other_attempt_at`. So while a
-- channel dispatches one campaign (the usual case), its candidates need no probe
-- once other_attempt_at is older than the spacing interval.
--
-- Kept exact by the claim, under the channel row lock that serialises claimers:
-- a claim that leases messages of campaign_id only leaves the row as it is; one
-- that leases from another campaign (or several) sets campaign_id to that
-- campaign (null for several) and other_attempt_at to the channel's refilled_at
-- before this claim — every earlier attempt happened at a claim's time, and each
-- claim sets refilled_at to its time, which never goes back. No row: no campaign
-- is exempt.
create table app.channel_spacing (
  channel_id uuid primary key references app.channels (id) on delete cascade,
  campaign_id uuid,
  other_attempt_at timestamptz not null
);

comment on table app.channel_spacing is
  'Per channel: messages of campaigns other than campaign_id were all attempted at or before other_attempt_at (lets the claim skip the spacing probe).';

alter table app.channel_spacing enable row level security;

-- Stopping messages --------------------------------------------------------------------
-- A message waiting to be sent (queued or held) is stopped when its recipient opts
-- out or its campaign is cancelled: `cancelled` when no attempt can have reached
-- WhatsApp, `unknown` when one may have (maybe_sent). last_error_code is the
-- reason, last_error_message this sentence.
create function app.stop_message_text(reason text, maybe_sent boolean) returns text
language sql immutable parallel safe
as $$
  select case reason
    when 'opted_out' then 'The recipient opted out'
    when 'campaign_cancelled' then 'The campaign was cancelled'
  end || case
    when maybe_sent then '; an earlier attempt may have reached the recipient, so it is not sent again.'
    else ' before the message was sent.'
  end
$$;

comment on function app.stop_message_text(text, boolean) is
  'The sentence recorded with a stopped message for its reason (opted_out, campaign_cancelled).';

-- Stops the given messages that are still waiting to be sent, for `reason`;
-- returns how many. The set-based form every non-hot path uses (campaign cancel,
-- opt-out, the completion job's stragglers); the claim stops opted-out messages
-- in its own single statement, with the same columns.
create function app.cancel_messages(message_ids bigint[], reason text) returns integer
language sql
set search_path = ''
as $$
  with stopped as (
    update app.messages m
    set status = case when m.maybe_sent then 'unknown' else 'cancelled' end,
        cancelled_at = case when m.maybe_sent then null else now() end,
        last_error_code = reason,
        last_error_message = app.stop_message_text(reason, m.maybe_sent)
    where m.id = any (message_ids) and m.status in ('queued', 'held')
    returning 1
  )
  select count(*)::integer from stopped
$$;

comment on function app.cancel_messages is
  'Stops the waiting (queued, held) messages among message_ids for reason: cancelled (voucher voided by trigger messages_cancelled_void_voucher) or, if an attempt may have been sent, unknown.';

-- A cancelled message was never sent, so its voucher can never be used: void it.
-- A trigger, so that no path that cancels a message can forget it. It fires only
-- when a row becomes cancelled (the WHEN clause is all the hot updates pay), and
-- one campaign's pending backlog is bounded by the enqueue chunk, so a campaign
-- cancel runs it a few thousand times at most.
create function app.void_voucher_of_cancelled_message() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  update app.vouchers v
  set status = 'void', voided_at = now(), void_reason = new.last_error_message
  where v.id = new.voucher_id and v.status = 'issued';
  return null;
end;
$$;

create trigger messages_cancelled_void_voucher
  after update of status on app.messages
  for each row
  when (new.status = 'cancelled' and old.status <> 'cancelled' and new.voucher_id is not null)
  execute function app.void_voucher_of_cancelled_message();

comment on trigger messages_cancelled_void_voucher on app.messages is
  'A message that becomes cancelled (never sent) voids its issued voucher.';

-- Returned messages -------------------------------------------------------------------------
-- Full jitter over Meta's 4^attempt seconds, capped at 15 minutes: the delay after
-- attempt n is uniform in [0, least(900, 4^n)) seconds, i.e. caps of
-- 4 s, 16 s, 64 s, 256 s, 900 s, 900 s, … A Retry-After from the API is a floor:
-- next_attempt_at = now() + greatest(retry_after_seconds, backoff).
-- `jitter` is injectable so tests can pin the schedule.
create function app.backoff_seconds(attempt integer, jitter double precision default random())
returns numeric
language sql volatile
set search_path = ''
as $$
  select pg_catalog.round((jitter * least(900, 4::double precision ^ greatest(attempt, 1)))::numeric, 3)
$$;

comment on function app.backoff_seconds is
  'Retry delay after attempt n: full jitter over least(900, 4^n) seconds (caps 4, 16, 64, 256, 900 s).';

-- Where a returned message goes: dead once it has used its attempts; otherwise
-- back to its campaign's backlog — queued while the campaign dispatches, held
-- while it is paused (or scheduled again) — and, when the campaign was cancelled,
-- unknown if any attempt may have been sent (`maybe_sent`: an expired lease, a
-- timeout, now or earlier), cancelled if none can have been.
create function app.returned_message_status(
  attempts integer,
  max_attempts integer,
  campaign_status text,
  maybe_sent boolean
) returns text
language sql immutable parallel safe
as $$
  select case
    when attempts >= max_attempts then 'dead'
    when campaign_status = 'dispatching' then 'queued'
    when campaign_status in ('paused', 'scheduled') then 'held'
    when maybe_sent then 'unknown'
    else 'cancelled'
  end
$$;

comment on function app.returned_message_status is
  'The status of a message whose send did not succeed (retry report, expired lease): dead, queued, held, unknown or cancelled.';

-- Claim --------------------------------------------------------------------------------------

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

-- Claims up to max_messages due messages of one channel and leases them to
-- `worker`; returns them ordered by message id.
--
-- Rate: the channel row is locked first (FOR UPDATE), which serialises every
-- claimer of this channel — however many dispatchers run — around the token
-- bucket: refill, take at most floor(tokens), subtract what was taken, commit.
-- Hence the channel's rate holds globally, not per worker. (Taking the lock only
-- around the token arithmetic was measured and rejected: concurrent claimers then
-- walk the same head of messages_claim_idx skipping each other's locked rows.)
--
-- Time: `at` is the claim's time; null means clock_timestamp() read *after* the
-- lock is granted. Not now(): now() is the start of the transaction, which can be
-- long before this claim (a caller's wider transaction, or time spent waiting for
-- the lock behind another claimer), so a lease would start in the past and the
-- bucket would refill as if the claim happened earlier than the sends it allows.
-- Claims serialised by the lock read increasing clock_timestamp() values, and
-- `greatest(at, refilled_at)` keeps the bucket's clock monotonic even for an
-- injected `at` (the simulation tests inject simulated time).
--
-- Selection: queued messages due at `at`, of campaigns that are dispatching,
-- oldest first, FOR UPDATE SKIP LOCKED (a row another transaction holds — a pause,
-- an opt-out, a reclaim — is skipped, never waited for). The per-recipient
-- spacing guard skips a message whose recipient got a message from this channel
-- less than min_recipient_interval_seconds ago (its own last attempt included),
-- and a batch holds at most one message per recipient. A message whose recipient
-- has opted out is stopped here (never sent again; see app.cancel_messages) and
-- costs no token.
--
-- After the lock and the token arithmetic, one statement selects, leases,
-- cancels, settles the bucket and logs the claim. Plans: one generic plan per
-- session for every statement. The two probes per candidate end in `offset 0` so
-- they stay per-row index probes (opt_outs_pkey, campaign_targets_msisdn_idx)
-- rather than a hash over every opt-out or message. enable_bitmapscan = off is
-- the one planner pin, kept because tests/claim_plan.test.ts shows it is needed:
-- with statistics taken before a bulk load (autovacuum re-analyzes only after
-- 10% of a table changes) the spacing probe otherwise becomes a sequential scan
-- of campaign_targets per candidate. That test also shows enable_seqscan = off
-- and jit = off are not needed.
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
set enable_bitmapscan = off
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
  ), stopped as (
    -- Opted out since they were enqueued: stopped here, never sent (the columns
    -- app.cancel_messages writes).
    update app.messages m
    set status = case when m.maybe_sent then 'unknown' else 'cancelled' end,
        cancelled_at = case when m.maybe_sent then null else t end,
        last_error_code = 'opted_out',
        last_error_message = app.stop_message_text('opted_out', m.maybe_sent)
    where m.id = any (array(select c.id from candidates c where c.opted_out))
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

revoke execute on function api.claim_messages from public;
grant execute on function api.claim_messages to service_role;

comment on function api.claim_messages is
  'Leases up to max due messages (service_role), one row each: never more than the channel token bucket allows; skips paused channels/campaigns, opted-out numbers and recipients messaged < min_recipient_interval_seconds ago.';

-- Report -------------------------------------------------------------------------------------
-- The dispatcher's verdict per claimed message, applied in one UPDATE from the
-- JSON array. Only the current lease holder's report counts: the row must still be
-- leased to `worker`; anything else (the lease expired and was reclaimed, or
-- another worker holds it now) is stale, ignored and counted.
--   sent    → sent (wamid required); pending webhook statuses for it are applied.
--   failed  → failed (permanent: the message will not be retried).
--   retry   → returned (app.returned_message_status): queued again at
--             now() + greatest(retry_after_seconds, backoff) (app.backoff_seconds),
--             dead after max_attempts, held while the campaign is paused, and for
--             a cancelled campaign unknown when this or an earlier attempt may
--             have reached WhatsApp (`maybe_sent`: a timeout), else cancelled.
--
-- Validation: every item is checked by one expression (the `checked` CTE) that
-- names the first thing wrong with it; the update runs only when no item is
-- wrong and no message id or sent wamid repeats, otherwise nothing is written and
-- the first bad item is reported. Items are read once, with jsonb_to_recordset,
-- which needs objects: anything else is refused first.
create function api.report_message_results(results jsonb, worker text) returns jsonb
language plpgsql
security definer
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
  counts record;
  bad_index bigint;
  pending jsonb;
begin
  perform app.authorize(array['service']);
  if jsonb_typeof(results) is distinct from 'array' then
    perform app.raise_error('invalid_results', 'results must be a JSON array.', 400);
  end if;
  if jsonb_array_length(results) > 1000 then
    perform app.raise_error('invalid_results',
      format('At most 1000 results per call, got %s.', jsonb_array_length(results)), 400);
  end if;
  if worker is null or length(worker) not between 1 and 200 then
    perform app.raise_error('invalid_results', 'worker (the lease owner, 1 to 200 characters) is required.', 400,
      jsonb_build_object('field', 'worker'));
  end if;
  if jsonb_path_exists(results, 'strict $[*] ? (@.type() != "object")') then
    select min(x.i) - 1 into bad_index
    from jsonb_array_elements(results) with ordinality as x(e, i)
    where jsonb_typeof(x.e) <> 'object';
    perform app.raise_error('invalid_results', format('Result %s is invalid: not_an_object.', bad_index), 400,
      jsonb_build_object('index', bad_index, 'reason', 'not_an_object'));
  end if;

  with items as materialized (
    select r.idx - 1 as idx, r.message_id as message_key, r.outcome,
           case when r.outcome = 'sent' then r.wamid #>> '{}' end as sent_wamid,
           left(r.error_code #>> '{}', 100) as error_code,
           left(r.error_message #>> '{}', 1000) as error_message,
           r.retry_after_seconds, r.maybe_sent,
           -- The first thing wrong with the item, or null.
           case
             when not coalesce(length(r.message_id) between 1 and 18
                               and ltrim(r.message_id, '0123456789') = '', false) then 'invalid_message_id'
             when r.outcome is null or r.outcome not in ('sent', 'retry', 'failed') then 'invalid_outcome'
             when r.outcome = 'sent' and (jsonb_typeof(r.wamid) is distinct from 'string'
                                          or length(r.wamid #>> '{}') not between 1 and 200) then 'wamid_required'
             when coalesce(jsonb_typeof(r.retry_after_seconds), 'null') not in ('number', 'null')
               then 'invalid_retry_after_seconds'
             when coalesce(jsonb_typeof(r.error_code), 'null') not in ('string', 'number', 'null')
               or coalesce(jsonb_typeof(r.error_message), 'null') not in ('string', 'null') then 'invalid_error'
             when coalesce(jsonb_typeof(r.maybe_sent), 'null') not in ('boolean', 'null') then 'invalid_maybe_sent'
           end as field_error
    from rows from (jsonb_to_recordset(results) as (message_id text, outcome text, wamid jsonb,
                                                     error_code jsonb, error_message jsonb,
                                                     retry_after_seconds jsonb, maybe_sent jsonb))
         with ordinality as r(message_id, outcome, wamid, error_code, error_message, retry_after_seconds,
                              maybe_sent, idx)
  ), checked as materialized (
    select i.*,
           coalesce(i.field_error,
             case when count(*) over (partition by i.message_key) > 1 then 'duplicate_message_id'
                  when i.sent_wamid is not null and count(*) over (partition by i.sent_wamid) > 1
                    then 'duplicate_wamid' end) as error
    from items i
  ), verdict as (
    select (array_agg(c.idx order by c.idx) filter (where c.error is not null))[1] as bad_idx,
           (array_agg(c.error order by c.idx) filter (where c.error is not null))[1] as bad_reason
    from checked c
  ), typed as (
    -- Casts only what was checked, so a bad item can never fail a cast. Where a
    -- retry goes depends on the message and its campaign: read only for retries.
    select c.message_key::bigint as message_id, c.outcome, c.sent_wamid, c.error_code, c.error_message,
           case when jsonb_typeof(c.retry_after_seconds) = 'number'
                then greatest(0, least((c.retry_after_seconds #>> '{}')::numeric, 86400)) else 0 end
             as retry_after,
           case c.outcome
             when 'sent' then 'sent'
             when 'failed' then 'failed'
             else (select app.returned_message_status(m.attempts, m.max_attempts,
                            (select k.status from app.campaigns k where k.id = m.campaign_id),
                            m.maybe_sent or coalesce((c.maybe_sent #>> '{}')::boolean, false))
                   from app.messages m where m.id = c.message_key::bigint)
           end as next_status,
           coalesce((c.maybe_sent #>> '{}')::boolean, false) as maybe_sent
    from checked c
    where (select v.bad_idx from verdict v) is null
  ), applied as (
    update app.messages m
    set status = i.next_status,
        wamid = case when i.outcome = 'sent' then i.sent_wamid else m.wamid end,
        maybe_sent = m.maybe_sent or i.maybe_sent,
        sent_at = case when i.outcome = 'sent' then now() else m.sent_at end,
        failed_at = case when i.next_status in ('failed', 'dead') then now() else m.failed_at end,
        cancelled_at = case when i.next_status = 'cancelled' then now() else m.cancelled_at end,
        next_attempt_at = case when i.outcome = 'retry'
          then now() + make_interval(secs => greatest(i.retry_after, app.backoff_seconds(m.attempts)))
          else m.next_attempt_at end,
        last_error_code = case i.next_status
          when 'sent' then null
          when 'cancelled' then 'campaign_cancelled'
          else coalesce(i.error_code, 'unknown') end,
        last_error_message = case i.next_status
          when 'sent' then null
          when 'cancelled' then app.stop_message_text('campaign_cancelled', false)
          else i.error_message end,
        lease_owner = null,
        lease_expires_at = null
    from typed i
    -- By primary key only: lease_owner is set exactly while a message is leased
    -- (messages_lease_fields), so this is "still leased to this worker".
    where m.id = any (array(select t.message_id from typed t))
      and m.id = i.message_id
      and m.lease_owner = report_message_results.worker
    returning m.status, m.wamid
  )
  select v.bad_idx, v.bad_reason,
         (select count(*) from applied) as applied,
         (select count(*) from applied a where a.status = 'sent') as sent,
         (select count(*) from applied a where a.status in ('queued', 'held')) as retried,
         (select count(*) from applied a where a.status = 'failed') as failed,
         (select count(*) from applied a where a.status = 'dead') as dead,
         (select count(*) from applied a where a.status = 'unknown') as unknown,
         (select count(*) from applied a where a.status = 'cancelled') as cancelled,
         (select array_agg(a.wamid) from applied a where a.status = 'sent') as wamids
    into counts
  from verdict v;

  if counts.bad_idx is not null then
    perform app.raise_error('invalid_results', format('Result %s is invalid: %s.', counts.bad_idx, counts.bad_reason),
      400, jsonb_build_object('index', counts.bad_idx, 'reason', counts.bad_reason));
  end if;

  -- Webhook statuses that arrived before this report.
  if counts.wamids is not null then
    with taken as (
      delete from app.pending_waba_statuses p where p.wamid = any (counts.wamids)
      returning p.wamid, p.status, p.occurred_at, p.error_code, p.error_message
    )
    select jsonb_agg(jsonb_build_object('wamid', t.wamid, 'status', t.status,
                                        'timestamp', t.occurred_at, 'error_code', t.error_code,
                                        'error_message', t.error_message))
      into pending
    from taken t;
    if pending is not null then
      perform app.apply_waba_statuses(pending, false);
    end if;
  end if;

  return jsonb_build_object(
    'applied', counts.applied,
    'stale', jsonb_array_length(results) - counts.applied,
    'sent', counts.sent,
    'retried', counts.retried,
    'failed', counts.failed,
    'dead', counts.dead,
    'unknown', counts.unknown,
    'cancelled', counts.cancelled);
end;
$$;

revoke execute on function api.report_message_results from public;
grant execute on function api.report_message_results to service_role;

-- Leases -------------------------------------------------------------------------------------
-- pg_cron job (every minute): messages whose lease expired (a crashed or stuck
-- worker) are returned (app.returned_message_status) with maybe_sent: the worker
-- may have sent them before it stopped. So, while the campaign dispatches, they
-- are sent again (delivery is at least once); if it was cancelled meanwhile they
-- become unknown, never cancelled. Logged per channel in app.lease_reclaims.
create function app.reclaim_expired_leases(max_messages integer default 10000) returns integer
language plpgsql
set search_path = ''
as $$
declare
  reclaimed integer;
begin
  with expired as (
    select m.id from app.messages m
    where m.status = 'leased' and m.lease_expires_at < now()
    order by m.lease_expires_at
    limit max_messages
    for update skip locked
  ), returned as (
    update app.messages m
    set status = app.returned_message_status(m.attempts, m.max_attempts, c.status, true),
        maybe_sent = true,
        next_attempt_at = now(),
        failed_at = case when m.attempts >= m.max_attempts then now() else m.failed_at end,
        last_error_code = 'lease_expired',
        last_error_message = format('Worker "%s" did not report within its lease.', m.lease_owner),
        lease_owner = null,
        lease_expires_at = null
    from expired e, app.campaigns c
    where m.id = e.id and c.id = m.campaign_id
    returning m.channel_id, m.status
  ), logged as (
    insert into app.lease_reclaims (channel_id, messages, dead)
    select r.channel_id, count(*), count(*) filter (where r.status = 'dead')
    from returned r
    group by r.channel_id
    returning messages
  )
  select coalesce(sum(l.messages), 0) into reclaimed from logged l;
  return reclaimed;
end;
$$;

comment on function app.reclaim_expired_leases is
  'pg_cron: returns messages whose lease expired (queued, held, dead, or unknown if the campaign was cancelled); logs app.lease_reclaims.';
