-- Campaigns and their vouchers: the campaign record (value, validity, stations,
-- and the optional WhatsApp template it is sent with), issuance, preview,
-- listing, void and expiry.

-- Template parameters -----------------------------------------------------------
-- A campaign may be sent as a WhatsApp template. Its name and language are
-- checked here once, by these functions, wherever they are written.
create function app.is_template_name(value text) returns boolean
language sql immutable parallel safe
set search_path = ''
as $$
  select value ~ '^[a-z0-9_]+$' and pg_catalog.length(value) <= 512
$$;

comment on function app.is_template_name(text) is
  'True for a WhatsApp template name: lower-case letters, digits and underscores, at most 512 characters.';

create function app.is_template_language(value text) returns boolean
language sql immutable parallel safe
set search_path = ''
as $$
  select value ~ '^[a-z]{2,3}(_[A-Za-z]{2,4})?$'
$$;

comment on function app.is_template_language(text) is
  'True for a WhatsApp template language code such as "en" or "en_US".';

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


-- Campaigns ---------------------------------------------------------------------------

create table app.campaigns (
  id uuid primary key default gen_random_uuid(),
  name text not null check (length(name) between 1 and 200),
  amount_minor bigint not null check (amount_minor > 0),
  currency app.currency_code not null,
  starts_at timestamptz not null default now(),
  expires_at timestamptz,
  -- Stations where this campaign's vouchers may be redeemed; empty = all stations.
  station_ids uuid[] not null default '{}',
  status text not null default 'draft'
    check (status in ('draft', 'scheduled', 'dispatching', 'completed', 'paused', 'cancelled')),
  created_by uuid,
  created_at timestamptz not null default now(),
  -- Dispatch (all optional: a voucher-only campaign has none of them).
  channel_id uuid references app.channels (id),
  template_name text check (app.is_template_name(template_name)),
  template_language text not null default 'en' check (app.is_template_language(template_language)),
  template_params jsonb not null default '[]' check (app.template_params_valid(template_params)),
  -- When dispatch starts (schedule_campaign's start_at).
  scheduled_for timestamptz,
  scheduled_at timestamptz,
  scheduled_by uuid,
  dispatch_started_at timestamptz,
  paused_at timestamptz,
  completed_at timestamptz,
  cancelled_at timestamptz,
  -- Targets with id <= enqueue_cursor have a message (enqueued in target id order).
  enqueue_cursor bigint not null default 0,
  -- The last error of the enqueue job for this campaign (cleared by a successful chunk).
  dispatch_error text,
  updated_at timestamptz not null default now(),
  constraint campaigns_validity_window check (expires_at is null or expires_at > starts_at)
);

create index campaigns_status_idx on app.campaigns (status) where status not in ('completed', 'cancelled');
create index campaigns_channel_id_idx on app.campaigns (channel_id);
create index campaigns_scheduled_due_idx on app.campaigns (scheduled_for) where status = 'scheduled';

comment on table app.campaigns is
  'Voucher campaigns: value in integer minor units + ISO 4217 currency, validity window, station restriction, optional WhatsApp template.';
comment on column app.campaigns.amount_minor is 'Voucher value in minor units of currency (e.g. cents).';
comment on column app.campaigns.template_params is
  'Body parameters of the template, in order: "voucher_code" | "amount" | "amount_minor" | "currency" | "expires_at" | "campaign_name" | {"text": …} | {"attribute": …}.';
comment on column app.campaigns.enqueue_cursor is 'Targets with id <= enqueue_cursor have been enqueued.';

alter table app.campaigns enable row level security;

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

-- A campaign as the API returns it.
create function app.campaign_view(c app.campaigns) returns jsonb
language sql stable
set search_path = ''
as $$
  select pg_catalog.to_jsonb(c) - 'enqueue_cursor'
$$;

-- create_campaign: the voucher arguments, then the dispatch ones (all optional,
-- so voucher-only campaigns need none of them). PostgREST resolves functions by
-- argument names, so there is exactly one create_campaign.
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
  if currency is null or not app.is_currency_code(upper(currency)) then
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
  if template_name is not null and not app.is_template_name(template_name) then
    perform app.raise_error('invalid_template',
      format('template_name must be a WhatsApp template name (a-z, 0-9, _), got "%s".', template_name), 400,
      jsonb_build_object('field', 'template_name'));
  end if;
  if template_language is null or not app.is_template_language(template_language) then
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


-- Vouchers ------------------------------------------------------------------------------

-- Every voucher of a batch shares its expiry (app.issue_batch writes one value to
-- both), so the expiry job finds due vouchers through their batch.
create table app.voucher_batches (
  id uuid primary key default gen_random_uuid(),
  campaign_id uuid not null references app.campaigns (id),
  issued integer not null check (issued > 0),
  expires_at timestamptz,
  issued_by uuid,
  created_at timestamptz not null default now(),
  -- When the expiry job found no issued voucher left in this expired batch; null
  -- while it may still hold some.
  expiry_swept_at timestamptz,
  -- Target of the vouchers' composite foreign key (batch and campaign agree).
  constraint voucher_batches_id_campaign_key unique (id, campaign_id)
);

create index voucher_batches_campaign_id_idx on app.voucher_batches (campaign_id);
-- The expiry job's scan: batches past expiry that may still hold issued vouchers.
create index voucher_batches_expiry_due_idx on app.voucher_batches (expires_at)
  where expires_at is not null and expiry_swept_at is null;

comment on column app.voucher_batches.expiry_swept_at is
  'When the expiry job found no issued voucher left in this expired batch; null while it may still hold some.';

-- Vouchers are updated in place (HOT): no index names `status`, not even in a
-- predicate, and pages keep 15% free, so a redeem, a void or an expiry writes one
-- heap tuple and no index entries. (A non-HOT update would insert into every
-- index; the code index is random, so that was a full-page image in the WAL per
-- redeem after each checkpoint.) The immutable columns are domains, checked
-- when written, not on every status change.
create table app.vouchers (
  id bigint generated always as identity primary key,
  -- Canonical code: 15 Crockford base32 characters, the last one a check character.
  code app.voucher_code not null unique,
  campaign_id uuid not null,
  batch_id uuid not null,
  status text not null default 'issued' check (status in ('issued', 'redeemed', 'void', 'expired')),
  -- Value frozen at issuance, so editing a campaign never changes issued vouchers.
  amount_minor bigint not null check (amount_minor > 0),
  currency app.currency_code not null,
  expires_at timestamptz,
  issued_at timestamptz not null default now(),
  redeemed_at timestamptz,
  redeemed_station_id uuid references app.stations (id),
  redeemed_by uuid,
  voided_at timestamptz,
  voided_by uuid,
  void_reason text check (length(void_reason) <= 500),
  constraint vouchers_redeemed_fields check (
    (status = 'redeemed') = (redeemed_at is not null and redeemed_station_id is not null)),
  constraint vouchers_void_fields check ((status = 'void') = (voided_at is not null)),
  -- One composite key proves both that the batch exists and that the voucher's
  -- campaign is the batch's (whose own FK proves the campaign exists): one
  -- lookup per inserted row instead of two.
  constraint vouchers_batch_fkey foreign key (batch_id, campaign_id)
    references app.voucher_batches (id, campaign_id)
) with (fillfactor = 85);  -- a voucher changes at most once after issue: room to stay on its page

-- Keyset pagination of list_vouchers by campaign or by batch; the batch index is
-- also the expiry job's path from a due batch to its vouchers.
create index vouchers_campaign_id_id_idx on app.vouchers (campaign_id, id);
create index vouchers_batch_id_id_idx on app.vouchers (batch_id, id);

comment on table app.vouchers is
  'One row per voucher; status issued → redeemed | void | expired, updated in place (HOT: no index names status). Rows are never deleted.';

alter table app.voucher_batches enable row level security;
alter table app.vouchers enable row level security;

-- Issuance ---------------------------------------------------------------------------------

-- Issues `count` vouchers for a campaign in one set-based insert. Codes carry 70
-- random bits, so a collision with an existing code is vanishingly rare; when one
-- happens `on conflict do nothing` drops it and the loop tops the batch up.
-- The API caps a call at 5,000; campaign scheduling reuses this for its targets.
create function app.issue_batch(
  campaign_id uuid,
  count integer,
  expires_at timestamptz default null,
  issued_by uuid default null
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  campaign app.campaigns;
  batch_id uuid := gen_random_uuid();
  expiry timestamptz;
  inserted integer := 0;
  n integer;
  attempts integer := 0;
begin
  select * into campaign from app.campaigns c where c.id = issue_batch.campaign_id;
  if not found then
    perform app.raise_error('campaign_not_found',
      format('Campaign "%s" does not exist.', issue_batch.campaign_id), 404);
  end if;
  if campaign.status in ('completed', 'cancelled') then
    perform app.raise_error('campaign_not_active',
      format('Campaign "%s" is %s; it cannot issue vouchers.', campaign.id, campaign.status), 409,
      jsonb_build_object('status', campaign.status));
  end if;

  expiry := coalesce(issue_batch.expires_at, campaign.expires_at);
  if expiry is not null and expiry <= now() then
    perform app.raise_error('invalid_expiry',
      format('Expiry %s is in the past.', expiry), 400);
  end if;

  insert into app.voucher_batches (id, campaign_id, issued, expires_at, issued_by)
  values (batch_id, campaign.id, issue_batch.count, expiry, issue_batch.issued_by);

  while inserted < issue_batch.count loop
    attempts := attempts + 1;
    if attempts > 5 then
      raise exception 'Could not generate % unique voucher codes', issue_batch.count;
    end if;
    insert into app.vouchers (code, campaign_id, batch_id, amount_minor, currency, expires_at)
    select code, campaign.id, batch_id, campaign.amount_minor, campaign.currency, expiry
    from app.new_codes(issue_batch.count - inserted) as code
    on conflict (code) do nothing;
    get diagnostics n = row_count;
    inserted := inserted + n;
  end loop;

  return jsonb_build_object(
    'batch_id', batch_id,
    'campaign_id', campaign.id,
    'issued', inserted,
    'expires_at', expiry
  );
end;
$$;

comment on function app.issue_batch is
  'Set-based issuance of count vouchers (no upper bound here; the API caps calls at 5,000).';


-- pg_cron: issued vouchers past their expiry become `expired`, oldest batch first,
-- at most max_vouchers per run. (Reads already treat such a voucher as expired,
-- and redeem refuses it: this job makes the stored status match.) A voucher
-- locked by a request in flight is skipped, and its batch stays due until a run
-- finds none.
create function app.expire_vouchers(max_vouchers integer default 10000) returns integer
language plpgsql
set search_path = ''
as $$
declare
  batch record;
  expired integer := 0;
  n integer;
begin
  for batch in
    select b.id
    from app.voucher_batches b
    where b.expires_at <= now() and b.expiry_swept_at is null
    order by b.expires_at
    for update skip locked
  loop
    exit when expired >= max_vouchers;
    with due as (
      select v.id
      from app.vouchers v
      where v.batch_id = batch.id and v.status = 'issued' and v.expires_at <= now()
      order by v.id
      limit max_vouchers - expired
      for update skip locked
    )
    update app.vouchers v set status = 'expired'
    from due
    where v.id = due.id;
    get diagnostics n = row_count;
    expired := expired + n;
    if not exists (select from app.vouchers v where v.batch_id = batch.id and v.status = 'issued') then
      update app.voucher_batches b set expiry_swept_at = now() where b.id = batch.id;
    end if;
  end loop;
  return expired;
end;
$$;

comment on function app.expire_vouchers is
  'pg_cron: marks up to max_vouchers issued vouchers of expired batches as expired (voucher_batches_expiry_due_idx, then vouchers_batch_id_id_idx).';

-- API: vouchers -----------------------------------------------------------------------------

create function api.issue_vouchers(
  campaign_id uuid,
  count integer,
  idempotency_key text,
  expires_at timestamptz default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  actor app.actor := app.authorize(array['admin', 'service']);
  stored jsonb;
begin
  if count is null or count not between 1 and 5000 then
    perform app.raise_error('invalid_count',
      format('count must be between 1 and 5000, got %s.', coalesce(count::text, 'null')), 400);
  end if;
  stored := app.idempotency_claim('issue_vouchers', idempotency_key, jsonb_build_object(
    'campaign_id', campaign_id, 'count', count, 'expires_at', expires_at, 'actor', actor.user_id));
  if stored is not null then
    return stored;
  end if;
  return app.idempotency_save('issue_vouchers', idempotency_key,
    app.issue_batch(campaign_id, count, expires_at, actor.user_id));
end;
$$;

revoke execute on function api.issue_vouchers from public;
grant execute on function api.issue_vouchers to authenticated, service_role;

-- A voucher as staff see it. `status` is the effective status: an issued voucher
-- past its expiry reads as expired before the expiry job marks it.
create function app.voucher_view(v app.vouchers) returns jsonb
language sql stable
set search_path = ''
as $$
  select jsonb_build_object(
    'code', app.format_code(v.code),
    'status', case when v.status = 'issued' and v.expires_at <= now() then 'expired' else v.status end,
    'amount_minor', v.amount_minor,
    'currency', v.currency,
    'campaign_id', v.campaign_id,
    'campaign_name', c.name,
    'expires_at', v.expires_at,
    'redeemable_at', case when cardinality(c.station_ids) = 0 then to_jsonb('all'::text)
      else (select coalesce(jsonb_agg(jsonb_build_object('id', s.id, 'code', s.code, 'name', s.name)
                                      order by s.code), '[]'::jsonb)
            from app.stations s where s.id = any (c.station_ids)) end,
    'redeemed_at', v.redeemed_at,
    'redeemed_station', (select jsonb_build_object('id', s.id, 'code', s.code, 'name', s.name)
                         from app.stations s where s.id = v.redeemed_station_id),
    'voided_at', v.voided_at
  )
  from app.campaigns c
  where c.id = v.campaign_id
$$;

create function api.preview_voucher(code text) returns jsonb
language plpgsql stable
security definer
set search_path = ''
as $$
declare
  actor app.actor := app.authorize(array['admin', 'station_operator', 'service']);
  canonical text := app.parse_code(code);
  voucher app.vouchers;
  campaign_stations uuid[];
  view jsonb;
begin
  select * into voucher from app.vouchers v where v.code = canonical;
  if not found then
    perform app.raise_error('voucher_not_found',
      format('Voucher "%s" does not exist.', app.format_code(canonical)), 404);
  end if;
  view := app.voucher_view(voucher);
  if actor.role = 'station_operator' then
    select c.station_ids into campaign_stations from app.campaigns c where c.id = voucher.campaign_id;
    view := view || jsonb_build_object('redeemable_here',
      view ->> 'status' = 'issued'
      and (cardinality(campaign_stations) = 0 or actor.station_id = any (campaign_stations)));
  end if;
  return view;
end;
$$;

revoke execute on function api.preview_voucher from public;
grant execute on function api.preview_voucher to authenticated, service_role;

create function api.list_vouchers(
  campaign_id uuid,
  status text default null,
  batch_id uuid default null,
  after bigint default null,
  page_size integer default 100
) returns jsonb
language plpgsql stable
security definer
set search_path = ''
as $$
declare
  rows jsonb;
  last_id bigint;
  n integer;
begin
  perform app.authorize(array['admin', 'service']);
  if page_size is null or page_size not between 1 and 500 then
    perform app.raise_error('invalid_page_size',
      format('page_size must be between 1 and 500, got %s.', coalesce(page_size::text, 'null')), 400);
  end if;
  if status is not null and status not in ('issued', 'redeemed', 'void', 'expired') then
    perform app.raise_error('invalid_status',
      format('status must be issued, redeemed, void or expired, got "%s".', status), 400);
  end if;
  if not exists (select from app.campaigns c where c.id = list_vouchers.campaign_id) then
    perform app.raise_error('campaign_not_found',
      format('Campaign "%s" does not exist.', list_vouchers.campaign_id), 404);
  end if;

  -- Keyset pagination on id: each page is an index range scan, however deep.
  select coalesce(jsonb_agg(jsonb_build_object(
           'id', p.id, 'code', app.format_code(p.code), 'status', p.status,
           'amount_minor', p.amount_minor, 'currency', p.currency, 'batch_id', p.batch_id,
           'expires_at', p.expires_at, 'issued_at', p.issued_at, 'redeemed_at', p.redeemed_at,
           'redeemed_station_id', p.redeemed_station_id, 'voided_at', p.voided_at)
           order by p.id), '[]'::jsonb),
         max(p.id), count(*)
    into rows, last_id, n
  from (
    select v.* from app.vouchers v
    where v.campaign_id = list_vouchers.campaign_id
      and (list_vouchers.status is null or v.status = list_vouchers.status)
      and (list_vouchers.batch_id is null or v.batch_id = list_vouchers.batch_id)
      and (list_vouchers.after is null or v.id > list_vouchers.after)
    order by v.id
    limit page_size
  ) p;

  return jsonb_build_object(
    'vouchers', rows,
    'next_cursor', case when n = page_size then last_id end
  );
end;
$$;

revoke execute on function api.list_vouchers from public;
grant execute on function api.list_vouchers to authenticated, service_role;

create function api.void_voucher(code text, reason text, idempotency_key text) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  actor app.actor := app.authorize(array['admin', 'service']);
  canonical text := app.parse_code(code);
  stored jsonb;
  voucher app.vouchers;
begin
  if reason is null or length(trim(reason)) not between 1 and 500 then
    perform app.raise_error('invalid_reason', 'A void reason of 1 to 500 characters is required.', 400);
  end if;
  stored := app.idempotency_claim('void_voucher', idempotency_key,
    jsonb_build_object('code', canonical, 'reason', reason, 'actor', actor.user_id));
  if stored is not null then
    return stored;
  end if;

  -- Check-and-void in one conditional statement: concurrent redeems and voids
  -- serialise on the row lock, and only an unexpired issued voucher matches.
  update app.vouchers v
  set status = 'void', voided_at = now(), voided_by = actor.user_id, void_reason = trim(reason)
  where v.code = canonical and v.status = 'issued' and (v.expires_at is null or v.expires_at > now())
  returning * into voucher;

  if not found then
    select * into voucher from app.vouchers v where v.code = canonical;
    if not found then
      perform app.raise_error('voucher_not_found',
        format('Voucher "%s" does not exist.', app.format_code(canonical)), 404);
    end if;
    perform app.raise_error('voucher_not_issued',
      format('Voucher "%s" is %s; only an issued voucher can be voided.',
             app.format_code(canonical), app.voucher_view(voucher) ->> 'status'), 409,
      jsonb_build_object('status', app.voucher_view(voucher) ->> 'status'));
  end if;

  return app.idempotency_save('void_voucher', idempotency_key, app.voucher_view(voucher));
end;
$$;

revoke execute on function api.void_voucher from public;
grant execute on function api.void_voucher to authenticated, service_role;
