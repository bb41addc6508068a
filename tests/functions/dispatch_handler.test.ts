/**
 * The dispatch Edge Function, against the fake WhatsApp API and an in-memory
 * queue: the trigger contract (ack, auth, options), the run loop (concurrency,
 * batching, retries of transient database errors, idle exit, budget, abort) and
 * the verdict it reports for each kind of WhatsApp answer.
 */
import assert from "node:assert/strict";
import {
  ANON_KEY,
  localJwks,
  mintJwt,
  PUBLISHABLE_KEY,
  SECRET_KEY,
  SERVICE_ROLE_KEY,
} from "../../local/env.ts";
import {
  type FakeWaba,
  type FakeWabaConfigPatch,
  startFakeWaba,
} from "../../local/fake_waba/mod.ts";
// Unit tests of the dispatch function's private modules (the module under test, as in Deno std).
import { createDispatchHandler } from "../../functions/dispatch/handler.ts";
import { runDispatch, type RunOptions, type RunSummary } from "../../functions/dispatch/_run.ts";
import { createSender } from "../../functions/dispatch/_sender.ts";
import { wabaConfigFromEnv } from "../../functions/_shared/waba_config.ts";
import type { ClaimedMessage } from "../../functions/_shared/rpc.ts";
import { adminShutdown, FakeQueue, message, messages } from "./_fakes.ts";
import { errorRules } from "../_support.ts";

const TOKEN = "dispatch-test-token";

/** The keys a hosted project gives every function (supabase.com/docs/guides/functions/secrets). */
const PLATFORM_ENV: Record<string, string> = {
  SUPABASE_ANON_KEY: ANON_KEY,
  SUPABASE_SERVICE_ROLE_KEY: SERVICE_ROLE_KEY,
  SUPABASE_PUBLISHABLE_KEYS: JSON.stringify({ default: PUBLISHABLE_KEY }),
  SUPABASE_SECRET_KEYS: JSON.stringify({ default: SECRET_KEY }),
  SUPABASE_JWKS: JSON.stringify(await localJwks()),
};

/** Runs `fn` with a fake WhatsApp API (no limits, no webhooks unless patched). */
async function withFake(
  patch: FakeWabaConfigPatch,
  fn: (fake: FakeWaba, env: (name: string) => string | undefined) => Promise<void>,
): Promise<void> {
  const fake = await startFakeWaba({ accessToken: TOKEN, mps: 0, pairSpacingMs: 0, ...patch });
  const vars: Record<string, string> = {
    WABA_ACCESS_TOKEN: TOKEN,
    WABA_BASE_URL: fake.url,
    ...PLATFORM_ENV,
  };
  try {
    await fn(fake, (name) => vars[name]);
  } finally {
    await fake.shutdown();
  }
}

function runOptions(overrides: Partial<RunOptions> = {}): RunOptions {
  return {
    runId: "test-run",
    budgetMs: 10_000,
    maxMessages: 100_000,
    concurrency: 4,
    batchSize: 10,
    leaseSeconds: 60,
    idleExitMs: 0,
    reportBatchSize: 10,
    reportIntervalMs: 20,
    ...overrides,
  };
}

function trigger(
  query = "",
  init: { key?: string | null; apikey?: string; body?: string; method?: string } = {},
): Request {
  const headers: Record<string, string> = { "content-type": "application/json" };
  const key = init.key === undefined ? SERVICE_ROLE_KEY : init.key;
  if (key !== null) headers.authorization = `Bearer ${key}`;
  if (init.apikey !== undefined) headers.apikey = init.apikey;
  return new Request(`http://localhost/dispatch${query}`, {
    method: init.method ?? "POST",
    headers,
    body: init.method === "GET" ? undefined : init.body ?? "{}",
  });
}

