/**
 * Contract of the local gateway against PostgREST, exercised with the real
 * `@supabase/supabase-js` (and raw fetch where the HTTP details matter).
 *
 * Run: `deno test -A tests/gateway/` (needs the local cluster on 54322).
 */
import assert from "node:assert/strict";
import { ANON_KEY, mintJwt, SERVICE_ROLE_KEY } from "../../local/env.ts";
import { client, request, runSql, startGateway } from "./_helpers.ts";
import { SETUP_SQL, TEARDOWN_SQL } from "./_sql_fixture.ts";

const USER_ID = "00000000-0000-4000-8000-0000000c0ffe";
const OTHER_SECRET = "another-secret-that-is-at-least-32-characters-long";

Deno.test("gateway behaves like PostgREST for supabase-js RPC calls", async (t) => {
  await runSql(SETUP_SQL);
  const gw = await startGateway();
  const rpcUrl = (fn: string, query = "") => `${gw.url}/rest/v1/rpc/${fn}${query}`;
  const userJwt = await mintJwt({ sub: USER_ID, email: "ops@example.test" });
  const anon = client(gw.url);
  const user = client(gw.url, userJwt);
  const service = client(gw.url, SERVICE_ROLE_KEY);
  const post = (fn: string, body: unknown, headers: Record<string, string> = {}) =>
    request(rpcUrl(fn), {
      method: "POST",
      headers: { apikey: ANON_KEY, "Content-Type": "application/json", ...headers },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });

  try {
    await t.step(
      "a scalar result is a JSON scalar; omitted arguments take their default",
      async () => {
        const withDefault = await anon.rpc("gw_test_add", { a: 1 });
        assert.deepEqual([withDefault.status, withDefault.data, withDefault.error], [
          200,
          11,
          null,
        ]);
        const explicit = await anon.rpc("gw_test_add", { a: 1, b: 2 });
        assert.equal(explicit.data, 3);
      },
    );

    await t.step("a composite result is one JSON object", async () => {
      const { data, error } = await anon.rpc("gw_test_pair", { a: 3 });
      assert.equal(error, null);
      assert.deepEqual(data, { x: 6, label: "pair 3" });
    });

    await t.step("SETOF and RETURNS TABLE results are JSON arrays", async () => {
      const rows = await anon.rpc("gw_test_rows", { n: 2 });
      assert.deepEqual(rows.data, [{ i: 1, label: "row 1" }, { i: 2, label: "row 2" }]);
      const ints = await anon.rpc("gw_test_ints", { n: 3 });
      assert.deepEqual(ints.data, [1, 2, 3]);
      const none = await anon.rpc("gw_test_ints", { n: 0 });
      assert.deepEqual(none.data, []);
    });

    await t.step(
      "void answers 204 without body; supabase-js gets data null and no error",
      async () => {
        const res = await anon.rpc("gw_test_void", { note: "hi" });
        assert.deepEqual([res.status, res.data, res.error], [204, null, null]);
        const raw = await post("gw_test_void", { note: "hi" });
        assert.equal(raw.status, 204);
        assert.equal(raw.text, "");
        assert.equal(raw.headers.get("content-type"), null);
      },
    );

    await t.step(
      "GET calls a stable function with query arguments in a READ ONLY transaction",
      async () => {
        const res = await anon.rpc("gw_test_add", { a: 2 }, { get: true });
        assert.deepEqual([res.status, res.data], [200, 12]);
        const who = await anon.rpc("gw_test_whoami", {}, { get: true });
        assert.equal((who.data as { read_only: string }).read_only, "on");
        assert.equal((who.data as { method: string }).method, "GET");
      },
    );

    await t.step(
      "POST is READ ONLY for stable functions and READ WRITE for volatile ones",
      async () => {
        const stable = await anon.rpc("gw_test_whoami", {});
        assert.equal((stable.data as { read_only: string }).read_only, "on");
        const volatile = await anon.rpc("gw_test_pure", {});
        assert.equal(volatile.data, "off");
      },
    );

    await t.step(
      "GET of a volatile function that writes is refused: 405 with SQLSTATE 25006",
      async () => {
        const res = await anon.rpc("gw_test_bump", {}, { get: true });
        assert.equal(res.status, 405);
        assert.deepEqual(res.error, {
          code: "25006",
          message: "cannot execute nextval() in a read-only transaction",
          details: null,
          hint: null,
        });
        const viaPost = await anon.rpc("gw_test_bump", {});
        assert.equal(viaPost.status, 200);
        assert.equal(typeof viaPost.data, "number");
        const readOnlyVolatile = await anon.rpc("gw_test_pure", {}, { get: true });
        assert.equal(readOnlyVolatile.data, "on");
      },
    );

    await t.step(
      "a function with a single unnamed jsonb parameter receives the whole body",
      async () => {
        const body = { anything: [1, 2], nested: { x: "y" } };
        const { data, error } = await anon.rpc("gw_test_json", body);
        assert.equal(error, null);
        assert.deepEqual(data, { received: body });
      },
    );

    await t.step(
      "array parameters bind from a JSON array and from a query-string array",
      async () => {
        const viaPost = await anon.rpc("gw_test_count", { vals: [1, 2, 3] });
        assert.equal(viaPost.data, 3);
        const viaGet = await anon.rpc("gw_test_count", { vals: [4, 5] }, { get: true });
        assert.equal(viaGet.data, 2);
      },
    );

    await t.step(
      "Content-Profile / Accept-Profile pick the schema; an unexposed one is PGRST106 406",
      async () => {
        const expected = {
          code: "PGRST106",
          message: "Invalid schema: public",
          details: null,
          hint: "Only the following schemas are exposed: api",
        };
        const viaPost = await anon.schema("public").rpc("gw_test_add", { a: 1 });
        assert.equal(viaPost.status, 406);
        assert.deepEqual(viaPost.error, expected);
        const viaGet = await anon.schema("public").rpc("gw_test_add", { a: 1 }, { get: true });
        assert.deepEqual([viaGet.status, viaGet.error], [406, expected]);
        const exposed = await request(rpcUrl("gw_test_add", "?a=5"), {
          headers: { apikey: ANON_KEY, "Accept-Profile": "api" },
        });
        assert.deepEqual([exposed.status, exposed.json], [200, 15]);
      },
    );

    await t.step(
      "an unknown function or wrong argument names are PGRST202 404 with PostgREST's wording",
      async () => {
        const unknown = await anon.rpc("no_such_function_anywhere", { a: 1 });
        assert.equal(unknown.status, 404);
        assert.deepEqual(unknown.error, {
          code: "PGRST202",
          message:
            "Could not find the function api.no_such_function_anywhere(a) in the schema cache",
          details:
            "Searched for the function api.no_such_function_anywhere with parameter a or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache.",
          hint: null,
        });
        const typo = await anon.rpc("gw_test_ad", { a: 1 }, { get: true });
        assert.deepEqual([typo.status, typo.error?.message, typo.error?.hint], [
          404,
          "Could not find the function api.gw_test_ad(a) in the schema cache",
          "Perhaps you meant to call the function api.gw_test_add",
        ]);
        const wrongArgs = await anon.rpc("gw_test_add", { a: 1, c: 2 });
        assert.equal(wrongArgs.status, 404);
        assert.deepEqual(wrongArgs.error, {
          code: "PGRST202",
          message: "Could not find the function api.gw_test_add(a, c) in the schema cache",
          details:
            "Searched for the function api.gw_test_add with parameters a, c or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache.",
          hint: "Perhaps you meant to call the function api.gw_test_add(a, b)",
        });
        const missingRequired = await anon.rpc("gw_test_add", { b: 2 }, { get: true });
        assert.equal(missingRequired.error?.code, "PGRST202");
        assert.equal(
          missingRequired.error?.details,
          "Searched for the function api.gw_test_add with parameter b, but no matches were found in the schema cache.",
        );
      },
    );

    await t.step("overloads matching the same argument names are PGRST203 300", async () => {
      const res = await anon.rpc("gw_test_over", { a: 1 });
      assert.equal(res.status, 300);
      assert.equal(res.error?.code, "PGRST203");
      assert.match(res.error!.message, /^Could not choose the best candidate function between: /);
    });

    await t.step("a body that is not JSON is PGRST102 400", async () => {
      const res = await post("gw_test_add", "{not json");
      assert.equal(res.status, 400);
      assert.deepEqual(res.json, {
        code: "PGRST102",
        message: "Empty or invalid json",
        details: null,
        hint: null,
      });
    });

    await t.step(
      "a JWT with a wrong signature or shape is PGRST301 401 with WWW-Authenticate",
      async () => {
        const forged = await mintJwt({ sub: USER_ID }, { secret: OTHER_SECRET });
        const res = await client(gw.url, forged).rpc("gw_test_add", { a: 1 });
        assert.equal(res.status, 401);
        assert.deepEqual(res.error, {
          code: "PGRST301",
          message: "JWT cryptographic operation failed",
          details: null,
          hint: null,
        });
        const raw = await post("gw_test_add", { a: 1 }, { Authorization: `Bearer ${forged}` });
        assert.equal(
          raw.headers.get("www-authenticate"),
          'Bearer error="invalid_token", error_description="JWT cryptographic operation failed"',
        );
        const malformed = await post("gw_test_add", { a: 1 }, {
          Authorization: "Bearer not-a-jwt",
        });
        assert.equal(malformed.status, 401);
        assert.deepEqual(malformed.json, {
          code: "PGRST301",
          message: "Expected 3 parts in JWT; got 1",
          details: null,
          hint: null,
        });
      },
    );

    await t.step(
      "an expired JWT is PGRST303 401 'JWT expired'; within the 30 s skew it still passes",
      async () => {
        const now = Math.floor(Date.now() / 1000);
        const expired = await mintJwt({ sub: USER_ID }, { expiresIn: now - 120 });
        const res = await post("gw_test_add", { a: 1 }, { Authorization: `Bearer ${expired}` });
        assert.equal(res.status, 401);
        assert.deepEqual(res.json, {
          code: "PGRST303",
          message: "JWT expired",
          details: null,
          hint: null,
        });
        assert.equal(
          res.headers.get("www-authenticate"),
          'Bearer error="invalid_token", error_description="JWT expired"',
        );
        const viaClient = await client(gw.url, expired).rpc("gw_test_add", { a: 1 });
        assert.equal(viaClient.error?.code, "PGRST303");
        const justExpired = await mintJwt({ sub: USER_ID }, { expiresIn: now - 10 });
        const skewed = await client(gw.url, justExpired).rpc("gw_test_add", { a: 1 });
        assert.deepEqual([skewed.status, skewed.data], [200, 11]);
      },
    );

    await t.step("a role claim that names no database role is 401 (22023)", async () => {
      const jwt = await mintJwt({ sub: USER_ID, role: "no_such_role" });
      const res = await post("gw_test_add", { a: 1 }, { Authorization: `Bearer ${jwt}` });
      assert.equal(res.status, 401);
      assert.deepEqual(res.json, {
        code: "22023",
        message: 'role "no_such_role" does not exist',
        details: null,
        hint: null,
      });
      assert.equal(res.headers.get("www-authenticate"), "Bearer");
    });

    await t.step(
      "missing privileges (42501) are 401 for anon and 403 for a signed-in user",
      async () => {
        const asAnon = await anon.rpc("gw_test_secret");
        assert.equal(asAnon.status, 401);
        assert.equal(asAnon.error?.code, "42501");
        assert.equal(asAnon.error?.message, "permission denied for function gw_test_secret");
        const asUser = await user.rpc("gw_test_secret");
        assert.deepEqual([asUser.status, asUser.error?.code], [403, "42501"]);
        const asService = await service.rpc("gw_test_secret");
        assert.deepEqual([asService.status, asService.data], [200, "service only"]);
      },
    );

    await t.step(
      "RAISE SQLSTATE 'PGRST' sets the status, headers and the whole error body",
      async () => {
        const res = await anon.rpc("gw_test_raise", { kind: "pgrst" });
        assert.equal(res.status, 409);
        assert.deepEqual(res.error, {
          code: "voucher_already_redeemed",
          message: "Voucher was already redeemed.",
          details: '{"voucher":"7KQ2"}',
          hint: "Look it up first.",
        });
        const raw = await post("gw_test_raise", { kind: "pgrst" });
        assert.equal(raw.headers.get("x-test-header"), "yes");
        const appError = await anon.rpc("gw_test_app_error");
        assert.equal(appError.status, 410);
        assert.deepEqual(appError.error, {
          code: "voucher_expired",
          message: "Voucher expired.",
          details: '{"voucher": "X"}',
          hint: null,
        });
      },
    );

    await t.step("a PGRST error whose MESSAGE is not JSON is PGRST121 500", async () => {
      const res = await anon.rpc("gw_test_raise", { kind: "bad_pgrst" });
      assert.equal(res.status, 500);
      assert.deepEqual(res.error, {
        code: "PGRST121",
        message: `Could not parse JSON in the "RAISE SQLSTATE 'PGRST'" error`,
        details: "Invalid JSON value for MESSAGE: 'not json'",
        hint:
          "MESSAGE must be a JSON object with obligatory keys: 'code', 'message' and optional keys: 'details', 'hint'.",
      });
    });

    await t.step("SQLSTATEs map to PostgREST's HTTP statuses", async () => {
      const cases: [string, number, string][] = [
        ["unique", 409, "23505"],
        ["check", 400, "23514"],
        ["teapot", 418, "PT418"],
        ["anything", 400, "P0001"],
      ];
      for (const [kind, status, code] of cases) {
        const res = await anon.rpc("gw_test_raise", { kind });
        assert.deepEqual([kind, res.status, res.error?.code], [kind, status, code]);
      }
      const plain = await anon.rpc("gw_test_raise", { kind: "anything" });
      assert.deepEqual(plain.error, {
        code: "P0001",
        message: "Plain exception: anything",
        details: "A detail",
        hint: "A hint",
      });
    });

    await t.step(
      "SQL sees request.jwt.claims, request.headers, method and path; auth.uid() reads the claims",
      async () => {
        const { data, error } = await user.rpc("gw_test_whoami");
        assert.equal(error, null);
        const who = data as Record<string, unknown> & {
          claims: Record<string, unknown>;
          headers: Record<string, string>;
        };
        assert.equal(who.role, "authenticated");
        assert.equal(who.uid, USER_ID);
        assert.equal(who.claims.sub, USER_ID);
        assert.equal(who.claims.role, "authenticated");
        assert.equal(who.claims.email, "ops@example.test");
        assert.equal(who.method, "POST");
        assert.equal(who.path, "/rpc/gw_test_whoami");
        assert.equal(who.headers.authorization, `Bearer ${userJwt}`);
        assert.match(who.headers["x-client-info"], /^supabase-js/);
        assert.equal(who.headers["content-profile"], "api");
        assert.equal(who.statement_timeout, "8s", "authenticated's role setting is applied");
        const asAnon = (await anon.rpc("gw_test_whoami")).data as typeof who;
        assert.equal(asAnon.role, "anon");
        assert.equal(asAnon.claims.role, "anon");
        assert.equal(asAnon.uid, null);
        assert.equal(asAnon.statement_timeout, "3s", "anon's role setting is applied");
      },
    );

    await t.step(
      "the API key gate: no apikey is 401, with or without a JWT; an unknown apikey is 401",
      async () => {
        const none = await request(rpcUrl("gw_test_add", "?a=1"));
        assert.equal(none.status, 401);
        assert.deepEqual(none.json, {
          message: "No API key found in request",
          hint: "No `apikey` request header or url param was found.",
        });
        const jwtOnly = await request(rpcUrl("gw_test_add", "?a=1"), {
          headers: { Authorization: `Bearer ${userJwt}` },
        });
        assert.deepEqual([jwtOnly.status, jwtOnly.json], [401, none.json]);
        const wrong = await request(rpcUrl("gw_test_add", "?a=1"), { headers: { apikey: "nope" } });
        assert.equal(wrong.status, 401);
        assert.equal((wrong.json as { message: string }).message, "Invalid API key");
        const keyOnly = await request(rpcUrl("gw_test_whoami"), {
          headers: { apikey: SERVICE_ROLE_KEY },
        });
        assert.equal((keyOnly.json as { role: string }).role, "service_role");
      },
    );

    await t.step(
      "CORS: preflight is answered before auth; every answer allows any origin",
      async () => {
        const pre = await request(rpcUrl("gw_test_add"), {
          method: "OPTIONS",
          headers: {
            Origin: "https://station.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers":
              "authorization, apikey, content-type, x-idempotency-key",
          },
        });
        assert.equal(pre.status, 200);
        assert.equal(pre.headers.get("access-control-allow-origin"), "*");
        assert.match(pre.headers.get("access-control-allow-methods")!, /POST/);
        assert.match(pre.headers.get("access-control-allow-headers")!, /x-idempotency-key/);
        const ok = await post("gw_test_add", { a: 1 }, { Origin: "https://station.example" });
        assert.equal(ok.headers.get("access-control-allow-origin"), "*");
        const failed = await post("gw_test_nope", {}, { Origin: "https://station.example" });
        assert.equal(failed.headers.get("access-control-allow-origin"), "*");
        assert.match(failed.headers.get("access-control-expose-headers")!, /Content-Range/);
      },
    );

    await t.step(
      "[api] max_rows caps SETOF results; Prefer: count=exact reports the full total",
      async () => {
        const res = await anon.rpc("gw_test_ints", { n: 60 }, { count: "exact" });
        assert.equal((res.data as number[]).length, 50);
        assert.equal(res.count, 60);
        const raw = await post("gw_test_ints", { n: 60 }, { Prefer: "count=exact" });
        assert.equal(raw.headers.get("content-range"), "0-49/60");
      },
    );

    await t.step(
      ".single(): one row becomes an object, several rows are PGRST116 406",
      async () => {
        const one = await anon.rpc("gw_test_rows", { n: 1 }).single();
        assert.deepEqual(one.data, { i: 1, label: "row 1" });
        const two = await anon.rpc("gw_test_rows", { n: 2 }).single();
        assert.equal(two.status, 406);
        assert.deepEqual(two.error, {
          code: "PGRST116",
          message: "Cannot coerce the result to a single JSON object",
          details: "The result contains 2 rows",
          hint: null,
        });
      },
    );

    await t.step(
      "row filters and select= on RPC results are refused (PGRST127), not ignored",
      async () => {
        const res = await request(rpcUrl("gw_test_rows", "?n=3&i=eq.2"), {
          headers: { apikey: ANON_KEY },
        });
        assert.equal(res.status, 400);
        assert.equal((res.json as { code: string }).code, "PGRST127");
      },
    );

    await t.step("the schema cache reloads on a miss and on NOTIFY pgrst", async () => {
      await new Promise((r) => setTimeout(r, 1100)); // let the miss-reload rate limit lapse
      await runSql(`create function api.gw_test_late_a() returns text language sql
        as $$ select 'late a' $$; grant execute on function api.gw_test_late_a() to anon;`);
      const onMiss = await anon.rpc("gw_test_late_a");
      assert.deepEqual([onMiss.status, onMiss.data], [200, "late a"]);
      // Within the next second a miss cannot reload again: only the NOTIFY can expose late_b.
      const deadline = Date.now() + 800;
      await runSql(`create function api.gw_test_late_b() returns text language sql
        as $$ select 'late b' $$; grant execute on function api.gw_test_late_b() to anon;
        notify pgrst, 'reload schema';`);
      let last = await anon.rpc("gw_test_late_b");
      while (last.status !== 200 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 25));
        last = await anon.rpc("gw_test_late_b");
      }
      assert.deepEqual([last.status, last.data], [200, "late b"]);
    });
  } finally {
    await gw.shutdown();
    await runSql(TEARDOWN_SQL);
  }
});
