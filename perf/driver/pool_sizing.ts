/**
 * `deno task perf:pool [--pools 2,4,8,16] [--rates 50,100,200,400,800] [--step 15s]`
 *
 * Sizes the gateway's connection pool from measurement: for each pool size it
 * starts a separate gateway (`deno run -A local/gateway/main.ts` with
 * `GATEWAY_PORT` and `GATEWAY_POOL_SIZE`) on a spare port, drives the station
 * redeem scenario at increasing constant arrival rates, and records achieved
 * throughput, p50/p95/p99, errors (PGRST003 503/504 when the gateway sheds
 * load), dropped iterations, busy connections and CPU. A step is *sustained*
 * when ≥ 95% of the offered redeems succeeded, under 1% failed and p95 met the
 * SLO; a pool's saturation point is its highest sustained rate. Writes
 * `pool_sizing.md` and `pool_sizing.json` to `.perf/<timestamp>-pool/`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { stationRedeemPeak, THRESHOLDS } from "../scenarios/station_redeem_peak.ts";
import type { K6Options } from "../scenarios/_types.ts";
import { formatDuration, parseDuration } from "../scenarios/_common.ts";
import { loadSeedSummary } from "../seed/summary_schema.ts";
import { LatencyHistogram } from "./_histogram.ts";
import { runScenario } from "./runner.ts";
import { TelemetrySampler } from "./telemetry.ts";
import { evidenceDir } from "./evidence.ts";
import { REPO_ROOT, targetEnv } from "./target_env.ts";

/** One measured step: a pool size at an offered rate. */
export interface PoolStep {
  poolSize: number;
  offeredPerSecond: number;
  durationSeconds: number;
  requests: number;
  ok: number;
  failed: number;
  dropped: number;
  achievedPerSecond: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  errorCodes: Record<string, number>;
  gatewayActiveMax: number;
  hostCpuMean: number | null;
  driverCpuMean: number | null;
  sustained: boolean;
}

/** Whether a step sustained its offered rate within the SLO. */
export function isSustained(
  step: Omit<PoolStep, "sustained">,
  sloP95Ms: number,
): boolean {
  const offered = step.offeredPerSecond * step.durationSeconds;
  return step.ok >= 0.95 * offered &&
    step.failed <= 0.01 * Math.max(step.requests, 1) &&
    step.p95 <= sloP95Ms;
}

/** The highest sustained offered rate of each pool size (0 when none was). */
export function saturationPoints(steps: PoolStep[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const s of steps) {
    out.set(
      s.poolSize,
      Math.max(out.get(s.poolSize) ?? 0, s.sustained ? s.offeredPerSecond : 0),
    );
  }
  return out;
}

/**
 * The smallest pool whose saturation point is within 10% of the best one (more
 * connections than that only add contention), or null when nothing sustained.
 */
export function recommendPool(points: Map<number, number>): number | null {
  const best = Math.max(0, ...points.values());
  if (best === 0) return null;
  const sizes = [...points.keys()].sort((a, b) => a - b);
  return sizes.find((p) => points.get(p)! >= 0.9 * best) ?? null;
}

