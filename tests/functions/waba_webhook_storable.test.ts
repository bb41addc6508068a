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
  const recipient = `+2548${String(Date.now()).slice(-8)}`;
  // A sent message for the failed status to land on, found by our id (the
  // status's wamid carries a NUL, so only the cleaned one would match).
  const [channel] = await db`
    insert into app.channels (phone_number_id, display_name, burst, tokens)
    values (${`9${Date.now() % 1e9}`}, 'storable.test', 10, 10) returning id`;
  const [campaign] = await db`
    insert into app.campaigns (name, amount_minor, currency, channel_id, template_name, status)
    values ('storable.test', 100, 'KES', ${channel.id}, 'fuel_voucher', 'dispatching') returning id`;
  const [message] = await db`
    with target as (
      insert into app.campaign_targets (campaign_id, msisdn) values (${campaign.id}, ${recipient})
      returning id
    )
    insert into app.messages (id, campaign_id, channel_id, to_msisdn, template_name,
                              template_language, status, wamid, attempts, last_attempt_at)
    select id, ${campaign.id}, ${channel.id}, ${recipient}, 'fuel_voucher', 'en', 'sent', ${wamid},
           1, now()
    from target returning id`;
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
        "recipient_id":"${recipient.slice(1)}","biz_opaque_callback_data":"${message.id}",
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
    assert.deepEqual(answer.statuses, { received: 1, applied: 1, ignored: 0, unknown: 0 });
    assert.equal(answer.opt_outs, 1);

    const [recorded] = await db`
      select status, last_error_code, last_error_message from app.messages where id = ${message.id}`;
    assert.deepEqual(recorded, {
      status: "failed",
      last_error_code: "waba_131026",
      last_error_message: "Message undeliverable: bad \uFFFD text",
    });
    const [optOut] = await db`select source from app.opt_outs where msisdn = ${msisdn}`;
    assert.equal(optOut?.source, "whatsapp_inbound");
  } finally {
    await db`delete from app.messages where campaign_id = ${campaign.id}`;
    await db`delete from app.campaign_targets where campaign_id = ${campaign.id}`;
    await db`delete from app.campaigns where id = ${campaign.id}`;
    await db`delete from app.channels where id = ${channel.id}`;
    await db`delete from app.opt_outs where msisdn = ${msisdn}`;
    await db.end();
  }
});
