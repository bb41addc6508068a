-- The local Supabase platform bootstrap (sql/supabase_platform.sql) mirrors
-- Supabase: the API roles and their attributes, the demoted `postgres` that
-- applies migrations and runs these tests, per-role statement timeouts,
-- auth.uid()/auth.role()/auth.jwt() reading PostgREST's request.jwt.claims, and
-- extensions living in their own schema. Migrations and the gateway rely on it.
begin;
select plan(46);

-- Roles --------------------------------------------------------------------------
select has_role('anon', 'The anon role exists');
select has_role('authenticated', 'The authenticated role exists');
select has_role('service_role', 'The service_role role exists');
select has_role('authenticator', 'The authenticator role exists');

select is(
  (select rolcanlogin from pg_roles where rolname = 'authenticator'),
  true,
  'authenticator is the only API role that can log in'
);
select is(
  (select count(*)::int from pg_roles
    where rolname in ('anon', 'authenticated', 'service_role') and rolcanlogin),
  0,
  'anon, authenticated and service_role cannot log in directly'
);
select is(
  (select count(*)::int from pg_roles
    where rolname in ('anon', 'authenticated', 'service_role', 'authenticator') and rolinherit),
  0,
  'API roles are NOINHERIT: privileges only apply after SET ROLE'
);
select is(
  (select array_agg(rolname::text order by rolname) from pg_roles
    where rolname in ('anon', 'authenticated', 'service_role', 'authenticator') and rolbypassrls),
  array['service_role'],
  'Only service_role bypasses row level security'
);
select isnt_superuser('authenticator', 'authenticator is not a superuser');
select isnt_superuser('anon', 'anon is not a superuser');
select isnt_superuser('authenticated', 'authenticated is not a superuser');
select isnt_superuser('service_role', 'service_role is not a superuser');

select is_member_of('anon', array['authenticator'], 'authenticator can switch to anon');
select is_member_of('authenticated', array['authenticator'], 'authenticator can switch to authenticated');
select is_member_of('service_role', array['authenticator'], 'authenticator can switch to service_role');

-- postgres, as Supabase demotes it (supabase/postgres: 10000000000000_demote-postgres.sql)
select isnt_superuser('postgres', 'postgres is not a superuser, as on Supabase');
select results_eq(
  $$select rolcanlogin, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls
    from pg_roles where rolname = 'postgres'$$,
  $$values (true, true, true, true, true)$$,
  'postgres has Supabase''s attributes: LOGIN CREATEROLE CREATEDB REPLICATION BYPASSRLS');
select is(current_user::text, 'postgres', 'These tests run as postgres, with hosted privileges');
select is_superuser('supabase_admin', 'The cluster belongs to a separate bootstrap superuser, supabase_admin');
select is(
  (select r.rolname::text from pg_database d join pg_roles r on r.oid = d.datdba where d.datname = current_database()),
  'supabase_admin', 'The database is owned by supabase_admin, not by postgres');
select is(
  (select array_agg(distinct r.rolname::text) from pg_namespace n join pg_roles r on r.oid = n.nspowner
   where n.nspname in ('app', 'api')),
  array['postgres'], 'postgres, which applied the migrations, owns app and api');
select is(
  (select array_agg(distinct r.rolname::text) from pg_proc p join pg_namespace n on n.oid = p.pronamespace
   join pg_roles r on r.oid = p.proowner where n.nspname = 'api'),
  array['postgres'], 'so every security definer RPC runs as postgres, not as a superuser');
select is_member_of('anon', array['postgres'], 'postgres can switch to anon');
select is_member_of('service_role', array['postgres'], 'postgres can switch to service_role');
select ok(has_table_privilege('postgres', 'auth.users', 'select, insert, update, delete'),
  'postgres has Supabase''s grants on auth.users');
select ok(has_table_privilege('postgres', 'cron.job_run_details', 'delete'),
  'postgres may purge pg_cron''s run history, as on Supabase');
select ok(not has_table_privilege('postgres', 'cron.job', 'update'),
  'postgres reads cron.job but changes jobs only through cron.schedule, as on Supabase');
