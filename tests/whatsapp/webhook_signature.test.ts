import assert from "node:assert/strict";
import {
  sign,
  verifySignature,
  WebhookSecretError,
} from "../../functions/_shared/webhook_signature.ts";

const SECRET = "test-app-secret";
const BODY = JSON.stringify({
  object: "whatsapp_business_account",
  entry: [{ id: "1", changes: [] }],
});

Deno.test("sign() matches a published HMAC-SHA256 vector", async () => {
  // WhatsApp SDK for Elixir documents compute_signature("test", "secret") with this digest.
  assert.equal(
    await sign("test", "secret"),
    "sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914",
  );
});

Deno.test("verifySignature() accepts the signature of the exact raw body", async () => {
  const header = await sign(BODY, SECRET);
  assert.equal(await verifySignature(BODY, header, SECRET), true);
  assert.equal(await verifySignature(new TextEncoder().encode(BODY), header, SECRET), true);
  assert.equal(
    await verifySignature(BODY, header.toUpperCase().replace("SHA256=", "sha256="), SECRET),
    true,
  );
});

Deno.test("verifySignature() rejects a tampered body", async () => {
  const header = await sign(BODY, SECRET);
  assert.equal(await verifySignature(BODY.replace('"1"', '"2"'), header, SECRET), false);
  assert.equal(await verifySignature(BODY + " ", header, SECRET), false);
});

Deno.test("verifySignature() rejects a missing header", async () => {
  assert.equal(await verifySignature(BODY, null, SECRET), false);
  assert.equal(await verifySignature(BODY, "", SECRET), false);
});

Deno.test("verifySignature() rejects a signature made with another secret", async () => {
  assert.equal(await verifySignature(BODY, await sign(BODY, "other-secret"), SECRET), false);
});

Deno.test("verifySignature() rejects malformed headers", async () => {
  const hex = (await sign(BODY, SECRET)).slice("sha256=".length);
  for (
    const header of [
      hex, // no scheme
      `sha1=${hex}`,
      `sha256=${hex.slice(0, 62)}`, // too short
      `sha256=${hex}00`, // too long
      `sha256=${hex.slice(0, 63)}g`, // not hex
      `sha256= ${hex}`,
      `sha256=${hex},sha256=${hex}`,
    ]
  ) {
    assert.equal(await verifySignature(BODY, header, SECRET), false, header);
  }
});

Deno.test("verifySignature() refuses an empty app secret as a configuration error", async () => {
  await assert.rejects(
    () => verifySignature(BODY, "sha256=" + "0".repeat(64), ""),
    WebhookSecretError,
  );
});
