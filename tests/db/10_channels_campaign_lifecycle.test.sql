-- Channels and the campaign lifecycle: draft → scheduled → dispatching → completed,
-- paused and cancelled, and the transitions that are refused.
begin;
\ir helpers.sql
select plan(66);

select tests.create_staff('admin@dispatch.test', 'admin') as admin \gset

-- Structure -------------------------------------------------------------------------

select has_table('app', 'channels', 'Table app.channels exists');
select columns_are('app', 'channels', array['id', 'phone_number_id', 'display_name', 'rate_per_minute',
  'burst', 'min_recipient_interval_seconds', 'status', 'tokens', 'refilled_at', 'created_at', 'updated_at',
  'portfolio_id', 'waba_id', 'display_phone_number', 'pause_reason', 'paused_at', 'paused_until',
  'pause_error_code', 'pause_error_message', 'effective_rate_per_minute', 'rate_decreased_at', 'rate_changed_at',
  'quality_event', 'quality_updated_at'],
  'app.channels has the documented columns: token bucket, portfolio, pause state, effective rate, quality');
select col_is_unique('app', 'channels', 'phone_number_id', 'A phone number id belongs to one channel');
select has_column('app', 'campaigns', c, format('app.campaigns has column %s', c))
from unnest(array['channel_id', 'template_name', 'template_language', 'template_params', 'scheduled_for',
                  'dispatch_started_at', 'completed_at', 'enqueue_cursor']) c;
select fk_ok('app', 'campaigns', 'channel_id', 'app', 'channels', 'id', 'A campaign sends through a channel');
select set_eq(
  $$select from_status, to_status from app.campaign_transitions$$,
  $$values ('draft', 'scheduled'), ('draft', 'cancelled'), ('scheduled', 'dispatching'), ('scheduled', 'paused'),
           ('scheduled', 'cancelled'), ('dispatching', 'paused'), ('dispatching', 'completed'),
           ('dispatching', 'cancelled'), ('paused', 'scheduled'), ('paused', 'dispatching'),
           ('paused', 'cancelled')$$,
  'The transition table is the documented state machine (completed and cancelled are terminal)');
select is((select count(*)::integer from pg_proc p join pg_namespace n on n.oid = p.pronamespace
           where n.nspname = 'api' and p.proname = 'create_campaign'),
  1, 'There is exactly one api.create_campaign (PostgREST resolves by argument names)');

-- Channels ------------------------------------------------------------------------------

select tests.authenticate_as(:'admin');

select api.create_channel('100200300', 'Main sender') ->> 'id' as channel_id \gset
select tests.clear_authentication();
select results_eq(
  format($$select rate_per_minute, burst, tokens, status, min_recipient_interval_seconds
           from app.channels where id = %L$$, :'channel_id'),
  $$values (250, 42, 42::numeric, 'active', 6)$$,
  'A new channel defaults to 250/min, a burst of 10 s of traffic (42), a full bucket, active, 6 s spacing');

select tests.authenticate_as(:'admin');
select is(tests.error_code($$select api.create_channel('100200300', 'Again')$$), 'channel_exists',
  'A second channel for the same phone number id is refused');
select is(tests.error_status($$select api.create_channel('100200300', 'Again')$$), 409,
  'channel_exists is a 409 conflict');
select is(tests.error_code($$select api.create_channel('100200301', 'Zero', 0)$$), 'invalid_channel',
  'A channel rate must be positive');
select is(tests.error($$select api.create_channel('1 2', 'Spaces')$$) -> 'details' ->> 'field', 'phone_number_id',
  'invalid_channel names the offending field');
select is((api.create_channel('100200302', 'Custom', 600, 5, 0) ->> 'burst')::integer, 5,
  'An explicit burst is kept');

select is(api.update_channel(:'channel_id', burst => 10) ->> 'tokens', '10',
  'Lowering the burst caps the tokens in the bucket');
select is(api.update_channel(:'channel_id', status => 'paused') ->> 'status', 'paused',
  'A channel can be paused');
select is(api.update_channel(:'channel_id', status => 'active', rate_per_minute => 300) ->> 'rate_per_minute', '300',
  'A channel can be resumed and its rate changed');
select is(tests.error_code($$select api.update_channel(gen_random_uuid(), display_name => 'X')$$),
  'channel_not_found', 'Updating an unknown channel is channel_not_found');
select is(tests.error_status($$select api.update_channel(gen_random_uuid(), display_name => 'X')$$), 404,
  'channel_not_found is a 404');
