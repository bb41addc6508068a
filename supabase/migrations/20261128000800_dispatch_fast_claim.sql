-- Dispatch queue: a cheaper claim and report — same behaviour, less work per
-- message. Replaces app.claim_channel_messages and api.report_message_results of
-- 20261128000500_dispatch.sql, adds app.channel_spacing, and changes the
-- outbox's storage, indexes and number check. What the RPCs accept and return
-- is unchanged.
--
-- Why: the queue benchmark (perf/bench/queue_throughput.ts: 50k messages, claim
-- 100 → report 100 × sent) was behind pg-boss and graphile-worker on the same
-- database. Per message, the claim and the report each rewrite the row (status
-- is in partial-index predicates, so neither update can be HOT); on top of that
-- the claim ran five statements and re-planned its candidate query through
-- EXECUTE on every call (~0.3 ms), probed two indexes per candidate for the
-- spacing guard, and added three index entries per leased message; the report
-- validated the JSON in two passes with a regular expression per item and
-- joined every result to app.campaigns by a sequential scan (its generic plan
-- estimates one row). What changes:
--
-- 1. app.messages gets fillfactor 50: a message is rewritten twice soon after it
--    is inserted (claim, report) and usually twice more by webhooks; with room on
--    its page the new version stays there (one page touched and logged, prefix/
--    suffix-compressed WAL, no relation extension under concurrent claimers).
--    Applies to pages written from now on. And messages_to_msisdn_check, which
--    every update re-evaluates, becomes an equivalent expression without a
--    regular expression (half the cost; same strings accepted, same name).
--
-- 2. messages_lease_expiry_idx (lease_expires_at where leased) and
--    messages_campaign_pending_idx (campaign_id, status where queued/held/leased)
--    become one index, messages_pending_idx (status, campaign_id) where
--    queued/held/leased: a claim adds two index entries per message (primary key,
--    pending) instead of three. Every query that used either index keeps an index
--    path: by campaign and status (pause, resume, cancel, completion,
--    back-pressure, queue_health) and, for the reclaim job, status = 'leased' (the
--    messages in flight, sorted by lease expiry after the scan).
--
-- 3. app.channel_spacing: per channel, the one campaign whose messages need no
--    spacing probe right now (see the table's comment). While a channel dispatches
--    one campaign — the usual case — the guard reads the candidate's own last
--    attempt from the row in hand and probes nothing; with several campaigns it
--    probes exactly as before.
--
-- 4. app.claim_channel_messages: after the channel lock and the token arithmetic
--    (unchanged), one statement selects the candidates (FOR UPDATE SKIP LOCKED),
--    cancels the opted-out ones, leases the rest (one per recipient), settles the
--    bucket, logs the claim and builds the JSON, with one generic plan per
--    session instead of a re-plan per call. enable_seqscan and enable_bitmapscan
--    are off in the function so that plan can only be the ordered scan of
--    messages_claim_idx that stops after `take` rows (with statistics of an empty
--    queue the generic plan is otherwise a bitmap scan that sorts every due
--    message); jit is off (a per-call statement on a hundred rows never repays
--    compilation, and a disabled-path cost must not trigger it).
--
-- 5. api.report_message_results: the items are read once (jsonb_to_recordset),
--    validated in the same pass without regular expressions, and the update runs
--    only when all are valid (otherwise the same error as before names the first
--    bad item). The campaign status is read only for retries, by primary key.
--
-- Not changed: the channel row lock is still taken first and held to commit, so
-- the rate holds however many claimers run (tests/dispatch_queue.test.ts fails
-- without it). Taking it only around the token arithmetic was measured and
-- rejected: leasing before the lock lets concurrent claimers walk the same head
-- of messages_claim_idx skipping each other's locked rows (claim CPU 24 → 34
-- µs/message, 4-worker throughput 4–10% lower); serialising only the lease with
-- an advisory lock and settling the tokens after made no measurable difference —
-- on this 2-core machine the claimers are CPU-bound, not lock-bound, once the
-- lock is released by the server's commit (the dispatcher now sends the settings
-- and the call in one round trip, functions/_shared/db.ts callAsServiceRole, so
-- the lock no longer waits for the client's COMMIT). Lease-holder-only reports,
-- stale counting, backoff, dead after max_attempts, monotonic statuses, opt-outs,
-- paused/cancelled skipping and per-recipient spacing behave as before
-- (tests/db/12–14).
--
-- Measured on the 2-core development machine (shared; figures vary ±15% run to
-- run, so compare within one run). Server CPU of one session draining 20k
-- messages (claim 100, commit, report 100, commit), µs per message:
--   claim 31 → 18, report 16.5 → 14.6; for scale, the two bare UPDATEs on the
--   same table and indexes (no validation, JSON, opt-out or spacing) cost 11.5
--   and 9.9.
-- perf/bench/queue_throughput.ts, 50k messages, claim+complete msgs/s at 1 / 2 /
-- 4 workers, each line one run with all systems:
--   before  ours 14,679 / 20,441 / 20,600   pg-boss 18,656 / 26,263 / 30,448
--           graphile-worker batched 37,895 / 37,612 / 32,187
--   after   ours 19,144 / 31,422 / 30,359   pg-boss 19,923 / 31,205 / 33,340
--           ours, claim ∥ report (as a dispatch run drives it) 24,984 / 27,358 / 29,956
--           graphile-worker batched 36,882 / 39,758 / 48,025, defaults 1,581 / 1,741 / 1,794
--   after   ours 21,101 / 31,472 / 22,842   pg-boss 22,631 / 26,566 / 27,576
--           ours, claim ∥ report 31,548 / 30,704 / 24,154
--           graphile-worker batched 39,370 / 24,205 / 42,717
-- Backend CPU per message during the drain (pg-boss and graphile-worker in their
-- own schemas of an otherwise idle database): ours 40–44 µs, pg-boss 39–52 µs,
-- graphile-worker batched 16–28 µs. graphile-worker completes a job by deleting
-- it (one write, no index entry) where a message must stay as the record the
-- webhooks update (a second non-HOT update: primary key and unique wamid
-- entries), and it claims without a token bucket, spacing, opt-outs or a
-- rendered template payload.

