import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, verify, type KeyObject } from 'node:crypto';
import {
  AttestationError,
  FinalityTracker,
  createAttestation,
  verifyAttestation,
  verifyCheckpoint,
  type Attestation,
} from '../../src/ledger/attestation.ts';
import { blockHeaderHash, GENESIS_PREVIOUS_HASH, type BlockHeader } from '../../src/ledger/block.ts';
import { canonicalize } from '../../src/ledger/canonical-json.ts';
import type { EnvelopeSigner } from '../../src/ledger/envelope.ts';
import { Membership } from '../../src/ledger/membership.ts';

const CHANNEL = 'main';

function p256(): { publicKey: KeyObject; privateKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' });
}

const keys = { h1: p256(), h2: p256(), h3: p256(), h4: p256(), outsider: p256() };
const signer = (memberId: keyof typeof keys): EnvelopeSigner => ({ memberId, privateKey: keys[memberId].privateKey });
/** h1..h3 active and h4 revoked from block 0: quorum 2 of 3 at every block. */
const members = new Membership({
  h1: { publicKey: keys.h1.publicKey },
  h2: { publicKey: keys.h2.publicKey },
  h3: { publicKey: keys.h3.publicKey },
  h4: { publicKey: keys.h4.publicKey, revokedAtBlock: 0 },
});

function header(number: number, variant = 0): BlockHeader {
  return {
    channel: CHANNEL,
    number,
    previousHash: number === 0 ? GENESIS_PREVIOUS_HASH : (number - 1).toString(16).padStart(64, 'a'),
    dataHash: (number * 10 + variant).toString(16).padStart(64, '0'),
    envelopeCount: 1,
    validityHash: 'cd'.repeat(32),
    firstOffset: number,
    lastOffset: number,
    time: '2025-06-01T12:00:00.000Z',
  };
}

const attest = (memberId: keyof typeof keys, h: BlockHeader): Attestation => createAttestation(signer(memberId), h);

function tracker(): FinalityTracker {
  return new FinalityTracker({ channel: CHANNEL, members });
}

describe('attestations', () => {
  it('round trip: signs the header hash with the attestation prefix, low-S, and verifies', () => {
    const h = header(7);
    const attestation = attest('h1', h);
    assert.deepEqual(
      { ...attestation, signature: undefined },
      { channel: CHANNEL, blockNumber: 7, headerHash: blockHeaderHash(h), member: 'h1', signature: undefined },
    );
    assert.deepEqual(verifyAttestation(attestation, CHANNEL, members), { valid: true, attestation });
    // What a third party checks with any ECDSA library: the prefix and canonical JSON of the other members.
    const { signature, ...unsigned } = attestation;
    const message = Buffer.from(`medblock/attestation/v1\n${canonicalize(unsigned)}`, 'utf8');
    assert.ok(verify('sha256', message, { key: keys.h1.publicKey, dsaEncoding: 'ieee-p1363' }, Buffer.from(signature, 'base64url')));
  });

  it('rejects bad signatures, wrong channel, unknown and revoked members, malformed input', () => {
    const h = header(7);
    const good = attest('h1', h);
    const reason = (value: unknown): string => {
      const verdict = verifyAttestation(value, CHANNEL, members);
      return verdict.valid ? 'valid' : verdict.reason;
    };
    assert.equal(reason({ ...good, headerHash: blockHeaderHash(header(7, 1)) }), 'bad-signature');
    assert.equal(reason({ ...good, member: 'h2' }), 'bad-signature');
    assert.equal(reason({ ...good, blockNumber: 8 }), 'bad-signature');
    assert.equal(reason({ ...attest('h1', { ...h, channel: 'other' }) }), 'wrong-channel');
    assert.equal(reason(attest('outsider', h)), 'unknown-member');
    assert.equal(reason(attest('h4', h)), 'revoked-member');
    // Revocation applies from its block on: earlier attestations stay valid.
    const revokedAt5 = new Membership({ h4: { publicKey: keys.h4.publicKey, revokedAtBlock: 5 } });
    assert.equal(verifyAttestation(attest('h4', header(4)), CHANNEL, revokedAt5).valid, true);
    assert.equal(verifyAttestation(attest('h4', header(5)), CHANNEL, revokedAt5).valid, false);
    // The high-S twin of a valid signature verifies in OpenSSL but is refused here.
    const signature = Buffer.from(good.signature, 'base64url');
    const n = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
    signature.write((n - BigInt(`0x${signature.subarray(32).toString('hex')}`)).toString(16).padStart(64, '0'), 32, 'hex');
    assert.equal(reason({ ...good, signature: signature.toString('base64url') }), 'bad-signature');
    for (const malformed of [null, [], { ...good, extra: 1 }, { ...good, blockNumber: -1 }, { ...good, signature: 'AA' }, { ...good, headerHash: 'AB'.repeat(32) }]) {
      assert.equal(reason(malformed), 'malformed');
    }
  });

  it('refuses to attest with a bad signer or a malformed header', () => {
    assert.throws(() => createAttestation({ memberId: 'h1', privateKey: keys.h1.publicKey }, header(1)), AttestationError);
    assert.throws(() => createAttestation(signer('h1'), { ...header(1), time: 'yesterday' }), AttestationError);
  });
});

