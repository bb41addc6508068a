-- Vouchers: schema, security, issuance, preview, listing, void, idempotency.
begin;
\ir helpers.sql
select plan(75);

-- Structure -------------------------------------------------------------------

select has_table('app', t, format('Table app.%s exists', t))
from unnest(array['stations', 'staff', 'campaigns', 'voucher_batches', 'vouchers',
                  'idempotency_keys']) t;

select columns_are('app', 'vouchers', array['id', 'code', 'campaign_id', 'batch_id', 'status',
  'amount_minor', 'currency', 'expires_at', 'issued_at', 'redeemed_at', 'redeemed_station_id',
  'redeemed_by', 'voided_at', 'voided_by', 'void_reason'],
  'app.vouchers has exactly the documented columns');
select col_type_is('app', 'vouchers', 'amount_minor', 'bigint', 'Money is integer minor units');
select col_type_is('app', 'vouchers', 'expires_at', 'timestamp with time zone', 'Times are timestamptz');
select col_is_unique('app', 'vouchers', 'code', 'Voucher codes are unique across the whole table');
select col_has_check('app', 'vouchers', 'status', 'Voucher status is constrained to the lifecycle states');
select fk_ok('app', 'vouchers', array['batch_id', 'campaign_id'], 'app', 'voucher_batches', array['id', 'campaign_id'],
  'Every voucher belongs to a batch of its own campaign');

select is(
  (select bool_and(c.relrowsecurity) from pg_class c join pg_namespace n on n.oid = c.relnamespace
   where n.nspname = 'app' and c.relkind = 'r'),
  true, 'Row level security is enabled on every app table');
select is(
  (select array_agg(distinct c.relname::text order by c.relname::text)
   from pg_class c join pg_namespace n on n.oid = c.relnamespace
   cross join lateral aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
   where n.nspname = 'app' and c.relkind in ('r', 'v', 'm', 'S')
     and a.grantee in (0, 'anon'::regrole, 'authenticated'::regrole, 'service_role'::regrole)),
  null, 'Neither PUBLIC nor a platform role has any privilege on an app table, view or sequence');

-- Redeem, void and expiry change a voucher's status; an index naming status
-- (even in its predicate) would make each of those updates insert into every index.
select is(
  (select count(*)::integer from pg_index i
   where i.indrelid = 'app.vouchers'::regclass
     and (pg_get_expr(i.indpred, i.indrelid) ~ 'status'
          or exists (select from pg_attribute a
                     where a.attrelid = i.indrelid and a.attname = 'status' and a.attnum = any (i.indkey)))),
  0, 'No index on vouchers names status, so status changes are HOT updates');
select is((select reloptions from pg_class where oid = 'app.vouchers'::regclass), array['fillfactor=85'],
  'Voucher pages keep room for their one in-place update');
select has_index('app', 'voucher_batches', 'voucher_batches_expiry_due_idx', array['expires_at'],
  'Batches past expiry that the expiry job has not swept have an index');
select has_index('app', 'vouchers', 'vouchers_campaign_id_id_idx', array['campaign_id', 'id'],
  'list_vouchers pages by campaign through an index');
select has_index('app', 'vouchers', 'vouchers_batch_id_id_idx', array['batch_id', 'id'],
  'list_vouchers pages by batch through an index');

-- Security ------------------------------------------------------------------------

select is(
  (select count(*)::integer from pg_proc p join pg_namespace n on n.oid = p.pronamespace
   where n.nspname = 'api' and has_function_privilege('anon', p.oid, 'execute')),
  0, 'anon can execute no api function');
select is(
  (select count(*)::integer from pg_proc p join pg_namespace n on n.oid = p.pronamespace
   where n.nspname = 'api' and p.prosecdef
     and not coalesce(p.proconfig @> array['search_path=""'], false)),
  0, 'Every security definer api function pins search_path to empty');
select is(
  (select count(*)::integer from pg_proc p join pg_namespace n on n.oid = p.pronamespace
   where n.nspname = 'app' and has_function_privilege('authenticated', p.oid, 'execute')),
  0, 'authenticated can execute no private app function');

