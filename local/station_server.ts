/**
 * Serves the reference station PWA (`station/`) on 127.0.0.1:$STATION_PORT
 * (54340): its static files, `app.js` — `station/app.ts` bundled with the
 * client library and supabase-js by `deno bundle --platform browser` into
 * `.local/station/` (rebuilt when a source under `station/` or `client/` is
 * newer) — and `config.json` with the API URL and anon key the app uses. The
 * app calls the gateway cross-origin (the gateway answers CORS), as a PWA on
 * its own host calls a hosted Supabase project.
 *
 * 127.0.0.1 is a secure context, so service workers, IndexedDB and Web Locks
 * work without TLS.
 *
 * @example
 * ```sh
 * deno run -A local/station_server.ts   # http://127.0.0.1:54340/
 * ```
 *
 * @module
 */
import { extname, join, normalize } from "node:path";
import { LOCAL_DIR, ROOT } from "./cluster.ts";
import { ANON_KEY, API_URL } from "./env.ts";

export const STATION_PORT = Number(Deno.env.get("STATION_PORT") ?? 54340);
export const STATION_URL = `http://127.0.0.1:${STATION_PORT}`;

const SOURCE_DIR = join(ROOT, "station");
const BUILD_DIR = join(LOCAL_DIR, "station");
const BUNDLE = join(BUILD_DIR, "app.js");
const WATCHED = [join(ROOT, "station"), join(ROOT, "client")];

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".webmanifest": "application/manifest+json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
};

async function newestSource(): Promise<number> {
  let newest = 0;
  for (const dir of WATCHED) {
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.isFile || !entry.name.endsWith(".ts")) continue;
      const { mtime } = await Deno.stat(join(dir, entry.name));
      newest = Math.max(newest, mtime?.getTime() ?? 0);
    }
  }
  return newest;
}

let building: Promise<void> | null = null;

/** Bundles station/app.ts (with client/ and supabase-js) for the browser when out of date. */
export function buildBundle(): Promise<void> {
  building ??= (async () => {
    try {
      const built = await Deno.stat(BUNDLE).then((s) => s.mtime?.getTime() ?? 0, () => 0);
      if (built >= await newestSource()) return;
      await Deno.mkdir(BUILD_DIR, { recursive: true });
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "bundle",
          "--platform",
          "browser",
          "--format",
          "esm",
          "--minify",
          "--sourcemap",
          "linked",
          "--output",
          BUNDLE,
          join(SOURCE_DIR, "app.ts"),
        ],
        cwd: ROOT,
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (!out.success) {
        throw new Error(`deno bundle failed:\n${new TextDecoder().decode(out.stderr)}`);
      }
    } finally {
      building = null;
    }
  })();
  return building;
}

function notFound(): Response {
  return new Response("Not found", { status: 404, headers: { "Content-Type": "text/plain" } });
}

async function file(path: string): Promise<Response> {
  try {
    const body = await Deno.readFile(path);
    return new Response(body, {
      headers: {
        "Content-Type": TYPES[extname(path)] ?? "application/octet-stream",
        // Always revalidate: the service worker keeps the offline copy.
        "Cache-Control": "no-cache",
      },
    });
  } catch {
    return notFound();
  }
}

/** Where the app finds the API (what `config.json` answers). */
export interface StationConfig {
  apiUrl: string;
  anonKey: string;
}

/** The request handler for an app pointed at `config` (tests point it at their own gateway). */
export function stationHandler(
  config: StationConfig = { apiUrl: API_URL, anonKey: ANON_KEY },
): (req: Request) => Promise<Response> {
  return async (req) => {
    const url = new URL(req.url);
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("Method not allowed", { status: 405 });
    }
    const path = decodeURIComponent(url.pathname);
    if (path === "/" || path === "/index.html") return await file(join(SOURCE_DIR, "index.html"));
    if (path === "/health") return Response.json({ status: "ok" });
    if (path === "/config.json") {
      return Response.json(config, { headers: { "Cache-Control": "no-cache" } });
    }
    if (path === "/app.js" || path === "/app.js.map") {
      try {
        await buildBundle();
      } catch (err) {
        console.error(err);
        return new Response(`console.error(${JSON.stringify(String(err))});`, {
          status: 500,
          headers: { "Content-Type": TYPES[".js"] },
        });
      }
      return await file(join(BUILD_DIR, path.slice(1)));
    }
    // Static files of station/ only: no TypeScript sources, no escaping the folder.
    const rel = normalize(path).replace(/^\/+/, "");
    if (rel.startsWith("..") || rel.endsWith(".ts") || !(extname(rel) in TYPES)) return notFound();
    return await file(join(SOURCE_DIR, rel));
  };
}

/** A running station server. */
export interface StationServer {
  url: string;
  shutdown(): Promise<void>;
}

/** Builds the bundle, then serves the app on 127.0.0.1:`port` (0 picks a free port). */
export async function serveStation(
  opts: { port?: number; config?: StationConfig } = {},
): Promise<StationServer> {
  await buildBundle();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: opts.port ?? STATION_PORT, onListen: () => {} },
    stationHandler(opts.config),
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    shutdown: () => server.shutdown(),
  };
}

if (import.meta.main) {
  const server = await serveStation();
  console.log(`Station PWA on ${server.url}/ (API ${API_URL})`);
  const stop = async () => {
    await server.shutdown();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}
