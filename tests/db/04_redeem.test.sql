-- Station redeem: exactly once, replay-safe, every refusal with its code.
begin;
\ir helpers.sql
select plan(54);

select has_table('app', 'redemptions', 'Redemptions are recorded in app.redemptions');
select is((select pg_get_indexdef(i.indexrelid) from pg_index i
           where i.indexrelid = 'app.redemptions_voucher_active_key'::regclass and i.indisunique),
  'CREATE UNIQUE INDEX redemptions_voucher_active_key ON app.redemptions USING btree (voucher_id) WHERE (reversed_at IS NULL)',
  'The schema itself forbids a second active redemption of one voucher');
select is((select relrowsecurity from pg_class where oid = 'app.redemptions'::regclass), true,
  'Row level security is enabled on redemptions');

-- Fixtures ------------------------------------------------------------------------

select tests.create_station('R-ONE');
select tests.create_station('R-TWO');
select id as station_one from app.stations where code = 'R-ONE' \gset
select id as station_two from app.stations where code = 'R-TWO' \gset
select tests.create_staff('admin@redeem', 'admin');
select tests.create_staff('op1@redeem', 'station_operator', :'station_one');
select tests.create_staff('op2@redeem', 'station_operator', :'station_two');

insert into app.campaigns (id, name, amount_minor, currency, starts_at, expires_at, station_ids) values
  ('00000000-0000-4000-8000-0000000e0001', 'Open', 2500, 'KES', now() - interval '1 day', now() + interval '1 day', '{}'),
  ('00000000-0000-4000-8000-0000000e0002', 'Only R-TWO', 2500, 'KES', now() - interval '1 day', null, array[:'station_two'::uuid]),
  ('00000000-0000-4000-8000-0000000e0003', 'Future', 2500, 'KES', now() + interval '1 day', null, '{}');
select app.issue_batch('00000000-0000-4000-8000-0000000e0001', 6);
select app.issue_batch('00000000-0000-4000-8000-0000000e0002', 1);
select app.issue_batch('00000000-0000-4000-8000-0000000e0003', 1);

create temporary table codes as
select app.format_code(code) as code, row_number() over (order by id) as n, campaign_id
from app.vouchers where campaign_id in ('00000000-0000-4000-8000-0000000e0001',
  '00000000-0000-4000-8000-0000000e0002', '00000000-0000-4000-8000-0000000e0003');
grant select on codes to public;
select code as c1 from codes where n = 1 \gset
select code as c2 from codes where n = 2 \gset
select code as c3 from codes where n = 3 \gset
select code as c4 from codes where n = 4 \gset
select code as c5 from codes where n = 5 \gset
select code as c6 from codes where n = 6 \gset
select code as restricted from codes where campaign_id = '00000000-0000-4000-8000-0000000e0002' \gset
select code as future from codes where campaign_id = '00000000-0000-4000-8000-0000000e0003' \gset

select d || app.code_check_char(d) as unknown_code from (select 'ZZZZZZZZZZZZZY' as d) x \gset

-- Voucher 4 is void, voucher 5 is past its expiry but not yet marked by the job.
update app.vouchers set status = 'void', voided_at = now() where code = app.normalize_code(:'c4');
update app.vouchers set expires_at = now() - interval '1 minute' where code = app.normalize_code(:'c5');

-- Happy path, replay, key reuse ---------------------------------------------------

select tests.authenticate_as(tests.user_id('op1@redeem'));
select api.redeem_voucher(:'c1', 'key-1', client_redeemed_at => '2026-11-28T10:00:00Z') as first \gset
select is(:'first'::jsonb ->> 'status', 'redeemed', 'An operator redeems an issued voucher at their station');
select is((:'first'::jsonb ->> 'replayed')::boolean, false, 'The first redemption is not a replay');
select is(:'first'::jsonb ->> 'station_id', :'station_one', 'The redemption is at the operator''s station');
select is(:'first'::jsonb ->> 'amount_minor', '2500', 'The response carries the value');

select api.redeem_voucher(:'c1', 'key-1', client_redeemed_at => '2026-11-28T10:00:00Z') as again \gset
select is((:'again'::jsonb ->> 'replayed')::boolean, true,
  'Replaying the same key returns the original result marked replayed');
select is(:'again'::jsonb - 'replayed', :'first'::jsonb - 'replayed',
  'The replayed result is identical to the original');
select is(tests.error_code(format($$select api.redeem_voucher('%s', 'key-1')$$, :'c2')),
  'idempotency_key_reused', 'A key reused for another voucher is refused');
select is(tests.error_status(format($$select api.redeem_voucher('%s', 'key-1')$$, :'c2')),
  409, 'idempotency_key_reused is HTTP 409');

