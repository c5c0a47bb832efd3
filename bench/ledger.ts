/**
 * The consortium ledger under load (issue "Benchmark": anchored digests/s through Kafka with three members,
 * finality latency submit → quorum-attested, beside the solo orderer).
 *
 * Three members h1, h2, h3 run in THIS process (like test/integration/ledger-member.test.ts), each with
 * its own SqliteLedgerStore file and, on Kafka, its own KafkaOrderer (producer + consumer) on a fresh
 * single-partition channel topic (replication factor 1 on the one broker); on solo the three share one
 * SoloOrderer, which is in-process by design. Channel settings are the production defaults
 * (DEFAULT_LEDGER_SETTINGS: blocks of ≤ 10 envelopes / 2 MiB, batch timeout 100 ms), quorum 2 of 3.
 *
 * Load: every member signs anchor envelopes of `entriesPerEnvelope` entries (random SHA-256 digests,
 * resource types, HMAC patient tokens, ~100 entries per patient) and submits them one per submit() call,
 * with at most `inFlight` of its envelopes ordered but not yet committed on itself (what the anchor
 * publisher bounds), until `digests` digests are submitted in all. Signing is inside the measured time.
 *
 *  - throughput: digests / seconds from the first submit until every member committed every envelope;
 *  - finality latency per envelope: submit() call → the block holding it is final (quorum-attested) on
 *    the submitting member, under that load, and in a light-load run (h1 alone, one envelope at a time).
 *    That saturated run is closed-loop: its latency is mostly queueing (in flight / throughput), so it
 *    says little about finality at a given load;
 *  - open loop (after the saturated run, on the same, now larger, chain): every member submits one
 *    envelope every `openLoop.periodMs` on its own timer (the three timers staggered by a third of a
 *    period) for `openLoop.seconds`, whatever the ledger does, so the offered load is fixed (the goal,
 *    10,000 digests/s, by default: 3 × 1000 digests / 300 ms). Finality is measured from the envelope's
 *    SCHEDULED send time (a timer firing late because the event loop was blocked counts against the
 *    ledger: no coordinated omission). Reported: finality p50/p99, the offered and the achieved rates
 *    (digests committed on all three members per second of the run), and the main thread's event-loop
 *    delay p50/p99/max during it (perf_hooks.monitorEventLoopDelay);
 *  - correctness: every envelope valid, no divergence, and all three members end at the same height with
 *    the same head hash (read back from their stores). A mismatch is a LedgerBenchFailure.
 */
import { createHash, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createKafkaClient } from '../src/adapters/kafka/client.ts';
import { KafkaOrderer } from '../src/adapters/kafka/kafka-orderer.ts';
import { channelTopic } from '../src/adapters/kafka/topics.ts';
import { SoloOrderer } from '../src/adapters/solo/solo-orderer.ts';
import { SqliteLedgerStore } from '../src/adapters/sqlite/sqlite-ledger-store.ts';
import { DEFAULT_LEDGER_SETTINGS } from '../src/identity/consortium-dir.ts';
import { blockHeaderHash } from '../src/ledger/block.ts';
import { createEnvelope, encodeEnvelope, type AnchorEntry, type EnvelopeSigner } from '../src/ledger/envelope.ts';
import { LedgerMember, type CommittedBlock } from '../src/ledger/member.ts';
import { Membership } from '../src/ledger/membership.ts';
import { decodeChannelMessage, type Orderer } from '../src/ledger/orderer.ts';
import { percentile, round1 } from './harness.ts';

export type LedgerOrdererKind = 'kafka' | 'solo';

export interface LedgerBenchOptions {
  orderer: LedgerOrdererKind;
  /** Kafka only. */
  brokers?: string[];
  /** Digests submitted in all, shared evenly by the three members. */
  digests: number;
  entriesPerEnvelope: number;
  /** Per member: envelopes ordered but not yet committed on the submitting member. */
  inFlight: number;
  /** Envelopes of the light-load run (h1 alone, one at a time, each waited for until final); 0 skips it. */
  lightEnvelopes: number;
  /** The open-loop run: one envelope per member every `periodMs`, for `seconds`; omitted or seconds 0 skips it. */
  openLoop?: { periodMs: number; seconds: number };
  progress: (line: string) => void;
}

export interface Latency {
  p50: number;
  p99: number;
  max: number;
  n: number;
}

