-- Support: "I didn't get my code". Find a customer's vouchers and message
-- statuses by phone number (api.find_customer), and resend a voucher's message
-- (api.resend_message): the same voucher, in a new message.
--
-- Design: a resend is a new target row and a new message row *in the original
-- campaign*, sent by the existing claim path unchanged. The alternative — a
-- per-channel "support" campaign that always dispatches and holds resends —
-- was rejected: it needs a fake value and currency, guards so nobody issues
-- vouchers for it, pauses, cancels or completes it, and then the original
-- campaign's pause and cancel would not reach its own resends, nor would its
-- stats and funnel count them. In the original campaign all of that holds by
-- construction: a paused campaign holds its resends, a cancelled one cancels
-- them, campaign_stats and the funnel count them.
--
-- What that takes, and why each is safe:
--  * Targets: `resend_no` (0 for the campaign's own target, 1, 2, … for its
--    resends) and `resend_of` (the original target). The unique constraint
--    campaign_targets_campaign_msisdn_key becomes (campaign_id, msisdn,
--    resend_no), keeping its name, so a number is still a target of a campaign
--    at most once (resend_no 0) and add_campaign_targets' ON CONFLICT ON
--    CONSTRAINT is unchanged.
--  * The enqueue job walks targets past enqueue_cursor in id order, and a
--    resend target's id is past it while the campaign still has targets to
--    enqueue: app.enqueue_campaign_chunk now skips resend targets (they already
--    have their message) but moves the cursor over them, so "targets with id <=
--    enqueue_cursor have a message" stays true. When nothing else is waiting to
--    be enqueued, the resend moves the cursor itself, so promote and complete
--    never see it as pending.
--  * The claim takes messages of dispatching campaigns only: a resend of a
--    completed campaign's message moves the campaign back to dispatching (audited
--    as a campaign change); app.complete_campaigns completes it again once the
--    resend is final. So that the completion job cannot complete a campaign
--    whose resend was committed after the job took its snapshot, the trigger
--    campaigns_complete_guard re-checks for pending work with a fresh snapshot.
--  * The voucher is not issued again: the resend message copies the original
--    message's template and rendered parameters (the same code) and has no
--    voucher_id of its own. The voucher's fate follows its original message (the
--    outbox migration's header): a resend that is stopped (opt-out, campaign
--    cancelled) is cancelled without voiding the voucher, which the customer may
--    already have; tests/db/17 keeps holding.
--  * Opt-outs and the channel's rate hold: a resend is refused for an opted-out
--    number, the claim checks opt-outs again, and the token bucket and the
--    per-recipient spacing guard apply to it like to any message. The claim
--    skips the spacing probe for candidates of the one campaign a channel is
--    sending (app.channel_spacing), which assumed a campaign messages a number
--    once; a resend therefore is refused while any message of the campaign to
--    that number is pending, or was attempted less than the channel's
--    min_recipient_interval_seconds ago — after that, no other message of the
--    campaign to that number can be attempted before it.
--  * Limits: at most app.settings.max_resends_per_message resends of a message
--    (default 3), at least resend_cooldown_seconds (default 300) apart.
--  * Idempotent: a durable key (scope resend_message), like every write.

-- Targets ------------------------------------------------------------------------------------

alter table app.campaign_targets
  add column resend_of bigint references app.campaign_targets (id),
  add column resend_no smallint not null default 0 check (resend_no between 0 and 20),
  add constraint campaign_targets_resend_fields check ((resend_no = 0) = (resend_of is null));

alter table app.campaign_targets drop constraint campaign_targets_campaign_msisdn_key;
alter table app.campaign_targets
  add constraint campaign_targets_campaign_msisdn_key unique (campaign_id, msisdn, resend_no);

comment on column app.campaign_targets.resend_no is
  '0 for the campaign''s own target; 1, 2, … for support resends of it (api.resend_message).';
comment on column app.campaign_targets.resend_of is 'The original target a resend target repeats; null for an original.';
comment on constraint campaign_targets_campaign_msisdn_key on app.campaign_targets is
  'A number is a target of a campaign once (resend_no 0); its resends are numbered.';

