/**
 * The classifier against the database's own rules (`app.waba_error_rules`, loaded
 * from the running stack): transport failures first, then the Graph code's rule,
 * then the HTTP status. And the TypeScript lookup equals the SQL one for every
 * code the table knows.
 */
import assert from "node:assert/strict";
import {
  classifyWhatsAppError,
  parseRetryAfter,
  WabaErrorRules,
} from "../../functions/_shared/waba_errors.ts";
import { errorRules, ownerDb } from "../_support.ts";

Deno.test("classifyWhatsAppError() retries transient codes and throttles 130429, 80007 and 4", async () => {
  const rules = await errorRules();
  for (const code of [1, 2, 131000, 131016, 131056]) {
    const e = classifyWhatsAppError({ httpStatus: 400, code }, rules);
    assert.deepEqual([e.kind, e.action, e.code, e.wabaCode], [
      "retryable",
      "retry",
      `waba_${code}`,
      code,
    ]);
  }
  for (const code of [4, 80007, 130429]) {
    const e = classifyWhatsAppError({ httpStatus: 400, code }, rules);
    assert.deepEqual([e.kind, e.action], ["retryable", "throttle"], `code ${code}`);
  }
  assert.equal(classifyWhatsAppError({ httpStatus: 400, code: 130429 }, rules).scope, "channel");
});

Deno.test("classifyWhatsAppError() fails message and recipient errors, and flags 131050 as an opt-out", async () => {
  const rules = await errorRules();
  for (const code of [131047, 131049, 131026, 100, 130472]) {
    const e = classifyWhatsAppError({ httpStatus: 400, code }, rules);
    assert.deepEqual([e.kind, e.action], ["permanent", "fail"], `code ${code}`);
  }
  const optOut = classifyWhatsAppError({ code: 131050 }, rules);
  assert.deepEqual([optOut.kind, optOut.action, optOut.scope], [
    "permanent",
    "opt_out",
    "recipient",
  ]);
});

Deno.test("classifyWhatsAppError() pauses the channel for account and number errors, with the subcode's reason", async () => {
  const rules = await errorRules();
  const expired = classifyWhatsAppError({ httpStatus: 401, code: 190, subcode: 463 }, rules);
  assert.deepEqual(
    [expired.kind, expired.scope, expired.action, expired.reason, expired.wabaSubcode],
    ["permanent", "account", "pause_channel", "access_token_expired", 463],
  );
  assert.equal(
    classifyWhatsAppError({ httpStatus: 401, code: 190 }, rules).reason,
    "access_token_invalid",
  );
  for (
    const [code, reason] of [[368, "policy_block"], [131031, "account_locked"], [
      231,
      "permission_denied",
    ]]
  ) {
    assert.equal(
      classifyWhatsAppError({ httpStatus: 400, code: Number(code) }, rules).reason,
      reason,
    );
  }
  const spam = classifyWhatsAppError({ httpStatus: 400, code: 131048 }, rules);
  assert.deepEqual([spam.scope, spam.action, spam.reason], [
    "channel",
    "pause_channel",
    "spam_rate_limit",
  ]);
  const unknownNumber = classifyWhatsAppError({ httpStatus: 400, code: 100, subcode: 33 }, rules);
  assert.equal(
    unknownNumber.reason,
    "phone_number_not_found",
    "100/33 is the number, not the message",
  );
});

Deno.test("classifyWhatsAppError() pauses the template's campaigns for template-level errors", async () => {
  const rules = await errorRules();
  for (const code of [132000, 132001, 132015, 132016]) {
    const e = classifyWhatsAppError({ httpStatus: 400, code }, rules);
    assert.deepEqual([e.scope, e.action], ["template", "pause_template"], `code ${code}`);
  }
  // Errors that depend on one message's parameter values fail that message only.
  for (const code of [132005, 132007, 132012, 132018]) {
    const e = classifyWhatsAppError({ httpStatus: 400, code }, rules);
    assert.deepEqual([e.scope, e.action], ["template", "fail"], `code ${code}`);
  }
});

Deno.test("classifyWhatsAppError() treats a bare 401 / 403 as a token / permission error", async () => {
  const rules = await errorRules();
  const bare = classifyWhatsAppError({ httpStatus: 401 }, rules);
  assert.deepEqual([bare.code, bare.wabaCode, bare.action, bare.reason], [
    "http_401",
    190,
    "pause_channel",
    "access_token_invalid",
  ]);
  const forbidden = classifyWhatsAppError({ httpStatus: 403, code: 999_001 }, rules);
  assert.deepEqual([forbidden.code, forbidden.wabaCode, forbidden.reason], [
    "waba_999001",
    10,
    "permission_denied",
  ]);
});

Deno.test("classifyWhatsAppError() treats every HTTP 5xx as retryable http_<status>", async () => {
  const rules = await errorRules();
  for (const status of [500, 502, 503, 504]) {
    const e = classifyWhatsAppError({ httpStatus: status }, rules);
    assert.deepEqual([e.kind, e.code, e.httpStatus, e.action], [
      "retryable",
      `http_${status}`,
      status,
      "retry",
    ]);
  }
  const withGraphCode = classifyWhatsAppError({ httpStatus: 503, code: 2, transient: true }, rules);
  assert.deepEqual([withGraphCode.kind, withGraphCode.code, withGraphCode.wabaCode], [
    "retryable",
    "http_503",
    2,
  ]);
});

