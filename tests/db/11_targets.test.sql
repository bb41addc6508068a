-- Campaign targets: E.164 validation, de-duplication within a call and against
-- existing targets, global opt-outs, limits and the states that accept targets.
begin;
\ir helpers.sql
select plan(23);

select tests.create_staff('admin@targets.test', 'admin') as admin \gset

-- Structure -------------------------------------------------------------------------

select has_table('app', 'campaign_targets', 'Table app.campaign_targets exists');
select has_table('app', 'opt_outs', 'Table app.opt_outs exists');
select col_is_pk('app', 'opt_outs', 'msisdn', 'An opt-out is global, one row per phone number');
select has_index('app', 'campaign_targets', 'campaign_targets_campaign_msisdn_key',
  array['campaign_id', 'msisdn', 'resend_no'],
  'A number is a target of a campaign at most once, its support resends numbered (unique index)');
select has_index('app', 'campaign_targets', 'campaign_targets_campaign_id_id_idx', array['campaign_id', 'id'],
  'The enqueue job walks targets by (campaign_id, id)');
select throws_ok(
  $$insert into app.campaign_targets (campaign_id, msisdn)
    values ((select id from app.campaigns limit 1), '0700000001')$$,
  '23514', null, 'The table itself refuses a number that is not E.164');

select tests.authenticate_as(:'admin');
select api.create_channel('200300400', 'Targets channel') ->> 'id' as channel_id \gset
select api.create_campaign('Targets', 1000, 'KES', channel_id => :'channel_id', template_name => 'fuel_voucher')
  ->> 'id' as campaign_id \gset
select tests.authenticate_as_service_role();
select api.record_opt_out('+254799000009', 'test') is not null as opted;
select tests.authenticate_as(:'admin');

-- One call with every kind of item ---------------------------------------------------------

select api.add_campaign_targets(:'campaign_id', $$[
  "+254 700-000-001",
  {"msisdn": "+254700000002", "name": "Ann"},
  "+254700000001",
  "0700000003",
  42,
  {"phone": "+254700000004"},
  "+254799000009",
  "+(254) 700.000.005",
  "+0123456789"
]$$) as result \gset

select is((:'result'::jsonb ->> 'inserted')::integer, 3, 'Valid, new, not opted-out numbers are inserted');
select is((:'result'::jsonb ->> 'duplicates')::integer, 1, 'A number repeated within the call counts as a duplicate');
select is((:'result'::jsonb ->> 'opted_out')::integer, 1, 'An opted-out number is counted and not inserted');
select is(:'result'::jsonb -> 'invalid',
  $$[{"index": 3, "value": "0700000003", "reason": "invalid_e164"},
     {"index": 4, "value": 42, "reason": "not_a_phone_number"},
     {"index": 5, "value": {"phone": "+254700000004"}, "reason": "not_a_phone_number"},
     {"index": 8, "value": "+0123456789", "reason": "invalid_e164"}]$$::jsonb,
  'Invalid items are reported with their index, their value and a reason');
select is((:'result'::jsonb ->> 'inserted')::integer + (:'result'::jsonb ->> 'duplicates')::integer
          + (:'result'::jsonb ->> 'opted_out')::integer + jsonb_array_length(:'result'::jsonb -> 'invalid'),
  9, 'Every item lands in exactly one bucket');

select tests.clear_authentication();
select set_eq(format('select msisdn, attributes from app.campaign_targets where campaign_id = %L', :'campaign_id'),
  $$values ('+254700000001', '{}'::jsonb), ('+254700000002', '{"name": "Ann"}'), ('+254700000005', '{}')$$,
  'Numbers are stored normalised (spaces, dashes, dots, parentheses removed), object fields as attributes');
select tests.authenticate_as(:'admin');

-- Against existing targets ----------------------------------------------------------------------

select is(api.add_campaign_targets(:'campaign_id', '["+254700000001", "+254700000002", "+254700000006"]'),
  '{"inserted": 1, "duplicates": 2, "opted_out": 0, "refused": [], "invalid": []}'::jsonb,
  'Numbers that are already targets count as duplicates');
select is(api.add_campaign_targets(:'campaign_id', '[]'),
  '{"inserted": 0, "duplicates": 0, "opted_out": 0, "refused": [], "invalid": []}'::jsonb,
  'An empty array changes nothing');

-- Limits and errors -------------------------------------------------------------------------------

select is(
  (api.add_campaign_targets(:'campaign_id',
     (select jsonb_agg('+2547' || lpad(i::text, 8, '0')) from generate_series(1, 10000) i)) ->> 'inserted')::integer,
  9996, '10,000 targets are accepted in one call (less the 4 numbers already there)');
select is(tests.error_code(format($$select api.add_campaign_targets(%L,
            (select jsonb_agg('+2547' || lpad(i::text, 8, '0')) from generate_series(1, 10001) i))$$, :'campaign_id')),
  'too_many_targets', 'More than 10,000 targets in one call are refused');
select is(tests.error_status(format($$select api.add_campaign_targets(%L,
            (select jsonb_agg('+2547' || lpad(i::text, 8, '0')) from generate_series(1, 10001) i))$$, :'campaign_id')),
  400, 'too_many_targets is a 400');
select is(tests.error_code(format($$select api.add_campaign_targets(%L, '{"msisdn": "+254700000001"}')$$,
                                  :'campaign_id')),
  'invalid_targets', 'targets must be a JSON array');
select is(tests.error_code($$select api.add_campaign_targets(gen_random_uuid(), '["+254700000001"]')$$),
  'campaign_not_found', 'Adding targets to an unknown campaign is campaign_not_found');

-- Only drafts take targets ---------------------------------------------------------------------------

select is(api.schedule_campaign(:'campaign_id', now() + interval '1 day') ->> 'status', 'scheduled',
  'The campaign is scheduled');
select is(tests.error_code(format($$select api.add_campaign_targets(%L, '["+254700000099"]')$$, :'campaign_id')),
  'campaign_not_draft', 'A scheduled campaign takes no more targets');
select is(tests.error(format($$select api.add_campaign_targets(%L, '["+254700000099"]')$$, :'campaign_id'))
          -> 'details', '{"status": "scheduled"}'::jsonb, 'campaign_not_draft says the current status');
select is(tests.error_status(format($$select api.add_campaign_targets(%L, '["+254700000099"]')$$, :'campaign_id')),
  409, 'campaign_not_draft is a 409');

select * from finish();
rollback;
