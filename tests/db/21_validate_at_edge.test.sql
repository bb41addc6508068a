-- Validate once, at the database's edge: what WhatsApp would refuse on every
-- message is refused when it is written, with a coded error.
begin;
\ir helpers.sql
select plan(20);

-- Template languages ------------------------------------------------------------------------------------------

select ok(app.is_template_language('en') and app.is_template_language('en_US') and app.is_template_language('pt_BR')
          and app.is_template_language('prs_AF') and app.is_template_language('fil'),
  'Meta''s template language codes are accepted (en, en_US, pt_BR, prs_AF, fil)');
select ok(not app.is_template_language('en_us') and not app.is_template_language('en-US')
          and not app.is_template_language('xx') and not app.is_template_language('en_XX'),
  'Anything else is refused: case matters, no hyphens, no made-up codes');

select tests.create_staff('admin@edge.test', 'admin') as admin \gset
select tests.authenticate_as(:'admin');
select api.create_channel('700300400', 'Edge channel') ->> 'id' as ch \gset
select is(tests.error(format($$select api.create_campaign('Lang', 100, 'KES', channel_id => %L,
                                 template_name => 'fuel_voucher', template_language => 'en_us')$$, :'ch')) -> 'details',
  '{"field": "template_language", "suggestion": "en_US"}'::jsonb,
  'create_campaign refuses en_us with invalid_template and suggests en_US');
select is(tests.error_code(format($$select api.create_campaign('Lang', 100, 'KES', channel_id => %L,
                                      template_name => 'fuel_voucher', template_language => 'klingon')$$, :'ch')),
  'invalid_template', 'and a code Meta does not have');
select api.create_campaign('Lang ok', 100, 'KES', channel_id => :'ch', template_name => 'fuel_voucher',
                           template_language => 'en_US') ->> 'id' as lang_campaign \gset
select tests.clear_authentication();
select throws_ok(format($$update app.campaigns set template_language = 'en_us' where id = %L$$, :'lang_campaign'),
  '23514', null, 'The campaigns table refuses it too');
select tests.authenticate_as(:'admin');

-- Phone number ids ---------------------------------------------------------------------------------------------

select is(tests.error($$select api.create_channel('phone-1', 'Letters')$$) -> 'details' ->> 'field', 'phone_number_id',
  'A non-numeric phone_number_id is refused (invalid_channel names the field)');
select tests.clear_authentication();
select throws_ok($$insert into app.channels (phone_number_id, display_name, burst, tokens) values ('abc', 'x', 1, 1)$$,
  '23514', null, 'and the channels table refuses it too');
select tests.authenticate_as(:'admin');
select is(tests.error($$select api.create_channel('700300401', 'Bad WABA', waba_id => 'waba-1')$$) -> 'details' ->> 'field',
  'waba_id', 'A WABA id is digits');
select is(api.create_channel('700300402', 'Display', display_phone_number => '+1 (555) 078-3881') ->> 'display_phone_number',
  '15550783881', 'The display number is kept as the digits Meta sends in webhooks');

-- Text parameters -------------------------------------------------------------------------------------------

select is(tests.error(format($$select api.create_campaign('Text', 100, 'KES', channel_id => %L,
                                 template_name => 'fuel_voucher', template_params => '["voucher_code", {"text": "line one\nline two"}]')$$,
                             :'ch')) -> 'details', '{"index": 1, "reason": "invalid_text"}'::jsonb,
  'A literal text parameter with a new line is refused (WhatsApp: 132018)');
select is(tests.error_code(format($$select api.create_campaign('Five     spaces', 100, 'KES', channel_id => %L,
                                      template_name => 'fuel_voucher', template_params => '["campaign_name"]')$$, :'ch')),
  'invalid_template_params', 'and so is a campaign name with five spaces when it is a parameter');
select ok(api.create_campaign('Five     spaces', 100, 'KES', channel_id => :'ch', template_name => 'fuel_voucher')
            ->> 'id' is not null, 'A name that is not a parameter may be anything');