select is(tests.error_code(format($$select api.redeem_voucher('%s', 'key-other')$$, :'c1')),
  'voucher_already_redeemed', 'A second redemption with a new key is refused');
select is(tests.error_status(format($$select api.redeem_voucher('%s', 'key-other')$$, :'c1')),
  409, 'voucher_already_redeemed is HTTP 409');
select tests.clear_authentication();

-- The redemption record ---------------------------------------------------------------

select is((select count(*)::integer from app.redemptions r join app.vouchers v on v.id = r.voucher_id
           where v.code = app.normalize_code(:'c1')), 1, 'Exactly one redemption record exists');
select is((select r.redeemed_by from app.redemptions r join app.vouchers v on v.id = r.voucher_id
           where v.code = app.normalize_code(:'c1')), tests.user_id('op1@redeem'),
  'The record says who redeemed');
select is((select r.client_redeemed_at from app.redemptions r join app.vouchers v on v.id = r.voucher_id
           where v.code = app.normalize_code(:'c1')), '2026-11-28T10:00:00Z'::timestamptz,
  'The record keeps the client time');
select is((select r.idempotency_key from app.redemptions r join app.vouchers v on v.id = r.voucher_id
           where v.code = app.normalize_code(:'c1')), 'key-1', 'The record keeps the idempotency key');
select is((select status from app.vouchers where code = app.normalize_code(:'c1')), 'redeemed',
  'The voucher is marked redeemed');

-- Refusals --------------------------------------------------------------------------

select tests.authenticate_as(tests.user_id('op2@redeem'));
select is(tests.error_code(format($$select api.redeem_voucher('%s', 'k-2')$$, :'c1')),
  'voucher_already_redeemed', 'Another station gets voucher_already_redeemed');
select is(tests.error(format($$select api.redeem_voucher('%s', 'k-2')$$, :'c1')) #>> '{details,station_code}',
  'R-ONE', 'voucher_already_redeemed names the station that won');
select isnt(tests.error(format($$select api.redeem_voucher('%s', 'k-2')$$, :'c1')) #>> '{details,redeemed_at}',
  null, 'voucher_already_redeemed says when the voucher was redeemed');
select is(tests.error_code(format($$select api.redeem_voucher('%s', 'k-3', station_id => '%s')$$, :'c2', :'station_one')),
  'station_not_allowed', 'An operator cannot redeem for another station');
select is(tests.error_status(format($$select api.redeem_voucher('%s', 'k-3', station_id => '%s')$$, :'c2', :'station_one')),
  403, 'station_not_allowed is HTTP 403');
select tests.clear_authentication();

select tests.authenticate_as(tests.user_id('op1@redeem'));
select is(tests.error_code(format($$select api.redeem_voucher('%s', 'k-4')$$, :'restricted')),
  'station_not_allowed', 'A voucher restricted to other stations is refused with station_not_allowed');
select is(tests.error_code(format($$select api.redeem_voucher('%s', 'k-5')$$, :'c4')),
  'voucher_void', 'A void voucher is refused with voucher_void');
select is(tests.error_status(format($$select api.redeem_voucher('%s', 'k-5')$$, :'c4')),
  410, 'voucher_void is HTTP 410');
select is(tests.error_code(format($$select api.redeem_voucher('%s', 'k-6')$$, :'c5')),
  'voucher_expired', 'A voucher past its expiry is refused before the expiry job marks it');
select is(tests.error_status(format($$select api.redeem_voucher('%s', 'k-6')$$, :'c5')),
  410, 'voucher_expired is HTTP 410');
select is(tests.error_code(format($$select api.redeem_voucher('%s', 'k-7')$$, :'future')),
  'voucher_not_yet_valid', 'A voucher of a campaign that has not started is refused');
select is(tests.error_code(format($$select api.redeem_voucher('%s', 'k-8')$$,
  left(:'c2', 16) || case when right(:'c2', 1) = '0' then '1' else '0' end)),
  'invalid_code_checksum', 'A typo is refused with invalid_code_checksum');
select is(tests.error_status(format($$select api.redeem_voucher('%s', 'k-8')$$,
  left(:'c2', 16) || case when right(:'c2', 1) = '0' then '1' else '0' end)),
  400, 'invalid_code_checksum is HTTP 400');
select is(tests.error_code($$select api.redeem_voucher('HELLO', 'k-9')$$),
  'invalid_code_format', 'A malformed code is refused with invalid_code_format');
select is(tests.error_code(format($$select api.redeem_voucher('%s', 'k-10')$$,
  :'unknown_code')),
  'voucher_not_found', 'An unknown code is refused with voucher_not_found');
