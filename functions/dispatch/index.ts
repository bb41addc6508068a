/**
 * Edge Function entry point (Supabase: `supabase functions deploy dispatch`,
 * `entrypoint = "../functions/dispatch/index.ts"` in supabase/config.toml).
 * The logic is in `handler.ts`, which the local gateway imports directly.
 *
 * @module
 */
import { handler } from "./handler.ts";

Deno.serve(handler);
