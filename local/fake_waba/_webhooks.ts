/**
 * Status and inbound-message webhooks of the fake, shaped and signed like
 * Meta's: after a message is accepted it is scheduled through
 * `sent → delivered → read` (or `failed` with an error), due statuses are
 * batched per interval into one `whatsapp_business_account` payload per phone
 * number, signed with `X-Hub-Signature-256`, and POSTed with bounded
 * exponential-backoff retries on non-2xx or network errors.
 *
 * One timer runs only while there is work; events wait in a min-heap (one
 * entry per message in flight, not per status), so memory stays proportional
 * to messages whose statuses are still pending.
 *
 * Payloads follow Meta's status and message webhook references
 * (https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/status/:
 * `{object: "whatsapp_business_account", entry: [{id, changes: [{field:
 * "messages", value: {messaging_product, metadata, statuses | messages}}]}]}`,
 * each status `{id, status, timestamp, recipient_id, biz_opaque_callback_data?,
 * pricing?, errors?}`). They are built here from those references and signed
 * by `_signature.ts`, not with the production schemas and signer, so the
 * webhook function is tested against an independent sender.
 *
 * @module
 */
import type { FakeWabaConfig } from "./_config.ts";
import { GRAPH_ERRORS, wamid } from "./_graph.ts";
import { HUB_SIGNATURE_HEADER, hubSignature256 } from "./_signature.ts";

/** Delivery states a status webhook reports for an outbound message. */
export type MessageStatus = "sent" | "delivered" | "read" | "failed";

/** An inbound text message webhook, as the fake builds it. */
interface InboundPayload {
  object: "whatsapp_business_account";
  entry: {
    id: string;
    changes: {
      field: "messages";
      value: {
        messaging_product: "whatsapp";
        metadata: { display_phone_number: string; phone_number_id: string };
        contacts: { profile: { name: string }; wa_id: string }[];
        messages: {
          from: string;
          id: string;
          timestamp: string;
          type: "text";
          text: { body: string };
        }[];
      };
    }[];
  }[];
}

/** A message accepted by the fake, as the dispatcher needs it. */
export interface TrackedMessage {
  wamid: string;
  phoneNumberId: string;
  recipientId: string;
  acceptedAtMs: number;
  callbackData?: string;
}

interface Tracked extends TrackedMessage {
  failCode: number | null;
  willRead: boolean;
}

interface StatusEvent {
  due: number;
  seq: number;
  stage: MessageStatus;
  msg: Tracked;
}

interface DeliveryJob {
  generation: number;
  body: string;
  attempt: number;
  nextAt: number;
  duplicate: boolean;
}

/** Counters exposed through `/_fake/stats`. */
export interface WebhookStats {
  statuses: Record<MessageStatus, number>;
  inbound: number;
  payloads: number;
  posts: number;
  delivered: number;
  failedAttempts: number;
  gaveUp: number;
  duplicates: number;
  dropped: number;
  scheduledMessages: number;
  pending: number;
  inFlight: number;
}

class MinHeap {
  #items: StatusEvent[] = [];

  get size(): number {
    return this.#items.length;
  }

  peek(): StatusEvent | undefined {
    return this.#items[0];
  }

  push(item: StatusEvent): void {
    const a = this.#items;
    a.push(item);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!less(a[i], a[p])) break;
      [a[i], a[p]] = [a[p], a[i]];
      i = p;
    }
  }

  pop(): StatusEvent | undefined {
    const a = this.#items;
    if (a.length === 0) return undefined;
    const top = a[0];
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < a.length && less(a[l], a[m])) m = l;
        if (r < a.length && less(a[r], a[m])) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m], a[i]];
        i = m;
      }
    }
    return top;
  }

  clear(): void {
    this.#items = [];
  }
}

function less(a: StatusEvent, b: StatusEvent): boolean {
  return a.due < b.due || (a.due === b.due && a.seq < b.seq);
}

