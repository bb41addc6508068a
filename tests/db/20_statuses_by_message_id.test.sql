-- Status webhooks find their message by our id (biz_opaque_callback_data); a status
-- proves a send happened, so it moves a message that was waiting, unknown or dead
-- forward; a failed status's error acts by scope like a send's; template status
-- webhooks pause and resume the campaigns that send the template.
begin;
\ir helpers.sql
select plan(27);

create function tests.status(message_id bigint, wamid text, status text, extra jsonb default '{}') returns jsonb
language plpgsql as $$
declare
  r jsonb;
begin
  perform tests.authenticate_as_service_role();
  r := api.record_waba_statuses(jsonb_build_array(
    jsonb_build_object('wamid', wamid, 'status', status, 'message_id', message_id::text) || extra));
  perform tests.clear_authentication();
  return r;
end;
$$;

create function tests.state(message_id bigint) returns text language sql as $$
  select m.status || coalesce('/' || m.wamid, '') from app.messages m where m.id = message_id
$$;

select tests.fixture_campaign(array['+254700500001', '+254700500002', '+254700500003', '+254700500004',
                                    '+254700500005', '+254700500006']) as c \gset
select channel_id as ch from app.campaigns where id = :'c' \gset
select tests.claim_all(:'c', 'w') as ids \gset

-- By our id, before and after the report ---------------------------------------------------------------------

select is(tests.status((:'ids'::bigint[])[1], 'wamid.id.1', 'sent'), '{"applied": 1, "ignored": 0, "unknown": 0}'::jsonb,
  'A sent status for a leased message (its report not in yet) applies by our id');
select is(tests.state((:'ids'::bigint[])[1]), 'sent/wamid.id.1', 'The message is sent, with the status''s wamid');
select tests.authenticate_as_service_role();
select is(api.report_message_results(jsonb_build_array(
    jsonb_build_object('message_id', (:'ids'::bigint[])[1], 'outcome', 'sent', 'wamid', 'wamid.id.1'),
    jsonb_build_object('message_id', (:'ids'::bigint[])[6], 'outcome', 'sent', 'wamid', 'wamid.id.1b')), 'w2')
  ->> 'stale', '1',
  'Its report then counts as sent, not stale (same send); a report from a worker without the lease is still stale');
select tests.clear_authentication();
select is(tests.status((:'ids'::bigint[])[1], 'wamid.other', 'read'), '{"applied": 0, "ignored": 1, "unknown": 0}'::jsonb,
  'A status naming our id with another send''s wamid is ignored (a duplicate send''s statuses do not mix in)');
select is(tests.status(987654321, 'wamid.none', 'read'), '{"applied": 0, "ignored": 0, "unknown": 1}'::jsonb,
  'An id we do not know is counted unknown');
select tests.authenticate_as_service_role();
select is(api.record_waba_statuses('[{"wamid": "wamid.x", "status": "read", "message_id": "not-ours"}]'),
  '{"applied": 0, "ignored": 0, "unknown": 1}'::jsonb,
  'Callback data that is not one of our ids is ignored, not refused (Meta would retry the delivery)');
select tests.clear_authentication();

-- A status proves the send ---------------------------------------------------------------------------------------

-- Message 2 timed out (maybe sent) and waits for its retry; its status arrives.
select tests.authenticate_as_service_role();
select api.report_message_results(jsonb_build_array(
  jsonb_build_object('message_id', (:'ids'::bigint[])[2], 'outcome', 'retry', 'error_code', 'timeout', 'maybe_sent', true),
  jsonb_build_object('message_id', (:'ids'::bigint[])[3], 'outcome', 'retry', 'error_code', 'timeout', 'maybe_sent', true),
  jsonb_build_object('message_id', (:'ids'::bigint[])[4], 'outcome', 'retry', 'error_code', 'waba_131000')), 'w')
  is not null as reported \gset
select tests.clear_authentication();
select is(tests.status((:'ids'::bigint[])[2], 'wamid.id.2', 'delivered', '{"timestamp": "1800000000"}'),
  '{"applied": 1, "ignored": 0, "unknown": 0}'::jsonb, 'A delivered status for a message waiting to be retried applies');
select results_eq(format($$select status, wamid, sent_at is not null, delivered_at, last_error_code
                           from app.messages where id = %s$$, (:'ids'::bigint[])[2]),
  $$values ('delivered', 'wamid.id.2', true, to_timestamp(1800000000), null::text)$$,
  'It is delivered and will not be sent again');

-- Message 3's campaign is cancelled: it becomes unknown (maybe sent); its read arrives.
update app.messages set status = 'unknown', last_error_code = 'campaign_cancelled' where id = (:'ids'::bigint[])[3];
select is(tests.status((:'ids'::bigint[])[3], 'wamid.id.3', 'read'), '{"applied": 1, "ignored": 0, "unknown": 0}'::jsonb,
  'A status for an unknown message applies');
select is(tests.state((:'ids'::bigint[])[3]), 'read/wamid.id.3', 'unknown → read: it was sent after all');

-- Message 4 died of retries, yet one attempt got through.
update app.messages set status = 'dead', failed_at = now() where id = (:'ids'::bigint[])[4];
select is(tests.status((:'ids'::bigint[])[4], 'wamid.id.4', 'sent'), '{"applied": 1, "ignored": 0, "unknown": 0}'::jsonb,
  'A status for a dead message applies');
select results_eq(format('select status, failed_at from app.messages where id = %s', (:'ids'::bigint[])[4]),
  $$values ('sent', null::timestamptz)$$, 'dead → sent, no longer failed');
