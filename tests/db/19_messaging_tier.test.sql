-- Messaging tiers: a business portfolio may message at most its tier's unique
-- recipients per rolling 24 h, shared by all its channels. The claim never exceeds
-- it; recipients already counted still go; the rest wait for the window; quality
-- webhooks and admins move the tier.
begin;
\ir helpers.sql
select plan(33);

-- Structure ---------------------------------------------------------------------------------------------

select has_table('app', 'portfolios', 'Business portfolios hold the messaging tier');
select fk_ok('app', 'channels', 'portfolio_id', 'app', 'portfolios', 'id', 'Every channel belongs to a portfolio');
select is((select messaging_tier from app.portfolios where id = '00000000-0000-4000-8000-000000000001'),
  'TIER_UNLIMITED', 'Channels from before portfolios share a default portfolio that changes nothing (unlimited)');
select results_eq(
  $$select app.tier_limit(t) from unnest(array['TIER_250', 'TIER_2K', 'TIER_10K', 'TIER_100K', 'TIER_UNLIMITED']) t$$,
  $$values (250), (2000), (10000), (100000), (null::integer)$$, 'Meta''s tiers: 250, 2K, 10K, 100K, unlimited');
select has_pk('app', 'portfolio_recipients', 'A recipient is counted once per portfolio (the claim probes this key)');
select has_pk('app', 'portfolio_usage', 'Usage is kept per portfolio and 5-minute bucket');

-- Portfolio RPCs -------------------------------------------------------------------------------------------

select tests.create_staff('admin@tier.test', 'admin') as admin \gset
select tests.authenticate_as(:'admin');
select api.create_portfolio('Small business') as pf_json \gset
select is((:'pf_json'::jsonb) ->> 'messaging_tier', 'TIER_250', 'A new portfolio starts at Meta''s default, 250');
select is(tests.error($$select api.create_portfolio('Bad', 'TIER_3K')$$) -> 'details' ->> 'field', 'messaging_tier',
  'An unknown tier is refused (invalid_portfolio names the field)');
select is(tests.error_code($$select api.create_portfolio('  ')$$), 'invalid_portfolio', 'A portfolio needs a name');
select is(tests.error_code($$select api.update_portfolio('00000000-0000-4000-8000-0000000000ff', 'x')$$),
  'portfolio_not_found', 'update_portfolio names an unknown portfolio');
select is(tests.error_code($$select api.create_channel('700100200', 'Tier', portfolio_id => '00000000-0000-4000-8000-0000000000ff')$$),
  'portfolio_not_found', 'A channel can only join a portfolio that exists');
select tests.clear_authentication();
select (:'pf_json'::jsonb) ->> 'portfolio_id' as pf \gset
update app.portfolios set messaging_tier = 'TIER_50' where id = :'pf';  -- a small tier keeps the test short

-- Two channels of the portfolio, 80 recipients between two campaigns ----------------------------------------

select tests.fixture_campaign(array(select '+25479' || lpad(i::text, 7, '0') from generate_series(1, 60) i)) as c1 \gset
select tests.fixture_campaign(array(select '+25479' || lpad(i::text, 7, '0') from generate_series(41, 80) i)) as c2 \gset
select channel_id as ch1 from app.campaigns where id = :'c1' \gset
select channel_id as ch2 from app.campaigns where id = :'c2' \gset
update app.channels set portfolio_id = :'pf' where id in (:'ch1', :'ch2');

select is((select count(*)::integer from app.claim_messages_at(:'ch1', 1000, 60, 'w', now())), 50,
  'The first channel leases 50 of its 60 messages: the tier''s 50 new recipients');
select results_eq(format($$select count(*)::integer, min(next_attempt_at) > now() + interval '24 hours',
                                  min(last_error_code) from app.messages where campaign_id = %L and status = 'queued'$$, :'c1'),
  $$values (10, true, 'messaging_limit')$$,
  'The other 10 wait until the window frees a bucket (a day later), saying why');
select is((select count(*)::integer from app.claim_messages_at(:'ch2', 1000, 60, 'w', now() + interval '1 minute')), 10,
  'The second channel of the portfolio may still send to the 10 recipients already counted (41–50), no one else');
select is((select count(distinct m.to_msisdn)::integer from app.messages m
           where m.channel_id in (:'ch1', :'ch2') and m.status = 'leased'), 50,
  'Across both channels, 50 unique recipients');
select is((select sum(recipients)::integer from app.portfolio_usage where portfolio_id = :'pf'), 50,
  'and the usage says 50');

-- A retry to a recipient already counted costs nothing.
update app.messages set status = 'queued', lease_owner = null, lease_expires_at = null, next_attempt_at = now()
where campaign_id = :'c1' and status = 'leased';
select is((select count(*)::integer from app.claim_messages_at(:'ch1', 1000, 60, 'w', now() + interval '10 minutes')), 50,
  'Retries to recipients already counted are leased again');
