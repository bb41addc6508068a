-- The Vault secrets the dispatch tick reads (app.invoke_dispatch), for the local
-- stack: `deno task start` runs this with psql variables `url` (the gateway's
-- URL) and `key` (the local service key). On Supabase an operator creates the
-- same two secrets once (README, "Deploying to Supabase"). Idempotent.
select vault.update_secret(s.id, :'url') from vault.secrets s where s.name = 'project_url';
select vault.create_secret(:'url', 'project_url')
where not exists (select from vault.secrets s where s.name = 'project_url');
select vault.update_secret(s.id, :'key') from vault.secrets s where s.name = 'service_key';
select vault.create_secret(:'key', 'service_key')
where not exists (select from vault.secrets s where s.name = 'service_key');
