-- WhatsApp errors by scope: one rules table; channel and account errors pause the
-- channel (the circuit breaker) and return the message without spending an attempt;
-- temporary pauses end by themselves, others by an admin; 130429 halves the
-- effective rate and successes bring it back; template errors pause the campaigns
-- that send the template.
begin;
\ir helpers.sql
select plan(51);

-- The rules ------------------------------------------------------------------------------------------

select has_table('app', 'waba_error_rules', 'The error rules are one table');
select is((select count(*)::integer from app.waba_error_rules r
           where r.action in ('pause_channel', 'pause_template', 'throttle')
             and not exists (select from app.pause_reasons p where p.reason = r.reason)),
  0, 'Every pause and throttle reason is explained in app.pause_reasons');
select results_eq(
  $$select (app.waba_error_rule(c, s)).reason from (values (190, null), (190, 463), (190, 467), (100, null),
    (100, 33), (231, null), (130429, null), (131048, null), (132015, null), (131050, null), (999999, null)) v(c, s)$$,
  $$values ('access_token_invalid'), ('access_token_expired'), ('access_token_invalid'), ('invalid_parameter'),
           ('phone_number_not_found'), ('permission_denied'), ('throughput_limit'), ('spam_rate_limit'),
           ('template_paused'), ('recipient_stopped_marketing'), (null::text)$$,
  'A rule for the subcode wins over one for any subcode, a code over its range; unknown codes have none');
select results_eq(
  $$select (r).scope, (r).action, (r).cooldown_seconds
    from (select app.waba_error_rule(v.c, v.s) as r, v.i
          from (values (1, 131000, null::integer), (2, 190, 463), (3, 130429, null), (4, 131048, null),
                       (5, 132016, null)) v(i, c, s)) x
    order by x.i$$,
  $$values ('message', 'retry', null::integer), ('account', 'pause_channel', null), ('channel', 'throttle', null),
           ('channel', 'pause_channel', 3600), ('template', 'pause_template', null)$$,
  'Scopes and actions: a transient error is retried, a token pauses until resumed, 130429 throttles, spam pauses for a cool-down, a disabled template pauses its campaigns');
select is(app.waba_code_of('190'::jsonb, 'waba_131048'), 190, 'The explicit waba_code wins over the error_code');
select is(app.waba_code_of(null, 'waba_131048'), 131048, 'Without it, a waba_<code> error_code is read');

select tests.create_staff('admin@scopes.test', 'admin') as admin \gset
select tests.authenticate_as(:'admin');
select ok(jsonb_array_length(api.waba_error_rules()) >= 40, 'An admin (and the dispatcher) can read the rules');
select tests.clear_authentication();

-- An expired token: the channel pauses, nothing is spent ------------------------------------------------

select tests.fixture_campaign(array['+254700100001', '+254700100002', '+254700100003']) as c1 \gset
select channel_id as ch1 from app.campaigns where id = :'c1' \gset
select tests.claim_all(:'c1', 'w') as ids \gset
select tests.authenticate_as_service_role();
select is(api.report_message_results(jsonb_build_array(
    jsonb_build_object('message_id', (:'ids'::bigint[])[1], 'outcome', 'deferred', 'error_code', 'waba_190',
                       'waba_code', 190, 'waba_subcode', 463, 'error_message', 'Session has expired'),
    jsonb_build_object('message_id', (:'ids'::bigint[])[2], 'outcome', 'retry', 'error_code', 'waba_190',
                       'waba_code', 190, 'waba_subcode', 463),
    jsonb_build_object('message_id', (:'ids'::bigint[])[3], 'outcome', 'failed', 'error_code', 'waba_190')),
  'w') ->> 'deferred', '3',
  'A token error is deferred, whatever the dispatcher reported (the rule is the database''s)');
select tests.clear_authentication();
select results_eq(format($$select status, attempts, next_attempt_at <= now(), last_error_code
                           from app.messages where campaign_id = %L order by id$$, :'c1'),
  $$values ('queued', 0, true, 'waba_190'), ('queued', 0, true, 'waba_190'), ('queued', 0, true, 'waba_190')$$,
  'Each message is queued again, due now, with its attempt refunded');
select results_eq(format($$select status, pause_reason, paused_until, pause_error_code, pause_error_message
                           from app.channels where id = %L$$, :'ch1'),
  $$values ('paused', 'access_token_expired', null::timestamptz, 'waba_190', 'Session has expired')$$,
  'The channel is paused with the reason and the error, until an admin resumes it');
