-- Dispatch at account level: the claim honours the channel circuit breaker, the
-- effective (AIMD) rate and the portfolio's messaging tier; the report and the
-- status webhooks classify every WhatsApp error by scope (app.waba_error_rules)
-- and act on it; statuses are matched by our own message id, which the dispatcher
-- sends as biz_opaque_callback_data and WhatsApp echoes in status webhooks.
--
-- Returned messages that did not spend an attempt. A send refused for a reason
-- that is not the message's own — the channel or account is restricted, the
-- template paused, the number throttled (rules with action throttle,
-- pause_channel or pause_template), or a claimed message the dispatcher never
-- sent — is reported (or reclassified here) as `deferred`: it goes back exactly
-- like a retry (app.returned_message_status) but its claim is refunded
-- (attempts - 1, so it can never become dead that way) and it waits no backoff.
--
-- Statuses by our id. A status names the message by biz_opaque_callback_data (our
-- message id, a primary key probe); a status without it is matched through its
-- recipient_id (campaign_targets_msisdn_idx) and wamid. So a status can be applied
-- before the report stores the wamid: the parking lot of early statuses
-- (app.pending_waba_statuses) and the unique wamid index the report path had to
-- maintain are dropped. A status proves the send happened, so it also moves a
-- message that was waiting to be retried, was recorded unknown (its lease expired,
-- or it timed out and its campaign was then cancelled) or dead forward to sent,
-- delivered or read (monotonic, as before); the late report of that send is then
-- stale, as any report whose lease is gone.

-- Statuses: the parking lot and the wamid index go -------------------------------------------

drop table app.pending_waba_statuses;
drop index app.messages_wamid_key;

comment on column app.messages.attempts is
  'Claims that spent an attempt (a deferred claim — refused for the channel''s, account''s or template''s sake, or never sent — is refunded); at max_attempts a retry becomes dead.';

comment on column app.messages.wamid is
  'WhatsApp message id of the send that succeeded (from the report, or from a status webhook that came first).';

-- Error effects ----------------------------------------------------------------------------------
-- What the error rules do beyond the message, shared by the report and the status
-- webhooks: `effects` is a JSON array of {channel_id, action, reason,
-- cooldown_seconds, error_code, error_message, template_name, template_language},
-- one per channel and rule (the caller deduplicates).
create function app.apply_error_effects(effects jsonb) returns void
language plpgsql
set search_path = ''
as $$
declare
  e record;
begin
  for e in
    select * from jsonb_to_recordset(effects) as x(channel_id uuid, action text, reason text,
                                                   cooldown_seconds integer, error_code text, error_message text,
                                                   template_name text, template_language text)
    order by x.channel_id, x.action, x.reason
  loop
    if e.action = 'throttle' then
      perform app.throttle_channel(e.channel_id);
    elsif e.action = 'pause_channel' then
      perform app.pause_channel(e.channel_id, e.reason,
        case when e.cooldown_seconds is not null then now() + make_interval(secs => e.cooldown_seconds) end,
        e.error_code, e.error_message);
    elsif e.action = 'pause_template' then
      perform app.pause_template_campaigns(e.channel_id,
        (select c.waba_id from app.channels c where c.id = e.channel_id),
        e.template_name, e.template_language, e.reason, e.error_message);
    end if;
  end loop;
end;
$$;

comment on function app.apply_error_effects is
  'Applies error-rule effects: throttle a channel (AIMD), pause a channel (circuit breaker), pause a template''s campaigns.';

