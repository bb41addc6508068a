/**
 * The project's API keys, as Supabase's API gateway (Kong) checks the `apikey`
 * header before anything reaches PostgREST or Auth.
 *
 * Four keys are accepted, and nothing else (a user's JWT is not an API key:
 * "A separate `apikey` header is required … Using your minted JWT is not
 * possible in this header", supabase.com/docs/guides/auth/signing-keys):
 *
 * | key                  | role           | forwarded bearer when the request has no user token |
 * | -------------------- | -------------- | --------------------------------------------------- |
 * | `sb_publishable_…`   | `anon`         | the legacy anon JWT                                 |
 * | `sb_secret_…`        | `service_role` | the legacy service_role JWT                         |
 * | legacy anon JWT      | `anon`         | the key itself                                      |
 * | legacy service JWT   | `service_role` | the key itself                                      |
 *
 * The `sb_` keys are not JWTs, so the gateway substitutes a JWT of the key's
 * role for PostgREST, as the Supabase CLI's Kong does (`BearerToken` in
 * `apps/cli-go/internal/start/start.go`: an absent Authorization header, or one
 * that is `Bearer sb_…`, becomes `Bearer <anon or service_role JWT>`). Hosted
 * allows `Authorization: Bearer <sb key>` only when it equals the `apikey`
 * header (supabase.com/docs/guides/api/api-keys, "Known limitations"); any other
 * `sb_` bearer reaches PostgREST as is and fails as a JWT (PGRST301).
 *
 * Keys are compared in constant time (SHA-256 digests compared with
 * `timingSafeEqual`, every configured key every time), so response timing
 * does not reveal how much of a guessed key was right.
 *
 * @module
 */
import { createHash, timingSafeEqual } from "node:crypto";

/** Which style of key was presented. */
export type ApiKeyKind = "publishable" | "secret" | "legacy";

/** A recognised API key. */
export interface ApiKey {
  kind: ApiKeyKind;
  /** The database role the key stands for. */
  role: "anon" | "service_role";
  /** The JWT PostgREST sees when the request carries no user token of its own. */
  bearer: string;
}

/** The keys of one project. */
export interface ApiKeySet {
  /** `sb_publishable_…` keys (hosted may have several; all are `anon`). */
  publishable: string[];
  /** `sb_secret_…` keys (hosted may have several; all are `service_role`). */
  secret: string[];
  /** The legacy anon JWT key. */
  anon: string;
  /** The legacy service_role JWT key. */
  serviceRole: string;
}

/** True for the new, non-JWT key formats (`sb_publishable_…`, `sb_secret_…`). */
export function isNewFormatKey(key: string): boolean {
  return key.startsWith("sb_publishable_") || key.startsWith("sb_secret_");
}

function digest(value: string): Uint8Array {
  return createHash("sha256").update(value).digest();
}

/**
 * Resolves `apikey` header values to the project's keys.
 *
 * @example
 * const keys = new ApiKeys({ publishable: [PUBLISHABLE_KEY], secret: [SECRET_KEY], anon: ANON_KEY, serviceRole: SERVICE_ROLE_KEY });
 * keys.resolve(PUBLISHABLE_KEY); // { kind: "publishable", role: "anon", bearer: ANON_KEY }
 * keys.resolve("nope"); // null
 */
export class ApiKeys {
  readonly #entries: { digest: Uint8Array; key: ApiKey }[];

  constructor(set: ApiKeySet) {
    const entry = (value: string, key: ApiKey) => ({ digest: digest(value), key });
    this.#entries = [
      ...set.publishable.map((k) =>
        entry(k, { kind: "publishable", role: "anon", bearer: set.anon })
      ),
      ...set.secret.map((k) =>
        entry(k, { kind: "secret", role: "service_role", bearer: set.serviceRole })
      ),
      entry(set.anon, { kind: "legacy", role: "anon", bearer: set.anon }),
      entry(set.serviceRole, { kind: "legacy", role: "service_role", bearer: set.serviceRole }),
    ];
  }

  /** The key `presented` is, or null when it is none of the project's keys. */
  resolve(presented: string): ApiKey | null {
    const d = digest(presented);
    let found: ApiKey | null = null;
    for (const e of this.#entries) {
      // No early exit: every comparison runs whatever matched.
      if (timingSafeEqual(d, e.digest) && found === null) found = e.key;
    }
    return found;
  }

  /**
   * The bearer token PostgREST should see, as Kong forwards it: the key's JWT
   * when the request has no Authorization header or repeats an `sb_` apikey as
   * its bearer, else the request's own bearer token (null: not a Bearer header).
   */
  static forwardedBearer(
    key: ApiKey,
    apikey: string,
    bearer: string | null | undefined,
  ): string | null {
    if (bearer === undefined) return key.bearer; // no Authorization header at all
    if (bearer !== null && key.kind !== "legacy" && bearer === apikey) return key.bearer;
    return bearer;
  }
}
