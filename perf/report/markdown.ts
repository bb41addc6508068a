/**
 * `report.md` of a run: the SLO table with observed p95/p99 beside each target,
 * threshold verdicts, per-endpoint latency, errors, custom metrics, database
 * telemetry and the charts.
 *
 * @module
 */
import { parseThreshold } from "../driver/_thresholds.ts";
import type { RunSummary, ScenarioSummary } from "../driver/summary.ts";

/** `12.3 ms`, `1.20 s`. */
export function ms(v: number | null | undefined): string {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (v >= 1000) return `${(v / 1000).toFixed(2)} s`;
  if (v >= 100) return `${v.toFixed(0)} ms`;
  return `${v.toFixed(1)} ms`;
}

/** A run length: seconds below two minutes, else minutes. */
function span(seconds: number): string {
  return seconds < 120 ? `${seconds.toFixed(1)} s` : `${(seconds / 60).toFixed(1)} min`;
}

function pct(v: number): string {
  return `${(v * 100).toFixed(v > 0 && v < 0.001 ? 3 : 2)}%`;
}

/** The latency target (ms) a scenario's thresholds set on its SLO endpoint, if any. */
export function sloLatencyMs(s: ScenarioSummary): number | null {
  for (const v of s.verdicts) {
    if (!v.metric.startsWith(`http_req_duration{endpoint:${s.slo.endpoint}`)) {
      continue;
    }
    try {
      return parseThreshold(v.expression).bound;
    } catch {
      continue;
    }
  }
  return null;
}

/** What the scenario achieved, in the words of its throughput target. */
export function observedThroughput(s: ScenarioSummary): string {
  const ep = s.endpoints[s.slo.endpoint];
  const n = ep?.requests ?? 0;
  const perMin = (n / Math.max(s.durationSeconds, 1e-9)) * 60;
  switch (s.name) {
    case "voucher_preview_spike": {
      const peak = s.timeline.reduce(
        (a, p) => Math.max(a, p.requests / s.bucketSeconds),
        0,
      );
      return `${n} previews in ${span(s.durationSeconds)} (peak ${peak.toFixed(1)}/s)`;
    }
    case "station_redeem_peak":
      return `${n} redeems in ${span(s.durationSeconds)} = ${perMin.toFixed(0)}/min`;
    case "voucher_issuance": {
      const batches = Object.entries(s.endpoints).length ? n : 0;
      const issued = s.metrics.vouchers_issued?.sum ?? 0;
      return `${batches} batches, ${issued.toLocaleString("en-US")} vouchers`;
    }
    case "campaign_bulk_send": {
      const sent = s.metrics.messages_sent?.sum ?? 0;
      const rate = (s.metrics.messages_sent?.rate ?? 0) * 60;
      const remaining = s.metrics.messages_remaining?.last;
      return `${sent.toLocaleString("en-US")} messages sent = ${rate.toFixed(0)}/min` +
        (remaining !== undefined ? ` (${remaining} left at end)` : "");
    }
    default:
      return `${n} requests = ${perMin.toFixed(0)}/min`;
  }
}

function verdictMark(s: ScenarioSummary): string {
  const failed = s.verdicts.filter((v) => !v.ok).length;
  return failed === 0 ? "✅ pass" : `❌ ${failed} threshold${failed > 1 ? "s" : ""} failed`;
}

