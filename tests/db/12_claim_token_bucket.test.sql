-- Claiming: the per-channel token bucket, paused channels and campaigns, opt-outs
-- at claim, the per-recipient spacing guard, leases and their expiry, and the
-- indexes the claim and reclaim paths use.
begin;
\ir helpers.sql
select plan(57);

-- Fixtures: a channel with a known bucket, and a dispatching campaign whose
-- targets are already enqueued (built directly, as the owner).
create function tests.fixture_channel(phone text, rate integer, burst integer, spacing integer default 0)
returns uuid language sql as $$
  insert into app.channels (phone_number_id, display_name, rate_per_minute, burst, min_recipient_interval_seconds,
                            tokens, refilled_at)
  values (phone, 'Channel ' || phone, rate, burst, spacing, burst, now())
  returning id
$$;

create function tests.fixture_campaign(channel_id uuid, msisdns text[]) returns uuid
language plpgsql as $$
declare
  id uuid;
begin
  insert into app.campaigns (name, amount_minor, currency, channel_id, template_name, template_params,
                             status, scheduled_for)
  values ('Claim fixture', 1000, 'KES', channel_id, 'fuel_voucher', '["voucher_code", "amount"]',
          'scheduled', now())
  returning campaigns.id into id;
  insert into app.campaign_targets (campaign_id, msisdn) select id, m from unnest(msisdns) with ordinality u(m, i)
  order by i;
  perform app.start_campaign(id, 100000);
  return id;
end;
$$;

create function tests.numbers(prefix text, n integer) returns text[]
language sql as $$ select array_agg(prefix || lpad(i::text, 6, '0') order by i) from generate_series(1, n) i $$;

-- Structure ---------------------------------------------------------------------------------

select has_table('app', 'messages', 'Table app.messages (the outbox) exists');
select col_has_check('app', 'messages', 'status', 'Message status is constrained to the queue states');
select has_index('app', 'messages', 'messages_claim_idx', array['channel_id', 'next_attempt_at', 'id'],
  'The claim path has an index by channel and due time');
select is((select pg_get_expr(indpred, indrelid) from pg_index where indexrelid = 'app.messages_claim_idx'::regclass),
  '(status = ''queued''::text)', 'The claim index holds queued messages only (partial)');
select has_index('app', 'messages', 'messages_pending_idx', array['status', 'campaign_id'],
  'The lease-reclaim and campaign paths have an index by status and campaign');
select is((select pg_get_expr(indpred, indrelid) from pg_index
           where indexrelid = 'app.messages_pending_idx'::regclass),
  '(status = ANY (ARRAY[''queued''::text, ''held''::text, ''leased''::text]))',
  'The pending index holds queued, held and leased messages only (partial)');
select col_type_is('app', 'messages', 'to_msisdn', 'app.e164',
  'The recipient is an app.e164 (checked when written, not on every claim and report)');
select is(array['+2547000001'::app.e164, '+254700000001234'::app.e164]::text[],
  array['+2547000001', '+254700000001234'], 'app.e164 takes + and 7 to 15 digits');
select throws_ok($$select '+0254700000001'::app.e164$$, '23514', null, 'app.e164 refuses a leading 0');
select throws_ok($$select '+254 700 000001'::app.e164$$, '23514', null, 'app.e164 refuses anything but digits');
select throws_ok($$select '+2547000012345678'::app.e164$$, '23514', null, 'app.e164 refuses more than 15 digits');
select hasnt_index('app', 'messages', 'messages_wamid_key',
  'No index on wamid: statuses find their message by our id (the report writes no extra index entry)');
select fk_ok('app', 'messages', 'id', 'app', 'campaign_targets', 'id',
  'A message has its target''s id (one message per target, retries included)');
select has_index('app', 'campaign_targets', 'campaign_targets_msisdn_idx', array['msisdn'],
  'Messages to a number are found through its targets (opt-outs, spacing guard)');
select is(
  (select array_agg(c.relname::text order by c.relname) from pg_index i join pg_class c on c.oid = i.indexrelid
   where i.indrelid = 'app.messages'::regclass and i.indpred is null),
  array['messages_pkey'], 'Only the primary key indexes every message version (the others are partial)');

-- The token bucket -------------------------------------------------------------------------------
-- 60 messages/min = 1 token/s, burst 5. Time is injected: T is this transaction's now().

select tests.fixture_channel('300000001', 60, 5) as bucket \gset
select tests.fixture_campaign(:'bucket', tests.numbers('+25470', 30)) as bucket_campaign \gset

