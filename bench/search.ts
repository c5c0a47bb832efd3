/**
 * Search and `$everything` on a growing encrypted SQLite vault of distinct (cloned) patients: measured once
 * the vault holds `checkpoint` resources and again at `resources`, with the same queries, in one run.
 * Requests are sequential, over HTTP, with a bearer token.
 */
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { emptyTally, get, ingest, percentile, postBundle, round1, startGateway, type Gateway } from './harness.ts';
import { BIG_PATIENT, patientStream, type PatientTemplate, type Workload } from './workload.ts';

type QueryKind = 'Observation?code&patient' | 'Patient?identifier' | 'Condition?code&_count=20' | 'Observation?subject&_count=50';

interface Query {
  kind: QueryKind;
  path: string;
  /** Exact number of matches expected (identifier searches), else at least one. */
  expect?: number;
}

export interface Latency {
  p50: number;
  p95: number;
  n: number;
}

export interface Phase {
  vaultResources: number;
  patients: number;
  search: Latency & { byKind: Record<string, Latency> };
  /** Mean number of matches of the Condition?code queries (grows with the vault). */
  conditionMatchesMean: number;
  everything: Latency & { entries: number; expected: number; included: number };
}

export interface VaultSearchResult {
  store: 'sqlite';
  vault: 'encrypted';
  build: { resources: number; seconds: number; resourcesPerSecond: number };
  phases: Phase[];
  /** p95 at the last phase over p95 at the first (goal ≤ 1.5 for search). */
  searchP95Ratio: number;
  searchP95RatioByKind: Record<string, number>;
  everythingP95Ratio: number;
}

interface Registered {
  template: PatientTemplate;
  clone: number;
  id: string;
}

function latency(samples: number[]): Latency {
  const sorted = [...samples].sort((a, b) => a - b);
  return { p50: round1(percentile(sorted, 50)), p95: round1(percentile(sorted, 95)), n: sorted.length };
}

function patientId(template: PatientTemplate, responseText: string): string {
  const location = (JSON.parse(responseText) as { entry: Array<{ response: { location: string } }> }).entry[template.patientIndex].response.location;
  return /^Patient\/([^/]+)\//.exec(location)![1];
}

function vaultResources(gw: Gateway): number {
  const db = new Database(join(gw.dataDir, 'vault.sqlite'), { readonly: true, fileMustExist: true });
  try {
    return (db.prepare('SELECT COUNT(*) AS n FROM current WHERE deleted = 0').get() as { n: number }).n;
  } finally {
    db.close();
  }
}

