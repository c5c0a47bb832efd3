// Reference.reference: literal reference format and, where the target type is explicit, whether
// the element allows it (http://hl7.org/fhir/R4/references.html#literal).
import { isConcreteResourceType } from './definitions.ts';

const RELATIVE_RE = /^([A-Z][A-Za-z]+)\/[A-Za-z0-9\-.]{1,64}(\/_history\/[A-Za-z0-9\-.]{1,64})?$/;
/** Conditional references ("Type?query") are resolved by the server inside transaction bundles. */
const CONDITIONAL_RE = /^([A-Z][A-Za-z]+)\?\S/;
const UUID_RE = /^urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const LOCAL_RE = /^#([A-Za-z0-9\-.]{1,64})?$/;
const OID_RE = /^urn:oid:[0-2](\.(0|[1-9][0-9]*))+$/;
const ABSOLUTE_RE = /^[A-Za-z][A-Za-z0-9+.\-]*:[^ \t\r\n]+$/;
/** An absolute RESTful FHIR URL names its type too: http://server/fhir/Patient/123[/_history/1]. */
const ABSOLUTE_REST_RE = /^https?:\/\/[^ \t\r\n]*\/([A-Z][A-Za-z]+)\/[A-Za-z0-9\-.]{1,64}(\/_history\/[A-Za-z0-9\-.]{1,64})?$/;

export interface ReferenceProblem {
  /**
   * A malformed reference is an error. A well-formed reference to a type the element does not list is a
   * warning: real feeds (and four official R4 examples) carry such references, and medplum and HAPI accept
   * them; $validate still reports it.
   */
  severity: 'error' | 'warning';
  code: 'value' | 'invalid';
  message: string;
}

const MALFORMED: ReferenceProblem = {
  severity: 'error',
  code: 'value',
  message:
    'Invalid literal reference: expected Type/id, Type/id/_history/version, an absolute URL, #local, urn:uuid:, urn:oid: or a conditional Type?query',
};
const UNKNOWN_TYPE: ReferenceProblem = { severity: 'error', code: 'value', message: 'Reference names an unknown resource type' };

const VALID = null;

/**
 * The explicit target type of a literal reference ("Patient" for Patient/1, Patient?identifier=..,
 * http://server/fhir/Patient/1), VALID (null) for a well-formed reference that names no type
 * (#local, urn:uuid:, other absolute URLs), or the problem with it.
 */
function explicitType(reference: string): string | typeof VALID | ReferenceProblem {
  const c = reference.charCodeAt(0);
  if (c === 35 /* # */) return LOCAL_RE.test(reference) ? VALID : MALFORMED;
  if (c >= 65 && c <= 90 /* A-Z: relative or conditional */) {
    const m = RELATIVE_RE.exec(reference) ?? CONDITIONAL_RE.exec(reference);
    if (m === null) return MALFORMED;
    return isConcreteResourceType(m[1]) ? m[1] : UNKNOWN_TYPE;
  }
  if (reference.startsWith('urn:uuid:')) return UUID_RE.test(reference) ? VALID : MALFORMED;
  if (reference.startsWith('urn:oid:')) return OID_RE.test(reference) ? VALID : MALFORMED;
  if (!ABSOLUTE_RE.test(reference)) return MALFORMED;
  const rest = ABSOLUTE_REST_RE.exec(reference);
  return rest !== null && isConcreteResourceType(rest[1]) ? rest[1] : VALID;
}

export function checkReference(
  reference: Record<string, unknown>,
  targets: ReadonlySet<string> | undefined,
): ReferenceProblem | undefined {
  const literal = reference.reference;
  if (typeof literal !== 'string' || literal.length === 0) return undefined; // primitive checks report it
  const type = explicitType(literal);
  if (type === VALID) return undefined;
  if (typeof type !== 'string') return type;
  if (targets !== undefined && !targets.has(type)) {
    return {
      severity: 'warning',
      code: 'invalid',
      message: `Reference to ${type} is not allowed here (allowed: ${[...targets].join(', ')})`,
    };
  }
  return undefined;
}
