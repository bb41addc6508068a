-- Campaign dispatch: channels, the campaign lifecycle, targets, opt-outs and the
-- outbox (message queue) with a per-channel token bucket, leases and backoff.
--
-- The queue lives in Postgres and is drained by the `dispatch` Edge Function,
-- which only calls the service_role RPCs below:
--
--   api.claim_messages          lease up to `max` due messages, never more than the
--                               channel's token bucket allows
--   api.report_message_results  sent (wamid) | retry (backoff) | failed, per message
--   api.record_waba_statuses    webhook statuses: monotonic sent → delivered → read | failed
--   api.record_opt_out          global opt-out; cancels that number's pending messages
--
-- Message states:
--
--   queued ──claim──▶ leased ──sent──▶ sent ──▶ delivered ──▶ read
--     ▲   │             │  └──failed──▶ failed        (webhook: failed from sent)
--     │   │             └──retry──▶ queued (backoff) | dead (attempts ≥ max_attempts)
--     │   └──campaign paused──▶ held ──resumed──▶ queued
--     └── lease expired (pg_cron) ◀── leased
--   queued | held ──opt-out / campaign cancelled──▶ cancelled (never sent)
--
-- `held` and `cancelled` are our additions to the queue states: `held` keeps a
-- paused campaign's backlog out of the claim index (so a big paused campaign costs
-- the claim path nothing), `cancelled` records a message that was never sent
-- because its recipient opted out (last_error_code 'opted_out') or its campaign
-- was cancelled ('campaign_cancelled'); the voucher it carried is voided.

-- Helpers --------------------------------------------------------------------------

-- Phone numbers are E.164 strings. The edge validates with libphonenumber; the
-- database keeps a structural check after removing spaces, dashes, dots and
-- parentheses people paste from spreadsheets.
create function app.normalize_msisdn(value text) returns text
language sql immutable parallel safe
set search_path = ''
as $$
  select pg_catalog.regexp_replace(pg_catalog.btrim(value), '[[:space:]().-]', '', 'g')
$$;

create function app.is_e164(value text) returns boolean
language sql immutable parallel safe
set search_path = ''
as $$
  select value ~ '^\+[1-9][0-9]{6,14}$'
$$;

comment on function app.normalize_msisdn(text) is
  'Removes spaces, dashes, dots and parentheses from a phone number; app.is_e164 then checks ^\+[1-9][0-9]{6,14}$.';

-- Decimal places of an ISO 4217 currency (2 unless listed), for rendering amounts.
create function app.currency_exponent(currency text) returns integer
language sql immutable parallel safe
set search_path = ''
as $$
  select case
    when currency in ('BIF', 'CLP', 'DJF', 'GNF', 'ISK', 'JPY', 'KMF', 'KRW', 'PYG', 'RWF',
                      'UGX', 'UYI', 'VND', 'VUV', 'XAF', 'XOF', 'XPF') then 0
    when currency in ('BHD', 'IQD', 'JOD', 'KWD', 'LYD', 'OMR', 'TND') then 3
    else 2
  end
$$;

-- "500.00 KES", "1500 UGX", "1.250 KWD": major units with the currency's decimals.
create function app.format_amount(amount_minor bigint, currency text) returns text
language sql immutable parallel safe
set search_path = ''
as $$
  select pg_catalog.round(amount_minor::numeric / (10::numeric ^ app.currency_exponent(currency)),
                          app.currency_exponent(currency))::text || ' ' || currency
$$;

-- Template body parameters. A campaign's `template_params` is a JSON array; item i
-- fills the template's body variable {{i}} (1-based). Each item is one of
--   "voucher_code"   the target's voucher code, display form (7KQ2M-9XD4T-RCB83)
--   "amount"         the voucher value in major units with its currency ("500.00 KES")
--   "amount_minor"   the value in minor units ("50000")
--   "currency"       the ISO 4217 code ("KES")
--   "expires_at"     the voucher expiry date, UTC, YYYY-MM-DD (the campaign needs one)
--   "campaign_name"  the campaign's name
--   {"text": "…"}            literal text (1 to 1024 characters)
--   {"attribute": "name"}    a field of the target object given to add_campaign_targets
--                            (an empty string when the target has no such field)
-- With a template and no mapping, the default is ["voucher_code"]; `[]` is a
-- template without body variables.
create function app.template_params_valid(params jsonb) returns boolean
language sql immutable parallel safe
set search_path = ''
as $$
  select pg_catalog.jsonb_typeof(params) = 'array'
    and pg_catalog.jsonb_array_length(params) <= 20
    and not exists (
      select from pg_catalog.jsonb_array_elements(params) p
      where not coalesce(
        (pg_catalog.jsonb_typeof(p) = 'string'
          and p #>> '{}' in ('voucher_code', 'amount', 'amount_minor', 'currency', 'expires_at',
                             'campaign_name'))
        or (pg_catalog.jsonb_typeof(p) = 'object'
          and (select count(*) from pg_catalog.jsonb_object_keys(p)) = 1
          and ((pg_catalog.jsonb_typeof(p -> 'text') = 'string'
                and pg_catalog.length(p ->> 'text') between 1 and 1024)
            or (pg_catalog.jsonb_typeof(p -> 'attribute') = 'string'
                and (p ->> 'attribute') ~ '^[A-Za-z_][A-Za-z0-9_]{0,63}$'))),
        false))
$$;

create function app.render_body_parameters(
  params jsonb,
  voucher_code text,
  amount_minor bigint,
  currency text,
  expires_at timestamptz,
  campaign_name text,
  attributes jsonb
) returns text[]
language sql immutable parallel safe
set search_path = ''
as $$
  select coalesce(pg_catalog.array_agg(case
      when pg_catalog.jsonb_typeof(p) = 'object' and p ? 'text' then p ->> 'text'
      when pg_catalog.jsonb_typeof(p) = 'object' then coalesce(attributes ->> (p ->> 'attribute'), '')
      when p #>> '{}' = 'voucher_code' then app.format_code(voucher_code)
      when p #>> '{}' = 'amount' then app.format_amount(amount_minor, currency)
      when p #>> '{}' = 'amount_minor' then amount_minor::text
      when p #>> '{}' = 'currency' then currency
      when p #>> '{}' = 'expires_at' then
        coalesce(pg_catalog.to_char(expires_at at time zone 'UTC', 'YYYY-MM-DD'), '')
      when p #>> '{}' = 'campaign_name' then campaign_name
    end order by i), '{}')
  from pg_catalog.jsonb_array_elements(params) with ordinality as e(p, i)
$$;

comment on function app.render_body_parameters is
  'Renders a campaign''s template_params mapping for one message (see app.template_params_valid for the sources).';

-- Channels ---------------------------------------------------------------------------
-- A WhatsApp sender (one Cloud API phone number id). Credentials are not stored:
-- the dispatch function reads them from its environment by phone_number_id.
--
-- Rate limit: a token bucket per channel. `tokens` holds `burst` at most and refills
-- continuously at rate_per_minute / 60 tokens per second; a claim takes one token
-- per message. The state is (tokens, refilled_at) and refills lazily at claim
-- time, so nothing ticks. Over any window of W seconds a channel therefore hands
-- out at most burst + rate_per_minute · W / 60 messages, however many dispatchers
-- claim. Default burst: rate_per_minute / 6 rounded up (10 seconds of traffic,
-- 42 for the default 250/min), so a dispatcher that starts or resumes can send a
-- first small batch at once without exceeding the per-minute rate by more than that.

create function app.default_burst(rate_per_minute integer) returns integer
language sql immutable parallel safe
set search_path = ''
as $$
  select greatest(1, pg_catalog.ceil(rate_per_minute / 6.0)::integer)
$$;

