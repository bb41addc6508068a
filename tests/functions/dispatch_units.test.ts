/**
 * Small pieces of the functions: trigger options, the caller's role, the
 * WhatsApp settings and their local defaults, and the verdict table.
 */
import assert from "node:assert/strict";
import * as localEnv from "../../local/env.ts";
// Unit tests of the dispatch function's private modules (the module under test, as in Deno std).
import {
  DISPATCH_DEFAULTS,
  parseTrigger,
  TriggerError,
} from "../../functions/dispatch/_request.ts";
import { toOutcome } from "../../functions/dispatch/_outcome.ts";
import { LOCAL_STACK_DEFAULTS, wabaConfigFromEnv } from "../../functions/_shared/waba_config.ts";
import { classifyWhatsAppError } from "../../functions/_shared/waba_errors.ts";
import { message } from "./_fakes.ts";
import { errorRules } from "../_support.ts";

const post = (query: string, body = "") =>
  new Request(`http://localhost/dispatch${query}`, { method: "POST", body });

Deno.test("parseTrigger() uses the defaults, then the environment, then the body, then the query", async () => {
  const none = () => undefined;
  assert.deepEqual(await parseTrigger(post(""), none), {
    wait: false,
    channelId: null,
    ...DISPATCH_DEFAULTS,
  });
  const env = (n: string) =>
    ({
      DISPATCH_BUDGET_MS: "20000",
      DISPATCH_CONCURRENCY: "8",
      DISPATCH_MAX_MESSAGES: "900",
    } as Record<
      string,
      string
    >)[n];
  const t = await parseTrigger(
    post("?concurrency=2&wait=1", '{"concurrency": 3, "batch_size": 7, "source": "local-ticker"}'),
    env,
  );
  assert.deepEqual(
    [t.budgetMs, t.maxMessages, t.concurrency, t.batchSize, t.wait],
    [20_000, 900, 2, 7, true],
  );
  assert.equal((await parseTrigger(post("", '{"wait": true}'), none)).wait, true);
  assert.equal((await parseTrigger(post("?wait=0"), none)).wait, false);
});

Deno.test("parseTrigger() rejects out-of-range options (400) and a broken environment (500)", async () => {
  for (
    const q of [
      "?budget_ms=50",
      "?concurrency=65",
      "?lease_seconds=4",
      "?batch_size=1001",
      "?max_messages=0",
    ]
  ) {
    await assert.rejects(
      parseTrigger(post(q), () => undefined),
      (e) => e instanceof TriggerError && e.status === 400,
    );
  }
  await assert.rejects(
    parseTrigger(post(""), (n) => n === "DISPATCH_CONCURRENCY" ? "lots" : undefined),
    (e) => e instanceof TriggerError && e.status === 500 && /DISPATCH_CONCURRENCY/.test(e.message),
  );
});

Deno.test("wabaConfigFromEnv() falls back to the local stack only with LOCAL_STACK=1", () => {
  const empty = wabaConfigFromEnv(() => undefined);
  assert.equal(empty.local, false);
  assert.equal(empty.baseUrl, "https://graph.facebook.com");
  assert.equal(empty.accessTokenFor("1"), undefined);
  assert.equal(empty.hasAccessToken, false);
  assert.equal(empty.appSecret, undefined);

  const local = wabaConfigFromEnv((n) => n === "LOCAL_STACK" ? "1" : undefined);
  assert.equal(local.baseUrl, LOCAL_STACK_DEFAULTS.baseUrl);
  assert.equal(local.accessTokenFor("1"), localEnv.WABA_ACCESS_TOKEN);
  assert.equal(local.appSecret, localEnv.WABA_APP_SECRET);
  assert.equal(local.verifyToken, localEnv.WABA_VERIFY_TOKEN);

  const vars: Record<string, string> = {
    LOCAL_STACK: "1",
    WABA_ACCESS_TOKEN: "global",
    WABA_ACCESS_TOKEN_106540352242922: "per-number",
    WABA_BASE_URL: "https://bsp.example",
  };
  const explicit = wabaConfigFromEnv((n) => vars[n]);
  assert.equal(explicit.accessTokenFor("106540352242922"), "per-number");
  assert.equal(explicit.accessTokenFor("2"), "global");
  assert.equal(explicit.baseUrl, "https://bsp.example");
});