/** The SLO table, observed figures beside each target. */
export function sloTable(run: RunSummary): string {
  const rows = [
    "| Scenario | Throughput target | Observed throughput | SLO | Observed p95 | Observed p99 | Error budget | Observed errors | Thresholds |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const s of run.scenarios) {
    const ep = s.endpoints[s.slo.endpoint];
    let lat = `${ms(ep?.latency.p95)}`;
    const p99 = `${ms(ep?.latency.p99)}`;
    if (s.name === "voucher_issuance") {
      // The target is per batch: show each batch size's p95 / max.
      const sizes = s.verdicts.filter((v) =>
        v.metric.startsWith("http_req_duration{endpoint:issue_vouchers,batch:")
      );
      if (sizes.length) {
        lat = sizes.map((v) => `${v.metric.match(/batch:(\d+)/)?.[1]}: max ${ms(v.observed)}`).join(
          "; ",
        );
      }
    }
    const errors = ep ? `${pct(ep.failedRate)} (${ep.failed}/${ep.requests})` : "–";
    rows.push(
      `| ${s.slo.title} | ${s.slo.throughput} | ${
        observedThroughput(s)
      } | ${s.slo.latency} | ${lat} | ${p99} | ${s.slo.errorBudget} | ${errors} | ${
        verdictMark(s)
      } |`,
    );
  }
  return rows.join("\n");
}

function scenarioSection(s: ScenarioSummary): string {
  const out: string[] = [];
  out.push(`### ${s.slo.title} (\`${s.name}\`)`, "");
  out.push(`![${s.name} latency and throughput](charts/${s.name}.svg)`, "");
  const execs = Object.entries(s.executors).map(([k, e]) => {
    const x = e as Record<string, unknown>;
    const shape = x.executor === "constant-arrival-rate"
      ? `${x.rate}/${x.timeUnit ?? "1s"} for ${x.duration}`
      : `stages ${
        (x.stages as { target: number; duration: string }[]).map((st) =>
          `${st.target}/${x.timeUnit ?? "1s"}@${st.duration}`
        ).join(" → ")
      }`;
    return `\`${k}\` ${x.executor} ${shape}, maxVUs ${x.maxVUs ?? x.preAllocatedVUs}`;
  });
  out.push(`- Executors: ${execs.join("; ")}`);
  out.push(
    `- ${s.iterations} iterations in ${s.durationSeconds.toFixed(1)} s (${
      s.requestsPerSecond.toFixed(2)
    } req/s), ` +
      `${s.dropped} dropped, ${s.interrupted} interrupted; iteration start lag p99 ${
        ms(s.startLag.p99)
      }, max ${ms(s.startLag.max)}`,
  );
  out.push(
    `- Setup ${ms(s.setup.durationMs)} (${s.setup.requests} requests)` +
      (s.teardown.error
        ? `; teardown failed: ${s.teardown.error}`
        : `; teardown ${ms(s.teardown.durationMs)}`),
    "",
  );
  out.push(
    "| Endpoint | Requests | Failed | p50 | p90 | p95 | p99 | max |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
  );
  for (const [name, e] of Object.entries(s.endpoints)) {
    const l = e.latency;
    out.push(
      `| \`${name}\` | ${e.requests} | ${e.failed} | ${ms(l.p50)} | ${ms(l.p90)} | ${ms(l.p95)} | ${
        ms(l.p99)
      } | ${ms(l.max)} |`,
    );
  }
  out.push("");
  out.push("| Threshold | Observed | Verdict |", "| --- | --- | --- |");
  for (const v of s.verdicts) {
    const observed = v.noData ? "no data" : v.observed === null ? "–" : +v.observed.toFixed(4);
    out.push(
      `| \`${v.metric}: ${v.expression}\` | ${observed} | ${v.ok ? "✅" : "❌"} |`,
    );
  }
  out.push("");
  const statuses = Object.entries(s.errors.byStatus).map(([k, n]) => `${k}: ${n}`).join(", ");
  const codes = Object.entries(s.errors.byCode).map(([k, n]) => `\`${k}\`: ${n}`).join(", ");
  out.push(`- Responses by status: ${statuses || "none"}`);
  out.push(`- Error codes: ${codes || "none"}`);
  const metrics = Object.entries(s.metrics);
  if (metrics.length) {
    out.push(
      `- Custom metrics: ${
        metrics.map(([k, m]) =>
          m.type === "counter"
            ? `\`${k}\` ${m.sum} (${(m.rate * 60).toFixed(1)}/min)`
            : `\`${k}\` last ${m.last} (min ${m.min}, max ${m.max})`
        ).join("; ")
      }`,
    );
  }
  if (s.teardown.result) {
    out.push(
      `- Teardown: \`${JSON.stringify(s.teardown.result).slice(0, 600)}\``,
    );
  }
  out.push("");
  return out.join("\n");
}

