// Hand-written equivalents of the invariants met on almost every resource, so the hot path does not
// need fhirpath.js (5–70 µs per evaluation). Each is registered with the exact expression it
// implements: if the definitions ever carry a different expression, the native is not used. A native
// may answer undefined ("not sure": unusual shapes, mixed date precisions...) and fhirpath.js decides.
//
// Answers follow the validator's reading of a FHIRPath result: only an explicit `false` fails.
// The unit tests cross-check every native answer against fhirpath.js on the example and Synthea data.
// Deliberate differences from fhirpath.js are listed, with reasons, in DELIBERATE_DIFFERENCES.
import type { InvariantEnv } from './invariants.ts';
import { isLosslessNumber } from './primitives.ts';

export type NativeCheck = (node: unknown, env: InvariantEnv) => boolean | undefined;

type Obj = Record<string, unknown>;

interface NativeInvariant {
  expression: string;
  check: NativeCheck;
}

/** Natives that knowingly answer differently from fhirpath.js 5.2, and why. */
export const DELIBERATE_DIFFERENCES: Record<string, string> = {
  'dom-3':
    'fhirpath.js throws on this expression ("Expected singleton on left side of as"): as(canonical) is ' +
    'applied to a collection. The native implements the intent: every contained resource is referenced ' +
    'from elsewhere in the resource ("#id"), or refers to its container ("#").',
  'rng-2':
    'fhirpath.js compares two Quantities only when it can convert their units, so a Range whose ends have no ' +
    'unit, or the same non-UCUM unit, always passes there (empty result). The native compares the values ' +
    'whenever both ends carry the same unit (or none), as the invariant intends ("low SHALL have a lower ' +
    'value than high").',
  'que-7':
    'fhirpath.js evaluates "answer is Boolean" to false for a FHIR boolean (answerBoolean), because it ' +
    'only matches System.Boolean; FHIR validators treat FHIR.boolean as Boolean here.',
};

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `x.exists()` for a primitive element: a value or a "_x" extension sibling. */
function hasPrimitive(node: Obj, key: string, extKey: string): boolean {
  return node[key] !== undefined || node[extKey] !== undefined;
}

/** Any variant of a choice element `prefix[x]` (valueQuantity, _valueString, ...). */
function hasChoice(node: Obj, prefix: string): boolean {
  for (const key in node) {
    const start = key.charCodeAt(0) === 95 /* _ */ ? 1 : 0;
    if (key.startsWith(prefix, start)) {
      const next = key.charCodeAt(start + prefix.length);
      if (next >= 65 && next <= 90) return true; // upper-case type suffix
    }
  }
  return false;
}

/** Some coding in `codings` has this system and one of the codes. */
function hasCoding(codings: unknown, system: string, codes: readonly string[]): boolean {
  if (!Array.isArray(codings)) return false;
  for (const c of codings) {
    if (isObj(c) && c.system === system && typeof c.code === 'string' && codes.includes(c.code)) return true;
  }
  return false;
}

// dateTime comparison for per-1, only where FHIRPath's answer is certain: both values of the same
// precision (full date + time with seconds and zone, or plain dates of equal length).
const FULL_DATETIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?(Z|[+-]\d{2}:\d{2})$/;
const PLAIN_DATE = /^\d{4}(-\d{2}(-\d{2})?)?$/;

function lessOrEqualDateTime(start: string, end: string): boolean | undefined {
  if (PLAIN_DATE.test(start) && PLAIN_DATE.test(end)) {
    return start.length === end.length ? start <= end : undefined;
  }
  if (FULL_DATETIME.test(start) && FULL_DATETIME.test(end)) {
    if (start.includes('.') !== end.includes('.')) return undefined;
    const a = Date.parse(start);
    const b = Date.parse(end);
    return Number.isNaN(a) || Number.isNaN(b) ? undefined : a <= b;
  }
  return undefined;
}