export interface LedgerBenchResult {
  orderer: LedgerOrdererKind;
  members: number;
  quorum: number;
  settings: { maxMessageCount: number; preferredMaxBytes: number; batchTimeoutMs: number };
  entriesPerEnvelope: number;
  envelopeBytes: number;
  inFlightPerMember: number;
  digests: number;
  envelopes: number;
  /** Until every member committed every envelope. */
  seconds: number;
  digestsPerSecond: number;
  /** Until every member saw every block final. */
  secondsToAllFinal: number;
  blocks: number;
  envelopesPerBlock: number;
  finalityMs: Latency;
  /** Under load: submit() call → the block holding it committed on the submitting member (finality minus attestation). */
  commitMs: Latency;
  /** Under load: how long a member's append of its attestation took (Orderer.appendControl, not queued behind envelopes). */
  attestationAppendMs: Latency;
  /** Light load: one envelope at a time from h1. */
  lightFinalityMs?: Latency;
  /** Fixed offered load (open loop), after the saturated run. */
  openLoop?: OpenLoopResult;
  /** store.appendBlock per block and member under load: mean, p99, and the mean of the first and the last tenth of the blocks. */
  storeAppendMs: { mean: number; p99: number; firstTenthMean: number; lastTenthMean: number };
  /** This process (three members, their stores and orderer clients, the signers): CPU µs per digest, and cores busy. */
  cpuUsPerDigest: number;
  cpuCoresBusy: number;
  height: number;
  headHash: string;
  sameHead: boolean;
}

export interface OpenLoopResult {
  periodMs: number;
  seconds: number;
  envelopes: number;
  /** Digests/s the timers were set to submit (3 members × entries per envelope / period). */
  offeredDigestsPerSecond: number;
  /** Digests/s actually submitted (envelopes signed and handed to submit() over the run, timers firing late included). */
  submittedDigestsPerSecond: number;
  /** Digests committed on all three members / seconds from the first scheduled send until the last of them committed. */
  achievedDigestsPerSecond: number;
  /** Scheduled send time → the block holding it final (quorum-attested) on the submitter. */
  finalityMs: Latency;
  /** Scheduled send time → committed on the submitter. */
  commitMs: Latency;
  /** How late the send timers fired, p99 ms (the event loop was busy). */
  sendLagP99Ms: number;
  /** Main-thread event-loop delay during the run (perf_hooks histogram, 10 ms resolution). */
  eventLoopDelayMs: { p50: number; p99: number; max: number };
  /** store.appendBlock per block and member during the run. */
  storeAppendMs: { mean: number; p99: number };
}

/** A correctness failure (fork, invalid envelope, divergence, member failure), as opposed to a slow figure. */
export class LedgerBenchFailure extends Error {
  override name = 'LedgerBenchFailure';
  /** The figures, when the run got as far as comparing the members' heads. */
  constructor(message: string, readonly result?: LedgerBenchResult) {
    super(message);
  }
}

const MEMBERS = ['h1', 'h2', 'h3'] as const;
const QUORUM = 2;
const ENTRIES_PER_PATIENT = 100;

interface Node {
  id: string;
  member: LedgerMember;
  store: SqliteLedgerStore;
  orderer: Orderer;
  signer: EnvelopeSigner;
  /** nonce → submit time, until the envelope is in a committed block on this member. */
  submitted: Map<string, number>;
  /** block number → submit times of this member's envelopes in it, until it is final here. */
  awaitingFinal: Map<number, number[]>;
  committedEnvelopes: number;
  blocks: number;
  invalid: number;
  /** Duration of each store.appendBlock (one SQLite transaction: block, envelopes, index rows, fsync). */
  appendMs: number[];
  /** Where commit latencies go (the current run's list). */
  commitSink: number[];
  /** Where finality latencies go (the current run's list). */
  sink: number[];
  /** Submitters waiting for a free in-flight slot. */
  slotWaiters: Array<() => void>;
  onCommitted: () => void;
  onFinal: () => void;
}

const latency = (values: number[]): Latency => {
  if (values.length === 0) return { p50: NaN, p99: NaN, max: NaN, n: 0 };
  const sorted = [...values].sort((a, b) => a - b);
  return { p50: round1(percentile(sorted, 50)), p99: round1(percentile(sorted, 99)), max: round1(sorted[sorted.length - 1] ?? NaN), n: sorted.length };
};

