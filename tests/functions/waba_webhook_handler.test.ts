/**
 * The waba-webhook Edge Function: Meta's subscription check, signature
 * verification on the raw body, status batching, opt-out keywords, and what it
 * answers when a payload is partly unreadable or the database fails.
 */
import assert from "node:assert/strict";
import { createWebhookHandler } from "../../functions/waba-webhook/handler.ts";
// Unit tests of the webhook function, its stop-word module included (the module under test).
import { isOptOutRequest, normalizeInboundText } from "../../functions/waba-webhook/_stop_words.ts";
import { sign } from "../../functions/_shared/webhook_signature.ts";
import { RpcError } from "../../functions/_shared/db.ts";
import type {
  PhoneQualityInput,
  StatusItem,
  StatusSummary,
  TemplateStatusInput,
} from "../../functions/_shared/rpc.ts";
import { startFakeWaba } from "../../local/fake_waba/mod.ts";
import { waitFor } from "../whatsapp/_helpers.ts";

const SECRET = "webhook-test-secret";
const VERIFY = "webhook-test-verify-token";
const PNID = "106540352242922";
const ENV: Record<string, string> = { WABA_APP_SECRET: SECRET, WABA_VERIFY_TOKEN: VERIFY };

/** A handler with recording stand-ins for the RPCs. */
function setup(
  opts: {
    failStore?: boolean;
    env?: Record<string, string>;
    refuseOptOut?: boolean;
    refuseAccountEvents?: boolean;
  } = {},
) {
  const statusCalls: StatusItem[][] = [];
  const optOuts: { msisdn: string; source: string }[] = [];
  const templates: TemplateStatusInput[] = [];
  const qualities: PhoneQualityInput[] = [];
  const refused = () =>
    Promise.reject(new RpcError("invalid_template_event", "refused by the database", 400));
  const handler = createWebhookHandler({
    recordTemplateStatus: (input) => {
      if (opts.refuseAccountEvents) return refused();
      templates.push(input);
      return Promise.resolve({ event: input.event, action: "paused" as const, campaigns: 1 });
    },
    recordPhoneQuality: (input) => {
      if (opts.refuseAccountEvents) return refused();
      qualities.push(input);
      return Promise.resolve({
        event: input.event,
        channels: 1,
        messaging_tier: "TIER_2K",
        portfolios_updated: 1,
      });
    },
    env: (n) => (opts.env ?? ENV)[n],
    recordStatuses: (items): Promise<StatusSummary> => {
      if (opts.failStore) return Promise.reject(new Error("connection refused"));
      statusCalls.push(items);
      return Promise.resolve({ applied: items.length, ignored: 0, unknown: 0 });
    },
    recordOptOut: (msisdn, source) => {
      if (opts.refuseOptOut) {
        return Promise.reject(new RpcError("invalid_msisdn", `"${msisdn}" is not E.164`, 400));
      }
      optOuts.push({ msisdn, source });
      return Promise.resolve({ msisdn, opted_out: true, created: true, cancelled_messages: 0 });
    },
  });
  return { handler, statusCalls, optOuts, templates, qualities };
}

function statusPayload(statuses: Record<string, unknown>[]): Record<string, unknown> {
  return {
    object: "whatsapp_business_account",
    entry: [{
      id: "102290129340398",
      changes: [{
        field: "messages",
        value: {
          messaging_product: "whatsapp",
          metadata: { display_phone_number: "15550783881", phone_number_id: PNID },
          statuses,
        },
      }],
    }],
  };
}

function status(i: number, state = "delivered", extra: Record<string, unknown> = {}) {
  return {
    id: `wamid.TEST${i}`,
    status: state,
    timestamp: "1764300000",
    recipient_id: `2547000${String(i).padStart(5, "0")}`,
    ...extra,
  };
}

