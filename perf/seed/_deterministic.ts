/**
 * Deterministic identities of the perf dataset: UUIDs, voucher codes, phone
 * numbers and statuses derived from the seed value, computed identically here
 * (TypeScript) and in SQL (`codeSql`), so the seed is idempotent — a second run
 * inserts nothing new — and the summary can name codes without querying.
 *
 * Codes have the production shape (14 Crockford base32 data characters and the
 * GF(2^5) check character of app.code_check_char) but are derived from md5 of
 * the seed: perf datasets are guessable by design. Never seed production.
 *
 * @module
 */
import { createHash } from "node:crypto";

export const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

function md5(text: string): Uint8Array {
  return new Uint8Array(createHash("md5").update(text).digest());
}

/**
 * A UUID derived from the seed, a kind and a number (md5, formatted as a UUID).
 *
 * @example
 * seededUuid(42, "station", 1); // the same string on every run
 */
export function seededUuid(
  seed: number,
  kind: string,
  n: number | string,
): string {
  const hex = createHash("md5").update(`perf:${seed}:${kind}:${n}`).digest(
    "hex",
  );
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-8${hex.slice(17, 20)}-${
    hex.slice(20, 32)
  }`;
}

/** Multiplies by α in GF(2^5) with x^5 + x^2 + 1 (as app.code_check_char does). */
function mulAlpha(x: number): number {
  return ((x << 1) ^ (x & 16 ? 37 : 0)) & 31;
}

/** weights[i][d] = d·α^(14−i) for data position i (0-based): the check symbol is their XOR. */
const WEIGHTS: number[][] = Array.from(
  { length: 14 },
  (_, i) =>
    Array.from({ length: 32 }, (_, d) => {
      let v = d;
      for (let k = 0; k < 14 - i; k++) v = mulAlpha(v);
      return v;
    }),
);

/** Check character of 14 canonical data characters (same value as app.code_check_char). */
export function checkChar(data: string): string {
  if (data.length !== 14) {
    throw new RangeError(`Expected 14 data characters, got "${data}"`);
  }
  let c = 0;
  for (let i = 0; i < 14; i++) {
    const d = ALPHABET.indexOf(data[i]);
    if (d < 0) throw new RangeError(`"${data[i]}" is not in the code alphabet`);
    c ^= WEIGHTS[i][d];
  }
  return ALPHABET[c];
}

/** Canonical code of voucher n of a seed: 14 symbols from md5(`<seed>:v:<n>`), then the check character. */
export function seededCode(seed: number, n: number): string {
  const h = md5(`${seed}:v:${n}`);
  let data = "";
  for (let i = 0; i < 14; i++) data += ALPHABET[h[i] & 31];
  return data + checkChar(data);
}

/** Display form `XXXXX-XXXXX-XXXXX`. */
export function displayCode(code: string): string {
  return `${code.slice(0, 5)}-${code.slice(5, 10)}-${code.slice(10, 15)}`;
}

/**
 * SQL of `seededCode(seed, n)` for an integer expression `n` and a bound seed
 * parameter (e.g. `$1`): a scalar subquery, set-based like app.new_codes — the
 * md5 bits stand in for gen_random_bytes, then the same masks compute the check
 * symbol (bit parities) and the same SWAR arithmetic maps symbols to ASCII.
 */
export function codeSql(nExpr: string, seedParam: string): string {
  const swar = (col: string) =>
    `${col} + x'30303030303030'::bigint
        + 7 * (((${col} + x'76767676767676'::bigint) >> 7) & x'01010101010101'::bigint)
        + (((${col} + x'6e6e6e6e6e6e6e'::bigint) >> 7) & x'01010101010101'::bigint)
        + (((${col} + x'6c6c6c6c6c6c6c'::bigint) >> 7) & x'01010101010101'::bigint)
        + (((${col} + x'6a6a6a6a6a6a6a'::bigint) >> 7) & x'01010101010101'::bigint)
        + (((${col} + x'65656565656565'::bigint) >> 7) & x'01010101010101'::bigint)`;
  return `(select convert_from(substr(int8send(${swar("v.hi")}), 2, 7)
        || int8send(((${swar("v.lo")}) << 8) | get_byte('${ALPHABET}'::bytea, v.c)), 'UTF8')
    from (
      select substring(r.bits, 1, 56)::bigint & x'1f1f1f1f1f1f1f'::bigint as hi,
             substring(r.bits, 57, 56)::bigint & x'1f1f1f1f1f1f1f'::bigint as lo,
             ( (bit_count(r.bits & x'1f1e1c1913060d1a140912040810') & 1)
             | ((bit_count(r.bits & x'1e1c1913060d1a14091204081001') & 1) << 1)
             | ((bit_count(r.bits & x'03070f1f1e1c1913060d1a140912') & 1) << 2)
             | ((bit_count(r.bits & x'070f1f1e1c1913060d1a14091204') & 1) << 3)
             | ((bit_count(r.bits & x'0f1f1e1c1913060d1a1409120408') & 1) << 4))::integer as c
      from (select substring(('x' || md5(${seedParam}::text || ':v:' || (${nExpr})::text))::bit(128), 1, 112) as bits
            offset 0) r
      offset 0
    ) v)`;
}

/** Lifecycle status of seeded voucher n: 60% issued, 30% redeemed, 5% void, 5% expired. */
export function seededStatus(
  n: number,
): "issued" | "redeemed" | "void" | "expired" {
  const r = n % 20;
  if (r < 6) return "redeemed";
  if (r === 6) return "void";
  if (r === 7) return "expired";
  return "issued";
}

/** The same rule in SQL. */
export function statusSql(nExpr: string): string {
  return `(case when ${nExpr} % 20 < 6 then 'redeemed' when ${nExpr} % 20 = 6 then 'void' when ${nExpr} % 20 = 7 then 'expired' else 'issued' end)`;
}

/** E.164 prefix and width of target phone numbers: `+2547` + 8 digits (Kenyan mobiles). */
export const PHONES = { prefix: "+2547", digits: 8 } as const;
