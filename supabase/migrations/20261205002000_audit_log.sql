-- The audit log: who changed what, when, and with which values — for every
-- admin state change (stations, staff, campaigns' status and settings,
-- issuance, voids, undone redemptions, channels' settings, opt-outs and
-- consent, back-office settings).
--
-- Rows are written by AFTER triggers on the audited tables, not by the RPCs:
-- a trigger cannot be forgotten by a future code path, and no RPC body had to
-- be copied to add it. Each trigger has a WHEN clause that is false for the hot
-- updates, which therefore write nothing here and pay only that comparison:
--   redeem       vouchers issued → redeemed (only void and undo are audited),
--   claim        channels' token bucket (tokens, refilled_at),
--   enqueue      campaigns' enqueue_cursor / dispatch_error,
--   report       messages (not audited at all).
-- tests/db/22_audit_log proves a redeem, a claim, a report and an enqueue write
-- no audit row. Two changes are audited explicitly, with app.audit, because no
-- trigger can tell them apart: an admin's issuance (api.issue_vouchers; the
-- enqueue issues vouchers through the same insert) and a support resend.
--
-- Who: auth.uid() (the JWT's sub) and the caller's role — admin,
-- station_operator, `service` for the service_role key and for pg_cron (no JWT
-- at all), `user` for a signed-in user who is not active staff. What: the
-- table, the operation, the row's key, and the values — the whole row for an
-- insert or delete, {column: {old, new}} of the changed columns for an update —
-- plus the RPC of the HTTP request (PostgREST's request.path) and the
-- transaction id that groups the rows one request wrote.
--
-- Append-only: nobody but the owner may update or delete (no privilege is
-- granted to any API role, RLS is on with no policy; even service_role, which
-- bypasses RLS on Supabase, has no privilege on the table). Admins read it
-- through api.list_audit_log.

create table app.audit_log (
  id bigint generated always as identity primary key,
  -- Transaction time: every row of one request has the same.
  at timestamptz not null default now(),
  actor_id uuid,
  actor_role text not null check (actor_role in ('admin', 'station_operator', 'service', 'user')),
  -- table.operation (stations.update) or a named action (vouchers.issue, messages.resend).
  event text not null check (length(event) between 1 and 100),
  table_name text not null check (length(table_name) between 1 and 63),
  operation text not null check (operation in ('insert', 'update', 'delete', 'action')),
  -- The row's key columns, e.g. {"id": 42, "code": "…"}.
  row_key jsonb not null check (jsonb_typeof(row_key) = 'object'),
  -- insert/delete/action: the values; update: {column: {"old": …, "new": …}} of the changed columns.
  changes jsonb not null check (jsonb_typeof(changes) = 'object'),
  -- The RPC of the HTTP request that made the change (null for pg_cron and SQL sessions).
  rpc text check (length(rpc) <= 200),
  transaction_id bigint not null default txid_current()
);

-- list_audit_log pages newest first by id, optionally for one table, one actor
-- or one row (its key, by containment).
create index audit_log_table_id_idx on app.audit_log (table_name, id);
create index audit_log_actor_id_idx on app.audit_log (actor_id, id) where actor_id is not null;
create index audit_log_row_key_idx on app.audit_log using gin (row_key jsonb_path_ops);

comment on table app.audit_log is
  'Append-only record of admin state changes (who, when, table, key, old/new values); written by triggers; read with api.list_audit_log.';
comment on column app.audit_log.changes is
  'insert/delete/action: the values; update: {column: {"old": …, "new": …}} for each changed column.';

alter table app.audit_log enable row level security;
revoke all on app.audit_log from public, anon, authenticated, service_role;

-- Appends one audit row for the current caller. The one writer of app.audit_log.
create function app.audit(event text, table_name text, operation text, row_key jsonb, changes jsonb)
returns void
language plpgsql
set search_path = ''
as $$
declare
  actor app.actor := app.current_actor();
  uid uuid := auth.uid();
begin
  insert into app.audit_log (actor_id, actor_role, event, table_name, operation, row_key, changes, rpc)
  values (uid,
          coalesce(actor.role, case when uid is null then 'service' else 'user' end),
          audit.event, audit.table_name, audit.operation, audit.row_key, audit.changes,
          nullif(regexp_replace(coalesce(current_setting('request.path', true), ''), '^/rpc/', ''), ''));
end;
$$;

comment on function app.audit is
  'Appends an audit row (who from auth.uid() and the role; service for service_role and pg_cron).';

-- The trigger: TG_ARGV[0] = the key columns (comma-separated), TG_ARGV[1] =
-- columns left out of an update's changes (bookkeeping such as updated_at). An
-- update that changes nothing else writes nothing.
create function app.audit_row_change() returns trigger
language plpgsql
set search_path = ''
as $$
declare
  key_columns text[] := string_to_array(TG_ARGV[0], ',');
  ignored text[] := coalesce(string_to_array(nullif(TG_ARGV[1], ''), ','), '{}');
  old_row jsonb := case when TG_OP <> 'INSERT' then to_jsonb(old) end;
  new_row jsonb := case when TG_OP <> 'DELETE' then to_jsonb(new) end;
  changes jsonb;
begin
  if TG_OP = 'UPDATE' then
    select jsonb_object_agg(n.key, jsonb_build_object('old', o.value, 'new', n.value))
      into changes
    from jsonb_each(new_row) n
    join jsonb_each(old_row) o on o.key = n.key
    where n.value is distinct from o.value and not n.key = any (ignored);
    if changes is null then
      return null;
    end if;
  else
    changes := coalesce(new_row, old_row);
  end if;
  perform app.audit(
    TG_TABLE_NAME || '.' || lower(TG_OP),
    TG_TABLE_NAME,
    lower(TG_OP),
    (select jsonb_object_agg(k, coalesce(new_row, old_row) -> k) from unnest(key_columns) k),
    changes);
  return null;
end;
$$;

comment on function app.audit_row_change is
  'AFTER trigger: appends the row change to app.audit_log (args: key columns, ignored columns).';

-- Triggers on the tables that exist so far; later migrations add their own.

create trigger stations_audit
  after insert or update or delete on app.stations
  for each row execute function app.audit_row_change('id');

create trigger staff_audit
  after insert or update or delete on app.staff
  for each row execute function app.audit_row_change('user_id');

-- Campaigns: creation, and any change but the dispatch bookkeeping the enqueue
-- and promote jobs write on every chunk (enqueue_cursor, dispatch_error,
-- updated_at). The comparison is over the whole row, so a column added later is
-- audited without touching this trigger; it costs a few microseconds once per
-- enqueued chunk.
create trigger campaigns_audit_insert
  after insert on app.campaigns
  for each row execute function app.audit_row_change('id');

create trigger campaigns_audit_update
  after update on app.campaigns
  for each row
  when ((to_jsonb(old) - '{enqueue_cursor,dispatch_error,updated_at}'::text[])
        is distinct from (to_jsonb(new) - '{enqueue_cursor,dispatch_error,updated_at}'::text[]))
  execute function app.audit_row_change('id', 'enqueue_cursor,dispatch_error,updated_at');

-- Vouchers: a void (by an admin, or by a cancelled message) and an undone
-- redemption (redeemed → issued | expired). Not the redeem (its record is
-- app.redemptions) nor the expiry job.
create trigger vouchers_audit
  after update of status on app.vouchers
  for each row
  when (old.status is distinct from new.status and (new.status = 'void' or old.status = 'redeemed'))
  execute function app.audit_row_change('id,code');

-- Channels: creation, settings, pauses and resumes (an admin's, or the circuit
-- breaker's, whose actor is `service`), quality events; never the claim's token
-- bucket (tokens, refilled_at) nor the report's rate adaptation (the AIMD
-- columns), which change on the hot path. As for campaigns, the comparison is
-- over the whole row, so a column added later is audited.
create trigger channels_audit_insert
  after insert on app.channels
  for each row execute function app.audit_row_change('id');

create trigger channels_audit_update
  after update on app.channels
  for each row
  when ((to_jsonb(old) - '{tokens,refilled_at,updated_at,effective_rate_per_minute,rate_decreased_at,rate_changed_at}'::text[])
        is distinct from
        (to_jsonb(new) - '{tokens,refilled_at,updated_at,effective_rate_per_minute,rate_decreased_at,rate_changed_at}'::text[]))
  execute function app.audit_row_change(
    'id', 'tokens,refilled_at,updated_at,effective_rate_per_minute,rate_decreased_at,rate_changed_at');

-- Portfolios: creation, and their messaging tier (an admin's or a quality webhook's).
create trigger portfolios_audit
  after insert or update on app.portfolios
  for each row execute function app.audit_row_change('id');

-- Opt-outs: recorded (webhook, ops) and removed (the number opted back in).
create trigger opt_outs_audit
  after insert or delete on app.opt_outs
  for each row execute function app.audit_row_change('msisdn');

-- Issuance by an admin: audited here rather than by a trigger on
-- voucher_batches, because the enqueue job issues each chunk's vouchers through
-- the same insert (app.issue_batch), and that is dispatch, not an admin action.
-- The body is the one of the campaigns-and-vouchers migration plus the audit row.
create or replace function api.issue_vouchers(
  campaign_id uuid,
  count integer,
  idempotency_key text,
  expires_at timestamptz default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  actor app.actor := app.authorize(array['admin', 'service']);
  stored jsonb;
  issued jsonb;
begin
  if count is null or count not between 1 and 5000 then
    perform app.raise_error('invalid_count',
      format('count must be between 1 and 5000, got %s.', coalesce(count::text, 'null')), 400);
  end if;
  stored := app.idempotency_claim('issue_vouchers', idempotency_key, jsonb_build_object(
    'campaign_id', campaign_id, 'count', count, 'expires_at', expires_at, 'actor', actor.user_id));
  if stored is not null then
    return stored;
  end if;
  issued := app.issue_batch(campaign_id, count, expires_at, actor.user_id);
  perform app.audit('vouchers.issue', 'voucher_batches', 'action',
    jsonb_build_object('id', issued -> 'batch_id'),
    issued || jsonb_build_object('requested_expires_at', expires_at));
  return app.idempotency_save('issue_vouchers', idempotency_key, issued);
end;
$$;

revoke execute on function api.issue_vouchers from public;
grant execute on function api.issue_vouchers to authenticated, service_role;

-- Validates a page size for the list and report RPCs: 1 to 500 (the readiness
-- document's cap), default 200 at each RPC.
create function app.check_page_size(page_size integer) returns void
language plpgsql stable
as $$
begin
  if page_size is null or page_size not between 1 and 500 then
    perform app.raise_error('invalid_page_size',
      format('page_size must be between 1 and 500, got %s.', coalesce(page_size::text, 'null')), 400);
  end if;
end;
$$;

comment on function app.check_page_size is 'Raises invalid_page_size unless 1 <= page_size <= 500.';

-- Newest first. `after` is the id of the last row of the previous page.
-- `row_key` matches by containment: {"code": "…"} finds a voucher's rows,
-- {"id": "…"} a campaign's. Rows are app.audit_log's, so the CSV export has
-- its columns.
create function api.list_audit_log(
  table_name text default null,
  row_key jsonb default null,
  actor_id uuid default null,
  since timestamptz default null,
  until timestamptz default null,
  after bigint default null,
  page_size integer default 200
) returns setof app.audit_log
language plpgsql stable
security definer
set search_path = ''
as $$
begin
  perform app.authorize(array['admin', 'service']);
  perform app.check_page_size(page_size);
  if row_key is not null and jsonb_typeof(row_key) <> 'object' then
    perform app.raise_error('invalid_filter', 'row_key must be a JSON object such as {"id": 42}.', 400,
      jsonb_build_object('field', 'row_key'));
  end if;
  return query
  select a.*
  from app.audit_log a
  where (list_audit_log.table_name is null or a.table_name = list_audit_log.table_name)
    and (list_audit_log.row_key is null or a.row_key @> list_audit_log.row_key)
    and (list_audit_log.actor_id is null or a.actor_id = list_audit_log.actor_id)
    and (since is null or a.at >= since)
    and (until is null or a.at < until)
    and (after is null or a.id < after)
  order by a.id desc
  limit page_size;
end;
$$;

revoke execute on function api.list_audit_log from public;
grant execute on function api.list_audit_log to authenticated, service_role;

comment on function api.list_audit_log is
  'Admin: audit rows newest first, filtered by table, row key (containment), actor and time; keyset pages (after = last id).';