select is((select count(*)::integer from app.claim_messages_at(:'bucket', 100, 60, 'w1', now())), 5,
  'A full bucket gives its burst at once, not the 100 asked for');
select is((select count(*)::integer from app.claim_messages_at(:'bucket', 100, 60, 'w1', now())), 0,
  'An empty bucket gives nothing');
select is((select count(*)::integer from app.claim_messages_at(:'bucket', 100, 60, 'w1', now() + interval '1 second')), 1,
  'One second later at 60/min, one token has refilled');
select is((select count(*)::integer from app.claim_messages_at(:'bucket', 100, 60, 'w1', now() + interval '3.5 seconds')), 2,
  'Tokens refill continuously: 2.5 s give 2 messages and keep half a token');
select is((select tokens from app.channels where id = :'bucket'), 0.5::numeric,
  'The fraction of a token is kept in the bucket');
select is((select count(*)::integer from app.claim_messages_at(:'bucket', 100, 60, 'w1', now() + interval '1 hour')), 5,
  'After an hour idle the bucket holds only its burst');
select is((select count(*)::integer from app.claim_messages_at(:'bucket', 2, 60, 'w1', now() + interval '2 hours')), 2,
  'A claim takes no more than max');
select is((select tokens from app.channels where id = :'bucket'), 3::numeric,
  'What max left behind stays in the bucket');
select is((select count(*)::integer from app.claim_messages_at(:'bucket', 100, 60, 'w1', now())), 3,
  'A claim dated before the last refill gets no new tokens (time never runs backwards)');
select is((select refilled_at from app.channels where id = :'bucket'), now() + interval '2 hours',
  'and leaves the bucket clock where it was');
select is((select sum(messages)::integer from app.dispatch_claims where channel_id = :'bucket'), 18,
  'Every successful claim is logged with its message count');

select results_eq(
  format($$select count(*)::integer, bool_and(lease_owner = 'w1'), bool_and(attempts = 1),
                  bool_and(lease_expires_at = last_attempt_at + interval '60 seconds')
           from app.messages where campaign_id = %L and status = 'leased'$$, :'bucket_campaign'),
  $$values (18, true, true, true)$$,
  'Claimed messages are leased to the worker for lease_seconds, attempt 1');

select is(
  (select array_agg(k order by k)
   from app.claim_messages_at(:'bucket', 1, 60, 'w1', now() + interval '3 hours') m, json_object_keys(to_json(m)) k),
  array['attempt', 'body_parameters', 'campaign_id', 'channel_id', 'lease_expires_at', 'lease_owner',
        'message_id', 'phone_number_id', 'template_language', 'template_name', 'to'],
  'A claimed message carries what the dispatcher needs to send it');
select is(
  (select array_length(m.body_parameters, 1)
   from app.claim_messages_at(:'bucket', 1, 60, 'w1', now() + interval '4 hours') m),
  2, 'Body parameters are rendered (voucher code and amount)');

-- Paused channels and campaigns ----------------------------------------------------------------------

select tokens as tokens_before_pause from app.channels where id = :'bucket' \gset
update app.channels set status = 'paused' where id = :'bucket';
select is((select count(*)::integer from app.claim_messages_at(:'bucket', 100, 60, 'w1', now() + interval '5 hours')), 0,
  'A paused channel hands out nothing');
select is((select tokens from app.channels where id = :'bucket'), :'tokens_before_pause'::numeric,
  'and its bucket is left alone');
update app.channels set status = 'active' where id = :'bucket';
select app.transition_campaign(:'bucket_campaign', 'paused') is not null as paused \gset
select is((select count(*)::integer from app.claim_messages_at(:'bucket', 100, 60, 'w1', now() + interval '6 hours')), 0,
  'A paused campaign''s messages are not claimed');
select app.transition_campaign(:'bucket_campaign', 'dispatching') is not null as resumed \gset
select is((select count(*)::integer from app.claim_messages_at(:'bucket', 100, 60, 'w1', now() + interval '7 hours')), 5,
  'Resumed, they are claimed again');

-- Opt-outs at claim ----------------------------------------------------------------------------------

select tests.fixture_channel('300000002', 6000, 100) as fast \gset
select tests.fixture_campaign(:'fast', array['+254710000001', '+254710000002', '+254710000003']) as optout_campaign \gset
-- An opt-out that raced the enqueue: the message is queued although the number opted out.
insert into app.opt_outs (msisdn, source) values ('+254710000002', 'race');
select is(
  (select array_agg(m."to" order by m."to")
   from app.claim_messages_at(:'fast', 100, 60, 'w1', now() + interval '1 second') m),
  array['+254710000001', '+254710000003'], 'A message to an opted-out number is never handed out');
