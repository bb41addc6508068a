-- pg_cron: the jobs are registered, and each job's function does its bounded work:
-- promote and enqueue in chunks, complete campaigns, expire vouchers, purge keys and logs.
begin;
\ir helpers.sql
select plan(29);

-- Registration -------------------------------------------------------------------------------------

select has_extension('pg_cron', 'pg_cron is installed');
select results_eq(
  $$select jobname::text collate "default", schedule::text collate "default", command::text collate "default"
    from cron.job
    where jobname in ('dispatch-promote-campaigns', 'dispatch-reclaim-leases', 'dispatch-complete-campaigns',
                      'vouchers-expire', 'idempotency-purge', 'dispatch-purge-logs')
    order by jobname$$,
  $$values ('dispatch-complete-campaigns', '* * * * *', 'select app.complete_campaigns()'),
           ('dispatch-promote-campaigns', '* * * * *', 'select app.promote_due_campaigns()'),
           ('dispatch-purge-logs', '17 * * * *', 'select app.purge_dispatch_logs()'),
           ('dispatch-reclaim-leases', '* * * * *', 'select app.reclaim_expired_leases()'),
           ('idempotency-purge', '*/5 * * * *', 'select app.purge_expired_idempotency_keys()'),
           ('vouchers-expire', '* * * * *', 'select app.expire_vouchers()')$$,
  'The housekeeping jobs are registered with their schedules, each calling one app function');
select is((select count(*)::integer from cron.job
           where jobname like any (array['dispatch-%', 'vouchers-%', 'idempotency-%'])
             and active and database = current_database()),
  (select 6 + (exists (select from pg_available_extensions where name = 'pg_net'))::integer),
  'Every job is active, in this database, and registered once');
select is(exists (select from cron.job where jobname = 'dispatch-tick'),
  exists (select from pg_available_extensions where name = 'pg_net'),
  'The dispatch tick is registered exactly when pg_net exists (Supabase), not locally');
select ok((select bool_and(to_regproc(substring(command from 'select (app\.[a-z_]+)\(')) is not null)
           from cron.job where jobname like any (array['dispatch-%', 'vouchers-%', 'idempotency-%'])),
  'Every job''s function exists');

-- Promote and enqueue in bounded chunks ----------------------------------------------------------------

insert into app.channels (id, phone_number_id, display_name, rate_per_minute, burst, tokens)
values ('00000000-0000-4000-8000-000000000150', '600000001', 'Cron channel', 250, 42, 42);
insert into app.campaigns (id, name, amount_minor, currency, channel_id, template_name, status, scheduled_for)
values ('00000000-0000-4000-8000-000000000151', 'Due', 1000, 'KES', '00000000-0000-4000-8000-000000000150',
        'fuel_voucher', 'scheduled', now() - interval '1 minute'),
       ('00000000-0000-4000-8000-000000000152', 'Not yet', 1000, 'KES', '00000000-0000-4000-8000-000000000150',
        'fuel_voucher', 'scheduled', now() + interval '1 hour');
insert into app.campaign_targets (campaign_id, msisdn)
select c, '+2548600' || lpad(i::text, 5, '0') || right(c::text, 1)
from unnest(array['00000000-0000-4000-8000-000000000151', '00000000-0000-4000-8000-000000000152']::uuid[]) c,
     generate_series(1, 5) i;

create function tests.campaign_state(id uuid) returns text language sql as $$
  select c.status || ' queued=' || (select count(*) from app.messages m where m.campaign_id = c.id and m.status = 'queued')
         || ' enqueued=' || (select count(*) from app.messages m where m.campaign_id = c.id)
  from app.campaigns c where c.id = campaign_state.id
$$;
create function tests.send_all(campaign uuid) returns void language sql as $$
  update app.messages m set status = 'sent', sent_at = now(), wamid = 'wamid.cron.' || m.id
  where m.campaign_id = campaign and m.status = 'queued'
$$;

