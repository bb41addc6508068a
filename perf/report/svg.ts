/**
 * A self-contained SVG chart of one scenario run: latency over time (p50, p95,
 * p99 per bucket, with the SLO target as a dashed line) above throughput
 * (requests per second, failed ones in red). No dependencies, no scripts.
 *
 * @module
 */
import type { TimelinePoint } from "../driver/summary.ts";

/** Input of a chart. */
export interface ChartInput {
  title: string;
  bucketSeconds: number;
  points: TimelinePoint[];
  /** The latency SLO in ms (drawn as a dashed line), if any. */
  sloMs: number | null;
}

const W = 900;
const PAD_L = 64;
const PAD_R = 16;
const TOP_H = 230;
const BOT_H = 140;
const GAP = 46;
const H = 40 + TOP_H + GAP + BOT_H + 36;

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");
}

/** A "nice" axis maximum ≥ v (1, 2, 2.5, 5 × 10^k). */
export function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmtMs(v: number): string {
  return v >= 1000
    ? `${(v / 1000).toFixed(v >= 10_000 ? 0 : 1)} s`
    : `${v >= 10 ? v.toFixed(0) : v.toFixed(1)} ms`;
}

/** Renders the chart. */
export function renderChart(input: ChartInput): string {
  const pts = input.points;
  const n = Math.max(pts.length, 1);
  const plotW = W - PAD_L - PAD_R;
  const x = (i: number) => PAD_L + (i / n) * plotW;
  // Latency on a log scale (decades), so a 5 ms p50 and a 1 s SLO both stay readable.
  const measured = pts.filter((p) => p.requests > 0);
  const lowest = Math.min(
    ...measured.map((p) => p.p50).filter((v) => v > 0),
    input.sloMs ?? Infinity,
  );
  const highest = Math.max(1, input.sloMs ?? 0, ...measured.map((p) => p.p99));
  const decLo = Math.floor(
    Math.log10(Number.isFinite(lowest) ? Math.max(lowest, 0.1) : 1),
  );
  const decHi = Math.max(decLo + 1, Math.ceil(Math.log10(highest * 1.05)));
  const rps = pts.map((p) => p.requests / input.bucketSeconds);
  const rpsMax = niceMax(Math.max(1, ...rps));
  const top0 = 40;
  const bot0 = top0 + TOP_H + GAP;
  const yLat = (v: number) => {
    const l = Math.log10(Math.min(Math.max(v, 10 ** decLo), 10 ** decHi));
    return top0 + TOP_H - ((l - decLo) / (decHi - decLo)) * TOP_H;
  };
  const yRps = (v: number) => bot0 + BOT_H - (v / rpsMax) * BOT_H;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="system-ui, sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${PAD_L}" y="22" font-size="15" font-weight="600">${esc(input.title)}</text>`,
  );
  // Grid and axes.
  for (let d = decLo; d <= decHi; d++) {
    const y = yLat(10 ** d);
    out.push(
      `<line x1="${PAD_L}" x2="${W - PAD_R}" y1="${y}" y2="${y}" stroke="#eee"/>`,
    );
    out.push(
      `<text x="${PAD_L - 6}" y="${y + 4}" text-anchor="end" fill="#555">${fmtMs(10 ** d)}</text>`,
    );
  }
  for (let k = 0; k <= 4; k++) {
    const r = (rpsMax * k) / 4;
    const y2 = yRps(r);
    out.push(
      `<line x1="${PAD_L}" x2="${W - PAD_R}" y1="${y2}" y2="${y2}" stroke="#eee"/>`,
    );
    out.push(
      `<text x="${PAD_L - 6}" y="${y2 + 4}" text-anchor="end" fill="#555">${+r
        .toFixed(2)}/s</text>`,
    );
  }
  const total = n * input.bucketSeconds;
  for (let k = 0; k <= 6; k++) {
    // Whole seconds for runs of minutes; one decimal when the run is short
    // enough that rounding would print the same second twice.
    const sec = +((total * k) / 6).toFixed(total >= 60 ? 0 : 1);
    const xx = PAD_L + (k / 6) * plotW;
    out.push(
      `<text x="${xx}" y="${bot0 + BOT_H + 16}" text-anchor="middle" fill="#555">${sec}s</text>`,
    );
  }
  out.push(
    `<text x="${PAD_L}" y="${
      top0 - 6
    }" fill="#333">latency per ${input.bucketSeconds}s bucket (log scale)</text>`,
  );
  out.push(
    `<text x="${PAD_L}" y="${bot0 - 6}" fill="#333">throughput (requests/s; failed in red)</text>`,
  );
  // Throughput bars.
  const bw = Math.max(1, plotW / n - 1);
  pts.forEach((p, i) => {
    const ok = (p.requests - p.failed) / input.bucketSeconds;
    const bad = p.failed / input.bucketSeconds;
    if (ok > 0) {
      out.push(
        `<rect x="${x(i)}" y="${yRps(ok)}" width="${bw}" height="${
          bot0 + BOT_H - yRps(ok)
        }" fill="#4c78a8"/>`,
      );
    }
    if (bad > 0) {
      out.push(
        `<rect x="${x(i)}" y="${yRps(ok + bad)}" width="${bw}" height="${
          yRps(ok) - yRps(ok + bad)
        }" fill="#e45756"/>`,
      );
    }
  });
  // Latency lines (buckets without requests are gaps).
  const line = (key: "p50" | "p95" | "p99", color: string) => {
    let d = "";
    let pen = false;
    pts.forEach((p, i) => {
      if (p.requests === 0) {
        pen = false;
        return;
      }
      const xx = x(i) + bw / 2;
      d += `${pen ? "L" : "M"}${xx.toFixed(1)},${yLat(p[key]).toFixed(1)}`;
      pen = true;
    });
    if (d) {
      out.push(
        `<path d="${d}" fill="none" stroke="${color}" stroke-width="1.6"/>`,
      );
    }
  };
  line("p99", "#e45756");
  line("p95", "#f58518");
  line("p50", "#4c78a8");
  if (input.sloMs !== null) {
    const y = yLat(input.sloMs);
    out.push(
      `<line x1="${PAD_L}" x2="${
        W - PAD_R
      }" y1="${y}" y2="${y}" stroke="#222" stroke-dasharray="6 4"/>`,
    );
    out.push(
      `<text x="${W - PAD_R - 4}" y="${y - 4}" text-anchor="end" fill="#222">SLO ${
        fmtMs(input.sloMs)
      }</text>`,
    );
  }
  // Legend.
  const legend: [string, string][] = [["p50", "#4c78a8"], ["p95", "#f58518"], [
    "p99",
    "#e45756",
  ]];
  legend.forEach(([label, color], i) => {
    const lx = W - PAD_R - 200 + i * 64;
    out.push(
      `<line x1="${lx}" x2="${lx + 18}" y1="18" y2="18" stroke="${color}" stroke-width="3"/>`,
    );
    out.push(`<text x="${lx + 22}" y="22">${label}</text>`);
  });
  out.push(
    `<line x1="${PAD_L}" x2="${PAD_L}" y1="${top0}" y2="${top0 + TOP_H}" stroke="#999"/>`,
  );
  out.push(
    `<line x1="${PAD_L}" x2="${PAD_L}" y1="${bot0}" y2="${bot0 + BOT_H}" stroke="#999"/>`,
  );
  out.push("</svg>");
  return out.join("\n") + "\n";
}
