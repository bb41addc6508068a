-- The audit log: every admin state change appends who, when, what and the
-- values; the hot paths (redeem, claim, report, enqueue) append nothing; rows
-- are append-only for everyone but the owner; admins list and filter them.
begin;
\ir helpers.sql
select plan(37);

-- Structure and privileges -----------------------------------------------------------------------

select has_table('app', 'audit_log', 'Admin changes are recorded in app.audit_log');
select is((select relrowsecurity from pg_class where oid = 'app.audit_log'::regclass), true,
  'Row level security is enabled on the audit log');
select is(
  (select count(*)::integer from information_schema.role_table_grants
   where table_schema = 'app' and table_name = 'audit_log'
     and grantee in ('anon', 'authenticated', 'service_role', 'PUBLIC')),
  0, 'No API role has any privilege on the audit log');
select is(
  (select array_agg(t.tgname::text order by t.tgname) from pg_trigger t
   where t.tgrelid in ('app.stations'::regclass, 'app.staff'::regclass, 'app.campaigns'::regclass,
                       'app.vouchers'::regclass, 'app.redemptions'::regclass, 'app.channels'::regclass,
                       'app.opt_outs'::regclass, 'app.consents'::regclass, 'app.settings'::regclass)
     and t.tgfoid = 'app.audit_row_change'::regproc),
  array['campaigns_audit_insert', 'campaigns_audit_update', 'channels_audit_insert', 'channels_audit_update',
        'consents_audit', 'opt_outs_audit', 'redemptions_audit', 'settings_audit', 'staff_audit', 'stations_audit',
        'vouchers_audit'],
  'Every audited table has its audit trigger');

-- Fixtures
select tests.create_staff('admin@audit', 'admin') as admin \gset
select tests.create_staff('op@audit', 'station_operator', tests.create_station('AUD-1')) as operator \gset
select id as station from app.stations where code = 'AUD-1' \gset

-- The hot paths write no audit row ----------------------------------------------------------------

-- A dispatching campaign with a chunk left to enqueue, and vouchers to redeem.
insert into app.channels (id, phone_number_id, display_name, rate_per_minute, burst, min_recipient_interval_seconds,
                          tokens)
values ('00000000-0000-4000-8000-0000000020c1', '20000001', 'Audit channel', 600000, 10000, 0, 10000);
insert into app.campaigns (id, name, amount_minor, currency, channel_id, template_name, status, scheduled_for,
                           starts_at)
values ('00000000-0000-4000-8000-0000000020c2', 'Audit hot paths', 100, 'KES', '00000000-0000-4000-8000-0000000020c1',
        'fuel_voucher', 'scheduled', now(), now() - interval '1 hour');
insert into app.campaign_targets (campaign_id, msisdn)
select '00000000-0000-4000-8000-0000000020c2', '+25477200000' || g from generate_series(1, 4) g;
select app.start_campaign('00000000-0000-4000-8000-0000000020c2', 2) as started \gset
select max(id) as before_hot from app.audit_log \gset
select coalesce(:'before_hot', '0')::bigint as before_hot \gset

select is(app.enqueue_campaign_chunk('00000000-0000-4000-8000-0000000020c2', 2), 2, 'An enqueue runs');
select is((select count(*)::integer from app.audit_log where id > :before_hot), 0,
  'An enqueue (vouchers issued, messages queued, the campaign''s cursor moved) writes no audit row');

select ok(cardinality(tests.claim_all('00000000-0000-4000-8000-0000000020c2', 'audit-worker')) = 4, 'A claim runs');
select is((select count(*)::integer from app.audit_log where id > :before_hot), 0,
  'A claim (the channel''s token bucket, the messages'' leases) writes no audit row');

