-- Reporting results: only the lease holder's report applies, retries back off
-- exponentially with jitter and a cap, and a message dies after max_attempts.
begin;
\ir helpers.sql
select plan(35);

-- The backoff schedule ---------------------------------------------------------------------------

select is(array[app.backoff_seconds(1, 1), app.backoff_seconds(2, 1), app.backoff_seconds(3, 1),
                app.backoff_seconds(4, 1), app.backoff_seconds(5, 1), app.backoff_seconds(9, 1)],
  array[4, 16, 64, 256, 900, 900]::numeric[],
  'The backoff cap is 4^attempt seconds (Meta''s schedule), capped at 15 minutes');
select is(app.backoff_seconds(3, 0), 0::numeric, 'Full jitter: the delay can be as short as zero');
select is(app.backoff_seconds(3, 0.5), 32::numeric, 'Full jitter: the delay is uniform below the cap');
select ok((select bool_and(d >= 0 and d < 64) and count(distinct d) > 50
           from (select app.backoff_seconds(3) d from generate_series(1, 200)) s),
  'Random delays for attempt 3 spread over [0, 64) s');

-- Outcomes ------------------------------------------------------------------------------------------

select tests.fixture_campaign(array['+254760000001', '+254760000002', '+254760000003', '+254760000004',
                                    '+254760000005']) as campaign \gset
select tests.claim_all(:'campaign', 'worker-a') as ids \gset

select tests.authenticate_as_service_role();
select is(api.report_message_results(jsonb_build_array(
    jsonb_build_object('message_id', (:'ids'::bigint[])[1], 'outcome', 'sent', 'wamid', 'wamid.report.1'),
    jsonb_build_object('message_id', (:'ids'::bigint[])[2], 'outcome', 'retry', 'error_code', 'waba_131000'),
    jsonb_build_object('message_id', (:'ids'::bigint[])[3], 'outcome', 'retry', 'error_code', 'http_429',
                       'retry_after_seconds', 30),
    jsonb_build_object('message_id', (:'ids'::bigint[])[4], 'outcome', 'failed', 'error_code', 'waba_131026',
                       'error_message', 'Message undeliverable')),
  'worker-a'),
  '{"applied": 4, "stale": 0, "sent": 1, "retried": 2, "deferred": 0, "failed": 1, "dead": 0, "unknown": 0, "cancelled": 0}'::jsonb,
  'One call applies every outcome and counts them');
select tests.clear_authentication();

select results_eq(format($$select status, wamid, sent_at is not null, lease_owner, last_error_code
                           from app.messages where id = %s$$, (:'ids'::bigint[])[1]),
  $$values ('sent', 'wamid.report.1', true, null::text, null::text)$$,
  'sent stores the WhatsApp message id and releases the lease');
select results_eq(format($$select status, attempts, next_attempt_at >= now() and next_attempt_at < now() + interval '4 seconds',
                                  last_error_code from app.messages where id = %s$$, (:'ids'::bigint[])[2]),
  $$values ('queued', 1, true, 'waba_131000')$$,
  'retry after attempt 1 queues the message again within 4 s, keeping the error');
select results_eq(format($$select status, next_attempt_at = now() + interval '30 seconds'
                           from app.messages where id = %s$$, (:'ids'::bigint[])[3]),
  $$values ('queued', true)$$, 'retry_after_seconds is a floor for the backoff');
select results_eq(format($$select status, last_error_code, last_error_message, failed_at is not null
                           from app.messages where id = %s$$, (:'ids'::bigint[])[4]),
  $$values ('failed', 'waba_131026', 'Message undeliverable', true)$$,
  'failed is permanent and keeps the error code and message');

-- Stale reports -----------------------------------------------------------------------------------------

select tests.authenticate_as_service_role();
select is(api.report_message_results(jsonb_build_array(
    jsonb_build_object('message_id', (:'ids'::bigint[])[5], 'outcome', 'sent', 'wamid', 'wamid.report.5')),
  'worker-b') ->> 'stale', '1', 'A worker that does not hold the lease is ignored and counted as stale');