function inboundPayload(from: string, message: Record<string, unknown>): Record<string, unknown> {
  return {
    object: "whatsapp_business_account",
    entry: [{
      id: "102290129340398",
      changes: [{
        field: "messages",
        value: {
          messaging_product: "whatsapp",
          metadata: { display_phone_number: "15550783881", phone_number_id: PNID },
          contacts: [{ profile: { name: "Test" }, wa_id: from }],
          messages: [{ from, id: `wamid.IN${from}`, timestamp: "1764300000", ...message }],
        },
      }],
    }],
  };
}

async function post(
  handler: (req: Request) => Promise<Response>,
  body: string,
  signature: string | null,
): Promise<Response> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (signature !== null) headers["x-hub-signature-256"] = signature;
  return await handler(
    new Request("http://localhost/waba-webhook", { method: "POST", headers, body }),
  );
}

const signedPost = async (handler: (req: Request) => Promise<Response>, payload: unknown) => {
  const body = JSON.stringify(payload);
  return await post(handler, body, await sign(body, SECRET));
};

Deno.test("GET verification answers the challenge as text only for the right verify token", async () => {
  const { handler } = setup();
  const url = (q: Record<string, string>) =>
    `http://localhost/waba-webhook?${new URLSearchParams(q)}`;
  const ok = await handler(
    new Request(
      url({ "hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "1158201444" }),
    ),
  );
  assert.equal(ok.status, 200);
  assert.equal(await ok.text(), "1158201444");
  assert.match(ok.headers.get("content-type") ?? "", /^text\/plain/);

  const refused: Record<string, string>[] = [
    { "hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1" },
    { "hub.mode": "subscribe", "hub.verify_token": VERIFY + "x", "hub.challenge": "1" },
    { "hub.mode": "unsubscribe", "hub.verify_token": VERIFY, "hub.challenge": "1" },
    { "hub.mode": "subscribe", "hub.verify_token": VERIFY },
    {},
  ];
  for (const q of refused) {
    const res = await handler(new Request(url(q)));
    assert.equal(res.status, 403, JSON.stringify(q));
    await res.body?.cancel();
  }
});

Deno.test("POST with a valid signature over the raw body stores the statuses", async () => {
  const { handler, statusCalls } = setup();
  const res = await signedPost(handler, statusPayload([status(1), status(2, "read")]));
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {
    ok: true,
    statuses: { received: 2, applied: 2, ignored: 0, unknown: 0 },
    opt_outs: 0,
    templates: 0,
    qualities: 0,
    skipped: 0,
  });
  assert.deepEqual(statusCalls, [[
    {
      wamid: "wamid.TEST1",
      status: "delivered",
      timestamp: "1764300000",
      recipient_id: "254700000001",
    },
    { wamid: "wamid.TEST2", status: "read", timestamp: "1764300000", recipient_id: "254700000002" },
  ]]);
});

Deno.test("POST passes our message id from biz_opaque_callback_data, and a failure's Graph code", async () => {
  const { handler, statusCalls } = setup();
  const res = await signedPost(
    handler,
    statusPayload([
      status(1, "sent", { biz_opaque_callback_data: "4211" }),
      status(2, "failed", {
        biz_opaque_callback_data: "campaign-x",
        errors: [{ code: 131048, title: "Spam rate limit hit" }],
      }),
    ]),
  );
  assert.equal(res.status, 200);
  await res.body?.cancel();
  assert.deepEqual(statusCalls[0][0].message_id, "4211");
  assert.equal(
    statusCalls[0][1].message_id,
    undefined,
    "callback data that is not our id is not passed",
  );
  assert.deepEqual(
    [statusCalls[0][1].error_code, statusCalls[0][1].waba_code],
    ["waba_131048", 131048],
  );
});

function accountPayload(field: string, value: Record<string, unknown>): Record<string, unknown> {
  return {
    object: "whatsapp_business_account",
    entry: [{ id: "102290129340398", time: 1764300000, changes: [{ value, field }] }],
  };
}

Deno.test("POST acts on template status and phone number quality updates", async () => {
  const { handler, templates, qualities } = setup();
  const res = await signedPost(handler, {
    object: "whatsapp_business_account",
    entry: [{
      id: "102290129340398",
      time: 1764300000,
      changes: [
        {
          field: "message_template_status_update",
          value: {
            event: "PAUSED",
            message_template_id: 594425479261596,
            message_template_name: "voucher_issued",
            message_template_language: "en_US",
            reason: "LOW_QUALITY",
          },
        },
        {
          field: "phone_number_quality_update",
          value: {
            display_phone_number: "15550783881",
            event: "DOWNGRADE",
            current_limit: "TIER_2K",
            max_daily_conversations_per_business: "TIER_2K",
          },
        },
      ],
    }],
  });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.deepEqual([body.templates, body.qualities, body.skipped], [1, 1, 0]);
  assert.deepEqual(templates, [{
    wabaId: "102290129340398",
    templateName: "voucher_issued",
    templateLanguage: "en_US",
    event: "PAUSED",
    reason: "LOW_QUALITY",
  }]);
  assert.deepEqual(qualities, [{
    wabaId: "102290129340398",
    displayPhoneNumber: "15550783881",
    event: "DOWNGRADE",
    currentLimit: "TIER_2K",
    maxDailyConversations: "TIER_2K",
  }]);
});

Deno.test("POST answers 200 when the database refuses an account event (a retry cannot help)", async () => {
  const { handler } = setup({ refuseAccountEvents: true });
  const res = await signedPost(
    handler,
    accountPayload("message_template_status_update", {
      event: "PAUSED",
      message_template_name: "voucher_issued",
      message_template_language: "en",
    }),
  );
  assert.equal(res.status, 200);
  assert.equal((await res.json()).templates, 1);
});

Deno.test("POST skips an account event it cannot read and keeps the rest", async () => {
  const { handler, templates, qualities } = setup();
  const res = await signedPost(handler, {
    object: "whatsapp_business_account",
    entry: [{
      id: "102290129340398",
      changes: [
        { field: "message_template_status_update", value: { event: "PAUSED" } },
        {
          field: "phone_number_quality_update",
          value: { display_phone_number: "15550783881", event: "FLAGGED" },
        },
      ],
    }],
  });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).skipped, 1);
  assert.deepEqual([templates.length, qualities.length], [0, 1]);
});

