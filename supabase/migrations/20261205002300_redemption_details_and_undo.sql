-- Redemption details, undo, and the campaign's status at redeem.
--
-- Details. A redeem may carry what the station's till knows: a receipt
-- reference, the pump, the quantity and the sale amount (all optional, bounded,
-- refused with invalid_redemption_details when out of bounds). They are part of
-- the request an idempotency key stands for — a replay with other details is
-- idempotency_key_reused — and are carried into the reports. The redemption
-- also records the voucher's value (amount_minor, currency) at redeem time, so
-- settlement reads app.redemptions alone.
--
-- Undo. api.undo_redemption reverses a redemption: the record is marked
-- reversed (who, when, why), never deleted, and the voucher goes back to
-- issued — or expired, when it is past its expiry — so it can be redeemed
-- again. An admin may undo at any time; the redeeming station's operator only
-- within app.settings.undo_window_seconds (default 15 minutes) of the redeem.
-- "At most one redemption per voucher" becomes "at most one *active* redemption
-- per voucher": the unique index redemptions_voucher_active_key (voucher_id)
-- where reversed_at is null keeps a double active redemption impossible, for
-- every code path, as the unique constraint did before (layer 3 of the redeem
-- migration's header).
--
-- Why undo cannot race a redeem into a double redemption: undo updates the
-- redemption row (reversed_at, only while it is null) and then the voucher row
-- (only while it is redeemed) in one statement. A redeem updates the voucher
-- row only while it is issued. So a redeem that runs while an undo is in flight
-- sees the voucher as it was, redeemed, and is refused (voucher_already_redeemed)
-- exactly as if it had come first; one that runs after the undo commits finds it
-- issued and redeems it again — a new, active redemption beside the reversed
-- one — and two of those serialise on the voucher row as any two redeems do.
-- Two undos of one redemption serialise on the redemption row: the second
-- waits, matches nothing, and answers redemption_already_reversed.
-- tests/undo_concurrency.test.ts runs each race in two sessions.
--
-- Cancelled campaigns. A cancelled campaign's unredeemed vouchers are refused at
-- redeem (campaign_cancelled, 410), not voided on cancel: the refusal is one
-- more predicate on the campaign row the redeeming statement already joins
-- (free on the hot path), it is effective the moment the cancel commits whatever
-- the campaign's size, and it does not rewrite tens of thousands of voucher rows
-- (nor their audit rows) in the cancelling transaction. Vouchers keep their
-- status (issued); preview shows campaign_status and, for an operator,
-- redeemable_here = false.
--
-- The hot path keeps what the redeem migration's header describes: one
-- conditional UPDATE of the voucher (HOT: no index names vouchers.status), the
-- redemption record and the idempotency key with its response written by the
-- same statement, nothing written on a refusal. It writes two more columns and
-- up to four optional ones to the redemption, and the new index
-- redemptions_redeemed_at_idx (time-ordered, so each insert lands on its
-- rightmost leaf) serves the reports. perf/results has the redeem benchmark
-- before and after.

-- Columns ------------------------------------------------------------------------------------

alter table app.redemptions
  add column amount_minor bigint,
  add column currency app.currency_code,
  add column receipt_ref text check (length(receipt_ref) between 1 and 64),
  add column pump text check (length(pump) between 1 and 16),
  add column quantity numeric(12, 3) check (quantity > 0 and quantity <= 1000000),
  add column sale_amount_minor bigint check (sale_amount_minor between 0 and 1000000000000),
  add column reversed_at timestamptz,
  add column reversed_by uuid,
  add column reversal_reason text check (length(reversal_reason) between 1 and 500),
  add constraint redemptions_reversal_fields check ((reversed_at is null) = (reversal_reason is null));

update app.redemptions r
set amount_minor = v.amount_minor, currency = v.currency
from app.vouchers v
where v.id = r.voucher_id;

alter table app.redemptions
  alter column amount_minor set not null,
  alter column currency set not null;

comment on column app.redemptions.amount_minor is 'The voucher''s value at redeem time, in minor units of currency.';
comment on column app.redemptions.receipt_ref is 'The till''s receipt reference (optional, 1-64 characters).';
comment on column app.redemptions.pump is 'The pump or till lane (optional, 1-16 characters).';
comment on column app.redemptions.quantity is 'Quantity sold, e.g. litres (optional, 0 < q <= 1,000,000, 3 decimals).';
comment on column app.redemptions.sale_amount_minor is 'The sale''s total in minor units of the voucher''s currency (optional).';
comment on column app.redemptions.reversed_at is 'When the redemption was undone (api.undo_redemption); null while active.';

-- At most one active redemption per voucher (was: at most one redemption).
alter table app.redemptions drop constraint redemptions_voucher_id_key;
create unique index redemptions_voucher_active_key on app.redemptions (voucher_id) where reversed_at is null;
-- Reversals by time: settlement counts them on the day they happen (for every
-- station or one: reversals are rare, so one station's are a filter over the
-- period's few), the funnel finds a campaign's among them. Partial, so a
-- redeem's insert (reversed_at null) adds no entry here.
create index redemptions_reversed_at_idx on app.redemptions (reversed_at) where reversed_at is not null;
-- Reports and list_redemptions across every station, in time order.
create index redemptions_redeemed_at_idx on app.redemptions (redeemed_at, id);

comment on table app.redemptions is
  'Redemption records (who, where, server and client time, idempotency key, value, till details); reversed by api.undo_redemption, never deleted; at most one active per voucher.';

create trigger redemptions_audit
  after update on app.redemptions
  for each row
  when (old.reversed_at is null and new.reversed_at is not null)
  execute function app.audit_row_change('id');

-- Details -------------------------------------------------------------------------------------

-- The first thing wrong with a redeem's details, as an error value, or null.
create function app.redemption_details_error(
  receipt_ref text,
  pump text,
  quantity numeric,
  sale_amount_minor bigint
) returns jsonb
language sql immutable
as $$
  select case
    when receipt_ref is not null and pg_catalog.length(receipt_ref) not between 1 and 64 then
      app.error_result('invalid_redemption_details', 'receipt_ref must be 1 to 64 characters.', 400,
                       pg_catalog.jsonb_build_object('field', 'receipt_ref'))
    when pump is not null and pg_catalog.length(pump) not between 1 and 16 then
      app.error_result('invalid_redemption_details', 'pump must be 1 to 16 characters.', 400,
                       pg_catalog.jsonb_build_object('field', 'pump'))
    when quantity is not null and (quantity <= 0 or quantity > 1000000
                                   or quantity <> pg_catalog.round(quantity, 3)) then
      app.error_result('invalid_redemption_details',
                       'quantity must be greater than 0 and at most 1000000, with at most 3 decimals.', 400,
                       pg_catalog.jsonb_build_object('field', 'quantity'))
    when sale_amount_minor is not null and sale_amount_minor not between 0 and 1000000000000 then
      app.error_result('invalid_redemption_details',
                       'sale_amount_minor must be between 0 and 1000000000000 minor units.', 400,
                       pg_catalog.jsonb_build_object('field', 'sale_amount_minor'))
  end
$$;

comment on function app.redemption_details_error is
  'invalid_redemption_details (as a value) for the first out-of-bounds redeem detail, else null.';

-- Redeem -------------------------------------------------------------------------------------
-- app.redeem_one of the redeem migration, with: the details (validated, hashed
-- with the request, recorded, echoed in the response when given), the value
-- recorded with the redemption, the campaign's status (a cancelled campaign's
-- vouchers are refused), and the winner of voucher_already_redeemed read from
-- the active redemption. Everything else is unchanged; the comments of the
-- redeem migration still describe it.

drop function app.redeem_one(app.actor, uuid, text, text, timestamptz);

create function app.redeem_one(
  actor app.actor,
  station_id uuid,
  code text,
  idempotency_key text,
  client_redeemed_at timestamptz,
  receipt_ref text default null,
  pump text default null,
  quantity numeric default null,
  sale_amount_minor bigint default null
) returns jsonb
language plpgsql
as $$
declare
  canonical text := app.normalize_code(code);
  request_hash bytea;
  details jsonb;
  stored app.idempotency_keys;
  result jsonb;
  key_saved boolean;
  voucher app.vouchers;
  campaign app.campaigns;
  winner record;
begin
  if canonical is null or not app.is_voucher_code(canonical) then
    return app.error_result('invalid_code_format',
      format('"%s" is not a voucher code (15 characters of 0-9 A-Z without I, L, O, U).', code), 400);
  end if;
  if idempotency_key is null or length(idempotency_key) not between 1 and 200 then
    return app.error_result('invalid_idempotency_key',
      'An idempotency_key of 1 to 200 characters is required.', 400);
  end if;
  if receipt_ref is not null or pump is not null or quantity is not null or sale_amount_minor is not null then
    result := app.redemption_details_error(receipt_ref, pump, quantity, sale_amount_minor);
    if result is not null then
      return result;
    end if;
    details := jsonb_strip_nulls(jsonb_build_object('receipt_ref', receipt_ref, 'pump', pump,
                                                    'quantity', quantity, 'sale_amount_minor', sale_amount_minor));
  end if;
  -- The request a key stands for (a key reused for another request is refused).
  -- Details are added only when given, so a request without them hashes as it
  -- did before they existed (keys stored by an earlier version still replay).
  request_hash := extensions.digest((jsonb_build_object(
    'code', canonical, 'station_id', station_id, 'actor', actor.user_id,
    'client_redeemed_at', client_redeemed_at) || coalesce(details, '{}'::jsonb))::text, 'sha256');

  select * into stored from app.idempotency_keys k
  where k.scope = 'redeem_voucher' and k.key = redeem_one.idempotency_key;
  if not found then
    -- Check-and-redeem in one statement (see the redeem migration), now also
    -- refusing a cancelled campaign's voucher.
    with redeemed as (
      update app.vouchers v
      set status = 'redeemed', redeemed_at = now(), redeemed_station_id = redeem_one.station_id,
          redeemed_by = actor.user_id
      from app.campaigns c
      where v.code = canonical
        and v.status = 'issued'
        and (v.expires_at is null or v.expires_at > now())
        and c.id = v.campaign_id
        and c.starts_at <= now()
        and c.status <> 'cancelled'
        and (cardinality(c.station_ids) = 0 or redeem_one.station_id = any (c.station_ids))
      returning v.id, v.code, v.amount_minor, v.currency, v.campaign_id, c.name as campaign_name,
                v.redeemed_at
    ), recorded as (
      insert into app.redemptions (voucher_id, station_id, redeemed_by, client_redeemed_at, idempotency_key,
                                   amount_minor, currency, receipt_ref, pump, quantity, sale_amount_minor)
      select r.id, redeem_one.station_id, actor.user_id, redeem_one.client_redeemed_at, redeem_one.idempotency_key,
             r.amount_minor, r.currency, redeem_one.receipt_ref, redeem_one.pump, redeem_one.quantity,
             redeem_one.sale_amount_minor
      from redeemed r
      returning id
    ), response as (
      select jsonb_build_object(
               'ok', true,
               'redemption_id', rec.id,
               'code', app.format_code(r.code),
               'status', 'redeemed',
               'amount_minor', r.amount_minor,
               'currency', r.currency,
               'campaign_id', r.campaign_id,
               'campaign_name', r.campaign_name,
               'station_id', redeem_one.station_id,
               'redeemed_at', r.redeemed_at,
               'client_redeemed_at', redeem_one.client_redeemed_at) || coalesce(details, '{}'::jsonb) as body
      from redeemed r, recorded rec
    ), saved as (
      insert into app.idempotency_keys (scope, key, request_hash, response)
      select 'redeem_voucher', redeem_one.idempotency_key, request_hash, response.body
      from response
      on conflict do nothing
      returning true
    )
    select response.body, exists (select from saved) into result, key_saved from response;

    if result is not null then
      if not key_saved then
        -- Another request holding this key committed while we redeemed.
        perform app.raise_error('idempotency_key_reused',
          format('Idempotency key "%s" was used at the same time by a different request.', idempotency_key),
          409);
      end if;
      return result || '{"replayed": false}';
    end if;

    select * into stored from app.idempotency_keys k
    where k.scope = 'redeem_voucher' and k.key = redeem_one.idempotency_key;
  end if;

  -- Not redeemed now; nothing was written. Say why, in the order a client can act on.
  if right(canonical, 1) <> app.code_check_char(left(canonical, 14)) then
    return app.error_result('invalid_code_checksum',
      format('Voucher code "%s" has a typo: its check character does not match.', code), 400);
  end if;
  if stored.key is not null then
    if stored.request_hash <> request_hash then
      return app.error_result('idempotency_key_reused',
        format('Idempotency key "%s" was already used with a different request.', idempotency_key), 409);
    end if;
    return stored.response || '{"replayed": true}';
  end if;

  select * into voucher from app.vouchers v where v.code = canonical;
  if not found then
    return app.error_result('voucher_not_found',
      format('Voucher "%s" does not exist.', app.format_code(canonical)), 404);
  end if;
  select * into campaign from app.campaigns c where c.id = voucher.campaign_id;

  if voucher.status = 'redeemed' then
    select r.redeemed_at, r.station_id, s.code as station_code, s.name as station_name
      into winner
    from app.redemptions r join app.stations s on s.id = r.station_id
    where r.voucher_id = voucher.id and r.reversed_at is null;
    return app.error_result('voucher_already_redeemed',
      format('Voucher "%s" was already redeemed at %s on %s.', app.format_code(canonical),
             winner.station_code, winner.redeemed_at),
      409,
      jsonb_build_object('redeemed_at', winner.redeemed_at, 'station_id', winner.station_id,
                         'station_code', winner.station_code, 'station_name', winner.station_name));
  elsif voucher.status = 'void' then
    return app.error_result('voucher_void',
      format('Voucher "%s" was voided.', app.format_code(canonical)), 410,
      jsonb_build_object('voided_at', voucher.voided_at));
  elsif voucher.status = 'expired' or voucher.expires_at <= now() then
    return app.error_result('voucher_expired',
      format('Voucher "%s" expired at %s.', app.format_code(canonical), voucher.expires_at), 410,
      jsonb_build_object('expires_at', voucher.expires_at));
  elsif campaign.status = 'cancelled' then
    return app.error_result('campaign_cancelled',
      format('Voucher "%s" belongs to campaign "%s", which was cancelled.', app.format_code(canonical),
             campaign.name), 410,
      jsonb_build_object('campaign_id', campaign.id, 'cancelled_at', campaign.cancelled_at));
  elsif campaign.starts_at > now() then
    return app.error_result('voucher_not_yet_valid',
      format('Voucher "%s" is valid from %s.', app.format_code(canonical), campaign.starts_at), 409,
      jsonb_build_object('starts_at', campaign.starts_at));
  elsif cardinality(campaign.station_ids) > 0 and not station_id = any (campaign.station_ids) then
    return app.error_result('station_not_allowed',
      format('Voucher "%s" cannot be redeemed at this station.', app.format_code(canonical)), 403);
  end if;
  -- Unreachable unless the voucher changed between the update and the diagnosis.
  return app.error_result('voucher_not_redeemable',
    format('Voucher "%s" could not be redeemed; try again.', app.format_code(canonical)), 409);
end;
$$;

comment on function app.redeem_one is
  'Redeems one voucher exactly once; returns {ok:true,…} or an error value. Writes the idempotency key once, with the response, in the redeeming statement.';

-- api.redeem_voucher gains the optional details (so its signature changes:
-- dropped and created again, which PostgREST resolves by argument names; calls
-- without details are unchanged).
drop function api.redeem_voucher(text, text, uuid, timestamptz);

create function api.redeem_voucher(
  code text,
  idempotency_key text,
  station_id uuid default null,
  client_redeemed_at timestamptz default null,
  receipt_ref text default null,
  pump text default null,
  quantity numeric default null,
  sale_amount_minor bigint default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  actor app.actor := app.authorize(array['station_operator', 'admin', 'service']);
  station jsonb := app.redeem_station(actor, station_id);
  result jsonb;
begin
  if not (station ->> 'ok')::boolean then
    perform app.raise_result_error(station);
  end if;
  result := app.redeem_one(actor, (station ->> 'station_id')::uuid, code, idempotency_key,
                           client_redeemed_at, receipt_ref, pump, quantity, sale_amount_minor);
  if not (result ->> 'ok')::boolean then
    perform app.raise_result_error(result);
  end if;
  return result - 'ok';
end;
$$;

revoke execute on function api.redeem_voucher from public;
grant execute on function api.redeem_voucher to authenticated, service_role;

-- The offline-queue flush of the redeem migration; each item may carry the same
-- optional details (receipt_ref and pump strings, quantity and sale_amount_minor
-- numbers). A detail of the wrong JSON type fails its item with
-- invalid_redemption_details, like one out of bounds.
create or replace function api.redeem_vouchers(items jsonb, station_id uuid default null) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  actor app.actor := app.authorize(array['station_operator', 'admin', 'service']);
  station jsonb := app.redeem_station(actor, station_id);
  item record;
  result jsonb;
  results jsonb := '[]'::jsonb;
  ok_count integer := 0;
  bad_field text;
begin
  if jsonb_typeof(items) is distinct from 'array' or jsonb_array_length(items) not between 1 and 500 then
    perform app.raise_error('invalid_items', 'items must be an array of 1 to 500 redemptions.', 400);
  end if;
  if not (station ->> 'ok')::boolean then
    perform app.raise_result_error(station);
  end if;

  -- Items are processed in code order (input order within one code), so two
  -- overlapping flushes lock vouchers in the same order and cannot deadlock;
  -- results are returned in input order.
  for item in
    select e.value, e.ordinality - 1 as index
    from jsonb_array_elements(items) with ordinality e
    order by app.normalize_code(e.value ->> 'code'), e.ordinality
  loop
    bad_field := null;
    if jsonb_typeof(item.value) = 'object' then
      bad_field := case
        when coalesce(jsonb_typeof(item.value -> 'receipt_ref'), 'null') not in ('string', 'null') then 'receipt_ref'
        when coalesce(jsonb_typeof(item.value -> 'pump'), 'null') not in ('string', 'null') then 'pump'
        when coalesce(jsonb_typeof(item.value -> 'quantity'), 'null') not in ('number', 'null') then 'quantity'
        when coalesce(jsonb_typeof(item.value -> 'sale_amount_minor'), 'null') not in ('number', 'null')
          or (jsonb_typeof(item.value -> 'sale_amount_minor') = 'number'
              and (item.value ->> 'sale_amount_minor') !~ '^[0-9]{1,13}$') then 'sale_amount_minor'
        when jsonb_typeof(item.value -> 'quantity') = 'number'
          and (item.value ->> 'quantity') !~ '^[0-9]{1,9}(\.[0-9]+)?$' then 'quantity'
      end;
    end if;
    if jsonb_typeof(item.value) <> 'object' or jsonb_typeof(item.value -> 'code') <> 'string' then
      result := app.error_result('invalid_item', 'Each item needs a string "code".', 400);
    elsif item.value ? 'client_redeemed_at'
      and jsonb_typeof(item.value -> 'client_redeemed_at') <> 'null'
      and app.try_timestamptz(item.value ->> 'client_redeemed_at') is null then
      result := app.error_result('invalid_item',
        format('client_redeemed_at "%s" is not a timestamp.', item.value ->> 'client_redeemed_at'), 400);
    elsif bad_field is not null then
      result := app.error_result('invalid_redemption_details',
        format('%s has the wrong type or is out of bounds.', bad_field), 400,
        jsonb_build_object('field', bad_field));
    else
      result := app.redeem_one(actor, (station ->> 'station_id')::uuid, item.value ->> 'code',
                               item.value ->> 'idempotency_key',
                               app.try_timestamptz(item.value ->> 'client_redeemed_at'),
                               item.value ->> 'receipt_ref', item.value ->> 'pump',
                               (item.value ->> 'quantity')::numeric,
                               (item.value ->> 'sale_amount_minor')::bigint);
    end if;
    if (result ->> 'ok')::boolean then
      ok_count := ok_count + 1;
    end if;
    results := results || jsonb_build_array(jsonb_build_object('index', item.index) || result);
  end loop;

  return jsonb_build_object(
    'results', (select jsonb_agg(r order by (r ->> 'index')::integer) from jsonb_array_elements(results) r),
    'redeemed', ok_count,
    'failed', jsonb_array_length(items) - ok_count);
end;
$$;

revoke execute on function api.redeem_vouchers from public;
grant execute on function api.redeem_vouchers to authenticated, service_role;

-- Preview: the campaign's status -------------------------------------------------------------
-- app.voucher_view of the campaigns-and-vouchers migration plus campaign_status,
-- so staff see why a cancelled campaign's issued voucher is refused.
create or replace function app.voucher_view(v app.vouchers) returns jsonb
language sql stable
set search_path = ''
as $$
  select jsonb_build_object(
    'code', app.format_code(v.code),
    'status', case when v.status = 'issued' and v.expires_at <= now() then 'expired' else v.status end,
    'amount_minor', v.amount_minor,
    'currency', v.currency,
    'campaign_id', v.campaign_id,
    'campaign_name', c.name,
    'campaign_status', c.status,
    'expires_at', v.expires_at,
    'redeemable_at', case when cardinality(c.station_ids) = 0 then to_jsonb('all'::text)
      else (select coalesce(jsonb_agg(jsonb_build_object('id', s.id, 'code', s.code, 'name', s.name)
                                      order by s.code), '[]'::jsonb)
            from app.stations s where s.id = any (c.station_ids)) end,
    'redeemed_at', v.redeemed_at,
    'redeemed_station', (select jsonb_build_object('id', s.id, 'code', s.code, 'name', s.name)
                         from app.stations s where s.id = v.redeemed_station_id),
    'voided_at', v.voided_at
  )
  from app.campaigns c
  where c.id = v.campaign_id
$$;

-- api.preview_voucher of the campaigns-and-vouchers migration; redeemable_here
-- is now also false for a cancelled campaign.
create or replace function api.preview_voucher(code text) returns jsonb
language plpgsql stable
security definer
set search_path = ''
as $$
declare
  actor app.actor := app.authorize(array['admin', 'station_operator', 'service']);
  canonical text := app.parse_code(code);
  voucher app.vouchers;
  campaign_stations uuid[];
  view jsonb;
begin
  select * into voucher from app.vouchers v where v.code = canonical;
  if not found then
    perform app.raise_error('voucher_not_found',
      format('Voucher "%s" does not exist.', app.format_code(canonical)), 404);
  end if;
  view := app.voucher_view(voucher);
  if actor.role = 'station_operator' then
    select c.station_ids into campaign_stations from app.campaigns c where c.id = voucher.campaign_id;
    view := view || jsonb_build_object('redeemable_here',
      view ->> 'status' = 'issued'
      and view ->> 'campaign_status' <> 'cancelled'
      and (cardinality(campaign_stations) = 0 or actor.station_id = any (campaign_stations)));
  end if;
  return view;
end;
$$;

revoke execute on function api.preview_voucher from public;
grant execute on function api.preview_voucher to authenticated, service_role;

-- Undo ------------------------------------------------------------------------------------------

-- A redemption as undo_redemption returns it.
create function app.redemption_view(r app.redemptions) returns jsonb
language sql stable
set search_path = ''
as $$
  select jsonb_build_object(
    'redemption_id', r.id,
    'code', app.format_code(v.code),
    'voucher_status', case when v.status = 'issued' and v.expires_at <= now() then 'expired' else v.status end,
    'amount_minor', r.amount_minor,
    'currency', r.currency,
    'station_id', r.station_id,
    'redeemed_at', r.redeemed_at,
    'redeemed_by', r.redeemed_by,
    'reversed_at', r.reversed_at,
    'reversed_by', r.reversed_by,
    'reversal_reason', r.reversal_reason)
  from app.vouchers v
  where v.id = r.voucher_id
$$;

-- Undoes one redemption, named by its id or by its voucher's code (then the
-- voucher's active redemption). Idempotent: the same key and arguments replay
-- the stored answer. See the header for who may, and for the races.
create function api.undo_redemption(
  reason text,
  idempotency_key text,
  redemption_id bigint default null,
  code text default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  actor app.actor := app.authorize(array['admin', 'station_operator', 'service']);
  canonical text;
  stored jsonb;
  target app.redemptions;
  voucher app.vouchers;
  window_seconds integer;
  reversed_id bigint;
  restored boolean;
begin
  if (undo_redemption.redemption_id is null) = (undo_redemption.code is null) then
    perform app.raise_error('invalid_undo_target', 'Give either redemption_id or code (not both).', 400);
  end if;
  if reason is null or length(trim(reason)) not between 1 and 500 then
    perform app.raise_error('invalid_reason', 'An undo reason of 1 to 500 characters is required.', 400);
  end if;
  if undo_redemption.code is not null then
    canonical := app.parse_code(undo_redemption.code);
  end if;
  stored := app.idempotency_claim('undo_redemption', idempotency_key, jsonb_build_object(
    'redemption_id', undo_redemption.redemption_id, 'code', canonical, 'reason', trim(reason),
    'actor', actor.user_id));
  if stored is not null then
    return stored;
  end if;

  if undo_redemption.redemption_id is not null then
    select * into target from app.redemptions r where r.id = undo_redemption.redemption_id;
    if not found then
      perform app.raise_error('redemption_not_found',
        format('Redemption %s does not exist.', undo_redemption.redemption_id), 404);
    end if;
  else
    select * into voucher from app.vouchers v where v.code = canonical;
    if not found then
      perform app.raise_error('voucher_not_found',
        format('Voucher "%s" does not exist.', app.format_code(canonical)), 404);
    end if;
    select * into target from app.redemptions r where r.voucher_id = voucher.id and r.reversed_at is null;
    if not found then
      perform app.raise_error('voucher_not_redeemed',
        format('Voucher "%s" is %s; there is no redemption to undo.', app.format_code(canonical),
               app.voucher_view(voucher) ->> 'status'), 409,
        jsonb_build_object('status', app.voucher_view(voucher) ->> 'status'));
    end if;
  end if;

  if actor.role = 'station_operator' then
    if target.station_id <> actor.station_id then
      perform app.raise_error('station_not_allowed',
        'A station operator can only undo redemptions of their own station.', 403);
    end if;
    if not exists (select from app.stations s where s.id = actor.station_id and s.active) then
      perform app.raise_error('station_not_found',
        format('Station "%s" does not exist or is inactive.', actor.station_id), 404);
    end if;
    select s.undo_window_seconds into window_seconds from app.settings s;
    if now() > target.redeemed_at + make_interval(secs => window_seconds) then
      perform app.raise_error('undo_window_expired',
        format('Redemption %s is older than the %s-second undo window for stations; ask an admin.',
               target.id, window_seconds), 403,
        jsonb_build_object('redeemed_at', target.redeemed_at, 'undo_window_seconds', window_seconds,
                           'deadline', target.redeemed_at + make_interval(secs => window_seconds)));
    end if;
  end if;

  -- The redemption row, then the voucher row, in one statement (see the header).
  with reversal as (
    update app.redemptions r
    set reversed_at = now(), reversed_by = actor.user_id, reversal_reason = trim(reason)
    where r.id = target.id and r.reversed_at is null
    returning r.id, r.voucher_id
  ), restoring as (
    update app.vouchers v
    set status = case when v.expires_at <= now() then 'expired' else 'issued' end,
        redeemed_at = null, redeemed_station_id = null, redeemed_by = null
    from reversal
    where v.id = reversal.voucher_id and v.status = 'redeemed'
    returning v.id
  )
  select (select id from reversal), exists (select from restoring) into reversed_id, restored;

  if reversed_id is null then
    select * into target from app.redemptions r where r.id = target.id;
    perform app.raise_error('redemption_already_reversed',
      format('Redemption %s was already undone at %s.', target.id, target.reversed_at), 409,
      jsonb_build_object('reversed_at', target.reversed_at, 'reversed_by', target.reversed_by));
  end if;
  if not restored then
    -- An active redemption always has a redeemed voucher; refuse rather than
    -- leave them disagreeing.
    raise exception 'Redemption % is active but its voucher is not redeemed', target.id;
  end if;

  select * into target from app.redemptions r where r.id = reversed_id;
  return app.idempotency_save('undo_redemption', idempotency_key, app.redemption_view(target));
end;
$$;

revoke execute on function api.undo_redemption from public;
grant execute on function api.undo_redemption to authenticated, service_role;

comment on function api.undo_redemption is
  'Reverses a redemption (by id or code): admin any time, the redeeming station''s operator within app.settings.undo_window_seconds; the voucher returns to issued (or expired).';
