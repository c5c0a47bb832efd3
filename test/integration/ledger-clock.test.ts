/**
 * Ledger time a member cannot move (issue #11, item 4). The attack: a member signs an envelope stamped
 * 9999-12-31; block time is the latest valid envelope timestamp, so without a bound every later block's time
 * became 9999 and every later proof failed. With the channel's clock rule every member refuses it, and one
 * stamped far in the past, as `bad-timestamp` (the same verdict everywhere: the bound is the orderer's time
 * stored with the records), block time stays sane, later envelopes commit, and `verifyLedger` agrees.
 * Run on the solo orderer and, with MEDBLOCK_KAFKA_BROKERS, on Kafka (LogAppendTime).
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes, randomUUID, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { KafkaOrderer } from '../../src/adapters/kafka/kafka-orderer.ts';
import { SoloOrderer } from '../../src/adapters/solo/solo-orderer.ts';
import { SqliteLedgerStore } from '../../src/adapters/sqlite/sqlite-ledger-store.ts';
import { blockHeaderHash, type Block } from '../../src/ledger/block.ts';
import { createEnvelope, encodeEnvelope, type EnvelopeSigner } from '../../src/ledger/envelope.ts';
import { LedgerMember } from '../../src/ledger/member.ts';
import { Membership } from '../../src/ledger/membership.ts';
import type { Orderer } from '../../src/ledger/orderer.ts';
import { verifyLedger } from '../../src/ledger/verify.ts';
import { describeWithEngine } from '../support/engines.ts';
import { untilWithin } from '../support/until.ts';

const work = mkdtempSync(join(tmpdir(), 'medblock-ledger-clock-'));
after(() => rmSync(work, { recursive: true, force: true }));

const SKEW_MS = 10 * 60 * 1000;
const FAR_FUTURE = '9999-12-31T23:59:59.999Z';
const FAR_PAST = '2000-01-01T00:00:00.000Z';
const ids = ['h1', 'h2', 'h3'];
const keys: Record<string, { publicKey: KeyObject; privateKey: KeyObject }> = Object.fromEntries(ids.map((id) => [id, generateKeyPairSync('ec', { namedCurve: 'P-256' })]));
const signer = (id: string): EnvelopeSigner => ({ memberId: id, privateKey: keys[id].privateKey });
const genesis = new Membership(Object.fromEntries(ids.map((id) => [id, { publicKey: keys[id].publicKey }])));
const until = untilWithin(30_000, 20);

function anchor(channel: string, by: string, timestamp?: string): Uint8Array {
  const entries = [{ digest: randomBytes(32).toString('hex'), type: 'Observation' }];
  return encodeEnvelope(createEnvelope(signer(by), { channel, type: 'anchor', payload: { entries }, timestamp }));
}

async function blocksOf(store: SqliteLedgerStore, channel: string): Promise<Block[]> {
  const head = await store.head(channel);
  const blocks: Block[] = [];
  for (let n = 0; n <= (head?.number ?? -1); n++) blocks.push((await store.block(channel, n))!);
  return blocks;
}

/** Three members on one orderer log; `maxClockSkewMs` undefined is the old, unbounded rule. */
async function run(openOrderer: (channel: string) => Promise<Orderer>, maxClockSkewMs: number | undefined) {
  const channel = `clock-${randomUUID().slice(0, 8)}`;
  const dir = mkdtempSync(join(work, 'run-'));
  const orderers: Orderer[] = [];
  const nodes = await Promise.all(ids.map(async (id) => {
    const orderer = await openOrderer(channel);
    orderers.push(orderer);
    const store = new SqliteLedgerStore(join(dir, `${id}.sqlite`));
    await store.init();
    const member = new LedgerMember({
      channel, signer: signer(id), genesis, orderer, store, batchTimeoutMs: 50, maxClockSkewMs,
      cutter: { maxMessageCount: 10, preferredMaxBytes: 64 * 1024, absoluteMaxBytes: 256 * 1024 },
    });
    await member.start();
    return { id, member, store };
  }));
  const committed = async (count: number) => {
    for (const { store } of nodes) if ((await blocksOf(store, channel)).reduce((n, b) => n + b.envelopes.length, 0) < count) return false;
    return true;
  };
  try {
    // h2 stamps one envelope in the year 9999 and one in 2000; h1 then anchors honestly.
    await nodes[1].member.submit([anchor(channel, 'h2', FAR_FUTURE), anchor(channel, 'h2', FAR_PAST)]);
    await until('the forged timestamps committed on every member', () => committed(2));
    await nodes[0].member.submit([anchor(channel, 'h1')]);
    await until('the honest envelope committed on every member', () => committed(3));
    const chains = await Promise.all(nodes.map(({ store }) => blocksOf(store, channel)));
    // Every member built the same blocks, verdicts included.
    for (const chain of chains.slice(1)) assert.deepEqual(chain.map((b) => blockHeaderHash(b.header)), chains[0].map((b) => blockHeaderHash(b.header)));
    const verdicts = chains[0].flatMap((b) => b.validity.map((v) => (v.valid ? 'valid' : v.reason)));
    const verification = await verifyLedger(nodes[0].store, { channel, memberId: 'h1', genesis, quorum: 2, maxClockSkewMs });
    return { verdicts, head: chains[0].at(-1)!.header, problems: verification.problems };
  } finally {
    for (const { member, store } of nodes) {
      await member.stop();
      await store.close();
    }
    for (const orderer of orderers) await orderer.close();
  }
}

function clockSuite(openOrderer: (channel: string) => Promise<Orderer>) {
  it('without the clock rule (the attack): the 9999 envelope is valid and block time jumps to 9999', async () => {
    const { verdicts, head } = await run(openOrderer, undefined);
    assert.deepEqual(verdicts, ['valid', 'valid', 'valid']);
    assert.equal(head.time, FAR_FUTURE);
  });

  it('with the clock rule: every member refuses both as bad-timestamp; block time stays sane; later envelopes commit', async () => {
    const before = Date.now();
    const { verdicts, head, problems } = await run(openOrderer, SKEW_MS);
    assert.deepEqual(verdicts, ['bad-timestamp', 'bad-timestamp', 'valid']);
    assert.ok(Date.parse(head.time) >= before - SKEW_MS && Date.parse(head.time) <= Date.now() + SKEW_MS, head.time);
    assert.ok(head.ordererTime !== undefined && Math.abs(Date.parse(head.ordererTime) - Date.now()) < SKEW_MS, head.ordererTime);
    assert.deepEqual(problems, [], 'verifyLedger recomputes the same verdicts from the stored orderer time');
  });
}

describe('ledger time on the solo orderer', () => {
  // One log shared by the three members of this process (a solo log has one writer process); close() is idempotent.
  const shared = new Map<string, Promise<SoloOrderer>>();
  const open = (channel: string): Promise<Orderer> => {
    if (!shared.has(channel)) shared.set(channel, Promise.resolve(SoloOrderer.open(join(work, `${channel}.sqlite`))));
    return shared.get(channel)!;
  };
  clockSuite(open);
});

describeWithEngine('kafka', 'ledger time on Kafka (LogAppendTime)', (brokers) => {
  clockSuite((channel) => KafkaOrderer.connect({ brokers: brokers.split(','), channel, replicationFactor: 1, minInsyncReplicas: 1 }));
});
