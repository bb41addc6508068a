-- Staff and station lifecycle: deactivate and reactivate, and list them.
--
-- Effective on the very next request, because nothing caches either flag:
-- app.current_actor reads app.staff (`where active`) on every call, so a
-- deactivated staff member is `not_authorized` from their next request on,
-- whatever their JWT says; app.redeem_station reads app.stations on every
-- redeem, so an inactive station's operators cannot redeem there
-- (station_not_found) nor undo there. Rows are never deleted (redemptions and
-- the audit log point at them); every change is audited by the tables'
-- triggers.

create function app.station_row(s app.stations) returns jsonb
language sql stable
set search_path = ''
as $$
  select pg_catalog.to_jsonb(s)
$$;

create function app.staff_row(s app.staff) returns jsonb
language sql stable
set search_path = ''
as $$
  select pg_catalog.to_jsonb(s)
$$;

-- Sets a station's `active` flag; idempotent (a station already in that state
-- is returned unchanged, and nothing is audited).
create function app.set_station_active(station_id uuid, active boolean) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  station app.stations;
begin
  update app.stations s set active = set_station_active.active
  where s.id = set_station_active.station_id and s.active <> set_station_active.active
  returning * into station;
  if not found then
    select * into station from app.stations s where s.id = set_station_active.station_id;
    if not found then
      perform app.raise_error('station_not_found',
        format('Station "%s" does not exist.', set_station_active.station_id), 404);
    end if;
  end if;
  return app.station_row(station);
end;
$$;

create function api.deactivate_station(station_id uuid) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform app.authorize(array['admin', 'service']);
  return app.set_station_active(station_id, false);
end;
$$;

revoke execute on function api.deactivate_station from public;
grant execute on function api.deactivate_station to authenticated, service_role;

create function api.reactivate_station(station_id uuid) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform app.authorize(array['admin', 'service']);
  return app.set_station_active(station_id, true);
end;
$$;

revoke execute on function api.reactivate_station from public;
grant execute on function api.reactivate_station to authenticated, service_role;

-- Sets a staff member's `active` flag; idempotent like app.set_station_active.
-- An admin cannot deactivate themselves (the service role can deactivate anyone),
-- so an operator never locks the last admin out by mistake from the admin app.
create function app.set_staff_active(actor app.actor, user_id uuid, active boolean) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  member app.staff;
begin
  if not set_staff_active.active and actor.user_id is not distinct from set_staff_active.user_id then
    perform app.raise_error('cannot_deactivate_self', 'You cannot deactivate your own staff account.', 409);
  end if;
  update app.staff s set active = set_staff_active.active
  where s.user_id = set_staff_active.user_id and s.active <> set_staff_active.active
  returning * into member;
  if not found then
    select * into member from app.staff s where s.user_id = set_staff_active.user_id;
    if not found then
      perform app.raise_error('staff_not_found',
        format('User "%s" is not a staff member.', set_staff_active.user_id), 404);
    end if;
  end if;
  return app.staff_row(member);
end;
$$;

create function api.deactivate_staff(user_id uuid) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  actor app.actor := app.authorize(array['admin', 'service']);
begin
  return app.set_staff_active(actor, user_id, false);
end;
$$;

revoke execute on function api.deactivate_staff from public;
grant execute on function api.deactivate_staff to authenticated, service_role;

create function api.reactivate_staff(user_id uuid) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  actor app.actor := app.authorize(array['admin', 'service']);
begin
  return app.set_staff_active(actor, user_id, true);
end;
$$;

revoke execute on function api.reactivate_staff from public;
grant execute on function api.reactivate_staff to authenticated, service_role;

-- Lists ----------------------------------------------------------------------------------
-- Keyset pages of at most 500 rows (default 200): `after` is the last row's
-- ordering key (the station's code; the staff member's user_id). Rows are a
-- composite type rather than RETURNS TABLE so that filters may be named like
-- the columns they filter; set-returning, so they export as CSV.

create type app.station_list_row as (
  id uuid,
  code text,
  name text,
  region text,
  active boolean,
  created_at timestamptz,
  -- Active operators bound to the station.
  operators bigint
);

create type app.staff_list_row as (
  user_id uuid,
  email text,
  role text,
  station_id uuid,
  station_code text,
  active boolean,
  created_at timestamptz
);

create function api.list_stations(
  active boolean default null,
  region text default null,
  after text default null,
  page_size integer default 200
) returns setof app.station_list_row
language plpgsql stable
security definer
set search_path = ''
as $$
begin
  perform app.authorize(array['admin', 'service']);
  perform app.check_page_size(page_size);
  return query
  select s.id, s.code, s.name, s.region, s.active, s.created_at,
         (select count(*) from app.staff st where st.station_id = s.id and st.active)
  from app.stations s
  where (list_stations.active is null or s.active = list_stations.active)
    and (list_stations.region is null or s.region = list_stations.region)
    and (list_stations.after is null or s.code > list_stations.after)
  order by s.code
  limit page_size;
end;
$$;

revoke execute on function api.list_stations from public;
grant execute on function api.list_stations to authenticated, service_role;

create function api.list_staff(
  role text default null,
  station_id uuid default null,
  active boolean default null,
  after uuid default null,
  page_size integer default 200
) returns setof app.staff_list_row
language plpgsql stable
security definer
set search_path = ''
as $$
begin
  perform app.authorize(array['admin', 'service']);
  perform app.check_page_size(page_size);
  if list_staff.role is not null and list_staff.role not in ('admin', 'station_operator') then
    perform app.raise_error('invalid_staff_role',
      format('role must be "admin" or "station_operator", got "%s".', list_staff.role), 400);
  end if;
  return query
  select st.user_id, u.email::text, st.role, st.station_id, s.code, st.active, st.created_at
  from app.staff st
  join auth.users u on u.id = st.user_id
  left join app.stations s on s.id = st.station_id
  where (list_staff.role is null or st.role = list_staff.role)
    and (list_staff.station_id is null or st.station_id = list_staff.station_id)
    and (list_staff.active is null or st.active = list_staff.active)
    and (list_staff.after is null or st.user_id > list_staff.after)
  order by st.user_id
  limit page_size;
end;
$$;

revoke execute on function api.list_staff from public;
grant execute on function api.list_staff to authenticated, service_role;
