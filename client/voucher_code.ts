/**
 * Voucher codes: generation, normalisation, validation and display.
 *
 * A code is 14 random data characters (70 bits from the Web Crypto CSPRNG) and
 * one check character, in Crockford's base32 alphabet (digits and upper-case
 * letters without I, L, O, U). Canonical form: `7KQ2M9XD4TRCB83` (what the
 * database stores); display form: `7KQ2M-9XD4T-RCB83`.
 *
 * The check character is the value of the data over GF(2^5) with primitive
 * polynomial x^5 + x^2 + 1: c = Σ dᵢ·α^(15−i). Every one of the 15 positions
 * carries a distinct non-zero weight, so every single-character substitution and
 * every adjacent transposition changes the sum and is rejected, offline, before
 * any round trip. The database implements the same algorithm
 * (`app.code_check_char`, `app.parse_code` in
 * `supabase/migrations/20261128000200_voucher_codes.sql`), and
 * `tests/fixtures/voucher_code_vectors.json` pins both.
 *
 * Web APIs only: runs in Deno, Edge Functions and browsers (the station PWA).
 *
 * @example
 * ```ts
 * import { formatCode, generateCode, parseCode } from "./voucher_code.ts";
 *
 * const code = generateCode(); // e.g. "7KQ2M9XD4TRCB83" (canonical, stored as is)
 * formatCode(code); // "7KQ2M-9XD4T-RCB83" (shown to people)
 * parseCode("7kq2m 9xd4t rcb83"); // "7KQ2M9XD4TRCB83" (normalised, then checked)
 * parseCode("7KQ2M-9DX4T-RCB83"); // throws InvalidCodeChecksumError (X and D swapped)
 * ```
 *
 * @module
 */

/** Crockford's base32 alphabet: a character's index is its 5-bit value. */
export const CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/** Number of random data characters in a code (14 × 5 = 70 bits). */
export const CODE_DATA_LENGTH = 14;

/** Number of characters in a canonical code: the data and one check character. */
export const CODE_LENGTH = CODE_DATA_LENGTH + 1;

/** Characters of the display form between groups. */
const GROUP_SIZE = 5;

/** A canonical code: 15 alphabet characters. */
const CANONICAL = /^[0-9A-HJKMNP-TV-Z]{15}$/;

/** Lower-case letters and look-alikes map to alphabet characters; O→0, I→1, L→1. */
const LOOK_ALIKES: Readonly<Record<string, string>> = { O: "0", I: "1", L: "1" };

/**
 * Separators people type or paste between groups; normalisation deletes them.
 * Whitespace (including no-break, narrow and zero-width spaces and the BOM),
 * `-`, `_`, `.` and the Unicode hyphens and dashes. Keep in step with
 * `app.normalize_code`.
 */
const SEPARATORS =
  /[\t\n\v\f\r \-_.\u00A0\u2007\u202F\u200B\u2060\uFEFF\u2010-\u2015\u2212\uFE63\uFF0D]/g;

/** The longest part of a rejected input quoted in an error message. */
const QUOTE_LIMIT = 40;

/** The error codes a client can branch on; the same strings as the RPC errors. */
export type VoucherCodeErrorCode = "invalid_code_format" | "invalid_code_checksum";

/** Base class of the errors {@link parseCode} throws: `.code` is the machine code. */
export abstract class VoucherCodeError extends Error {
  /** Stable machine code, identical to the database's error code. */
  abstract readonly code: VoucherCodeErrorCode;

  /** @param input The value as the user typed it. */
  constructor(readonly input: string, message: string) {
    super(message);
  }
}

/**
 * The input is not a code: after normalisation it is not 15 characters of the
 * alphabet (too short, too long, or a character such as `U` or `*`).
 *
 * @example
 * ```ts
 * try {
 *   parseCode("ABC");
 * } catch (e) {
 *   if (e instanceof InvalidCodeFormatError) console.log(e.code); // "invalid_code_format"
 * }
 * ```
 */
export class InvalidCodeFormatError extends VoucherCodeError {
  readonly code = "invalid_code_format";
  override readonly name = "InvalidCodeFormatError";

  /** @param input The value as the user typed it. */
  constructor(input: string) {
    super(
      input,
      `Voucher code ${
        quote(input)
      } is not in the expected format: 15 characters from 0-9 and A-Z without I, L, O and U.`,
    );
  }
}

/**
 * The input has the shape of a code but its check character does not match: a
 * typo (a wrong character or two swapped neighbours).
 *
 * @example
 * ```ts
 * try {
 *   parseCode("7KQ2M-9DX4T-RCB83");
 * } catch (e) {
 *   if (e instanceof InvalidCodeChecksumError) console.log(e.code); // "invalid_code_checksum"
 * }
 * ```
 */
