-- Channels: the WhatsApp senders campaigns send from, each with its own rate limit.
--
-- A WhatsApp sender (one Cloud API phone number id). Credentials are not stored:
-- the dispatch function reads them from its environment by phone_number_id.
--
-- Rate limit: a token bucket per channel. `tokens` holds `burst` at most and refills
-- continuously at rate_per_minute / 60 tokens per second; a claim takes one token
-- per message. The state is (tokens, refilled_at) and refills lazily at claim
-- time, so nothing ticks. Over any window of W seconds a channel therefore hands
-- out at most burst + rate_per_minute · W / 60 messages, however many dispatchers
-- claim. Default burst: rate_per_minute / 6 rounded up (10 seconds of traffic,
-- 42 for the default 250/min), so a dispatcher that starts or resumes can send a
-- first small batch at once without exceeding the per-minute rate by more than that.

create function app.default_burst(rate_per_minute integer) returns integer
language sql immutable parallel safe
set search_path = ''
as $$
  select greatest(1, pg_catalog.ceil(rate_per_minute / 6.0)::integer)
$$;

create table app.channels (
  id uuid primary key default gen_random_uuid(),
  phone_number_id text not null unique check (phone_number_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
  display_name text not null check (length(display_name) between 1 and 200),
  rate_per_minute integer not null default 250 check (rate_per_minute > 0),
  burst integer not null check (burst > 0),
  -- WhatsApp's pair rate limit: about one message per 6 s to the same user (131056).
  min_recipient_interval_seconds integer not null default 6
    check (min_recipient_interval_seconds between 0 and 86400),
  status text not null default 'active' check (status in ('active', 'paused')),
  -- Token bucket state: tokens available at refilled_at.
  tokens numeric not null check (tokens >= 0),
  refilled_at timestamptz not null default now(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint channels_tokens_within_burst check (tokens <= burst)
);

comment on table app.channels is
  'WhatsApp senders (Cloud API phone number ids) with a per-channel token bucket: rate_per_minute, burst, tokens, refilled_at.';
comment on column app.channels.tokens is 'Token bucket: tokens available at refilled_at (refilled lazily by claims).';

alter table app.channels enable row level security;

-- API: channels --------------------------------------------------------------------------------

create function api.create_channel(
  phone_number_id text,
  display_name text,
  rate_per_minute integer default 250,
  burst integer default null,
  min_recipient_interval_seconds integer default 6
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  channel app.channels;
  bucket integer := coalesce(burst, app.default_burst(rate_per_minute));
begin
  perform app.authorize(array['admin', 'service']);
  if phone_number_id is null or phone_number_id !~ '^[A-Za-z0-9_.-]{1,64}$' then
    perform app.raise_error('invalid_channel',
      format('phone_number_id must be 1 to 64 letters, digits, "_", "." or "-", got "%s".', phone_number_id),
      400, jsonb_build_object('field', 'phone_number_id'));
  end if;
  if display_name is null or length(trim(display_name)) not between 1 and 200 then
    perform app.raise_error('invalid_channel', 'A display_name of 1 to 200 characters is required.', 400,
      jsonb_build_object('field', 'display_name'));
  end if;
  if rate_per_minute is null or rate_per_minute <= 0 then
    perform app.raise_error('invalid_channel',
      format('rate_per_minute must be a positive integer, got %s.', coalesce(rate_per_minute::text, 'null')),
      400, jsonb_build_object('field', 'rate_per_minute'));
  end if;
  if bucket <= 0 then
    perform app.raise_error('invalid_channel', format('burst must be a positive integer, got %s.', bucket),
      400, jsonb_build_object('field', 'burst'));
  end if;
  if min_recipient_interval_seconds is null or min_recipient_interval_seconds not between 0 and 86400 then
    perform app.raise_error('invalid_channel',
      'min_recipient_interval_seconds must be between 0 and 86400.', 400,
      jsonb_build_object('field', 'min_recipient_interval_seconds'));
  end if;

  insert into app.channels as c (phone_number_id, display_name, rate_per_minute, burst,
                                 min_recipient_interval_seconds, tokens, refilled_at)
  values (create_channel.phone_number_id, trim(create_channel.display_name), create_channel.rate_per_minute,
          bucket, create_channel.min_recipient_interval_seconds, bucket, clock_timestamp())
  on conflict on constraint channels_phone_number_id_key do nothing
  returning * into channel;
  if channel.id is null then
    perform app.raise_error('channel_exists',
      format('A channel for phone number id "%s" already exists.', create_channel.phone_number_id), 409);
  end if;
  return to_jsonb(channel);
end;
$$;

revoke execute on function api.create_channel from public;
grant execute on function api.create_channel to authenticated, service_role;

-- Null arguments leave a field unchanged. A new rate or burst takes effect from
-- now: the bucket is first refilled at the old rate, then capped at the new burst.
create function api.update_channel(
  channel_id uuid,
  display_name text default null,
  rate_per_minute integer default null,
  burst integer default null,
  status text default null,
  min_recipient_interval_seconds integer default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  channel app.channels;
  t timestamptz;
  available numeric;
begin
  perform app.authorize(array['admin', 'service']);
  select * into channel from app.channels c where c.id = update_channel.channel_id for update;
  if not found then
    perform app.raise_error('channel_not_found', format('Channel "%s" does not exist.', channel_id), 404);
  end if;
  if display_name is not null and length(trim(display_name)) not between 1 and 200 then
    perform app.raise_error('invalid_channel', 'display_name must be 1 to 200 characters.', 400,
      jsonb_build_object('field', 'display_name'));
  end if;
  if rate_per_minute is not null and rate_per_minute <= 0 then
    perform app.raise_error('invalid_channel',
      format('rate_per_minute must be a positive integer, got %s.', rate_per_minute), 400,
      jsonb_build_object('field', 'rate_per_minute'));
  end if;
  if burst is not null and burst <= 0 then
    perform app.raise_error('invalid_channel', format('burst must be a positive integer, got %s.', burst),
      400, jsonb_build_object('field', 'burst'));
  end if;
  if status is not null and status not in ('active', 'paused') then
    perform app.raise_error('invalid_channel', format('status must be active or paused, got "%s".', status),
      400, jsonb_build_object('field', 'status'));
  end if;
  if min_recipient_interval_seconds is not null and min_recipient_interval_seconds not between 0 and 86400 then
    perform app.raise_error('invalid_channel', 'min_recipient_interval_seconds must be between 0 and 86400.',
      400, jsonb_build_object('field', 'min_recipient_interval_seconds'));
  end if;

  t := greatest(clock_timestamp(), channel.refilled_at);
  available := least(channel.burst,
    channel.tokens + extract(epoch from t - channel.refilled_at) * channel.rate_per_minute / 60.0);

  update app.channels c set
    display_name = coalesce(trim(update_channel.display_name), c.display_name),
    rate_per_minute = coalesce(update_channel.rate_per_minute, c.rate_per_minute),
    burst = coalesce(update_channel.burst, c.burst),
    status = coalesce(update_channel.status, c.status),
    min_recipient_interval_seconds =
      coalesce(update_channel.min_recipient_interval_seconds, c.min_recipient_interval_seconds),
    tokens = least(available, coalesce(update_channel.burst, c.burst)),
    refilled_at = t,
    updated_at = now()
  where c.id = channel.id
  returning * into channel;
  return to_jsonb(channel);
end;
$$;

revoke execute on function api.update_channel from public;
grant execute on function api.update_channel to authenticated, service_role;

create function api.list_channels() returns jsonb
language plpgsql stable
security definer
set search_path = ''
as $$
begin
  perform app.authorize(array['admin', 'service']);
  return (select coalesce(jsonb_agg(to_jsonb(c) order by c.display_name, c.id), '[]'::jsonb)
          from app.channels c);
end;
$$;

revoke execute on function api.list_channels from public;
grant execute on function api.list_channels to authenticated, service_role;

