-- Stations, staff, campaigns and vouchers: issuance, preview, listing and void.
--
-- Every table is private (`app`, RLS on, no policies: nobody reads them directly).
-- Clients go through `api` RPCs that are `security definer`, pinned to an empty
-- search_path, and authorise the caller themselves from the JWT.

-- Stations and staff -----------------------------------------------------------

create table app.stations (
  id uuid primary key default gen_random_uuid(),
  code text not null unique check (code ~ '^[A-Z0-9][A-Z0-9_-]{1,31}$'),
  name text not null check (length(name) between 1 and 200),
  region text check (length(region) <= 100),
  active boolean not null default true,
  created_at timestamptz not null default now()
);

comment on table app.stations is 'Fuel/retail stations where vouchers are redeemed.';

create table app.staff (
  user_id uuid primary key references auth.users (id) on delete cascade,
  role text not null check (role in ('admin', 'station_operator')),
  -- A station operator is bound to exactly one station; an admin to none.
  station_id uuid references app.stations (id),
  active boolean not null default true,
  created_at timestamptz not null default now(),
  constraint staff_station_matches_role check ((role = 'station_operator') = (station_id is not null))
);

create index staff_station_id_idx on app.staff (station_id);

comment on table app.staff is 'Maps auth.users to an application role; operators are bound to one station.';

alter table app.stations enable row level security;
alter table app.staff enable row level security;

-- Who is calling. `service_role` is trusted (dispatcher, cron, ops scripts): the
-- gateway/PostgREST only sets that role from a JWT signed with the project secret.
create type app.actor as (user_id uuid, role text, station_id uuid);

create function app.current_actor() returns app.actor
language plpgsql stable
as $$
declare
  actor app.actor;
begin
  if current_setting('role', true) = 'service_role' or current_user = 'service_role' then
    return row(null, 'service', null)::app.actor;
  end if;
  select s.user_id, s.role, s.station_id into actor
  from app.staff s
  where s.user_id = auth.uid() and s.active;
  return actor;  -- all fields null when the caller is not staff
end;
$$;

-- Returns the caller when their role is in `allowed`, else raises not_authorized (403).
create function app.authorize(allowed text[]) returns app.actor
language plpgsql stable
as $$
declare
  actor app.actor := app.current_actor();
begin
  if actor.role is null or not actor.role = any (allowed) then
    perform app.raise_error('not_authorized',
      format('This action needs one of the roles: %s.', array_to_string(allowed, ', ')), 403);
  end if;
  return actor;
end;
$$;

comment on function app.authorize is
  'Authorises the caller (service, admin, station_operator) from auth.uid()/role; raises not_authorized 403.';

-- Campaigns ---------------------------------------------------------------------

create table app.campaigns (
  id uuid primary key default gen_random_uuid(),
  name text not null check (length(name) between 1 and 200),
  amount_minor bigint not null check (amount_minor > 0),
  currency text not null check (currency ~ '^[A-Z]{3}$'),
  starts_at timestamptz not null default now(),
  expires_at timestamptz,
  -- Stations where this campaign's vouchers may be redeemed; empty = all stations.
  station_ids uuid[] not null default '{}',
  status text not null default 'draft'
    check (status in ('draft', 'scheduled', 'dispatching', 'completed', 'paused', 'cancelled')),
  created_by uuid,
  created_at timestamptz not null default now(),
  constraint campaigns_validity_window check (expires_at is null or expires_at > starts_at)
);

create index campaigns_status_idx on app.campaigns (status) where status not in ('completed', 'cancelled');

comment on table app.campaigns is 'Voucher campaigns: value in integer minor units + ISO 4217 currency, validity window, station restriction.';
comment on column app.campaigns.amount_minor is 'Voucher value in minor units of currency (e.g. cents).';

alter table app.campaigns enable row level security;

-- Vouchers ----------------------------------------------------------------------

create table app.voucher_batches (
  id uuid primary key default gen_random_uuid(),
  campaign_id uuid not null references app.campaigns (id),
  issued integer not null check (issued > 0),
  expires_at timestamptz,
  issued_by uuid,
  created_at timestamptz not null default now(),
  -- Target of the vouchers' composite foreign key (batch and campaign agree).
  constraint voucher_batches_id_campaign_key unique (id, campaign_id)
);

