/**
 * Typed calls for the station and admin RPCs, over a supabase-js client the
 * app passes in (`supabase.schema("api").rpc(…)`): each method resolves with the
 * RPC's JSON or throws {@link ApiError} (the server's `{code, message, details,
 * hint}` and HTTP status) or {@link NetworkError} (no answer).
 *
 * `Retry-After` is not part of supabase-js's result, so {@link createApiClient}
 * builds the supabase-js client with {@link fetchKeepingRetryAfter}: a `fetch`
 * that remembers each answer's `Retry-After` by the request's `AbortSignal`
 * (every call here passes its own), and {@link ApiError.retryAfterMs} carries
 * it. With a client made elsewhere the calls work the same, without the floor.
 * A browser reads `Retry-After` cross-origin only if the API lists it in
 * `Access-Control-Expose-Headers`.
 *
 * Web APIs only (plus supabase-js): runs in browsers and in Deno.
 *
 * @example
 * ```ts
 * import { createApiClient, VoucherApi } from "./rpc.ts";
 *
 * const supabase = createApiClient("https://<ref>.supabase.co", PUBLISHABLE_KEY);
 * await supabase.auth.signInWithPassword({ email, password });
 * const api = new VoucherApi(supabase);
 * const voucher = await api.previewVoucher("7KQ2M-9XD4T-RCB83");
 * ```
 *
 * @module
 */
import { createClient, type SupabaseClient } from "@supabase/supabase-js";
import { parseRetryAfter } from "./backoff.ts";
import { ApiError, NetworkError, UnexpectedResponseError } from "./errors.ts";

/** What this module needs of a postgrest-js RPC builder. */
export interface RpcBuilder extends
  PromiseLike<{
    data: unknown;
    error: { code?: unknown; message?: unknown; details?: unknown; hint?: unknown } | null;
    status: number;
  }> {
  abortSignal(signal: AbortSignal): RpcBuilder;
  /** `Accept: text/csv` (postgrest-js `.csv()`). */
  csv(): RpcBuilder;
}

/** What this module needs of a supabase-js client: `schema("api").rpc(…)`. */
export interface SupabaseLike {
  schema(schema: "api"): { rpc(fn: string, args?: Record<string, unknown>): unknown };
}

const retryAfterBySignal = new WeakMap<AbortSignal, string>();

/**
 * Wraps `fetch` so that the `Retry-After` of each answer can be found again by
 * the request's `AbortSignal` (see the module doc).
 */
export function fetchKeepingRetryAfter(inner: typeof fetch = fetch): typeof fetch {
  return async (input, init) => {
    const res = await inner(input, init);
    const retryAfter = res.headers.get("retry-after");
    if (retryAfter !== null && init?.signal) retryAfterBySignal.set(init.signal, retryAfter);
    return res;
  };
}

/** The supabase-js client {@link createApiClient} makes: untyped database, schema `api`. */
// deno-lint-ignore no-explicit-any
export type ApiSupabaseClient = SupabaseClient<any, "api">;

/** Options of {@link createApiClient}. */
export interface ApiClientOptions {
  /** Keep the session across reloads (browser localStorage); default true in a browser. */
  persistSession?: boolean;
  /** The `fetch` under supabase-js (tests inject one). */
  fetch?: typeof fetch;
  /** A bearer token to send instead of a session (service tools, benchmarks). */
  accessToken?: string;
}

/**
 * A supabase-js client for the API: schema `api`, `Retry-After` kept for
 * {@link ApiError.retryAfterMs}, sessions refreshed automatically.
 */
export function createApiClient(
  url: string,
  key: string,
  opts: ApiClientOptions = {},
): ApiSupabaseClient {
  const inBrowser = typeof (globalThis as { document?: unknown }).document !== "undefined";
  const persist = opts.persistSession ?? inBrowser;
  return createClient(url, key, {
    db: { schema: "api" },
    auth: { persistSession: persist, autoRefreshToken: persist },
    global: {
      fetch: fetchKeepingRetryAfter(opts.fetch ?? ((...args) => fetch(...args))),
      headers: opts.accessToken ? { Authorization: `Bearer ${opts.accessToken}` } : {},
    },
  });
}

/** Options of one call. */
export interface CallOptions {
  /** Abort the call (its promise then rejects with a {@link NetworkError}). */
  signal?: AbortSignal;
  /** Give up waiting after this many ms (a {@link NetworkError}; the server may still have acted). */
  timeoutMs?: number;
}

