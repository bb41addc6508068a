/**
 * Configuration of the fake WhatsApp Cloud API: shape, defaults, the zod
 * schema that `POST /_fake/config` and `configure()` accept, and the latency
 * distributions.
 *
 * @module
 */
import { z } from "zod";
import { WABA_ACCESS_TOKEN, WABA_APP_SECRET, WABA_VERIFY_TOKEN } from "../env.ts";

const ms = z.number().min(0);
const rate = z.number().min(0).max(1);

/** How long the fake waits before answering a send. */
export const LatencySchema = z.discriminatedUnion("kind", [
  z.strictObject({ kind: z.literal("fixed"), ms }),
  z.strictObject({ kind: z.literal("uniform"), minMs: ms, maxMs: ms }),
  z.strictObject({ kind: z.literal("normal"), meanMs: ms, stdDevMs: ms }),
  z.strictObject({
    kind: z.literal("lognormal"),
    p50Ms: z.number().positive(),
    p99Ms: z.number().positive(),
  }),
]);
export type Latency = z.infer<typeof LatencySchema>;

/**
 * One scripted answer. `ok` forces acceptance (bypassing limits and random
 * faults); `timeout` holds the request unanswered and does not send;
 * `lost_response` sends (records the message, schedules webhooks) and then
 * holds the answer, as when a response is lost in transit; `error` answers
 * with a Graph error (status and message from the code catalogue unless given).
 */
export const ScriptedOutcomeSchema = z.discriminatedUnion("kind", [
  z.strictObject({ kind: z.literal("ok") }),
  z.strictObject({ kind: z.literal("timeout") }),
  z.strictObject({ kind: z.literal("lost_response") }),
  z.strictObject({
    kind: z.literal("error"),
    code: z.number().int().optional(),
    status: z.number().int().min(400).max(599).optional(),
    retryAfterSeconds: z.number().min(0).optional(),
    message: z.string().optional(),
  }),
]);

/** Fault injection knobs. Rates are probabilities per accepted-looking request. */
export const FaultsSchema = z.strictObject({
  /** Probability of an HTTP 5xx (Graph code 1 or 2, `is_transient: true`). */
  serverErrorRate: rate,
  serverErrorStatus: z.number().int().min(500).max(599),
  /** Probability of never answering (until the client gives up or `maxHoldMs`). */
  timeoutRate: rate,
  /** Probability of sending the message but never answering. */
  lostResponseRate: rate,
  /** Upper bound on how long an unanswered request is held before a 504. */
  maxHoldMs: ms,
  /** Periodic 130429 storms: every `stormEveryMs`, for `stormDurationMs` (0 = off). */
  stormEveryMs: ms,
  stormDurationMs: ms,
  /** The next N answers, consumed in order before any random fault. */
  script: z.array(ScriptedOutcomeSchema).max(100_000),
});

/** Status webhook behaviour. */
export const WebhookConfigSchema = z.strictObject({
  /** Where signed webhooks are POSTed; `null` disables them. */
  url: z.url().nullable(),
  /** Offsets from acceptance at which each status is emitted. */
  sentDelayMs: ms,
  deliveredDelayMs: ms,
  readDelayMs: ms,
  /** Fraction of delivered messages that are later read. */
  readRate: rate,
  /** Fraction of accepted messages that end `failed` (instead of sent) with `failCode`. */
  failRate: rate,
  failCode: z.number().int(),
  /** Recipients (digits) whose messages always fail with the given code. */
  failRecipients: z.record(z.string(), z.number().int()),
  /** Statuses due within one interval are batched into one payload per phone number. */
  batchIntervalMs: z.number().min(1).max(60_000),
  maxBatchSize: z.number().int().min(1).max(1000),
  /** Delivery retries on non-2xx / network error: base × 2^(attempt-1), at most maxAttempts tries. */
  maxAttempts: z.number().int().min(1).max(20),
  retryBaseMs: ms,
  timeoutMs: z.number().min(1),
  concurrency: z.number().int().min(1).max(256),
  /** Probability a delivered payload is delivered once more. */
  duplicateRate: rate,
  /** Shuffle statuses within a payload and the order of queued payloads. */
  shuffle: z.boolean(),
  /** Cap on payloads waiting for delivery; the oldest are dropped past it. */
  maxPending: z.number().int().min(1),
});