select is(tests.status((:'ids'::bigint[])[4], 'wamid.id.4', 'sent'), '{"applied": 0, "ignored": 1, "unknown": 0}'::jsonb,
  'Monotonic as ever: the same status again changes nothing');

-- Failed statuses --------------------------------------------------------------------------------------------

select tests.authenticate_as_service_role();
select api.report_message_results(jsonb_build_array(
  jsonb_build_object('message_id', (:'ids'::bigint[])[5], 'outcome', 'sent', 'wamid', 'wamid.id.5')), 'w') is not null as r5 \gset
select tests.clear_authentication();
select is(tests.status((:'ids'::bigint[])[5], 'wamid.id.5', 'failed',
                       '{"error_code": "waba_131048", "waba_code": 131048, "error_message": "Spam rate limit hit"}'),
  '{"applied": 1, "ignored": 0, "unknown": 0}'::jsonb, 'An asynchronous 131048 fails the sent message');
select results_eq(format($$select m.status, m.last_error_code, c.status, c.pause_reason
                           from app.messages m join app.channels c on c.id = m.channel_id where m.id = %s$$,
                         (:'ids'::bigint[])[5]),
  $$values ('failed', 'waba_131048', 'paused', 'spam_rate_limit')$$,
  'and, classified like a send''s error, pauses the channel (the message stays failed: WhatsApp''s verdict)');

-- Message 6 is leased; a failed status for it arrives before the report.
select is(tests.status((:'ids'::bigint[])[6], 'wamid.id.6', 'failed', '{"error_code": "waba_131026", "waba_code": 131026}'),
  '{"applied": 1, "ignored": 0, "unknown": 0}'::jsonb,
  'A permanent failure for a message not yet reported applies');
select is(tests.state((:'ids'::bigint[])[6]), 'failed/wamid.id.6', 'The message failed');

select tests.fixture_campaign(array['+254700600001']) as c2 \gset
select tests.claim_all(:'c2', 'w2') as ids2 \gset
select is(tests.status((:'ids2'::bigint[])[1], 'wamid.id.7', 'failed', '{"error_code": "waba_131000", "waba_code": 131000}'),
  '{"applied": 0, "ignored": 1, "unknown": 0}'::jsonb,
  'A transient failure for a message not yet reported is ignored: its own report decides the retry');

-- By recipient when there is no id ------------------------------------------------------------------------

select tests.authenticate_as_service_role();
select is(api.record_waba_statuses('[{"wamid": "wamid.id.5", "status": "read", "recipient_id": "254700500005"},
                                     {"wamid": "wamid.id.2", "status": "read", "recipient_id": "254700500002"}]'),
  '{"applied": 1, "ignored": 1, "unknown": 0}'::jsonb,
  'Without our id, the recipient and the wamid find the message (failed is terminal; delivered → read applies)');
select tests.clear_authentication();

-- Template status webhooks ------------------------------------------------------------------------------------

select tests.fixture_campaign(array['+254700700001', '+254700700002']) as t1 \gset
select channel_id as tch from app.campaigns where id = :'t1' \gset
update app.channels set waba_id = '102290129340398' where id = :'tch';
select tests.authenticate_as_service_role();
select is(api.record_template_status('102290129340398', 'fuel_voucher', 'en', 'PAUSED', 'LOW_QUALITY')
            - 'campaigns', '{"event": "PAUSED", "action": "paused"}'::jsonb,
  'A PAUSED template webhook pauses the campaigns sending it');
select tests.clear_authentication();
select results_eq(format($$select c.status, c.pause_reason, c.pause_detail like '%%LOW_QUALITY%%',
                                  (select count(*)::integer from app.messages m where m.campaign_id = c.id and m.status = 'held')
                           from app.campaigns c where c.id = %L$$, :'t1'),
  $$values ('paused', 'template_paused', true, 2)$$, 'with the reason, the detail and their messages held');
select tests.authenticate_as_service_role();
select is(api.record_template_status('102290129340398', 'fuel_voucher', 'en', 'PAUSED') ->> 'campaigns', '0',
  'The same webhook again changes nothing');
select is(api.record_template_status('102290129340398', 'fuel_voucher', 'en', 'APPROVED') ->> 'action', 'resumed',
  'APPROVED resumes what a template reason paused');
select tests.clear_authentication();
select results_eq(format($$select c.status, c.pause_reason,
                                  (select count(*)::integer from app.messages m where m.campaign_id = c.id and m.status = 'queued')
                           from app.campaigns c where c.id = %L$$, :'t1'),
  $$values ('dispatching', null::text, 2)$$, 'The campaign dispatches again');
select app.transition_campaign(:'t1', 'paused') is not null as admin_paused \gset
select tests.authenticate_as_service_role();
select is(api.record_template_status('102290129340398', 'fuel_voucher', 'en', 'APPROVED') ->> 'campaigns', '0',
  'An approval never resumes a campaign an admin paused');
select is(api.record_template_status('102290129340398', 'fuel_voucher', 'en-US', 'FLAGGED'),
  '{"event": "FLAGGED", "action": "none", "campaigns": 0}'::jsonb,
  'A language spelled with a hyphen (as in Meta''s examples) is read; FLAGGED changes nothing');
select is(tests.error($$select api.record_template_status('102290129340398', 'Bad Name', 'en', 'PAUSED')$$)
          -> 'details' ->> 'field', 'template_name', 'A malformed template event is refused (invalid_template_event)');
select tests.clear_authentication();

select * from finish();
rollback;
