/**
 * The federated summarized record (issue #12, item 7; DESIGN.md "Performance budget": federated `$everything`
 * of ~750 resources over 3 members, p95 ≤ 400 ms).
 *
 * Three gateways h1, h2, h3 in THIS process (test/support/federation.ts: SQLite vaults, one Kafka channel, each
 * serving the mutual-TLS federation listener on 127.0.0.1), the 750-entry Synthea patient (BIG_PATIENT) split
 * over them by date (test/support/split-patient.ts), each hospital holding the Patient under its own id.
 * h1 also holds the same patient whole, as a patient of its own (its SSN removed, so it links to no one): the
 * local `$everything` of the same record, measured beside.
 *
 *  - federated: `GET /fhir/Patient/{h1's id}/$everything?federated=true&_count=1000` at h1, every page, timed
 *    from the first request to the last byte of the last page (h1 asks h2 and h3 in parallel over mTLS, each
 *    answers its part, h1 verifies every remote entry against its own ledger replica and merges);
 *  - local: `GET /fhir/Patient/{whole}/$everything?_count=1000` at h1, every page;
 *  - verification cost per remote resource, in process on h1: parsing a holder's page and recomputing each
 *    entry's commitment (readHolderPage), and looking the commitments up in h1's ledger replica (anchorFacts).
 * Calls alternate federated / local, after warm-up calls of each. All three gateways share this process's
 * two cores with each other and with Kafka: a federated call here costs what three hospitals' machines
 * would do in parallel, so the figure is conservative.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { patientLinkTokens } from '../src/federation/link-token.ts';
import { readHolderPage } from '../src/federation/remote-check.ts';
import { startFederation, type Hospital } from '../test/support/federation.ts';
import { splitPatientBundle } from '../test/support/split-patient.ts';
import { BIG_PATIENT, SYNTHEA } from './workload.ts';

export interface FederationBenchResult {
  /** Compartment resources of the patient over the three hospitals (the Patient at each). */
  resources: number;
  holders: number;
  calls: number;
  federated: { p50: number; p95: number; entries: number };
  local: { p50: number; p95: number; entries: number };
  /** Federated p95 over local p95. */
  p95Ratio: number;
  /** µs per remote resource: parse + commitment recomputation, ledger lookup, and their sum. */
  verifyUsPerResource: { commitment: number; ledger: number; total: number };
}

const SSN = 'http://hl7.org/fhir/sid/us-ssn';
const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
const round1 = (n: number) => Math.round(n * 10) / 10;

export async function federationBench(opts: { brokers: string; calls: number; progress: (line: string) => void }): Promise<FederationBenchResult> {
  const fed = await startFederation({ members: ['h1', 'h2', 'h3'], brokers: opts.brokers, defaultConsent: 'opt-out' });
  try {
    const h = fed.hospitals;
    const source = JSON.parse(readFileSync(join(SYNTHEA, BIG_PATIENT), 'utf8'));
    const parts = splitPatientBundle(source, 3);
    const whole = structuredClone(source);
    whole.entry[0].resource.identifier = whole.entry[0].resource.identifier.filter((i: { system: string }) => i.system !== SSN);
    opts.progress('federation: loading the patient split over h1, h2, h3, and whole at h1');
    const ids: Record<string, string> = {};
    await Promise.all([...['h1', 'h2', 'h3'].map(async (id, i) => (ids[id] = await load(h[id], parts[i]))), load(h.h1, whole).then((id) => (ids.whole = id))]);
    for (const hospital of Object.values(h)) {
      while ((await hospital.gateway.store.unanchored({ limit: 1 })).length) await new Promise((r) => setTimeout(r, 100));
    }
    // Every replica has every holder's anchors.
    const top = Math.max(...Object.values(h).map((x) => x.gateway.ledger!.member.headHeader()?.number ?? -1));
    while (Object.values(h).some((x) => (x.gateway.ledger!.member.headHeader()?.number ?? -1) < top)) await new Promise((r) => setTimeout(r, 100));

    const federatedPath = `/fhir/Patient/${ids.h1}/$everything?federated=true&_count=1000`;
    const localPath = `/fhir/Patient/${ids.whole}/$everything?_count=1000`;
    const first = await allPages(h.h1, federatedPath);
    const remote = first.entries.filter((e) => /^urn:medblock:member:/.test(e.resource?.meta?.source ?? '')).length;
    const issues = first.entries.filter((e) => e.search?.mode === 'outcome').flatMap((e) => e.resource.issue);
    if (issues.some((i: { severity: string }) => i.severity !== 'information')) throw new Error(`federation bench: the record is partial: ${JSON.stringify(issues)}`);
    opts.progress(`federation: ${first.entries.length} entries (${remote} remote); ${opts.calls} timed calls each`);
    for (let i = 0; i < 3; i++) await Promise.all([allPages(h.h1, federatedPath), allPages(h.h1, localPath)]);
    const federated: number[] = [];
    const local: number[] = [];
    let localEntries = 0;
    for (let i = 0; i < opts.calls; i++) {
      federated.push((await allPages(h.h1, federatedPath)).ms);
      const l = await allPages(h.h1, localPath);
      local.push(l.ms);
      localEntries = l.entries.length;
    }
    federated.sort((a, b) => a - b);
    local.sort((a, b) => a - b);
    const verify = await verificationCost(h.h1, 'h2', source.entry[0].resource);
    const resources = ['h1', 'h2', 'h3'].reduce((n, _id, i) => n + parts[i].entry.filter((e) => !['Organization', 'Practitioner'].includes(e.resource.resourceType)).length, 0);
    const fp95 = percentile(federated, 95);
    const lp95 = percentile(local, 95);
    return {
      resources,
      holders: 3,
      calls: opts.calls,
      federated: { p50: round1(percentile(federated, 50)), p95: round1(fp95), entries: first.entries.length },
      local: { p50: round1(percentile(local, 50)), p95: round1(lp95), entries: localEntries },
      p95Ratio: Number((fp95 / lp95).toFixed(2)),
      verifyUsPerResource: verify,
    };
  } finally {
    await fed.close();
  }
}