select throws_ok($$create extension pg_walinspect$$, '42501', null,
  'postgres cannot install an untrusted extension itself: a privilege error surfaces here as on Supabase');

-- Statement timeouts, as on Supabase (applied by PostgREST on role switch) --------
select ok(
  (select 'statement_timeout=3s' = any(setconfig)
    from pg_db_role_setting s join pg_roles r on r.oid = s.setrole
    where r.rolname = 'anon' and s.setdatabase = 0),
  'anon requests time out after 3 s'
);
select ok(
  (select 'statement_timeout=8s' = any(setconfig)
    from pg_db_role_setting s join pg_roles r on r.oid = s.setrole
    where r.rolname = 'authenticated' and s.setdatabase = 0),
  'authenticated requests time out after 8 s'
);
select ok(
  (select setconfig @> array['statement_timeout=8s', 'lock_timeout=8s']
    from pg_db_role_setting s join pg_roles r on r.oid = s.setrole
    where r.rolname = 'authenticator' and s.setdatabase = 0),
  'authenticator sessions have an 8 s statement and lock timeout'
);

-- auth.* helpers read request.jwt.claims ------------------------------------------
do $$ begin
  perform set_config('request.jwt.claims',
    '{"sub": "00000000-0000-4000-8000-00000000d00d", "role": "authenticated", "email": "ops@example.test"}',
    true);
end $$;
select is(auth.uid(), '00000000-0000-4000-8000-00000000d00d'::uuid,
  'auth.uid() is the sub claim of request.jwt.claims');
select is(auth.role(), 'authenticated', 'auth.role() is the role claim');
select is(auth.email(), 'ops@example.test', 'auth.email() is the email claim');
select is(auth.jwt() ->> 'email', 'ops@example.test', 'auth.jwt() returns the whole claims object');

do $$ begin perform set_config('request.jwt.claims', '', true); end $$;
select is(auth.uid(), null, 'auth.uid() is null without claims (an anonymous request)');
select is(auth.jwt(), null, 'auth.jwt() is null without claims');

select function_privs_are('auth', 'uid', array[]::text[], 'anon', array['EXECUTE'],
  'anon may call auth.uid()');
select function_privs_are('auth', 'jwt', array[]::text[], 'authenticated', array['EXECUTE'],
  'authenticated may call auth.jwt()');
select function_privs_are('auth', 'role', array[]::text[], 'service_role', array['EXECUTE'],
  'service_role may call auth.role()');

-- Extensions live in schema extensions ----------------------------------------------
select has_schema('extensions', 'Schema extensions exists');
-- Every one the server offers: the local 15 cluster offers all four (its Debian
-- packages); the Postgres 17 check cluster (local/pg17.ts) has no plpgsql_check.
select is(
  (select array_agg(extname::text order by extname) from pg_extension
    where extnamespace = 'extensions'::regnamespace),
  (select array_agg(name::text order by name) from pg_available_extensions
    where name in ('pg_stat_statements', 'pgcrypto', 'pgtap', 'plpgsql_check')),
  'pgcrypto, pg_stat_statements, pgTAP and plpgsql_check are installed in schema extensions wherever the server offers them'
);
select is(
  (select extnamespace::regnamespace::text from pg_extension where extname = 'pg_cron'), 'pg_catalog',
  'pg_cron is installed in pg_catalog, as Supabase does'
);
select schema_privs_are('extensions', 'anon', array['USAGE'],
  'anon can use (not create in) schema extensions');
select schema_privs_are('extensions', 'authenticated', array['USAGE'],
  'authenticated can use (not create in) schema extensions');
-- The real pg_cron is C; the Postgres 17 check's SQL-only stand-in (sql/pg17/)
-- has no library, hence no scheduler, and must not look as if it had one.
select is(
  exists (select from pg_stat_activity where backend_type = 'pg_cron launcher'),
  (select l.lanname = 'c' from pg_proc p join pg_language l on l.oid = p.prolang
   where p.oid = 'cron.schedule(text, text, text)'::regprocedure),
  'pg_cron''s scheduler runs exactly where pg_cron is the real (C) extension: preloaded, as on Supabase'
);

select * from finish();
rollback;
