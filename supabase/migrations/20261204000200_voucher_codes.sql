-- Voucher codes: generation, normalisation, validation and display.
--
-- A code is 14 random data characters (70 bits from pgcrypto's CSPRNG) and one
-- check character, in Crockford's base32 alphabet: 0-9 and A-Z without I, L, O, U.
-- Canonical (stored) form `7KQ2M9XD4TRCB83`; display form `7KQ2M-9XD4T-RCB83`.
--
-- The check character. Each character is a 5-bit symbol, an element of GF(2^5)
-- built on the primitive polynomial x^5 + x^2 + 1 (α = x has order 31). For data
-- d1..d14 the check symbol is c = Σ dᵢ·α^(15−i), computed by Horner as
-- c := (c ⊕ d)·α. A whole code s1..s15 therefore satisfies Σ sᵢ·α^(15−i) = 0,
-- and its 15 weights α^14..α^0 are distinct and non-zero, so:
--   * a substitution at position k adds e·α^(15−k) ≠ 0 (e ≠ 0): always detected;
--   * swapping neighbours a ≠ b at k, k+1 adds (a ⊕ b)·α^(14−k)·(α ⊕ 1) ≠ 0:
--     always detected, including a swap with the check character itself.
-- A station can thus reject a typo offline: client/voucher_code.ts is the same
-- algorithm in TypeScript, and tests/fixtures/voucher_code_vectors.json pins both
-- implementations to the same answers.
--
-- These are internal helpers for the api.* RPCs: execute is revoked from PUBLIC
-- (the default privileges of schema app already do so; the revokes say it here).
-- normalize_code, is_voucher_code and format_code sit on the redeem hot path, so
-- they carry no SET clause: a SQL function with one can't be inlined and pays a
-- GUC save and restore per call. They stay safe under any search_path: every function in them
-- is schema-qualified, pg_catalog's operators are found first unless a caller
-- deliberately lists pg_catalog after its own schema, and they are not security
-- definer (when inlined into a definer RPC they run under its empty search_path).

-- app.normalize_code ------------------------------------------------------------
-- One translate(): ASCII lower case → upper case; o/O → 0, i/I/l/L → 1; separators
-- (whitespace, no-break/narrow/zero-width spaces, BOM, - _ . and the Unicode hyphens
-- and dashes people paste from chat apps) are deleted because `to` has no
-- counterpart for them. Upper-casing is ASCII-only on purpose: a locale-aware
-- upper() would turn "ﬁ" into "FI" on some platforms and not others.
create function app.normalize_code(input text)
returns text
language sql
immutable strict parallel safe
as $$
  select pg_catalog.translate(
    input,
    'abcdefghjkmnpqrstuvwxyz' || 'iloILO'
      || E' \t\n\r\f' || pg_catalog.chr(11) || '-_.'
      || U&'\00A0\2007\202F\200B\2060\FEFF\2010\2011\2012\2013\2014\2015\2212\FE63\FF0D',
    'ABCDEFGHJKMNPQRSTUVWXYZ' || '110110'
  )
$$;

comment on function app.normalize_code(text) is
  'Canonical shape of typed input, without validation: ASCII upper case, separators removed, O→0, I/L→1.';

-- app.code_check_char -----------------------------------------------------------
-- The reference implementation of the check character (Horner over GF(2^5)),
-- written to read like the definition. app.new_codes computes the same value
-- with bit masks; the pgTAP suite checks that the two agree.
create function app.code_check_char(data text)
returns text
language plpgsql
immutable strict parallel safe
as $$
declare
  alphabet constant text := '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
  c integer := 0;
  d integer;
begin
  if pg_catalog.length(data) <> 14 then
    perform app.raise_error('invalid_code_format',
      pg_catalog.format('Cannot compute a check character for "%s": expected 14 characters from the code alphabet.',
        pg_catalog.left(data, 40)), 400);
  end if;
  for i in 1..14 loop
    d := pg_catalog.strpos(alphabet, pg_catalog.substr(data, i, 1)) - 1;
    if d < 0 then
      perform app.raise_error('invalid_code_format',
        pg_catalog.format('Cannot compute a check character for "%s": "%s" is not in the code alphabet.',
          data, pg_catalog.substr(data, i, 1)), 400);
    end if;
    -- c := (c ⊕ d)·α, reducing x^5 by x^2 + 1 (0b100101).
    c := c # d;
    c := ((c << 1) # (case when c & 16 <> 0 then 37 else 0 end)) & 31;
  end loop;
  return pg_catalog.substr(alphabet, c + 1, 1);
end;
$$;

comment on function app.code_check_char(text) is
  'Check character of 14 canonical data characters: Σ dᵢ·α^(15−i) over GF(2^5), x^5+x^2+1.';

-- app.format_code ---------------------------------------------------------------
-- Not STRICT: a STRICT SQL function is inlined only when its body is strict, and
-- CASE is not, so STRICT would make every call parse and plan the body. Null in,
-- null out all the same.
create function app.format_code(code text)
returns text
language sql
immutable parallel safe
as $$
  select case
    when pg_catalog.length(code) = 15 then
      pg_catalog.substr(code, 1, 5) || '-' || pg_catalog.substr(code, 6, 5) || '-'
        || pg_catalog.substr(code, 11, 5)
    else code
  end
$$;

comment on function app.format_code(text) is
  'Display form of a canonical code (XXXXX-XXXXX-XXXXX); other input is returned unchanged.';

-- app.is_voucher_code and app.voucher_code ------------------------------------------
-- The shape of a canonical code (15 characters of the alphabet), written once:
-- the domain of app.vouchers.code and every parser use it. The check character is
-- app.code_check_char's business.
create function app.is_voucher_code(value text)
returns boolean
language sql
immutable parallel safe
as $$
  select value ~ '^[0-9A-HJKMNP-TV-Z]{15}$'
$$;

comment on function app.is_voucher_code(text) is
  'True for 15 characters of the code alphabet (Crockford base32: 0-9, A-Z without I, L, O, U).';

create domain app.voucher_code as text
  constraint voucher_code_format check (app.is_voucher_code(value));

comment on domain app.voucher_code is 'A canonical voucher code (app.is_voucher_code). Checked on assignment only.';

-- app.parse_code ----------------------------------------------------------------
-- The gate for every code that arrives from a client: normalise, then validate.
-- Error messages quote the input as typed (shortened past 40 characters).
create function app.parse_code(input text)
returns text
language plpgsql
immutable parallel safe
set search_path = ''
as $$
declare
  canonical text := app.normalize_code(input);
  shown text := case
    when pg_catalog.length(input) > 40 then pg_catalog.left(input, 40) || '…'
    else input
  end;
begin
  if input is null then
    perform app.raise_error('invalid_code_format', 'A voucher code is required.', 400);
  end if;
  if not app.is_voucher_code(canonical) then
    perform app.raise_error('invalid_code_format',
      pg_catalog.format('Voucher code "%s" is not in the expected format: 15 characters from 0-9 and A-Z without I, L, O and U.',
        shown), 400);
  end if;
  if app.code_check_char(pg_catalog.left(canonical, 14)) <> pg_catalog.right(canonical, 1) then
    perform app.raise_error('invalid_code_checksum',
      pg_catalog.format('Voucher code "%s" has a typo: its check character does not match. Check the code and type it again.',
        shown), 400);
  end if;
  return canonical;
end;
$$;

comment on function app.parse_code(text) is
  'Normalises and validates a typed code; returns the canonical 15 characters or raises invalid_code_format / invalid_code_checksum (400).';

-- app.new_codes -----------------------------------------------------------------
-- n fresh canonical codes, set-based: about 1.5 µs a code, no per-character loop.
-- Uniqueness against app.vouchers is the caller's job (issuance retries a collision).
--
--  1. Randomness: one gen_random_bytes(1022) per 73 codes (pgcrypto caps a call at
--     1024 bytes), read as a bit string; each code takes 14 bytes (112 bits) of it.
--  2. Data: the low 5 bits of each byte are one character, uniform over the 32
--     symbols (5 whole random bits, no modulo bias): 70 random bits a code. The 14
--     bytes are read as two bigints of 7 bytes (`hi`, `lo`) masked with 0x1F per byte.
--  3. Check character: c is linear over GF(2) in the data bits, so bit o of c is the
--     parity of (data AND mask_o). Byte i of mask_o holds the bits b of character i
--     for which bit o of α^(15−i+b) is 1. Five bit_count() calls instead of a loop.
--  4. Text: symbol → ASCII for 7 bytes at once (SWAR), then int8send() gives the
--     bytes. ASCII = v + '0' + 7·[v ≥ 10] + [v ≥ 18] + [v ≥ 20] + [v ≥ 22] + [v ≥ 27]
--     (the jumps: 9→A, then the skipped I, L, O, U). [v ≥ k] for every byte is bit 7
--     of v + (128 − k); bytes stay below 150, so no carry crosses a byte and the
--     7-byte values stay positive in a bigint.
--  `offset 0` keeps each derived value computed once per row (the planner would
--  otherwise inline `hi`/`lo` into each of their uses).
create function app.new_codes(n integer)
returns setof text
language sql
volatile strict parallel safe
set search_path = ''
as $$
  select pg_catalog.convert_from(
           pg_catalog.substr(pg_catalog.int8send(a.hi), 2, 7)
             || pg_catalog.int8send((a.lo << 8)
                  | pg_catalog.get_byte('0123456789ABCDEFGHJKMNPQRSTVWXYZ'::bytea, a.c)),
           'UTF8')
  from (
    -- 4. seven symbols → seven ASCII bytes, per half
    select
      v.hi + x'30303030303030'::bigint
        + 7 * (((v.hi + x'76767676767676'::bigint) >> 7) & x'01010101010101'::bigint)
        + (((v.hi + x'6e6e6e6e6e6e6e'::bigint) >> 7) & x'01010101010101'::bigint)
        + (((v.hi + x'6c6c6c6c6c6c6c'::bigint) >> 7) & x'01010101010101'::bigint)
        + (((v.hi + x'6a6a6a6a6a6a6a'::bigint) >> 7) & x'01010101010101'::bigint)
        + (((v.hi + x'65656565656565'::bigint) >> 7) & x'01010101010101'::bigint) as hi,
      v.lo + x'30303030303030'::bigint
        + 7 * (((v.lo + x'76767676767676'::bigint) >> 7) & x'01010101010101'::bigint)
        + (((v.lo + x'6e6e6e6e6e6e6e'::bigint) >> 7) & x'01010101010101'::bigint)
        + (((v.lo + x'6c6c6c6c6c6c6c'::bigint) >> 7) & x'01010101010101'::bigint)
        + (((v.lo + x'6a6a6a6a6a6a6a'::bigint) >> 7) & x'01010101010101'::bigint)
        + (((v.lo + x'65656565656565'::bigint) >> 7) & x'01010101010101'::bigint) as lo,
      v.c
    from (
      -- 2. and 3. symbols of characters 1-7 and 8-14; the check symbol
      select
        pg_catalog.substring(r.bits, 1, 56)::bigint & x'1f1f1f1f1f1f1f'::bigint as hi,
        pg_catalog.substring(r.bits, 57, 56)::bigint & x'1f1f1f1f1f1f1f'::bigint as lo,
        ( (pg_catalog.bit_count(r.bits & x'1f1e1c1913060d1a140912040810') & 1)
        | ((pg_catalog.bit_count(r.bits & x'1e1c1913060d1a14091204081001') & 1) << 1)
        | ((pg_catalog.bit_count(r.bits & x'03070f1f1e1c1913060d1a140912') & 1) << 2)
        | ((pg_catalog.bit_count(r.bits & x'070f1f1e1c1913060d1a14091204') & 1) << 3)
        | ((pg_catalog.bit_count(r.bits & x'0f1f1e1c1913060d1a1409120408') & 1) << 4)
        )::integer as c
      from (
        -- 1. 112 random bits per code
        select pg_catalog.substring(chunk.bits, 112 * k + 1, 112) as bits
        from (
          select ('x' || pg_catalog.encode(extensions.gen_random_bytes(1022), 'hex'))::bit(8176) as bits
          from pg_catalog.generate_series(1, (n + 72) / 73)
        ) chunk,
        pg_catalog.generate_series(0, 72) k
        limit n
      ) r
      offset 0
    ) v
  ) a
$$;

comment on function app.new_codes(integer) is
  'n fresh canonical voucher codes (70 random bits from pgcrypto each, uniform over the alphabet); not checked for uniqueness.';

revoke all on function app.normalize_code(text) from public;
revoke all on function app.code_check_char(text) from public;
revoke all on function app.format_code(text) from public;
revoke all on function app.is_voucher_code(text) from public;
revoke all on function app.parse_code(text) from public;
revoke all on function app.new_codes(integer) from public;
