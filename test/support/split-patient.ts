/**
 * Splits one Synthea patient's transaction Bundle over several hospitals, as if the patient had been treated
 * at each in turn: every part holds the Patient (each hospital registers the person under its own id) and the
 * shared reference data (Organization, Practitioner …), and the clinical resources go by date.
 *
 * A transaction must resolve its own `urn:uuid:` references, so resources linked by references (an Encounter,
 * its Observations, the Claim naming them, a CarePlan addressing a Condition of an earlier visit) travel
 * together: the clinical resources are grouped into the connected parts of their reference graph, the groups
 * ordered by their earliest date, and consecutive groups filled into part 1, then 2 … up to an equal share each.
 */
type Resource = Record<string, unknown> & { resourceType: string };
interface Entry {
  fullUrl?: string;
  resource: Resource;
  request?: unknown;
}
export interface TransactionBundle {
  resourceType: 'Bundle';
  type: 'transaction';
  entry: Entry[];
}

/** Resources every part carries: the person and the reference data a hospital has of its own. */
const IN_EVERY_PART = new Set(['Patient', 'Organization', 'Practitioner', 'Location', 'PractitionerRole']);
const URN_UUID = /"(urn:uuid:[0-9a-fA-F-]{36})"/g;
const DATE_FIELDS = ['effectiveDateTime', 'issued', 'onsetDateTime', 'recordedDate', 'authoredOn', 'occurrenceDateTime', 'performedDateTime', 'date', 'started', 'created'];
const PERIOD_FIELDS = ['period', 'billablePeriod', 'performedPeriod', 'effectivePeriod'];

/** The earliest date a resource names (ISO strings compare as dates), or '9999' when it names none. */
function clinicalDate(resource: Resource): string {
  const dates: string[] = [];
  for (const field of DATE_FIELDS) if (typeof resource[field] === 'string') dates.push(resource[field] as string);
  for (const field of PERIOD_FIELDS) {
    const start = (resource[field] as { start?: unknown } | undefined)?.start;
    if (typeof start === 'string') dates.push(start);
  }
  return dates.sort()[0] ?? '9999';
}

export function splitPatientBundle(bundle: { entry: Entry[] }, parts: number): TransactionBundle[] {
  const entries = bundle.entry;
  const byUrl = new Map(entries.map((e, i) => [e.fullUrl, i]));
  const parent = entries.map((_, i) => i);
  const root = (i: number): number => (parent[i] === i ? i : (parent[i] = root(parent[i])));
  const clinical = entries.map((e, i) => i).filter((i) => !IN_EVERY_PART.has(entries[i].resource.resourceType));
  for (const i of clinical) {
    for (const [, urn] of JSON.stringify(entries[i].resource).matchAll(URN_UUID)) {
      const j = byUrl.get(urn);
      if (j !== undefined && !IN_EVERY_PART.has(entries[j].resource.resourceType)) parent[root(i)] = root(j);
    }
  }
  const groups = new Map<number, number[]>();
  for (const i of clinical) {
    const r = root(i);
    groups.set(r, [...(groups.get(r) ?? []), i]);
  }
  const ordered = [...groups.values()]
    .map((members) => ({ members, date: members.map((i) => clinicalDate(entries[i].resource)).sort()[0] }))
    .sort((a, b) => (a.date < b.date ? -1 : a.date > b.date ? 1 : 0));
  const share = clinical.length / parts;
  const assigned: number[][] = Array.from({ length: parts }, () => []);
  let part = 0;
  for (const { members } of ordered) {
    if (part < parts - 1 && assigned[part].length > 0 && assigned[part].length + members.length / 2 > share) part++;
    assigned[part].push(...members);
  }
  const everyPart = entries.filter((e) => IN_EVERY_PART.has(e.resource.resourceType));
  return assigned.map((members) => ({
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [...everyPart, ...members.sort((a, b) => a - b).map((i) => entries[i])].map((e) => structuredClone(e)),
  }));
}