select is((select sum(recipients)::integer from app.portfolio_usage where portfolio_id = :'pf'), 50,
  'without counting them twice (each moves to its latest bucket)');

select tests.create_staff('admin2@tier.test', 'admin') as admin2 \gset
select tests.authenticate_as(:'admin2');
select results_eq(format($$select (p ->> 'used_last_24h')::integer, (p ->> 'remaining')::integer, p ->> 'next_free_at' is not null
                           from jsonb_array_elements(api.list_portfolios()) p where p ->> 'portfolio_id' = %L$$, :'pf'),
  $$values (50, 0, true)$$, 'list_portfolios shows the usage, what is left and when capacity frees');
select results_eq(format($$select (s -> 'channel' -> 'portfolio' ->> 'remaining')::integer,
                                  (s ->> 'waiting_for_tier')::integer from api.campaign_stats(%L) s$$, :'c1'),
  $$values (0, 10)$$, 'campaign_stats shows the tier and the messages waiting for it');
select tests.clear_authentication();

-- A day later the window has moved on ------------------------------------------------------------------------

update app.messages set status = 'sent', wamid = 'wamid.tier.' || id, lease_owner = null, lease_expires_at = null
where channel_id in (:'ch1', :'ch2') and status = 'leased';
select is((select count(*)::integer from app.claim_messages_at(:'ch1', 1000, 60, 'w', now() + interval '24 hours 4 minutes')),
  0, 'Before the oldest bucket leaves the window, still nothing');
select is((select count(*)::integer from app.claim_messages_at(:'ch1', 1000, 60, 'w', now() + interval '24 hours 16 minutes')),
  10, 'Once it has, the waiting messages go');
select is((select count(*)::integer from app.claim_messages_at(:'ch2', 1000, 60, 'w', now() + interval '24 hours 17 minutes')),
  30, 'and the second channel''s new recipients (51–80) fit the fresh window too');

-- Tier changes ------------------------------------------------------------------------------------------------

select is((app.set_portfolio_tier(:'pf', 'TIER_UNLIMITED', 'admin')).messaging_limit, null::integer,
  'A portfolio can become unlimited');
select is((select count(*)::integer from app.portfolio_recipients where portfolio_id = :'pf')
          + (select count(*)::integer from app.portfolio_usage where portfolio_id = :'pf'), 0,
  'and then tracks nothing (no probe, no write per claim)');
-- Back to a finite tier: usage is rebuilt from the messages of the last 24 h.
update app.messages set last_attempt_at = now() - interval '1 hour' where channel_id = :'ch1';
select is((app.set_portfolio_tier(:'pf', 'TIER_2K', 'admin')).messaging_limit, 2000,
  'A portfolio that becomes finite again');
select is((select sum(recipients)::integer from app.portfolio_usage where portfolio_id = :'pf'),
          (select count(distinct to_msisdn)::integer from app.messages m
           where m.channel_id in (:'ch1', :'ch2') and m.last_attempt_at >= app.tier_window_start(now())),
  'is seeded from its channels'' messages: each recipient attempted in the window counted once');

-- Quality webhooks --------------------------------------------------------------------------------------------

update app.channels set waba_id = '102290129340398', display_phone_number = '15550783881' where id = :'ch1';
update app.portfolios set messaging_tier = 'TIER_UNLIMITED' where id = :'pf';
select tests.authenticate_as_service_role();
select is(api.record_phone_number_quality('102290129340398', '+1 555-078-3881', 'DOWNGRADE', null, 'TIER_2K'),
  '{"event": "DOWNGRADE", "channels": 1, "messaging_tier": "TIER_2K", "portfolios_updated": 1}'::jsonb,
  'A quality webhook moves the portfolio''s tier (max_daily_conversations_per_business)');
select is(api.record_phone_number_quality('102290129340398', '15550783881', 'UPGRADE', 'TIER_10K') ->> 'messaging_tier',
  'TIER_10K', 'or the older current_limit');
select is(api.record_phone_number_quality('102290129340398', '15550783881', 'FLAGGED', 'TIER_NOT_SET')
            ->> 'portfolios_updated', '0', 'A quality event without a known tier leaves the tier alone');
select is(tests.error_code($$select api.record_phone_number_quality('x', '1555', 'UPGRADE')$$), 'invalid_quality_event',
  'A malformed WABA id is refused with a code');
select tests.clear_authentication();
select results_eq(format($$select c.quality_event, p.messaging_tier, p.tier_source
                           from app.channels c join app.portfolios p on p.id = c.portfolio_id where c.id = %L$$, :'ch1'),
  $$values ('FLAGGED', 'TIER_10K', 'webhook')$$, 'The channel keeps its last quality event; the portfolio its tier and where it came from');
select is((select sum(recipients)::integer from app.portfolio_usage where portfolio_id = :'pf') > 0, true,
  'Becoming finite by webhook seeds the usage too');

select * from finish();
rollback;
