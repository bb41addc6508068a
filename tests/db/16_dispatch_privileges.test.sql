-- Dispatch security: private tables with RLS and no grants, definer RPCs pinned to
-- an empty search_path, queue RPCs for service_role only, admin RPCs for admins.
begin;
\ir helpers.sql
select plan(32);

-- Tables ----------------------------------------------------------------------------------------------

select is(
  (select array_agg(c.relname::text order by c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace
   where n.nspname = 'app' and c.relkind = 'r' and not c.relrowsecurity
     and c.relname in ('channels', 'campaign_transitions', 'campaign_targets', 'opt_outs', 'messages',
                       'dispatch_claims', 'lease_reclaims', 'waba_error_rules', 'portfolios',
                       'portfolio_recipients', 'portfolio_usage', 'pause_reasons')),
  null, 'Row level security is enabled on every dispatch table');
select is(
  (select count(*)::integer from information_schema.role_table_grants
   where table_schema = 'app' and grantee in ('anon', 'authenticated', 'service_role', 'PUBLIC')
     and table_name in ('channels', 'campaign_transitions', 'campaign_targets', 'opt_outs', 'messages',
                        'dispatch_claims', 'lease_reclaims', 'waba_error_rules', 'portfolios',
                        'portfolio_recipients', 'portfolio_usage', 'pause_reasons')),
  0, 'No platform role has a direct grant on any dispatch table');

-- Functions -----------------------------------------------------------------------------------------------

create temporary table rpc (name text, queue boolean);
insert into rpc values
  ('claim_messages', true), ('report_message_results', true), ('record_waba_statuses', true),
  ('record_opt_out', true), ('record_template_status', true), ('record_phone_number_quality', true),
  ('create_channel', false), ('update_channel', false), ('list_channels', false), ('resume_channel', false),
  ('create_portfolio', false), ('update_portfolio', false), ('list_portfolios', false), ('waba_error_rules', false),
  ('create_campaign', false), ('add_campaign_targets', false), ('schedule_campaign', false),
  ('pause_campaign', false), ('resume_campaign', false), ('cancel_campaign', false), ('campaign_stats', false),
  ('queue_health', false);

select is(
  (select array_agg(r.name order by r.name) from rpc r
   where not exists (select from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                     where n.nspname = 'api' and p.proname = r.name
                       and p.prosecdef and p.proconfig @> array['search_path=""'])),
  null, 'Every dispatch RPC is security definer with search_path pinned to ''''');

select is(
  (select array_agg(r.name order by r.name) from rpc r join pg_proc p on p.proname = r.name
   join pg_namespace n on n.oid = p.pronamespace and n.nspname = 'api'
   where has_function_privilege('anon', p.oid, 'execute')),
  null, 'anon can execute none of the dispatch RPCs');
select is(
  (select array_agg(r.name order by r.name) from rpc r join pg_proc p on p.proname = r.name
   join pg_namespace n on n.oid = p.pronamespace and n.nspname = 'api'
   where r.queue and has_function_privilege('authenticated', p.oid, 'execute')),
  null, 'authenticated (admins included) can execute none of the queue RPCs');
select is(
  (select array_agg(r.name order by r.name) from rpc r join pg_proc p on p.proname = r.name
   join pg_namespace n on n.oid = p.pronamespace and n.nspname = 'api'
   where not has_function_privilege('service_role', p.oid, 'execute')),
  null, 'service_role can execute every dispatch RPC');
select is(
  (select array_agg(r.name order by r.name) from rpc r join pg_proc p on p.proname = r.name
   join pg_namespace n on n.oid = p.pronamespace and n.nspname = 'api'
   where not r.queue and not has_function_privilege('authenticated', p.oid, 'execute')),
  null, 'authenticated can execute the admin RPCs (each one checks for an admin)');
select is(
  (select array_agg(p.proname::text order by p.proname) from pg_proc p join pg_namespace n on n.oid = p.pronamespace
   where n.nspname = 'api' and p.proname in (select name from rpc)
     and exists (select from aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                 where a.grantee = 0 and a.privilege_type = 'EXECUTE')),
  null, 'PUBLIC can execute none of them');
select is(
  (select array_agg(p.oid::regprocedure::text order by p.proname) from pg_proc p
   join pg_namespace n on n.oid = p.pronamespace
   where n.nspname = 'app' and p.proname in ('claim_messages_at', 'claim_channel_messages', 'enqueue_campaign_chunk',
     'promote_due_campaigns', 'reclaim_expired_leases', 'complete_campaigns', 'apply_waba_statuses',
     'transition_campaign', 'expire_vouchers', 'purge_expired_idempotency_keys', 'purge_dispatch_logs',
     'pause_channel', 'resume_channel', 'resume_due_channels', 'throttle_channel', 'recover_channel_rates',
     'pause_campaign_row', 'resume_campaign_row', 'pause_template_campaigns', 'resume_template_campaigns',
     'apply_error_effects', 'seed_portfolio_usage', 'set_portfolio_tier')
     and (has_function_privilege('service_role', p.oid, 'execute')
          or has_function_privilege('authenticated', p.oid, 'execute'))),
  null, 'The internal app functions (time-injectable claim, jobs) are not executable by API roles');

select function_privs_are('api', 'claim_messages', array['uuid', 'integer', 'integer', 'text'], 'service_role',
  array['EXECUTE'], 'service_role may claim messages');
select function_privs_are('api', 'claim_messages', array['uuid', 'integer', 'integer', 'text'], 'authenticated',
  array[]::text[], 'authenticated may not claim messages');
select function_privs_are('api', 'report_message_results', array['jsonb', 'text'], 'authenticated',
  array[]::text[], 'authenticated may not report results');

-- Behaviour by actor -------------------------------------------------------------------------------------------

select tests.create_station('DISP-1') as station \gset
select tests.create_staff('admin@priv.test', 'admin') as admin \gset
select tests.create_staff('operator@priv.test', 'station_operator', :'station') as operator \gset
select tests.create_user('nobody@priv.test') as nobody \gset

select tests.authenticate_as(:'admin');
select api.create_channel('700000001', 'Privileges') ->> 'id' as channel \gset
select api.create_campaign('Privileges', 100, 'KES', channel_id => :'channel', template_name => 'fuel_voucher')
  ->> 'id' as campaign \gset
select api.add_campaign_targets(:'campaign', '["+254880000001"]') is not null as added \gset
select is(api.schedule_campaign(:'campaign') ->> 'status', 'dispatching', 'An admin schedules a campaign');
select ok(api.campaign_stats(:'campaign') ? 'messages', 'An admin reads campaign stats');
select ok(api.queue_health() ? 'channels', 'An admin reads queue health');
select throws_ok(format('select api.claim_messages(%L)', :'channel'), '42501', null,
  'An admin cannot claim messages (permission denied: service_role only)');
select throws_ok($$select api.report_message_results('[]', 'w')$$, '42501', null,
  'An admin cannot report results');

select tests.authenticate_as(:'operator');
select is(tests.error_code($$select api.create_channel('700000002', 'Nope')$$), 'not_authorized',
  'A station operator cannot create channels');
select is(tests.error_status($$select api.create_channel('700000002', 'Nope')$$), 403, 'not_authorized is a 403');
select is(tests.error_code(format('select api.pause_campaign(%L)', :'campaign')), 'not_authorized',
  'A station operator cannot pause campaigns');
select is(tests.error_code(format($$select api.add_campaign_targets(%L, '[]')$$, :'campaign')), 'not_authorized',
  'A station operator cannot add targets');
select is(tests.error_code('select api.queue_health()'), 'not_authorized', 'A station operator cannot read queue health');
select is(tests.error_code(format('select api.campaign_stats(%L)', :'campaign')), 'not_authorized',
  'A station operator cannot read campaign stats');

select tests.authenticate_as(:'nobody');
select is(tests.error_code($$select api.create_campaign('X', 100, 'KES')$$), 'not_authorized',
  'A signed-in user who is not staff cannot create campaigns');
select is(tests.error_code('select api.list_channels()'), 'not_authorized',
  'A signed-in user who is not staff cannot list channels');

select tests.authenticate_as_anon();
select throws_ok($$select api.create_channel('700000003', 'Anon')$$, '42501', null,
  'anon cannot create channels');
select throws_ok('select api.claim_messages()', '42501', null, 'anon cannot claim messages');
select throws_ok($$select api.record_waba_statuses('[]')$$, '42501', null, 'anon cannot record webhook statuses');

select tests.authenticate_as_service_role();
select is((select count(*)::integer from api.claim_messages(:'channel', 10, 30, 'svc-worker')), 1,
  'service_role claims messages');
select ok(api.queue_health() ? 'channels', 'service_role reads queue health');
select is(api.report_message_results('[]', 'svc-worker') ->> 'applied', '0', 'service_role reports results');

-- A JWT that merely says "service_role" in its claims does not make an admin the service.
select tests.authenticate_as(:'operator');
select set_config('request.jwt.claims', json_build_object('sub', :'operator', 'role', 'service_role')::text, true)
  is not null as forged \gset
select is(tests.error_code($$select api.create_channel('700000004', 'Forged')$$), 'not_authorized',
  'Only the database role counts: an authenticated session with a forged role claim is refused');

select tests.clear_authentication();
select * from finish();
rollback;
