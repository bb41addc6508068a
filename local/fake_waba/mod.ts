/**
 * The fake WhatsApp Cloud API's public interface — what code outside
 * `local/fake_waba/` may use. Everything else in this folder (`_*.ts`) is
 * private to the fake.
 *
 * - {@link startFakeWaba} starts a fake in this process (unit and contract
 *   tests start their own on a spare port); `main.ts` is the process entry point
 *   `deno task start` runs, configured by {@link configFromEnv};
 * - the config types describe what `POST /_fake/config` accepts, so a client of
 *   a running fake (the stack harness, `local/harness.ts`) can type its patches.
 *
 * @example
 * import { startFakeWaba } from "./local/fake_waba/mod.ts";
 * const fake = await startFakeWaba({ mps: 10, pairSpacingMs: 0 });
 * // … point a WhatsApp client at fake.url, send …
 * fake.messages().length;
 * await fake.shutdown();
 *
 * @module
 */
export {
  type FakeWaba,
  FakeWabaConfigError,
  type FakeWabaOptions,
  type FakeWabaStats,
  type QualityEvent,
  type RecordedMessage,
  startFakeWaba,
  type TemplateStatusEvent,
} from "./server.ts";
export type { AccountConfig, FakeWabaConfig, FakeWabaConfigPatch, Latency } from "./_config.ts";
export { parseLatency } from "./_config.ts";
export { WebhookDisabledError, type WebhookStats } from "./_webhooks.ts";
export { configFromEnv } from "./main.ts";