/** Every string in the tree that starts with "#" (local references, canonicals, uris). */
function collectLocalRefs(value: unknown, out: Set<string>): void {
  if (typeof value === 'string') {
    if (value.charCodeAt(0) === 35) out.add(value);
  } else if (Array.isArray(value)) {
    for (const v of value) collectLocalRefs(v, out);
  } else if (isObj(value)) {
    for (const key in value) collectLocalRefs(value[key], out);
  }
}

function containsValue(value: unknown, wanted: string): boolean {
  if (value === wanted) return true;
  if (Array.isArray(value)) return value.some((v) => containsValue(v, wanted));
  if (isObj(value)) {
    for (const key in value) if (containsValue(value[key], wanted)) return true;
  }
  return false;
}

const CONDITION_CLINICAL = 'http://terminology.hl7.org/CodeSystem/condition-clinical';
const ALLERGY_VERIFICATION = 'http://terminology.hl7.org/CodeSystem/allergyintolerance-verification';
const OFFSET_FORBIDDEN_WHEN = ['C', 'CM', 'CD', 'CV'];
const CONDITION_VER_STATUS = 'http://terminology.hl7.org/CodeSystem/condition-ver-status';
const INACTIVE_CLINICAL = ['resolved', 'remission', 'inactive'] as const;
const ENTERED_IN_ERROR = ['entered-in-error'] as const;

/** `x.exists() implies x >= 0` for a decimal element (JS number or LosslessNumber). */
function nonNegativeIfPresent(node: unknown, key: string): boolean | undefined {
  if (!isObj(node)) return undefined;
  const v = node[key];
  if (v === undefined) return true;
  const n = decimalValue(v);
  return n === undefined ? undefined : n >= 0;
}

/** A decimal element's value as a JS number (JS number or LosslessNumber), undefined otherwise. */
function decimalValue(v: unknown): number | undefined {
  const n = typeof v === 'number' ? v : isLosslessNumber(v) ? Number(v.value) : NaN;
  return Number.isNaN(n) ? undefined : n;
}

/** Two Quantities state the same unit (the same system, code and unit text, or none at all). */
function sameUnit(a: Obj, b: Obj): boolean {
  return a.system === b.system && a.code === b.code && a.unit === b.unit;
}

/** `type = 'x'` on a Bundle: the type, or undefined when it is not a plain string. */
function bundleType(node: Obj): string | undefined {
  return typeof node.type === 'string' ? node.type : undefined;
}

/** `entry.all(<key>.exists() = <expected>)`: every entry has `key` exactly when expected. */
function everyEntryHas(node: unknown, key: string, typesThatNeedIt: readonly string[]): boolean | undefined {
  if (!isObj(node)) return undefined;
  const type = bundleType(node);
  if (type === undefined) return undefined;
  const entries = node.entry;
  if (entries === undefined) return true;
  if (!Array.isArray(entries)) return undefined;
  const expected = typesThatNeedIt.includes(type);
  for (const entry of entries) {
    if (!isObj(entry)) return undefined;
    if ((entry[key] !== undefined) !== expected) return false;
  }
  return true;
}

/** `type = '<type>' implies entry.first().resource.is(<resourceType>)`. */
function firstEntryIs(node: unknown, type: string, resourceType: string): boolean | undefined {
  if (!isObj(node)) return undefined;
  const actual = bundleType(node);
  if (actual === undefined) return node.type === undefined && node._type === undefined ? true : undefined;
  if (actual !== type) return true;
  const entries = node.entry;
  if (!Array.isArray(entries) || entries.length === 0) return true; // empty: implies passes
  const first = entries[0];
  if (!isObj(first) || first.resource === undefined) return true;
  return isObj(first.resource) && first.resource.resourceType === resourceType;
}

