/**
 * The gateway's Supabase Auth stand-in with the real supabase-js:
 * signInWithPassword, a wrong password, getUser, refreshSession and signOut
 * answer as GoTrue does, and the access token works for the RPCs.
 */
import assert from "node:assert/strict";
import { createClient } from "@supabase/supabase-js";
import { ANON_KEY } from "../../local/env.ts";
import { DEMO_USERS } from "../../local/stack.ts";
import { serveGateway } from "../../local/gateway/mod.ts";

Deno.test("auth stand-in: password sign-in, user, refresh and sign-out as supabase-js calls them", async () => {
  const gw = await serveGateway({ port: 0, log: false });
  const supabase = createClient(gw.url, ANON_KEY, {
    auth: { persistSession: false, autoRefreshToken: false },
  });
  try {
    const bad = await supabase.auth.signInWithPassword({
      email: "operator@demo.local",
      password: "not-the-password",
    });
    assert.deepEqual([bad.error?.status, bad.error?.code], [400, "invalid_credentials"]);

    const { data, error } = await supabase.auth.signInWithPassword({
      email: "Operator@demo.local",
      password: "operator-demo-password",
    });
    assert.equal(error, null);
    assert.equal(data.user?.id, DEMO_USERS.operator);
    assert.equal(data.session?.token_type, "bearer");
    assert.equal(data.session?.expires_in, 3600);
    const claims = JSON.parse(atob(data.session!.access_token.split(".")[1]));
    assert.deepEqual(
      [claims.sub, claims.role, claims.aud, claims.iss],
      [DEMO_USERS.operator, "authenticated", "authenticated", `${gw.url}/auth/v1`],
    );

    const preview = await supabase.schema("api").rpc("preview_voucher", {
      code: "DEM00-00000-00018",
    });
    assert.equal(preview.status, 200, JSON.stringify(preview.error));

    assert.equal((await supabase.auth.getUser()).data.user?.email, "operator@demo.local");
    const refreshed = await supabase.auth.refreshSession();
    assert.equal(refreshed.error, null);
    assert.notEqual(refreshed.data.session?.refresh_token, data.session?.refresh_token);

    const oldRefresh = refreshed.data.session!.refresh_token;
    assert.equal((await supabase.auth.signOut()).error, null);
    const afterLogout = await fetch(`${gw.url}/auth/v1/token?grant_type=refresh_token`, {
      method: "POST",
      headers: { apikey: ANON_KEY, "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: oldRefresh }),
    });
    assert.equal(afterLogout.status, 400);
    assert.equal((await afterLogout.json()).code, "refresh_token_not_found");

    const noKey = await fetch(`${gw.url}/auth/v1/user`);
    assert.equal(noKey.status, 401);
    await noKey.body?.cancel();
  } finally {
    await gw.shutdown();
  }
});
