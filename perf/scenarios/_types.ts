/**
 * Types shared by the load scenarios, the local driver and the k6 entry files.
 *
 * Everything under `perf/scenarios/` is a plain ES module that both Deno and k6
 * (≥ v0.57, which strips TypeScript types with esbuild) can import: no Deno or
 * k6 APIs, no npm imports, only `import type` between files and pure functions.
 *
 * @module
 */

/** Which variant of a scenario to run: a few seconds, a compressed run, or the SLO table's. */
export type Profile = "smoke" | "quick" | "full";

/** All profiles, in increasing length. */
export const PROFILES: readonly Profile[] = ["smoke", "quick", "full"];

/** k6's `constant-arrival-rate` executor (the subset this project uses). */
export interface ConstantArrivalRate {
  executor: "constant-arrival-rate";
  /** Iterations started per `timeUnit`. */
  rate: number;
  /** Period of `rate`, e.g. `"1s"`, `"1m"` (default `"1s"`). */
  timeUnit?: string;
  duration: string;
  preAllocatedVUs: number;
  /** Most iterations in flight at once; further starts are dropped (`dropped_iterations`). */
  maxVUs?: number;
  /** Name of the exported function the k6 entry file runs (the flow name). */
  exec?: string;
  startTime?: string;
  gracefulStop?: string;
  tags?: Record<string, string>;
}

/** One stage of a `ramping-arrival-rate` executor: ramp linearly to `target` over `duration`. */
export interface Stage {
  target: number;
  duration: string;
}

/** k6's `ramping-arrival-rate` executor (the subset this project uses). */
export interface RampingArrivalRate {
  executor: "ramping-arrival-rate";
  startRate?: number;
  timeUnit?: string;
  stages: Stage[];
  preAllocatedVUs: number;
  maxVUs?: number;
  exec?: string;
  startTime?: string;
  gracefulStop?: string;
  tags?: Record<string, string>;
}

/** An open-model executor: iterations start on schedule whether or not earlier ones finished. */
export type Executor = ConstantArrivalRate | RampingArrivalRate;

/** A threshold as k6 accepts it: an expression, or an object with `abortOnFail`. */
export type Threshold = string | {
  threshold: string;
  abortOnFail?: boolean;
  delayAbortEval?: string;
};

/** k6 `options` (the subset this project uses; assignable to `import("k6/options").Options`). */
export interface K6Options {
  scenarios: Record<string, Executor>;
  /** Metric (optionally with a `{tag:value}` filter) → threshold expressions. */
  thresholds: Record<string, Threshold[]>;
  setupTimeout?: string;
  teardownTimeout?: string;
  summaryTrendStats?: string[];
  tags?: Record<string, string>;
}

/** An HTTP request a flow wants made, described as data (k6 and `fetch` both execute it). */
export interface RequestSpec {
  method: "GET" | "POST";
  url: string;
  headers: Record<string, string>;
  /** JSON text, or absent for GET. */
  body?: string;
  /** `endpoint` names the RPC or function; every sample is tagged with these. */
  tags: { endpoint: string; [tag: string]: string };
  /** Statuses that are not failures for `http_req_failed` (k6's `responseCallback`). */
  expectedStatuses: number[];
  /** Request timeout in milliseconds (default 60 s, as k6). */
  timeoutMs?: number;
}

/** What a flow sees of a response: status, body text and (lower-cased) headers. */
export interface ResponseLike {
  /** HTTP status, or 0 when no response arrived (network error, timeout). */
  status: number;
  body: string | null;
  headers?: Record<string, string>;
  /** Set when no response arrived: `"timeout"` or a network error description. */
  error?: string;
}

/** How a flow judges one response. */
export interface Outcome {
  /** Counts towards `http_req_failed` (the scenario's error budget). */
  failed: boolean;
  /** PostgREST error code (`voucher_already_redeemed`, `PGRST003`…), `http_<status>`, or null when fine. */
  code: string | null;
  /** Extra metric samples (Counter/Rate/Trend values keyed by metric name). */
  metrics?: Record<string, number>;
}

/** Where the system under test is. */
export interface Target {
  /** Supabase project URL (`http://127.0.0.1:54321` locally, `https://<ref>.supabase.co` on staging). */
  baseUrl: string;
  /** The project's anon key, sent as `apikey`. */
  anonKey: string;
}

