/**
 * Every load scenario, by name (the order `perf:run` runs them in).
 *
 * @module
 */
import type { Scenario } from "./_types.ts";
import { voucherPreviewSpike } from "./voucher_preview_spike.ts";
import { stationRedeemPeak } from "./station_redeem_peak.ts";
import { voucherIssuance } from "./voucher_issuance.ts";
import { campaignBulkSend } from "./campaign_bulk_send.ts";

/** Scenario modules keyed by name. */
export const SCENARIOS: Record<string, Scenario<unknown>> = {
  voucher_preview_spike: voucherPreviewSpike as Scenario<unknown>,
  station_redeem_peak: stationRedeemPeak as Scenario<unknown>,
  voucher_issuance: voucherIssuance as Scenario<unknown>,
  campaign_bulk_send: campaignBulkSend as Scenario<unknown>,
};
