-- Undoing a redemption, redemption details, and a cancelled campaign at redeem.
begin;
\ir helpers.sql
select plan(54);

-- Structure -----------------------------------------------------------------------------------

select has_column('app', 'redemptions', 'reversed_at', 'A redemption records when it was undone');
select has_index('app', 'redemptions', 'redemptions_voucher_active_key', array['voucher_id'],
  'At most one active redemption per voucher (partial unique index)');
select has_index('app', 'redemptions', 'redemptions_station_time_idx', array['station_id', 'redeemed_at'],
  'Settlement reads redemptions by station and time');
select is(
  (select count(*)::integer from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any (i.indkey)
   where i.indrelid = 'app.vouchers'::regclass and a.attname = 'status')
  + (select count(*)::integer from pg_index i where i.indrelid = 'app.vouchers'::regclass
     and pg_get_expr(i.indpred, i.indrelid) like '%status%'),
  0, 'No index names vouchers.status, so redeem and undo stay HOT updates');

-- Fixtures ---------------------------------------------------------------------------------------

select tests.create_station('UN-ONE') as station_one \gset
select tests.create_station('UN-TWO') as station_two \gset
select tests.create_staff('admin@undo', 'admin') as admin \gset
select tests.create_staff('op1@undo', 'station_operator', :'station_one') as op1 \gset
select tests.create_staff('op2@undo', 'station_operator', :'station_two') as op2 \gset
insert into app.campaigns (id, name, amount_minor, currency, starts_at, expires_at) values
  ('00000000-0000-4000-8000-00000022c001', 'Undo', 2500, 'KES', now() - interval '2 days', now() + interval '2 days'),
  ('00000000-0000-4000-8000-00000022c002', 'To cancel', 700, 'KES', now() - interval '2 days', null);
select app.issue_batch('00000000-0000-4000-8000-00000022c001', 8) is not null as issued \gset
select app.issue_batch('00000000-0000-4000-8000-00000022c002', 2) is not null as issued2 \gset
create temporary table un_codes as
select app.format_code(code) as code, row_number() over (partition by campaign_id order by id) as n, campaign_id
from app.vouchers where campaign_id in ('00000000-0000-4000-8000-00000022c001', '00000000-0000-4000-8000-00000022c002');
grant select on un_codes to public;
select code as c1 from un_codes where n = 1 and campaign_id = '00000000-0000-4000-8000-00000022c001' \gset
select code as c2 from un_codes where n = 2 and campaign_id = '00000000-0000-4000-8000-00000022c001' \gset
select code as c3 from un_codes where n = 3 and campaign_id = '00000000-0000-4000-8000-00000022c001' \gset
select code as c4 from un_codes where n = 4 and campaign_id = '00000000-0000-4000-8000-00000022c001' \gset
select code as c5 from un_codes where n = 5 and campaign_id = '00000000-0000-4000-8000-00000022c001' \gset
select code as c6 from un_codes where n = 6 and campaign_id = '00000000-0000-4000-8000-00000022c001' \gset
select code as k1 from un_codes where n = 1 and campaign_id = '00000000-0000-4000-8000-00000022c002' \gset
select code as k2 from un_codes where n = 2 and campaign_id = '00000000-0000-4000-8000-00000022c002' \gset

-- Details at redeem ---------------------------------------------------------------------------------

select tests.authenticate_as(:'op1');
select api.redeem_voucher(:'c1', 'un-1', receipt_ref => 'R-1001', pump => '4', quantity => 31.5,
                          sale_amount_minor => 480000) as r1 \gset
select is(:'r1'::jsonb ->> 'receipt_ref', 'R-1001', 'A redeem records a receipt reference and returns it');
select tests.clear_authentication();
select is((select (receipt_ref, pump, quantity, sale_amount_minor, amount_minor, currency::text)::text
           from app.redemptions where id = (:'r1'::jsonb ->> 'redemption_id')::bigint),
  '(R-1001,4,31.500,480000,2500,KES)', 'The redemption keeps pump, quantity, sale amount and the voucher''s value');