-- 1. Storage and the number check ------------------------------------------------------

alter table app.messages set (fillfactor = 50);

-- Every update of a message re-evaluates every check constraint of the table,
-- those on columns it does not change included. The number format check was a
-- regular expression (about 1 µs per evaluation, twice per message on the hot
-- path); this expression accepts exactly the same strings — '+', then 7 to 15
-- ASCII digits, the first not 0 — at half the cost. Same name, same meaning.
alter table app.messages
  drop constraint messages_to_msisdn_check,
  add constraint messages_to_msisdn_check check (
    left(to_msisdn, 1) = '+' and length(to_msisdn) between 8 and 16 and substr(to_msisdn, 2, 1) <> '0'
    and ltrim(substr(to_msisdn, 2), '0123456789') = '');

-- 2. Indexes ------------------------------------------------------------------------

-- Pending messages by status, then campaign: status leads so that the reclaim job
-- (status = 'leased') is a range scan; the campaign queries give both columns.
-- Partial: sent and later messages are not in it, so a report adds no entry here.
create index messages_pending_idx on app.messages (status, campaign_id)
  where status in ('queued', 'held', 'leased');

drop index app.messages_lease_expiry_idx;
drop index app.messages_campaign_pending_idx;

-- 3. Spacing state ------------------------------------------------------------------------
-- The per-recipient spacing guard needs, per candidate, "did this recipient get a
-- message from this channel less than min_recipient_interval_seconds ago?": an
-- index probe through the recipient's targets. A campaign's targets are unique by
-- number, so only *another* campaign's message can make a candidate wait for its
-- recipient (its own previous attempt is on the row). This row per channel says
-- when no other campaign can have: every message attempted on the channel by a
-- campaign other than `campaign_id` was attempted at or before `other_attempt_at`.
-- So while a channel dispatches one campaign (the usual case), its candidates
-- need no probe once other_attempt_at is older than the spacing interval.
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

