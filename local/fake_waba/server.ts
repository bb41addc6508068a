/**
 * A faithful fake of the WhatsApp Cloud API's send endpoint, for tests,
 * benchmarks and the local stack.
 *
 * `POST /{version}/{phone-number-id}/messages` behaves like Meta's:
 * - bearer token check (401, Graph code 190, `WWW-Authenticate` header);
 * - template payload checks written from Meta's documentation, not with the
 *   production schemas (`_send_request.ts`: 400 with code 100, 131008 or
 *   131009), and optionally a template registry (132001 unknown template,
 *   132000 wrong parameter count);
 * - per-phone-number throughput, 80 msg/s by default over a sliding one-second
 *   window (code 130429, HTTP 400 like Meta; `throttleHttpStatus` for BSPs
 *   that use 429);
 * - per-recipient pair spacing, 6 s by default (code 131056, HTTP 400);
 * - latency from a distribution, and fault injection: 5xx, unanswered
 *   requests (held until the client gives up, at most `maxHoldMs`), sends
 *   whose answer is lost, 130429 storms, and a script of the next N answers;
 * - what Meta does to a whole account (`account` in the config): an expired
 *   token (401, 190/463), a spam-flagged number after N sends (131048), the
 *   portfolio's messaging limit per rolling 24 h (with a clock offset), paused
 *   or disabled templates (132015, 132016), and the template-status and
 *   quality webhooks that announce them (`/_fake/template-status`, `/_fake/quality`);
 * - a realistic `wamid.…` per accepted message, then signed status webhooks
 *   (`sent → delivered → read`, or `failed`) to a configurable URL.
 *
 * Control endpoints (JSON): `GET /_fake/messages`, `POST /_fake/reset`,
 * `GET|POST /_fake/config`, `GET /_fake/stats`, `POST /_fake/inbound`,
 * `POST /_fake/template-status`, `POST /_fake/quality`,
 * `POST /_fake/storm`, `POST /_fake/verify-webhook`, `POST /_fake/wait-webhooks`,
 * `GET /_fake/health`.
 *
 * @example
 * const fake = await startFakeWaba({ mps: 10, pairSpacingMs: 0 });
 * const wa = new WhatsAppClient({ baseUrl: fake.url, accessToken: fake.config().accessToken });
 * await wa.sendTemplate({ phoneNumberId: "1", to: "+254712345678", template: "hi", language: "en" });
 * fake.messages().length; // 1
 * await fake.shutdown();
 *
 * @module
 */
import {
  applyPatch,
  defaultConfig,
  type FakeWabaConfig,
  type FakeWabaConfigPatch,
  FakeWabaConfigPatchSchema,
  sampleLatency,
  seededRandom,
} from "./_config.ts";
import { graphError, serverError, wamid } from "./_graph.ts";
import { PairSpacing, ThroughputLimiter, UniqueRecipientWindow } from "./_limits.ts";
import { checkSendRequest, type TemplateSend } from "./_send_request.ts";
import { WebhookDisabledError, WebhookDispatcher, type WebhookStats } from "./_webhooks.ts";

export type { FakeWabaConfig, FakeWabaConfigPatch } from "./_config.ts";

/** Options of {@link startFakeWaba}: where to listen, plus any config overrides. */
export interface FakeWabaOptions extends FakeWabaConfigPatch {
  /** 0 (default) picks a free port. */
  port?: number;
  hostname?: string;
}

/** One accepted message, as recorded by the fake. */
export interface RecordedMessage {
  /** 1-based acceptance order since start / reset. */
  seq: number;
  /** When the fake accepted it (ms since epoch). */
  acceptedAtMs: number;
  phoneNumberId: string;
  /** `to` exactly as sent. */
  to: string;
  /** Digits of `to`, as Meta reports `wa_id`. */
  waId: string;
  template: string;
  language: string;
  /** Body parameters in order (text, or the fallback value of currency / date_time). */
  parameters: string[];
  wamid: string;
  callbackData?: string;
}

/** Counters of `/_fake/stats`. Outcome keys follow the client's error codes. */
export interface FakeWabaStats {
  requests: number;
  accepted: number;
  /** e.g. `{accepted, waba_130429, waba_131056, waba_190, waba_100, http_503, timeout, lost_response}`. */
  outcomes: Record<string, number>;
  stored: number;
  droppedMessages: number;
  webhooks: WebhookStats;
  /** Account state: unique recipients in the messaging-limit window, the token, spam-flagged numbers. */
  account: { recipients24h: number; tokenExpired: boolean; spamFlagged: string[] };
}

