/**
 * Makes a webhook payload storable in Postgres before anything reads it.
 *
 * JSON allows any Unicode escape, Postgres text does not: `\u0000` makes the
 * `::jsonb` cast of `api.record_waba_statuses` fail ("unsupported Unicode escape
 * sequence", SQLSTATE 22P05), and so does a lone surrogate such as `\ud800`
 * (22P02). Meta signs and retries such a delivery like any other, and it retries
 * every non-2xx answer for days, so refusing it with a 500 would only replay
 * the same failure. Instead the strings are cleaned where they are parsed: NUL
 * characters are removed and lone surrogates become U+FFFD, and everything the
 * payload carries is recorded — a status whose wamid was damaged this way
 * matches no message and is kept as unknown, harmlessly.
 *
 * @module
 */

/**
 * Parses JSON text, cleaning every string value (see the module doc).
 *
 * @throws {SyntaxError} when `text` is not JSON.
 *
 * @example
 * parseStorableJson('{"title":"Re-engagement\\u0000 message"}');
 * // { value: { title: "Re-engagement message" }, cleaned: 1 }
 */
export function parseStorableJson(text: string): { value: unknown; cleaned: number } {
  let cleaned = 0;
  const value = JSON.parse(text, (_key, v: unknown) => {
    if (typeof v !== "string") return v;
    const storable = v.replaceAll("\u0000", "").toWellFormed(); // NUL: Postgres text cannot hold it
    if (storable !== v) cleaned++;
    return storable;
  });
  return { value, cleaned };
}
