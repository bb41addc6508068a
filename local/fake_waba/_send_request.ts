/**
 * The fake's own checks of `POST /{version}/{phone-number-id}/messages` bodies
 * (template messages), written from Meta's Cloud API documentation — on
 * purpose not with the production zod schemas of
 * `functions/_shared/waba_schemas.ts`: a fake that validated requests with the
 * client's own schema could never catch a mistake in that schema.
 *
 * What is checked, and where Meta documents it:
 *
 * - the body: `messaging_product: "whatsapp"` (required), `recipient_type:
 *   "individual"` (optional), `to` (required: the user's phone number, checked
 *   here as an E.164 number with or without its `+`),
 *   `type: "template"`, `template`, optional `biz_opaque_callback_data` —
 *   Messages API, the request Meta shows for a template send
 *   (https://developers.facebook.com/documentation/business-messaging/whatsapp/overview,
 *   https://developers.facebook.com/documentation/business-messaging/whatsapp/messages/template-messages);
 * - `template.name`, `template.language.code` and the optional
 *   `policy: "deterministic"`, "the default value"
 *   (https://developers.facebook.com/docs/whatsapp/api/messages/message-templates);
 *   template names are what WhatsApp Manager lets one create: lowercase
 *   letters, digits and underscores, at most 512 characters;
 * - `template.components[]`: `{type: "header" | "body", parameters}` with
 *   `{type: "text", text}`, `{type: "currency", currency: {fallback_value,
 *   code, amount_1000}}` or `{type: "date_time", date_time: {fallback_value}}`
 *   parameters, and `{type: "button", sub_type, index, parameters}` (the
 *   template object of the same pages);
 * - `biz_opaque_callback_data`: in the words of Meta's Messages reference "an
 *   arbitrary string, useful for tracking … Cloud API does not process this
 *   field, it just returns it as part of sent/delivered/read message webhooks",
 *   "Maximum 512 characters" (raised from 256 per the WhatsApp Business Platform
 *   changelog: https://developers.facebook.com/docs/whatsapp/business-platform/changelog).
 *
 * Refusals use the codes of Meta's error-code table, HTTP 400
 * (https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/):
 * `131008` "Required parameter is missing" for an absent required field,
 * `131009` "Parameter value is not valid" for a well-typed value that is not
 * acceptable (a `to` that is not E.164, a 513-character callback string),
 * and `100` "Invalid parameter" (one or more unsupported or misspelled
 * parameters) for unknown fields, values of the wrong JSON type and
 * unsupported choices (`messaging_product: "sms"`, a message type other than
 * `template`). A template name that no approved template can have is `132001`
 * (template does not exist; HTTP 404 in `_graph.ts`), as for an unknown template. A text
 * parameter with a new line, a tab or more than four consecutive spaces is `132018`
 * ("Param text cannot have new-line/tab characters or more than 4 consecutive
 * spaces", the same table). Meta does not publish which code each field produces;
 * this split is our reading of the table, and `details` always names the field.
 *
 * @example
 * const r = checkSendRequest(JSON.parse(rawBody));
 * if (!r.ok) return graphError(r.refusal.code, { details: r.refusal.details });
 * r.send.bodyParameters; // ["7KQ2-M9XD-4TRC", …]
 *
 * @module
 */

/** A template send the fake accepted: what it records and echoes back. */
export interface TemplateSend {
  /** `to` exactly as sent. */
  to: string;
  /** The digits of `to` (Meta's `wa_id`). */
  waId: string;
  template: string;
  language: string;
  /** Body parameters in order: the text, or the fallback value of currency / date_time. */
  bodyParameters: string[];
  /** `biz_opaque_callback_data`, echoed on status webhooks. */
  callbackData?: string;
}

/** Graph error codes the checks answer with (see the module comment). */
export type RefusalCode = 100 | 131008 | 131009 | 132001 | 132018;

/** Why a send request is refused: the Graph code and Meta-style `error_data.details`. */
export interface Refusal {
  code: RefusalCode;
  details: string;
}

/** Outcome of {@link checkSendRequest}. */
export type SendRequestCheck = { ok: true; send: TemplateSend } | { ok: false; refusal: Refusal };

/** `biz_opaque_callback_data` limit, in characters. */
export const MAX_CALLBACK_DATA_CHARS = 512;
/** Template names are at most 512 characters of `[a-z0-9_]`. */
const TEMPLATE_NAME = /^[a-z0-9_]{1,512}$/;
/** `en`, `en_US`, `pt_BR`, `fil`, … */
const LANGUAGE_CODE = /^[a-z]{2,3}(_[A-Z]{2})?$/;
/** An E.164 number (ITU-T: at most 15 digits, no leading 0), with or without its `+`. */
const E164 = /^\+?[1-9]\d{6,14}$/;
/** A body text parameter's limit. */
const MAX_TEXT_CHARS = 32_768;

class Refused extends Error {
  constructor(readonly refusal: Refusal) {
    super(refusal.details);
  }
}

