// deno-lint-ignore-file no-explicit-any -- untyped JSON answers (RPCs, the fake), asserted field by field
/**
 * Drives a running local stack (`deno task start`: Postgres, the gateway with
 * the Edge Functions, the fake WhatsApp API, the dispatch ticker) from outside:
 * what the end-to-end tests and the dispatch benchmark share. Addresses come
 * from `local/env.ts`, so `PGPORT_LOCAL` / `GATEWAY_PORT` / `FAKE_WABA_PORT`
 * move them.
 *
 * - Connections: {@link ownerDb} (fixtures and assertions on `app.*`) and
 *   {@link apiClient} (supabase-js pointed at the gateway exactly as the apps
 *   configure it).
 * - {@link openStack} checks the stack is up and snapshots the fake's config;
 *   `close()` restores it. If the stack's gateway was started without WhatsApp
 *   settings for its functions (no `LOCAL_STACK=1` / `WABA_*` in its
 *   environment, so `/functions/v1/dispatch` answers 500 not_configured), it
 *   starts an in-process gateway with `LOCAL_STACK=1` on a spare port and
 *   points the fake's webhooks at it, so callers still exercise the real
 *   functions over HTTP; the stack's ticker then dispatches nothing (it gets
 *   the 500).
 * - The fake WhatsApp API through its control endpoints: {@link setUpFake},
 *   {@link configureFake}, {@link fakeMessages}, {@link fakeStats},
 *   {@link waitForWebhooks}.
 * - Campaign fixtures through the service_role RPCs over `/rest/v1`
 *   (supabase-js), as an admin tool would: {@link createCampaign},
 *   {@link schedule}; dispatch runs through the function: {@link dispatch},
 *   {@link driveUntilDone}; waiting: {@link waitUntil}.
 * - The stack's ticker calls `/functions/v1/dispatch` every second for every
 *   active channel. Callers tolerate it (it is one more dispatcher sharing the
 *   same token buckets and leases); each fixture has its own channel and
 *   recipients.
 *
 * @example
 * import { createCampaign, driveUntilDone, openStack, schedule, setUpFake } from "./local/harness.ts";
 * const stack = await openStack();
 * try {
 *   await setUpFake(stack, { mps: 0, pairSpacingMs: 0 });
 *   const fx = await createCampaign(stack, { targets: 10, ratePerMinute: 600 });
 *   await schedule(stack, fx.campaignId);
 *   await driveUntilDone(stack, fx, { timeoutMs: 30_000 });
 * } finally {
 *   await stack.close();
 * }
 *
 * @module
 */
import postgres from "postgres";
import { createClient, type SupabaseClient } from "@supabase/supabase-js";
import { ANON_KEY, API_URL, DB_URL, FAKE_WABA_URL, SERVICE_ROLE_KEY } from "./env.ts";
import type { FakeWabaConfig, FakeWabaConfigPatch, RecordedMessage } from "./fake_waba/mod.ts";
import type { RunSummary } from "../functions/dispatch/handler.ts";
import { WabaErrorRules, WabaErrorRuleSchema } from "../functions/_shared/waba_errors.ts";

export { DB_URL, FAKE_WABA_URL };
export type { RunSummary };

/** A connection as `postgres`, the owner of `app` and `api` (not a superuser, as on Supabase; BYPASSRLS), for fixtures and assertions; close it with `await sql.end()`. */
export function ownerDb(max = 4): postgres.Sql {
  return postgres(DB_URL, { max, onnotice: () => {} });
}

/**
 * The WhatsApp error rules (`app.waba_error_rules`, the rows `api.waba_error_rules()`
 * returns), read directly as the owner: for tests and benchmarks that build a
 * WhatsApp client or a sender outside the dispatch function.
 *
 * @example
 * const rules = await loadErrorRules(sql);
 * createSender(cfg, undefined, rules);
 */
export async function loadErrorRules(sql: postgres.Sql): Promise<WabaErrorRules> {
  const rows = await sql`
    select code, code_last, subcode, scope, action, reason, cooldown_seconds, title, source
    from app.waba_error_rules`;
  return new WabaErrorRules(rows.map((r) => WabaErrorRuleSchema.parse({ ...r })));
}