-- Enqueue ------------------------------------------------------------------------------------
-- app.enqueue_campaign_chunk of the campaign-lifecycle migration. The one change:
-- resend targets in the chunk get no voucher and no message (they have theirs),
-- and the cursor moves past the whole chunk, resends included.
create or replace function app.enqueue_campaign_chunk(
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
  last_id bigint;
  new_batch uuid;
  kinds text[];
  vals text[];
begin
  select * into campaign from app.campaigns c where c.id = enqueue_campaign_chunk.campaign_id for update;
  if not found or campaign.status <> 'dispatching' then
    return 0;
  end if;

  select array_agg(t.id order by t.id) filter (where not t.resend),
         array_agg(t.msisdn order by t.id) filter (where not t.resend),
         array_agg(t.attributes order by t.id) filter (where not t.resend),
         array_agg(t.opted_out order by t.id) filter (where not t.resend),
         count(*) filter (where not t.opted_out and not t.resend),
         max(t.id)
    into ids, msisdns, attrs, opted, need, last_id
  from (
    select t.id, t.msisdn, t.attributes, t.resend_no > 0 as resend,
           t.resend_no = 0 and exists (select from app.opt_outs o where o.msisdn = t.msisdn) as opted_out
    from app.campaign_targets t
    where t.campaign_id = campaign.id and t.id > campaign.enqueue_cursor
    order by t.id
    limit max_targets
  ) t;
  if last_id is null then
    return 0;
  end if;

  if ids is not null then
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
  end if;

  update app.campaigns c
  set enqueue_cursor = last_id, dispatch_error = null, updated_at = now()
  where c.id = campaign.id;
  return coalesce(array_length(ids, 1), 0);
end;
$$;

comment on function app.enqueue_campaign_chunk is
  'Enqueues the next max_targets targets of a dispatching campaign: issues their vouchers, renders parameters; skips resend targets (they have their message).';

-- Completion guard -----------------------------------------------------------------------------
-- app.complete_campaigns decides "nothing pending" in its statement's snapshot.
-- A resend committed while that statement waited for the campaign's row lock is
-- not in it, and the row itself (still dispatching) does not show it. This
-- BEFORE trigger looks again with a fresh snapshot (a volatile function's query
-- takes one) and keeps the campaign dispatching when a message is still pending
-- or a target is not enqueued; the job completes it on a later run. It fires
-- only on the move to completed, once per campaign.
create function app.keep_campaign_with_pending_work() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if exists (select from app.messages m
             where m.campaign_id = new.id and m.status in ('queued', 'held', 'leased'))
     or exists (select from app.campaign_targets t where t.campaign_id = new.id and t.id > new.enqueue_cursor) then
    return null;
  end if;
  return new;
end;
$$;

create trigger campaigns_complete_guard
  before update of status on app.campaigns
  for each row
  when (new.status = 'completed' and old.status is distinct from 'completed')
  execute function app.keep_campaign_with_pending_work();

comment on trigger campaigns_complete_guard on app.campaigns is
  'A campaign completes only if, with a fresh snapshot, no message is pending and every target is enqueued.';

-- Resend ---------------------------------------------------------------------------------------

-- Resends message `message_id` (an original or an earlier resend of it): a new
-- message in the same campaign, to the same number, with the original's
-- template and parameters. See the header for the rules.
create function api.resend_message(message_id bigint, idempotency_key text) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  actor app.actor := app.authorize(array['admin', 'service']);
  stored jsonb;
  named app.campaign_targets;
  original app.campaign_targets;
  root app.messages;
  campaign app.campaigns;
  voucher_status text;
  settings app.settings;
  spacing integer;
  pending bigint;
  resends integer;
  last_created timestamptz;
  last_attempt timestamptz;
  wait_until timestamptz;
  new_id bigint;
  new_status text;
  result jsonb;
begin
  stored := app.idempotency_claim('resend_message', idempotency_key,
    jsonb_build_object('message_id', message_id, 'actor', actor.user_id));
  if stored is not null then
    return stored;
  end if;

  select t.* into named from app.campaign_targets t
  where t.id = resend_message.message_id and exists (select from app.messages m where m.id = t.id);
  if not found then
    perform app.raise_error('message_not_found', format('Message %s does not exist.', message_id), 404);
  end if;
  select * into original from app.campaign_targets t where t.id = coalesce(named.resend_of, named.id);
  select * into root from app.messages m where m.id = original.id;

  -- Serialises with the enqueue job, lifecycle moves and other resends of this campaign.
  select * into campaign from app.campaigns c where c.id = original.campaign_id for update;
  if campaign.status = 'cancelled' then
    perform app.raise_error('campaign_cancelled',
      format('Campaign "%s" was cancelled; its vouchers cannot be redeemed.', campaign.name), 410,
      jsonb_build_object('campaign_id', campaign.id, 'cancelled_at', campaign.cancelled_at));
  end if;
  if root.voucher_id is null then
    perform app.raise_error('message_not_resendable',
      format('Message %s carries no voucher (its recipient had opted out when it was enqueued).', root.id),
      409, jsonb_build_object('message_id', root.id, 'status', root.status));
  end if;
  select case when v.status = 'issued' and v.expires_at <= now() then 'expired' else v.status end
    into voucher_status
  from app.vouchers v where v.id = root.voucher_id;
  if voucher_status <> 'issued' then
    perform app.raise_error('voucher_not_issued',
      format('The voucher of message %s is %s; only an issued voucher is resent.', root.id, voucher_status), 409,
      jsonb_build_object('status', voucher_status));
  end if;
  if exists (select from app.opt_outs o where o.msisdn = original.msisdn) then
    perform app.raise_error('recipient_opted_out',
      format('%s has opted out of messages; record a new consent to opt them back in.', original.msisdn), 409);
  end if;

  -- Every message of this campaign to this number: the original and its resends.
  select min(m.id) filter (where m.status in ('queued', 'held', 'leased')),
         count(*) filter (where t.resend_no > 0),
         max(m.created_at), max(m.last_attempt_at)
    into pending, resends, last_created, last_attempt
  from app.campaign_targets t join app.messages m on m.id = t.id
  where t.campaign_id = campaign.id and t.msisdn = original.msisdn;
  if pending is not null then
    perform app.raise_error('message_pending',
      format('Message %s to %s is still being sent; wait for its outcome.', pending, original.msisdn), 409,
      jsonb_build_object('message_id', pending));
  end if;
  select * into settings from app.settings;
  if resends >= settings.max_resends_per_message then
    perform app.raise_error('resend_limit_reached',
      format('Message %s was already resent %s times (the limit).', root.id, resends), 409,
      jsonb_build_object('max', settings.max_resends_per_message));
  end if;
  select ch.min_recipient_interval_seconds into spacing from app.channels ch where ch.id = root.channel_id;
  wait_until := greatest(last_created + make_interval(secs => settings.resend_cooldown_seconds),
                         last_attempt + make_interval(secs => spacing));
  if wait_until > now() then
    perform app.raise_error('resend_too_soon',
      format('Message %s can be resent from %s.', root.id, wait_until), 429,
      jsonb_build_object('retry_after_seconds', ceil(extract(epoch from wait_until - now()))::integer));
  end if;

  insert into app.campaign_targets (campaign_id, msisdn, attributes, resend_of, resend_no)
  values (campaign.id, original.msisdn, original.attributes, original.id, resends + 1)
  returning id into new_id;
  new_status := case when campaign.status = 'paused' then 'held' else 'queued' end;
  insert into app.messages (id, campaign_id, channel_id, voucher_id, to_msisdn, template_name, template_language,
                            body_parameters, status)
  values (new_id, campaign.id, root.channel_id, null, root.to_msisdn, root.template_name, root.template_language,
          root.body_parameters, new_status);

  -- Claimable: a completed campaign dispatches again until the resend is final;
  -- the cursor covers the resend unless other targets still wait before it.
  update app.campaigns c
  set status = case when c.status = 'completed' then 'dispatching' else c.status end,
      enqueue_cursor = case
        when not exists (select from app.campaign_targets t
                         where t.campaign_id = c.id and t.id > c.enqueue_cursor and t.id < new_id)
        then new_id else c.enqueue_cursor end,
      updated_at = now()
  where c.id = campaign.id;

  result := jsonb_build_object(
    'message_id', new_id,
    'resend_of', root.id,
    'resend_no', resends + 1,
    'campaign_id', campaign.id,
    'to', root.to_msisdn,
    'status', new_status,
    'voucher_code', (select app.format_code(v.code) from app.vouchers v where v.id = root.voucher_id));
  perform app.audit('messages.resend', 'messages', 'action', jsonb_build_object('id', new_id), result);
  return app.idempotency_save('resend_message', idempotency_key, result);
end;
$$;

revoke execute on function api.resend_message from public;
grant execute on function api.resend_message to authenticated, service_role;

comment on function api.resend_message is
  'Support: resends a message''s voucher (same voucher, new message in the same campaign); opt-outs, rate, spacing, cooldown and limit honoured; idempotent.';

-- Lookup ---------------------------------------------------------------------------------------

-- A customer by phone number: opt-out and latest consent, then their messages
-- newest first (resends included), each with its voucher. Keyset pages of
-- page_size messages (default 200, at most 500); pass next_cursor as `after`.
create function api.find_customer(msisdn text, after bigint default null, page_size integer default 200)
returns jsonb
language plpgsql stable
security definer
set search_path = ''
as $$
declare
  normalized text := app.normalize_msisdn(msisdn);
  messages jsonb;
  last_id bigint;
  n integer;
begin
  perform app.authorize(array['admin', 'service']);
  if normalized is null or not app.is_e164(normalized) then
    perform app.raise_error('invalid_msisdn',
      format('"%s" is not an E.164 phone number such as +254700000001.', msisdn), 400);
  end if;
  perform app.check_page_size(page_size);

  -- The number's targets (campaign_targets_msisdn_idx), newest first; a
  -- resend's voucher is its original message's.
  select coalesce(jsonb_agg(jsonb_build_object(
           'message_id', p.id,
           'campaign_id', p.campaign_id,
           'campaign_name', c.name,
           'campaign_status', c.status,
           'status', p.status,
           'resend_of', p.resend_of,
           'resend_no', p.resend_no,
           'created_at', p.created_at,
           'sent_at', p.sent_at,
           'delivered_at', p.delivered_at,
           'read_at', p.read_at,
           'failed_at', p.failed_at,
           'cancelled_at', p.cancelled_at,
           'last_error_code', p.last_error_code,
           'last_error_message', p.last_error_message,
           'voucher', case when v.id is not null then jsonb_build_object(
             'code', app.format_code(v.code),
             'status', case when v.status = 'issued' and v.expires_at <= now() then 'expired' else v.status end,
             'amount_minor', v.amount_minor,
             'currency', v.currency,
             'expires_at', v.expires_at,
             'redeemed_at', v.redeemed_at,
             'redeemed_station_code', (select s.code from app.stations s where s.id = v.redeemed_station_id))
           end)
           order by p.id desc), '[]'::jsonb),
         min(p.id), count(*)
    into messages, last_id, n
  from (
    select m.id, m.campaign_id, m.status, m.created_at, m.sent_at, m.delivered_at, m.read_at, m.failed_at,
           m.cancelled_at, m.last_error_code, m.last_error_message, t.resend_of, t.resend_no,
           coalesce(m.voucher_id, (select r.voucher_id from app.messages r where r.id = t.resend_of)) as voucher_id
    from app.campaign_targets t
    join app.messages m on m.id = t.id
    where t.msisdn = normalized and (find_customer.after is null or t.id < find_customer.after)
    order by t.id desc
    limit page_size
  ) p
  join app.campaigns c on c.id = p.campaign_id
  left join app.vouchers v on v.id = p.voucher_id;

  return jsonb_build_object(
    'msisdn', normalized,
    'opted_out', (select jsonb_build_object('at', o.created_at, 'source', o.source)
                  from app.opt_outs o where o.msisdn = normalized),
    'consent', (select jsonb_build_object('consented_at', k.consented_at, 'source', k.source,
                                          'text_shown', k.text_shown)
                from app.consents k where k.msisdn = normalized
                order by k.consented_at desc, k.id desc limit 1),
    'messages', messages,
    'next_cursor', case when n = page_size then last_id end);
end;
$$;

revoke execute on function api.find_customer from public;
grant execute on function api.find_customer to authenticated, service_role;

comment on function api.find_customer is
  'Support: a number''s opt-out, latest consent and messages (newest first, resends included) with their vouchers.';
