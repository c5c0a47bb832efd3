/**
 * The LedgerStore contract: every adapter runs this same suite against its real engine. Blocks are real
 * (built from signed envelopes by the ledger's own buildBlockWithVerdicts) so a round trip is checked
 * down to the header hash every member attests.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { createAttestation, type Attestation } from '../../src/ledger/attestation.ts';
import { blockHeaderHash, buildBlockWithVerdicts, type Block } from '../../src/ledger/block.ts';
import { createEnvelope, encodeEnvelope, type ConfigChange, type EnvelopeSigner } from '../../src/ledger/envelope.ts';
import { LedgerAppendError, type BlockIndex, type LedgerStore } from '../../src/ledger/ledger-store.ts';
import { blockIndex } from '../../src/ledger/member.ts';
import { Membership } from '../../src/ledger/membership.ts';

const keys = { h1: generateKeyPairSync('ec', { namedCurve: 'P-256' }), h2: generateKeyPairSync('ec', { namedCurve: 'P-256' }) };
const signer = (id: 'h1' | 'h2'): EnvelopeSigner => ({ memberId: id, privateKey: keys[id].privateKey });
const members = new Membership({ h1: { publicKey: keys.h1.publicKey }, h2: { publicKey: keys.h2.publicKey } });
const hex = () => randomBytes(32).toString('hex');
/** Pseudonymous patient tokens are 32 bytes in base64url; a name makes each test's tokens stable. */
const tokens = new Map<string, string>();
const tok = (name: string) => tokens.get(name) ?? (tokens.set(name, randomBytes(32).toString('base64url')), tokens.get(name)!);
const newChannel = () => `contract-${randomBytes(5).toString('hex')}`;

type Entry = { digest: string; type: string; patient?: string };

/** A chain builder on one channel: each call makes the next real block and its index. */
function chain(channel: string) {
  let previous: Block | undefined;
  let offset = 0;
  return (envelopes: Array<{ by: 'h1' | 'h2'; entries: Entry[] } | Uint8Array>): { block: Block; index: BlockIndex } => {
    const bytes = envelopes.map((e) =>
      e instanceof Uint8Array ? e : encodeEnvelope(createEnvelope(signer(e.by), { channel, type: 'anchor', payload: { entries: e.entries } })),
    );
    const cut = {
      number: previous ? previous.header.number + 1 : 0,
      envelopes: bytes.map((b) => ({ offset: offset++, bytes: b })),
      firstOffset: offset - bytes.length,
      lastOffset: offset - 1,
      cutReason: 'maxMessages' as const,
    };
    const { block, verdicts } = buildBlockWithVerdicts(cut, previous?.header, { channel, members, committedNonces: { has: () => false } });
    previous = block;
    return { block, index: blockIndex(verdicts) };
  };
}

function attestation(by: 'h1' | 'h2', block: Block): Attestation {
  return createAttestation(signer(by), block.header);
}

/**
 * `open` returns a new, not yet initialised store over the SAME storage each time it is called (a file, a
 * database), so reopening and two stores sharing it can be tested.
 */
