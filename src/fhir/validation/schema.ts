// Compiles medplum's InternalTypeSchema into the form the walker needs: one lookup table per type
// from JSON key to field info (choice types expanded: value[x] → valueQuantity, valueString, ...;
// primitive extension siblings "_key" included), plus the required keys and invariants.
// Each type is compiled once, on first use, and cached.
import type { InternalSchemaElement, InternalTypeSchema } from '@medplum/core';
import { bindingFor, type RequiredBinding } from './bindings.ts';
import { datatypeProfileConstraints, schemaFor } from './definitions.ts';
import { compileInvariants, type Invariant } from './invariants.ts';
import { primitiveRule, type PrimitiveRule } from './primitives.ts';

const HL7_SD = 'http://hl7.org/fhir/StructureDefinition/';

export type FieldKind = 'primitive' | 'complex' | 'resource' | 'primitive-extension';

export interface Field {
  /** JSON property name, e.g. "valueQuantity" or "_birthDate". */
  key: string;
  /** Element name as in the definition, e.g. "value[x]" (used in messages). */
  name: string;
  kind: FieldKind;
  isArray: boolean;
  min: number;
  /** Infinity for "*". */
  max: number;
  /** FHIR type code: "Quantity", "code", "ObservationReferenceRange" (backbone), "Resource". */
  typeName: string;
  primitive: PrimitiveRule | undefined;
  /** Compiled type for complex values, resolved on first use (types are recursive). */
  complexType: CompiledType | undefined;
  /** Bit of this field's choice group ("value[x]") in CompiledType.choiceNames, 0 if not a choice. */
  choiceBit: number;
  /** For "_key" fields: the key of the primitive value they extend; otherwise the field's own key. */
  valueKey: string;
  /** For primitive fields: the "_key" sibling name. */
  extensionKey: string;
  binding: RequiredBinding | undefined;
  /** Allowed resource types of a Reference; undefined means any. */
  referenceTargets: ReadonlySet<string> | undefined;
  /** True when a profile narrowed the targets: then a reference to another type is an error, not a warning. */
  targetsFromProfile?: boolean;
  /** Constraints declared on this element that its type does not already carry. */
  invariants: Invariant[];
  fixed: unknown;
  pattern: unknown;
  /** Canonical of the profile that set this field's cardinality/values (for messages). */
  profile: string | undefined;
}

export interface RequiredRule {
  name: string;
  /** Any of these keys satisfies the rule (choice variants, "_key" extension-only primitives). */
  keys: string[];
  min: number;
  profile: string | undefined;
}

export interface CompiledType {
  name: string;
  /** Definition path, used as the FHIRPath base of the type's invariants. */
  path: string;
  isResource: boolean;
  isExtension: boolean;
  fields: Map<string, Field>;
  required: RequiredRule[];
  /** Choice group names ("value[x]") by bit position. */
  choiceNames: string[];
  /** Bit of the "value[x]" group (used for ext-1 on Extension), 0 if none. */
  valueChoiceBit: number;
  invariants: Invariant[];
  /** Set on types derived from a profile. */
  profileUrl: string | undefined;
}

const compiled = new Map<string, CompiledType>();

export function compiledType(typeName: string): CompiledType {
  let type = compiled.get(typeName);
  if (type === undefined) {
    type = compileType(schemaFor(typeName));
    compiled.set(typeName, type);
  }
  return type;
}

/** The compiled type of a complex field's values (cached on the field). */
export function fieldType(field: Field): CompiledType {
  return (field.complexType ??= compiledType(field.typeName));
}

function compileType(schema: InternalTypeSchema): CompiledType {
  const isResource = schema.kind === 'resource';
  const type: CompiledType = {
    name: schema.name,
    path: schema.path,
    isResource,
    isExtension: schema.name === 'Extension',
    fields: new Map(),
    required: [],
    choiceNames: [],
    valueChoiceBit: 0,
    invariants: [],
    profileUrl: undefined,
  };
  for (const [name, element] of Object.entries(schema.elements)) {
    if (name.includes('.')) continue; // nested paths belong to backbone inner types
    addElementFields(type, name, element);
  }
  type.required = requiredRules(type);
  const valueGroup = type.choiceNames.indexOf('value[x]');
  type.valueChoiceBit = valueGroup < 0 ? 0 : 1 << valueGroup;
  type.invariants = compileInvariants(schema.constraints, type.path);
  return type;
}

