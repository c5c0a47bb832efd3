/**
 * The security tax: one workload (same bundles, same order, same concurrency) ingested into an encrypted
 * vault and into a plaintext one (the same pipeline with the database adapter used directly), side by side.
 * Both gateways run at once on fresh vaults, idle in turn: the stream is cut into `rounds` segments and each
 * segment goes to both, in A B, B A, A B … order, so drift in the machine's load hits both modes alike.
 */
import { emptyTally, ingest, percentile, round1, startGateway, type Gateway, type IngestTally, type Store, type Vault } from './harness.ts';
import { patientStream, type Workload } from './workload.ts';

export interface ModeResult {
  vault: Vault;
  resources: number;
  bundles: number;
  seconds: number;
  resourcesPerSecond: number;
  cpuUsPerResource: number;
  bundleLatencyMs: { p50: number; p95: number };
  peakRssMb: number;
}

export interface TaxResult {
  store: Store;
  rounds: number;
  concurrency: number;
  /** Hospital/practitioner bundles loaded first (not timed). */
  infoResources: number;
  encrypted: ModeResult;
  plaintext: ModeResult;
  /** Plaintext throughput over encrypted throughput (goal ≤ 1.25). */
  throughputRatio: number;
  /** Encrypted CPU per resource over plaintext CPU per resource (robust to other load on the machine). */
  cpuRatio: number;
}

function summarize(vault: Vault, t: IngestTally, gw: Gateway): ModeResult {
  const sorted = [...t.latenciesMs].sort((a, b) => a - b);
  return {
    vault,
    resources: t.resources,
    bundles: t.bundles,
    seconds: Number(t.seconds.toFixed(2)),
    resourcesPerSecond: Math.round(t.resources / t.seconds),
    cpuUsPerResource: Math.round((t.cpuSeconds * 1e6) / t.resources),
    bundleLatencyMs: { p50: round1(percentile(sorted, 50)), p95: round1(percentile(sorted, 95)) },
    peakRssMb: Math.round(gw.peakRssMb()),
  };
}

export async function securityTax(
  store: Store,
  workload: Workload,
  opts: { resources: number; rounds: number; concurrency: number; mongodbUri?: string; progress: (line: string) => void },
): Promise<TaxResult> {
  const stream = patientStream(workload.patients, opts.resources);
  const gateways: Record<Vault, Gateway | undefined> = { encrypted: undefined, plaintext: undefined };
  try {
    for (const vault of ['encrypted', 'plaintext'] as const) {
      const gw = (gateways[vault] = await startGateway(store, vault, opts.mongodbUri));
      const info = emptyTally();
      await ingest(gw, workload.info.length, (i) => workload.info[i], 1, info);
      opts.progress(`${store}/${vault}: ${info.resources} reference-data resources loaded in ${info.seconds.toFixed(1)} s`);
    }
    const tallies: Record<Vault, IngestTally> = { encrypted: emptyTally(), plaintext: emptyTally() };
    for (let round = 0; round < opts.rounds; round++) {
      const from = Math.floor((round * stream.length) / opts.rounds);
      const to = Math.floor(((round + 1) * stream.length) / opts.rounds);
      const order: Vault[] = round % 2 === 0 ? ['encrypted', 'plaintext'] : ['plaintext', 'encrypted'];
      for (const vault of order) {
        const before = { ...tallies[vault] };
        await ingest(gateways[vault]!, to - from, (i) => stream[from + i].template.clone(stream[from + i].clone), opts.concurrency, tallies[vault]);
        const t = tallies[vault];
        opts.progress(
          `${store}/${vault} segment ${round + 1}/${opts.rounds}: ${t.resources - before.resources} resources, ` +
            `${Math.round((t.resources - before.resources) / (t.seconds - before.seconds))}/s`,
        );
      }
    }
    const encrypted = summarize('encrypted', tallies.encrypted, gateways.encrypted!);
    const plaintext = summarize('plaintext', tallies.plaintext, gateways.plaintext!);
    return {
      store,
      rounds: opts.rounds,
      concurrency: opts.concurrency,
      infoResources: workload.info.reduce((n, f) => n + f.entries, 0),
      encrypted,
      plaintext,
      throughputRatio: Number((plaintext.resourcesPerSecond / encrypted.resourcesPerSecond).toFixed(2)),
      cpuRatio: Number((encrypted.cpuUsPerResource / plaintext.cpuUsPerResource).toFixed(2)),
    };
  } finally {
    for (const gw of Object.values(gateways)) await gw?.stop();
  }
}
