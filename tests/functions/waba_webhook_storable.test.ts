/**
 * A signed Meta webhook whose strings Postgres cannot store (`\u0000`, a lone
 * surrogate) is recorded through the real RPCs and answered 200: a 500 would
 * make Meta retry the same failing delivery for days. Against the local
 * Postgres, with the production RPC calls of `functions/_shared/rpc.ts`.
 */
import assert from "node:assert/strict";
import { DB_URL } from "../../local/env.ts";
import { createDb } from "../../functions/_shared/db.ts";
import { recordOptOut, recordWabaStatuses } from "../../functions/_shared/rpc.ts";
import { sign } from "../../functions/_shared/webhook_signature.ts";
import { createWebhookHandler } from "../../functions/waba-webhook/handler.ts";
import { parseStorableJson } from "../../functions/waba-webhook/_storable.ts";

const SECRET = "storable-test-secret";

Deno.test("parseStorableJson() drops NUL, replaces lone surrogates, counts what it changed", () => {
  const { value, cleaned } = parseStorableJson(
    '{"a":"x\\u0000y","b":["\\ud800ok","fine","\\ud83d\\ude00"],"c\\u0000":1}',
  );
  assert.deepEqual(value, { a: "xy", b: ["\uFFFDok", "fine", "😀"], "c\u0000": 1 });
  assert.equal(cleaned, 2, "a valid surrogate pair is left alone; keys are not values");
});

Deno.test("a signed webhook with \\u0000 and a lone surrogate is recorded and answered 200", async () => {
  const db = createDb({ url: DB_URL, max: 2 });
  const tag = crypto.randomUUID().replaceAll("-", "").slice(0, 10);
  const wamid = `wamid.NUL${tag}`;
  const msisdn = `+2547${String(Date.now()).slice(-8)}`;
  const handler = createWebhookHandler({
    env: (n) => ({ WABA_APP_SECRET: SECRET })[n],
    recordStatuses: (items) => recordWabaStatuses(db, items),
    recordOptOut: (m, source) => recordOptOut(db, m, source),
  });
  // Written as JSON text: the escapes are what Meta's body would carry.
  const body =
    `{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages",
    "value":{"messaging_product":"whatsapp",
      "metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},
      "statuses":[{"id":"${wamid}\\u0000","status":"failed","timestamp":"1764300000",
        "recipient_id":"254700000001",
        "errors":[{"code":131026,"title":"Message undeliverable\\u0000","message":"bad \\ud800 text"}]}],
      "messages":[{"from":"${
      msisdn.slice(1)
    }\\u0000","id":"wamid.IN${tag}","timestamp":"1764300000",
        "type":"text","text":{"body":"STOP\\u0000"}}]}}]}]}`;
  try {
    const res = await handler(
      new Request("http://localhost/waba-webhook", {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "x-hub-signature-256": await sign(body, SECRET),
        },
        body,
      }),
    );
    const answer = await res.json();
    assert.equal(res.status, 200, JSON.stringify(answer));
    assert.deepEqual(answer.statuses, { received: 1, applied: 0, ignored: 0, unknown: 1 });
    assert.equal(answer.opt_outs, 1);

    const [pending] = await db`
      select error_code, error_message from app.pending_waba_statuses where wamid = ${wamid}`;
    assert.deepEqual(pending, {
      error_code: "waba_131026",
      error_message: "Message undeliverable: bad \uFFFD text",
    });
    const [optOut] = await db`select source from app.opt_outs where msisdn = ${msisdn}`;
    assert.equal(optOut?.source, "whatsapp_inbound");
  } finally {
    await db`delete from app.pending_waba_statuses where wamid = ${wamid}`;
    await db`delete from app.opt_outs where msisdn = ${msisdn}`;
    await db.end();
  }
});
