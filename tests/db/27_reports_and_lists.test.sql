-- Reports and lists: station settlement per day (count and amount by
-- currency, reversals), the campaign funnel by day, and keyset-paged lists of
-- campaigns, redemptions and messages with their caps.
begin;
\ir helpers.sql
select plan(34);

select tests.create_staff('admin@reports', 'admin') as admin \gset
select tests.create_staff('op@reports', 'station_operator', tests.create_station('REP-A')) as operator \gset
select id as sa from app.stations where code = 'REP-A' \gset
select tests.create_station('REP-B') as sb \gset

-- Redemptions on known days, years back: benchmarks seed redemptions over the last 90 days into the
-- same database (perf/seed/redemptions.ts), and these totals must see only this spec's rows. --------
-- REP-A, 2019-03-10: three KES 25.00 (one with till details) and one UGX 5,000;
-- REP-B, 2019-03-10: one KES 25.00, undone on 2019-03-11 (a reversal that day);
-- REP-A, 2019-03-11 at 22:30 UTC: one KES 25.00 (2019-03-12 in Nairobi, UTC+3).
insert into app.campaigns (id, name, amount_minor, currency, starts_at) values
  ('00000000-0000-4000-8000-00000025c001', 'Rep KES', 2500, 'KES', '2019-03-01'),
  ('00000000-0000-4000-8000-00000025c002', 'Rep UGX', 5000, 'UGX', '2019-03-01');
select app.issue_batch('00000000-0000-4000-8000-00000025c001', 5) is not null as k \gset
select app.issue_batch('00000000-0000-4000-8000-00000025c002', 1) is not null as u \gset
create temporary table rep_v as
select v.id, row_number() over (order by v.campaign_id, v.id) as n from app.vouchers v
where v.campaign_id in ('00000000-0000-4000-8000-00000025c001', '00000000-0000-4000-8000-00000025c002');
insert into app.redemptions (voucher_id, station_id, redeemed_at, idempotency_key, amount_minor, currency,
                             quantity, sale_amount_minor, receipt_ref)
select v.id, x.station, x.at, 'rep-' || r.n, v.amount_minor, v.currency, x.quantity, x.sale, x.receipt
from rep_v r join app.vouchers v on v.id = r.id
join (values
  (1, :'sa'::uuid, '2019-03-10T08:00:00Z'::timestamptz, 20.5, 300000, 'T-1'),
  (2, :'sa'::uuid, '2019-03-10T09:00:00Z'::timestamptz, null, null, null),
  (3, :'sa'::uuid, '2019-03-10T10:00:00Z'::timestamptz, null, null, null),
  (4, :'sb'::uuid, '2019-03-10T11:00:00Z'::timestamptz, null, null, null),
  (5, :'sa'::uuid, '2019-03-11T22:30:00Z'::timestamptz, null, null, null),
  (6, :'sa'::uuid, '2019-03-10T12:00:00Z'::timestamptz, null, null, null)
) x(n, station, at, quantity, sale, receipt) on x.n = r.n;
update app.vouchers v set status = 'redeemed', redeemed_at = r.redeemed_at, redeemed_station_id = r.station_id
from app.redemptions r where r.voucher_id = v.id and r.idempotency_key like 'rep-%';
update app.redemptions set reversed_at = '2019-03-11T09:00:00Z', reversal_reason = 'test'
where idempotency_key = 'rep-4';

-- Settlement --------------------------------------------------------------------------------------------

select tests.authenticate_as(:'admin');
select is(
  (select array_agg(format('%s %s %s: %s x %s, %s reversed %s, net %s', day, station_code, currency, redemptions,
                           amount_minor, reversals, reversed_amount_minor, net_amount_minor) order by cursor)
   from api.station_settlement('2019-03-10', '2019-03-12') where station_code like 'REP-%'),
  array['2019-03-10 REP-A KES: 3 x 7500, 0 reversed 0, net 7500',
        '2019-03-10 REP-A UGX: 1 x 5000, 0 reversed 0, net 5000',
        '2019-03-10 REP-B KES: 1 x 2500, 0 reversed 0, net 2500',
        '2019-03-11 REP-A KES: 1 x 2500, 0 reversed 0, net 2500',
        '2019-03-11 REP-B KES: 0 x 0, 1 reversed 2500, net -2500'],
  'Settlement: per day, station and currency, the count and amount redeemed and the reversals of that day');
select is((select (quantity, sale_amount_minor)::text from api.station_settlement('2019-03-10', '2019-03-10')
           where station_code = 'REP-A' and currency = 'KES'),
  '(20.500,300000)', 'and the till''s quantity and sale amount, where recorded');
