-- What each final message state means for its voucher (the outbox migration's
-- header says it once): cancelled voids the voucher, whatever path cancels;
-- sent, failed, dead and unknown keep it issued; a message that may have been
-- sent is never recorded as cancelled. And the security invariant every RPC
-- shares: security definer, an empty search_path, no PUBLIC execute.
begin;
\ir helpers.sql
select plan(27);

-- Every RPC -------------------------------------------------------------------------------

select is(
  (select array_agg(p.oid::regprocedure::text order by p.proname) from pg_proc p
   join pg_namespace n on n.oid = p.pronamespace
   where n.nspname = 'api' and not (p.prosecdef and p.proconfig @> array['search_path=""'])),
  null, 'Every api function is security definer with search_path pinned to ''''');
select is(
  (select array_agg(p.oid::regprocedure::text order by p.proname) from pg_proc p
   join pg_namespace n on n.oid = p.pronamespace
   where n.nspname in ('api', 'app')
     and exists (select from aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                 where a.grantee = 0 and a.privilege_type = 'EXECUTE')),
  null, 'PUBLIC can execute no api or app function');
select is(
  (select array_agg(p.oid::regprocedure::text order by p.proname) from pg_proc p
   join pg_namespace n on n.oid = p.pronamespace
   where n.nspname = 'app' and p.prosecdef),
  null, 'No app function is security definer (only the api surface elevates)');

-- Where a returned message goes -----------------------------------------------------------

select results_eq(
  $$select app.returned_message_status(a, 5, s, m)
    from (values (5, 'dispatching', false), (5, 'cancelled', true), (2, 'dispatching', true),
                 (2, 'paused', false), (2, 'scheduled', true), (2, 'cancelled', true),
                 (2, 'cancelled', false), (2, 'completed', false)) v(a, s, m)$$,
  $$values ('dead'), ('dead'), ('queued'), ('held'), ('held'), ('unknown'), ('cancelled'), ('cancelled')$$,
  'A returned message is dead after its attempts, else queued, held, unknown (maybe sent) or cancelled');

-- The paths ---------------------------------------------------------------------------------

-- Five messages of one campaign, each with its voucher, leased to worker-a.
select tests.fixture_campaign(array['+254770000001', '+254770000002', '+254770000003', '+254770000004',
                                    '+254770000005']) as campaign \gset
select tests.claim_all(:'campaign', 'worker-a') as ids \gset
create function tests.fate(message_id bigint) returns text language sql as $$
  select m.status || '/' || v.status from app.messages m join app.vouchers v on v.id = m.voucher_id
  where m.id = message_id
$$;

select tests.authenticate_as_service_role();
select api.report_message_results(jsonb_build_array(
    jsonb_build_object('message_id', (:'ids'::bigint[])[1], 'outcome', 'sent', 'wamid', 'wamid.inv.1'),
    jsonb_build_object('message_id', (:'ids'::bigint[])[2], 'outcome', 'failed', 'error_code', 'waba_131026'),
    jsonb_build_object('message_id', (:'ids'::bigint[])[3], 'outcome', 'retry', 'error_code', 'timeout',
                       'maybe_sent', true),
    jsonb_build_object('message_id', (:'ids'::bigint[])[4], 'outcome', 'retry', 'error_code', 'http_429')),
  'worker-a') is not null as reported \gset
select tests.clear_authentication();

select is(tests.fate((:'ids'::bigint[])[1]), 'sent/issued', 'A sent message keeps its voucher issued');
select is(tests.fate((:'ids'::bigint[])[2]), 'failed/issued', 'A failed message keeps its voucher issued');
select is((select status || '/' || maybe_sent from app.messages where id = (:'ids'::bigint[])[3]), 'queued/true',
  'A retry that may have been sent goes back to the queue and remembers it');
select is((select maybe_sent from app.messages where id = (:'ids'::bigint[])[4]), false,
  'A retry refused by WhatsApp does not');

-- The campaign is cancelled while message 5 is still leased (its worker hangs).
select tests.authenticate_as_service_role();
select api.cancel_campaign(:'campaign') is not null as cancelled \gset
select tests.clear_authentication();

select is(tests.fate((:'ids'::bigint[])[3]), 'unknown/issued',
  'Cancelling the campaign stops a queued message that may have been sent as unknown; its voucher stays issued');
select is(tests.fate((:'ids'::bigint[])[4]), 'cancelled/void',
  'and cancels one that cannot have been sent, voiding its voucher');
select is((select last_error_code from app.messages where id = (:'ids'::bigint[])[4]), 'campaign_cancelled',
  'A cancelled message says why');
select is(tests.fate((:'ids'::bigint[])[5]), 'leased/issued', 'A leased message finishes its attempt');

-- Its lease expires after the cancel: the send may have happened.
update app.messages set lease_expires_at = now() - interval '1 second' where id = (:'ids'::bigint[])[5];
select ok(app.reclaim_expired_leases() >= 1, 'The reclaim job returns the expired lease');
select is(tests.fate((:'ids'::bigint[])[5]), 'unknown/issued',
  'A lease that expired after its campaign was cancelled is unknown, never cancelled; its voucher stays issued');
select is((select last_error_code from app.messages where id = (:'ids'::bigint[])[5]), 'lease_expired',
  'and says why');

-- A retry reported for a cancelled campaign: cancelled unless it may have been sent.
select tests.fixture_campaign(array['+254770000011', '+254770000012', '+254770000013']) as campaign2 \gset
select tests.claim_all(:'campaign2', 'worker-b') as ids2 \gset
update app.campaigns set status = 'cancelled', cancelled_at = now() where id = :'campaign2';
select tests.authenticate_as_service_role();
select api.report_message_results(jsonb_build_array(
    jsonb_build_object('message_id', (:'ids2'::bigint[])[1], 'outcome', 'retry', 'error_code', 'http_503'),
    jsonb_build_object('message_id', (:'ids2'::bigint[])[2], 'outcome', 'retry', 'error_code', 'timeout',
                       'maybe_sent', true)),
  'worker-b') as report2 \gset
select tests.clear_authentication();
select is(tests.fate((:'ids2'::bigint[])[1]), 'cancelled/void',
  'A refused retry for a cancelled campaign is cancelled and its voucher voided');
select is(tests.fate((:'ids2'::bigint[])[2]), 'unknown/issued',
  'A timed-out retry for a cancelled campaign is unknown and keeps its voucher');
select is((:'report2'::jsonb ->> 'unknown')::integer, 1, 'The report counts it as unknown');

-- Opt-outs: at record time and at claim time.
select tests.fixture_campaign(array['+254770000021', '+254770000022', '+254770000023']) as campaign3 \gset
select m.id as held_id from app.messages m join app.campaign_targets t on t.id = m.id
where t.msisdn = '+254770000021' and m.campaign_id = :'campaign3' \gset
select tests.authenticate_as_service_role();
select api.record_opt_out('+254770000021', 'test') is not null as opted \gset
select tests.clear_authentication();
select is(tests.fate(:'held_id'), 'cancelled/void', 'An opt-out cancels the queued message and voids its voucher');

insert into app.opt_outs (msisdn, source) values ('+254770000022', 'test');  -- no cancel: caught at claim
select m.id as claim_id from app.messages m join app.campaign_targets t on t.id = m.id
where t.msisdn = '+254770000022' and m.campaign_id = :'campaign3' \gset
select tests.claim_all(:'campaign3', 'worker-c') as ids3 \gset
select ok(not (:'claim_id' = any (:'ids3'::bigint[])), 'The claim does not lease a message to an opted-out number');
select is(tests.fate(:'claim_id'), 'cancelled/void', 'it cancels it and the trigger voids its voucher');
select is((select last_error_code from app.messages where id = :'claim_id'), 'opted_out', 'with the reason');

-- Invariants over every message in the database -----------------------------------------------

select is(
  (select count(*)::integer from app.messages m join app.vouchers v on v.id = m.voucher_id
   where m.status = 'cancelled' and v.status = 'issued'),
  0, 'No cancelled message has an issued voucher');
select is(
  (select count(*)::integer from app.messages m join app.vouchers v on v.id = m.voucher_id
   where m.status in ('sent', 'delivered', 'read', 'failed', 'dead', 'unknown') and v.status = 'void'
     and v.voided_by is null),
  0, 'No sent, failed, dead or unknown message had its voucher voided by dispatch');
select is(
  (select count(*)::integer from app.messages m where m.status = 'cancelled' and m.maybe_sent),
  0, 'No message that may have been sent is cancelled');

-- The rule is in the schema ------------------------------------------------------------------

select throws_ok(
  format($$update app.messages set status = 'cancelled' where id = %s$$, (:'ids'::bigint[])[1]),
  '23514', null, 'A message cannot be cancelled without a reason');
select has_trigger('app', 'messages', 'messages_cancelled_void_voucher',
  'A trigger voids the voucher of every message that becomes cancelled');

select * from finish();
rollback;