function emptyStats(): WebhookStats {
  return {
    statuses: { sent: 0, delivered: 0, read: 0, failed: 0 },
    inbound: 0,
    payloads: 0,
    posts: 0,
    delivered: 0,
    failedAttempts: 0,
    gaveUp: 0,
    duplicates: 0,
    dropped: 0,
    scheduledMessages: 0,
    pending: 0,
    inFlight: 0,
  };
}

const unixSeconds = (ms: number) => String(Math.floor(ms / 1000));

/** Schedules, batches, signs and delivers the fake's webhooks. */
export class WebhookDispatcher {
  readonly #config: () => FakeWabaConfig;
  readonly #random: () => number;
  readonly #signal: AbortSignal;
  readonly #heap = new MinHeap();
  #ready: DeliveryJob[] = [];
  #retrying: DeliveryJob[] = [];
  readonly #inFlight = new Set<Promise<void>>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #timerInterval = 0;
  #seq = 0;
  #generation = 0;
  #stats = emptyStats();

  constructor(config: () => FakeWabaConfig, random: () => number, signal: AbortSignal) {
    this.#config = config;
    this.#random = random;
    this.#signal = signal;
  }

  /** Schedules the status lifecycle of an accepted message (no-op when webhooks are off). */
  track(message: TrackedMessage): void {
    const cfg = this.#config().webhook;
    if (cfg.url === null || this.#signal.aborted) return;
    const forced = cfg.failRecipients[message.recipientId];
    const failCode = forced ?? (this.#random() < cfg.failRate ? cfg.failCode : null);
    const msg: Tracked = { ...message, failCode, willRead: this.#random() < cfg.readRate };
    this.#heap.push({
      due: message.acceptedAtMs + cfg.sentDelayMs,
      seq: this.#seq++,
      stage: failCode === null ? "sent" : "failed",
      msg,
    });
    this.#stats.scheduledMessages = this.#heap.size;
    this.#ensureTicking();
  }

  /**
   * Queues an inbound user text message (e.g. "STOP") for delivery through the
   * same signed webhook. Returns the inbound message id.
   */
  inbound(input: { from: string; text: string; phoneNumberId?: string; name?: string }): string {
    const cfg = this.#config();
    if (cfg.webhook.url === null) {
      throw new WebhookDisabledError("Cannot deliver an inbound message: no webhook URL is set");
    }
    const from = input.from.replace(/\D/g, "");
    const id = wamid(from);
    const payload: InboundPayload = {
      object: "whatsapp_business_account",
      entry: [{
        id: cfg.wabaId,
        changes: [{
          value: {
            messaging_product: "whatsapp",
            metadata: {
              display_phone_number: cfg.displayPhoneNumber,
              phone_number_id: input.phoneNumberId ?? cfg.defaultPhoneNumberId,
            },
            contacts: [{ profile: { name: input.name ?? "Test User" }, wa_id: from }],
            messages: [{
              from,
              id,
              timestamp: unixSeconds(Date.now()),
              type: "text",
              text: { body: input.text },
            }],
          },
          field: "messages",
        }],
      }],
    };
    this.#stats.inbound++;
    this.#enqueue(JSON.stringify(payload), false);
    this.#ensureTicking();
    return id;
  }

  /**
   * Queues an account-level webhook — `message_template_status_update` or
   * `phone_number_quality_update` — for delivery: `{object, entry: [{id: <WABA id>,
   * time, changes: [{value, field}]}]}`, the shape of Meta's references for those
   * fields (https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/message_template_status_update,
   * …/phone_number_quality_update).
   */
  accountEvent(field: string, value: Record<string, unknown>): void {
    const cfg = this.#config();
    if (cfg.webhook.url === null) {
      throw new WebhookDisabledError(`Cannot deliver a ${field} webhook: no webhook URL is set`);
    }
    const payload = {
      object: "whatsapp_business_account",
      entry: [{
        id: cfg.wabaId,
        time: Math.floor(Date.now() / 1000),
        changes: [{ value, field }],
      }],
    };
    this.#enqueue(JSON.stringify(payload), false);
    this.#ensureTicking();
  }

  /** True when nothing is scheduled, queued or being delivered. */
  get idle(): boolean {
    return this.#heap.size === 0 && this.#ready.length === 0 && this.#retrying.length === 0 &&
      this.#inFlight.size === 0;
  }

  /** Resolves true once idle, or false after `timeoutMs`. */
  async waitForIdle(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.idle) {
      if (Date.now() >= deadline || this.#signal.aborted) return this.idle;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return true;
  }

  /** Counters, with current queue sizes. */
  stats(): WebhookStats {
    return {
      ...this.#stats,
      statuses: { ...this.#stats.statuses },
      scheduledMessages: this.#heap.size,
      pending: this.#ready.length + this.#retrying.length,
      inFlight: this.#inFlight.size,
    };
  }

  /** Forgets scheduled statuses and queued payloads and zeroes counters (in-flight POSTs finish). */
  reset(): void {
    this.#heap.clear();
    this.#ready = [];
    this.#retrying = [];
    this.#stats = emptyStats();
    this.#generation++;
  }

  /** Stops the timer and waits for in-flight POSTs (aborted by the shared signal). */
  async stop(): Promise<void> {
    this.#stopTicking();
    this.reset();
    await Promise.allSettled([...this.#inFlight]);
  }

  #ensureTicking(): void {
    if (this.#signal.aborted) return;
    const interval = this.#config().webhook.batchIntervalMs;
    if (this.#timer !== undefined && this.#timerInterval === interval) return;
    this.#stopTicking();
    this.#timerInterval = interval;
    this.#timer = setInterval(() => this.#tick(), interval);
  }

  #stopTicking(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #tick(): void {
    const cfg = this.#config();
    if (cfg.webhook.url === null) {
      this.#stats.dropped += this.#ready.length + this.#retrying.length;
      this.reset();
      this.#stopTicking();
      return;
    }
    const now = Date.now();
    const due: StatusEvent[] = [];
    while ((this.#heap.peek()?.due ?? Infinity) <= now) due.push(this.#heap.pop()!);
    if (due.length > 0) this.#batch(due, now, cfg);

    if (this.#retrying.length > 0) {
      const still: DeliveryJob[] = [];
      for (const job of this.#retrying) (job.nextAt <= now ? this.#ready : still).push(job);
      this.#retrying = still;
    }
    this.#pump();
    if (this.idle) this.#stopTicking();
  }

  #batch(events: StatusEvent[], now: number, cfg: FakeWabaConfig): void {
    const w = cfg.webhook;
    const byNumber = new Map<string, Record<string, unknown>[]>();
    for (const ev of events) {
      const { msg } = ev;
      this.#stats.statuses[ev.stage]++;
      const status: Record<string, unknown> = {
        id: msg.wamid,
        status: ev.stage,
        timestamp: unixSeconds(now),
        recipient_id: msg.recipientId,
      };
      if (msg.callbackData !== undefined) status.biz_opaque_callback_data = msg.callbackData;
      if (ev.stage === "sent" || ev.stage === "delivered") {
        status.pricing = {
          billable: true,
          pricing_model: "PMP",
          type: "regular",
          category: "marketing",
        };
      }
      if (ev.stage === "failed" && msg.failCode !== null) {
        const spec = GRAPH_ERRORS[msg.failCode];
        const title = spec?.title ?? "Message failed";
        status.errors = [{
          code: msg.failCode,
          title,
          message: title,
          error_data: { details: spec?.details ?? "Message failed to send." },
          href: "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
        }];
      }
      const list = byNumber.get(msg.phoneNumberId) ?? [];
      list.push(status);
      byNumber.set(msg.phoneNumberId, list);

      const next = ev.stage === "sent"
        ? { stage: "delivered" as const, at: msg.acceptedAtMs + w.deliveredDelayMs }
        : ev.stage === "delivered" && msg.willRead
        ? { stage: "read" as const, at: msg.acceptedAtMs + w.readDelayMs }
        : null;
      if (next) {
        this.#heap.push({
          due: Math.max(next.at, ev.due),
          seq: this.#seq++,
          stage: next.stage,
          msg,
        });
      }
    }
    for (const [phoneNumberId, statuses] of byNumber) {
      if (w.shuffle) shuffleInPlace(statuses, this.#random);
      for (let i = 0; i < statuses.length; i += w.maxBatchSize) {
        const payload = {
          object: "whatsapp_business_account",
          entry: [{
            id: cfg.wabaId,
            changes: [{
              value: {
                messaging_product: "whatsapp",
                metadata: {
                  display_phone_number: cfg.displayPhoneNumber,
                  phone_number_id: phoneNumberId,
                },
                statuses: statuses.slice(i, i + w.maxBatchSize),
              },
              field: "messages",
            }],
          }],
        };
        this.#enqueue(JSON.stringify(payload), false);
      }
    }
  }

  #enqueue(body: string, duplicate: boolean): void {
    const w = this.#config().webhook;
    const job: DeliveryJob = {
      generation: this.#generation,
      body,
      attempt: 0,
      nextAt: 0,
      duplicate,
    };
    if (!duplicate) this.#stats.payloads++;
    if (w.shuffle && this.#ready.length > 0) {
      this.#ready.splice(Math.floor(this.#random() * (this.#ready.length + 1)), 0, job);
    } else {
      this.#ready.push(job);
    }
    while (this.#ready.length + this.#retrying.length > w.maxPending && this.#ready.length > 0) {
      this.#ready.shift();
      this.#stats.dropped++;
    }
  }

  #pump(): void {
    const cfg = this.#config();
    while (this.#inFlight.size < cfg.webhook.concurrency && this.#ready.length > 0) {
      const job = this.#ready.shift()!;
      const p = this.#deliver(job, cfg).finally(() => {
        this.#inFlight.delete(p);
        if (!this.#signal.aborted && !this.idle) this.#ensureTicking();
      });
      this.#inFlight.add(p);
    }
  }

  async #deliver(job: DeliveryJob, cfg: FakeWabaConfig): Promise<void> {
    const url = cfg.webhook.url;
    if (url === null) return;
    job.attempt++;
    this.#stats.posts++;
    let ok = false;
    try {
      const res = await fetch(url, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "user-agent": "facebookexternalua",
          [HUB_SIGNATURE_HEADER]: await hubSignature256(job.body, cfg.appSecret),
        },
        body: job.body,
        signal: AbortSignal.any([AbortSignal.timeout(cfg.webhook.timeoutMs), this.#signal]),
      });
      await res.body?.cancel();
      ok = res.status >= 200 && res.status < 300;
    } catch {
      ok = false;
    }
    if (this.#signal.aborted || job.generation !== this.#generation) return;
    if (ok) {
      this.#stats.delivered++;
      if (job.duplicate) this.#stats.duplicates++;
      if (!job.duplicate && this.#random() < cfg.webhook.duplicateRate) {
        this.#enqueue(job.body, true);
      }
      return;
    }
    this.#stats.failedAttempts++;
    if (job.attempt >= cfg.webhook.maxAttempts) {
      this.#stats.gaveUp++;
      return;
    }
    job.nextAt = Date.now() + cfg.webhook.retryBaseMs * 2 ** (job.attempt - 1);
    this.#retrying.push(job);
  }
}

/** Thrown when an inbound message is injected while webhooks are disabled. */
export class WebhookDisabledError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WebhookDisabledError";
  }
}

function shuffleInPlace<T>(items: T[], random: () => number): void {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
}