select is(api.report_message_results(jsonb_build_array(
    jsonb_build_object('message_id', (:'ids'::bigint[])[1], 'outcome', 'failed')),
  'worker-a') ->> 'stale', '1', 'A second report for a message already reported is stale');
select is(api.report_message_results(jsonb_build_array(
    jsonb_build_object('message_id', 987654321, 'outcome', 'failed')),
  'worker-a') ->> 'stale', '1', 'A report for an unknown message is stale');
select tests.clear_authentication();
select is((select status from app.messages where id = (:'ids'::bigint[])[1]), 'sent',
  'A stale report changes nothing');

-- The lease of message 5 expires and worker-c claims it; worker-a's late report is stale.
update app.messages set lease_expires_at = now() - interval '1 second' where id = (:'ids'::bigint[])[5];
select app.reclaim_expired_leases() as reclaimed \gset
select ok((:'ids'::bigint[])[5] = any (tests.claim_all(:'campaign', 'worker-c', now() + interval '1 minute')),
  'Worker c claims the message whose lease expired');
select tests.authenticate_as_service_role();
select is(api.report_message_results(jsonb_build_array(
    jsonb_build_object('message_id', (:'ids'::bigint[])[5], 'outcome', 'sent', 'wamid', 'wamid.late')),
  'worker-a') ->> 'stale', '1', 'The late report of the worker whose lease expired is stale');
select is(api.report_message_results(jsonb_build_array(
    jsonb_build_object('message_id', (:'ids'::bigint[])[5], 'outcome', 'sent', 'wamid', 'wamid.report.5')),
  'worker-c') ->> 'applied', '1', 'The current lease holder''s report applies');
select tests.clear_authentication();
select results_eq(format('select wamid, attempts from app.messages where id = %s', (:'ids'::bigint[])[5]),
  $$values ('wamid.report.5', 2)$$, 'The message carries the current holder''s outcome; both claims counted');

-- Dead after max_attempts ----------------------------------------------------------------------------------

select tests.fixture_campaign(array['+254770000001']) as doomed \gset
select id as doomed_id from app.messages where campaign_id = :'doomed' \gset
create function tests.fail_once(campaign uuid, n integer) returns text language plpgsql as $$
declare
  ids bigint[] := tests.claim_all(campaign, 'worker-d', now() + n * interval '1 hour');
begin
  perform tests.authenticate_as_service_role();
  perform api.report_message_results(jsonb_build_array(jsonb_build_object(
    'message_id', ids[1], 'outcome', 'retry', 'error_code', 'waba_131000')), 'worker-d');
  perform tests.clear_authentication();
  return (select status || '/' || attempts from app.messages m where m.id = ids[1]);
end;
$$;
select is(array[tests.fail_once(:'doomed', 1), tests.fail_once(:'doomed', 2), tests.fail_once(:'doomed', 3),
                tests.fail_once(:'doomed', 4)],
  array['queued/1', 'queued/2', 'queued/3', 'queued/4'], 'Attempts 1 to 4 that fail are retried');
select is(tests.fail_once(:'doomed', 5), 'dead/5', 'The fifth failed attempt (max_attempts) makes the message dead');
select results_eq(format('select last_error_code, failed_at is not null from app.messages where id = %s', :'doomed_id'),
  $$values ('waba_131000', true)$$, 'A dead message keeps its last error');
select is(tests.claim_all(:'doomed', 'worker-d', now() + interval '1 day'), null::bigint[],
  'A dead message is never claimed again');

-- Retries of a paused or cancelled campaign ------------------------------------------------------------------

select tests.fixture_campaign(array['+254780000001', '+254780000002']) as paused_campaign \gset
select tests.claim_all(:'paused_campaign', 'worker-e') as paused_ids \gset
select app.transition_campaign(:'paused_campaign', 'paused') is not null as p \gset
select tests.authenticate_as_service_role();
select is(api.report_message_results(jsonb_build_array(
    jsonb_build_object('message_id', (:'paused_ids'::bigint[])[1], 'outcome', 'retry')), 'worker-e') ->> 'retried',
  '1', 'A retry while the campaign is paused counts as retried');