Deno.test("the functions' local defaults are the same values as local/env.ts", () => {
  // Functions cannot import local/ (it is not deployed); this keeps the copies in step.
  // local/env.ts reflects overrides (another stack's ports, other credentials):
  // compare only when it holds its own defaults.
  if (Deno.env.get("WABA_ACCESS_TOKEN") || Deno.env.get("FAKE_WABA_PORT")) return;
  assert.deepEqual(LOCAL_STACK_DEFAULTS, {
    accessToken: localEnv.WABA_ACCESS_TOKEN,
    appSecret: localEnv.WABA_APP_SECRET,
    verifyToken: localEnv.WABA_VERIFY_TOKEN,
    baseUrl: localEnv.FAKE_WABA_URL,
  });
});

Deno.test("toOutcome(): retryable → retry, throttle and pauses → deferred, permanent → failed", async () => {
  const rules = await errorRules();
  const m = message(9, "+254700000009");
  const outcome = (input: Parameters<typeof classifyWhatsAppError>[0]) =>
    toOutcome(m, { ok: false, latencyMs: 1, error: classifyWhatsAppError(input, rules) });
  const err = (input: Parameters<typeof classifyWhatsAppError>[0]) => outcome(input).result;
  assert.deepEqual(
    toOutcome(m, {
      ok: true,
      wamid: "wamid.A",
      waId: "254700000009",
      httpStatus: 200,
      latencyMs: 1,
    }),
    { result: { message_id: 9, outcome: "sent", wamid: "wamid.A" }, optOut: false },
  );
  assert.deepEqual(err({ httpStatus: 429, retryAfterSeconds: 3 }), {
    message_id: 9,
    outcome: "retry",
    error_code: "http_429",
    error_message: "HTTP 429",
    retry_after_seconds: 3,
  });
  assert.deepEqual(
    err({ httpStatus: 401, code: 190, subcode: 463 }),
    {
      message_id: 9,
      outcome: "deferred",
      error_code: "waba_190",
      error_message: "Access token has expired",
      waba_code: 190,
      waba_subcode: 463,
    },
    "an expired token is not the message's fault: deferred, with the code for the database's rule",
  );
  assert.deepEqual(outcome({ httpStatus: 401, code: 190 }).halt, {
    kind: "channel",
    channelId: m.channel_id,
    reason: "access_token_invalid",
  }, "and the run stops sending through that channel");
  assert.equal(err({ httpStatus: 400, code: 130429 }).outcome, "deferred", "throttled: deferred");
  assert.equal(
    outcome({ httpStatus: 400, code: 130429 }).halt,
    undefined,
    "but the run carries on",
  );
  assert.deepEqual(outcome({ httpStatus: 400, code: 132015 }).halt, {
    kind: "template",
    channelId: m.channel_id,
    template: m.template_name,
    language: m.template_language,
    reason: "template_paused",
  });
  assert.equal(err({ httpStatus: 400, code: 131026 }).outcome, "failed");
  const optedOut = outcome({ httpStatus: 400, code: 131050 });
  assert.equal(optedOut.result.outcome, "failed");
  assert.equal(optedOut.optOut, true);
  const invalid = toOutcome(m, {
    ok: false,
    latencyMs: 1,
    error: { kind: "permanent", code: "invalid_response", message: "x", action: "fail" },
  });
  assert.equal(invalid.result.outcome, "failed", "a 2xx we cannot read may have been sent");
});

Deno.test("toOutcome(): a retry with no answer from WhatsApp is marked maybe_sent, a refusal is not", async () => {
  const rules = await errorRules();
  const m = message(9, "+254700000009");
  const retry = (input: Parameters<typeof classifyWhatsAppError>[0]) =>
    toOutcome(m, { ok: false, latencyMs: 1, error: classifyWhatsAppError(input, rules) })
      .result as {
        outcome: string;
        maybe_sent?: boolean;
      };
  assert.equal(retry({ networkError: "timeout" }).maybe_sent, true, "timed out");
  assert.equal(retry({ networkError: "ECONNRESET" }).maybe_sent, true, "connection lost");
  assert.equal(retry({ httpStatus: 502 }).maybe_sent, true, "a bare 5xx from a proxy");
  assert.equal(retry({ httpStatus: 429, retryAfterSeconds: 3 }).maybe_sent, undefined, "throttled");
  assert.equal(retry({ httpStatus: 400, code: 130429 }).maybe_sent, undefined, "Meta refused");
  assert.equal(retry({ httpStatus: 500, code: 131000 }).maybe_sent, undefined, "Meta answered");
});