select is(tests.error_status(format($$select api.redeem_voucher('%s', 'k-10')$$,
  :'unknown_code')),
  404, 'voucher_not_found is HTTP 404');
select is(tests.error_code(format($$select api.redeem_voucher('%s', null)$$, :'c2')),
  'invalid_idempotency_key', 'A redemption without an idempotency key is refused');
select tests.clear_authentication();
select is((select count(*)::integer from app.idempotency_keys where scope = 'redeem_voucher' and key like 'k-%'), 0,
  'Refused redemptions leave no idempotency key behind');
select is((select status from app.vouchers where code = app.normalize_code(:'c2')), 'issued',
  'Refused redemptions change nothing');

-- Admin and privileges ------------------------------------------------------------------

select tests.authenticate_as(tests.user_id('admin@redeem'));
select is(tests.error_code(format($$select api.redeem_voucher('%s', 'a-1')$$, :'c2')),
  'station_required', 'An admin must name the station');
select is(api.redeem_voucher(:'c2', 'a-2', station_id => :'station_two') ->> 'station_id', :'station_two',
  'An admin redeems at the station they name');
select tests.clear_authentication();

select tests.authenticate_as_anon();
select throws_ok(format($$select api.redeem_voucher('%s', 'anon-1')$$, :'c3'), '42501', null,
  'anon cannot call redeem_voucher');
select throws_ok($$select api.redeem_vouchers('[]')$$, '42501', null, 'anon cannot call redeem_vouchers');
select tests.clear_authentication();

-- Batch flush of an offline queue -------------------------------------------------------

select tests.authenticate_as(tests.user_id('op1@redeem'));
select api.redeem_vouchers(jsonb_build_array(
  jsonb_build_object('code', :'c3', 'idempotency_key', 'b-1', 'client_redeemed_at', '2026-11-28T09:00:00Z'),
  jsonb_build_object('code', :'c1', 'idempotency_key', 'b-2'),
  jsonb_build_object('code', 'BROKEN', 'idempotency_key', 'b-3'),
  jsonb_build_object('code', :'c6', 'idempotency_key', 'b-4', 'client_redeemed_at', 'yesterday-ish'),
  jsonb_build_object('code', :'c6', 'idempotency_key', 'b-5'),
  jsonb_build_object('code', :'c1', 'idempotency_key', 'key-1', 'client_redeemed_at', '2026-11-28T10:00:00Z')
)) as batch \gset
select is(jsonb_array_length(:'batch'::jsonb -> 'results'), 6, 'A flush returns one result per item');
select is(jsonb_path_query_array(:'batch'::jsonb, '$.results[*].index'), '[0,1,2,3,4,5]'::jsonb,
  'Results come back in input order');
select is(:'batch'::jsonb #>> '{results,0,status}', 'redeemed', 'A valid item is redeemed');
select is(:'batch'::jsonb #>> '{results,1,error,code}', 'voucher_already_redeemed',
  'An already-redeemed item fails with the single call''s code');
select is(:'batch'::jsonb #>> '{results,2,error,code}', 'invalid_code_format',
  'A malformed item fails without aborting the rest');
select is(:'batch'::jsonb #>> '{results,3,error,code}', 'invalid_item',
  'A bad client timestamp fails only its item');
select is(:'batch'::jsonb #>> '{results,4,status}', 'redeemed', 'Items after failures still run');
select is(:'batch'::jsonb #>> '{results,5,replayed}', 'true',
  'An item replaying a single call''s key returns the stored result');
select is((:'batch'::jsonb ->> 'redeemed')::integer, 3, 'The flush counts what it redeemed');
select is(tests.error_code($$select api.redeem_vouchers('{}')$$), 'invalid_items',
  'items must be an array');
select is(tests.error_code(format($$select api.redeem_vouchers('%s')$$,
  (select jsonb_agg(jsonb_build_object('code', 'X', 'idempotency_key', g::text)) from generate_series(1, 501) g))),
  'invalid_items', 'A flush holds at most 500 items');

select api.redeem_vouchers(jsonb_build_array(
  jsonb_build_object('code', :'c3', 'idempotency_key', 'b-1', 'client_redeemed_at', '2026-11-28T09:00:00Z')
)) as rebatch \gset
select is(:'rebatch'::jsonb #>> '{results,0,replayed}', 'true', 'Replaying a flush replays its items');
select tests.clear_authentication();
select is((select count(*)::integer from app.redemptions r join app.vouchers v on v.id = r.voucher_id
           where v.code in (app.normalize_code(:'c3'), app.normalize_code(:'c6'))), 2,
  'Replays create no extra redemption records');

select * from finish();
rollback;