// ---- Shapes ---------------------------------------------------------------------------------

/** A station, as `preview_voucher` names it. */
export interface StationRef {
  id: string;
  code: string;
  name: string;
}

/** `preview_voucher`: what staff see before redeeming; never customer data. */
export interface VoucherView {
  code: string;
  status: "issued" | "redeemed" | "void" | "expired";
  amount_minor: number;
  currency: string;
  campaign_id: string;
  campaign_name: string;
  expires_at: string | null;
  redeemable_at: "all" | StationRef[];
  redeemed_at: string | null;
  redeemed_station: StationRef | null;
  voided_at: string | null;
  /** Operators only: issued and redeemable at the operator's station. */
  redeemable_here?: boolean;
}

/** A successful redemption (`redeem_voucher`, or one `redeem_vouchers` item). */
export interface Redemption {
  redemption_id: number;
  code: string;
  status: "redeemed";
  amount_minor: number;
  currency: string;
  campaign_id: string;
  campaign_name: string;
  station_id: string;
  redeemed_at: string;
  client_redeemed_at: string | null;
  /** The till's details, when the redeem carried them. */
  receipt_ref?: string;
  pump?: string;
  quantity?: number;
  sale_amount_minor?: number;
  /** True when this answer is the stored one of an earlier request with the same key. */
  replayed: boolean;
}

/** Optional till details of a redeem (bounded; out of bounds is `invalid_redemption_details`). */
export interface RedemptionDetails {
  /** Receipt reference, 1–64 characters. */
  receiptRef?: string;
  /** Pump or till lane, 1–16 characters. */
  pump?: string;
  /** Quantity sold (e.g. litres), 0 < q ≤ 1,000,000, at most 3 decimals. */
  quantity?: number;
  /** The sale's total in minor units of the voucher's currency. */
  saleAmountMinor?: number;
}

function detailArgs(d: RedemptionDetails): Record<string, unknown> {
  return {
    ...(d.receiptRef !== undefined ? { receipt_ref: d.receiptRef } : {}),
    ...(d.pump !== undefined ? { pump: d.pump } : {}),
    ...(d.quantity !== undefined ? { quantity: d.quantity } : {}),
    ...(d.saleAmountMinor !== undefined ? { sale_amount_minor: d.saleAmountMinor } : {}),
  };
}

/** One item's refusal inside a `redeem_vouchers` answer. */
export interface ItemError {
  code: string;
  message: string;
  status: number;
  details: Record<string, unknown> | null;
}

/** One `redeem_vouchers` result, in input order. */
export type FlushItemResult =
  | ({ index: number; ok: true } & Redemption)
  | { index: number; ok: false; error: ItemError };

/** The `redeem_vouchers` answer. */
export interface FlushResult {
  results: FlushItemResult[];
  redeemed: number;
  failed: number;
}

/** One offline redemption as `redeem_vouchers` takes it. */
export interface FlushItem {
  code: string;
  idempotency_key: string;
  client_redeemed_at?: string | null;
  receipt_ref?: string;
  pump?: string;
  quantity?: number;
  sale_amount_minor?: number;
}

/** `issue_vouchers`. */
export interface IssueResult {
  batch_id: string;
  campaign_id: string;
  issued: number;
  expires_at: string | null;
  replayed: boolean;
}

/** One row of `list_vouchers`. */
export interface VoucherRow {
  id: number;
  code: string;
  status: VoucherView["status"];
  amount_minor: number;
  currency: string;
  batch_id: string;
  expires_at: string | null;
  issued_at: string;
  redeemed_at: string | null;
  redeemed_station_id: string | null;
  voided_at: string | null;
}

/** `list_vouchers`: a keyset page; pass `next_cursor` as `after`. */
export interface VoucherPage {
  vouchers: VoucherRow[];
  next_cursor: number | null;
}

/** A campaign row as the lifecycle RPCs return it. */
export interface Campaign {
  id: string;
  name: string;
  amount_minor: number;
  currency: string;
  starts_at: string;
  expires_at: string | null;
  station_ids: string[];
  status: "draft" | "scheduled" | "dispatching" | "completed" | "paused" | "cancelled";
  channel_id: string | null;
  template_name: string | null;
  template_language: string | null;
  template_params: unknown[];
  scheduled_for: string | null;
  [column: string]: unknown;
}

