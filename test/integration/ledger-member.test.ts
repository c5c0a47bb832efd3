/**
 * Ledger members on the embedded solo orderer (a real persistent log) with real SQLite ledger stores:
 * three members in one process reading one log commit the same chain, attest it, reach finality;
 * a restarted member resumes from its store; forged envelopes are marked invalid by everyone; a forged
 * attestation is caught as a divergence; config transactions add and revoke members.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { SoloOrderer } from '../../src/adapters/solo/solo-orderer.ts';
import { SqliteLedgerStore } from '../../src/adapters/sqlite/sqlite-ledger-store.ts';
import { createAttestation } from '../../src/ledger/attestation.ts';
import { blockHeaderHash, GENESIS_PREVIOUS_HASH } from '../../src/ledger/block.ts';
import { canonicalize } from '../../src/ledger/canonical-json.ts';
import { approveConfigChange, createEnvelope, encodeEnvelope, newNonce, type EnvelopeSigner } from '../../src/ledger/envelope.ts';
import { LedgerMember } from '../../src/ledger/member.ts';
import { Membership } from '../../src/ledger/membership.ts';
import { encodeChannelMessage } from '../../src/ledger/orderer.ts';
import { untilWithin } from '../support/until.ts';

const CHANNEL = 'solo-test';
const work = mkdtempSync(join(tmpdir(), 'medblock-ledger-member-'));
after(() => rmSync(work, { recursive: true, force: true }));

const p256 = () => generateKeyPairSync('ec', { namedCurve: 'P-256' });
const keys: Record<string, { publicKey: KeyObject; privateKey: KeyObject }> = { h1: p256(), h2: p256(), h3: p256(), h4: p256(), outsider: p256() };
const signer = (id: string): EnvelopeSigner => ({ memberId: id, privateKey: keys[id].privateKey });
const genesis = new Membership({ h1: { publicKey: keys.h1.publicKey }, h2: { publicKey: keys.h2.publicKey }, h3: { publicKey: keys.h3.publicKey } });
const digest = () => randomBytes(32).toString('hex');
const token = () => randomBytes(32).toString('base64url');

function anchor(by: string, entries = 3): Uint8Array {
  return encodeEnvelope(createEnvelope(signer(by), { channel: CHANNEL, type: 'anchor', payload: { entries: Array.from({ length: entries }, () => ({ digest: digest(), type: 'Observation', patient: token() })) } }));
}

const until = untilWithin(15_000, 20);

interface Node {
  member: LedgerMember;
  store: SqliteLedgerStore;
}

async function startNode(orderer: SoloOrderer, id: string, dir: string, batchTimeoutMs = 50): Promise<Node> {
  const store = new SqliteLedgerStore(join(dir, `${id}-ledger.sqlite`));
  await store.init();
  const member = new LedgerMember({
    channel: CHANNEL, signer: signer(id), genesis, orderer, store, batchTimeoutMs,
    cutter: { maxMessageCount: 4, preferredMaxBytes: 64 * 1024, absoluteMaxBytes: 256 * 1024 },
  });
  await member.start();
  await member.caughtUp();
  return { member, store };
}

async function stopNode(node: Node): Promise<void> {
  await node.member.stop();
  await node.store.close();
}

const headHash = async (node: Node) => {
  const head = await node.store.head(CHANNEL);
  return head ? blockHeaderHash(head) : GENESIS_PREVIOUS_HASH;
};

describe('ledger members on the solo orderer', () => {
  const dir = mkdtempSync(join(work, 'three-'));
  let orderer: SoloOrderer;
  const nodes: Record<string, Node> = {};

  it('three members commit the same chain from concurrent submissions and reach finality', async () => {
    orderer = await SoloOrderer.open(join(dir, 'orderer.sqlite'));
    for (const id of ['h1', 'h2', 'h3']) nodes[id] = await startNode(orderer, id, dir);
    await Promise.all(['h1', 'h2', 'h3'].map(async (id) => {
      for (let i = 0; i < 10; i++) await nodes[id].member.submit([anchor(id), anchor(id)]);
    }));
    await until('60 envelopes committed everywhere', async () => {
      for (const node of Object.values(nodes)) {
        const head = await node.store.head(CHANNEL);
        if (!head) return false;
        const blocks = await Promise.all(Array.from({ length: head.number + 1 }, (_, n) => node.store.block(CHANNEL, n)));
        if (blocks.reduce((sum, b) => sum + b!.envelopes.length, 0) < 60) return false;
      }
      return true;
    });
    const hashes = await Promise.all(Object.values(nodes).map(headHash));
    assert.equal(new Set(hashes).size, 1, 'every member has the same head hash');
    const height = nodes.h1.member.status().height;
    await until('the head is final on every member', () => Object.values(nodes).every((n) => n.member.status().finalHeight >= height));
    // The checkpoint is saved by the store's writer right after finality is reached.
    await until('the checkpoint stored on every member', async () => {
      for (const node of Object.values(nodes)) if (((await node.store.checkpoint(CHANNEL))?.header.number ?? -1) < height) return false;
      return true;
    });
    for (const node of Object.values(nodes)) {
      assert.deepEqual(node.member.status().divergences, []);
      const checkpoint = await node.store.checkpoint(CHANNEL);
      assert.ok(checkpoint && checkpoint.header.number >= height && checkpoint.attestations.length >= 2);
    }
  });

  it('marks forged and replayed envelopes invalid on every member, without forking', async () => {
    const genuine = anchor('h1');
    const forged = encodeEnvelope(createEnvelope(signer('outsider'), { channel: CHANNEL, type: 'anchor', payload: { entries: [{ digest: digest(), type: 'Patient' }] } }));
    const message = (bytes: Uint8Array) => encodeChannelMessage({ kind: 'envelope', bytes });
    await orderer.append([message(genuine), message(forged), message(genuine), message(Buffer.from('not an envelope'))]);
    await until('the batch is committed', async () => (await nodes.h1.store.locate(CHANNEL, [JSON.parse(Buffer.from(genuine).toString()).payload.entries[0].digest])).size === 1);
    await until('all members at the same head', async () => new Set(await Promise.all(Object.values(nodes).map(headHash))).size === 1 && (await nodes.h3.store.head(CHANNEL))?.number === (await nodes.h1.store.head(CHANNEL))?.number);
    const head = (await nodes.h1.store.head(CHANNEL))!;
    const block = (await nodes.h2.store.block(CHANNEL, head.number))!;
    const codes = block.validity.map((v) => (v.valid ? 'valid' : v.reason));
    assert.deepEqual(codes.slice(-4), ['valid', 'unknown-creator', 'replayed-nonce', 'malformed']);
  });

  it('a restarted member resumes from its store and catches up with what it missed', async () => {
    await stopNode(nodes.h3);
    for (let i = 0; i < 5; i++) await nodes.h1.member.submit([anchor('h1')]);
    await until('h1 committed the new envelopes', async () => (await nodes.h1.store.head(CHANNEL))!.number > (await nodes.h3.store.head(CHANNEL))!.number, 10_000).catch(() => {});
    nodes.h3 = await startNode(orderer, 'h3', dir);
    await until('h3 caught up', async () => (await headHash(nodes.h3)) === (await headHash(nodes.h1)));
    assert.equal(nodes.h3.member.status().catchingUp, false);
  });

  it('detects a member attesting a forged header as a divergence, and stops anchoring', async () => {
    const head = (await nodes.h1.store.head(CHANNEL))!;
    const forgedHeader = { ...head, dataHash: 'ff'.repeat(32) };
    const forged = createAttestation(signer('h3'), forgedHeader);
    await orderer.append([encodeChannelMessage({ kind: 'attestation', bytes: Buffer.from(canonicalize(forged)) })]);
    await until('h1 sees the divergence', () => nodes.h1.member.status().divergences.length > 0);
    const [divergence] = nodes.h1.member.status().divergences;
    assert.equal(divergence.blockNumber, head.number);
    assert.deepEqual(divergence.equivocators, ['h3'], 'h3 signed two hashes for the same block');
    assert.equal(nodes.h1.member.healthy(), false, 'a diverged member does not anchor');
  });

  it('applies quorum-approved config changes from the next block: a revoked member\'s envelopes become invalid', async () => {
    const nonce = newNonce();
    const change = { action: 'revokeMember' as const, member: 'h3' };
    const approvals = [approveConfigChange(signer('h1'), CHANNEL, nonce, change), approveConfigChange(signer('h2'), CHANNEL, nonce, change)];
    const config = encodeEnvelope(createEnvelope(signer('h1'), { channel: CHANNEL, type: 'config', nonce, payload: { ...change, approvals } }));
    await nodes.h1.member.submit([config]);
    await until('the revocation is committed', async () => (await nodes.h1.store.configChanges(CHANNEL)).length === 1);
    const revokedAt = (await nodes.h1.store.configChanges(CHANNEL))[0].blockNumber + 1;
    const late = anchor('h3');
    await nodes.h2.member.submit([late]);
    await until('h2 committed the late envelope', async () => ((await nodes.h2.store.head(CHANNEL))?.number ?? 0) >= revokedAt);
    const head = (await nodes.h2.store.head(CHANNEL))!;
    const block = (await nodes.h2.store.block(CHANNEL, head.number))!;
    assert.equal(block.validity.at(-1)!.valid ? 'valid' : (block.validity.at(-1) as { reason: string }).reason, 'revoked-creator');
    assert.equal(nodes.h2.member.currentMembership().isActiveAt('h3', revokedAt), false);
    for (const node of Object.values(nodes)) await stopNode(node);
    await orderer.close();
  });
});

describe('two gateways of one hospital sharing one ledger store', () => {
  it('both commit the same blocks: the one that comes second adopts what its sibling committed, nonces included', async () => {
    const dir = mkdtempSync(join(work, 'shared-'));
    const orderer = await SoloOrderer.open(join(dir, 'orderer.sqlite'));
    // Two members of one hospital (h1) on one store file, as two gateways on one MongoDB share one database.
    const first = await startNode(orderer, 'h1', dir);
    const second = await startNode(orderer, 'h1', dir);
    try {
      for (let i = 0; i < 12; i++) await (i % 2 ? first : second).member.submit([anchor('h1'), anchor('h1')]);
      await until('24 envelopes committed by both', async () => {
        for (const node of [first, second]) {
          const head = await node.store.head(CHANNEL);
          if (!head || (await node.store.block(CHANNEL, head.number))!.header.lastOffset < 23) return false;
        }
        return first.member.status().height === second.member.status().height;
      });
      for (const node of [first, second]) assert.equal(node.member.status().failure, undefined);
      const head = (await first.store.head(CHANNEL))!;
      // Every envelope is valid: none was taken for a replay of itself because the sibling committed it first.
      for (let n = 0; n <= head.number; n++) {
        assert.ok((await first.store.block(CHANNEL, n))!.validity.every((v) => v.valid), `block ${n} holds only valid envelopes`);
      }
    } finally {
      for (const node of [first, second]) await stopNode(node);
      await orderer.close();
    }
  });
});
