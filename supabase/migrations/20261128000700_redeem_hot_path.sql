-- The redeem hot path: fewer writes, less WAL, less CPU per redeem.
--
-- perf/bench/redeem.ts measured a redeem at ~0.2 of a one-row UPDATE on this
-- machine, waiting mostly on WAL flushes: 17 kB of WAL per redeem after a
-- checkpoint (full-page images), and ~350 µs of server CPU. Four changes, each
-- measured on its own (figures in the issue note):
--
--   1. Vouchers are updated in place (HOT). No index on app.vouchers names
--      `status` any more, and pages keep 15% free, so a redeem, a void or an
--      expiry writes one heap tuple and no index entries (the non-HOT update
--      inserted into all four indexes; the code index is random, so that was a
--      full-page image per redeem). Expiry is swept by batch instead of through
--      a partial index on issued vouchers.
--   2. The redeem writes its idempotency key once, with the response, in the
--      statement that redeems (claim → save → release-on-refusal was three
--      writes to app.idempotency_keys).
--   3. app.format_code is inlined: as a STRICT SQL function with a CASE body the
--      planner could not inline it, so every call parsed and planned its body
--      (~10% of a redeem's CPU).
--   4. The check character is verified only when a code matches no redeemable
--      voucher (every stored code carries a valid one).
-- Clients should also make time-ordered idempotency keys
-- (functions/_shared/idempotency_key.ts): a random key lands on a random leaf of
-- idempotency_keys_pkey, one more full-page image per redeem after a checkpoint.

-- 1. Vouchers updated in place ------------------------------------------------------

-- A HOT update needs every indexed column — index predicates included — to be
-- unchanged, and room on the row's page. Redeem, void and expiry change only
-- status and their own unindexed columns.
drop index app.vouchers_campaign_issued_idx;     -- list_vouchers(status) pages by vouchers_campaign_id_id_idx
drop index app.vouchers_issued_expires_at_idx;   -- replaced by voucher_batches_expiry_due_idx
-- A voucher changes at most once after issue; 15% room lets that change stay on
-- its page. (Applies to pages written from now on; rewrite older ones with
-- VACUUM FULL or pg_repack if they matter.)
alter table app.vouchers set (fillfactor = 85);

comment on table app.vouchers is
  'One row per voucher; status issued → redeemed | void | expired, updated in place (HOT: no index names status). Rows are never deleted.';

-- Every voucher of a batch shares its expiry (app.issue_batch writes one value to
-- both), so the expiry job finds due vouchers through their batch: the batches
-- past expiry that still hold issued vouchers.
alter table app.voucher_batches add column expiry_swept_at timestamptz;

comment on column app.voucher_batches.expiry_swept_at is
  'When the expiry job found no issued voucher left in this expired batch; null while it may still hold some.';

create index voucher_batches_expiry_due_idx on app.voucher_batches (expires_at)
  where expires_at is not null and expiry_swept_at is null;

-- Issued vouchers past their expiry become `expired`, oldest batch first, at most
-- max_vouchers per run. (Reads already treat such a voucher as expired, and
-- redeem refuses it: this job makes the stored status match.) A voucher locked by
-- a request in flight is skipped, and its batch stays due until a run finds none.
create or replace function app.expire_vouchers(max_vouchers integer default 10000) returns integer
language plpgsql
set search_path = ''
as $$
declare
  batch record;
  expired integer := 0;
  n integer;
begin
  for batch in
    select b.id
    from app.voucher_batches b
    where b.expires_at <= now() and b.expiry_swept_at is null
    order by b.expires_at
    for update skip locked
  loop
    exit when expired >= max_vouchers;
    with due as (
      select v.id
      from app.vouchers v
      where v.batch_id = batch.id and v.status = 'issued' and v.expires_at <= now()
      order by v.id
      limit max_vouchers - expired
      for update skip locked
    )
    update app.vouchers v set status = 'expired'
    from due
    where v.id = due.id;
    get diagnostics n = row_count;
    expired := expired + n;
    if not exists (select from app.vouchers v where v.batch_id = batch.id and v.status = 'issued') then
      update app.voucher_batches b set expiry_swept_at = now() where b.id = batch.id;
    end if;
  end loop;
  return expired;
end;
$$;

comment on function app.expire_vouchers is
  'pg_cron: marks up to max_vouchers issued vouchers of expired batches as expired (voucher_batches_expiry_due_idx, then vouchers_batch_id_id_idx).';

-- 3. format_code inlined ------------------------------------------------------------

-- Same body; without STRICT the planner inlines it (a STRICT function is inlined
-- only when its body is strict, and CASE is not). Null in, null out, as before.
alter function app.format_code(text) called on null input;

-- 2 and 4. The redeem --------------------------------------------------------------
--
-- A redeem does not need to claim its key before redeeming: the voucher row lock
-- already serialises every request for one voucher (whatever its key), and the
-- unique index on (scope, key) serialises two requests with one key. So it
--   a. looks the key up: a stored response is a replay (same request) or
--      idempotency_key_reused (different request), as before;
--   b. redeems, records the redemption and inserts the key with its response in
--      one statement;
--   c. writes nothing when the voucher cannot be redeemed (refusals are never
--      stored, exactly as before).
-- Two requests with the same key in flight at once: if they are the same request,
-- the second one's conditional UPDATE waits for the first's voucher row lock and
-- then matches nothing, and it finds the first one's stored response (a replay).
-- If they differ (two vouchers under one key), the second one's key insert waits
-- on the unique index and then conflicts; it raises idempotency_key_reused, which
-- rolls its redemption back. For api.redeem_vouchers that aborts the whole flush —
-- nothing is written, and the retried flush answers the offending item with
-- idempotency_key_reused like any other reuse.

create or replace function app.redeem_one(
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
  if canonical is null or canonical !~ '^[0-9A-HJKMNP-TV-Z]{15}$' then
    return app.error_result('invalid_code_format',
      format('"%s" is not a voucher code (15 characters of 0-9 A-Z without I, L, O, U).', code), 400);
  end if;
  if idempotency_key is null or length(idempotency_key) not between 1 and 200 then
    return app.error_result('invalid_idempotency_key',
      'An idempotency_key of 1 to 200 characters is required.', 400);
  end if;
  -- The same request document as before this migration, so keys stored then replay now.
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
        -- Another request holding this key committed while we redeemed: see the header.
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