/** A running fake. */
export interface FakeWaba {
  /** Base URL for the client (`http://127.0.0.1:<port>`). */
  url: string;
  port: number;
  /** Stops listening, aborts held requests and webhook POSTs, clears timers. */
  shutdown(): Promise<void>;
  /** Accepted messages, oldest first (a copy). */
  messages(): RecordedMessage[];
  /** Clears messages, limits, counters and queued webhooks; restores the startup config unless `keepConfig`. */
  reset(opts?: { keepConfig?: boolean }): void;
  /** Changes config at runtime; returns the new config. Throws {@link FakeWabaConfigError}. */
  configure(patch: FakeWabaConfigPatch): FakeWabaConfig;
  config(): FakeWabaConfig;
  stats(): FakeWabaStats;
  /** Answers every send with 130429 for the next `ms` milliseconds. */
  storm(ms: number): void;
  /** Delivers an inbound user text message through the signed webhook. Returns its id. */
  inbound(input: { from: string; text: string; phoneNumberId?: string; name?: string }): string;
  /** Sets a template's status and announces it with a signed `message_template_status_update`. */
  templateStatus(input: TemplateStatusEvent): void;
  /** Announces a `phone_number_quality_update`; a tier in it becomes the fake's messaging limit. */
  quality(input: QualityEvent): void;
  /** Resolves true when every scheduled webhook has been delivered or given up. */
  waitForWebhooks(timeoutMs?: number): Promise<boolean>;
  /** Performs Meta's `GET ?hub.mode=subscribe&hub.verify_token&hub.challenge` check against the webhook URL. */
  verifyWebhook(): Promise<{ ok: boolean; status: number; body: string }>;
}

/** A template status change, as `/_fake/template-status` takes it. */
export interface TemplateStatusEvent {
  name: string;
  language?: string;
  event: "APPROVED" | "PAUSED" | "DISABLED" | "REJECTED";
  reason?: string;
}

/** A quality update, as `/_fake/quality` takes it. */
export interface QualityEvent {
  event: string;
  /** The tier, as `max_daily_conversations_per_business` (TIER_250, TIER_2K, …, TIER_UNLIMITED). */
  tier?: string;
  displayPhoneNumber?: string;
}

/** Meta's tier names and their limits (null = unlimited). */
const TIER_LIMITS: Record<string, number | null> = {
  TIER_50: 50,
  TIER_250: 250,
  TIER_1K: 1000,
  TIER_2K: 2000,
  TIER_10K: 10_000,
  TIER_100K: 100_000,
  TIER_UNLIMITED: null,
};

const DAY_MS = 86_400_000;

/** Thrown for an invalid runtime configuration patch. */
export class FakeWabaConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FakeWabaConfigError";
  }
}

class MessageStore {
  #items: RecordedMessage[] = [];
  #start = 0;
  dropped = 0;

  constructor(public capacity: number) {}

  get size(): number {
    return this.#items.length;
  }

  push(m: RecordedMessage): void {
    if (this.#items.length < this.capacity) {
      this.#items.push(m);
      return;
    }
    this.#items[this.#start] = m;
    this.#start = (this.#start + 1) % this.capacity;
    this.dropped++;
  }

  all(): RecordedMessage[] {
    return [...this.#items.slice(this.#start), ...this.#items.slice(0, this.#start)];
  }

  resize(capacity: number): void {
    if (capacity === this.capacity) return;
    const all = this.all();
    this.dropped += Math.max(0, all.length - capacity);
    this.#items = all.slice(Math.max(0, all.length - capacity));
    this.#start = 0;
    this.capacity = capacity;
  }

  clear(): void {
    this.#items = [];
    this.#start = 0;
    this.dropped = 0;
  }
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json; charset=UTF-8", ...headers },
  });
}

/** Resolves after `ms`, or as soon as any signal aborts. Never rejects. */
function pause(ms: number, signals: AbortSignal[]): Promise<void> {
  if (ms <= 0 || signals.some((s) => s.aborted)) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      for (const s of signals) s.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    for (const s of signals) s.addEventListener("abort", done, { once: true });
  });
}

