import assert from "node:assert/strict";
import {
  DEFAULT_GRAPH_BASE_URL,
  WhatsAppClient,
  WhatsAppClientConfigError,
} from "../../functions/_shared/whatsapp.ts";
import { startFakeWaba } from "../../local/fake_waba/mod.ts";
import { PHONE_NUMBER_ID, TEST_SECRET, TEST_TOKEN } from "./_helpers.ts";
import { errorRules } from "../_support.ts";

const send = {
  phoneNumberId: PHONE_NUMBER_ID,
  to: "+254712345678",
  template: "voucher_issued",
  language: "en",
  bodyParameters: ["Jane", "7KQ2-M9XD-4TRC"],
};

function fakeOptions() {
  return { accessToken: TEST_TOKEN, appSecret: TEST_SECRET, pairSpacingMs: 0 };
}

/** A fetch stub that records calls and answers with `respond`. */
function stubFetch(respond: (req: Request) => Response | Promise<Response>) {
  const calls: Request[] = [];
  const fn: typeof fetch = (input, init) => {
    const req = new Request(input, init);
    calls.push(req.clone());
    return Promise.resolve(respond(req));
  };
  return { fn, calls };
}

Deno.test("WhatsAppClient.sendTemplate() returns the wamid and wa_id from the fake", async () => {
  const fake = await startFakeWaba(fakeOptions());
  try {
    const wa = new WhatsAppClient({ baseUrl: fake.url, accessToken: TEST_TOKEN });
    const r = await wa.sendTemplate(send);
    assert.ok(r.ok, JSON.stringify(r));
    assert.match(r.wamid, /^wamid\.[A-Za-z0-9+/=]+$/);
    assert.equal(r.waId, "254712345678");
    assert.equal(r.messageStatus, "accepted");
    const [m] = fake.messages();
    assert.deepEqual(
      [m.phoneNumberId, m.to, m.template, m.language, m.parameters, m.wamid],
      [
        PHONE_NUMBER_ID,
        "+254712345678",
        "voucher_issued",
        "en",
        ["Jane", "7KQ2-M9XD-4TRC"],
        r.wamid,
      ],
    );
  } finally {
    await fake.shutdown();
  }
});

Deno.test("WhatsAppClient.sendTemplate() POSTs Meta's template body with a bearer token", async () => {
  const { fn, calls } = stubFetch(() =>
    Response.json({
      messaging_product: "whatsapp",
      contacts: [{ input: "+254712345678", wa_id: "254712345678" }],
      messages: [{ id: "wamid.X" }],
    })
  );
  const wa = new WhatsAppClient({ accessToken: "tok", fetch: fn });
  const r = await wa.sendTemplate({ ...send, callbackData: "msg-42" });
  assert.ok(r.ok);
  assert.equal(calls.length, 1);
  const req = calls[0];
  assert.equal(req.method, "POST");
  assert.equal(req.url, `${DEFAULT_GRAPH_BASE_URL}/v21.0/${PHONE_NUMBER_ID}/messages`);
  assert.equal(req.headers.get("authorization"), "Bearer tok");
  assert.equal(req.headers.get("content-type"), "application/json");
  assert.deepEqual(await req.json(), {
    messaging_product: "whatsapp",
    recipient_type: "individual",
    to: "+254712345678",
    type: "template",
    template: {
      name: "voucher_issued",
      language: { code: "en" },
      components: [{
        type: "body",
        parameters: [{ type: "text", text: "Jane" }, { type: "text", text: "7KQ2-M9XD-4TRC" }],
      }],
    },
    biz_opaque_callback_data: "msg-42",
  });
});

Deno.test("WhatsAppClient honours a BSP base URL with a path prefix and a version", async () => {
  const { fn, calls } = stubFetch(() =>
    Response.json({
      messaging_product: "whatsapp",
      contacts: [{ input: "1", wa_id: "1" }],
      messages: [{ id: "wamid.Y" }],
    })
  );
  const wa = new WhatsAppClient({
    baseUrl: "https://bsp.example/graph/",
    version: "v19.0",
    accessToken: "tok",
    fetch: fn,
  });
  await wa.sendTemplate(send);
  assert.equal(calls[0].url, `https://bsp.example/graph/v19.0/${PHONE_NUMBER_ID}/messages`);
});