export function ledgerStoreContract(name: string, open: () => Promise<LedgerStore>): void {
  describe(`LedgerStore contract: ${name}`, () => {
    let store: LedgerStore;
    before(async () => {
      store = await open();
      await store.init();
    });
    after(async () => store.close());

    it('is empty for a channel with no block', async () => {
      const channel = newChannel();
      assert.equal(await store.head(channel), undefined);
      assert.equal(await store.block(channel, 0), undefined);
      assert.deepEqual(await store.headers(channel, 0, 10), []);
      assert.equal((await store.locate(channel, [hex()])).size, 0);
      assert.deepEqual(await store.hospitalsForPatient(channel, 'token'), []);
      assert.equal((await store.committedNonces(channel, [{ creator: 'h1', nonce: 'n' }])).size, 0);
      assert.deepEqual(await store.configChanges(channel), []);
      assert.deepEqual(await store.attestations(channel, 0, 10), []);
      assert.equal(await store.checkpoint(channel), undefined);
    });

    it('appends blocks in order and reads them back byte for byte, with the same header hash', async () => {
      const channel = newChannel();
      const next = chain(channel);
      const b0 = next([{ by: 'h1', entries: [{ digest: hex(), type: 'Patient' }] }, Uint8Array.from([0x7b, 0x7d])]);
      const b1 = next([{ by: 'h2', entries: [{ digest: hex(), type: 'Observation' }] }]);
      await store.appendBlock(b0.block, b0.index);
      await store.appendBlock(b1.block, b1.index);
      assert.deepEqual(await store.head(channel), b1.block.header);
      const read = await store.block(channel, 0);
      assert.ok(read);
      assert.deepEqual(read.header, b0.block.header);
      assert.equal(blockHeaderHash(read.header), blockHeaderHash(b0.block.header));
      assert.deepEqual(read.envelopes.map((e) => Buffer.from(e).toString('hex')), b0.block.envelopes.map((e) => Buffer.from(e).toString('hex')));
      assert.deepEqual(read.validity, b0.block.validity);
      assert.equal(read.validity[1].valid, false, 'the malformed envelope stays in the block, marked invalid');
      assert.deepEqual(await store.headers(channel, 0, 5), [b0.block.header, b1.block.header]);
      assert.deepEqual(await store.headers(channel, 1, 1), [b1.block.header]);
      assert.equal(await store.block(channel, 2), undefined);
    });

    it('refuses a block that does not follow the head, and keeps nothing of it', async () => {
      const channel = newChannel();
      const next = chain(channel);
      const b0 = next([{ by: 'h1', entries: [{ digest: hex(), type: 'Patient' }] }]);
      const b1 = next([{ by: 'h1', entries: [{ digest: hex(), type: 'Patient', patient: tok('tok-gap') }] }]);
      await assert.rejects(store.appendBlock(b1.block, b1.index), LedgerAppendError, 'block 1 before block 0');
      await store.appendBlock(b0.block, b0.index);
      await assert.rejects(store.appendBlock(b0.block, b0.index), LedgerAppendError, 'block 0 twice');
      assert.equal((await store.head(channel))?.number, 0);
      assert.equal((await store.locate(channel, [b1.index.digests[0].digest])).size, 0);
      assert.deepEqual(await store.hospitalsForPatient(channel, tok('tok-gap')), []);
      assert.equal((await store.committedNonces(channel, b1.index.nonces)).size, 0);
    });

    it('locates digests at their first anchor, per channel, for large lookups too', async () => {
      const channel = newChannel();
      const next = chain(channel);
      const repeated = hex();
      const many = Array.from({ length: 1200 }, () => ({ digest: hex(), type: 'Observation' }));
      const b0 = next([{ by: 'h1', entries: [{ digest: hex(), type: 'Patient' }, { digest: repeated, type: 'Patient' }] }]);
      const b1 = next([{ by: 'h2', entries: [{ digest: repeated, type: 'Patient' }] }, { by: 'h2', entries: many.slice(0, 1000) }, { by: 'h1', entries: many.slice(1000) }]);
      await store.appendBlock(b0.block, b0.index);
      await store.appendBlock(b1.block, b1.index);
      const found = await store.locate(channel, [repeated, many[999].digest, many[1100].digest, hex()]);
      assert.equal(found.size, 3);
      assert.deepEqual(found.get(repeated), { blockNumber: 0, envelopeIndex: 0, entryIndex: 1, creator: 'h1', kind: 'anchor' });
      assert.deepEqual(found.get(many[999].digest), { blockNumber: 1, envelopeIndex: 1, entryIndex: 999, creator: 'h2', kind: 'anchor' });
      assert.deepEqual(found.get(many[1100].digest), { blockNumber: 1, envelopeIndex: 2, entryIndex: 100, creator: 'h1', kind: 'anchor' });
      assert.equal((await store.locate(channel, many.map((m) => m.digest))).size, 1200);
      assert.equal((await store.locate(newChannel(), [repeated])).size, 0, 'another channel sees nothing');
    });

    it('indexes patient tokens to the hospitals holding data, sorted and each once', async () => {
      const channel = newChannel();
      const next = chain(channel);
      const b0 = next([
        { by: 'h2', entries: [{ digest: hex(), type: 'Patient', patient: tok('tok-a') }, { digest: hex(), type: 'Observation', patient: tok('tok-a') }] },
        { by: 'h1', entries: [{ digest: hex(), type: 'Patient', patient: tok('tok-a') }] },
      ]);
      const b1 = next([{ by: 'h2', entries: [{ digest: hex(), type: 'Encounter', patient: tok('tok-a') }, { digest: hex(), type: 'Patient', patient: tok('tok-b') }] }]);
      await store.appendBlock(b0.block, b0.index);
      await store.appendBlock(b1.block, b1.index);
      assert.deepEqual(await store.hospitalsForPatient(channel, tok('tok-a')), ['h1', 'h2']);
      assert.deepEqual(await store.hospitalsForPatient(channel, tok('tok-b')), ['h2']);
      assert.deepEqual(await store.hospitalsForPatient(channel, tok('tok-c')), []);
    });

    it('remembers committed nonces for replay protection', async () => {
      const channel = newChannel();
      const next = chain(channel);
      const b0 = next([{ by: 'h1', entries: [{ digest: hex(), type: 'Patient' }] }, { by: 'h2', entries: [{ digest: hex(), type: 'Patient' }] }]);
      await store.appendBlock(b0.block, b0.index);
      const [n1, n2] = b0.index.nonces;
      const committed = await store.committedNonces(channel, [n1, n2, { creator: 'h1', nonce: n2.nonce }, { creator: 'h2', nonce: 'never' }]);
      assert.deepEqual([...committed].sort(), [`${n1.creator} ${n1.nonce}`, `${n2.creator} ${n2.nonce}`].sort());
    });

    it('keeps config changes in ledger order with the block that committed them', async () => {
      const channel = newChannel();
      const next = chain(channel);
      const b0 = next([{ by: 'h1', entries: [{ digest: hex(), type: 'Patient' }] }]);
      const b1 = next([{ by: 'h1', entries: [{ digest: hex(), type: 'Patient' }] }]);
      const revoke: ConfigChange = { action: 'revokeMember', member: 'h3' };
      const add: ConfigChange = { action: 'addMember', member: 'h4', certificate: '-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n', signingKey: 'key' };
      await store.appendBlock(b0.block, { ...b0.index, configChanges: [add] });
      await store.appendBlock(b1.block, { ...b1.index, configChanges: [revoke, { action: 'revokeMember', member: 'h4' }] });
      assert.deepEqual(await store.configChanges(channel), [
        { blockNumber: 0, change: add },
        { blockNumber: 1, change: revoke },
        { blockNumber: 1, change: { action: 'revokeMember', member: 'h4' } },
      ]);
    });

    it('keeps the first attestation per member and block, and returns them by block then member', async () => {
      const channel = newChannel();
      const next = chain(channel);
      const b0 = next([{ by: 'h1', entries: [{ digest: hex(), type: 'Patient' }] }]);
      const b1 = next([{ by: 'h1', entries: [{ digest: hex(), type: 'Patient' }] }]);
      const first = attestation('h2', b1.block);
      const forged = { ...first, headerHash: hex() };
      await store.saveAttestations([first, attestation('h1', b1.block)]);
      await store.saveAttestations([forged, attestation('h1', b0.block)]);
      await store.saveAttestations([]);
      const saved = await store.attestations(channel, 0, 1);
      assert.deepEqual(saved.map((a) => [a.blockNumber, a.member]), [[0, 'h1'], [1, 'h1'], [1, 'h2']]);
      assert.deepEqual(saved[2], first);
      assert.deepEqual(await store.attestations(channel, 1, 1), saved.slice(1));
    });

    it('replaces the checkpoint only with a higher one', async () => {
      const channel = newChannel();
      const next = chain(channel);
      const b0 = next([{ by: 'h1', entries: [{ digest: hex(), type: 'Patient' }] }]);
      const b1 = next([{ by: 'h1', entries: [{ digest: hex(), type: 'Patient' }] }]);
      const at = (b: Block) => ({ header: b.header, attestations: [attestation('h1', b), attestation('h2', b)] });
      const latest = at(b1.block);
      await store.saveCheckpoint(channel, latest);
      await store.saveCheckpoint(channel, at(b0.block));
      assert.deepEqual(await store.checkpoint(channel), latest);
      assert.equal(await store.checkpoint(newChannel()), undefined);
    });

    it('keeps everything across a reopen', async () => {
      const channel = newChannel();
      const next = chain(channel);
      const b0 = next([{ by: 'h1', entries: [{ digest: hex(), type: 'Patient', patient: tok('tok-r') }] }]);
      await store.appendBlock(b0.block, b0.index);
      await store.saveAttestations([attestation('h1', b0.block)]);
      await store.saveCheckpoint(channel, { header: b0.block.header, attestations: [attestation('h1', b0.block)] });
      const again = await open();
      await again.init();
      try {
        assert.deepEqual(await again.head(channel), b0.block.header);
        assert.deepEqual((await again.block(channel, 0))?.header, b0.block.header);
        assert.equal((await again.locate(channel, [b0.index.digests[0].digest])).size, 1);
        assert.deepEqual(await again.hospitalsForPatient(channel, tok('tok-r')), ['h1']);
        assert.equal((await again.attestations(channel, 0, 0)).length, 1);
        assert.equal((await again.checkpoint(channel))?.header.number, 0);
      } finally {
        await again.close();
      }
    });

    it('lets exactly one of two stores sharing the storage append the same block number', async () => {
      const channel = newChannel();
      const next = chain(channel);
      const b0 = next([{ by: 'h1', entries: [{ digest: hex(), type: 'Patient' }] }]);
      await store.appendBlock(b0.block, b0.index);
      const other = await open();
      await other.init();
      try {
        const mine = next([{ by: 'h1', entries: [{ digest: hex(), type: 'Patient' }] }]);
        const results = await Promise.allSettled([store.appendBlock(mine.block, mine.index), other.appendBlock(mine.block, mine.index)]);
        assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1, JSON.stringify(results.map((r) => r.status)));
        const failure = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
        assert.ok(failure.reason instanceof LedgerAppendError, String(failure.reason));
        assert.deepEqual(await other.head(channel), mine.block.header);
        assert.equal((await store.locate(channel, [mine.index.digests[0].digest])).get(mine.index.digests[0].digest)?.blockNumber, 1);
      } finally {
        await other.close();
      }
    });
  });
}