Deno.test("POST with a tampered, missing, malformed or foreign signature is 401 and changes nothing", async () => {
  const { handler, statusCalls, optOuts } = setup();
  const body = JSON.stringify(
    inboundPayload("254700000001", { type: "text", text: { body: "STOP" } }),
  );
  const good = await sign(body, SECRET);
  const cases: [string, string, string | null][] = [
    ["tampered body", body.replace("254700000001", "254700000002"), good],
    ["extra whitespace", body + " ", good],
    ["missing header", body, null],
    ["empty header", body, ""],
    ["no scheme", body, good.slice("sha256=".length)],
    ["sha1 scheme", body, good.replace("sha256=", "sha1=")],
    ["wrong secret", body, await sign(body, "another-secret")],
  ];
  for (const [name, payload, signature] of cases) {
    const res = await post(handler, payload, signature);
    assert.equal(res.status, 401, name);
    assert.deepEqual(await res.json(), { error: "invalid_signature" });
  }
  assert.deepEqual(statusCalls, []);
  assert.deepEqual(optOuts, []);
});

Deno.test("POST without WABA_APP_SECRET configured is 500 (Meta retries), never accepted unsigned", async () => {
  const { handler, statusCalls } = setup({ env: { WABA_VERIFY_TOKEN: VERIFY } });
  const res = await signedPost(handler, statusPayload([status(1)]));
  assert.equal(res.status, 500);
  await res.body?.cancel();
  assert.deepEqual(statusCalls, []);
});

Deno.test("the local defaults apply only with LOCAL_STACK=1", async () => {
  const body = JSON.stringify(statusPayload([status(1)]));
  const signature = await sign(body, "local-waba-app-secret");
  const without = setup({ env: {} });
  assert.equal((await post(without.handler, body, signature)).status, 500);
  const local = setup({ env: { LOCAL_STACK: "1" } });
  assert.equal((await post(local.handler, body, signature)).status, 200);
});