Deno.test("WhatsAppClient.sendTemplate() reports a throughput limit as retryable waba_130429 (throttle)", async () => {
  const fake = await startFakeWaba({ ...fakeOptions(), mps: 1 });
  try {
    const wa = new WhatsAppClient({
      baseUrl: fake.url,
      accessToken: TEST_TOKEN,
      errorRules: await errorRules(),
    });
    const first = await wa.sendTemplate({ ...send, to: "+254700000001" });
    const second = await wa.sendTemplate({ ...send, to: "+254700000002" });
    assert.ok(first.ok);
    assert.ok(!second.ok);
    assert.deepEqual(
      [second.error.kind, second.error.code, second.error.httpStatus, second.error.action],
      ["retryable", "waba_130429", 400, "throttle"],
    );
  } finally {
    await fake.shutdown();
  }
});

Deno.test("WhatsAppClient.sendTemplate() reports a bad token as an account error that pauses the channel", async () => {
  const fake = await startFakeWaba(fakeOptions());
  try {
    const wa = new WhatsAppClient({
      baseUrl: fake.url,
      accessToken: "wrong",
      errorRules: await errorRules(),
    });
    const r = await wa.sendTemplate(send);
    assert.ok(!r.ok);
    assert.deepEqual(
      [r.error.kind, r.error.code, r.error.httpStatus, r.error.scope, r.error.action],
      ["permanent", "waba_190", 401, "account", "pause_channel"],
    );
    assert.equal(fake.messages().length, 0);
  } finally {
    await fake.shutdown();
  }
});

Deno.test("WhatsAppClient.sendTemplate() reads an expired token's subcode (190/463)", async () => {
  const fake = await startFakeWaba({ ...fakeOptions(), account: { tokenExpired: true } });
  try {
    const wa = new WhatsAppClient({
      baseUrl: fake.url,
      accessToken: TEST_TOKEN,
      errorRules: await errorRules(),
    });
    const r = await wa.sendTemplate(send);
    assert.ok(!r.ok);
    assert.deepEqual(
      [r.error.code, r.error.httpStatus, r.error.wabaSubcode, r.error.reason],
      ["waba_190", 401, 463, "access_token_expired"],
    );
  } finally {
    await fake.shutdown();
  }
});

Deno.test("WhatsAppClient.sendTemplate() times out as retryable without throwing", async () => {
  const fake = await startFakeWaba({ ...fakeOptions(), faults: { script: [{ kind: "timeout" }] } });
  try {
    const wa = new WhatsAppClient({ baseUrl: fake.url, accessToken: TEST_TOKEN, timeoutMs: 150 });
    const started = Date.now();
    const r = await wa.sendTemplate(send);
    assert.ok(!r.ok);
    assert.deepEqual([r.error.kind, r.error.code], ["retryable", "timeout"]);
    assert.ok(Date.now() - started < 5000, "gave up near the timeout, not the fake's max hold");
  } finally {
    await fake.shutdown();
  }
});

Deno.test("WhatsAppClient.sendTemplate() passes Retry-After through on a retryable error", async () => {
  const fake = await startFakeWaba({
    ...fakeOptions(),
    faults: { script: [{ kind: "error", code: 130429, retryAfterSeconds: 7 }] },
  });
  try {
    const wa = new WhatsAppClient({
      baseUrl: fake.url,
      accessToken: TEST_TOKEN,
      errorRules: await errorRules(),
    });
    const r = await wa.sendTemplate(send);
    assert.ok(!r.ok);
    assert.equal(r.error.retryAfterSeconds, 7);
  } finally {
    await fake.shutdown();
  }
});

