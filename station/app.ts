/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * The reference station PWA: sign in as a station operator, type or scan a
 * code, look it up, redeem it — online or offline. Everything durable goes
 * through the client library's redeem queue (IndexedDB + Web Locks), so a
 * redemption taken offline is sent when the connection returns, exactly once.
 *
 * Bundled for the browser with the library and supabase-js into `app.js`
 * (`local/station_server.ts` runs `deno bundle --platform browser`). Reads
 * `config.json` (`{apiUrl, anonKey}`) beside it.
 *
 * @module
 */
import {
  ApiError,
  createApiClient,
  formatCode,
  IndexedDbQueueStore,
  isAuthError,
  NetworkError,
  parseCode,
  type QueuedRedemption,
  type QueueState,
  RedeemQueue,
  VoucherApi,
  VoucherCodeError,
  type VoucherView,
} from "../client/mod.ts";

interface StationConfig {
  apiUrl: string;
  anonKey: string;
}

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

const els = {
  banner: $("banner"),
  who: $("who"),
  whoEmail: $("who-email"),
  signOut: $<HTMLButtonElement>("sign-out"),
  signInView: $("sign-in-view"),
  signInForm: $<HTMLFormElement>("sign-in-form"),
  email: $<HTMLInputElement>("email"),
  password: $<HTMLInputElement>("password"),
  signInError: $("sign-in-error"),
  stationView: $("station-view"),
  codeForm: $<HTMLFormElement>("code-form"),
  code: $<HTMLInputElement>("code"),
  codeError: $("code-error"),
  redeem: $<HTMLButtonElement>("redeem-button"),
  scan: $<HTMLButtonElement>("scan-button"),
  scanner: $("scanner"),
  video: $<HTMLVideoElement>("scanner-video"),
  scanStop: $<HTMLButtonElement>("scan-stop"),
  preview: $("preview"),
  previewTitle: $("preview-title"),
  previewDetails: $("preview-details"),
  result: $("result"),
  history: $("history"),
};

/** How long staff wait for an online answer before the item is left to the queue. */
const ONLINE_ANSWER_MS = 8000;

const money = (minor: number, currency: string) => {
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(minor / 100);
  } catch {
    return `${(minor / 100).toFixed(2)} ${currency}`;
  }
};
const when = (iso: unknown) =>
  typeof iso === "string" && !Number.isNaN(Date.parse(iso))
    ? new Date(iso).toLocaleString()
    : String(iso ?? "");

// ---- start ------------------------------------------------------------------------------------

const config: StationConfig = await fetch("config.json").then((r) => r.json());
const supabase = createApiClient(config.apiUrl, config.anonKey);
const api = new VoucherApi(supabase);
const store = await IndexedDbQueueStore.open();
const queue = new RedeemQueue({ api, store });
let queueStarted = false;

if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("sw.js").catch((e) => console.warn("No service worker:", e));
}

queue.subscribe(renderBanner);
queue.onSettled(announceSettled);
addEventListener("online", () => renderBanner(queue.state));
addEventListener("offline", () => renderBanner(queue.state));

const { data: { session } } = await supabase.auth.getSession();
if (session) await showStation(session.user.email ?? "");
else showSignIn();
document.body.dataset.ready = "true";

// ---- sign in / out ----------------------------------------------------------------------------

function showSignIn(message = ""): void {
  els.stationView.hidden = true;
  els.who.hidden = true;
  els.signInView.hidden = false;
  els.signInError.textContent = message;
  els.email.focus();
}

async function showStation(email: string): Promise<void> {
  els.signInView.hidden = true;
  els.stationView.hidden = false;
  els.who.hidden = false;
  els.whoEmail.textContent = `Signed in as ${email}`;
  if (!queueStarted) {
    queueStarted = true;
    await queue.start();
  } else {
    await queue.resume();
  }
  await renderHistory();
  els.code.focus();
}

els.signInForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  els.signInError.textContent = "";
  if (!navigator.onLine) {
    els.signInError.textContent = "You are offline. Signing in needs a connection.";
    return;
  }
  const { data, error } = await supabase.auth.signInWithPassword({
    email: els.email.value.trim(),
    password: els.password.value,
  });
  if (error || !data.session) {
    els.signInError.textContent = error?.code === "invalid_credentials" || error?.status === 400
      ? "Wrong email or password."
      : `Could not sign in: ${error?.message ?? "no session"}`;
    els.password.select();
    return;
  }
  els.password.value = "";
  await showStation(data.user?.email ?? "");
});

els.signOut.addEventListener("click", async () => {
  if (
    queue.state.queued > 0 && !confirm(
      `${queue.state.queued} redemptions are still waiting to be sent. They stay on this device ` +
        "and are sent after the next sign-in. Sign out?",
    )
  ) return;
  await supabase.auth.signOut({ scope: "local" });
  showSignIn();
});

// ---- codes ------------------------------------------------------------------------------------

