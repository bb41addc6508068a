/**
 * `deno task perf:run [--profile smoke|quick|full] [--scenario name[,name…]]`
 *
 * Runs the load scenarios one after another against the local stack (or the
 * `PERF_*` target, see target_env.ts) with the open-model driver, samples
 * database telemetry meanwhile, writes the evidence folder `.perf/<timestamp>/`
 * (summary.json, samples.ndjson, telemetry, report.md, charts) and prints the
 * SLO table. Exit code as k6: 0 when every threshold passed, 99 when one failed,
 * 107 when a scenario could not run (setup failed), 2 for bad arguments.
 *
 * @module
 */
import { parseArgs } from "node:util";
import postgres from "postgres";
import { FAKE_WABA_URL } from "../../local/env.ts";
import { SCENARIOS } from "../scenarios/index.ts";
import { type Profile, PROFILES, type SeedSummary, type Target } from "../scenarios/_types.ts";
import { loadSeedSummary } from "../seed/summary_schema.ts";
import { sloTable } from "../report/markdown.ts";
import { evidenceDir, writeEvidence } from "./evidence.ts";
import { runScenario, type ScenarioResult, ScenarioSetupError } from "./runner.ts";
import {
  exitCodeFor,
  type RunSummary,
  type ScenarioSummary,
  summarizeScenario,
  summarizeTelemetry,
} from "./summary.ts";
import { type TelemetryReport, TelemetrySampler } from "./telemetry.ts";
import { redactUrl, type TargetEnv, targetEnv } from "./target_env.ts";

/** Options of a perf run. */
export interface PerfRunOptions {
  profile: Profile;
  /** Scenario names (default: all, in SCENARIOS order). */
  scenarios?: string[];
  env?: TargetEnv;
  summary?: SeedSummary;
  /** Evidence folder (default `.perf/<timestamp>`). */
  outDir?: string;
  telemetry?: boolean;
  skipSetup?: boolean;
  /** Pool size of the gateway under test, for the report (default GATEWAY_POOL_SIZE or 8 locally). */
  poolSize?: number | null;
  /** Replaces each scenario's options (pool sizing). */
  optionsOverride?: (
    name: string,
    profile: Profile,
  ) => ReturnType<(typeof SCENARIOS)[string]["options"]> | undefined;
  log?: (line: string) => void;
  notes?: string[];
}

/** What a run returns. */
export interface PerfRunResult {
  dir: string;
  summary: RunSummary;
  results: ScenarioResult[];
  exitCode: number;
}

/** Raised for a target that does not answer the preflight request. */
export class TargetUnavailableError extends Error {
  override name = "TargetUnavailableError";
}

/** One authenticated preview of a seed code: proves URL, keys and tokens work before load starts. */
export async function preflight(
  target: Target,
  summary: SeedSummary,
): Promise<void> {
  const code = summary.codes.preview[0];
  const url = `${target.baseUrl}/rest/v1/rpc/preview_voucher`;
  let res: Response;
  try {
    res = await fetch(url, {
      method: "POST",
      headers: {
        apikey: target.anonKey,
        Authorization: `Bearer ${summary.operators[0].jwt}`,
        "Content-Type": "application/json",
        "Content-Profile": "api",
      },
      body: JSON.stringify({ code }),
      signal: AbortSignal.timeout(10_000),
    });
  } catch (err) {
    throw new TargetUnavailableError(
      `Cannot reach ${url} (${
        err instanceof Error ? err.message : err
      }); is the stack up (\`deno task start\`)?`,
    );
  }
  const body = await res.text();
  if (res.status !== 200) {
    throw new TargetUnavailableError(
      `Preflight preview of "${code}" answered ${res.status}: ${
        body.slice(0, 300)
      } — re-seed (\`deno task perf:seed\`) or check PERF_* variables`,
    );
  }
}

