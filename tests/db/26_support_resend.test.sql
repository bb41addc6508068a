-- Support: lookup by phone number and resend of a voucher's message — the same
-- voucher in a new message of the same campaign, through the unchanged claim
-- path; opt-outs, spacing, cooldown and the resend limit honoured; idempotent;
-- the enqueue and completion jobs unaffected.
begin;
\ir helpers.sql
select plan(48);

select tests.create_staff('admin@support', 'admin') as admin \gset
select tests.create_staff('op@support', 'station_operator', tests.create_station('SUP-1')) as operator \gset

-- A dispatching campaign of three numbers on an unthrottled channel; its three
-- messages are claimed and reported: sent, failed, sent.
select tests.fixture_campaign(array['+254780000001', '+254780000002', '+254780000003']) as campaign \gset
select m.id as m1 from app.messages m where m.campaign_id = :'campaign' and m.to_msisdn = '+254780000001' \gset
select m.id as m2 from app.messages m where m.campaign_id = :'campaign' and m.to_msisdn = '+254780000002' \gset
select m.id as m3 from app.messages m where m.campaign_id = :'campaign' and m.to_msisdn = '+254780000003' \gset
select tests.claim_all(:'campaign', 'w-1', now() - interval '1 hour') is not null as claimed \gset
select tests.authenticate_as_service_role();
select api.report_message_results(jsonb_build_array(
  jsonb_build_object('message_id', :m1, 'outcome', 'sent', 'wamid', 'wamid.sup.1'),
  jsonb_build_object('message_id', :m2, 'outcome', 'failed', 'error_code', 'waba_131026'),
  jsonb_build_object('message_id', :m3, 'outcome', 'sent', 'wamid', 'wamid.sup.3')), 'w-1') is not null as reported \gset
select tests.clear_authentication();
-- The attempts were an hour ago (spacing and cooldown are not what this part tests).
update app.messages set created_at = now() - interval '1 hour' where campaign_id = :'campaign';
select app.format_code(v.code) as code2 from app.messages m join app.vouchers v on v.id = m.voucher_id
where m.id = :m2 \gset

-- Lookup ------------------------------------------------------------------------------------------

