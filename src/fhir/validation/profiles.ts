// Profiles held by the gateway (fhir-profiles/): StructureDefinitions that constrain a base R4
// resource. A profile is compiled by copying the base compiled types along the paths its
// differential touches and applying the changes (cardinality, fixed/pattern values, required
// bindings, reference targets, choice-type restrictions, extra invariants). The walker then treats a
// profiled type like any other, so conformance costs one more walk and nothing when unused.
//
// Not supported: slicing (slice definitions are ignored, so slices are not enforced).
import { readFileSync } from 'node:fs';
import type { ElementDefinition, StructureDefinition } from '@medplum/fhirtypes';
import { bindingFor, stripVersion } from './bindings.ts';
import { isConcreteResourceType } from './definitions.ts';
import { compileInvariants } from './invariants.ts';
import {
  compiledType,
  fieldType,
  primitiveExtensionField,
  requiredRules,
  type CompiledType,
  type Field,
} from './schema.ts';
import type { IssueCode, ValidationIssue } from './issues.ts';

const PROFILE_DIR = new URL('../../../fhir-profiles/', import.meta.url);
const HL7_SD = 'http://hl7.org/fhir/StructureDefinition/';

interface HeldProfile {
  url: string;
  /** The constrained resource type. */
  baseType: string;
  definition: StructureDefinition;
  compiled: CompiledType | undefined;
}

interface ProfileIndexFile {
  profiles: { url: string; file: string }[];
}

let held: Map<string, HeldProfile> | undefined;

function heldProfile(sd: StructureDefinition, source: string): HeldProfile {
  if (sd.resourceType !== 'StructureDefinition' || !sd.url) {
    throw new Error(`${source}: not a StructureDefinition with a url`);
  }
  if (!sd.type || !isConcreteResourceType(sd.type)) {
    throw new Error(`${source}: must constrain an R4 resource type`);
  }
  return { url: sd.url, baseType: sd.type, definition: sd, compiled: undefined };
}

function loadHeldProfiles(): Map<string, HeldProfile> {
  const out = new Map<string, HeldProfile>();
  const index = JSON.parse(readFileSync(new URL('index.json', PROFILE_DIR), 'utf8')) as ProfileIndexFile;
  for (const entry of index.profiles) {
    const sd = JSON.parse(readFileSync(new URL(entry.file, PROFILE_DIR), 'utf8')) as StructureDefinition;
    if (sd.url !== entry.url) throw new Error(`fhir-profiles/${entry.file}: url is not ${entry.url}`);
    out.set(sd.url, heldProfile(sd, `fhir-profiles/${entry.file}`));
  }
  return out;
}

/** Holds one more profile at run time (tests; later perhaps profiles uploaded by the consortium). */
export function registerProfile(sd: StructureDefinition): void {
  heldProfiles().set(sd.url as string, heldProfile(sd, `profile ${sd.url}`));
}

function heldProfiles(): Map<string, HeldProfile> {
  held ??= loadHeldProfiles();
  return held;
}

export function heldProfileUrls(): string[] {
  return [...heldProfiles().keys()];
}

export interface HeldProfileInfo {
  url: string;
  /** The resource type the profile constrains. */
  type: string;
  title: string | undefined;
}

export function heldProfileInfo(): HeldProfileInfo[] {
  return [...heldProfiles().values()].map((p) => ({ url: p.url, type: p.baseType, title: p.definition.title }));
}

/** The compiled type of a held profile, or undefined if the gateway does not hold it. */
export function profileType(canonical: string): CompiledType | undefined {
  const profile = heldProfiles().get(stripVersion(canonical));
  if (profile === undefined) return undefined;
  profile.compiled ??= compileProfile(profile);
  return profile.compiled;
}

interface IssueSink {
  location: { toString(): string };
  report(severity: ValidationIssue['severity'], code: IssueCode, message: string, expression?: string): void;
}

/**
 * The types a resource must conform to: the profiles it claims in meta.profile that we hold, plus
 * those asked for explicitly. Undefined means "just the base type".
 */
export function profileTypesFor(
  node: Record<string, unknown>,
  base: CompiledType,
  explicit: CompiledType[] | undefined,
  sink: IssueSink,
): CompiledType[] | undefined {
  let types: CompiledType[] | undefined;
  const meta = node.meta as Record<string, unknown> | undefined;
  const claimed = typeof meta === 'object' && meta !== null ? meta.profile : undefined;
  if (Array.isArray(claimed)) {
    for (let i = 0; i < claimed.length; i++) {
      if (typeof claimed[i] !== 'string') continue; // the walk reports the type error
      const type = profileType(claimed[i]);
      if (type === undefined) {
        sink.report(
          'information',
          'informational',
          'Claimed profile is not held by this gateway; the resource was checked against base R4 only',
          `${sink.location.toString()}.meta.profile[${i}]`,
        );
      } else if (type.name !== base.name) {
        const where = `${sink.location.toString()}.meta.profile[${i}]`;
        sink.report('error', 'invalid', `Profile ${type.profileUrl} constrains ${type.name}, not ${base.name}`, where);
      } else {
        (types ??= []).push(type);
      }
    }
  }
  for (const type of explicit ?? []) {
    if (type.name !== base.name) {
      sink.report('error', 'invalid', `Profile ${type.profileUrl} constrains ${type.name}, not ${base.name}`);
    } else if (!types?.includes(type)) {
      (types ??= []).push(type);
    }
  }
  return types;
}

