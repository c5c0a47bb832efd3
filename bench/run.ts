/**
 * `npm run bench` (issue #4 item 5, DESIGN.md "Performance budget"), in one run:
 *  1. security tax — the same ingest over HTTP (same cloned Synthea patients, same order, same concurrency)
 *     into an encrypted vault and a plaintext one (bench/gateway.ts, BENCH_PLAINTEXT=1), on SQLite and on
 *     the MongoDB wire (FerretDB, started by test/engines unless MEDBLOCK_MONGODB_URI is set), alternating
 *     segments A B / B A (bench/ingest.ts);
 *  2. search and `$everything` on an encrypted SQLite vault of distinct cloned patients, at 10,000 and at
 *     ≥ 100,000 resources (bench/search.ts);
 *  3. the in-process compute floor: parse + validate + JCS + SHA-256 + AES-256-GCM (bench/floor.ts);
 *  4. our validator against @medplum/core's (bench/validation.ts);
 *  5. the consortium ledger: anchored digests/s with three members, and finality latency (submit →
 *     quorum-attested) under that (saturating, closed-loop) load, at a fixed offered load equal to the
 *     goal (open loop: each member submits on a timer whatever the ledger does) and at light load, on
 *     Kafka (started by test/engines unless MEDBLOCK_KAFKA_BROKERS is set) and on the solo orderer; the
 *     three members run in this one process, and must end with the same head hash, else the bench exits
 *     non-zero after the table (bench/ledger.ts);
 *  6. the federated summarized record: `$everything?federated=true` of the 750-entry Synthea patient split
 *     over three gateways (one Kafka channel, mutual TLS between them), beside the local `$everything` of the
 *     same patient held whole, and what verifying a remote resource costs (bench/federation.ts).
 * Prints one markdown table and writes bench/results.json. Figures are for comparison within one run:
 * the machine is shared and noisy, so nothing here is a pass/fail test.
 *
 * Knobs (environment):
 *   BENCH_STORES=sqlite,mongodb     adapters for the security tax (the vault part is SQLite-only)
 *   BENCH_RESOURCES=50000           SQLite security-tax resources per mode (encrypted, plaintext)
 *   BENCH_MONGODB_RESOURCES=4000    FerretDB security-tax resources per mode (FerretDB scans for every
 *                                   query, so each bundle slows down as its vault grows: keep this small)
 *   BENCH_TAX_ROUNDS=4              segments per mode, alternated between the modes
 *   BENCH_CONCURRENCY=4             bundles in flight during ingest
 *   BENCH_VAULT_RESOURCES=100000    vault size of the last search measurement (0 skips the vault part)
 *   BENCH_VAULT_CHECKPOINT=10000    vault size of the first search measurement
 *   BENCH_SEARCH_ROUNDS=20          timed passes over the query set per measurement
 *   BENCH_SEARCH_PATIENTS=8         patients (and Condition codes) in the query set
 *   BENCH_EVERYTHING_CALLS=40       timed $everything calls per measurement
 *   BENCH_FLOOR_RESOURCES=20000     resources through the compute floor
 *   BENCH_VALIDATION=1              0 skips the validator comparison
 *   BENCH_LEDGER=1                  0 skips the consortium ledger part
 *   BENCH_LEDGER_ORDERERS=kafka,solo  orderers the ledger part runs on
 *   BENCH_LEDGER_DIGESTS=300000     digests anchored per orderer (1000 per envelope, shared by the 3 members)
 *   BENCH_LEDGER_IN_FLIGHT=4        envelopes per member ordered but not yet committed on it (the anchor
 *                                   publisher's bound); more adds queueing latency, not throughput, here
 *   BENCH_LEDGER_LIGHT=20           envelopes of the light-load finality run (one at a time; 0 skips it)
 *   BENCH_LEDGER_OPEN_SECONDS=20    length of the open-loop run at a fixed offered load (0 skips it)
 *   BENCH_LEDGER_OPEN_PERIOD_MS=300 each member submits one 1000-digest envelope every this many ms in the
 *                                   open-loop run (300: 3 × 1000 / 0.3 s = 10,000 digests/s, the goal)
 *   BENCH_FEDERATION_CALLS=30       timed federated (and local) $everything calls; 0 skips the federation part
 *   BENCH_RESULTS=bench/results.json  where to write the results (relative to the project root)
 *   BENCH_PROFILE=<dir>             V8 CPU profiles of every gateway process, under <dir>/<store>-<vault>/
 *   MEDBLOCK_MONGODB_URI            use this MongoDB-wire server instead of starting FerretDB
 *   MEDBLOCK_KAFKA_BROKERS          use this Kafka instead of starting one
 *
 * Only the ledger part, quickly: BENCH_STORES= BENCH_VAULT_RESOURCES=0 BENCH_VALIDATION=0
 * BENCH_FLOOR_RESOURCES=1000 BENCH_RESULTS=/tmp/ledger-bench.json npm run bench
 */