const missing = (path: string) =>
  new Refused({ code: 131008, details: `Parameter '${path}' is required.` });
const invalid = (path: string, why: string) =>
  new Refused({ code: 131009, details: `Parameter '${path}' is not valid: ${why}.` });
const unsupported = (path: string, why: string) =>
  new Refused({ code: 100, details: `Parameter '${path}' is invalid: ${why}.` });

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The object at `path`, refusing unknown keys (Meta: "unsupported or misspelled parameters"). */
function object(value: unknown, path: string, allowed: readonly string[]): Json {
  if (!isObject(value)) throw unsupported(path, "expected an object");
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) {
      throw unsupported(
        path === "" ? key : `${path}.${key}`,
        "unsupported or misspelled parameter",
      );
    }
  }
  return value;
}

/** A required string (absent → 131008, not a string → 100). */
function requiredString(obj: Json, key: string, path: string): string {
  const value = obj[key];
  if (value === undefined || value === null) throw missing(path);
  if (typeof value !== "string") throw unsupported(path, "expected a string");
  return value;
}

/** A field that must equal `expected` when present (other values → 100). */
function literal(obj: Json, key: string, path: string, expected: string, required: boolean): void {
  const value = obj[key];
  if (value === undefined) {
    if (required) throw missing(path);
    return;
  }
  if (value !== expected) {
    throw unsupported(path, `expected "${expected}", got ${JSON.stringify(value)}`);
  }
}

function chars(s: string): number {
  return [...s].length;
}

function nonEmptyArray(obj: Json, key: string, path: string): unknown[] {
  const value = obj[key];
  if (value === undefined || value === null) throw missing(path);
  if (!Array.isArray(value)) throw unsupported(path, "expected an array");
  if (value.length === 0) throw invalid(path, "at least one item is needed");
  return value;
}

/** One header/body parameter; returns its display value. */
function parameter(value: unknown, path: string): string {
  if (!isObject(value)) throw unsupported(path, "expected an object");
  switch (value.type) {
    case undefined:
      throw missing(`${path}.type`);
    case "text": {
      const p = object(value, path, ["type", "text"]);
      const text = requiredString(p, "text", `${path}.text`);
      if (text.length === 0) throw invalid(`${path}.text`, "empty text");
      if (/[\n\t]/.test(text) || / {5}/.test(text)) {
        throw new Refused({
          code: 132018,
          details:
            `Parameter '${path}.text': param text cannot have new-line/tab characters or more than 4 consecutive spaces.`,
        });
      }
      if (chars(text) > MAX_TEXT_CHARS) {
        throw invalid(`${path}.text`, `longer than ${MAX_TEXT_CHARS} characters`);
      }
      return text;
    }
    case "currency": {
      const p = object(value, path, ["type", "currency"]);
      if (p.currency === undefined) throw missing(`${path}.currency`);
      const c = object(p.currency, `${path}.currency`, ["fallback_value", "code", "amount_1000"]);
      const fallback = requiredString(c, "fallback_value", `${path}.currency.fallback_value`);
      const code = requiredString(c, "code", `${path}.currency.code`);
      if (!/^[A-Z]{3}$/.test(code)) {
        throw invalid(`${path}.currency.code`, `"${code}" is not an ISO 4217 code`);
      }
      if (c.amount_1000 === undefined) throw missing(`${path}.currency.amount_1000`);
      if (!Number.isInteger(c.amount_1000)) {
        throw unsupported(`${path}.currency.amount_1000`, "expected an integer");
      }
      if (fallback.length === 0) throw invalid(`${path}.currency.fallback_value`, "empty");
      return fallback;
    }
    case "date_time": {
      const p = object(value, path, ["type", "date_time"]);
      if (p.date_time === undefined) throw missing(`${path}.date_time`);
      const d = object(p.date_time, `${path}.date_time`, ["fallback_value"]);
      const fallback = requiredString(d, "fallback_value", `${path}.date_time.fallback_value`);
      if (fallback.length === 0) throw invalid(`${path}.date_time.fallback_value`, "empty");
      return fallback;
    }
    default:
      throw unsupported(
        `${path}.type`,
        `the fake implements text, currency and date_time parameters, not ${
          JSON.stringify(value.type)
        }`,
      );
  }
}

/** One button parameter (`payload`, `text` or `coupon_code`). */
function buttonParameter(value: unknown, path: string): void {
  if (!isObject(value)) throw unsupported(path, "expected an object");
  const kinds = ["payload", "text", "coupon_code"];
  if (value.type === undefined) throw missing(`${path}.type`);
  if (typeof value.type !== "string" || !kinds.includes(value.type)) {
    throw unsupported(`${path}.type`, `expected one of ${kinds.join(", ")}`);
  }
  const p = object(value, path, ["type", value.type]);
  const v = requiredString(p, value.type, `${path}.${value.type}`);
  if (v.length === 0) throw invalid(`${path}.${value.type}`, "empty");
}