/** Facts about the machine the run happened on. */
export async function machineFacts(
  dbUrl: string | null,
): Promise<Record<string, string | number>> {
  const facts: Record<string, string | number> = {
    cpus: navigator.hardwareConcurrency,
    os: `${Deno.build.os} ${Deno.osRelease()}`,
    deno: Deno.version.deno,
  };
  try {
    const info = await Deno.readTextFile("/proc/cpuinfo");
    const model = info.match(/^model name\s*:\s*(.+)$/m)?.[1];
    if (model) facts.cpu = model.trim();
  } catch { /* not Linux */ }
  try {
    const mem = await Deno.readTextFile("/proc/meminfo");
    const kb = Number(mem.match(/^MemTotal:\s+(\d+)/m)?.[1]);
    if (kb) facts.memory = `${(kb / 1024 / 1024).toFixed(1)} GiB`;
  } catch { /* not Linux */ }
  if (dbUrl) {
    const sql = postgres(dbUrl, {
      max: 1,
      onnotice: () => {},
      connect_timeout: 5,
    });
    try {
      const [row] =
        await sql`select current_setting('server_version') as v, current_setting('max_connections') as mc`;
      facts.postgres = row.v;
      facts.max_connections = Number(row.mc);
    } catch {
      /* unreachable: telemetry will say so */
    } finally {
      await sql.end({ timeout: 1 });
    }
  }
  return facts;
}

/** True for a target on this machine (where the local fake WhatsApp API runs). */
function isLoopback(url: string): boolean {
  return /^https?:\/\/(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?(\/|$)/.test(
    url,
  );
}

async function fakeWabaStats(): Promise<Record<string, unknown> | null> {
  try {
    const res = await fetch(`${FAKE_WABA_URL}/_fake/stats`, {
      signal: AbortSignal.timeout(2000),
    });
    return res.ok ? await res.json() : null;
  } catch {
    return null;
  }
}

/**
 * The WhatsApp side of the bulk send's error budget: answers of the local fake
 * WhatsApp API during the scenario (its counters before/after), as one note.
 */
export function wabaOutcomeNote(
  before: Record<string, unknown>,
  after: Record<string, unknown>,
): string | null {
  const a = (before.outcomes ?? {}) as Record<string, number>;
  const b = (after.outcomes ?? {}) as Record<string, number>;
  const delta: Record<string, number> = {};
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    const d = (b[k] ?? 0) - (a[k] ?? 0);
    if (d > 0) delta[k] = d;
  }
  const total = Object.values(delta).reduce((x, y) => x + y, 0);
  if (total === 0) return null;
  const throttledOr5xx = Object.entries(delta)
    .filter(([k]) => k === "waba_130429" || /^http_5\d\d$/.test(k) || k === "http_429")
    .reduce((x, [, n]) => x + n, 0);
  return `campaign_bulk_send: the (fake) WhatsApp API answered ${total} sends during the run: ` +
    `${Object.entries(delta).map(([k, n]) => `${k} ${n}`).join(", ")} → ` +
    `${((throttledOr5xx / total) * 100).toFixed(2)}% 429/5xx (budget ≤ 5%). ` +
    "Counters are process-wide: other traffic to the fake in the same window is included.";
}