Deno.test("dispatch answers 202 before touching the database, then finishes in waitUntil", async () => {
  await withFake({}, async (fake, env) => {
    const queue = new FakeQueue(messages(5));
    let release!: () => void;
    const gate = new Promise<void>((r) => release = r);
    const claimsAtResponse: number[] = [];
    const originalClaim = queue.claim.bind(queue);
    queue.claim = async (opts) => {
      await gate; // the database is "slow": the answer must not wait for it
      return originalClaim(opts);
    };
    const background: Promise<unknown>[] = [];
    const handler = createDispatchHandler({
      env: (n) => n === "DISPATCH_IDLE_EXIT_MS" ? "0" : env(n),
      queueFor: () => queue,
      waitUntil: (p) => background.push(p),
    });

    const res = await handler(trigger());
    claimsAtResponse.push(queue.claimCalls);
    const body = await res.json();
    assert.equal(res.status, 202);
    assert.equal(body.accepted, true);
    assert.match(body.run_id, /^[0-9a-f-]{36}$/);
    assert.equal(background.length, 1, "the run is handed to EdgeRuntime.waitUntil");
    assert.deepEqual(claimsAtResponse, [0], "no claim was made before the answer");

    release();
    const summary = await background[0] as RunSummary;
    assert.equal(summary.sent, 5);
    assert.equal(fake.messages().length, 5);
  });
});

Deno.test("dispatch ?wait=1 runs in the foreground and answers with the run summary", async () => {
  await withFake({}, async (fake, env) => {
    const queue = new FakeQueue(messages(7));
    const handler = createDispatchHandler({ env, queueFor: () => queue });
    const res = await handler(trigger("?wait=1&idle_exit_ms=0&concurrency=3"));
    assert.equal(res.status, 200);
    const summary = await res.json() as RunSummary;
    assert.equal(summary.stop_reason, "queue_empty");
    assert.equal(summary.claimed, 7);
    assert.equal(summary.sent, 7);
    assert.equal(summary.report.sent, 7);
    assert.equal(summary.report.stale, 0);
    assert.match(summary.worker, /^dispatch:/);

    // Each recipient got exactly its own message, and the report carries the fake's wamids.
    const recorded = fake.messages();
    assert.deepEqual(
      recorded.map((m) => [m.to, m.parameters[0], m.callbackData]).sort(),
      messages(7).map((m) => [m.to, m.body_parameters[0], String(m.message_id)]).sort(),
    );
    const reported = queue.results();
    assert.deepEqual(
      reported.map((r) => r.outcome === "sent" ? r.wamid : null).sort(),
      recorded.map((m) => m.wamid).sort(),
    );
  });
});

Deno.test("dispatch takes pg_cron's call with either key style: sb_secret_ as apikey, or the legacy JWT", async () => {
  await withFake({}, async (_fake, env) => {
    const handler = createDispatchHandler({ env, queueFor: () => new FakeQueue([]) });
    // app.invoke_dispatch: the Vault key as apikey, and as bearer only when it is a JWT.
    const cronNew = await handler(
      trigger("?wait=1&idle_exit_ms=0", { key: null, apikey: SECRET_KEY }),
    );
    assert.equal(cronNew.status, 200, await cronNew.clone().text());
    await cronNew.body?.cancel();
    const cronLegacy = await handler(
      trigger("?wait=1&idle_exit_ms=0", { key: SERVICE_ROLE_KEY, apikey: SERVICE_ROLE_KEY }),
    );
    assert.equal(cronLegacy.status, 200);
    await cronLegacy.body?.cancel();
    const es256 = await mintJwt({ role: "service_role" }, { alg: "ES256" });
    const viaJwt = await handler(trigger("?wait=1&idle_exit_ms=0", { key: es256 }));
    assert.equal(viaJwt.status, 200, "a service_role JWT verified against SUPABASE_JWKS");
    await viaJwt.body?.cancel();
  });
});

