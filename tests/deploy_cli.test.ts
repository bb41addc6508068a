/**
 * The deploy guide's CLI steps that need no hosted project, run with the pinned
 * Supabase CLI against local databases (the guide is docs/deploy.md):
 * `db push --dry-run` against a fresh database lists every migration, in order,
 * and applies nothing; `migration list` shows the local database at exactly the
 * repository's migrations. (The real `db push` applies them on every
 * `deno task start`: local/cluster.ts migrates with it, as `postgres`.)
 *
 * @module
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { CLI_DB_URL, DB_URL, PG_PORT, ROOT, supabaseCli } from "../local/cluster.ts";

async function cli(args: string[]): Promise<{ ok: boolean; out: string }> {
  const res = await new Deno.Command(supabaseCli(), {
    args,
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(res.stdout) + new TextDecoder().decode(res.stderr);
  return { ok: res.success, out: text };
}

async function migrationVersions(): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(`${ROOT}/supabase/migrations`)) {
    if (e.name.endsWith(".sql")) names.push(e.name);
  }
  return names.sort();
}

Deno.test("supabase db push --dry-run against a fresh database lists every migration in order and applies none", async () => {
  const sql = postgres(DB_URL, { max: 1, onnotice: () => {} });
  const db = `deploy_dry_run_${crypto.randomUUID().slice(0, 8)}`;
  await sql.unsafe(`create database ${db}`);
  try {
    const url = `postgresql://postgres:postgres@127.0.0.1:${PG_PORT}/${db}?sslmode=disable`;
    const { ok, out } = await cli(["db", "push", "--dry-run", "--db-url", url]);
    assert.ok(ok, out);
    const listed = [...out.matchAll(/•\s+(\S+\.sql)/g)].map((m) => m[1]);
    assert.deepEqual(listed, await migrationVersions());
    const target = postgres(url.replace("?sslmode=disable", ""), { max: 1, onnotice: () => {} });
    try {
      const [{ n }] = await target`
        select count(*)::integer as n from information_schema.schemata
        where schema_name in ('app', 'api', 'supabase_migrations')`;
      assert.equal(n, 0, "a dry run changes nothing");
    } finally {
      await target.end();
    }
  } finally {
    await sql.unsafe(`drop database if exists ${db} with (force)`);
    await sql.end();
  }
});

Deno.test("supabase migration list: the local database is at exactly the repository's migrations", async () => {
  const { ok, out } = await cli(["migration", "list", "--db-url", CLI_DB_URL]);
  assert.ok(ok, out);
  const rows = [...out.matchAll(/`(\d{14})`\s*\|\s*`(\d{14})`/g)].map((m) => [m[1], m[2]]);
  const versions = (await migrationVersions()).map((name) => name.slice(0, 14));
  assert.deepEqual(rows, versions.map((v) => [v, v]));
});
