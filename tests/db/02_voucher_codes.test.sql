-- Voucher codes: the check character, normalisation, parsing errors and generation.
--
-- The valid and invalid examples come from tests/fixtures/voucher_code_vectors.json,
-- the same file tests/voucher_code.test.ts reads, so SQL and TypeScript are held
-- to the same answers. psql loads it (pg_prove runs from the repository root).
begin;
select plan(30);

\set vectors `cat tests/fixtures/voucher_code_vectors.json`

create temp table valid_vectors on commit drop as
select v.canonical, v.display, v.inputs
from jsonb_to_recordset((:'vectors'::jsonb) -> 'valid') as v(canonical text, display text, inputs text[]);

create temp table invalid_vectors on commit drop as
select v.input, v.error, v.reason
from jsonb_to_recordset((:'vectors'::jsonb) -> 'invalid') as v(input text, error text, reason text);

-- parse_code's outcome as data, so one failing input cannot abort the whole file:
-- parse_error is null when parse_code accepts the input, else the error's
-- {code, message, details, hint} body plus the HTTP status from the detail;
-- try_parse is the canonical code, or `!` and the error code.
create function pg_temp.parse_error(input text) returns jsonb
language plpgsql
as $$
declare
  msg text;
  det text;
begin
  perform app.parse_code(input);
  return null;
exception when sqlstate 'PGRST' then
  get stacked diagnostics msg = message_text, det = pg_exception_detail;
  return msg::jsonb || jsonb_build_object('status', (det::jsonb) -> 'status');
end;
$$;

create function pg_temp.try_parse(input text) returns text
language plpgsql
as $$
begin
  return app.parse_code(input);
exception when sqlstate 'PGRST' then
  return '!' || (sqlerrm::jsonb ->> 'code');
end;
$$;

-- Structure -------------------------------------------------------------------

select has_function('app', f, array[a], format('Function app.%s(%s) exists', f, a))
from (values ('normalize_code', 'text'), ('code_check_char', 'text'), ('parse_code', 'text'),
             ('format_code', 'text'), ('new_codes', 'integer')) as t(f, a);

select is(
  (select string_agg(format('%s %s %s', p.proname, p.provolatile, array_to_string(p.proconfig, ' ')), ', ' order by p.proname)
   from pg_proc p where p.pronamespace = 'app'::regnamespace
     and p.proname in ('normalize_code', 'code_check_char', 'parse_code', 'format_code', 'new_codes')),
  'code_check_char i , format_code i , new_codes v search_path="", '
    || 'normalize_code i , parse_code i search_path=""',
  'The code helpers are immutable (new_codes volatile); only the redeem hot path''s run unpinned');

select is_empty(
  $$select p.proname, r.rolname
    from pg_proc p
    cross join (values ('anon'), ('authenticated'), ('service_role'), ('authenticator')) as r(rolname)
    where p.pronamespace = 'app'::regnamespace
      and p.proname in ('normalize_code', 'code_check_char', 'parse_code', 'format_code', 'new_codes')
      and has_function_privilege(r.rolname, p.oid, 'execute')$$,
  'No client role can execute the code helpers directly; only RPCs use them');

-- The shared vectors ------------------------------------------------------------

select ok((select count(*) from valid_vectors) >= 5 and (select count(*) from invalid_vectors) >= 5,
  'The vector file loads valid and invalid examples');

select is(app.normalize_code(:'vectors'::jsonb ->> 'alphabet'), :'vectors'::jsonb ->> 'alphabet',
  'Normalisation leaves every character of the alphabet unchanged');

select is_empty(
  $$select canonical from valid_vectors
    where app.code_check_char(left(canonical, 14)) <> right(canonical, 1)$$,
  'The check character of every valid vector is the one the SQL algorithm computes');

select is_empty(
  $$select canonical, pg_temp.try_parse(canonical), pg_temp.try_parse(display) from valid_vectors
    where pg_temp.try_parse(canonical) is distinct from canonical
       or pg_temp.try_parse(display) is distinct from canonical$$,
  'parse_code accepts every valid vector in canonical and display form');

select is_empty(
  $$select canonical from valid_vectors where app.format_code(canonical) <> display$$,
  'format_code shows every valid vector as three dash-separated groups of five');

select is_empty(
  $$select canonical, input from valid_vectors, unnest(inputs) as input
    where app.normalize_code(input) <> canonical$$,
  'Lower case, separators and O/I/L look-alikes normalise to the canonical code');

select is_empty(
  $$select canonical, input, pg_temp.try_parse(input) from valid_vectors, unnest(inputs) as input
    where pg_temp.try_parse(input) is distinct from canonical$$,
  'parse_code accepts every messy spelling of a valid code');

select is_empty(
  $$select input, error, pg_temp.parse_error(input) as got from invalid_vectors
    where pg_temp.parse_error(input) ->> 'code' is distinct from error
       or (pg_temp.parse_error(input) ->> 'status')::integer is distinct from 400$$,
  'Every invalid vector is rejected with its documented error code and HTTP 400');

-- Every typo is caught (exhaustive over the vectors) ---------------------------

