import assert from "node:assert/strict";
import { log, maskPhone, redact } from "../../functions/_shared/log.ts";

function capture(fn: () => void): { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const { log: origLog, error: origError } = console;
  console.log = (line: string) => stdout.push(line);
  console.error = (line: string) => stderr.push(line);
  try {
    fn();
  } finally {
    console.log = origLog;
    console.error = origError;
  }
  return { stdout, stderr };
}

Deno.test("maskPhone() keeps only the last four digits and the plus sign", () => {
  assert.equal(maskPhone("+254712345678"), "+*******5678");
  assert.equal(maskPhone("254712345678"), "*******5678");
  assert.equal(maskPhone("+1 (650) 555-1234"), "+*******1234");
  assert.equal(maskPhone("123"), "****");
});

Deno.test("log() writes one JSON line with ts, level and event", () => {
  const { stdout, stderr } = capture(() => log("info", "waba.send.ok", { wamid: "wamid.X" }));
  assert.equal(stdout.length, 1);
  assert.equal(stderr.length, 0);
  assert.ok(!stdout[0].includes("\n"));
  const line = JSON.parse(stdout[0]);
  assert.equal(line.level, "info");
  assert.equal(line.event, "waba.send.ok");
  assert.equal(line.wamid, "wamid.X");
  assert.ok(!Number.isNaN(Date.parse(line.ts)));
});

Deno.test("log() sends warn and error to stderr", () => {
  const { stdout, stderr } = capture(() => {
    log("warn", "a");
    log("error", "b", { err: new TypeError("boom") });
  });
  assert.equal(stdout.length, 0);
  assert.equal(stderr.length, 2);
  assert.deepEqual(JSON.parse(stderr[1]).err, { name: "TypeError", message: "boom" });
});

Deno.test("log() never prints tokens, secrets, authorization headers or API keys", () => {
  const { stdout } = capture(() =>
    log("info", "waba.request", {
      accessToken: "EAAG-live-token",
      appSecret: "s3cret",
      headers: { Authorization: "Bearer EAAG-live-token", apikey: "anon-key", "x-api-key": "k" },
      nested: [{ refresh_token: "r" }],
      note: "Bearer EAAG-live-token",
      passwordHash: "x",
    })
  );
  assert.equal(stdout.length, 1);
  assert.ok(!stdout[0].includes("EAAG-live-token"), stdout[0]);
  assert.ok(!stdout[0].includes("s3cret"));
  assert.ok(!stdout[0].includes("anon-key"));
  const line = JSON.parse(stdout[0]);
  assert.equal(line.accessToken, "[REDACTED]");
  assert.equal(line.headers.Authorization, "[REDACTED]");
  assert.equal(line.headers.apikey, "[REDACTED]");
  assert.equal(line.headers["x-api-key"], "[REDACTED]");
  assert.equal(line.nested[0].refresh_token, "[REDACTED]");
  assert.equal(line.note, "[REDACTED]");
});

Deno.test("log() masks phone numbers in recipient fields", () => {
  const { stdout } = capture(() =>
    log("info", "waba.status", {
      to: "+254712345678",
      status: { recipient_id: "254712345678", wa_id: "254712345678" },
    })
  );
  assert.ok(!stdout[0].includes("254712345678"), stdout[0]);
  const line = JSON.parse(stdout[0]);
  assert.equal(line.to, "+*******5678");
  assert.equal(line.status.recipient_id, "*******5678");
});

Deno.test("log() fields cannot overwrite ts, level or event", () => {
  const { stdout } = capture(() => log("info", "real", { event: "fake", level: "error" }));
  const line = JSON.parse(stdout[0]);
  assert.equal(line.event, "real");
  assert.equal(line.level, "info");
});

Deno.test("redact() survives cycles and deep nesting", () => {
  const a: Record<string, unknown> = { name: "a" };
  a.self = a;
  assert.deepEqual(redact(a), { name: "a", self: "[Circular]" });
  let deep: Record<string, unknown> = { v: 1 };
  for (let i = 0; i < 20; i++) deep = { d: deep };
  assert.ok(JSON.stringify(redact(deep)).includes("[Truncated]"));
});
