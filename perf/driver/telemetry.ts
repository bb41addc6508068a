/**
 * Database and host telemetry sampled during a run: connections by state and
 * application (against the gateway's pool size), lock waits, host CPU from
 * `/proc/stat`, the driver's own CPU, and `pg_stat_statements` deltas per RPC
 * between the start and the end of the run.
 *
 * @module
 */
import postgres from "postgres";

/** One sample (every `intervalMs`). */
export interface TelemetrySample {
  /** Milliseconds since the sampler started. */
  t: number;
  /** Connections of this database by `application_name` and `state`. */
  connections: { application: string; state: string; count: number }[];
  /** Connections of the gateway (`application_name = local-gateway`) that are running a query. */
  gatewayActive: number;
  /** Connections of the gateway in total (busy + idle). */
  gatewayTotal: number;
  /** Backends waiting on a lock. */
  lockWaits: number;
  /** Host CPU busy fraction since the previous sample (0–1, all cores), null if /proc/stat is unreadable. */
  hostCpu: number | null;
  /** This driver process's CPU since the previous sample, in cores (1 = one core busy). */
  driverCpu: number | null;
}

/** A statement's `pg_stat_statements` change over the run. */
export interface StatementDelta {
  queryid: string;
  query: string;
  calls: number;
  totalMs: number;
  meanMs: number;
  /** Largest execution time since the statistics were last reset (not only this run). */
  maxMs: number;
  rows: number;
  sharedBlksHit: number;
  sharedBlksRead: number;
}

/** Everything the sampler collected. */
export interface TelemetryReport {
  intervalMs: number;
  samples: TelemetrySample[];
  statements: StatementDelta[];
  /** Why telemetry is partial, if it is. */
  warnings: string[];
}

interface CpuTimes {
  busy: number;
  total: number;
}

async function hostCpuTimes(): Promise<CpuTimes | null> {
  try {
    const line = (await Deno.readTextFile("/proc/stat")).split("\n")[0];
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    const idle = f[3] + (f[4] ?? 0); // idle + iowait
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    return { busy: total - idle, total };
  } catch {
    return null;
  }
}

/** utime + stime of this process in clock ticks (100 Hz on Linux). */
async function selfCpuTicks(): Promise<number | null> {
  try {
    const stat = await Deno.readTextFile("/proc/self/stat");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(f[11]) + Number(f[12]);
  } catch {
    return null;
  }
}

const CLK_TCK = 100;

interface StatementRow {
  queryid: string;
  query: string;
  calls: string;
  total_exec_time: number;
  max_exec_time: number;
  rows: string;
  shared_blks_hit: string;
  shared_blks_read: string;
}

/**
 * Samples telemetry until `stop()`.
 *
 * @example
 * const sampler = await TelemetrySampler.start(dbUrl);
 * // … run the load …
 * const report = await sampler.stop();
 */
export class TelemetrySampler {
  readonly #sql: postgres.Sql;
  readonly #intervalMs: number;
  readonly #samples: TelemetrySample[] = [];
  readonly #warnings: string[] = [];
  readonly #t0 = performance.now();
  #before = new Map<string, StatementRow>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #lastCpu: CpuTimes | null = null;
  #lastSelf: { ticks: number; at: number } | null = null;
  #busy: Promise<void> = Promise.resolve();
  #hasStatements = true;

  private constructor(sql: postgres.Sql, intervalMs: number) {
    this.#sql = sql;
    this.#intervalMs = intervalMs;
  }

