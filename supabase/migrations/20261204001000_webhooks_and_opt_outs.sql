-- What WhatsApp tells us back: delivery statuses from webhooks, and opt-outs.
--
-- Both arrive through the `waba-webhook` Edge Function, which verifies Meta's
-- signature and calls these service_role RPCs.

-- Delivery statuses -------------------------------------------------------------------------

-- Webhook statuses whose wamid is not known yet: WhatsApp may deliver a status
-- before the dispatcher's report stores the wamid. They are applied when the
-- report arrives, and purged after 7 days.
create table app.pending_waba_statuses (
  wamid text not null check (length(wamid) between 1 and 200),
  status text not null check (status in ('sent', 'delivered', 'read', 'failed')),
  occurred_at timestamptz not null,
  error_code text check (length(error_code) <= 100),
  error_message text check (length(error_message) <= 1000),
  received_at timestamptz not null default now(),
  primary key (wamid, status)
);

create index pending_waba_statuses_received_at_idx on app.pending_waba_statuses (received_at);

alter table app.pending_waba_statuses enable row level security;

-- A WhatsApp timestamp: epoch seconds (number or digit string, as Meta sends it)
-- or an ISO 8601 string; now() when absent or unreadable.
create function app.waba_timestamp(value jsonb) returns timestamptz
language sql stable
set search_path = ''
as $$
  select coalesce(
    case
      when jsonb_typeof(value) = 'number' or (value #>> '{}') ~ '^[0-9]{1,12}(\.[0-9]+)?$'
        then to_timestamp((value #>> '{}')::double precision)
      when jsonb_typeof(value) = 'string' then app.try_timestamptz(value #>> '{}')
    end,
    now())
$$;

-- Applies statuses monotonically: rank sent 1 < delivered 2 < read 3; failed is
-- terminal and applies only to a message still at sent. A status applies only when
-- it moves the message forward, so replays and out-of-order deliveries change
-- nothing (a late `sent` after `read`, a `delivered` after `read`). Within one
-- call the highest-ranked status per wamid wins (failed above read). Statuses for
-- unknown wamids are kept in app.pending_waba_statuses for the report that will
-- store that wamid. Returns {applied, ignored, unknown} counting items.
create function app.apply_waba_statuses(statuses jsonb, remember_unknown boolean default true)
returns jsonb
language plpgsql
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
  result jsonb;
  wamids text[] := array(select x.e ->> 'wamid' from jsonb_array_elements(statuses) as x(e));
begin
  with items as (
    select x.i, x.e ->> 'wamid' as wamid, lower(x.e ->> 'status') as status,
           app.waba_timestamp(x.e -> 'timestamp') as ts,
           left(x.e ->> 'error_code', 100) as error_code, left(x.e ->> 'error_message', 1000) as error_message
    from jsonb_array_elements(statuses) with ordinality as x(e, i)
  ), ranked as (
    select it.*, case it.status when 'sent' then 1 when 'delivered' then 2 when 'read' then 3
                                when 'failed' then 4 end as rank,
           exists (select from app.messages m where m.wamid = it.wamid offset 0) as known  -- index probe
    from items it
  ), best as (
    select distinct on (r.wamid) r.*
    from ranked r
    where r.rank is not null and r.known
    order by r.wamid, r.rank desc, r.ts desc, r.i
  ), applied as (
    update app.messages m
    set status = b.status,
        delivered_at = case when b.status in ('delivered', 'read') then coalesce(m.delivered_at, b.ts)
                            else m.delivered_at end,
        read_at = case when b.status = 'read' then b.ts else m.read_at end,
        failed_at = case when b.status = 'failed' then b.ts else m.failed_at end,
        last_error_code = case when b.status = 'failed' then coalesce(b.error_code, 'waba_failed')
                               else m.last_error_code end,
        last_error_message = case when b.status = 'failed' then b.error_message else m.last_error_message end
    from best b
    where m.wamid = any (wamids)  -- drives the plan through messages_wamid_key
      and m.wamid = b.wamid
      and ((b.status = 'delivered' and m.status = 'sent')
        or (b.status = 'read' and m.status in ('sent', 'delivered'))
        or (b.status = 'failed' and m.status = 'sent'))
    returning m.id
  ), remembered as (
    insert into app.pending_waba_statuses (wamid, status, occurred_at, error_code, error_message)
    select distinct on (r.wamid, r.status) r.wamid, r.status, r.ts, r.error_code, r.error_message
    from ranked r
    where remember_unknown and not r.known and r.rank is not null
      and r.wamid is not null and length(r.wamid) between 1 and 200
    order by r.wamid, r.status, r.ts desc
    on conflict (wamid, status) do nothing
    returning 1
  )
  select jsonb_build_object(
    'applied', (select count(*) from applied),
    'ignored', (select count(*) from ranked r where r.known) - (select count(*) from applied),
    'unknown', (select count(*) from ranked r where not r.known))
    into result;
  return result;
end;
$$;

create function api.record_waba_statuses(statuses jsonb) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  bad record;
begin
  perform app.authorize(array['service']);
  if jsonb_typeof(statuses) is distinct from 'array' then
    perform app.raise_error('invalid_statuses', 'statuses must be a JSON array.', 400);
  end if;
  if jsonb_array_length(statuses) > 1000 then
    perform app.raise_error('invalid_statuses',
      format('At most 1000 statuses per call, got %s.', jsonb_array_length(statuses)), 400);
  end if;
  select x.i - 1 as idx into bad
  from jsonb_array_elements(statuses) with ordinality as x(e, i)
  where jsonb_typeof(x.e) <> 'object'
     or jsonb_typeof(x.e -> 'wamid') is distinct from 'string'
     or length(x.e ->> 'wamid') not between 1 and 200
     or jsonb_typeof(x.e -> 'status') is distinct from 'string'
  order by x.i
  limit 1;
  if found then
    perform app.raise_error('invalid_statuses',
      format('Status %s needs a "wamid" (1 to 200 characters) and a "status" string.', bad.idx), 400,
      jsonb_build_object('index', bad.idx));
  end if;
  return app.apply_waba_statuses(statuses);
end;
$$;

revoke execute on function api.record_waba_statuses from public;
grant execute on function api.record_waba_statuses to service_role;

-- Opt-outs ------------------------------------------------------------------------------------
-- Idempotent: a second call changes nothing ("created": false). Also stops the
-- number's queued and held messages (app.cancel_messages); a message leased right
-- now is caught at its next claim if it comes back for a retry.
create function api.record_opt_out(msisdn text, source text default 'api') returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  normalized text := app.normalize_msisdn(msisdn);
  created boolean;
  cancelled integer;
begin
  perform app.authorize(array['service']);
  if normalized is null or not app.is_e164(normalized) then
    perform app.raise_error('invalid_msisdn',
      format('"%s" is not an E.164 phone number such as +254700000001.', msisdn), 400);
  end if;
  if source is null or length(source) not between 1 and 100 then
    perform app.raise_error('invalid_opt_out_source', 'source must be 1 to 100 characters.', 400);
  end if;

  insert into app.opt_outs (msisdn, source) values (normalized, record_opt_out.source)
  on conflict on constraint opt_outs_pkey do nothing;
  created := found;

  cancelled := app.cancel_messages(array(
    select m.id from app.campaign_targets t join app.messages m on m.id = t.id
    where t.msisdn = normalized and m.status in ('queued', 'held')), 'opted_out');

  return jsonb_build_object('msisdn', normalized, 'opted_out', true, 'created', created,
                            'cancelled_messages', cancelled);
end;
$$;

revoke execute on function api.record_opt_out from public;
grant execute on function api.record_opt_out to service_role;