Deno.test("dispatch refuses callers without the service key, other methods and bad options", async () => {
  await withFake({}, async (_fake, env) => {
    const queue = new FakeQueue(messages(1));
    const handler = createDispatchHandler({ env, queueFor: () => queue });
    const anon = await handler(trigger("", { key: ANON_KEY }));
    assert.equal(anon.status, 403);
    assert.match((await anon.json()).message, /role is "anon"/);
    const publishable = await handler(trigger("", { key: null, apikey: PUBLISHABLE_KEY }));
    assert.equal(publishable.status, 403);
    await publishable.body?.cancel();
    const user = await handler(trigger("", { key: await mintJwt({ sub: "u" }, { alg: "ES256" }) }));
    assert.equal(user.status, 403);
    assert.match((await user.json()).message, /role is "authenticated"/);
    // The payload of a real service_role key on a token signed by someone else: refused.
    const forged = await mintJwt({ role: "service_role" }, { secret: "x".repeat(40) });
    for (const key of [null, "not-a-jwt", forged, `${SECRET_KEY}x`]) {
      const res = await handler(trigger("", { key }));
      assert.equal(res.status, 401, String(key));
      assert.equal((await res.json()).error, "unauthorized");
    }
    assert.equal((await handler(trigger("", { method: "GET" }))).status, 405);
    for (
      const [query, body] of [
        ["?concurrency=0", "{}"],
        ["?budget_ms=abc", "{}"],
        ["", '{"channel_id": "not-a-uuid"}'],
        ["", "not json"],
        ["", "[1, 2]"],
      ]
    ) {
      const res = await handler(trigger(query, { body }));
      assert.equal(res.status, 400, `${query} ${body}`);
      assert.equal((await res.json()).error, "invalid_request");
    }
    assert.equal(queue.claimCalls, 0, "a refused trigger claims nothing");
  });
});

Deno.test("dispatch without any WhatsApp access token answers 500 and claims nothing", async () => {
  const queue = new FakeQueue(messages(1));
  const handler = createDispatchHandler({ env: () => undefined, queueFor: () => queue });
  const res = await handler(trigger("?wait=1"));
  assert.equal(res.status, 500);
  assert.equal((await res.json()).error, "not_configured");
  assert.equal(queue.claimCalls, 0);
});

Deno.test("dispatch answers busy beyond DISPATCH_MAX_RUNS background runs in one isolate", async () => {
  await withFake({}, async (_fake, env) => {
    let release!: () => void;
    const gate = new Promise<void>((r) => release = r);
    const queue = new FakeQueue([]);
    const claim = queue.claim.bind(queue);
    queue.claim = async (o) => {
      await gate;
      return claim(o);
    };
    const background: Promise<unknown>[] = [];
    const handler = createDispatchHandler({
      env: (n) => n === "DISPATCH_MAX_RUNS" ? "1" : n === "DISPATCH_IDLE_EXIT_MS" ? "0" : env(n),
      queueFor: () => queue,
      waitUntil: (p) => background.push(p),
    });
    assert.equal((await (await handler(trigger())).json()).accepted, true);
    const busy = await (await handler(trigger())).json();
    assert.deepEqual(busy, { accepted: false, reason: "busy", active_runs: 1 });
    release();
    await Promise.all(background);
    assert.equal((await (await handler(trigger())).json()).accepted, true, "free again");
    await Promise.all(background);
  });
});

Deno.test("runDispatch() never has more than `concurrency` sends in flight", async () => {
  await withFake({ latency: { kind: "fixed", ms: 15 } }, async (fake, env) => {
    let inFlight = 0;
    let peak = 0;
    const counting: typeof fetch = async (input, init) => {
      inFlight++;
      peak = Math.max(peak, inFlight);
      try {
        return await fetch(input, init);
      } finally {
        inFlight--;
      }
    };
    const queue = new FakeQueue(messages(60));
    const summary = await runDispatch(runOptions({ concurrency: 5 }), {
      queue,
      send: createSender(wabaConfigFromEnv(env), counting),
      worker: "w",
    });
    assert.equal(summary.sent, 60);
    assert.equal(fake.messages().length, 60);
    assert.ok(peak <= 5, `peak in flight ${peak} > 5`);
    assert.ok(peak >= 2, `sends should overlap (peak ${peak})`);
  });
});