/** `campaign_stats`. */
export interface CampaignStats {
  campaign_id: string;
  name: string;
  status: Campaign["status"];
  targets: number;
  targets_pending_enqueue: number;
  vouchers: { issued: number; redeemed: number; void: number; expired: number };
  messages: Record<string, number>;
  sent_last_minute: number;
  channel: Record<string, unknown> | null;
  [field: string]: unknown;
}

/** `create_campaign` arguments. */
export interface NewCampaign {
  name: string;
  amount_minor: number;
  currency: string;
  /** Targets need a recorded consent (add_campaign_targets refuses the others). */
  requires_consent?: boolean;
  starts_at?: string;
  expires_at?: string;
  station_ids?: string[];
  channel_id?: string;
  template_name?: string;
  template_language?: string;
  template_params?: unknown[];
}

/** `undo_redemption`: the redemption, now reversed, and what its voucher became. */
export interface UndoneRedemption {
  redemption_id: number;
  code: string;
  voucher_status: "issued" | "expired";
  amount_minor: number;
  currency: string;
  station_id: string;
  redeemed_at: string;
  redeemed_by: string | null;
  reversed_at: string;
  reversed_by: string | null;
  reversal_reason: string;
  replayed: boolean;
}

/** A station row (`deactivate_station`, `reactivate_station`). */
export interface Station {
  id: string;
  code: string;
  name: string;
  region: string | null;
  active: boolean;
  created_at: string;
}

/** One `list_stations` row. */
export interface StationRow extends Station {
  /** Active operators bound to the station. */
  operators: number;
}

/** A staff row (`deactivate_staff`, `reactivate_staff`). */
export interface StaffMember {
  user_id: string;
  role: "admin" | "station_operator";
  station_id: string | null;
  active: boolean;
  created_at: string;
}

/** One `list_staff` row. */
export interface StaffRow extends StaffMember {
  email: string;
  station_code: string | null;
}

/** One message in `find_customer`, with its voucher. */
export interface CustomerMessage {
  message_id: number;
  campaign_id: string;
  campaign_name: string;
  campaign_status: Campaign["status"];
  status: string;
  /** The original message a resend repeats; null for an original. */
  resend_of: number | null;
  resend_no: number;
  created_at: string;
  sent_at: string | null;
  delivered_at: string | null;
  read_at: string | null;
  failed_at: string | null;
  cancelled_at: string | null;
  last_error_code: string | null;
  last_error_message: string | null;
  voucher: {
    code: string;
    status: VoucherView["status"];
    amount_minor: number;
    currency: string;
    expires_at: string | null;
    redeemed_at: string | null;
    redeemed_station_code: string | null;
  } | null;
}

/** `find_customer`: a number's opt-out, latest consent and messages, newest first. */
export interface Customer {
  msisdn: string;
  opted_out: { at: string; source: string } | null;
  consent: { consented_at: string; source: string; text_shown: string } | null;
  messages: CustomerMessage[];
  /** Pass as `after` for the next page; null on the last. */
  next_cursor: number | null;
}

/** `resend_message`. */
export interface Resend {
  message_id: number;
  resend_of: number;
  resend_no: number;
  campaign_id: string;
  to: string;
  status: "queued" | "held";
  voucher_code: string;
  replayed: boolean;
}

/** One `station_settlement` row: a station's day in one currency. */
export interface SettlementRow {
  day: string;
  station_id: string;
  station_code: string;
  station_name: string;
  currency: string;
  redemptions: number;
  amount_minor: number;
  reversals: number;
  reversed_amount_minor: number;
  net_amount_minor: number;
  quantity: number | null;
  sale_amount_minor: number | null;
  /** Pass the last row's as `after` for the next page. */
  cursor: string;
}

/** One `campaign_funnel` row: what happened that day. */
export interface FunnelRow {
  day: string;
  targets: number;
  sent: number;
  delivered: number;
  read: number;
  failed: number;
  redeemed: number;
  reversed: number;
  resends: number;
}

/** One `list_redemptions` row. */
export interface RedemptionRow {
  id: number;
  redeemed_at: string;
  station_id: string;
  station_code: string;
  voucher_code: string;
  campaign_id: string;
  campaign_name: string;
  amount_minor: number;
  currency: string;
  receipt_ref: string | null;
  pump: string | null;
  quantity: number | null;
  sale_amount_minor: number | null;
  redeemed_by: string | null;
  client_redeemed_at: string | null;
  reversed_at: string | null;
  reversed_by: string | null;
  reversal_reason: string | null;
}

