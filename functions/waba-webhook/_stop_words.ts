/**
 * Which inbound messages are opt-out requests.
 *
 * Rule: the *whole* message, once normalised, is one of the opt-out keywords,
 * optionally preceded by "please". Normalisation: Unicode NFKC, lower case,
 * `-` / `_` as spaces, every character that is not a letter, digit or space
 * removed (so "STOP.", "Stop!", "🛑 STOP", "*stop*" match), spaces collapsed.
 *
 * Keywords: the carrier-standard set (CTIA / SMS: `stop`, `stopall`,
 * `unsubscribe`, `cancel`, `end`, `quit`) plus `stop all`, `unsub`, `opt out` /
 * `optout` / `opt-out`, and WhatsApp's marketing quick-reply "Stop promotions".
 *
 * Deliberately not matched: a keyword inside a longer sentence ("don't stop",
 * "I want to cancel my order", "the end"), because a false opt-out silently
 * drops a customer. Such messages are logged for a person to read; only the
 * keyword alone (what a template footer tells people to send) opts out.
 *
 * @example
 * isOptOutRequest("STOP."); // true
 * isOptOutRequest("please unsubscribe"); // true
 * isOptOutRequest("don't stop"); // false
 *
 * @module
 */

/** Normalised opt-out keywords. */
export const OPT_OUT_KEYWORDS: ReadonlySet<string> = new Set([
  "stop",
  "stop all",
  "stopall",
  "unsubscribe",
  "unsub",
  "cancel",
  "end",
  "quit",
  "opt out",
  "optout",
  "stop promotions",
]);

/**
 * Lower-cased, punctuation-free form of an inbound text used for matching.
 *
 * @example
 * normalizeInboundText("  Opt-Out! "); // "opt out"
 */
export function normalizeInboundText(text: string): string {
  return text
    .normalize("NFKC")
    .toLowerCase()
    .replace(/[-_]/g, " ")
    .replace(/[^\p{L}\p{N}\s]/gu, "")
    .replace(/\s+/g, " ")
    .trim();
}

/**
 * True when `text` (a message body or a button's text / payload) asks to stop messages.
 *
 * @example
 * isOptOutRequest("Stop promotions"); // true
 */
export function isOptOutRequest(text: string | undefined | null): boolean {
  if (!text) return false;
  const normalized = normalizeInboundText(text);
  const keyword = normalized.startsWith("please ") ? normalized.slice(7) : normalized;
  return OPT_OUT_KEYWORDS.has(keyword);
}
