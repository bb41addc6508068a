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
  /** True when this answer is the stored one of an earlier request with the same key. */
  replayed: boolean;
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
  starts_at?: string;
  expires_at?: string;
  station_ids?: string[];
  channel_id?: string;
  template_name?: string;
  template_language?: string;
  template_params?: unknown[];
}

// ---- Calls ----------------------------------------------------------------------------------

/**
 * The API's RPCs as typed methods. Station: {@link previewVoucher},
 * {@link redeemVoucher}, {@link redeemVouchers}. Admin: issue, list, void,
 * campaign lifecycle and stats.
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

  /** `preview_voucher(code)`: look a voucher up before redeeming. */
  previewVoucher(code: string, opts?: CallOptions): Promise<VoucherView> {
    return this.call("preview_voucher", { code }, opts);
  }

  /** `redeem_voucher`: redeem one voucher now, exactly once per idempotency key. */
  redeemVoucher(
    args: { code: string; idempotencyKey: string; stationId?: string; clientRedeemedAt?: string },
    opts?: CallOptions,
  ): Promise<Redemption> {
    return this.call("redeem_voucher", {
      code: args.code,
      idempotency_key: args.idempotencyKey,
      ...(args.stationId ? { station_id: args.stationId } : {}),
      ...(args.clientRedeemedAt ? { client_redeemed_at: args.clientRedeemedAt } : {}),
    }, opts);
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
      limit?: number;
    },
    opts?: CallOptions,
  ): Promise<VoucherPage> {
    return this.call("list_vouchers", {
      campaign_id: args.campaignId,
      ...(args.status ? { status: args.status } : {}),
      ...(args.batchId ? { batch_id: args.batchId } : {}),
      ...(args.after !== undefined ? { after: args.after } : {}),
      ...(args.limit !== undefined ? { limit: args.limit } : {}),
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