/** One `list_audit_log` row. */
export interface AuditRow {
  id: number;
  at: string;
  actor_id: string | null;
  actor_role: "admin" | "station_operator" | "service" | "user";
  event: string;
  table_name: string;
  operation: "insert" | "update" | "delete" | "action";
  row_key: Record<string, unknown>;
  changes: Record<string, unknown>;
  rpc: string | null;
  transaction_id: number;
}

/** Back-office settings (`get_settings`, `update_settings`). */
export interface Settings {
  undo_window_seconds: number;
  resend_cooldown_seconds: number;
  max_resends_per_message: number;
  updated_at: string;
}

/** A consent to record (`record_consent(s)`). */
export interface NewConsent {
  msisdn: string;
  source: string;
  text_shown: string;
  /** When the customer gave it; pass it so that a retry is idempotent. */
  consented_at?: string;
}

/** Paging of the list and report RPCs: `after` is the last row's key, `pageSize` 1–500 (default 200). */
export interface Page<After = number> {
  after?: After;
  pageSize?: number;
}

function pageArgs<A>(p: Page<A>): Record<string, unknown> {
  return {
    ...(p.after !== undefined ? { after: p.after } : {}),
    ...(p.pageSize !== undefined ? { page_size: p.pageSize } : {}),
  };
}

/** Drops undefined values (an absent argument takes the RPC's default). */
function defined(args: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(args).filter(([, v]) => v !== undefined));
}

// ---- Calls ----------------------------------------------------------------------------------

/**
 * The API's RPCs as typed methods. Station: {@link previewVoucher},
 * {@link redeemVoucher}, {@link redeemVouchers}, {@link undoRedemption}. Admin:
 * issue, list, void, campaign lifecycle and stats; staff and station
 * lifecycle; support lookup and resend; consent; settlement and the other
 * reports and lists (each also as CSV with {@link exportCsv}); the audit log.
 */
export class VoucherApi {
  constructor(readonly supabase: SupabaseLike) {}

  /** Calls `api.<fn>(args)`; resolves with its JSON or throws ApiError / NetworkError. */
  async call<T>(fn: string, args: Record<string, unknown>, opts: CallOptions = {}): Promise<T> {
    const signals = [new AbortController().signal];
    if (opts.signal) signals.push(opts.signal);
    if (opts.timeoutMs !== undefined) signals.push(AbortSignal.timeout(opts.timeoutMs));
    // A signal of our own per call: the key under which fetchKeepingRetryAfter files Retry-After.
    const signal = AbortSignal.any(signals);
    const builder = this.supabase.schema("api").rpc(fn, args) as RpcBuilder;
    let answer: Awaited<RpcBuilder>;
    try {
      answer = await builder.abortSignal(signal);
    } catch (cause) {
      throw new NetworkError(`Calling ${fn} failed: ${describe(cause)}`, { cause });
    }
    const { data, error, status } = answer;
    if (error) {
      if (status === 0) {
        throw new NetworkError(`Calling ${fn} got no answer: ${describe(error.message)}`, {
          cause: error,
        });
      }
      throw new ApiError(status, error, parseRetryAfter(retryAfterBySignal.get(signal)));
    }
    return data as T;
  }

  /**
   * Calls a set-returning RPC with `Accept: text/csv` and resolves with the CSV
   * text (header row, one line per row, as PostgREST renders it).
   *
   * @example
   * ```ts
   * const csv = await api.exportCsv("station_settlement", { from_date: "2026-12-01", to_date: "2026-12-31" });
   * ```
   */
  async exportCsv(
    fn: string,
    args: Record<string, unknown>,
    opts: CallOptions = {},
  ): Promise<string> {
    const signals = [new AbortController().signal];
    if (opts.signal) signals.push(opts.signal);
    if (opts.timeoutMs !== undefined) signals.push(AbortSignal.timeout(opts.timeoutMs));
    const signal = AbortSignal.any(signals);
    const builder = this.supabase.schema("api").rpc(fn, args) as RpcBuilder;
    let answer: Awaited<RpcBuilder>;
    try {
      answer = await builder.csv().abortSignal(signal);
    } catch (cause) {
      throw new NetworkError(`Exporting ${fn} failed: ${describe(cause)}`, { cause });
    }
    const { data, error, status } = answer;
    if (error) {
      if (status === 0) throw new NetworkError(`Exporting ${fn} got no answer`, { cause: error });
      throw new ApiError(status, error, parseRetryAfter(retryAfterBySignal.get(signal)));
    }
    if (typeof data !== "string") {
      throw new UnexpectedResponseError(`${fn} answered ${typeof data} for a CSV export`);
    }
    return data;
  }

