-- Campaign audiences: the targets of a campaign and the global opt-outs.
--
-- Opt-outs are honoured at three points: when targets are added (an opted-out
-- number is not added), when a chunk of targets is enqueued (it gets a cancelled
-- message and no voucher), and again at claim (a message whose recipient opted
-- out since it was enqueued is cancelled, never sent).

create table app.opt_outs (
  msisdn app.e164 primary key,
  source text not null check (length(source) between 1 and 100),
  created_at timestamptz not null default now()
);

comment on table app.opt_outs is
  'Global opt-outs: honoured when targets are added, when messages are enqueued and again at claim.';

alter table app.opt_outs enable row level security;

create table app.campaign_targets (
  id bigint generated always as identity primary key,
  campaign_id uuid not null references app.campaigns (id),
  msisdn app.e164 not null,
  -- Extra fields of a target object (e.g. a first name), for {"attribute": …} parameters.
  attributes jsonb not null default '{}'
    check (jsonb_typeof(attributes) = 'object' and length(attributes::text) <= 4000),
  created_at timestamptz not null default now(),
  constraint campaign_targets_campaign_msisdn_key unique (campaign_id, msisdn)
);

-- The enqueue job walks a campaign's targets in id order from its cursor.
create index campaign_targets_campaign_id_id_idx on app.campaign_targets (campaign_id, id);
-- A number's messages (a message has its target's id): opt-out cancellation and
-- the per-recipient spacing guard.
create index campaign_targets_msisdn_idx on app.campaign_targets (msisdn);

comment on table app.campaign_targets is 'Recipients of a campaign (E.164), unique per campaign; added while the campaign is a draft.';

alter table app.campaign_targets enable row level security;

-- Targets: a JSON array, each item either an E.164 string ("+254700000001") or an
-- object {"msisdn": "+254700000001", …other fields kept as attributes}. Up to
-- 10,000 per call, only while the campaign is a draft (targets are fixed once it is
-- scheduled, so "every target is enqueued" has a meaning). Every item lands in
-- exactly one bucket, in this order: invalid (with its index and a reason),
-- opted_out, duplicates (repeated in the call or already a target), inserted.
create function api.add_campaign_targets(campaign_id uuid, targets jsonb) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  campaign app.campaigns;
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

  with items as (
    select (x.i - 1)::integer as idx, x.e,
           case jsonb_typeof(x.e)
             when 'string' then x.e #>> '{}'
             when 'object' then case when jsonb_typeof(x.e -> 'msisdn') = 'string' then x.e ->> 'msisdn' end
           end as raw,
           case when jsonb_typeof(x.e) = 'object' then x.e - 'msisdn' else '{}'::jsonb end as attributes
    from jsonb_array_elements(targets) with ordinality as x(e, i)
  ), classified as (
    select it.idx, it.e, it.attributes, app.normalize_msisdn(it.raw) as msisdn,
           case
             when it.raw is null then 'not_a_phone_number'
             when not app.is_e164(app.normalize_msisdn(it.raw)) then 'invalid_e164'
             when length(it.attributes::text) > 4000 then 'attributes_too_large'
           end as reason
    from items it
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
                                          order by cl.idx), '[]'::jsonb)
                from classified cl where cl.reason is not null))
    into result;
  return result;
end;
$$;

revoke execute on function api.add_campaign_targets from public;
grant execute on function api.add_campaign_targets to authenticated, service_role;