select tests.authenticate_as(:'op1');
select is(api.redeem_voucher(:'c1', 'un-1', receipt_ref => 'R-1001', pump => '4', quantity => 31.5,
                             sale_amount_minor => 480000) ->> 'replayed', 'true',
  'The same key with the same details replays');
select is(tests.error_code(format($$select api.redeem_voucher(%L, 'un-1', receipt_ref => 'R-1002', pump => '4',
                                     quantity => 31.5, sale_amount_minor => 480000)$$, :'c1')),
  'idempotency_key_reused', 'The same key with other details is idempotency_key_reused');
select is(tests.error_code(format($$select api.redeem_voucher(%L, 'un-2', receipt_ref => repeat('x', 65))$$, :'c2')),
  'invalid_redemption_details', 'A receipt reference longer than 64 characters is refused');
select is(tests.error(format($$select api.redeem_voucher(%L, 'un-2', quantity => 0)$$, :'c2')) #>> '{details,field}',
  'quantity', 'A quantity of 0 is refused, naming the field');
select is(tests.error_code(format($$select api.redeem_voucher(%L, 'un-2', quantity => 1.2345)$$, :'c2')),
  'invalid_redemption_details', 'A quantity with more than 3 decimals is refused');
select is(tests.error_code(format($$select api.redeem_voucher(%L, 'un-2', sale_amount_minor => -1)$$, :'c2')),
  'invalid_redemption_details', 'A negative sale amount is refused');
select is(tests.error_code(format($$select api.redeem_voucher(%L, 'un-2', pump => '')$$, :'c2')),
  'invalid_redemption_details', 'An empty pump is refused');
select tests.clear_authentication();
select is((select status from app.vouchers where code = app.normalize_code(:'c2')), 'issued',
  'Refused details redeem nothing');
select tests.authenticate_as(:'op1');

select api.redeem_vouchers(jsonb_build_array(
  jsonb_build_object('code', :'c2', 'idempotency_key', 'unb-1', 'receipt_ref', 'B-1', 'quantity', 10),
  jsonb_build_object('code', :'c3', 'idempotency_key', 'unb-2', 'quantity', 'ten'),
  jsonb_build_object('code', :'c3', 'idempotency_key', 'unb-3', 'sale_amount_minor', 12.5))) as batch \gset