  /** `preview_voucher(code)`: look a voucher up before redeeming. */
  previewVoucher(code: string, opts?: CallOptions): Promise<VoucherView> {
    return this.call("preview_voucher", { code }, opts);
  }

  /** `redeem_voucher`: redeem one voucher now, exactly once per idempotency key. */
  redeemVoucher(
    args: {
      code: string;
      idempotencyKey: string;
      stationId?: string;
      clientRedeemedAt?: string;
    } & RedemptionDetails,
    opts?: CallOptions,
  ): Promise<Redemption> {
    return this.call("redeem_voucher", {
      code: args.code,
      idempotency_key: args.idempotencyKey,
      ...(args.stationId ? { station_id: args.stationId } : {}),
      ...(args.clientRedeemedAt ? { client_redeemed_at: args.clientRedeemedAt } : {}),
      ...detailArgs(args),
    }, opts);
  }

  /**
   * `undo_redemption`: reverses a redemption, by its id or its voucher's code.
   * The redeeming station's operator may, within the undo window (default 15
   * minutes; `undo_window_expired` after); an admin at any time. Idempotent per key.
   *
   * @example
   * ```ts
   * await api.undoRedemption({ code, reason: "wrong voucher scanned", idempotencyKey: newIdempotencyKey() });
   * ```
   */
  undoRedemption(
    args: { redemptionId?: number; code?: string; reason: string; idempotencyKey: string },
    opts?: CallOptions,
  ): Promise<UndoneRedemption> {
    return this.call(
      "undo_redemption",
      defined({
        redemption_id: args.redemptionId,
        code: args.code,
        reason: args.reason,
        idempotency_key: args.idempotencyKey,
      }),
      opts,
    );
  }

  /**
   * `redeem_vouchers`: the offline flush, 1–500 items, each independent; the
   * answer has one result per item in input order (checked here).
   */
  async redeemVouchers(
    items: FlushItem[],
    args: { stationId?: string } = {},
    opts?: CallOptions,
  ): Promise<FlushResult> {
    const result = await this.call<FlushResult>("redeem_vouchers", {
      items,
      ...(args.stationId ? { station_id: args.stationId } : {}),
    }, opts);
    if (
      result === null || typeof result !== "object" || !Array.isArray(result.results) ||
      result.results.length !== items.length ||
      result.results.some((r, i) => r === null || typeof r !== "object" || r.index !== i)
    ) {
      throw new UnexpectedResponseError(
        `redeem_vouchers answered ${
          JSON.stringify(result).slice(0, 200)
        } for ${items.length} items`,
      );
    }
    return result;
  }

  /** `issue_vouchers` (admin): 1–5,000 vouchers for a campaign. */
  issueVouchers(
    args: { campaignId: string; count: number; idempotencyKey: string; expiresAt?: string },
    opts?: CallOptions,
  ): Promise<IssueResult> {
    return this.call("issue_vouchers", {
      campaign_id: args.campaignId,
      count: args.count,
      idempotency_key: args.idempotencyKey,
      ...(args.expiresAt ? { expires_at: args.expiresAt } : {}),
    }, opts);
  }

  /** `list_vouchers` (admin): one keyset page. */
  listVouchers(
    args: {
      campaignId: string;
      status?: VoucherRow["status"];
      batchId?: string;
      after?: number;
      /** 1–500 (the RPC's `page_size`). */
      pageSize?: number;
    },
    opts?: CallOptions,
  ): Promise<VoucherPage> {
    return this.call("list_vouchers", {
      campaign_id: args.campaignId,
      ...(args.status ? { status: args.status } : {}),
      ...(args.batchId ? { batch_id: args.batchId } : {}),
      ...(args.after !== undefined ? { after: args.after } : {}),
      ...(args.pageSize !== undefined ? { page_size: args.pageSize } : {}),
    }, opts);
  }

