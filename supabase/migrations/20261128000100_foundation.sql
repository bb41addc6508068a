-- Foundation: schemas, default privileges, the error helper and durable idempotency.
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

-- search_path. Every `api` function is `security definer set search_path = ''`.
-- The `app` helpers those RPCs call on the hot paths (authorisation, idempotency,
-- redeem, code checks) carry no SET clause of their own: they run inside the
-- RPC's pinned empty search_path, only the owner can execute them, and every
-- name in them is schema-qualified. A SET clause costs a GUC save and restore
-- on every call, which measured ~15% of a redeem. Other helpers keep the pin.

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

-- Durable idempotency ---------------------------------------------------------
-- One mechanism for every state-changing RPC: (scope, key) → hash of the request
-- and the stored response. The first caller inserts the row inside its own
-- transaction; a concurrent caller with the same key blocks on the unique index
-- until that transaction ends, then sees the committed response (or, if the first
-- rolled back, becomes the first itself). So a key executes exactly once.

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