-- 4. Claim --------------------------------------------------------------------------
-- Claims up to max_messages due messages of one channel and leases them to `worker`.
--
-- Rate: the channel row is locked first (FOR UPDATE), which serialises every
-- claimer of this channel — however many dispatchers run — around the token
-- bucket: refill, take at most floor(tokens), subtract what was taken, commit.
-- Hence the channel's rate holds globally, not per worker.
--
-- Time: `at` is the claim's time; null means clock_timestamp() read *after* the
-- lock is granted (see 20261128000500_dispatch.sql for why not now()).
-- `greatest(at, refilled_at)` keeps the bucket's clock monotonic.
--
-- Selection: queued messages due at `at`, of campaigns that are dispatching,
-- oldest first, FOR UPDATE SKIP LOCKED (a row another transaction holds — a pause,
-- an opt-out, a reclaim — is skipped, never waited for). The per-recipient
-- spacing guard skips a message whose recipient got a message from this channel
-- less than min_recipient_interval_seconds ago (its own last attempt included),
-- and a batch holds at most one message per recipient. A message whose recipient
-- has opted out is cancelled here (never sent), its voucher voided, and costs no
-- token.
--
-- Plans: one generic plan per session for every statement (a generic plan does
-- not know `take`, and with statistics of an empty queue it would sort every due
-- message: hence no sequential or bitmap scans here, which leaves the candidate
-- scan one plan without a disable penalty — the ordered index scan of
-- messages_claim_idx under LockRows and Limit, reading only as many index entries
-- as it needs; every other statement goes by primary key). The two probes per
-- candidate end in `offset 0` so they stay per-row index probes (opt_outs_pkey,
-- campaign_targets_msisdn_idx).
create or replace function app.claim_channel_messages(
  channel_id uuid,
  max_messages integer,
  lease_seconds integer,
  worker text,
  at timestamptz default null,
  wait boolean default true
) returns json
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
  claimed json;
begin
  if wait then
    select * into channel from app.channels c where c.id = claim_channel_messages.channel_id for update;
  else
    select * into channel from app.channels c where c.id = claim_channel_messages.channel_id
    for update skip locked;
  end if;
  if not found or channel.status <> 'active' then
    return '[]'::json;
  end if;

  t := greatest(coalesce(at, clock_timestamp()), channel.refilled_at);
  available := least(channel.burst,
    channel.tokens + extract(epoch from t - channel.refilled_at) * channel.rate_per_minute / 60.0);
  take := least(floor(available)::integer, max_messages);
  if take < 1 then
    return '[]'::json;  -- the bucket refills lazily: nothing to store
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
  -- json (text), not jsonb: built in one pass, several times cheaper for a batch.
  select coalesce(json_agg(l order by l.message_id), '[]'::json) into claimed
  from (
    select x.id as message_id, x.campaign_id, x.channel_id, channel.phone_number_id as phone_number_id,
           x.to_msisdn as "to", x.template_name, x.template_language, x.body_parameters,
           x.attempts as attempt, x.lease_owner, x.lease_expires_at
    from leased x
  ) l;
  return claimed;
end;
$$;

comment on function app.claim_channel_messages is
  'Token-bucket claim for one channel (lock the channel row, refill, take ≤ floor(tokens) with SKIP LOCKED), one statement after the lock.';

