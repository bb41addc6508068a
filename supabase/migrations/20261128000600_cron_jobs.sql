-- pg_cron jobs: every piece of housekeeping the platform needs, registered here
-- and nowhere else. Each job runs one app.* function (callable directly, which is
-- how the pgTAP suite tests them); each is bounded per run and safe to overlap
-- with itself (SKIP LOCKED, conditional updates).
--
--   job                            schedule        function
--   dispatch-promote-campaigns     every minute    app.promote_due_campaigns()
--   dispatch-reclaim-leases        every minute    app.reclaim_expired_leases()
--   dispatch-complete-campaigns    every minute    app.complete_campaigns()
--   vouchers-expire                every minute    app.expire_vouchers()
--   idempotency-purge              every 5 min     app.purge_expired_idempotency_keys()
--   dispatch-purge-logs            hourly          app.purge_dispatch_logs()
--   dispatch-tick                  every minute    app.invoke_dispatch()   (only with pg_net)
--
-- cron.schedule(job_name, schedule, command) inserts or updates the job of that
-- name (pg_cron ≥ 1.4), so re-running this migration's statements is harmless.
-- pg_cron 1.4 has minute granularity; the dispatch function itself loops within
-- its minute, and locally the stack's ticker calls it every second instead.

create extension if not exists pg_cron;

-- Issued vouchers past their expiry become `expired`, oldest first, in bounded
-- batches; the scan is the partial index vouchers_issued_expires_at_idx. (Reads
-- already treat such a voucher as expired, and redeem refuses it: this job makes
-- the stored status match.)
create function app.expire_vouchers(max_vouchers integer default 10000) returns integer
language sql
set search_path = ''
as $$
  with due as (
    select v.id
    from app.vouchers v
    where v.status = 'issued' and v.expires_at is not null and v.expires_at <= now()
    order by v.expires_at
    limit max_vouchers
    for update skip locked
  ), expired as (
    update app.vouchers v set status = 'expired'
    from due
    where v.id = due.id
    returning 1
  )
  select count(*)::integer from expired
$$;

comment on function app.expire_vouchers is
  'pg_cron: marks up to max_vouchers issued vouchers past expires_at as expired (partial index vouchers_issued_expires_at_idx).';

-- Idempotency keys past expires_at are deleted in bounded batches. A key whose
-- row is locked by a request in flight is skipped until the next run.
create function app.purge_expired_idempotency_keys(max_keys integer default 20000) returns integer
language sql
set search_path = ''
as $$
  with doomed as (
    select k.scope, k.key
    from app.idempotency_keys k
    where k.expires_at <= now()
    order by k.expires_at
    limit max_keys
    for update skip locked
  ), purged as (
    delete from app.idempotency_keys k
    using doomed d
    where k.scope = d.scope and k.key = d.key
    returning 1
  )
  select count(*)::integer from purged
$$;

comment on function app.purge_expired_idempotency_keys is
  'pg_cron: deletes up to max_keys idempotency keys past expires_at.';

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

select cron.schedule('dispatch-promote-campaigns', '* * * * *', 'select app.promote_due_campaigns()');
select cron.schedule('dispatch-reclaim-leases', '* * * * *', 'select app.reclaim_expired_leases()');
select cron.schedule('dispatch-complete-campaigns', '* * * * *', 'select app.complete_campaigns()');
select cron.schedule('vouchers-expire', '* * * * *', 'select app.expire_vouchers()');
select cron.schedule('idempotency-purge', '*/5 * * * *', 'select app.purge_expired_idempotency_keys()');
select cron.schedule('dispatch-purge-logs', '17 * * * *', 'select app.purge_dispatch_logs()');

-- The dispatch tick. On Supabase, pg_cron calls the `dispatch` Edge Function every
-- minute through pg_net, with the project URL and the service_role key read from
-- Vault at run time (never stored in the job):
--
--   select vault.create_secret('https://<ref>.supabase.co', 'project_url');
--   select vault.create_secret('<service_role key>', 'service_role_key');
--
-- Where pg_net is not available (the local cluster) nothing is registered: the
-- local stack's ticker (local/dispatch_ticker.ts) calls the function instead. The
-- function is created with dynamic SQL so that, locally, no function refers to
-- the missing `net` and `vault` schemas.
do $do$
begin
  if exists (select from pg_available_extensions where name = 'pg_net') then
    create extension if not exists pg_net;
    execute $fn$
      create or replace function app.invoke_dispatch() returns bigint
      language plpgsql
      set search_path = ''
      as $body$
      declare
        project_url text;
        service_key text;
      begin
        select s.decrypted_secret into project_url from vault.decrypted_secrets s where s.name = 'project_url';
        select s.decrypted_secret into service_key from vault.decrypted_secrets s where s.name = 'service_role_key';
        if project_url is null or service_key is null then
          raise exception 'Vault secrets "project_url" and "service_role_key" are required to call /functions/v1/dispatch.';
        end if;
        -- Asynchronous: pg_net sends the request after this transaction commits.
        return net.http_post(
          url := rtrim(project_url, '/') || '/functions/v1/dispatch',
          body := jsonb_build_object('source', 'pg_cron'),
          headers := jsonb_build_object('Content-Type', 'application/json',
                                        'Authorization', 'Bearer ' || service_key),
          timeout_milliseconds := 60000
        );
      end;
      $body$
    $fn$;
    execute 'revoke execute on function app.invoke_dispatch() from public';
    execute $c$comment on function app.invoke_dispatch() is
      'pg_cron (Supabase): POSTs /functions/v1/dispatch via pg_net with project_url and service_role_key from Vault.'$c$;
    perform cron.schedule('dispatch-tick', '* * * * *', 'select app.invoke_dispatch()');
  elsif exists (select from cron.job j where j.jobname = 'dispatch-tick') then
    perform cron.unschedule('dispatch-tick');
  end if;
end
$do$;
