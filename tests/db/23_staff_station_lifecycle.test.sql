-- Staff and station lifecycle: deactivation takes effect on the very next
-- request, reactivation restores it, both are idempotent and audited, and the
-- lists page with their caps.
begin;
\ir helpers.sql
select plan(33);

select tests.create_station('LC-ONE') as station \gset
select tests.create_station('LC-TWO') as station_two \gset
select tests.create_staff('admin@lifecycle', 'admin') as admin \gset
select tests.create_staff('admin2@lifecycle', 'admin') as admin2 \gset
select tests.create_staff('op@lifecycle', 'station_operator', :'station') as operator \gset
insert into app.campaigns (id, name, amount_minor, currency, starts_at)
values ('00000000-0000-4000-8000-00000021c001', 'Lifecycle', 100, 'KES', now() - interval '1 hour');
select app.issue_batch('00000000-0000-4000-8000-00000021c001', 3) is not null as issued \gset
create temporary table lc_codes as
select app.format_code(code) as code, row_number() over (order by id) as n from app.vouchers
where campaign_id = '00000000-0000-4000-8000-00000021c001';
grant select on lc_codes to public;
select code as c1 from lc_codes where n = 1 \gset
select code as c2 from lc_codes where n = 2 \gset
select code as c3 from lc_codes where n = 3 \gset

-- Staff --------------------------------------------------------------------------------------

select tests.authenticate_as(:'operator');
select is(api.redeem_voucher(:'c1', 'lc-1') ->> 'status', 'redeemed', 'An active operator redeems');

select tests.authenticate_as(:'admin');
select is(api.deactivate_staff(:'operator') ->> 'active', 'false', 'An admin deactivates an operator');
select is(api.deactivate_staff(:'operator') ->> 'active', 'false',
  'Deactivating an inactive staff member changes nothing (idempotent)');

select tests.authenticate_as(:'operator');
select is(tests.error_code(format($$select api.redeem_voucher(%L, 'lc-2')$$, :'c2')), 'not_authorized',
  'A deactivated operator cannot redeem on their very next request');
select is(tests.error_code(format($$select api.preview_voucher(%L)$$, :'c2')), 'not_authorized',
  'nor preview');

select tests.authenticate_as(:'admin');
select is(api.reactivate_staff(:'operator') ->> 'active', 'true', 'An admin reactivates the operator');
select tests.authenticate_as(:'operator');
select is(api.redeem_voucher(:'c2', 'lc-3') ->> 'status', 'redeemed', 'A reactivated operator redeems again');

select tests.authenticate_as(:'admin');
select is(tests.error_code(format('select api.deactivate_staff(%L)', :'admin')), 'cannot_deactivate_self',
  'An admin cannot deactivate themselves');
select is(tests.error_status(format('select api.deactivate_staff(%L)', :'admin')), 409,
  'cannot_deactivate_self is a 409');
select is(api.deactivate_staff(:'admin2') ->> 'active', 'false', 'An admin deactivates another admin');
select tests.authenticate_as(:'admin2');
select is(tests.error_code('select api.list_stations()'), 'not_authorized',
  'A deactivated admin is refused from the next request');
select tests.authenticate_as(:'admin');
select is(tests.error_code('select api.deactivate_staff(gen_random_uuid())'), 'staff_not_found',
  'Deactivating someone who is not staff is staff_not_found');
select is(tests.error_status('select api.deactivate_staff(gen_random_uuid())'), 404, 'staff_not_found is a 404');

-- Stations ------------------------------------------------------------------------------------

select is(api.deactivate_station(:'station') ->> 'active', 'false', 'An admin deactivates a station');
select tests.authenticate_as(:'operator');
select is(tests.error_code(format($$select api.redeem_voucher(%L, 'lc-4')$$, :'c3')), 'station_not_found',
  'Its operators cannot redeem there on their very next request');
select tests.authenticate_as(:'admin');
select is(tests.error_code(format($$select api.redeem_voucher(%L, 'lc-5', station_id => %L)$$, :'c3', :'station')),
  'station_not_found', 'nor can an admin redeem at an inactive station');
select is(api.reactivate_station(:'station') ->> 'active', 'true', 'An admin reactivates the station');
select is(api.reactivate_station(:'station') ->> 'active', 'true', 'Reactivating an active station is idempotent');
select tests.authenticate_as(:'operator');
select is(api.redeem_voucher(:'c3', 'lc-6') ->> 'status', 'redeemed', 'Redeeming works again');
select tests.authenticate_as(:'admin');
select is(tests.error_code('select api.deactivate_station(gen_random_uuid())'), 'station_not_found',
  'Deactivating an unknown station is station_not_found');

select tests.authenticate_as(:'operator');
select is(tests.error_code(format('select api.deactivate_station(%L)', :'station')), 'not_authorized',
  'An operator cannot deactivate a station');
select is(tests.error_code(format('select api.deactivate_staff(%L)', :'admin')), 'not_authorized',
  'An operator cannot deactivate staff');
select tests.clear_authentication();

-- Audit ----------------------------------------------------------------------------------------

select is((select count(*)::integer from app.audit_log
           where table_name = 'staff' and operation = 'update'
             and row_key = jsonb_build_object('user_id', :'operator') and changes ? 'active'),
  2, 'Deactivating and reactivating a staff member is audited once each (the idempotent repeat is not)');
select is((select actor_id from app.audit_log
           where table_name = 'stations' and row_key = jsonb_build_object('id', :'station')
             and changes #>> '{active,new}' = 'false'),
  :'admin'::uuid, 'The audit row says which admin deactivated the station');

-- Lists -----------------------------------------------------------------------------------------

select tests.authenticate_as(:'admin');
select is((select count(*)::integer from api.list_stations() where code like 'LC-%'), 2, 'list_stations lists stations');
select is((select array_agg(code order by code) from api.list_stations(page_size => 1, after => 'LC-ONE')
           where code like 'LC-%'), array['LC-TWO'], 'list_stations pages by code with after');
select is((select operators from api.list_stations() where code = 'LC-ONE'), 1::bigint,
  'list_stations counts the station''s active operators');
select is(tests.error_code('select * from api.list_stations(page_size => 501)'), 'invalid_page_size',
  'A page holds at most 500 rows');
select is(tests.error_code('select * from api.list_stations(page_size => 0)'), 'invalid_page_size',
  'and at least one');
select is((select count(*)::integer from api.list_staff(station_id => :'station')), 1,
  'list_staff filters by station');
select is((select email from api.list_staff(role => 'station_operator', station_id => :'station')), 'op@lifecycle',
  'list_staff shows the email');
select is((select count(*)::integer from api.list_staff(active => false) where email like '%@lifecycle'), 1,
  'list_staff filters by active');
select is(tests.error_code($$select * from api.list_staff(role => 'cashier')$$), 'invalid_staff_role',
  'list_staff refuses an unknown role');
select tests.clear_authentication();

select * from finish();
rollback;