/** The query set: per sampled patient, a code+patient, an identifier and a subject search; plus common Condition codes. */
function buildQueries(sample: Registered[], pool: PatientTemplate[]): Query[] {
  const queries: Query[] = [];
  for (const p of sample) {
    queries.push({ kind: 'Observation?code&patient', path: `Observation?code=${encodeURIComponent(`http://loinc.org|${p.template.observationCodes[0]}`)}&patient=${p.id}` });
    queries.push({ kind: 'Patient?identifier', path: `Patient?identifier=${encodeURIComponent(p.template.identifier(p.clone))}`, expect: 1 });
    queries.push({ kind: 'Observation?subject&_count=50', path: `Observation?subject=Patient/${p.id}&_count=50` });
  }
  // Condition codes the sampled patients have (so they match at every vault size), most widespread first.
  const patientsWith = new Map<string, number>();
  for (const t of pool) for (const code of t.conditionCodes) patientsWith.set(code, (patientsWith.get(code) ?? 0) + 1);
  const candidates = [...new Set(sample.flatMap((p) => p.template.conditionCodes))];
  const common = candidates.sort((a, b) => (patientsWith.get(b) ?? 0) - (patientsWith.get(a) ?? 0)).slice(0, sample.length);
  for (const code of common) queries.push({ kind: 'Condition?code&_count=20', path: `Condition?code=${encodeURIComponent(code)}&_count=20` });
  return queries;
}

async function measure(gw: Gateway, queries: Query[], big: Registered, patients: number, opts: { rounds: number; everythingCalls: number }): Promise<Phase> {
  // A first pass checks every query matches and warms caches; it is not timed.
  const conditionMatches: number[] = [];
  for (const q of queries) {
    const { text } = await get(gw, q.path);
    const total = Number(/"total":(\d+)/.exec(text)?.[1] ?? -1);
    if (q.expect !== undefined ? total !== q.expect : total < 1) throw new Error(`${q.path}: ${total} matches`);
    if (q.kind === 'Condition?code&_count=20') conditionMatches.push(total);
  }
  const all: number[] = [];
  const byKind = new Map<string, number[]>();
  for (let round = 0; round < opts.rounds; round++) {
    for (const q of queries) {
      const { ms } = await get(gw, q.path);
      all.push(ms);
      byKind.set(q.kind, [...(byKind.get(q.kind) ?? []), ms]);
    }
  }
  const everythingPath = `Patient/${big.id}/$everything`;
  const first = JSON.parse((await get(gw, everythingPath)).text) as { entry?: Array<{ search: { mode: string } }>; link?: Array<{ relation: string }> };
  if (first.link?.some((l) => l.relation === 'next')) throw new Error('$everything paged: raise _count');
  // The compartment itself; referenced practitioners and organizations come as `include` entries.
  const entries = first.entry?.filter((e) => e.search.mode === 'match').length ?? 0;
  const included = (first.entry?.length ?? 0) - entries;
  const everything: number[] = [];
  for (let i = 0; i < opts.everythingCalls; i++) everything.push((await get(gw, everythingPath)).ms);
  return {
    vaultResources: vaultResources(gw),
    patients,
    search: { ...latency(all), byKind: Object.fromEntries([...byKind].map(([k, v]) => [k, latency(v)])) },
    conditionMatchesMean: Math.round(conditionMatches.reduce((a, b) => a + b, 0) / conditionMatches.length),
    everything: { ...latency(everything), entries, expected: big.template.compartmentSize, included },
  };
}

export async function vaultSearch(
  workload: Workload,
  opts: { checkpoints: number[]; concurrency: number; rounds: number; everythingCalls: number; samplePatients: number; progress: (line: string) => void },
): Promise<VaultSearchResult> {
  const gw = await startGateway('sqlite', 'encrypted');
  try {
    const build = emptyTally();
    await ingest(gw, workload.info.length, (i) => workload.info[i], 1, build);
    const bigTemplate = workload.patients.find((t) => t.name === BIG_PATIENT)!;
    const pool = workload.patients.filter((t) => t !== bigTemplate);
    const { text } = await postBundle(gw, bigTemplate.clone(0));
    const big: Registered = { template: bigTemplate, clone: 0, id: patientId(bigTemplate, text) };
    const target = opts.checkpoints[opts.checkpoints.length - 1];
    const stream = patientStream(pool, target);
    const registered: Registered[] = [];
    let sent = 0;
    let queries: Query[] | undefined;
    const phases: Phase[] = [];
    for (const checkpoint of opts.checkpoints) {
      // Send bundles until the vault holds `checkpoint` resources (smart-2019's conditional
      // Organization/Practitioner entries match existing ones, so entries over-count slightly).
      for (let have = vaultResources(gw); have < checkpoint; have = vaultResources(gw)) {
        let count = 0;
        for (let need = checkpoint - have; need > 0 && sent + count < stream.length; count++) need -= stream[sent + count].template.entries;
        if (count === 0) break;
        const from = sent;
        await ingest(gw, count, (i) => stream[from + i].template.clone(stream[from + i].clone), opts.concurrency, build, (i, response) => {
          const item = stream[from + i];
          registered.push({ ...item, id: patientId(item.template, response) });
        });
        sent += count;
      }
      opts.progress(`vault: ${vaultResources(gw)} resources, ${registered.length + 1} patients; measuring`);
      if (!queries) {
        const step = Math.max(1, Math.floor(registered.length / opts.samplePatients));
        const sample = [big, ...registered.filter((_, i) => i % step === 0)].slice(0, opts.samplePatients);
        queries = buildQueries(sample, pool);
      }
      phases.push(await measure(gw, queries, big, registered.length + 1, opts));
    }
    const [first, last] = [phases[0], phases[phases.length - 1]];
    return {
      store: 'sqlite',
      vault: 'encrypted',
      build: { resources: build.resources, seconds: Number(build.seconds.toFixed(1)), resourcesPerSecond: Math.round(build.resources / build.seconds) },
      phases,
      searchP95Ratio: Number((last.search.p95 / first.search.p95).toFixed(2)),
      searchP95RatioByKind: Object.fromEntries(Object.keys(first.search.byKind).map((k) => [k, Number((last.search.byKind[k].p95 / first.search.byKind[k].p95).toFixed(2))])),
      everythingP95Ratio: Number((last.everything.p95 / first.everything.p95).toFixed(2)),
    };
  } finally {
    await gw.stop();
  }
}