select jsonb_agg(jsonb_build_object('message_id', m.id, 'outcome', 'sent', 'wamid', 'wamid.audit.' || m.id)) as results
from app.messages m where m.campaign_id = '00000000-0000-4000-8000-0000000020c2' \gset
select tests.authenticate_as_service_role();
select is((api.report_message_results(:'results', 'audit-worker') ->> 'sent')::integer, 4, 'A report runs');
select tests.clear_authentication();
select is((select count(*)::integer from app.audit_log where id > :before_hot), 0,
  'A report writes no audit row');

select app.format_code(v.code) as code from app.vouchers v
where v.campaign_id = '00000000-0000-4000-8000-0000000020c2' order by v.id limit 1 \gset
select tests.authenticate_as(:'operator');
select is(api.redeem_voucher(:'code', 'audit-redeem') ->> 'status', 'redeemed', 'A redeem runs');
select tests.clear_authentication();
select is((select count(*)::integer from app.audit_log where id > :before_hot), 0,
  'A redeem writes no audit row');
select is(app.expire_vouchers(), 0, 'The expiry job runs');
select is((select count(*)::integer from app.audit_log where id > :before_hot), 0, 'and writes none either');

-- Admin changes are audited -----------------------------------------------------------------------

select tests.authenticate_as(:'admin');
select api.create_station('AUD-2', 'Audit two') ->> 'id' as station2 \gset
select set_config('request.path', '/rpc/update_channel', true) is not null as path \gset
select api.update_channel('00000000-0000-4000-8000-0000000020c1', rate_per_minute => 120) is not null as updated \gset
select set_config('request.path', '', true) is not null as path2 \gset
select api.pause_campaign('00000000-0000-4000-8000-0000000020c2') is not null as paused \gset
select api.create_campaign('Audited', 100, 'KES') ->> 'id' as new_campaign \gset
select api.issue_vouchers(:'new_campaign', 5, 'audit-issue') ->> 'batch_id' as batch \gset
select is(api.issue_vouchers(:'new_campaign', 5, 'audit-issue') ->> 'replayed', 'true', 'An issuance is replayed');
select tests.clear_authentication();
select app.format_code(v.code) as void_code from app.vouchers v where v.batch_id = :'batch' order by v.id limit 1 \gset
select tests.create_user('new@audit') as new_user \gset
select tests.authenticate_as(:'admin');
select api.void_voucher(:'void_code', 'customer complaint', 'audit-void') is not null as voided \gset
select api.set_staff(:'new_user', 'station_operator', :'station') is not null as staffed \gset
select tests.authenticate_as_service_role();
select api.update_channel('00000000-0000-4000-8000-0000000020c1', status => 'paused') is not null as svc \gset
select tests.clear_authentication();
update app.stations set name = 'Renamed by a job' where id = :'station2';

select is((select (actor_id, actor_role, event, operation, changes ->> 'code', rpc)::text from app.audit_log
           where table_name = 'stations' and row_key = jsonb_build_object('id', :'station2') and operation = 'insert'),
  (:'admin'::uuid, 'admin', 'stations.insert', 'insert', 'AUD-2', null::text)::text,
  'Creating a station is audited: who, what, the values');
select is((select changes -> 'rate_per_minute' from app.audit_log
           where table_name = 'channels' and row_key ->> 'id' = '00000000-0000-4000-8000-0000000020c1'
             and operation = 'update' order by id limit 1),
  '{"old": 600000, "new": 120}'::jsonb, 'A channel change records the changed setting''s old and new values');
select is((select changes ? 'tokens' from app.audit_log
           where table_name = 'channels' and row_key ->> 'id' = '00000000-0000-4000-8000-0000000020c1'
             and operation = 'update' order by id limit 1),
  false, 'but not the token bucket it refilled');
select is((select rpc from app.audit_log
           where table_name = 'channels' and row_key ->> 'id' = '00000000-0000-4000-8000-0000000020c1'
             and operation = 'update' order by id limit 1),
  'update_channel', 'and the RPC of the request');
