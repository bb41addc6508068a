-- The campaign lifecycle: draft → scheduled → dispatching → completed, plus
-- paused and cancelled (app.campaign_transitions), the pg_cron jobs that move
-- campaigns along and feed the outbox in bounded chunks, and the admin views
-- (campaign_stats, queue_health).

-- Enqueue -------------------------------------------------------------------------------------------
-- Turns the next `max_targets` targets of a dispatching campaign (in id order,
-- from its cursor) into queued messages: one voucher per target through
-- app.issue_batch (the issuance code path), template parameters rendered with the
-- voucher code. Opted-out targets get a `cancelled` message and no voucher.
-- Vouchers are issued here, at enqueue, rather than all at schedule time: the work
-- is bounded per call whatever the audience size, a voucher exists only for a
-- target about to be messaged (a cancelled campaign leaves none behind for targets
-- it never reached), and opted-out targets cost nothing. The campaign row lock
-- serialises enqueuers of one campaign; the primary key (the target's id) makes a repeat
-- impossible anyway. `due_at` (default now) is when the messages become claimable.
create function app.enqueue_campaign_chunk(
  campaign_id uuid,
  max_targets integer default 5000,
  due_at timestamptz default null
) returns integer
language plpgsql
set search_path = ''
as $$
declare
  campaign app.campaigns;
  ids bigint[];
  msisdns text[];
  attrs jsonb[];
  opted boolean[];
  need integer;
  new_batch uuid;
  kinds text[];
  vals text[];
begin
  select * into campaign from app.campaigns c where c.id = enqueue_campaign_chunk.campaign_id for update;
  if not found or campaign.status <> 'dispatching' then
    return 0;
  end if;

  select array_agg(t.id order by t.id), array_agg(t.msisdn order by t.id),
         array_agg(t.attributes order by t.id), array_agg(t.opted_out order by t.id),
         count(*) filter (where not t.opted_out)
    into ids, msisdns, attrs, opted, need
  from (
    select t.id, t.msisdn, t.attributes,
           exists (select from app.opt_outs o where o.msisdn = t.msisdn) as opted_out
    from app.campaign_targets t
    where t.campaign_id = campaign.id and t.id > campaign.enqueue_cursor
    order by t.id
    limit max_targets
  ) t;
  if ids is null then
    return 0;
  end if;

  if need > 0 then
    new_batch := (app.issue_batch(campaign.id, need, null, campaign.scheduled_by) ->> 'batch_id')::uuid;
  end if;

  -- Render the campaign's parameters once for the chunk; per message only the
  -- voucher code and target attributes are filled in.
  select array_agg(x.kind order by x.i), array_agg(x.value order by x.i)
    into kinds, vals
  from (
    select e.i,
           case when jsonb_typeof(e.p) = 'string' and e.p #>> '{}' = 'voucher_code' then 'voucher_code'
                when jsonb_typeof(e.p) = 'object' and e.p ? 'attribute' then 'attribute'
                else 'text' end as kind,
           case when jsonb_typeof(e.p) = 'object' and e.p ? 'attribute' then e.p ->> 'attribute'
                else (app.render_body_parameters(jsonb_build_array(e.p), null, campaign.amount_minor,
                        campaign.currency, campaign.expires_at, campaign.name, '{}'))[1] end as value
    from jsonb_array_elements(campaign.template_params) with ordinality as e(p, i)
  ) x;

  insert into app.messages (campaign_id, id, channel_id, voucher_id, to_msisdn, template_name,
                            template_language, body_parameters, next_attempt_at, status, cancelled_at,
                            last_error_code, last_error_message)
  select campaign.id, t.id, campaign.channel_id, v.id, t.msisdn, campaign.template_name,
         campaign.template_language,
         case when t.opted_out or kinds is null then '{}'::text[]
              else array(select case k.kind when 'voucher_code' then v.display_code
                                            when 'attribute' then coalesce(t.attributes ->> k.value, '')
                                            else k.value end
                         from unnest(kinds, vals) with ordinality as k(kind, value, i)
                         order by k.i) end,
         coalesce(due_at, now()),
         case when t.opted_out then 'cancelled' else 'queued' end,
         case when t.opted_out then now() end,
         case when t.opted_out then 'opted_out' end,
         case when t.opted_out then 'The recipient opted out; the message was not sent.' end
  from (
    select u.*, row_number() over (partition by u.opted_out order by u.id) as rn
    from unnest(ids, msisdns, attrs, opted) as u(id, msisdn, attributes, opted_out)
  ) t
  left join (
    select vo.id, app.format_code(vo.code) as display_code, row_number() over (order by vo.id) as rn
    from app.vouchers vo
    where vo.batch_id = new_batch
  ) v on not t.opted_out and v.rn = t.rn
  on conflict (id) do nothing;

  update app.campaigns c
  set enqueue_cursor = ids[array_upper(ids, 1)], dispatch_error = null, updated_at = now()
  where c.id = campaign.id;
  return array_length(ids, 1);
end;
$$;

comment on function app.enqueue_campaign_chunk is
  'Enqueues the next max_targets targets of a dispatching campaign: issues their vouchers, renders parameters.';

-- scheduled → dispatching for one campaign, and its first chunk.
create function app.start_campaign(campaign_id uuid, chunk integer default 5000) returns integer
language plpgsql
set search_path = ''
as $$
begin
  update app.campaigns c
  set status = 'dispatching', dispatch_started_at = coalesce(c.dispatch_started_at, now()), updated_at = now()
  where c.id = start_campaign.campaign_id and c.status = 'scheduled';
  if not found then
    return 0;
  end if;
  return app.enqueue_campaign_chunk(campaign_id, chunk);
end;
$$;

-- pg_cron job (every minute): promotes due scheduled campaigns, then enqueues the
-- next chunk of every dispatching campaign that has targets left and fewer than
-- `chunk` messages waiting in the queue (so vouchers are issued shortly before
-- their message goes out, and the queue stays small). 5,000 per campaign per
-- minute is above WhatsApp's default 80 msgs/s per number. One campaign's error
-- (e.g. its validity ended) is recorded in campaigns.dispatch_error and does not
-- stop the others.
create function app.promote_due_campaigns(chunk integer default 5000, max_campaigns integer default 100)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  promoted integer := 0;
  enqueued integer := 0;
  failed integer := 0;
  c record;
begin
  with due as (
    select d.id from app.campaigns d
    where d.status = 'scheduled' and d.scheduled_for <= now()
    order by d.scheduled_for
    limit max_campaigns
    for update skip locked
  )
  update app.campaigns u
  set status = 'dispatching', dispatch_started_at = coalesce(u.dispatch_started_at, now()), updated_at = now()
  from due where u.id = due.id;
  get diagnostics promoted = row_count;

  for c in
    select d.id from app.campaigns d
    where d.status = 'dispatching'
      and exists (select from app.campaign_targets t where t.campaign_id = d.id and t.id > d.enqueue_cursor)
      and (select count(*) from (select from app.messages m
                                 where m.campaign_id = d.id and m.status = 'queued' limit chunk) q) < chunk
    order by d.dispatch_started_at, d.id
    limit max_campaigns
  loop
    begin
      enqueued := enqueued + app.enqueue_campaign_chunk(c.id, chunk);
    exception when others then
      failed := failed + 1;
      update app.campaigns u set dispatch_error = left(sqlerrm, 1000), updated_at = now() where u.id = c.id;
    end;
  end loop;
  return jsonb_build_object('promoted', promoted, 'enqueued', enqueued, 'failed', failed);
end;
$$;

comment on function app.promote_due_campaigns is
  'pg_cron: scheduled → dispatching when due; enqueue the next chunk (default 5,000) of each dispatching campaign.';

-- pg_cron job (every minute): dispatching → completed when every target has a
-- message and none is queued, held or leased. It also settles stragglers a race
-- can leave behind (a retry report that read the campaign status just before a
-- pause or cancel committed): queued messages of paused campaigns are held,
-- those of cancelled campaigns cancelled.
create function app.complete_campaigns() returns integer
language plpgsql
set search_path = ''
as $$
declare
  completed integer;
begin
  update app.messages m
  set status = 'held'
  from app.campaigns c
  where c.status = 'paused' and m.campaign_id = c.id and m.status = 'queued';
  perform app.cancel_messages(array(
    select m.id from app.campaigns c join app.messages m on m.campaign_id = c.id
    where c.status = 'cancelled' and m.status = 'queued'), 'campaign_cancelled');

  update app.campaigns c
  set status = 'completed', completed_at = now(), updated_at = now()
  where c.status = 'dispatching'
    and not exists (select from app.campaign_targets t where t.campaign_id = c.id and t.id > c.enqueue_cursor)
    and not exists (select from app.messages m
                    where m.campaign_id = c.id and m.status in ('queued', 'held', 'leased'));
  get diagnostics completed = row_count;
  return completed;
end;
$$;

comment on function app.complete_campaigns is
  'pg_cron: dispatching → completed when all targets are enqueued and no message is queued, held or leased.';

-- Lifecycle ------------------------------------------------------------------------------------------
-- The one place a campaign changes status on request: locks the row, checks
-- app.campaign_transitions (invalid_transition 409 with {from, to}), moves the
-- campaign's pending messages along, and returns the campaign.
create function app.transition_campaign(campaign_id uuid, to_status text) returns app.campaigns
language plpgsql
set search_path = ''
as $$
declare
  campaign app.campaigns;
begin
  select * into campaign from app.campaigns c where c.id = transition_campaign.campaign_id for update;
  if not found then
    perform app.raise_error('campaign_not_found', format('Campaign "%s" does not exist.', campaign_id), 404);
  end if;
  if not exists (select from app.campaign_transitions t
                 where t.from_status = campaign.status and t.to_status = transition_campaign.to_status) then
    perform app.raise_error('invalid_transition',
      format('Campaign "%s" is %s; it cannot become %s.', campaign.id, campaign.status, to_status), 409,
      jsonb_build_object('from', campaign.status, 'to', to_status));
  end if;

  update app.campaigns c
  set status = to_status,
      paused_at = case when to_status = 'paused' then now() else c.paused_at end,
      cancelled_at = case when to_status = 'cancelled' then now() else c.cancelled_at end,
      updated_at = now()
  where c.id = campaign.id
  returning * into campaign;

  if to_status = 'paused' then
    update app.messages m set status = 'held'
    where m.campaign_id = campaign.id and m.status = 'queued';
  elsif to_status = 'dispatching' then
    update app.messages m set status = 'queued'
    where m.campaign_id = campaign.id and m.status = 'held';
  elsif to_status = 'cancelled' then
    perform app.cancel_messages(array(
      select m.id from app.messages m
      where m.campaign_id = campaign.id and m.status in ('queued', 'held')), 'campaign_cancelled');
  end if;
  return campaign;
end;
$$;

-- draft → scheduled. Requires a channel, a template and at least one target
-- (campaign_not_ready 409 with details.reasons), and a validity that has not ended.
-- When start_at is now or past, dispatch starts in this call (status dispatching,
-- first chunk enqueued); otherwise the pg_cron promote job starts it when due.
create function api.schedule_campaign(campaign_id uuid, start_at timestamptz default now()) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  actor app.actor := app.authorize(array['admin', 'service']);
  campaign app.campaigns;
  reasons text[] := '{}'::text[];
  starts timestamptz := greatest(coalesce(start_at, now()), now());
begin
  select * into campaign from app.campaigns c where c.id = schedule_campaign.campaign_id for update;
  if not found then
    perform app.raise_error('campaign_not_found',
      format('Campaign "%s" does not exist.', schedule_campaign.campaign_id), 404);
  end if;
  if campaign.status <> 'draft' then
    perform app.raise_error('invalid_transition',
      format('Campaign "%s" is %s; it cannot become scheduled.', campaign.id, campaign.status), 409,
      jsonb_build_object('from', campaign.status, 'to', 'scheduled'));
  end if;
  if campaign.channel_id is null then
    reasons := reasons || 'no_channel'::text;
  end if;
  if campaign.template_name is null then
    reasons := reasons || 'no_template'::text;
  end if;
  if not exists (select from app.campaign_targets t where t.campaign_id = campaign.id) then
    reasons := reasons || 'no_targets'::text;
  end if;
  if campaign.expires_at is not null and campaign.expires_at <= starts then
    reasons := reasons || 'expired'::text;
  end if;
  if cardinality(reasons) > 0 then
    perform app.raise_error('campaign_not_ready',
      format('Campaign "%s" cannot be scheduled: %s.', campaign.id, array_to_string(reasons, ', ')), 409,
      jsonb_build_object('reasons', reasons));
  end if;

  update app.campaigns c
  set status = 'scheduled', scheduled_for = starts, scheduled_at = now(), scheduled_by = actor.user_id,
      updated_at = now()
  where c.id = campaign.id;
  if starts <= now() then
    perform app.start_campaign(campaign.id);
  end if;
  select * into campaign from app.campaigns c where c.id = schedule_campaign.campaign_id;
  return app.campaign_view(campaign);
end;
$$;

revoke execute on function api.schedule_campaign from public;
grant execute on function api.schedule_campaign to authenticated, service_role;

-- scheduled | dispatching → paused: queued messages are held; leased ones finish.
create function api.pause_campaign(campaign_id uuid) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform app.authorize(array['admin', 'service']);
  return app.campaign_view(app.transition_campaign(campaign_id, 'paused'));
end;
$$;

revoke execute on function api.pause_campaign from public;
grant execute on function api.pause_campaign to authenticated, service_role;

-- paused → dispatching (held messages queued again) when dispatch had started,
-- else paused → scheduled (started at once when its start time has passed).
create function api.resume_campaign(campaign_id uuid) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  campaign app.campaigns;
begin
  perform app.authorize(array['admin', 'service']);
  select * into campaign from app.campaigns c where c.id = resume_campaign.campaign_id;
  if not found then
    perform app.raise_error('campaign_not_found', format('Campaign "%s" does not exist.', campaign_id), 404);
  end if;
  campaign := app.transition_campaign(campaign_id,
    case when campaign.status = 'paused' and campaign.dispatch_started_at is null then 'scheduled'
         else 'dispatching' end);
  if campaign.status = 'scheduled' and campaign.scheduled_for <= now() then
    perform app.start_campaign(campaign.id);
    select * into campaign from app.campaigns c where c.id = resume_campaign.campaign_id;
  end if;
  return app.campaign_view(campaign);
end;
$$;

revoke execute on function api.resume_campaign from public;
grant execute on function api.resume_campaign to authenticated, service_role;

-- draft | scheduled | dispatching | paused → cancelled: queued and held messages
-- are cancelled and their vouchers voided; leased ones finish (a retry is cancelled).
create function api.cancel_campaign(campaign_id uuid) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform app.authorize(array['admin', 'service']);
  return app.campaign_view(app.transition_campaign(campaign_id, 'cancelled'));
end;
$$;

revoke execute on function api.cancel_campaign from public;
grant execute on function api.cancel_campaign to authenticated, service_role;

create function api.campaign_stats(campaign_id uuid) returns jsonb
language plpgsql stable
security definer
set search_path = ''
as $$
declare
  campaign app.campaigns;
  channel app.channels;
  message_counts jsonb;
begin
  perform app.authorize(array['admin', 'service']);
  select * into campaign from app.campaigns c where c.id = campaign_stats.campaign_id;
  if not found then
    perform app.raise_error('campaign_not_found', format('Campaign "%s" does not exist.', campaign_id), 404);
  end if;
  select * into channel from app.channels ch where ch.id = campaign.channel_id;
  -- A message has its target's id: walk the campaign's targets, then the primary key.
  select jsonb_build_object(
           'queued', count(*) filter (where m.status = 'queued'),
           'held', count(*) filter (where m.status = 'held'),
           'leased', count(*) filter (where m.status = 'leased'),
           'sent', count(*) filter (where m.status = 'sent'),
           'delivered', count(*) filter (where m.status = 'delivered'),
           'read', count(*) filter (where m.status = 'read'),
           'failed', count(*) filter (where m.status = 'failed'),
           'dead', count(*) filter (where m.status = 'dead'),
           'unknown', count(*) filter (where m.status = 'unknown'),
           'cancelled', count(*) filter (where m.status = 'cancelled'),
           'sent_last_minute', count(*) filter (where m.sent_at >= now() - interval '1 minute'))
    into message_counts
  from app.campaign_targets t join app.messages m on m.id = t.id
  where t.campaign_id = campaign.id;

  return jsonb_build_object(
    'campaign_id', campaign.id,
    'name', campaign.name,
    'status', campaign.status,
    'scheduled_for', campaign.scheduled_for,
    'dispatch_started_at', campaign.dispatch_started_at,
    'completed_at', campaign.completed_at,
    'dispatch_error', campaign.dispatch_error,
    'targets', (select count(*) from app.campaign_targets t where t.campaign_id = campaign.id),
    'targets_pending_enqueue', (select count(*) from app.campaign_targets t
                                where t.campaign_id = campaign.id and t.id > campaign.enqueue_cursor),
    'vouchers', (select jsonb_build_object(
                   'issued', count(*) filter (where s = 'issued'),
                   'redeemed', count(*) filter (where s = 'redeemed'),
                   'void', count(*) filter (where s = 'void'),
                   'expired', count(*) filter (where s = 'expired'))
                 from (select case when v.status = 'issued' and v.expires_at <= now() then 'expired'
                                   else v.status end as s
                       from app.vouchers v where v.campaign_id = campaign.id) vs),
    'messages', message_counts - 'sent_last_minute',
    'sent_last_minute', (message_counts ->> 'sent_last_minute')::integer,
    'channel', case when channel.id is null then null else jsonb_build_object(
      'id', channel.id, 'phone_number_id', channel.phone_number_id, 'display_name', channel.display_name,
      'status', channel.status, 'rate_per_minute', channel.rate_per_minute, 'burst', channel.burst,
      'claimed_last_minute', (select coalesce(sum(d.messages), 0) from app.dispatch_claims d
                              where d.channel_id = channel.id and d.claimed_at >= now() - interval '1 minute'))
    end
  );
end;
$$;

revoke execute on function api.campaign_stats from public;
grant execute on function api.campaign_stats to authenticated, service_role;

-- Ops -----------------------------------------------------------------------------------------------------------------
-- Queue health per channel: depth by status (queued, of which due now; held;
-- leased), age of the oldest due message, messages claimed in the last minute vs
-- the rate, tokens now, leases reclaimed in the last hour.
create function api.queue_health() returns jsonb
language plpgsql stable
security definer
set search_path = ''
as $$
begin
  perform app.authorize(array['admin', 'service']);
  return jsonb_build_object(
    'generated_at', now(),
    'channels', (
      select coalesce(jsonb_agg(jsonb_build_object(
        'channel_id', c.id,
        'phone_number_id', c.phone_number_id,
        'display_name', c.display_name,
        'status', c.status,
        'rate_per_minute', c.rate_per_minute,
        'burst', c.burst,
        'tokens', floor(least(c.burst, c.tokens + greatest(0, extract(epoch from clock_timestamp() - c.refilled_at))
                                                 * c.rate_per_minute / 60.0)),
        'queued', q.queued,
        'due', q.due,
        -- Through the channel's campaigns: (campaign_id, status) is indexed, channel_id alone is not.
        'held', (select count(*) from app.messages m
                 where m.campaign_id = any (array(select k.id from app.campaigns k where k.channel_id = c.id))
                   and m.status = 'held'),
        'leased', (select count(*) from app.messages m
                   where m.campaign_id = any (array(select k.id from app.campaigns k where k.channel_id = c.id))
                     and m.status = 'leased'),
        'oldest_due_age_seconds', round(extract(epoch from now() - q.oldest_due)::numeric, 1),
        'claimed_last_minute', (select coalesce(sum(d.messages), 0) from app.dispatch_claims d
                                where d.channel_id = c.id and d.claimed_at >= now() - interval '1 minute'),
        'leases_expired_last_hour', (select coalesce(sum(r.messages), 0) from app.lease_reclaims r
                                     where r.channel_id = c.id and r.reclaimed_at >= now() - interval '1 hour'))
        order by c.display_name, c.id), '[]'::jsonb)
      from app.channels c
      cross join lateral (
        select count(*) as queued,
               count(*) filter (where m.next_attempt_at <= now()) as due,
               min(m.next_attempt_at) filter (where m.next_attempt_at <= now()) as oldest_due
        from app.messages m
        where m.channel_id = c.id and m.status = 'queued'
      ) q
    )
  );
end;
$$;

revoke execute on function api.queue_health from public;
grant execute on function api.queue_health to authenticated, service_role;