function addElementFields(type: CompiledType, name: string, element: InternalSchemaElement): void {
  const isChoice = name.endsWith('[x]');
  const baseName = isChoice ? name.slice(0, -3) : name;
  let choiceBit = 0;
  if (isChoice && type.choiceNames.length < 31) {
    choiceBit = 1 << type.choiceNames.length;
    type.choiceNames.push(name);
  }
  const typeCodes = isChoice ? element.type : element.type.slice(0, 1);
  for (const { code, profile } of typeCodes) {
    const key = isChoice ? baseName + code.charAt(0).toUpperCase() + code.slice(1) : baseName;
    // Resource.id is typed as a plain string in the R4 definitions, but it is an id.
    const rule = type.isResource && key === 'id' ? primitiveRule('id') : primitiveRule(code);
    const kind: FieldKind = rule !== undefined ? 'primitive' : code === 'Resource' ? 'resource' : 'complex';
    const field: Field = {
      key,
      name,
      kind,
      isArray: element.isArray === true || element.max > 1,
      min: element.min,
      max: element.max,
      typeName: rule !== undefined ? rule.type : code,
      primitive: rule,
      complexType: undefined,
      choiceBit,
      valueKey: key,
      extensionKey: '_' + key,
      binding: bindingFor(element.binding, code),
      referenceTargets: code === 'Reference' ? referenceTargets(element) : undefined,
      invariants: [...elementInvariants(element, code, kind, isChoice), ...typeProfileInvariants(code, profile)],
      fixed: element.fixed?.value,
      pattern: element.pattern?.value,
      profile: undefined,
    };
    type.fields.set(key, field);
    // Element.id and Extension.url are XML attributes: they cannot carry extensions.
    const isAttribute = !type.isResource && (key === 'id' || (type.isExtension && key === 'url'));
    if (kind === 'primitive' && !isAttribute) {
      type.fields.set(field.extensionKey, primitiveExtensionField(field));
    }
  }
}

/** The "_key" sibling of a primitive element: an Element (id + extension), or an array of them. */
export function primitiveExtensionField(valueField: Field): Field {
  return {
    ...valueField,
    key: valueField.extensionKey,
    kind: 'primitive-extension',
    typeName: 'Element',
    primitive: undefined,
    complexType: undefined,
    binding: undefined,
    referenceTargets: undefined,
    invariants: [],
    fixed: undefined,
    pattern: undefined,
    valueKey: valueField.key,
  };
}

/** Required-element rules, recomputed whenever a profile changes cardinalities. */
export function requiredRules(type: CompiledType): RequiredRule[] {
  const byName = new Map<string, RequiredRule>();
  for (const field of type.fields.values()) {
    if (field.kind === 'primitive-extension' || field.min < 1) continue;
    let rule = byName.get(field.name);
    if (rule === undefined) {
      rule = { name: field.name.replace('[x]', ''), keys: [], min: field.min, profile: field.profile };
      byName.set(field.name, rule);
    }
    rule.keys.push(field.key);
    if (type.fields.has(field.extensionKey)) rule.keys.push(field.extensionKey);
  }
  return [...byName.values()];
}

function referenceTargets(element: InternalSchemaElement): ReadonlySet<string> | undefined {
  const profiles = element.type.find((t) => t.code === 'Reference')?.targetProfile;
  if (!profiles || profiles.length === 0) return undefined;
  const names = new Set<string>();
  for (const profile of profiles) {
    // Reference(Any), or a profile we cannot map to a type: allow everything.
    if (!profile.startsWith(HL7_SD)) return undefined;
    const name = profile.slice(HL7_SD.length);
    if (name === 'Resource' || name === 'DomainResource') return undefined;
    names.add(name);
  }
  return names;
}

/**
 * Constraints listed on an element that its type does not define itself (e.g. pat-1 on
 * Patient.contact is also on the PatientContact backbone type, so it is checked once, there).
 */
function elementInvariants(element: InternalSchemaElement, code: string, kind: FieldKind, isChoice: boolean): Invariant[] {
  const constraints = element.constraints;
  if (!constraints || constraints.length === 0) return [];
  let own = constraints;
  if (kind === 'complex') {
    const typeKeys = new Set((schemaFor(code).constraints ?? []).map((c) => c.key));
    own = constraints.filter((c) => !typeKeys.has(c.key));
  } else if (kind === 'resource') {
    return [];
  }
  // FHIRPath cannot type a "value[x]" path: a choice variant's invariants are based on its type.
  return compileInvariants(own, isChoice ? code : element.path);
}

/** Invariants a core datatype profile adds to its base type, e.g. sqty-1 on `Quantity(SimpleQuantity)`. */
function typeProfileInvariants(code: string, profiles: string[] | undefined): Invariant[] {
  if (profiles === undefined || profiles.length === 0) return [];
  const baseKeys = new Set((schemaFor(code).constraints ?? []).map((c) => c.key));
  const own = profiles.flatMap(datatypeProfileConstraints).filter((c) => !baseKeys.has(c.key));
  return compileInvariants(own, code);
}
