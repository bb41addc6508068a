-- Reports and lists for finance and operations: station settlement, the
-- campaign funnel, and keyset-paged lists of campaigns, redemptions and
-- messages. (Stations and staff are listed by the lifecycle migration, the
-- audit log and consents by theirs.)
--
-- Every one is admin-only, returns a set of rows — so PostgREST (and the local
-- gateway) export it as CSV under `Accept: text/csv` — and pages with a keyset
-- cursor `after` and `page_size` (default 200, at most 500, the readiness
-- document's caps): never `limit`/`offset`/`order`/`select`, which PostgREST
-- reserves. Rows are composite types in `app` rather than RETURNS TABLE, so
-- that a filter argument may be named like the column it filters.
--
-- Plans: optional filters are written `(arg is null or column = arg)`, and the
-- functions run with plan_cache_mode = force_custom_plan, so each call is
-- planned with its arguments' values — the planner folds away the filters that
-- are absent and picks the index of those present (a generic plan could use
-- neither). tests/report_plans.test.ts checks the plans at 1M redemptions;
-- perf/bench/settlement.ts times the settlement report there.

-- Report time -------------------------------------------------------------------------------

-- Days are calendar days in a time zone (default UTC). Returns the zone, or
-- raises invalid_time_zone.
create function app.check_time_zone(time_zone text) returns text
language plpgsql stable
set search_path = ''
as $$
begin
  perform now() at time zone check_time_zone.time_zone;
  return check_time_zone.time_zone;
exception when invalid_parameter_value or null_value_not_allowed then
  perform app.raise_error('invalid_time_zone',
    format('"%s" is not a time zone name such as "UTC" or "Africa/Nairobi".', time_zone), 400);
  return null;  -- not reached: raise_error raises
end;
$$;

comment on function app.check_time_zone is 'Returns a valid time zone name or raises invalid_time_zone (400).';

-- Station settlement ------------------------------------------------------------------------
-- Per station, per day, per currency: the redemptions made that day (count,
-- value, and the till's quantity and sale amount where recorded) and the
-- reversals made that day (count, value), whenever the redemption was. Each
-- figure is counted on the day its event happened, so a closed day never
-- changes: a redemption undone later shows on its own day as a redemption and
-- on the later day as a reversal; net_amount_minor = amount_minor -
-- reversed_amount_minor is what the day moved.

create type app.settlement_row as (
  day date,
  station_id uuid,
  station_code text,
  station_name text,
  currency text,
  redemptions bigint,
  amount_minor bigint,
  reversals bigint,
  reversed_amount_minor bigint,
  net_amount_minor bigint,
  quantity numeric,
  sale_amount_minor bigint,
  -- The keyset cursor of this row: pass the last row's as `after`.
  cursor text
);

create function api.station_settlement(
  from_date date,
  to_date date,
  station_id uuid default null,
  currency text default null,
  time_zone text default 'UTC',
  after text default null,
  page_size integer default 200
) returns setof app.settlement_row
language plpgsql stable
security definer
set search_path = ''
set plan_cache_mode = force_custom_plan
as $$
declare
  tz text;
  lo timestamptz;
  hi timestamptz;
  after_day date;
  after_station text;
  after_currency text;
begin
  perform app.authorize(array['admin', 'service']);
  perform app.check_page_size(page_size);
  tz := app.check_time_zone(coalesce(time_zone, 'UTC'));
  if from_date is null or to_date is null or from_date > to_date or to_date - from_date > 366 then
    perform app.raise_error('invalid_date_range',
      format('from_date and to_date must be given, in order, at most 367 days apart; got %s to %s.',
             from_date, to_date), 400);
  end if;
  if after is not null then
    if after !~ '^\d{4}-\d{2}-\d{2}\|[A-Z0-9_-]{2,32}\|[A-Z]{3}$' then
      perform app.raise_error('invalid_cursor', format('"%s" is not a station_settlement cursor.', after), 400);
    end if;
    after_day := split_part(after, '|', 1)::date;
    after_station := split_part(after, '|', 2);
    after_currency := split_part(after, '|', 3);
  end if;
  -- The day's bounds in the zone; a later page starts at its cursor's day.
  lo := greatest(from_date, after_day)::timestamp at time zone tz;
  hi := (to_date + 1)::timestamp at time zone tz;

  return query
  select e.day, s.id, s.code, s.name, e.currency,
         sum(e.redemptions)::bigint, sum(e.amount)::bigint, sum(e.reversals)::bigint, sum(e.reversed)::bigint,
         (sum(e.amount) - sum(e.reversed))::bigint, sum(e.quantity), sum(e.sale_amount)::bigint,
         e.day::text || '|' || s.code || '|' || e.currency
  from (
    select r.station_id, (r.redeemed_at at time zone tz)::date as day, r.currency::text as currency,
           count(*) as redemptions, sum(r.amount_minor) as amount, sum(r.quantity) as quantity,
           sum(r.sale_amount_minor) as sale_amount, 0 as reversals, 0 as reversed
    from app.redemptions r
    where r.redeemed_at >= lo and r.redeemed_at < hi
      and (station_settlement.station_id is null or r.station_id = station_settlement.station_id)
      and (station_settlement.currency is null or r.currency = upper(station_settlement.currency))
    group by 1, 2, 3
    union all
    select r.station_id, (r.reversed_at at time zone tz)::date, r.currency::text,
           0, 0, null, null, count(*), sum(r.amount_minor)
    from app.redemptions r
    where r.reversed_at >= lo and r.reversed_at < hi
      and (station_settlement.station_id is null or r.station_id = station_settlement.station_id)
      and (station_settlement.currency is null or r.currency = upper(station_settlement.currency))
    group by 1, 2, 3
  ) e
  join app.stations s on s.id = e.station_id
  group by e.day, s.id, s.code, s.name, e.currency
  having after_day is null or (e.day, s.code, e.currency) > (after_day, after_station, after_currency)
  order by e.day, s.code, e.currency
  limit page_size;
end;
$$;

revoke execute on function api.station_settlement from public;
grant execute on function api.station_settlement to authenticated, service_role;

comment on function api.station_settlement is
  'Finance: per station, day and currency, redemptions (count, value, quantity, sale) and reversals made that day; keyset pages; CSV with Accept: text/csv.';

-- Campaign funnel -----------------------------------------------------------------------------
-- Per day: targets added → messages sent → delivered → read (and failed) →
-- vouchers redeemed, plus support resends and undone redemptions. Each count is
-- of the events that happened that day (a message delivered on Tuesday counts on
-- Tuesday), resends included in the message columns.

create type app.funnel_row as (
  day date,
  targets bigint,
  sent bigint,
  delivered bigint,
  read bigint,
  failed bigint,
  redeemed bigint,
  reversed bigint,
  resends bigint
);

create function api.campaign_funnel(
  campaign_id uuid,
  time_zone text default 'UTC',
  after date default null,
  page_size integer default 200
) returns setof app.funnel_row
language plpgsql stable
security definer
set search_path = ''
set plan_cache_mode = force_custom_plan
as $$
declare
  tz text;
begin
  perform app.authorize(array['admin', 'service']);
  perform app.check_page_size(page_size);
  tz := app.check_time_zone(coalesce(time_zone, 'UTC'));
  if not exists (select from app.campaigns c where c.id = campaign_funnel.campaign_id) then
    perform app.raise_error('campaign_not_found',
      format('Campaign "%s" does not exist.', campaign_funnel.campaign_id), 404);
  end if;

  return query
  select e.day,
         count(*) filter (where e.kind = 'target'),
         count(*) filter (where e.kind = 'sent'),
         count(*) filter (where e.kind = 'delivered'),
         count(*) filter (where e.kind = 'read'),
         count(*) filter (where e.kind = 'failed'),
         count(*) filter (where e.kind = 'redeemed'),
         count(*) filter (where e.kind = 'reversed'),
         count(*) filter (where e.kind = 'resend')
  from (
    -- Targets and their messages: campaign_targets_campaign_id_id_idx, then messages by primary key.
    select (x.at at time zone tz)::date as day, x.kind
    from app.campaign_targets t
    left join app.messages m on m.id = t.id
    cross join lateral (values
      (t.created_at, case when t.resend_no = 0 then 'target' else 'resend' end),
      (m.sent_at, 'sent'), (m.delivered_at, 'delivered'), (m.read_at, 'read'), (m.failed_at, 'failed')
    ) x(at, kind)
    where t.campaign_id = campaign_funnel.campaign_id and x.at is not null
    union all
    -- Its vouchers' active redemptions: vouchers_campaign_id_id_idx, then each
    -- voucher's through redemptions_voucher_active_key.
    select (r.redeemed_at at time zone tz)::date, 'redeemed'
    from app.vouchers v
    join app.redemptions r on r.voucher_id = v.id and r.reversed_at is null
    where v.campaign_id = campaign_funnel.campaign_id
    union all
    -- Its undone redemptions, among the few of redemptions_reversed_at_idx: each
    -- counts as redeemed on its day and reversed on its reversal's.
    select (x.at at time zone tz)::date, x.kind
    from app.redemptions r
    join app.vouchers v on v.id = r.voucher_id
    cross join lateral (values (r.redeemed_at, 'redeemed'), (r.reversed_at, 'reversed')) x(at, kind)
    where r.reversed_at is not null and v.campaign_id = campaign_funnel.campaign_id
  ) e
  where after is null or e.day > after
  group by e.day
  order by e.day
  limit page_size;
end;
$$;

revoke execute on function api.campaign_funnel from public;
grant execute on function api.campaign_funnel to authenticated, service_role;

comment on function api.campaign_funnel is
  'Per day: targets → sent → delivered → read (failed) → redeemed (reversed), and resends; keyset by day; CSV with Accept: text/csv.';

-- Lists ----------------------------------------------------------------------------------------

create type app.campaign_list_row as (
  id uuid,
  name text,
  status text,
  amount_minor bigint,
  currency text,
  starts_at timestamptz,
  expires_at timestamptz,
  channel_id uuid,
  template_name text,
  requires_consent boolean,
  created_at timestamptz,
  scheduled_for timestamptz,
  dispatch_started_at timestamptz,
  completed_at timestamptz,
  cancelled_at timestamptz
);

-- Newest first; `after` is the last row's id.
create function api.list_campaigns(
  status text default null,
  after uuid default null,
  page_size integer default 200
) returns setof app.campaign_list_row
language plpgsql stable
security definer
set search_path = ''
set plan_cache_mode = force_custom_plan
as $$
declare
  after_created timestamptz;
begin
  perform app.authorize(array['admin', 'service']);
  perform app.check_page_size(page_size);
  if list_campaigns.status is not null
    and not exists (select from app.campaign_transitions t
                    where list_campaigns.status in (t.from_status, t.to_status)) then
    perform app.raise_error('invalid_status',
      format('status must be a campaign status (draft, scheduled, dispatching, completed, paused, cancelled), got "%s".',
             list_campaigns.status), 400);
  end if;
  if after is not null then
    select c.created_at into after_created from app.campaigns c where c.id = after;
    if not found then
      perform app.raise_error('invalid_cursor', format('Campaign "%s" does not exist.', after), 400);
    end if;
  end if;
  return query
  select c.id, c.name, c.status, c.amount_minor, c.currency::text, c.starts_at, c.expires_at, c.channel_id,
         c.template_name, c.requires_consent, c.created_at, c.scheduled_for, c.dispatch_started_at,
         c.completed_at, c.cancelled_at
  from app.campaigns c
  where (list_campaigns.status is null or c.status = list_campaigns.status)
    and (after is null or (c.created_at, c.id) < (after_created, after))
  order by c.created_at desc, c.id desc
  limit page_size;
end;
$$;

revoke execute on function api.list_campaigns from public;
grant execute on function api.list_campaigns to authenticated, service_role;

create type app.redemption_list_row as (
  id bigint,
  redeemed_at timestamptz,
  station_id uuid,
  station_code text,
  voucher_code text,
  campaign_id uuid,
  campaign_name text,
  amount_minor bigint,
  currency text,
  receipt_ref text,
  pump text,
  quantity numeric,
  sale_amount_minor bigint,
  redeemed_by uuid,
  client_redeemed_at timestamptz,
  reversed_at timestamptz,
  reversed_by uuid,
  reversal_reason text
);

-- Oldest first over [since, until); `after` is the last row's id. `status`:
-- active (not undone) or reversed.
create function api.list_redemptions(
  station_id uuid default null,
  since timestamptz default null,
  until timestamptz default null,
  status text default null,
  after bigint default null,
  page_size integer default 200
) returns setof app.redemption_list_row
language plpgsql stable
security definer
set search_path = ''
set plan_cache_mode = force_custom_plan
as $$
declare
  after_at timestamptz;
begin
  perform app.authorize(array['admin', 'service']);
  perform app.check_page_size(page_size);
  if list_redemptions.status is not null and list_redemptions.status not in ('active', 'reversed') then
    perform app.raise_error('invalid_status',
      format('status must be active or reversed, got "%s".', list_redemptions.status), 400);
  end if;
  if after is not null then
    select r.redeemed_at into after_at from app.redemptions r where r.id = after;
    if not found then
      perform app.raise_error('invalid_cursor', format('Redemption %s does not exist.', after), 400);
    end if;
  end if;
  return query
  select r.id, r.redeemed_at, r.station_id, s.code, app.format_code(v.code), v.campaign_id, c.name,
         r.amount_minor, r.currency::text, r.receipt_ref, r.pump, r.quantity, r.sale_amount_minor, r.redeemed_by,
         r.client_redeemed_at, r.reversed_at, r.reversed_by, r.reversal_reason
  from app.redemptions r
  join app.stations s on s.id = r.station_id
  join app.vouchers v on v.id = r.voucher_id
  join app.campaigns c on c.id = v.campaign_id
  where (list_redemptions.station_id is null or r.station_id = list_redemptions.station_id)
    and (since is null or r.redeemed_at >= since)
    and (until is null or r.redeemed_at < until)
    and (list_redemptions.status is null
         or (list_redemptions.status = 'active') = (r.reversed_at is null))
    and (after is null or (r.redeemed_at, r.id) > (after_at, after))
  order by r.redeemed_at, r.id
  limit page_size;
end;
$$;

revoke execute on function api.list_redemptions from public;
grant execute on function api.list_redemptions to authenticated, service_role;

create type app.message_list_row as (
  id bigint,
  campaign_id uuid,
  channel_id uuid,
  to_msisdn text,
  status text,
  attempts integer,
  resend_of bigint,
  resend_no smallint,
  voucher_code text,
  created_at timestamptz,
  sent_at timestamptz,
  delivered_at timestamptz,
  read_at timestamptz,
  failed_at timestamptz,
  cancelled_at timestamptz,
  last_error_code text,
  last_error_message text,
  wamid text
);

-- In id order; `after` is the last row's id. By campaign
-- (campaign_targets_campaign_id_id_idx) or number (campaign_targets_msisdn_idx);
-- with neither, every message in id order.
create function api.list_messages(
  campaign_id uuid default null,
  status text default null,
  msisdn text default null,
  after bigint default null,
  page_size integer default 200
) returns setof app.message_list_row
language plpgsql stable
security definer
set search_path = ''
set plan_cache_mode = force_custom_plan
as $$
declare
  normalized text := app.normalize_msisdn(msisdn);
begin
  perform app.authorize(array['admin', 'service']);
  perform app.check_page_size(page_size);
  if list_messages.status is not null and list_messages.status not in
    ('queued', 'held', 'leased', 'sent', 'delivered', 'read', 'failed', 'dead', 'unknown', 'cancelled') then
    perform app.raise_error('invalid_status',
      format('status must be a message status (queued, held, leased, sent, delivered, read, failed, dead, unknown, cancelled), got "%s".',
             list_messages.status), 400);
  end if;
  if msisdn is not null and not app.is_e164(normalized) then
    perform app.raise_error('invalid_msisdn',
      format('"%s" is not an E.164 phone number such as +254700000001.', msisdn), 400);
  end if;
  return query
  select m.id, m.campaign_id, m.channel_id, m.to_msisdn::text, m.status, m.attempts, t.resend_of, t.resend_no,
         (select app.format_code(v.code) from app.vouchers v
          where v.id = coalesce(m.voucher_id, (select r.voucher_id from app.messages r where r.id = t.resend_of))),
         m.created_at, m.sent_at, m.delivered_at, m.read_at, m.failed_at, m.cancelled_at, m.last_error_code,
         m.last_error_message, m.wamid
  from app.campaign_targets t
  join app.messages m on m.id = t.id
  where (list_messages.campaign_id is null or t.campaign_id = list_messages.campaign_id)
    and (list_messages.msisdn is null or t.msisdn = normalized)
    and (list_messages.status is null or m.status = list_messages.status)
    and (after is null or t.id > after)
  order by t.id
  limit page_size;
end;
$$;

revoke execute on function api.list_messages from public;
grant execute on function api.list_messages to authenticated, service_role;
