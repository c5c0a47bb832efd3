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
import { createEnvelope, encodeEnvelope, type AuditEntry, type ConfigChange, type EnvelopeSigner } from '../../src/ledger/envelope.ts';
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
/** Link tokens as Patient versions carry them: sorted, each once. */
const linkSet = (...names: string[]) => [...new Set(names.map(tok))].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

type Entry = { digest: string; type?: string; patient?: string; resource?: string; links?: string[] };
type Envelopes = Array<{ by: 'h1' | 'h2'; entries: Entry[] } | { by: 'h1' | 'h2'; audit: AuditEntry[] } | Uint8Array>;

/** A chain builder on one channel: each call makes the next real block and its index. */
function chain(channel: string) {
  let previous: Block | undefined;
  let offset = 0;
  return (envelopes: Envelopes): { block: Block; index: BlockIndex } => {
    const bytes = envelopes.map((e) =>
      e instanceof Uint8Array
        ? e
        : encodeEnvelope(
            'audit' in e
              ? createEnvelope(signer(e.by), { channel, type: 'audit', payload: { entries: e.audit } })
              : createEnvelope(signer(e.by), { channel, type: 'anchor', payload: { entries: e.entries } }),
          ),
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
      assert.deepEqual(await store.holdersOfLink(channel, tok('link-none')), []);
      assert.equal((await store.anchorFacts(channel, [hex()])).size, 0);
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
      assert.equal((await store.anchorFacts(channel, [b1.index.digests[0].digest])).size, 0);
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

    it('replaces a hospital\'s link set for a patient with its latest Patient version; an empty set removes it', async () => {
      const channel = newChannel();
      const next = chain(channel);
      const [p1, p2] = [tok('lp-1'), tok('lp-2')];
      const b0 = next([
        { by: 'h1', entries: [{ digest: hex(), patient: p1, resource: tok('lr-1'), links: linkSet('ssn-a', 'ssn-b') }] },
        { by: 'h2', entries: [{ digest: hex(), patient: p2, resource: tok('lr-2'), links: linkSet('ssn-a') }] },
      ]);
      // An Observation of p1 carries no link set: it changes nothing. Within a block, the later Patient version wins.
      const b1 = next([
        { by: 'h1', entries: [{ digest: hex(), patient: p1, resource: tok('lr-obs') }, { digest: hex(), patient: p1, resource: tok('lr-1'), links: linkSet('ssn-a') }] },
        { by: 'h1', entries: [{ digest: hex(), patient: p1, resource: tok('lr-1'), links: linkSet('ssn-b', 'ssn-c') }] },
      ]);
      const b2 = next([{ by: 'h1', entries: [{ digest: hex(), patient: p1, resource: tok('lr-1'), links: [] }] }]);
      await store.appendBlock(b0.block, b0.index);
      assert.deepEqual(await store.holdersOfLink(channel, tok('ssn-a')), [{ hospital: 'h1', locator: p1 }, { hospital: 'h2', locator: p2 }]);
      assert.deepEqual(await store.holdersOfLink(channel, tok('ssn-b')), [{ hospital: 'h1', locator: p1 }]);
      await store.appendBlock(b1.block, b1.index);
      assert.deepEqual(await store.holdersOfLink(channel, tok('ssn-a')), [{ hospital: 'h2', locator: p2 }], 'replaced, not added to');
      assert.deepEqual(await store.holdersOfLink(channel, tok('ssn-b')), [{ hospital: 'h1', locator: p1 }]);
      assert.deepEqual(await store.holdersOfLink(channel, tok('ssn-c')), [{ hospital: 'h1', locator: p1 }]);
      await store.appendBlock(b2.block, b2.index);
      assert.deepEqual(await store.holdersOfLink(channel, tok('ssn-b')), []);
      assert.deepEqual(await store.holdersOfLink(channel, tok('ssn-c')), []);
      assert.deepEqual(await store.holdersOfLink(channel, tok('ssn-a')), [{ hospital: 'h2', locator: p2 }]);
      assert.deepEqual(await store.holdersOfLink(newChannel(), tok('ssn-a')), [], 'another channel sees nothing');
    });

    it('an erasure record removes the patient\'s links and marks its entries erased, for its own creator only', async () => {
      const channel = newChannel();
      const next = chain(channel);
      const [p1, p2] = [tok('ep-1'), tok('ep-2')];
      const [own, observation, other, sameTokenOtherCreator] = [hex(), hex(), hex(), hex()];
      const b0 = next([
        { by: 'h1', entries: [{ digest: own, patient: p1, resource: tok('er-1'), links: linkSet('e-ssn') }, { digest: observation, patient: p1, resource: tok('er-2') }] },
        { by: 'h2', entries: [{ digest: other, patient: p2, resource: tok('er-3'), links: linkSet('e-ssn') }, { digest: sameTokenOtherCreator, patient: p1, resource: tok('er-4') }] },
      ]);
      const erasure = hex();
      const b1 = next([{ by: 'h1', audit: [{ digest: erasure, erased: p1 }] }]);
      await store.appendBlock(b0.block, b0.index);
      assert.equal((await store.anchorFacts(channel, [own])).get(own)?.erased, false);
      await store.appendBlock(b1.block, b1.index);
      assert.deepEqual(await store.holdersOfLink(channel, tok('e-ssn')), [{ hospital: 'h2', locator: p2 }]);
      const facts = await store.anchorFacts(channel, [own, observation, other, sameTokenOtherCreator, erasure]);
      assert.deepEqual([own, observation, other, sameTokenOtherCreator].map((d) => facts.get(d)?.erased), [true, true, false, false]);
      assert.deepEqual(facts.get(erasure), { blockNumber: 1, envelopeIndex: 0, entryIndex: 0, creator: 'h1', kind: 'audit', superseded: false, erased: false });
    });

    it('a later entry of the same creator and resource token supersedes an entry; another creator\'s entry with that token does not', async () => {
      const channel = newChannel();
      const next = chain(channel);
      const [patient, resource] = [tok('sp'), tok('sr')];
      const [v1, forged, v2, v3, unrelated] = [hex(), hex(), hex(), hex(), hex()];
      const b0 = next([{ by: 'h1', entries: [{ digest: v1, patient, resource }] }]);
      // h2 anchors under h1's resource token (copied from the ledger): that must not make h1's version look superseded.
      const b1 = next([{ by: 'h2', entries: [{ digest: forged, patient: tok('sp-h2'), resource }] }]);
      const b2 = next([{ by: 'h1', entries: [{ digest: v2, patient, resource }, { digest: unrelated, patient, resource: tok('sr-other') }] }]);
      const b3 = next([{ by: 'h1', entries: [{ digest: v3, patient, resource }] }]);
      await store.appendBlock(b0.block, b0.index);
      await store.appendBlock(b1.block, b1.index);
      let facts = await store.anchorFacts(channel, [v1, forged, hex()]);
      assert.equal(facts.size, 2, 'a digest never anchored is absent');
      assert.deepEqual(facts.get(v1), { blockNumber: 0, envelopeIndex: 0, entryIndex: 0, creator: 'h1', kind: 'anchor', patient, resource, superseded: false, erased: false });
      assert.deepEqual(facts.get(forged), { blockNumber: 1, envelopeIndex: 0, entryIndex: 0, creator: 'h2', kind: 'anchor', patient: tok('sp-h2'), resource, superseded: false, erased: false });
      await store.appendBlock(b2.block, b2.index);
      await store.appendBlock(b3.block, b3.index);
      facts = await store.anchorFacts(channel, [v1, v2, v3, forged, unrelated]);
      assert.deepEqual([v1, v2, v3, forged, unrelated].map((d) => facts.get(d)?.superseded), [true, true, false, false, false]);
    });

    it('indexes nothing of a block it refused: link sets, resource heads and erasures stay as the committed head left them', async () => {
      const channel = newChannel();
      const next = chain(channel);
      const [patient, resource, version] = [tok('gp'), tok('gr'), hex()];
      const b0 = next([{ by: 'h1', entries: [{ digest: version, patient, resource, links: linkSet('g-ssn') }] }]);
      const b1 = next([{ by: 'h1', entries: [{ digest: hex(), patient, resource, links: linkSet('g-other') }] }]);
      const b2 = next([{ by: 'h1', audit: [{ digest: hex(), erased: patient }] }]);
      await store.appendBlock(b0.block, b0.index);
      await assert.rejects(store.appendBlock(b2.block, b2.index), LedgerAppendError, 'block 2 before block 1');
      await assert.rejects(store.appendBlock(b0.block, b1.index), LedgerAppendError, 'block 0 again, with other index entries');
      assert.deepEqual(await store.holdersOfLink(channel, tok('g-ssn')), [{ hospital: 'h1', locator: patient }]);
      assert.deepEqual(await store.holdersOfLink(channel, tok('g-other')), []);
      assert.deepEqual(await store.anchorFacts(channel, [version]).then((f) => [f.get(version)?.superseded, f.get(version)?.erased]), [false, false]);
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
      const b0 = next([{ by: 'h1', entries: [{ digest: hex(), patient: tok('tok-r'), resource: tok('res-r'), links: linkSet('link-r') }] }]);
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
        assert.deepEqual(await again.holdersOfLink(channel, tok('link-r')), [{ hospital: 'h1', locator: tok('tok-r') }]);
        assert.equal((await again.anchorFacts(channel, [b0.index.digests[0].digest])).get(b0.index.digests[0].digest)?.resource, tok('res-r'));
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