-- The job's counts are global (other campaigns may exist): assertions look at ours.
select app.promote_due_campaigns(2) is not null as ran \gset
select is(tests.campaign_state('00000000-0000-4000-8000-000000000151'), 'dispatching queued=2 enqueued=2',
  'A due campaign is promoted and its first chunk enqueued');
select is(tests.campaign_state('00000000-0000-4000-8000-000000000152'), 'scheduled queued=0 enqueued=0',
  'A campaign whose start time has not come stays scheduled');
select app.promote_due_campaigns(2) is not null as ran \gset
select is(tests.campaign_state('00000000-0000-4000-8000-000000000151'), 'dispatching queued=2 enqueued=2',
  'No new chunk while a full chunk is still queued (back-pressure)');
select tests.send_all('00000000-0000-4000-8000-000000000151');
select app.complete_campaigns() as completed_count \gset
select is(tests.campaign_state('00000000-0000-4000-8000-000000000151'), 'dispatching queued=0 enqueued=2',
  'A campaign with targets left to enqueue is not complete (though nothing is queued)');
select app.promote_due_campaigns(2) is not null as ran \gset
select is(tests.campaign_state('00000000-0000-4000-8000-000000000151'), 'dispatching queued=2 enqueued=4',
  'Once the queue drains, the next chunk is enqueued');
select tests.send_all('00000000-0000-4000-8000-000000000151');
select app.promote_due_campaigns(2) is not null as ran \gset
select is(tests.campaign_state('00000000-0000-4000-8000-000000000151'), 'dispatching queued=1 enqueued=5',
  'The last, partial chunk');
select app.promote_due_campaigns(2) is not null as ran \gset
select is(tests.campaign_state('00000000-0000-4000-8000-000000000151'), 'dispatching queued=1 enqueued=5',
  'Nothing is left to enqueue');
select is((select count(distinct voucher_id)::integer from app.messages
           where campaign_id = '00000000-0000-4000-8000-000000000151'), 5,
  'Across chunks every target got its own voucher');
select tests.send_all('00000000-0000-4000-8000-000000000151');
select ok(app.complete_campaigns() >= 1, 'With everything enqueued and sent, the campaign completes');
select is(tests.campaign_state('00000000-0000-4000-8000-000000000151'), 'completed queued=0 enqueued=5',
  'dispatching → completed');

-- One campaign's failure does not stop the others.
insert into app.campaigns (id, name, amount_minor, currency, channel_id, template_name, status, starts_at,
                           expires_at, dispatch_started_at)
values ('00000000-0000-4000-8000-000000000153', 'Expired', 1000, 'KES', '00000000-0000-4000-8000-000000000150',
        'fuel_voucher', 'dispatching', now() - interval '2 days', now() - interval '1 day', now() - interval '2 days');
insert into app.campaign_targets (campaign_id, msisdn) values ('00000000-0000-4000-8000-000000000153', '+254870000001');
update app.campaigns set scheduled_for = now() - interval '1 second' where id = '00000000-0000-4000-8000-000000000152';
select ok((app.promote_due_campaigns(2) ->> 'failed')::integer >= 1,
  'An enqueue error is counted and the job carries on');
select ok((select dispatch_error from app.campaigns where id = '00000000-0000-4000-8000-000000000153')
          like '%invalid_expiry%', 'The error is recorded on the failing campaign for the admin');
select is(tests.campaign_state('00000000-0000-4000-8000-000000000152'), 'dispatching queued=2 enqueued=2',
  'while the other campaign was promoted and enqueued');

-- Stragglers: a message queued in a paused campaign is held by the completion job.
update app.campaigns set status = 'paused' where id = '00000000-0000-4000-8000-000000000152';
select app.complete_campaigns() as completed \gset
select is(tests.campaign_state('00000000-0000-4000-8000-000000000152'), 'paused queued=0 enqueued=2',
  'The completion job holds messages left queued in a paused campaign');

-- Voucher expiry ------------------------------------------------------------------------------------------