-- Fixtures -------------------------------------------------------------------------

select tests.create_station('T-ONE');
select tests.create_station('T-TWO') as t_two \gset
select tests.create_staff('admin@test', 'admin');
select tests.create_staff('op@test', 'station_operator', (select id from app.stations where code = 'T-ONE'));
select tests.create_user('stranger@test');

-- Campaigns -------------------------------------------------------------------------

select tests.authenticate_as(tests.user_id('admin@test'));
select lives_ok(
  $$select api.create_campaign('Fuel 10', 1000, 'kes', now() - interval '1 day', now() + interval '30 days')$$,
  'An admin can create a campaign');
select is(tests.error_code($$select api.create_campaign('X', 0, 'KES')$$), 'invalid_amount',
  'A non-positive amount is refused with invalid_amount');
select is(tests.error_code($$select api.create_campaign('X', 100, 'KENYA')$$), 'invalid_currency',
  'A currency that is not ISO 4217 shaped is refused with invalid_currency');
select is(tests.error_code($$select api.create_campaign('X', 100, 'KES', now(), now() - interval '1 day')$$),
  'invalid_expiry', 'A campaign cannot expire before it starts');
select is(tests.error_code(format($$select api.create_campaign('X', 100, 'KES', station_ids => array['%s']::uuid[])$$,
  gen_random_uuid())), 'station_not_found', 'Unknown station ids are refused with station_not_found');
select is(tests.error_status(format($$select api.create_campaign('X', 100, 'KES', station_ids => array['%s']::uuid[])$$,
  gen_random_uuid())), 404, 'station_not_found carries HTTP 404');

select tests.clear_authentication();
select is(
  (select currency from app.campaigns where name = 'Fuel 10'), 'KES',
  'Currency is stored upper-case');
select id as campaign_id from app.campaigns where name = 'Fuel 10' \gset
select tests.authenticate_as_service_role();
select api.create_campaign('Only T-TWO', 500, 'KES', now() - interval '1 day', null,
  array[:'t_two']::uuid[]);
select tests.clear_authentication();
select id as restricted_id from app.campaigns where name = 'Only T-TWO' \gset

-- Issuance ---------------------------------------------------------------------------

select tests.authenticate_as(tests.user_id('op@test'));
select is(tests.error_code(format($$select api.issue_vouchers('%s', 10, 'op-key')$$, :'campaign_id')),
  'not_authorized', 'A station operator cannot issue vouchers');
select is(tests.error_status(format($$select api.issue_vouchers('%s', 10, 'op-key')$$, :'campaign_id')),
  403, 'not_authorized carries HTTP 403');
select tests.clear_authentication();

select tests.authenticate_as(tests.user_id('stranger@test'));
select is(tests.error_code(format($$select api.preview_voucher('%s')$$, 'DEM00-00000-0001')),
  'not_authorized', 'A signed-in user who is not staff cannot preview vouchers');
select tests.clear_authentication();

select tests.authenticate_as_anon();
select throws_ok(format($$select api.issue_vouchers('%s', 10, 'anon-key')$$, :'campaign_id'),
  '42501', null, 'anon cannot even call issue_vouchers (permission denied)');
select tests.clear_authentication();

select tests.authenticate_as(tests.user_id('admin@test'));
select is(tests.error_code(format($$select api.issue_vouchers('%s', 0, 'k0')$$, :'campaign_id')),
  'invalid_count', 'Issuing 0 vouchers is refused with invalid_count');
select is(tests.error_code(format($$select api.issue_vouchers('%s', 5001, 'k0')$$, :'campaign_id')),
  'invalid_count', 'Issuing more than 5,000 vouchers in one call is refused');
select is(tests.error_code(format($$select api.issue_vouchers('%s', 5, 'k0')$$, gen_random_uuid())),
  'campaign_not_found', 'Issuing for an unknown campaign is refused with campaign_not_found');
select is(tests.error_code(format($$select api.issue_vouchers('%s', 5, '')$$, :'campaign_id')),
  'invalid_idempotency_key', 'An empty idempotency key is refused');