import { cpus } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { parseBrokerList } from '../src/adapters/kafka/client.ts';
import { MAX_ANCHOR_ENTRIES } from '../src/ledger/envelope.ts';
import { startEngines } from '../test/engines/index.ts';
import { computeFloor } from './floor.ts';
import { ROOT } from './harness.ts';
import { securityTax, type TaxResult } from './ingest.ts';
import { LedgerBenchFailure, ledgerBench, type LedgerBenchResult, type LedgerOrdererKind } from './ledger.ts';
import { vaultSearch, type VaultSearchResult } from './search.ts';
import { federationBench, type FederationBenchResult } from './federation.ts';
import { measureValidation } from './validation.ts';
import { loadWorkload } from './workload.ts';

const num = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const KNOBS = {
  stores: (process.env.BENCH_STORES ?? 'sqlite,mongodb').split(','),
  resources: num('BENCH_RESOURCES', 50_000),
  mongodbResources: num('BENCH_MONGODB_RESOURCES', 4_000),
  taxRounds: num('BENCH_TAX_ROUNDS', 4),
  concurrency: num('BENCH_CONCURRENCY', 4),
  vaultResources: num('BENCH_VAULT_RESOURCES', 100_000),
  vaultCheckpoint: num('BENCH_VAULT_CHECKPOINT', 10_000),
  searchRounds: num('BENCH_SEARCH_ROUNDS', 20),
  searchPatients: num('BENCH_SEARCH_PATIENTS', 8),
  everythingCalls: num('BENCH_EVERYTHING_CALLS', 40),
  floorResources: num('BENCH_FLOOR_RESOURCES', 20_000),
  validation: process.env.BENCH_VALIDATION !== '0',
  ledger: process.env.BENCH_LEDGER !== '0',
  ledgerOrderers: (process.env.BENCH_LEDGER_ORDERERS ?? 'kafka,solo').split(',').filter(Boolean) as LedgerOrdererKind[],
  ledgerDigests: num('BENCH_LEDGER_DIGESTS', 300_000),
  ledgerInFlight: num('BENCH_LEDGER_IN_FLIGHT', 4),
  ledgerLightEnvelopes: num('BENCH_LEDGER_LIGHT', 20),
  ledgerOpenSeconds: num('BENCH_LEDGER_OPEN_SECONDS', 20),
  ledgerOpenPeriodMs: num('BENCH_LEDGER_OPEN_PERIOD_MS', 300),
  federationCalls: num('BENCH_FEDERATION_CALLS', 30),
};

const GOALS = {
  ingestPerSecond: 5_000,
  ingestToFloor: 0.5,
  securityTax: 1.25,
  searchP95Ms: 20,
  everythingP95Ms: 150,
  searchGrowth: 1.5,
  /** Fabric on Kafka published ~3,500 tx/s. */
  ledgerDigestsPerSecond: 10_000,
  ledgerFinalityP99Ms: 1_000,
  federatedEverythingP95Ms: 400,
};

