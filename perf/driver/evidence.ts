/**
 * Writes an evidence folder `.perf/<timestamp>/`:
 *
 * - `summary.json` — the RunSummary (latency stats, HDR histograms in base64,
 *   errors, verdicts, timelines, telemetry summary);
 * - `samples.ndjson` — one line per request (send time, scheduled time,
 *   scenario, flow, endpoint, status, duration, failed, code);
 * - `telemetry.ndjson` — one line per telemetry sample, and
 *   `pg_stat_statements.json` — the per-statement deltas;
 * - `<scenario>/responses.ndjson` — kept response bodies (the dispatcher's
 *   answers and campaign stats of the bulk send), plus any extra files;
 * - `report.md` and `charts/<scenario>.svg`.
 *
 * @module
 */
import { join } from "node:path";
import { renderReport } from "../report/render.ts";
import type { ScenarioResult } from "./runner.ts";
import type { RunSummary } from "./summary.ts";
import type { TelemetryReport } from "./telemetry.ts";
import { REPO_ROOT } from "./target_env.ts";

/** `.perf/2026-11-28T13-05-00Z` for a date. */
export function evidenceDir(
  at: Date = new Date(),
  root = join(REPO_ROOT, ".perf"),
): string {
  return join(
    root,
    at.toISOString().replace(/\.\d+Z$/, "Z").replace(/:/g, "-"),
  );
}

async function writeNdjson(
  path: string,
  rows: Iterable<unknown>,
): Promise<void> {
  const file = await Deno.open(path, {
    write: true,
    create: true,
    truncate: true,
  });
  const enc = new TextEncoder();
  try {
    let buf = "";
    for (const row of rows) {
      buf += JSON.stringify(row) + "\n";
      if (buf.length > 1 << 16) {
        await file.write(enc.encode(buf));
        buf = "";
      }
    }
    if (buf) await file.write(enc.encode(buf));
  } finally {
    file.close();
  }
}

/** Writes every evidence file; returns the folder. */
export async function writeEvidence(
  dir: string,
  run: RunSummary,
  results: ScenarioResult[],
  telemetry: TelemetryReport | null,
  extras: Record<string, Record<string, unknown>> = {},
): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(
    join(dir, "summary.json"),
    JSON.stringify(run, null, 2) + "\n",
  );
  await writeNdjson(
    join(dir, "samples.ndjson"),
    results.flatMap((r) => r.requests),
  );
  if (telemetry) {
    await writeNdjson(join(dir, "telemetry.ndjson"), telemetry.samples);
    await Deno.writeTextFile(
      join(dir, "pg_stat_statements.json"),
      JSON.stringify(telemetry.statements, null, 2) + "\n",
    );
  }
  for (const r of results) {
    const files = extras[r.scenario] ?? {};
    if (r.bodies.length === 0 && Object.keys(files).length === 0) continue;
    const sub = join(dir, r.scenario);
    await Deno.mkdir(sub, { recursive: true });
    if (r.bodies.length) {
      await writeNdjson(join(sub, "responses.ndjson"), r.bodies);
    }
    for (const [name, content] of Object.entries(files)) {
      await Deno.writeTextFile(
        join(sub, name),
        JSON.stringify(content, null, 2) + "\n",
      );
    }
  }
  await renderReport(dir, run);
  return dir;
}