const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;

function appendStats(perMember: number[][]): LedgerBenchResult['storeAppendMs'] {
  const tenth = (n: number) => Math.max(1, Math.floor(n / 10));
  const all = perMember.flat().sort((a, b) => a - b);
  return {
    mean: round1(mean(all)),
    p99: round1(percentile(all, 99)),
    firstTenthMean: round1(mean(perMember.flatMap((ms) => ms.slice(0, tenth(ms.length))))),
    lastTenthMean: round1(mean(perMember.flatMap((ms) => ms.slice(-tenth(ms.length))))),
  };
}

/** Realistic anchor entries: hex SHA-256 commitments, one 32-byte patient locator token per ENTRIES_PER_PATIENT entries. */
function entryFactory(): (n: number) => AnchorEntry[] {
  const token = (): string => randomBytes(32).toString('base64url');
  let inPatient = 0;
  let currentToken = token();
  return (n) => {
    const seed = randomBytes(16 * n);
    return Array.from({ length: n }, (_, i) => {
      if (inPatient++ === ENTRIES_PER_PATIENT) {
        inPatient = 1;
        currentToken = token();
      }
      const digest = createHash('sha256').update(seed.subarray(16 * i, 16 * i + 16)).digest('hex');
      return { digest, patient: currentToken };
    });
  };
}