select is(tests.error_code(format($$select api.issue_vouchers('%s', 5, 'k0', now() - interval '1 hour')$$, :'campaign_id')),
  'invalid_expiry', 'Vouchers cannot be issued already expired');
select tests.clear_authentication();
select is((select count(*)::integer from app.vouchers where campaign_id = :'campaign_id'), 0,
  'Refused issuance calls changed nothing');

select tests.authenticate_as(tests.user_id('admin@test'));
select api.issue_vouchers(:'campaign_id', 5000, 'batch-1') as first_issue \gset
select tests.clear_authentication();
select is((:'first_issue'::jsonb ->> 'issued')::integer, 5000, 'issue_vouchers issues the requested count');
select is((:'first_issue'::jsonb ->> 'replayed')::boolean, false, 'A first call is not a replay');
select is((select count(*)::integer from app.vouchers where batch_id = (:'first_issue'::jsonb ->> 'batch_id')::uuid),
  5000, 'The batch holds 5,000 vouchers');
select is((select count(distinct code)::integer from app.vouchers where campaign_id = :'campaign_id'), 5000,
  'All 5,000 codes are distinct');
select is((select count(*)::integer from app.vouchers
           where campaign_id = :'campaign_id' and right(code, 1) <> app.code_check_char(left(code, 14))), 0,
  'Every issued code carries a valid check character');
select is((select min(amount_minor) = 1000 and max(amount_minor) = 1000 and bool_and(currency = 'KES')
           from app.vouchers where campaign_id = :'campaign_id'), true,
  'Vouchers carry the campaign value in minor units and its currency');

select tests.authenticate_as(tests.user_id('admin@test'));
select api.issue_vouchers(:'campaign_id', 5000, 'batch-1') as replay \gset
select tests.clear_authentication();
select is(:'replay'::jsonb - 'replayed', :'first_issue'::jsonb - 'replayed',
  'Replaying a key returns the stored response');
select is((:'replay'::jsonb ->> 'replayed')::boolean, true, 'The replayed response is marked replayed');
select is((select count(*)::integer from app.vouchers where campaign_id = :'campaign_id'), 5000,
  'A replay issues nothing');
select tests.authenticate_as(tests.user_id('admin@test'));
select is(tests.error_code(format($$select api.issue_vouchers('%s', 10, 'batch-1')$$, :'campaign_id')),
  'idempotency_key_reused', 'A key reused with a different request is refused');
select is(tests.error_status(format($$select api.issue_vouchers('%s', 10, 'batch-1')$$, :'campaign_id')),
  409, 'idempotency_key_reused carries HTTP 409');

-- Preview ----------------------------------------------------------------------------

select tests.clear_authentication();
select app.format_code(code) as sample_code, code as sample_canonical
from app.vouchers where campaign_id = :'campaign_id' order by id limit 1 \gset
select d || app.code_check_char(d) as unknown_code from (select 'ZZZZZZZZZZZZZZ' as d) x \gset
select tests.authenticate_as(tests.user_id('admin@test'));
select is(api.preview_voucher(:'sample_code') ->> 'status', 'issued', 'An admin can preview a voucher');
select is(api.preview_voucher(lower(replace(:'sample_code', '-', ' '))) ->> 'code', :'sample_code',
  'Preview normalises case, spaces and dashes');
select is(api.preview_voucher(:'sample_code') ->> 'amount_minor', '1000', 'Preview shows the value');
select is(api.preview_voucher(:'sample_code') ->> 'campaign_name', 'Fuel 10', 'Preview shows the campaign');
select is(api.preview_voucher(:'sample_code') -> 'redeemable_at', '"all"'::jsonb,
  'An unrestricted campaign is redeemable at all stations');
select is(tests.error_code(format($$select api.preview_voucher('%s')$$,
  left(:'sample_canonical', 14) || case when right(:'sample_canonical', 1) = '0' then '1' else '0' end)),
  'invalid_code_checksum', 'A typo in a code is caught by the check character');
select is(tests.error_code($$select api.preview_voucher('NOT-A-CODE')$$), 'invalid_code_format',
  'A malformed code is refused with invalid_code_format');
