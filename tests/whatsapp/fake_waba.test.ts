import assert from "node:assert/strict";
import { WhatsAppClient } from "../../functions/_shared/whatsapp.ts";
import {
  GraphErrorBodySchema,
  SendTemplateRequestSchema,
  statusUpdates,
  WebhookPayloadSchema,
} from "../../functions/_shared/waba_schemas.ts";
import {
  configFromEnv,
  type FakeWabaOptions,
  parseLatency,
  startFakeWaba,
} from "../../local/fake_waba/mod.ts";
// Unit tests of the fake's private pieces (the one module under test, as in Deno std).
import { sampleLatency, seededRandom } from "../../local/fake_waba/_config.ts";
import { wamid } from "../../local/fake_waba/_graph.ts";
import { PairSpacing, SlidingWindow } from "../../local/fake_waba/_limits.ts";
import { hubSignature256 } from "../../local/fake_waba/_signature.ts";
import {
  PHONE_NUMBER_ID,
  postSend,
  startReceiver,
  templateBody,
  TEST_SECRET,
  TEST_TOKEN,
} from "./_helpers.ts";

const base: FakeWabaOptions = { accessToken: TEST_TOKEN, appSecret: TEST_SECRET };

async function withFake(
  opts: FakeWabaOptions,
  fn: (fake: Awaited<ReturnType<typeof startFakeWaba>>) => Promise<void>,
) {
  const fake = await startFakeWaba({ ...base, ...opts });
  try {
    await fn(fake);
  } finally {
    await fake.shutdown();
  }
}

const recipient = (i: number) => `+2547${String(10_000_000 + i).padStart(8, "0")}`;

Deno.test("the fake never accepts more than its per-number rate in any one-second window", async () => {
  await withFake({ mps: 20, pairSpacingMs: 0 }, async (fake) => {
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) => postSend(fake.url, templateBody(recipient(i)))),
    );
    const accepted = results.filter((r) => r.status === 200).length;
    const throttled = results.filter((r) =>
      r.status === 400 && (r.json.error as { code: number }).code === 130429
    );
    assert.ok(accepted >= 1 && accepted <= 20, `accepted ${accepted}`);
    assert.equal(accepted + throttled.length, 60, "every other request is a 130429");
    assert.ok(GraphErrorBodySchema.safeParse(throttled[0].json).success);

    const times = fake.messages().map((m) => m.acceptedAtMs);
    for (const t of times) {
      const inWindow = times.filter((u) => u > t - 1000 && u <= t).length;
      assert.ok(inWindow <= 20, `${inWindow} accepted in the second ending at ${t}`);
    }
    assert.equal(fake.stats().outcomes.waba_130429, throttled.length);
  });
});

Deno.test("the fake's rate is per phone number id and the window slides", async () => {
  await withFake({ mps: 2, pairSpacingMs: 0 }, async (fake) => {
    const statuses = [];
    for (let i = 0; i < 3; i++) {
      statuses.push((await postSend(fake.url, templateBody(recipient(i)))).status);
    }
    assert.deepEqual(statuses, [200, 200, 400]);
    const other = await postSend(fake.url, templateBody(recipient(9)), { phoneNumberId: "2" });
    assert.equal(other.status, 200, "another number has its own budget");
    await new Promise((r) => setTimeout(r, 1050));
    assert.equal((await postSend(fake.url, templateBody(recipient(3)))).status, 200);
  });
});

Deno.test("the fake answers 131056 when one recipient is messaged again within the pair spacing", async () => {
  await withFake({ pairSpacingMs: 300 }, async (fake) => {
    const first = await postSend(fake.url, templateBody("+254712345678"));
    const again = await postSend(fake.url, templateBody("254712345678"));
    const other = await postSend(fake.url, templateBody("+254712345679"));
    assert.equal(first.status, 200);
    assert.equal(again.status, 400);
    assert.equal((again.json.error as { code: number }).code, 131056);
    assert.equal(other.status, 200);
    await new Promise((r) => setTimeout(r, 320));
    assert.equal((await postSend(fake.url, templateBody("+254712345678"))).status, 200);
    assert.equal(fake.stats().outcomes.waba_131056, 1);
  });
});

Deno.test("the fake answers 401 with Graph code 190 to a missing or wrong token", async () => {
  await withFake({}, async (fake) => {
    for (const token of [null, "wrong"]) {
      const r = await postSend(fake.url, templateBody("+254712345678"), { token });
      assert.equal(r.status, 401);
      const err = r.json.error as { code: number; type: string; fbtrace_id: string };
      assert.deepEqual([err.code, err.type], [190, "OAuthException"]);
      assert.ok(err.fbtrace_id.length > 10);
      assert.match(r.headers.get("www-authenticate") ?? "", /invalid_token/);
    }
    assert.equal(fake.messages().length, 0);
  });
});

