/**
 * Where the gateway once diverged from PostgREST, and the bad input an attacker
 * with the publishable key alone can send: each step names the PostgREST source
 * (github.com/PostgREST/postgrest) whose behaviour it mirrors, or says where the
 * local gateway deliberately differs from hosted (a 400 where PostgREST's
 * answer would be a 500).
 */
import assert from "node:assert/strict";
import { PUBLISHABLE_KEY } from "../../local/env.ts";
import { client, request, runSql, startGateway } from "./_helpers.ts";
import { SETUP_SQL, TEARDOWN_SQL } from "./_sql_fixture.ts";

/** `depth` levels of `[…]` around `inner`, built without recursion. */
function nestedArrays(depth: number, inner = "1"): string {
  return "[".repeat(depth) + inner + "]".repeat(depth);
}

Deno.test("gateway fidelity to PostgREST: GET arguments, request.headers, bodies, nesting", async (t) => {
  await runSql(SETUP_SQL);
  const gw = await startGateway();
  const anon = client(gw.url, undefined, PUBLISHABLE_KEY);
  const rpcUrl = (fn: string, query = "") => `${gw.url}/rest/v1/rpc/${fn}${query}`;
  const post = (fn: string, body: string, headers: Record<string, string> = {}) =>
    request(rpcUrl(fn), {
      method: "POST",
      headers: { apikey: PUBLISHABLE_KEY, "Content-Type": "application/json", ...headers },
      body,
    });
  const get = (fn: string, query: string) =>
    request(rpcUrl(fn, query), { headers: { apikey: PUBLISHABLE_KEY } });
  const code = (res: { json: unknown }) => (res.json as { code?: string })?.code;

  try {
    await t.step(
      "GET casts each argument's text to its parameter type, so jsonb gets an object (Plan/CallPlan.hs DirectArgs, Query/QueryBuilder.hs fmtArgs)",
      async () => {
        const viaJs = await anon.rpc("gw_test_doc", { doc: JSON.stringify({ a: 1 }) }, {
          get: true,
        });
        assert.deepEqual([viaJs.status, viaJs.data], [200, { type: "object", doc: { a: 1 } }]);
        const raw = await get("gw_test_doc", `?doc=${encodeURIComponent('[1,{"b":null}]')}`);
        assert.deepEqual([raw.status, raw.json], [200, {
          type: "array",
          doc: [1, { b: null }],
        }]);
        const notJson = await get("gw_test_doc", "?doc=not-json");
        assert.deepEqual([notJson.status, code(notJson)], [400, "22P02"]);
        const arrays = await anon.rpc("gw_test_count", { vals: [4, 5, 6] }, { get: true });
        assert.deepEqual([arrays.status, arrays.data], [200, 3]);
      },
    );

    await t.step(
      "GET: a repeated argument takes its last value, a variadic one all of them (Plan/CallPlan.hs toRpcParams)",
      async () => {
        const repeated = await get("gw_test_add", "?a=1&a=5");
        assert.deepEqual([repeated.status, repeated.json], [200, 15]);
        const variadic = await get("gw_test_variadic", "?vals=1&vals=2&vals=3");
        assert.deepEqual([variadic.status, variadic.json], [200, 3]);
      },
    );

    await t.step(
      "request.headers leaves the cookie header out; request.cookies has the cookies (ApiRequest.hs iHdrs)",
      async () => {
        const res = await post("gw_test_whoami", "{}", { Cookie: "session=abc; theme=dark" });
        const who = res.json as {
          headers: Record<string, string>;
          cookies: Record<string, string>;
        };
        assert.equal(res.status, 200);
        assert.equal(who.headers.cookie, undefined);
        assert.equal(who.headers.apikey, PUBLISHABLE_KEY, "the other headers are there");
        assert.deepEqual(who.cookies, { session: "abc", theme: "dark" });
      },
    );

    await t.step(
      "an array body of anything but same-keyed objects is 400 PGRST102 'All object keys must match' (ApiRequest/Payload.hs payloadAttributes)",
      async () => {
        for (const body of ["[1, 2]", '["a"]', '[{"a": 1}, {"b": 2}]', '[{"a": 1}, 2]', "[[]]"]) {
          const res = await post("gw_test_defaults", body);
          assert.deepEqual([res.status, res.json], [400, {
            code: "PGRST102",
            message: "All object keys must match",
            details: null,
            hint: null,
          }], body);
        }
        const wholeBody = await post("gw_test_json", "[1, 2]");
        assert.equal(wholeBody.status, 400, "refused before the function is even chosen");
      },
    );

    await t.step(
      "an array of same-keyed objects is read as its first object (Query/SqlFragment.hs fromJsonBodyF … LIMIT 1)",
      async () => {
        const res = await post("gw_test_add", '[{"a": 2}, {"a": 30}]');
        assert.deepEqual([res.status, res.json], [200, 12]);
        const whole = await post("gw_test_json", '[{"x": 1}, {"x": 2}]');
        assert.deepEqual(
          whole.json,
          { received: [{ x: 1 }, { x: 2 }] },
          "a json parameter gets it all",
        );
      },
    );

    await t.step(
      "a scalar or [] body means no arguments, exactly like {} (Payload.hs: 'truncate everything else to an empty array')",
      async () => {
        for (const body of ["5", '"text"', "true", "null", "[]", ""]) {
          const res = await post("gw_test_defaults", body);
          assert.deepEqual([res.status, res.json], [200, 7], JSON.stringify(body));
        }
        const needsArgs = await post("gw_test_add", "5");
        assert.deepEqual([needsArgs.status, code(needsArgs)], [404, "PGRST202"]);
        const wholeBody = await post("gw_test_json", "5");
        assert.deepEqual(wholeBody.json, { received: [] }, "a json parameter gets the truncation");
        const blank = await post("gw_test_defaults", "  ");
        assert.deepEqual([blank.status, code(blank)], [400, "PGRST102"], "whitespace is not JSON");
      },
    );

    await t.step(
      "JSON nested 100,000 deep is 400 PGRST102, not 500 (hosted PostgREST: 500, SQLSTATE 54001)",
      async () => {
        const body = `{"doc": ${nestedArrays(100_000)}}`;
        const res = await post("gw_test_doc", body);
        assert.equal(res.status, 400);
        assert.deepEqual(res.json, {
          code: "PGRST102",
          message: "The request body nests JSON deeper than 64 levels",
          details: null,
          hint: "Arguments may nest JSON at most 64 levels and arrays at most 6 dimensions",
        });
        const viaJsonParam = await post("gw_test_json", nestedArrays(50_000));
        assert.deepEqual([viaJsonParam.status, code(viaJsonParam)], [400, "PGRST102"]);
        const objects = await post(
          "gw_test_doc",
          `{"doc": ${'{"a":'.repeat(70)}1${"}".repeat(70)}}`,
        );
        assert.deepEqual([objects.status, code(objects)], [400, "PGRST102"]);
        const atTheLimit = await post("gw_test_doc", `{"doc": ${nestedArrays(63)}}`);
        assert.deepEqual([atTheLimit.status, (atTheLimit.json as { type: string }).type], [
          200,
          "array",
        ]);
        const inAString = await post(
          "gw_test_doc",
          `{"doc": ${JSON.stringify("[".repeat(10_000))}}`,
        );
        assert.equal(inAString.status, 200, "brackets inside a string are not nesting");
      },
    );

    await t.step(
      "a GET jsonb argument nested beyond the cap is 400 PGRST100 (hosted passes it to Postgres)",
      async () => {
        const res = await get("gw_test_doc", `?doc=${encodeURIComponent(nestedArrays(1000))}`);
        assert.deepEqual([res.status, code(res)], [400, "PGRST100"]);
        assert.equal(
          (res.json as { message: string }).message,
          'The argument "doc" nests JSON deeper than 64 levels',
        );
      },
    );

    await t.step(
      "an array argument of more than 6 dimensions is 400, in a body or a query (hosted: 500, 54000)",
      async () => {
        const deep = await post("gw_test_count", `{"vals": ${nestedArrays(1000)}}`);
        assert.deepEqual([deep.status, code(deep)], [400, "PGRST102"]);
        const seven = await post("gw_test_count", `{"vals": ${nestedArrays(7)}}`);
        assert.deepEqual([seven.status, seven.json], [400, {
          code: "PGRST102",
          message: 'The argument "vals" has more than 6 array dimensions',
          details: null,
          hint: "Arguments may nest JSON at most 64 levels and arrays at most 6 dimensions",
        }]);
        const six = await post("gw_test_count", `{"vals": ${nestedArrays(6)}}`);
        assert.deepEqual([six.status, six.json], [200, 1], "Postgres takes 6 dimensions");
        const literal = "{".repeat(1000) + "1" + "}".repeat(1000);
        const viaGet = await get("gw_test_count", `?vals=${encodeURIComponent(literal)}`);
        assert.deepEqual([viaGet.status, code(viaGet)], [400, "PGRST100"]);
        const firstOfArray = await post("gw_test_count", `[{"vals": ${nestedArrays(9)}}]`);
        assert.deepEqual([firstOfArray.status, code(firstOfArray)], [400, "PGRST102"]);
      },
    );
  } finally {
    await gw.shutdown();
    await runSql(TEARDOWN_SQL);
  }
});