-- Two batches of one campaign: a small one whose expiry has passed (one of its
-- vouchers voided), and a big one that expires tomorrow.
insert into app.campaigns (id, name, amount_minor, currency)
values ('00000000-0000-4000-8000-000000000154', 'Expiring', 100, 'KES');
select app.issue_batch('00000000-0000-4000-8000-000000000154', 3, now() + interval '1 day') ->> 'batch_id'
  as due_batch \gset
select app.issue_batch('00000000-0000-4000-8000-000000000154', 20000, now() + interval '1 day') ->> 'batch_id'
  as later_batch \gset
-- Time passes for the small batch (its vouchers share its expiry).
update app.voucher_batches set expires_at = now() - interval '1 minute' where id = :'due_batch';
update app.vouchers set expires_at = now() - interval '1 minute' where batch_id = :'due_batch';
update app.vouchers set status = 'void', voided_at = now()
where id = (select min(id) from app.vouchers where batch_id = :'due_batch');
analyze app.vouchers;
analyze app.voucher_batches;
select ok(app.expire_vouchers() >= 2, 'The expiry job expires issued vouchers past their expiry');
select results_eq(
  $$select status, count(*)::integer from app.vouchers where campaign_id = '00000000-0000-4000-8000-000000000154'
    group by status order by status$$,
  $$values ('expired', 2), ('issued', 20000), ('void', 1)$$,
  'Only issued vouchers past expiry change; void and unexpired ones are untouched');
select isnt((select expiry_swept_at from app.voucher_batches where id = :'due_batch'), null,
  'A batch with no issued voucher left is marked swept');
select is((select expiry_swept_at from app.voucher_batches where id = :'later_batch'), null,
  'A batch not yet expired is not');
select app.expire_vouchers() as again \gset
select is((select count(*)::integer from app.vouchers
           where campaign_id = '00000000-0000-4000-8000-000000000154' and status = 'expired'), 2,
  'A second run changes nothing of ours (idempotent)');
create function tests.plan_of(query text) returns text language plpgsql as $$
declare
  plan json;
begin
  execute 'explain (format json) ' || query into plan;
  return plan::text;
end;
$$;
-- At realistic size (thousands of batches, most not yet expired) the due ones come from the index.
insert into app.voucher_batches (campaign_id, issued, expires_at)
select '00000000-0000-4000-8000-000000000154', 1, now() + make_interval(days => n) from generate_series(1, 5000) n;
analyze app.voucher_batches;
select ok(tests.plan_of($$select b.id from app.voucher_batches b where b.expires_at <= now()
    and b.expiry_swept_at is null order by b.expires_at for update skip locked$$)
  like '%voucher_batches_expiry_due_idx%', 'The expiry job finds due batches through voucher_batches_expiry_due_idx');

-- Purges ----------------------------------------------------------------------------------------------------

insert into app.idempotency_keys (scope, key, request_hash, expires_at) values
  ('cron_test', 'old', '\x00', now() - interval '1 second'),
  ('cron_test', 'fresh', '\x00', now() + interval '1 day');
select ok(app.purge_expired_idempotency_keys() >= 1, 'The purge job deletes expired idempotency keys');
select is((select array_agg(key) from app.idempotency_keys where scope = 'cron_test'), array['fresh'],
  'and keeps the ones still valid');

insert into app.dispatch_claims (channel_id, claimed_at, messages, worker) values
  ('00000000-0000-4000-8000-000000000150', now() - interval '2 days', 10, 'old'),
  ('00000000-0000-4000-8000-000000000150', now(), 10, 'new');
insert into app.pending_waba_statuses (wamid, status, occurred_at, received_at)
values ('wamid.cron.stale', 'read', now(), now() - interval '8 days');
select ok((app.purge_dispatch_logs() ->> 'dispatch_claims')::integer >= 1, 'The log purge trims the claim log');
select results_eq(
  $$select (select array_agg(worker) from app.dispatch_claims where channel_id = '00000000-0000-4000-8000-000000000150'),
           (select count(*)::integer from app.pending_waba_statuses where wamid = 'wamid.cron.stale')$$,
  $$values (array['new'], 0)$$, 'Claims older than a day and webhook statuses older than 7 days are purged');

select * from finish();
rollback;
