/**
 * The schema cache: every function of the exposed schemas (argument names,
 * types and modes, defaults, volatility, return shape) and the per-role
 * settings PostgREST applies on role switch (e.g. `anon`'s statement_timeout).
 *
 * It is loaded at start, reloaded on `NOTIFY pgrst, 'reload schema'` (or an
 * empty payload, as PostgREST does), and reloaded once — rate limited — on a
 * lookup miss before the gateway answers PGRST202.
 *
 * Function resolution follows PostgREST's `findProc`: match by argument names
 * (optional parameters may be omitted), else fall back to a function with a
 * single unnamed json/jsonb parameter for a JSON POST.
 *
 * @module
 */
import type { Sql } from "postgres";
import { ambiguousRpc, noRpc } from "./_errors.ts";

/** One input parameter (IN, INOUT or VARIADIC). */
export interface RoutineParam {
  name: string;
  /** SQL type usable in a cast / column definition, e.g. `integer[]`. */
  type: string;
  required: boolean;
  variadic: boolean;
}

/** An exposed function as the gateway needs to call it. */
export interface Routine {
  schema: string;
  name: string;
  params: RoutineParam[];
  /** `i` immutable, `s` stable, `v` volatile. */
  volatility: "i" | "s" | "v";
  returnsSet: boolean;
  returnsVoid: boolean;
  /** Composite / table row / OUT-parameter record: rendered as JSON objects. */
  returnsComposite: boolean;
}

/** An immutable snapshot of the catalog. */
export interface SchemaSnapshot {
  /** `schema.name` → overloads. */
  routines: Map<string, Routine[]>;
  /** role → [setting, value] pairs to apply with `set_config(…, true)`. */
  roleSettings: Map<string, [string, string][]>;
  loadedAt: number;
}

const ROUTINES_SQL = `
select
  n.nspname as schema,
  p.proname as name,
  p.provolatile as volatility,
  p.proretset as retset,
  p.pronargs::int as nargs,
  p.pronargdefaults::int as ndefaults,
  p.prorettype = 'pg_catalog.void'::pg_catalog.regtype as returns_void,
  (
    rt.typtype = 'c'
    or (rt.typtype = 'd' and exists (
      select 1 from pg_catalog.pg_type bt where bt.oid = rt.typbasetype and bt.typtype = 'c'))
    or (p.prorettype = 'pg_catalog.record'::pg_catalog.regtype
        and p.proargmodes::text[] && array['o', 'b', 't'])
  ) as returns_composite,
  coalesce((
    select pg_catalog.json_agg(pg_catalog.json_build_object(
      'name', coalesce(a.name, ''),
      'type', pg_catalog.format_type(a.type, null),
      'mode', coalesce(a.mode, 'i')) order by a.ord)
    from unnest(
      coalesce(p.proallargtypes, p.proargtypes::pg_catalog.oid[]),
      p.proargmodes::text[],
      p.proargnames) with ordinality as a(type, mode, name, ord)
  ), '[]')::text as args
from pg_catalog.pg_proc p
join pg_catalog.pg_namespace n on n.oid = p.pronamespace
join pg_catalog.pg_type rt on rt.oid = p.prorettype
where n.nspname = any($1::text[]) and p.prokind = 'f'`;

const ROLE_SETTINGS_SQL = `
select r.rolname as role, s.setdatabase <> 0 as db_specific, s.setconfig as config
from pg_catalog.pg_db_role_setting s
join pg_catalog.pg_roles r on r.oid = s.setrole
where s.setdatabase in (0, (select oid from pg_catalog.pg_database where datname = current_database()))
  and pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER')
order by db_specific`;

const USER_SETTINGS_SQL = `select name from pg_catalog.pg_settings where context = 'user'`;

interface RoutineRow {
  schema: string;
  name: string;
  volatility: "i" | "s" | "v";
  retset: boolean;
  nargs: number;
  ndefaults: number;
  returns_void: boolean;
  returns_composite: boolean;
  args: string;
}

/** `character` / `bit` without a length mean length 1 in a cast; PostgREST ignores lengths. */
function castableType(type: string): string {
  return type.replace(/^character(?=(\[\])*$)/, "bpchar").replace(/^bit(?=(\[\])*$)/, "varbit");
}