select is(tests.error_code(format($$select api.preview_voucher('%s')$$, :'unknown_code')),
  'voucher_not_found', 'A well-formed code that was never issued is voucher_not_found');
select is(
  (select count(*)::integer from jsonb_object_keys(api.preview_voucher(:'sample_code')) k
   where k in ('msisdn', 'phone', 'to', 'customer')), 0,
  'Preview exposes no customer data');
select tests.clear_authentication();

select tests.authenticate_as(tests.user_id('op@test'));
select is(api.preview_voucher(:'sample_code') ->> 'redeemable_here', 'true',
  'An operator sees that an unrestricted voucher is redeemable at their station');
select tests.clear_authentication();

select tests.authenticate_as_service_role();
select api.issue_vouchers(:'restricted_id', 1, 'restricted-1') as restricted_issue \gset
select tests.clear_authentication();
select app.format_code(code) as restricted_code from app.vouchers where campaign_id = :'restricted_id' \gset
select tests.authenticate_as(tests.user_id('op@test'));
select is(api.preview_voucher(:'restricted_code') ->> 'redeemable_here', 'false',
  'An operator sees that a voucher restricted to another station is not redeemable here');
select is(jsonb_array_length(api.preview_voucher(:'restricted_code') -> 'redeemable_at'), 1,
  'Preview lists the stations where a restricted voucher can be redeemed');
select tests.clear_authentication();

-- Listing ------------------------------------------------------------------------------

select tests.authenticate_as(tests.user_id('admin@test'));
select api.list_vouchers(:'campaign_id', page_size => 500) as page1 \gset
select is(jsonb_array_length(:'page1'::jsonb -> 'vouchers'), 500, 'A page holds at most page_size vouchers');
select isnt(:'page1'::jsonb ->> 'next_cursor', null, 'A full page returns a next cursor');
select api.list_vouchers(:'campaign_id', after => (:'page1'::jsonb ->> 'next_cursor')::bigint, page_size => 500) as page2 \gset
select ok((:'page2'::jsonb #>> '{vouchers,0,id}')::bigint > (:'page1'::jsonb ->> 'next_cursor')::bigint,
  'The next page starts after the cursor');
select is(jsonb_array_length((api.list_vouchers(:'campaign_id', batch_id => (:'first_issue'::jsonb ->> 'batch_id')::uuid,
  page_size => 3)) -> 'vouchers'), 3, 'Listing filters by batch');
select is(tests.error_code(format($$select api.list_vouchers('%s', page_size => 501)$$, :'campaign_id')),
  'invalid_page_size', 'A page larger than 500 is refused');
select is(tests.error_code(format($$select api.list_vouchers('%s', status => 'lost')$$, :'campaign_id')),
  'invalid_status', 'An unknown status filter is refused');

-- Void -----------------------------------------------------------------------------------

select is(api.void_voucher(:'sample_code', 'Printed by mistake', 'void-1') ->> 'status', 'void',
  'An admin can void an issued voucher');
select tests.clear_authentication();
select is((select void_reason from app.vouchers where code = :'sample_canonical'), 'Printed by mistake',
  'The void is recorded with its reason');
select tests.authenticate_as(tests.user_id('admin@test'));
select is((api.void_voucher(:'sample_code', 'Printed by mistake', 'void-1') ->> 'replayed')::boolean, true,
  'Replaying a void returns the stored response');
select is(tests.error_code(format($$select api.void_voucher('%s', 'again', 'void-2')$$, :'sample_code')),
  'voucher_not_issued', 'A voucher that is not issued cannot be voided');
select is(tests.error_code(format($$select api.void_voucher('%s', '', 'void-3')$$, :'sample_code')),
  'invalid_reason', 'A void needs a reason');
select tests.clear_authentication();
select is((select count(*)::integer from app.vouchers where campaign_id = :'campaign_id'), 5000,
  'Voiding deletes nothing');

select tests.authenticate_as(tests.user_id('op@test'));
select is(tests.error_code(format($$select api.void_voucher('%s', 'x', 'op-void')$$, :'restricted_code')),
  'not_authorized', 'A station operator cannot void vouchers');
select tests.clear_authentication();

select * from finish();
rollback;