/** A staff member of the seed with an access token. */
export interface SeedUser {
  user_id: string;
  jwt: string;
}

/** A station operator of the seed: bound to one station. */
export interface SeedOperator extends SeedUser {
  station_id: string;
  station_code: string;
}

/**
 * `perf/fixtures/generated/perf_seed_summary.json`, written by `perf/seed/seed.ts`:
 * everything a scenario needs to know about the dataset.
 */
export interface SeedSummary {
  version: 1;
  generated_at: string;
  seed: number;
  /** Environment label (`local`, `staging`) and its API URL at seed time. */
  env: { name: string; base_url: string };
  /** When the JWTs below stop working. */
  tokens_expire_at: string;
  counts: {
    users: number;
    admins: number;
    operators: number;
    stations: number;
    campaigns: number;
    vouchers: number;
    targets: number;
    channels: number;
  };
  admin: SeedUser;
  /** A `service_role` JWT (dispatcher trigger, service-only RPCs). */
  service: { jwt: string };
  operators: SeedOperator[];
  campaigns: {
    /** Unrestricted campaign whose vouchers are previewed, redeemed and issued into. */
    redeem: { id: string; name: string };
    /** Campaign carrying the readiness plan's targets, with a WhatsApp channel and template. */
    bulk_send: { id: string; name: string; targets: number };
  };
  /** WhatsApp channel of the bulk send (null when the dispatch schema is absent). */
  channel:
    | { id: string; phone_number_id: string; rate_per_minute: number }
    | null;
  template: { name: string; language: string };
  /** Deterministic E.164 phone numbers of targets: `prefix` + zero-padded index. */
  phones: { prefix: string; digits: number };
  codes: {
    /** Display-form codes of existing vouchers (any status), for preview. */
    preview: string[];
    /** Display-form codes that were `issued` at seed time, one per redeem when setup is skipped. */
    redeem_pool: string[];
  };
}

/** Per-iteration input of a flow's request builder. */
export interface IterationContext<D> {
  summary: SeedSummary;
  target: Target;
  /** What the scenario's setup returned (JSON-serialisable; k6 passes it to each VU). */
  data: D;
  /** 0-based iteration number within this flow (k6: `exec.scenario.iterationInTest`). */
  iteration: number;
}

/**
 * One kind of request a scenario makes. `build` is pure: the same context gives
 * the same request. `classify` may keep per-VU state in `state` (k6 gives each VU
 * its own; the local driver one per flow).
 */
export interface Flow<D> {
  /** Keep every response body of this flow as evidence (e.g. the dispatcher's answers). */
  recordBodies?: boolean;
  build(ctx: IterationContext<D>): RequestSpec;
  classify(
    res: ResponseLike,
    req: RequestSpec,
    state: Record<string, unknown>,
  ): Outcome;
}

/** Input of setup and teardown programs. */
export interface SetupContext {
  summary: SeedSummary;
  target: Target;
  profile: Profile;
}

/**
 * A setup or teardown program: a generator that yields requests and receives
 * their responses, so k6 (synchronous `http.request`) and the Deno driver
 * (`await fetch`) run the same steps. Returns the data handed to every iteration.
 */
export type Program<R> = Generator<RequestSpec, R, ResponseLike>;

/** A load scenario: k6 options per profile, flows, optional setup/teardown. */
export interface Scenario<D = unknown> {
  /** snake_case name; also the k6 scenario name and the `scenario` tag. */
  name: string;
  /** The SLO row this scenario measures. */
  slo: {
    title: string;
    throughput: string;
    latency: string;
    errorBudget: string;
    /** The endpoint tag whose latency and errors the row's targets are about. */
    endpoint: string;
  };
  /** k6 options for a profile (the k6 entry file exports `options = scenario.options(profile)`). */
  options(profile: Profile): K6Options;
  /** Custom metrics the flows' outcomes emit, with their k6 types. */
  metrics?: Record<string, "counter" | "rate" | "trend" | "gauge">;
  /** Flows keyed by the executor's `exec` name. */
  flows: Record<string, Flow<D>>;
  setup?(ctx: SetupContext): Program<D>;
  teardown?(ctx: SetupContext, data: D): Program<Record<string, unknown>>;
}