Deno.test("runDispatch() reports in batches of at most report_batch, each message once", async () => {
  await withFake({}, async (_fake, env) => {
    const queue = new FakeQueue(messages(95));
    const summary = await runDispatch(runOptions({ reportBatchSize: 10, reportIntervalMs: 1000 }), {
      queue,
      send: createSender(wabaConfigFromEnv(env)),
      worker: "w",
    });
    assert.equal(summary.report.applied, 95);
    assert.ok(queue.reports.every((batch) => batch.length <= 10));
    const ids = queue.results().map((r) => r.message_id);
    assert.equal(new Set(ids).size, 95);
    assert.equal(ids.length, 95);
  });
});

Deno.test("runDispatch() maps WhatsApp answers to sent / retry / deferred / failed, opts out on 131050, halts a paused template", async () => {
  const rules = await errorRules();
  await withFake({
    faults: {
      script: [
        { kind: "ok" },
        { kind: "error", status: 503, retryAfterSeconds: 7 },
        { kind: "error", code: 130429 },
        { kind: "error", code: 131050 },
        { kind: "error", code: 131047 },
        { kind: "timeout" },
        { kind: "error", code: 132001 },
        { kind: "ok" },
      ],
      maxHoldMs: 2000,
    },
  }, async (fake, env) => {
    const queue = new FakeQueue(messages(8));
    const summary = await runDispatch(runOptions({ concurrency: 1, batchSize: 1 }), {
      queue,
      send: createSender(
        wabaConfigFromEnv((n) => n === "WABA_TIMEOUT_MS" ? "300" : env(n)),
        undefined,
        rules,
      ),
      worker: "w",
    });
    const byId = new Map(queue.results().map((r) => [r.message_id, r]));
    const pick = (id: number) => {
      const r = byId.get(id)!;
      return {
        outcome: r.outcome,
        code: "error_code" in r ? r.error_code : undefined,
        retryAfter: "retry_after_seconds" in r ? r.retry_after_seconds : undefined,
      };
    };
    assert.equal(pick(1).outcome, "sent");
    assert.deepEqual(pick(2), { outcome: "retry", code: "http_503", retryAfter: 7 });
    assert.deepEqual(pick(3), { outcome: "deferred", code: "waba_130429", retryAfter: undefined });
    assert.deepEqual(pick(4), { outcome: "failed", code: "waba_131050", retryAfter: undefined });
    assert.deepEqual(pick(5), { outcome: "failed", code: "waba_131047", retryAfter: undefined });
    assert.deepEqual(pick(6), { outcome: "retry", code: "timeout", retryAfter: undefined });
    assert.deepEqual(pick(7), { outcome: "deferred", code: "waba_132001", retryAfter: undefined });
    assert.deepEqual(pick(8), { outcome: "deferred", code: "halted", retryAfter: undefined });
    assert.equal(fake.stats().requests, 7, "the message after the template error was never sent");
    assert.deepEqual(queue.optOuts, [{ msisdn: messages(8)[3].to, source: "waba_131050" }]);
    assert.deepEqual(
      [
        summary.sent,
        summary.retried,
        summary.deferred,
        summary.failed,
        summary.released,
        summary.opt_outs,
      ],
      [1, 2, 2, 2, 1, 1],
    );
    assert.equal(summary.halted.length, 1);
    assert.match(summary.halted[0], /template voucher_issued \(en\).*template_missing/);
    assert.equal(summary.errors.http_503, 1);
  });
});

Deno.test("runDispatch() halts a channel whose token expired: what it still holds is deferred, unsent", async () => {
  const rules = await errorRules();
  await withFake({ account: { tokenExpired: true } }, async (fake, env) => {
    const queue = new FakeQueue(messages(20));
    const summary = await runDispatch(runOptions({ concurrency: 2, batchSize: 20 }), {
      queue,
      send: createSender(wabaConfigFromEnv(env), undefined, rules),
      worker: "w",
    });
    const results = queue.results();
    assert.equal(results.length, 20, "every claimed message is reported");
    assert.ok(results.every((r) => r.outcome === "deferred"), "none is retried or failed");
    assert.ok(
      fake.stats().requests <= 2,
      `at most the sends in flight went out (${fake.stats().requests})`,
    );
    assert.deepEqual(
      results.filter((r) => r.outcome === "deferred" && r.error_code === "waba_190").map((r) =>
        "waba_subcode" in r ? r.waba_subcode : undefined
      ),
      Array(fake.stats().requests).fill(463),
      "the ones sent carry 190/463 for the database's rule",
    );
    assert.match(summary.halted.join(), /access_token_expired/);
  });
});

