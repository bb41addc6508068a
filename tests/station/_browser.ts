/// <reference lib="dom" />
/**
 * Harness of the station PWA's browser tests: a gateway in its own process (so
 * a test can kill it with SIGKILL and start it again on the same port), the
 * station server pointed at it, and headless Debian Chromium through
 * `playwright-core` with a fresh user-data-dir per test. Screenshots go to
 * `.local/artifacts/station/` (not committed).
 *
 * @module
 */
import { join } from "node:path";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { CHROMIUM_ARGS, CHROMIUM_PATH } from "../../local/chromium.ts";
import { LOCAL_DIR, ROOT } from "../../local/cluster.ts";
import { ANON_KEY } from "../../local/env.ts";
import { serveStation, type StationServer } from "../../local/station_server.ts";

export const ARTIFACTS = join(LOCAL_DIR, "artifacts", "station");

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** The gateway as a child process on a fixed port: kill() is a crash, start() a restart. */
export class GatewayProcess {
  readonly port = freePort();
  readonly url = `http://127.0.0.1:${this.port}`;
  #child: Deno.ChildProcess | null = null;

  async start(): Promise<void> {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", join(ROOT, "local", "gateway", "main.ts")],
      env: { GATEWAY_PORT: String(this.port) },
      cwd: ROOT,
      stdin: "null",
      stdout: "null",
      stderr: "inherit",
    }).spawn();
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      try {
        const res = await fetch(`${this.url}/health`);
        await res.body?.cancel();
        if (res.ok) return;
      } catch { /* not yet */ }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`Gateway on ${this.url} did not start`);
  }

  /** SIGKILL: no graceful shutdown, in-flight requests die with it. */
  async kill(): Promise<void> {
    if (!this.#child) return;
    this.#child.kill("SIGKILL");
    await this.#child.status;
    this.#child = null;
  }

  async stop(): Promise<void> {
    if (!this.#child) return;
    this.#child.kill("SIGTERM");
    await this.#child.status;
    this.#child = null;
  }
}

/** Everything one browser test needs; `close()` tears it down. */
export interface StationHarness {
  gateway: GatewayProcess;
  station: StationServer;
  context: BrowserContext;
  page: Page;
  close(): Promise<void>;
}

/** Starts a gateway, the station server and Chromium with a fresh profile. */
export async function openStation(): Promise<StationHarness> {
  const gateway = new GatewayProcess();
  await gateway.start();
  const station = await serveStation({
    port: 0,
    config: { apiUrl: gateway.url, anonKey: ANON_KEY },
  });
  const profile = await Deno.makeTempDir({ prefix: "station-chromium-" });
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM_PATH,
    args: CHROMIUM_ARGS,
    headless: true,
    viewport: { width: 480, height: 900 },
  });
  const page = context.pages()[0] ?? await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  return {
    gateway,
    station,
    context,
    page,
    async close() {
      await context.close().catch(() => {});
      await station.shutdown().catch(() => {});
      await gateway.stop().catch(() => {});
      await Deno.remove(profile, { recursive: true }).catch(() => {});
    },
  };
}

/** Loads the app and waits until it has decided between sign-in and the station view. */
export async function load(page: Page, url: string): Promise<void> {
  await page.goto(url);
  await page.waitForSelector("body[data-ready=true]");
}

/** Loads the app, signs in, and waits for the service worker to control the page. */
export async function signIn(page: Page, url: string, email: string, password: string) {
  await load(page, url);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByLabel("Voucher code").waitFor();
  await page.evaluate(async () => {
    await navigator.serviceWorker.ready;
  });
}

/** The banner's queued count. */
export async function queued(page: Page): Promise<number> {
  return Number(await page.locator("#banner").getAttribute("data-queued"));
}

/** Waits until the banner shows `n` queued (the queue's own count). */
export async function waitQueued(page: Page, n: number, timeout = 20_000): Promise<void> {
  await page.waitForFunction(
    (n) => document.getElementById("banner")?.dataset.queued === String(n),
    n,
    { timeout },
  );
}

/** Types a code and presses Redeem. */
export async function redeem(page: Page, code: string): Promise<void> {
  await page.getByLabel("Voucher code").fill(code);
  await page.getByRole("button", { name: "Redeem" }).click();
}

/** Redeems a valid code and waits for the app's answer about it (saved, redeemed or refused). */
export async function redeemAndWait(page: Page, code: string): Promise<string> {
  await redeem(page, code);
  const result = page.locator("#result", { hasText: code });
  await page.waitForFunction(
    (code) => {
      const text = document.getElementById("result")?.textContent ?? "";
      return text.includes(code) && !text.startsWith("Redeeming");
    },
    code,
  );
  return await result.innerText();
}

/** Saves a screenshot under ARTIFACTS. */
export async function shot(page: Page, name: string): Promise<void> {
  await Deno.mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}
