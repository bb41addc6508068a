-- Validate once, at the database's edge: what the send path (or WhatsApp) would
-- refuse on every message is refused when it is written, with a coded error.
--
--   template_language   one of the codes Meta lists for templates (case matters:
--                       en_US, not en_us), checked by create_campaign and by the
--                       campaigns table itself; a near miss is suggested
--   phone_number_id     digits (the channel health migration)
--   template parameters {"text": …} and the campaign name, when used as a
--                       parameter, follow Meta's rule for text parameters (no new
--                       line, no tab, at most 4 consecutive spaces: 132018);
--                       add_campaign_targets reports a target that lacks an
--                       attribute the template uses (it would render as an empty
--                       parameter, which WhatsApp refuses) or whose value breaks
--                       that rule; schedule_campaign refuses a campaign whose
--                       language or targets (written some other way) cannot send.

-- Template languages ------------------------------------------------------------------------
-- Meta's list, "Supported Languages" for Cloud API message templates
-- (https://developers.facebook.com/documentation/business-messaging/whatsapp/templates/supported-languages),
-- as published on 2026-05-21.
create function app.template_languages() returns text[]
language sql immutable parallel safe
set search_path = ''
as $$
  select array[
    'af', 'sq', 'ar', 'ar_EG', 'ar_AE', 'ar_LB', 'ar_MA', 'ar_QA', 'az', 'be_BY', 'bn', 'bn_IN', 'bg', 'ca',
    'zh_CN', 'zh_HK', 'zh_TW', 'hr', 'cs', 'da', 'prs_AF', 'nl', 'nl_BE', 'en', 'en_GB', 'en_US', 'en_AE',
    'en_AU', 'en_CA', 'en_GH', 'en_IE', 'en_IN', 'en_JM', 'en_MY', 'en_NZ', 'en_QA', 'en_SG', 'en_UG', 'en_ZA',
    'et', 'fil', 'fi', 'fr', 'fr_BE', 'fr_CA', 'fr_CH', 'fr_CI', 'fr_MA', 'ka', 'de', 'de_AT', 'de_CH', 'el',
    'gu', 'ha', 'he', 'hi', 'hu', 'id', 'ga', 'it', 'ja', 'kn', 'kk', 'rw_RW', 'ko', 'ky_KG', 'lo', 'lv', 'lt',
    'mk', 'ms', 'ml', 'mr', 'nb', 'ps_AF', 'fa', 'pl', 'pt_BR', 'pt_PT', 'pa', 'ro', 'ru', 'sr', 'si_LK', 'sk',
    'sl', 'es', 'es_AR', 'es_CL', 'es_CO', 'es_CR', 'es_DO', 'es_EC', 'es_HN', 'es_MX', 'es_PA', 'es_PE',
    'es_ES', 'es_UY', 'sw', 'sv', 'ta', 'te', 'th', 'tr', 'uk', 'ur', 'uz', 'vi', 'zu']
$$;

comment on function app.template_languages() is
  'The language codes Meta accepts for template messages (Supported Languages, 2026-05-21). Case-sensitive.';

-- The same name and signature as before, so the campaigns table's check uses it.
create or replace function app.is_template_language(value text) returns boolean
language sql immutable parallel safe
set search_path = ''
as $$
  select value = any (app.template_languages())
$$;

comment on function app.is_template_language(text) is
  'True for a language code Meta accepts for templates (app.template_languages), e.g. "en" or "en_US".';

-- The listed code a near miss means ("en_us" → "en_US", "en-GB" → "en_GB"), or null.
create function app.template_language_suggestion(value text) returns text
language sql immutable parallel safe
set search_path = ''
as $$
  select l from pg_catalog.unnest(app.template_languages()) l
  where pg_catalog.lower(l) = pg_catalog.lower(pg_catalog.replace(pg_catalog.btrim(value), '-', '_'))
  limit 1
$$;

-- Campaigns (and their waiting messages) written before this migration with a near
-- miss get the listed spelling; anything else is refused by schedule_campaign.
update app.campaigns c set template_language = app.template_language_suggestion(c.template_language)
where not app.is_template_language(c.template_language)
  and app.template_language_suggestion(c.template_language) is not null;
update app.messages m set template_language = app.template_language_suggestion(m.template_language)
where m.status in ('queued', 'held')
  and not app.is_template_language(m.template_language)
  and app.template_language_suggestion(m.template_language) is not null;

-- Text parameters ----------------------------------------------------------------------------------
-- WhatsApp refuses a text parameter with a new line or a tab, or more than four
-- consecutive spaces (132018), and an empty one (131008).
create function app.is_template_param_text(value text) returns boolean
language sql immutable parallel safe
set search_path = ''
as $$
  select value is not null and pg_catalog.btrim(value) <> '' and value !~ '[\n\r\t]' and value !~ ' {5}'
$$;

comment on function app.is_template_param_text(text) is
  'True for text WhatsApp accepts as a template parameter: not empty, no new line or tab, at most 4 consecutive spaces.';

-- The attributes a campaign's template_params read from its targets.
create function app.template_param_attributes(params jsonb) returns text[]
language sql immutable parallel safe
set search_path = ''
as $$
  select coalesce(pg_catalog.array_agg(distinct p ->> 'attribute'), '{}')
  from pg_catalog.jsonb_array_elements(case when pg_catalog.jsonb_typeof(params) = 'array' then params
                                            else '[]'::jsonb end) p
  where pg_catalog.jsonb_typeof(p) = 'object' and p ? 'attribute'
$$;

-- The first attribute of `attributes` that cannot fill a parameter, and why:
-- {attribute, reason: missing_attribute | invalid_attribute}, or null.
create function app.target_attribute_problem(attributes jsonb, needed text[]) returns jsonb
language sql immutable parallel safe
set search_path = ''
as $$
  select pg_catalog.jsonb_build_object('attribute', a.name, 'reason',
           case when coalesce(pg_catalog.jsonb_typeof(attributes -> a.name), 'null') not in ('string', 'number')
                  or pg_catalog.btrim(attributes ->> a.name) = '' then 'missing_attribute'
                else 'invalid_attribute' end)
  from pg_catalog.unnest(needed) with ordinality as a(name, i)
  where not (coalesce(pg_catalog.jsonb_typeof(attributes -> a.name), 'null') in ('string', 'number')
             and app.is_template_param_text(attributes ->> a.name))
  order by a.i
  limit 1
$$;

-- create_campaign: as before, and the language must be Meta's (with a suggestion
-- for a near miss in details.suggestion), literal text parameters and — when used
-- as a parameter — the campaign name must be text WhatsApp accepts.
create or replace function api.create_campaign(
  name text,
  amount_minor bigint,
  currency text,
  starts_at timestamptz default now(),
  expires_at timestamptz default null,
  station_ids uuid[] default null,
  channel_id uuid default null,
  template_name text default null,
  template_language text default 'en',
  template_params jsonb default null
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
                             channel_id, template_name, template_language, template_params)
  values (trim(name), amount_minor, upper(currency), coalesce(starts_at, now()), expires_at,
          coalesce((select array_agg(distinct s) from unnest(station_ids) s), '{}'), actor.user_id,
          channel_id, template_name, template_language, params)
  returning * into campaign;
  return app.campaign_view(campaign);
