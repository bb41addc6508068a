/**
 * Debian's Chromium for the station PWA's browser tests: installed by
 * `deno task start` when missing (as root; otherwise it says how), launched
 * headless by `playwright-core` with the flags this closed network needs.
 *
 * Without `--disable-background-networking` and friends Chromium keeps trying
 * to reach Google's services, and the sandboxed network refuses it.
 *
 * @example
 * ```ts
 * import { chromium } from "playwright-core";
 * import { CHROMIUM_ARGS, CHROMIUM_PATH } from "./local/chromium.ts";
 * const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS });
 * ```
 *
 * @module
 */
import { run } from "./cluster.ts";

/** Debian's chromium binary. */
export const CHROMIUM_PATH = Deno.env.get("CHROMIUM_PATH") ?? "/usr/bin/chromium";

/** Headless flags for a closed network and a shared, GPU-less machine. */
export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];

/** Whether the Chromium binary is there. */
export async function hasChromium(): Promise<boolean> {
  try {
    return (await Deno.stat(CHROMIUM_PATH)).isFile;
  } catch {
    return false;
  }
}

/** Installs Debian's `chromium` package when the binary is missing. */
export async function ensureChromium(): Promise<void> {
  if (await hasChromium()) return;
  if (Deno.uid() !== 0) {
    throw new Error(
      `Chromium is missing (${CHROMIUM_PATH}); the station tests need it. Install it first:\n` +
        "  sudo sh -c 'apt-get update && apt-get install -y chromium'",
    );
  }
  console.log("Installing Debian package: chromium (for the station PWA tests)");
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  await run(["apt-get", "update", "-qq"], { env, quiet: true });
  await run(["apt-get", "install", "-y", "-qq", "chromium"], { env, quiet: true });
}
