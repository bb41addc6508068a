-- Supabase platform bootstrap for the LOCAL cluster only, applied by the
-- cluster's bootstrap superuser `supabase_admin` (as on Supabase, where
-- `supabase_admin` owns the platform and `postgres` is demoted).
--
-- On Supabase all of this already exists; here it mirrors Supabase's own
-- definitions (supabase/postgres: migrations/db/init-scripts/00000000000000-
-- initial-schema.sql, migrations/db/migrations/10000000000000_demote-postgres.sql,
-- ansible/files/postgresql_extension_custom_scripts/pg_cron/after-create.sql)
-- so that migrations and tests run with hosted privileges: `postgres` applies the
-- migrations and owns app/api, and is NOSUPERUSER BYPASSRLS, so a privilege
-- error surfaces here as it would on Supabase.
-- Idempotent: `deno task start` applies it on every start.

-- Platform roles, with Supabase's attributes ---------------------------------
do $$
begin
  if not exists (select from pg_roles where rolname = 'postgres') then
    create role postgres login password 'postgres';
  end if;
  if not exists (select from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  if not exists (select from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit password 'postgres';
  end if;
end
$$;

-- Supabase's demoted postgres: what `supabase db push` and the dashboard run as.
alter role postgres nosuperuser createdb createrole login replication bypassrls;

grant anon, authenticated, service_role to authenticator;
grant anon, authenticated, service_role to postgres;
grant all on database postgres to postgres;
-- Statistics views (pg_stat_statements of every role) and backend signalling,
-- which the dashboard's postgres may use on Supabase.
grant pg_read_all_stats, pg_signal_backend to postgres;

-- Supabase's per-role statement timeouts.
alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';
alter role authenticator set statement_timeout = '8s';
alter role authenticator set lock_timeout = '8s';
alter role postgres set search_path = "$user", public, extensions;

-- Extensions live in their own schema, as on Supabase. On Supabase, supautils
-- lets `postgres` create its allow-listed extensions as if it were a superuser;
-- here the bootstrap creates the ones the migrations and tests use, so the
-- migrations' `create extension if not exists` finds them in place.
create schema if not exists extensions;
grant all on schema extensions to postgres;
grant usage on schema extensions to anon, authenticated, service_role;
create extension if not exists pgcrypto with schema extensions;
create extension if not exists pg_stat_statements with schema extensions;
create extension if not exists pgtap with schema extensions;
-- plpgsql_check is a C extension built for the local Postgres 15 only: the
-- Postgres 17 check cluster (local/pg17.ts) has no build of it, so it is created
-- where the server offers it, which the local 15 cluster always does. Nothing in
-- the migrations uses it; `supabase db lint` does, and runs on 15.
do $$
begin
  if exists (select from pg_available_extensions where name = 'plpgsql_check') then
    create extension if not exists plpgsql_check with schema extensions;
  end if;
end
$$;
create extension if not exists pg_cron with schema pg_catalog;
grant execute on all functions in schema extensions to postgres;

-- pg_cron's grants to postgres, as Supabase's after-create script makes them:
-- schedule jobs, read and purge the run history, read cron.job.
grant usage on schema cron to postgres with grant option;
grant all on all functions in schema cron to postgres with grant option;
grant all privileges on all tables in schema cron to postgres with grant option;
grant all privileges on all sequences in schema cron to postgres with grant option;
revoke all on table cron.job from postgres;
grant select on table cron.job to postgres with grant option;

-- auth: a minimal users table and Supabase's claim helpers --------------------
create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;

create table if not exists auth.users (
  id uuid primary key default gen_random_uuid(),
  email text unique,
  phone text unique,
  role text default 'authenticated',
  -- bcrypt, as Supabase Auth stores it (the local Auth stand-in checks it).
  encrypted_password text,
  raw_app_meta_data jsonb default '{}'::jsonb,
  raw_user_meta_data jsonb default '{}'::jsonb,
  created_at timestamptz default now(),
  updated_at timestamptz default now()
);

create or replace function auth.uid() returns uuid
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

create or replace function auth.role() returns text
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;

create or replace function auth.email() returns text
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.email', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
  )::text
$$;

create or replace function auth.jwt() returns jsonb
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;

grant execute on function auth.uid(), auth.role(), auth.email(), auth.jwt()
  to anon, authenticated, service_role;

-- Supabase grants postgres everything in auth (demote-postgres migration).
grant all on schema auth to postgres;
grant all on all tables in schema auth to postgres;
grant all on all routines in schema auth to postgres;

-- Supabase's `public` schema grants; nothing of ours lives there.
grant usage on schema public to anon, authenticated, service_role;

-- pg_net stand-in -------------------------------------------------------------
-- Supabase runs pg_net (asynchronous HTTP from SQL; the cron migration's
-- dispatch tick uses net.http_post). pg_net is not packaged for Debian, so the
-- local cluster gets its SQL surface, copied from supabase/pg_net's
-- sql/pg_net.sql: the request queue, the response table and
-- http_get / http_post / http_delete with the same signatures and defaults.
-- Differences, on purpose: the background worker is a process of the local
-- stack (local/net_worker.ts) that LISTENs on `net_wake` — net.wake() notifies
-- it, and a NOTIFY is delivered at commit, as pg_net sends only committed
-- requests — and URL parameters are encoded in SQL instead of C.
create schema if not exists net;

do $$
begin
  if not exists (select from pg_type t join pg_namespace n on n.oid = t.typnamespace
                 where n.nspname = 'net' and t.typname = 'http_method') then
    create domain net.http_method as text
      check (value ilike 'get' or value ilike 'post' or value ilike 'delete');
  end if;
end
$$;

create unlogged table if not exists net.http_request_queue (
  id bigserial,
  method net.http_method not null,
  url text not null,
  headers jsonb,
  body bytea,
  timeout_milliseconds int not null
);

create unlogged table if not exists net._http_response (
  id bigint,
  status_code integer,
  content_type text,
  headers jsonb,
  content text,
  timed_out bool,
  error_msg text,
  created timestamptz not null default now()
);

create index if not exists _http_response_created_idx on net._http_response (created);

create or replace function net.wake() returns void
language sql
as $$ select pg_notify('net_wake', '') $$;

-- RFC 3986 percent-encoding of everything but the unreserved characters.
create or replace function net._urlencode_string(string varchar) returns text
language sql immutable
as $$
  select coalesce(string_agg(
    case when b between 48 and 57 or b between 65 and 90 or b between 97 and 122 or b in (45, 46, 95, 126)
         then chr(b) else '%' || upper(lpad(to_hex(b), 2, '0')) end, '' order by i), '')
  from (select get_byte(convert_to(string, 'UTF8'), i) as b, i
        from generate_series(0, octet_length(convert_to(string, 'UTF8')) - 1) as i) bytes
$$;

create or replace function net._encode_url_with_params_array(url text, params_array text[]) returns text
language sql immutable
as $$
  select case when cardinality(params_array) = 0 then url
              else url || case when url like '%?%' then '&' else '?' end || array_to_string(params_array, '&') end
$$;

create or replace function net.http_get(
  url text,
  params jsonb default '{}'::jsonb,
  headers jsonb default '{}'::jsonb,
  timeout_milliseconds int default 5000
) returns bigint
language plpgsql
as $$
declare
  request_id bigint;
  params_array text[];
begin
  select coalesce(array_agg(net._urlencode_string(key) || '=' || net._urlencode_string(value)), '{}')
  into params_array
  from jsonb_each_text(params);
  insert into net.http_request_queue (method, url, headers, timeout_milliseconds)
  values ('GET', net._encode_url_with_params_array(url, params_array), headers, timeout_milliseconds)
  returning id into request_id;
  perform net.wake();
  return request_id;
end
$$;

create or replace function net.http_post(
  url text,
  body jsonb default '{}'::jsonb,
  params jsonb default '{}'::jsonb,
  headers jsonb default '{"Content-Type": "application/json"}'::jsonb,
  timeout_milliseconds int default 5000
) returns bigint
language plpgsql
as $$
declare
  request_id bigint;
  params_array text[];
  content_type text;
begin
  select header_value into content_type
  from jsonb_each_text(coalesce(headers, '{}'::jsonb)) r(header_name, header_value)
  where lower(header_name) = 'content-type'
  limit 1;
  if content_type is null then
    select headers || '{"Content-Type": "application/json"}'::jsonb into headers;
  end if;
  if content_type <> 'application/json' then
    raise exception 'Content-Type header must be "application/json"';
  end if;
  select coalesce(array_agg(net._urlencode_string(key) || '=' || net._urlencode_string(value)), '{}')
  into params_array
  from jsonb_each_text(params);
  insert into net.http_request_queue (method, url, headers, body, timeout_milliseconds)
  values ('POST', net._encode_url_with_params_array(url, params_array), headers,
          convert_to(body::text, 'UTF8'), timeout_milliseconds)
  returning id into request_id;
  perform net.wake();
  return request_id;
end
$$;

create or replace function net.http_delete(
  url text,
  params jsonb default '{}'::jsonb,
  headers jsonb default '{}'::jsonb,
  timeout_milliseconds int default 5000,
  body jsonb default null
) returns bigint
language plpgsql
as $$
declare
  request_id bigint;
  params_array text[];
begin
  select coalesce(array_agg(net._urlencode_string(key) || '=' || net._urlencode_string(value)), '{}')
  into params_array
  from jsonb_each_text(params);
  insert into net.http_request_queue (method, url, headers, body, timeout_milliseconds)
  values ('DELETE', net._encode_url_with_params_array(url, params_array), headers,
          convert_to(body::text, 'UTF8'), timeout_milliseconds)
  returning id into request_id;
  perform net.wake();
  return request_id;
end
$$;

grant usage on schema net to postgres;
grant all on all tables in schema net to postgres;
grant all on all sequences in schema net to postgres;
grant execute on all functions in schema net to postgres;

-- Vault stand-in ----------------------------------------------------------------
-- Supabase Vault (supabase_vault) keeps secrets encrypted at rest and decrypts
-- them through the vault.decrypted_secrets view. Locally the same names and
-- columns hold the secret in clear text: loopback development values only.
create schema if not exists vault;

create table if not exists vault.secrets (
  id uuid primary key default gen_random_uuid(),
  name text unique,
  description text not null default '',
  secret text not null,
  key_id uuid,
  nonce bytea,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create or replace view vault.decrypted_secrets as
  select s.id, s.name, s.description, s.secret, s.secret as decrypted_secret, s.key_id, s.nonce,
         s.created_at, s.updated_at
  from vault.secrets s;

create or replace function vault.create_secret(
  new_secret text,
  new_name text default null,
  new_description text default '',
  new_key_id uuid default null
) returns uuid
language sql
as $$
  insert into vault.secrets (secret, name, description, key_id)
  values (new_secret, new_name, new_description, new_key_id)
  returning id
$$;

create or replace function vault.update_secret(
  secret_id uuid,
  new_secret text default null,
  new_name text default null,
  new_description text default null,
  new_key_id uuid default null
) returns void
language sql
as $$
  update vault.secrets s
  set secret = coalesce(new_secret, s.secret), name = coalesce(new_name, s.name),
      description = coalesce(new_description, s.description), key_id = coalesce(new_key_id, s.key_id),
      updated_at = now()
  where s.id = secret_id
$$;

grant usage on schema vault to postgres;
grant all on vault.secrets to postgres;
grant select on vault.decrypted_secrets to postgres;
grant execute on all functions in schema vault to postgres;
