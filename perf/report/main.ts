/**
 * `deno task perf:report [DIR] [--publish NAME]`
 *
 * Re-renders `report.md` and the charts of an evidence folder from its
 * `summary.json` (default: the newest folder under `.perf/`), prints the SLO
 * table, and with `--publish NAME` copies the report, charts and summary to
 * `perf/results/NAME/` (the committed record; raw samples stay in `.perf/`).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import type { RunSummary } from "../driver/summary.ts";
import { REPO_ROOT } from "../driver/target_env.ts";
import { sloTable } from "./markdown.ts";
import { renderReport } from "./render.ts";

/** The newest evidence folder under `.perf/` that has a summary.json, or null. */
export async function latestEvidenceDir(
  root = join(REPO_ROOT, ".perf"),
): Promise<string | null> {
  const dirs: string[] = [];
  try {
    for await (const e of Deno.readDir(root)) {
      if (e.isDirectory) dirs.push(e.name);
    }
  } catch {
    return null;
  }
  dirs.sort().reverse();
  for (const d of dirs) {
    try {
      await Deno.stat(join(root, d, "summary.json"));
      return join(root, d);
    } catch { /* incomplete run */ }
  }
  return null;
}

/** Copies the committed part of an evidence folder to `perf/results/<name>/`. */
export async function publish(dir: string, name: string): Promise<string> {
  if (!/^[A-Za-z0-9._-]+$/.test(name)) {
    throw new RangeError(`Invalid result name "${name}"`);
  }
  const dest = join(REPO_ROOT, "perf", "results", name);
  await Deno.mkdir(join(dest, "charts"), { recursive: true });
  for (const f of ["report.md", "summary.json"]) {
    await Deno.copyFile(join(dir, f), join(dest, f));
  }
  for await (const e of Deno.readDir(join(dir, "charts"))) {
    await Deno.copyFile(
      join(dir, "charts", e.name),
      join(dest, "charts", e.name),
    );
  }
  for (const extra of ["pool_sizing.md", "explain.md", "scale_compare.md"]) {
    try {
      await Deno.copyFile(join(dir, extra), join(dest, extra));
    } catch { /* not part of this run */ }
  }
  return dest;
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      publish: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log("usage: deno task perf:report [EVIDENCE_DIR] [--publish NAME]");
    Deno.exit(0);
  }
  const dir = positionals[0] ?? await latestEvidenceDir();
  if (!dir) {
    console.error(
      "No evidence folder under .perf/; run `deno task perf:run` first",
    );
    Deno.exit(1);
  }
  const run = JSON.parse(
    await Deno.readTextFile(join(dir, "summary.json")),
  ) as RunSummary;
  const files = await renderReport(dir, run);
  console.log(`${sloTable(run)}\n\nRendered ${files.length} files in ${dir}`);
  if (values.publish) {
    console.log(`Published to ${await publish(dir, values.publish)}`);
  }
}