select tests.authenticate_as(:'admin');
select api.find_customer('+254 780 000 002') as found \gset
select is(:'found'::jsonb #>> '{messages,0,status}', 'failed', 'find_customer shows the number''s message status');
select is(:'found'::jsonb #>> '{messages,0,voucher,code}', :'code2', 'and its voucher');
select is(:'found'::jsonb #>> '{messages,0,voucher,status}', 'issued', 'with the voucher''s status');
select is(:'found'::jsonb -> 'opted_out', 'null'::jsonb, 'and whether the number opted out');
select is(tests.error_code($$select api.find_customer('0780')$$), 'invalid_msisdn', 'A bad number is invalid_msisdn');
select tests.authenticate_as(:'operator');
select is(tests.error_code($$select api.find_customer('+254780000002')$$), 'not_authorized',
  'A station operator cannot look customers up');

-- Resend ------------------------------------------------------------------------------------------

select tests.authenticate_as(:'admin');
select api.resend_message(:m2, 'rs-1') as rs1 \gset
select (:'rs1'::jsonb ->> 'message_id')::bigint as r1 \gset
select is(:'rs1'::jsonb ->> 'status', 'queued', 'A resend queues a new message');
select is(:'rs1'::jsonb ->> 'voucher_code', :'code2', 'carrying the same voucher');
select is(api.resend_message(:m2, 'rs-1'), :'rs1'::jsonb || '{"replayed": true}',
  'Replaying the key returns the same resend');
select tests.clear_authentication();
select isnt(:r1, :m2, 'The resend is a new message');
select is((select (m.campaign_id, m.to_msisdn::text, m.template_name, m.body_parameters, m.voucher_id)::text
           from app.messages m where m.id = :r1),
          (select (m.campaign_id, m.to_msisdn::text, m.template_name, m.body_parameters, null::bigint)::text
           from app.messages m where m.id = :m2),
  'in the same campaign, to the same number, with the same template and parameters, and no voucher of its own');
select is((select (resend_of, resend_no)::text from app.campaign_targets where id = :r1), (:m2, 1)::text,
  'Its target is resend 1 of the original');
select is((select count(*)::integer from app.vouchers where campaign_id = :'campaign'), 3, 'No voucher is issued');
select is((select enqueue_cursor from app.campaigns where id = :'campaign'), :r1::bigint,
  'The enqueue cursor covers the resend (nothing else waits to be enqueued)');

-- The claim takes it like any message
select is(tests.claim_all(:'campaign', 'w-2'), array[:r1::bigint], 'The claim leases the resend');
select tests.authenticate_as(:'admin');
select is(tests.error_code(format('select api.resend_message(%s, %L)', :m2, 'rs-2')), 'message_pending',
  'No second resend while one is on its way');
select is(tests.error_status(format('select api.resend_message(%s, %L)', :m2, 'rs-2')), 409, 'message_pending is a 409');
select tests.authenticate_as_service_role();
select api.report_message_results(jsonb_build_array(
  jsonb_build_object('message_id', :r1, 'outcome', 'sent', 'wamid', 'wamid.sup.r1')), 'w-2') is not null as sent \gset
select tests.authenticate_as(:'admin');
select is(tests.error_code(format('select api.resend_message(%s, %L)', :r1, 'rs-3')), 'resend_too_soon',
  'A resend of the resend within the cooldown is refused');
select is(tests.error_status(format('select api.resend_message(%s, %L)', :r1, 'rs-3')), 429, 'resend_too_soon is a 429');
select ok((tests.error(format('select api.resend_message(%s, %L)', :r1, 'rs-3')) #>> '{details,retry_after_seconds}')::integer
          between 250 and 300, 'and says when to retry');
select is(api.update_settings(resend_cooldown_seconds => 0) ->> 'resend_cooldown_seconds', '0',
  'An admin sets the cooldown to 0');
select tests.clear_authentication();
update app.channels set min_recipient_interval_seconds = 60
where id = (select channel_id from app.campaigns where id = :'campaign');
select tests.authenticate_as(:'admin');
select is(tests.error_code(format('select api.resend_message(%s, %L)', :r1, 'rs-4')), 'resend_too_soon',
  'The channel''s per-recipient spacing still holds against the last attempt');
select tests.clear_authentication();
update app.channels set min_recipient_interval_seconds = 0
where id = (select channel_id from app.campaigns where id = :'campaign');
select tests.authenticate_as(:'admin');
select is((api.resend_message(:r1, 'rs-5') ->> 'resend_no')::integer, 2, 'A resend of a resend is resend 2 of the original');

-- Refusals
select tests.authenticate_as_service_role();
select api.record_opt_out('+254780000003', 'test') is not null as opted \gset
select tests.authenticate_as(:'admin');
select is(tests.error_code(format('select api.resend_message(%s, %L)', :m3, 'rs-6')), 'recipient_opted_out',
  'No resend to a number that opted out');
select tests.clear_authentication();
select app.format_code(v.code) as code1 from app.vouchers v
where v.id = (select voucher_id from app.messages where id = :m1) \gset
select tests.authenticate_as(:'operator');
select api.redeem_voucher(:'code1', 'rs-redeem') is not null as redeemed \gset
select tests.authenticate_as(:'admin');
select is(tests.error_code(format('select api.resend_message(%s, %L)', :m1, 'rs-7')), 'voucher_not_issued',
  'No resend of a voucher that was redeemed');
select is(tests.error_code('select api.resend_message(-1, ''rs-8'')'), 'message_not_found',
  'An unknown message is message_not_found');
select is(tests.error_code(format('select api.resend_message(%s, null)', :m2)), 'invalid_idempotency_key',
  'A resend needs an idempotency key');
select tests.authenticate_as(:'operator');
select is(tests.error_code(format('select api.resend_message(%s, %L)', :m2, 'rs-9')), 'not_authorized',
  'A station operator cannot resend');
select tests.authenticate_as_anon();
select throws_ok(format('select api.resend_message(%s, %L)', :m2, 'rs-10'), '42501', null, 'anon cannot resend');
select tests.clear_authentication();

-- The limit: resend 2 is queued; deliver it, then resend 3, then none.
select tests.claim_all(:'campaign', 'w-3') is not null as claimed3 \gset
select jsonb_agg(jsonb_build_object('message_id', m.id, 'outcome', 'sent', 'wamid', 'wamid.sup.' || m.id)) as leased3
from app.messages m where m.campaign_id = :'campaign' and m.status = 'leased' \gset
select tests.authenticate_as_service_role();
select api.report_message_results(:'leased3', 'w-3') is not null as sent3 \gset
select tests.authenticate_as(:'admin');
select is((api.resend_message(:m2, 'rs-11') ->> 'resend_no')::integer, 3, 'Resend 3 is the last one allowed');
select tests.clear_authentication();
update app.messages set status = 'read', wamid = 'wamid.sup.last' where id = (
  select t.id from app.campaign_targets t where t.resend_of = :m2 and t.resend_no = 3);
select tests.authenticate_as(:'admin');
select is(tests.error_code(format('select api.resend_message(%s, %L)', :m2, 'rs-12')), 'resend_limit_reached',
  'A fourth resend is refused');
select tests.clear_authentication();

-- A completed campaign dispatches again for its resend, then completes again.
select is(app.complete_campaigns(), 1, 'The campaign completes once every message is final');
select is((select status from app.campaigns where id = :'campaign'), 'completed', 'It is completed');
update app.settings set max_resends_per_message = 5;
update app.vouchers set status = 'issued', redeemed_at = null, redeemed_station_id = null, redeemed_by = null
where id = (select voucher_id from app.messages where id = :m1);
delete from app.redemptions where voucher_id = (select voucher_id from app.messages where id = :m1);
select tests.authenticate_as(:'admin');
select (api.resend_message(:m1, 'rs-13') ->> 'message_id')::bigint as r13 \gset
select tests.clear_authentication();
select is((select status from app.campaigns where id = :'campaign'), 'dispatching',
  'A resend of a completed campaign''s message makes it dispatch again');
select is(app.complete_campaigns(), 0, 'It does not complete while the resend is pending');
select is(tests.claim_all(:'campaign', 'w-4'), array[:r13::bigint], 'The claim takes the resend');
select tests.authenticate_as_service_role();
select api.report_message_results(jsonb_build_array(
  jsonb_build_object('message_id', :r13, 'outcome', 'sent', 'wamid', 'wamid.sup.r13')), 'w-4') is not null as sent4 \gset
select tests.clear_authentication();
select is(app.complete_campaigns(), 1, 'Once it is final, the campaign completes again');
select is((select count(*)::integer from app.audit_log where table_name = 'campaigns'
             and row_key ->> 'id' = :'campaign' and changes #>> '{status,new}' = 'dispatching'
             and changes #>> '{status,old}' = 'completed'),
  1, 'Reopening for a resend is audited as a campaign change');
select is((select count(*)::integer from app.audit_log where event = 'messages.resend'
             and changes ->> 'campaign_id' = :'campaign'),
  4, 'Each resend is audited');

-- The completion guard: a pending message keeps a campaign dispatching.
select tests.fixture_campaign(array['+254780000011']) as guarded \gset
update app.campaigns set status = 'completed', completed_at = now() where id = :'guarded';
select is((select status from app.campaigns where id = :'guarded'), 'dispatching',
  'A campaign with a pending message cannot be marked completed, whatever the path');

-- Mid-enqueue: a campaign that still has targets to enqueue.
insert into app.channels (id, phone_number_id, display_name, rate_per_minute, burst, min_recipient_interval_seconds,
                          tokens)
values ('00000000-0000-4000-8000-0000000024c1', '24000001', 'Chunks', 600000, 10000, 0, 10000);
insert into app.campaigns (id, name, amount_minor, currency, channel_id, template_name, status, scheduled_for)
values ('00000000-0000-4000-8000-0000000024c2', 'Chunks', 100, 'KES', '00000000-0000-4000-8000-0000000024c1',
        'fuel_voucher', 'scheduled', now());
insert into app.campaign_targets (campaign_id, msisdn)
select '00000000-0000-4000-8000-0000000024c2', '+25479000000' || g from generate_series(1, 3) g;
select app.start_campaign('00000000-0000-4000-8000-0000000024c2', 1) as first_chunk \gset
select m.id as c1 from app.messages m where m.campaign_id = '00000000-0000-4000-8000-0000000024c2' \gset
update app.messages set status = 'failed', attempts = 1, created_at = now() - interval '1 hour' where id = :c1;
select tests.authenticate_as(:'admin');
select (api.resend_message(:c1, 'rs-chunk') ->> 'message_id')::bigint as rc \gset
select tests.clear_authentication();
select ok(:rc > (select max(id) from app.campaign_targets
                 where campaign_id = '00000000-0000-4000-8000-0000000024c2' and resend_no = 0),
  'A resend made while targets wait to be enqueued comes after them');
select is((select enqueue_cursor from app.campaigns where id = '00000000-0000-4000-8000-0000000024c2'), :c1::bigint,
  'and leaves the cursor where it was');
select is(app.enqueue_campaign_chunk('00000000-0000-4000-8000-0000000024c2', 5000), 2,
  'The next chunk enqueues the two waiting targets, not the resend');
select is((select count(*)::integer from app.vouchers where campaign_id = '00000000-0000-4000-8000-0000000024c2'), 3,
  'One voucher per target: none for the resend');
select is((select enqueue_cursor from app.campaigns where id = '00000000-0000-4000-8000-0000000024c2'), :rc::bigint,
  'The cursor moves past the resend');
select is((select count(*)::integer from app.messages where campaign_id = '00000000-0000-4000-8000-0000000024c2'), 4,
  'Three originals and one resend');

-- Stopping a resend never voids the voucher: it follows its original message.
select tests.authenticate_as_service_role();
select api.record_opt_out('+254790000001', 'test') is not null as opted2 \gset
select tests.clear_authentication();
select is((select status from app.messages where id = :rc), 'cancelled', 'An opt-out cancels a queued resend');
select is((select v.status from app.messages m join app.vouchers v on v.id = m.voucher_id where m.id = :c1), 'issued',
  'and the voucher, which the original message may have delivered, stays issued');

select * from finish();
rollback;
