import assert from "node:assert/strict";
import {
  classifyWhatsAppError,
  parseRetryAfter,
  WABA_ERROR_CODES,
} from "../../functions/_shared/waba_errors.ts";

Deno.test("classifyWhatsAppError() treats throttling and transient codes as retryable", () => {
  for (const code of [4, 80007, 130429, 131056, 131057, 131000, 1, 2]) {
    const e = classifyWhatsAppError({ httpStatus: 400, code });
    assert.equal(e.kind, "retryable", `code ${code}`);
    assert.equal(e.code, `waba_${code}`);
    assert.equal(e.wabaCode, code);
    assert.equal(e.configError, undefined, `code ${code} is not a config error`);
  }
});

Deno.test("classifyWhatsAppError() treats 131047, 131048, 131049, 131050 and 131026 as permanent", () => {
  for (const code of [131047, 131048, 131049, 131050, 131026, 100]) {
    const e = classifyWhatsAppError({ httpStatus: 400, code });
    assert.equal(e.kind, "permanent", `code ${code}`);
    assert.equal(e.code, `waba_${code}`);
  }
});

Deno.test("classifyWhatsAppError() flags 131050 as a recipient opt-out", () => {
  assert.equal(classifyWhatsAppError({ code: 131050 }).recipientOptedOut, true);
  assert.equal(classifyWhatsAppError({ code: 131049 }).recipientOptedOut, undefined);
});

Deno.test("classifyWhatsAppError() makes 401 / code 190 permanent and a configuration error", () => {
  const withCode = classifyWhatsAppError({ httpStatus: 401, code: 190 });
  assert.deepEqual(
    [withCode.kind, withCode.code, withCode.configError],
    ["permanent", "waba_190", true],
  );
  const bare = classifyWhatsAppError({ httpStatus: 401 });
  assert.deepEqual([bare.kind, bare.code, bare.configError], ["permanent", "http_401", true]);
  const forbidden = classifyWhatsAppError({ httpStatus: 403, code: 10 });
  assert.deepEqual([forbidden.kind, forbidden.configError], ["permanent", true]);
  const permissionRange = classifyWhatsAppError({ httpStatus: 403, code: 231 });
  assert.deepEqual([permissionRange.kind, permissionRange.configError], ["permanent", true]);
});

Deno.test("classifyWhatsAppError() flags template and account problems as configuration errors", () => {
  for (const code of [132000, 132001, 368, 131031]) {
    const e = classifyWhatsAppError({ httpStatus: 400, code });
    assert.deepEqual([e.kind, e.configError], ["permanent", true], `code ${code}`);
  }
});

Deno.test("classifyWhatsAppError() treats every HTTP 5xx as retryable http_<status>", () => {
  for (const status of [500, 502, 503, 504]) {
    const e = classifyWhatsAppError({ httpStatus: status });
    assert.deepEqual([e.kind, e.code, e.httpStatus], ["retryable", `http_${status}`, status]);
  }
  const withGraphCode = classifyWhatsAppError({ httpStatus: 503, code: 2, transient: true });
  assert.deepEqual([withGraphCode.kind, withGraphCode.code, withGraphCode.wabaCode], [
    "retryable",
    "http_503",
    2,
  ]);
});

Deno.test("classifyWhatsAppError() treats timeouts and network errors as retryable", () => {
  const t = classifyWhatsAppError({ networkError: "timeout" });
  assert.deepEqual([t.kind, t.code], ["retryable", "timeout"]);
  const n = classifyWhatsAppError({ networkError: "Connection refused (os error 111)" });
  assert.deepEqual([n.kind, n.code], ["retryable", "network_error"]);
  assert.match(n.message, /Connection refused/);
});

Deno.test("classifyWhatsAppError() carries Retry-After on retryable results only", () => {
  assert.equal(
    classifyWhatsAppError({ httpStatus: 400, code: 130429, retryAfterSeconds: 7 })
      .retryAfterSeconds,
    7,
  );
  assert.equal(
    classifyWhatsAppError({ httpStatus: 503, retryAfterSeconds: 2 }).retryAfterSeconds,
    2,
  );
  assert.equal(
    classifyWhatsAppError({ httpStatus: 400, code: 131048, retryAfterSeconds: 7 })
      .retryAfterSeconds,
    undefined,
  );
  assert.equal(
    classifyWhatsAppError({ httpStatus: 400, code: 130429, retryAfterSeconds: NaN })
      .retryAfterSeconds,
    undefined,
  );
});

Deno.test("classifyWhatsAppError() decides unknown codes by is_transient, then the HTTP status", () => {
  assert.equal(classifyWhatsAppError({ httpStatus: 400, code: 999_999 }).kind, "permanent");
  assert.equal(
    classifyWhatsAppError({ httpStatus: 400, code: 999_999, transient: true }).kind,
    "retryable",
  );
  assert.equal(classifyWhatsAppError({ httpStatus: 429, code: 999_999 }).kind, "retryable");
  assert.equal(classifyWhatsAppError({ httpStatus: 429 }).code, "http_429");
  assert.equal(classifyWhatsAppError({ httpStatus: 404 }).kind, "permanent");
});

Deno.test("classifyWhatsAppError() branches on the code, not the status: 130429 over HTTP 400 or 429", () => {
  assert.equal(classifyWhatsAppError({ httpStatus: 400, code: 130429 }).kind, "retryable");
  assert.equal(classifyWhatsAppError({ httpStatus: 429, code: 130429 }).kind, "retryable");
  assert.equal(classifyWhatsAppError({ httpStatus: 429, code: 131048 }).kind, "permanent");
});

Deno.test("classifyWhatsAppError() keeps Meta's details in the message", () => {
  const e = classifyWhatsAppError({
    httpStatus: 400,
    code: 131056,
    details: "Message failed to send because there were too many messages",
  });
  assert.match(e.message, /pair rate limit/i);
  assert.match(e.message, /too many messages/);
});

Deno.test("WABA_ERROR_CODES lists every code the dispatcher must know", () => {
  for (const code of [4, 80007, 130429, 131056, 131057, 131048, 131049, 131050, 131047, 190]) {
    assert.ok(WABA_ERROR_CODES[code], `code ${code} is in the table`);
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