Deno.test("WhatsAppClient.sendTemplate() reports a 5xx as retryable http_<status>", async () => {
  const fake = await startFakeWaba({ ...fakeOptions(), faults: { serverErrorRate: 1 } });
  try {
    const wa = new WhatsAppClient({ baseUrl: fake.url, accessToken: TEST_TOKEN });
    const r = await wa.sendTemplate(send);
    assert.ok(!r.ok);
    assert.deepEqual([r.error.kind, r.error.code], ["retryable", "http_503"]);
  } finally {
    await fake.shutdown();
  }
});

Deno.test("WhatsAppClient.sendTemplate() treats a non-JSON error page by its HTTP status", async () => {
  const { fn } = stubFetch(() => new Response("<html>Bad gateway</html>", { status: 502 }));
  const wa = new WhatsAppClient({ accessToken: "tok", fetch: fn });
  const r = await wa.sendTemplate(send);
  assert.ok(!r.ok);
  assert.deepEqual([r.error.kind, r.error.code], ["retryable", "http_502"]);
});

Deno.test("WhatsAppClient.sendTemplate() rejects a 200 that is not a Cloud API answer as invalid_response", async () => {
  const { fn } = stubFetch(() => Response.json({ ok: true }));
  const wa = new WhatsAppClient({ accessToken: "tok", fetch: fn });
  const r = await wa.sendTemplate(send);
  assert.ok(!r.ok);
  assert.deepEqual([r.error.kind, r.error.code, r.error.action], [
    "permanent",
    "invalid_response",
    "fail",
  ]);
});

Deno.test("WhatsAppClient.sendTemplate() reports a refused connection as a retryable network error", async () => {
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (closed.addr as Deno.NetAddr).port;
  closed.close();
  const wa = new WhatsAppClient({ baseUrl: `http://127.0.0.1:${port}`, accessToken: "tok" });
  const r = await wa.sendTemplate(send);
  assert.ok(!r.ok);
  assert.deepEqual([r.error.kind, r.error.code], ["retryable", "network_error"]);
});

Deno.test("WhatsAppClient.sendTemplate() refuses invalid input without calling the API", async () => {
  const { fn, calls } = stubFetch(() => new Response(null, { status: 500 }));
  const wa = new WhatsAppClient({ accessToken: "tok", fetch: fn });
  for (
    const bad of [
      { ...send, to: "0712345678" },
      { ...send, template: "Voucher Issued" },
      { ...send, bodyParameters: [""] },
      { ...send, phoneNumberId: "abc" },
    ]
  ) {
    const r = await wa.sendTemplate(bad);
    assert.ok(!r.ok);
    assert.deepEqual([r.error.kind, r.error.code], ["permanent", "invalid_request"]);
  }
  assert.equal(calls.length, 0);
});

Deno.test("WhatsAppClient.sendTemplate() rejects only when the caller aborts", async () => {
  const fake = await startFakeWaba({ ...fakeOptions(), faults: { script: [{ kind: "timeout" }] } });
  try {
    const wa = new WhatsAppClient({ baseUrl: fake.url, accessToken: TEST_TOKEN, timeoutMs: 5000 });
    const caller = new AbortController();
    setTimeout(() => caller.abort(new Error("shutting down")), 50);
    await assert.rejects(
      () => wa.sendTemplate({ ...send, signal: caller.signal }),
      /shutting down/,
    );
  } finally {
    await fake.shutdown();
  }
});

Deno.test("new WhatsAppClient() rejects unusable options", () => {
  assert.throws(() => new WhatsAppClient({ accessToken: "" }), WhatsAppClientConfigError);
  assert.throws(
    () => new WhatsAppClient({ accessToken: "t", baseUrl: "not a url" }),
    WhatsAppClientConfigError,
  );
  assert.throws(
    () => new WhatsAppClient({ accessToken: "t", version: "21" }),
    WhatsAppClientConfigError,
  );
  assert.throws(
    () => new WhatsAppClient({ accessToken: "t", timeoutMs: 0 }),
    WhatsAppClientConfigError,
  );
});