export class InvalidCodeChecksumError extends VoucherCodeError {
  readonly code = "invalid_code_checksum";
  override readonly name = "InvalidCodeChecksumError";

  /** @param input The value as the user typed it. */
  constructor(input: string) {
    super(
      input,
      `Voucher code ${
        quote(input)
      } has a typo: its check character does not match. Check the code and type it again.`,
    );
  }
}

/** Quotes user input for an error message, shortened when it is long. */
function quote(input: string): string {
  const shown = input.length > QUOTE_LIMIT ? `${input.slice(0, QUOTE_LIMIT)}…` : input;
  return `"${shown}"`;
}

/** Multiplies a GF(2^5) element by α (x), reducing by x^5 + x^2 + 1. */
function mulAlpha(x: number): number {
  return ((x << 1) ^ (x & 0x10 ? 0x25 : 0)) & 0x1f;
}

/**
 * Puts typed or pasted input into canonical shape, without validating it:
 * ASCII upper case, separators deleted (spaces, dashes, dots, underscores and
 * their Unicode cousins), `O` → `0`, `I` and `L` → `1`.
 *
 * @example
 * ```ts
 * normalizeCode(" 7kq2m-9xd4t–rcb83 "); // "7KQ2M9XD4TRCB83"
 * normalizeCode("oil"); // "011"
 * ```
 */
export function normalizeCode(input: string): string {
  return input
    .replace(SEPARATORS, "")
    // ASCII only, as in SQL: a locale-aware upper case maps "ﬁ" to "FI".
    .replace(/[a-z]/g, (ch) => ch.toUpperCase())
    .replace(/[OIL]/g, (ch) => LOOK_ALIKES[ch]);
}

/**
 * The check character of 14 data characters (canonical alphabet, upper case).
 *
 * @throws {InvalidCodeFormatError} when `data` is not 14 alphabet characters.
 *
 * @example
 * ```ts
 * checkChar("00000000000000"); // "0"
 * ```
 */
export function checkChar(data: string): string {
  if (data.length !== CODE_DATA_LENGTH) throw new InvalidCodeFormatError(data);
  let c = 0;
  for (const ch of data) {
    const d = CODE_ALPHABET.indexOf(ch);
    if (d < 0) throw new InvalidCodeFormatError(data);
    c = mulAlpha(c ^ d);
  }
  return CODE_ALPHABET[c];
}

/**
 * Normalises `input` and checks it; returns the canonical 15-character code.
 *
 * @throws {InvalidCodeFormatError} when the normalised input is not 15 alphabet characters.
 * @throws {InvalidCodeChecksumError} when the check character does not match (a typo).
 *
 * @example
 * ```ts
 * parseCode("7kq2m 9xd4t rcb83"); // "7KQ2M9XD4TRCB83"
 * ```
 */
export function parseCode(input: string): string {
  const canonical = normalizeCode(input);
  if (!CANONICAL.test(canonical)) throw new InvalidCodeFormatError(input);
  if (checkChar(canonical.slice(0, CODE_DATA_LENGTH)) !== canonical[CODE_DATA_LENGTH]) {
    throw new InvalidCodeChecksumError(input);
  }
  return canonical;
}

/**
 * Whether `input` normalises to a well-formed code with a matching check character.
 *
 * @example
 * ```ts
 * isValidCode("7KQ2M-9XD4T-RCB83"); // true
 * isValidCode("7KQ2M-9DX4T-RCB83"); // false
 * ```
 */
export function isValidCode(input: string): boolean {
  try {
    parseCode(input);
    return true;
  } catch (e) {
    if (e instanceof VoucherCodeError) return false;
    throw e;
  }
}

/**
 * Display form of a canonical code: three groups of five joined by dashes.
 * Anything that is not 15 characters long is returned unchanged.
 *
 * @example
 * ```ts
 * formatCode("7KQ2M9XD4TRCB83"); // "7KQ2M-9XD4T-RCB83"
 * ```
 */
export function formatCode(code: string): string {
  if (code.length !== CODE_LENGTH) return code;
  const groups: string[] = [];
  for (let i = 0; i < CODE_LENGTH; i += GROUP_SIZE) groups.push(code.slice(i, i + GROUP_SIZE));
  return groups.join("-");
}

/**
 * A fresh canonical code from `crypto.getRandomValues`: each data character
 * takes the low 5 bits of its own random byte (uniform over the alphabet, no
 * modulo bias), 70 random bits in all.
 *
 * @example
 * ```ts
 * const code = generateCode(); // e.g. "7KQ2M9XD4TRCB83"
 * isValidCode(code); // true
 * ```
 */
export function generateCode(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(CODE_DATA_LENGTH));
  let data = "";
  for (const byte of bytes) data += CODE_ALPHABET[byte & 0x1f];
  return data + checkChar(data);
}