  /** `void_voucher` (admin). */
  voidVoucher(
    args: { code: string; reason: string; idempotencyKey: string },
    opts?: CallOptions,
  ): Promise<VoucherView & { replayed: boolean }> {
    return this.call("void_voucher", {
      code: args.code,
      reason: args.reason,
      idempotency_key: args.idempotencyKey,
    }, opts);
  }

  /** `deactivate_staff` (admin): refused from their very next request. */
  deactivateStaff(userId: string, opts?: CallOptions): Promise<StaffMember> {
    return this.call("deactivate_staff", { user_id: userId }, opts);
  }

  /** `reactivate_staff` (admin). */
  reactivateStaff(userId: string, opts?: CallOptions): Promise<StaffMember> {
    return this.call("reactivate_staff", { user_id: userId }, opts);
  }

  /** `deactivate_station` (admin): its operators cannot redeem there from the next request. */
  deactivateStation(stationId: string, opts?: CallOptions): Promise<Station> {
    return this.call("deactivate_station", { station_id: stationId }, opts);
  }

  /** `reactivate_station` (admin). */
  reactivateStation(stationId: string, opts?: CallOptions): Promise<Station> {
    return this.call("reactivate_station", { station_id: stationId }, opts);
  }

  /** `list_stations` (admin): by code; `after` is the last row's code. */
  listStations(
    args: { active?: boolean; region?: string } & Page<string> = {},
    opts?: CallOptions,
  ): Promise<StationRow[]> {
    return this.call(
      "list_stations",
      defined({ active: args.active, region: args.region, ...pageArgs(args) }),
      opts,
    );
  }

  /** `list_staff` (admin): by user id; `after` is the last row's user_id. */
  listStaff(
    args: { role?: StaffMember["role"]; stationId?: string; active?: boolean } & Page<string> = {},
    opts?: CallOptions,
  ): Promise<StaffRow[]> {
    return this.call(
      "list_staff",
      defined({
        role: args.role,
        station_id: args.stationId,
        active: args.active,
        ...pageArgs(args),
      }),
      opts,
    );
  }

  /** `find_customer` (admin): a number's opt-out, consent, messages and vouchers. */
  findCustomer(msisdn: string, page: Page = {}, opts?: CallOptions): Promise<Customer> {
    return this.call("find_customer", { msisdn, ...pageArgs(page) }, opts);
  }

  /** `resend_message` (admin): the same voucher in a new message. */
  resendMessage(
    args: { messageId: number; idempotencyKey: string },
    opts?: CallOptions,
  ): Promise<Resend> {
    return this.call("resend_message", {
      message_id: args.messageId,
      idempotency_key: args.idempotencyKey,
    }, opts);
  }

  /** `record_consent` (admin): one opt-in; a newer one than the opt-out opts the number back in. */
  recordConsent(
    consent: NewConsent,
    opts?: CallOptions,
  ): Promise<{ msisdn: string; recorded: boolean; resubscribed: boolean; opted_out: boolean }> {
    return this.call("record_consent", { ...consent }, opts);
  }

  /** `record_consents` (admin): up to 10,000 opt-ins in one call. */
  recordConsents(
    consents: NewConsent[],
    opts?: CallOptions,
  ): Promise<{
    recorded: number;
    duplicates: number;
    resubscribed: number;
    invalid: { index: number; value: unknown; reason: string }[];
  }> {
    return this.call("record_consents", { consents }, opts);
  }

  /** `station_settlement` (admin): per station, day and currency; `after` is the last row's `cursor`. */
  stationSettlement(
    args: {
      fromDate: string;
      toDate: string;
      stationId?: string;
      currency?: string;
      timeZone?: string;
    } & Page<string>,
    opts?: CallOptions,
  ): Promise<SettlementRow[]> {
    return this.call(
      "station_settlement",
      defined({
        from_date: args.fromDate,
        to_date: args.toDate,
        station_id: args.stationId,
        currency: args.currency,
        time_zone: args.timeZone,
        ...pageArgs(args),
      }),
      opts,
    );
  }

  /** `campaign_funnel` (admin): by day; `after` is the last row's day. */
  campaignFunnel(
    args: { campaignId: string; timeZone?: string } & Page<string>,
    opts?: CallOptions,
  ): Promise<FunnelRow[]> {
    return this.call(
      "campaign_funnel",
      defined({
        campaign_id: args.campaignId,
        time_zone: args.timeZone,
        ...pageArgs(args),
      }),
      opts,
    );
  }

