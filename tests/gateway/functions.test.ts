/**
 * The gateway's Edge Functions host behaves like Supabase's Edge Runtime for
 * what this project relies on: verify_jwt, the path a function sees, error
 * answers, and `EdgeRuntime.waitUntil()`.
 */
import assert from "node:assert/strict";
import { ANON_KEY, mintJwt } from "../../local/env.ts";
import { client, request, startGateway } from "./_helpers.ts";
import { background } from "./fixtures/functions/echo/handler.ts";

Deno.test("gateway hosts Edge Functions like Supabase's Edge Runtime", async (t) => {
  const gw = await startGateway();
  const fnUrl = (path: string) => `${gw.url}/functions/v1/${path}`;
  try {
    await t.step("verify_jwt = true refuses a call without a valid JWT", async () => {
      const missing = await request(fnUrl("echo"), { method: "POST" });
      assert.deepEqual([missing.status, missing.json], [401, {
        msg: "Error: Missing authorization header",
      }]);
      const forged = await mintJwt({ sub: "x" }, {
        secret: "another-secret-that-is-at-least-32-characters-long",
      });
      const bad = await request(fnUrl("echo"), { headers: { Authorization: `Bearer ${forged}` } });
      assert.deepEqual([bad.status, bad.json], [401, { msg: "Invalid JWT" }]);
      const ok = await request(fnUrl("echo"), { headers: { Authorization: `Bearer ${ANON_KEY}` } });
      assert.equal(ok.status, 200);
    });

    await t.step(
      "the function sees its own path without /functions/v1, the query and the body",
      async () => {
        const res = await request(fnUrl("echo/sub/path?x=1"), {
          method: "POST",
          headers: { Authorization: `Bearer ${ANON_KEY}` },
          body: "hello",
        });
        const { supabaseUrl, ...seen } = res.json as Record<string, unknown>;
        assert.deepEqual(seen, {
          method: "POST",
          pathname: "/echo/sub/path",
          search: "?x=1",
          body: "hello",
          authorization: true,
        });
        // The first gateway of the process sets SUPABASE_URL when it is unset, as Supabase does.
        assert.match(String(supabaseUrl), /^http:\/\/127\.0\.0\.1:\d+$/);
      },
    );

    await t.step("supabase-js functions.invoke() reaches the function", async () => {
      const { data, error } = await client(gw.url).functions.invoke("echo", { body: { a: 1 } });
      assert.equal(error, null);
      assert.equal(data.pathname, "/echo");
      assert.equal(data.body, '{"a":1}');
    });

    await t.step("verify_jwt = false lets an unauthenticated caller through", async () => {
      const res = await request(fnUrl("echo-open"));
      assert.equal(res.status, 200);
      assert.equal((res.json as { authorization: boolean }).authorization, false);
    });

    await t.step(
      "OPTIONS skips the JWT check so the function answers its own CORS preflight",
      async () => {
        const res = await request(fnUrl("echo"), { method: "OPTIONS" });
        assert.equal(res.status, 200);
        assert.equal((res.json as { method: string }).method, "OPTIONS");
      },
    );

    await t.step(
      "an unknown function is 404 NOT_FOUND; a throwing one is 500 WORKER_ERROR",
      async () => {
        const missing = await request(fnUrl("no-such-function"));
        assert.deepEqual([missing.status, missing.json], [404, {
          code: "NOT_FOUND",
          message: "Requested function was not found",
        }]);
        const traversal = await request(fnUrl("..%2Fsupabase"));
        assert.equal(traversal.status, 404);
        const broken = await request(fnUrl("broken"));
        assert.deepEqual([broken.status, broken.json], [500, {
          code: "WORKER_ERROR",
          message: "Function exited due to an error (please check logs)",
        }]);
      },
    );

    await t.step(
      "EdgeRuntime.waitUntil() work outlives the response and shutdown awaits it",
      async () => {
        const before = background.done;
        const res = await request(fnUrl("echo-open?background=300"));
        assert.equal(res.status, 200);
        assert.equal(background.done, before, "the response did not wait for the background work");
        await gw.shutdown();
        assert.equal(background.done, before + 1, "shutdown waited for the background work");
      },
    );
  } finally {
    await gw.shutdown();
  }
});