/** The canonical code, or null after showing why the input is not one. */
function readCode(): string | null {
  try {
    const code = parseCode(els.code.value);
    els.code.removeAttribute("aria-invalid");
    els.codeError.textContent = "";
    return code;
  } catch (e) {
    if (!(e instanceof VoucherCodeError)) throw e;
    els.code.setAttribute("aria-invalid", "true");
    els.codeError.textContent = e.code === "invalid_code_checksum"
      ? "This code has a typo: check each character and type it again."
      : "That is not a voucher code: 15 characters from 0–9 and A–Z (no I, L, O or U).";
    els.code.focus();
    return null;
  }
}

els.code.addEventListener("input", () => {
  if (els.code.getAttribute("aria-invalid")) {
    els.code.removeAttribute("aria-invalid");
    els.codeError.textContent = "";
  }
});

// Enter or "Look up": preview.
els.codeForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const code = readCode();
  if (!code) return;
  if (!navigator.onLine) {
    showResult(
      "info",
      "Offline: cannot look the voucher up. You can still redeem it; it is sent when the connection returns.",
    );
    return;
  }
  try {
    renderPreview(await api.previewVoucher(code, { timeoutMs: ONLINE_ANSWER_MS }));
  } catch (e) {
    els.preview.hidden = true;
    showError(e);
  }
});

els.redeem.addEventListener("click", async () => {
  const code = readCode();
  if (!code) return;
  els.redeem.disabled = true;
  els.code.value = ""; // ready for the next voucher while this one is stored
  try {
    const { item, duplicate } = await queue.enqueue(code);
    if (duplicate) {
      showResult(
        item.state === "redeemed" ? "conflict" : "info",
        item.state === "redeemed"
          ? `${formatCode(code)} was already redeemed here.`
          : `${formatCode(code)} is already waiting to be sent.`,
      );
      return;
    }
    if (!navigator.onLine) {
      showResult(
        "queued",
        `Saved ${formatCode(code)}. It will be sent when the connection returns.`,
      );
      return;
    }
    showResult("info", `Redeeming ${formatCode(code)}…`);
    const settled = await queue.waitFor(item.key, ONLINE_ANSWER_MS);
    if (!settled || settled.state === "queued") {
      showResult(
        "queued",
        `Saved ${formatCode(code)}. The server is slow; it will be sent shortly.`,
      );
    } else {
      showOutcome(settled);
    }
  } catch (e) {
    showError(e);
  } finally {
    els.redeem.disabled = false;
    els.code.focus();
  }
});

// ---- camera -----------------------------------------------------------------------------------

interface BarcodeDetectorLike {
  detect(source: HTMLVideoElement): Promise<{ rawValue: string }[]>;
}
const Detector = (globalThis as unknown as {
  BarcodeDetector?: new (opts: { formats: string[] }) => BarcodeDetectorLike;
}).BarcodeDetector;
let stream: MediaStream | null = null;

if (Detector && typeof navigator.mediaDevices?.getUserMedia === "function") {
  els.scan.hidden = false;
  els.scan.addEventListener("click", startScan);
  els.scanStop.addEventListener("click", stopScan);
}