function toRoutine(row: RoutineRow): Routine {
  const all = JSON.parse(row.args) as { name: string; type: string; mode: string }[];
  const inputs = all.filter((a) => a.mode === "i" || a.mode === "b" || a.mode === "v");
  const firstOptional = row.nargs - row.ndefaults;
  return {
    schema: row.schema,
    name: row.name,
    params: inputs.map((a, i) => ({
      name: a.name,
      type: castableType(a.type),
      required: i < firstOptional,
      variadic: a.mode === "v",
    })),
    volatility: row.volatility,
    returnsSet: row.retset,
    returnsVoid: row.returns_void,
    returnsComposite: row.returns_composite,
  };
}

/** Reads the catalog once. */
export async function loadSnapshot(sql: Sql, schemas: string[]): Promise<SchemaSnapshot> {
  // An empty search_path makes format_type() schema-qualify every type outside
  // pg_catalog, so the type names stay valid under the request's search_path.
  const [rows, roleRows, userRows] = await sql.begin(async (tx) => {
    await tx.unsafe("set local search_path = ''");
    return [
      await tx.unsafe<RoutineRow[]>(ROUTINES_SQL, [schemas]),
      await tx.unsafe<{ role: string; db_specific: boolean; config: string[] }[]>(
        ROLE_SETTINGS_SQL,
      ),
      await tx.unsafe<{ name: string }[]>(USER_SETTINGS_SQL),
    ] as const;
  });
  const routines = new Map<string, Routine[]>();
  for (const row of rows) {
    const routine = toRoutine(row);
    const key = `${routine.schema}.${routine.name}`;
    routines.set(key, [...(routines.get(key) ?? []), routine]);
  }
  const userSettable = new Set(userRows.map((r) => r.name));
  const perRole = new Map<string, Map<string, string>>();
  for (const row of roleRows) { // global first, database-specific overrides
    const settings = perRole.get(row.role) ?? new Map<string, string>();
    for (const entry of row.config ?? []) {
      const eq = entry.indexOf("=");
      const name = entry.slice(0, eq);
      if (eq > 0 && userSettable.has(name) && name !== "search_path") {
        settings.set(name, entry.slice(eq + 1));
      }
    }
    perRole.set(row.role, settings);
  }
  const roleSettings = new Map<string, [string, string][]>();
  for (const [role, settings] of perRole) roleSettings.set(role, [...settings]);
  return { routines, roleSettings, loadedAt: Date.now() };
}