describe('FinalityTracker', () => {
  it('makes a block final once 2 of 3 members attested the same hash', () => {
    const t = tracker();
    const h = header(0);
    t.recordCommitted(h);
    assert.deepEqual(t.addAttestation(attest('h1', h)), { accepted: true, becameFinal: false, divergence: undefined });
    assert.equal(t.isFinal(0), false);
    assert.equal(t.finalHeight, -1);
    assert.deepEqual(t.addAttestation(attest('h2', h)), { accepted: true, becameFinal: true, divergence: undefined });
    assert.equal(t.isFinal(0), true);
    assert.equal(t.finalHeight, 0);
    assert.deepEqual(t.addAttestation(attest('h3', h)), { accepted: true, becameFinal: false, divergence: undefined });
    assert.deepEqual(t.divergences, []);
  });

  it('ignores duplicates and replays: they never count twice', () => {
    const t = tracker();
    const h = header(0);
    const once = attest('h1', h);
    t.addAttestation(once);
    const replay = t.addAttestation(structuredClone(once));
    assert.equal(replay.accepted, false);
    assert.equal(!replay.accepted && replay.reason, 'duplicate');
    // A fresh signature over the same hash is still the same vote.
    assert.equal(t.addAttestation(attest('h1', h)).accepted, false);
    assert.equal(t.isFinal(0), false);
  });

  it('rejects unknown, revoked and badly signed attestations with their reason', () => {
    const t = tracker();
    const h = header(6);
    const outcome = (a: unknown): string => {
      const result = t.addAttestation(a);
      return result.accepted ? 'accepted' : result.reason;
    };
    assert.equal(outcome(attest('outsider', h)), 'unknown-member');
    assert.equal(outcome(attest('h4', h)), 'revoked-member');
    assert.equal(outcome({ ...attest('h1', h), member: 'h2' }), 'bad-signature');
    assert.equal(outcome({ nonsense: true }), 'malformed');
    assert.equal(t.isFinal(6), false);
  });

  it('raises a divergence when attestations for one block disagree, and is final only if a quorum agrees', () => {
    const t = tracker();
    const honest = header(3);
    const forged = header(3, 1);
    t.recordCommitted(honest);
    t.addAttestation(attest('h1', honest));
    const alarm = t.addAttestation(attest('h2', forged));
    assert.equal(alarm.accepted && alarm.becameFinal, false);
    assert.deepEqual(alarm.accepted && alarm.divergence, {
      blockNumber: 3,
      claims: [
        { headerHash: blockHeaderHash(honest), members: ['h1'] },
        { headerHash: blockHeaderHash(forged), members: ['h2'] },
      ],
      ownHeaderHash: blockHeaderHash(honest),
      equivocators: [],
    });
    assert.equal(t.isFinal(3), false);
    assert.equal(t.divergences.length, 1);
    // h3 sides with h1: the honest hash reaches the quorum; the divergence stays on record.
    const decided = t.addAttestation(attest('h3', honest));
    assert.equal(decided.accepted && decided.becameFinal, true);
    assert.equal(t.isFinal(3), true);
    assert.deepEqual(t.divergences.map((d) => d.blockNumber), [3]);
    assert.equal(t.checkpoint()?.header.number, 3);
  });

  it('records a member that signs two hashes for one block, counting only its first', () => {
    const t = tracker();
    const a = header(2);
    const b = header(2, 1);
    t.addAttestation(attest('h1', a));
    const second = t.addAttestation(attest('h1', b));
    assert.deepEqual(second.accepted && second.divergence?.equivocators, ['h1']);
    t.addAttestation(attest('h2', b));
    assert.equal(t.isFinal(2), false, 'h1 counts for its first hash only, so b has one vote');
  });

  it('reports its own divergence when the quorum attested a hash other than the one it committed', () => {
    const t = tracker();
    t.recordCommitted(header(1, 1));
    t.addAttestation(attest('h1', header(1)));
    t.addAttestation(attest('h2', header(1)));
    assert.equal(t.isFinal(1), true);
    assert.equal(t.divergences[0]?.ownHeaderHash, blockHeaderHash(header(1, 1)));
    assert.equal(t.checkpoint(), undefined, 'no checkpoint without the quorum header');
  });

  it('honours a configured quorum above the majority, and never goes below it', () => {
    const strict = new FinalityTracker({ channel: CHANNEL, members, quorum: 3 });
    const lax = new FinalityTracker({ channel: CHANNEL, members, quorum: 1 });
    const h = header(0);
    for (const t of [strict, lax]) for (const m of ['h1', 'h2'] as const) t.addAttestation(attest(m, h));
    assert.equal(strict.isFinal(0), false);
    assert.equal(lax.isFinal(0), true);
    assert.equal(lax.finalHeight, 0);
    assert.throws(() => new FinalityTracker({ channel: CHANNEL, members, quorum: 0 }), AttestationError);
  });
});