/** Renders the whole report. */
export function renderMarkdown(run: RunSummary): string {
  const out: string[] = [];
  out.push(`# Load test report — ${run.profile} profile, ${run.env.name}`, "");
  out.push(
    `Run \`${run.runId}\`, ${run.startedAt} → ${run.finishedAt}, against ${run.env.baseUrl}. ` +
      `Exit code **${run.exitCode}** (${
        run.exitCode === 0 ? "every threshold passed" : "a threshold failed; k6 exits 99 too"
      }).`,
    "",
  );
  const m = run.machine;
  out.push(
    `Machine: ${Object.entries(m).map(([k, v]) => `${k} ${v}`).join(", ")}. ` +
      `Gateway pool size: ${run.poolSize ?? "unknown"}.` +
      (run.seed
        ? ` Dataset: seed ${run.seed.seed}, ${
          Object.entries(run.seed.counts).map(([k, v]) => `${v.toLocaleString("en-US")} ${k}`).join(
            ", ",
          )
        }.`
        : ""),
    "",
  );
  out.push("## SLO table (observed)", "", sloTable(run), "");
  out.push(
    "Latency is `http_req_duration` of the SLO endpoint (request sent → last byte), percentiles from HDR histograms " +
      "(3 significant digits). Arrival-rate executors start iterations on schedule whether or not earlier ones " +
      "finished (no coordinated omission); a start that finds every VU busy is a dropped iteration.",
    "",
  );
  out.push("## Scenarios", "");
  for (const s of run.scenarios) out.push(scenarioSection(s));
  const t = run.telemetry;
  if (t) {
    out.push("## Database and host telemetry", "");
    out.push(
      `- ${t.samples} samples every ${t.intervalMs} ms. Gateway connections (\`local-gateway\`): max ${t.gatewayActiveMax} active, ` +
        `max ${t.gatewayTotalMax} open, pool size ${
          run.poolSize ?? "unknown"
        }. Lock waits: max ${t.lockWaitsMax}.`,
    );
    const cpu = (
      v: number | null,
    ) => (v === null ? "–" : `${(v * 100).toFixed(0)}%`);
    out.push(
      `- Host CPU (all cores, /proc/stat): mean ${cpu(t.hostCpuMean)}, max ${cpu(t.hostCpuMax)}. ` +
        `Load driver CPU: mean ${
          t.driverCpuMean === null ? "–" : `${t.driverCpuMean.toFixed(2)} cores`
        }.`,
    );
    if (t.busiest.length) {
      out.push(
        `- Busiest sample, connections by application/state: ${
          t.busiest.map((c) => `${c.application}/${c.state} ${c.count}`).join(
            ", ",
          )
        }`,
      );
    }
    for (const w of t.warnings) out.push(`- ⚠ ${w}`);
    out.push(
      "",
      "Top statements by total time during the run (`extensions.pg_stat_statements`; max is since the last stats reset):",
      "",
    );
    out.push(
      "| RPC | Calls | Mean | Max | Total | Statement |",
      "| --- | --- | --- | --- | --- | --- |",
    );
    for (const st of t.statements) {
      const q = st.query.replace(/\|/g, "\\|").slice(0, 140);
      out.push(
        `| ${st.rpc ?? ""} | ${st.calls} | ${ms(st.meanMs)} | ${ms(st.maxMs)} | ${
          ms(st.totalMs)
        } | \`${q}\` |`,
      );
    }
    out.push("");
  }
  if (run.notes.length) {
    out.push("## Notes", "");
    for (const n of run.notes) out.push(`- ${n}`);
    out.push("");
  }
  return out.join("\n");
}
