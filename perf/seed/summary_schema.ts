/**
 * The seed summary's schema (`perf/fixtures/generated/perf_seed_summary.json`):
 * the zod schema validates the file where it crosses into the driver; the type
 * scenarios use is `SeedSummary` in `perf/scenarios/_types.ts` (k6 cannot
 * import zod), and a compile-time check keeps the two equal.
 *
 * @module
 */
import { z } from "zod";
import type { SeedSummary } from "../scenarios/_types.ts";

const uuid = z.string().regex(
  /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i,
);
const jwt = z.string().regex(/^[\w-]+\.[\w-]+\.[\w-]+$/);
const displayCode = z.string().regex(
  /^[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}$/,
);

/** zod schema of SeedSummary. */
export const SeedSummarySchema = z.object({
  version: z.literal(1),
  generated_at: z.string(),
  seed: z.number().int(),
  env: z.object({ name: z.string(), base_url: z.string() }),
  tokens_expire_at: z.string(),
  counts: z.object({
    users: z.number().int().min(0),
    admins: z.number().int().min(0),
    operators: z.number().int().min(0),
    stations: z.number().int().min(0),
    campaigns: z.number().int().min(0),
    vouchers: z.number().int().min(0),
    targets: z.number().int().min(0),
    channels: z.number().int().min(0),
  }),
  admin: z.object({ user_id: uuid, jwt }),
  service: z.object({ jwt }),
  operators: z.array(
    z.object({
      user_id: uuid,
      jwt,
      station_id: uuid,
      station_code: z.string(),
    }),
  ).min(1),
  campaigns: z.object({
    redeem: z.object({ id: uuid, name: z.string() }),
    bulk_send: z.object({
      id: uuid,
      name: z.string(),
      targets: z.number().int().min(0),
    }),
  }),
  channel: z.object({
    id: uuid,
    phone_number_id: z.string(),
    rate_per_minute: z.number(),
  }).nullable(),
  template: z.object({ name: z.string(), language: z.string() }),
  phones: z.object({
    prefix: z.string().regex(/^\+\d+$/),
    digits: z.number().int().min(1).max(12),
  }),
  codes: z.object({
    preview: z.array(displayCode),
    redeem_pool: z.array(displayCode),
  }),
});

// Compile-time: the schema's type and the scenarios' type are the same shape.
type Parsed = z.infer<typeof SeedSummarySchema>;
const _sameShape: [
  Parsed extends SeedSummary ? true : false,
  SeedSummary extends Parsed ? true : false,
] = [
  true,
  true,
];
void _sameShape;

/** Raised when the summary file is missing or not what the seed writes. */
export class SeedSummaryError extends Error {
  override name = "SeedSummaryError";
}

/** Reads and validates a summary file. */
export async function loadSeedSummary(path: string): Promise<SeedSummary> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (cause) {
    throw new SeedSummaryError(
      `Cannot read the seed summary "${path}"; run \`deno task perf:seed\` first`,
      { cause },
    );
  }
  const parsed = SeedSummarySchema.safeParse(JSON.parse(text));
  if (!parsed.success) {
    throw new SeedSummaryError(
      `Seed summary "${path}" is invalid: ${parsed.error.message}`,
    );
  }
  if (Date.parse(parsed.data.tokens_expire_at) < Date.now() + 60_000) {
    throw new SeedSummaryError(
      `The tokens in "${path}" expired at ${parsed.data.tokens_expire_at}; run \`deno task perf:seed\` again`,
    );
  }
  return parsed.data as SeedSummary;
}
