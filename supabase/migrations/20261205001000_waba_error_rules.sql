-- What a WhatsApp error means for the platform: one rule per Graph error code (and,
-- where Meta distinguishes them, subcode), saying which *scope* the error is about
-- and what dispatch does about it. The one source: the report path and the status
-- webhooks read this table in SQL, and the dispatch Edge Function loads the same
-- rows once per isolate through api.waba_error_rules() (why a table and not a
-- file beside the function: a rule is data the database acts on in the same
-- statement that records the send; keeping it there means the SQL never trusts a
-- function's copy, a rule can be corrected with one migration without a function
-- deploy, and a test cannot drift from it because there is nothing to compare).
--
-- Scopes (what the error says is wrong):
--   message    this request (a transient Meta failure, a malformed parameter)
--   recipient  this user (not on WhatsApp, opted out of marketing, pair rate limit)
--   template   the template (missing, paused, disabled, parameters that cannot fit)
--   channel    the business phone number (throughput, spam restriction, unregistered)
--   account    the business account or its credentials (token, permissions, lock,
--              policy block, payment)
--
-- Actions (what dispatch does):
--   retry           retry this message with backoff; the attempt counts
--   fail            this message failed for good (voucher kept, see the outbox)
--   opt_out         fail it and record a global opt-out (131050)
--   throttle        back to the queue without spending an attempt, and the
--                   channel's effective rate is halved (AIMD, see the dispatch
--                   scopes migration)
--   pause_channel   back to the queue without spending an attempt, and the
--                   channel is paused: for cooldown_seconds when Meta's restriction
--                   is temporary, else until an admin resumes it
--   pause_template  back to the queue (held) without spending an attempt, and the
--                   campaigns sending that template are paused
--
-- Sources: Meta's "WhatsApp error codes" reference
-- (https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/),
-- its throughput page for 130429
-- (https://developers.facebook.com/documentation/business-messaging/whatsapp/throughput),
-- and the Graph API error-handling guide for the 190 subcodes
-- (https://developers.facebook.com/docs/graph-api/guides/error-handling). Meta
-- publishes no durations: the cool-downs below are our choice, stated as such.

create table app.waba_error_rules (
  code integer not null check (code >= 0),
  -- Inclusive upper bound: the same as code, or the end of a range (200–299).
  code_last integer not null check (code_last >= code),
  -- A Graph error_subcode; null matches any subcode.
  subcode integer check (subcode >= 0),
  scope text not null check (scope in ('message', 'recipient', 'template', 'channel', 'account')),
  action text not null
    check (action in ('retry', 'fail', 'opt_out', 'throttle', 'pause_channel', 'pause_template')),
  -- Stable machine reason: a channel's or campaign's pause_reason, and the README's table.
  reason text not null check (reason ~ '^[a-z][a-z0-9_]{1,62}$'),
  -- pause_channel only: resume by itself after this long; null = until an admin resumes.
  cooldown_seconds integer check (cooldown_seconds between 1 and 604800),
  title text not null check (length(title) between 1 and 200),
  -- Where the rule comes from: Meta's page, or "our choice" for the action.
  source text not null check (length(source) between 1 and 500),
  constraint waba_error_rules_cooldown check (cooldown_seconds is null or action = 'pause_channel'),
  constraint waba_error_rules_key unique nulls not distinct (code, code_last, subcode)
);

comment on table app.waba_error_rules is
  'Per Graph error code (and subcode): scope (message, recipient, template, channel, account) and dispatch action. Read by the report and webhook paths and by the dispatch function (api.waba_error_rules).';

alter table app.waba_error_rules enable row level security;

insert into app.waba_error_rules (code, code_last, subcode, scope, action, reason, cooldown_seconds, title, source) values
  -- Authorization and the business account: nothing sends until a person acts.
  (0, 0, null, 'account', 'pause_channel', 'auth_failed', null, 'AuthException',
   'Meta error codes: authorization errors'),
  (3, 3, null, 'account', 'pause_channel', 'permission_denied', null, 'API method (capability or permissions)',
   'Meta error codes: authorization errors'),
  (10, 10, null, 'account', 'pause_channel', 'permission_denied', null, 'Permission denied',
   'Meta error codes: authorization errors'),
  (190, 190, null, 'account', 'pause_channel', 'access_token_invalid', null, 'Access token is invalid',
   'Meta error codes: authorization errors'),
  (190, 190, 463, 'account', 'pause_channel', 'access_token_expired', null, 'Access token has expired',
   'Graph API error handling: subcode 463 (expired)'),
  (190, 190, 467, 'account', 'pause_channel', 'access_token_invalid', null, 'Access token is invalid',
   'Graph API error handling: subcode 467 (invalid token)'),
  (200, 299, null, 'account', 'pause_channel', 'permission_denied', null, 'API permission not granted',
   'Meta error codes: 200-299 API permission'),
  (368, 368, null, 'account', 'pause_channel', 'policy_block', null, 'Temporarily blocked for policy violations',
   'Meta error codes: integrity errors (duration not published: paused until an admin resumes)'),
  (131005, 131005, null, 'account', 'pause_channel', 'permission_denied', null, 'Access denied',
   'Meta error codes: authorization errors'),
  (131031, 131031, null, 'account', 'pause_channel', 'account_locked', null, 'Business account locked',
   'Meta error codes: integrity errors'),
  (131042, 131042, null, 'account', 'pause_channel', 'payment_issue', null, 'Business eligibility payment issue',
   'Meta error codes: other errors'),
  (131057, 131057, null, 'account', 'pause_channel', 'account_maintenance', 60,
   'Business account is in maintenance mode',
   'Meta error codes: throttling errors (cool-down of 60 s is our choice)'),
  -- Throttling: slow the channel down, never spend the message's attempts.
  (4, 4, null, 'account', 'throttle', 'app_rate_limit', null, 'Application request limit reached',
   'Meta error codes: throttling errors'),
  (80007, 80007, null, 'account', 'throttle', 'waba_rate_limit', null, 'WhatsApp Business Account rate limit',
   'Meta error codes: throttling errors'),
  (130429, 130429, null, 'channel', 'throttle', 'throughput_limit', null, 'Cloud API throughput reached',
   'Meta error codes: throttling errors; Meta throughput page'),
  -- The business phone number.
  (131048, 131048, null, 'channel', 'pause_channel', 'spam_rate_limit', 3600,
   'Spam rate limit hit (the number is restricted)',
   'Meta error codes: throttling errors (cool-down of 1 h is our choice; Meta publishes none)'),
  (133010, 133010, null, 'channel', 'pause_channel', 'phone_number_not_registered', null,
   'Phone number not registered', 'Meta error codes: registration errors'),
  (100, 100, 33, 'channel', 'pause_channel', 'phone_number_not_found', null,
   'Unknown phone number id (does not exist or no permission)',
   'Graph API error handling: code 100, subcode 33 (unsupported post request)'),
  -- The template: pause the campaigns that send it.
  (132000, 132000, null, 'template', 'pause_template', 'template_params_mismatch', null,
   'Number of template parameters does not match', 'Meta error codes: template errors'),
  (132001, 132001, null, 'template', 'pause_template', 'template_missing', null,
   'Template does not exist in this language', 'Meta error codes: template errors'),
  (132015, 132015, null, 'template', 'pause_template', 'template_paused', null, 'Template is paused',
   'Meta error codes: template errors'),
  (132016, 132016, null, 'template', 'pause_template', 'template_disabled', null, 'Template is disabled',
   'Meta error codes: template errors'),
  -- Template errors caused by this message's parameter values: retrying the same
  -- values cannot help, and other messages of the campaign may be fine.
  (132005, 132005, null, 'template', 'fail', 'template_text_too_long', null, 'Translated text too long',
   'Meta error codes: template errors (per message: depends on its parameter values)'),
  (132007, 132007, null, 'template', 'fail', 'template_format_policy', null,
   'Template format character policy violated',
   'Meta error codes: template errors (per message: depends on its parameter values)'),
  (132012, 132012, null, 'template', 'fail', 'template_param_format', null, 'Template parameter format mismatch',
   'Meta error codes: template errors (per message: depends on its parameter values)'),
  (132018, 132018, null, 'template', 'fail', 'template_param_text', null,
   'Template parameter text has a new line, a tab or more than 4 consecutive spaces',
   'Meta error codes: template errors (per message: depends on its parameter values)'),
  -- This request.
  (1, 1, null, 'message', 'retry', 'meta_unknown_error', null, 'API unknown (possible server error)',
   'Meta error codes: other errors'),
  (2, 2, null, 'message', 'retry', 'meta_unavailable', null, 'API service temporarily unavailable',
   'Meta error codes: other errors'),
  (131000, 131000, null, 'message', 'retry', 'meta_error', null, 'Something went wrong',
   'Meta error codes: other errors'),
  (131016, 131016, null, 'message', 'retry', 'meta_unavailable', null, 'Service unavailable',
   'Meta error codes: other errors'),
  (100, 100, null, 'message', 'fail', 'invalid_parameter', null, 'Invalid parameter',
   'Meta error codes: other errors'),
  (131008, 131008, null, 'message', 'fail', 'missing_parameter', null, 'Required parameter is missing',
   'Meta error codes: other errors'),
  (131009, 131009, null, 'message', 'fail', 'invalid_parameter_value', null, 'Parameter value is not valid',
   'Meta error codes: other errors'),
  (131051, 131051, null, 'message', 'fail', 'unsupported_message_type', null, 'Unsupported message type',
   'Meta error codes: other errors'),
  -- This recipient.
  (131021, 131021, null, 'recipient', 'fail', 'recipient_is_sender', null, 'Recipient cannot be sender',
   'Meta error codes: other errors'),
  (131026, 131026, null, 'recipient', 'fail', 'undeliverable', null, 'Message undeliverable',
   'Meta error codes: other errors'),
  (131047, 131047, null, 'recipient', 'fail', 'reengagement_window', null,
   'Re-engagement message (outside the 24 h window)', 'Meta error codes: other errors'),
  (131049, 131049, null, 'recipient', 'fail', 'ecosystem_engagement', null,
   'Not delivered to maintain healthy ecosystem engagement', 'Meta error codes: other errors'),
  (131050, 131050, null, 'recipient', 'opt_out', 'recipient_stopped_marketing', null,
   'User stopped marketing messages', 'Meta error codes: other errors'),
  (131056, 131056, null, 'recipient', 'retry', 'pair_rate_limit', null,
   'Pair rate limit hit (too many messages to this user)', 'Meta error codes: throttling errors'),
  (130472, 130472, null, 'recipient', 'fail', 'experiment', null, 'User''s number is part of an experiment',
   'Meta error codes: other errors'),
  (130497, 130497, null, 'recipient', 'fail', 'country_restricted', null,
   'Business account restricted from messaging users in this country', 'Meta error codes: integrity errors');

-- The rule for a Graph code and subcode, or null: a rule naming the subcode wins
-- over one for any subcode, and a single code over a range. (A table of a few dozen
-- rows: the scan is cheaper than any index.)
create function app.waba_error_rule(code integer, subcode integer default null)
returns app.waba_error_rules
language sql stable
set search_path = ''
as $$
  select r.* from app.waba_error_rules r
  where waba_error_rule.code between r.code and r.code_last
    and (r.subcode is null or r.subcode = waba_error_rule.subcode)
  order by r.subcode is null, r.code_last - r.code
  limit 1
$$;

comment on function app.waba_error_rule(integer, integer) is
  'The app.waba_error_rules row for a Graph code and subcode (subcode-specific first, single code before a range), or null.';

-- The Graph code of a reported error: the explicit waba_code, else the digits of a
-- `waba_<code>` error_code (what dispatchers before waba_code sent).
create function app.waba_code_of(waba_code jsonb, error_code text) returns integer
language sql immutable parallel safe
set search_path = ''
as $$
  select coalesce(
    case when pg_catalog.jsonb_typeof(waba_code) = 'number' and (waba_code #>> '{}') ~ '^[0-9]{1,9}$'
         then (waba_code #>> '{}')::integer end,
    case when error_code ~ '^waba_[0-9]{1,9}$' then pg_catalog.substr(error_code, 6)::integer end)
$$;

-- The rules, for the dispatch function (loaded once per isolate) and for ops.
create function api.waba_error_rules() returns jsonb
language plpgsql stable
security definer
set search_path = ''
as $$
begin
  perform app.authorize(array['admin', 'service']);
  return (select coalesce(jsonb_agg(jsonb_build_object(
            'code', r.code, 'code_last', r.code_last, 'subcode', r.subcode, 'scope', r.scope,
            'action', r.action, 'reason', r.reason, 'cooldown_seconds', r.cooldown_seconds,
            'title', r.title, 'source', r.source)
            order by r.code, r.subcode nulls first), '[]'::jsonb)
          from app.waba_error_rules r);
end;
$$;

revoke execute on function api.waba_error_rules from public;
grant execute on function api.waba_error_rules to authenticated, service_role;

comment on function api.waba_error_rules is
  'Every WhatsApp error rule (code, code_last, subcode, scope, action, reason, cooldown_seconds, title, source).';
