/**
 * The gateway's Edge Functions host behaves like Supabase's Edge Runtime for
 * what this project relies on: verify_jwt, the path a function sees, error
 * answers, the environment, and `EdgeRuntime.waitUntil()` — each function in
 * its own process, started from its `index.ts`.
 */
import assert from "node:assert/strict";
import { ANON_KEY, mintJwt } from "../../local/env.ts";
import { client, request, startGateway } from "./_helpers.ts";

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
        // Supabase injects the project URL: here, the gateway's.
        assert.equal(supabaseUrl, gw.url);
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
      "a function that resolves only through the root deno.json does not boot: 503 BOOT_ERROR",
      async () => {
        const res = await request(fnUrl("root-only"));
        assert.deepEqual([res.status, res.json], [503, {
          code: "BOOT_ERROR",
          message: "Worker failed to boot (please check logs)",
        }]);
      },
    );

    await t.step(
      "EdgeRuntime.waitUntil() work outlives the response and shutdown awaits it",
      async () => {
        const marker = await Deno.makeTempFile({ dir: "/tmp", prefix: "wait-until-" });
        await Deno.remove(marker);
        const res = await request(fnUrl(`echo-open?background=300&marker=${marker}`));
        assert.equal(res.status, 200);
        const exists = () => Deno.stat(marker).then(() => true, () => false);
        assert.equal(await exists(), false, "the response did not wait for the background work");
        await gw.shutdown();
        assert.equal(await exists(), true, "shutdown waited for the background work");
        await Deno.remove(marker);
      },
    );
  } finally {
    await gw.shutdown();
  }
});
