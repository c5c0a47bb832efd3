/**
 * The benchmark workload: the Synthea bundles of ../shared/fhir-data/synthea (never copied into the repo),
 * and distinct patients cloned from them.
 *
 * A clone is the source bundle with every `urn:uuid:` fullUrl of the bundle replaced by a fresh one (the
 * same replacement wherever the uuid occurs: fullUrl, references, Synthea's own identifier values) and every
 * identifier value of the patient's resources suffixed with `-c<n>`, so conditional creates and identifier
 * searches stay unique. Organization / Practitioner / Location / PractitionerRole are shared reference
 * data: their identifiers are kept, and smart-2019 bundles send them as conditional creates.
 *
 * The bundle is parsed and re-serialised once per source with the decimal-preserving parseFhirJson /
 * stringifyFhirJson; clones are then made on the text (a split template, joined per clone), so decimal
 * lexemes survive and a clone costs a string join. Clone numbers are deterministic (`c<n>` prefixes), so two
 * runs of the same stream send the same bundles in the same order.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseFhirJson, stringifyFhirJson } from '../src/fhir/json.ts';

export const SYNTHEA = join(import.meta.dirname, '..', '..', 'shared', 'fhir-data', 'synthea');

/** The smart-2019 patient with 750 entries: the `$everything` subject of the vault benchmark. */
export const BIG_PATIENT = 'smart-2019/Darron_Feeney_ff447d4a-3e5c-4e90-9854-a66a1d0bdfac.json';

const REFERENCE_DATA = new Set(['Organization', 'Practitioner', 'Location', 'PractitionerRole']);
const MARK = '@@clone@@';

export interface BundleFile {
  name: string;
  text: string;
  entries: number;
}

interface Identifier {
  system?: string;
  value?: string;
}

interface Entry {
  fullUrl?: string;
  resource: { resourceType: string; identifier?: Identifier[]; code?: { coding?: Array<{ system?: string; code?: string }> } };
  request: Record<string, string>;
}

/**
 * smart-2019 patient bundles re-POST their Organization and Practitioner unconditionally. Ingested over and
 * over, they would multiply those resources and make hiv-2021's conditional references (which match on the
 * same Synthea identifiers) ambiguous, so the workload sends them as conditional creates on their identifier,
 * as a well-behaved EHR would.
 */
function withConditionalReferenceData(bundle: { entry?: Entry[] }): void {
  for (const entry of bundle.entry ?? []) {
    const { resourceType, identifier } = entry.resource;
    if ((resourceType === 'Organization' || resourceType === 'Practitioner') && !entry.request.ifNoneExist && identifier?.[0]) {
      entry.request.ifNoneExist = `identifier=${identifier[0].system}|${identifier[0].value}`;
    }
  }
}

/** A patient bundle prepared for cloning. */
export class PatientTemplate {
  readonly entries: number;
  /** Entries in the Patient compartment plus the Patient: what `$everything` must return for a clone. */
  readonly compartmentSize: number;
  /** Index of the Patient entry (its response entry carries the assigned id). */
  readonly patientIndex: number;
  /** LOINC codes of the patient's Observations, most frequent first. */
  readonly observationCodes: string[];
  /** `system|code` of the patient's Conditions. */
  readonly conditionCodes: string[];
  private readonly pieces: string[];
  private readonly slots: string[];
  private readonly pattern: RegExp;
  private readonly patientIdentifier: Identifier;