/**
 * A supabase-js client of the `api` schema, untyped (`supabase gen types` needs
 * Docker, which this environment does not have).
 */
export type ApiClient = SupabaseClient<any, "api">;

/**
 * A supabase-js client that sends `jwt` (or only the anon key) to the local
 * gateway, configured as the apps configure theirs.
 *
 * @example
 * const { data, error } = await apiClient(SERVICE_ROLE_KEY).rpc("queue_health");
 */
export function apiClient(jwt?: string): ApiClient {
  return createClient(API_URL, ANON_KEY, {
    db: { schema: "api" },
    auth: { persistSession: false, autoRefreshToken: false },
    global: jwt ? { headers: { Authorization: `Bearer ${jwt}` } } : {},
  });
}

/** A handle on the running stack for one test. */
export interface Stack {
  /** Base of `/functions/v1` (the stack's gateway, or the in-process fallback). */
  functionsUrl: string;
  /** True when the in-process gateway stands in for the stack's functions. */
  fallback: boolean;
  sql: postgres.Sql;
  api: ApiClient;
  /** Restores the fake's config, stops the fallback gateway, closes connections. */
  close(): Promise<void>;
}

/** Bounded `fetch` that always reads the body. */
export async function http(
  url: string,
  init: RequestInit & { timeoutMs?: number } = {},
): Promise<{ status: number; json: any }> {
  const res = await fetch(url, {
    ...init,
    signal: AbortSignal.timeout(init.timeoutMs ?? 30_000),
  });
  const text = await res.text();
  let json: unknown = text;
  try {
    json = JSON.parse(text);
  } catch { /* text */ }
  return { status: res.status, json };
}

let fallbackUrl: string | undefined;
let fallbackShutdown: (() => Promise<void>) | undefined;

async function stackFunctionsConfigured(): Promise<boolean> {
  // A run for a channel that does not exist: answers 200 (summary) when the
  // function is configured, 500 not_configured otherwise; changes nothing.
  const res = await http(
    `${API_URL}/functions/v1/dispatch?wait=1&budget_ms=100&idle_exit_ms=0` +
      `&channel_id=00000000-0000-4000-8000-000000000000`,
    {
      method: "POST",
      headers: { Authorization: `Bearer ${SERVICE_ROLE_KEY}` },
      timeoutMs: 10_000,
    },
  );
  if (res.status === 200) return true;
  if (res.status === 500 && res.json?.error === "not_configured") return false;
  throw new Error(
    `Unexpected answer from the stack's dispatch function: ${res.status} ${
      JSON.stringify(res.json)
    }`,
  );
}

/**
 * Connects to the running stack. Throws a clear error when it is not running.
 * `functionsUrl` (or env `E2E_FUNCTIONS_URL`) overrides where `/functions/v1`
 * is; the fake's webhooks follow it.
 *
 * @example
 * const stack = await openStack();
 * try { … } finally { await stack.close(); }
 */
