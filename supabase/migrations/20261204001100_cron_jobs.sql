-- pg_cron jobs: every piece of scheduled work the platform needs, registered here
-- and nowhere else. Each job runs one app.* function (callable directly, which is
-- how the tests run them); each is bounded per run and safe to overlap with
-- itself (SKIP LOCKED, conditional updates).
--
--   job                            schedule         function
--   dispatch-tick                  10 s / 1 min     app.invoke_dispatch()
--   dispatch-promote-campaigns     every minute     app.promote_due_campaigns()
--   dispatch-reclaim-leases        every minute     app.reclaim_expired_leases()
--   dispatch-complete-campaigns    every minute     app.complete_campaigns()
--   vouchers-expire                every minute     app.expire_vouchers()
--   idempotency-purge              every 5 min      app.purge_expired_idempotency_keys()
--   dispatch-purge-logs            hourly           app.purge_dispatch_logs()
--   cron-purge-history             daily            app.purge_cron_history()
--
-- cron.schedule(job_name, schedule, command) inserts or updates the job of that
-- name, so re-running these statements is harmless.

create extension if not exists pg_cron with schema pg_catalog;

-- pg_net performs HTTP requests queued by SQL (net.http_post) after the
-- transaction commits. Supabase provides it; where it is not installed (the
-- local cluster) the local bootstrap provides a stand-in `net` schema with the
-- same surface, served by a worker process of the local stack.
do $$
begin
  if exists (select from pg_available_extensions where name = 'pg_net') then
    create extension if not exists pg_net with schema extensions;
  end if;
end
$$;

-- Housekeeping -------------------------------------------------------------------------

-- Dispatch logs: the claim log is kept a day, the lease-reclaim log and webhook
-- statuses that never found their message seven days.
create function app.purge_dispatch_logs() returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  claims integer;
  reclaims integer;
  statuses integer;
begin
  delete from app.dispatch_claims d where d.claimed_at < now() - interval '1 day';
  get diagnostics claims = row_count;
  delete from app.lease_reclaims r where r.reclaimed_at < now() - interval '7 days';
  get diagnostics reclaims = row_count;
  delete from app.pending_waba_statuses p where p.received_at < now() - interval '7 days';
  get diagnostics statuses = row_count;
  return jsonb_build_object('dispatch_claims', claims, 'lease_reclaims', reclaims,
                            'pending_waba_statuses', statuses);
end;
$$;

comment on function app.purge_dispatch_logs is
  'pg_cron: trims app.dispatch_claims (1 day), app.lease_reclaims and app.pending_waba_statuses (7 days).';

-- pg_cron records every run in cron.job_run_details and never deletes them: with
-- a job every 10 seconds that is ~70,000 rows a week. Kept 7 days.
create function app.purge_cron_history() returns integer
language sql
set search_path = ''
as $$
  with purged as (
    delete from cron.job_run_details d where d.end_time < now() - interval '7 days'
    returning 1
  )
  select count(*)::integer from purged
$$;

comment on function app.purge_cron_history is 'pg_cron: deletes cron.job_run_details older than 7 days.';

-- The dispatch tick ----------------------------------------------------------------------
-- POSTs /functions/v1/dispatch through pg_net, asynchronously (the request goes
-- out after this transaction commits). The project URL and the key are read from
-- Vault at run time, never stored in the job:
--
--   select vault.create_secret('https://<ref>.supabase.co', 'project_url');
--   select vault.create_secret('<secret API key, or the legacy service_role key>', 'service_key');
--
-- The key travels in the `apikey` header, which is where Supabase wants its
-- sb_secret_… keys (they are not JWTs); a legacy service_role key, which is a JWT,
-- also goes as the bearer token. The function answers 202 at once, so a short
-- timeout is enough.
create function app.invoke_dispatch() returns bigint
language plpgsql
set search_path = ''
as $$
declare
  project_url text;
  service_key text;
begin
  select s.decrypted_secret into project_url from vault.decrypted_secrets s where s.name = 'project_url';
  select s.decrypted_secret into service_key from vault.decrypted_secrets s where s.name = 'service_key';
  if project_url is null or service_key is null then
    raise exception 'Vault secrets "project_url" and "service_key" are required to call /functions/v1/dispatch.'
      using errcode = 'invalid_parameter_value';
  end if;
  return net.http_post(
    url := rtrim(project_url, '/') || '/functions/v1/dispatch',
    body := jsonb_build_object('source', 'pg_cron'),
    headers := jsonb_build_object('Content-Type', 'application/json', 'apikey', service_key)
      || case when service_key like 'eyJ%' then jsonb_build_object('Authorization', 'Bearer ' || service_key)
              else '{}'::jsonb end,
    timeout_milliseconds := 10000
  );
end;
$$;

comment on function app.invoke_dispatch() is
  'pg_cron: POSTs /functions/v1/dispatch via pg_net (net.http_post) with project_url and service_key from Vault; returns the request id.';

-- Schedules ---------------------------------------------------------------------------------
-- The dispatch tick runs every 10 seconds where pg_cron has sub-minute schedules
-- (1.5 and later: Supabase), else every minute (the local cluster's 1.4, where the
-- stack may add a faster ticker). A run drains what is due and exits when the
-- queue is idle, so ticks bound how long a new campaign waits for its first send.
select cron.schedule('dispatch-tick',
  case when (select regexp_match(e.extversion, '^(\d+)\.(\d+)')::integer[] from pg_catalog.pg_extension e
             where e.extname = 'pg_cron') >= array[1, 5]
       then '10 seconds' else '* * * * *' end,
  'select app.invoke_dispatch()');
select cron.schedule('dispatch-promote-campaigns', '* * * * *', 'select app.promote_due_campaigns()');
select cron.schedule('dispatch-reclaim-leases', '* * * * *', 'select app.reclaim_expired_leases()');
select cron.schedule('dispatch-complete-campaigns', '* * * * *', 'select app.complete_campaigns()');
select cron.schedule('vouchers-expire', '* * * * *', 'select app.expire_vouchers()');
select cron.schedule('idempotency-purge', '*/5 * * * *', 'select app.purge_expired_idempotency_keys()');
select cron.schedule('dispatch-purge-logs', '17 * * * *', 'select app.purge_dispatch_logs()');
select cron.schedule('cron-purge-history', '41 3 * * *', 'select app.purge_cron_history()');
