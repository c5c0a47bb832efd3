/**
 * Proofs whose trust is pinned (issue #11, item 3). A verifier pins consortium.json (or its SHA-256) out of
 * band; everything else in a proof is checked against it: the CA it names, config envelopes on the chain for
 * every membership change (in order, against the membership in force, with a quorum's attestations of their
 * blocks), and certificates at the checkpoint's quorum-attested time.
 *
 * The attack: one member (h1 of three, quorum 2) forges a proof alone, inventing members, quorum and
 * revocations, certificates from a CA of its own, and a checkpoint only it signed. Each variant fails, also
 * through `medblock verify --proof --ca --consortium`; a genuine proof across a membership change and a
 * revocation verifies, and so does an old proof whose certificates have all expired. And a proof cannot leave a
 * config change out (a revocation, so that the revoked member still counts): attested headers commit to the config
 * history (configHash); chains committed before that field still verify, with a warning.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createAttestation } from '../../src/ledger/attestation.ts';
import { verifyBlock } from '../../src/ledger/block.ts';
import { verifyConsistencyProof, verifyResourceProof, CONSISTENCY_PROOF_FORMAT, type ResourceProof } from '../../src/ledger/proof.ts';
import { digestOf, ProofChain } from '../support/proof-chain.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'medblock.js');
const work = mkdtempSync(join(tmpdir(), 'medblock-proof-trust-'));
after(() => rmSync(work, { recursive: true, force: true }));

const T = new Date().toISOString();
const problemsOf = (proof: unknown, chain: ProofChain) => verifyResourceProof(proof, { consortium: chain.manifestText, trustedCaCertificate: chain.consortium.ca.certPem }).problems;

function medblockVerify(args: string[]): Promise<{ status: number | null; stdout: string }> {
  const { MEDBLOCK_MONGODB_URI: _m, MEDBLOCK_KAFKA_BROKERS: _k, ...env } = process.env;
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, 'verify', ...args], { env: { ...env, MEDBLOCK_LOG: 'off', MEDBLOCK_DATA_DIR: join(work, 'empty') }, encoding: 'utf8', timeout: 60_000 }, (error, stdout) => {
      resolve({ status: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout });
    });
  });
}

const file = (name: string, text: string) => {
  const path = join(work, name);
  writeFileSync(path, text);
  return path;
};

describe('resource proofs pinned to consortium.json', () => {
  let chain: ProofChain;
  let genuine: ResourceProof;
  const h4Digest = digestOf('anchored by h4, after it joined and h3 was revoked');

  before(async () => {
    chain = await ProofChain.create(['h1', 'h2', 'h3']);
    chain.commit([chain.anchor('h1', digestOf('first'), T)], ['h1', 'h2', 'h3']);
    const addH4 = await chain.newMember('h4');
    chain.commit([chain.config(addH4, ['h1', 'h2'], T)], ['h1', 'h2', 'h3']);
    chain.commit([chain.config({ action: 'revokeMember', member: 'h3' }, ['h1', 'h2', 'h4'], T)], ['h1', 'h2', 'h3', 'h4']);
    chain.commit([chain.anchor('h4', h4Digest, T)], ['h1', 'h4']);
    assert.deepEqual(chain.blocks.map((b) => b.validity.map((v) => v.valid)), [[true], [true], [true], [true]]);
    genuine = chain.resourceProof(3, 0, h4Digest);
  });

  it('a genuine proof across a member addition and a revocation verifies, pinned by consortium.json or its fingerprint', () => {
    assert.equal(genuine.consortium.configChanges.length, 2);
    assert.deepEqual(problemsOf(genuine, chain), []);
    const fingerprint = createHash('sha256').update(chain.manifestText).digest('hex');
    assert.deepEqual(verifyResourceProof(genuine, { consortiumFingerprint: fingerprint }), { problems: [], warnings: [] });
    // The revoked member's envelopes after its revocation do not count, even in a genuine chain.
    const revokedAnchor = chain.anchor('h3', digestOf('h3 after revocation'), T);
    chain.commit([revokedAnchor], ['h1', 'h4']);
    assert.deepEqual(chain.blocks[4].validity, [{ valid: false, reason: 'revoked-creator', detail: '/creator is revoked' }]);
  });

  it('without a pinned consortium every proof fails (fail-closed)', () => {
    const report = verifyResourceProof(genuine, { trustedCaCertificate: chain.consortium.ca.certPem });
    assert.match(report.problems[0].problem, /no pinned consortium/);
  });

  it('a proof that hides the config changes (so h4 is unknown) fails', () => {
    const hidden = structuredClone(genuine);
    hidden.consortium.configChanges = [];
    assert.ok(problemsOf(hidden, chain).some((p) => p.path === '/envelope' && /^unknown-creator/.test(p.problem)), JSON.stringify(problemsOf(hidden, chain)));
  });

  describe('one member (h1) forges a proof alone', () => {
    let forgery: ProofChain;
    const forgedDigest = digestOf('never anchored by the consortium');

    before(async () => {
      // h1's own CA, its own consortium of one, quorum 1: everything the old proof format let the prover state.
      forgery = await ProofChain.create(['h1']);
    });

    it('inventing members, quorum and CA (a consortium.json of its own) fails the pin', async () => {
      const forged = forgery.resourceProof(forgery.commit([forgery.anchor('h1', forgedDigest, T)], ['h1']).header.number, 0, forgedDigest);
      assert.deepEqual(problemsOf(forged, forgery), [], 'it is self-consistent');
      assert.deepEqual(problemsOf(forged, chain).map((p) => p.path), ['/consortium/genesis']);
      // The review's attack: h1's real certificate, the real CA, "quorum 1", the others left out, a fork only h1 attested.
      const fork = chain.fork();
      fork.commit([fork.anchor('h1', forgedDigest, T)], ['h1']);
      const h1 = chain.consortium.members.find((m) => m.id === 'h1')!;
      const oldStyle = { ...fork.resourceProof(0, 0, forgedDigest), consortium: { channel: chain.channel, quorum: 1, caCertificate: chain.consortium.ca.certPem, members: [{ id: 'h1', certificate: h1.certPem, signingKey: h1.signingPublicKeyPem }] } };
      assert.match(problemsOf(oldStyle, chain)[0].problem, /must give genesis, caCertificate and configChanges/);
      const forkProblems = problemsOf(fork.resourceProof(0, 0, forgedDigest), chain);
      assert.ok(forkProblems.some((p) => /1 valid attestations of the header hash < quorum 2/.test(p.problem)), JSON.stringify(forkProblems));
      // The same through the CLI, as the review ran it: --ca and --consortium of the real consortium.
      const ca = file('ca.crt', chain.consortium.ca.certPem);
      const pinned = file('consortium.json', chain.manifestText);
      const res = await medblockVerify(['--proof', file('forged.json', JSON.stringify(forged)), '--ca', ca, '--consortium', pinned]);
      assert.equal(res.status, 1, res.stdout);
      assert.match(res.stdout, /^FAIL \/consortium\/genesis: is not the pinned consortium.json/m);
      const genuineRes = await medblockVerify(['--proof', file('genuine.json', JSON.stringify(genuine)), '--ca', ca, '--consortium', pinned]);
      assert.equal(genuineRes.status, 0, genuineRes.stdout);
    });

    it('with the real consortium.json: a checkpoint only h1 signed fails the quorum', () => {
      const forged = structuredClone(genuine);
      const header = { ...forged.header, dataHash: 'f'.repeat(64) };
      forged.header = header;
      forged.checkpoint = { header, attestations: [createAttestation(chain.signer('h1'), header)] };
      const problems = problemsOf(forged, chain);
      assert.ok(problems.some((p) => p.path === '/checkpoint/attestations' && /1 valid attestations of the header hash < quorum 2/.test(p.problem)), JSON.stringify(problems));
    });

    it('with the real consortium.json: revocations of the others, approved and attested by h1 alone, fail', () => {
      // h1 builds a chain of its own in which it revoked h2 and h3, so that it alone would be the quorum.
      const fresh = chain.fork();
      fresh.commit([fresh.config({ action: 'revokeMember', member: 'h2' }, ['h1'], T)], ['h1']);
      fresh.commit([fresh.config({ action: 'revokeMember', member: 'h3' }, ['h1'], T)], ['h1']);
      // Every member marks such changes no-quorum; h1 claims they were valid, so it has to forge the verdicts too.
      assert.deepEqual(fresh.blocks.map((b) => b.validity[0].valid), [false, false]);
      const forgedConfigs = fresh.blocks.map((block) => {
        const inclusion = { channel: chain.channel, blockNumber: block.header.number, index: 0, auditPath: [], validity: ['valid' as const] };
        return { envelope: Buffer.from(block.envelopes[0]).toString('base64url'), inclusion, checkpoint: { header: block.header, attestations: [createAttestation(chain.signer('h1'), block.header)] } };
      });
      const forged = structuredClone(genuine);
      forged.consortium.configChanges = forgedConfigs;
      const problems = problemsOf(forged, chain);
      assert.ok(problems.some((p) => p.path === '/consortium/configChanges/0/checkpoint/attestations' && /< quorum 2/.test(p.problem)), JSON.stringify(problems));
      assert.ok(problems.some((p) => p.path === '/consortium/configChanges/0/envelope' && /^no-quorum/.test(p.problem)), JSON.stringify(problems));
    });

    it('certificates that are not from the pinned CA fail, whatever the proof says its CA is', () => {
      const forged = structuredClone(genuine);
      forged.consortium.caCertificate = forgery.consortium.ca.certPem;
      const report = verifyResourceProof(forged, { consortium: chain.manifestText });
      assert.deepEqual(report.problems.map((p) => p.path), ['/consortium/caCertificate']);
    });
  });
});

describe('an old proof after every certificate expired', () => {
  it('verifies: certificates are judged at the checkpoint time a quorum attested, not the verifier\'s clock', async () => {
    // Issued 2014-01-01: members valid until 2017, the CA until 2024. The chain ran in 2015.
    const chain = await ProofChain.create(['h1', 'h2', 'h3'], new Date('2014-01-01T00:00:00.000Z'));
    const when = '2015-06-01T12:00:00.000Z';
    const digest = digestOf('2015');
    chain.commit([chain.anchor('h2', digest, when)], ['h1', 'h2']);
    const proof = chain.resourceProof(0, 0, digest);
    assert.deepEqual(problemsOf(proof, chain), []);
    const consistency = { format: CONSISTENCY_PROOF_FORMAT, from: proof.header, headers: [], checkpoint: proof.checkpoint, consortium: proof.consortium };
    assert.deepEqual(verifyConsistencyProof(consistency, { consortium: chain.manifestText }).problems, []);

    // A prover cannot move that time on its own: a checkpoint at a time the certificates were valid needs a quorum.
    chain.commit([chain.anchor('h1', digestOf('late'), '2030-01-01T00:00:00.000Z')], ['h1', 'h2']);
    const late = chain.resourceProof(1, 0, digestOf('late'));
    assert.ok(problemsOf(late, chain).some((p) => /certificate: .*not valid at 2030-01-01/.test(p.problem)));
  });
});

describe('a proof that leaves out a config change', () => {
  // h1, h2, h3 (quorum 2); h4 joins, then h3 is revoked; h4 anchors in block 3, attested by h1, h2 and h4. The
  // attested headers commit to every config envelope, so leaving the revocation out is caught.
  let chain: ProofChain;
  let honest: ResourceProof;
  const digest = digestOf('anchored by h4 after the revocation of h3');

  before(async () => {
    chain = await ProofChain.create(['h1', 'h2', 'h3']);
    chain.commit([chain.anchor('h1', digestOf('first'), T)], ['h1', 'h2', 'h3']);
    chain.commit([chain.config(await chain.newMember('h4'), ['h1', 'h2'], T)], ['h1', 'h2', 'h3']);
    chain.commit([chain.config({ action: 'revokeMember', member: 'h3' }, ['h1', 'h2', 'h4'], T)], ['h1', 'h2', 'h3', 'h4']);
    chain.commit([chain.anchor('h4', digest, T)], ['h1', 'h2', 'h4']);
    honest = chain.resourceProof(3, 0, digest);
  });

  it('the honest proof verifies', () => {
    assert.equal(honest.consortium.configChanges.length, 2);
    assert.deepEqual(verifyResourceProof(honest, { consortium: chain.manifestText }), { problems: [], warnings: [] });
  });

  it('without the revocation (so h3 still counts and the quorum is 3 of 4) it fails', () => {
    const withoutRevocation = structuredClone(honest);
    withoutRevocation.consortium.configChanges = honest.consortium.configChanges.slice(0, 1);
    const problems = problemsOf(withoutRevocation, chain);
    assert.ok(problems.some((p) => p.path === '/checkpoint/header/configHash' && /not the hash chain of the config changes the proof carries/.test(p.problem)), JSON.stringify(problems));
    const consistency = { format: CONSISTENCY_PROOF_FORMAT, from: honest.header, headers: [], checkpoint: honest.checkpoint, consortium: withoutRevocation.consortium };
    assert.ok(verifyConsistencyProof(consistency, { consortium: chain.manifestText }).problems.some((p) => p.path === '/checkpoint/header/configHash'));
  });

  it('a revocation left out of a block that also adds a member fails too', async () => {
    const both = await ProofChain.create(['h1', 'h2', 'h3']);
    const addH4 = both.config(await both.newMember('h4'), ['h1', 'h2'], T);
    both.commit([addH4, both.config({ action: 'revokeMember', member: 'h3' }, ['h1', 'h2'], T)], ['h1', 'h2', 'h3']);
    both.commit([both.anchor('h4', digest, T)], ['h1', 'h2', 'h4']);
    const proof = both.resourceProof(1, 0, digest);
    assert.deepEqual(verifyResourceProof(proof, { consortium: both.manifestText }).problems, []);
    proof.consortium.configChanges = proof.consortium.configChanges.slice(0, 1);
    assert.deepEqual(verifyResourceProof(proof, { consortium: both.manifestText }).problems.map((p) => p.path), [
      '/consortium/configChanges/0/checkpoint/header/configHash',
      '/checkpoint/header/configHash',
    ]);
  });

  it('a chain committed before headers had configHash still replays and its proofs verify, with a warning', async () => {
    const old = await ProofChain.create(['h1', 'h2', 'h3']);
    old.writeConfigHash = false;
    old.commit([old.config(await old.newMember('h4'), ['h1', 'h2'], T)], ['h1', 'h2', 'h3']);
    old.commit([old.config({ action: 'revokeMember', member: 'h3' }, ['h1', 'h2', 'h4'], T)], ['h1', 'h2', 'h3', 'h4']);
    old.commit([old.anchor('h4', digest, T)], ['h1', 'h2', 'h4']);
    assert.ok(old.blocks.every((block) => !('configHash' in block.header)));
    old.blocks.forEach((block, n) => assert.deepEqual(verifyBlock(block, old.blocks[n - 1]?.header), []));
    const report = verifyResourceProof(old.resourceProof(2, 0, digest), { consortium: old.manifestText });
    assert.deepEqual(report.problems, []);
    assert.match(report.warnings.join('\n'), /block\(s\) 0, 1 predate the headers' configHash/);
    // Once members run this version, the next config block starts the hash chain, and what follows is committed.
    old.writeConfigHash = true;
    old.commit([old.config(await old.newMember('h5'), ['h1', 'h2'], T)], ['h1', 'h2', 'h4']);
    old.commit([old.anchor('h5', digestOf('h5'), T)], ['h1', 'h2', 'h4']);
    old.blocks.forEach((block, n) => assert.deepEqual(verifyBlock(block, old.blocks[n - 1]?.header), []));
    const later = old.resourceProof(4, 0, digestOf('h5'));
    assert.deepEqual(verifyResourceProof(later, { consortium: old.manifestText }).problems, []);
    later.consortium.configChanges.pop();
    assert.ok(verifyResourceProof(later, { consortium: old.manifestText }).problems.some((p) => p.path === '/checkpoint/header/configHash'));
  });
});

describe('a federation address change on the chain (#12)', () => {
  it('is proven like any config change: the proof across it verifies, and one that leaves it out fails', async () => {
    const chain = await ProofChain.create(['h1', 'h2', 'h3']);
    const digest = digestOf('anchored after h2 moved its federation listener');
    const addH4 = { ...(await chain.newMember('h4')), federationAddress: 'https://h4.example.org' };
    chain.commit([chain.config({ action: 'setFederationAddress', member: 'h2', address: 'https://h2.example.org:9443' }, ['h1', 'h2'], T)], ['h1', 'h2', 'h3']);
    chain.commit([chain.config(addH4, ['h1', 'h3'], T)], ['h1', 'h2', 'h3']);
    chain.commit([chain.anchor('h4', digest, T)], ['h1', 'h2', 'h4']);
    assert.deepEqual(chain.blocks.map((b) => b.validity.map((v) => v.valid)), [[true], [true], [true]]);
    const proof = chain.resourceProof(2, 0, digest);
    assert.equal(proof.consortium.configChanges.length, 2);
    assert.deepEqual(problemsOf(proof, chain), []);
    const withoutMove = structuredClone(proof);
    withoutMove.consortium.configChanges = withoutMove.consortium.configChanges.slice(1);
    assert.ok(problemsOf(withoutMove, chain).some((p) => p.path === '/checkpoint/header/configHash'), JSON.stringify(problemsOf(withoutMove, chain)));
  });
});