const progress = (line: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`);

/** MEDBLOCK_MONGODB_URI, or a FerretDB started for the run (test/engines). */
async function mongoEngine(): Promise<{ uri: string; stop: () => Promise<void> }> {
  if (process.env.MEDBLOCK_MONGODB_URI) return { uri: process.env.MEDBLOCK_MONGODB_URI, stop: async () => {} };
  const engines = await startEngines({ mongodb: true, kafka: false });
  return { uri: engines.mongodbUri, stop: () => engines.stop() };
}

/** MEDBLOCK_KAFKA_BROKERS, or a Kafka started for the run (test/engines). */
async function kafkaEngine(): Promise<{ brokers: string[]; stop: () => Promise<void> }> {
  if (process.env.MEDBLOCK_KAFKA_BROKERS) return { brokers: parseBrokerList(process.env.MEDBLOCK_KAFKA_BROKERS), stop: async () => {} };
  const engines = await startEngines({ mongodb: false, kafka: true });
  return { brokers: parseBrokerList(engines.kafkaBrokers), stop: () => engines.stop() };
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  const line = (cells: string[]) => `| ${cells.map((v, c) => (v ?? '').padEnd(widths[c])).join(' | ')} |`;
  return [line(rows[0]), line(widths.map((w) => '-'.repeat(w))), ...rows.slice(1).map(line)].join('\n');
}

async function main() {
  const started = performance.now();
  const all = loadWorkload();
  const tax: TaxResult[] = [];
  if (KNOBS.stores.includes('sqlite')) {
    progress(`security tax on SQLite: ${KNOBS.resources} resources per mode`);
    tax.push(await securityTax('sqlite', all, { resources: KNOBS.resources, rounds: KNOBS.taxRounds, concurrency: KNOBS.concurrency, progress }));
  }
  if (KNOBS.stores.includes('mongodb')) {
    progress(`security tax on FerretDB: ${KNOBS.mongodbResources} resources per mode`);
    const mongo = await mongoEngine();
    try {
      // hiv-2021's reference batches are 2,382 conditional creates each; on FerretDB every one scans the
      // collection (minutes per batch), so the MongoDB-wire run ingests the smart-2019 bundles only.
      const smart = loadWorkload(['smart-2019']);
      tax.push(await securityTax('mongodb', smart, { resources: KNOBS.mongodbResources, rounds: KNOBS.taxRounds, concurrency: KNOBS.concurrency, mongodbUri: mongo.uri, progress }));
    } finally {
      await mongo.stop();
    }
  }
  let vault: VaultSearchResult | undefined;
  if (KNOBS.vaultResources > 0) {
    progress(`encrypted SQLite vault: search at ${KNOBS.vaultCheckpoint} and ${KNOBS.vaultResources} resources`);
    vault = await vaultSearch(all, {
      checkpoints: [KNOBS.vaultCheckpoint, KNOBS.vaultResources],
      concurrency: KNOBS.concurrency,
      rounds: KNOBS.searchRounds,
      everythingCalls: KNOBS.everythingCalls,
      samplePatients: KNOBS.searchPatients,
      progress,
    });
  }
  progress('compute floor');
  const floor = computeFloor(all.patients, KNOBS.floorResources);
  let validation: { oursUsPerResource: number; medplumUsPerResource: number; speedup: number } | undefined;
  if (KNOBS.validation) {
    progress('validation: ours vs @medplum/core');
    const v = measureValidation({ rounds: 2, maxPerType: 300 });
    validation = { oursUsPerResource: Number(v.oursUs.toFixed(1)), medplumUsPerResource: Number(v.medplumUs.toFixed(1)), speedup: Number(v.speedup.toFixed(1)) };
  }
  const ledger: LedgerBenchResult[] = [];
  /** Correctness failures of the ledger part (members at different heads, …): the bench exits non-zero. */
  const ledgerFailures: string[] = [];
  for (const orderer of KNOBS.ledger ? KNOBS.ledgerOrderers : []) {
    const kafka = orderer === 'kafka' ? await kafkaEngine() : undefined;
    try {
      ledger.push(await ledgerBench({
        orderer, brokers: kafka?.brokers, digests: KNOBS.ledgerDigests, entriesPerEnvelope: MAX_ANCHOR_ENTRIES,
        inFlight: KNOBS.ledgerInFlight, lightEnvelopes: KNOBS.ledgerLightEnvelopes, progress,
        openLoop: { periodMs: KNOBS.ledgerOpenPeriodMs, seconds: KNOBS.ledgerOpenSeconds },
      }));
    } catch (e) {
      if (!(e instanceof LedgerBenchFailure)) throw e;
      progress(`ledger on ${orderer}: FAILED: ${e.message}`);
      ledgerFailures.push(e.message);
      if (e.result) ledger.push(e.result);
    } finally {
      await kafka?.stop();
    }
  }
  let federation: FederationBenchResult | undefined;
  if (KNOBS.federationCalls > 0) {
    const kafka = await kafkaEngine();
    try {
      progress('federation: three gateways on one Kafka channel');
      federation = await federationBench({ brokers: kafka.brokers.join(','), calls: KNOBS.federationCalls, progress });
    } finally {
      await kafka.stop();
    }
  }

  const ratios = Object.fromEntries(
    tax.map((t) => [
      t.store,
      {
        /** Encrypted ingest throughput over the floor's (goal ≥ 0.5). */
        ingestToFloor: Number((t.encrypted.resourcesPerSecond / floor.resourcesPerSecond).toFixed(2)),
        /** Floor CPU cost over encrypted ingest CPU cost per resource: robust to other load on the machine. */
        ingestToFloorByCpu: Number((floor.cpuUsPerResource / t.encrypted.cpuUsPerResource).toFixed(2)),
      },
    ]),
  );
  const results = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, node: process.version },
    knobs: KNOBS,
    goals: GOALS,
    securityTax: tax,
    vault,
    computeFloor: floor,
    ratios,
    validation,
    ledger,
    ledgerFailures,
    federation,
    totalSeconds: Math.round((performance.now() - started) / 1000),
  };
  const out = process.env.BENCH_RESULTS ?? join('bench', 'results.json');
  writeFileSync(isAbsolute(out) ? out : join(ROOT, out), `${JSON.stringify(results, null, 2)}\n`);

  // ------------------------------------------------------------------------------------------ the table
  const sqlite = tax.find((t) => t.store === 'sqlite');
  const mongo = tax.find((t) => t.store === 'mongodb');
  const both = (f: (t: TaxResult) => string): [string, string] => [sqlite ? f(sqlite) : '—', mongo ? f(mongo) : '—'];
  const x = (n: number) => `${n}×`;
  const rows: string[][] = [['metric', 'SQLite', 'MongoDB wire (FerretDB), smart-2019', 'goal']];
  if (tax.length) rows.push(
    ['**security tax** (same ingest, alternating segments)', '', '', ''],
    ['  resources per mode / bundles / segments', ...both((t) => `${t.encrypted.resources} / ${t.encrypted.bundles} / ${t.rounds}`), ''],
    ['  ingest encrypted (resources/s)', ...both((t) => String(t.encrypted.resourcesPerSecond)), `≥ ${GOALS.ingestPerSecond}`],
    ['  ingest plaintext (resources/s)', ...both((t) => String(t.plaintext.resourcesPerSecond)), ''],
    ['  **tax: plaintext / encrypted throughput**', ...both((t) => x(t.throughputRatio)), `≤ ${GOALS.securityTax}×`],
    ['  gateway CPU µs/resource encrypted / plaintext', ...both((t) => `${t.encrypted.cpuUsPerResource} / ${t.plaintext.cpuUsPerResource}`), ''],
    ['  **tax by CPU: encrypted / plaintext**', ...both((t) => x(t.cpuRatio)), `≤ ${GOALS.securityTax}×`],
    ['  bundle latency p50 / p95 ms, encrypted', ...both((t) => `${t.encrypted.bundleLatencyMs.p50} / ${t.encrypted.bundleLatencyMs.p95}`), ''],
    ['  bundle latency p50 / p95 ms, plaintext', ...both((t) => `${t.plaintext.bundleLatencyMs.p50} / ${t.plaintext.bundleLatencyMs.p95}`), ''],
    ['  gateway peak RSS MB encrypted / plaintext', ...both((t) => `${t.encrypted.peakRssMb} / ${t.plaintext.peakRssMb}`), ''],
    ['  ratio encrypted ingest / compute floor', ...both((t) => String(ratios[t.store].ingestToFloor)), `≥ ${GOALS.ingestToFloor}`],
    ['  ratio by CPU (floor / encrypted ingest)', ...both((t) => String(ratios[t.store].ingestToFloorByCpu)), `≥ ${GOALS.ingestToFloor}`],
  );
  if (vault) {
    const [small, large] = [vault.phases[0], vault.phases[vault.phases.length - 1]];
    const at = (p: typeof small) => `${p.vaultResources.toLocaleString('en')} res`;
    rows.push(
      [`**encrypted vault, search** (sequential HTTP; ${small.search.n} queries per size)`, '', '', ''],
      ['  vault size: resources / patients', `${small.vaultResources} / ${small.patients} → ${large.vaultResources} / ${large.patients}`, '—', ''],
      [`  search p50 / p95 ms at ${at(small)}`, `${small.search.p50} / ${small.search.p95}`, '—', ''],
      [`  **search p50 / p95 ms at ${at(large)}**`, `${large.search.p50} / ${large.search.p95}`, '—', `p95 ≤ ${GOALS.searchP95Ms}`],
      ...Object.keys(large.search.byKind).map((k) => [
        `    ${k}: p50 / p95 ms, ${at(small)} → ${at(large)}`,
        `${small.search.byKind[k].p50} / ${small.search.byKind[k].p95} → ${large.search.byKind[k].p50} / ${large.search.byKind[k].p95} (p95 ${x(vault!.searchP95RatioByKind[k])})`,
        '—',
        `≤ ${GOALS.searchP95Ms}`,
      ]),
      ['    Condition?code mean matches', `${small.conditionMatchesMean} → ${large.conditionMatchesMean}`, '—', ''],
      ['  **search p95 ratio (large / small vault)**', x(vault.searchP95Ratio), '—', `≤ ${GOALS.searchGrowth}×`],
      [`  $everything p50 / p95 ms at ${at(small)} (${small.everything.n} calls)`, `${small.everything.p50} / ${small.everything.p95}`, '—', ''],
      [`  **$everything p50 / p95 ms at ${at(large)}**`, `${large.everything.p50} / ${large.everything.p95}`, '—', `p95 ≤ ${GOALS.everythingP95Ms}`],
      ['  $everything compartment entries returned / expected (+ referenced, included)', `${large.everything.entries} / ${large.everything.expected} (+ ${large.everything.included})`, '—', 'equal'],
      ['  $everything p95 ratio (large / small vault)', x(vault.everythingP95Ratio), '—', ''],
      ['  vault build incl. reference data (resources/s)', String(vault.build.resourcesPerSecond), '—', ''],
    );
  }
  rows.push(
    ['**compute floor** parse+validate+JCS+SHA-256+AES-256-GCM (resources/s)', String(floor.resourcesPerSecond), '', ''],
    ['  compute floor CPU µs/resource', String(floor.cpuUsPerResource), '', ''],
  );
  if (validation) {
    rows.push(['validation µs/resource: ours / @medplum/core', `${validation.oursUsPerResource} / ${validation.medplumUsPerResource} (${validation.speedup}×)`, '', '']);
  }
  if (ledger.length) {
    const kafka = ledger.find((l) => l.orderer === 'kafka');
    const solo = ledger.find((l) => l.orderer === 'solo');
    const each = (f: (l: LedgerBenchResult) => string): [string, string] => [kafka ? f(kafka) : '—', solo ? f(solo) : '—'];
    const n = (v: number) => v.toLocaleString('en');
    const [l] = ledger;
    rows.push(
      [`**consortium ledger**: 3 members in one process (${cpus().length} cores), quorum ${l.quorum}`, 'Kafka (1 broker, replication 1)', 'solo orderer', ''],
      [`  channel: production defaults, blocks ≤ ${l.settings.maxMessageCount} envelopes / ${l.settings.preferredMaxBytes / 1024 / 1024} MiB, batch timeout ${l.settings.batchTimeoutMs} ms`, '', '', ''],
      [`  load: anchors of ${l.entriesPerEnvelope} digests (${Math.round(l.envelopeBytes / 1024)} KB) signed in the timed run, ≤ ${l.inFlightPerMember} uncommitted per member`, '', '', ''],
      ['  digests / envelopes / blocks (envelopes per block)', ...each((r) => `${n(r.digests)} / ${r.envelopes} / ${r.blocks} (${r.envelopesPerBlock})`), ''],
      ['  **anchored digests/s** at saturation (committed on all 3 members)', ...each((r) => n(r.digestsPerSecond)), `≥ ${n(GOALS.ledgerDigestsPerSecond)}`],
      ['  finality p50 / p99 ms at saturation (closed loop: mostly queueing, in flight / throughput)', ...each((r) => `${r.finalityMs.p50} / ${r.finalityMs.p99}`), `p99 ≤ ${GOALS.ledgerFinalityP99Ms}`],
      ['    of which submit → committed on the submitter, p50 / p99 ms', ...each((r) => `${r.commitMs.p50} / ${r.commitMs.p99}`), ''],
      ['    a member\'s attestation append (Orderer.appendControl), p50 / p99 ms', ...each((r) => `${r.attestationAppendMs.p50} / ${r.attestationAppendMs.p99}`), ''],
      ...(ledger.some((r) => r.openLoop) ? [
        [`  **open loop**: each member one envelope every ${(kafka ?? solo)!.openLoop?.periodMs} ms on a timer for ${(kafka ?? solo)!.openLoop?.seconds} s (after the saturated run)`, '', '', ''],
        ['    offered / submitted / achieved digests/s (committed on all 3)', ...each((r) => (r.openLoop ? `${n(r.openLoop.offeredDigestsPerSecond)} / ${n(r.openLoop.submittedDigestsPerSecond)} / ${n(r.openLoop.achievedDigestsPerSecond)}` : '—')), `≥ ${n(GOALS.ledgerDigestsPerSecond)}`],
        ['    **finality p50 / p99 ms at that offered load** (scheduled send → quorum-attested on the submitter)', ...each((r) => (r.openLoop ? `${r.openLoop.finalityMs.p50} / ${r.openLoop.finalityMs.p99} (n ${r.openLoop.finalityMs.n})` : '—')), `p99 ≤ ${GOALS.ledgerFinalityP99Ms}`],
        ['      of which scheduled send → committed on the submitter, p50 / p99 ms', ...each((r) => (r.openLoop ? `${r.openLoop.commitMs.p50} / ${r.openLoop.commitMs.p99}` : '—')), ''],
        ['    main-thread event-loop delay p50 / p99 / max ms; send timer lag p99 ms', ...each((r) => (r.openLoop ? `${r.openLoop.eventLoopDelayMs.p50} / ${r.openLoop.eventLoopDelayMs.p99} / ${r.openLoop.eventLoopDelayMs.max}; ${r.openLoop.sendLagP99Ms}` : '—')), ''],
        ['    ledger store appendBlock ms per block and member (awaited): mean / p99', ...each((r) => (r.openLoop ? `${r.openLoop.storeAppendMs.mean} / ${r.openLoop.storeAppendMs.p99}` : '—')), ''],
      ] : []),
      ['  finality p50 / p99 ms at light load (one envelope at a time)', ...each((r) => (r.lightFinalityMs ? `${r.lightFinalityMs.p50} / ${r.lightFinalityMs.p99} (n ${r.lightFinalityMs.n})` : '—')), `p99 ≤ ${GOALS.ledgerFinalityP99Ms}`],
      ['  ledger store appendBlock ms per block and member (awaited; on a writer thread since ledger schema 2): mean / p99 (first → last tenth)', ...each((r) => `${r.storeAppendMs.mean} / ${r.storeAppendMs.p99} (${r.storeAppendMs.firstTenthMean} → ${r.storeAppendMs.lastTenthMean})`), ''],
      ['  process CPU µs/digest (3 members + signers) / cores busy', ...each((r) => `${r.cpuUsPerDigest} / ${r.cpuCoresBusy}`), ''],
      ['  same head on all 3 members: height, header hash', ...each((r) => `${r.sameHead ? 'yes' : '**NO**'}: ${r.height}, ${r.headHash.slice(0, 12)}…`), 'equal'],
    );
  }
  if (federation) {
    const f = federation;
    rows.push(
      [`**federated record**: ${f.resources} resources of one patient over ${f.holders} gateways in one process (SQLite, Kafka, mTLS), ${f.calls} calls`, '', '', ''],
      ['  **federated $everything p50 / p95 ms** (all pages, verified, merged)', `${f.federated.p50} / ${f.federated.p95} (${f.federated.entries} entries)`, '—', `p95 ≤ ${GOALS.federatedEverythingP95Ms}`],
      ['  local $everything of the same patient held whole, p50 / p95 ms', `${f.local.p50} / ${f.local.p95} (${f.local.entries} entries)`, '—', ''],
      ['  federated / local p95', x(f.p95Ratio), '—', ''],
      ['  verification µs per remote resource: commitment (parse + recompute) + own-ledger lookup', `${f.verifyUsPerResource.commitment} + ${f.verifyUsPerResource.ledger} = ${f.verifyUsPerResource.total}`, '—', ''],
    );
  }
  rows.push(['bench wall time (s)', String(results.totalSeconds), '', '≤ 1500']);
  console.log(table(rows));
  if (ledgerFailures.length) {
    console.error(`ledger correctness failure:\n${ledgerFailures.join('\n')}`);
    process.exitCode = 1;
  }
}

await main();