Deno.test("statuses are stored in batches of at most 1,000", async () => {
  const { handler, statusCalls } = setup();
  const many = Array.from({ length: 2_345 }, (_, i) => status(i));
  const res = await signedPost(handler, statusPayload(many));
  assert.equal(res.status, 200);
  assert.deepEqual(statusCalls.map((c) => c.length), [1000, 1000, 345]);
  assert.equal(new Set(statusCalls.flat().map((s) => s.wamid)).size, 2_345);
});

Deno.test("a failed status carries its error code; 131050 also records an opt-out", async () => {
  const { handler, statusCalls, optOuts } = setup();
  const res = await signedPost(
    handler,
    statusPayload([
      status(1, "failed", {
        errors: [{
          code: 131050,
          title:
            "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business",
        }],
      }),
      status(2, "failed", {
        errors: [{ code: 131026, title: "Message undeliverable", error_data: { details: "x" } }],
      }),
    ]),
  );
  assert.equal(res.status, 200);
  assert.deepEqual(
    statusCalls[0].map((s) => [s.wamid, s.status, s.error_code]),
    [["wamid.TEST1", "failed", "waba_131050"], ["wamid.TEST2", "failed", "waba_131026"]],
  );
  assert.equal(statusCalls[0][1].error_message, "Message undeliverable: x");
  assert.deepEqual(optOuts, [{ msisdn: "+254700000001", source: "waba_131050" }]);
});

Deno.test("an inbound STOP (and its common variants) records an opt-out for +<from>", async () => {
  const variants = [
    "STOP",
    "stop",
    " Stop. ",
    "STOP!",
    "🛑 STOP",
    "*stop*",
    "STOP ALL",
    "stopall",
    "Unsubscribe",
    "unsub",
    "CANCEL",
    "end",
    "Quit",
    "opt out",
    "Opt-Out",
    "OPTOUT",
    "opt_out",
    "Stop promotions",
    "please stop",
    "ＳＴＯＰ", // full-width, NFKC
  ];
  for (const text of variants) {
    const { handler, optOuts } = setup();
    const res = await signedPost(
      handler,
      inboundPayload("254700000009", { type: "text", text: { body: text } }),
    );
    assert.equal(res.status, 200, text);
    assert.deepEqual(optOuts, [{ msisdn: "+254700000009", source: "whatsapp_inbound" }], text);
  }
});

Deno.test("a quick-reply button 'Stop promotions' opts out; ordinary messages do not", async () => {
  const button = setup();
  await signedPost(
    button.handler,
    inboundPayload("254700000010", {
      type: "button",
      button: { text: "Stop promotions", payload: "STOP_PROMOTIONS" },
    }),
  );
  assert.deepEqual(button.optOuts, [{ msisdn: "+254700000010", source: "whatsapp_inbound" }]);

  for (
    const text of [
      "don't stop",
      "I want to cancel my order",
      "the end",
      "stop sending me the wrong code",
      "STOPPED",
      "hello",
      "",
    ]
  ) {
    const { handler, optOuts } = setup();
    const res = await signedPost(
      handler,
      inboundPayload("254700000011", { type: "text", text: { body: text } }),
    );
    assert.equal(res.status, 200);
    assert.deepEqual(optOuts, [], text);
  }
});

Deno.test("isOptOutRequest() normalises case, punctuation, dashes and width", () => {
  assert.equal(normalizeInboundText("  Opt-Out!! "), "opt out");
  assert.equal(normalizeInboundText("ＳＴＯＰ"), "stop");
  assert.equal(isOptOutRequest(undefined), false);
  assert.equal(isOptOutRequest("please   STOP ALL."), true);
  assert.equal(isOptOutRequest("pleasestop"), false);
});