select results_eq(
  format($$select m.status, m.last_error_code, v.status from app.messages m join app.vouchers v on v.id = m.voucher_id
           where m.campaign_id = %L and m.to_msisdn = '+254710000002'$$, :'optout_campaign'),
  $$values ('cancelled', 'opted_out', 'void')$$,
  'It is cancelled at claim (opted_out) and its voucher voided');
select is((select floor(tokens)::integer from app.channels where id = :'fast'), 98,
  'A cancelled message costs no token');

-- Per-recipient spacing -------------------------------------------------------------------------------

select tests.fixture_channel('300000003', 6000, 100, 6) as spaced \gset
select tests.fixture_campaign(:'spaced', array['+254720000001', '+254720000002']) as first_campaign \gset
select tests.fixture_campaign(:'spaced', array['+254720000001', '+254720000003']) as second_campaign \gset
select is(
  (select array_agg(m."to" order by m."to")
   from app.claim_messages_at(:'spaced', 100, 60, 'w1', now() + interval '1 second') m),
  array['+254720000001', '+254720000002', '+254720000003'],
  'One claim holds at most one message per recipient');
select is((select count(*)::integer from app.claim_messages_at(:'spaced', 100, 60, 'w1', now() + interval '3 seconds')), 0,
  'A recipient messaged 2 s ago is not messaged again (6 s spacing)');
select is(
  (select array_agg(m."to") from app.claim_messages_at(:'spaced', 100, 60, 'w1', now() + interval '7.5 seconds') m),
  array['+254720000001'], 'After the spacing interval the second message to that recipient goes');

-- The probe of other campaigns' messages is skipped only for a campaign that has had
-- the channel to itself for the spacing interval (app.channel_spacing).
select tests.fixture_channel('300000007', 6000, 100, 6) as solo \gset
select tests.fixture_campaign(:'solo', array['+254721000001', '+254721000002']) as solo_a \gset
select tests.fixture_campaign(:'solo', array['+254721000001', '+254721000003']) as solo_b \gset
update app.messages set next_attempt_at = now() + interval '11 seconds' where campaign_id = :'solo_b';
select is(
  (select array_agg(m."to" order by m."to")
   from app.claim_messages_at(:'solo', 100, 60, 'w1', now() + interval '10 seconds') m),
  array['+254721000001', '+254721000002'], 'Only the first campaign''s messages are due at first');
select results_eq(
  format('select campaign_id, other_attempt_at from app.channel_spacing where channel_id = %L', :'solo'),
  format('values (%L::uuid, now())', :'solo_a'),
  'The channel records that no other campaign attempted anything after its last refill before that claim');
select is(
  (select array_agg(m."to") from app.claim_messages_at(:'solo', 100, 60, 'w1', now() + interval '12 seconds') m),
  array['+254721000003'],
  'The other campaign''s message to a recipient the first messaged 2 s ago waits; its other message goes');
select results_eq(
  format('select campaign_id, other_attempt_at from app.channel_spacing where channel_id = %L', :'solo'),
  format($$values (%L::uuid, now() + interval '10 seconds')$$, :'solo_b'),
  'Now the second campaign is recorded, every other attempt at or before the previous claim');
select is((select count(*)::integer from app.claim_messages_at(:'solo', 100, 60, 'w1', now() + interval '14 seconds')), 0,
  'The waiting message still waits 4 s on (the first campaign''s attempt is within the interval)');
select is(
  (select array_agg(m."to") from app.claim_messages_at(:'solo', 100, 60, 'w1', now() + interval '16.5 seconds') m),
  array['+254721000001'], 'and goes once the interval has passed');

-- Claiming across channels ------------------------------------------------------------------------------

select tests.fixture_channel('300000004', 6000, 100) as left_channel \gset
select tests.fixture_channel('300000005', 6000, 100) as right_channel \gset
select tests.fixture_campaign(:'left_channel', array['+254730000001', '+254730000002']) is not null as l \gset
select tests.fixture_campaign(:'right_channel', array['+254740000001', '+254740000002']) is not null as r \gset
-- Every other active channel is paused for this check, and only those are resumed after it
-- (a channel the circuit breaker paused, with its reason, stays as it is).
create temp table paused_here on commit drop as
with paused as (
  update app.channels set status = 'paused'
  where status = 'active' and id not in (:'left_channel', :'right_channel') returning id
)
select id from paused;
select tests.authenticate_as_service_role();
select set_eq(
  $$select m.phone_number_id, count(*)::integer from api.claim_messages(null, 10) m
    group by 1$$,
  $$values ('300000004', 2), ('300000005', 2)$$,
  'Without a channel, one claim serves every active channel, each within its own bucket');