select is(tests.error_code(format($$select api.update_channel(%L, status => 'broken')$$, :'channel_id')),
  'invalid_channel', 'A channel status is active or paused');
select ok(jsonb_array_length(api.list_channels()) >= 2, 'Admins can list channels');

-- Campaigns: creation ------------------------------------------------------------------------

select is(api.create_campaign('Vouchers only', 1000, 'KES') ->> 'template_params', '[]',
  'A campaign without channel or template still works (voucher-only), with no parameters');

select api.create_campaign('Fuel promo', 50000, 'KES', expires_at => now() + interval '30 days',
  channel_id => :'channel_id', template_name => 'fuel_voucher') ->> 'id' as campaign_id \gset
select tests.clear_authentication();
select results_eq(
  format($$select status, channel_id, template_name, template_language, template_params
           from app.campaigns where id = %L$$, :'campaign_id'),
  format($$values ('draft', %L::uuid, 'fuel_voucher', 'en', '["voucher_code"]'::jsonb)$$, :'channel_id'),
  'A campaign with a template starts as a draft, in English, with the voucher code as its one parameter');
select tests.authenticate_as(:'admin');

select is(tests.error_code($$select api.create_campaign('X', 100, 'KES', channel_id => gen_random_uuid())$$),
  'channel_not_found', 'A campaign cannot use an unknown channel');
select is(tests.error_code($$select api.create_campaign('X', 100, 'KES', template_name => 'Bad Name')$$),
  'invalid_template', 'Template names are WhatsApp template names (a-z, 0-9, _)');
select is(tests.error_code($$select api.create_campaign('X', 100, 'KES', template_name => 't',
                                                        template_language => 'english')$$),
  'invalid_template', 'Template languages are WhatsApp language codes');
select is(tests.error_code($$select api.create_campaign('X', 100, 'KES', template_name => 't',
                                                        template_params => '["voucher_code", "surname"]')$$),
  'invalid_template_params', 'Unknown parameter sources are refused');
select is(tests.error_code($$select api.create_campaign('X', 100, 'KES', template_name => 't',
                                                        template_params => '["expires_at"]')$$),
  'invalid_template_params', 'An expiry parameter needs a campaign with an expiry');
select is(api.create_campaign('Literal', 100, 'KES', template_name => 't',
            template_params => '[{"text": "Hello"}, "amount", {"attribute": "name"}]') -> 'template_params',
  '[{"text": "Hello"}, "amount", {"attribute": "name"}]'::jsonb,
  'Literal text, amount and target attributes are valid parameter sources');

-- Lifecycle: readiness -------------------------------------------------------------------------

select api.create_campaign('Not ready', 100, 'KES') ->> 'id' as bare_id \gset
select is(tests.error_code(format('select api.schedule_campaign(%L)', :'bare_id')), 'campaign_not_ready',
  'A campaign without channel, template or targets cannot be scheduled');
select is(tests.error(format('select api.schedule_campaign(%L)', :'bare_id')) -> 'details' -> 'reasons',
  '["no_channel", "no_template", "no_targets"]'::jsonb, 'campaign_not_ready lists what is missing');
select is(tests.error_status(format('select api.schedule_campaign(%L)', :'bare_id')), 409,
  'campaign_not_ready is a 409');
select is(tests.error_code('select api.schedule_campaign(gen_random_uuid())'), 'campaign_not_found',
  'Scheduling an unknown campaign is campaign_not_found');

select is((api.add_campaign_targets(:'campaign_id', '["+254700000001", "+254700000002", "+254700000003"]')
           ->> 'inserted')::integer, 3, 'Targets are added to the draft');

-- Lifecycle: scheduled in the future, paused, resumed ----------------------------------------------

select is(api.schedule_campaign(:'campaign_id', now() + interval '1 hour') ->> 'status', 'scheduled',
  'draft → scheduled for a future start');
select is(tests.error_code(format('select api.schedule_campaign(%L)', :'campaign_id')), 'invalid_transition',
  'A scheduled campaign cannot be scheduled again');
select is(tests.error(format('select api.schedule_campaign(%L)', :'campaign_id')) -> 'details',
  '{"from": "scheduled", "to": "scheduled"}'::jsonb, 'invalid_transition names the from and to states');
select is(tests.error_status(format('select api.schedule_campaign(%L)', :'campaign_id')), 409,
  'invalid_transition is a 409');
select is(api.pause_campaign(:'campaign_id') ->> 'status', 'paused', 'scheduled → paused');
select is(api.resume_campaign(:'campaign_id') ->> 'status', 'scheduled',
  'paused → scheduled again when dispatch had not started');