async function readJson(req: Request): Promise<unknown> {
  const text = await req.text();
  if (text.trim() === "") return {};
  return JSON.parse(text);
}

/**
 * Starts the fake on 127.0.0.1. Webhooks are off unless `webhook.url` is given
 * (`main.ts` points them at the local gateway).
 *
 * @example
 * const fake = await startFakeWaba({ webhook: { url: "http://127.0.0.1:9999/hook" } });
 */
export function startFakeWaba(options: FakeWabaOptions = {}): Promise<FakeWaba> {
  try {
    return Promise.resolve(start(options));
  } catch (err) {
    return Promise.reject(err);
  }
}

function start(options: FakeWabaOptions): FakeWaba {
  const { port = 0, hostname = "127.0.0.1", ...patch } = options;
  const parsed = FakeWabaConfigPatchSchema.safeParse(patch);
  if (!parsed.success) {
    throw new FakeWabaConfigError(`Cannot start the fake WhatsApp API: ${parsed.error.message}`);
  }
  const initialConfig = applyPatch(defaultConfig(), parsed.data);
  let cfg = initialConfig;
  let random = cfg.seed === null ? Math.random : seededRandom(cfg.seed);
  let limiter = new ThroughputLimiter(cfg.mps);
  let pairs = new PairSpacing(cfg.pairSpacingMs);
  const store = new MessageStore(cfg.maxStoredMessages);
  const closing = new AbortController();
  const dispatcher = new WebhookDispatcher(() => cfg, () => random(), closing.signal);
  let startedAt = Date.now();
  let stormUntil = 0;
  let seq = 0;
  let counters = { requests: 0, accepted: 0, outcomes: {} as Record<string, number> };
  // Account state: accepted sends and spam flags per number, the portfolio's recipients.
  let acceptedByNumber = new Map<string, number>();
  let spamFlaggedUntil = new Map<string, number>();
  let recipients = new UniqueRecipientWindow(DAY_MS);

  const count = (outcome: string) => {
    counters.outcomes[outcome] = (counters.outcomes[outcome] ?? 0) + 1;
  };

  const setConfig = (next: FakeWabaConfig) => {
    const prev = cfg;
    cfg = next;
    if (next.mps !== prev.mps) limiter = new ThroughputLimiter(next.mps);
    if (next.pairSpacingMs !== prev.pairSpacingMs) pairs = new PairSpacing(next.pairSpacingMs);
    if (next.seed !== prev.seed) {
      random = next.seed === null ? Math.random : seededRandom(next.seed);
    }
    store.resize(next.maxStoredMessages);
  };

  const configure = (input: unknown): FakeWabaConfig => {
    const p = FakeWabaConfigPatchSchema.safeParse(input);
    if (!p.success) {
      throw new FakeWabaConfigError(`Invalid fake WhatsApp config: ${p.error.message}`);
    }
    setConfig(applyPatch(cfg, p.data));
    return cfg;
  };

  const reset = (opts: { keepConfig?: boolean } = {}) => {
    if (!opts.keepConfig) setConfig(initialConfig);
    limiter = new ThroughputLimiter(cfg.mps);
    pairs = new PairSpacing(cfg.pairSpacingMs);
    random = cfg.seed === null ? Math.random : seededRandom(cfg.seed);
    store.clear();
    dispatcher.reset();
    counters = { requests: 0, accepted: 0, outcomes: {} };
    acceptedByNumber = new Map();
    spamFlaggedUntil = new Map();
    recipients = new UniqueRecipientWindow(DAY_MS);
    stormUntil = 0;
    seq = 0;
    startedAt = Date.now();
  };

  const stats = (): FakeWabaStats => ({
    requests: counters.requests,
    accepted: counters.accepted,
    outcomes: { ...counters.outcomes },
    stored: store.size,
    droppedMessages: store.dropped,
    webhooks: dispatcher.stats(),
    account: {
      recipients24h: recipients.count(Date.now() + cfg.account.clockOffsetMs),
      tokenExpired: cfg.account.tokenExpired,
      spamFlagged: [...spamFlaggedUntil].filter(([, until]) => until > Date.now()).map(([n]) => n),
    },
  });

  const inStorm = (now: number) => {
    if (now < stormUntil) return true;
    const { stormEveryMs, stormDurationMs } = cfg.faults;
    return stormEveryMs > 0 && stormDurationMs > 0 &&
      (now - startedAt) % stormEveryMs < stormDurationMs;
  };

  /** Answers after the sampled latency (cut short on shutdown). */
  const answer = async (
    latencyMs: number,
    outcome: string,
    status: number,
    body: unknown,
    headers: Record<string, string> = {},
  ): Promise<Response> => {
    count(outcome);
    await pause(latencyMs, [closing.signal]);
    return json(status, body, headers);
  };

  const errorAnswer = (
    latencyMs: number,
    code: number,
    overrides: { status?: number; message?: string; details?: string; subcode?: number } = {},
    headers: Record<string, string> = {},
  ) => {
    const { status, body } = graphError(code, overrides);
    return answer(latencyMs, `waba_${code}`, status, body, headers);
  };

  /**
   * Never answers within the client's patience: holds for `maxHoldMs` (or until
   * the fake stops), then 504. It deliberately does not watch `req.signal`
   * (Deno's legacy abort semantics print a warning for every process that does);
   * a client that gave up simply never sees the late 504.
   */
  const hold = async (outcome: string): Promise<Response> => {
    count(outcome);
    await pause(cfg.faults.maxHoldMs, [closing.signal]);
    return json(504, serverError(504).body);
  };

  const accept = (pnid: string, send: TemplateSend, now: number): RecordedMessage => {
    const waId = send.waId;
    const record: RecordedMessage = {
      seq: ++seq,
      acceptedAtMs: now,
      phoneNumberId: pnid,
      to: send.to,
      waId,
      template: send.template,
      language: send.language,
      parameters: send.bodyParameters,
      wamid: wamid(waId),
      ...(send.callbackData !== undefined ? { callbackData: send.callbackData } : {}),
    };
    store.push(record);
    limiter.record(pnid, now);
    pairs.record(pnid, waId, now);
    counters.accepted++;
    recipients.record(waId, now + cfg.account.clockOffsetMs);
    const sends = (acceptedByNumber.get(pnid) ?? 0) + 1;
    acceptedByNumber.set(pnid, sends);
    const account = cfg.account;
    if (account.spamFlagAfterSends !== null && sends === account.spamFlagAfterSends) {
      spamFlaggedUntil.set(pnid, now + account.spamFlagDurationMs);
    }
    if (
      account.tokenExpiresAfterSends !== null && counters.accepted >= account.tokenExpiresAfterSends
    ) {
      setConfig(applyPatch(cfg, { account: { tokenExpired: true, tokenExpiresAfterSends: null } }));
    }
    dispatcher.track({
      wamid: record.wamid,
      phoneNumberId: pnid,
      recipientId: waId,
      acceptedAtMs: now,
      callbackData: record.callbackData,
    });
    return record;
  };

  const sendResponse = (m: RecordedMessage) => ({
    messaging_product: "whatsapp",
    contacts: [{ input: m.to, wa_id: m.waId }],
    messages: [{ id: m.wamid, message_status: "accepted" }],
  });

  const handleSend = async (req: Request, version: string, pnid: string): Promise<Response> => {
    const now = Date.now();
    counters.requests++;
    const latencyMs = sampleLatency(cfg.latency, random);

    const auth = req.headers.get("authorization") ?? "";
    const bearer = /^Bearer\s+(.+)$/i.exec(auth)?.[1]?.trim() ??
      new URL(req.url).searchParams.get("access_token");
    if (bearer !== cfg.accessToken) {
      await req.body?.cancel();
      return errorAnswer(latencyMs, 190, {}, {
        "www-authenticate":
          'OAuth "Facebook Platform" "invalid_token" "Invalid OAuth access token - Cannot parse access token"',
      });
    }
    if (cfg.account.tokenExpired) {
      // Meta's answer for an expired user or system-user token (Graph API error
      // handling: code 190, subcode 463).
      await req.body?.cancel();
      return errorAnswer(latencyMs, 190, {
        subcode: 463,
        message: `Error validating access token: Session has expired on ${
          new Date(now - 60_000).toUTCString()
        }. The current time is ${new Date(now).toUTCString()}.`,
        details: "The access token has expired.",
      }, {
        "www-authenticate":
          'OAuth "Facebook Platform" "invalid_token" "Error validating access token: Session has expired"',
      });
    }
    if (!/^v\d+\.\d+$/.test(version)) {
      await req.body?.cancel();
      return errorAnswer(latencyMs, 100, {
        message: `(#100) Unknown version: ${version}`,
        details: `Graph API version "${version}" does not exist.`,
      });
    }
    if (!/^\d{1,32}$/.test(pnid)) {
      await req.body?.cancel();
      return errorAnswer(latencyMs, 100, {
        subcode: 33,
        message:
          `Unsupported post request. Object with ID '${pnid}' does not exist, cannot be loaded due to missing permissions, or does not support this operation.`,
        details: `Unknown phone number id "${pnid}".`,
      });
    }

    let raw: unknown;
    try {
      raw = JSON.parse(await req.text());
    } catch {
      return errorAnswer(latencyMs, 100, { details: "The request body is not valid JSON." });
    }
    const checked = checkSendRequest(raw);
    if (!checked.ok) {
      return errorAnswer(latencyMs, checked.refusal.code, { details: checked.refusal.details });
    }
    const body = checked.send;

    if (cfg.templates !== null) {
      const spec = cfg.templates[body.template];
      if (!spec || (spec.languages && !spec.languages.includes(body.language))) {
        return errorAnswer(latencyMs, 132001, {
          details: `template name (${body.template}) does not exist in ${body.language}`,
        });
      }
      const given = body.bodyParameters.length;
      if (given !== spec.bodyParams) {
        return errorAnswer(latencyMs, 132000, {
          details:
            `body: number of localizable_params (${given}) does not match the expected number of params (${spec.bodyParams})`,
        });
      }
    }

    const status = cfg.account.templateStatus[body.template];
    if (status === "PAUSED") {
      return errorAnswer(latencyMs, 132015, { details: `Template ${body.template} is paused.` });
    }
    if (status === "DISABLED") {
      return errorAnswer(latencyMs, 132016, { details: `Template ${body.template} is disabled.` });
    }
    if (status === "REJECTED") {
      return errorAnswer(latencyMs, 132001, {
        details: `template name (${body.template}) does not exist in ${body.language}`,
      });
    }

    const scripted = cfg.faults.script.length > 0 ? cfg.faults.script[0] : undefined;
    if (scripted) {
      cfg = { ...cfg, faults: { ...cfg.faults, script: cfg.faults.script.slice(1) } };
      switch (scripted.kind) {
        case "ok":
          return answer(latencyMs, "accepted", 200, sendResponse(accept(pnid, body, now)));
        case "timeout":
          return hold("timeout");
        case "lost_response":
          accept(pnid, body, now);
          return hold("lost_response");
        case "error": {
          const headers: Record<string, string> = scripted.retryAfterSeconds !== undefined
            ? { "retry-after": String(scripted.retryAfterSeconds) }
            : {};
          if (scripted.code === undefined) {
            const status = scripted.status ?? 500;
            return answer(latencyMs, `http_${status}`, status, serverError(status).body, headers);
          }
          return errorAnswer(latencyMs, scripted.code, {
            status: scripted.status,
            message: scripted.message,
          }, headers);
        }
      }
    }

    const f = cfg.faults;
    if (f.timeoutRate > 0 && random() < f.timeoutRate) return hold("timeout");
    if (f.serverErrorRate > 0 && random() < f.serverErrorRate) {
      const status = f.serverErrorStatus;
      return answer(latencyMs, `http_${status}`, status, serverError(status).body);
    }

    const throttled = (details?: string) =>
      errorAnswer(
        latencyMs,
        130429,
        { status: cfg.throttleHttpStatus, details },
        cfg.rateLimitRetryAfterSeconds === null
          ? {}
          : { "retry-after": String(cfg.rateLimitRetryAfterSeconds) },
      );
    if ((spamFlaggedUntil.get(pnid) ?? 0) > now) return errorAnswer(latencyMs, 131048);
    if (inStorm(now)) return throttled();
    if (!limiter.allows(pnid, now)) return throttled();
    if (!pairs.allows(pnid, body.waId, now)) return errorAnswer(latencyMs, 131056);
    const limit = cfg.account.messagingLimit;
    if (limit !== null && !recipients.allows(body.waId, now + cfg.account.clockOffsetMs, limit)) {
      count("messaging_limit");
      return errorAnswer(latencyMs, cfg.account.messagingLimitCode, {
        details:
          `The business portfolio's messaging limit (${limit} unique recipients per 24 h) is reached.`,
      });
    }

    if (f.lostResponseRate > 0 && random() < f.lostResponseRate) {
      accept(pnid, body, now);
      return hold("lost_response");
    }
    return answer(latencyMs, "accepted", 200, sendResponse(accept(pnid, body, now)));
  };

  const templateStatus = (input: TemplateStatusEvent) => {
    setConfig(applyPatch(cfg, {
      account: { templateStatus: { ...cfg.account.templateStatus, [input.name]: input.event } },
    }));
    dispatcher.accountEvent("message_template_status_update", {
      event: input.event,
      message_template_id: 1000 + (input.name.length * 7919) % 100_000,
      message_template_name: input.name,
      message_template_language: input.language ?? "en",
      reason: input.reason ?? (input.event === "APPROVED" ? "NONE" : null),
    });
  };

  const quality = (input: QualityEvent) => {
    if (input.tier !== undefined) {
      if (!(input.tier in TIER_LIMITS)) {
        throw new FakeWabaConfigError(
          `Unknown tier "${input.tier}": use TIER_250 … TIER_UNLIMITED`,
        );
      }
      setConfig(applyPatch(cfg, { account: { messagingLimit: TIER_LIMITS[input.tier] } }));
    }
    dispatcher.accountEvent("phone_number_quality_update", {
      display_phone_number: input.displayPhoneNumber ?? cfg.displayPhoneNumber,
      event: input.event,
      ...(input.tier !== undefined
        ? { current_limit: input.tier, max_daily_conversations_per_business: input.tier }
        : {}),
    });
  };

  const verifyWebhook = async () => {
    const target = cfg.webhook.url;
    if (target === null) return { ok: false, status: 0, body: "no webhook URL is configured" };
    const challenge = String(Math.floor(random() * 1e9));
    const u = new URL(target);
    u.searchParams.set("hub.mode", "subscribe");
    u.searchParams.set("hub.verify_token", cfg.verifyToken);
    u.searchParams.set("hub.challenge", challenge);
    try {
      const res = await fetch(u, {
        signal: AbortSignal.any([AbortSignal.timeout(cfg.webhook.timeoutMs), closing.signal]),
      });
      const text = await res.text();
      return { ok: res.status === 200 && text === challenge, status: res.status, body: text };
    } catch (err) {
      return { ok: false, status: 0, body: String((err as Error).message ?? err) };
    }
  };

  const handleControl = async (req: Request, url: URL): Promise<Response> => {
    const route = `${req.method} ${url.pathname}`;
    switch (route) {
      case "GET /_fake/health":
        return json(200, { ok: true });
      case "GET /_fake/messages": {
        let list = store.all();
        const to = url.searchParams.get("to");
        if (to) list = list.filter((m) => m.to === to || m.waId === to.replace(/\D/g, ""));
        const offset = Number(url.searchParams.get("offset") ?? 0) || 0;
        const limit = Number(url.searchParams.get("limit") ?? list.length) || list.length;
        return json(200, {
          total: list.length,
          dropped: store.dropped,
          messages: list.slice(offset, offset + limit),
        });
      }
      case "POST /_fake/reset":
        await req.body?.cancel();
        reset({ keepConfig: url.searchParams.get("keepConfig") === "1" });
        return json(200, { ok: true });
      case "GET /_fake/config":
        return json(200, cfg);
      case "POST /_fake/config":
        try {
          return json(200, configure(await readJson(req)));
        } catch (err) {
          return json(400, { error: String((err as Error).message ?? err) });
        }
      case "GET /_fake/stats":
        return json(200, stats());
      case "POST /_fake/storm": {
        const body = await readJson(req) as { ms?: unknown };
        const ms = Number(body.ms);
        if (!(ms >= 0)) return json(400, { error: "Expected {ms: number >= 0}" });
        stormUntil = Date.now() + ms;
        return json(200, { ok: true, until: stormUntil });
      }
      case "POST /_fake/inbound": {
        const body = await readJson(req) as Record<string, unknown>;
        if (typeof body.from !== "string" || typeof body.text !== "string") {
          return json(400, { error: 'Expected {"from": "+254…", "text": "STOP"}' });
        }
        try {
          const id = dispatcher.inbound({
            from: body.from,
            text: body.text,
            phoneNumberId: typeof body.phoneNumberId === "string" ? body.phoneNumberId : undefined,
            name: typeof body.name === "string" ? body.name : undefined,
          });
          return json(200, { id });
        } catch (err) {
          if (err instanceof WebhookDisabledError) return json(409, { error: err.message });
          throw err;
        }
      }
      case "POST /_fake/template-status": {
        const body = await readJson(req) as Record<string, unknown>;
        const events = ["APPROVED", "PAUSED", "DISABLED", "REJECTED"];
        if (typeof body.name !== "string" || !events.includes(String(body.event))) {
          return json(400, {
            error:
              'Expected {"name": "voucher_issued", "event": "PAUSED" | "DISABLED" | "REJECTED" | "APPROVED"}',
          });
        }
        try {
          templateStatus({
            name: body.name,
            event: body.event as TemplateStatusEvent["event"],
            language: typeof body.language === "string" ? body.language : undefined,
            reason: typeof body.reason === "string" ? body.reason : undefined,
          });
          return json(200, { ok: true });
        } catch (err) {
          if (err instanceof WebhookDisabledError) return json(409, { error: err.message });
          throw err;
        }
      }
      case "POST /_fake/quality": {
        const body = await readJson(req) as Record<string, unknown>;
        if (typeof body.event !== "string") {
          return json(400, { error: 'Expected {"event": "DOWNGRADE", "tier"?: "TIER_250"}' });
        }
        try {
          quality({
            event: body.event,
            tier: typeof body.tier === "string" ? body.tier : undefined,
            displayPhoneNumber: typeof body.displayPhoneNumber === "string"
              ? body.displayPhoneNumber
              : undefined,
          });
          return json(200, { ok: true, messagingLimit: cfg.account.messagingLimit });
        } catch (err) {
          if (err instanceof WebhookDisabledError) return json(409, { error: err.message });
          if (err instanceof FakeWabaConfigError) return json(400, { error: err.message });
          throw err;
        }
      }
      case "POST /_fake/verify-webhook":
        await req.body?.cancel();
        return json(200, await verifyWebhook());
      case "POST /_fake/wait-webhooks": {
        await req.body?.cancel();
        const timeoutMs = Math.min(60_000, Number(url.searchParams.get("timeoutMs") ?? 10_000));
        return json(200, { idle: await dispatcher.waitForIdle(timeoutMs) });
      }
      default:
        await req.body?.cancel();
        return json(404, { error: `No fake control route ${route}` });
    }
  };

  const handler = async (req: Request): Promise<Response> => {
    try {
      const url = new URL(req.url);
      if (url.pathname.startsWith("/_fake/")) return await handleControl(req, url);
      const m = /^\/([^/]+)\/([^/]+)\/messages\/?$/.exec(url.pathname);
      if (m && req.method === "POST") {
        return await handleSend(req, decodeURIComponent(m[1]), decodeURIComponent(m[2]));
      }
      await req.body?.cancel();
      return json(
        400,
        graphError(2500, {
          status: 400,
          message: `Unknown path components: ${url.pathname}`,
          details: "Only POST /{version}/{phone-number-id}/messages is implemented by the fake.",
        }).body,
      );
    } catch (err) {
      return json(500, { error: String((err as Error)?.message ?? err) });
    }
  };

  const server = Deno.serve({ port, hostname, onListen: () => {} }, handler);
  const addr = server.addr as Deno.NetAddr;
  let stopped: Promise<void> | undefined;

  return {
    url: `http://${addr.hostname}:${addr.port}`,
    port: addr.port,
    shutdown() {
      stopped ??= (async () => {
        closing.abort();
        await dispatcher.stop();
        await server.shutdown();
      })();
      return stopped;
    },
    messages: () => store.all(),
    reset,
    configure: (p) => configure(p),
    config: () => cfg,
    stats,
    storm(ms: number) {
      stormUntil = Date.now() + ms;
    },
    inbound: (input) => dispatcher.inbound(input),
    templateStatus,
    quality,
    waitForWebhooks: (timeoutMs = 10_000) => dispatcher.waitForIdle(timeoutMs),
    verifyWebhook,
  };
}