select is((select array_agg(day::text || ' ' || station_code order by cursor)
           from api.station_settlement('2019-03-10', '2019-03-12', time_zone => 'Africa/Nairobi')
           where station_code = 'REP-A' and currency = 'KES'),
  array['2019-03-10 REP-A', '2019-03-12 REP-A'], 'Days are calendar days in the time zone asked for');
select is((select count(*)::integer from api.station_settlement('2019-03-10', '2019-03-12', station_id => :'sb')), 2,
  'One station''s settlement');
select is((select count(*)::integer from api.station_settlement('2019-03-10', '2019-03-12', currency => 'ugx')), 1,
  'One currency''s settlement');
select cursor as first_cursor from api.station_settlement('2019-03-10', '2019-03-12', page_size => 2)
  where station_code like 'REP-%' order by cursor desc limit 1 \gset
select is((select array_agg(cursor order by cursor) from api.station_settlement('2019-03-10', '2019-03-12',
             after => :'first_cursor', page_size => 2) where station_code like 'REP-%'),
  array['2019-03-10|REP-B|KES', '2019-03-11|REP-A|KES'], 'Pages follow the cursor');
select is(tests.error_code($$select * from api.station_settlement('2019-03-12', '2019-03-10')$$), 'invalid_date_range',
  'from_date after to_date is refused');
select is(tests.error_code($$select * from api.station_settlement('2018-01-01', '2019-03-10')$$), 'invalid_date_range',
  'A range longer than a year is refused');
select is(tests.error_code($$select * from api.station_settlement('2019-03-10', '2019-03-12', time_zone => 'Mars/Olympus')$$),
  'invalid_time_zone', 'An unknown time zone is refused');
select is(tests.error_code($$select * from api.station_settlement('2019-03-10', '2019-03-12', after => 'garbage')$$),
  'invalid_cursor', 'A malformed cursor is refused');
select is(tests.error_code($$select * from api.station_settlement('2019-03-10', '2019-03-12', page_size => 501)$$),
  'invalid_page_size', 'A page holds at most 500 rows');
select tests.authenticate_as(:'operator');
select is(tests.error_code($$select * from api.station_settlement('2019-03-10', '2019-03-12')$$), 'not_authorized',
  'A station operator cannot read the settlement');

-- Redemptions -------------------------------------------------------------------------------------------

select tests.authenticate_as(:'admin');
select is((select array_agg(receipt_ref order by id) from api.list_redemptions(station_id => :'sa',
             since => '2019-03-10', until => '2019-03-11')),
  array['T-1', null, null, null], 'list_redemptions lists a station''s redemptions over a period, details included');
select is((select count(*)::integer from api.list_redemptions(since => '2019-03-10', until => '2019-03-13')), 6,
  'and every station''s');
select is((select reversal_reason from api.list_redemptions(status => 'reversed', since => '2019-03-10',
             until => '2019-03-13')), 'test', 'It filters undone redemptions');
select max(id) as page_last from (select id from api.list_redemptions(since => '2019-03-10', until => '2019-03-13',
  page_size => 4)) p \gset
select is((select array_agg(to_char(redeemed_at at time zone 'UTC', 'DD HH24') order by redeemed_at)
           from api.list_redemptions(since => '2019-03-10', until => '2019-03-13', after => :page_last)),
  array['10 12', '11 22'], 'Pages are in time order and follow the last row''s id');
select is(tests.error_code('select * from api.list_redemptions(after => -1)'), 'invalid_cursor',
  'An unknown cursor is refused');
select is(tests.error_code($$select * from api.list_redemptions(status => 'gone')$$), 'invalid_status',
  'An unknown status is refused');

-- Campaigns ----------------------------------------------------------------------------------------------

select is((select array_agg(name order by name) from api.list_campaigns() where name like 'Rep %'),
  array['Rep KES', 'Rep UGX'], 'list_campaigns lists campaigns');
select id as newest from api.list_campaigns(page_size => 1) \gset
select isnt((select id from api.list_campaigns(after => :'newest', page_size => 1)), :'newest'::uuid,
  'and pages newest first');
select is(tests.error_code($$select * from api.list_campaigns(status => 'finished')$$), 'invalid_status',
  'An unknown campaign status is refused');

-- Funnel and messages --------------------------------------------------------------------------------------

select tests.clear_authentication();
select tests.fixture_campaign(array['+254781000001', '+254781000002', '+254781000003']) as fc \gset
update app.campaign_targets set created_at = '2019-03-20T10:00:00Z' where campaign_id = :'fc';
select array_agg(m.id order by m.id) as fm from app.messages m where m.campaign_id = :'fc' \gset
update app.messages set status = 'read', wamid = 'wamid.f.' || id, sent_at = '2019-03-20T10:01:00Z',
  delivered_at = '2019-03-20T10:02:00Z', read_at = '2019-03-21T08:00:00Z' where id = (:'fm'::bigint[])[1];
