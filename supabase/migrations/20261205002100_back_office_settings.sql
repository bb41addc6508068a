-- Back-office settings: the few operator-wide knobs the back-office RPCs read
-- (the undo window, the resend limits), one typed row so that each has a
-- constraint and a default, changed only through api.update_settings and
-- audited like every admin change.

create table app.settings (
  -- Exactly one row.
  id boolean primary key default true check (id),
  -- How long after a redemption the redeeming station's operator may undo it
  -- (an admin may at any time). Default 15 minutes.
  undo_window_seconds integer not null default 900 check (undo_window_seconds between 0 and 86400),
  -- A voucher's message is resent at most this often (per original message)...
  resend_cooldown_seconds integer not null default 300 check (resend_cooldown_seconds between 0 and 86400),
  -- ...and at most this many times.
  max_resends_per_message integer not null default 3 check (max_resends_per_message between 0 and 20),
  updated_at timestamptz not null default now()
);

insert into app.settings default values;

comment on table app.settings is
  'Back-office settings (one row): undo window for station operators, resend cooldown and limit.';

alter table app.settings enable row level security;

create trigger settings_audit
  after update on app.settings
  for each row execute function app.audit_row_change('id', 'updated_at');

-- The settings as the API returns them.
create function app.settings_view() returns jsonb
language sql stable
set search_path = ''
as $$
  select pg_catalog.to_jsonb(s) - 'id' from app.settings s
$$;

create function api.get_settings() returns jsonb
language plpgsql stable
security definer
set search_path = ''
as $$
begin
  perform app.authorize(array['admin', 'service']);
  return app.settings_view();
end;
$$;

revoke execute on function api.get_settings from public;
grant execute on function api.get_settings to authenticated, service_role;

-- Null arguments keep their value. Naturally idempotent: setting a value twice
-- changes (and audits) nothing the second time.
create function api.update_settings(
  undo_window_seconds integer default null,
  resend_cooldown_seconds integer default null,
  max_resends_per_message integer default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform app.authorize(array['admin', 'service']);
  if undo_window_seconds is not null and undo_window_seconds not between 0 and 86400 then
    perform app.raise_error('invalid_setting',
      format('undo_window_seconds must be between 0 and 86400, got %s.', undo_window_seconds), 400,
      jsonb_build_object('field', 'undo_window_seconds'));
  end if;
  if resend_cooldown_seconds is not null and resend_cooldown_seconds not between 0 and 86400 then
    perform app.raise_error('invalid_setting',
      format('resend_cooldown_seconds must be between 0 and 86400, got %s.', resend_cooldown_seconds), 400,
      jsonb_build_object('field', 'resend_cooldown_seconds'));
  end if;
  if max_resends_per_message is not null and max_resends_per_message not between 0 and 20 then
    perform app.raise_error('invalid_setting',
      format('max_resends_per_message must be between 0 and 20, got %s.', max_resends_per_message), 400,
      jsonb_build_object('field', 'max_resends_per_message'));
  end if;
  update app.settings s set
    undo_window_seconds = coalesce(update_settings.undo_window_seconds, s.undo_window_seconds),
    resend_cooldown_seconds = coalesce(update_settings.resend_cooldown_seconds, s.resend_cooldown_seconds),
    max_resends_per_message = coalesce(update_settings.max_resends_per_message, s.max_resends_per_message),
    updated_at = now()
  where s.id;
  return app.settings_view();
end;
$$;

revoke execute on function api.update_settings from public;
grant execute on function api.update_settings to authenticated, service_role;