Deno.test("the fake answers 400 with code 100 to a body that is not JSON and to unknown ids", async () => {
  await withFake({}, async (fake) => {
    const bad = [
      await postSend(fake.url, null, { raw: "{not json" }),
      await postSend(fake.url, templateBody("+254712345678"), { phoneNumberId: "abc" }),
      await postSend(fake.url, templateBody("+254712345678"), { version: "latest" }),
    ];
    for (const r of bad) {
      assert.equal(r.status, 400);
      assert.equal(GraphErrorBodySchema.parse(r.json).error.code, 100);
    }
    assert.equal(fake.messages().length, 0);
    assert.equal(fake.stats().outcomes.waba_100, bad.length);
  });
});

/** Malformed send bodies, the Graph code Meta documents for each, and the field the details name. */
const MALFORMED: [what: string, body: Record<string, unknown>, code: number, field: string][] = [
  [
    "messaging_product is not whatsapp",
    templateBody("+254712345678", { messaging_product: "sms" }),
    100,
    "messaging_product",
  ],
  [
    "messaging_product is missing",
    { ...templateBody("+254712345678"), messaging_product: undefined },
    131008,
    "messaging_product",
  ],
  [
    "recipient_type is not individual",
    templateBody("+254712345678", { recipient_type: "group" }),
    100,
    "recipient_type",
  ],
  ["to is not a phone number", templateBody("not-a-number"), 131009, "to"],
  ["to is missing", { ...templateBody("+254712345678"), to: undefined }, 131008, "to"],
  ["type is not template", templateBody("+254712345678", { type: "text" }), 100, "type"],
  [
    "a parameter is misspelled",
    templateBody("+254712345678", { biz_opaque_callbackdata: "x" }),
    100,
    "biz_opaque_callbackdata",
  ],
  [
    "template.language is missing",
    templateBody("+254712345678", { template: { name: "voucher_issued" } }),
    131008,
    "template.language",
  ],
  [
    "template.language.code is not a language",
    templateBody("+254712345678", {
      template: { name: "voucher_issued", language: { code: "English" } },
    }),
    131009,
    "template.language.code",
  ],
  [
    "template.language.policy is not deterministic",
    templateBody("+254712345678", {
      template: { name: "voucher_issued", language: { code: "en", policy: "fallback" } },
    }),
    100,
    "template.language.policy",
  ],
  [
    "a text parameter is a number",
    templateBody("+254712345678", {
      template: {
        name: "voucher_issued",
        language: { code: "en" },
        components: [{ type: "body", parameters: [{ type: "text", text: 9999 }] }],
      },
    }),
    100,
    "template.components[0].parameters[0].text",
  ],
  [
    "a text parameter is empty",
    templateBody("+254712345678", {
      template: {
        name: "voucher_issued",
        language: { code: "en" },
        components: [{ type: "body", parameters: [{ type: "text", text: "" }] }],
      },
    }),
    131009,
    "template.components[0].parameters[0].text",
  ],
  [
    "a component has no type",
    templateBody("+254712345678", {
      template: {
        name: "voucher_issued",
        language: { code: "en" },
        components: [{ parameters: [{ type: "text", text: "x" }] }],
      },
    }),
    131008,
    "template.components[0].type",
  ],
  [
    "biz_opaque_callback_data is longer than 512 characters",
    templateBody("+254712345678", { biz_opaque_callback_data: "x".repeat(513) }),
    131009,
    "biz_opaque_callback_data",
  ],
];

Deno.test("the fake refuses malformed sends with Meta's codes, as the production schema does", async () => {
  await withFake({}, async (fake) => {
    for (const [what, body, code, field] of MALFORMED) {
      assert.equal(
        SendTemplateRequestSchema.safeParse(body).success,
        false,
        `the production schema also refuses: ${what}`,
      );
      const r = await postSend(fake.url, body);
      assert.equal(r.status, 400, what);
      const err = GraphErrorBodySchema.parse(r.json).error;
      assert.equal(err.code, code, what);
      assert.equal(err.type, "OAuthException", what);
      assert.match(err.message, new RegExp(`^\\(#${code}\\) `), what);
      assert.ok(
        err.error_data?.details?.includes(`'${field}'`),
        `${what}: ${err.error_data?.details}`,
      );
      assert.ok((err.fbtrace_id ?? "").length > 10, what);
    }
    assert.equal(fake.messages().length, 0, "nothing malformed was recorded");
  });
});

