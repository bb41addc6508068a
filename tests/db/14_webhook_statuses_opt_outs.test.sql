-- WhatsApp status webhooks (monotonic, idempotent, unknown wamids counted; these
-- carry no message id, so they are matched by recipient and wamid) and
-- global opt-outs (idempotent, honoured at enqueue and for pending messages).
begin;
\ir helpers.sql
select plan(29);

-- A dispatching campaign whose messages were all sent, with wamids wamid.hook.<n>.
insert into app.channels (id, phone_number_id, display_name, rate_per_minute, burst, tokens)
values ('00000000-0000-4000-8000-000000000140', '500000001', 'Webhook channel', 250, 42, 42);
insert into app.campaigns (id, name, amount_minor, currency, channel_id, template_name, status, scheduled_for)
values ('00000000-0000-4000-8000-000000000141', 'Webhooks', 1000, 'KES', '00000000-0000-4000-8000-000000000140',
        'fuel_voucher', 'scheduled', now());
insert into app.campaign_targets (campaign_id, msisdn)
select '00000000-0000-4000-8000-000000000141', '+25481000000' || i from generate_series(1, 6) i;
select app.start_campaign('00000000-0000-4000-8000-000000000141') as enqueued \gset
update app.messages set status = 'sent', sent_at = now(), wamid = 'wamid.hook.' || right(to_msisdn, 1)
where campaign_id = '00000000-0000-4000-8000-000000000141';

-- Monotonic statuses -------------------------------------------------------------------------------

select tests.authenticate_as_service_role();
select is(api.record_waba_statuses('[{"wamid": "wamid.hook.1", "recipient_id": "254810000001", "status": "delivered", "timestamp": "1800000100"}]'),
  '{"applied": 1, "ignored": 0, "unknown": 0}'::jsonb, 'sent → delivered applies');
select is(api.record_waba_statuses('[{"wamid": "wamid.hook.1", "recipient_id": "254810000001", "status": "delivered", "timestamp": "1800000100"}]'),
  '{"applied": 0, "ignored": 1, "unknown": 0}'::jsonb, 'The same webhook again changes nothing (idempotent)');
select is(api.record_waba_statuses('[{"wamid": "wamid.hook.1", "recipient_id": "254810000001", "status": "read", "timestamp": 1800000200}]'),
  '{"applied": 1, "ignored": 0, "unknown": 0}'::jsonb, 'delivered → read applies (numeric timestamp)');
select is(api.record_waba_statuses('[{"wamid": "wamid.hook.1", "recipient_id": "254810000001", "status": "delivered", "timestamp": "1800000300"},
                                     {"wamid": "wamid.hook.1", "recipient_id": "254810000001", "status": "sent", "timestamp": "1800000300"}]'),
  '{"applied": 0, "ignored": 2, "unknown": 0}'::jsonb, 'A late delivered or sent after read is ignored');
select is(api.record_waba_statuses('[{"wamid": "wamid.hook.1", "recipient_id": "254810000001", "status": "failed", "error_code": "131026"}]') ->> 'ignored',
  '1', 'failed after read is ignored');
select tests.clear_authentication();
select results_eq($$select status, delivered_at, read_at from app.messages where wamid = 'wamid.hook.1'$$,
  $$values ('read', to_timestamp(1800000100), to_timestamp(1800000200))$$,
  'The message stays read with the first delivered and read times');

select tests.authenticate_as_service_role();
select is(api.record_waba_statuses('[{"wamid": "wamid.hook.2", "recipient_id": "254810000002", "status": "read", "timestamp": "1800000500"},
                                     {"wamid": "wamid.hook.2", "recipient_id": "254810000002", "status": "delivered", "timestamp": "1800000400"}]'),
  '{"applied": 1, "ignored": 1, "unknown": 0}'::jsonb, 'Out of order in one call: the highest status wins');
select tests.clear_authentication();
select results_eq($$select status, delivered_at is not null, read_at from app.messages where wamid = 'wamid.hook.2'$$,
  $$values ('read', true, to_timestamp(1800000500))$$, 'sent → read directly also records a delivery time');

select tests.authenticate_as_service_role();
select is(api.record_waba_statuses('[{"wamid": "wamid.hook.3", "recipient_id": "254810000003", "status": "failed", "timestamp": "1800000600",
                                      "error_code": "waba_131026", "error_message": "Message undeliverable"}]')
          ->> 'applied', '1', 'sent → failed applies');
select is(api.record_waba_statuses('[{"wamid": "wamid.hook.3", "recipient_id": "254810000003", "status": "delivered"}]') ->> 'ignored', '1',
  'failed is terminal');
select tests.clear_authentication();
select results_eq($$select status, last_error_code, last_error_message, failed_at
                    from app.messages where wamid = 'wamid.hook.3'$$,
  $$values ('failed', 'waba_131026', 'Message undeliverable', to_timestamp(1800000600))$$,
  'A failed status records its error');

-- Unknown wamids, unsupported statuses, validation ------------------------------------------------------

select tests.authenticate_as_service_role();
select is(api.record_waba_statuses('[{"wamid": "wamid.nobody", "status": "delivered"},
                                     {"wamid": "wamid.hook.4", "recipient_id": "254810000004", "status": "delivered"},
                                     {"wamid": "wamid.hook.5", "recipient_id": "254810000005", "status": "deleted"}]'),
  '{"applied": 1, "ignored": 1, "unknown": 1}'::jsonb,
  'Unknown wamids are counted, not failed; an unsupported status is ignored');
