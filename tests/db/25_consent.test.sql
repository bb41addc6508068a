-- Consent: recorded opt-ins (source, time, text shown), opting back in after an
-- opt-out (audited), and campaigns that require consent.
begin;
\ir helpers.sql
select plan(28);

select has_table('app', 'consents', 'Opt-ins are recorded in app.consents');
select is((select relrowsecurity from pg_class where oid = 'app.consents'::regclass), true,
  'Row level security is enabled on consents');
select has_column('app', 'campaigns', 'requires_consent', 'A campaign may require recorded consent');

select tests.create_staff('admin@consent', 'admin') as admin \gset
select tests.create_staff('op@consent', 'station_operator', tests.create_station('CONSENT-1')) as operator \gset

-- Recording ----------------------------------------------------------------------------------------

select tests.authenticate_as(:'admin');
select api.record_consents($$[
  {"msisdn": "+254 711 000 001", "source": "web_form", "text_shown": "Send me fuel offers on WhatsApp",
   "consented_at": "2026-11-01T10:00:00Z"},
  {"msisdn": "+254711000002", "source": "station_paper_form", "text_shown": "Offers by WhatsApp: yes",
   "consented_at": "2026-11-02T10:00:00Z"},
  {"msisdn": "+254711000001", "source": "web_form", "text_shown": "Send me fuel offers on WhatsApp",
   "consented_at": "2026-11-01T10:00:00Z"},
  {"msisdn": "0711000003", "source": "web_form", "text_shown": "x"},
  {"msisdn": "+254711000004", "text_shown": "x"},
  {"msisdn": "+254711000005", "source": "web_form", "text_shown": ""},
  {"msisdn": "+254711000006", "source": "web_form", "text_shown": "x", "consented_at": "soon"},
  {"msisdn": "+254711000007", "source": "web_form", "text_shown": "x", "consented_at": "2099-01-01T00:00:00Z"},
  42
]$$) as r \gset
select is((:'r'::jsonb ->> 'recorded')::integer, 2, 'Valid consents are recorded');
select is((:'r'::jsonb ->> 'duplicates')::integer, 1, 'A consent repeated in the call is one consent');
select is(jsonb_path_query_array(:'r'::jsonb, '$.invalid[*].reason'),
  '["invalid_msisdn", "invalid_source", "invalid_text_shown", "invalid_consented_at", "consented_at_in_future", "not_an_object"]'::jsonb,
  'Invalid items are reported with a reason each');
select is(api.record_consents($$[{"msisdn": "+254711000001", "source": "web_form",
  "text_shown": "Send me fuel offers on WhatsApp", "consented_at": "2026-11-01T10:00:00Z"}]$$) ->> 'duplicates', '1',
  'Recording the same consent again is idempotent');
select tests.clear_authentication();
select is((select (source, text_shown, consented_at)::text from app.consents where msisdn = '+254711000001'),
  ('web_form', 'Send me fuel offers on WhatsApp', '2026-11-01T10:00:00Z'::timestamptz)::text,
  'A consent keeps its source, the text shown and when it was given, for a normalised number');
select tests.authenticate_as(:'admin');

select is(tests.error_code($$select api.record_consents('{}')$$), 'invalid_consents', 'consents must be an array');
select is(tests.error_code($$select api.record_consents((select jsonb_agg('{}'::jsonb) from generate_series(1, 10001)))$$),
  'invalid_consents', 'At most 10,000 consents per call');
select is(tests.error_code($$select api.record_consent('+254711000009', 'web_form', '')$$), 'invalid_consent',
  'record_consent refuses a bad consent');
select is(tests.error($$select api.record_consent('nope', 'web_form', 'x')$$) #>> '{details,reason}', 'invalid_msisdn',
  'and says why');

-- Opting back in -------------------------------------------------------------------------------------

select tests.authenticate_as_service_role();
select api.record_opt_out('+254711000002', 'whatsapp_inbound') is not null as opted \gset
select tests.clear_authentication();
update app.opt_outs set created_at = '2026-11-20T00:00:00Z' where msisdn = '+254711000002';
select tests.authenticate_as(:'admin');
select is(api.record_consent('+254711000002', 'paper_import', 'Offers by WhatsApp: yes', '2026-11-10T00:00:00Z')
          ->> 'opted_out', 'true',
  'A consent older than the opt-out is recorded but does not opt the number back in');
select is(api.record_consent('+254711000002', 'web_form', 'Offers by WhatsApp again', '2026-11-25T00:00:00Z')
          - 'msisdn', '{"recorded": true, "resubscribed": true, "opted_out": false}'::jsonb,
  'A consent newer than the opt-out opts the number back in');
select tests.clear_authentication();
select is((select count(*)::integer from app.opt_outs where msisdn = '+254711000002'), 0, 'The opt-out is gone');
select is((select changes ->> 'source' from app.audit_log where table_name = 'opt_outs' and operation = 'delete'
             and row_key ->> 'msisdn' = '+254711000002'),
  'whatsapp_inbound', 'Opting back in is audited with the opt-out it removed');
select is((select actor_id from app.audit_log where table_name = 'opt_outs' and operation = 'delete'
             and row_key ->> 'msisdn' = '+254711000002'),
  :'admin'::uuid, 'and who recorded the consent');
select is((select count(*)::integer from app.audit_log where table_name = 'consents'
             and changes ->> 'msisdn' = '+254711000002'),
  3, 'Each consent recorded is audited');

-- Campaigns that require consent ---------------------------------------------------------------------

select tests.authenticate_as(:'admin');
select api.create_campaign('Consent only', 500, 'KES', requires_consent => true) ->> 'id' as campaign \gset
select is((select requires_consent from api.list_campaigns() where id = :'campaign'), true,
  'create_campaign records requires_consent');
select api.add_campaign_targets(:'campaign', '["+254711000001", "+254711000002", "+254711000099", "bad"]') as t \gset
select is((:'t'::jsonb ->> 'inserted')::integer, 2, 'Targets with a recorded consent are added');
select is(:'t'::jsonb -> 'refused', '[{"index": 2, "value": "+254711000099", "reason": "no_consent"}]'::jsonb,
  'A target without consent is reported as refused');
select is(jsonb_array_length(:'t'::jsonb -> 'invalid'), 1, 'Invalid items are still invalid, not refused');
select api.create_campaign('Anyone', 500, 'KES') ->> 'id' as open_campaign \gset
select is((api.add_campaign_targets(:'open_campaign', '["+254711000099"]') ->> 'inserted')::integer, 1,
  'A campaign that does not require consent takes any number');
select tests.clear_authentication();
select is((select count(*)::integer from app.campaign_targets where campaign_id = :'campaign'), 2,
  'Refused targets are not inserted');

-- Listing and privileges -----------------------------------------------------------------------------

select tests.authenticate_as(:'admin');
select is((select count(*)::integer from api.list_consents(msisdn => '+254 711 000 002')), 3,
  'list_consents shows a number''s history');
select is((select count(*)::integer from api.list_consents(msisdn => '+254711000002', page_size => 2)), 2,
  'and pages it');
select tests.authenticate_as(:'operator');
select is(tests.error_code($$select api.record_consent('+254711000010', 'station', 'x')$$), 'not_authorized',
  'A station operator cannot record consent');
select tests.authenticate_as_anon();
select throws_ok($$select api.record_consents('[]')$$, '42501', null, 'anon cannot record consent');
select tests.clear_authentication();

select * from finish();
rollback;