  /** `list_campaigns` (admin): newest first; `after` is the last row's id. */
  listCampaigns(
    args: { status?: Campaign["status"] } & Page<string> = {},
    opts?: CallOptions,
  ): Promise<Campaign[]> {
    return this.call("list_campaigns", defined({ status: args.status, ...pageArgs(args) }), opts);
  }

  /** `list_redemptions` (admin): in time order over [since, until); `after` is the last row's id. */
  listRedemptions(
    args:
      & { stationId?: string; since?: string; until?: string; status?: "active" | "reversed" }
      & Page = {},
    opts?: CallOptions,
  ): Promise<RedemptionRow[]> {
    return this.call(
      "list_redemptions",
      defined({
        station_id: args.stationId,
        since: args.since,
        until: args.until,
        status: args.status,
        ...pageArgs(args),
      }),
      opts,
    );
  }

  /** `list_messages` (admin): in id order, by campaign, status or number. */
  listMessages(
    args: { campaignId?: string; status?: string; msisdn?: string } & Page = {},
    opts?: CallOptions,
  ): Promise<Record<string, unknown>[]> {
    return this.call(
      "list_messages",
      defined({
        campaign_id: args.campaignId,
        status: args.status,
        msisdn: args.msisdn,
        ...pageArgs(args),
      }),
      opts,
    );
  }

  /** `list_audit_log` (admin): newest first; `rowKey` matches by containment. */
  listAuditLog(
    args: {
      tableName?: string;
      rowKey?: Record<string, unknown>;
      actorId?: string;
      since?: string;
      until?: string;
    } & Page = {},
    opts?: CallOptions,
  ): Promise<AuditRow[]> {
    return this.call(
      "list_audit_log",
      defined({
        table_name: args.tableName,
        row_key: args.rowKey,
        actor_id: args.actorId,
        since: args.since,
        until: args.until,
        ...pageArgs(args),
      }),
      opts,
    );
  }

  /** `get_settings` (admin). */
  getSettings(opts?: CallOptions): Promise<Settings> {
    return this.call("get_settings", {}, opts);
  }

  /** `update_settings` (admin): omitted fields keep their value. */
  updateSettings(
    args: {
      undoWindowSeconds?: number;
      resendCooldownSeconds?: number;
      maxResendsPerMessage?: number;
    },
    opts?: CallOptions,
  ): Promise<Settings> {
    return this.call(
      "update_settings",
      defined({
        undo_window_seconds: args.undoWindowSeconds,
        resend_cooldown_seconds: args.resendCooldownSeconds,
        max_resends_per_message: args.maxResendsPerMessage,
      }),
      opts,
    );
  }

  /** `create_campaign` (admin). */
  createCampaign(campaign: NewCampaign, opts?: CallOptions): Promise<Campaign> {
    return this.call("create_campaign", { ...campaign }, opts);
  }

  /** `schedule_campaign` (admin): draft → scheduled. */
  scheduleCampaign(campaignId: string, startAt?: string, opts?: CallOptions): Promise<Campaign> {
    return this.call("schedule_campaign", {
      campaign_id: campaignId,
      ...(startAt ? { start_at: startAt } : {}),
    }, opts);
  }

  /** `pause_campaign` (admin). */
  pauseCampaign(campaignId: string, opts?: CallOptions): Promise<Campaign> {
    return this.call("pause_campaign", { campaign_id: campaignId }, opts);
  }

  /** `resume_campaign` (admin). */
  resumeCampaign(campaignId: string, opts?: CallOptions): Promise<Campaign> {
    return this.call("resume_campaign", { campaign_id: campaignId }, opts);
  }

  /** `cancel_campaign` (admin). */
  cancelCampaign(campaignId: string, opts?: CallOptions): Promise<Campaign> {
    return this.call("cancel_campaign", { campaign_id: campaignId }, opts);
  }

  /** `campaign_stats` (admin). */
  campaignStats(campaignId: string, opts?: CallOptions): Promise<CampaignStats> {
    return this.call("campaign_stats", { campaign_id: campaignId }, opts);
  }
}

function describe(value: unknown): string {
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  return String(value);
}
