/**
 * Test helpers for the WhatsApp suite: a tiny webhook receiver and polling.
 *
 * @module
 */

/** Credentials every test fake is started with (independent of the environment). */
export const TEST_TOKEN = "test-access-token";
export const TEST_SECRET = "test-app-secret";
export const TEST_VERIFY_TOKEN = "test-verify-token";
export const PHONE_NUMBER_ID = "106540352242922";

/** One request the receiver got. */
export interface ReceivedHook {
  method: string;
  url: string;
  raw: string;
  signature: string | null;
  status: number;
}

/** A throwaway HTTP receiver on a spare loopback port. */
export interface Receiver {
  url: string;
  received: ReceivedHook[];
  shutdown(): Promise<void>;
}

/**
 * Starts a receiver answering each request with `respond(n, req)` (n is the
 * 0-based request count), default 200.
 */
export function startReceiver(
  respond: (n: number, req: Request, raw: string) => number | Response = () => 200,
): Receiver {
  const received: ReceivedHook[] = [];
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    async (req) => {
      const raw = await req.text();
      const n = received.length;
      const answer = respond(n, req, raw);
      const status = answer instanceof Response ? answer.status : answer;
      received.push({
        method: req.method,
        url: req.url,
        raw,
        signature: req.headers.get("x-hub-signature-256"),
        status,
      });
      return answer instanceof Response ? answer : new Response(null, { status });
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}/functions/v1/waba-webhook`,
    received,
    shutdown: () => server.shutdown(),
  };
}

/** Polls `check` every 10 ms until it returns true; throws after `timeoutMs`. */
export async function waitFor(
  check: () => boolean,
  timeoutMs = 5000,
  what = "condition",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A valid Cloud API template body for raw HTTP tests. */
export function templateBody(to: string, overrides: Record<string, unknown> = {}) {
  return {
    messaging_product: "whatsapp",
    recipient_type: "individual",
    to,
    type: "template",
    template: {
      name: "voucher_issued",
      language: { code: "en" },
      components: [{ type: "body", parameters: [{ type: "text", text: "7KQ2-M9XD-4TRC" }] }],
    },
    ...overrides,
  };
}

/** POSTs a send request to the fake and returns status, headers and JSON body. */
export async function postSend(
  baseUrl: string,
  body: unknown,
  opts: { token?: string | null; phoneNumberId?: string; version?: string; raw?: string } = {},
): Promise<{ status: number; headers: Headers; json: Record<string, unknown> }> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (opts.token !== null) headers.authorization = `Bearer ${opts.token ?? TEST_TOKEN}`;
  const res = await fetch(
    `${baseUrl}/${opts.version ?? "v21.0"}/${opts.phoneNumberId ?? PHONE_NUMBER_ID}/messages`,
    {
      method: "POST",
      headers,
      body: opts.raw ?? JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    },
  );
  return { status: res.status, headers: res.headers, json: await res.json() };
}