describe('checkpoints', () => {
  function finalTracker(): FinalityTracker {
    const t = tracker();
    for (let n = 0; n < 3; n++) {
      t.recordCommitted(header(n));
      t.addAttestation(attest('h1', header(n)));
      t.addAttestation(attest('h3', header(n)));
    }
    t.recordCommitted(header(3));
    t.addAttestation(attest('h1', header(3)));
    return t;
  }

  it('hold the highest final header and the quorum, and verify offline with public keys only', () => {
    const checkpoint = finalTracker().checkpoint()!;
    assert.equal(checkpoint.header.number, 2);
    assert.deepEqual(checkpoint.attestations.map((a) => a.member), ['h1', 'h3']);
    // What a third party receives: JSON text, and the members' public keys as PEM.
    const received = JSON.parse(JSON.stringify(checkpoint));
    const publicOnly = new Membership(
      Object.fromEntries(
        (['h1', 'h2', 'h3'] as const).map((id) => [id, { publicKey: keys[id].publicKey.export({ type: 'spki', format: 'pem' }) as string }]),
      ),
    );
    assert.deepEqual(verifyCheckpoint(received, CHANNEL, publicOnly), []);
  });

  it('fail with a forged, duplicated or foreign attestation', () => {
    const checkpoint = finalTracker().checkpoint()!;
    const [first, second] = checkpoint.attestations;
    const problems = (attestations: unknown[], h: BlockHeader = checkpoint.header): string[] =>
      verifyCheckpoint({ header: h, attestations }, CHANNEL, members).map((p) => `${p.path}: ${p.problem}`);

    // h2 never attested: a signature made with another key under h2's name.
    const forged = { ...createAttestation(signer('outsider'), checkpoint.header), member: 'h2' };
    assert.deepEqual(problems([first, forged]), [
      '/attestations/1: bad-signature: /signature does not verify with the key of h2',
      '/attestations: 1 valid attestations of the header hash < quorum 2',
    ]);
    assert.equal(problems([first, first]).length, 2);
    assert.match(problems([first, first])[0], /h1 attests twice/);
    assert.match(problems([first, attest('h2', header(1))])[0], /another block or hash/);
    assert.match(problems([first, second], { ...checkpoint.header, time: '2025-06-01T12:00:01.000Z' }).at(-1)!, /< quorum 2/);
    assert.deepEqual(verifyCheckpoint(null, CHANNEL, members).length, 1);
    assert.deepEqual(verifyCheckpoint({ header: 'x', attestations: 'y' }, CHANNEL, members).length, 2);
  });
});