/** Levenshtein similarity in [0, 1], standing in for PostgREST's fuzzy-set hints. */
function similarity(a: string, b: string): number {
  if (a === b) return 1;
  const m = a.length, n = b.length;
  if (!m || !n) return 0;
  let prev = Array.from({ length: n + 1 }, (_, j) => j);
  for (let i = 1; i <= m; i++) {
    const cur = [i];
    for (let j = 1; j <= n; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return 1 - prev[n] / Math.max(m, n);
}

function bestMatch(candidates: string[], target: string, minScore: number): string | null {
  let best: string | null = null, bestScore = minScore;
  for (const c of candidates) {
    const score = similarity(c, target);
    if (score >= bestScore && c !== target) [best, bestScore] = [c, score];
  }
  return best;
}

const paramList = (names: string[]) => `(${[...names].sort().join(", ")})`;

function signature(r: Routine): string {
  return `${r.schema}.${r.name}(${r.params.map((p) => `${p.name} => ${p.type}`).join(", ")})`;
}

/** PostgREST's rule: required parameters all given, optional ones may be, nothing else. */
export function matchesParams(r: Routine, keys: Set<string>): boolean {
  if (r.params.length === 0) return keys.size === 0;
  const required = r.params.filter((p) => p.required).map((p) => p.name);
  const optional = new Set(r.params.filter((p) => !p.required).map((p) => p.name));
  const remaining = [...keys].filter((k) => !optional.has(k));
  return remaining.length === required.length && required.every((name) => keys.has(name));
}

function hasSingleUnnamedJsonParam(r: Routine): boolean {
  return r.params.length === 1 && r.params[0].name === "" &&
    (r.params[0].type === "json" || r.params[0].type === "jsonb");
}

/**
 * Resolves `schema.name` for the given argument names, as PostgREST does.
 * Returns null when nothing matches (the caller may reload and retry);
 * throws PGRST203 when several overloads match.
 */
export function findRoutine(
  snapshot: SchemaSnapshot,
  schema: string,
  name: string,
  keys: Set<string>,
  isJsonPost: boolean,
): Routine | null {
  const overloads = snapshot.routines.get(`${schema}.${name}`) ?? [];
  const matched = overloads.filter((r) => matchesParams(r, keys));
  const fallback = isJsonPost
    ? overloads.filter((r) => !matchesParams(r, keys) && hasSingleUnnamedJsonParam(r))
    : [];
  const pick = matched.length ? matched : fallback;
  if (pick.length > 1) throw ambiguousRpc(pick.map(signature));
  return pick[0] ?? null;
}

/** Builds PGRST202 with PostgREST's "Perhaps you meant…" hint. */
export function noRpcError(
  snapshot: SchemaSnapshot,
  schema: string,
  name: string,
  keys: Set<string>,
  isJsonPost: boolean,
): Error {
  const argNames = [...keys];
  const overloads = snapshot.routines.get(`${schema}.${name}`) ?? [];
  let hint: string | null = null;
  if (overloads.length === 0) {
    const names = [...snapshot.routines.values()].flat().filter((r) => r.schema === schema)
      .map((r) => r.name);
    const found = bestMatch([...new Set(names)], name, 0.75);
    if (found) hint = `Perhaps you meant to call the function ${schema}.${found}`;
  } else {
    const lists = overloads.map((r) => paramList(r.params.map((p) => p.name)));
    const found = bestMatch(lists, paramList(argNames), 0.33);
    if (found) hint = `Perhaps you meant to call the function ${schema}.${name}${found}`;
  }
  return noRpc(schema, name, argNames, isJsonPost, hint);
}

/**
 * Holds the current snapshot and reloads it (on NOTIFY, or on a miss, at most
 * once per `missReloadIntervalMs`). Concurrent reloads share one query.
 */
export class SchemaCache {
  #snapshot: SchemaSnapshot | null = null;
  #inflight: Promise<SchemaSnapshot> | null = null;
  #again = false;
  #lastMissReload = 0;
  #unlisten: (() => Promise<void>) | null = null;

  constructor(
    private readonly sql: Sql,
    private readonly schemas: string[],
    private readonly missReloadIntervalMs = 1000,
  ) {}

  /** The current snapshot, or null before the first successful load. */
  get snapshot(): SchemaSnapshot | null {
    return this.#snapshot;
  }

  /** Loads (or reloads) the catalog; a reload requested mid-flight runs once more after it. */
  reload(): Promise<SchemaSnapshot> {
    if (this.#inflight) {
      this.#again = true;
      return this.#inflight;
    }
    this.#inflight = (async () => {
      try {
        do {
          this.#again = false;
          this.#snapshot = await loadSnapshot(this.sql, this.schemas);
        } while (this.#again);
        return this.#snapshot;
      } finally {
        this.#inflight = null;
      }
    })();
    return this.#inflight;
  }

  /** Reloads after a lookup miss unless one happened recently; true when it reloaded. */
  async reloadOnMiss(): Promise<boolean> {
    const now = Date.now();
    if (now - this.#lastMissReload < this.missReloadIntervalMs) return false;
    this.#lastMissReload = now;
    try {
      await this.reload();
      return true;
    } catch {
      return false;
    }
  }

  /** Subscribes to PostgREST's `pgrst` channel ('reload schema' or empty payload). */
  async listen(onError: (err: unknown) => void): Promise<void> {
    const { unlisten } = await this.sql.listen("pgrst", (payload) => {
      if (payload === "" || payload === "reload schema") this.reload().catch(onError);
    });
    this.#unlisten = unlisten;
  }

  /** Stops listening. */
  async close(): Promise<void> {
    await this.#unlisten?.();
    this.#unlisten = null;
  }
}
