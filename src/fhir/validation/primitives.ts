// FHIR R4 primitive types: JSON type + lexical rules (http://hl7.org/fhir/R4/datatypes.html).
//
// The regexes are the ones in the R4 StructureDefinitions. They are XML Schema regexes, where `\s` is
// only [ \t\n\r] (JavaScript's `\s` also matches NBSP etc.), so those classes are spelled out here.
// Checks return an error message (never echoing the value) or undefined when the value is valid.
import { LosslessNumber } from 'lossless-json';

export type JsonKind = 'string' | 'boolean' | 'number';

export interface PrimitiveRule {
  /** FHIR type code, e.g. "dateTime". */
  readonly type: string;
  readonly json: JsonKind;
  /** Lexical/value check; the JSON type has already been checked. */
  check(value: unknown): string | undefined;
}

/** Strings SHALL NOT exceed 1 MB (R4 datatypes.html#string). */
const MAX_STRING_LENGTH = 1024 * 1024;
const INT32_MAX = 2147483647;
const INT32_MIN = -2147483648;

const YEAR = '([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)';
const MONTH = '(0[1-9]|1[0-2])';
const DAY = '(0[1-9]|[1-2][0-9]|3[0-1])';
const TIME = '([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\\.[0-9]+)?';
const ZONE = '(Z|(\\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))';

const DATE_RE = new RegExp(`^${YEAR}(-${MONTH}(-${DAY})?)?$`);
const DATETIME_RE = new RegExp(`^${YEAR}(-${MONTH}(-${DAY}(T${TIME}${ZONE})?)?)?$`);
const INSTANT_RE = new RegExp(`^${YEAR}-${MONTH}-${DAY}T${TIME}${ZONE}$`);
const TIME_RE = new RegExp(`^${TIME}$`);
const OID_RE = /^urn:oid:[0-2](\.(0|[1-9][0-9]*))+$/;

const ID_RE = /^[A-Za-z0-9\-.]{1,64}$/;
const CODE_RE = /^[^ \t\r\n]+([ \t\r\n][^ \t\r\n]+)*$/;
const URI_RE = /^[^ \t\r\n]*$/;
const UUID_RE = /^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const DECIMAL_RE = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$/;
const INTEGER_RE = /^-?(0|[1-9][0-9]*)$/;

function stringRule(type: string, pattern?: RegExp, extra?: (s: string) => string | undefined): PrimitiveRule {
  const invalid = `Invalid ${type} format`;
  return {
    type,
    json: 'string',
    check(value: unknown): string | undefined {
      const s = value as string;
      if (s.length === 0) return 'Empty strings are not allowed in FHIR JSON';
      if (s.length > MAX_STRING_LENGTH) return 'String exceeds the 1 MB limit';
      if (pattern !== undefined && !pattern.test(s)) return invalid;
      return extra === undefined ? undefined : extra(s);
    },
  };
}

/**
 * R4 base64Binary regex `(\s*([0-9a-zA-Z\+/=]){4}\s*)+`, checked in linear time (attachments can be
 * megabytes): whitespace is allowed only between groups of four characters.
 */
function checkBase64(s: string): string | undefined {
  let count = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 32 || c === 9 || c === 10 || c === 13) {
      if (count % 4 !== 0) return 'Invalid base64Binary format';
      continue;
    }
    const ok =
      (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 43 || c === 47 || c === 61;
    if (!ok) return 'Invalid base64Binary format';
    count++;
  }
  return count > 0 && count % 4 === 0 ? undefined : 'Invalid base64Binary format';
}

/** A number as parsed: a JS number, or a LosslessNumber carrying the original lexeme. */
function numberRule(type: string, lexeme: RegExp, min: number, max: number, integral: boolean): PrimitiveRule {
  const invalid = `Invalid ${type} value`;
  const range = `${type} out of range`;
  return {
    type,
    json: 'number',
    check(value: unknown): string | undefined {
      let n: number;
      if (typeof value === 'number') {
        if (!Number.isFinite(value)) return invalid;
        if (integral && !Number.isInteger(value)) return invalid;
        n = value;
      } else {
        const text = (value as LosslessNumber).value;
        if (!lexeme.test(text)) return invalid;
        n = Number(text);
        if (!integral) return undefined; // decimals have no range limit
      }
      return n < min || n > max ? range : undefined;
    },
  };
}

const RULES: Record<string, PrimitiveRule> = {
  boolean: { type: 'boolean', json: 'boolean', check: () => undefined },
  string: stringRule('string'),
  markdown: stringRule('markdown'),
  code: stringRule('code', CODE_RE),
  id: stringRule('id', ID_RE),
  uri: stringRule('uri', URI_RE),
  url: stringRule('url', URI_RE),
  canonical: stringRule('canonical', URI_RE),
  oid: stringRule('oid', OID_RE),
  uuid: stringRule('uuid', UUID_RE),
  date: stringRule('date', DATE_RE),
  dateTime: stringRule('dateTime', DATETIME_RE),
  instant: stringRule('instant', INSTANT_RE),
  time: stringRule('time', TIME_RE),
  base64Binary: stringRule('base64Binary', undefined, checkBase64),
  // The XHTML rules (xhtml.ts) are checked by the walker: they can also warn.
  xhtml: stringRule('xhtml'),
  decimal: numberRule('decimal', DECIMAL_RE, -Infinity, Infinity, false),
  integer: numberRule('integer', INTEGER_RE, INT32_MIN, INT32_MAX, true),
  unsignedInt: numberRule('unsignedInt', INTEGER_RE, 0, INT32_MAX, true),
  positiveInt: numberRule('positiveInt', INTEGER_RE, 1, INT32_MAX, true),
};

/** Type codes used by the FHIRPath system types in R4 definitions (e.g. Element.id, Extension.url). */
const SYSTEM_TYPES: Record<string, string> = {
  'http://hl7.org/fhirpath/System.String': 'string',
  'http://hl7.org/fhirpath/System.Boolean': 'boolean',
  'http://hl7.org/fhirpath/System.Integer': 'integer',
  'http://hl7.org/fhirpath/System.Decimal': 'decimal',
  'http://hl7.org/fhirpath/System.Date': 'date',
  'http://hl7.org/fhirpath/System.DateTime': 'dateTime',
  'http://hl7.org/fhirpath/System.Time': 'time',
};

export function primitiveRule(typeCode: string): PrimitiveRule | undefined {
  return RULES[SYSTEM_TYPES[typeCode] ?? typeCode];
}

export function isPrimitiveType(typeCode: string): boolean {
  return primitiveRule(typeCode) !== undefined;
}

/** Does the JSON value have the JSON type the primitive needs? */
export function hasJsonKind(value: unknown, json: JsonKind): boolean {
  if (json === 'number') return typeof value === 'number' || value instanceof LosslessNumber;
  return typeof value === json;
}

export function isLosslessNumber(value: unknown): value is LosslessNumber {
  return value instanceof LosslessNumber;
}