update app.messages set status = 'delivered', wamid = 'wamid.f.' || id, sent_at = '2019-03-20T10:01:00Z',
  delivered_at = '2019-03-20T10:02:00Z' where id = (:'fm'::bigint[])[2];
update app.messages set status = 'failed', failed_at = '2019-03-20T10:03:00Z' where id = (:'fm'::bigint[])[3];
insert into app.redemptions (voucher_id, station_id, redeemed_at, idempotency_key, amount_minor, currency)
select m.voucher_id, :'sa', '2019-03-22T10:00:00Z', 'fun-1', 1000, 'KES' from app.messages m
where m.id = (:'fm'::bigint[])[1];
update app.vouchers set status = 'redeemed', redeemed_at = '2019-03-22T10:00:00Z', redeemed_station_id = :'sa'
where id = (select voucher_id from app.messages where id = (:'fm'::bigint[])[1]);
select app.format_code(v.code) as fcode1 from app.vouchers v join app.messages m on m.voucher_id = v.id
where m.id = (:'fm'::bigint[])[1] \gset

select tests.authenticate_as(:'admin');
select is((select array_agg(format('%s: %s targets, %s sent, %s delivered, %s read, %s failed, %s redeemed',
                                   day, targets, sent, delivered, read, failed, redeemed) order by day)
           from api.campaign_funnel(:'fc')),
  array['2019-03-20: 3 targets, 2 sent, 2 delivered, 0 read, 1 failed, 0 redeemed',
        '2019-03-21: 0 targets, 0 sent, 0 delivered, 1 read, 0 failed, 0 redeemed',
        '2019-03-22: 0 targets, 0 sent, 0 delivered, 0 read, 0 failed, 1 redeemed'],
  'The funnel counts targets → sent → delivered → read → redeemed on the day each happened');
select is((select array_agg(day order by day) from api.campaign_funnel(:'fc', after => '2019-03-20', page_size => 1)),
  array['2019-03-21'::date], 'The funnel pages by day');
select is(tests.error_code('select * from api.campaign_funnel(gen_random_uuid())'), 'campaign_not_found',
  'An unknown campaign is campaign_not_found');

select is((select array_agg(status order by id) from api.list_messages(campaign_id => :'fc')),
  array['read', 'delivered', 'failed'], 'list_messages lists a campaign''s messages in order');
select is((select count(*)::integer from api.list_messages(campaign_id => :'fc', status => 'failed')), 1,
  'filtered by status');
select is((select voucher_code from api.list_messages(msisdn => '+254 781 000 001')), :'fcode1',
  'or by number, with the voucher code');
select is((select array_agg(id order by id) from api.list_messages(campaign_id => :'fc', after => (:'fm'::bigint[])[1])),
  (:'fm'::bigint[])[2:3], 'and pages by id');
select is(tests.error_code($$select * from api.list_messages(status => 'lost')$$), 'invalid_status',
  'An unknown message status is refused');
select is(tests.error_code($$select * from api.list_messages(msisdn => '07')$$), 'invalid_msisdn',
  'A bad number is refused');
select is((select count(*)::integer from api.list_messages(page_size => 500)) <= 500, true,
  'A page never holds more than 500 rows');
select is(tests.error_code('select * from api.list_messages(page_size => 501)'), 'invalid_page_size',
  'and asking for more is refused');

-- Every list and report RPC returns a set (so it exports as CSV), takes `after`
-- and page_size (default 200), and never a PostgREST-reserved argument name.
-- Not list_vouchers (older: a JSON page, 100 by default), nor the two catalogues an admin
-- reads whole: list_channels and list_portfolios (a business has a handful of
-- phone numbers and portfolios; Meta caps numbers per portfolio).
select is(
  (select array_agg(p.proname::text order by p.proname) from pg_proc p join pg_namespace n on n.oid = p.pronamespace
   where n.nspname = 'api' and (p.proname like 'list\_%' or p.proname in ('station_settlement', 'campaign_funnel'))
     and p.proname not in ('list_vouchers', 'list_channels', 'list_portfolios')
     and not (p.proretset and 'after' = any (p.proargnames) and 'page_size' = any (p.proargnames)
              and pg_get_function_arguments(p.oid) like '%page_size integer DEFAULT 200%')),
  null, 'Every new list and report returns a set and pages with after and page_size (default 200)');
select is(
  (select array_agg(p.proname::text order by p.proname) from pg_proc p join pg_namespace n on n.oid = p.pronamespace
   where n.nspname = 'api' and p.proargnames && array['limit', 'offset', 'order', 'select', 'columns', 'on_conflict']),
  null, 'No RPC has an argument PostgREST reserves');
select tests.clear_authentication();

select * from finish();
rollback;