Deno.test("a signed payload with an unknown status value keeps the valid statuses and answers 200", async () => {
  const { handler, statusCalls } = setup();
  const res = await signedPost(
    handler,
    statusPayload([
      status(1),
      status(2, "deleted"),
      { id: "wamid.NOTIME", status: "read" },
      status(3, "read"),
    ]),
  );
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.skipped, 2);
  assert.deepEqual(statusCalls[0].map((s) => s.wamid), ["wamid.TEST1", "wamid.TEST3"]);
});

Deno.test("a signed body that is not a WhatsApp payload is 400; other fields are ignored", async () => {
  const { handler, statusCalls } = setup();
  assert.equal((await post(handler, "not json", await sign("not json", SECRET))).status, 400);
  assert.equal((await signedPost(handler, { object: "page", entry: [] })).status, 400);
  const templates = await signedPost(handler, {
    object: "whatsapp_business_account",
    entry: [{
      id: "1",
      changes: [{ field: "message_template_status_update", value: { event: "APPROVED" } }],
    }],
  });
  assert.equal(templates.status, 200);
  assert.deepEqual(statusCalls, [], "nothing to store");
});

Deno.test("a database failure answers 500 so Meta retries the (idempotent) delivery", async () => {
  const { handler } = setup({ failStore: true });
  const res = await signedPost(handler, statusPayload([status(1)]));
  assert.equal(res.status, 500);
  assert.deepEqual(await res.json(), { error: "store_failed" });
});

Deno.test("other methods are 405", async () => {
  const { handler } = setup();
  const res = await handler(
    new Request("http://localhost/waba-webhook", { method: "PUT", body: "x" }),
  );
  assert.equal(res.status, 405);
  await res.body?.cancel();
});

Deno.test("the fake WhatsApp API's signed webhooks (statuses and an inbound STOP) are accepted", async () => {
  const { handler, statusCalls, optOuts } = setup();
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, handler);
  const fake = await startFakeWaba({
    accessToken: "t",
    appSecret: SECRET,
    verifyToken: VERIFY,
    mps: 0,
    pairSpacingMs: 0,
    webhook: {
      url: `http://127.0.0.1:${server.addr.port}/waba-webhook`,
      sentDelayMs: 5,
      deliveredDelayMs: 10,
      readDelayMs: 15,
      batchIntervalMs: 5,
    },
  });
  try {
    assert.deepEqual((await fake.verifyWebhook()).ok, true);
    const res = await fetch(`${fake.url}/v21.0/${PNID}/messages`, {
      method: "POST",
      headers: { authorization: "Bearer t", "content-type": "application/json" },
      body: JSON.stringify({
        messaging_product: "whatsapp",
        to: "+254700000077",
        type: "template",
        template: { name: "voucher_issued", language: { code: "en" } },
      }),
    });
    const wamid = (await res.json()).messages[0].id;
    fake.inbound({ from: "+254700000078", text: "Stop." });
    await waitFor(
      () =>
        statusCalls.flat().filter((s) => s.wamid === wamid).length === 3 && optOuts.length === 1,
      5000,
      "three statuses and one opt-out",
    );
    assert.deepEqual(
      statusCalls.flat().filter((s) => s.wamid === wamid).map((s) => s.status),
      ["sent", "delivered", "read"],
    );
    assert.deepEqual(optOuts, [{ msisdn: "+254700000078", source: "whatsapp_inbound" }]);
    assert.equal(fake.stats().webhooks.failedAttempts, 0, "every delivery was answered 2xx");
  } finally {
    await fake.shutdown();
    await server.shutdown();
  }
});

Deno.test("an opt-out the database refuses (not E.164) is logged, and the delivery still answers 200", async () => {
  const { handler, statusCalls } = setup({ refuseOptOut: true });
  const payload = inboundPayload("12", { type: "text", text: { body: "STOP" } });
  const res = await signedPost(handler, payload);
  assert.equal(res.status, 200, "a retry of the delivery could never succeed");
  await res.body?.cancel();
  assert.deepEqual(statusCalls, []);
});