select is(
  (select format('%s of %s', count(*) filter (where pg_temp.parse_error(typo) ->> 'code'
                                                 is distinct from 'invalid_code_checksum'), count(*))
   from valid_vectors v
   cross join generate_series(1, 15) as pos
   cross join regexp_split_to_table(:'vectors'::jsonb ->> 'alphabet', '') as symbol
   cross join overlay(v.canonical placing symbol from pos for 1) as typo
   where symbol <> substr(v.canonical, pos, 1)),
  format('0 of %s', (select count(*) * 15 * 31 from valid_vectors)),
  'Every single-character substitution of every valid vector, check character included, is rejected as a checksum error');

select is(
  (select format('%s of %s', count(*) filter (where pg_temp.parse_error(typo) ->> 'code'
                                                 is distinct from 'invalid_code_checksum'), count(*))
   from valid_vectors v
   cross join generate_series(1, 14) as pos
   cross join overlay(v.canonical placing substr(v.canonical, pos + 1, 1) || substr(v.canonical, pos, 1)
                      from pos for 2) as typo
   where substr(v.canonical, pos, 1) <> substr(v.canonical, pos + 1, 1)),
  format('0 of %s', (select count(*) from valid_vectors v, generate_series(1, 14) as pos
                     where substr(v.canonical, pos, 1) <> substr(v.canonical, pos + 1, 1))),
  'Every swap of two different neighbours, the check character included, is rejected as a checksum error');

-- Validity is linear over GF(2): code ⊕ error is valid iff the error pattern is. A
-- substitution adds one non-zero symbol; swapping a, b adds a ⊕ b at two neighbours.
-- If no such pattern is a valid code, no code anywhere survives either kind of typo.
select is(
  (select format('%s of %s', count(*) filter (where app.code_check_char(left(p, 14)) = right(p, 1)), count(*))
   from (
     select overlay(repeat('0', 15) placing e from pos for 1) as p
     from generate_series(1, 15) as pos, regexp_split_to_table(substr(:'vectors'::jsonb ->> 'alphabet', 2), '') as e
     union all
     select overlay(repeat('0', 15) placing e || e from pos for 2)
     from generate_series(1, 14) as pos, regexp_split_to_table(substr(:'vectors'::jsonb ->> 'alphabet', 2), '') as e
   ) patterns),
  '0 of 899',
  'No substitution or adjacent-swap error pattern is itself a valid code, so every code detects them all');

-- Errors --------------------------------------------------------------------------

select throws_ok($$select app.parse_code('7KQ2M-9DX4T-RCB83')$$, 'PGRST', null,
  'A rejected code raises SQLSTATE PGRST, PostgREST''s custom error');

select throws_like($$select app.parse_code('7KQ2M-9DX4T-RCB83')$$, '%"code" : "invalid_code_checksum"%',
  'Two swapped characters are reported as invalid_code_checksum');

select throws_like($$select app.parse_code('7KQ2M-9XD4T-RCBU3')$$, '%"code" : "invalid_code_format"%',
  'A character outside the alphabet is reported as invalid_code_format');

select is(pg_temp.parse_error(null) ->> 'code', 'invalid_code_format',
  'A missing code is reported as invalid_code_format');

select is(pg_temp.parse_error('7KQ2M-9DX4T-RCB83') ->> 'message',
  'Voucher code "7KQ2M-9DX4T-RCB83" has a typo: its check character does not match. Check the code and type it again.',
  'The checksum error message quotes the code as typed');

select is(pg_temp.parse_error(repeat('A', 100)) ->> 'message',
  format('Voucher code "%s…" is not in the expected format: 15 characters from 0-9 and A-Z without I, L, O and U.',
    repeat('A', 40)),
  'The format error message quotes the input as typed, shortened to 40 characters');

select throws_like($$select app.code_check_char('7KQ2M9XD4TRCBU')$$, '%"code" : "invalid_code_format"%',
  'code_check_char refuses data outside the alphabet instead of guessing');

-- Generation ----------------------------------------------------------------------

create temp table fresh on commit drop as select code from app.new_codes(5000) as code;

select is((select format('%s codes, %s distinct', count(*), count(distinct code)) from fresh),
  '5000 codes, 5000 distinct', 'new_codes(5000) returns 5000 distinct codes');

select is_empty(
  $$select code from fresh
    where code !~ '^[0-9A-HJKMNP-TV-Z]{15}$'
       or app.code_check_char(left(code, 14)) <> right(code, 1)
       or pg_temp.try_parse(code) is distinct from code$$,
  'Every generated code is 15 alphabet characters with a valid check character');

-- 5,000 codes put each symbol at each data position 156 times on average (sd ≈ 12);
-- 80..240 is ±6 sd: a missing symbol or any modulo bias lands far outside.
select is_empty(
  $$select pos, symbol, count(f.code) as seen
    from generate_series(1, 14) as pos
    cross join regexp_split_to_table('0123456789ABCDEFGHJKMNPQRSTVWXYZ', '') as symbol
    left join fresh f on substr(f.code, pos, 1) = symbol
    group by pos, symbol
    having count(f.code) not between 80 and 240$$,
  'Every symbol appears at every data position with its fair share (uniform over the alphabet)');

select is_empty(
  $$select n from unnest(array[0, 1, 72, 73, 74, 146, 147, 1000]) as n
    where (select count(*) from app.new_codes(n)) <> n$$,
  'new_codes(n) returns exactly n codes, across the 73-code chunk boundaries');

select is_empty(
  $$select code from app.new_codes(2000) as code intersect select code from fresh$$,
  'A second call shares no code with the first (fresh randomness per call)');

select * from finish();
rollback;