Deno.test("runDispatch() retries transient database errors on claim and report and loses nothing", async () => {
  await withFake({}, async (fake, env) => {
    const queue = new FakeQueue(messages(30));
    queue.claimErrors = [adminShutdown(), adminShutdown()];
    queue.reportErrors = [adminShutdown()];
    const summary = await runDispatch(runOptions({ reportBatchSize: 5 }), {
      queue,
      send: createSender(wabaConfigFromEnv(env)),
      worker: "w",
    });
    assert.equal(summary.db_errors, 2);
    assert.equal(summary.report.errors, 1);
    assert.equal(summary.report.applied, 30, "every send was reported once");
    assert.equal(summary.report.abandoned, 0);
    assert.equal(fake.messages().length, 30, "and sent once");
  });
});

Deno.test("runDispatch() stops with stop_reason error on a non-transient claim failure", async () => {
  const queue = new FakeQueue(messages(3));
  queue.claimErrors = [new Error("permission denied for function claim_messages")];
  const summary = await runDispatch(runOptions(), {
    queue,
    send: () => Promise.reject(new Error("must not send")),
    worker: "w",
  });
  assert.equal(summary.stop_reason, "error");
  assert.match(summary.error ?? "", /permission denied/);
  assert.equal(summary.sent, 0);
});

Deno.test("runDispatch() polls an empty queue until idle_exit_ms, then stops", async () => {
  const queue = new FakeQueue([]);
  const t0 = Date.now();
  const summary = await runDispatch(runOptions({ idleExitMs: 300 }), {
    queue,
    send: () => Promise.reject(new Error("nothing to send")),
    worker: "w",
  });
  assert.equal(summary.stop_reason, "queue_empty");
  assert.ok(summary.claim_calls >= 3, `polled ${summary.claim_calls} times`);
  assert.ok(Date.now() - t0 >= 300);
});

Deno.test("runDispatch() stops claiming when its budget is spent and reports what it sent", async () => {
  await withFake({ latency: { kind: "fixed", ms: 5 } }, async (fake, env) => {
    let next = 1;
    const queue = new FakeQueue([]);
    const claim = queue.claim.bind(queue);
    queue.claim = (o) => { // an endless queue
      queue.waiting.push(...messages(o.max, next));
      next += o.max;
      return claim(o);
    };
    const summary = await runDispatch(runOptions({ budgetMs: 300 }), {
      queue,
      send: createSender(wabaConfigFromEnv(env)),
      worker: "w",
    });
    assert.equal(summary.stop_reason, "budget_spent");
    assert.ok(summary.sent > 0);
    assert.equal(summary.sent + summary.released, summary.claimed);
    assert.equal(summary.report.applied, summary.claimed, "nothing claimed is left unreported");
    assert.equal(fake.messages().length, summary.sent);
  });
});

Deno.test("runDispatch() claims at most max_messages, then stops and reports them all", async () => {
  await withFake({ latency: { kind: "fixed", ms: 2 } }, async (fake, env) => {
    let next = 1;
    const queue = new FakeQueue([]);
    const claim = queue.claim.bind(queue);
    const asked: number[] = [];
    queue.claim = (o) => { // an endless queue
      asked.push(o.max);
      queue.waiting.push(...messages(o.max, next));
      next += o.max;
      return claim(o);
    };
    const summary = await runDispatch(runOptions({ maxMessages: 25, batchSize: 10 }), {
      queue,
      send: createSender(wabaConfigFromEnv(env)),
      worker: "w",
    });
    assert.equal(summary.stop_reason, "message_cap");
    assert.equal(summary.claimed, 25, "the last claim asks only for what the cap leaves");
    assert.deepEqual(asked, [10, 10, 5]);
    assert.equal(summary.sent, 25);
    assert.equal(summary.report.applied, 25, "nothing claimed is left unreported");
    assert.equal(fake.messages().length, 25);
  });
});