-- 5. Report -------------------------------------------------------------------------
-- The dispatcher's verdict per claimed message, applied in one UPDATE from the
-- JSON array. Only the current lease holder's report counts: the row must still be
-- leased to `worker`; anything else (the lease expired and was reclaimed, or
-- another worker holds it now) is stale, ignored and counted.
--   sent    → sent (wamid required); pending webhook statuses for it are applied.
--   failed  → failed (permanent: the message will not be retried).
--   retry   → queued again at now() + greatest(retry_after_seconds, backoff)
--             (app.backoff_seconds: full jitter over 4^attempt s, cap 900 s),
--             or dead when attempts ≥ max_attempts; held / cancelled if the
--             campaign was paused / cancelled meanwhile.
create or replace function api.report_message_results(results jsonb, worker text) returns jsonb
language plpgsql
security definer
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
  bad record;
  counts record;
  all_valid boolean := false;
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

  -- One pass over the items: each one's fields, typed, and whether it is valid
  -- (message_id 1 to 18 digits, as a number or a string; outcome sent|retry|failed;
  -- sent has a wamid string of 1 to 200 characters; retry_after_seconds a number;
  -- error_code a string or number; error_message a string). The update runs only
  -- when every item is valid and no message id or sent wamid repeats; otherwise
  -- nothing is written and the query below names the first bad item.
  -- jsonb_to_recordset needs objects, so anything else is refused first.
  if not jsonb_path_exists(results, 'strict $[*] ? (@.type() != "object")') then
    with items as materialized (
      select r.message_id as message_key, r.outcome,
             case when r.outcome = 'sent' then r.wamid #>> '{}' end as sent_wamid,
             left(r.error_code #>> '{}', 100) as error_code,
             left(r.error_message #>> '{}', 1000) as error_message,
             r.retry_after_seconds,
             coalesce(length(r.message_id) between 1 and 18 and ltrim(r.message_id, '0123456789') = ''
               and case r.outcome
                     when 'sent' then jsonb_typeof(r.wamid) = 'string' and length(r.wamid #>> '{}') between 1 and 200
                     when 'retry' then true
                     when 'failed' then true
                     else false
                   end
               and (r.retry_after_seconds is null or jsonb_typeof(r.retry_after_seconds) in ('number', 'null'))
               and (r.error_code is null or jsonb_typeof(r.error_code) in ('string', 'number', 'null'))
               and (r.error_message is null or jsonb_typeof(r.error_message) in ('string', 'null')),
               false) as valid
      from jsonb_to_recordset(results) as r(message_id text, outcome text, wamid jsonb, error_code jsonb,
                                            error_message jsonb, retry_after_seconds jsonb)
    ), typed as materialized (
      -- Casts only what was validated, so a bad item can never fail a cast.
      select case when i.valid then i.message_key::bigint end as message_id,
             case when i.valid and jsonb_typeof(i.retry_after_seconds) = 'number'
                  then greatest(0, least((i.retry_after_seconds #>> '{}')::numeric, 86400)) else 0 end
               as retry_after,
             i.*
      from items i
    ), verdict as (
      select coalesce(bool_and(t.valid), true) and count(*) = count(distinct t.message_key)
             and count(t.sent_wamid) = count(distinct t.sent_wamid) as ok
      from typed t
    ), applied as (
      update app.messages m
      set status = case
            when i.outcome = 'sent' then 'sent'
            when i.outcome = 'failed' then 'failed'
            when m.attempts >= m.max_attempts then 'dead'
            -- Back to the queue while the campaign dispatches, held while it is paused.
            else (select case when c.status = 'dispatching' then 'queued'
                              when c.status in ('paused', 'scheduled') then 'held'
                              else 'cancelled' end
                  from app.campaigns c where c.id = m.campaign_id)
          end,
          wamid = case when i.outcome = 'sent' then i.sent_wamid else m.wamid end,
          sent_at = case when i.outcome = 'sent' then now() else m.sent_at end,
          failed_at = case when i.outcome = 'failed' or (i.outcome = 'retry' and m.attempts >= m.max_attempts)
                           then now() else m.failed_at end,
          cancelled_at = case when i.outcome = 'retry' and m.attempts < m.max_attempts
                               and (select c.status from app.campaigns c where c.id = m.campaign_id)
                                   not in ('dispatching', 'paused', 'scheduled')
                              then now() else m.cancelled_at end,
          next_attempt_at = case when i.outcome = 'retry'
            then now() + make_interval(secs => greatest(i.retry_after, app.backoff_seconds(m.attempts)))
            else m.next_attempt_at end,
          last_error_code = case when i.outcome = 'sent' then null else coalesce(i.error_code, 'unknown') end,
          last_error_message = case when i.outcome = 'sent' then null else i.error_message end,
          lease_owner = null,
          lease_expires_at = null
      from typed i
      -- By primary key only: lease_owner is set exactly while a message is leased
      -- (messages_lease_fields), so this is "still leased to this worker".
      where (select v.ok from verdict v)
        and m.id = any (array(select t.message_id from typed t))
        and m.id = i.message_id
        and m.lease_owner = report_message_results.worker
      returning m.id, m.status, m.wamid, m.voucher_id
    ), voided as (
      update app.vouchers v
      set status = 'void', voided_at = now(), void_reason = 'Campaign cancelled before the message was sent.'
      from applied a
      where a.status = 'cancelled' and v.id = a.voucher_id and v.status = 'issued'
    )
    select (select v.ok from verdict v) as ok,
           count(*) as applied,
           count(*) filter (where a.status = 'sent') as sent,
           count(*) filter (where a.status in ('queued', 'held')) as retried,
           count(*) filter (where a.status = 'failed') as failed,
           count(*) filter (where a.status = 'dead') as dead,
           count(*) filter (where a.status = 'cancelled') as cancelled,
           array_agg(a.wamid) filter (where a.status = 'sent') as wamids
      into counts
    from applied a;
    all_valid := counts.ok;
  end if;

  if not all_valid then
    select s.idx, s.reason into bad
    from (
      select x.i - 1 as idx, case
        when jsonb_typeof(x.e) <> 'object' then 'not_an_object'
        when coalesce(x.e ->> 'message_id', '') !~ '^[0-9]{1,18}$' then 'invalid_message_id'
        when jsonb_typeof(x.e -> 'outcome') is distinct from 'string'
          or x.e ->> 'outcome' not in ('sent', 'retry', 'failed') then 'invalid_outcome'
        when x.e ->> 'outcome' = 'sent' and (jsonb_typeof(x.e -> 'wamid') is distinct from 'string'
          or length(x.e ->> 'wamid') not between 1 and 200) then 'wamid_required'
        when coalesce(jsonb_typeof(x.e -> 'retry_after_seconds'), 'null') not in ('number', 'null')
          then 'invalid_retry_after_seconds'
        when coalesce(jsonb_typeof(x.e -> 'error_code'), 'null') not in ('string', 'number', 'null')
          or coalesce(jsonb_typeof(x.e -> 'error_message'), 'null') not in ('string', 'null')
          then 'invalid_error'
        when count(*) over (partition by x.e ->> 'message_id') > 1 then 'duplicate_message_id'
        when x.e ->> 'outcome' = 'sent' and count(*) over (partition by x.e ->> 'wamid', x.e ->> 'outcome') > 1
          then 'duplicate_wamid'
      end as reason
      from jsonb_array_elements(results) with ordinality as x(e, i)
    ) s
    where s.reason is not null
    order by s.idx
    limit 1;
    perform app.raise_error('invalid_results',
      format('Result %s is invalid: %s.', coalesce(bad.idx::text, '?'), coalesce(bad.reason, 'invalid')), 400,
      jsonb_build_object('index', bad.idx, 'reason', bad.reason));
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
    'cancelled', counts.cancelled);
end;
$$;
