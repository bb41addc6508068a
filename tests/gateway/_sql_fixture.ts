/**
 * Throwaway `api.gw_test_*` functions for the gateway contract tests. Created
 * as `postgres` (the owner of `api`) before the gateway starts and dropped afterwards; never
 * a migration.
 *
 * @module
 */

/** Every object the fixture creates, dropped in teardown (and before setup, after a crash). */
export const TEARDOWN_SQL = `
drop function if exists api.gw_test_add(integer, integer);
drop function if exists api.gw_test_pair(integer);
drop function if exists api.gw_test_rows(integer);
drop function if exists api.gw_test_ints(integer);
drop function if exists api.gw_test_void(text);
drop function if exists api.gw_test_bump();
drop function if exists api.gw_test_pure();
drop function if exists api.gw_test_json(jsonb);
drop function if exists api.gw_test_whoami();
drop function if exists api.gw_test_secret();
drop function if exists api.gw_test_raise(text);
drop function if exists api.gw_test_app_error();
drop function if exists api.gw_test_over(integer);
drop function if exists api.gw_test_over(text);
drop function if exists api.gw_test_count(integer[]);
drop function if exists api.gw_test_late_a();
drop function if exists api.gw_test_late_b();
drop function if exists api.gw_test_doc(jsonb);
drop function if exists api.gw_test_defaults(integer);
drop function if exists api.gw_test_variadic(integer[]);
drop sequence if exists api.gw_test_seq;
`;

/** The functions, one per PostgREST behaviour under test. */
export const SETUP_SQL = `
${TEARDOWN_SQL}
create sequence api.gw_test_seq;
grant usage on sequence api.gw_test_seq to anon, authenticated, service_role;

-- scalar, with a default the caller may omit
create function api.gw_test_add(a integer, b integer default 10) returns integer
language sql immutable as $$ select a + b $$;

-- composite (OUT parameters): one JSON object
create function api.gw_test_pair(a integer, out x integer, out label text)
language sql stable as $$ select a * 2, 'pair ' || a $$;

-- RETURNS TABLE: an array of objects
create function api.gw_test_rows(n integer) returns table(i integer, label text)
language sql stable as $$ select g, 'row ' || g from generate_series(1, n) g $$;

-- SETOF scalar: an array of values
create function api.gw_test_ints(n integer) returns setof integer
language sql immutable as $$ select generate_series(1, n) $$;

create function api.gw_test_void(note text) returns void
language plpgsql volatile as $$ begin perform note; end $$;

-- volatile and writes: refused in a GET's read-only transaction
create function api.gw_test_bump() returns bigint
language sql volatile as $$ select nextval('api.gw_test_seq') $$;

-- volatile by default but read-only in practice: fine over GET, as in PostgREST
create function api.gw_test_pure() returns text
language sql as $$ select current_setting('transaction_read_only') $$;

-- single unnamed jsonb parameter: receives the whole body
create function api.gw_test_json(jsonb) returns jsonb
language sql immutable as $$ select jsonb_build_object('received', $1) $$;

create function api.gw_test_whoami() returns jsonb
language sql stable as $$
  select jsonb_build_object(
    'role', current_user,
    'claims', current_setting('request.jwt.claims', true)::jsonb,
    'headers', current_setting('request.headers', true)::jsonb,
    'method', current_setting('request.method', true),
    'path', current_setting('request.path', true),
    'cookies', current_setting('request.cookies', true)::jsonb,
    'uid', auth.uid(),
    'read_only', current_setting('transaction_read_only'),
    'statement_timeout', current_setting('statement_timeout'))
$$;

-- executable by service_role only
create function api.gw_test_secret() returns text
language sql stable as $$ select 'service only' $$;

create function api.gw_test_raise(kind text) returns void
language plpgsql as $$
begin
  case kind
    when 'pgrst' then
      raise sqlstate 'PGRST' using
        message = '{"code":"voucher_already_redeemed","message":"Voucher was already redeemed.","details":"{\\"voucher\\":\\"7KQ2\\"}","hint":"Look it up first."}',
        detail = '{"status":409,"headers":{"X-Test-Header":"yes"}}';
    when 'bad_pgrst' then
      raise sqlstate 'PGRST' using message = 'not json', detail = '{"status":409,"headers":{}}';
    when 'unique' then
      raise unique_violation using message = 'duplicate key value violates unique constraint "gw"';
    when 'check' then
      raise check_violation using message = 'new row violates check constraint "gw"';
    when 'teapot' then
      raise sqlstate 'PT418' using message = 'I am a teapot';
    else
      raise exception 'Plain exception: %', kind using hint = 'A hint', detail = 'A detail';
  end case;
end $$;

-- the project's own error helper (foundation migration) through the gateway
create function api.gw_test_app_error() returns void
language plpgsql security definer set search_path = '' as $$
begin
  perform app.raise_error('voucher_expired', 'Voucher expired.', 410, '{"voucher":"X"}'::jsonb);
end $$;

-- two overloads with the same argument name: PostgREST cannot choose
create function api.gw_test_over(a integer) returns text language sql immutable as $$ select 'int' $$;
create function api.gw_test_over(a text) returns text language sql immutable as $$ select 'text' $$;

create function api.gw_test_count(vals integer[]) returns integer
language sql immutable as $$ select coalesce(array_length(vals, 1), 0) $$;

-- a named jsonb parameter: over GET its text is cast to jsonb, as PostgREST binds it
create function api.gw_test_doc(doc jsonb) returns jsonb
language sql stable as $$ select jsonb_build_object('type', jsonb_typeof(doc), 'doc', doc) $$;

-- only optional parameters: what a body without arguments reaches
create function api.gw_test_defaults(n integer default 7) returns integer
language sql immutable as $$ select n $$;

create function api.gw_test_variadic(variadic vals integer[]) returns integer
language sql immutable as $$ select coalesce(array_length(vals, 1), 0) $$;

grant execute on function
  api.gw_test_doc(jsonb), api.gw_test_defaults(integer), api.gw_test_variadic(integer[]),
  api.gw_test_add(integer, integer), api.gw_test_pair(integer), api.gw_test_rows(integer),
  api.gw_test_ints(integer), api.gw_test_void(text), api.gw_test_bump(), api.gw_test_pure(),
  api.gw_test_json(jsonb), api.gw_test_whoami(), api.gw_test_raise(text),
  api.gw_test_app_error(), api.gw_test_over(integer), api.gw_test_over(text),
  api.gw_test_count(integer[])
  to anon, authenticated, service_role;
grant execute on function api.gw_test_secret() to service_role;
`;
