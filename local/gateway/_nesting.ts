/**
 * Nesting limits on RPC arguments, checked before anything is parsed or sent.
 *
 * Postgres parses JSON and array literals recursively. JSON nested some
 * tens of thousands of levels deep overruns its stack (`54001`, "stack depth
 * limit exceeded"), and an array argument with more than 6 dimensions is
 * `54000` ("number of array dimensions (7) exceeds the maximum allowed (6)",
 * `MAXDIM` in `src/include/utils/array.h`). PostgREST maps SQLSTATE class 54 to
 * HTTP 500 ("too complex", `mapSQLtoHTTP` in `src/PostgREST/Error.hs`), so on
 * hosted such a request is a 500 an anonymous caller can provoke at will. The
 * local gateway refuses it first with a 400: a deliberate difference from
 * hosted, documented in docs/api.md.
 *
 * The scan is a single pass over the text, iterative, so the check itself
 * cannot overflow whatever the input.
 *
 * @module
 */

/** Deepest JSON nesting (objects and arrays) an argument or body may have. */
export const MAX_JSON_DEPTH = 64;

/** Most dimensions of an array argument: Postgres's `MAXDIM`. */
export const MAX_ARRAY_DIMS = 6;

/**
 * The deepest bracket nesting of `text`, outside double-quoted strings (with
 * backslash escapes, as in JSON and in Postgres array literals). Stops counting
 * once `limit` is exceeded and returns `limit + 1`.
 *
 * @param syntax `"json"`: `[`/`{` open, `]`/`}` close; `"array"`: a Postgres
 *   array literal, `{` opens a dimension and `}` closes it.
 *
 * @example
 * nestingDepth('{"a":[1,[2]]}', "json"); // 3
 * nestingDepth('{{1,2},{3,4}}', "array"); // 2
 * nestingDepth('"[[[["', "json"); // 0: inside a string
 */
export function nestingDepth(text: string, syntax: "json" | "array", limit = Infinity): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
      continue;
    }
    if (c === 0x22) {
      inString = true;
    } else if (c === 0x7b || (syntax === "json" && c === 0x5b)) { // { [
      if (++depth > deepest) {
        deepest = depth;
        if (deepest > limit) return deepest;
      }
    } else if (c === 0x7d || (syntax === "json" && c === 0x5d)) { // } ]
      depth--;
    }
  }
  return deepest;
}

/**
 * Dimensions of a parsed JSON value as Postgres would read it into an array
 * parameter: how deeply arrays nest inside arrays (`[[1],[2]]` is 2). Objects
 * stop the count. The value must already be within {@link MAX_JSON_DEPTH}.
 *
 * @example
 * arrayDimensions([[1, 2], [3, 4]]); // 2
 * arrayDimensions("x"); // 0
 */
export function arrayDimensions(value: unknown): number {
  if (!Array.isArray(value)) return 0;
  let deepest = 0;
  for (const item of value) deepest = Math.max(deepest, arrayDimensions(item));
  return deepest + 1;
}
