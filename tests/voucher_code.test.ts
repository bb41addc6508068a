/**
 * Voucher codes in TypeScript (client/voucher_code.ts): the frozen
 * vectors shared with the pgTAP suite, exhaustive typo detection, generation, and
 * a cross-check against the SQL implementation on the local cluster.
 *
 * @module
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { DB_URL } from "../local/cluster.ts";
import {
  checkChar,
  CODE_ALPHABET,
  CODE_LENGTH,
  formatCode,
  generateCode,
  InvalidCodeChecksumError,
  InvalidCodeFormatError,
  isValidCode,
  normalizeCode,
  parseCode,
  VoucherCodeError,
  type VoucherCodeErrorCode,
} from "../client/voucher_code.ts";

interface Vectors {
  alphabet: string;
  valid: { canonical: string; display: string; inputs: string[] }[];
  invalid: { input: string; error: VoucherCodeErrorCode; reason: string }[];
}

const vectors: Vectors = JSON.parse(
  await Deno.readTextFile(new URL("./fixtures/voucher_code_vectors.json", import.meta.url)),
);

/** The error code parseCode() throws for `input`, or null when it accepts it. */
function parseErrorCode(input: string): VoucherCodeErrorCode | null {
  try {
    parseCode(input);
    return null;
  } catch (e) {
    if (e instanceof VoucherCodeError) return e.code;
    throw e;
  }
}

function replaceAt(code: string, pos: number, text: string): string {
  return code.slice(0, pos) + text + code.slice(pos + text.length);
}

Deno.test("The alphabet is Crockford base32: 32 distinct symbols without I, L, O or U", () => {
  assert.equal(CODE_ALPHABET, vectors.alphabet);
  assert.equal(new Set(CODE_ALPHABET).size, 32);
  assert.match(CODE_ALPHABET, /^[0-9A-Z]+$/);
  for (const excluded of "ILOU") assert.ok(!CODE_ALPHABET.includes(excluded), excluded);
});

Deno.test("checkChar() computes the check character of every frozen vector", () => {
  assert.ok(vectors.valid.length >= 5);
  for (const { canonical } of vectors.valid) {
    assert.equal(checkChar(canonical.slice(0, 14)), canonical[14], canonical);
  }
});

Deno.test("parseCode() accepts every valid vector in canonical, display and messy form", () => {
  for (const { canonical, display, inputs } of vectors.valid) {
    for (const input of [canonical, display, ...inputs]) {
      assert.equal(parseCode(input), canonical, JSON.stringify(input));
      assert.ok(isValidCode(input), JSON.stringify(input));
    }
  }
});

Deno.test("normalizeCode() maps lower case, separators and O/I/L look-alikes to the canonical code", () => {
  for (const { canonical, inputs } of vectors.valid) {
    for (const input of inputs) {
      assert.equal(normalizeCode(input), canonical, JSON.stringify(input));
    }
  }
  assert.equal(normalizeCode(CODE_ALPHABET), CODE_ALPHABET);
  assert.equal(normalizeCode("oOiIlL"), "001111");
  // Only ASCII letters change case: a ligature must not turn into letters.
  assert.equal(normalizeCode("\uFB01"), "\uFB01");
});

Deno.test("formatCode() shows a canonical code as three dash-separated groups of five", () => {
  for (const { canonical, display } of vectors.valid) assert.equal(formatCode(canonical), display);
  assert.equal(formatCode("ABC"), "ABC", "input that is not 15 characters is returned unchanged");
});

Deno.test("parseCode() rejects every invalid vector with its documented error class and code", () => {
  assert.ok(vectors.invalid.length >= 5);
  for (const { input, error, reason } of vectors.invalid) {
    const expected = error === "invalid_code_format"
      ? InvalidCodeFormatError
      : InvalidCodeChecksumError;
    assert.throws(() => parseCode(input), expected, reason);
    assert.equal(parseErrorCode(input), error, reason);
    assert.equal(isValidCode(input), false, reason);
  }
});

Deno.test("Every single substitution of every valid vector, check character included, is rejected", () => {
  let checked = 0;
  for (const { canonical } of vectors.valid) {
    for (let pos = 0; pos < CODE_LENGTH; pos++) {
      for (const symbol of CODE_ALPHABET) {
        if (symbol === canonical[pos]) continue;
        const typo = replaceAt(canonical, pos, symbol);
        assert.equal(parseErrorCode(typo), "invalid_code_checksum", `${canonical} → ${typo}`);
        checked++;
      }
    }
  }
  assert.equal(checked, vectors.valid.length * 15 * 31);
});

Deno.test("Every swap of two different neighbours in every valid vector is rejected", () => {
  let checked = 0;
  for (const { canonical } of vectors.valid) {
    for (let pos = 0; pos < CODE_LENGTH - 1; pos++) {
      const [a, b] = [canonical[pos], canonical[pos + 1]];
      if (a === b) continue;
      const typo = replaceAt(canonical, pos, b + a);
      assert.equal(parseErrorCode(typo), "invalid_code_checksum", `${canonical} → ${typo}`);
      checked++;
    }
  }
  assert.ok(checked > 100, `only ${checked} swaps checked`);
});