  /** Connects, snapshots pg_stat_statements and starts sampling. */
  static async start(
    dbUrl: string,
    intervalMs = 1000,
  ): Promise<TelemetrySampler> {
    const sql = postgres(dbUrl, {
      max: 1,
      onnotice: () => {},
      connection: { application_name: "perf-telemetry" },
    });
    const sampler = new TelemetrySampler(sql, intervalMs);
    sampler.#before = await sampler.#statements();
    sampler.#lastCpu = await hostCpuTimes();
    const ticks = await selfCpuTicks();
    if (ticks !== null) sampler.#lastSelf = { ticks, at: performance.now() };
    await sampler.#sample();
    sampler.#timer = setInterval(() => {
      // Never overlap samples: a slow database skips ticks instead of piling up.
      sampler.#busy = sampler.#busy.then(() => sampler.#sample());
    }, intervalMs);
    return sampler;
  }

  async #statements(): Promise<Map<string, StatementRow>> {
    const out = new Map<string, StatementRow>();
    if (!this.#hasStatements) return out;
    try {
      const rows = await this.#sql<StatementRow[]>`
        select s.queryid::text, s.query, s.calls::text, s.total_exec_time, s.max_exec_time, s.rows::text,
               s.shared_blks_hit::text, s.shared_blks_read::text
        from extensions.pg_stat_statements s
        where s.dbid = (select oid from pg_database where datname = current_database())`;
      for (const r of rows) out.set(r.queryid, r);
    } catch (err) {
      this.#hasStatements = false;
      this.#warnings.push(
        `pg_stat_statements unavailable: ${err instanceof Error ? err.message : err}`,
      );
    }
    return out;
  }

  async #sample(): Promise<void> {
    const t = performance.now() - this.#t0;
    try {
      const rows = await this.#sql<
        { application: string; state: string; count: number; waiting: number }[]
      >`
        select coalesce(nullif(application_name, ''), backend_type) as application,
               coalesce(state, 'n/a') as state, count(*)::int as count,
               count(*) filter (where wait_event_type = 'Lock')::int as waiting
        from pg_stat_activity
        where datname = current_database() or datname is null
        group by 1, 2`;
      const cpu = await hostCpuTimes();
      let hostCpu: number | null = null;
      if (cpu && this.#lastCpu && cpu.total > this.#lastCpu.total) {
        hostCpu = (cpu.busy - this.#lastCpu.busy) /
          (cpu.total - this.#lastCpu.total);
      }
      this.#lastCpu = cpu;
      const ticks = await selfCpuTicks();
      let driverCpu: number | null = null;
      const now = performance.now();
      if (ticks !== null && this.#lastSelf && now > this.#lastSelf.at) {
        driverCpu = (ticks - this.#lastSelf.ticks) / CLK_TCK /
          ((now - this.#lastSelf.at) / 1000);
      }
      if (ticks !== null) this.#lastSelf = { ticks, at: now };
      const gateway = rows.filter((r) => r.application === "local-gateway");
      this.#samples.push({
        t,
        connections: rows.map(({ application, state, count }) => ({
          application,
          state,
          count,
        })),
        gatewayActive: gateway.filter((r) => r.state === "active").reduce(
          (a, r) => a + r.count,
          0,
        ),
        gatewayTotal: gateway.reduce((a, r) => a + r.count, 0),
        lockWaits: rows.reduce((a, r) => a + r.waiting, 0),
        hostCpu,
        driverCpu,
      });
    } catch (err) {
      if (this.#warnings.length < 20) {
        this.#warnings.push(
          `sample at ${Math.round(t)} ms failed: ${err instanceof Error ? err.message : err}`,
        );
      }
    }
  }

  /** Stops sampling, diffs pg_stat_statements and closes the connection. */
  async stop(): Promise<TelemetryReport> {
    clearInterval(this.#timer);
    await this.#busy;
    await this.#sample();
    const after = await this.#statements();
    await this.#sql.end({ timeout: 5 });
    const statements: StatementDelta[] = [];
    for (const [id, a] of after) {
      // Counters that went down mean the statistics were reset (or Postgres
      // restarted) during the run: count from the reset then.
      const prior = this.#before.get(id);
      const b = prior && Number(a.calls) >= Number(prior.calls) ? prior : undefined;
      const calls = Number(a.calls) - Number(b?.calls ?? 0);
      if (calls <= 0) continue;
      const totalMs = a.total_exec_time - (b?.total_exec_time ?? 0);
      statements.push({
        queryid: id,
        query: a.query.replace(/\s+/g, " ").slice(0, 400),
        calls,
        totalMs,
        meanMs: totalMs / calls,
        maxMs: a.max_exec_time,
        rows: Number(a.rows) - Number(b?.rows ?? 0),
        sharedBlksHit: Number(a.shared_blks_hit) -
          Number(b?.shared_blks_hit ?? 0),
        sharedBlksRead: Number(a.shared_blks_read) -
          Number(b?.shared_blks_read ?? 0),
      });
    }
    statements.sort((x, y) => y.totalMs - x.totalMs);
    return {
      intervalMs: this.#intervalMs,
      samples: this.#samples,
      statements,
      warnings: this.#warnings,
    };
  }
}

/** The RPC a top-level statement calls (`select api.redeem_voucher(…)` → `redeem_voucher`), else null. */
export function rpcOfStatement(query: string): string | null {
  const m = query.match(/"?\bapi"?\."?([a-z_][a-z0-9_]*)"?\s*\(/i);
  return m ? m[1] : null;
}