create table app.channels (
  id uuid primary key default gen_random_uuid(),
  phone_number_id text not null unique check (phone_number_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
  display_name text not null check (length(display_name) between 1 and 200),
  rate_per_minute integer not null default 250 check (rate_per_minute > 0),
  burst integer not null check (burst > 0),
  -- WhatsApp's pair rate limit: about one message per 6 s to the same user (131056).
  min_recipient_interval_seconds integer not null default 6
    check (min_recipient_interval_seconds between 0 and 86400),
  status text not null default 'active' check (status in ('active', 'paused')),
  -- Token bucket state: tokens available at refilled_at.
  tokens numeric not null check (tokens >= 0),
  refilled_at timestamptz not null default now(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint channels_tokens_within_burst check (tokens <= burst)
);

comment on table app.channels is
  'WhatsApp senders (Cloud API phone number ids) with a per-channel token bucket: rate_per_minute, burst, tokens, refilled_at.';
comment on column app.channels.tokens is 'Token bucket: tokens available at refilled_at (refilled lazily by claims).';

alter table app.channels enable row level security;

-- Campaign lifecycle -------------------------------------------------------------------

alter table app.campaigns
  add column channel_id uuid references app.channels (id),
  add column template_name text check (template_name ~ '^[a-z0-9_]+$' and length(template_name) <= 512),
  add column template_language text not null default 'en'
    check (template_language ~ '^[a-z]{2,3}(_[A-Za-z]{2,4})?$'),
  add column template_params jsonb not null default '[]'
    check (app.template_params_valid(template_params)),
  -- When dispatch starts (schedule_campaign's start_at).
  add column scheduled_for timestamptz,
  add column scheduled_at timestamptz,
  add column scheduled_by uuid,
  add column dispatch_started_at timestamptz,
  add column paused_at timestamptz,
  add column completed_at timestamptz,
  add column cancelled_at timestamptz,
  -- Targets with id <= enqueue_cursor have a message (enqueued in target id order).
  add column enqueue_cursor bigint not null default 0,
  -- The last error of the enqueue job for this campaign (cleared by a successful chunk).
  add column dispatch_error text,
  add column updated_at timestamptz not null default now();

create index campaigns_channel_id_idx on app.campaigns (channel_id);
create index campaigns_scheduled_due_idx on app.campaigns (scheduled_for) where status = 'scheduled';

comment on column app.campaigns.template_params is
  'Body parameters of the template, in order: "voucher_code" | "amount" | "amount_minor" | "currency" | "expires_at" | "campaign_name" | {"text": …} | {"attribute": …}.';
comment on column app.campaigns.enqueue_cursor is 'Targets with id <= enqueue_cursor have been enqueued.';

-- Allowed status changes. completed and cancelled are terminal; draft → scheduled
-- only through schedule_campaign (which checks readiness); scheduled → dispatching
-- and dispatching → completed only through the pg_cron jobs.
create table app.campaign_transitions (
  from_status text not null,
  to_status text not null,
  primary key (from_status, to_status)
);

insert into app.campaign_transitions (from_status, to_status) values
  ('draft', 'scheduled'),
  ('draft', 'cancelled'),
  ('scheduled', 'dispatching'),
  ('scheduled', 'paused'),
  ('scheduled', 'cancelled'),
  ('dispatching', 'paused'),
  ('dispatching', 'completed'),
  ('dispatching', 'cancelled'),
  ('paused', 'scheduled'),
  ('paused', 'dispatching'),
  ('paused', 'cancelled');

comment on table app.campaign_transitions is 'The campaign state machine: the status changes the RPCs and jobs may make.';

alter table app.campaign_transitions enable row level security;

-- Targets and opt-outs --------------------------------------------------------------------

create table app.campaign_targets (
  id bigint generated always as identity primary key,
  campaign_id uuid not null references app.campaigns (id),
  msisdn text not null check (msisdn ~ '^\+[1-9][0-9]{6,14}$'),
  -- Extra fields of a target object (e.g. a first name), for {"attribute": …} parameters.
  attributes jsonb not null default '{}'
    check (jsonb_typeof(attributes) = 'object' and length(attributes::text) <= 4000),
  created_at timestamptz not null default now(),
  constraint campaign_targets_campaign_msisdn_key unique (campaign_id, msisdn)
);

-- The enqueue job walks a campaign's targets in id order from its cursor.
create index campaign_targets_campaign_id_id_idx on app.campaign_targets (campaign_id, id);
-- A number's messages (a message has its target's id): opt-out cancellation and
-- the per-recipient spacing guard.
create index campaign_targets_msisdn_idx on app.campaign_targets (msisdn);

comment on table app.campaign_targets is 'Recipients of a campaign (E.164), unique per campaign; added while the campaign is a draft.';

alter table app.campaign_targets enable row level security;

create table app.opt_outs (
  msisdn text primary key check (msisdn ~ '^\+[1-9][0-9]{6,14}$'),
  source text not null check (length(source) between 1 and 100),
  created_at timestamptz not null default now()
);

comment on table app.opt_outs is
  'Global opt-outs: honoured when targets are added, when messages are enqueued and again at claim.';

alter table app.opt_outs enable row level security;

-- The outbox --------------------------------------------------------------------------------

-- One row per target, and it shares the target's id: a target is messaged at
-- most once (retries are the same row), with no extra unique index to maintain.
--
-- Every status change rewrites the row (status is in index predicates, so no HOT
-- update), and each index of the table gets a new entry each time. So the table
-- has few indexes, and the by-recipient lookups (opt-out, spacing guard) go through
-- campaign_targets(msisdn), which never changes after insert.
create table app.messages (
  id bigint primary key references app.campaign_targets (id),
  campaign_id uuid not null references app.campaigns (id),
  channel_id uuid not null references app.channels (id),
  voucher_id bigint references app.vouchers (id),
  to_msisdn text not null check (to_msisdn ~ '^\+[1-9][0-9]{6,14}$'),
  template_name text not null,
  template_language text not null,
  -- Rendered at enqueue time, so editing a campaign never changes queued messages.
  body_parameters text[] not null default '{}',
  status text not null default 'queued' check (status in
    ('queued', 'held', 'leased', 'sent', 'delivered', 'read', 'failed', 'dead', 'cancelled')),
  -- Claims so far (a claim is an attempt: the dispatcher sends what it claims).
  attempts integer not null default 0 check (attempts >= 0),
  max_attempts integer not null default 5 check (max_attempts between 1 and 20),
  next_attempt_at timestamptz not null default now(),
  last_attempt_at timestamptz,
  lease_owner text check (length(lease_owner) between 1 and 200),
  lease_expires_at timestamptz,
  -- WhatsApp message id, from the send response; webhooks find the message by it.
  wamid text check (length(wamid) between 1 and 200),
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
  constraint messages_sent_has_wamid check (status not in ('sent', 'delivered', 'read') or wamid is not null)
);

-- Claim path: due queued messages of a channel, oldest first.
create index messages_claim_idx on app.messages (channel_id, next_attempt_at, id) where status = 'queued';
-- Lease reclaim path.
create index messages_lease_expiry_idx on app.messages (lease_expires_at) where status = 'leased';
-- Webhook lookup.
create unique index messages_wamid_key on app.messages (wamid) where wamid is not null;
-- A campaign's pending messages (pause, resume, cancel, completion, back-pressure).
-- Partial: a message leaves it once it is sent, so reports add no entry here.
create index messages_campaign_pending_idx on app.messages (campaign_id, status)
  where status in ('queued', 'held', 'leased');

comment on table app.messages is
  'The outbox: one row per campaign target; queued → leased → sent → delivered → read, or failed / dead / cancelled.';
comment on column app.messages.attempts is 'Number of claims (send attempts); at max_attempts a retry becomes dead.';

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

-- Webhook statuses whose wamid is not known yet: WhatsApp may deliver a status
-- before the dispatcher's report stores the wamid. They are applied when the
-- report arrives, and purged after 7 days.
create table app.pending_waba_statuses (
  wamid text not null check (length(wamid) between 1 and 200),
  status text not null check (status in ('sent', 'delivered', 'read', 'failed')),
  occurred_at timestamptz not null,
  error_code text check (length(error_code) <= 100),
  error_message text check (length(error_message) <= 1000),
  received_at timestamptz not null default now(),
  primary key (wamid, status)
);

create index pending_waba_statuses_received_at_idx on app.pending_waba_statuses (received_at);

alter table app.pending_waba_statuses enable row level security;

-- Retry backoff ------------------------------------------------------------------------------
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

-- A campaign as the API returns it.
create function app.campaign_view(c app.campaigns) returns jsonb
language sql stable
set search_path = ''
as $$
  select pg_catalog.to_jsonb(c) - 'enqueue_cursor'
$$;

-- API: channels --------------------------------------------------------------------------------

create function api.create_channel(
  phone_number_id text,
  display_name text,
  rate_per_minute integer default 250,
  burst integer default null,
  min_recipient_interval_seconds integer default 6
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  channel app.channels;
  bucket integer := coalesce(burst, app.default_burst(rate_per_minute));
begin
  perform app.authorize(array['admin', 'service']);
  if phone_number_id is null or phone_number_id !~ '^[A-Za-z0-9_.-]{1,64}$' then
    perform app.raise_error('invalid_channel',
      format('phone_number_id must be 1 to 64 letters, digits, "_", "." or "-", got "%s".', phone_number_id),
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

  insert into app.channels as c (phone_number_id, display_name, rate_per_minute, burst,
                                 min_recipient_interval_seconds, tokens, refilled_at)
  values (create_channel.phone_number_id, trim(create_channel.display_name), create_channel.rate_per_minute,
          bucket, create_channel.min_recipient_interval_seconds, bucket, clock_timestamp())
  on conflict on constraint channels_phone_number_id_key do nothing
  returning * into channel;
  if channel.id is null then
    perform app.raise_error('channel_exists',
      format('A channel for phone number id "%s" already exists.', create_channel.phone_number_id), 409);
  end if;
  return to_jsonb(channel);
end;
$$;

revoke execute on function api.create_channel from public;
grant execute on function api.create_channel to authenticated, service_role;

-- Null arguments leave a field unchanged. A new rate or burst takes effect from
-- now: the bucket is first refilled at the old rate, then capped at the new burst.
create function api.update_channel(
  channel_id uuid,
  display_name text default null,
  rate_per_minute integer default null,
  burst integer default null,
  status text default null,
  min_recipient_interval_seconds integer default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  channel app.channels;
  t timestamptz;
  available numeric;
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

  t := greatest(clock_timestamp(), channel.refilled_at);
  available := least(channel.burst,
    channel.tokens + extract(epoch from t - channel.refilled_at) * channel.rate_per_minute / 60.0);

  update app.channels c set
    display_name = coalesce(trim(update_channel.display_name), c.display_name),
    rate_per_minute = coalesce(update_channel.rate_per_minute, c.rate_per_minute),
    burst = coalesce(update_channel.burst, c.burst),
    status = coalesce(update_channel.status, c.status),
    min_recipient_interval_seconds =
      coalesce(update_channel.min_recipient_interval_seconds, c.min_recipient_interval_seconds),
    tokens = least(available, coalesce(update_channel.burst, c.burst)),
    refilled_at = t,
    updated_at = now()
  where c.id = channel.id
  returning * into channel;
  return to_jsonb(channel);
end;
$$;

revoke execute on function api.update_channel from public;
grant execute on function api.update_channel to authenticated, service_role;

create function api.list_channels() returns jsonb
language plpgsql stable
security definer
set search_path = ''
as $$
begin
  perform app.authorize(array['admin', 'service']);
  return (select coalesce(jsonb_agg(to_jsonb(c) order by c.display_name, c.id), '[]'::jsonb)
          from app.channels c);
end;
$$;

revoke execute on function api.list_channels from public;
grant execute on function api.list_channels to authenticated, service_role;

-- API: campaigns -------------------------------------------------------------------------------
-- create_campaign: the voucher arguments, then the dispatch ones (all optional,
-- so voucher-only campaigns need none of them). PostgREST resolves functions by
-- argument names, so there is exactly one create_campaign.

create function api.create_campaign(
  name text,
  amount_minor bigint,
  currency text,
  starts_at timestamptz default now(),
  expires_at timestamptz default null,
  station_ids uuid[] default null,
  channel_id uuid default null,
  template_name text default null,
  template_language text default 'en',
  template_params jsonb default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  actor app.actor := app.authorize(array['admin', 'service']);
  campaign app.campaigns;
  unknown uuid[];
  params jsonb := coalesce(template_params,
    case when template_name is null then '[]'::jsonb else '["voucher_code"]'::jsonb end);
begin
  if name is null or length(trim(name)) not between 1 and 200 then
    perform app.raise_error('invalid_campaign', 'A campaign name of 1 to 200 characters is required.', 400);
  end if;
  if amount_minor is null or amount_minor <= 0 then
    perform app.raise_error('invalid_amount',
      format('amount_minor must be a positive integer of minor units, got %s.', amount_minor), 400);
  end if;
  if currency is null or upper(currency) !~ '^[A-Z]{3}$' then
    perform app.raise_error('invalid_currency',
      format('Currency must be an ISO 4217 code such as "KES", got "%s".', currency), 400);
  end if;
  if expires_at is not null and expires_at <= coalesce(starts_at, now()) then
    perform app.raise_error('invalid_expiry', 'expires_at must be after starts_at.', 400);
  end if;
  select array_agg(s) into unknown
  from unnest(coalesce(station_ids, '{}')) s
  where not exists (select from app.stations st where st.id = s);
  if unknown is not null then
    perform app.raise_error('station_not_found',
      format('Unknown station ids: %s.', array_to_string(unknown, ', ')), 404,
      jsonb_build_object('station_ids', unknown));
  end if;
  if channel_id is not null and not exists (select from app.channels ch where ch.id = create_campaign.channel_id) then
    perform app.raise_error('channel_not_found', format('Channel "%s" does not exist.', channel_id), 404);
  end if;
  if template_name is not null and (template_name !~ '^[a-z0-9_]+$' or length(template_name) > 512) then
    perform app.raise_error('invalid_template',
      format('template_name must be a WhatsApp template name (a-z, 0-9, _), got "%s".', template_name), 400,
      jsonb_build_object('field', 'template_name'));
  end if;
  if template_language is null or template_language !~ '^[a-z]{2,3}(_[A-Za-z]{2,4})?$' then
    perform app.raise_error('invalid_template',
      format('template_language must be a WhatsApp language code such as "en" or "en_US", got "%s".',
             template_language), 400, jsonb_build_object('field', 'template_language'));
  end if;
  if not app.template_params_valid(params) then
    perform app.raise_error('invalid_template_params',
      'template_params must be an array of at most 20 items, each "voucher_code", "amount", "amount_minor", '
      || '"currency", "expires_at", "campaign_name", {"text": "…"} or {"attribute": "…"}.', 400);
  end if;
  if params @> '["expires_at"]' and expires_at is null then
    perform app.raise_error('invalid_template_params',
      'template_params uses "expires_at" but the campaign has no expires_at.', 400);
  end if;

  insert into app.campaigns (name, amount_minor, currency, starts_at, expires_at, station_ids, created_by,
                             channel_id, template_name, template_language, template_params)
  values (trim(name), amount_minor, upper(currency), coalesce(starts_at, now()), expires_at,
          coalesce((select array_agg(distinct s) from unnest(station_ids) s), '{}'), actor.user_id,
          channel_id, template_name, template_language, params)
  returning * into campaign;
  return app.campaign_view(campaign);
end;
$$;

revoke execute on function api.create_campaign from public;
grant execute on function api.create_campaign to authenticated, service_role;

-- Enqueue -------------------------------------------------------------------------------------------
-- Turns the next `max_targets` targets of a dispatching campaign (in id order,
-- from its cursor) into queued messages: one voucher per target through
-- app.issue_batch (the issuance code path), template parameters rendered with the
-- voucher code. Opted-out targets get a `cancelled` message and no voucher.
-- Vouchers are issued here, at enqueue, rather than all at schedule time: the work
-- is bounded per call whatever the audience size, a voucher exists only for a
-- target about to be messaged (a cancelled campaign leaves none behind for targets
-- it never reached), and opted-out targets cost nothing. The campaign row lock
-- serialises enqueuers of one campaign; the primary key (the target's id) makes a repeat
-- impossible anyway. `due_at` (default now) is when the messages become claimable.
create function app.enqueue_campaign_chunk(
  campaign_id uuid,
  max_targets integer default 5000,
  due_at timestamptz default null
) returns integer
language plpgsql
set search_path = ''
as $$
declare
  campaign app.campaigns;
  ids bigint[];
  msisdns text[];
  attrs jsonb[];
  opted boolean[];
  need integer;
  new_batch uuid;
  kinds text[];
  vals text[];
begin
  select * into campaign from app.campaigns c where c.id = enqueue_campaign_chunk.campaign_id for update;
  if not found or campaign.status <> 'dispatching' then
    return 0;
  end if;

  select array_agg(t.id order by t.id), array_agg(t.msisdn order by t.id),
         array_agg(t.attributes order by t.id), array_agg(t.opted_out order by t.id),
         count(*) filter (where not t.opted_out)
    into ids, msisdns, attrs, opted, need
  from (
    select t.id, t.msisdn, t.attributes,
           exists (select from app.opt_outs o where o.msisdn = t.msisdn) as opted_out
    from app.campaign_targets t
    where t.campaign_id = campaign.id and t.id > campaign.enqueue_cursor
    order by t.id
    limit max_targets
  ) t;
  if ids is null then
    return 0;
  end if;

  if need > 0 then
    new_batch := (app.issue_batch(campaign.id, need, null, campaign.scheduled_by) ->> 'batch_id')::uuid;
  end if;

  -- Render the campaign's parameters once for the chunk; per message only the
  -- voucher code and target attributes are filled in.
  select array_agg(x.kind order by x.i), array_agg(x.value order by x.i)
    into kinds, vals
  from (
    select e.i,
           case when jsonb_typeof(e.p) = 'string' and e.p #>> '{}' = 'voucher_code' then 'voucher_code'
                when jsonb_typeof(e.p) = 'object' and e.p ? 'attribute' then 'attribute'
                else 'text' end as kind,
           case when jsonb_typeof(e.p) = 'object' and e.p ? 'attribute' then e.p ->> 'attribute'
                else (app.render_body_parameters(jsonb_build_array(e.p), null, campaign.amount_minor,
                        campaign.currency, campaign.expires_at, campaign.name, '{}'))[1] end as value
    from jsonb_array_elements(campaign.template_params) with ordinality as e(p, i)
  ) x;

  insert into app.messages (campaign_id, id, channel_id, voucher_id, to_msisdn, template_name,
                            template_language, body_parameters, next_attempt_at, status, cancelled_at,
                            last_error_code, last_error_message)
  select campaign.id, t.id, campaign.channel_id, v.id, t.msisdn, campaign.template_name,
         campaign.template_language,
         case when t.opted_out or kinds is null then '{}'::text[]
              else array(select case k.kind when 'voucher_code' then v.display_code
                                            when 'attribute' then coalesce(t.attributes ->> k.value, '')
                                            else k.value end
                         from unnest(kinds, vals) with ordinality as k(kind, value, i)
                         order by k.i) end,
         coalesce(due_at, now()),
         case when t.opted_out then 'cancelled' else 'queued' end,
         case when t.opted_out then now() end,
         case when t.opted_out then 'opted_out' end,
         case when t.opted_out then 'The recipient opted out; the message was not sent.' end
  from (
    select u.*, row_number() over (partition by u.opted_out order by u.id) as rn
    from unnest(ids, msisdns, attrs, opted) as u(id, msisdn, attributes, opted_out)
  ) t
  left join (
    select vo.id, app.format_code(vo.code) as display_code, row_number() over (order by vo.id) as rn
    from app.vouchers vo
    where vo.batch_id = new_batch
  ) v on not t.opted_out and v.rn = t.rn
  on conflict (id) do nothing;

  update app.campaigns c
  set enqueue_cursor = ids[array_upper(ids, 1)], dispatch_error = null, updated_at = now()
  where c.id = campaign.id;
  return array_length(ids, 1);
end;
$$;

comment on function app.enqueue_campaign_chunk is
  'Enqueues the next max_targets targets of a dispatching campaign: issues their vouchers, renders parameters.';

-- scheduled → dispatching for one campaign, and its first chunk.
create function app.start_campaign(campaign_id uuid, chunk integer default 5000) returns integer
language plpgsql
set search_path = ''
as $$
begin
  update app.campaigns c
  set status = 'dispatching', dispatch_started_at = coalesce(c.dispatch_started_at, now()), updated_at = now()
  where c.id = start_campaign.campaign_id and c.status = 'scheduled';
  if not found then
    return 0;
  end if;
  return app.enqueue_campaign_chunk(campaign_id, chunk);
end;
$$;

-- pg_cron job (every minute): promotes due scheduled campaigns, then enqueues the
-- next chunk of every dispatching campaign that has targets left and fewer than
-- `chunk` messages waiting in the queue (so vouchers are issued shortly before
-- their message goes out, and the queue stays small). 5,000 per campaign per
-- minute is above WhatsApp's default 80 msgs/s per number. One campaign's error
-- (e.g. its validity ended) is recorded in campaigns.dispatch_error and does not
-- stop the others.
create function app.promote_due_campaigns(chunk integer default 5000, max_campaigns integer default 100)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  promoted integer := 0;
  enqueued integer := 0;
  failed integer := 0;
  c record;
begin
  with due as (
    select d.id from app.campaigns d
    where d.status = 'scheduled' and d.scheduled_for <= now()
    order by d.scheduled_for
    limit max_campaigns
    for update skip locked
  )
  update app.campaigns u
  set status = 'dispatching', dispatch_started_at = coalesce(u.dispatch_started_at, now()), updated_at = now()
  from due where u.id = due.id;
  get diagnostics promoted = row_count;

  for c in
    select d.id from app.campaigns d
    where d.status = 'dispatching'
      and exists (select from app.campaign_targets t where t.campaign_id = d.id and t.id > d.enqueue_cursor)
      and (select count(*) from (select from app.messages m
                                 where m.campaign_id = d.id and m.status = 'queued' limit chunk) q) < chunk
    order by d.dispatch_started_at, d.id
    limit max_campaigns
  loop
    begin
      enqueued := enqueued + app.enqueue_campaign_chunk(c.id, chunk);
    exception when others then
      failed := failed + 1;
      update app.campaigns u set dispatch_error = left(sqlerrm, 1000), updated_at = now() where u.id = c.id;
    end;
  end loop;
  return jsonb_build_object('promoted', promoted, 'enqueued', enqueued, 'failed', failed);
end;
$$;

comment on function app.promote_due_campaigns is
  'pg_cron: scheduled → dispatching when due; enqueue the next chunk (default 5,000) of each dispatching campaign.';

-- pg_cron job (every minute): dispatching → completed when every target has a
-- message and none is queued, held or leased. It also settles stragglers a race
-- can leave behind (a retry report that read the campaign status just before a
-- pause or cancel committed): queued messages of paused campaigns are held,
-- those of cancelled campaigns cancelled.
create function app.complete_campaigns() returns integer
language plpgsql
set search_path = ''
as $$
declare
  completed integer;
begin
  with stragglers as (
    update app.messages m
    set status = case when c.status = 'paused' then 'held' else 'cancelled' end,
        cancelled_at = case when c.status = 'paused' then null else now() end,
        last_error_code = case when c.status = 'paused' then m.last_error_code else 'campaign_cancelled' end
    from app.campaigns c
    where c.status in ('paused', 'cancelled') and m.campaign_id = c.id and m.status = 'queued'
    returning m.voucher_id, m.status
  )
  update app.vouchers v
  set status = 'void', voided_at = now(), void_reason = 'Campaign cancelled before the message was sent.'
  from stragglers s
  where s.status = 'cancelled' and v.id = s.voucher_id and v.status = 'issued';

  update app.campaigns c
  set status = 'completed', completed_at = now(), updated_at = now()
  where c.status = 'dispatching'
    and not exists (select from app.campaign_targets t where t.campaign_id = c.id and t.id > c.enqueue_cursor)
    and not exists (select from app.messages m
                    where m.campaign_id = c.id and m.status in ('queued', 'held', 'leased'));
  get diagnostics completed = row_count;
  return completed;
end;
$$;

comment on function app.complete_campaigns is
  'pg_cron: dispatching → completed when all targets are enqueued and no message is queued, held or leased.';

-- Lifecycle ------------------------------------------------------------------------------------------
-- The one place a campaign changes status on request: locks the row, checks
-- app.campaign_transitions (invalid_transition 409 with {from, to}), moves the
-- campaign's pending messages along, and returns the campaign.
create function app.transition_campaign(campaign_id uuid, to_status text) returns app.campaigns
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
    with cancelled as (
      update app.messages m
      set status = 'cancelled', cancelled_at = now(), last_error_code = 'campaign_cancelled',
          last_error_message = 'The campaign was cancelled before the message was sent.'
      where m.campaign_id = campaign.id and m.status in ('queued', 'held')
      returning m.voucher_id
    )
    update app.vouchers v
    set status = 'void', voided_at = now(), void_reason = 'Campaign cancelled before the message was sent.'
    from cancelled c
    where v.id = c.voucher_id and v.status = 'issued';
  end if;
  return campaign;
end;
$$;

-- Targets: a JSON array, each item either an E.164 string ("+254700000001") or an
-- object {"msisdn": "+254700000001", …other fields kept as attributes}. Up to
-- 10,000 per call, only while the campaign is a draft (targets are fixed once it is
-- scheduled, so "every target is enqueued" has a meaning). Every item lands in
-- exactly one bucket, in this order: invalid (with its index and a reason),
-- opted_out, duplicates (repeated in the call or already a target), inserted.
create function api.add_campaign_targets(campaign_id uuid, targets jsonb) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  campaign app.campaigns;
  result jsonb;
begin
  perform app.authorize(array['admin', 'service']);
  if jsonb_typeof(targets) is distinct from 'array' then
    perform app.raise_error('invalid_targets',
      'targets must be a JSON array of E.164 strings or {"msisdn": …} objects.', 400);
  end if;
  if jsonb_array_length(targets) > 10000 then
    perform app.raise_error('too_many_targets',
      format('At most 10000 targets per call, got %s.', jsonb_array_length(targets)), 400,
      jsonb_build_object('max', 10000, 'count', jsonb_array_length(targets)));
  end if;
  -- The row lock serialises adding targets with scheduling.
  select * into campaign from app.campaigns c where c.id = add_campaign_targets.campaign_id for update;
  if not found then
    perform app.raise_error('campaign_not_found',
      format('Campaign "%s" does not exist.', add_campaign_targets.campaign_id), 404);
  end if;
  if campaign.status <> 'draft' then
    perform app.raise_error('campaign_not_draft',
      format('Campaign "%s" is %s; targets can only be added to a draft.', campaign.id, campaign.status), 409,
      jsonb_build_object('status', campaign.status));
  end if;

  with items as (
    select (x.i - 1)::integer as idx, x.e,
           case jsonb_typeof(x.e)
             when 'string' then x.e #>> '{}'
             when 'object' then case when jsonb_typeof(x.e -> 'msisdn') = 'string' then x.e ->> 'msisdn' end
           end as raw,
           case when jsonb_typeof(x.e) = 'object' then x.e - 'msisdn' else '{}'::jsonb end as attributes
    from jsonb_array_elements(targets) with ordinality as x(e, i)
  ), classified as (
    select it.idx, it.e, it.attributes, app.normalize_msisdn(it.raw) as msisdn,
           case
             when it.raw is null then 'not_a_phone_number'
             when not app.is_e164(app.normalize_msisdn(it.raw)) then 'invalid_e164'
             when length(it.attributes::text) > 4000 then 'attributes_too_large'
           end as reason
    from items it
  ), valid as (
    select cl.*, exists (select from app.opt_outs o where o.msisdn = cl.msisdn) as opted_out
    from classified cl
    where cl.reason is null
  ), firsts as (
    select distinct on (v.msisdn) v.idx, v.msisdn, v.attributes
    from valid v
    where not v.opted_out
    order by v.msisdn, v.idx
  ), inserted as (
    insert into app.campaign_targets (campaign_id, msisdn, attributes)
    select campaign.id, f.msisdn, f.attributes from firsts f order by f.idx
    on conflict on constraint campaign_targets_campaign_msisdn_key do nothing
    returning 1
  )
  select jsonb_build_object(
    'inserted', (select count(*) from inserted),
    'duplicates', (select count(*) from valid v where not v.opted_out) - (select count(*) from inserted),
    'opted_out', (select count(*) from valid v where v.opted_out),
    'invalid', (select coalesce(jsonb_agg(jsonb_build_object('index', cl.idx, 'value', cl.e, 'reason', cl.reason)
                                          order by cl.idx), '[]'::jsonb)
                from classified cl where cl.reason is not null))
    into result;
  return result;
end;
$$;

revoke execute on function api.add_campaign_targets from public;
grant execute on function api.add_campaign_targets to authenticated, service_role;

-- draft → scheduled. Requires a channel, a template and at least one target
-- (campaign_not_ready 409 with details.reasons), and a validity that has not ended.
-- When start_at is now or past, dispatch starts in this call (status dispatching,
-- first chunk enqueued); otherwise the pg_cron promote job starts it when due.
create function api.schedule_campaign(campaign_id uuid, start_at timestamptz default now()) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  actor app.actor := app.authorize(array['admin', 'service']);
  campaign app.campaigns;
  reasons text[] := '{}'::text[];
  starts timestamptz := greatest(coalesce(start_at, now()), now());
begin
  select * into campaign from app.campaigns c where c.id = schedule_campaign.campaign_id for update;
  if not found then
    perform app.raise_error('campaign_not_found',
      format('Campaign "%s" does not exist.', schedule_campaign.campaign_id), 404);
  end if;
  if campaign.status <> 'draft' then
    perform app.raise_error('invalid_transition',
      format('Campaign "%s" is %s; it cannot become scheduled.', campaign.id, campaign.status), 409,
      jsonb_build_object('from', campaign.status, 'to', 'scheduled'));
  end if;
  if campaign.channel_id is null then
    reasons := reasons || 'no_channel'::text;
  end if;
  if campaign.template_name is null then
    reasons := reasons || 'no_template'::text;
  end if;
  if not exists (select from app.campaign_targets t where t.campaign_id = campaign.id) then
    reasons := reasons || 'no_targets'::text;
  end if;
  if campaign.expires_at is not null and campaign.expires_at <= starts then
    reasons := reasons || 'expired'::text;
  end if;
  if cardinality(reasons) > 0 then
    perform app.raise_error('campaign_not_ready',
      format('Campaign "%s" cannot be scheduled: %s.', campaign.id, array_to_string(reasons, ', ')), 409,
      jsonb_build_object('reasons', reasons));
  end if;

  update app.campaigns c
  set status = 'scheduled', scheduled_for = starts, scheduled_at = now(), scheduled_by = actor.user_id,
      updated_at = now()
  where c.id = campaign.id;
  if starts <= now() then
    perform app.start_campaign(campaign.id);
  end if;
  select * into campaign from app.campaigns c where c.id = schedule_campaign.campaign_id;
  return app.campaign_view(campaign);
end;
$$;

revoke execute on function api.schedule_campaign from public;
grant execute on function api.schedule_campaign to authenticated, service_role;

-- scheduled | dispatching → paused: queued messages are held; leased ones finish.
create function api.pause_campaign(campaign_id uuid) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform app.authorize(array['admin', 'service']);
  return app.campaign_view(app.transition_campaign(campaign_id, 'paused'));
end;
$$;

revoke execute on function api.pause_campaign from public;
grant execute on function api.pause_campaign to authenticated, service_role;

-- paused → dispatching (held messages queued again) when dispatch had started,
-- else paused → scheduled (started at once when its start time has passed).
create function api.resume_campaign(campaign_id uuid) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  campaign app.campaigns;
begin
  perform app.authorize(array['admin', 'service']);
  select * into campaign from app.campaigns c where c.id = resume_campaign.campaign_id;
  if not found then
    perform app.raise_error('campaign_not_found', format('Campaign "%s" does not exist.', campaign_id), 404);
  end if;
  campaign := app.transition_campaign(campaign_id,
    case when campaign.status = 'paused' and campaign.dispatch_started_at is null then 'scheduled'
         else 'dispatching' end);
  if campaign.status = 'scheduled' and campaign.scheduled_for <= now() then
    perform app.start_campaign(campaign.id);
    select * into campaign from app.campaigns c where c.id = resume_campaign.campaign_id;
  end if;
  return app.campaign_view(campaign);
end;
$$;

revoke execute on function api.resume_campaign from public;
grant execute on function api.resume_campaign to authenticated, service_role;

-- draft | scheduled | dispatching | paused → cancelled: queued and held messages
-- are cancelled and their vouchers voided; leased ones finish (a retry is cancelled).
create function api.cancel_campaign(campaign_id uuid) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform app.authorize(array['admin', 'service']);
  return app.campaign_view(app.transition_campaign(campaign_id, 'cancelled'));
end;
$$;

revoke execute on function api.cancel_campaign from public;
grant execute on function api.cancel_campaign to authenticated, service_role;

create function api.campaign_stats(campaign_id uuid) returns jsonb
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
           'cancelled', count(*) filter (where m.status = 'cancelled'),
           'sent_last_minute', count(*) filter (where m.sent_at >= now() - interval '1 minute'))
    into message_counts
  from app.campaign_targets t join app.messages m on m.id = t.id
  where t.campaign_id = campaign.id;

  return jsonb_build_object(
    'campaign_id', campaign.id,
    'name', campaign.name,
    'status', campaign.status,
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
    'messages', message_counts - 'sent_last_minute',
    'sent_last_minute', (message_counts ->> 'sent_last_minute')::integer,
    'channel', case when channel.id is null then null else jsonb_build_object(
      'id', channel.id, 'phone_number_id', channel.phone_number_id, 'display_name', channel.display_name,
      'status', channel.status, 'rate_per_minute', channel.rate_per_minute, 'burst', channel.burst,
      'claimed_last_minute', (select coalesce(sum(d.messages), 0) from app.dispatch_claims d
                              where d.channel_id = channel.id and d.claimed_at >= now() - interval '1 minute'))
    end
  );
end;
$$;

revoke execute on function api.campaign_stats from public;
grant execute on function api.campaign_stats to authenticated, service_role;

-- Claim ------------------------------------------------------------------------------------------------
-- Claims up to max_messages due messages of one channel and leases them to `worker`.
--
-- Rate: the channel row is locked first (FOR UPDATE), which serialises every
-- claimer of this channel — however many dispatchers run — around the token
-- bucket: refill, take at most floor(tokens), subtract what was taken, commit.
-- Hence the channel's rate holds globally, not per worker.
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
-- less than min_recipient_interval_seconds ago, and a batch holds at most one
-- message per recipient. A message whose recipient has opted out is cancelled
-- here (never sent) and costs no token.
--
-- Plans: the candidate query runs through EXECUTE, so it is planned for each call
-- knowing `take` (only such a plan reliably picks the ordered scan of
-- messages_claim_idx that stops after `take` rows; a generic plan, blind to the
-- LIMIT, may sort the whole backlog). It is kept small so that planning is cheap.
-- Every other statement is driven by primary keys and uses one generic plan per
-- session (plan_cache_mode = force_generic_plan).
create function app.claim_channel_messages(
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
as $$
declare
  channel app.channels;
  t timestamptz;
  available numeric;
  take integer;
  dispatching uuid[];
  candidate_ids bigint[];
  candidate_msisdns text[];
  opted_out boolean[];
  lease_ids bigint[];
  cancel_ids bigint[];
  claimed json;
  n integer;
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
  -- query stays a single ordered index scan whatever the statistics say.
  dispatching := array(select c.id from app.campaigns c
                       where c.channel_id = channel.id and c.status = 'dispatching');

  -- The candidates, locked. The two EXISTS probes end in `offset 0` on purpose:
  -- it keeps each one a per-row index probe (opt_outs_pkey, then
  -- campaign_targets_msisdn_idx → messages_pkey) for the rows the scan visits;
  -- otherwise the planner may hash them, reading every opt-out or message.
  execute $sql$
    select coalesce(array_agg(c.id order by c.next_attempt_at, c.id), '{}'),
           coalesce(array_agg(c.to_msisdn order by c.next_attempt_at, c.id), '{}'),
           coalesce(array_agg(c.opted_out order by c.next_attempt_at, c.id), '{}')
    from (
      select m.id, m.next_attempt_at, m.to_msisdn,
             exists (select from app.opt_outs o where o.msisdn = m.to_msisdn offset 0) as opted_out
      from app.messages m
      where m.channel_id = $1
        and m.status = 'queued'
        and m.next_attempt_at <= $2
        and m.campaign_id = any ($3)
        and ($4 = 0 or not exists (
          select from app.campaign_targets rt join app.messages r on r.id = rt.id
          where rt.msisdn = m.to_msisdn and r.channel_id = $1
            and r.last_attempt_at > $2 - make_interval(secs => $4)
          offset 0))
      order by m.next_attempt_at, m.id
      limit $5
      for update of m skip locked
    ) c
  $sql$
  into candidate_ids, candidate_msisdns, opted_out
  using channel.id, t, dispatching, channel.min_recipient_interval_seconds, take;

  -- Opted out since they were enqueued: cancelled here, never sent; their vouchers voided.
  cancel_ids := array(select u.id from unnest(candidate_ids, opted_out) as u(id, opted) where u.opted);
  if cardinality(cancel_ids) > 0 then
    with cancelled as (
      update app.messages m
      set status = 'cancelled', cancelled_at = t, last_error_code = 'opted_out',
          last_error_message = 'The recipient opted out; the message was not sent.'
      where m.id = any (cancel_ids)
      returning m.voucher_id
    )
    update app.vouchers v
    set status = 'void', voided_at = now(), void_reason = 'Recipient opted out before the message was sent.'
    from cancelled c
    where v.id = c.voucher_id and v.status = 'issued';
  end if;

  -- At most one message per recipient in a batch (the first one due).
  lease_ids := array(
    select distinct on (u.msisdn) u.id
    from unnest(candidate_ids, candidate_msisdns, opted_out) with ordinality as u(id, msisdn, opted, k)
    where not u.opted
    order by u.msisdn, u.k);

  -- json (text), not jsonb: built in one pass, several times cheaper for a batch.
  with leased as (
    update app.messages m
    set status = 'leased', attempts = m.attempts + 1, last_attempt_at = t,
        lease_owner = worker, lease_expires_at = t + make_interval(secs => lease_seconds)
    where m.id = any (lease_ids)
    returning m.id, m.campaign_id, m.channel_id, m.to_msisdn, m.template_name, m.template_language,
              m.body_parameters, m.attempts, m.lease_owner, m.lease_expires_at
  )
  select coalesce(json_agg(l order by l.message_id), '[]'::json), count(*)
    into claimed, n
  from (
    select x.id as message_id, x.campaign_id, x.channel_id, channel.phone_number_id as phone_number_id,
           x.to_msisdn as "to", x.template_name, x.template_language, x.body_parameters,
           x.attempts as attempt, x.lease_owner, x.lease_expires_at
    from leased x
  ) l;

  update app.channels c set tokens = available - n, refilled_at = t where c.id = channel.id;
  if n > 0 then
    insert into app.dispatch_claims (channel_id, claimed_at, messages, worker)
    values (channel.id, t, n, claim_channel_messages.worker);
  end if;
  return claimed;
end;
$$;

comment on function app.claim_channel_messages is
  'Token-bucket claim for one channel (lock the channel row, refill, take ≤ floor(tokens) with SKIP LOCKED).';

-- The time-injectable claim: one channel (waiting for its lock), or, with a null
-- channel_id, the active channels that have due messages, oldest due first,
-- skipping channels another claimer holds right now.
create function app.claim_messages_at(
  channel_id uuid,
  max_messages integer,
  lease_seconds integer,
  worker text,
  at timestamptz default null
) returns json
language plpgsql
set search_path = ''
as $$
declare
  result jsonb := '[]'::jsonb;
  ch uuid;
begin
  if channel_id is not null then
    return app.claim_channel_messages(channel_id, max_messages, lease_seconds, worker, at, true);
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
    result := result || app.claim_channel_messages(ch, max_messages - jsonb_array_length(result), lease_seconds,
                                                   worker, at, false)::jsonb;
    exit when jsonb_array_length(result) >= max_messages;
  end loop;
  return result::json;
end;
$$;

create function api.claim_messages(
  channel_id uuid default null,
  max integer default 100,
  lease_seconds integer default 60,
  worker text default null
) returns json
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
  return app.claim_messages_at(claim_messages.channel_id, max, lease_seconds,
                               coalesce(worker, 'worker-' || gen_random_uuid()), null);
end;
$$;

revoke execute on function api.claim_messages from public;
grant execute on function api.claim_messages to service_role;

comment on function api.claim_messages is
  'Leases up to max due messages (service_role): never more than the channel token bucket allows; skips paused channels/campaigns, opted-out numbers and recipients messaged < min_recipient_interval_seconds ago.';

-- Webhook statuses ------------------------------------------------------------------------------------------
-- A WhatsApp timestamp: epoch seconds (number or digit string, as Meta sends it)
-- or an ISO 8601 string; now() when absent or unreadable.
create function app.waba_timestamp(value jsonb) returns timestamptz
language sql stable
set search_path = ''
as $$
  select coalesce(
    case
      when jsonb_typeof(value) = 'number' or (value #>> '{}') ~ '^[0-9]{1,12}(\.[0-9]+)?$'
        then to_timestamp((value #>> '{}')::double precision)
      when jsonb_typeof(value) = 'string' then app.try_timestamptz(value #>> '{}')
    end,
    now())
$$;

-- Applies statuses monotonically: rank sent 1 < delivered 2 < read 3; failed is
-- terminal and applies only to a message still at sent. A status applies only when
-- it moves the message forward, so replays and out-of-order deliveries change
-- nothing (a late `sent` after `read`, a `delivered` after `read`). Within one
-- call the highest-ranked status per wamid wins (failed above read). Statuses for
-- unknown wamids are kept in app.pending_waba_statuses for the report that will
-- store that wamid. Returns {applied, ignored, unknown} counting items.
create function app.apply_waba_statuses(statuses jsonb, remember_unknown boolean default true)
returns jsonb
language plpgsql
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
  result jsonb;
  wamids text[] := array(select x.e ->> 'wamid' from jsonb_array_elements(statuses) as x(e));
begin
  with items as (
    select x.i, x.e ->> 'wamid' as wamid, lower(x.e ->> 'status') as status,
           app.waba_timestamp(x.e -> 'timestamp') as ts,
           left(x.e ->> 'error_code', 100) as error_code, left(x.e ->> 'error_message', 1000) as error_message
    from jsonb_array_elements(statuses) with ordinality as x(e, i)
  ), ranked as (
    select it.*, case it.status when 'sent' then 1 when 'delivered' then 2 when 'read' then 3
                                when 'failed' then 4 end as rank,
           exists (select from app.messages m where m.wamid = it.wamid offset 0) as known  -- index probe
    from items it
  ), best as (
    select distinct on (r.wamid) r.*
    from ranked r
    where r.rank is not null and r.known
    order by r.wamid, r.rank desc, r.ts desc, r.i
  ), applied as (
    update app.messages m
    set status = b.status,
        delivered_at = case when b.status in ('delivered', 'read') then coalesce(m.delivered_at, b.ts)
                            else m.delivered_at end,
        read_at = case when b.status = 'read' then b.ts else m.read_at end,
        failed_at = case when b.status = 'failed' then b.ts else m.failed_at end,
        last_error_code = case when b.status = 'failed' then coalesce(b.error_code, 'waba_failed')
                               else m.last_error_code end,
        last_error_message = case when b.status = 'failed' then b.error_message else m.last_error_message end
    from best b
    where m.wamid = any (wamids)  -- drives the plan through messages_wamid_key
      and m.wamid = b.wamid
      and ((b.status = 'delivered' and m.status = 'sent')
        or (b.status = 'read' and m.status in ('sent', 'delivered'))
        or (b.status = 'failed' and m.status = 'sent'))
    returning m.id
  ), remembered as (
    insert into app.pending_waba_statuses (wamid, status, occurred_at, error_code, error_message)
    select distinct on (r.wamid, r.status) r.wamid, r.status, r.ts, r.error_code, r.error_message
    from ranked r
    where remember_unknown and not r.known and r.rank is not null
      and r.wamid is not null and length(r.wamid) between 1 and 200
    order by r.wamid, r.status, r.ts desc
    on conflict (wamid, status) do nothing
    returning 1
  )
  select jsonb_build_object(
    'applied', (select count(*) from applied),
    'ignored', (select count(*) from ranked r where r.known) - (select count(*) from applied),
    'unknown', (select count(*) from ranked r where not r.known))
    into result;
  return result;
end;
$$;

create function api.record_waba_statuses(statuses jsonb) returns jsonb
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

revoke execute on function api.record_waba_statuses from public;
grant execute on function api.record_waba_statuses to service_role;

-- Report --------------------------------------------------------------------------------------------------
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
create function api.report_message_results(results jsonb, worker text) returns jsonb
language plpgsql
security definer
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
  bad record;
  ids bigint[];
  counts record;
  sent_wamids text[];
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

  -- One cheap pass; the query that names the first bad item runs only on failure.
  if exists (
       select from jsonb_array_elements(results) as x(e)
       where jsonb_typeof(x.e) <> 'object'
          or coalesce(x.e ->> 'message_id', '') !~ '^[0-9]{1,18}$'
          or coalesce(x.e ->> 'outcome', '') not in ('sent', 'retry', 'failed')
          or (x.e ->> 'outcome' = 'sent' and (jsonb_typeof(x.e -> 'wamid') is distinct from 'string'
              or length(x.e ->> 'wamid') not between 1 and 200))
          or coalesce(jsonb_typeof(x.e -> 'retry_after_seconds'), 'null') not in ('number', 'null')
          or coalesce(jsonb_typeof(x.e -> 'error_code'), 'null') not in ('string', 'number', 'null')
          or coalesce(jsonb_typeof(x.e -> 'error_message'), 'null') not in ('string', 'null'))
     or (select count(*) <> count(distinct x.e ->> 'message_id')
                or count(*) filter (where x.e ->> 'outcome' = 'sent')
                   <> count(distinct x.e ->> 'wamid') filter (where x.e ->> 'outcome' = 'sent')
         from jsonb_array_elements(results) as x(e)) then
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
    if found then
      perform app.raise_error('invalid_results', format('Result %s is invalid: %s.', bad.idx, bad.reason), 400,
        jsonb_build_object('index', bad.idx, 'reason', bad.reason));
    end if;
  end if;

  ids := array(select (x.e ->> 'message_id')::bigint from jsonb_array_elements(results) as x(e));

  with items as (
    select r.message_id, r.outcome, r.wamid,
           left(r.error_code, 100) as error_code, left(r.error_message, 1000) as error_message,
           greatest(0, least(coalesce(r.retry_after_seconds, 0), 86400)) as retry_after
    from jsonb_to_recordset(results) as r(message_id bigint, outcome text, wamid text, error_code text,
                                          error_message text, retry_after_seconds numeric)
  ), applied as (
    update app.messages m
    set status = case
          when i.outcome = 'sent' then 'sent'
          when i.outcome = 'failed' then 'failed'
          when m.attempts >= m.max_attempts then 'dead'
          -- Back to the queue while the campaign dispatches, held while it is paused.
          when c.status = 'dispatching' then 'queued'
          when c.status in ('paused', 'scheduled') then 'held'
          else 'cancelled'
        end,
        wamid = case when i.outcome = 'sent' then i.wamid else m.wamid end,
        sent_at = case when i.outcome = 'sent' then now() else m.sent_at end,
        failed_at = case when i.outcome = 'failed' or (i.outcome = 'retry' and m.attempts >= m.max_attempts)
                         then now() else m.failed_at end,
        cancelled_at = case when i.outcome = 'retry' and m.attempts < m.max_attempts
                             and c.status not in ('dispatching', 'paused', 'scheduled')
                            then now() else m.cancelled_at end,
        next_attempt_at = case when i.outcome = 'retry'
          then now() + make_interval(secs => greatest(i.retry_after, app.backoff_seconds(m.attempts)))
          else m.next_attempt_at end,
        last_error_code = case when i.outcome = 'sent' then null else coalesce(i.error_code, 'unknown') end,
        last_error_message = case when i.outcome = 'sent' then null else i.error_message end,
        lease_owner = null,
        lease_expires_at = null
    from items i, app.campaigns c
    -- By primary key only: lease_owner is set exactly while a message is leased
    -- (messages_lease_fields), so this is "still leased to this worker" without
    -- inviting a scan of the leased-messages index.
    where m.id = any (ids)
      and m.id = i.message_id
      and m.lease_owner = report_message_results.worker
      and c.id = m.campaign_id
    returning m.id, m.status, m.wamid, m.voucher_id
  ), voided as (
    update app.vouchers v
    set status = 'void', voided_at = now(), void_reason = 'Campaign cancelled before the message was sent.'
    from applied a
    where a.status = 'cancelled' and v.id = a.voucher_id and v.status = 'issued'
    returning v.id
  )
  select count(*) as applied,
         count(*) filter (where a.status = 'sent') as sent,
         count(*) filter (where a.status in ('queued', 'held')) as retried,
         count(*) filter (where a.status = 'failed') as failed,
         count(*) filter (where a.status = 'dead') as dead,
         count(*) filter (where a.status = 'cancelled') as cancelled,
         array_agg(a.wamid) filter (where a.status = 'sent') as wamids
    into counts
  from applied a;
  sent_wamids := counts.wamids;

  -- Webhook statuses that arrived before this report.
  if sent_wamids is not null then
    with taken as (
      delete from app.pending_waba_statuses p where p.wamid = any (sent_wamids)
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

revoke execute on function api.report_message_results from public;
grant execute on function api.report_message_results to service_role;

-- Opt-outs ----------------------------------------------------------------------------------------------------
-- Idempotent: a second call changes nothing ("created": false). Also cancels the
-- number's queued and held messages (their vouchers are voided); a message leased
-- right now is caught at its next claim if it comes back for a retry.
create function api.record_opt_out(msisdn text, source text default 'api') returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  normalized text := app.normalize_msisdn(msisdn);
  created boolean;
  cancelled integer;
begin
  perform app.authorize(array['service']);
  if normalized is null or not app.is_e164(normalized) then
    perform app.raise_error('invalid_msisdn',
      format('"%s" is not an E.164 phone number such as +254700000001.', msisdn), 400);
  end if;
  if source is null or length(source) not between 1 and 100 then
    perform app.raise_error('invalid_opt_out_source', 'source must be 1 to 100 characters.', 400);
  end if;

  insert into app.opt_outs (msisdn, source) values (normalized, record_opt_out.source)
  on conflict on constraint opt_outs_pkey do nothing;
  created := found;

  with cancelled_messages as (
    update app.messages m
    set status = 'cancelled', cancelled_at = now(), last_error_code = 'opted_out',
        last_error_message = 'The recipient opted out; the message was not sent.'
    from app.campaign_targets t
    where t.msisdn = normalized and m.id = t.id and m.status in ('queued', 'held')
    returning m.voucher_id
  ), voided as (
    update app.vouchers v
    set status = 'void', voided_at = now(), void_reason = 'Recipient opted out before the message was sent.'
    from cancelled_messages c
    where v.id = c.voucher_id and v.status = 'issued'
    returning v.id
  )
  select count(*) into cancelled from cancelled_messages;

  return jsonb_build_object('msisdn', normalized, 'opted_out', true, 'created', created,
                            'cancelled_messages', cancelled);
end;
$$;

revoke execute on function api.record_opt_out from public;
grant execute on function api.record_opt_out to service_role;

-- Leases ---------------------------------------------------------------------------------------------------------
-- pg_cron job (every minute): expired leases (a crashed or stuck worker) go back
-- to the queue at once, or to dead when the message has used all its attempts
-- (the claim counted as one). Logged per channel in app.lease_reclaims.
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
    set status = case when m.attempts >= m.max_attempts then 'dead'
                      when c.status = 'dispatching' then 'queued'
                      when c.status in ('paused', 'scheduled') then 'held'
                      else 'cancelled' end,
        next_attempt_at = now(),
        failed_at = case when m.attempts >= m.max_attempts then now() else m.failed_at end,
        cancelled_at = case when m.attempts < m.max_attempts
                                 and c.status not in ('dispatching', 'paused', 'scheduled')
                            then now() else m.cancelled_at end,
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
  'pg_cron: returns messages whose lease expired to the queue (dead after max_attempts); logs app.lease_reclaims.';

-- Ops -----------------------------------------------------------------------------------------------------------------
-- Queue health per channel: depth by status (queued, of which due now; held;
-- leased), age of the oldest due message, messages claimed in the last minute vs
-- the rate, tokens now, leases reclaimed in the last hour.
create function api.queue_health() returns jsonb
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
        'rate_per_minute', c.rate_per_minute,
        'burst', c.burst,
        'tokens', floor(least(c.burst, c.tokens + greatest(0, extract(epoch from clock_timestamp() - c.refilled_at))
                                                 * c.rate_per_minute / 60.0)),
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

revoke execute on function api.queue_health from public;
grant execute on function api.queue_health to authenticated, service_role;