Deno.test("the fake accepts biz_opaque_callback_data of 512 characters and echoes it on its status webhooks", async () => {
  const receiver = startReceiver();
  try {
    await withFake({
      pairSpacingMs: 0,
      webhook: {
        url: receiver.url,
        sentDelayMs: 10,
        deliveredDelayMs: 20,
        readRate: 0,
        batchIntervalMs: 10,
      },
    }, async (fake) => {
      const callback = "m".repeat(512);
      const body = templateBody("+254712345678", { biz_opaque_callback_data: callback });
      assert.ok(
        SendTemplateRequestSchema.safeParse(body).success,
        "the production client may send it",
      );
      const r = await postSend(fake.url, body);
      assert.equal(r.status, 200);
      assert.equal(fake.messages()[0].callbackData, callback);
      assert.ok(await fake.waitForWebhooks(5000));
      const statuses = receiver.received.flatMap((hook) =>
        statusUpdates(WebhookPayloadSchema.parse(JSON.parse(hook.raw))).map((u) => u.status)
      );
      assert.deepEqual(statuses.map((s) => s.status), ["sent", "delivered"]);
      for (const s of statuses) assert.equal(s.biz_opaque_callback_data, callback);
    });
  } finally {
    await receiver.shutdown();
  }
});

Deno.test("the fake checks templates against its registry when one is configured", async () => {
  await withFake(
    { templates: { voucher_issued: { bodyParams: 1, languages: ["en"] } } },
    async (fake) => {
      assert.equal((await postSend(fake.url, templateBody("+254700000001"))).status, 200);
      const unknown = await postSend(fake.url, {
        ...templateBody("+254700000002"),
        template: { name: "nope", language: { code: "en" } },
      });
      assert.equal((unknown.json.error as { code: number }).code, 132001);
      const wrongCount = await postSend(fake.url, {
        ...templateBody("+254700000003"),
        template: { name: "voucher_issued", language: { code: "en" } },
      });
      assert.equal((wrongCount.json.error as { code: number }).code, 132000);
    },
  );
});

Deno.test("the fake injects 5xx answers at the configured rate", async () => {
  await withFake(
    { pairSpacingMs: 0, faults: { serverErrorRate: 1, serverErrorStatus: 500 } },
    async (fake) => {
      const r = await postSend(fake.url, templateBody("+254700000001"));
      assert.equal(r.status, 500);
      const err = GraphErrorBodySchema.parse(r.json).error;
      assert.equal(err.is_transient, true);
      fake.configure({ faults: { serverErrorRate: 0 } });
      assert.equal((await postSend(fake.url, templateBody("+254700000002"))).status, 200);
      assert.deepEqual(fake.stats().outcomes, { http_500: 1, accepted: 1 });
    },
  );
});

Deno.test("the fake's fault rates are probabilities: a seeded 30% 5xx rate lands near 30%", async () => {
  await withFake(
    { mps: 0, pairSpacingMs: 0, seed: 7, faults: { serverErrorRate: 0.3 } },
    async (fake) => {
      let errors = 0;
      for (let i = 0; i < 200; i++) {
        if ((await postSend(fake.url, templateBody(recipient(i)))).status === 503) errors++;
      }
      assert.ok(errors > 30 && errors < 90, `${errors} of 200 were 5xx`);
      assert.equal(fake.messages().length, 200 - errors);
    },
  );
});

Deno.test("the fake holds timed-out requests unanswered and records nothing", async () => {
  await withFake({ faults: { timeoutRate: 1, maxHoldMs: 10_000 } }, async (fake) => {
    const wa = new WhatsAppClient({ baseUrl: fake.url, accessToken: TEST_TOKEN, timeoutMs: 100 });
    const r = await wa.sendTemplate({
      phoneNumberId: PHONE_NUMBER_ID,
      to: "+254700000001",
      template: "voucher_issued",
      language: "en",
    });
    assert.ok(!r.ok && r.error.code === "timeout");
    assert.equal(fake.messages().length, 0);
    assert.equal(fake.stats().outcomes.timeout, 1);
  });
});

Deno.test("the fake can lose the answer to a send it accepted", async () => {
  await withFake(
    { faults: { script: [{ kind: "lost_response" }], maxHoldMs: 10_000 } },
    async (fake) => {
      const wa = new WhatsAppClient({ baseUrl: fake.url, accessToken: TEST_TOKEN, timeoutMs: 100 });
      const r = await wa.sendTemplate({
        phoneNumberId: PHONE_NUMBER_ID,
        to: "+254700000001",
        template: "voucher_issued",
        language: "en",
      });
      assert.ok(!r.ok && r.error.code === "timeout");
      assert.equal(
        fake.messages().length,
        1,
        "the message went out although the client saw a timeout",
      );
    },
  );
});