Deno.test("classifyWhatsAppError() treats timeouts and network errors as retryable", async () => {
  const rules = await errorRules();
  const t = classifyWhatsAppError({ networkError: "timeout" }, rules);
  assert.deepEqual([t.kind, t.code], ["retryable", "timeout"]);
  const n = classifyWhatsAppError({ networkError: "Connection refused (os error 111)" }, rules);
  assert.deepEqual([n.kind, n.code], ["retryable", "network_error"]);
  assert.match(n.message, /Connection refused/);
});

Deno.test("classifyWhatsAppError() carries Retry-After on retryable results only", async () => {
  const rules = await errorRules();
  assert.equal(
    classifyWhatsAppError({ httpStatus: 400, code: 130429, retryAfterSeconds: 7 }, rules)
      .retryAfterSeconds,
    7,
  );
  assert.equal(
    classifyWhatsAppError({ httpStatus: 503, retryAfterSeconds: 2 }, rules).retryAfterSeconds,
    2,
  );
  assert.equal(
    classifyWhatsAppError({ httpStatus: 400, code: 131048, retryAfterSeconds: 7 }, rules)
      .retryAfterSeconds,
    undefined,
  );
  assert.equal(
    classifyWhatsAppError({ httpStatus: 400, code: 130429, retryAfterSeconds: NaN }, rules)
      .retryAfterSeconds,
    undefined,
  );
});

Deno.test("classifyWhatsAppError() decides unknown codes by is_transient, then the HTTP status", async () => {
  const rules = await errorRules();
  assert.equal(classifyWhatsAppError({ httpStatus: 400, code: 999_999 }, rules).kind, "permanent");
  assert.equal(
    classifyWhatsAppError({ httpStatus: 400, code: 999_999, transient: true }, rules).kind,
    "retryable",
  );
  assert.equal(classifyWhatsAppError({ httpStatus: 429, code: 999_999 }, rules).kind, "retryable");
  assert.equal(classifyWhatsAppError({ httpStatus: 429 }, rules).code, "http_429");
  assert.equal(classifyWhatsAppError({ httpStatus: 404 }, rules).kind, "permanent");
});

Deno.test("classifyWhatsAppError() without rules classifies by transport and status only", () => {
  const none = WabaErrorRules.empty();
  assert.deepEqual(
    [classifyWhatsAppError({ httpStatus: 400, code: 130429 }, none).action],
    ["fail"],
    "an unknown code over a 400 is permanent",
  );
  assert.equal(classifyWhatsAppError({ networkError: "timeout" }, none).kind, "retryable");
});

Deno.test("classifyWhatsAppError() keeps Meta's details in the message", async () => {
  const e = classifyWhatsAppError({
    httpStatus: 400,
    code: 131056,
    details: "Message failed to send because there were too many messages",
  }, await errorRules());
  assert.match(e.message, /pair rate limit/i);
  assert.match(e.message, /too many messages/);
});

Deno.test("WabaErrorRules.lookup() finds the rule app.waba_error_rule() finds, for every code and subcode", async () => {
  const rules = await errorRules();
  const sql = ownerDb(1);
  try {
    const probes = [
      ...rules.rules.flatMap((r) => [
        [r.code, r.subcode],
        [r.code, null],
        [r.code_last, 99_999],
      ]),
      [250, null],
      [999_999, null],
      [100, 34],
    ] as [number, number | null][];
    const rows = await sql`
      select p.code, p.subcode, (app.waba_error_rule(p.code, p.subcode)).reason as reason,
             (app.waba_error_rule(p.code, p.subcode)).action as action
      from jsonb_to_recordset(${sql.json(probes.map(([code, subcode]) => ({ code, subcode })))})
        as p(code integer, subcode integer)`;
    assert.equal(rows.length, probes.length);
    for (const r of rows) {
      const ts = rules.lookup(r.code, r.subcode);
      assert.deepEqual(
        [ts?.reason ?? null, ts?.action ?? null],
        [r.reason, r.action],
        `code ${r.code} subcode ${r.subcode}`,
      );
    }
  } finally {
    await sql.end();
  }
});

Deno.test("parseRetryAfter() reads delta seconds and HTTP dates", () => {
  assert.equal(parseRetryAfter("3"), 3);
  assert.equal(parseRetryAfter(" 1.2 "), 2);
  const now = Date.parse("2026-01-01T00:00:00Z");
  assert.equal(parseRetryAfter("Thu, 01 Jan 2026 00:00:10 GMT", now), 10);
  assert.equal(parseRetryAfter("Wed, 31 Dec 2025 23:59:00 GMT", now), 0);
  assert.equal(parseRetryAfter("soon"), undefined);
  assert.equal(parseRetryAfter(""), undefined);
  assert.equal(parseRetryAfter(null), undefined);
});