end;
$$;

-- add_campaign_targets: as before, and a target that cannot fill an {"attribute": …}
-- parameter of the campaign's template is invalid: reason missing_attribute (absent,
-- null, empty, or not a string or number) or invalid_attribute (a new line, a tab
-- or more than 4 consecutive spaces), with the attribute's name in `attribute`.
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
    select cl.*, exists (select from app.opt_outs o where o.msisdn = cl.msisdn) as opted_out
    from classified cl
    where cl.reason is null
  ), firsts as (
    select distinct on (v.msisdn) v.idx, v.msisdn, v.attributes
    from valid v
    where not v.opted_out
    order by v.msisdn, v.idx
  ), inserted as (
    insert into app.campaign_targets (campaign_id, msisdn, attributes)
    select campaign.id, f.msisdn, f.attributes from firsts f order by f.idx
    on conflict on constraint campaign_targets_campaign_msisdn_key do nothing
    returning 1
  )
  select jsonb_build_object(
    'inserted', (select count(*) from inserted),
    'duplicates', (select count(*) from valid v where not v.opted_out) - (select count(*) from inserted),
    'opted_out', (select count(*) from valid v where v.opted_out),
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

-- schedule_campaign: as before, and two more reasons in campaign_not_ready:
-- invalid_template_language (a campaign written before languages were checked)
-- and targets_missing_attributes (targets written other than through
-- add_campaign_targets that cannot fill the template's attributes; details.invalid_targets
-- counts them). The target scan runs only when the template reads attributes.
create or replace function api.schedule_campaign(campaign_id uuid, start_at timestamptz default now()) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  actor app.actor := app.authorize(array['admin', 'service']);
  campaign app.campaigns;
  reasons text[] := '{}'::text[];
  starts timestamptz := greatest(coalesce(start_at, now()), now());
  needed text[];
  unfit bigint := 0;
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
  if not app.is_template_language(campaign.template_language) then
    reasons := reasons || 'invalid_template_language'::text;
  end if;
  if not exists (select from app.campaign_targets t where t.campaign_id = campaign.id) then
    reasons := reasons || 'no_targets'::text;
  end if;
  needed := app.template_param_attributes(campaign.template_params);
  if cardinality(needed) > 0 then
    select count(*) into unfit
    from app.campaign_targets t
    where t.campaign_id = campaign.id and app.target_attribute_problem(t.attributes, needed) is not null;
    if unfit > 0 then
      reasons := reasons || 'targets_missing_attributes'::text;
    end if;
  end if;
  if campaign.expires_at is not null and campaign.expires_at <= starts then
    reasons := reasons || 'expired'::text;
  end if;
  if cardinality(reasons) > 0 then
    perform app.raise_error('campaign_not_ready',
      format('Campaign "%s" cannot be scheduled: %s.', campaign.id, array_to_string(reasons, ', ')), 409,
      jsonb_build_object('reasons', reasons)
        || case when unfit > 0 then jsonb_build_object('invalid_targets', unfit) else '{}'::jsonb end);
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