select is((select count(*)::integer from app.claim_messages_at(:'ch1', 100, 60, 'w', now() + interval '1 day')), 0,
  'A paused channel gives nothing, however long it waits');

-- A message can never die of it.
update app.messages set attempts = max_attempts - 1 where campaign_id = :'c1';
update app.channels set status = 'active', pause_reason = null, paused_at = null, pause_error_code = null,
                        pause_error_message = null where id = :'ch1';
create function tests.token_fails(campaign uuid, n integer) returns text language plpgsql as $$
declare
  ids bigint[] := tests.claim_all(campaign, 'w-token', now() + n * interval '1 hour');
begin
  perform tests.authenticate_as_service_role();
  perform api.report_message_results((select jsonb_agg(jsonb_build_object(
    'message_id', i, 'outcome', 'retry', 'error_code', 'waba_190', 'waba_code', 190)) from unnest(ids) i), 'w-token');
  perform tests.clear_authentication();
  update app.channels c set status = 'active', pause_reason = null, paused_at = null, pause_error_code = null,
                            pause_error_message = null
  where c.id = (select k.channel_id from app.campaigns k where k.id = campaign);
  return (select string_agg(distinct m.status || '/' || m.attempts, ',') from app.messages m
          where m.campaign_id = campaign);
end;
$$;
select is(array[tests.token_fails(:'c1', 1), tests.token_fails(:'c1', 2), tests.token_fails(:'c1', 3),
                tests.token_fails(:'c1', 4), tests.token_fails(:'c1', 5), tests.token_fails(:'c1', 6)],
  array['queued/4', 'queued/4', 'queued/4', 'queued/4', 'queued/4', 'queued/4'],
  'Messages one attempt from dead, refused for an expired token six times over, are still queued with the same attempts');

-- Admin resume --------------------------------------------------------------------------------------------

select app.pause_channel(:'ch1', 'access_token_invalid', null, 'waba_190', 'x') as paused \gset
select tests.authenticate_as(:'admin');
select results_eq(format($$select c ->> 'status', c -> 'pause' ->> 'reason', c -> 'pause' ->> 'operator_action' like '%%resume_channel%%'
                           from jsonb_array_elements(api.list_channels()) c where c ->> 'id' = %L$$, :'ch1'),
  $$values ('paused', 'access_token_invalid', true)$$,
  'list_channels shows the pause, its reason and what the operator does about it');
select is(api.resume_channel(:'ch1') ->> 'status', 'active', 'An admin resumes the channel (after fixing the token)');
select is(api.resume_channel(:'ch1') ->> 'status', 'active', 'Resuming an active channel changes nothing');
select is(tests.error_code($$select api.resume_channel('00000000-0000-4000-8000-0000000000ff')$$), 'channel_not_found',
  'resume_channel names an unknown channel');
select tests.clear_authentication();
select results_eq(format($$select status, pause_reason, paused_at, pause_error_code from app.channels where id = %L$$,
                         :'ch1'),
  $$values ('active', null::text, null::timestamptz, null::text)$$, 'A resumed channel has no pause left');

-- A spam restriction: paused for a cool-down, then back by itself ----------------------------------------

select tests.fixture_campaign(array['+254700200001', '+254700200002']) as c2 \gset
select channel_id as ch2 from app.campaigns where id = :'c2' \gset
select tests.claim_all(:'c2', 'w') as ids2 \gset
select tests.authenticate_as_service_role();
select is(api.report_message_results(jsonb_build_array(
    jsonb_build_object('message_id', (:'ids2'::bigint[])[1], 'outcome', 'failed', 'error_code', 'waba_131048',
                       'waba_code', 131048)), 'w') ->> 'deferred', '1', '131048 is deferred, not failed');
select tests.clear_authentication();
select results_eq(format($$select status, pause_reason, paused_until between now() + interval '59 minutes'
                                                                    and now() + interval '61 minutes'
                           from app.channels where id = %L$$, :'ch2'),
  $$values ('paused', 'spam_rate_limit', true)$$, 'The channel is paused for its cool-down (1 h)');
select is((select count(*)::integer from app.claim_messages_at(:'ch2', 100, 60, 'w', now() + interval '30 minutes')),
  0, 'During the cool-down nothing is claimed');