select is((select changes -> 'status' from app.audit_log where table_name = 'campaigns'
             and row_key ->> 'id' = '00000000-0000-4000-8000-0000000020c2' order by id desc limit 1),
  '{"old": "dispatching", "new": "paused"}'::jsonb, 'A campaign transition is audited');
select is((select count(*)::integer from app.audit_log where table_name = 'campaigns' and operation = 'insert'
             and row_key ->> 'id' = :'new_campaign'), 1, 'Creating a campaign is audited');
select is((select (event, changes ->> 'issued')::text from app.audit_log where table_name = 'voucher_batches'
             and row_key ->> 'id' = :'batch'),
  ('vouchers.issue', '5')::text, 'An admin''s issuance is audited with its batch and count');
select is((select count(*)::integer from app.audit_log where table_name = 'voucher_batches'
             and row_key ->> 'id' = :'batch'), 1, 'and its replay is not audited again');
select is((select changes #>> '{void_reason,new}' from app.audit_log where table_name = 'vouchers'
             and row_key ->> 'code' = app.normalize_code(:'void_code')),
  'customer complaint', 'A void is audited with its reason; the row key names the code');
select is((select count(*)::integer from app.audit_log where table_name = 'staff' and actor_id = :'admin'), 1,
  'A staff change is audited');
select is((select (actor_id, actor_role)::text from app.audit_log where table_name = 'channels'
             and row_key ->> 'id' = '00000000-0000-4000-8000-0000000020c1' order by id desc limit 1),
  (null::uuid, 'service')::text, 'A change by the service role is audited as service');
select is((select actor_role from app.audit_log where table_name = 'stations' order by id desc limit 1), 'service',
  'A change without a JWT (pg_cron, a SQL session) is audited as service');

-- Append-only ---------------------------------------------------------------------------------------

select tests.authenticate_as_service_role();
select throws_ok('update app.audit_log set actor_role = ''admin''', '42501', null,
  'Not even service_role can update the audit log');
select throws_ok('delete from app.audit_log', '42501', null, 'nor delete from it');
select throws_ok('insert into app.audit_log (actor_role, event, table_name, operation, row_key, changes)
                  values (''admin'', ''x'', ''x'', ''action'', ''{}'', ''{}'')', '42501', null,
  'nor write to it directly');
select tests.authenticate_as(:'admin');
select throws_ok('delete from app.audit_log', '42501', null, 'An admin cannot delete from it either');
select tests.clear_authentication();

-- Listing ---------------------------------------------------------------------------------------------

select array_agg(event order by id desc) as newest_two from (
  select event, id from app.audit_log where actor_id = :'admin' order by id desc limit 2) x \gset
select tests.authenticate_as(:'admin');
select is((select count(*)::integer from api.list_audit_log(table_name => 'channels',
             row_key => '{"id": "00000000-0000-4000-8000-0000000020c1"}')), 3,
  'list_audit_log filters by table and row key (the channel''s creation and two changes)');
select is((select array_agg(event order by id desc) from api.list_audit_log(actor_id => :'admin', page_size => 2)),
  :'newest_two'::text[],
  'It lists an actor''s changes newest first, a page at a time');
select (select min(id) from api.list_audit_log(actor_id => :'admin', page_size => 2)) as page1_last \gset
select ok((select max(id) from api.list_audit_log(actor_id => :'admin', after => :page1_last)) < :page1_last,
  'The next page starts after the cursor');
select is(tests.error_code($$select * from api.list_audit_log(row_key => '[1]')$$), 'invalid_filter',
  'A row key filter must be an object');
select is(tests.error_code('select * from api.list_audit_log(page_size => 1000)'), 'invalid_page_size',
  'Pages hold at most 500 rows');
select tests.authenticate_as(:'operator');
select is(tests.error_code('select * from api.list_audit_log()'), 'not_authorized',
  'A station operator cannot read the audit log');
select tests.clear_authentication();

select * from finish();
rollback;