Deno.test("the fake bounds a held request by maxHoldMs and then answers 504", async () => {
  await withFake({ faults: { timeoutRate: 1, maxHoldMs: 100 } }, async (fake) => {
    const started = Date.now();
    const r = await postSend(fake.url, templateBody("+254700000001"));
    assert.equal(r.status, 504);
    assert.ok(Date.now() - started >= 90);
  });
});

Deno.test("the fake plays a scripted list of answers in order, then behaves normally", async () => {
  await withFake({
    pairSpacingMs: 0,
    faults: {
      script: [
        { kind: "error", code: 130429 },
        { kind: "error", status: 502 },
        { kind: "error", code: 131048 },
        { kind: "ok" },
      ],
    },
  }, async (fake) => {
    const codes = [];
    for (let i = 0; i < 5; i++) {
      const r = await postSend(fake.url, templateBody(recipient(i)));
      codes.push(
        r.status === 200 ? "ok" : `${r.status}:${(r.json.error as { code: number }).code}`,
      );
    }
    assert.deepEqual(codes, ["400:130429", "502:1", "400:131048", "ok", "ok"]);
    assert.equal(fake.config().faults.script.length, 0);
  });
});

Deno.test("the fake answers 130429 for the length of a storm", async () => {
  await withFake({ pairSpacingMs: 0 }, async (fake) => {
    fake.storm(200);
    assert.equal((await postSend(fake.url, templateBody(recipient(1)))).status, 400);
    await new Promise((r) => setTimeout(r, 220));
    assert.equal((await postSend(fake.url, templateBody(recipient(2)))).status, 200);
  });
});

Deno.test("the fake can throttle with HTTP 429 and Retry-After like some BSPs", async () => {
  await withFake({
    mps: 1,
    pairSpacingMs: 0,
    throttleHttpStatus: 429,
    rateLimitRetryAfterSeconds: 2,
  }, async (fake) => {
    const wa = new WhatsAppClient({ baseUrl: fake.url, accessToken: TEST_TOKEN });
    const input = { phoneNumberId: PHONE_NUMBER_ID, template: "voucher_issued", language: "en" };
    await wa.sendTemplate({ ...input, to: "+254700000001" });
    const r = await wa.sendTemplate({ ...input, to: "+254700000002" });
    assert.ok(!r.ok);
    assert.deepEqual([r.error.httpStatus, r.error.code, r.error.retryAfterSeconds], [
      429,
      "waba_130429",
      2,
    ]);
  });
});

Deno.test("the fake delays answers by the configured latency", async () => {
  await withFake({ latency: { kind: "fixed", ms: 120 } }, async (fake) => {
    const started = performance.now();
    await postSend(fake.url, templateBody("+254700000001"));
    assert.ok(performance.now() - started >= 110);
  });
});

Deno.test("sampleLatency() draws lognormal latencies with the configured p50 and p99", () => {
  const random = seededRandom(1);
  const xs = Array.from(
    { length: 20_000 },
    () => sampleLatency({ kind: "lognormal", p50Ms: 20, p99Ms: 200 }, random),
  ).sort((a, b) => a - b);
  const p50 = xs[Math.floor(xs.length * 0.5)];
  const p99 = xs[Math.floor(xs.length * 0.99)];
  assert.ok(p50 > 18 && p50 < 22, `p50 ${p50}`);
  assert.ok(p99 > 170 && p99 < 235, `p99 ${p99}`);
  const u = sampleLatency({ kind: "uniform", minMs: 5, maxMs: 10 }, random);
  assert.ok(u >= 5 && u <= 10);
  assert.ok(sampleLatency({ kind: "normal", meanMs: 0, stdDevMs: 50 }, random) >= 0);
});

Deno.test("parseLatency() reads fixed, uniform, lognormal and JSON notations", () => {
  assert.deepEqual(parseLatency("20"), { kind: "fixed", ms: 20 });
  assert.deepEqual(parseLatency("10-50"), { kind: "uniform", minMs: 10, maxMs: 50 });
  assert.deepEqual(parseLatency("20/200"), { kind: "lognormal", p50Ms: 20, p99Ms: 200 });
  assert.deepEqual(parseLatency('{"kind":"normal","meanMs":5,"stdDevMs":1}'), {
    kind: "normal",
    meanMs: 5,
    stdDevMs: 1,
  });
  assert.throws(() => parseLatency("fast"));
});