export async function ledgerBench(options: LedgerBenchOptions): Promise<LedgerBenchResult> {
  const { orderer: kind, entriesPerEnvelope, inFlight, progress } = options;
  const work = mkdtempSync(join(tmpdir(), `medblock-bench-ledger-${kind}-`));
  const channel = `bench-${kind}-${randomBytes(6).toString('hex')}`;
  const keys: Record<string, { publicKey: KeyObject; privateKey: KeyObject }> = Object.fromEntries(
    MEMBERS.map((id) => [id, generateKeyPairSync('ec', { namedCurve: 'P-256' })]),
  );
  const genesis = new Membership(Object.fromEntries(MEMBERS.map((id) => [id, { publicKey: keys[id].publicKey }])));
  const { batchTimeoutMs, maxEnvelopeBytes, maxMessageCount, preferredMaxBytes, absoluteMaxBytes } = DEFAULT_LEDGER_SETTINGS;
  const failures: Error[] = [];
  /** Timeouts of the waits below, cleared on the way out whatever happened. */
  const timers = new Set<NodeJS.Timeout>();
  const nodes: Node[] = [];
  const orderers: Orderer[] = [];
  let shared: SoloOrderer | undefined;
  let attestationAppends: number[] = [];
  /** Times this orderer's appends of attestations (the members' own, unawaited, through appendControl). */
  const timeAttestations = (orderer: Orderer): Orderer => {
    const append = orderer.appendControl.bind(orderer);
    orderer.appendControl = (messages) => {
      if (messages.length !== 1 || decodeChannelMessage(messages[0])?.kind !== 'attestation') return append(messages);
      const t0 = performance.now();
      const appended = append(messages);
      appended.then(() => attestationAppends.push(performance.now() - t0), () => {});
      return appended;
    };
    return orderer;
  };
  try {
    if (kind === 'solo') orderers.push((shared = timeAttestations(SoloOrderer.open(join(work, 'orderer.sqlite'))) as SoloOrderer));
    for (const id of MEMBERS) {
      let orderer: Orderer;
      if (shared) {
        orderer = shared;
      } else {
        if (!options.brokers?.length) throw new Error('ledger bench on Kafka: no brokers');
        orderer = timeAttestations(await KafkaOrderer.connect({ brokers: options.brokers, channel, replicationFactor: 1, minInsyncReplicas: 1, clientId: `bench-${id}` }));
        orderers.push(orderer);
      }
      const store = new SqliteLedgerStore(join(work, `${id}-ledger.sqlite`));
      await store.init();
      const signer: EnvelopeSigner = { memberId: id, privateKey: keys[id].privateKey };
      const member = new LedgerMember({
        channel, signer, genesis, quorum: QUORUM, orderer, store, batchTimeoutMs, maxEnvelopeBytes,
        cutter: { maxMessageCount, preferredMaxBytes, absoluteMaxBytes },
      });
      const node: Node = { id, member, store, orderer, signer, submitted: new Map(), awaitingFinal: new Map(), committedEnvelopes: 0, blocks: 0, invalid: 0, appendMs: [], commitSink: [], sink: [], slotWaiters: [], onCommitted: () => {}, onFinal: () => {} };
      const append = store.appendBlock.bind(store);
      store.appendBlock = async (block, index) => {
        const t0 = performance.now();
        try {
          return await append(block, index);
        } finally {
          node.appendMs.push(performance.now() - t0);
        }
      };
      member.on('block', ({ block, verdicts }: CommittedBlock) => {
        node.blocks++;
        const now = performance.now();
        for (const verdict of verdicts) {
          if (!verdict.valid) {
            node.invalid++;
            continue;
          }
          node.committedEnvelopes++;
          if (verdict.envelope.creator !== id) continue;
          const t0 = node.submitted.get(verdict.envelope.nonce);
          if (t0 === undefined) continue;
          node.submitted.delete(verdict.envelope.nonce);
          node.commitSink.push(now - t0);
          // A block is committed here before any attestation of it can be read (they follow it in the log).
          if (member.status().finalHeight >= block.header.number) node.sink.push(now - t0);
          else node.awaitingFinal.set(block.header.number, [...(node.awaitingFinal.get(block.header.number) ?? []), t0]);
        }
        for (const resume of node.slotWaiters.splice(0)) resume();
        node.onCommitted();
      });
      member.on('final', (height) => {
        const now = performance.now();
        for (const [number, times] of node.awaitingFinal) {
          if (number > height) continue;
          for (const t0 of times) node.sink.push(now - t0);
          node.awaitingFinal.delete(number);
        }
        node.onFinal();
      });
      const fail = (failure: LedgerBenchFailure) => {
        failures.push(failure);
        for (const other of nodes) for (const resume of other.slotWaiters.splice(0)) resume();
        node.onCommitted();
      };
      member.on('divergence', (d) => fail(new LedgerBenchFailure(`${id}: divergence at block ${d.blockNumber}`)));
      member.on('failure', (e) => fail(new LedgerBenchFailure(`${id} failed: ${e.message}`)));
      nodes.push(node);
    }
    await Promise.all(nodes.map(async ({ member }) => {
      await member.start();
      await member.caughtUp();
    }));
    const checkFailures = () => {
      if (failures.length) throw failures[0];
      const invalid = nodes.find((n) => n.invalid > 0);
      if (invalid) throw new LedgerBenchFailure(`${invalid.id} marked ${invalid.invalid} envelope(s) invalid`);
    };
    /** Resolves when `done()` holds, re-checked on every block / final event of any member. */
    const until = (what: string, done: () => boolean, timeoutMs = 120_000) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => finish(new LedgerBenchFailure(`ledger on ${kind}: timed out waiting for ${what}`)), timeoutMs);
        timers.add(timer);
        const finish = (err?: Error) => {
          clearTimeout(timer);
          timers.delete(timer);
          for (const node of nodes) node.onCommitted = node.onFinal = () => {};
          if (err) reject(err);
          else resolve();
        };
        const check = () => {
          if (failures.length) return finish(failures[0]);
          if (done()) finish();
        };
        for (const node of nodes) node.onCommitted = node.onFinal = check;
        check();
      });
    const nextEntries = entryFactory();
    const sign = (node: Node) =>
      createEnvelope(node.signer, { channel, type: 'anchor', payload: { entries: nextEntries(entriesPerEnvelope) } });

    // ---------------------------------------------------------------------------- under load
    const perMember = Math.ceil(options.digests / entriesPerEnvelope / MEMBERS.length);
    const envelopes = perMember * MEMBERS.length;
    const loadLatencies: number[] = [];
    const commitLatencies: number[] = [];
    for (const node of nodes) Object.assign(node, { sink: loadLatencies, commitSink: commitLatencies });
    attestationAppends = [];
    progress(`ledger on ${kind}: ${envelopes} envelopes of ${entriesPerEnvelope} digests from 3 members, ≤ ${inFlight} in flight each`);
    const blocksBefore = nodes[0].blocks;
    for (const node of nodes) node.appendMs = [];
    let envelopeBytes = 0;
    const cpuBefore = process.cpuUsage();
    const started = performance.now();
    const allCommitted = until('every member to commit every envelope', () => nodes.every((n) => n.committedEnvelopes >= envelopes), 300_000);
    allCommitted.catch(() => {});
    await Promise.all(nodes.map(async (node) => {
      const sends: Promise<unknown>[] = [];
      for (let i = 0; i < perMember; i++) {
        while (node.submitted.size >= inFlight) await new Promise<void>((resume) => node.slotWaiters.push(resume));
        if (failures.length) throw failures[0];
        const envelope = sign(node);
        const bytes = encodeEnvelope(envelope);
        envelopeBytes = bytes.length;
        node.submitted.set(envelope.nonce, performance.now());
        const sent = node.member.submit([bytes]);
        sent.catch(() => {}); // rejected through Promise.all below, not as an unhandled rejection meanwhile
        sends.push(sent);
        // The members share this thread with the signers: let them consume between two envelopes.
        await new Promise((resume) => setImmediate(resume));
      }
      await Promise.all(sends);
    }));
    await allCommitted;
    const seconds = (performance.now() - started) / 1000;
    const cpu = process.cpuUsage(cpuBefore);
    const blocks = nodes[0].blocks - blocksBefore;
    const appendMs = nodes.map((n) => n.appendMs);
    await until('every block final on its submitter', () => nodes.every((n) => n.awaitingFinal.size === 0 && n.submitted.size === 0));
    const secondsToAllFinal = (performance.now() - started) / 1000;
    const attestationAppendMs = latency(attestationAppends);
    checkFailures();
    const digests = envelopes * entriesPerEnvelope;
    progress(`ledger on ${kind}: ${Math.round(digests / seconds)} digests/s, finality p50 ${latency(loadLatencies).p50} ms`);

    // ---------------------------------------------------------------------------- open loop
    let openLoop: OpenLoopResult | undefined;
    if (options.openLoop && options.openLoop.seconds > 0) {
      const { periodMs, seconds: runSeconds } = options.openLoop;
      const perNode = Math.max(1, Math.round((runSeconds * 1000) / periodMs));
      const total = perNode * nodes.length;
      const finality: number[] = [];
      const commit: number[] = [];
      const lags: number[] = [];
      for (const node of nodes) Object.assign(node, { sink: finality, commitSink: commit, appendMs: [] });
      const committedBefore = nodes.map((n) => n.committedEnvelopes);
      const committedAll = () => Math.min(...nodes.map((n, i) => n.committedEnvelopes - committedBefore[i]));
      progress(`ledger on ${kind}: open loop, ${nodes.length} × one ${entriesPerEnvelope}-digest envelope every ${periodMs} ms for ${runSeconds} s`);
      const delay = monitorEventLoopDelay({ resolution: 10 });
      const sends: Promise<unknown>[] = [];
      let lastSubmit = 0;
      let lastCommitted = 0;
      const start = performance.now() + 50;
      delay.enable();
      const allCommitted = until('every member to commit every open-loop envelope', () => {
        if (committedAll() < total) return false;
        lastCommitted ||= performance.now();
        return true;
      }, runSeconds * 1000 + 120_000);
      allCommitted.catch(() => {});
      await Promise.all(nodes.map(async (node, n) => {
        for (let k = 0; k < perNode; k++) {
          // Open loop: the k-th envelope is due at a fixed time, however the previous ones fared.
          const due = start + (n * periodMs) / nodes.length + k * periodMs;
          const wait = due - performance.now();
          if (wait > 0) await new Promise((resume) => setTimeout(resume, wait));
          if (failures.length) throw failures[0];
          lags.push(performance.now() - due);
          const envelope = sign(node);
          node.submitted.set(envelope.nonce, due);
          const sent = node.member.submit([encodeEnvelope(envelope)]);
          sent.catch(() => {});
          sends.push(sent);
          lastSubmit = performance.now();
        }
      }));
      await Promise.all(sends);
      await allCommitted;
      delay.disable();
      const ms = (ns: number) => round1(ns / 1e6);
      const eventLoopDelayMs = { p50: ms(delay.percentile(50)), p99: ms(delay.percentile(99)), max: ms(delay.max) };
      await until('every open-loop block final on its submitter', () => nodes.every((n) => n.awaitingFinal.size === 0 && n.submitted.size === 0));
      checkFailures();
      const appends = nodes.flatMap((n) => n.appendMs).sort((a, b) => a - b);
      openLoop = {
        periodMs,
        seconds: runSeconds,
        envelopes: total,
        offeredDigestsPerSecond: Math.round((nodes.length * entriesPerEnvelope * 1000) / periodMs),
        // The sends are due over (perNode - 1/3) periods; the last third is the interval the last one stands for.
        submittedDigestsPerSecond: Math.round((total * entriesPerEnvelope) / ((lastSubmit - start + periodMs / nodes.length) / 1000)),
        achievedDigestsPerSecond: Math.round((total * entriesPerEnvelope) / ((lastCommitted - start) / 1000)),
        finalityMs: latency(finality),
        commitMs: latency(commit),
        sendLagP99Ms: round1(percentile([...lags].sort((a, b) => a - b), 99)),
        eventLoopDelayMs,
        storeAppendMs: { mean: round1(mean(appends)), p99: round1(percentile(appends, 99)) },
      };
      progress(`ledger on ${kind}: open loop at ${openLoop.offeredDigestsPerSecond} digests/s offered: finality p50 ${openLoop.finalityMs.p50} / p99 ${openLoop.finalityMs.p99} ms`);
    }

    // ---------------------------------------------------------------------------- light load
    let lightFinalityMs: Latency | undefined;
    if (options.lightEnvelopes > 0) {
      const light: number[] = [];
      for (const node of nodes) Object.assign(node, { sink: light, commitSink: [] });
      const [h1] = nodes;
      for (let i = 0; i < options.lightEnvelopes; i++) {
        const envelope = sign(h1);
        const bytes = encodeEnvelope(envelope);
        h1.submitted.set(envelope.nonce, performance.now());
        const done = until('a light-load envelope to be final', () => h1.submitted.size === 0 && h1.awaitingFinal.size === 0, 30_000);
        await h1.member.submit([bytes]);
        await done;
      }
      lightFinalityMs = latency(light);
      checkFailures();
    }

    // ---------------------------------------------------------------------------- same chain everywhere
    const target = Math.max(...nodes.map((n) => n.member.status().height));
    await until('every member at the same height', () => nodes.every((n) => n.member.status().height === target), 30_000);
    const heads = await Promise.all(nodes.map(async (n) => {
      const head = await n.store.head(channel);
      return head ? blockHeaderHash(head) : '';
    }));
    checkFailures();
    const sameHead = new Set(heads).size === 1 && heads[0] !== '';
    const result: LedgerBenchResult = {
      orderer: kind,
      members: MEMBERS.length,
      quorum: QUORUM,
      settings: { maxMessageCount, preferredMaxBytes, batchTimeoutMs },
      entriesPerEnvelope,
      envelopeBytes,
      inFlightPerMember: inFlight,
      digests,
      envelopes,
      seconds: round1(seconds),
      digestsPerSecond: Math.round(digests / seconds),
      secondsToAllFinal: round1(secondsToAllFinal),
      blocks,
      envelopesPerBlock: round1(envelopes / blocks),
      finalityMs: latency(loadLatencies),
      commitMs: latency(commitLatencies),
      attestationAppendMs,
      lightFinalityMs,
      openLoop,
      storeAppendMs: appendStats(appendMs),
      cpuUsPerDigest: round1((cpu.user + cpu.system) / digests),
      cpuCoresBusy: Number(((cpu.user + cpu.system) / 1e6 / seconds).toFixed(2)),
      height: target,
      headHash: heads[0],
      sameHead,
    };
    if (!sameHead) throw new LedgerBenchFailure(`ledger on ${kind}: members end at different heads at height ${target}: ${heads.join(' ')}`, result);
    return result;
  } finally {
    for (const timer of timers) clearTimeout(timer);
    for (const { member } of nodes) await member.stop().catch(() => {});
    for (const orderer of orderers) await orderer.close().catch(() => {});
    for (const { store } of nodes) await store.close().catch(() => {});
    rmSync(work, { recursive: true, force: true });
    if (kind === 'kafka' && options.brokers?.length) await deleteChannelTopic(options.brokers, channel).catch(() => {});
  }
}

/** The bench's channel topic is throwaway: ~50 MB per run on the broker otherwise. */
async function deleteChannelTopic(brokers: string[], channel: string): Promise<void> {
  const admin = createKafkaClient({ brokers }).admin();
  await admin.connect();
  try {
    await admin.deleteTopics({ topics: [channelTopic(channel)] });
  } finally {
    await admin.disconnect();
  }
}