/** Runs scenarios, writes evidence, returns the summary and exit code. */
export async function runPerf(opts: PerfRunOptions): Promise<PerfRunResult> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const env = opts.env ?? targetEnv();
  const summary = opts.summary ?? await loadSeedSummary(env.summaryPath);
  const target: Target = { baseUrl: env.baseUrl, anonKey: env.anonKey };
  const names = opts.scenarios?.length ? opts.scenarios : Object.keys(SCENARIOS);
  for (const name of names) {
    if (!SCENARIOS[name]) {
      throw new RangeError(
        `Unknown scenario "${name}"; use one of ${Object.keys(SCENARIOS).join(", ")}`,
      );
    }
  }
  await preflight(target, summary);
  const startedAt = new Date();
  const dir = opts.outDir ?? evidenceDir(startedAt);
  const notes = [...(opts.notes ?? [])];
  const poolSize = opts.poolSize !== undefined
    ? opts.poolSize
    : env.isLocal
    ? Number(Deno.env.get("GATEWAY_POOL_SIZE") ?? 8)
    : null;

  let sampler: TelemetrySampler | null = null;
  if (opts.telemetry !== false) {
    try {
      sampler = await TelemetrySampler.start(env.dbUrl);
    } catch (err) {
      notes.push(
        `No database telemetry: cannot connect to ${redactUrl(env.dbUrl)} (${
          err instanceof Error ? err.message : err
        }).`,
      );
    }
  }

  const results: ScenarioResult[] = [];
  const summaries: ScenarioSummary[] = [];
  const extras: Record<string, Record<string, unknown>> = {};
  let setupFailed = false;
  for (const name of names) {
    const scenario = SCENARIOS[name];
    log(`▶ ${name} (${opts.profile})`);
    const wabaBefore = name === "campaign_bulk_send" && isLoopback(env.baseUrl)
      ? await fakeWabaStats()
      : null;
    try {
      const result = await runScenario(scenario, {
        profile: opts.profile,
        summary,
        target,
        skipSetup: opts.skipSetup,
        options: opts.optionsOverride?.(name, opts.profile),
        log: (line) => log(`  ${line}`),
      });
      results.push(result);
      const s = summarizeScenario(scenario, result);
      summaries.push(s);
      const failed = s.verdicts.filter((v) => !v.ok);
      log(
        `  ${s.overall.requests} requests, p95 ${
          s.endpoints[scenario.slo.endpoint]?.latency.p95.toFixed(1) ?? "–"
        } ms, ` +
          `${
            failed.length
              ? `${failed.length} threshold(s) failed: ${
                failed.map((v) => `${v.metric} ${v.expression} (observed ${v.observed})`).join("; ")
              }`
              : "thresholds passed"
          }`,
      );
    } catch (err) {
      if (!(err instanceof ScenarioSetupError)) throw err;
      setupFailed = true;
      notes.push(`Scenario ${name} did not run: ${err.message}`);
      log(`  ✗ ${err.message}`);
    }
    if (wabaBefore) {
      const wabaAfter = (await fakeWabaStats()) ?? {};
      extras[name] = {
        "fake_waba_stats_before.json": wabaBefore,
        "fake_waba_stats_after.json": wabaAfter,
      };
      const line = wabaOutcomeNote(wabaBefore, wabaAfter);
      if (line) notes.push(line);
    }
  }

  let telemetry: TelemetryReport | null = null;
  if (sampler) telemetry = await sampler.stop();
  const exitCode = setupFailed ? 107 : exitCodeFor(summaries);
  const run: RunSummary = {
    version: 1,
    runId: dir.split("/").pop()!,
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    profile: opts.profile,
    env: { name: env.name, baseUrl: env.baseUrl },
    machine: await machineFacts(telemetry ? env.dbUrl : null),
    poolSize,
    seed: { seed: summary.seed, counts: summary.counts },
    scenarios: summaries,
    telemetry: telemetry ? summarizeTelemetry(telemetry) : null,
    exitCode,
    notes,
  };
  await writeEvidence(dir, run, results, telemetry, extras);
  return { dir, summary: run, results, exitCode };
}

const USAGE =
  `usage: deno task perf:run [--profile smoke|quick|full] [--scenario NAME[,NAME…]] [options]

  --profile P        smoke (seconds), quick (about a minute each, default) or full (the SLO table's durations)
  --scenario NAMES   ${Object.keys(SCENARIOS).join(", ")} (default: all)
  --out DIR          evidence folder (default .perf/<timestamp>)
  --no-telemetry     do not sample pg_stat_activity / pg_stat_statements / CPU
  --skip-setup       use the seed summary's code pool instead of issuing fresh vouchers
  --pool-size N      pool size of the gateway under test, for the report

Target: the local stack, or PERF_BASE_URL / PERF_ANON_KEY / PERF_DB_URL / PERF_SUMMARY (see perf/README.md).
Exit code: 0 all thresholds passed, 99 a threshold failed, 107 a scenario's setup failed.`;

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      profile: { type: "string", default: "quick" },
      scenario: { type: "string", multiple: true },
      out: { type: "string" },
      "no-telemetry": { type: "boolean" },
      "skip-setup": { type: "boolean" },
      "pool-size": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  if (!PROFILES.includes(values.profile as Profile)) {
    console.error(`Unknown profile "${values.profile}"\n${USAGE}`);
    Deno.exit(2);
  }
  const scenarios = (values.scenario ?? []).flatMap((s) => s.split(",")).map((
    s,
  ) => s.trim()).filter(Boolean);
  try {
    const { dir, summary, exitCode } = await runPerf({
      profile: values.profile as Profile,
      scenarios,
      outDir: values.out,
      telemetry: !values["no-telemetry"],
      skipSetup: values["skip-setup"],
      poolSize: values["pool-size"] ? Number(values["pool-size"]) : undefined,
    });
    console.log(
      `\n${sloTable(summary)}\n\nEvidence: ${dir}\nReport:   ${dir}/report.md`,
    );
    Deno.exit(exitCode);
  } catch (err) {
    console.error(err instanceof Error ? `${err.name}: ${err.message}` : err);
    Deno.exit(err instanceof RangeError ? 2 : 1);
  }
}
