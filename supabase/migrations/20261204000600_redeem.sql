-- Station redeem: real-time, exactly-once, replay-safe.
--
-- Exactly-once comes from three layers, each sufficient for its own failure:
--  1. the idempotency ledger: a retried or replayed request (same key) returns the
--     stored result instead of running again, even when the first response was lost;
--  2. one conditional UPDATE … WHERE status = 'issued' does check-and-redeem, so two
--     different requests for one voucher serialise on its row lock and one loses;
--  3. a unique constraint on redemptions(voucher_id) makes a double redemption
--     impossible even for a future code path that forgets 1 and 2.
--
-- A redeem writes as little as it can, because redeems are the hot path: the
-- voucher is updated in place (HOT, see app.vouchers), and the idempotency key is
-- written once, with its response, by the statement that redeems. Clients should
-- make time-ordered keys (client/idempotency_key.ts, UUIDv7): a random key lands
-- on a random leaf of idempotency_keys_pkey, one more full-page image in the WAL
-- per redeem after each checkpoint.

create table app.redemptions (
  id bigint generated always as identity primary key,
  voucher_id bigint not null references app.vouchers (id),
  station_id uuid not null references app.stations (id),
  -- The staff member who redeemed; null when the service role did (ops tooling).
  redeemed_by uuid,
  redeemed_at timestamptz not null default now(),
  -- When the PWA says it took the redemption (offline queue); informational only:
  -- ordering is by arrival at the server.
  client_redeemed_at timestamptz,
  idempotency_key text not null check (length(idempotency_key) between 1 and 200),
  constraint redemptions_voucher_id_key unique (voucher_id)
);

create index redemptions_station_time_idx on app.redemptions (station_id, redeemed_at);

comment on table app.redemptions is
  'Append-only redemption records (who, where, server and client time, idempotency key); at most one per voucher.';

alter table app.redemptions enable row level security;

-- The station a caller redeems at: an operator's own (naming another is refused),
-- or the one an admin / the service role names.
create function app.redeem_station(actor app.actor, station_id uuid) returns jsonb
language plpgsql stable
as $$
declare
  station app.stations;
begin
  if actor.role = 'station_operator' and station_id is not null and station_id <> actor.station_id then
    return app.error_result('station_not_allowed',
      'A station operator can only redeem at their own station.', 403);
  end if;
  if actor.role <> 'station_operator' and station_id is null then
    return app.error_result('station_required', 'An admin must name the station_id to redeem at.', 400);
  end if;
  select * into station from app.stations s where s.id = coalesce(redeem_station.station_id, actor.station_id);
  if not found or not station.active then
    return app.error_result('station_not_found',
      format('Station "%s" does not exist or is inactive.', coalesce(station_id, actor.station_id)), 404);
  end if;
  return jsonb_build_object('ok', true, 'station_id', station.id, 'station_code', station.code);
end;
$$;

-- Redeems one voucher; never raises for business errors, returns {"ok": true, …}
-- or app.error_result(…).
--
-- The key is not claimed before redeeming: the voucher row lock already serialises
-- every request for one voucher (whatever its key), and the unique index on
-- (scope, key) serialises two requests with one key. So it
--   a. looks the key up: a stored response is a replay (same request) or
--      idempotency_key_reused (different request);
--   b. redeems, records the redemption and inserts the key with its response in
--      one statement;
--   c. writes nothing when the voucher cannot be redeemed (refusals are never
--      stored), then says why.
-- Two requests with the same key in flight at once: if they are the same request,
-- the second one's conditional UPDATE waits for the first's voucher row lock and
-- then matches nothing, and it finds the first one's stored response (a replay).
-- If they differ (two vouchers under one key), the second one's key insert waits
-- on the unique index and then conflicts; it raises idempotency_key_reused, which
-- rolls its redemption back. For api.redeem_vouchers that aborts the whole flush —
-- nothing is written, and the retried flush answers the offending item with
-- idempotency_key_reused like any other reuse.
-- The check character is verified only on the refusal path: every stored code
-- carries a valid one, so a code that redeemed cannot have a typo.
create function app.redeem_one(
  actor app.actor,
  station_id uuid,
  code text,
  idempotency_key text,
  client_redeemed_at timestamptz
) returns jsonb
language plpgsql
as $$
declare
  canonical text := app.normalize_code(code);
  request_hash bytea;
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
  -- The request a key stands for (a key reused for another request is refused).
  request_hash := extensions.digest(jsonb_build_object(
    'code', canonical, 'station_id', station_id, 'actor', actor.user_id,
    'client_redeemed_at', client_redeemed_at)::text, 'sha256');

  -- A stored key is a replay or a reuse. Otherwise redeem; if the voucher cannot
  -- be redeemed, look again: a concurrent request with this key may have
  -- redeemed it while we waited for its row lock, and its response is our answer.
  select * into stored from app.idempotency_keys k
  where k.scope = 'redeem_voucher' and k.key = redeem_one.idempotency_key;
  if not found then
    -- Check-and-redeem in one statement: the row lock serialises concurrent
    -- redeems of one voucher; whoever commits first wins, the others match nothing.
    -- The redemption record and the idempotency key (with the response) are
    -- written by the same statement.
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
        and (cardinality(c.station_ids) = 0 or redeem_one.station_id = any (c.station_ids))
      returning v.id, v.code, v.amount_minor, v.currency, v.campaign_id, c.name as campaign_name,
                v.redeemed_at
    ), recorded as (
      insert into app.redemptions (voucher_id, station_id, redeemed_by, client_redeemed_at, idempotency_key)
      select r.id, redeem_one.station_id, actor.user_id, redeem_one.client_redeemed_at, redeem_one.idempotency_key
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
               'client_redeemed_at', redeem_one.client_redeemed_at) as body
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
        -- Another request holding this key committed while we redeemed: see above.
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
    where r.voucher_id = voucher.id;
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

create function api.redeem_voucher(
  code text,
  idempotency_key text,
  station_id uuid default null,
  client_redeemed_at timestamptz default null
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
                           client_redeemed_at);
  if not (result ->> 'ok')::boolean then
    perform app.raise_result_error(result);
  end if;
  return result - 'ok';
end;
$$;

revoke execute on function api.redeem_voucher from public;
grant execute on function api.redeem_voucher to authenticated, service_role;

-- The offline-queue flush. Items run in input order, each independently (a bad
-- item never aborts the rest), each with its own idempotency key, and results
-- come back in input order with the same codes as api.redeem_voucher.
-- Two stations that redeemed one voucher offline: the first flush to reach the
-- server wins; the other gets voucher_already_redeemed with the winner's details.
create function api.redeem_vouchers(items jsonb, station_id uuid default null) returns jsonb
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
    if jsonb_typeof(item.value) <> 'object' or jsonb_typeof(item.value -> 'code') <> 'string' then
      result := app.error_result('invalid_item', 'Each item needs a string "code".', 400);
    elsif item.value ? 'client_redeemed_at'
      and jsonb_typeof(item.value -> 'client_redeemed_at') <> 'null'
      and app.try_timestamptz(item.value ->> 'client_redeemed_at') is null then
      result := app.error_result('invalid_item',
        format('client_redeemed_at "%s" is not a timestamp.', item.value ->> 'client_redeemed_at'), 400);
    else
      result := app.redeem_one(actor, (station ->> 'station_id')::uuid, item.value ->> 'code',
                               item.value ->> 'idempotency_key',
                               app.try_timestamptz(item.value ->> 'client_redeemed_at'));
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
