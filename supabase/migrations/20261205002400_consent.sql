-- Consent: recorded opt-ins, opting back in after an opt-out, and campaigns that
-- require recorded consent.
--
-- WhatsApp's business policy requires an opt-in before a business starts a
-- conversation (a template message); the platform already honoured opt-outs.
-- An opt-in is recorded per number with its source (web form, paper, inbound
-- message…), when it was given and the text the customer was shown — what a
-- business must be able to show. Consents are kept, never overwritten: a number
-- has a history.
--
-- Opting back in: a consent given *after* the number's opt-out removes the
-- opt-out (audited by the opt_outs trigger, with the opt-out's source and time);
-- one given before it (an old consent imported late) is recorded but changes
-- nothing. So importing old paper forms can never resubscribe someone who said
-- STOP since.
--
-- A campaign created with requires_consent accepts only targets with a recorded
-- consent: add_campaign_targets reports the others as refused (reason
-- no_consent) and inserts none of them.

create table app.consents (
  id bigint generated always as identity primary key,
  msisdn app.e164 not null,
  -- Where the opt-in came from, e.g. "web_form", "station_paper_form", "whatsapp_inbound".
  source text not null check (length(source) between 1 and 100),
  consented_at timestamptz not null,
  -- The text the customer was shown when they opted in.
  text_shown text not null check (length(text_shown) between 1 and 2000),
  recorded_at timestamptz not null default now(),
  recorded_by uuid,
  -- A consent recorded twice (a retried import) is one consent.
  constraint consents_natural_key unique (msisdn, source, consented_at)
);

comment on table app.consents is
  'Recorded opt-ins per number: source, time, the text shown. A consent newer than the number''s opt-out removes it.';

alter table app.consents enable row level security;

create trigger consents_audit
  after insert or update or delete on app.consents
  for each row execute function app.audit_row_change('id');

alter table app.campaigns add column requires_consent boolean not null default false;

comment on column app.campaigns.requires_consent is
  'Targets need a recorded consent (app.consents); add_campaign_targets refuses the others.';

-- Recording ----------------------------------------------------------------------------------
-- Up to 10,000 consents per call, set-based. Each item is
--   {"msisdn": "+254…", "source": "web_form", "text_shown": "…", "consented_at": "…"}
-- (consented_at defaults to now; pass it to make a retry idempotent). Every
-- item lands in exactly one bucket: invalid (index and reason), duplicates
-- (already recorded, or repeated in the call), recorded. `resubscribed` counts
-- the numbers whose opt-out this call removed.
create function app.record_consents(consents jsonb, recorded_by uuid) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  result jsonb;
begin
  with items as (
    select (x.i - 1)::integer as idx, x.e,
           case when jsonb_typeof(x.e -> 'msisdn') = 'string' then app.normalize_msisdn(x.e ->> 'msisdn') end
             as msisdn,
           case when jsonb_typeof(x.e -> 'consented_at') = 'string'
                then app.try_timestamptz(x.e ->> 'consented_at') end as given_at
    from jsonb_array_elements(consents) with ordinality as x(e, i)
  ), classified as (
    select it.idx, it.e, it.msisdn, coalesce(it.given_at, now()) as consented_at,
           case
             when jsonb_typeof(it.e) <> 'object' then 'not_an_object'
             when it.msisdn is null or not app.is_e164(it.msisdn) then 'invalid_msisdn'
             when jsonb_typeof(it.e -> 'source') is distinct from 'string'
               or length(it.e ->> 'source') not between 1 and 100 then 'invalid_source'
             when jsonb_typeof(it.e -> 'text_shown') is distinct from 'string'
               or length(it.e ->> 'text_shown') not between 1 and 2000 then 'invalid_text_shown'
             when coalesce(jsonb_typeof(it.e -> 'consented_at'), 'null') <> 'null' and it.given_at is null
               then 'invalid_consented_at'
             when it.given_at > now() + interval '5 minutes' then 'consented_at_in_future'
           end as reason
    from items it
  ), valid as (
    select distinct on (c.msisdn, c.e ->> 'source', c.consented_at)
           c.idx, c.msisdn, c.e ->> 'source' as source, c.e ->> 'text_shown' as text_shown, c.consented_at
    from classified c
    where c.reason is null
    order by c.msisdn, c.e ->> 'source', c.consented_at, c.idx
  ), inserted as (
    insert into app.consents (msisdn, source, consented_at, text_shown, recorded_by)
    select v.msisdn, v.source, v.consented_at, v.text_shown, record_consents.recorded_by
    from valid v
    order by v.idx
    on conflict on constraint consents_natural_key do nothing
    returning 1
  ), resubscribed as (
    -- A consent newer than the opt-out is the customer opting back in.
    delete from app.opt_outs o
    using (select v.msisdn, max(v.consented_at) as latest from valid v group by v.msisdn) v
    where o.msisdn = v.msisdn and o.created_at < v.latest
    returning 1
  )
  select jsonb_build_object(
    'recorded', (select count(*) from inserted),
    'duplicates', (select count(*) from classified c where c.reason is null) - (select count(*) from inserted),
    'resubscribed', (select count(*) from resubscribed),
    'invalid', (select coalesce(jsonb_agg(jsonb_build_object('index', c.idx, 'value', c.e, 'reason', c.reason)
                                          order by c.idx), '[]'::jsonb)
                from classified c where c.reason is not null))
    into result;
  return result;
end;
$$;

create function api.record_consents(consents jsonb) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  actor app.actor := app.authorize(array['admin', 'service']);
begin
  if jsonb_typeof(consents) is distinct from 'array' then
    perform app.raise_error('invalid_consents', 'consents must be a JSON array of consent objects.', 400);
  end if;
  if jsonb_array_length(consents) > 10000 then
    perform app.raise_error('invalid_consents',
      format('At most 10000 consents per call, got %s.', jsonb_array_length(consents)), 400,
      jsonb_build_object('max', 10000, 'count', jsonb_array_length(consents)));
  end if;
  return app.record_consents(consents, actor.user_id);
end;
$$;

revoke execute on function api.record_consents from public;
grant execute on function api.record_consents to authenticated, service_role;

-- One consent (the plural's rules); raises invalid_consent (details.reason)
-- for a bad one. Returns the number's state afterwards.
create function api.record_consent(
  msisdn text,
  source text,
  text_shown text,
  consented_at timestamptz default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  actor app.actor := app.authorize(array['admin', 'service']);
  result jsonb;
  normalized text := app.normalize_msisdn(msisdn);
begin
  result := app.record_consents(jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
    'msisdn', msisdn, 'source', source, 'text_shown', text_shown, 'consented_at', consented_at))), actor.user_id);
  if jsonb_array_length(result -> 'invalid') > 0 then
    perform app.raise_error('invalid_consent',
      format('The consent is invalid: %s.', result #>> '{invalid,0,reason}'), 400,
      jsonb_build_object('reason', result #>> '{invalid,0,reason}'));
  end if;
  return jsonb_build_object(
    'msisdn', normalized,
    'recorded', (result ->> 'recorded')::integer = 1,
    'resubscribed', (result ->> 'resubscribed')::integer = 1,
    'opted_out', exists (select from app.opt_outs o where o.msisdn = normalized));
end;
$$;

revoke execute on function api.record_consent from public;
grant execute on function api.record_consent to authenticated, service_role;

-- Newest first; `after` is the last row's id. With msisdn, one number's history.
create function api.list_consents(
  msisdn text default null,
  source text default null,
  after bigint default null,
  page_size integer default 200
) returns setof app.consents
language plpgsql stable
security definer
set search_path = ''
as $$
declare
  normalized text := app.normalize_msisdn(msisdn);
begin
  perform app.authorize(array['admin', 'service']);
  perform app.check_page_size(page_size);
  if msisdn is not null and not app.is_e164(normalized) then
    perform app.raise_error('invalid_msisdn',
      format('"%s" is not an E.164 phone number such as +254700000001.', msisdn), 400);
  end if;
  return query
  select c.* from app.consents c
  where (list_consents.msisdn is null or c.msisdn = normalized)
    and (list_consents.source is null or c.source = list_consents.source)
    and (after is null or c.id < after)
  order by c.id desc
  limit page_size;
end;
$$;

revoke execute on function api.list_consents from public;
grant execute on function api.list_consents to authenticated, service_role;

-- Campaigns ----------------------------------------------------------------------------------
-- api.create_campaign of the campaigns-and-vouchers migration with one more
-- optional argument, requires_consent (so it is dropped and created again; calls
-- without it are unchanged). The body is that of 20261205001300_validate_at_edge
-- plus that column.
drop function api.create_campaign(text, bigint, text, timestamptz, timestamptz, uuid[], uuid, text, text, jsonb);

create function api.create_campaign(
  name text,
  amount_minor bigint,
  currency text,
  starts_at timestamptz default now(),
  expires_at timestamptz default null,
  station_ids uuid[] default null,
  channel_id uuid default null,
  template_name text default null,
  template_language text default 'en',
  template_params jsonb default null,
  requires_consent boolean default false
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  actor app.actor := app.authorize(array['admin', 'service']);
  campaign app.campaigns;
  unknown uuid[];
  params jsonb := coalesce(template_params,
    case when template_name is null then '[]'::jsonb else '["voucher_code"]'::jsonb end);
  bad_text bigint;
begin
  if name is null or length(trim(name)) not between 1 and 200 then
    perform app.raise_error('invalid_campaign', 'A campaign name of 1 to 200 characters is required.', 400);
  end if;
  if amount_minor is null or amount_minor <= 0 then
    perform app.raise_error('invalid_amount',
      format('amount_minor must be a positive integer of minor units, got %s.', amount_minor), 400);
  end if;
  if currency is null or not app.is_currency_code(upper(currency)) then
    perform app.raise_error('invalid_currency',
      format('Currency must be an ISO 4217 code such as "KES", got "%s".', currency), 400);
  end if;
  if expires_at is not null and expires_at <= coalesce(starts_at, now()) then
    perform app.raise_error('invalid_expiry', 'expires_at must be after starts_at.', 400);
  end if;
  select array_agg(s) into unknown
  from unnest(coalesce(station_ids, '{}')) s
  where not exists (select from app.stations st where st.id = s);
  if unknown is not null then
    perform app.raise_error('station_not_found',
      format('Unknown station ids: %s.', array_to_string(unknown, ', ')), 404,
      jsonb_build_object('station_ids', unknown));
  end if;
  if channel_id is not null and not exists (select from app.channels ch where ch.id = create_campaign.channel_id) then
    perform app.raise_error('channel_not_found', format('Channel "%s" does not exist.', channel_id), 404);
  end if;
  if template_name is not null and not app.is_template_name(template_name) then
    perform app.raise_error('invalid_template',
      format('template_name must be a WhatsApp template name (a-z, 0-9, _), got "%s".', template_name), 400,
      jsonb_build_object('field', 'template_name'));
  end if;
  if template_language is null or not app.is_template_language(template_language) then
    perform app.raise_error('invalid_template',
      format('template_language must be one of WhatsApp''s template language codes (such as "en" or "en_US"), got "%s"%s.',
             template_language,
             coalesce(format('; did you mean "%s"?', app.template_language_suggestion(template_language)), '')),
      400, jsonb_build_object('field', 'template_language',
                              'suggestion', app.template_language_suggestion(template_language)));
  end if;
  if not app.template_params_valid(params) then
    perform app.raise_error('invalid_template_params',
      'template_params must be an array of at most 20 items, each "voucher_code", "amount", "amount_minor", '
      || '"currency", "expires_at", "campaign_name", {"text": "…"} or {"attribute": "…"}.', 400);
  end if;
  if params @> '["expires_at"]' and expires_at is null then
    perform app.raise_error('invalid_template_params',
      'template_params uses "expires_at" but the campaign has no expires_at.', 400);
  end if;
  select min(e.i) - 1 into bad_text
  from jsonb_array_elements(params) with ordinality as e(p, i)
  where jsonb_typeof(e.p) = 'object' and e.p ? 'text' and not app.is_template_param_text(e.p ->> 'text');
  if bad_text is not null then
    perform app.raise_error('invalid_template_params',
      format('template_params item %s: WhatsApp refuses text parameters with a new line, a tab or more than 4 consecutive spaces.',
             bad_text), 400, jsonb_build_object('index', bad_text, 'reason', 'invalid_text'));
  end if;
  if params @> '["campaign_name"]' and not app.is_template_param_text(trim(name)) then
    perform app.raise_error('invalid_template_params',
      'template_params uses "campaign_name", but WhatsApp refuses a parameter with a new line, a tab or more than 4 consecutive spaces: change the name.',
      400, jsonb_build_object('reason', 'invalid_campaign_name'));
  end if;

  insert into app.campaigns (name, amount_minor, currency, starts_at, expires_at, station_ids, created_by,
                             channel_id, template_name, template_language, template_params, requires_consent)
  values (trim(name), amount_minor, upper(currency), coalesce(starts_at, now()), expires_at,
          coalesce((select array_agg(distinct s) from unnest(station_ids) s), '{}'), actor.user_id,
          channel_id, template_name, template_language, params, coalesce(requires_consent, false))
  returning * into campaign;
  return app.campaign_view(campaign);
end;
$$;

revoke execute on function api.create_campaign from public;
grant execute on function api.create_campaign to authenticated, service_role;

-- api.add_campaign_targets of 20261205001300_validate_at_edge, plus consent: when
-- the campaign requires it, a valid, not opted-out number without a recorded
-- consent is reported in `refused` ({index, value, reason: "no_consent"}) and
-- not inserted. Buckets, in order: invalid, opted_out, refused, duplicates,
-- inserted; every item lands in exactly one.
create or replace function api.add_campaign_targets(campaign_id uuid, targets jsonb) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  campaign app.campaigns;
  needed text[];
  result jsonb;
begin
  perform app.authorize(array['admin', 'service']);
  if jsonb_typeof(targets) is distinct from 'array' then
    perform app.raise_error('invalid_targets',
      'targets must be a JSON array of E.164 strings or {"msisdn": …} objects.', 400);
  end if;
  if jsonb_array_length(targets) > 10000 then
    perform app.raise_error('too_many_targets',
      format('At most 10000 targets per call, got %s.', jsonb_array_length(targets)), 400,
      jsonb_build_object('max', 10000, 'count', jsonb_array_length(targets)));
  end if;
  -- The row lock serialises adding targets with scheduling.
  select * into campaign from app.campaigns c where c.id = add_campaign_targets.campaign_id for update;
  if not found then
    perform app.raise_error('campaign_not_found',
      format('Campaign "%s" does not exist.', add_campaign_targets.campaign_id), 404);
  end if;
  if campaign.status <> 'draft' then
    perform app.raise_error('campaign_not_draft',
      format('Campaign "%s" is %s; targets can only be added to a draft.', campaign.id, campaign.status), 409,
      jsonb_build_object('status', campaign.status));
  end if;
  needed := app.template_param_attributes(campaign.template_params);

  with items as (
    select (x.i - 1)::integer as idx, x.e,
           case jsonb_typeof(x.e)
             when 'string' then x.e #>> '{}'
             when 'object' then case when jsonb_typeof(x.e -> 'msisdn') = 'string' then x.e ->> 'msisdn' end
           end as raw,
           case when jsonb_typeof(x.e) = 'object' then x.e - 'msisdn' else '{}'::jsonb end as attributes
    from jsonb_array_elements(targets) with ordinality as x(e, i)
  ), classified as (
    select it.idx, it.e, it.attributes, app.normalize_msisdn(it.raw) as msisdn, p.problem,
           case
             when it.raw is null then 'not_a_phone_number'
             when not app.is_e164(app.normalize_msisdn(it.raw)) then 'invalid_e164'
             when length(it.attributes::text) > 4000 then 'attributes_too_large'
             else p.problem ->> 'reason'
           end as reason
    from items it
    cross join lateral (select case when cardinality(needed) > 0
                                    then app.target_attribute_problem(it.attributes, needed) end as problem) p
  ), valid as (
    select cl.*, exists (select from app.opt_outs o where o.msisdn = cl.msisdn) as opted_out,
           campaign.requires_consent
             and not exists (select from app.consents k where k.msisdn = cl.msisdn) as no_consent
    from classified cl
    where cl.reason is null
  ), firsts as (
    select distinct on (v.msisdn) v.idx, v.msisdn, v.attributes
    from valid v
    where not v.opted_out and not v.no_consent
    order by v.msisdn, v.idx
  ), inserted as (
    insert into app.campaign_targets (campaign_id, msisdn, attributes)
    select campaign.id, f.msisdn, f.attributes from firsts f order by f.idx
    on conflict on constraint campaign_targets_campaign_msisdn_key do nothing
    returning 1
  )
  select jsonb_build_object(
    'inserted', (select count(*) from inserted),
    'duplicates', (select count(*) from valid v where not v.opted_out and not v.no_consent)
                  - (select count(*) from inserted),
    'opted_out', (select count(*) from valid v where v.opted_out),
    'refused', (select coalesce(jsonb_agg(jsonb_build_object('index', v.idx, 'value', v.e, 'reason', 'no_consent')
                                          order by v.idx), '[]'::jsonb)
                from valid v where not v.opted_out and v.no_consent),
    'invalid', (select coalesce(jsonb_agg(jsonb_build_object('index', cl.idx, 'value', cl.e, 'reason', cl.reason)
                                          || case when cl.reason in ('missing_attribute', 'invalid_attribute')
                                                  then jsonb_build_object('attribute', cl.problem ->> 'attribute')
                                                  else '{}'::jsonb end
                                          order by cl.idx), '[]'::jsonb)
                from classified cl where cl.reason is not null))
    into result;
  return result;
end;
$$;

revoke execute on function api.add_campaign_targets from public;
grant execute on function api.add_campaign_targets to authenticated, service_role;
