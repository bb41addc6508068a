/**
 * `authoriseService()`: who may trigger the dispatch function now that the
 * platform's `verify_jwt` is off for it. The environment is what a hosted
 * project gives every function (supabase.com/docs/guides/functions/secrets):
 * `SUPABASE_SECRET_KEYS` / `SUPABASE_PUBLISHABLE_KEYS` as JSON dictionaries, the
 * legacy keys, and `SUPABASE_JWKS` with public keys only.
 */
import assert from "node:assert/strict";
import { exportJWK, generateKeyPair } from "jose";
import {
  ANON_KEY,
  localJwks,
  mintJwt,
  PUBLISHABLE_KEY,
  SECRET_KEY,
  SERVICE_ROLE_KEY,
} from "../../local/env.ts";
import { authoriseService, keyDictionary } from "../../functions/_shared/service_auth.ts";

const HOSTED: Record<string, string> = {
  SUPABASE_ANON_KEY: ANON_KEY,
  SUPABASE_SERVICE_ROLE_KEY: SERVICE_ROLE_KEY,
  SUPABASE_PUBLISHABLE_KEYS: JSON.stringify({ default: PUBLISHABLE_KEY }),
  SUPABASE_SECRET_KEYS: JSON.stringify({ default: SECRET_KEY, cron: "sb_secret_second_key" }),
  SUPABASE_JWKS: JSON.stringify(await localJwks()),
};
const env = (vars: Record<string, string>) => (name: string) => vars[name];

function req(headers: Record<string, string>): Request {
  return new Request("http://localhost/dispatch", { method: "POST", headers });
}

Deno.test("authoriseService() accepts every service key of the project, as apikey or bearer", async () => {
  const accepted: Record<string, string>[] = [
    { apikey: SECRET_KEY }, // pg_cron with an sb_secret_ key in Vault
    { apikey: "sb_secret_second_key" }, // any key of the dictionary, e.g. one per component
    { apikey: SERVICE_ROLE_KEY, authorization: `Bearer ${SERVICE_ROLE_KEY}` }, // legacy key in Vault
    { authorization: `Bearer ${SERVICE_ROLE_KEY}` }, // the local ticker
    { apikey: PUBLISHABLE_KEY, authorization: `Bearer ${SECRET_KEY}` },
  ];
  for (const headers of accepted) {
    assert.deepEqual(await authoriseService(req(headers), env(HOSTED)), {
      ok: true,
      via: "service_key",
    }, JSON.stringify(Object.keys(headers)));
  }
  // Self-hosted: the single-key fallback @supabase/server reads.
  const selfHosted = env({ SUPABASE_SECRET_KEY: SECRET_KEY });
  assert.equal((await authoriseService(req({ apikey: SECRET_KEY }), selfHosted)).ok, true);
});

Deno.test("authoriseService() accepts a service_role JWT only when its signature verifies against SUPABASE_JWKS", async () => {
  const signed = await mintJwt({ role: "service_role" }, { alg: "ES256" });
  assert.deepEqual(
    await authoriseService(req({ authorization: `Bearer ${signed}` }), env(HOSTED)),
    {
      ok: true,
      via: "jwt",
    },
  );
  const { privateKey } = await generateKeyPair("ES256", { extractable: true });
  const stranger = await mintJwt({ role: "service_role" }, {
    alg: "ES256",
    privateJwk: { ...(await exportJWK(privateKey)), kid: (await localJwks()).keys[0].kid },
  });
  const hs256 = await mintJwt({ role: "service_role" }); // valid locally, but functions get no JWT secret
  const expired = await mintJwt({ role: "service_role" }, {
    alg: "ES256",
    expiresIn: Math.floor(Date.now() / 1000) - 120,
  });
  for (const token of [stranger, hs256, expired]) {
    const verdict = await authoriseService(req({ authorization: `Bearer ${token}` }), env(HOSTED));
    assert.equal(verdict.ok, false);
    assert.equal(!verdict.ok && verdict.status, 401);
  }
});

Deno.test("authoriseService() answers 403 to a valid credential of another role, 401 to anything else", async () => {
  const cases: [Record<string, string>, 401 | 403][] = [
    [{ apikey: PUBLISHABLE_KEY }, 403],
    [{ apikey: ANON_KEY, authorization: `Bearer ${ANON_KEY}` }, 403],
    [{ authorization: `Bearer ${await mintJwt({ sub: "u" }, { alg: "ES256" })}` }, 403],
    [{}, 401],
    [{ apikey: "" }, 401],
    [{ apikey: `${SECRET_KEY}x` }, 401],
    [{ apikey: SECRET_KEY.slice(0, -1) }, 401],
    [{ authorization: `Basic ${btoa(`x:${SECRET_KEY}`)}` }, 401],
    [{ authorization: "Bearer a.b.c" }, 401],
  ];
  for (const [headers, status] of cases) {
    const verdict = await authoriseService(req(headers), env(HOSTED));
    assert.equal(verdict.ok, false, JSON.stringify(headers).slice(0, 60));
    assert.equal(!verdict.ok && verdict.status, status, JSON.stringify(headers).slice(0, 60));
  }
});

Deno.test("authoriseService() fails closed (500) when the function has no key to compare with", async () => {
  const none = await authoriseService(req({ apikey: SECRET_KEY }), env({}));
  assert.deepEqual(none.ok ? null : none.status, 500);
  const broken = await authoriseService(
    req({ apikey: SECRET_KEY }),
    env({ SUPABASE_SECRET_KEYS: "sb_secret_not_json" }),
  );
  assert.deepEqual(broken.ok ? null : broken.status, 500);
  assert.deepEqual(keyDictionary(env({ K: '{"default":"a","b":"c"}' }), "K"), ["a", "c"]);
});
