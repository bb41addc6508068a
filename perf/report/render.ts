/**
 * Writes the human-readable part of an evidence folder: `report.md` and one
 * SVG chart per scenario under `charts/`.
 *
 * @module
 */
import { join } from "node:path";
import type { RunSummary } from "../driver/summary.ts";
import { renderMarkdown, sloLatencyMs } from "./markdown.ts";
import { renderChart } from "./svg.ts";

/** Renders `report.md` and `charts/*.svg` into `dir`; returns the files written. */
export async function renderReport(
  dir: string,
  run: RunSummary,
): Promise<string[]> {
  const written: string[] = [];
  await Deno.mkdir(join(dir, "charts"), { recursive: true });
  for (const s of run.scenarios) {
    const path = join(dir, "charts", `${s.name}.svg`);
    await Deno.writeTextFile(
      path,
      renderChart({
        title: `${s.slo.title} — ${s.profile} profile`,
        bucketSeconds: s.bucketSeconds,
        points: s.timeline,
        sloMs: sloLatencyMs(s),
      }),
    );
    written.push(path);
  }
  const report = join(dir, "report.md");
  await Deno.writeTextFile(report, renderMarkdown(run));
  written.push(report);
  return written;
}