create index voucher_batches_campaign_id_idx on app.voucher_batches (campaign_id);

create table app.vouchers (
  id bigint generated always as identity primary key,
  -- Canonical code: 15 Crockford base32 characters, the last one a check character.
  code text not null unique check (code ~ '^[0-9A-HJKMNP-TV-Z]{15}$'),
  campaign_id uuid not null,
  batch_id uuid not null,
  status text not null default 'issued' check (status in ('issued', 'redeemed', 'void', 'expired')),
  -- Value frozen at issuance, so editing a campaign never changes issued vouchers.
  amount_minor bigint not null check (amount_minor > 0),
  currency text not null check (currency ~ '^[A-Z]{3}$'),
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
);

-- Hot predicates: unredeemed vouchers of a campaign, and the expiry job's scan.
create index vouchers_campaign_issued_idx on app.vouchers (campaign_id, id) where status = 'issued';
create index vouchers_issued_expires_at_idx on app.vouchers (expires_at)
  where status = 'issued' and expires_at is not null;
-- Keyset pagination of list_vouchers by campaign or by batch.
create index vouchers_campaign_id_id_idx on app.vouchers (campaign_id, id);
create index vouchers_batch_id_id_idx on app.vouchers (batch_id, id);

comment on table app.vouchers is 'One row per voucher; status issued → redeemed | void | expired. Rows are never deleted.';

alter table app.voucher_batches enable row level security;
alter table app.vouchers enable row level security;

-- Issuance ------------------------------------------------------------------------

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

-- API: staff administration ---------------------------------------------------------

create function api.create_station(code text, name text, region text default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  station app.stations;
begin
  perform app.authorize(array['admin', 'service']);
  insert into app.stations (code, name, region)
  values (upper(create_station.code), create_station.name, create_station.region)
  on conflict on constraint stations_code_key do nothing
  returning * into station;
  if station.id is null then
    perform app.raise_error('station_exists',
      format('A station with code "%s" already exists.', upper(create_station.code)), 409);
  end if;
  return to_jsonb(station);
end;
$$;

revoke execute on function api.create_station from public;
grant execute on function api.create_station to authenticated, service_role;

create function api.set_staff(user_id uuid, role text, station_id uuid default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  staff app.staff;
begin
  perform app.authorize(array['admin', 'service']);
  if set_staff.role not in ('admin', 'station_operator')
    or (set_staff.role = 'station_operator') <> (set_staff.station_id is not null) then
    perform app.raise_error('invalid_staff_role',
      'Role must be "admin" (no station) or "station_operator" (with station_id).', 400);
  end if;
  if not exists (select from auth.users u where u.id = set_staff.user_id) then
    perform app.raise_error('user_not_found', format('User "%s" does not exist.', set_staff.user_id), 404);
  end if;
  if set_staff.station_id is not null
    and not exists (select from app.stations s where s.id = set_staff.station_id) then
    perform app.raise_error('station_not_found',
      format('Station "%s" does not exist.', set_staff.station_id), 404);
  end if;
  insert into app.staff as s (user_id, role, station_id)
  values (set_staff.user_id, set_staff.role, set_staff.station_id)
  on conflict on constraint staff_pkey do update
    set role = excluded.role, station_id = excluded.station_id, active = true
  returning * into staff;
  return to_jsonb(staff);
end;
$$;

revoke execute on function api.set_staff from public;
grant execute on function api.set_staff to authenticated, service_role;

-- API: campaigns and vouchers ---------------------------------------------------------

-- api.create_campaign is defined once, in the dispatch migration, where the
-- channels it may name exist: its voucher arguments (name, amount_minor,
-- currency, starts_at, expires_at, station_ids) and the optional dispatch ones.

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
  "limit" integer default 100
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
  if "limit" is null or "limit" not between 1 and 500 then
    perform app.raise_error('invalid_limit', format('limit must be between 1 and 500, got %s.', "limit"), 400);
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
    limit "limit"
  ) p;

  return jsonb_build_object(
    'vouchers', rows,
    'next_cursor', case when n = "limit" then last_id end
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