select is(api.record_waba_statuses('[{"wamid": "wamid.hook.5", "recipient_id": "254810000004", "status": "read"}]'),
  '{"applied": 0, "ignored": 0, "unknown": 1}'::jsonb,
  'Without our id, a status matches only the message of its recipient with its wamid');
select is(tests.error_code($$select api.record_waba_statuses('{"wamid": "x"}')$$), 'invalid_statuses',
  'statuses must be an array');
select is(tests.error($$select api.record_waba_statuses('[{"wamid": "x", "status": "read"}, {"status": "read"}]')$$)
          -> 'details', '{"index": 1}'::jsonb, 'Every status needs a wamid; the error names the item');
select is(tests.error_status(format('select api.record_waba_statuses(%L)',
            (select jsonb_agg(jsonb_build_object('wamid', 'w' || i, 'status', 'read')) from generate_series(1, 1001) i))),
  400, 'At most 1000 statuses per call');

-- Opt-outs ---------------------------------------------------------------------------------------------------

select is(api.record_opt_out('+254 820-000-001', 'webhook'),
  '{"msisdn": "+254820000001", "opted_out": true, "created": true, "cancelled_messages": 0}'::jsonb,
  'An opt-out is recorded with the number normalised');
select is(api.record_opt_out('+254820000001', 'admin') ->> 'created', 'false', 'Recording it again is a no-op');
select tests.clear_authentication();
select is((select source from app.opt_outs where msisdn = '+254820000001'), 'webhook', 'The first source is kept');
select tests.authenticate_as_service_role();
select is(tests.error_code($$select api.record_opt_out('not a number', 'x')$$), 'invalid_msisdn',
  'An opt-out needs an E.164 number');
select tests.clear_authentication();

-- Pending messages of the number are cancelled; a leased one is not touched here.
insert into app.campaigns (id, name, amount_minor, currency, channel_id, template_name, status, scheduled_for)
values ('00000000-0000-4000-8000-000000000142', 'Opt-out', 1000, 'KES', '00000000-0000-4000-8000-000000000140',
        'fuel_voucher', 'scheduled', now()),
       ('00000000-0000-4000-8000-000000000143', 'Opt-out paused', 1000, 'KES',
        '00000000-0000-4000-8000-000000000140', 'fuel_voucher', 'scheduled', now());
insert into app.campaign_targets (campaign_id, msisdn) values
  ('00000000-0000-4000-8000-000000000142', '+254830000001'),
  ('00000000-0000-4000-8000-000000000142', '+254830000002'),
  ('00000000-0000-4000-8000-000000000143', '+254830000001');
select app.start_campaign('00000000-0000-4000-8000-000000000142') + app.start_campaign('00000000-0000-4000-8000-000000000143') as started \gset
select app.transition_campaign('00000000-0000-4000-8000-000000000143', 'paused') is not null as paused \gset
update app.messages set status = 'leased', lease_owner = 'w', lease_expires_at = now() + interval '1 minute'
where to_msisdn = '+254830000002';
select tests.authenticate_as_service_role();
select is(api.record_opt_out('+254830000001', 'webhook') ->> 'cancelled_messages', '2',
  'Opting out cancels the number''s queued and held messages');
select is(api.record_opt_out('+254830000002', 'webhook') ->> 'cancelled_messages', '0',
  'A message being sent right now is left to the claim check');
select tests.clear_authentication();
select results_eq($$select m.status, m.last_error_code, v.status from app.messages m
                    join app.vouchers v on v.id = m.voucher_id where m.to_msisdn = '+254830000001'
                    group by 1, 2, 3$$,
  $$values ('cancelled', 'opted_out', 'void')$$, 'Cancelled for opted_out, with their vouchers voided');

-- Honoured when adding targets and at enqueue.
select tests.create_staff('admin@optout.test', 'admin') as admin \gset
select tests.authenticate_as(:'admin');
select api.create_campaign('Later', 1000, 'KES', channel_id => '00000000-0000-4000-8000-000000000140',
  template_name => 'fuel_voucher') ->> 'id' as later \gset
select is(api.add_campaign_targets(:'later', '["+254830000001", "+254840000001", "+254840000002"]') ->> 'opted_out', '1',
  'Adding targets skips opted-out numbers');
select tests.clear_authentication();
-- +254840000002 opts out after being added as a target, before the campaign starts.
insert into app.opt_outs (msisdn, source) values ('+254840000002', 'test');
select tests.authenticate_as(:'admin');
select is(api.schedule_campaign(:'later') ->> 'status', 'dispatching', 'The campaign starts');
select tests.clear_authentication();
select results_eq(format($$select to_msisdn::text, status, voucher_id is null from app.messages
                           where campaign_id = %L order by to_msisdn$$, :'later'),
  $$values ('+254840000001', 'queued', false), ('+254840000002', 'cancelled', true)$$,
  'At enqueue an opted-out target gets a cancelled message and no voucher');
select is((select count(*)::integer from app.vouchers where campaign_id = :'later'), 1,
  'Vouchers are issued only for targets that will be messaged');

-- Privileges of the webhook RPCs.
select tests.authenticate_as(:'admin');
select throws_ok($$select api.record_opt_out('+254850000001', 'admin')$$, '42501', null,
  'An admin (authenticated) cannot call record_opt_out: it is granted to service_role only');
select throws_ok($$select api.record_waba_statuses('[]')$$, '42501', null,
  'An admin (authenticated) cannot call record_waba_statuses');
select tests.clear_authentication();

select * from finish();
rollback;