export async function openStack(
  opts: { functionsUrl?: string } = {},
): Promise<Stack> {
  const health = await http(`${FAKE_WABA_URL}/_fake/health`, {
    timeoutMs: 2000,
  }).catch(() => null);
  const gw = await http(`${API_URL}/health`, { timeoutMs: 2000 }).catch(() => null);
  if (health?.status !== 200 || gw?.status !== 200) {
    throw new Error(
      "The local stack is not running: start it with `deno task start`",
    );
  }
  let fallback = false;
  let functionsUrl = `${API_URL}/functions/v1`;
  const override = opts.functionsUrl ?? Deno.env.get("E2E_FUNCTIONS_URL");
  if (override) {
    // The caller runs the functions elsewhere (e.g. its own gateway process).
    fallback = true;
    functionsUrl = override;
  } else if (!(await stackFunctionsConfigured())) {
    fallback = true;
    if (!fallbackUrl) {
      Deno.env.set("LOCAL_STACK", "1");
      const { serveGateway } = await import("./gateway/mod.ts");
      const gateway = await serveGateway({ port: 0, log: false, poolSize: 4 });
      fallbackUrl = gateway.url;
      fallbackShutdown = () => gateway.shutdown();
      console.warn(
        `[harness] the stack's gateway has no WhatsApp settings for its functions (start it with ` +
          `LOCAL_STACK=1); using an in-process gateway at ${fallbackUrl}`,
      );
    }
    functionsUrl = `${fallbackUrl}/functions/v1`;
  }
  const original = (await http(`${FAKE_WABA_URL}/_fake/config`))
    .json as FakeWabaConfig;
  const sql = ownerDb(4);
  const api = apiClient(SERVICE_ROLE_KEY);
  return {
    functionsUrl,
    fallback,
    sql,
    api,
    async close() {
      await http(`${FAKE_WABA_URL}/_fake/config`, {
        method: "POST",
        body: JSON.stringify(original),
      });
      await sql.end({ timeout: 5 });
    },
  };
}

/** Stops the in-process gateway if one was started (call once, at the end of a file). */
export async function closeFallback(): Promise<void> {
  await fallbackShutdown?.();
  fallbackShutdown = undefined;
  fallbackUrl = undefined;
}

/**
 * Resets the fake (messages, counters, limits, startup config) and applies
 * `patch`; webhooks go to whichever gateway hosts the functions.
 */
export async function setUpFake(
  stack: Stack,
  patch: FakeWabaConfigPatch = {},
): Promise<void> {
  await http(`${FAKE_WABA_URL}/_fake/reset`, { method: "POST" });
  await configureFake(stack, patch);
}

/** Applies a config patch to the fake (keeps the webhook URL on the functions' gateway). */
export async function configureFake(
  stack: Stack,
  patch: FakeWabaConfigPatch,
): Promise<void> {
  const webhook = {
    ...(patch.webhook ?? {}),
    ...(stack.fallback ? { url: `${stack.functionsUrl}/waba-webhook` } : {}),
  };
  const res = await http(`${FAKE_WABA_URL}/_fake/config`, {
    method: "POST",
    body: JSON.stringify({ ...patch, webhook }),
  });
  if (res.status !== 200) {
    throw new Error(`Fake config refused: ${JSON.stringify(res.json)}`);
  }
}

/** Messages the fake accepted for one phone number id, oldest first. */
export async function fakeMessages(
  phoneNumberId: string,
): Promise<RecordedMessage[]> {
  const res = await http(`${FAKE_WABA_URL}/_fake/messages`);
  return (res.json.messages as RecordedMessage[]).filter((m) => m.phoneNumberId === phoneNumberId);
}

/**
 * POSTs to one of the fake's control endpoints (`/_fake/storm`,
 * `/_fake/template-status`, `/_fake/quality`, …); throws unless it answers 200.
 *
 * @example
 * await fakeControl("/_fake/template-status", { name: "voucher_issued", event: "PAUSED" });
 */
export async function fakeControl(path: string, body: unknown): Promise<any> {
  const res = await http(`${FAKE_WABA_URL}${path}`, { method: "POST", body: JSON.stringify(body) });
  if (res.status !== 200) {
    throw new Error(`${path} answered ${res.status}: ${JSON.stringify(res.json)}`);
  }
  return res.json;
}

/** The fake's current configuration. */
export async function fakeConfig(): Promise<FakeWabaConfig> {
  return (await http(`${FAKE_WABA_URL}/_fake/config`)).json as FakeWabaConfig;
}

/** The fake's counters. */
export async function fakeStats(): Promise<{
  requests: number;
  accepted: number;
  outcomes: Record<string, number>;
  webhooks: Record<string, number>;
}> {
  return (await http(`${FAKE_WABA_URL}/_fake/stats`)).json;
}

/** Waits until the fake has delivered (or given up on) every scheduled webhook. */
export async function waitForWebhooks(timeoutMs: number): Promise<boolean> {
  const res = await http(
    `${FAKE_WABA_URL}/_fake/wait-webhooks?timeoutMs=${timeoutMs}`,
    {
      method: "POST",
      timeoutMs: timeoutMs + 5000,
    },
  );
  return res.json.idle === true;
}

