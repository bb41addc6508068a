/**
 * Unit-level rules of the gateway: PostgREST's SQLSTATE → HTTP table, the SQL
 * literal quoting the one-round-trip statement relies on, and the nesting scan.
 */
import assert from "node:assert/strict";
// Unit tests of the gateway's private modules (the one module under test, as in Deno std).
import { pgErrorStatus } from "../../local/gateway/_errors.ts";
import { quoteIdent, quoteLiteral, SqlLiteralError } from "../../local/gateway/_sql.ts";
import { arrayDimensions, nestingDepth } from "../../local/gateway/_nesting.ts";
import { withSuperuser } from "./_helpers.ts";

Deno.test("pgErrorStatus() follows PostgREST's SQLSTATE → HTTP status table", () => {
  const table: [code: string, message: string, authed: boolean, status: number][] = [
    ["08006", "connection failure", true, 503],
    ["09000", "triggered action", true, 500],
    ["0L000", "invalid grantor", true, 403],
    ["0P000", "invalid role specification", true, 403],
    ["23503", "fk", true, 409],
    ["23505", "unique", true, 409],
    ["23514", "check", true, 400],
    ["22P02", "invalid input syntax", true, 400],
    ["22023", 'role "x" does not exist', true, 401],
    ["22023", "invalid parameter value", true, 400],
    ["25006", "read-only transaction", true, 405],
    ["25P02", "in failed transaction", true, 500],
    ["28000", "invalid authorization", true, 403],
    ["40001", "serialization failure", true, 500],
    ["40P01", "deadlock detected", true, 500],
    ["42501", "permission denied", false, 401],
    ["42501", "permission denied", true, 403],
    ["42883", "function does not exist", true, 404],
    ["42P01", "relation does not exist", true, 404],
    ["42P17", "infinite recursion", true, 500],
    ["53400", "config limit exceeded", true, 500],
    ["53300", "too many connections", true, 503],
    ["54000", "program limit exceeded", true, 500],
    ["57014", "canceling statement due to statement timeout", true, 500],
    ["57P01", "terminating connection", true, 503],
    ["57P02", "crash of another server process", true, 503], // PostgREST: 500 (see _errors.ts)
    ["57P03", "the database system is starting up", true, 503],
    ["P0001", "raise exception", true, 400],
    ["P0002", "no data found", true, 500],
    ["PT402", "payment required", true, 402],
    ["XX000", "internal error", true, 500],
    ["42703", "column does not exist", true, 400],
  ];
  for (const [code, message, authed, status] of table) {
    assert.equal(pgErrorStatus(code, message, authed), status, `${code} (${message})`);
  }
});

Deno.test("quoteLiteral() round-trips hostile strings, whatever standard_conforming_strings is", async () => {
  const values = [
    "",
    "plain",
    "it's",
    "''",
    "\\",
    "back\\slash \\' mixed",
    "\\'; select 1; --",
    "'); drop table app.vouchers; --",
    "$$ dollar $q$ $$",
    "E'x'",
    '{"json": "with \\"quotes\\" and \\\\ backslashes"}',
    "ünïcödé ✓ 🚀",
    "new\nline\ttab\rreturn",
  ];
  await withSuperuser(async (sql) => {
    for (const conforming of ["on", "off"]) {
      // A query of its own: the setting applies when the next query is parsed.
      await sql.unsafe(`set standard_conforming_strings = ${conforming}`);
      for (const value of values) {
        const [row] = await sql.unsafe(`select ${quoteLiteral(value)}::text as v`);
        assert.equal(row.v, value, `standard_conforming_strings = ${conforming}`);
      }
    }
    await sql.unsafe("reset standard_conforming_strings");
    const [row] = await sql.unsafe(`select 1 as ${quoteIdent('we"ird')}`);
    assert.equal(row['we"ird'], 1);
  });
  assert.throws(() => quoteLiteral("nul\0byte"), SqlLiteralError);
});

Deno.test("nestingDepth() counts brackets outside strings, iteratively, and stops past the limit", () => {
  assert.equal(nestingDepth('{"a":[1,[2]]}', "json"), 3);
  assert.equal(nestingDepth('"[[[[" ', "json"), 0);
  assert.equal(
    nestingDepth('["\\"[[", [1]]', "json"),
    2,
    "an escaped quote does not end the string",
  );
  assert.equal(nestingDepth("{{1,2},{3,4}}", "array"), 2);
  assert.equal(nestingDepth('{"{{{",{1}}', "array"), 2, "quoted elements of an array literal");
  assert.equal(nestingDepth("[".repeat(1_000_000), "json", 64), 65, "no stack, no full scan");
  assert.equal(arrayDimensions([[1, 2], [3, [4]]]), 3);
  assert.equal(arrayDimensions([{ a: [[1]] }]), 1, "objects stop the count");
});