-- Targets that cannot fill a parameter ----------------------------------------------------------------------

select api.create_campaign('Attributes', 100, 'KES', channel_id => :'ch', template_name => 'fuel_voucher',
  template_params => '["voucher_code", {"attribute": "first_name"}]') ->> 'id' as camp \gset
select is(api.add_campaign_targets(:'camp', '[{"msisdn": "+254700800001", "first_name": "Amina"},
                                              "+254700800002",
                                              {"msisdn": "+254700800003", "first_name": ""},
                                              {"msisdn": "+254700800004", "first_name": "A\tB"},
                                              {"msisdn": "+254700800005", "first_name": 7},
                                              {"msisdn": "+254700800006", "first_name": {"x": 1}}]'),
  jsonb_build_object('inserted', 2, 'duplicates', 0, 'opted_out', 0, 'refused', '[]'::jsonb, 'invalid', jsonb_build_array(
    jsonb_build_object('index', 1, 'value', '+254700800002', 'reason', 'missing_attribute', 'attribute', 'first_name'),
    jsonb_build_object('index', 2, 'value', jsonb_build_object('msisdn', '+254700800003', 'first_name', ''),
                       'reason', 'missing_attribute', 'attribute', 'first_name'),
    jsonb_build_object('index', 3, 'value', jsonb_build_object('msisdn', '+254700800004', 'first_name', E'A\tB'),
                       'reason', 'invalid_attribute', 'attribute', 'first_name'),
    jsonb_build_object('index', 5, 'value', jsonb_build_object('msisdn', '+254700800006', 'first_name', jsonb_build_object('x', 1)),
                       'reason', 'missing_attribute', 'attribute', 'first_name'))),
  'Targets that lack the attribute, or whose value WhatsApp would refuse, are reported invalid with the attribute; a number is fine');
select is(api.schedule_campaign(:'camp') ->> 'status', 'dispatching', 'The campaign schedules');
select tests.clear_authentication();
select is((select count(*)::integer from app.campaign_targets where campaign_id = :'camp'), 2, 'with only the others');
select results_eq(format($$select body_parameters[2] from app.messages where campaign_id = %L order by id$$, :'camp'),
  $$values ('Amina'), ('7')$$, 'and every message has its parameter');

-- schedule_campaign catches what was written another way ---------------------------------------------------

select tests.authenticate_as(:'admin');
select api.create_campaign('Direct', 100, 'KES', channel_id => :'ch', template_name => 'fuel_voucher',
  template_params => '[{"attribute": "first_name"}]') ->> 'id' as direct \gset
select tests.clear_authentication();
insert into app.campaign_targets (campaign_id, msisdn, attributes)
values (:'direct', '+254700900001', '{"first_name": "Ok"}'), (:'direct', '+254700900002', '{}'),
       (:'direct', '+254700900003', '{"first_name": "  "}');
update app.campaigns set template_language = 'en' where id = :'direct';
select tests.authenticate_as(:'admin');
select is(tests.error(format('select api.schedule_campaign(%L)', :'direct')) -> 'details',
  '{"reasons": ["targets_missing_attributes"], "invalid_targets": 2}'::jsonb,
  'schedule_campaign refuses targets that cannot fill the template (campaign_not_ready, with how many)');
select is(tests.error_status(format('select api.schedule_campaign(%L)', :'direct')), 409, 'as a 409');
select tests.clear_authentication();
alter table app.campaigns drop constraint campaigns_template_language_check;
update app.campaigns set template_language = 'english' where id = :'direct';
delete from app.campaign_targets where campaign_id = :'direct' and attributes ->> 'first_name' is distinct from 'Ok';
select tests.authenticate_as(:'admin');
select is(tests.error(format('select api.schedule_campaign(%L)', :'direct')) -> 'details' -> 'reasons',
  '["invalid_template_language"]'::jsonb, 'and a language written before languages were checked');
select tests.clear_authentication();
select is((select status from app.campaigns where id = :'direct'), 'draft', 'Nothing changed');

select * from finish();
rollback;