select is(tests.error_code('select api.claim_messages(null, 0)'), 'invalid_claim', 'max must be at least 1');
select is(tests.error_code('select api.claim_messages(null, 1001)'), 'invalid_claim', 'max is at most 1000');
select is(tests.error_code('select api.claim_messages(null, 10, 1)'), 'invalid_claim',
  'A lease lasts at least 5 seconds');
select is(tests.error_code('select api.claim_messages(gen_random_uuid())'), 'channel_not_found',
  'Claiming from an unknown channel is channel_not_found');
select tests.clear_authentication();
update app.channels set status = 'active' where id in (select id from paused_here);

-- Lease expiry -----------------------------------------------------------------------------------------------

-- Two of the bucket campaign's leased messages outlive their lease; one was on its last attempt.
select array_agg(id order by id) as expiring from (
  select id from app.messages where campaign_id = :'bucket_campaign' and status = 'leased' order by id limit 2) s \gset
update app.messages set lease_expires_at = now() - interval '1 second' where id = any (:'expiring'::bigint[]);
update app.messages set attempts = max_attempts where id = (:'expiring'::bigint[])[2];
select ok(app.reclaim_expired_leases() >= 2, 'The reclaim job finds the two expired leases (and any others)');
select results_eq(
  format($$select status, lease_owner, lease_expires_at, last_error_code from app.messages
           where id = any (%L::bigint[]) order by id$$, :'expiring'),
  $$values ('queued', null::text, null::timestamptz, 'lease_expired'), ('dead', null, null, 'lease_expired')$$,
  'An expired lease returns its message to the queue, or to dead when it used its last attempt');
select results_eq(
  format($$select messages, dead from app.lease_reclaims where channel_id = %L$$, :'bucket'),
  $$values (2, 1)$$, 'Reclaims are logged per channel for ops');
select app.reclaim_expired_leases() as again \gset
select is((select count(*)::integer from app.lease_reclaims where channel_id = :'bucket'), 1,
  'Running the job again finds nothing more of ours (idempotent)');
select is(
  (select count(*)::integer from app.claim_messages_at(:'bucket', 100, 60, 'w2',
     now() + interval '8 hours') m where m.message_id = (:'expiring'::bigint[])[1]),
  1, 'A reclaimed message can be claimed again by another worker');

-- The hot paths use their indexes at realistic size ------------------------------------------------------

select tests.fixture_channel('300000006', 250, 42) as big \gset
insert into app.campaigns (id, name, amount_minor, currency, channel_id, template_name, status)
values ('00000000-0000-4000-8000-000000000012', 'Big', 100, 'KES', :'big', 'fuel_voucher', 'dispatching');
insert into app.campaign_targets (campaign_id, msisdn)
select '00000000-0000-4000-8000-000000000012', '+25475' || lpad(i::text, 7, '0') from generate_series(1, 30000) i;
insert into app.messages (campaign_id, id, channel_id, to_msisdn, template_name, template_language, status,
                          wamid, sent_at, next_attempt_at)
select t.campaign_id, t.id, :'big', t.msisdn, 'fuel_voucher', 'en',
       case when t.id % 3 = 0 then 'queued' else 'sent' end,
       case when t.id % 3 = 0 then null else 'wamid.big.' || t.id end,
       case when t.id % 3 = 0 then null else now() end,
       now() - (t.id % 1000) * interval '1 second'
from app.campaign_targets t where t.campaign_id = '00000000-0000-4000-8000-000000000012';
analyze app.messages;

select ok(tests.plan_of($$select m.id from app.messages m where m.status = 'leased'
    and m.lease_expires_at < now() order by m.lease_expires_at limit 10000 for update skip locked$$)
  like '%messages_pending_idx%', 'The reclaim query uses messages_pending_idx');
select ok(tests.plan_of($$select m.id from app.campaign_targets t join app.messages m on m.id = t.id
                          where t.msisdn = '+2547500000001' and m.wamid = 'wamid.big.1'$$)
  like '%campaign_targets_msisdn_idx%', 'A status without our id finds its message through its recipient''s targets');

select * from finish();
rollback;