select is((select count(*)::integer from app.claim_messages_at(:'ch2', 100, 60, 'w', now() + interval '61 minutes')),
  1, 'After it, the claim resumes the channel and leases the waiting message');
select results_eq(format($$select status, pause_reason from app.channels where id = %L$$, :'ch2'),
  $$values ('active', null::text)$$, 'and the channel is active again');

-- The strongest pause wins.
select app.pause_channel(:'ch2', 'spam_rate_limit', now() + interval '1 hour') as p1 \gset
select ok(not app.pause_channel(:'ch2', 'account_maintenance', now() + interval '1 minute'),
  'A shorter timed pause does not replace a longer one');
select ok(app.pause_channel(:'ch2', 'policy_block', null), 'A pause that needs a person replaces a timed one');
select ok(not app.pause_channel(:'ch2', 'spam_rate_limit', now() + interval '2 hours'),
  'and no timed pause replaces it');
select is((select pause_reason from app.channels where id = :'ch2'), 'policy_block', 'The channel says why');
select is(app.resume_due_channels(), 0, 'The resume job leaves a pause without an end alone');

-- AIMD --------------------------------------------------------------------------------------------------------

select tests.fixture_campaign(array['+254700300001', '+254700300002', '+254700300003', '+254700300004']) as c3 \gset
select channel_id as ch3 from app.campaigns where id = :'c3' \gset
update app.channels set rate_per_minute = 600, burst = 100, tokens = 100 where id = :'ch3';
select tests.claim_all(:'c3', 'w') as ids3 \gset
select tests.authenticate_as_service_role();
select is(api.report_message_results(jsonb_build_array(
    jsonb_build_object('message_id', (:'ids3'::bigint[])[1], 'outcome', 'retry', 'error_code', 'waba_130429',
                       'waba_code', 130429),
    jsonb_build_object('message_id', (:'ids3'::bigint[])[2], 'outcome', 'retry', 'error_code', 'waba_130429',
                       'waba_code', 130429)), 'w') ->> 'deferred', '2', '130429 is deferred (no attempt spent)');
select tests.clear_authentication();
select results_eq(format($$select status, effective_rate_per_minute, tokens <= 50 from app.channels where id = %L$$,
                         :'ch3'),
  $$values ('active', 300::numeric, true)$$,
  'Several 130429 at once halve the effective rate once, and the bucket shrinks with it; the channel stays active');
select ok(not app.throttle_channel(:'ch3'), 'A second decrease within the same second does nothing');
select ok(app.throttle_channel(:'ch3', now() + interval '2 seconds'), 'A second later it halves again');
select is((select effective_rate_per_minute from app.channels where id = :'ch3'), 150::numeric, 'to 150/min');
select is((select count(*)::integer from app.claim_messages_at(:'ch3', 100, 60, 'w', now() + interval '3 seconds')), 2,
  'The claim still works at the lower rate');
update app.channels set tokens = 0, refilled_at = now() + interval '3 seconds' where id = :'ch3';
update app.messages set status = 'queued', lease_owner = null, lease_expires_at = null,
                        next_attempt_at = now() where campaign_id = :'c3' and status = 'leased';
select is((select count(*)::integer from app.claim_messages_at(:'ch3', 100, 60, 'w', now() + interval '4.6 seconds')), 4,
  'An empty bucket refills at the effective rate (150/min: 4 tokens in 1.6 s), not the configured one (16)');
select is(app.recover_channel_rates(array[:'ch3']::uuid[], now() + interval '4 seconds'), 1,
  'A success raises a throttled rate');
select is((select effective_rate_per_minute from app.channels where id = :'ch3'), 210::numeric,
  'by 5% of the configured rate per second since the last change (2 s: +60)');
select is(app.recover_channel_rates(array[:'ch3']::uuid[], now() + interval '4.5 seconds'), 0,
  'at most once a second');
select is(app.recover_channel_rates(array[:'ch3']::uuid[], now() + interval '1 minute'), 1,
  'After long enough');
select is((select effective_rate_per_minute from app.channels where id = :'ch3'), null::numeric,
  'it is back at the configured rate, never above');

-- A template error pauses the campaigns sending it ----------------------------------------------------------

