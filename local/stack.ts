/**
 * The whole local stack, as `supabase start` would bring it up, without Docker:
 * Postgres (local/cluster.ts), the PostgREST-compatible gateway that also hosts
 * the Edge Functions (each in its own process), the pg_net worker that performs
 * the requests pg_cron's dispatch tick queues (so the production schedule path
 * runs locally: cron job → net.http_post → /functions/v1/dispatch), the fake
 * WhatsApp Cloud API, the station PWA's server, and an optional faster dispatch
 * ticker (local pg_cron 1.4 ticks once a minute; Supabase's every 10 s).
 *
 * `start` is idempotent and returns once every piece is healthy; services run
 * detached with their logs and pid files under `.local/`.
 *
 * @module
 */
import { join } from "node:path";
import * as cluster from "./cluster.ts";
import {
  ANON_KEY,
  API_URL,
  DB_URL,
  FAKE_WABA_URL,
  mintJwt,
  PUBLISHABLE_KEY,
  SECRET_KEY,
  SERVICE_ROLE_KEY,
  WABA_ACCESS_TOKEN,
  WABA_APP_SECRET,
  WABA_VERIFY_TOKEN,
} from "./env.ts";
import { STATION_URL } from "./station_server.ts";
import { ensureChromium } from "./chromium.ts";
import { denoConfigFlags, deployedFunctions } from "./deploy_layout.ts";

const PID_DIR = join(cluster.LOCAL_DIR, "pids");
const LOG_DIR = join(cluster.LOCAL_DIR, "logs");

/** A long-running piece of the stack, started detached. */
interface Service {
  name: string;
  script: string;
  healthUrl?: string;
  /** Environment the service gets on top of ours (what `supabase secrets set` gives on Supabase). */
  env?: Record<string, string>;
}

export const SERVICES: Service[] = [
  {
    name: "gateway",
    script: "local/gateway/main.ts",
    healthUrl: `${API_URL}/health`,
    // The Edge Functions it hosts talk to the fake WhatsApp API.
    env: {
      WABA_BASE_URL: FAKE_WABA_URL,
      WABA_ACCESS_TOKEN,
      WABA_APP_SECRET,
      WABA_VERIFY_TOKEN,
    },
  },
  {
    name: "fake-waba",
    script: "local/fake_waba/main.ts",
    healthUrl: `${FAKE_WABA_URL}/_fake/stats`,
  },
  { name: "net-worker", script: "local/net_worker.ts" },
  { name: "dispatch-ticker", script: "local/dispatch_ticker.ts" },
  // The reference station PWA (static files + the browser bundle of client/).
  { name: "station", script: "local/station_server.ts", healthUrl: `${STATION_URL}/health` },
];

/** Demo accounts created by sql/demo_seed.sql. */
export const DEMO_USERS = {
  admin: "00000000-0000-4000-8000-00000000a001",
  operator: "00000000-0000-4000-8000-00000000b001",
} as const;

function pidFile(name: string): string {
  return join(PID_DIR, `${name}.pid`);
}

async function readPid(name: string): Promise<number | null> {
  try {
    const pid = Number(await Deno.readTextFile(pidFile(name)));
    Deno.kill(pid, "SIGCONT"); // throws when the process is gone
    return pid;
  } catch {
    return null;
  }
}

async function healthy(url: string): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
    await res.body?.cancel();
    return res.ok;
  } catch {
    return false;
  }
}

