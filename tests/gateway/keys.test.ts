/**
 * Today's keys, with the real supabase-js: the `apikey` gate as Kong keeps it,
 * `sb_publishable_…` / `sb_secret_…` keys beside the legacy JWT keys, and user
 * tokens signed with the project secret (HS256) or with an asymmetric key
 * published as a JWKS (ES256, RS256), on the REST side and for `verify_jwt`.
 *
 * Sources of each behaviour are named in the step titles:
 * - [keys] supabase.com/docs/guides/api/api-keys ("Known limitations": an `sb_`
 *   key may be a bearer only when it equals `apikey`; `verify_jwt` supports the
 *   legacy JWT keys only);
 * - [signing-keys] supabase.com/docs/guides/auth/signing-keys (JWKS at
 *   `/auth/v1/.well-known/jwks.json`, `kid` in the header; "a separate `apikey`
 *   header is required … Using your minted JWT is not possible in this header");
 * - [supabase-js] `packages/core/supabase-js/src/lib/fetch.ts` (the key is the
 *   bearer when there is no session, except for Edge Functions with an `sb_` key);
 * - [cli-kong] `apps/cli-go/internal/start/start.go` of supabase/cli (`BearerToken`:
 *   an absent or `Bearer sb_…` Authorization becomes the role's JWT);
 * - [postgrest] `src/PostgREST/Error.hs` / `Auth/Jwt.hs` (PGRST301 wording).
 */
import assert from "node:assert/strict";
import { exportJWK, generateKeyPair, type JSONWebKeySet } from "jose";
import {
  ANON_KEY,
  localJwks,
  mintJwt,
  PUBLISHABLE_KEY,
  SECRET_KEY,
  SERVICE_ROLE_KEY,
} from "../../local/env.ts";
import { serveGateway } from "../../local/gateway/mod.ts";
import { client, request, runSql, startGateway } from "./_helpers.ts";
import { SETUP_SQL, TEARDOWN_SQL } from "./_sql_fixture.ts";

const USER_ID = "00000000-0000-4000-8000-00000000face";

type Who = {
  role: string;
  uid: string | null;
  claims: Record<string, unknown>;
  headers: Record<string, string>;
};

/** Replaces a JWT's payload, keeping its header and signature: a forgery. */
function tamper(jwt: string, claims: Record<string, unknown>): string {
  const [header, payload, signature] = jwt.split(".");
  const decoded = JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/")));
  const forged = btoa(JSON.stringify({ ...decoded, ...claims }))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  return `${header}.${forged}.${signature}`;
}

