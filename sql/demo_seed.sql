-- A small demo dataset for the local stack (`deno task start` loads it; idempotent).
-- Two stations, an admin and a station operator (ids fixed so `deno task token`
-- can mint their JWTs), one campaign and ten vouchers with predictable codes
-- (`DEM0…`) for the README's examples. Not a migration: never runs in production.

insert into auth.users (id, email) values
  ('00000000-0000-4000-8000-00000000a001', 'admin@demo.local'),
  ('00000000-0000-4000-8000-00000000b001', 'operator@demo.local')
on conflict (id) do nothing;

insert into app.stations (id, code, name, region) values
  ('00000000-0000-4000-8000-00000000c001', 'DEMO-001', 'Demo Station Westlands', 'Nairobi'),
  ('00000000-0000-4000-8000-00000000c002', 'DEMO-002', 'Demo Station Mombasa Road', 'Nairobi')
on conflict (id) do nothing;

insert into app.staff (user_id, role, station_id) values
  ('00000000-0000-4000-8000-00000000a001', 'admin', null),
  ('00000000-0000-4000-8000-00000000b001', 'station_operator', '00000000-0000-4000-8000-00000000c001')
on conflict (user_id) do nothing;

insert into app.campaigns (id, name, amount_minor, currency, starts_at, expires_at)
values ('00000000-0000-4000-8000-00000000d001', 'Demo: KES 500 off fuel', 50000, 'KES',
        '2026-01-01T00:00:00Z', '2030-01-01T00:00:00Z')
on conflict (id) do nothing;

insert into app.voucher_batches (id, campaign_id, issued, expires_at)
values ('00000000-0000-4000-8000-00000000e001', '00000000-0000-4000-8000-00000000d001', 10,
        '2030-01-01T00:00:00Z')
on conflict (id) do nothing;

-- Predictable codes: data "DEM0" + 10 digits, then the check character.
insert into app.vouchers (code, campaign_id, batch_id, amount_minor, currency, expires_at)
select data || app.code_check_char(data), '00000000-0000-4000-8000-00000000d001',
       '00000000-0000-4000-8000-00000000e001', 50000, 'KES', '2030-01-01T00:00:00Z'
from (select 'DEM0' || lpad(n::text, 10, '0') as data from generate_series(1, 10) n) d
on conflict (code) do nothing;

-- Passwords for the gateway's local Supabase Auth stand-in (local/gateway/_auth.ts),
-- so the station PWA signs in with supabase.auth.signInWithPassword as on hosted
-- Supabase (bcrypt in auth.users.encrypted_password, as crypt() makes it).

update auth.users
set encrypted_password = extensions.crypt(
      case id when '00000000-0000-4000-8000-00000000b001'::uuid then 'operator-demo-password'
              else 'admin-demo-password' end,
      extensions.gen_salt('bf', 8))
where id in ('00000000-0000-4000-8000-00000000a001', '00000000-0000-4000-8000-00000000b001')
  and encrypted_password is null;