select is(:'batch'::jsonb #>> '{results,0,receipt_ref}', 'B-1', 'A flush item carries details');
select is(:'batch'::jsonb #>> '{results,1,error,code}', 'invalid_redemption_details',
  'A flush item with a detail of the wrong type fails alone');
select is(:'batch'::jsonb #>> '{results,2,error,details,field}', 'sale_amount_minor',
  'A fractional sale amount fails its item, naming the field');
select tests.clear_authentication();

-- Undo by the station, within the window ---------------------------------------------------------

select (:'r1'::jsonb ->> 'redemption_id')::bigint as r1_id \gset
select tests.authenticate_as(:'op2');
select is(tests.error_code(format($$select api.undo_redemption('wrong voucher', 'undo-x', redemption_id => %s)$$,
                                  :'r1_id')),
  'station_not_allowed', 'Another station''s operator cannot undo the redemption');

select tests.authenticate_as(:'op1');
select api.undo_redemption('wrong voucher scanned', 'undo-1', redemption_id => :'r1_id') as u1 \gset
select is(:'u1'::jsonb ->> 'voucher_status', 'issued', 'The redeeming station''s operator undoes it; the voucher is issued again');
select tests.clear_authentication();
select is((select (reversed_by, reversal_reason)::text from app.redemptions where id = :'r1_id'),
  (:'op1'::uuid, 'wrong voucher scanned')::text, 'The redemption is marked reversed, with who and why');
select is((select count(*)::integer from app.redemptions where id = :'r1_id'), 1, 'and never deleted');
select is((select (status, redeemed_at, redeemed_station_id)::text from app.vouchers where code = app.normalize_code(:'c1')),
  '(issued,,)', 'The voucher no longer says where or when it was redeemed');
select tests.authenticate_as(:'op1');
select is(api.undo_redemption('wrong voucher scanned', 'undo-1', redemption_id => :'r1_id') ->> 'replayed', 'true',
  'Replaying the undo returns the stored answer');
select is(tests.error_code(format($$select api.undo_redemption('again', 'undo-1', redemption_id => %s)$$, :'r1_id')),
  'idempotency_key_reused', 'The undo key with another reason is idempotency_key_reused');
select is(tests.error_code(format($$select api.undo_redemption('again', 'undo-2', redemption_id => %s)$$, :'r1_id')),
  'redemption_already_reversed', 'Undoing it again with a new key is redemption_already_reversed');
select is(tests.error_code(format($$select api.undo_redemption('again', 'undo-3', code => %L)$$, :'c1')),
  'voucher_not_redeemed', 'Undoing by code a voucher that is not redeemed is voucher_not_redeemed');

select api.redeem_voucher(:'c1', 'un-again') ->> 'status' as again \gset
select is(:'again'::text, 'redeemed', 'The voucher can be redeemed again');
select tests.clear_authentication();
select is((select count(*)::integer from app.redemptions r join app.vouchers v on v.id = r.voucher_id
           where v.code = app.normalize_code(:'c1')), 2, 'It now has two redemption records');
select is((select count(*)::integer from app.redemptions r join app.vouchers v on v.id = r.voucher_id
           where v.code = app.normalize_code(:'c1') and r.reversed_at is null), 1, 'of which one is active');
select tests.clear_authentication();
select throws_ok(format($$insert into app.redemptions (voucher_id, station_id, idempotency_key, amount_minor, currency)
                          select id, %L, 'second-active', 1, 'KES' from app.vouchers where code = app.normalize_code(%L)$$,
                        :'station_one', :'c1'),
  '23505', null, 'A second active redemption of one voucher is impossible, whatever the code path');

-- The window ------------------------------------------------------------------------------------

select tests.authenticate_as(:'op1');
select (api.redeem_voucher(:'c4', 'un-4') ->> 'redemption_id')::bigint as r4_id \gset
select tests.clear_authentication();
update app.redemptions set redeemed_at = now() - interval '16 minutes' where id = :'r4_id';
select tests.authenticate_as(:'op1');
select is(tests.error_code(format($$select api.undo_redemption('late', 'undo-4', redemption_id => %s)$$, :'r4_id')),
  'undo_window_expired', 'After 15 minutes the operator may no longer undo');
select is(tests.error_status(format($$select api.undo_redemption('late', 'undo-4', redemption_id => %s)$$, :'r4_id')),
  403, 'undo_window_expired is a 403');
select is((tests.error(format($$select api.undo_redemption('late', 'undo-4', redemption_id => %s)$$, :'r4_id'))
           #>> '{details,undo_window_seconds}')::integer, 900, 'and says the window');
select tests.authenticate_as(:'admin');
select is(api.update_settings(undo_window_seconds => 1800) ->> 'undo_window_seconds', '1800',
  'An admin widens the window to 30 minutes');
select tests.authenticate_as(:'op1');
select is(api.undo_redemption('late', 'undo-5', code => :'c4') ->> 'voucher_status', 'issued',
  'Within the wider window the operator undoes it, by code');
select tests.authenticate_as(:'admin');
select is(tests.error_code('select api.update_settings(undo_window_seconds => -1)'), 'invalid_setting',
  'A negative window is refused');

select (api.redeem_voucher(:'c5', 'un-5', station_id => :'station_two') ->> 'redemption_id')::bigint as r5_id \gset
select tests.clear_authentication();
update app.redemptions set redeemed_at = now() - interval '30 days' where id = :'r5_id';
select tests.authenticate_as(:'admin');
select is(api.undo_redemption('refund', 'undo-6', redemption_id => :'r5_id') ->> 'voucher_status', 'issued',
  'An admin undoes any redemption at any time');

-- Past its expiry, the voucher comes back expired
select (api.redeem_voucher(:'c6', 'un-6', station_id => :'station_one') ->> 'redemption_id')::bigint as r6_id \gset
select tests.clear_authentication();
update app.vouchers set expires_at = now() - interval '1 minute' where code = app.normalize_code(:'c6');
select tests.authenticate_as(:'admin');
select is(api.undo_redemption('aborted fuelling', 'undo-7', redemption_id => :'r6_id') ->> 'voucher_status', 'expired',
  'A voucher past its expiry returns to expired, not issued');
select tests.clear_authentication();
select is((select status from app.vouchers where code = app.normalize_code(:'c6')), 'expired', 'and is stored so');
select tests.authenticate_as(:'admin');

-- Argument errors
select is(tests.error_code($$select api.undo_redemption('x', 'undo-e1')$$), 'invalid_undo_target',
  'An undo names a redemption id or a code');
select is(tests.error_code(format($$select api.undo_redemption('x', 'undo-e2', redemption_id => 1, code => %L)$$, :'c1')),
  'invalid_undo_target', 'but not both');
select is(tests.error_code(format($$select api.undo_redemption('', 'undo-e3', code => %L)$$, :'c1')),
  'invalid_reason', 'An undo needs a reason');
select is(tests.error_code($$select api.undo_redemption('x', 'undo-e4', redemption_id => -5)$$),
  'redemption_not_found', 'An unknown redemption is redemption_not_found');
select is(tests.error_code($$select api.undo_redemption('x', 'undo-e5', code => 'NOPE')$$),
  'invalid_code_format', 'A malformed code is refused like everywhere');
select tests.clear_authentication();

select tests.authenticate_as_anon();
select throws_ok($$select api.undo_redemption('x', 'anon', redemption_id => 1)$$, '42501', null,
  'anon cannot undo');
select tests.clear_authentication();

-- Audit
select is((select count(*)::integer from app.audit_log where table_name = 'redemptions' and event = 'redemptions.update'
             and row_key = jsonb_build_object('id', :r1_id)),
  1, 'An undo is audited once on the redemption');
select is((select changes #>> '{status,old}' || '>' || (changes #>> '{status,new}') from app.audit_log
           where table_name = 'vouchers' and row_key ->> 'code' = app.normalize_code(:'c1')
           order by id limit 1),
  'redeemed>issued', 'and once on the voucher it returned');

-- A cancelled campaign ---------------------------------------------------------------------------

select tests.authenticate_as(:'admin');
select api.cancel_campaign('00000000-0000-4000-8000-00000022c002') is not null as cancelled \gset
select tests.authenticate_as(:'op1');
select is(tests.error_code(format($$select api.redeem_voucher(%L, 'k-1')$$, :'k1')), 'campaign_cancelled',
  'A cancelled campaign''s voucher is refused at redeem');
select is(tests.error_status(format($$select api.redeem_voucher(%L, 'k-1')$$, :'k1')), 410,
  'campaign_cancelled is a 410');
select is(api.redeem_vouchers(jsonb_build_array(jsonb_build_object('code', :'k2', 'idempotency_key', 'k-2')))
          #>> '{results,0,error,code}', 'campaign_cancelled', 'and in a flush');
select tests.clear_authentication();
select is((select status from app.vouchers where code = app.normalize_code(:'k1')), 'issued',
  'The voucher keeps its status (nothing is rewritten on cancel)');
select tests.authenticate_as(:'op1');
select is(api.preview_voucher(:'k1') ->> 'campaign_status', 'cancelled', 'Preview shows the campaign is cancelled');
select is(api.preview_voucher(:'k1') ->> 'redeemable_here', 'false', 'and that it is not redeemable here');
select tests.clear_authentication();
select is((select count(*)::integer from app.idempotency_keys where key in ('k-1', 'k-2')), 0,
  'Refusals store no idempotency key');

select * from finish();
rollback;