Deno.test("API keys and JWT signing keys work as on a hosted project", async (t) => {
  await runSql(SETUP_SQL);
  const gw = await startGateway();
  const rpcUrl = (fn: string) => `${gw.url}/rest/v1/rpc/${fn}`;
  const post = (fn: string, headers: Record<string, string>, body: unknown = {}) =>
    request(rpcUrl(fn), {
      method: "POST",
      headers: { "Content-Type": "application/json", "Content-Profile": "api", ...headers },
      body: JSON.stringify(body),
    });
  try {
    await t.step(
      "[signing-keys] apikey is required even with a valid JWT: Kong answers 401 without it",
      async () => {
        const jwt = await mintJwt({ sub: USER_ID });
        const res = await post("gw_test_whoami", { Authorization: `Bearer ${jwt}` });
        assert.deepEqual([res.status, res.json], [401, {
          message: "No API key found in request",
          hint: "No `apikey` request header or url param was found.",
        }]);
        const viaQuery = await request(`${rpcUrl("gw_test_add")}?a=1&apikey=${PUBLISHABLE_KEY}`);
        assert.deepEqual([viaQuery.status, viaQuery.json], [200, 11], "or as the apikey url param");
      },
    );

    await t.step(
      "[signing-keys] only the project's keys are API keys: a user JWT or an unknown sb_ key is 401",
      async () => {
        const jwt = await mintJwt({ sub: USER_ID });
        for (const apikey of [jwt, "sb_publishable_not-this-projects-key", `${SECRET_KEY}x`]) {
          const res = await post("gw_test_whoami", { apikey });
          assert.equal(res.status, 401, apikey.slice(0, 20));
          assert.equal((res.json as { message: string }).message, "Invalid API key");
        }
      },
    );

    await t.step(
      "[supabase-js][cli-kong] sb_publishable_ without a session is anon; the SQL sees the role's JWT",
      async () => {
        const { data, error } = await client(gw.url, undefined, PUBLISHABLE_KEY).rpc(
          "gw_test_whoami",
        );
        assert.equal(error, null);
        const who = data as Who;
        assert.equal(who.role, "anon");
        assert.equal(who.claims.role, "anon");
        assert.equal(who.headers.apikey, PUBLISHABLE_KEY);
        assert.equal(who.headers.authorization, `Bearer ${ANON_KEY}`, "Kong's rewritten header");
        const secret = await client(gw.url, undefined, PUBLISHABLE_KEY).rpc("gw_test_secret");
        assert.deepEqual([secret.status, secret.error?.code], [401, "42501"]);
      },
    );

    await t.step(
      "[supabase-js] sb_publishable_ with a signed-in user (HS256 or ES256) runs as that user",
      async () => {
        for (const alg of ["HS256", "ES256"] as const) {
          const jwt = await mintJwt({ sub: USER_ID }, { alg });
          const { data, error } = await client(gw.url, jwt, PUBLISHABLE_KEY).rpc("gw_test_whoami");
          assert.equal(error, null, alg);
          const who = data as Who;
          assert.deepEqual([who.role, who.uid], ["authenticated", USER_ID], alg);
          assert.equal(who.headers.authorization, `Bearer ${jwt}`, alg);
        }
      },
    );

    await t.step(
      "[supabase-js] sb_secret_ is service_role: it reaches what only service_role may call",
      async () => {
        const service = client(gw.url, undefined, SECRET_KEY);
        const { data, error, status } = await service.rpc("gw_test_secret");
        assert.deepEqual([status, data, error], [200, "service only", null]);
        const who = (await service.rpc("gw_test_whoami")).data as Who;
        assert.equal(who.role, "service_role");
        assert.equal(who.headers.authorization, `Bearer ${SERVICE_ROLE_KEY}`);
      },
    );

    await t.step(
      "legacy anon / service_role JWT keys keep working beside the new ones",
      async () => {
        const asAnon = await client(gw.url).rpc("gw_test_whoami");
        assert.equal((asAnon.data as Who).role, "anon");
        const legacyService = await client(gw.url, undefined, SERVICE_ROLE_KEY).rpc(
          "gw_test_secret",
        );
        assert.deepEqual([legacyService.status, legacyService.data], [200, "service only"]);
        const mixed = await client(gw.url, SERVICE_ROLE_KEY, PUBLISHABLE_KEY).rpc("gw_test_secret");
        assert.deepEqual([mixed.status, mixed.data], [200, "service only"], "legacy JWT as bearer");
      },
    );

    await t.step(
      "[keys][postgrest] an sb_ key as bearer that differs from apikey is not a JWT: PGRST301 401",
      async () => {
        const res = await post("gw_test_whoami", {
          apikey: PUBLISHABLE_KEY,
          Authorization: `Bearer ${SECRET_KEY}`,
        });
        assert.deepEqual([res.status, res.json], [401, {
          code: "PGRST301",
          message: "Expected 3 parts in JWT; got 1",
          details: null,
          hint: null,
        }]);
      },
    );

    await t.step(
      "[signing-keys] the JWKS is public at /auth/v1/.well-known/jwks.json, without apikey",
      async () => {
        const res = await request(`${gw.url}/auth/v1/.well-known/jwks.json`);
        assert.equal(res.status, 200);
        const jwks = res.json as JSONWebKeySet;
        assert.deepEqual(jwks, await localJwks());
        assert.equal(jwks.keys[0].alg, "ES256");
        assert.ok(jwks.keys.every((k) => k.d === undefined && k.k === undefined), "public only");
      },
    );

    await t.step(
      "[postgrest] a tampered ES256 token is PGRST301 'JWT cryptographic operation failed'",
      async () => {
        const jwt = await mintJwt({ sub: USER_ID }, { alg: "ES256" });
        const forged = tamper(jwt, { role: "service_role" });
        const res = await client(gw.url, forged, PUBLISHABLE_KEY).rpc("gw_test_secret");
        assert.equal(res.status, 401);
        assert.deepEqual(res.error, {
          code: "PGRST301",
          message: "JWT cryptographic operation failed",
          details: null,
          hint: null,
        });
      },
    );

    await t.step(
      "[postgrest] an ES256 token from a key outside the JWKS is refused, by kid or by signature",
      async () => {
        const { privateKey } = await generateKeyPair("ES256", { extractable: true });
        const stranger = await exportJWK(privateKey);
        const unknownKid = await mintJwt({ sub: USER_ID }, {
          alg: "ES256",
          privateJwk: { ...stranger, kid: "not-a-published-kid" },
        });
        const byKid = await post("gw_test_whoami", {
          apikey: PUBLISHABLE_KEY,
          Authorization: `Bearer ${unknownKid}`,
        });
        assert.equal(byKid.status, 401);
        assert.equal((byKid.json as { code: string }).code, "PGRST301");
        assert.equal(
          (byKid.json as { message: string }).message,
          "No suitable key or wrong key type",
        );
        const sameKid = await mintJwt({ sub: USER_ID }, {
          alg: "ES256",
          privateJwk: { ...stranger, kid: (await localJwks()).keys[0].kid },
        });
        const bySignature = await client(gw.url, sameKid, PUBLISHABLE_KEY).rpc("gw_test_whoami");
        assert.deepEqual([bySignature.status, bySignature.error?.message], [
          401,
          "JWT cryptographic operation failed",
        ]);
      },
    );

    await t.step(
      "verify_jwt accepts exactly what the REST side accepts: HS256 and ES256 in, forgeries and sb_ keys out",
      async () => {
        const fn = `${gw.url}/functions/v1/echo`;
        const es256 = await mintJwt({ sub: USER_ID }, { alg: "ES256" });
        for (const ok of [await mintJwt({ sub: USER_ID }), es256, ANON_KEY]) {
          const res = await request(fn, { headers: { Authorization: `Bearer ${ok}` } });
          assert.equal(res.status, 200);
        }
        const expired = await mintJwt({ sub: USER_ID }, {
          alg: "ES256",
          expiresIn: Math.floor(Date.now() / 1000) - 120,
        });
        for (const bad of [tamper(es256, { role: "service_role" }), expired, SECRET_KEY]) {
          const res = await request(fn, { headers: { Authorization: `Bearer ${bad}` } });
          assert.deepEqual([res.status, res.json], [401, { msg: "Invalid JWT" }]);
        }
      },
    );

    await t.step(
      "[supabase-js][keys] functions.invoke() with an sb_ key sends no bearer: verify_jwt refuses it",
      async () => {
        const publishable = client(gw.url, undefined, PUBLISHABLE_KEY);
        const open = await publishable.functions.invoke("echo-open", { body: {} });
        assert.equal(open.error, null);
        assert.equal((open.data as { authorization: boolean }).authorization, false);
        const guarded = await publishable.functions.invoke("echo", { body: {} });
        assert.equal(guarded.response?.status, 401);
        await guarded.response?.body?.cancel();
      },
    );

    await t.step("the auth stand-in takes the publishable key as apikey", async () => {
      const { data, error } = await client(gw.url, undefined, PUBLISHABLE_KEY).auth
        .signInWithPassword({ email: "operator@demo.local", password: "operator-demo-password" });
      assert.equal(error, null);
      assert.equal(data.user?.email, "operator@demo.local");
    });
  } finally {
    await gw.shutdown();
    await runSql(TEARDOWN_SQL);
  }
});

