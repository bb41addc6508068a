/**
 * docs/api.md stays true to the database it documents (the running local stack):
 * every error code the SQL can raise has a row, every documented RPC exists with
 * the documented arguments, and every function of schema `api` is documented.
 *
 * The page's parseable convention (stated in a comment at its top): each RPC is
 * a heading `### \`name(arg, optional_arg?)\``, each error code a row of the
 * table under `## Error codes` whose first cell is the code in backticks.
 */
import assert from "node:assert/strict";
import { ownerDb, sqlErrorCodes } from "./_support.ts";

const DOC_PATH = new URL("../docs/api.md", import.meta.url);
const doc = await Deno.readTextFile(DOC_PATH);

/** One documented RPC: its heading's name and arguments (`?` = optional). */
interface DocumentedRpc {
  name: string;
  args: { name: string; optional: boolean }[];
  line: number;
}

function documentedRpcs(markdown: string): DocumentedRpc[] {
  const rpcs: DocumentedRpc[] = [];
  markdown.split("\n").forEach((text, i) => {
    if (!text.startsWith("### `")) return;
    const m = /^### `([a-z_][a-z0-9_]*)\(([^()]*)\)`$/.exec(text.trim());
    if (!m) {
      throw new Error(
        `docs/api.md line ${i + 1}: an RPC heading must read ### \`name(args)\`, got: ${text}`,
      );
    }
    const args = m[2].trim() === "" ? [] : m[2].split(",").map((a) => a.trim()).map((a) => ({
      name: a.replace(/\?$/, ""),
      optional: a.endsWith("?"),
    }));
    rpcs.push({ name: m[1], args, line: i + 1 });
  });
  return rpcs;
}

/** Codes in the first cell of the rows of the table under `## Error codes`. */
function documentedErrorCodes(markdown: string): Set<string> {
  const start = markdown.indexOf("\n## Error codes\n");
  if (start < 0) throw new Error('docs/api.md has no "## Error codes" section');
  const next = markdown.indexOf("\n## ", start + 1);
  const section = markdown.slice(start, next < 0 ? undefined : next);
  const codes = new Set<string>();
  for (const line of section.split("\n")) {
    const m = /^\|\s*`([^`]+)`\s*\|/.exec(line);
    if (m) codes.add(m[1]);
  }
  return codes;
}

/** The functions of schema `api` with their input arguments, from the catalog. */
async function apiFunctions(): Promise<Map<string, { name: string; optional: boolean }[]>> {
  const sql = ownerDb(1);
  try {
    const rows = await sql`
      select p.proname as name,
             coalesce(p.proargnames, '{}') as names,
             coalesce(p.proargmodes::text[], '{}') as modes,
             p.pronargs::int as nargs,
             p.pronargdefaults::int as ndefaults
      from pg_proc p
      join pg_namespace n on n.oid = p.pronamespace and n.nspname = 'api'
      where p.prokind = 'f'
      order by 1`;
    const functions = new Map<string, { name: string; optional: boolean }[]>();
    for (const r of rows) {
      const names = r.names as string[];
      const modes = r.modes as string[];
      const inputs = names.filter((_, i) =>
        modes.length === 0 || ["i", "b", "v"].includes(modes[i])
      );
      functions.set(
        r.name,
        inputs.map((name, i) => ({ name, optional: i >= r.nargs - r.ndefaults })),
      );
    }
    return functions;
  } finally {
    await sql.end();
  }
}

Deno.test("docs/api.md has a row for every error code the SQL can raise", async () => {
  const sql = ownerDb(1);
  let raised: Set<string>;
  try {
    raised = await sqlErrorCodes(sql);
  } finally {
    await sql.end();
  }
  assert.ok(raised.size > 0, "the catalog yielded error codes");
  const documented = documentedErrorCodes(doc);
  const missing = [...raised].filter((code) => !documented.has(code)).sort();
  assert.deepEqual(
    missing,
    [],
    `docs/api.md lacks a row in "## Error codes" for: ${missing.join(", ")}`,
  );
  // Business codes (lower_snake_case) must be ones the SQL raises; 42501 and
  // PGRST* come from Postgres and PostgREST.
  const stale = [...documented].filter((c) => /^[a-z][a-z_]*$/.test(c) && !raised.has(c)).sort();
  assert.deepEqual(
    stale,
    [],
    `docs/api.md documents error codes no SQL raises: ${stale.join(", ")}`,
  );
});

Deno.test("every RPC docs/api.md documents is a function of schema api, with those arguments", async () => {
  const functions = await apiFunctions();
  const rpcs = documentedRpcs(doc);
  assert.ok(rpcs.length > 0, "docs/api.md documents RPCs");
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const rpc of rpcs) {
    if (seen.has(rpc.name)) problems.push(`${rpc.name} (line ${rpc.line}) is documented twice`);
    seen.add(rpc.name);
    const actual = functions.get(rpc.name);
    if (!actual) {
      problems.push(`${rpc.name} (line ${rpc.line}) is not a function of schema api`);
      continue;
    }
    const show = (args: { name: string; optional: boolean }[]) =>
      `(${args.map((a) => a.name + (a.optional ? "?" : "")).join(", ")})`;
    if (show(rpc.args) !== show(actual)) {
      problems.push(
        `${rpc.name} (line ${rpc.line}) is documented as ${rpc.name}${
          show(rpc.args)
        } but is api.${rpc.name}${show(actual)}`,
      );
    }
  }
  assert.deepEqual(problems, [], `docs/api.md is out of step:\n  ${problems.join("\n  ")}`);
});

Deno.test("every function of schema api is documented in docs/api.md", async () => {
  const functions = await apiFunctions();
  assert.ok(functions.size > 0, "schema api has functions");
  const documented = new Set(documentedRpcs(doc).map((r) => r.name));
  const undocumented = [...functions.keys()].filter((name) => !documented.has(name)).sort();
  assert.deepEqual(
    undocumented,
    [],
    `docs/api.md has no ### \`name(args)\` heading for: ${
      undocumented.map((n) => `api.${n}`).join(", ")
    }`,
  );
});

/** The pause reasons a document names: table rows (`| \`reason\` |`) or, in prose, every `snake_case` word in backticks. */
function namedReasons(text: string, table: boolean): Set<string> {
  const pattern = table ? /^\|\s*`([a-z_]+)`\s*\|/gm : /`([a-z]+(?:_[a-z]+)*)`/g;
  return new Set([...text.matchAll(pattern)].map((m) => m[1]));
}

Deno.test("docs/channel_health.md's table and the README's Channel health section explain every pause reason the database knows", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const start = readme.indexOf("\n## Channel health\n");
  assert.ok(start >= 0, 'README.md has a "## Channel health" section');
  const section = readme.slice(start, readme.indexOf("\n## ", start + 1));
  const guide = await Deno.readTextFile(new URL("../docs/channel_health.md", import.meta.url));
  const sql = ownerDb(1);
  try {
    const reasons = (await sql`select reason from app.pause_reasons order by reason`)
      .map((r) => r.reason as string);
    const table = namedReasons(guide, true);
    const prose = namedReasons(section, false);
    const missing = (named: Set<string>) => reasons.filter((r) => !named.has(r));
    assert.deepEqual(missing(table), [], "docs/channel_health.md's table lacks these reasons");
    assert.deepEqual(missing(prose), [], "README.md's Channel health section lacks these reasons");
    const stale = [...table].filter((r) => !reasons.includes(r));
    assert.deepEqual(
      stale,
      [],
      "docs/channel_health.md explains reasons the database does not have",
    );
  } finally {
    await sql.end();
  }
});
