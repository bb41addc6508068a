-- Stations, staff, and who is calling.
--
-- Every table is private (`app`, RLS on, no policies: nobody reads them directly).
-- Clients go through `api` RPCs that are `security definer`, pinned to an empty
-- search_path, and authorise the caller themselves (app.authorize) from the
-- database role and the JWT's `sub`.

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
-- gateway/PostgREST only sets that role from a key or JWT the project issued, so
-- the database role decides, never a claim in the token.
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
  'Authorises the caller (service, admin, station_operator) from the database role and auth.uid(); raises not_authorized 403.';

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