/**
 * What Meta does to a whole number, template or account, as the fake simulates
 * it (each answer is the one Meta's error-code reference gives; see `_graph.ts`):
 * - an expired access token: every send answers HTTP 401, code 190, subcode 463;
 * - a spam-flagged number (131048) after N accepted sends, for a while;
 * - the portfolio's messaging limit: unique recipients per rolling 24 h across
 *   the fake's numbers (Meta documents no code for a send beyond it: the fake
 *   answers `messagingLimitCode`, 131048 unless told otherwise);
 * - template statuses: a PAUSED template answers 132015, DISABLED 132016;
 * - a clock offset for the 24 h window, so a test can jump a day ahead.
 */
export const AccountSchema = z.strictObject({
  /** Every send answers 190/463 while true (a renewed token: set it back to false). */
  tokenExpired: z.boolean(),
  /** The token expires once this many sends were accepted since the last reset (null = never). */
  tokenExpiresAfterSends: z.number().int().min(0).nullable(),
  /** A number is spam-flagged once it has this many accepted sends (null = never; once per reset). */
  spamFlagAfterSends: z.number().int().min(0).nullable(),
  /** How long a spam flag lasts. */
  spamFlagDurationMs: ms,
  /** Unique recipients per rolling 24 h (the business portfolio's messaging limit); null = unlimited. */
  messagingLimit: z.number().int().min(1).nullable(),
  /** The Graph code of a send beyond the messaging limit. */
  messagingLimitCode: z.number().int(),
  /** Added to the fake's clock for the messaging-limit window (a test can jump a day ahead). */
  clockOffsetMs: z.number(),
  /** Template statuses by name (APPROVED when absent). */
  templateStatus: z.record(z.string(), z.enum(["APPROVED", "PAUSED", "DISABLED", "REJECTED"])),
});
export type AccountConfig = z.infer<typeof AccountSchema>;

/** A template the fake knows; sends naming others fail with 132001 when a registry is set. */
export const TemplateSpecSchema = z.strictObject({
  bodyParams: z.number().int().min(0),
  languages: z.array(z.string()).optional(),
});

/** Everything the fake can be told. */
export const FakeWabaConfigSchema = z.strictObject({
  accessToken: z.string().min(1),
  appSecret: z.string().min(1),
  verifyToken: z.string().min(1),
  /** WhatsApp Business Account id, used as `entry[].id` in webhooks. */
  wabaId: z.string().min(1),
  displayPhoneNumber: z.string().min(1),
  /** Phone number id used for inbound messages when none is given. */
  defaultPhoneNumberId: z.string().regex(/^\d+$/),
  /** Messages per second per phone number id (sliding 1 s window); 0 = unlimited. */
  mps: z.number().int().min(0),
  /** Minimum spacing between accepted messages to one recipient from one number; 0 = off. */
  pairSpacingMs: ms,
  /** Meta answers throttling with HTTP 400; some BSPs use 429. */
  throttleHttpStatus: z.number().int().min(400).max(599),
  /** `Retry-After` seconds on 130429 answers (Meta sends none: null). */
  rateLimitRetryAfterSeconds: z.number().min(0).nullable(),
  latency: LatencySchema,
  faults: FaultsSchema,
  webhook: WebhookConfigSchema,
  account: AccountSchema,
  /** Known templates; `null` accepts any approved-looking name. */
  templates: z.record(z.string(), TemplateSpecSchema).nullable(),
  /** Cap on recorded messages; the oldest are dropped past it. */
  maxStoredMessages: z.number().int().min(1),
  /** Seed for the fake's random choices; `null` uses Math.random. */
  seed: z.number().int().nullable(),
});
export type FakeWabaConfig = z.infer<typeof FakeWabaConfigSchema>;

/** A partial update: top-level keys replace, `faults`, `webhook` and `account` merge one level. */
export const FakeWabaConfigPatchSchema = FakeWabaConfigSchema.extend({
  faults: FaultsSchema.partial(),
  webhook: WebhookConfigSchema.partial(),
  account: AccountSchema.partial(),
}).partial();
export type FakeWabaConfigPatch = z.infer<typeof FakeWabaConfigPatchSchema>;

