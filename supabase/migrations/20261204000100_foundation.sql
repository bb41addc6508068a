-- Foundation: schemas, privileges, extensions, the error helper, durable
-- idempotency, and the value types every later migration uses (phone numbers,
-- currencies, client timestamps).
--
-- `app` holds private state (never exposed over HTTP); `api` holds the RPCs that
-- PostgREST exposes (supabase/config.toml lists only `api`). Functions are
-- revoked from PUBLIC by default and granted one by one under each definition.

create schema if not exists app;
create schema if not exists api;

comment on schema app is 'Private tables and helpers of the voucher platform. Not exposed over HTTP.';
comment on schema api is 'The RPC surface exposed through PostgREST (/rest/v1/rpc/<fn>).';

revoke all on schema app from public;
grant usage on schema api to anon, authenticated, service_role;

-- Functions are not executable by PUBLIC unless granted (Basejump's setup). This
-- must be the global default: per-schema defaults can only add privileges.
alter default privileges revoke execute on functions from public;

-- Extensions where Supabase keeps them: pgcrypto (digest, gen_random_bytes) in
-- `extensions`. pg_cron and pg_net are created by the cron migration.
create extension if not exists pgcrypto with schema extensions;

-- search_path. Every `api` function is `security definer set search_path = ''`.
-- The `app` helpers those RPCs call on the hot paths (authorisation, idempotency,
-- redeem, code checks) carry no SET clause of their own: they run inside the
-- RPC's pinned empty search_path, only the owner can execute them, and every
-- name in them is schema-qualified. A SET clause costs a GUC save and restore
-- on every call (and stops a SQL function from being inlined). Other helpers
-- keep the pin.

-- Errors --------------------------------------------------------------------
-- Every business error has a stable machine code, a sentence and an HTTP status.
-- app.raise_error raises it in PostgREST's custom-error form, so clients get that
-- status and the JSON body {code, message, details, hint}; `details` is a JSON
-- document encoded as text (PostgREST carries it as a string).
-- Paths that must not abort (one item of a batch) carry the same error as a value,
-- app.error_result, and app.raise_result_error turns that value into the raise.

create function app.raise_error(
  code text,
  message text,
  status integer default 400,
  details jsonb default null
) returns void
language plpgsql
set search_path = ''
as $$
begin
  raise sqlstate 'PGRST' using
    message = json_build_object(
      'code', code,
      'message', message,
      'details', details::text,
      'hint', null
    )::text,
    detail = json_build_object('status', status, 'headers', json_build_object())::text;
end;
$$;

comment on function app.raise_error is
  'Raises a business error with a stable machine code and HTTP status (PostgREST RAISE PGRST form).';

create function app.error_result(code text, message text, status integer, details jsonb default null)
returns jsonb
language sql immutable
as $$
  -- No SET clause, so the planner inlines it; names resolve in pg_catalog.
  select pg_catalog.jsonb_build_object('ok', false, 'error', pg_catalog.jsonb_build_object(
    'code', code, 'message', message, 'status', status, 'details', details))
$$;

comment on function app.error_result is
  'A business error as a value {ok:false, error:{code,message,status,details}} for paths that must not abort.';

create function app.raise_result_error(result jsonb) returns void
language sql
set search_path = ''
as $$
  select app.raise_error(result #>> '{error,code}', result #>> '{error,message}',
                         (result #>> '{error,status}')::integer, result #> '{error,details}')
$$;

-- Value types -------------------------------------------------------------------
-- A format is written once: a function says what a valid value is, and a domain
-- applies it to columns. A domain's check runs when a value is assigned to the
-- column, not on every UPDATE of the row as a table CHECK does, so immutable
-- columns cost nothing on the hot updates (redeem, claim, report).

-- Phone numbers are E.164 strings. Input is normalised by removing the spaces,
-- dashes, dots and parentheses people paste from spreadsheets; the structural
-- check is then '+', 7 to 15 digits, the first not 0.
create function app.normalize_msisdn(value text) returns text
language sql immutable parallel safe
set search_path = ''
as $$
  select pg_catalog.regexp_replace(pg_catalog.btrim(value), '[[:space:]().-]', '', 'g')
$$;

comment on function app.normalize_msisdn(text) is
  'Removes spaces, dashes, dots and parentheses from a phone number; app.is_e164 then checks it.';

create function app.is_e164(value text) returns boolean
language sql immutable parallel safe
set search_path = ''
as $$
  select value ~ '^\+[1-9][0-9]{6,14}$'
$$;

comment on function app.is_e164(text) is 'True for an E.164 phone number: +, then 7 to 15 digits, the first not 0.';

create domain app.e164 as text
  constraint e164_format check (app.is_e164(value));

comment on domain app.e164 is 'An E.164 phone number (app.is_e164). Checked on assignment only.';

-- Money is integer minor units and an ISO 4217 currency code.
create function app.is_currency_code(value text) returns boolean
language sql immutable parallel safe
set search_path = ''
as $$
  select value ~ '^[A-Z]{3}$'
$$;

comment on function app.is_currency_code(text) is 'True for an ISO 4217 currency code: three upper-case letters.';

create domain app.currency_code as text
  constraint currency_code_format check (app.is_currency_code(value));

comment on domain app.currency_code is 'An ISO 4217 currency code: three upper-case letters (KES, USD).';

-- A client-supplied timestamp, or null when it is not one. The exception block is
-- a read-only subtransaction (no XID), so it is cheap even for 500 items.
create function app.try_timestamptz(value text) returns timestamptz
language plpgsql stable
as $$
begin
  return value::timestamptz;
exception when others then
  return null;
end;
$$;

comment on function app.try_timestamptz(text) is 'Parses a timestamp sent by a client; null when it is not one.';

-- Durable idempotency ---------------------------------------------------------
-- One mechanism for every state-changing RPC: (scope, key) → hash of the request
-- and the stored response. The first caller inserts the row inside its own
-- transaction; a concurrent caller with the same key blocks on the unique index
-- until that transaction ends, then sees the committed response (or, if the first
-- rolled back, becomes the first itself). So a key executes exactly once.
-- (The redeem writes its key in its redeeming statement instead; same table,
-- hash and replay format: see the redeem migration.)

create table app.idempotency_keys (
  scope text not null check (length(scope) between 1 and 100),
  key text not null check (length(key) between 1 and 200),
  request_hash bytea not null,
  response jsonb,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null default now() + interval '7 days',
  primary key (scope, key)
);

create index idempotency_keys_expires_at_idx on app.idempotency_keys (expires_at);

alter table app.idempotency_keys enable row level security;

comment on table app.idempotency_keys is
  'Durable idempotency ledger: a replayed key returns the stored response; purged by pg_cron after expires_at.';

-- Claims `key` for this transaction without raising. Returns null when the caller
-- must execute the request (it then calls app.idempotency_save), the stored
-- response marked `replayed: true` when the same request already ran, or an
-- error_result: invalid_idempotency_key (400) or, for a key reused with a
-- different request, idempotency_key_reused (409).
create function app.idempotency_try_claim(scope text, key text, request jsonb)
returns jsonb
language plpgsql
as $$
declare
  hash bytea := extensions.digest(request::text, 'sha256');
  stored app.idempotency_keys;
begin
  if key is null or length(key) not between 1 and 200 then
    return app.error_result('invalid_idempotency_key',
      'An idempotency_key of 1 to 200 characters is required.', 400);
  end if;

  insert into app.idempotency_keys as k (scope, key, request_hash)
  values (idempotency_try_claim.scope, idempotency_try_claim.key, hash)
  on conflict do nothing;
  if found then
    return null;
  end if;

  select * into stored from app.idempotency_keys k
  where k.scope = idempotency_try_claim.scope and k.key = idempotency_try_claim.key;

  if stored.request_hash <> hash then
    return app.error_result('idempotency_key_reused',
      format('Idempotency key "%s" was already used with a different request.', key), 409);
  end if;
  return stored.response || jsonb_build_object('replayed', true);
end;
$$;

-- The raising form, for single-request RPCs.
create function app.idempotency_claim(scope text, key text, request jsonb)
returns jsonb
language plpgsql
as $$
declare
  claimed jsonb := app.idempotency_try_claim(scope, key, request);
begin
  if claimed ->> 'ok' = 'false' then
    perform app.raise_result_error(claimed);
  end if;
  return claimed;
end;
$$;

create function app.idempotency_save(scope text, key text, response jsonb)
returns jsonb
language sql
as $$
  update app.idempotency_keys k set response = idempotency_save.response
  where k.scope = idempotency_save.scope and k.key = idempotency_save.key;
  select idempotency_save.response || jsonb_build_object('replayed', false);
$$;

comment on function app.idempotency_claim is
  'Claims an idempotency key for this transaction: null = execute, else the stored response marked replayed.';
comment on function app.idempotency_save is
  'Stores the response of a claimed key; returns it marked replayed=false.';

-- pg_cron: keys past expires_at are deleted in bounded batches. A key whose row
-- is locked by a request in flight is skipped until the next run.
create function app.purge_expired_idempotency_keys(max_keys integer default 20000) returns integer
language sql
set search_path = ''
as $$
  with doomed as (
    select k.scope, k.key
    from app.idempotency_keys k
    where k.expires_at <= now()
    order by k.expires_at
    limit max_keys
    for update skip locked
  ), purged as (
    delete from app.idempotency_keys k
    using doomed d
    where k.scope = d.scope and k.key = d.key
    returning 1
  )
  select count(*)::integer from purged
$$;

comment on function app.purge_expired_idempotency_keys is
  'pg_cron: deletes up to max_keys idempotency keys past expires_at.';
