-- pg_cron: the jobs are registered, and each job's function does its bounded work:
-- promote and enqueue in chunks, complete campaigns, expire vouchers, purge keys and logs.
begin;
\ir helpers.sql
select plan(40);

-- Registration -------------------------------------------------------------------------------------

select has_extension('pg_cron', 'pg_cron is installed');
select results_eq(
  $$select jobname::text collate "default", command::text collate "default"
    from cron.job
    where jobname in ('dispatch-tick', 'dispatch-promote-campaigns', 'dispatch-reclaim-leases',
                      'dispatch-complete-campaigns', 'vouchers-expire', 'idempotency-purge',
                      'dispatch-purge-logs', 'cron-purge-history', 'dispatch-resume-channels')
    order by jobname$$,
  $$values ('cron-purge-history', 'select app.purge_cron_history()'),
           ('dispatch-complete-campaigns', 'select app.complete_campaigns()'),
           ('dispatch-promote-campaigns', 'select app.promote_due_campaigns()'),
           ('dispatch-purge-logs', 'select app.purge_dispatch_logs()'),
           ('dispatch-reclaim-leases', 'select app.reclaim_expired_leases()'),
           ('dispatch-resume-channels', 'select app.resume_due_channels()'),
           ('dispatch-tick', 'select app.invoke_dispatch()'),
           ('idempotency-purge', 'select app.purge_expired_idempotency_keys()'),
           ('vouchers-expire', 'select app.expire_vouchers()')$$,
  'Every scheduled job is registered, each calling one app function');
select results_eq(
  $$select jobname::text collate "default", schedule::text collate "default" from cron.job
    where jobname <> 'dispatch-tick' order by jobname$$,
  $$values ('cron-purge-history', '41 3 * * *'), ('dispatch-complete-campaigns', '* * * * *'),
           ('dispatch-promote-campaigns', '* * * * *'), ('dispatch-purge-logs', '17 * * * *'),
           ('dispatch-reclaim-leases', '* * * * *'), ('dispatch-resume-channels', '* * * * *'),
           ('idempotency-purge', '*/5 * * * *'),
           ('vouchers-expire', '* * * * *')$$,
  'The housekeeping jobs run every minute, every five minutes, hourly or daily');
select is((select schedule::text from cron.job where jobname = 'dispatch-tick'),
  case when (select regexp_match(extversion, '^(\d+)\.(\d+)')::integer[] from pg_extension
             where extname = 'pg_cron') >= array[1, 5] then '10 seconds' else '* * * * *' end,
  'The dispatch tick runs every 10 seconds where pg_cron can (1.5+, Supabase), else every minute');
select is((select count(*)::integer from cron.job where active and database = current_database()),
  (select count(*)::integer from cron.job),
  'Every job is active and runs in this database');
select ok((select bool_and(to_regproc(substring(command from 'select (app\.[a-z_]+)\(')) is not null)
           from cron.job),
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
update app.campaigns set status = 'paused', pause_reason = 'admin' where id = '00000000-0000-4000-8000-000000000152';
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
insert into app.portfolios (id, name, messaging_tier)
values ('00000000-0000-4000-8000-000000000155', 'Cron portfolio', 'TIER_250');
insert into app.portfolio_recipients (portfolio_id, msisdn, last_at) values
  ('00000000-0000-4000-8000-000000000155', '+254880000001', now() - interval '26 hours'),
  ('00000000-0000-4000-8000-000000000155', '+254880000002', now() - interval '1 hour');
insert into app.portfolio_usage (portfolio_id, bucket_start, recipients) values
  ('00000000-0000-4000-8000-000000000155', app.usage_bucket(now() - interval '26 hours'), 1),
  ('00000000-0000-4000-8000-000000000155', app.usage_bucket(now() - interval '1 hour'), 1);
select ok((app.purge_dispatch_logs() ->> 'dispatch_claims')::integer >= 1, 'The log purge trims the claim log');
select results_eq(
  $$select (select array_agg(worker) from app.dispatch_claims where channel_id = '00000000-0000-4000-8000-000000000150'),
           (select array_agg(msisdn) from app.portfolio_recipients
            where portfolio_id = '00000000-0000-4000-8000-000000000155'),
           (select count(*)::integer from app.portfolio_usage
            where portfolio_id = '00000000-0000-4000-8000-000000000155')$$,
  $$values (array['new'], array['+254880000002'], 1)$$,
  'Claims older than a day and tier usage older than the window (25 h) are purged');

-- Channels whose temporary pause has ended -------------------------------------------------------------------

update app.channels set status = 'paused', pause_reason = 'spam_rate_limit', paused_at = now() - interval '2 hours',
                        paused_until = now() - interval '1 second'
where id = '00000000-0000-4000-8000-000000000150';
select ok(app.resume_due_channels() >= 1, 'The resume job resumes channels whose paused_until has passed');
select results_eq($$select status, pause_reason, paused_until from app.channels
                    where id = '00000000-0000-4000-8000-000000000150'$$,
  $$values ('active', null::text, null::timestamptz)$$, 'and clears their pause');

-- The dispatch tick -----------------------------------------------------------------------------------------
-- What the job runs on Supabase runs here too, against the local pg_net and Vault stand-ins.

delete from vault.secrets where name in ('project_url', 'service_key');
select throws_ok('select app.invoke_dispatch()', '22023', null,
  'Without its Vault secrets the tick fails loudly instead of calling nowhere');
select vault.create_secret('https://ref.supabase.co/', 'project_url') is not null as url_secret \gset
select vault.create_secret('sb_secret_cron_test', 'service_key') is not null as key_secret \gset
select app.invoke_dispatch() as request_id \gset
select results_eq(
  format($$select method::text, url, headers, convert_from(body, 'UTF8')::jsonb
           from net.http_request_queue where id = %s$$, :'request_id'),
  $$values ('POST', 'https://ref.supabase.co/functions/v1/dispatch',
            '{"apikey": "sb_secret_cron_test", "Content-Type": "application/json"}'::jsonb,
            '{"source": "pg_cron"}'::jsonb)$$,
  'The tick queues one POST of /functions/v1/dispatch with the secret key in the apikey header');
update vault.secrets set secret = 'eyJhbGciOiJIUzI1NiJ9.e30.sig' where name = 'service_key';
select app.invoke_dispatch() as jwt_request_id \gset
select is((select headers ->> 'Authorization' from net.http_request_queue where id = :'jwt_request_id'),
  'Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig', 'A legacy JWT key also goes as the bearer token');
select is((select headers ->> 'apikey' from net.http_request_queue where id = :'jwt_request_id'),
  'eyJhbGciOiJIUzI1NiJ9.e30.sig', 'and as the apikey');
select has_function('net', 'http_post', array['text', 'jsonb', 'jsonb', 'jsonb', 'integer'],
  'net.http_post has pg_net''s signature');
select has_view('vault', 'decrypted_secrets', 'vault.decrypted_secrets exists');

-- pg_cron's own history -------------------------------------------------------------------------------------

insert into cron.job_run_details (jobid, runid, job_pid, database, username, command, status, start_time, end_time)
values (0, -101, 0, 'postgres', 'postgres', 'select 1', 'succeeded', now() - interval '8 days', now() - interval '8 days'),
       (0, -102, 0, 'postgres', 'postgres', 'select 1', 'succeeded', now() - interval '1 day', now() - interval '1 day');
select ok(app.purge_cron_history() >= 1, 'The history purge deletes runs older than 7 days');
select is((select array_agg(runid) from cron.job_run_details where runid in (-101, -102)), array[-102::bigint],
  'and keeps the last week''s');

select * from finish();
rollback;
