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

alter default privileges in schema app revoke execute on functions from public;
alter default privileges in schema api revoke execute on functions from public;
alter default privileges in schema app revoke all on tables from public;

-- Errors --------------------------------------------------------------------
-- Every business error goes through app.raise_error so clients get PostgREST's
-- custom-error contract: HTTP `status` and the JSON body {code, message, details, hint}.
-- `details` is a JSON document encoded as text (PostgREST carries it as a string).

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

-- Claims `key` for this transaction. Returns null when the caller must execute the
-- request (it then calls app.idempotency_save), or the stored response with
-- `replayed: true` when the same request already ran. A key reused with a
-- different request raises idempotency_key_reused (409).
create function app.idempotency_claim(scope text, key text, request jsonb)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  hash bytea := extensions.digest(request::text, 'sha256');
  stored app.idempotency_keys;
begin
  if key is null or length(key) not between 1 and 200 then
    perform app.raise_error('invalid_idempotency_key',
      'An idempotency_key of 1 to 200 characters is required.', 400);
  end if;

  insert into app.idempotency_keys as k (scope, key, request_hash)
  values (idempotency_claim.scope, idempotency_claim.key, hash)
  on conflict do nothing;
  if found then
    return null;
  end if;

  select * into stored from app.idempotency_keys k
  where k.scope = idempotency_claim.scope and k.key = idempotency_claim.key;

  if stored.request_hash <> hash then
    perform app.raise_error('idempotency_key_reused',
      format('Idempotency key "%s" was already used with a different request.', key), 409);
  end if;
  return stored.response || jsonb_build_object('replayed', true);
end;
$$;

create function app.idempotency_save(scope text, key text, response jsonb)
returns jsonb
language sql
set search_path = ''
as $$
  update app.idempotency_keys k set response = idempotency_save.response
  where k.scope = idempotency_save.scope and k.key = idempotency_save.key;
  select idempotency_save.response || jsonb_build_object('replayed', false);
$$;

comment on function app.idempotency_claim is
  'Claims an idempotency key for this transaction: null = execute, else the stored response marked replayed.';
comment on function app.idempotency_save is
  'Stores the response of a claimed key; returns it marked replayed=false.';