async function startService(service: Service): Promise<void> {
  if (await readPid(service.name)) return;
  await Deno.mkdir(PID_DIR, { recursive: true });
  await Deno.mkdir(LOG_DIR, { recursive: true });
  const log = join(LOG_DIR, `${service.name}.log`);
  // setsid detaches the service from this process group, so it outlives `deno task start`.
  const child = new Deno.Command("setsid", {
    args: [
      "sh",
      "-c",
      'exec "$0" "$@" >>"$LOG" 2>&1',
      Deno.execPath(),
      "run",
      "-A",
      join(cluster.ROOT, service.script),
    ],
    env: { ...service.env, LOG: log },
    cwd: cluster.ROOT,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  child.unref();
  await Deno.writeTextFile(pidFile(service.name), String(child.pid));
}

async function waitHealthy(service: Service, timeoutMs = 30_000): Promise<void> {
  if (!service.healthUrl) return;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await healthy(service.healthUrl)) return;
    if (!(await readPid(service.name))) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(
    `Service "${service.name}" did not become healthy; see ${join(LOG_DIR, service.name + ".log")}`,
  );
}

async function stopService(service: Service): Promise<void> {
  const pid = await readPid(service.name);
  if (pid) {
    try {
      Deno.kill(-pid, "SIGTERM"); // the whole setsid group
    } catch {
      try {
        Deno.kill(pid, "SIGTERM");
      } catch { /* already gone */ }
    }
    for (let i = 0; i < 50 && (await readPid(service.name)); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  await Deno.remove(pidFile(service.name)).catch(() => {});
}

/** Brings everything up (idempotent) and loads the demo seed. */
export async function start(opts: { quiet?: boolean } = {}): Promise<void> {
  const t0 = performance.now();
  await cluster.up();
  await ensureChromium(); // the station PWA's browser tests
  await cluster.psql(["-f", join(cluster.ROOT, "sql", "demo_seed.sql")]);
  await storeVaultSecrets();
  await cacheFunctions();
  for (const service of SERVICES) await startService(service);
  for (const service of SERVICES) await waitHealthy(service);
  if (!opts.quiet) await printBanner(performance.now() - t0);
}

/**
 * The Vault secrets the dispatch tick reads (`app.invoke_dispatch`), as the
 * deploy guide has an operator create them on Supabase: the project URL (here,
 * the gateway's) and the project's secret key (`sb_secret_…`, sent as `apikey`).
 */
async function storeVaultSecrets(): Promise<void> {
  await cluster.psql([
    "-v",
    `url=${API_URL}`,
    "-v",
    `key=${SECRET_KEY}`,
    "-f",
    join(cluster.ROOT, "sql", "local_vault_secrets.sql"),
  ]);
}

/** Downloads each function's dependencies with only its own import map, as it deploys. */
async function cacheFunctions(): Promise<void> {
  for (const fn of await deployedFunctions()) {
    await cluster.run(
      [Deno.execPath(), "cache", "--quiet", ...denoConfigFlags(fn), fn.entrypoint],
      {
        quiet: true,
      },
    );
  }
}

export async function stop(): Promise<void> {
  for (const service of [...SERVICES].reverse()) await stopService(service);
  await cluster.down();
}

export async function status(): Promise<boolean> {
  let allUp = await cluster.isRunning();
  console.log(`postgres        ${allUp ? "running" : "stopped"}  ${DB_URL}`);
  for (const service of SERVICES) {
    const pid = await readPid(service.name);
    const ok = pid !== null && (!service.healthUrl || (await healthy(service.healthUrl)));
    allUp &&= ok;
    console.log(
      `${service.name.padEnd(15)} ${ok ? "running" : "stopped"}  ${service.healthUrl ?? ""}`,
    );
  }
  return allUp;
}

async function printBanner(elapsedMs: number): Promise<void> {
  const operatorJwt = await mintJwt({ sub: DEMO_USERS.operator }, { expiresIn: "24h" });
  const demoCode = (await cluster.psql([
    "-At",
    "-c",
    "select app.format_code(code) from app.vouchers where status = 'issued' and code like 'DEM0%' order by code limit 1",
  ])).trim();
  console.log(`
Local stack is up (${(elapsedMs / 1000).toFixed(1)} s).

         API URL: ${API_URL}   (PostgREST-compatible: /rest/v1/rpc/<fn>, schema "api")
   Functions URL: ${API_URL}/functions/v1/<name>
          DB URL: ${DB_URL}
   Fake WhatsApp: ${FAKE_WABA_URL}
     Station PWA: ${STATION_URL}/   (sign in as operator@demo.local / operator-demo-password)
      JWT secret: super-secret-jwt-token-with-at-least-32-characters-long (and ES256 keys: /auth/v1/.well-known/jwks.json)
 publishable key: ${PUBLISHABLE_KEY}
      secret key: ${SECRET_KEY}
 legacy anon key: ${ANON_KEY}
legacy svc. role: ${SERVICE_ROLE_KEY}

Try it (a demo station operator token, valid 24 h; \`deno task token admin|operator\` mints more):

export PUBLISHABLE_KEY=${PUBLISHABLE_KEY}
export OPERATOR_JWT=${operatorJwt}
curl -s ${API_URL}/rest/v1/rpc/preview_voucher \\
  -H "apikey: $PUBLISHABLE_KEY" -H "Authorization: Bearer $OPERATOR_JWT" \\
  -H "Content-Profile: api" -H "Content-Type: application/json" \\
  -d '{"code": "${demoCode}"}'

// supabase-js
import { createClient } from "@supabase/supabase-js";
const supabase = createClient("${API_URL}", PUBLISHABLE_KEY, {
  global: { headers: { Authorization: \`Bearer \${OPERATOR_JWT}\` } },
});
const { data, error } = await supabase.schema("api").rpc("preview_voucher", { code: "${demoCode}" });
`);
}

if (import.meta.main) {
  const cmd = Deno.args[0];
  if (cmd === "start") await start();
  else if (cmd === "stop") await stop();
  else if (cmd === "status") Deno.exit((await status()) ? 0 : 1);
  else if (cmd === "reset") {
    await stop();
    await cluster.reset();
    await start();
  } else if (cmd === "token") {
    const who = (Deno.args[1] ?? "operator") as keyof typeof DEMO_USERS;
    if (!(who in DEMO_USERS)) {
      console.error(
        `Unknown demo user "${who}"; use one of: ${Object.keys(DEMO_USERS).join(", ")}`,
      );
      Deno.exit(2);
    }
    console.log(await mintJwt({ sub: DEMO_USERS[who] }, { expiresIn: "24h" }));
  } else {
    console.error(
      "usage: deno run -A local/stack.ts start|stop|status|reset|token [admin|operator]",
    );
    Deno.exit(2);
  }
}
