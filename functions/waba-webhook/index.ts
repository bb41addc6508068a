/**
 * Edge Function entry point (Supabase: `supabase functions deploy waba-webhook`,
 * `verify_jwt = false` in supabase/config.toml: Meta signs with the app secret
 * instead). The logic is in `handler.ts`, which the local gateway imports directly.
 *
 * @module
 */
import { handler } from "./handler.ts";

Deno.serve(handler);