/** Calls an `api` RPC as service_role over `/rest/v1`; throws on error. */
export async function rpc<T = any>(
  stack: Stack,
  fn: string,
  args: Record<string, unknown>,
): Promise<T> {
  const { data, error } = await stack.api.rpc(fn, args);
  if (error) {
    throw new Error(`api.${fn} failed: ${error.code} ${error.message}`);
  }
  return data as T;
}

/** A fresh numeric phone number id (the Cloud API's are digits). */
export function newPhoneNumberId(): string {
  return String(
    100_000_000_000_000 + Math.floor(Math.random() * 899_999_999_999_999),
  );
}

/** `n` distinct E.164 numbers unique to this call: +2547 <3-digit tag> <5-digit index>. */
export function newRecipients(n: number): string[] {
  if (n > 99_999) throw new Error("At most 99,999 recipients per call");
  const tag = String(Math.floor(Math.random() * 1000)).padStart(3, "0");
  const salt = String(Math.floor(Math.random() * 10)); // 10k tags: collisions across runs are rare
  return Array.from(
    { length: n },
    (_, i) => `+254${salt}${tag}${String(i).padStart(5, "0")}`,
  );
}

/** A draft campaign with its own channel and targets. */
export interface CampaignFixture {
  channelId: string;
  phoneNumberId: string;
  campaignId: string;
  recipients: string[];
}

/**
 * Creates a channel (own phone number id, given rate), a campaign with the
 * `voucher_issued` template carrying the voucher code, and its targets. The
 * campaign stays a draft until {@link schedule}.
 */
export async function createCampaign(
  stack: Stack,
  opts: {
    targets: number;
    ratePerMinute: number;
    burst?: number;
    name?: string;
    /** The channel's per-recipient spacing guard (default 6 s, like WhatsApp's pair limit). */
    minRecipientIntervalSeconds?: number;
    /** The template (default `voucher_issued`). */
    templateName?: string;
    /** The channel's business portfolio (default: the default portfolio). */
    portfolioId?: string;
    /** The channel's WhatsApp Business Account id (template and quality webhooks name it). */
    wabaId?: string;
  },
): Promise<CampaignFixture> {
  const phoneNumberId = newPhoneNumberId();
  const channel = await rpc(stack, "create_channel", {
    phone_number_id: phoneNumberId,
    display_name: `e2e ${phoneNumberId}`,
    rate_per_minute: opts.ratePerMinute,
    ...(opts.burst ? { burst: opts.burst } : {}),
    ...(opts.minRecipientIntervalSeconds !== undefined
      ? { min_recipient_interval_seconds: opts.minRecipientIntervalSeconds }
      : {}),
    ...(opts.portfolioId ? { portfolio_id: opts.portfolioId } : {}),
    ...(opts.wabaId ? { waba_id: opts.wabaId } : {}),
  });
  const campaign = await rpc(stack, "create_campaign", {
    name: opts.name ?? `e2e ${phoneNumberId}`,
    amount_minor: 50_000,
    currency: "KES",
    expires_at: new Date(Date.now() + 30 * 86_400_000).toISOString(),
    channel_id: channel.id,
    template_name: opts.templateName ?? "voucher_issued",
    template_params: ["voucher_code", "amount"],
  });
  const recipients = newRecipients(opts.targets);
  for (let i = 0; i < recipients.length; i += 10_000) {
    const r = await rpc(stack, "add_campaign_targets", {
      campaign_id: campaign.id,
      targets: recipients.slice(i, i + 10_000),
    });
    if (r.inserted !== Math.min(10_000, recipients.length - i)) {
      throw new Error(
        `add_campaign_targets inserted ${r.inserted}: ${JSON.stringify(r)}`,
      );
    }
  }
  return {
    channelId: channel.id,
    phoneNumberId,
    campaignId: campaign.id,
    recipients,
  };
}

