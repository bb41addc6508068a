-- At realistic size (≥ 100k vouchers) the hot voucher queries use their indexes.
begin;
\ir helpers.sql
select plan(4);

-- 20 campaigns of 5,000: the shape of production, where a campaign is a small
-- slice of the table (one giant campaign would make any index scan look alike).
insert into app.campaigns (id, name, amount_minor, currency)
select ('00000000-0000-4000-8000-0000000f' || lpad(n::text, 4, '0'))::uuid, 'Scale ' || n, 100, 'KES'
from generate_series(1, 20) n;
select app.issue_batch(id, 5000) from app.campaigns where name like 'Scale %';
analyze app.vouchers;

select code as some_code, batch_id from app.vouchers where campaign_id = '00000000-0000-4000-8000-0000000f0001' order by id desc limit 1 \gset

select matches(tests.plan_of(format($$select * from app.vouchers v where v.code = %L$$, :'some_code')),
  'Index Scan using vouchers_code_key',
  'Preview and redeem look a code up through the unique index');
select doesnt_match(tests.plan_of(format($$select * from app.vouchers v where v.code = %L$$, :'some_code')),
  'Seq Scan', 'Preview never scans the vouchers table');
select matches(tests.plan_of($$select v.* from app.vouchers v
  where v.campaign_id = '00000000-0000-4000-8000-0000000f0001' and v.id > 1000
  order by v.id limit 100$$),
  'Index Scan using vouchers_campaign_id_id_idx',
  'list_vouchers pages through the (campaign_id, id) index');
select matches(tests.plan_of(format($$select v.* from app.vouchers v
  where v.campaign_id = '00000000-0000-4000-8000-0000000f0001' and v.batch_id = %L and v.id > 0
  order by v.id limit 100$$, :'batch_id')),
  -- Which of the two depends on how many batches ANALYZE believes there are.
  'Index Scan (using|on) vouchers_(batch_id_id|campaign_id_id)_idx',
  'list_vouchers by batch uses an index, not a sequential scan');

select * from finish();
rollback;
