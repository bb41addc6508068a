/**
 * `Accept: text/csv` on `/rest/v1/rpc/<fn>`: the gateway renders CSV as
 * PostgREST does (its `asCsvF`, and the "returns CSV" cases of its RpcSpec):
 * a header of column names, each row as Postgres renders a record without its
 * parentheses (quoting by Postgres's rules, NULL empty), `\n` between lines,
 * `Content-Type: text/csv; charset=utf-8`. Exercised with supabase-js `.csv()`
 * and raw fetch, against throwaway functions.
 *
 * Run: `deno test -A tests/gateway/csv.test.ts` (needs the local cluster).
 */
import assert from "node:assert/strict";
import { ANON_KEY, mintJwt } from "../../local/env.ts";
import { client, request, runSql, startGateway } from "./_helpers.ts";

const TEARDOWN = `
drop function if exists api.gw_csv_rows(integer);
drop function if exists api.gw_csv_tricky();
drop function if exists api.gw_csv_ints(integer);
drop function if exists api.gw_csv_scalar();
drop function if exists api.gw_csv_void();
drop function if exists api.gw_csv_fail();
drop type if exists api.gw_csv_row;
`;

const SETUP = `
${TEARDOWN}
create function api.gw_csv_rows(n integer) returns table(id integer, label text)
language sql stable as $$ select g, 'row-' || g from generate_series(1, n) g $$;

create type api.gw_csv_row as (
  plain text, comma text, quote text, newline text, nothing text, flag boolean, amount numeric,
  doc jsonb, list integer[], spaced text, backslash text, empty text
);
create function api.gw_csv_tricky() returns setof api.gw_csv_row
language sql stable as $$
  select 'plain', 'a, b', 'say "hi"', e'two\\nlines', null, true, 12.50,
         '{"k": [1, 2]}'::jsonb, array[1, 2], ' padded ', 'back\\slash', ''
$$;

create function api.gw_csv_ints(n integer) returns setof integer
language sql stable as $$ select generate_series(1, n) $$;

create function api.gw_csv_scalar() returns jsonb
language sql stable as $$ select '{"a": 1}'::jsonb $$;

create function api.gw_csv_void() returns void language sql as $$ select $$;

create function api.gw_csv_fail() returns setof integer language plpgsql as $$
begin
  raise sqlstate 'PGRST' using message = '{"code":"csv_refused","message":"No CSV for you"}',
    detail = '{"status":409,"headers":{}}';
end $$;

grant execute on function api.gw_csv_rows(integer), api.gw_csv_tricky(), api.gw_csv_ints(integer),
  api.gw_csv_scalar(), api.gw_csv_void(), api.gw_csv_fail() to anon, authenticated;
`;

Deno.test("the gateway answers Accept: text/csv as PostgREST does", async (t) => {
  await runSql(SETUP);
  const gw = await startGateway();
  const anon = client(gw.url);
  const rpcUrl = (fn: string, query = "") => `${gw.url}/rest/v1/rpc/${fn}${query}`;
  const csv = (fn: string, body: unknown, accept = "text/csv", method = "POST") =>
    request(
      rpcUrl(
        fn,
        method === "POST" ? "" : `?${new URLSearchParams(body as Record<string, string>)}`,
      ),
      {
        method,
        headers: { apikey: ANON_KEY, "Content-Type": "application/json", Accept: accept },
        ...(method === "POST" ? { body: JSON.stringify(body) } : {}),
      },
    );
  try {
    await t.step(
      "a set of rows: header, then one line per row (PostgREST's RpcSpec case)",
      async () => {
        const res = await csv("gw_csv_rows", { n: 2 });
        assert.equal(res.status, 200);
        assert.equal(res.text, "id,label\n1,row-1\n2,row-2");
        assert.equal(res.headers.get("content-type"), "text/csv; charset=utf-8");
        assert.equal(res.headers.get("content-range"), "0-1/*");
      },
    );

    await t.step("supabase-js .csv() gets the same text", async () => {
      const { data, error, status } = await anon.rpc("gw_csv_rows", { n: 3 }).csv();
      assert.equal(error, null);
      assert.equal(status, 200);
      assert.equal(data, "id,label\n1,row-1\n2,row-2\n3,row-3");
    });

    await t.step("values are rendered as Postgres renders a record; NULL is empty", async () => {
      const res = await csv("gw_csv_tricky", {});
      assert.equal(
        res.text,
        "plain,comma,quote,newline,nothing,flag,amount,doc,list,spaced,backslash,empty\n" +
          'plain,"a, b","say ""hi""","two\nlines",,t,12.50,"{""k"": [1, 2]}","{1,2}"," padded ","back\\\\slash",""',
      );
    });

    await t.step("a set of scalars has the one column pgrst_scalar", async () => {
      const res = await csv("gw_csv_ints", { n: 3 });
      assert.equal(res.text, "pgrst_scalar\n1\n2\n3");
    });

    await t.step("an empty set is an empty header line", async () => {
      const res = await csv("gw_csv_rows", { n: 0 });
      assert.deepEqual([res.status, res.text, res.headers.get("content-range")], [
        200,
        "\n",
        "*/*",
      ]);
    });

    await t.step("a scalar result is one row of pgrst_scalar", async () => {
      const res = await csv("gw_csv_scalar", {});
      assert.equal(res.text, 'pgrst_scalar\n"{""a"": 1}"');
    });

    await t.step("GET and HEAD of a stable function", async () => {
      const get = await csv("gw_csv_rows", { n: "2" }, "text/csv", "GET");
      assert.equal(get.text, "id,label\n1,row-1\n2,row-2");
      const head = await csv("gw_csv_rows", { n: "2" }, "text/csv", "HEAD");
      assert.deepEqual([head.status, head.text, head.headers.get("content-type")], [
        200,
        "",
        "text/csv; charset=utf-8",
      ]);
    });

    await t.step("the client's order of preference decides, as in PostgREST", async () => {
      const first = await csv("gw_csv_rows", { n: 1 }, "text/csv, application/json");
      assert.equal(first.headers.get("content-type"), "text/csv; charset=utf-8");
      const second = await csv("gw_csv_rows", { n: 1 }, "application/json, text/csv");
      assert.deepEqual(second.json, [{ id: 1, label: "row-1" }]);
      const unknownThenCsv = await csv("gw_csv_rows", { n: 1 }, "text/unknown, text/csv");
      assert.equal(unknownThenCsv.text, "id,label\n1,row-1");
    });

    await t.step("max_rows and Prefer: count=exact apply as for JSON", async () => {
      const res = await request(rpcUrl("gw_csv_rows"), {
        method: "POST",
        headers: {
          apikey: ANON_KEY,
          "Content-Type": "application/json",
          Accept: "text/csv",
          Prefer: "count=exact",
        },
        body: JSON.stringify({ n: 60 }),
      });
      assert.equal(res.text.split("\n").length, 51, "header and max_rows (50) rows");
      assert.equal(res.headers.get("content-range"), "0-49/60");
    });

    await t.step("errors stay JSON; void stays 204", async () => {
      const fail = await csv("gw_csv_fail", {});
      assert.equal(fail.status, 409);
      assert.equal((fail.json as { code: string }).code, "csv_refused");
      const jwt = await mintJwt({ sub: crypto.randomUUID() });
      const voided = await client(gw.url, jwt).rpc("gw_csv_void").csv();
      assert.deepEqual([voided.status, voided.data, voided.error], [204, null, null]);
    });
  } finally {
    await gw.shutdown();
    await runSql(TEARDOWN);
  }
});
