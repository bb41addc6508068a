/**
 * Graph API answer shapes for the fake: error bodies with Meta's codes,
 * titles, details and HTTP statuses, and realistic ids.
 *
 * The error body follows Meta's "Error response syntax" — `{error: {message,
 * type, code, error_data: {messaging_product, details}, error_subcode?,
 * fbtrace_id}}`, `message` being "(#code) title" — and the codes, titles and
 * statuses its error-code table
 * (https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/).
 * The fake builds them itself rather than with the production schemas, so the
 * client's parsing is checked against this independent reading.
 *
 * @module
 */

/** A Graph API error answer, as the fake sends it. */
export interface GraphErrorBody {
  error: {
    /** `(#<code>) <title>`. */
    message: string;
    type: string;
    code: number;
    error_subcode?: number;
    error_data: { messaging_product: "whatsapp"; details: string };
    /** Set on 5xx answers. */
    is_transient?: boolean;
    fbtrace_id: string;
  };
}

/** What the fake answers for a Graph code: HTTP status, title and details. */
export interface GraphErrorSpec {
  status: number;
  title: string;
  details: string;
  type?: string;
}

/**
 * Meta's statuses for the codes the fake produces. Throttling (4, 80007,
 * 130429, 131056) is HTTP 400 on the Cloud API, not 429.
 */
export const GRAPH_ERRORS: Readonly<Record<number, GraphErrorSpec>> = {
  1: {
    status: 500,
    title: "An unknown error occurred",
    details: "Invalid request or possible server error.",
  },
  2: {
    status: 503,
    title: "Service temporarily unavailable",
    details: "Temporary due to downtime or due to being overloaded.",
  },
  4: {
    status: 400,
    title: "Application request limit reached",
    details: "The app has reached its API call rate limit.",
  },
  100: {
    status: 400,
    title: "Invalid parameter",
    details: "The request included one or more unsupported or misspelled parameters.",
  },
  190: {
    status: 401,
    title: "Invalid OAuth access token - Cannot parse access token",
    details: "The access token is invalid or has expired.",
  },
  368: {
    status: 400,
    title: "Temporarily blocked for policies violations",
    details: "The WhatsApp Business Account is restricted from messaging.",
  },
  80007: {
    status: 400,
    title: "Rate limit issues",
    details: "The WhatsApp Business Account has reached its rate limit.",
  },
  130429: {
    status: 400,
    title: "Rate limit hit",
    details: "Cloud API message throughput has been reached.",
  },
  131008: {
    status: 400,
    title: "Required parameter is missing",
    details: "The request is missing a required parameter.",
  },
  131009: {
    status: 400,
    title: "Parameter value is not valid",
    details: "One or more parameter values are invalid.",
  },
  131026: {
    status: 400,
    title: "Message undeliverable",
    details: "Unable to deliver message.",
  },
  131047: {
    status: 400,
    title: "Re-engagement message",
    details:
      "More than 24 hours have passed since the recipient last replied to the sender number.",
  },
  131048: {
    status: 400,
    title: "Spam rate limit hit",
    details:
      "Message failed to send because there are restrictions on how many messages can be sent from this phone number.",
  },
  131049: {
    status: 400,
    title: "This message was not delivered to maintain healthy ecosystem engagement.",
    details:
      "In order to maintain a healthy ecosystem engagement, the message failed to be delivered.",
  },
  131031: {
    status: 400,
    title: "Account has been locked",
    details: "The WhatsApp Business Account is locked.",
  },
  131050: {
    status: 400,
    title:
      "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business",
    details: "The recipient has stopped marketing messages from this business.",
  },
  131056: {
    status: 400,
    title: "(Business Account, Consumer Account) pair rate limit hit",
    details:
      "Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time.",
  },
  131057: {
    status: 400,
    title: "Account in maintenance mode",
    details: "Business Account is in maintenance mode.",
  },
  132000: {
    status: 400,
    title: "Number of parameters does not match the expected number of params",
    details: "The number of variable parameter values does not match the template.",
  },
  132001: {
    status: 404,
    title: "Template name does not exist in the translation",
    details: "The template does not exist in the specified language or has not been approved.",
  },
  132015: {
    status: 400,
    title: "Template is Paused",
    details: "The template has been paused due to low quality.",
  },
  132016: {
    status: 400,
    title: "Template is Disabled",
    details: "The template has been permanently disabled due to low quality.",
  },
  132018: {
    status: 400,
    title: "There was an issue with the parameters in your template.",
    details: "Param text cannot have new-line/tab characters or more than 4 consecutive spaces.",
  },
};

const ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/** A random `fbtrace_id`-looking string (23 characters). */
export function fbtraceId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(23));
  return Array.from(bytes, (b) => ID_ALPHABET[b & 63]).join("");
}

/** The Graph error body for `code` (unknown codes get HTTP 400 and a generic title). */
export function graphError(
  code: number,
  overrides: { status?: number; message?: string; details?: string; subcode?: number } = {},
): { status: number; body: GraphErrorBody } {
  const spec = GRAPH_ERRORS[code] ?? { status: 400, title: "Error", details: "Error." };
  const status = overrides.status ?? spec.status;
  const error: GraphErrorBody["error"] = {
    message: overrides.message ?? `(#${code}) ${spec.title}`,
    type: spec.type ?? "OAuthException",
    code,
    error_data: { messaging_product: "whatsapp", details: overrides.details ?? spec.details },
    fbtrace_id: fbtraceId(),
  };
  if (overrides.subcode !== undefined) error.error_subcode = overrides.subcode;
  if (status >= 500) error.is_transient = true;
  return { status, body: { error } };
}

/** The Graph body for a plain HTTP failure with no WhatsApp code (5xx → code 1 or 2). */
export function serverError(status: number): { status: number; body: GraphErrorBody } {
  return graphError(status === 503 ? 2 : 1, { status });
}

let wamidCounter = 0;

/**
 * A wamid shaped like Meta's: `wamid.` + base64 of a small protobuf-like
 * record holding the recipient's digits and an 18-hex-character unique id.
 * Unique within the process (a counter) and unguessable (random bits).
 *
 * @example
 * wamid("254712345678"); // "wamid.HBgMMjU0NzEyMzQ1Njc4FQIAERgSMDAwMDAwMDFBM0Y5QzJENDVFAA=="
 */
export function wamid(waId: string): string {
  const counter = (++wamidCounter).toString(16).toUpperCase().padStart(8, "0");
  const rand = Array.from(
    crypto.getRandomValues(new Uint8Array(5)),
    (b) => b.toString(16).toUpperCase().padStart(2, "0"),
  ).join("");
  const unique = counter.slice(-8) + rand; // 18 hex characters
  const digits = new TextEncoder().encode(waId.slice(0, 20));
  const head = [0x1c, 0x18, digits.length];
  const mid = [0x15, 0x02, 0x00, 0x11, 0x18, unique.length];
  const bytes = new Uint8Array([
    ...head,
    ...digits,
    ...mid,
    ...new TextEncoder().encode(unique),
    0,
  ]);
  return `wamid.${btoa(String.fromCharCode(...bytes))}`;
}