Deno.test("configFromEnv() maps the FAKE_WABA_* variables onto the config", () => {
  const env: Record<string, string> = {
    WABA_ACCESS_TOKEN: "t",
    FAKE_WABA_WEBHOOK_URL: "none",
    FAKE_WABA_LATENCY_MS: "20/200",
    FAKE_WABA_MPS: "250",
    FAKE_WABA_PAIR_SPACING_MS: "0",
  };
  const patch = configFromEnv((k) => env[k]);
  assert.equal(patch.accessToken, "t");
  assert.equal(patch.webhook?.url, null);
  assert.deepEqual(patch.latency, { kind: "lognormal", p50Ms: 20, p99Ms: 200 });
  assert.equal(patch.mps, 250);
  assert.equal(patch.pairSpacingMs, 0);
  assert.match(configFromEnv(() => undefined).webhook?.url ?? "", /\/functions\/v1\/waba-webhook$/);
});

Deno.test("the fake's control endpoints expose messages, stats, config and reset over HTTP", async () => {
  await withFake({ pairSpacingMs: 0 }, async (fake) => {
    await postSend(fake.url, templateBody("+254700000001"));
    await postSend(fake.url, templateBody("+254700000002"), { token: "bad" });

    const messages = await (await fetch(`${fake.url}/_fake/messages?to=254700000001`)).json();
    assert.equal(messages.total, 1);
    assert.equal(messages.messages[0].template, "voucher_issued");
    assert.deepEqual(messages.messages[0].parameters, ["7KQ2-M9XD-4TRC"]);

    const stats = await (await fetch(`${fake.url}/_fake/stats`)).json();
    assert.deepEqual(stats.outcomes, { accepted: 1, waba_190: 1 });
    assert.equal(stats.requests, 2);

    const cfgRes = await fetch(`${fake.url}/_fake/config`, {
      method: "POST",
      body: JSON.stringify({ mps: 1, faults: { timeoutRate: 0 } }),
    });
    assert.equal((await cfgRes.json()).mps, 1);
    assert.equal(fake.config().mps, 1);
    const badCfg = await fetch(`${fake.url}/_fake/config`, {
      method: "POST",
      body: JSON.stringify({ mps: -1 }),
    });
    assert.equal(badCfg.status, 400);
    await badCfg.body?.cancel();

    await (await fetch(`${fake.url}/_fake/reset`, { method: "POST" })).body?.cancel();
    assert.equal(fake.messages().length, 0);
    assert.equal(fake.stats().requests, 0);
    assert.equal(fake.config().mps, 80, "reset restores the startup config");
  });
});

Deno.test("the fake keeps at most maxStoredMessages, dropping the oldest", async () => {
  await withFake({ pairSpacingMs: 0, maxStoredMessages: 3 }, async (fake) => {
    for (let i = 0; i < 5; i++) await postSend(fake.url, templateBody(recipient(i)));
    const kept = fake.messages();
    assert.deepEqual(kept.map((m) => m.seq), [3, 4, 5]);
    assert.equal(fake.stats().droppedMessages, 2);
    assert.equal(fake.stats().accepted, 5);
  });
});

Deno.test("wamid() makes unique Meta-shaped ids that embed the recipient", () => {
  const ids = new Set(Array.from({ length: 1000 }, () => wamid("254712345678")));
  assert.equal(ids.size, 1000);
  const id = [...ids][0];
  assert.match(id, /^wamid\.HBg/);
  assert.ok(atob(id.slice("wamid.".length)).includes("254712345678"));
});

Deno.test("SlidingWindow admits exactly `limit` events per window", () => {
  const w = new SlidingWindow(3, 1000);
  const admitted = [0, 10, 20, 30, 999, 1000, 1005, 1010, 1011].filter((t) => {
    if (!w.allows(t)) return false;
    w.record(t);
    return true;
  });
  assert.deepEqual(admitted, [0, 10, 20, 1000, 1010]);
});

Deno.test("PairSpacing forgets pairs older than the spacing as it grows", () => {
  const p = new PairSpacing(100);
  for (let i = 0; i < 25_000; i++) p.record("1", String(i), i);
  assert.ok(p.size < 11_000, `tracked ${p.size}`);
  assert.equal(p.allows("1", "24999", 25_000), false);
  assert.equal(p.allows("1", "0", 25_000), true);
});

Deno.test("hubSignature256() is sha256= and the hex HMAC-SHA256 of the raw body, as Meta signs", async () => {
  // The HMAC-SHA256 of "test" keyed with "secret", a published test vector.
  assert.equal(
    await hubSignature256("test", "secret"),
    "sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914",
  );
  assert.notEqual(await hubSignature256("test", "other"), await hubSignature256("test", "secret"));
});