-- Claim --------------------------------------------------------------------------------------------
-- As before (the channel row lock first, the token bucket, the candidate scan, the
-- spacing guard, opt-outs stopped at claim, one statement after the lock), and:
--
-- Circuit breaker: a paused channel gives nothing, except that a temporary pause
-- whose paused_until has passed ends here, under the same lock.
--
-- Effective rate: the bucket refills at effective_rate_per_minute when AIMD has
-- lowered it, and holds proportionally fewer tokens (app.effective_burst).
--
-- Messaging tier: when the channel's portfolio has a finite limit, the portfolio
-- row is locked too (after the channel's: every claimer takes them in that order),
-- so the claims of all its channels serialise around the tier. Per candidate one
-- more primary-key probe (app.portfolio_recipients) says whether its recipient is
-- already counted in the rolling window; the window's usage is a sum over at most
-- 289 five-minute buckets (app.portfolio_usage). A claim leases every candidate
-- whose recipient is already counted, and new recipients only up to what the tier
-- has left; the others wait (next_attempt_at) until the oldest counted bucket
-- leaves the window. Leased recipients are recorded in the same statement: each
-- counts once, in the bucket of its latest claim. With an unlimited tier none of
-- this runs (no lock, no probe, no write).
create or replace function app.claim_channel_messages(
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
-- The planner settings of 20261205000100_claim_planner_settings, restated: a
-- create or replace takes the function's settings from its own SET list.
set enable_bitmapscan = off
set enable_sort = off
set jit = off
as $$
declare
  channel app.channels;
  t timestamptz;
  rate numeric;
  available numeric;
  take integer;
  dispatching uuid[];
  spacing interval;
  spacing_campaign uuid;           -- app.channel_spacing, as the last claim left it
  spacing_other_at timestamptz;
  unprobed_campaign uuid;          -- candidates of this campaign need no spacing probe
  tier_limit integer;              -- the portfolio's messaging limit; null = unlimited (nothing tracked)
  window_start timestamptz;        -- the rolling 24 h window's first bucket
  tier_used integer;
  tier_remaining integer;          -- new recipients this claim may add
  tier_free_at timestamptz;        -- when the oldest counted bucket leaves the window
begin
  if wait then
    select * into channel from app.channels c where c.id = claim_channel_messages.channel_id for update;
  else
    select * into channel from app.channels c where c.id = claim_channel_messages.channel_id
    for update skip locked;
  end if;
  if not found then
    return;
  end if;

  t := greatest(coalesce(at, clock_timestamp()), channel.refilled_at);
  if channel.status <> 'active' then
    if channel.paused_until is null or channel.paused_until > t then
      return;
    end if;
    perform app.resume_channel(channel.id, 'auto', t);
  end if;

  rate := coalesce(channel.effective_rate_per_minute, channel.rate_per_minute);
  available := least(app.effective_burst(channel.burst, channel.rate_per_minute, channel.effective_rate_per_minute),
    channel.tokens + extract(epoch from t - channel.refilled_at) * rate / 60.0);
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

  select p.messaging_limit into tier_limit from app.portfolios p where p.id = channel.portfolio_id;
  if tier_limit is not null then
    select p.messaging_limit into tier_limit from app.portfolios p where p.id = channel.portfolio_id for update;
    window_start := app.tier_window_start(t);
    select coalesce(sum(u.recipients), 0)::integer,
           coalesce(min(u.bucket_start) filter (where u.recipients > 0), app.usage_bucket(t))
             + interval '24 hours 5 minutes'
      into tier_used, tier_free_at
    from app.portfolio_usage u
    where u.portfolio_id = channel.portfolio_id and u.bucket_start >= window_start;
    tier_remaining := greatest(0, tier_limit - tier_used);
  end if;

  return query
  with candidates as materialized (
    select m.id, m.to_msisdn, m.next_attempt_at,
           exists (select from app.opt_outs o where o.msisdn = m.to_msisdn offset 0) as opted_out,
           -- The recipient's last claim in this portfolio (tier tracking only).
           case when tier_limit is not null then
             (select r.last_at from app.portfolio_recipients r
              where r.portfolio_id = channel.portfolio_id and r.msisdn = m.to_msisdn offset 0)
           end as prev_at
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
  ), firsts as (
    -- At most one message per recipient in a batch (the first one due); a
    -- recipient is new to the tier when not counted in the window.
    select distinct on (c.to_msisdn) c.id, c.next_attempt_at, c.prev_at,
           tier_limit is not null and (c.prev_at is null or c.prev_at < window_start) as fresh
    from candidates c
    where not c.opted_out
    order by c.to_msisdn, c.next_attempt_at, c.id
  ), ranked as (
    select f.*, case when f.fresh then row_number() over (partition by f.fresh order by f.next_attempt_at, f.id) end
                  as fresh_rank
    from firsts f
  ), leased as (
    update app.messages m
    set status = 'leased', attempts = m.attempts + 1, last_attempt_at = t,
        lease_owner = worker, lease_expires_at = t + make_interval(secs => lease_seconds)
    where m.id = any (array(select r.id from ranked r
                            where not r.fresh or r.fresh_rank <= tier_remaining))  -- by primary key
    returning m.id, m.campaign_id, m.channel_id, m.to_msisdn, m.template_name, m.template_language,
              m.body_parameters, m.attempts, m.lease_owner, m.lease_expires_at
  ), tier_waiting as (
    -- New recipients beyond the tier wait until the window frees a bucket.
    update app.messages m
    set next_attempt_at = greatest(m.next_attempt_at, tier_free_at),
        last_error_code = 'messaging_limit',
        last_error_message = format('The portfolio''s messaging limit (%s unique recipients per 24 h) is reached.',
                                    tier_limit)
    where m.id = any (array(select r.id from ranked r where r.fresh and r.fresh_rank > tier_remaining))
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
  ), recipients as (
    insert into app.portfolio_recipients as r (portfolio_id, msisdn, last_at)
    select channel.portfolio_id, x.to_msisdn, t from leased x where tier_limit is not null
    on conflict on constraint portfolio_recipients_pkey do update set last_at = excluded.last_at
  ), usage_delta as (
    -- Each leased recipient now counts in this claim's bucket, and no longer in
    -- the bucket of its previous claim when that one is still in the window.
    select b.bucket, sum(b.delta)::integer as delta
    from (select app.usage_bucket(t) as bucket, 1 as delta from leased x where tier_limit is not null
          union all
          select app.usage_bucket(r.prev_at), -1
          from leased x join ranked r on r.id = x.id
          where tier_limit is not null and not r.fresh) b
    group by b.bucket
  ), usage_added as (
    insert into app.portfolio_usage as u (portfolio_id, bucket_start, recipients)
    select channel.portfolio_id, d.bucket, d.delta from usage_delta d where d.delta > 0
    on conflict on constraint portfolio_usage_pkey do update set recipients = u.recipients + excluded.recipients
  ), usage_removed as (
    -- A separate UPDATE: an insert's check runs before ON CONFLICT, so a negative
    -- delta cannot go through the upsert. (A bucket's net delta has one sign.)
    update app.portfolio_usage u set recipients = u.recipients + d.delta
    from usage_delta d
    where u.portfolio_id = channel.portfolio_id and u.bucket_start = d.bucket and d.delta < 0
  )
  select x.id, x.campaign_id, x.channel_id, channel.phone_number_id, x.to_msisdn::text, x.template_name,
         x.template_language, x.body_parameters, x.attempts, x.lease_owner, x.lease_expires_at
  from leased x
  order by x.id;
end;
$$;

comment on function app.claim_channel_messages is
  'Token-bucket claim for one channel (lock the channel row, auto-resume a due pause, refill at the effective rate, take ≤ floor(tokens) with SKIP LOCKED, within the portfolio''s messaging tier), one statement after the locks; returns the leased messages.';

-- The time-injectable claim: one channel (waiting for its lock), or, with a null
-- channel_id, the active channels — and those whose temporary pause has ended —
-- that have due messages, oldest due first, skipping channels another claimer
-- holds right now.
create or replace function app.claim_messages_at(
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
    where (c.status = 'active' or c.paused_until <= coalesce(at, clock_timestamp()))
      and q.oldest <= coalesce(at, clock_timestamp())
    order by q.oldest
  loop
    return query select * from app.claim_channel_messages(ch, max_messages - claimed, lease_seconds, worker, at, false);
    get diagnostics n = row_count;
    claimed := claimed + n;
    exit when claimed >= max_messages;
  end loop;
end;
$$;

-- Report -------------------------------------------------------------------------------------------
-- As before (one validator, only the lease holder's report counts, one UPDATE),
-- with:
--   deferred → returned like a retry (app.returned_message_status), the claim
--              refunded (attempts - 1), due again after retry_after_seconds only.
--   a retry or failed whose error rule is throttle, pause_channel or
--              pause_template is deferred too: the rule is the database's, so a
--              dispatcher with an older copy of the rules cannot burn attempts.
--   waba_code, waba_subcode (optional integers): the Graph error, looked up in
--              app.waba_error_rules (else the digits of a `waba_<code>` error_code).
--   a sent report for a message a status webhook already recorded (same wamid;
--              the webhook often beats the batched report now that statuses find
--              their message by our id) counts as applied and sent, not stale.
-- Then the rules' effects (app.apply_error_effects: pause the channel, pause the
-- template's campaigns, halve the effective rate) and, for channels that sent
-- without being throttled in this report, the AIMD increase. The early-status
-- lookup is gone (statuses find their message by id).
create or replace function api.report_message_results(results jsonb, worker text) returns jsonb
language plpgsql
security definer
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
  counts record;
  bad_index bigint;
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
           r.retry_after_seconds, r.maybe_sent, r.waba_code, r.waba_subcode,
           -- The first thing wrong with the item, or null.
           case
             when not coalesce(length(r.message_id) between 1 and 18
                               and ltrim(r.message_id, '0123456789') = '', false) then 'invalid_message_id'
             when r.outcome is null or r.outcome not in ('sent', 'retry', 'failed', 'deferred') then 'invalid_outcome'
             when r.outcome = 'sent' and (jsonb_typeof(r.wamid) is distinct from 'string'
                                          or length(r.wamid #>> '{}') not between 1 and 200) then 'wamid_required'
             when coalesce(jsonb_typeof(r.retry_after_seconds), 'null') not in ('number', 'null')
               then 'invalid_retry_after_seconds'
             when coalesce(jsonb_typeof(r.error_code), 'null') not in ('string', 'number', 'null')
               or coalesce(jsonb_typeof(r.error_message), 'null') not in ('string', 'null') then 'invalid_error'
             when coalesce(jsonb_typeof(r.waba_code), 'null') not in ('number', 'null')
               or coalesce(jsonb_typeof(r.waba_subcode), 'null') not in ('number', 'null')
               or coalesce((r.waba_code #>> '{}') !~ '^[0-9]{1,9}$', false)
               or coalesce((r.waba_subcode #>> '{}') !~ '^[0-9]{1,9}$', false) then 'invalid_waba_code'
             when coalesce(jsonb_typeof(r.maybe_sent), 'null') not in ('boolean', 'null') then 'invalid_maybe_sent'
           end as field_error
    from rows from (jsonb_to_recordset(results) as (message_id text, outcome text, wamid jsonb,
                                                     error_code jsonb, error_message jsonb,
                                                     retry_after_seconds jsonb, maybe_sent jsonb,
                                                     waba_code jsonb, waba_subcode jsonb))
         with ordinality as r(message_id, outcome, wamid, error_code, error_message, retry_after_seconds,
                              maybe_sent, waba_code, waba_subcode, idx)
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
  ), ruled as materialized (
    -- Casts only what was checked, so a bad item can never fail a cast. The error
    -- rule is looked up for failures only.
    select c.message_key::bigint as message_id, c.outcome as reported, c.sent_wamid, c.error_code,
           c.error_message,
           case when jsonb_typeof(c.retry_after_seconds) = 'number'
                then greatest(0, least((c.retry_after_seconds #>> '{}')::numeric, 86400)) else 0 end
             as retry_after,
           coalesce((c.maybe_sent #>> '{}')::boolean, false) as maybe_sent,
           case when c.outcome <> 'sent' then
             app.waba_error_rule(app.waba_code_of(c.waba_code, c.error_code),
                                 (c.waba_subcode #>> '{}')::integer)
           end as er
    from checked c
    where (select v.bad_idx from verdict v) is null
  ), typed as (
    select r.message_id, r.sent_wamid, r.error_code, r.error_message, r.retry_after, r.maybe_sent,
           (r.er).action as rule_action, (r.er).reason as rule_reason, (r.er).cooldown_seconds as rule_cooldown,
           case when r.reported <> 'sent' and (r.er).action in ('throttle', 'pause_channel', 'pause_template')
                then 'deferred' else r.reported end as outcome
    from ruled r
  ), decided as (
    -- Where a returned message goes depends on the message and its campaign: read
    -- only for returns. A deferred message is judged on its attempts before this claim.
    select i.*,
           case i.outcome
             when 'sent' then 'sent'
             when 'failed' then 'failed'
             else (select app.returned_message_status(
                            m.attempts - case when i.outcome = 'deferred' then 1 else 0 end, m.max_attempts,
                            (select k.status from app.campaigns k where k.id = m.campaign_id),
                            m.maybe_sent or i.maybe_sent)
                   from app.messages m where m.id = i.message_id)
           end as next_status
    from typed i
  ), applied as (
    update app.messages m
    set status = i.next_status,
        attempts = case when i.outcome = 'deferred' then m.attempts - 1 else m.attempts end,
        wamid = case when i.outcome = 'sent' then i.sent_wamid else m.wamid end,
        maybe_sent = m.maybe_sent or i.maybe_sent,
        sent_at = case when i.outcome = 'sent' then now() else m.sent_at end,
        failed_at = case when i.next_status in ('failed', 'dead') then now() else m.failed_at end,
        cancelled_at = case when i.next_status = 'cancelled' then now() else m.cancelled_at end,
        next_attempt_at = case i.outcome
          when 'retry' then now() + make_interval(secs => greatest(i.retry_after, app.backoff_seconds(m.attempts)))
          when 'deferred' then now() + make_interval(secs => i.retry_after)
          else m.next_attempt_at end,
        last_error_code = case i.next_status
          when 'sent' then null
          when 'cancelled' then 'campaign_cancelled'
          else coalesce(i.error_code, case when i.outcome = 'deferred' then 'deferred' else 'unknown' end) end,
        last_error_message = case i.next_status
          when 'sent' then null
          when 'cancelled' then app.stop_message_text('campaign_cancelled', false)
          else i.error_message end,
        lease_owner = null,
        lease_expires_at = null
    from decided i
    -- By primary key only: lease_owner is set exactly while a message is leased
    -- (messages_lease_fields), so this is "still leased to this worker".
    where m.id = any (array(select t.message_id from decided t))
      and m.id = i.message_id
      and m.lease_owner = report_message_results.worker
    returning m.id, m.status, m.channel_id, i.outcome, i.rule_action
  ), confirmed as (
    -- A send a status webhook recorded first (the lease is gone, the wamid is the
    -- same). Only sent items the update did not apply are looked at: usually none,
    -- so a report costs no extra probe.
    select m.id, m.channel_id
    from (select d.message_id, d.sent_wamid from decided d
          where d.outcome = 'sent' and not exists (select from applied a where a.id = d.message_id)) d
    join app.messages m on m.id = d.message_id
    where m.wamid = d.sent_wamid and m.status in ('sent', 'delivered', 'read', 'failed')
  )
  select v.bad_idx, v.bad_reason,
         t.applied + (select count(*) from confirmed) as applied,
         t.sent + (select count(*) from confirmed) as sent,
         t.retried, t.deferred, t.failed, t.dead, t.unknown, t.cancelled,
         -- The rules' effects, one per channel and rule (the rest of the item from
         -- `decided`: only rows with an effect pay for it).
         case when t.with_effect > 0 then (select jsonb_agg(e) from (
            select distinct on (a.channel_id, d.rule_action, d.rule_reason, m.template_name, m.template_language)
                   a.channel_id, d.rule_action as action, d.rule_reason as reason,
                   d.rule_cooldown as cooldown_seconds, d.error_code, d.error_message, m.template_name,
                   m.template_language
            from applied a
            join decided d on d.message_id = a.id
            join app.messages m on m.id = a.id
            where a.rule_action in ('throttle', 'pause_channel', 'pause_template')
            order by a.channel_id, d.rule_action, d.rule_reason, m.template_name, m.template_language) e)
         end as effects,
         -- Channels AIMD has slowed that sent without being throttled in this
         -- report (a primary-key probe per channel; usually none qualifies, and
         -- then no further statement runs).
         (select array_agg(distinct x.channel_id)
          from (select a.channel_id from applied a where a.status = 'sent'
                union all select c.channel_id from confirmed c) x
          join app.channels ch on ch.id = x.channel_id
          where ch.effective_rate_per_minute is not null
            and not exists (select from applied b where b.channel_id = x.channel_id and b.rule_action = 'throttle'))
           as sent_channels
    into counts
  from verdict v,
       -- One pass over the applied rows for every count.
       lateral (select count(*) as applied,
                       count(*) filter (where a.status = 'sent') as sent,
                       count(*) filter (where a.outcome = 'retry' and a.status in ('queued', 'held')) as retried,
                       count(*) filter (where a.outcome = 'deferred' and a.status in ('queued', 'held')) as deferred,
                       count(*) filter (where a.status = 'failed') as failed,
                       count(*) filter (where a.status = 'dead') as dead,
                       count(*) filter (where a.status = 'unknown') as unknown,
                       count(*) filter (where a.status = 'cancelled') as cancelled,
                       count(*) filter (where a.rule_action in ('throttle', 'pause_channel', 'pause_template'))
                         as with_effect
                from applied a) t;

  if counts.bad_idx is not null then
    perform app.raise_error('invalid_results', format('Result %s is invalid: %s.', counts.bad_idx, counts.bad_reason),
      400, jsonb_build_object('index', counts.bad_idx, 'reason', counts.bad_reason));
  end if;

  if counts.effects is not null then
    perform app.apply_error_effects(counts.effects);
  end if;
  if counts.sent_channels is not null then
    perform app.recover_channel_rates(counts.sent_channels);
  end if;

  return jsonb_build_object(
    'applied', counts.applied,
    'stale', jsonb_array_length(results) - counts.applied,
    'sent', counts.sent,
    'retried', counts.retried,
    'deferred', counts.deferred,
    'failed', counts.failed,
    'dead', counts.dead,
    'unknown', counts.unknown,
    'cancelled', counts.cancelled);
end;
$$;

-- Statuses -----------------------------------------------------------------------------------------
-- Applies webhook statuses. Each finds its message by our id (message_id, from
-- biz_opaque_callback_data: a primary-key probe) and must carry the wamid of the
-- send it reports, unless no wamid is recorded yet; without an id, by its
-- recipient_id and wamid (the recipient's targets, then their messages). Within
-- one call the highest-ranked status per message wins (failed above read).
-- Monotonic: sent 1 < delivered 2 < read 3, from a message that is sent, or
-- waiting, leased, unknown or dead (rank 0: the status proves the send happened);
-- failed from sent, or from a message with no recorded send when the error rule
-- is not a retry. A failed status's rule then acts as a sync error's would
-- (pause the channel or the template's campaigns, halve the rate); the message
-- itself stays failed — WhatsApp's verdict on that send. Returns {applied,
-- ignored, unknown}: unknown = no message found.
drop function app.apply_waba_statuses(jsonb, boolean);

create function app.apply_waba_statuses(statuses jsonb) returns jsonb
language plpgsql
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
  result record;
begin
  with items as materialized (
    select x.i, x.e ->> 'wamid' as wamid, lower(x.e ->> 'status') as status,
           app.waba_timestamp(x.e -> 'timestamp') as ts,
           left(x.e ->> 'error_code', 100) as error_code, left(x.e ->> 'error_message', 1000) as error_message,
           case when (x.e ->> 'message_id') ~ '^[0-9]{1,18}$' then (x.e ->> 'message_id')::bigint end
             as message_key,
           case when (x.e ->> 'recipient_id') ~ '^\+?[1-9][0-9]{6,14}$'
                then '+' || ltrim(x.e ->> 'recipient_id', '+') end as recipient,
           app.waba_code_of(x.e -> 'waba_code', x.e ->> 'error_code') as waba_code
    from jsonb_array_elements(statuses) with ordinality as x(e, i)
  ), matched as materialized (
    select it.*,
           case it.status when 'sent' then 1 when 'delivered' then 2 when 'read' then 3 when 'failed' then 4 end
             as rank,
           case when it.message_key is not null
                then (select m.id from app.messages m where m.id = it.message_key offset 0)
                else (select m.id from app.campaign_targets t join app.messages m on m.id = t.id
                      where t.msisdn = it.recipient and m.wamid = it.wamid
                      limit 1)
           end as message_id
    from items it
  ), best as materialized (
    select b.*, app.waba_error_rule(b.waba_code, null) as er
    from (select distinct on (mt.message_id) mt.*
          from matched mt
          where mt.rank is not null and mt.message_id is not null
          order by mt.message_id, mt.rank desc, mt.ts desc, mt.i) b
  ), applied as (
    update app.messages m
    set status = b.status,
        wamid = coalesce(m.wamid, b.wamid),
        sent_at = case when b.status <> 'failed' then coalesce(m.sent_at, b.ts) else m.sent_at end,
        delivered_at = case when b.status in ('delivered', 'read') then coalesce(m.delivered_at, b.ts)
                            else m.delivered_at end,
        read_at = case when b.status = 'read' then b.ts else m.read_at end,
        failed_at = case when b.status = 'failed' then b.ts
                         when m.status = 'dead' then null else m.failed_at end,
        last_error_code = case when b.status = 'failed' then coalesce(b.error_code, 'waba_failed')
                               when m.status in ('sent', 'delivered') then m.last_error_code end,
        last_error_message = case when b.status = 'failed' then b.error_message
                                  when m.status in ('sent', 'delivered') then m.last_error_message end,
        lease_owner = null,
        lease_expires_at = null
    from best b
    where m.id = any (array(select b2.message_id from best b2))  -- by primary key
      and m.id = b.message_id
      and (m.wamid is null or m.wamid = b.wamid)
      and ((b.rank between 1 and 3
            and b.rank > case m.status when 'sent' then 1 when 'delivered' then 2 when 'read' then 3
                                       when 'queued' then 0 when 'held' then 0 when 'leased' then 0
                                       when 'unknown' then 0 when 'dead' then 0 else 99 end)
        or (b.status = 'failed'
            and (m.status = 'sent'
                 or (m.wamid is null and m.status in ('queued', 'held', 'leased', 'unknown', 'dead')
                     and coalesce((b.er).action, 'fail') <> 'retry'))))
    returning m.id, m.status, m.channel_id, m.template_name, m.template_language, (b.er).action as rule_action,
              (b.er).reason as rule_reason, (b.er).cooldown_seconds as rule_cooldown, b.error_code, b.error_message
  )
  select (select count(*) from applied)::integer as applied,
         ((select count(*) from matched mt where mt.message_id is not null) - (select count(*) from applied))::integer
           as ignored,
         (select count(*) from matched mt where mt.message_id is null)::integer as unknown,
         (select jsonb_agg(e) from (
            select distinct on (a.channel_id, a.rule_action, a.rule_reason, a.template_name, a.template_language)
                   a.channel_id, a.rule_action as action, a.rule_reason as reason,
                   a.rule_cooldown as cooldown_seconds, a.error_code, a.error_message, a.template_name,
                   a.template_language
            from applied a
            where a.status = 'failed' and a.rule_action in ('throttle', 'pause_channel', 'pause_template')
            order by a.channel_id, a.rule_action, a.rule_reason, a.template_name, a.template_language) e)
           as effects
    into result;
  if result.effects is not null then
    perform app.apply_error_effects(result.effects);
  end if;
  return jsonb_build_object('applied', result.applied, 'ignored', result.ignored, 'unknown', result.unknown);
end;
$$;

comment on function app.apply_waba_statuses(jsonb) is
  'Applies webhook statuses by message id (biz_opaque_callback_data) or recipient + wamid: monotonic, proof of a send, failed statuses classified by app.waba_error_rules.';

-- Status items carry, besides wamid and status: message_id (our id, from
-- biz_opaque_callback_data), recipient_id, timestamp, error_code, error_message
-- and waba_code. Optional fields that are not what they should be are ignored
-- (a status is never refused for them: Meta would retry the whole delivery).
create or replace function api.record_waba_statuses(statuses jsonb) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  bad record;
begin
  perform app.authorize(array['service']);
  if jsonb_typeof(statuses) is distinct from 'array' then
    perform app.raise_error('invalid_statuses', 'statuses must be a JSON array.', 400);
  end if;
  if jsonb_array_length(statuses) > 1000 then
    perform app.raise_error('invalid_statuses',
      format('At most 1000 statuses per call, got %s.', jsonb_array_length(statuses)), 400);
  end if;
  select x.i - 1 as idx into bad
  from jsonb_array_elements(statuses) with ordinality as x(e, i)
  where jsonb_typeof(x.e) <> 'object'
     or jsonb_typeof(x.e -> 'wamid') is distinct from 'string'
     or length(x.e ->> 'wamid') not between 1 and 200
     or jsonb_typeof(x.e -> 'status') is distinct from 'string'
  order by x.i
  limit 1;
  if found then
    perform app.raise_error('invalid_statuses',
      format('Status %s needs a "wamid" (1 to 200 characters) and a "status" string.', bad.idx), 400,
      jsonb_build_object('index', bad.idx));
  end if;
  return app.apply_waba_statuses(statuses);
end;
$$;

-- Template status webhooks -----------------------------------------------------------------------
-- message_template_status_update
-- (https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/message_template_status_update):
-- PAUSED, DISABLED, REJECTED and a deletion pause the campaigns sending the
-- template (name and language) through a channel of that WhatsApp Business Account
-- (or one whose WABA is not recorded); APPROVED or REINSTATED resumes the campaigns
-- a template reason paused. Other events (PENDING, FLAGGED, IN_APPEAL, …) change nothing.
-- Idempotent: a repeat finds nothing left to pause or resume.
create function api.record_template_status(
  waba_id text,
  template_name text,
  template_language text,
  event text,
  reason text default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  ev text := upper(trim(event));
  -- Meta's own webhook examples spell some codes with a hyphen (en-US); campaigns
  -- store the template code (en_US).
  language text := replace(trim(template_language), '-', '_');
  pause_reason text;
  n integer := 0;
  action text := 'none';
begin
  perform app.authorize(array['service']);
  if waba_id is null or waba_id !~ '^[0-9]{1,32}$' then
    perform app.raise_error('invalid_template_event', 'waba_id must be the WhatsApp Business Account id (digits).',
      400, jsonb_build_object('field', 'waba_id'));
  end if;
  if template_name is null or not app.is_template_name(template_name) then
    perform app.raise_error('invalid_template_event',
      format('template_name must be a WhatsApp template name, got "%s".', template_name), 400,
      jsonb_build_object('field', 'template_name'));
  end if;
  if language is null or language !~ '^[a-z]{2,3}(_[A-Za-z]{2,4})?$' then
    perform app.raise_error('invalid_template_event',
      format('template_language must be a language code such as en_US, got "%s".', template_language), 400,
      jsonb_build_object('field', 'template_language'));
  end if;
  if ev is null or ev !~ '^[A-Z_]{1,40}$' then
    perform app.raise_error('invalid_template_event', format('event must be a template status such as PAUSED, got "%s".',
      event), 400, jsonb_build_object('field', 'event'));
  end if;

  pause_reason := case ev
    when 'PAUSED' then 'template_paused'
    when 'DISABLED' then 'template_disabled'
    when 'REJECTED' then 'template_rejected'
    when 'PENDING_DELETION' then 'template_removed'
    when 'DELETED' then 'template_removed'
    when 'ARCHIVED' then 'template_removed'
  end;
  if pause_reason is not null then
    n := app.pause_template_campaigns(null, waba_id, template_name, language, pause_reason,
      format('WhatsApp reported template %s (%s) %s%s.', template_name, language, ev,
             case when coalesce(reason, 'NONE') <> 'NONE' then ': ' || left(reason, 500) else '' end), true);
    action := 'paused';
  elsif ev in ('APPROVED', 'REINSTATED') then
    n := app.resume_template_campaigns(waba_id, template_name, language);
    action := 'resumed';
  end if;
  return jsonb_build_object('event', ev, 'action', action, 'campaigns', n);
end;
$$;

revoke execute on function api.record_template_status from public;
grant execute on function api.record_template_status to service_role;

-- Phone number quality webhooks ------------------------------------------------------------------
-- phone_number_quality_update
-- (https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/phone_number_quality_update):
-- the event (FLAGGED, UNFLAGGED, UPGRADE, DOWNGRADE, …) is recorded on the channels
-- with that display number, and the messaging tier — max_daily_conversations_per_business,
-- or the older current_limit — on their portfolios (the tier is the portfolio's since
-- October 2025). Without a matching number, the channels of the WABA are used for
-- the tier. A tier that is not a known limit (TIER_NOT_SET, …) changes nothing.
create function app.tier_from_meta(value text) returns text
language sql immutable parallel safe
set search_path = ''
as $$
  select case
    when app.is_messaging_tier(upper(value)) then upper(value)
    when upper(value) in ('UNLIMITED', 'TIER_UNLIMITED') then 'TIER_UNLIMITED'
    when value = '50' then 'TIER_50'
    when value = '250' then 'TIER_250'
    when value = '1000' then 'TIER_1K'
    when value = '2000' then 'TIER_2K'
    when value = '10000' then 'TIER_10K'
    when value = '100000' then 'TIER_100K'
  end
$$;

create function api.record_phone_number_quality(
  waba_id text,
  display_phone_number text,
  event text,
  current_limit text default null,
  max_daily_conversations text default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  digits text := nullif(regexp_replace(coalesce(display_phone_number, ''), '[^0-9]', '', 'g'), '');
  ev text := upper(trim(event));
  tier text := coalesce(app.tier_from_meta(max_daily_conversations), app.tier_from_meta(current_limit));
  by_number uuid[];
  channel_ids uuid[];
  portfolio uuid;
  portfolios integer := 0;
begin
  perform app.authorize(array['service']);
  if waba_id is not null and waba_id !~ '^[0-9]{1,32}$' then
    perform app.raise_error('invalid_quality_event', 'waba_id must be the WhatsApp Business Account id (digits).',
      400, jsonb_build_object('field', 'waba_id'));
  end if;
  if display_phone_number is not null and coalesce(digits !~ '^[0-9]{6,20}$', true) then
    perform app.raise_error('invalid_quality_event',
      format('display_phone_number must be 6 to 20 digits, got "%s".', display_phone_number), 400,
      jsonb_build_object('field', 'display_phone_number'));
  end if;
  if waba_id is null and digits is null then
    perform app.raise_error('invalid_quality_event', 'A waba_id or a display_phone_number is required.', 400,
      jsonb_build_object('field', 'display_phone_number'));
  end if;
  if ev is null or ev !~ '^[A-Z_]{1,40}$' then
    perform app.raise_error('invalid_quality_event', format('event must be a quality event such as FLAGGED, got "%s".',
      event), 400, jsonb_build_object('field', 'event'));
  end if;

  by_number := array(select c.id from app.channels c
                     where c.display_phone_number = digits
                       and (record_phone_number_quality.waba_id is null or c.waba_id is null
                            or c.waba_id = record_phone_number_quality.waba_id));
  update app.channels c set quality_event = ev, quality_updated_at = now()
  where c.id = any (by_number);
  channel_ids := case when cardinality(by_number) > 0 then by_number
                      else array(select c.id from app.channels c where c.waba_id = record_phone_number_quality.waba_id)
                 end;
  if tier is not null then
    for portfolio in
      select distinct c.portfolio_id from app.channels c
      join app.portfolios p on p.id = c.portfolio_id
      where c.id = any (channel_ids) and p.messaging_tier <> tier
      order by c.portfolio_id
    loop
      perform app.set_portfolio_tier(portfolio, tier, 'webhook');
      portfolios := portfolios + 1;
    end loop;
  end if;
  return jsonb_build_object('event', ev, 'channels', cardinality(by_number), 'messaging_tier', tier,
                            'portfolios_updated', portfolios);
end;
$$;

revoke execute on function api.record_phone_number_quality from public;
grant execute on function api.record_phone_number_quality to service_role;

-- Housekeeping -------------------------------------------------------------------------------------

-- The claim log is kept a day, the lease-reclaim log seven days, tier usage 25
-- hours (the window plus margin); the early-status parking lot is gone.
create or replace function app.purge_dispatch_logs() returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  claims integer;
  reclaims integer;
  recipients integer;
  buckets integer;
begin
  delete from app.dispatch_claims d where d.claimed_at < now() - interval '1 day';
  get diagnostics claims = row_count;
  delete from app.lease_reclaims r where r.reclaimed_at < now() - interval '7 days';
  get diagnostics reclaims = row_count;
  delete from app.portfolio_recipients r where r.last_at < now() - interval '25 hours';
  get diagnostics recipients = row_count;
  delete from app.portfolio_usage u where u.bucket_start < now() - interval '25 hours';
  get diagnostics buckets = row_count;
  return jsonb_build_object('dispatch_claims', claims, 'lease_reclaims', reclaims,
                            'portfolio_recipients', recipients, 'portfolio_usage', buckets);
end;
$$;

comment on function app.purge_dispatch_logs is
  'pg_cron: trims app.dispatch_claims (1 day), app.lease_reclaims (7 days), tier usage (25 hours).';

select cron.schedule('dispatch-resume-channels', '* * * * *', 'select app.resume_due_channels()');

-- Admin views ---------------------------------------------------------------------------------------

-- As before, plus the campaign's pause reason, the channel's pause, effective rate
-- and quality, the portfolio's tier usage, and the messages waiting for the tier.
create or replace function api.campaign_stats(campaign_id uuid) returns jsonb
language plpgsql stable
security definer
set search_path = ''
as $$
declare
  campaign app.campaigns;
  channel app.channels;
  message_counts jsonb;
begin
  perform app.authorize(array['admin', 'service']);
  select * into campaign from app.campaigns c where c.id = campaign_stats.campaign_id;
  if not found then
    perform app.raise_error('campaign_not_found', format('Campaign "%s" does not exist.', campaign_id), 404);
  end if;
  select * into channel from app.channels ch where ch.id = campaign.channel_id;
  -- A message has its target's id: walk the campaign's targets, then the primary key.
  select jsonb_build_object(
           'queued', count(*) filter (where m.status = 'queued'),
           'held', count(*) filter (where m.status = 'held'),
           'leased', count(*) filter (where m.status = 'leased'),
           'sent', count(*) filter (where m.status = 'sent'),
           'delivered', count(*) filter (where m.status = 'delivered'),
           'read', count(*) filter (where m.status = 'read'),
           'failed', count(*) filter (where m.status = 'failed'),
           'dead', count(*) filter (where m.status = 'dead'),
           'unknown', count(*) filter (where m.status = 'unknown'),
           'cancelled', count(*) filter (where m.status = 'cancelled'),
           'sent_last_minute', count(*) filter (where m.sent_at >= now() - interval '1 minute'),
           'waiting_for_tier', count(*) filter (where m.status = 'queued' and m.last_error_code = 'messaging_limit'
                                                  and m.next_attempt_at > now()))
    into message_counts
  from app.campaign_targets t join app.messages m on m.id = t.id
  where t.campaign_id = campaign.id;

  return jsonb_build_object(
    'campaign_id', campaign.id,
    'name', campaign.name,
    'status', campaign.status,
    'pause', app.pause_view(case when campaign.status = 'paused' then coalesce(campaign.pause_reason, 'admin') end)
             || jsonb_build_object('detail', campaign.pause_detail),
    'scheduled_for', campaign.scheduled_for,
    'dispatch_started_at', campaign.dispatch_started_at,
    'completed_at', campaign.completed_at,
    'dispatch_error', campaign.dispatch_error,
    'targets', (select count(*) from app.campaign_targets t where t.campaign_id = campaign.id),
    'targets_pending_enqueue', (select count(*) from app.campaign_targets t
                                where t.campaign_id = campaign.id and t.id > campaign.enqueue_cursor),
    'vouchers', (select jsonb_build_object(
                   'issued', count(*) filter (where s = 'issued'),
                   'redeemed', count(*) filter (where s = 'redeemed'),
                   'void', count(*) filter (where s = 'void'),
                   'expired', count(*) filter (where s = 'expired'))
                 from (select case when v.status = 'issued' and v.expires_at <= now() then 'expired'
                                   else v.status end as s
                       from app.vouchers v where v.campaign_id = campaign.id) vs),
    'messages', message_counts - 'sent_last_minute' - 'waiting_for_tier',
    'waiting_for_tier', (message_counts ->> 'waiting_for_tier')::integer,
    'sent_last_minute', (message_counts ->> 'sent_last_minute')::integer,
    'channel', case when channel.id is null then null else jsonb_build_object(
      'id', channel.id, 'phone_number_id', channel.phone_number_id, 'display_name', channel.display_name,
      'status', channel.status, 'rate_per_minute', channel.rate_per_minute, 'burst', channel.burst,
      'effective_rate_per_minute', channel.effective_rate_per_minute,
      'pause', app.pause_view(case when channel.status = 'paused' then coalesce(channel.pause_reason, 'admin') end)
               || jsonb_build_object('paused_at', channel.paused_at, 'paused_until', channel.paused_until,
                                     'error_code', channel.pause_error_code,
                                     'error_message', channel.pause_error_message),
      'quality_event', channel.quality_event,
      'portfolio', (select app.portfolio_usage_view(p) from app.portfolios p where p.id = channel.portfolio_id),
      'claimed_last_minute', (select coalesce(sum(d.messages), 0) from app.dispatch_claims d
                              where d.channel_id = channel.id and d.claimed_at >= now() - interval '1 minute'))
    end
  );
end;
$$;

-- Queue health per channel: as before, plus its pause (reason, until, what to do),
-- effective rate, quality and portfolio tier usage.
create or replace function api.queue_health() returns jsonb
language plpgsql stable
security definer
set search_path = ''
as $$
begin
  perform app.authorize(array['admin', 'service']);
  return jsonb_build_object(
    'generated_at', now(),
    'channels', (
      select coalesce(jsonb_agg(jsonb_build_object(
        'channel_id', c.id,
        'phone_number_id', c.phone_number_id,
        'display_name', c.display_name,
        'status', c.status,
        'pause', app.pause_view(case when c.status = 'paused' then coalesce(c.pause_reason, 'admin') end)
                 || jsonb_build_object('paused_at', c.paused_at, 'paused_until', c.paused_until,
                                       'error_code', c.pause_error_code, 'error_message', c.pause_error_message),
        'rate_per_minute', c.rate_per_minute,
        'effective_rate_per_minute', c.effective_rate_per_minute,
        'burst', c.burst,
        'tokens', floor(least(app.effective_burst(c.burst, c.rate_per_minute, c.effective_rate_per_minute),
                              c.tokens + greatest(0, extract(epoch from clock_timestamp() - c.refilled_at))
                                         * coalesce(c.effective_rate_per_minute, c.rate_per_minute) / 60.0)),
        'quality_event', c.quality_event,
        'portfolio', (select app.portfolio_usage_view(p) from app.portfolios p where p.id = c.portfolio_id),
        'queued', q.queued,
        'due', q.due,
        -- Through the channel's campaigns: (campaign_id, status) is indexed, channel_id alone is not.
        'held', (select count(*) from app.messages m
                 where m.campaign_id = any (array(select k.id from app.campaigns k where k.channel_id = c.id))
                   and m.status = 'held'),
        'leased', (select count(*) from app.messages m
                   where m.campaign_id = any (array(select k.id from app.campaigns k where k.channel_id = c.id))
                     and m.status = 'leased'),
        'oldest_due_age_seconds', round(extract(epoch from now() - q.oldest_due)::numeric, 1),
        'claimed_last_minute', (select coalesce(sum(d.messages), 0) from app.dispatch_claims d
                                where d.channel_id = c.id and d.claimed_at >= now() - interval '1 minute'),
        'leases_expired_last_hour', (select coalesce(sum(r.messages), 0) from app.lease_reclaims r
                                     where r.channel_id = c.id and r.reclaimed_at >= now() - interval '1 hour'))
        order by c.display_name, c.id), '[]'::jsonb)
      from app.channels c
      cross join lateral (
        select count(*) as queued,
               count(*) filter (where m.next_attempt_at <= now()) as due,
               min(m.next_attempt_at) filter (where m.next_attempt_at <= now()) as oldest_due
        from app.messages m
        where m.channel_id = c.id and m.status = 'queued'
      ) q
    )
  );
end;
$$;