async function startScan(): Promise<void> {
  try {
    const detector = new Detector!({ formats: ["qr_code", "code_128", "code_39"] });
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    els.video.srcObject = stream;
    els.scanner.hidden = false;
    await els.video.play();
    els.scanStop.focus();
    for (let i = 0; stream && i < 600; i++) { // ~2 minutes at most
      const [found] = await detector.detect(els.video).catch(() => []);
      if (found?.rawValue) {
        els.code.value = found.rawValue;
        stopScan();
        if (readCode()) showResult("info", `Scanned ${formatCode(parseCode(found.rawValue))}.`);
        return;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    stopScan();
  } catch (e) {
    stopScan();
    showResult("error", `The camera could not be used: ${(e as Error).message}. Type the code.`);
  }
}

function stopScan(): void {
  stream?.getTracks().forEach((t) => t.stop());
  stream = null;
  els.scanner.hidden = true;
  els.code.focus();
}

// ---- rendering --------------------------------------------------------------------------------

function renderBanner(s: QueueState): void {
  const online = navigator.onLine;
  const waiting = s.queued === 1 ? "1 redemption waiting" : `${s.queued} redemptions waiting`;
  let text: string;
  let state: string;
  if (s.blocked?.signInNeeded) {
    state = "blocked";
    text = `Sign in again to send ${waiting}.`;
    if (els.stationView.hidden === false) showSignIn("Your session ended. Sign in again.");
  } else if (s.blocked) {
    state = "blocked";
    text = `Sending stopped: ${s.blocked.message} (${waiting}).`;
  } else if (!online) {
    state = "offline";
    text = s.queued > 0
      ? `Offline — ${waiting} on this device.`
      : "Offline — redemptions are saved on this device.";
  } else if (s.queued > 0) {
    state = "sending";
    text = s.retryAt ? `Server busy — ${waiting}, retrying.` : `Sending — ${waiting}.`;
  } else {
    state = "online";
    text = s.lastSuccessAt ? "Online — everything is sent." : "Online.";
  }
  els.banner.dataset.state = state;
  els.banner.dataset.queued = String(s.queued);
  els.banner.dataset.flushing = String(s.flushing);
  if (els.banner.textContent !== text) els.banner.textContent = text;
  void renderHistory();
}

function renderPreview(v: VoucherView): void {
  const rows: [string, string][] = [
    ["Code", v.code],
    ["Status", v.status],
    ["Value", money(v.amount_minor, v.currency)],
    ["Campaign", v.campaign_name],
    ["Expires", v.expires_at ? when(v.expires_at) : "never"],
  ];
  if (v.redeemed_station) {
    rows.push(["Redeemed at", `${v.redeemed_station.name} (${v.redeemed_station.code})`]);
    rows.push(["Redeemed on", when(v.redeemed_at)]);
  }
  if (v.redeemable_here !== undefined) {
    rows.push(["Redeemable here", v.redeemable_here ? "yes" : "no"]);
  }
  els.previewDetails.replaceChildren(...rows.flatMap(([k, val]) => {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = val;
    return [dt, dd];
  }));
  els.preview.hidden = false;
  showResult(
    v.redeemable_here === false || v.status !== "issued" ? "conflict" : "info",
    v.status === "issued"
      ? `${v.code}: ${money(v.amount_minor, v.currency)}, ${
        v.redeemable_here === false ? "not redeemable at this station" : "can be redeemed"
      }.`
      : `${v.code} is ${v.status}${
        v.redeemed_station ? ` at ${v.redeemed_station.name} on ${when(v.redeemed_at)}` : ""
      }.`,
  );
}

/** One sentence for an item's final answer. */
function outcomeText(item: QueuedRedemption): { kind: string; text: string } {
  const code = formatCode(item.code);
  if (item.state === "redeemed" && item.result) {
    return {
      kind: "success",
      text: `Redeemed ${code}: ${
        money(item.result.amount_minor, item.result.currency)
      } (${item.result.campaign_name}).`,
    };
  }
  if (item.state === "queued") return { kind: "queued", text: `${code} is waiting to be sent.` };
  const e = item.error!;
  const d = e.details ?? {};
  switch (e.code) {
    case "voucher_already_redeemed":
      return {
        kind: "conflict",
        text: `Not redeemed: ${code} was already redeemed at ${d.station_name ?? d.station_code} (${
          d.station_code ?? "?"
        }) on ${when(d.redeemed_at)}.`,
      };
    case "voucher_expired":
      return { kind: "conflict", text: `Not redeemed: ${code} expired on ${when(d.expires_at)}.` };
    case "voucher_void":
      return {
        kind: "conflict",
        text: `Not redeemed: ${code} was voided on ${when(d.voided_at)}.`,
      };
    case "voucher_not_found":
      return { kind: "conflict", text: `Not redeemed: ${code} does not exist.` };
    case "voucher_not_yet_valid":
      return {
        kind: "conflict",
        text: `Not redeemed: ${code} is valid from ${when(d.starts_at)}.`,
      };
    case "station_not_allowed":
      return {
        kind: "conflict",
        text: `Not redeemed: ${code} cannot be redeemed at this station.`,
      };
    default:
      return { kind: "conflict", text: `Not redeemed: ${code}: ${e.message}` };
  }
}

function showOutcome(item: QueuedRedemption): void {
  const { kind, text } = outcomeText(item);
  showResult(kind, text);
}

/** A queued item answered later (e.g. after reconnecting): say so if it is news. */
function announceSettled(item: QueuedRedemption): void {
  if (item.state === "refused") showOutcome(item);
  void renderHistory();
}

function showResult(kind: string, text: string): void {
  els.result.dataset.kind = kind;
  els.result.textContent = text;
}

function showError(e: unknown): void {
  if (e instanceof VoucherCodeError) {
    readCode();
  } else if (e instanceof ApiError && isAuthError(e)) {
    showSignIn("Your session ended. Sign in again.");
  } else if (e instanceof ApiError) {
    showResult("conflict", e.message);
  } else if (e instanceof NetworkError) {
    showResult("error", "No connection to the server. Redemptions are still saved on this device.");
  } else {
    showResult("error", `Something went wrong: ${(e as Error)?.message ?? e}`);
  }
}

let historyPending = false;
async function renderHistory(): Promise<void> {
  if (historyPending) return;
  historyPending = true;
  try {
    const items = await queue.items(20);
    els.history.replaceChildren(...items.map((item) => {
      const li = document.createElement("li");
      const { kind, text } = outcomeText(item);
      li.dataset.kind = kind;
      li.dataset.state = item.state;
      li.textContent = text;
      return li;
    }));
  } finally {
    historyPending = false;
  }
}