select tests.clear_authentication();
select is((select status from app.messages where id = (:'paused_ids'::bigint[])[1]), 'held',
  'and is held with the campaign');
select app.transition_campaign(:'paused_campaign', 'cancelled') is not null as c \gset
select tests.authenticate_as_service_role();
select is(api.report_message_results(jsonb_build_array(
    jsonb_build_object('message_id', (:'paused_ids'::bigint[])[2], 'outcome', 'retry')), 'worker-e') ->> 'cancelled',
  '1', 'A retry after the campaign was cancelled is cancelled');
select tests.clear_authentication();
select results_eq(format($$select m.status, v.status from app.messages m join app.vouchers v on v.id = m.voucher_id
                           where m.id = %s$$, (:'paused_ids'::bigint[])[2]),
  $$values ('cancelled', 'void')$$, 'and its voucher is voided');

-- Webhook statuses that arrive before the report ----------------------------------------------------------------

select tests.fixture_campaign(array['+254790000001']) as early \gset
select tests.claim_all(:'early', 'worker-f') as early_ids \gset
select tests.authenticate_as_service_role();
select is(api.record_waba_statuses(jsonb_build_array(jsonb_build_object(
    'wamid', 'wamid.early', 'status', 'delivered', 'timestamp', '1800000000',
    'message_id', (:'early_ids'::bigint[])[1]::text))),
  '{"applied": 1, "ignored": 0, "unknown": 0}'::jsonb,
  'A status that names the message by our id applies before the report has stored the wamid');
select is(api.report_message_results(jsonb_build_array(
    jsonb_build_object('message_id', (:'early_ids'::bigint[])[1], 'outcome', 'sent', 'wamid', 'wamid.early')),
  'worker-f') - 'deferred' - 'retried' - 'failed' - 'dead' - 'unknown' - 'cancelled',
  '{"applied": 1, "sent": 1, "stale": 0}'::jsonb,
  'The report that arrives after it, for the same send, counts as sent (not stale) and changes nothing');
select tests.clear_authentication();
select results_eq(format('select status, delivered_at, wamid, lease_owner from app.messages where id = %s',
                         (:'early_ids'::bigint[])[1]),
  $$values ('delivered', to_timestamp(1800000000), 'wamid.early', null::text)$$,
  'The message is delivered, with the status''s wamid, and no longer leased');
select is(to_regclass('app.pending_waba_statuses'), null, 'There is no parking lot for early statuses');

-- Validation ---------------------------------------------------------------------------------------------------------

select tests.authenticate_as_service_role();
select is(tests.error_code($$select api.report_message_results('{}', 'w')$$), 'invalid_results',
  'results must be an array');
select is(tests.error($$select api.report_message_results('[{"message_id": 1, "outcome": "sent"}]', 'w')$$)
          -> 'details', '{"index": 0, "reason": "wamid_required"}'::jsonb, 'sent needs a wamid');
select is(tests.error($$select api.report_message_results('[{"message_id": 1, "outcome": "retry"},
                                                             {"message_id": 2, "outcome": "maybe"}]', 'w')$$)
          -> 'details', '{"index": 1, "reason": "invalid_outcome"}'::jsonb,
  'The outcome is sent, retry, failed or deferred; the error names the item');
select is(tests.error($$select api.report_message_results('[{"message_id": 1, "outcome": "retry"},
                                                             {"message_id": 1, "outcome": "failed"}]', 'w')$$)
          -> 'details' ->> 'reason', 'duplicate_message_id', 'A message is reported once per call');
select is(tests.error_code(format('select api.report_message_results(%L, %L)',
            (select jsonb_agg(jsonb_build_object('message_id', i, 'outcome', 'failed')) from generate_series(1, 1001) i),
            'w')), 'invalid_results', 'At most 1000 results per call');
select is(tests.error_status($$select api.report_message_results('[]', null)$$), 400,
  'The worker id is required (400)');
select tests.clear_authentication();

select * from finish();
rollback;