select tests.fixture_campaign(array['+254700400001', '+254700400002', '+254700400003']) as c4 \gset
select channel_id as ch4 from app.campaigns where id = :'c4' \gset
-- A second campaign on the same channel with the same template, and one with another template.
insert into app.campaigns (id, name, amount_minor, currency, channel_id, template_name, status, dispatch_started_at)
values ('00000000-0000-4000-8000-0000000018a1', 'Same template', 100, 'KES', :'ch4', 'fuel_voucher', 'dispatching', now()),
       ('00000000-0000-4000-8000-0000000018a2', 'Other template', 100, 'KES', :'ch4', 'other_voucher', 'dispatching', now());
select m.message_id as tmsg from app.claim_messages_at(:'ch4', 1, 60, 'w-t') m \gset
select tests.authenticate_as_service_role();
select is(api.report_message_results(jsonb_build_array(
    jsonb_build_object('message_id', :'tmsg'::bigint, 'outcome', 'failed', 'error_code', 'waba_132015',
                       'waba_code', 132015, 'error_message', 'Template is Paused')), 'w-t') ->> 'deferred', '1',
  'A paused template (132015) is deferred');
select tests.clear_authentication();
select results_eq(
  format($$select name, status, pause_reason from app.campaigns where id in (%L, '00000000-0000-4000-8000-0000000018a1',
           '00000000-0000-4000-8000-0000000018a2') order by name$$, :'c4'),
  $$values ('Other template', 'dispatching', null::text), ('Report fixture', 'paused', 'template_paused'),
           ('Same template', 'paused', 'template_paused')$$,
  'Every campaign sending that template through the channel is paused with the reason; others carry on');
select results_eq(format($$select status, count(*)::integer, min(attempts) from app.messages
                           where campaign_id = %L group by status$$, :'c4'),
  $$values ('held', 3, 0)$$, 'Its messages are held, the deferred one with its attempt refunded');
select is((select status from app.channels where id = :'ch4'), 'active', 'The channel itself stays active');
select tests.authenticate_as(:'admin');
select results_eq(format($$select s -> 'pause' ->> 'reason', s -> 'pause' ->> 'detail'
                           from api.campaign_stats(%L) s$$, :'c4'),
  $$values ('template_paused', 'Template is Paused')$$, 'campaign_stats shows why the campaign is paused');
select is(api.resume_campaign(:'c4') ->> 'pause_reason', null, 'An admin resume clears the reason');
select tests.clear_authentication();

-- The report's validation of the new fields ------------------------------------------------------------------

select tests.authenticate_as_service_role();
select is(tests.error($$select api.report_message_results('[{"message_id": 1, "outcome": "retry", "waba_code": "190"}]', 'w')$$)
          -> 'details', '{"index": 0, "reason": "invalid_waba_code"}'::jsonb, 'waba_code must be an integer');
select is(tests.error($$select api.report_message_results('[{"message_id": 1, "outcome": "deferred", "waba_subcode": -4}]', 'w')$$)
          -> 'details' ->> 'reason', 'invalid_waba_code', 'and so must waba_subcode');
select tests.clear_authentication();

-- The views show the state -------------------------------------------------------------------------------------

select app.pause_channel(:'ch4', 'spam_rate_limit', now() + interval '1 hour', 'waba_131048', 'Spam rate limit hit')
  as p4 \gset
select tests.authenticate_as(:'admin');
select results_eq(
  format($$select c -> 'pause' ->> 'reason', (c -> 'pause' ->> 'paused_until') is not null, c -> 'pause' ->> 'error_code'
           from jsonb_array_elements(api.queue_health() -> 'channels') c where c ->> 'channel_id' = %L$$, :'ch4'),
  $$values ('spam_rate_limit', true, 'waba_131048')$$, 'queue_health shows the channel''s pause');
select results_eq(
  format($$select s -> 'channel' -> 'pause' ->> 'reason', s -> 'channel' -> 'pause' ->> 'explanation' is not null
           from api.campaign_stats(%L) s$$, :'c4'),
  $$values ('spam_rate_limit', true)$$, 'campaign_stats shows the channel''s pause, explained');
select is(api.update_channel(:'ch4', status => 'active') ->> 'pause_reason', null,
  'update_channel(status => active) is an admin resume too');
select is(api.update_channel(:'ch4', status => 'paused') -> 'pause' ->> 'reason', 'admin',
  'update_channel(status => paused) is an admin pause');
select tests.clear_authentication();

select * from finish();
rollback;