select tests.clear_authentication();
select is((select count(*)::integer from app.messages where campaign_id = :'campaign_id'), 0,
  'Nothing is enqueued before the start time');
select is((select count(*)::integer from app.vouchers where campaign_id = :'campaign_id'), 0,
  'No voucher is issued before the start time');

-- The start time arrives: the promote job starts dispatch.
update app.campaigns set scheduled_for = now() - interval '1 second' where id = :'campaign_id';
select ok((app.promote_due_campaigns() ->> 'promoted')::integer >= 1, 'The promote job starts the due campaign');
select results_eq(
  format($$select status, enqueue_cursor > 0 from app.campaigns where id = %L$$, :'campaign_id'),
  $$values ('dispatching', true)$$, 'scheduled → dispatching, with its targets enqueued');
select results_eq(
  format($$select count(*)::integer, count(distinct m.voucher_id)::integer,
                  bool_and(m.body_parameters = array[app.format_code(v.code)])
           from app.messages m join app.vouchers v on v.id = m.voucher_id
           where m.campaign_id = %L and m.status = 'queued'$$, :'campaign_id'),
  $$values (3, 3, true)$$,
  'Each target has one queued message carrying its own voucher code');

-- Pause and resume while dispatching.
select tests.authenticate_as(:'admin');
select is(api.pause_campaign(:'campaign_id') ->> 'status', 'paused', 'dispatching → paused');
select tests.clear_authentication();
select is((select array_agg(distinct status) from app.messages where campaign_id = :'campaign_id'),
  array['held'], 'Pausing holds the queued messages (out of the claim index)');
select tests.authenticate_as(:'admin');
select is(api.resume_campaign(:'campaign_id') ->> 'status', 'dispatching',
  'paused → dispatching when dispatch had started');
select tests.clear_authentication();
select is((select array_agg(distinct status) from app.messages where campaign_id = :'campaign_id'),
  array['queued'], 'Resuming queues the held messages again');

-- Completion: the job completes a dispatching campaign once nothing is pending.
-- (Other campaigns in the database may complete too: assertions look at ours.)
select app.complete_campaigns() as completed_count \gset
select is((select status from app.campaigns where id = :'campaign_id'), 'dispatching',
  'A campaign with queued messages is not completed');
update app.messages set status = 'sent', wamid = 'wamid.lifecycle.' || id, sent_at = now()
where campaign_id = :'campaign_id';
select ok(app.complete_campaigns() >= 1, 'The completion job completes it when every message has left the queue');
select is((select status from app.campaigns where id = :'campaign_id'), 'completed', 'dispatching → completed');

-- Terminal states.
select tests.authenticate_as(:'admin');
select is(tests.error(format('select api.pause_campaign(%L)', :'campaign_id')) -> 'details',
  '{"from": "completed", "to": "paused"}'::jsonb, 'A completed campaign cannot be paused');
select is(tests.error_code(format('select api.cancel_campaign(%L)', :'campaign_id')), 'invalid_transition',
  'A completed campaign cannot be cancelled');

-- Cancelling a dispatching campaign cancels its pending messages and voids their vouchers.
select api.create_campaign('To cancel', 700, 'KES', channel_id => :'channel_id', template_name => 'fuel_voucher')
  ->> 'id' as cancel_id \gset
select api.add_campaign_targets(:'cancel_id', '["+254711000001", "+254711000002"]') is not null as added;
select is(api.schedule_campaign(:'cancel_id') ->> 'status', 'dispatching',
  'Scheduling with a start time now starts dispatch at once');
select is(api.cancel_campaign(:'cancel_id') ->> 'status', 'cancelled', 'dispatching → cancelled');
select tests.clear_authentication();
select results_eq(
  format($$select m.status, m.last_error_code, v.status from app.messages m join app.vouchers v on v.id = m.voucher_id
           where m.campaign_id = %L group by 1, 2, 3$$, :'cancel_id'),
  $$values ('cancelled', 'campaign_cancelled', 'void')$$,
  'Cancelling cancels the queued messages and voids the vouchers they carried');
select tests.authenticate_as(:'admin');
select is(tests.error(format('select api.resume_campaign(%L)', :'cancel_id')) -> 'details',
  '{"from": "cancelled", "to": "dispatching"}'::jsonb, 'A cancelled campaign cannot be resumed');
select is(tests.error_code(format('select api.pause_campaign(%L)', :'bare_id')), 'invalid_transition',
  'A draft cannot be paused');
select is(api.cancel_campaign(:'bare_id') ->> 'status', 'cancelled', 'A draft can be cancelled');

select * from finish();
rollback;
