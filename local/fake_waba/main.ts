/**
 * Runs the fake WhatsApp Cloud API for the local stack:
 *
 *     deno run -A local/fake_waba/main.ts
 *
 * Environment (all optional):
 * - `FAKE_WABA_PORT` (54330) — listen port on 127.0.0.1;
 * - `WABA_ACCESS_TOKEN`, `WABA_APP_SECRET`, `WABA_VERIFY_TOKEN` — defaults from `local/env.ts`;
 * - `FAKE_WABA_WEBHOOK_URL` — where signed webhooks go; default the local
 *   gateway's `/functions/v1/waba-webhook`; `none` (or empty) disables them;
 * - `FAKE_WABA_LATENCY_MS` — `20` fixed, `10-50` uniform, `20/200` lognormal p50/p99;
 * - `FAKE_WABA_MPS` (80) — messages per second per phone number id;
 * - `FAKE_WABA_PAIR_SPACING_MS` (6000) — minimum spacing per recipient.
 *
 * Prints one JSON line when listening and stops cleanly on SIGINT / SIGTERM.
 *
 * @module
 */
import {
  API_URL,
  FAKE_WABA_PORT,
  WABA_ACCESS_TOKEN,
  WABA_APP_SECRET,
  WABA_VERIFY_TOKEN,
} from "../env.ts";
import { log } from "../../functions/_shared/log.ts";
import { type FakeWabaConfigPatch, parseLatency } from "./_config.ts";
import { startFakeWaba } from "./server.ts";

/** Reads the fake's config from environment variables. */
export function configFromEnv(env: (name: string) => string | undefined): FakeWabaConfigPatch {
  const webhookUrl = env("FAKE_WABA_WEBHOOK_URL") ?? `${API_URL}/functions/v1/waba-webhook`;
  const patch: FakeWabaConfigPatch = {
    accessToken: env("WABA_ACCESS_TOKEN") ?? WABA_ACCESS_TOKEN,
    appSecret: env("WABA_APP_SECRET") ?? WABA_APP_SECRET,
    verifyToken: env("WABA_VERIFY_TOKEN") ?? WABA_VERIFY_TOKEN,
    webhook: { url: webhookUrl === "" || webhookUrl === "none" ? null : webhookUrl },
  };
  const latency = env("FAKE_WABA_LATENCY_MS");
  if (latency) patch.latency = parseLatency(latency);
  const mps = env("FAKE_WABA_MPS");
  if (mps) patch.mps = Number(mps);
  const spacing = env("FAKE_WABA_PAIR_SPACING_MS");
  if (spacing) patch.pairSpacingMs = Number(spacing);
  return patch;
}

if (import.meta.main) {
  const patch = configFromEnv((name) => Deno.env.get(name));
  const fake = await startFakeWaba({ port: FAKE_WABA_PORT, ...patch });
  const cfg = fake.config();
  log("info", "fake_waba.listening", {
    url: fake.url,
    mps: cfg.mps,
    pairSpacingMs: cfg.pairSpacingMs,
    latency: cfg.latency,
    webhookUrl: cfg.webhook.url,
  });
  const stop = async () => {
    await fake.shutdown();
    log("info", "fake_waba.stopped", { stats: fake.stats() });
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}
