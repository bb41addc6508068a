-- pgTAP actors and fixtures, included by each test file (`\ir helpers.sql`) inside
-- its transaction, so everything here is rolled back with the test.
--
-- Actors follow Basejump's supabase-test-helpers: tests.authenticate_as(user)
-- switches to the `authenticated` role with that user's JWT claims, exactly what
-- PostgREST does per request; tests.authenticate_as_service_role() and
-- tests.authenticate_as_anon() do the same for the other platform roles.

create schema if not exists tests;
grant usage on schema tests to public;

create function tests.create_user(email text) returns uuid
language sql
as $$
  insert into auth.users (email) values (email) returning id
$$;

create function tests.authenticate_as(user_id uuid) returns void
language plpgsql
as $$
begin
  perform set_config('request.jwt.claims',
    json_build_object('sub', user_id, 'role', 'authenticated', 'aud', 'authenticated')::text, true);
  set local role authenticated;
end;
$$;

create function tests.authenticate_as_service_role() returns void
language plpgsql
as $$
begin
  perform set_config('request.jwt.claims', '{"role": "service_role"}', true);
  set local role service_role;
end;
$$;

create function tests.authenticate_as_anon() returns void
language plpgsql
as $$
begin
  perform set_config('request.jwt.claims', '{"role": "anon"}', true);
  set local role anon;
end;
$$;

create function tests.clear_authentication() returns void
language plpgsql
as $$
begin
  perform set_config('request.jwt.claims', '', true);
  reset role;
end;
$$;

-- A station and its staff: returns the station id; creates an admin and an
-- operator whose ids are then found with tests.user_id(email).
create function tests.create_station(code text) returns uuid
language sql
as $$
  insert into app.stations (code, name, region) values (code, 'Station ' || code, 'Test')
  returning id
$$;

create function tests.create_staff(email text, role text, station_id uuid default null) returns uuid
language sql
as $$
  with u as (insert into auth.users (email) values (email) returning id)
  insert into app.staff (user_id, role, station_id) select u.id, role, station_id from u
  returning user_id
$$;

create function tests.user_id(email text) returns uuid
language sql stable
as $$
  select id from auth.users where auth.users.email = user_id.email
$$;

-- The business error a statement raises, as {code, message, details, status}
-- (details parsed back from its JSON text), or null when it raises none.
create function tests.error(statement text) returns jsonb
language plpgsql
as $$
declare
  detail text;
begin
  execute statement;
  return null;
exception when sqlstate 'PGRST' then
  get stacked diagnostics detail = pg_exception_detail;
  return jsonb_build_object(
    'code', sqlerrm::jsonb ->> 'code',
    'message', sqlerrm::jsonb ->> 'message',
    'details', (sqlerrm::jsonb ->> 'details')::jsonb,
    'status', (detail::jsonb ->> 'status')::integer);
end;
$$;

create function tests.error_code(statement text) returns text
language sql
as $$ select tests.error(statement) ->> 'code' $$;

create function tests.error_status(statement text) returns integer
language sql
as $$ select (tests.error(statement) ->> 'status')::integer $$;

-- Dispatch fixtures: a dispatching campaign of the given numbers on a fresh,
-- unthrottled channel (its first chunk enqueued, each message with its own
-- voucher), and a claim of everything due on that channel.
create function tests.fixture_campaign(msisdns text[]) returns uuid
language plpgsql as $$
declare
  channel uuid;
  id uuid;
begin
  insert into app.channels (phone_number_id, display_name, rate_per_minute, burst, min_recipient_interval_seconds,
                            tokens, refilled_at)
  values ('4000' || (random() * 1e8)::bigint, 'Report channel', 600000, 10000, 0, 10000, now())
  returning channels.id into channel;
  insert into app.campaigns (name, amount_minor, currency, channel_id, template_name, status, scheduled_for)
  values ('Report fixture', 1000, 'KES', channel, 'fuel_voucher', 'scheduled', now())
  returning campaigns.id into id;
  insert into app.campaign_targets (campaign_id, msisdn) select id, m from unnest(msisdns) m;
  perform app.start_campaign(id);
  return id;
end;
$$;

-- Claims every due message of a campaign's channel for `worker`, at `at`; returns the ids.
create function tests.claim_all(campaign uuid, worker text, at timestamptz default now()) returns bigint[]
language sql as $$
  select array_agg(m.message_id order by m.message_id)
  from app.claim_messages_at(
    (select channel_id from app.campaigns where id = campaign), 1000, 60, worker, at) m
$$;

-- The plan Postgres chooses for a statement, as EXPLAIN's text, for matching.
create function tests.plan_of(statement text) returns text
language plpgsql
as $$
declare
  line text;
  plan text := '';
begin
  for line in execute 'explain ' || statement loop
    plan := plan || line || E'\n';
  end loop;
  return plan;
end;
$$;

grant execute on all functions in schema tests to public;