/** draft → dispatching (start now): every target's message is enqueued. */
export async function schedule(
  stack: Stack,
  campaignId: string,
): Promise<void> {
  const c = await rpc(stack, "schedule_campaign", { campaign_id: campaignId });
  if (c.status !== "dispatching") {
    throw new Error(`Campaign is ${c.status}, expected dispatching`);
  }
}

/** `api.campaign_stats`, retried briefly (the gateway may be reconnecting after a restart). */
export async function campaignStats(
  stack: Stack,
  campaignId: string,
): Promise<any> {
  let last: unknown;
  for (let i = 0; i < 20; i++) {
    try {
      return await rpc(stack, "campaign_stats", { campaign_id: campaignId });
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  throw last;
}

/** One foreground dispatch run through the function (`?wait=1`). */
export async function dispatch(
  stack: Stack,
  body: Record<string, unknown>,
): Promise<RunSummary> {
  const res = await http(`${stack.functionsUrl}/dispatch?wait=1`, {
    method: "POST",
    headers: {
      Authorization: `Bearer ${SERVICE_ROLE_KEY}`,
      "Content-Type": "application/json",
    },
    body: JSON.stringify(body),
    timeoutMs: 120_000,
  });
  if (res.status !== 200) {
    throw new Error(
      `dispatch answered ${res.status}: ${JSON.stringify(res.json)}`,
    );
  }
  return res.json as RunSummary;
}

/** Messages of a campaign not yet in a final state. */
export async function unfinished(
  stack: Stack,
  campaignId: string,
): Promise<number> {
  const [row] = await stack.sql`
    select count(*)::int as n from app.messages
    where campaign_id = ${campaignId} and status in ('queued', 'leased', 'held')`;
  return row.n;
}

/**
 * Runs `parallel` dispatch runs for the channel again and again until no
 * message of the campaign is queued or leased; `between` runs after each round
 * (e.g. to compress backoff). Throws after `timeoutMs`.
 */
export async function driveUntilDone(
  stack: Stack,
  fx: CampaignFixture,
  opts: {
    timeoutMs: number;
    parallel?: number;
    run?: Record<string, unknown>;
    between?: () => Promise<void>;
  },
): Promise<RunSummary[]> {
  const deadline = Date.now() + opts.timeoutMs;
  const summaries: RunSummary[] = [];
  while (true) {
    const left = await unfinished(stack, fx.campaignId);
    if (left === 0) return summaries;
    if (Date.now() > deadline) {
      throw new Error(
        `Campaign ${fx.campaignId} still has ${left} unfinished messages after ${opts.timeoutMs} ms`,
      );
    }
    const runs = await Promise.all(
      Array.from({ length: opts.parallel ?? 1 }, () =>
        dispatch(stack, {
          channel_id: fx.channelId,
          budget_ms: Math.max(500, Math.min(15_000, deadline - Date.now())),
          idle_exit_ms: 300,
          ...opts.run,
        })),
    );
    summaries.push(...runs);
    await opts.between?.();
  }
}

/** Target msisdn → display voucher code of its message, from the database. */
export async function voucherCodes(
  stack: Stack,
  campaignId: string,
): Promise<Map<string, string>> {
  const rows = await stack.sql`
    select m.to_msisdn, app.format_code(v.code) as code
    from app.messages m join app.vouchers v on v.id = m.voucher_id
    where m.campaign_id = ${campaignId}`;
  return new Map(rows.map((r) => [r.to_msisdn as string, r.code as string]));
}

/** Most timestamps (ms, sorted) inside any half-open window of `windowMs`. */
export function maxInWindow(sortedMs: number[], windowMs: number): number {
  let best = 0;
  let lo = 0;
  for (let hi = 0; hi < sortedMs.length; hi++) {
    while (sortedMs[hi] - sortedMs[lo] >= windowMs) lo++;
    best = Math.max(best, hi - lo + 1);
  }
  return best;
}

/** Polls `check` every 100 ms until true; throws after `timeoutMs`. */
export async function waitUntil(
  check: () => Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