async function waitHealthy(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${url}/health`, {
        signal: AbortSignal.timeout(1000),
      });
      await res.body?.cancel();
      if (res.ok) return;
    } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(
    `Gateway at ${url} did not become healthy within ${timeoutMs} ms`,
  );
}

/** A gateway subprocess with a given pool size. */
async function startGateway(port: number, poolSize: number, logPath: string) {
  const log = await Deno.open(logPath, {
    write: true,
    create: true,
    append: true,
  });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(REPO_ROOT, "local/gateway/main.ts")],
    cwd: REPO_ROOT,
    env: { GATEWAY_PORT: String(port), GATEWAY_POOL_SIZE: String(poolSize) },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // Copy output to the log without blocking the child.
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) await log.write(chunk);
  };
  const pumps = Promise.allSettled([pump(child.stdout), pump(child.stderr)]);
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitHealthy(url, 30_000);
  } catch (err) {
    child.kill("SIGTERM");
    await child.status;
    throw err;
  }
  return {
    url,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      await child.status;
      await pumps;
      log.close();
    },
  };
}

function stepOptions(rate: number, durationMs: number): K6Options {
  return {
    scenarios: {
      station_redeem_peak: {
        executor: "constant-arrival-rate",
        rate,
        timeUnit: "1s",
        duration: formatDuration(durationMs),
        preAllocatedVUs: Math.min(100, rate),
        // Enough VUs for every request the gateway holds (its queue times out at 2 s).
        maxVUs: Math.min(4000, Math.max(50, rate * 3)),
        exec: "redeem",
        gracefulStop: "10s",
      },
    },
    thresholds: THRESHOLDS,
  };
}

/** Renders the pool-size curve as markdown. */
export function renderPoolReport(steps: PoolStep[], sloP95Ms: number): string {
  const points = saturationPoints(steps);
  const rec = recommendPool(points);
  const out = [
    "# Gateway pool sizing (station redeem)",
    "",
    `Each step drives \`redeem_voucher\` at a constant arrival rate through a gateway started with \`GATEWAY_POOL_SIZE\`; ` +
    `sustained = ≥ 95% of offered redeems succeeded, ≤ 1% failed, p95 ≤ ${sloP95Ms} ms.`,
    "",
    "| Pool | Offered/s | Achieved/s | p50 | p95 | p99 | Failed | Dropped | Busy conns (max) | Host CPU | Driver CPU | Sustained |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  const f = (v: number) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));
  for (const s of steps) {
    const codes = Object.entries(s.errorCodes).map(([k, n]) => `${k} ${n}`)
      .join(", ");
    out.push(
      `| ${s.poolSize} | ${s.offeredPerSecond} | ${f(s.achievedPerSecond)} | ${f(s.p50)} ms | ${
        f(s.p95)
      } ms | ${f(s.p99)} ms | ` +
        `${s.failed}${codes ? ` (${codes})` : ""} | ${s.dropped} | ${s.gatewayActiveMax} | ` +
        `${s.hostCpuMean === null ? "–" : `${(s.hostCpuMean * 100).toFixed(0)}%`} | ` +
        `${s.driverCpuMean === null ? "–" : s.driverCpuMean.toFixed(2)} | ${
          s.sustained ? "✅" : "❌"
        } |`,
    );
  }
  out.push(
    "",
    "Saturation point (highest sustained offered rate) per pool size:",
    "",
  );
  for (const [pool, rate] of [...points].sort((a, b) => a[0] - b[0])) {
    out.push(
      `- pool ${pool}: ${rate > 0 ? `${rate} redeems/s (${rate * 60}/min)` : "no step sustained"}`,
    );
  }
  out.push(
    "",
    rec === null
      ? "No pool size sustained any offered rate: see the failures above."
      : `Recommended pool size: **${rec}** (the smallest within 10% of the best saturation point).`,
    "",
  );
  return out.join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      pools: { type: "string", default: "2,4,8,16" },
      rates: { type: "string", default: "50,100,200,400,800" },
      step: { type: "string", default: "15s" },
      port: { type: "string", default: "54351" },
      out: { type: "string" },
      "keep-going": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(
      "usage: deno task perf:pool [--pools 2,4,8,16] [--rates 50,100,200,400,800] [--step 15s] [--port 54351] [--keep-going]",
    );
    Deno.exit(0);
  }
  const pools = values.pools!.split(",").map(Number);
  const rates = values.rates!.split(",").map(Number);
  if ([...pools, ...rates].some((n) => !Number.isInteger(n) || n <= 0)) {
    console.error(
      "--pools and --rates take positive whole numbers, comma-separated",
    );
    Deno.exit(2);
  }
  const stepMs = parseDuration(values.step!);
  const env = targetEnv();
  const summary = await loadSeedSummary(env.summaryPath);
  const dir = values.out ?? `${evidenceDir()}-pool`;
  await Deno.mkdir(dir, { recursive: true });
  const sloP95Ms = 500;
  const steps: PoolStep[] = [];
  for (const pool of pools) {
    const gw = await startGateway(
      Number(values.port),
      pool,
      join(dir, `gateway_pool_${pool}.log`),
    );
    console.log(`pool ${pool}: gateway on ${gw.url}`);
    try {
      for (const rate of rates) {
        const sampler = await TelemetrySampler.start(env.dbUrl, 500);
        const result = await runScenario(stationRedeemPeak, {
          profile: "quick",
          summary,
          target: { baseUrl: gw.url, anonKey: env.anonKey },
          options: stepOptions(rate, stepMs),
        });
        const telemetry = await sampler.stop();
        const h = new LatencyHistogram();
        const errorCodes: Record<string, number> = {};
        let ok = 0;
        let failed = 0;
        for (const r of result.requests) {
          h.record(r.durationMs);
          if (r.failed) {
            failed++;
            errorCodes[r.code ?? `http_${r.status}`] =
              (errorCodes[r.code ?? `http_${r.status}`] ?? 0) + 1;
          } else ok++;
        }
        const cpu = telemetry.samples.map((s) => s.hostCpu).filter((
          v,
        ): v is number => v !== null);
        const drv = telemetry.samples.map((s) => s.driverCpu).filter((
          v,
        ): v is number => v !== null);
        const base = {
          poolSize: pool,
          offeredPerSecond: rate,
          durationSeconds: stepMs / 1000,
          requests: result.requests.length,
          ok,
          failed,
          dropped: result.dropped,
          achievedPerSecond: ok / (stepMs / 1000),
          p50: h.percentile(50),
          p95: h.percentile(95),
          p99: h.percentile(99),
          max: h.max,
          errorCodes,
          gatewayActiveMax: telemetry.samples.reduce(
            (a, s) => Math.max(a, s.gatewayActive),
            0,
          ),
          hostCpuMean: cpu.length ? cpu.reduce((a, b) => a + b, 0) / cpu.length : null,
          driverCpuMean: drv.length ? drv.reduce((a, b) => a + b, 0) / drv.length : null,
        };
        const step: PoolStep = {
          ...base,
          sustained: isSustained(base, sloP95Ms),
        };
        steps.push(step);
        console.log(
          `  ${rate}/s → ${step.achievedPerSecond.toFixed(1)}/s ok, p95 ${
            step.p95.toFixed(1)
          } ms, p99 ${step.p99.toFixed(1)} ms, ` +
            `${failed} failed, ${result.dropped} dropped, busy conns ${step.gatewayActiveMax}${
              step.sustained ? "" : "  ← not sustained"
            }`,
        );
        // Past saturation the next, higher rate only measures a longer queue.
        if (!step.sustained && !values["keep-going"]) break;
      }
    } finally {
      await gw.stop();
    }
  }
  const md = renderPoolReport(steps, sloP95Ms);
  await Deno.writeTextFile(join(dir, "pool_sizing.md"), md);
  await Deno.writeTextFile(
    join(dir, "pool_sizing.json"),
    JSON.stringify({ steps, sloP95Ms }, null, 2) + "\n",
  );
  console.log(`\n${md}\nWritten to ${dir}/pool_sizing.md`);
}