/** One component; returns its parameters' values when it is the body. */
function component(value: unknown, path: string): string[] | null {
  if (!isObject(value)) throw unsupported(path, "expected an object");
  switch (value.type) {
    case undefined:
      throw missing(`${path}.type`);
    case "header":
    case "body": {
      const c = object(value, path, ["type", "parameters"]);
      const values = nonEmptyArray(c, "parameters", `${path}.parameters`)
        .map((p, i) => parameter(p, `${path}.parameters[${i}]`));
      return value.type === "body" ? values : null;
    }
    case "button": {
      const c = object(value, path, ["type", "sub_type", "index", "parameters"]);
      const subTypes = ["quick_reply", "url", "copy_code"];
      if (c.sub_type === undefined) throw missing(`${path}.sub_type`);
      if (typeof c.sub_type !== "string" || !subTypes.includes(c.sub_type)) {
        throw unsupported(`${path}.sub_type`, `expected one of ${subTypes.join(", ")}`);
      }
      if (c.index === undefined) throw missing(`${path}.index`);
      if (!(typeof c.index === "number" || typeof c.index === "string")) {
        throw unsupported(`${path}.index`, "expected a number or a numeric string");
      }
      if (!/^\d$/.test(String(c.index))) throw invalid(`${path}.index`, "expected 0 to 9");
      nonEmptyArray(c, "parameters", `${path}.parameters`)
        .forEach((p, i) => buttonParameter(p, `${path}.parameters[${i}]`));
      return null;
    }
    default:
      throw unsupported(`${path}.type`, `expected header, body or button`);
  }
}

function check(body: unknown): TemplateSend {
  if (!isObject(body)) throw unsupported("(body)", "expected a JSON object");
  const b = object(body, "", [
    "messaging_product",
    "recipient_type",
    "to",
    "type",
    "template",
    "biz_opaque_callback_data",
  ]);
  literal(b, "messaging_product", "messaging_product", "whatsapp", true);
  literal(b, "recipient_type", "recipient_type", "individual", false);

  const to = requiredString(b, "to", "to");
  if (!E164.test(to)) throw invalid("to", `"${to}" is not an E.164 phone number`);
  const waId = to.replace(/\D/g, "");

  if (b.type === undefined) throw missing("type");
  if (b.type !== "template") {
    throw unsupported(
      "type",
      `the fake implements template messages only, not ${JSON.stringify(b.type)}`,
    );
  }

  if (b.template === undefined) throw missing("template");
  const t = object(b.template, "template", ["name", "language", "components"]);
  const name = requiredString(t, "name", "template.name");
  if (name.length === 0) throw missing("template.name");
  if (!TEMPLATE_NAME.test(name)) {
    // No approved template can have this name (lowercase letters, digits, underscores).
    throw new Refused({
      code: 132001,
      details: `template name (${name}) does not exist`,
    });
  }
  if (t.language === undefined) throw missing("template.language");
  const lang = object(t.language, "template.language", ["code", "policy"]);
  const language = requiredString(lang, "code", "template.language.code");
  if (!LANGUAGE_CODE.test(language)) {
    throw invalid("template.language.code", `"${language}" is not a language code such as en_US`);
  }
  literal(lang, "policy", "template.language.policy", "deterministic", false);

  let bodyParameters: string[] = [];
  if (t.components !== undefined) {
    if (!Array.isArray(t.components)) throw unsupported("template.components", "expected an array");
    t.components.forEach((c, i) => {
      const values = component(c, `template.components[${i}]`);
      if (values) bodyParameters = values;
    });
  }

  let callbackData: string | undefined;
  if (b.biz_opaque_callback_data !== undefined) {
    if (typeof b.biz_opaque_callback_data !== "string") {
      throw unsupported("biz_opaque_callback_data", "expected a string");
    }
    callbackData = b.biz_opaque_callback_data;
    if (chars(callbackData) > MAX_CALLBACK_DATA_CHARS) {
      throw invalid(
        "biz_opaque_callback_data",
        `${chars(callbackData)} characters, at most ${MAX_CALLBACK_DATA_CHARS} are allowed`,
      );
    }
  }

  return {
    to,
    waId,
    template: name,
    language,
    bodyParameters,
    ...(callbackData !== undefined ? { callbackData } : {}),
  };
}

/**
 * Checks a parsed request body against Meta's documented template send
 * request; the first problem found is the refusal.
 *
 * @example
 * checkSendRequest({ messaging_product: "whatsapp", to: "+254712345678", type: "template",
 *   template: { name: "voucher_issued", language: { code: "en" } } }).ok; // true
 * checkSendRequest({ messaging_product: "whatsapp", type: "template" });
 * // { ok: false, refusal: { code: 131008, details: "Parameter 'to' is required." } }
 */
export function checkSendRequest(body: unknown): SendRequestCheck {
  try {
    return { ok: true, send: check(body) };
  } catch (err) {
    if (err instanceof Refused) return { ok: false, refusal: err.refusal };
    throw err;
  }
}