Deno.test("RS256 tokens verify against a JWKS, and a JWKS can be fetched from a URL", async () => {
  await runSql(SETUP_SQL);
  const { privateKey, publicKey } = await generateKeyPair("RS256", { extractable: true });
  const kid = "rsa-test-key";
  const rsaJwks = { keys: [{ ...(await exportJWK(publicKey)), kid, alg: "RS256", use: "sig" }] };
  const issuer = await startGateway({ jwks: rsaJwks });
  // A second gateway that knows no key itself: it fetches the first one's JWKS (createRemoteJWKSet).
  const relying = await startGateway({
    jwks: new URL(`${issuer.url}/auth/v1/.well-known/jwks.json`),
  });
  try {
    const jwt = await mintJwt({ sub: USER_ID }, {
      alg: "RS256",
      privateJwk: { ...(await exportJWK(privateKey)), kid },
    });
    for (const gw of [issuer, relying]) {
      const { data, error } = await client(gw.url, jwt, PUBLISHABLE_KEY).rpc("gw_test_whoami");
      assert.equal(error, null);
      assert.deepEqual([(data as Who).role, (data as Who).uid], ["authenticated", USER_ID]);
      const forged = await client(gw.url, tamper(jwt, { sub: "someone-else" }), PUBLISHABLE_KEY)
        .rpc("gw_test_whoami");
      assert.equal(forged.status, 401);
    }
  } finally {
    await relying.shutdown();
    await issuer.shutdown();
    await runSql(TEARDOWN_SQL);
  }
});

Deno.test("[keys] dispatch (verify_jwt = false) takes sb_secret_ from supabase-js and refuses the publishable key", async () => {
  // The project's own config.toml: dispatch as deployed. `concurrency: 0` is refused
  // after the caller check (400) and before any database work, so 400 means "let in".
  const gw = await serveGateway({ port: 0, log: false });
  try {
    for (
      const [key, status] of [[SECRET_KEY, 400], [SERVICE_ROLE_KEY, 400], [
        PUBLISHABLE_KEY,
        403,
      ]] as const
    ) {
      const { error, response } = await client(gw.url, undefined, key).functions.invoke(
        "dispatch",
        {
          body: { concurrency: 0 },
        },
      );
      assert.equal(response?.status, status, key.slice(0, 16));
      assert.ok(error, "an error status reaches supabase-js as an error");
      await response?.body?.cancel();
    }
    const anonymous = await request(`${gw.url}/functions/v1/dispatch`, {
      method: "POST",
      body: "{}",
    });
    assert.deepEqual([anonymous.status, (anonymous.json as { error: string }).error], [
      401,
      "unauthorized",
    ]);
  } finally {
    await gw.shutdown();
  }
});