Deno.test("Every code detects every substitution and adjacent transposition (proof by linearity)", () => {
  // Validity is linear over GF(2): code ⊕ error is valid iff the error pattern is.
  // A substitution adds one non-zero symbol e; swapping a, b adds a ⊕ b at two
  // neighbouring positions. So if no such pattern is itself a valid code, no code
  // can survive either kind of typo. 15 × 31 + 14 × 31 patterns cover them all.
  const zero = "0".repeat(CODE_LENGTH);
  let patterns = 0;
  for (const e of CODE_ALPHABET.slice(1)) {
    for (let pos = 0; pos < CODE_LENGTH; pos++) {
      assert.equal(isValidCode(replaceAt(zero, pos, e)), false, `substitution ${e} at ${pos}`);
      patterns++;
      if (pos < CODE_LENGTH - 1) {
        assert.equal(isValidCode(replaceAt(zero, pos, e + e)), false, `swap ${e} at ${pos}`);
        patterns++;
      }
    }
  }
  assert.equal(patterns, 15 * 31 + 14 * 31);
  assert.ok(isValidCode(zero), "the all-zero code is the identity of the linearity argument");
});

Deno.test("Error messages quote the input as typed and shorten long input", () => {
  assert.throws(() => parseCode("7KQ2M-9DX4T-RCB83"), {
    message:
      'Voucher code "7KQ2M-9DX4T-RCB83" has a typo: its check character does not match. Check the code and type it again.',
  });
  assert.throws(() => parseCode("A".repeat(100)), {
    message: `Voucher code "${
      "A".repeat(40)
    }…" is not in the expected format: 15 characters from 0-9 and A-Z without I, L, O and U.`,
  });
});

Deno.test("checkChar() refuses data that is not 14 alphabet characters", () => {
  assert.throws(() => checkChar("ABC"), InvalidCodeFormatError);
  assert.throws(() => checkChar("7KQ2M9XD4TRCBU"), InvalidCodeFormatError);
  assert.throws(() => checkChar("7kq2m9xd4trcb8"), InvalidCodeFormatError);
});

Deno.test("generateCode() returns distinct valid codes, uniform over the alphabet", () => {
  const n = 5000;
  const codes = Array.from({ length: n }, generateCode);
  assert.equal(new Set(codes).size, n);
  for (const code of codes) assert.equal(parseCode(code), code);
  // Each symbol lands at each data position 156 times on average (sd ≈ 12);
  // 80..240 is ±6 sd, far from any plausible run and far from a biased generator.
  for (let pos = 0; pos < 14; pos++) {
    const seen = new Map<string, number>();
    for (const code of codes) seen.set(code[pos], (seen.get(code[pos]) ?? 0) + 1);
    for (const symbol of CODE_ALPHABET) {
      const count = seen.get(symbol) ?? 0;
      assert.ok(count >= 80 && count <= 240, `symbol ${symbol} at ${pos}: ${count}`);
    }
  }
});

Deno.test("SQL and TypeScript agree on generated codes, check characters and normalisation", async () => {
  const sql = postgres(DB_URL, {
    max: 1,
    connect_timeout: 5,
    idle_timeout: 1,
    onnotice: () => {},
    connection: { statement_timeout: 10_000 },
  });
  try {
    // Codes made by app.new_codes validate in TypeScript.
    const generated = await sql<{ code: string }[]>`select code from app.new_codes(2000) as code`;
    assert.equal(generated.length, 2000);
    for (const { code } of generated) assert.equal(parseCode(code), code);

    // Random data: both sides compute the same check character.
    const data = Array.from({ length: 2000 }, () => generateCode().slice(0, 14));
    const checks = await sql<{ check: string }[]>`
      select app.code_check_char(d) as check from unnest(${data}::text[]) with ordinality as t(d, i)
      order by i`;
    assert.deepEqual(checks.map((r) => r.check), data.map(checkChar));

    // Fuzzed messy input: both sides normalise identically.
    const pool = CODE_ALPHABET + "abcxyz" + "oOiIlLuU" + " \t\n-_./*,ÜßẞĞ" +
      "\u00A0\u2007\u202F\u200B\u2060\uFEFF\u2010\u2011\u2012\u2013\u2014\u2015\u2212\uFE63\uFF0D\uFB01";
    const pick = () => pool[crypto.getRandomValues(new Uint32Array(1))[0] % pool.length];
    const messy = Array.from(
      { length: 2000 },
      (_, i) => Array.from({ length: i % 24 }, pick).join(""),
    );
    const normalised = await sql<{ n: string }[]>`
      select app.normalize_code(m) as n from unnest(${messy}::text[]) with ordinality as t(m, i)
      order by i`;
    assert.deepEqual(normalised.map((r) => r.n), messy.map(normalizeCode));
  } finally {
    await sql.end({ timeout: 5 });
  }
});