/** `contained.<check>` for all contained resources, true when there are none. */
function everyContained(node: unknown, check: (c: Obj) => boolean): boolean | undefined {
  if (!isObj(node)) return undefined;
  const contained = node.contained;
  if (contained === undefined) return true;
  if (!Array.isArray(contained)) return undefined;
  for (const c of contained) {
    if (!isObj(c)) return undefined;
    if (!check(c)) return false;
  }
  return true;
}

const NATIVES: Record<string, NativeInvariant> = {
  'ref-1': {
    expression:
      "reference.startsWith('#').not() or (reference.substring(1).trace('url') in %rootResource.contained.id.trace('ids'))",
    check(node, env) {
      if (!isObj(node)) return undefined;
      const ref = node.reference;
      if (ref === undefined) return true; // empty result: does not apply
      if (typeof ref !== 'string') return undefined;
      if (ref.charCodeAt(0) !== 35) return true;
      if (ref.length === 1) return undefined; // "#" (the container): leave to fhirpath.js
      const root = env.rootResource;
      const contained = isObj(root) ? root.contained : undefined;
      if (contained === undefined) return false;
      if (!Array.isArray(contained)) return undefined;
      for (const c of contained) {
        if (isObj(c) && typeof c.id === 'string' && c.id.length === ref.length - 1 && ref.endsWith(c.id)) return true;
      }
      return false;
    },
  },
  'dom-2': {
    expression: 'contained.contained.empty()',
    check: (node) => everyContained(node, (c) => c.contained === undefined),
  },
  'dom-3': {
    expression:
      "contained.where((('#'+id in (%resource.descendants().reference | %resource.descendants().as(canonical) | %resource.descendants().as(uri) | %resource.descendants().as(url))) or descendants().where(reference = '#').exists() or descendants().where(as(canonical) = '#').exists() or descendants().where(as(canonical) = '#').exists()).not()).trace('unmatched', id).empty()",
    check(node, env) {
      if (!isObj(node) || node.contained === undefined) return true;
      const refs = new Set<string>();
      collectLocalRefs(env.resource, refs);
      return everyContained(node, (c) => {
        if (typeof c.id !== 'string') return true; // '#' + {} is empty: the where() drops it
        return refs.has('#' + c.id) || containsValue(c, '#');
      });
    },
  },
  'dom-4': {
    expression: 'contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()',
    check: (node) =>
      everyContained(node, (c) => {
        const meta = c.meta;
        if (meta === undefined) return true;
        if (!isObj(meta)) return false;
        return !hasPrimitive(meta, 'versionId', '_versionId') && !hasPrimitive(meta, 'lastUpdated', '_lastUpdated');
      }),
  },
  'dom-5': {
    expression: 'contained.meta.security.empty()',
    check: (node) => everyContained(node, (c) => !isObj(c.meta) || c.meta.security === undefined),
  },
  'org-1': {
    expression: '(identifier.count() + name.count()) > 0',
    check: (node) => (isObj(node) ? node.identifier !== undefined || hasPrimitive(node, 'name', '_name') : undefined),
  },
  'per-1': {
    expression: 'start.hasValue().not() or end.hasValue().not() or (start <= end)',
    check(node) {
      if (!isObj(node)) return undefined;
      const { start, end } = node;
      if (start === undefined || end === undefined) return true;
      if (typeof start !== 'string' || typeof end !== 'string') return undefined;
      return lessOrEqualDateTime(start, end);
    },
  },
  'rng-2': {
    expression: 'low.empty() or high.empty() or (low <= high)',
    check(node) {
      if (!isObj(node)) return undefined;
      const { low, high } = node;
      if (low === undefined || high === undefined) return true;
      if (!isObj(low) || !isObj(high) || !sameUnit(low, high)) return undefined;
      const a = decimalValue(low.value);
      const b = decimalValue(high.value);
      return a === undefined || b === undefined ? undefined : a <= b;
    },
  },
  'obs-7': {
    expression: 'value.empty() or component.code.where(coding.intersect(%resource.code.coding).exists()).empty()',
    check(node) {
      if (!isObj(node)) return undefined;
      if (!hasChoice(node, 'value') || node.component === undefined) return true;
      return undefined; // a value next to components: compare codings with fhirpath.js
    },
  },
  'con-4': {
    expression:
      "abatement.empty() or clinicalStatus.coding.where(system='http://terminology.hl7.org/CodeSystem/condition-clinical' and (code='resolved' or code='remission' or code='inactive')).exists()",
    check(node) {
      if (!isObj(node)) return undefined;
      if (!hasChoice(node, 'abatement')) return true;
      const status = node.clinicalStatus;
      return isObj(status) && hasCoding(status.coding, CONDITION_CLINICAL, INACTIVE_CLINICAL);
    },
  },
  'con-5': {
    expression:
      "verificationStatus.coding.where(system='http://terminology.hl7.org/CodeSystem/condition-ver-status' and code='entered-in-error').empty() or clinicalStatus.empty()",
    check(node) {
      if (!isObj(node)) return undefined;
      const verification = node.verificationStatus;
      const inError = isObj(verification) && hasCoding(verification.coding, CONDITION_VER_STATUS, ENTERED_IN_ERROR);
      return !inError || node.clinicalStatus === undefined;
    },
  },
  'bdl-8': {
    expression: "fullUrl.exists() implies fullUrl.contains('/_history/').not()",
    check(node) {
      if (!isObj(node)) return undefined;
      const fullUrl = node.fullUrl;
      return typeof fullUrl === 'string' ? !fullUrl.includes('/_history/') : true;
    },
  },
  'bdl-1': {
    expression: "total.empty() or (type = 'searchset') or (type = 'history')",
    check(node) {
      if (!isObj(node)) return undefined;
      if (!hasPrimitive(node, 'total', '_total')) return true;
      const type = bundleType(node);
      return type === undefined ? undefined : type === 'searchset' || type === 'history';
    },
  },
  'bdl-2': {
    expression: "entry.search.empty() or (type = 'searchset')",
    check(node) {
      if (!isObj(node)) return undefined;
      const entries = node.entry;
      if (entries === undefined) return true;
      if (!Array.isArray(entries)) return undefined;
      if (!entries.some((e) => isObj(e) && e.search !== undefined)) return true;
      const type = bundleType(node);
      return type === undefined ? undefined : type === 'searchset';
    },
  },
  'bdl-3': {
    expression:
      "entry.all(request.exists() = (%resource.type = 'batch' or %resource.type = 'transaction' or %resource.type = 'history'))",
    check: (node) => everyEntryHas(node, 'request', ['batch', 'transaction', 'history']),
  },
  'bdl-4': {
    expression:
      "entry.all(response.exists() = (%resource.type = 'batch-response' or %resource.type = 'transaction-response' or %resource.type = 'history'))",
    check: (node) => everyEntryHas(node, 'response', ['batch-response', 'transaction-response', 'history']),
  },
  'bdl-7': {
    expression:
      "(type = 'history') or entry.where(fullUrl.exists()).select(fullUrl&resource.meta.versionId).isDistinct()",
    check(node) {
      if (!isObj(node)) return undefined;
      if (bundleType(node) === 'history') return true;
      const entries = node.entry;
      if (entries === undefined) return true;
      if (!Array.isArray(entries)) return undefined;
      const seen = new Set<string>();
      for (const entry of entries) {
        if (!isObj(entry)) return undefined;
        if (entry.fullUrl === undefined) {
          if (entry._fullUrl !== undefined) return undefined;
          continue;
        }
        if (typeof entry.fullUrl !== 'string') return undefined;
        const resource = entry.resource;
        const meta = isObj(resource) ? resource.meta : undefined;
        const version = isObj(meta) ? meta.versionId : undefined;
        if (version !== undefined && typeof version !== 'string') return undefined;
        const key = version === undefined ? entry.fullUrl : entry.fullUrl + version;
        if (seen.has(key)) return false;
        seen.add(key);
      }
      return true;
    },
  },
  'bdl-9': {
    expression: "type = 'document' implies (identifier.system.exists() and identifier.value.exists())",
    check(node) {
      if (!isObj(node)) return undefined;
      if (bundleType(node) !== 'document') return node.type === undefined || typeof node.type === 'string' ? true : undefined;
      const id = node.identifier;
      return isObj(id) && hasPrimitive(id, 'system', '_system') && hasPrimitive(id, 'value', '_value');
    },
  },
  'bdl-10': {
    expression: "type = 'document' implies (timestamp.hasValue())",
    check(node) {
      if (!isObj(node)) return undefined;
      if (bundleType(node) !== 'document') return node.type === undefined || typeof node.type === 'string' ? true : undefined;
      return typeof node.timestamp === 'string';
    },
  },
  'bdl-11': {
    expression: "type = 'document' implies entry.first().resource.is(Composition)",
    check: (node) => firstEntryIs(node, 'document', 'Composition'),
  },
  'bdl-12': {
    expression: "type = 'message' implies entry.first().resource.is(MessageHeader)",
    check: (node) => firstEntryIs(node, 'message', 'MessageHeader'),
  },
  'tim-4': {
    expression: 'duration.exists() implies duration >= 0',
    check: (node) => nonNegativeIfPresent(node, 'duration'),
  },
  'tim-5': {
    expression: 'period.exists() implies period >= 0',
    check: (node) => nonNegativeIfPresent(node, 'period'),
  },
  'tim-9': {
    expression: "offset.empty() or (when.exists() and when.select($this in ('C' | 'CM' | 'CD' | 'CV')).allFalse())",
    check(node) {
      if (!isObj(node)) return undefined;
      if (!hasPrimitive(node, 'offset', '_offset')) return true;
      const when = node.when;
      if (when === undefined) return node._when === undefined ? false : undefined;
      if (!Array.isArray(when)) return undefined;
      for (const w of when) {
        if (typeof w !== 'string') return undefined;
        if (OFFSET_FORBIDDEN_WHEN.includes(w)) return false;
      }
      return true;
    },
  },
  'ait-1': {
    expression:
      "verificationStatus.coding.where(system = 'http://terminology.hl7.org/CodeSystem/allergyintolerance-verification' and code = 'entered-in-error').exists() or clinicalStatus.exists()",
    check(node) {
      if (!isObj(node)) return undefined;
      const verification = node.verificationStatus;
      const inError = isObj(verification) && hasCoding(verification.coding, ALLERGY_VERIFICATION, ENTERED_IN_ERROR);
      return inError || node.clinicalStatus !== undefined;
    },
  },
  'ait-2': {
    expression:
      "verificationStatus.coding.where(system = 'http://terminology.hl7.org/CodeSystem/allergyintolerance-verification' and code = 'entered-in-error').empty() or clinicalStatus.empty()",
    check(node) {
      if (!isObj(node)) return undefined;
      const verification = node.verificationStatus;
      const inError = isObj(verification) && hasCoding(verification.coding, ALLERGY_VERIFICATION, ENTERED_IN_ERROR);
      return !inError || node.clinicalStatus === undefined;
    },
  },
  'que-7': {
    expression: "operator = 'exists' implies (answer is Boolean)",
    check(node) {
      if (!isObj(node)) return undefined;
      if (node.operator !== 'exists' || !hasChoice(node, 'answer')) return true;
      return hasPrimitive(node, 'answerBoolean', '_answerBoolean');
    },
  },
};

export function nativeInvariant(key: string, expression: string): NativeCheck | undefined {
  const native = NATIVES[key];
  return native !== undefined && native.expression === expression ? native.check : undefined;
}