Deno.test("runDispatch() aborted: stops sending and releases claimed messages, deferred", async () => {
  await withFake({ latency: { kind: "fixed", ms: 40 } }, async (fake, env) => {
    const queue = new FakeQueue(messages(50));
    const abort = new AbortController();
    setTimeout(() => abort.abort(), 60);
    const summary = await runDispatch(
      runOptions({ concurrency: 2, batchSize: 20, signal: abort.signal }),
      { queue, send: createSender(wabaConfigFromEnv(env)), worker: "w" },
    );
    assert.equal(summary.stop_reason, "aborted");
    assert.ok(summary.released > 0, "some claimed messages were never sent");
    const released = queue.results().filter((r) => r.outcome === "deferred");
    assert.equal(released.length, summary.released);
    assert.ok(released.every((r) => r.outcome === "deferred" && r.error_code === "released"));
    assert.equal(summary.sent, fake.messages().length);
    assert.equal(queue.leased.size, 0, "every lease was reported");
  });
});

Deno.test("the sender uses a per-number token override and reports a missing token as an invalid token", async () => {
  const rules = await errorRules();
  await withFake({ accessToken: "per-number-token" }, async (fake) => {
    const vars: Record<string, string> = {
      WABA_BASE_URL: fake.url,
      WABA_ACCESS_TOKEN_106540352242922: "per-number-token",
    };
    const send = createSender(wabaConfigFromEnv((n) => vars[n]), undefined, rules);
    const ok = await send(message(1, "+254700000001"));
    assert.equal(ok.ok, true);
    const missing = await send(message(2, "+254700000002", "999"));
    assert.equal(missing.ok, false);
    if (!missing.ok) {
      assert.equal(missing.error.code, "missing_access_token");
      assert.deepEqual(
        [missing.error.wabaCode, missing.error.action, missing.error.reason],
        [190, "pause_channel", "access_token_invalid"],
        "it pauses the channel (code 190's rule) instead of burning messages",
      );
    }
  });
});

Deno.test("claimed messages are sent with their own recipient, template and parameters", async () => {
  await withFake({}, async (fake, env) => {
    const m: ClaimedMessage = {
      ...message(42, "+254711000042"),
      template_name: "fuel_voucher",
      template_language: "en_US",
      body_parameters: ["7KQ2M-9XD4T-RCB83", "500.00 KES"],
    };
    const result = await createSender(wabaConfigFromEnv(env))(m);
    assert.equal(result.ok, true);
    const [recorded] = fake.messages();
    assert.deepEqual(
      [
        recorded.to,
        recorded.template,
        recorded.language,
        recorded.parameters,
        recorded.callbackData,
      ],
      ["+254711000042", "fuel_voucher", "en_US", ["7KQ2M-9XD4T-RCB83", "500.00 KES"], "42"],
    );
  });
});

Deno.test("runDispatch() never starts a send its lease might not outlive", async () => {
  await withFake({}, async (fake, env) => {
    const fresh = message(1, "+254700000001");
    const expiring = {
      ...message(2, "+254700000002"),
      lease_expires_at: new Date(Date.now() + 1000).toISOString(),
    };
    const queue = new FakeQueue([fresh, expiring]);
    const summary = await runDispatch(runOptions({ leaseSeconds: 60 }), {
      queue,
      send: createSender(wabaConfigFromEnv(env)),
      worker: "w",
    });
    assert.deepEqual([summary.sent, summary.released], [1, 1]);
    assert.deepEqual(fake.messages().map((m) => m.to), ["+254700000001"]);
    const released = queue.results().find((r) => r.message_id === 2);
    assert.equal(released?.outcome, "deferred");
    assert.equal(released?.outcome === "deferred" && released.error_code, "lease_too_short");
  });
});