async function load(h: Hospital, bundle: unknown): Promise<string> {
  const res = await h.http.post('/fhir').set('Authorization', `Bearer ${h.clinician}`).set('Content-Type', 'application/fhir+json').send(JSON.stringify(bundle));
  if (res.status !== 200) throw new Error(`federation bench: loading at ${h.id} answered ${res.status}`);
  const patient = JSON.parse(res.text).entry.find((e: { response: { location: string } }) => e.response.location.startsWith('Patient/'));
  return patient.response.location.split('/')[1];
}

interface Entry {
  resource: Record<string, any>;
  search?: { mode?: string };
}

/** Every page of a searchset at `h`, following `next` links, and the wall time of all of them. */
async function allPages(h: Hospital, path: string): Promise<{ entries: Entry[]; ms: number }> {
  const started = performance.now();
  const entries: Entry[] = [];
  for (let next: string | undefined = path; next; ) {
    const res = await h.http.get(next).set('Authorization', `Bearer ${h.clinician}`);
    if (res.status !== 200) throw new Error(`federation bench: ${res.status} from ${h.id}`);
    const bundle = JSON.parse(res.text);
    entries.push(...(bundle.entry ?? []));
    const link = bundle.link?.find((l: { relation: string }) => l.relation === 'next')?.url as string | undefined;
    next = link && new URL(link).pathname + new URL(link).search;
  }
  return { entries, ms: performance.now() - started };
}

/**
 * What verifying one remote resource costs the asker: a holder's page (fetched once over the channel, as the
 * record does) parsed with its commitments recomputed, then looked up in the asker's own ledger replica.
 */
async function verificationCost(asker: Hospital, holder: string, patient: unknown): Promise<FederationBenchResult['verifyUsPerResource']> {
  const consortium = asker.gateway.ledger!.consortium;
  const [link] = patientLinkTokens(consortium.patientTokenKey, patient, consortium.federation.linkIdentifierSystems);
  const { text } = await asker.gateway.federation!.client.requestText(holder, 'Patient/$everything', [['_count', '1000']], { sub: 'bench', role: 'clinician', pou: 'TREAT', link });
  const rounds = 20;
  let candidates = readHolderPage(text).candidates;
  let started = performance.now();
  for (let i = 0; i < rounds; i++) candidates = readHolderPage(text).candidates;
  const commitment = ((performance.now() - started) * 1000) / (rounds * candidates.length);
  const digests = candidates.flatMap((c) => (c.ok ? [c.commitment] : []));
  started = performance.now();
  for (let i = 0; i < rounds; i++) await asker.gateway.ledger!.service.anchorFacts(digests);
  const ledger = ((performance.now() - started) * 1000) / (rounds * digests.length);
  return { commitment: round1(commitment), ledger: round1(ledger), total: round1(commitment + ledger) };
}
