-- Channel health: what Meta does to a whole phone number, template or business
-- portfolio, as state the claim and the ops views read.
--
--   business portfolios   Meta's messaging limit (unique recipients per rolling
--                         24 h) is set per business portfolio and shared by all
--                         its numbers (since 2025-10-07:
--                         https://developers.facebook.com/documentation/business-messaging/whatsapp/messaging-limits),
--                         so the tier lives on app.portfolios and every channel
--                         belongs to one. Usage is kept per portfolio in two small
--                         tables the claim probes by key (see the dispatch scopes
--                         migration).
--   channel pause         the circuit breaker: a channel- or account-scope error
--                         pauses the channel with a reason and, when Meta's
--                         restriction is temporary, paused_until (auto-resume);
--                         otherwise an admin resumes it (api.resume_channel) after
--                         fixing the cause. Messages stay queued meanwhile.
--   effective rate        AIMD: 130429 halves the channel's effective rate,
--                         successes raise it back by 5% of the configured rate per
--                         second, never above rate_per_minute; the token bucket
--                         refills at the effective rate.
--   campaign pause reason a template-scope error (or a template webhook) pauses
--                         the campaigns sending that template, with the reason.
--
-- Every change of a channel's pause state goes through app.pause_channel and
-- app.resume_channel, and every automatic campaign pause through
-- app.pause_campaign_row: one statement each, so an audit call can be added there.

-- Business portfolios ------------------------------------------------------------------

-- Meta's tier names (webhooks and Graph fields use them) and their limits; null = unlimited.
create function app.tier_limit(tier text) returns integer
language sql immutable parallel safe
set search_path = ''
as $$
  select case tier
    when 'TIER_50' then 50
    when 'TIER_250' then 250
    when 'TIER_1K' then 1000
    when 'TIER_2K' then 2000
    when 'TIER_10K' then 10000
    when 'TIER_100K' then 100000
  end
$$;

comment on function app.tier_limit(text) is
  'Unique recipients per rolling 24 h for a Meta messaging tier name; null for TIER_UNLIMITED.';

create function app.is_messaging_tier(tier text) returns boolean
language sql immutable parallel safe
set search_path = ''
as $$
  select tier in ('TIER_50', 'TIER_250', 'TIER_1K', 'TIER_2K', 'TIER_10K', 'TIER_100K', 'TIER_UNLIMITED')
$$;

create table app.portfolios (
  id uuid primary key default gen_random_uuid(),
  name text not null check (length(name) between 1 and 200),
  -- New portfolios start at 250 (Meta's default); webhooks and admins move it.
  messaging_tier text not null default 'TIER_250' check (app.is_messaging_tier(messaging_tier)),
  messaging_limit integer generated always as (app.tier_limit(messaging_tier)) stored,
  tier_source text not null default 'admin' check (tier_source in ('admin', 'webhook', 'migration')),
  tier_updated_at timestamptz not null default now(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

comment on table app.portfolios is
  'Meta business portfolios: the messaging tier (unique recipients per rolling 24 h) all their channels share.';
comment on column app.portfolios.messaging_limit is 'Unique recipients per rolling 24 h; null = unlimited.';

alter table app.portfolios enable row level security;

-- Channels that existed before portfolios join this one. Its tier is unlimited so
-- that nothing changes for them until an admin (or Meta's webhook) says otherwise.
insert into app.portfolios (id, name, messaging_tier, tier_source)
values ('00000000-0000-4000-8000-000000000001', 'Default portfolio', 'TIER_UNLIMITED', 'migration');

-- The recipients a portfolio messaged and when last (a claim's time). Kept only
-- while the portfolio's tier is finite; rows older than the window are purged.
-- msisdn is text, not app.e164: it is copied from app.messages, already checked.
create table app.portfolio_recipients (
  portfolio_id uuid not null references app.portfolios (id) on delete cascade,
  msisdn text not null,
  last_at timestamptz not null,
  primary key (portfolio_id, msisdn)
);

comment on table app.portfolio_recipients is
  'Per portfolio (with a finite tier) and recipient: the last claim time. A recipient counts toward the tier while its last claim is in the window.';

alter table app.portfolio_recipients enable row level security;

-- Unique recipients counted per 5-minute bucket of their *last* claim: a recipient
-- messaged again moves from its old bucket to the current one, so the sum of the
-- buckets in the window is the number of distinct recipients in it (rounded up to
-- whole buckets: at most 5 minutes conservative). The claim sums at most 289 rows.
create table app.portfolio_usage (
  portfolio_id uuid not null references app.portfolios (id) on delete cascade,
  bucket_start timestamptz not null,
  recipients integer not null check (recipients >= 0),
  primary key (portfolio_id, bucket_start)
);

comment on table app.portfolio_usage is
  'Per portfolio: distinct recipients whose last claim fell in each 5-minute bucket; the window sum is the tier usage.';

alter table app.portfolio_usage enable row level security;

create function app.usage_bucket(t timestamptz) returns timestamptz
language sql immutable parallel safe
set search_path = ''
as $$
  select pg_catalog.date_bin('5 minutes'::interval, t, '2000-01-01 00:00:00+00'::timestamptz)
$$;

-- The first bucket of the rolling 24 h window ending at t.
create function app.tier_window_start(t timestamptz) returns timestamptz
language sql immutable parallel safe
set search_path = ''
as $$
  select app.usage_bucket(t - interval '24 hours')
$$;

-- Rebuilds a portfolio's usage from the messages its channels attempted in the
-- window. Run when tracking starts (a tier becomes finite) or a channel joins the
-- portfolio, both rare: it walks the targets of the campaigns that can have been
-- attempted in the window (index range scans), never the whole outbox.
create function app.seed_portfolio_usage(portfolio_id uuid, at timestamptz default now()) returns integer
language plpgsql
set search_path = ''
as $$
declare
  window_start timestamptz := app.tier_window_start(at);
  n integer;
begin
  delete from app.portfolio_usage u where u.portfolio_id = seed_portfolio_usage.portfolio_id;
  delete from app.portfolio_recipients r where r.portfolio_id = seed_portfolio_usage.portfolio_id;
  if (select p.messaging_limit from app.portfolios p where p.id = seed_portfolio_usage.portfolio_id) is null then
    return 0;
  end if;
  insert into app.portfolio_recipients (portfolio_id, msisdn, last_at)
  select seed_portfolio_usage.portfolio_id, m.to_msisdn, max(m.last_attempt_at)
  from app.channels ch
  join app.campaigns k on k.channel_id = ch.id
  join app.campaign_targets t on t.campaign_id = k.id
  join app.messages m on m.id = t.id
  where ch.portfolio_id = seed_portfolio_usage.portfolio_id
    and (k.status in ('dispatching', 'paused') or k.completed_at >= window_start or k.cancelled_at >= window_start)
    and m.last_attempt_at >= window_start
  group by m.to_msisdn;
  get diagnostics n = row_count;
  insert into app.portfolio_usage (portfolio_id, bucket_start, recipients)
  select r.portfolio_id, app.usage_bucket(r.last_at), count(*)
  from app.portfolio_recipients r
  where r.portfolio_id = seed_portfolio_usage.portfolio_id
  group by 1, 2;
  return n;
end;
$$;

comment on function app.seed_portfolio_usage is
  'Rebuilds a portfolio''s tier usage from its channels'' messages attempted in the last 24 h (when tracking starts).';

-- Tier usage of a portfolio at t: {messaging_tier, messaging_limit, used, remaining, next_free_at}.
create function app.portfolio_usage_view(portfolio app.portfolios, at timestamptz default now()) returns jsonb
language sql stable
set search_path = ''
as $$
  select pg_catalog.jsonb_build_object(
    'portfolio_id', portfolio.id,
    'name', portfolio.name,
    'messaging_tier', portfolio.messaging_tier,
    'messaging_limit', portfolio.messaging_limit,
    'used_last_24h', case when portfolio.messaging_limit is not null then coalesce(u.used, 0) end,
    'remaining', case when portfolio.messaging_limit is not null
                      then greatest(0, portfolio.messaging_limit - coalesce(u.used, 0)) end,
    'next_free_at', case when portfolio.messaging_limit is not null and coalesce(u.used, 0) >= portfolio.messaging_limit
                         then u.oldest + interval '24 hours 5 minutes' end,
    'tier_source', portfolio.tier_source,
    'tier_updated_at', portfolio.tier_updated_at)
  from (select sum(x.recipients)::integer as used,
               min(x.bucket_start) filter (where x.recipients > 0) as oldest
        from app.portfolio_usage x
        where x.portfolio_id = portfolio.id and x.bucket_start >= app.tier_window_start(at)) u
$$;

-- Changes a portfolio's tier (admin or webhook) and starts or stops tracking.
create function app.set_portfolio_tier(portfolio_id uuid, tier text, source text) returns app.portfolios
language plpgsql
set search_path = ''
as $$
declare
  before app.portfolios;
  after app.portfolios;
begin
  select * into before from app.portfolios p where p.id = set_portfolio_tier.portfolio_id for update;
  update app.portfolios p
  set messaging_tier = tier, tier_source = source, tier_updated_at = now(), updated_at = now()
  where p.id = before.id
  returning * into after;
  if before.messaging_limit is null and after.messaging_limit is not null then
    perform app.seed_portfolio_usage(after.id);
  elsif after.messaging_limit is null then
    delete from app.portfolio_usage u where u.portfolio_id = after.id;
    delete from app.portfolio_recipients r where r.portfolio_id = after.id;
  end if;
  return after;
end;
$$;

create function api.create_portfolio(name text, messaging_tier text default 'TIER_250') returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  portfolio app.portfolios;
begin
  perform app.authorize(array['admin', 'service']);
  if name is null or length(trim(name)) not between 1 and 200 then
    perform app.raise_error('invalid_portfolio', 'A portfolio name of 1 to 200 characters is required.', 400,
      jsonb_build_object('field', 'name'));
  end if;
  if messaging_tier is null or not app.is_messaging_tier(messaging_tier) then
    perform app.raise_error('invalid_portfolio',
      format('messaging_tier must be one of TIER_250, TIER_2K, TIER_10K, TIER_100K, TIER_UNLIMITED (or TIER_50, TIER_1K), got "%s".',
             messaging_tier), 400, jsonb_build_object('field', 'messaging_tier'));
  end if;
  insert into app.portfolios (name, messaging_tier)
  values (trim(create_portfolio.name), create_portfolio.messaging_tier)
  returning * into portfolio;
  return app.portfolio_usage_view(portfolio);
end;
$$;

revoke execute on function api.create_portfolio from public;
grant execute on function api.create_portfolio to authenticated, service_role;

create function api.update_portfolio(portfolio_id uuid, name text default null, messaging_tier text default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  portfolio app.portfolios;
begin
  perform app.authorize(array['admin', 'service']);
  select * into portfolio from app.portfolios p where p.id = update_portfolio.portfolio_id for update;
  if not found then
    perform app.raise_error('portfolio_not_found',
      format('Portfolio "%s" does not exist.', update_portfolio.portfolio_id), 404);
  end if;
  if name is not null and length(trim(name)) not between 1 and 200 then
    perform app.raise_error('invalid_portfolio', 'A portfolio name of 1 to 200 characters is required.', 400,
      jsonb_build_object('field', 'name'));
  end if;
  if messaging_tier is not null and not app.is_messaging_tier(messaging_tier) then
    perform app.raise_error('invalid_portfolio',
      format('messaging_tier must be one of TIER_250, TIER_2K, TIER_10K, TIER_100K, TIER_UNLIMITED (or TIER_50, TIER_1K), got "%s".',
             messaging_tier), 400, jsonb_build_object('field', 'messaging_tier'));
  end if;
  if name is not null then
    update app.portfolios p set name = trim(update_portfolio.name), updated_at = now() where p.id = portfolio.id;
  end if;
  if messaging_tier is not null and messaging_tier <> portfolio.messaging_tier then
    perform app.set_portfolio_tier(portfolio.id, messaging_tier, 'admin');
  end if;
  select * into portfolio from app.portfolios p where p.id = update_portfolio.portfolio_id;
  return app.portfolio_usage_view(portfolio);
end;
$$;

revoke execute on function api.update_portfolio from public;
grant execute on function api.update_portfolio to authenticated, service_role;

create function api.list_portfolios() returns jsonb
language plpgsql stable
security definer
set search_path = ''
as $$
begin
  perform app.authorize(array['admin', 'service']);
  return (select coalesce(jsonb_agg(app.portfolio_usage_view(p)
                                    || jsonb_build_object('channels', (select count(*) from app.channels c
                                                                       where c.portfolio_id = p.id))
                                    order by p.name, p.id), '[]'::jsonb)
          from app.portfolios p);
end;
$$;

revoke execute on function api.list_portfolios from public;
grant execute on function api.list_portfolios to authenticated, service_role;

-- Pause reasons ----------------------------------------------------------------------------
-- What each reason a channel or campaign is paused (or a channel slowed) means and
-- what an operator does about it: list_channels, campaign_stats and queue_health
-- show these sentences, and the README's table is this table.
create table app.pause_reasons (
  reason text primary key check (reason ~ '^[a-z][a-z0-9_]{1,62}$'),
  kind text not null check (kind in ('channel', 'campaign', 'throttle')),
  explanation text not null,
  operator_action text not null
);

comment on table app.pause_reasons is
  'Why a channel or campaign is paused (or a channel slowed), and what the operator does about it.';

alter table app.pause_reasons enable row level security;

insert into app.pause_reasons (reason, kind, explanation, operator_action) values
  ('admin', 'channel', 'An admin paused it (a channel or a campaign).',
   'Resume it with resume_channel or resume_campaign when ready.'),
  ('access_token_expired', 'channel', 'WhatsApp says the access token has expired (190/463).',
   'Renew the system-user token, set WABA_ACCESS_TOKEN (or WABA_ACCESS_TOKEN_<phone_number_id>), then resume_channel.'),
  ('access_token_invalid', 'channel', 'WhatsApp refuses the access token (190), or none is configured.',
   'Check the token in the functions'' secrets and its permissions, then resume_channel.'),
  ('auth_failed', 'channel', 'WhatsApp could not authenticate the app (code 0).',
   'Generate a new token for the system user, update the secret, then resume_channel.'),
  ('permission_denied', 'channel', 'The token lacks a permission the send needs (3, 10, 200-299, 131005).',
   'Grant whatsapp_business_messaging to the system user (WhatsApp Manager / Business settings), then resume_channel.'),
  ('policy_block', 'channel', 'Meta temporarily blocked the account for policy violations (368).',
   'Read the notice in WhatsApp Manager, appeal if needed; resume_channel once Meta lifts the block.'),
  ('account_locked', 'channel', 'The business account is locked (131031).',
   'Resolve the lock with Meta (WhatsApp Manager, Business Support), then resume_channel.'),
  ('payment_issue', 'channel', 'The account has a payment problem (131042).',
   'Fix the payment method in Business settings, then resume_channel.'),
  ('account_maintenance', 'channel', 'The account is in maintenance mode (131057), e.g. during a throughput upgrade.',
   'Nothing: the channel resumes by itself after its cool-down (paused_until).'),
  ('spam_rate_limit', 'channel', 'Meta restricted how many messages this number may send (131048, spam rate limit).',
   'Check the number''s quality in WhatsApp Manager and the campaign''s content and audience; it resumes after its cool-down (paused_until), or resume_channel earlier.'),
  ('phone_number_not_registered', 'channel', 'The phone number is not registered with the Cloud API (133010).',
   'Register the number (POST /{phone_number_id}/register), then resume_channel.'),
  ('phone_number_not_found', 'channel', 'WhatsApp does not know this phone number id, or the token cannot use it (100/33).',
   'Correct the channel''s phone_number_id or the token''s access to its WABA, then resume_channel.'),
  ('throughput_limit', 'throttle', 'WhatsApp answered 130429 (throughput): the channel''s effective rate was halved.',
   'Nothing: it recovers by itself while sends succeed. If it recurs, lower rate_per_minute to the number''s throughput.'),
  ('waba_rate_limit', 'throttle', 'The WhatsApp Business Account hit its rate limit (80007): the effective rate was halved.',
   'Nothing: it recovers by itself. If it recurs, spread campaigns over time.'),
  ('app_rate_limit', 'throttle', 'The app hit its Graph API call limit (4): the effective rate was halved.',
   'Nothing: it recovers by itself. If it recurs, check other users of the app.'),
  ('template_paused', 'campaign', 'Meta paused the template (quality feedback) (132015 or a PAUSED webhook).',
   'Wait for Meta to reinstate it (an APPROVED webhook resumes the campaign), or improve the template and resume_campaign.'),
  ('template_disabled', 'campaign', 'Meta disabled the template (132016 or a DISABLED webhook).',
   'Create a new template; this campaign cannot send: cancel it and create one with the new template.'),
  ('template_rejected', 'campaign', 'Meta rejected the template (a REJECTED webhook).',
   'Edit and resubmit the template; an APPROVED webhook resumes the campaign.'),
  ('template_removed', 'campaign', 'The template was deleted or archived (a PENDING_DELETION or ARCHIVED webhook).',
   'Restore the template or cancel the campaign.'),
  ('template_missing', 'campaign', 'WhatsApp does not know the template in this language (132001).',
   'Create (or get approved) the template in the campaign''s language; an APPROVED webhook resumes the campaign.'),
  ('template_params_mismatch', 'campaign', 'The template expects another number of parameters (132000).',
   'Cancel the campaign and create one whose template_params match the template''s body variables.');

create function app.pause_view(reason text) returns jsonb
language sql stable
set search_path = ''
as $$
  select case when reason is null then null
    else coalesce(
      (select pg_catalog.jsonb_build_object('reason', r.reason, 'explanation', r.explanation,
                                            'operator_action', r.operator_action)
       from app.pause_reasons r where r.reason = pause_view.reason),
      pg_catalog.jsonb_build_object('reason', reason, 'explanation', null, 'operator_action', null))
  end
$$;

-- Channels: portfolio, identity at Meta, pause state, effective rate, quality -----------------

alter table app.channels
  add column portfolio_id uuid not null default '00000000-0000-4000-8000-000000000001'
    references app.portfolios (id),
  -- The WhatsApp Business Account the number belongs to: template and quality
  -- webhooks name it (entry[].id). Optional: without it, only this channel's own
  -- errors act on it.
  add column waba_id text check (waba_id ~ '^[0-9]{1,32}$'),
  -- The number as Meta shows it (digits), for phone_number_quality_update webhooks.
  add column display_phone_number text check (display_phone_number ~ '^[0-9]{6,20}$'),
  add column pause_reason text check (pause_reason ~ '^[a-z][a-z0-9_]{1,62}$'),
  add column paused_at timestamptz,
  -- A pause with paused_until resumes by itself then (the claim and a pg_cron job).
  add column paused_until timestamptz,
  add column pause_error_code text check (length(pause_error_code) <= 100),
  add column pause_error_message text check (length(pause_error_message) <= 1000),
  -- AIMD: null = the configured rate; otherwise the token bucket refills at this rate.
  add column effective_rate_per_minute numeric,
  add column rate_decreased_at timestamptz,
  add column rate_changed_at timestamptz,
  -- The last phone_number_quality_update event (FLAGGED, UNFLAGGED, UPGRADE, DOWNGRADE, …).
  add column quality_event text check (quality_event ~ '^[A-Z_]{1,40}$'),
  add column quality_updated_at timestamptz;

-- Channels paused by an admin before this migration.
update app.channels set pause_reason = 'admin', paused_at = updated_at where status = 'paused';

-- The pause fields describe a pause: set only while paused. (A channel paused by a
-- direct write without a reason reads as an admin's pause.)
alter table app.channels
  add constraint channels_pause_fields check (
    (pause_reason is null and paused_until is null and paused_at is null) or status = 'paused'),
  add constraint channels_effective_rate check (
    effective_rate_per_minute is null or (effective_rate_per_minute > 0 and effective_rate_per_minute <= rate_per_minute));

-- The Cloud API's phone number ids are digits; the send path refuses anything else
-- (functions/_shared/whatsapp.ts), so the database does too. A channel written
-- before this migration with another id could never send: the migration fails on
-- it, loudly, rather than keep a channel that burns every message.
alter table app.channels drop constraint channels_phone_number_id_check;
alter table app.channels add constraint channels_phone_number_id_check check (phone_number_id ~ '^[0-9]{1,32}$');

create index channels_portfolio_id_idx on app.channels (portfolio_id);
create index channels_waba_id_idx on app.channels (waba_id) where waba_id is not null;
create index channels_display_phone_number_idx on app.channels (display_phone_number)
  where display_phone_number is not null;

comment on column app.channels.pause_reason is 'Why the channel is paused (app.pause_reasons); null while active.';
comment on column app.channels.paused_until is 'A temporary pause resumes by itself at this time; null = until resumed.';
comment on column app.channels.effective_rate_per_minute is
  'AIMD: the rate the bucket refills at after 130429 (halved), recovering to rate_per_minute; null = rate_per_minute.';

-- The channel as the API returns it: the row, its pause explained, its portfolio.
create function app.channel_view(c app.channels) returns jsonb
language sql stable
set search_path = ''
as $$
  select pg_catalog.to_jsonb(c) || pg_catalog.jsonb_build_object(
    'pause', app.pause_view(case when c.status = 'paused' then coalesce(c.pause_reason, 'admin') end),
    'portfolio', (select app.portfolio_usage_view(p) from app.portfolios p where p.id = c.portfolio_id))
$$;

-- Pause and resume ----------------------------------------------------------------------------

-- Pauses a channel for `reason` until `until` (null = until resumed). A pause that
-- needs a person wins over a timed one, and a later end over an earlier one, so a
-- burst of errors from the sends in flight leaves the strongest pause. Returns
-- true when the channel's pause state changed.
create function app.pause_channel(
  channel_id uuid,
  reason text,
  until timestamptz default null,
  error_code text default null,
  error_message text default null
) returns boolean
language plpgsql
set search_path = ''
as $$
begin
  update app.channels c
  set status = 'paused',
      pause_reason = pause_channel.reason,
      paused_at = case when c.status = 'active' then now() else c.paused_at end,
      paused_until = pause_channel.until,
      pause_error_code = left(pause_channel.error_code, 100),
      pause_error_message = left(pause_channel.error_message, 1000),
      updated_at = now()
  where c.id = pause_channel.channel_id
    and (c.status = 'active'
         or (c.paused_until is not null
             and (pause_channel.until is null or pause_channel.until > c.paused_until)));
  return found;
end;
$$;

comment on function app.pause_channel is
  'Pauses a channel with a reason (app.pause_reasons) until a time or until resumed; the stronger pause wins.';

-- Resumes a paused channel (an admin, or `auto` when paused_until has passed at
-- `at`, the claim's time). Returns true when it was paused.
create function app.resume_channel(channel_id uuid, resumed_by text default 'admin', at timestamptz default now())
returns boolean
language plpgsql
set search_path = ''
as $$
begin
  update app.channels c
  set status = 'active', pause_reason = null, paused_at = null, paused_until = null,
      pause_error_code = null, pause_error_message = null, updated_at = now()
  where c.id = resume_channel.channel_id and c.status = 'paused'
    and (resumed_by <> 'auto' or c.paused_until <= resume_channel.at);
  return found;
end;
$$;

comment on function app.resume_channel is
  'Resumes a paused channel (resumed_by admin, or auto once paused_until has passed).';

-- pg_cron (every minute): channels whose temporary pause has ended. The claim also
-- resumes a due channel itself, so this only keeps the views current.
create function app.resume_due_channels() returns integer
language plpgsql
set search_path = ''
as $$
declare
  ch uuid;
  n integer := 0;
begin
  for ch in
    select c.id from app.channels c
    where c.status = 'paused' and c.paused_until <= now()
    order by c.id
    for update skip locked
  loop
    if app.resume_channel(ch, 'auto') then
      n := n + 1;
    end if;
  end loop;
  return n;
end;
$$;

comment on function app.resume_due_channels is 'pg_cron: resumes channels whose paused_until has passed.';

-- After fixing what paused a channel (credentials, registration, a block lifted).
-- Idempotent: an active channel is returned as it is.
create function api.resume_channel(channel_id uuid) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  channel app.channels;
begin
  perform app.authorize(array['admin', 'service']);
  select * into channel from app.channels c where c.id = resume_channel.channel_id for update;
  if not found then
    perform app.raise_error('channel_not_found',
      format('Channel "%s" does not exist.', resume_channel.channel_id), 404);
  end if;
  perform app.resume_channel(channel.id, 'admin');
  select * into channel from app.channels c where c.id = resume_channel.channel_id;
  return app.channel_view(channel);
end;
$$;

revoke execute on function api.resume_channel from public;
grant execute on function api.resume_channel to authenticated, service_role;

-- AIMD ---------------------------------------------------------------------------------------------
-- Multiplicative decrease: 130429 (and the other throttle rules) halve the effective
-- rate, at most once a second per channel (the sends in flight when the limit hit
-- report it together), down to rate/64 (at least 1/min). Additive increase: each
-- report with successes adds 5% of the configured rate per second since the last
-- change, at most once a second, back to the configured rate (then null). The
-- factors are our choice: TCP's halving, and a recovery from half rate in ~10 s.

create function app.effective_burst(burst integer, rate_per_minute integer, effective numeric) returns numeric
language sql immutable parallel safe
set search_path = ''
as $$
  select case when effective is null then burst::numeric
              else least(burst, greatest(1, pg_catalog.ceil(burst * effective / rate_per_minute))) end
$$;

comment on function app.effective_burst is 'The bucket size at an effective rate: burst scaled down with the rate.';

create function app.throttle_channel(channel_id uuid, at timestamptz default now()) returns boolean
language plpgsql
set search_path = ''
as $$
begin
  update app.channels c
  set effective_rate_per_minute = r.rate,
      tokens = least(c.tokens, app.effective_burst(c.burst, c.rate_per_minute, r.rate)),
      rate_decreased_at = at,
      rate_changed_at = at
  from (select ch.id,
               round(greatest(greatest(1, ch.rate_per_minute / 64.0),
                              coalesce(ch.effective_rate_per_minute, ch.rate_per_minute) / 2.0), 3) as rate
        from app.channels ch where ch.id = throttle_channel.channel_id) r
  where c.id = r.id
    and (c.rate_decreased_at is null or c.rate_decreased_at <= at - interval '1 second');
  return found;
end;
$$;

comment on function app.throttle_channel is 'AIMD decrease: halves a channel''s effective rate (at most once a second).';

create function app.recover_channel_rates(channel_ids uuid[], at timestamptz default now()) returns integer
language plpgsql
set search_path = ''
as $$
declare
  n integer;
begin
  update app.channels c
  set effective_rate_per_minute = case when r.rate >= c.rate_per_minute then null else r.rate end,
      rate_changed_at = at
  from (select ch.id,
               round(ch.effective_rate_per_minute
                     + ch.rate_per_minute * 0.05 * extract(epoch from at - coalesce(ch.rate_changed_at, at)), 3) as rate
        from app.channels ch
        where ch.id = any (channel_ids) and ch.effective_rate_per_minute is not null) r
  where c.id = r.id
    and c.effective_rate_per_minute is not null
    and (c.rate_changed_at is null or c.rate_changed_at <= at - interval '1 second');
  get diagnostics n = row_count;
  return n;
end;
$$;

comment on function app.recover_channel_rates is
  'AIMD increase: raises throttled channels'' effective rate by 5% of the configured rate per second since the last change.';

-- Channel RPCs, redefined with the portfolio and Meta identifiers ------------------------------
-- (New arguments change the signature, so the old functions are dropped: PostgREST
-- resolves by argument names and must find exactly one of each.)

drop function api.create_channel(text, text, integer, integer, integer);

create function api.create_channel(
  phone_number_id text,
  display_name text,
  rate_per_minute integer default 250,
  burst integer default null,
  min_recipient_interval_seconds integer default 6,
  portfolio_id uuid default null,
  waba_id text default null,
  display_phone_number text default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  channel app.channels;
  bucket integer := coalesce(burst, app.default_burst(rate_per_minute));
  display_digits text := nullif(regexp_replace(coalesce(display_phone_number, ''), '[^0-9]', '', 'g'), '');
begin
  perform app.authorize(array['admin', 'service']);
  if phone_number_id is null or phone_number_id !~ '^[0-9]{1,32}$' then
    perform app.raise_error('invalid_channel',
      format('phone_number_id must be the Cloud API''s numeric phone number id (1 to 32 digits), got "%s".',
             phone_number_id),
      400, jsonb_build_object('field', 'phone_number_id'));
  end if;
  if display_name is null or length(trim(display_name)) not between 1 and 200 then
    perform app.raise_error('invalid_channel', 'A display_name of 1 to 200 characters is required.', 400,
      jsonb_build_object('field', 'display_name'));
  end if;
  if rate_per_minute is null or rate_per_minute <= 0 then
    perform app.raise_error('invalid_channel',
      format('rate_per_minute must be a positive integer, got %s.', coalesce(rate_per_minute::text, 'null')),
      400, jsonb_build_object('field', 'rate_per_minute'));
  end if;
  if bucket <= 0 then
    perform app.raise_error('invalid_channel', format('burst must be a positive integer, got %s.', bucket),
      400, jsonb_build_object('field', 'burst'));
  end if;
  if min_recipient_interval_seconds is null or min_recipient_interval_seconds not between 0 and 86400 then
    perform app.raise_error('invalid_channel',
      'min_recipient_interval_seconds must be between 0 and 86400.', 400,
      jsonb_build_object('field', 'min_recipient_interval_seconds'));
  end if;
  if waba_id is not null and waba_id !~ '^[0-9]{1,32}$' then
    perform app.raise_error('invalid_channel',
      format('waba_id must be the WhatsApp Business Account id (digits), got "%s".', waba_id), 400,
      jsonb_build_object('field', 'waba_id'));
  end if;
  if display_phone_number is not null and coalesce(display_digits !~ '^[0-9]{6,20}$', true) then
    perform app.raise_error('invalid_channel',
      format('display_phone_number must be the number as WhatsApp shows it (6 to 20 digits), got "%s".',
             display_phone_number), 400, jsonb_build_object('field', 'display_phone_number'));
  end if;
  if portfolio_id is not null and not exists (select from app.portfolios p where p.id = create_channel.portfolio_id) then
    perform app.raise_error('portfolio_not_found',
      format('Portfolio "%s" does not exist.', create_channel.portfolio_id), 404);
  end if;

  insert into app.channels as c (phone_number_id, display_name, rate_per_minute, burst,
                                 min_recipient_interval_seconds, tokens, refilled_at, portfolio_id, waba_id,
                                 display_phone_number)
  values (create_channel.phone_number_id, trim(create_channel.display_name), create_channel.rate_per_minute,
          bucket, create_channel.min_recipient_interval_seconds, bucket, clock_timestamp(),
          coalesce(create_channel.portfolio_id, '00000000-0000-4000-8000-000000000001'),
          create_channel.waba_id, display_digits)
  on conflict on constraint channels_phone_number_id_key do nothing
  returning * into channel;
  if channel.id is null then
    perform app.raise_error('channel_exists',
      format('A channel for phone number id "%s" already exists.', create_channel.phone_number_id), 409);
  end if;
  return app.channel_view(channel);
end;
$$;

revoke execute on function api.create_channel from public;
grant execute on function api.create_channel to authenticated, service_role;

-- Null arguments leave a field unchanged ('' clears waba_id and display_phone_number).
-- A new rate or burst takes effect from now: the bucket is first refilled at the old
-- (effective) rate, then capped at the new burst; the effective rate never exceeds
-- the new rate. status 'paused' pauses the channel for an admin (reason admin);
-- 'active' resumes it whatever paused it.
drop function api.update_channel(uuid, text, integer, integer, text, integer);

create function api.update_channel(
  channel_id uuid,
  display_name text default null,
  rate_per_minute integer default null,
  burst integer default null,
  status text default null,
  min_recipient_interval_seconds integer default null,
  portfolio_id uuid default null,
  waba_id text default null,
  display_phone_number text default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  channel app.channels;
  t timestamptz;
  available numeric;
  display_digits text := nullif(regexp_replace(coalesce(display_phone_number, ''), '[^0-9]', '', 'g'), '');
begin
  perform app.authorize(array['admin', 'service']);
  select * into channel from app.channels c where c.id = update_channel.channel_id for update;
  if not found then
    perform app.raise_error('channel_not_found', format('Channel "%s" does not exist.', channel_id), 404);
  end if;
  if display_name is not null and length(trim(display_name)) not between 1 and 200 then
    perform app.raise_error('invalid_channel', 'display_name must be 1 to 200 characters.', 400,
      jsonb_build_object('field', 'display_name'));
  end if;
  if rate_per_minute is not null and rate_per_minute <= 0 then
    perform app.raise_error('invalid_channel',
      format('rate_per_minute must be a positive integer, got %s.', rate_per_minute), 400,
      jsonb_build_object('field', 'rate_per_minute'));
  end if;
  if burst is not null and burst <= 0 then
    perform app.raise_error('invalid_channel', format('burst must be a positive integer, got %s.', burst),
      400, jsonb_build_object('field', 'burst'));
  end if;
  if status is not null and status not in ('active', 'paused') then
    perform app.raise_error('invalid_channel', format('status must be active or paused, got "%s".', status),
      400, jsonb_build_object('field', 'status'));
  end if;
  if min_recipient_interval_seconds is not null and min_recipient_interval_seconds not between 0 and 86400 then
    perform app.raise_error('invalid_channel', 'min_recipient_interval_seconds must be between 0 and 86400.',
      400, jsonb_build_object('field', 'min_recipient_interval_seconds'));
  end if;
  if waba_id is not null and waba_id <> '' and waba_id !~ '^[0-9]{1,32}$' then
    perform app.raise_error('invalid_channel',
      format('waba_id must be the WhatsApp Business Account id (digits), got "%s".', waba_id), 400,
      jsonb_build_object('field', 'waba_id'));
  end if;
  if display_phone_number is not null and display_phone_number <> ''
     and coalesce(display_digits !~ '^[0-9]{6,20}$', true) then
    perform app.raise_error('invalid_channel',
      format('display_phone_number must be the number as WhatsApp shows it (6 to 20 digits), got "%s".',
             display_phone_number), 400, jsonb_build_object('field', 'display_phone_number'));
  end if;
  if portfolio_id is not null and not exists (select from app.portfolios p where p.id = update_channel.portfolio_id) then
    perform app.raise_error('portfolio_not_found',
      format('Portfolio "%s" does not exist.', update_channel.portfolio_id), 404);
  end if;

  t := greatest(clock_timestamp(), channel.refilled_at);
  available := least(app.effective_burst(channel.burst, channel.rate_per_minute, channel.effective_rate_per_minute),
    channel.tokens + extract(epoch from t - channel.refilled_at)
                     * coalesce(channel.effective_rate_per_minute, channel.rate_per_minute) / 60.0);

  update app.channels c set
    display_name = coalesce(trim(update_channel.display_name), c.display_name),
    rate_per_minute = coalesce(update_channel.rate_per_minute, c.rate_per_minute),
    effective_rate_per_minute = case
      when c.effective_rate_per_minute >= coalesce(update_channel.rate_per_minute, c.rate_per_minute) then null
      else c.effective_rate_per_minute end,
    burst = coalesce(update_channel.burst, c.burst),
    min_recipient_interval_seconds =
      coalesce(update_channel.min_recipient_interval_seconds, c.min_recipient_interval_seconds),
    portfolio_id = coalesce(update_channel.portfolio_id, c.portfolio_id),
    waba_id = case when update_channel.waba_id is null then c.waba_id else nullif(update_channel.waba_id, '') end,
    display_phone_number = case when update_channel.display_phone_number is null then c.display_phone_number
                                else display_digits end,
    tokens = least(available, coalesce(update_channel.burst, c.burst)),
    refilled_at = t,
    updated_at = now()
  where c.id = channel.id;

  if update_channel.status = 'paused' then
    perform app.pause_channel(channel.id, 'admin');
  elsif update_channel.status = 'active' then
    perform app.resume_channel(channel.id, 'admin');
  end if;
  if update_channel.portfolio_id is not null and update_channel.portfolio_id <> channel.portfolio_id then
    -- The new portfolio's usage now includes this channel's recent sends.
    perform app.seed_portfolio_usage(update_channel.portfolio_id);
  end if;
  select * into channel from app.channels c where c.id = update_channel.channel_id;
  return app.channel_view(channel);
end;
$$;

revoke execute on function api.update_channel from public;
grant execute on function api.update_channel to authenticated, service_role;

create or replace function api.list_channels() returns jsonb
language plpgsql stable
security definer
set search_path = ''
as $$
begin
  perform app.authorize(array['admin', 'service']);
  return (select coalesce(jsonb_agg(app.channel_view(c) order by c.display_name, c.id), '[]'::jsonb)
          from app.channels c);
end;
$$;

-- Campaign pauses with a reason ------------------------------------------------------------------

alter table app.campaigns
  add column pause_reason text check (pause_reason ~ '^[a-z][a-z0-9_]{1,62}$'),
  add column pause_detail text check (length(pause_detail) <= 1000);

update app.campaigns set pause_reason = 'admin' where status = 'paused';

alter table app.campaigns
  add constraint campaigns_pause_reason check ((pause_reason is null and pause_detail is null) or status = 'paused');

comment on column app.campaigns.pause_reason is
  'Why the campaign is paused: admin, or a template reason (app.pause_reasons); null unless paused.';

-- The same as before, plus: a requested pause is an admin's (pause_reason admin),
-- and leaving paused clears the reason.
create or replace function app.transition_campaign(campaign_id uuid, to_status text) returns app.campaigns
language plpgsql
set search_path = ''
as $$
declare
  campaign app.campaigns;
begin
  select * into campaign from app.campaigns c where c.id = transition_campaign.campaign_id for update;
  if not found then
    perform app.raise_error('campaign_not_found', format('Campaign "%s" does not exist.', campaign_id), 404);
  end if;
  if not exists (select from app.campaign_transitions t
                 where t.from_status = campaign.status and t.to_status = transition_campaign.to_status) then
    perform app.raise_error('invalid_transition',
      format('Campaign "%s" is %s; it cannot become %s.', campaign.id, campaign.status, to_status), 409,
      jsonb_build_object('from', campaign.status, 'to', to_status));
  end if;

  update app.campaigns c
  set status = to_status,
      paused_at = case when to_status = 'paused' then now() else c.paused_at end,
      cancelled_at = case when to_status = 'cancelled' then now() else c.cancelled_at end,
      pause_reason = case when to_status = 'paused' then 'admin' end,
      pause_detail = null,
      updated_at = now()
  where c.id = campaign.id
  returning * into campaign;

  if to_status = 'paused' then
    update app.messages m set status = 'held'
    where m.campaign_id = campaign.id and m.status = 'queued';
  elsif to_status = 'dispatching' then
    update app.messages m set status = 'queued'
    where m.campaign_id = campaign.id and m.status = 'held';
  elsif to_status = 'cancelled' then
    perform app.cancel_messages(array(
      select m.id from app.messages m
      where m.campaign_id = campaign.id and m.status in ('queued', 'held')), 'campaign_cancelled');
  end if;
  return campaign;
end;
$$;

-- Pauses one campaign for a template reason (not an admin's): called from the
-- report and webhook paths, which already hold message rows, so the campaign's
-- queued messages are held with SKIP LOCKED (a row another transaction holds is
-- left queued; the claim takes no message of a paused campaign, and the
-- complete-campaigns job holds the stragglers within a minute).
create function app.pause_campaign_row(campaign_id uuid, reason text, detail text default null) returns boolean
language plpgsql
set search_path = ''
as $$
begin
  update app.campaigns c
  set status = 'paused', paused_at = now(), pause_reason = pause_campaign_row.reason,
      pause_detail = left(pause_campaign_row.detail, 1000), updated_at = now()
  where c.id = pause_campaign_row.campaign_id and c.status in ('scheduled', 'dispatching');
  if not found then
    return false;
  end if;
  update app.messages m set status = 'held'
  where m.id = any (array(select q.id from app.messages q
                          where q.campaign_id = pause_campaign_row.campaign_id and q.status = 'queued'
                          for update skip locked));
  return true;
end;
$$;

comment on function app.pause_campaign_row is
  'Pauses a scheduled or dispatching campaign for a reason other than an admin''s; holds its queued messages (SKIP LOCKED).';

-- paused → dispatching (held messages queued again) when dispatch had started, else
-- paused → scheduled (started at once when its start time has passed).
create function app.resume_campaign_row(campaign_id uuid) returns app.campaigns
language plpgsql
set search_path = ''
as $$
declare
  campaign app.campaigns;
begin
  select * into campaign from app.campaigns c where c.id = resume_campaign_row.campaign_id;
  if not found then
    perform app.raise_error('campaign_not_found', format('Campaign "%s" does not exist.', campaign_id), 404);
  end if;
  campaign := app.transition_campaign(campaign_id,
    case when campaign.status = 'paused' and campaign.dispatch_started_at is null then 'scheduled'
         else 'dispatching' end);
  if campaign.status = 'scheduled' and campaign.scheduled_for <= now() then
    perform app.start_campaign(campaign.id);
    select * into campaign from app.campaigns c where c.id = resume_campaign_row.campaign_id;
  end if;
  return campaign;
end;
$$;

-- As before, through app.resume_campaign_row (which the template webhook shares).
create or replace function api.resume_campaign(campaign_id uuid) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform app.authorize(array['admin', 'service']);
  return app.campaign_view(app.resume_campaign_row(campaign_id));
end;
$$;

-- The campaigns a template error or webhook is about: those sending template
-- (name, language) through the given channel, or through any channel of the given
-- WhatsApp Business Account (a template belongs to a WABA), and — for a webhook,
-- which names only the WABA — through channels whose WABA is not recorded.
create function app.template_campaigns(
  channel_id uuid,
  waba_id text,
  template_name text,
  template_language text,
  include_unassigned boolean,
  statuses text[]
) returns setof uuid
language sql stable
set search_path = ''
as $$
  select k.id
  from app.campaigns k
  join app.channels ch on ch.id = k.channel_id
  where k.status = any (statuses)
    and k.template_name = template_campaigns.template_name
    and k.template_language = template_campaigns.template_language
    and (ch.id = template_campaigns.channel_id
         or (template_campaigns.waba_id is not null
             and (ch.waba_id = template_campaigns.waba_id or (include_unassigned and ch.waba_id is null))))
  order by k.id
$$;

create function app.pause_template_campaigns(
  channel_id uuid,
  waba_id text,
  template_name text,
  template_language text,
  reason text,
  detail text,
  include_unassigned boolean default false
) returns integer
language plpgsql
set search_path = ''
as $$
declare
  k uuid;
  n integer := 0;
begin
  for k in
    select * from app.template_campaigns(channel_id, waba_id, template_name, template_language, include_unassigned,
                                         array['scheduled', 'dispatching'])
  loop
    if app.pause_campaign_row(k, reason, detail) then
      n := n + 1;
    end if;
  end loop;
  return n;
end;
$$;

comment on function app.pause_template_campaigns is
  'Pauses the scheduled and dispatching campaigns that send a template (by channel, or by WABA) for a template reason.';

-- Resumes the campaigns a template reason paused (never an admin's pause).
create function app.resume_template_campaigns(
  waba_id text,
  template_name text,
  template_language text
) returns integer
language plpgsql
set search_path = ''
as $$
declare
  k uuid;
  n integer := 0;
begin
  for k in
    select t.id from app.template_campaigns(null, waba_id, template_name, template_language, true, array['paused']) t(id)
    join app.campaigns c on c.id = t.id
    where c.pause_reason like 'template\_%'
  loop
    perform app.resume_campaign_row(k);
    n := n + 1;
  end loop;
  return n;
end;
$$;

comment on function app.resume_template_campaigns is
  'Resumes the campaigns paused for a template reason when Meta approves the template again.';