/** Defaults: Meta's published limits, instant answers, no faults, webhooks off. */
export function defaultConfig(): FakeWabaConfig {
  return {
    accessToken: WABA_ACCESS_TOKEN,
    appSecret: WABA_APP_SECRET,
    verifyToken: WABA_VERIFY_TOKEN,
    wabaId: "102290129340398",
    displayPhoneNumber: "15550783881",
    defaultPhoneNumberId: "106540352242922",
    mps: 80,
    pairSpacingMs: 6000,
    throttleHttpStatus: 400,
    rateLimitRetryAfterSeconds: null,
    latency: { kind: "fixed", ms: 0 },
    faults: {
      serverErrorRate: 0,
      serverErrorStatus: 503,
      timeoutRate: 0,
      lostResponseRate: 0,
      maxHoldMs: 30_000,
      stormEveryMs: 0,
      stormDurationMs: 0,
      script: [],
    },
    webhook: {
      url: null,
      sentDelayMs: 100,
      deliveredDelayMs: 300,
      readDelayMs: 1000,
      readRate: 1,
      failRate: 0,
      failCode: 131026,
      failRecipients: {},
      batchIntervalMs: 50,
      maxBatchSize: 100,
      maxAttempts: 5,
      retryBaseMs: 200,
      timeoutMs: 5000,
      concurrency: 4,
      duplicateRate: 0,
      shuffle: false,
      maxPending: 100_000,
    },
    account: {
      tokenExpired: false,
      tokenExpiresAfterSends: null,
      spamFlagAfterSends: null,
      spamFlagDurationMs: 60_000,
      messagingLimit: null,
      messagingLimitCode: 131048,
      clockOffsetMs: 0,
      templateStatus: {},
    },
    templates: null,
    maxStoredMessages: 1_000_000,
    seed: null,
  };
}

/**
 * Applies a validated patch to a config (returns a new object).
 *
 * @example
 * applyPatch(defaultConfig(), { mps: 10, faults: { timeoutRate: 0.1 } });
 */
export function applyPatch(config: FakeWabaConfig, patch: FakeWabaConfigPatch): FakeWabaConfig {
  return FakeWabaConfigSchema.parse({
    ...config,
    ...patch,
    faults: { ...config.faults, ...(patch.faults ?? {}) },
    webhook: { ...config.webhook, ...(patch.webhook ?? {}) },
    account: { ...config.account, ...(patch.account ?? {}) },
  });
}

/**
 * Parses the `FAKE_WABA_LATENCY_MS` notation: `"20"` fixed, `"10-50"` uniform,
 * `"20/200"` lognormal with that p50/p99, or a JSON {@link Latency}.
 *
 * @example
 * parseLatency("20/200"); // { kind: "lognormal", p50Ms: 20, p99Ms: 200 }
 */
export function parseLatency(spec: string): Latency {
  const s = spec.trim();
  if (s.startsWith("{")) return LatencySchema.parse(JSON.parse(s));
  let m = /^(\d+(?:\.\d+)?)$/.exec(s);
  if (m) return { kind: "fixed", ms: Number(m[1]) };
  m = /^(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)$/.exec(s);
  if (m) return LatencySchema.parse({ kind: "uniform", minMs: Number(m[1]), maxMs: Number(m[2]) });
  m = /^(\d+(?:\.\d+)?)\/(\d+(?:\.\d+)?)$/.exec(s);
  if (m) {
    return LatencySchema.parse({ kind: "lognormal", p50Ms: Number(m[1]), p99Ms: Number(m[2]) });
  }
  throw new Error(`Cannot parse latency "${spec}": use 20, 10-50, 20/200 or a JSON object`);
}

/** z-score of the 99th percentile of a standard normal. */
const Z99 = 2.3263478740408408;

/**
 * Draws one latency in milliseconds.
 *
 * @example
 * sampleLatency({ kind: "uniform", minMs: 5, maxMs: 10 }, Math.random); // 5 ≤ x ≤ 10
 */
export function sampleLatency(latency: Latency, random: () => number): number {
  switch (latency.kind) {
    case "fixed":
      return latency.ms;
    case "uniform": {
      const lo = Math.min(latency.minMs, latency.maxMs);
      const hi = Math.max(latency.minMs, latency.maxMs);
      return lo + random() * (hi - lo);
    }
    case "normal":
      return Math.max(0, latency.meanMs + latency.stdDevMs * gaussian(random));
    case "lognormal": {
      const mu = Math.log(latency.p50Ms);
      const sigma = Math.max(0, Math.log(latency.p99Ms) - mu) / Z99;
      return Math.exp(mu + sigma * gaussian(random));
    }
  }
}

/** Standard normal draw (Box–Muller). */
function gaussian(random: () => number): number {
  const u = 1 - random(); // (0, 1]
  const v = random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/**
 * A small seedable PRNG (mulberry32) so fault injection can be replayed.
 *
 * @example
 * const r = seededRandom(42); r(); // same sequence every run
 */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