  constructor(readonly name: string, sourceText: string) {
    const bundle = parseFhirJson(sourceText) as { entry: Entry[] };
    withConditionalReferenceData(bundle);
    const uuids: string[] = [];
    for (const entry of bundle.entry) {
      const m = /^urn:uuid:([0-9a-f-]{36})$/i.exec(entry.fullUrl ?? '');
      if (m) uuids.push(m[1]);
      if (REFERENCE_DATA.has(entry.resource.resourceType)) continue;
      for (const id of entry.resource.identifier ?? []) if (typeof id.value === 'string') id.value += MARK;
    }
    this.entries = bundle.entry.length;
    this.patientIndex = bundle.entry.findIndex((e) => e.resource.resourceType === 'Patient');
    const patient = bundle.entry[this.patientIndex];
    const patientRef = patient.fullUrl!;
    this.compartmentSize = 1 + bundle.entry.filter((e) => e !== patient && stringifyFhirJson(e.resource).includes(`"${patientRef}"`)).length;
    const codes = (type: string, system?: string) => {
      const counts = new Map<string, number>();
      for (const e of bundle.entry) {
        if (e.resource.resourceType !== type) continue;
        for (const c of e.resource.code?.coding ?? []) {
          if (!c.code || (system && c.system !== system)) continue;
          const key = system ? c.code : `${c.system}|${c.code}`;
          counts.set(key, (counts.get(key) ?? 0) + 1);
        }
      }
      return [...counts].sort((a, b) => b[1] - a[1]).map(([k]) => k);
    };
    this.observationCodes = codes('Observation', 'http://loinc.org');
    this.conditionCodes = codes('Condition');
    this.patientIdentifier = { ...patient.resource.identifier![0] };
    this.pattern = new RegExp([MARK, ...uuids].map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'g');
    const text = stringifyFhirJson(bundle);
    this.pieces = [];
    this.slots = [];
    let at = 0;
    for (const m of text.matchAll(this.pattern)) {
      this.pieces.push(text.slice(at, m.index));
      this.slots.push(m[0]);
      at = m.index! + m[0].length;
    }
    this.pieces.push(text.slice(at));
  }

  private replacement(slot: string, clone: number): string {
    if (slot === MARK) return `-c${clone}`;
    return `c${clone.toString(16).padStart(7, '0')}${slot.slice(8)}`;
  }

  /** Clone number `clone` of this bundle (a distinct patient). */
  clone(clone: number): BundleFile {
    let text = this.pieces[0];
    for (let i = 0; i < this.slots.length; i++) text += this.replacement(this.slots[i], clone) + this.pieces[i + 1];
    return { name: `${this.name}#c${clone}`, text, entries: this.entries };
  }

  /** The first identifier of clone `clone`'s Patient, as `system|value`. */
  identifier(clone: number): string {
    const value = this.patientIdentifier.value!.replace(this.pattern, (slot) => this.replacement(slot, clone));
    return `${this.patientIdentifier.system}|${value}`;
  }
}

export interface Workload {
  /** Hospital / practitioner bundles: loaded first (hiv-2021's conditional references need them). */
  info: BundleFile[];
  patients: PatientTemplate[];
}

export function loadWorkload(sets?: string[]): Workload {
  const info: BundleFile[] = [];
  const patients: PatientTemplate[] = [];
  for (const set of readdirSync(SYNTHEA).sort()) {
    if (sets && !sets.includes(set)) continue;
    for (const file of readdirSync(join(SYNTHEA, set)).sort()) {
      const name = `${set}/${file}`;
      const text = readFileSync(join(SYNTHEA, set, file), 'utf8');
      if (/Information/.test(file)) {
        const bundle = parseFhirJson(text) as { entry: Entry[] };
        withConditionalReferenceData(bundle);
        info.push({ name, text: stringifyFhirJson(bundle), entries: bundle.entry.length });
      } else patients.push(new PatientTemplate(name, text));
    }
  }
  return { info, patients };
}

/** One bundle of a stream: which template, which clone. */
export interface StreamItem {
  template: PatientTemplate;
  clone: number;
}

/**
 * The patient stream: the templates round-robin, clone numbers counting up from `firstClone`, until
 * `resources` entries have been listed.
 */
export function patientStream(templates: PatientTemplate[], resources: number, firstClone = 1): StreamItem[] {
  const items: StreamItem[] = [];
  let total = 0;
  for (let i = 0; total < resources; i++) {
    const template = templates[i % templates.length];
    items.push({ template, clone: firstClone + i });
    total += template.entries;
  }
  return items;
}