// ---------------------------------------------------------------------------------------------
// Compilation of a differential onto copies of the base types

function cloneType(type: CompiledType, url: string): CompiledType {
  return {
    ...type,
    fields: new Map(type.fields),
    invariants: [...type.invariants],
    required: [...type.required],
    profileUrl: url,
  };
}

function compileProfile(profile: HeldProfile): CompiledType {
  const { url, definition } = profile;
  const root = cloneType(compiledType(profile.baseType), url);
  const touched = new Set<CompiledType>([root]);
  const elements = definition.differential?.element ?? definition.snapshot?.element ?? [];
  for (const element of elements) {
    if (element.sliceName || element.id?.includes(':')) continue; // slicing is not supported
    const segments = element.path.split('.');
    if (segments[0] !== profile.baseType) {
      throw new Error(`Profile ${url}: element ${element.path} is not in ${profile.baseType}`);
    }
    if (segments.length === 1) {
      root.invariants.push(...profileInvariants(element, profile.baseType, url));
      continue;
    }
    let type = root;
    for (const segment of segments.slice(1, -1)) type = derivedChild(type, segment, url, touched, element.path);
    applyElement(type, segments[segments.length - 1], element, url);
  }
  for (const type of touched) type.required = requiredRules(type);
  return root;
}

/** The profiled copy of the type of `parent.segment`, creating it on first use. */
function derivedChild(
  parent: CompiledType,
  segment: string,
  url: string,
  touched: Set<CompiledType>,
  path: string,
): CompiledType {
  const field = parent.fields.get(segment);
  if (field === undefined || field.kind !== 'complex') {
    throw new Error(`Profile ${url}: cannot constrain inside ${path} (${segment} is not a complex element)`);
  }
  if (field.complexType?.profileUrl === url) return field.complexType;
  const child = cloneType(fieldType(field), url);
  parent.fields.set(segment, { ...field, complexType: child });
  touched.add(child);
  return child;
}

/** The fields an element name addresses: one, or every variant of a choice ("value[x]"). */
function fieldsNamed(type: CompiledType, name: string): Field[] {
  const out: Field[] = [];
  for (const field of type.fields.values()) {
    if (field.kind === 'primitive-extension') continue;
    if (field.key === name || field.name === name) out.push(field);
  }
  return out;
}

function applyElement(type: CompiledType, name: string, element: ElementDefinition, url: string): void {
  const fields = fieldsNamed(type, name);
  if (fields.length === 0) throw new Error(`Profile ${url}: ${element.path} is not an element of ${type.name}`);
  const allowedTypes = element.type?.map((t) => t.code);
  for (const original of fields) {
    const field: Field = { ...original, profile: url };
    if (element.min !== undefined) field.min = element.min;
    if (element.max !== undefined) field.max = element.max === '*' ? Infinity : Number(element.max);
    // Restricting a choice's types prohibits the other variants.
    if (allowedTypes && field.name.endsWith('[x]') && !allowedTypes.includes(field.typeName)) field.max = 0;
    const fixed = valueWithPrefix(element, 'fixed');
    if (fixed !== undefined) field.fixed = fixed;
    const pattern = valueWithPrefix(element, 'pattern');
    if (pattern !== undefined) field.pattern = pattern;
    const binding = bindingFor(element.binding, field.typeName);
    if (binding !== undefined) field.binding = binding;
    const targets = referenceTargets(element);
    if (targets !== undefined) {
      field.referenceTargets = targets;
      field.targetsFromProfile = true;
    }
    if (element.constraint?.length) {
      const base = field.kind === 'complex' ? fieldType(field).path : element.path;
      field.invariants = [...field.invariants, ...profileInvariants(element, base, url)];
    }
    type.fields.set(field.key, field);
    if (type.fields.has(field.extensionKey)) type.fields.set(field.extensionKey, primitiveExtensionField(field));
  }
}

function profileInvariants(element: ElementDefinition, base: string, url: string) {
  const constraints = (element.constraint ?? []).map((c) => ({
    key: c.key as string,
    severity: c.severity as 'error' | 'warning',
    expression: c.expression as string,
    description: c.human as string,
  }));
  return compileInvariants(constraints, base, url);
}

function valueWithPrefix(element: ElementDefinition, prefix: 'fixed' | 'pattern'): unknown {
  for (const key of Object.keys(element)) {
    if (key.startsWith(prefix)) return (element as unknown as Record<string, unknown>)[key];
  }
  return undefined;
}

/** Reference target types from targetProfile: base R4 types, or our own profiles' base types. */
function referenceTargets(element: ElementDefinition): ReadonlySet<string> | undefined {
  const profiles = element.type?.find((t) => t.code === 'Reference')?.targetProfile;
  if (!profiles?.length) return undefined;
  const names = new Set<string>();
  for (const profile of profiles) {
    const ours = heldProfiles().get(profile);
    if (ours !== undefined) names.add(ours.baseType);
    else if (profile.startsWith(HL7_SD) && profile !== HL7_SD + 'Resource') names.add(profile.slice(HL7_SD.length));
    else return undefined;
  }
  return names;
}
