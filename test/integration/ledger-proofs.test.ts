/**
 * Ledger proofs end to end on the embedded default (solo orderer + SQLite ledger store), with a real
 * Synthea bundle: the X-MedBlock-Anchor header, $proof checked in-process and by `medblock verify --proof`
 * as an offline subprocess (and every tampered variant refused), $checkpoint + $consistency, the HTTP
 * errors of the proof operations, and `medblock verify` over the whole gateway after tampering with a
 * block, a vault record, an attestation and an access-log record, each in its own copy of the data dir,
 * plus the read path of a gateway restarted over a tampered vault.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import supertest from 'supertest';
import { mintToken } from '../../src/access/tokens.ts';
import { createGateway } from '../../src/gateway.ts';
import { verifyConsistencyProof, verifyResourceProof, type ConsistencyProof, type ResourceProof } from '../../src/ledger/proof.ts';
import type { Checkpoint, Attestation } from '../../src/ledger/attestation.ts';
import type { BlockHeader } from '../../src/ledger/block.ts';
import { keySource } from '../../src/vault/keyring.ts';
import { testConsortium } from '../support/consortium.ts';
import { body, FHIR_DATA, FHIR_JSON, startTestGateway, type TestGateway } from '../support/gateway.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'medblock.js');
const BUNDLE = join(FHIR_DATA, 'synthea', 'smart-2019', 'Buster_Hoeger_ad2e3fc5-2b5d-4cb9-8d03-9ea0f4ac8423.json');
const HOSPITAL = 'test-hospital';
const work = mkdtempSync(join(tmpdir(), 'medblock-proofs-'));
after(() => rmSync(work, { recursive: true, force: true }));
// The consortium startTestGateway uses (one per process): the CLI runs below need its directory and CA.
const consortiumReady = testConsortium([HOSPITAL]);

// The CLI gets nothing of the test run's engines or keys: proofs are checked with an empty data dir.
const {
  MEDBLOCK_MONGODB_URI: _m, MEDBLOCK_KAFKA_BROKERS: _k, MEDBLOCK_MASTER_KEY: _mk, MEDBLOCK_MASTER_KEY_FILE: _mf,
  MEDBLOCK_CONSORTIUM_DIR: _c, MEDBLOCK_HOSPITAL_ID: _h, MEDBLOCK_DATA_DIR: _d, ...baseEnv
} = process.env;
const offlineEnv = { ...baseEnv, MEDBLOCK_LOG: 'off', MEDBLOCK_DATA_DIR: join(work, 'offline-empty') };

interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

function medblock(args: string[], env: NodeJS.ProcessEnv = offlineEnv): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env, encoding: 'utf8', timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ status: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout, stderr });
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const clone = <T>(value: T): T => structuredClone(value);
let fileCount = 0;
function writeJson(value: unknown, name = 'file'): string {
  const file = join(work, `${name}-${fileCount++}.json`);
  writeFileSync(file, typeof value === 'string' ? value : JSON.stringify(value));
  return file;
}

/** Polls $proof: 409 with Retry-After until the version is anchored in a final block, then 200. */
async function proofOf(t: TestGateway, path: string, timeoutMs = 20_000): Promise<ResourceProof> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await t.http.get(`/fhir/${path}/$proof`).set('Authorization', `Bearer ${t.admin}`);
    if (res.status === 200) return body<ResourceProof>(res);
    assert.equal(res.status, 409, `${path}/$proof: ${res.text}`);
    assert.equal(res.headers['retry-after'], '1');
    if (Date.now() > deadline) throw new Error(`${path} was not anchored and final within ${timeoutMs} ms`);
    await sleep(50);
  }
}

async function checkpointOf(t: TestGateway): Promise<{ checkpoint: Checkpoint; consortium: ResourceProof['consortium'] }> {
  const res = await t.http.get('/fhir/$checkpoint').set('Authorization', `Bearer ${t.admin}`);
  assert.equal(res.status, 200, res.text);
  return body(res);
}

/** Flips one character of a lowercase hex string (position `at`), keeping it lowercase hex. */
function flipHex(hex: string, at = 10): string {
  return hex.slice(0, at) + (hex[at] === '0' ? '1' : '0') + hex.slice(at + 1);
}

/** Flips one base64url character in the middle of a signature (keeping 64 bytes and canonical padding bits). */
function flipBase64url(value: string, at = 20): string {
  return value.slice(0, at) + (value[at] === 'A' ? 'B' : 'A') + value.slice(at + 1);
}

function failLines(res: CliResult): string[] {
  return res.stdout.split('\n').filter((l) => l.startsWith('FAIL '));
}

function assertFails(res: CliResult, pattern: RegExp): void {
  assert.equal(res.status, 1, `expected exit 1, got ${res.status}\n${res.stdout}${res.stderr}`);
  assert.ok(failLines(res).some((l) => pattern.test(l)), `no FAIL line matches ${pattern}:\n${res.stdout}${res.stderr}`);
}

describe('ledger proofs on the embedded default (solo orderer + SQLite ledger store)', () => {
  let t: TestGateway;
  let other: TestGateway | undefined;
  let consortiumDir: string;
  let caFile: string;
  let consortiumFile: string;
  let patientId: string;
  let observationId: string;
  let patientV1: string;
  let proof: ResourceProof;
  let firstCheckpoint: { checkpoint: Checkpoint; consortium: ResourceProof['consortium'] };
  let gatewayStopped = false;

  before(async () => {
    consortiumDir = await consortiumReady;
    t = await startTestGateway();
    caFile = join(consortiumDir, 'ca', 'ca.crt');
    consortiumFile = join(consortiumDir, 'consortium.json');
    const res = await t.http.post('/fhir').set('Authorization', `Bearer ${t.admin}`).set('Content-Type', FHIR_JSON).send(readFileSync(BUNDLE, 'utf8'));
    assert.equal(res.status, 200, res.text);
    const locations: string[] = body(res).entry.map((e: any) => e.response.location);
    patientId = locations.find((l) => l.startsWith('Patient/'))!.split('/')[1];
    observationId = locations.find((l) => l.startsWith('Observation/'))!.split('/')[1];
    assert.ok(patientId && observationId);
  });

  after(async () => {
    await other?.close();
    if (!gatewayStopped) await t.gateway.close();
    rmSync(t.dataDir, { recursive: true, force: true });
  });

  it('reads carry X-MedBlock-Anchor: pending or a location before anchoring, the block location after', async () => {
    const early = await t.http.get(`/fhir/Patient/${patientId}`).set('Authorization', `Bearer ${t.admin}`);
    assert.equal(early.status, 200);
    assert.match(early.headers['x-medblock-anchor'], /^(pending|block=\d+; envelope=\d+; entry=\d+)$/);

    proof = await proofOf(t, `Patient/${patientId}/_history/1`);
    const read = await t.http.get(`/fhir/Patient/${patientId}`).set('Authorization', `Bearer ${t.admin}`);
    assert.equal(read.status, 200);
    const { blockNumber, envelopeIndex, entryIndex } = proof.anchor;
    assert.equal(read.headers['x-medblock-anchor'], `block=${blockNumber}; envelope=${envelopeIndex}; entry=${entryIndex}`);
    const vread = await t.http.get(`/fhir/Patient/${patientId}/_history/1`).set('Authorization', `Bearer ${t.admin}`);
    assert.equal(vread.headers['x-medblock-anchor'], read.headers['x-medblock-anchor']);
    assert.equal(vread.headers['x-medblock-digest'], `commitment-v1=${proof.resource.digest}`);
    patientV1 = vread.text;
  });

  it('a $proof verifies in-process against the consortium CA, and with `medblock verify --proof` offline', async () => {
    assert.equal(proof.format, 'medblock-proof/v2');
    assert.deepEqual(proof.resource, { type: 'Patient', id: patientId, versionId: 1, digest: proof.resource.digest, salt: proof.resource.salt });
    assert.match(proof.resource.salt ?? '', /^[0-9a-f]{64}$/);
    assert.ok(proof.checkpoint.header.number >= proof.anchor.blockNumber);
    assert.equal(proof.chain.length, proof.checkpoint.header.number - proof.anchor.blockNumber);
    assert.doesNotMatch(JSON.stringify(proof), /Hoeger/, 'a proof carries no PHI');
    const report = verifyResourceProof(proof, { trustedCaCertificate: readFileSync(caFile, 'utf8'), consortium: readFileSync(consortiumFile) });
    assert.deepEqual(report, { problems: [], warnings: [] });

    const proofFile = writeJson(proof, 'proof');
    const resourceFile = writeJson(patientV1, 'patient-v1');
    const res = await medblock(['verify', '--proof', proofFile, '--ca', caFile, '--consortium', consortiumFile, '--resource', resourceFile]);
    assert.equal(res.status, 0, res.stdout + res.stderr);
    assert.match(res.stdout, /^OK: resource proof verifies$/m);
    assert.deepEqual(failLines(res), []);

    // Pinned by the fingerprint alone: the proof's CA is then checked against the one consortium.json names.
    const fingerprint = createHash('sha256').update(readFileSync(consortiumFile)).digest('hex');
    const pinnedByFingerprint = await medblock(['verify', '--proof', proofFile, '--consortium-fingerprint', fingerprint]);
    assert.equal(pinnedByFingerprint.status, 0, pinnedByFingerprint.stdout + pinnedByFingerprint.stderr);
    assert.match(pinnedByFingerprint.stdout, /^warning: no --resource given/m);
    // Fail-closed: nothing pinned, nothing proven (the CA alone does not say which members or quorum).
    const unpinned = await medblock(['verify', '--proof', proofFile, '--ca', caFile]);
    assertFails(unpinned, /^FAIL \/consortium: no pinned consortium/);
    const otherConsortium = await medblock(['verify', '--proof', proofFile, '--consortium-fingerprint', flipHex(fingerprint)]);
    assertFails(otherConsortium, /^FAIL \/consortium\/genesis: is not the pinned consortium.json/);
    assert.doesNotMatch(res.stdout, /^warning: /m);
  });

  it('`medblock verify --proof` refuses a tampered proof, naming the problem', async () => {
    // The other gateway is another chain of the same channel and consortium (its own solo orderer).
    other = await startTestGateway();
    const created = await other.http.post('/fhir/Patient').set('Authorization', `Bearer ${other.admin}`).set('Content-Type', FHIR_JSON).send(JSON.stringify({ resourceType: 'Patient', active: true }));
    assert.equal(created.status, 201, created.text);
    const foreign = await proofOf(other, `Patient/${body(created).id}/_history/1`);
    assert.equal(foreign.header.channel, proof.header.channel);

    const flipped = clone(proof);
    const bytes = Buffer.from(flipped.envelope, 'base64url');
    bytes[Math.floor(bytes.length / 2)] ^= 0x01;
    flipped.envelope = bytes.toString('base64url');

    const changedDigest = clone(proof);
    changedDigest.resource.digest = flipHex(proof.resource.digest);

    const dropped = clone(proof);
    dropped.checkpoint.attestations = [];

    const otherChain = clone(proof);
    otherChain.header = foreign.header;

    // A genuine proof relabelled as the proof of another resource: the ledger holds the digest only, so this
    // is caught against the resource file (whose JSON names its type, id and version).
    const relabelled = clone(proof);
    relabelled.resource.id = body(created).id;
    relabelled.resource.versionId = 7;

    const [flippedRes, digestRes, droppedRes, otherChainRes, wrongResource, relabelledRes] = await Promise.all([
      medblock(['verify', '--proof', writeJson(flipped, 'flipped'), '--ca', caFile, '--consortium', consortiumFile]),
      medblock(['verify', '--proof', writeJson(changedDigest, 'digest'), '--ca', caFile, '--consortium', consortiumFile]),
      medblock(['verify', '--proof', writeJson(dropped, 'dropped'), '--ca', caFile, '--consortium', consortiumFile]),
      medblock(['verify', '--proof', writeJson(otherChain, 'other-chain'), '--ca', caFile, '--consortium', consortiumFile]),
      // The genuine proof, but for other content than the resource file holds.
      medblock(['verify', '--proof', writeJson(proof, 'proof'), '--ca', caFile, '--consortium', consortiumFile, '--resource', writeJson({ ...JSON.parse(patientV1), active: false }, 'altered')]),
      medblock(['verify', '--proof', writeJson(relabelled, 'relabelled'), '--ca', caFile, '--consortium', consortiumFile, '--resource', writeJson(patientV1, 'patient-v1')]),
    ]);
    assertFails(flippedRes, /^FAIL \/inclusion: the audit path does not lead to the header dataHash$/);
    assertFails(digestRes, /^FAIL \/resource\/digest: is not the commitment anchored at that entry$/);
    assertFails(droppedRes, /^FAIL \/checkpoint\/attestations: 0 valid attestations of the header hash < quorum 1$/);
    assertFails(otherChainRes, /^FAIL \/chain/);
    assertFails(otherChainRes, /^FAIL \/inclusion: /);
    assertFails(wrongResource, /^FAIL \/resource\/digest: the resource and salt give the commitment [0-9a-f]{64}, not the proven one$/);
    assertFails(relabelledRes, new RegExp(`^FAIL /resource/id: the resource has id "${patientId}", not "${relabelled.resource.id}"$`));
    assertFails(relabelledRes, /^FAIL \/resource\/versionId: the resource is version "1", not "7"$/);
    assert.equal(failLines(relabelledRes).length, 2, relabelledRes.stdout);
    for (const res of [flippedRes, digestRes, droppedRes, otherChainRes]) assert.match(res.stdout, /^resource proof: \d+ problem\(s\)$/m);

    // The same verdicts in-process.
    const ca = readFileSync(caFile, 'utf8');
    for (const bad of [flipped, changedDigest, dropped, otherChain]) assert.notDeepEqual(verifyResourceProof(bad, { trustedCaCertificate: ca, consortium: readFileSync(consortiumFile) }).problems, []);
  });

  it('a proof checked against another consortium (its consortium.json or its CA) fails', async () => {
    const elsewhere = await testConsortium(['elsewhere']);
    const otherCaFile = join(elsewhere, 'ca', 'ca.crt');
    const report = verifyResourceProof(proof, { trustedCaCertificate: readFileSync(otherCaFile, 'utf8'), consortium: readFileSync(consortiumFile) });
    assert.ok(report.problems.some((p) => p.path === '/consortium' && /the trusted CA certificate is not the CA consortium.json names/.test(p.problem)), JSON.stringify(report));
    const [otherCa, otherJson] = await Promise.all([
      medblock(['verify', '--proof', writeJson(proof, 'proof'), '--ca', otherCaFile, '--consortium', consortiumFile]),
      medblock(['verify', '--proof', writeJson(proof, 'proof'), '--ca', otherCaFile, '--consortium', join(elsewhere, 'consortium.json')]),
    ]);
    assertFails(otherCa, /^FAIL \/consortium: the trusted CA certificate is not the CA consortium.json names$/);
    assertFails(otherJson, /^FAIL \/consortium\/genesis: is not the pinned consortium.json/);
  });

  it('$checkpoint at two times and $consistency from the older one verify; a tampered consistency proof fails', async () => {
    firstCheckpoint = await checkpointOf(t);
    const oldBlock = firstCheckpoint.checkpoint.header.number;
    // Write more: a second version of the Patient, anchored after the first checkpoint.
    const updated = { ...JSON.parse(patientV1), active: true };
    const put = await t.http.put(`/fhir/Patient/${patientId}`).set('Authorization', `Bearer ${t.admin}`).set('Content-Type', FHIR_JSON).send(JSON.stringify(updated));
    assert.equal(put.status, 200, put.text);
    const v2 = await proofOf(t, `Patient/${patientId}/_history/2`);
    assert.ok(v2.anchor.blockNumber > oldBlock);
    const second = await checkpointOf(t);
    assert.ok(second.checkpoint.header.number > oldBlock);

    const res = await t.http.get(`/fhir/$consistency?from=${oldBlock}`).set('Authorization', `Bearer ${t.admin}`);
    assert.equal(res.status, 200, res.text);
    const consistency = body<ConsistencyProof>(res);
    assert.equal(consistency.format, 'medblock-consistency/v2');
    assert.deepEqual(consistency.from, firstCheckpoint.checkpoint.header);
    assert.equal(consistency.headers.length, consistency.checkpoint.header.number - oldBlock);
    const ca = readFileSync(caFile, 'utf8');
    assert.deepEqual(verifyConsistencyProof(consistency, { trustedCaCertificate: ca, consortium: readFileSync(consortiumFile), oldHeader: firstCheckpoint.checkpoint.header }), { problems: [], warnings: [] });

    const consistencyFile = writeJson(consistency, 'consistency');
    const oldCheckpointFile = writeJson(firstCheckpoint, 'checkpoint');
    const tamperedHeader = clone(consistency);
    tamperedHeader.headers[0].dataHash = flipHex(tamperedHeader.headers[0].dataHash);
    // A rewritten history: the proof starts from another header than the one the verifier kept.
    const rewritten = clone(consistency);
    rewritten.from = { ...rewritten.from, dataHash: flipHex(rewritten.from.dataHash) } as BlockHeader;
    const [ok, badHeader, badFrom, bareHeaderOk, otherBlock, noHeader] = await Promise.all([
      medblock(['verify', '--consistency', consistencyFile, '--old-checkpoint', oldCheckpointFile, '--ca', caFile, '--consortium', consortiumFile]),
      medblock(['verify', '--consistency', writeJson(tamperedHeader, 'consistency'), '--old-checkpoint', oldCheckpointFile, '--ca', caFile, '--consortium', consortiumFile]),
      medblock(['verify', '--consistency', writeJson(rewritten, 'consistency'), '--old-checkpoint', oldCheckpointFile, '--ca', caFile, '--consortium', consortiumFile]),
      // --old-checkpoint may be a bare header; one of another block, or a file with no header, must fail (never skip the check).
      medblock(['verify', '--consistency', consistencyFile, '--old-checkpoint', writeJson(firstCheckpoint.checkpoint.header, 'header'), '--ca', caFile, '--consortium', consortiumFile]),
      medblock(['verify', '--consistency', consistencyFile, '--old-checkpoint', writeJson(second.checkpoint.header, 'header'), '--ca', caFile, '--consortium', consortiumFile]),
      medblock(['verify', '--consistency', consistencyFile, '--old-checkpoint', writeJson({ checkpoint: {} }, 'empty'), '--ca', caFile, '--consortium', consortiumFile]),
    ]);
    assert.equal(ok.status, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /^OK: consistency proof verifies$/m);
    // The tampered header no longer links to the next one (or, alone, no longer is the checkpoint header).
    assertFails(badHeader, tamperedHeader.headers.length > 1 ? /^FAIL \/headers\/1\/previousHash: does not match the hash of the previous header/ : /^FAIL \/headers: does not end at the checkpoint header$/);
    assertFails(badFrom, /^FAIL \/from: is not the header of the old checkpoint/);
    assertFails(badFrom, /^FAIL \/headers\/0\/previousHash: /);
    assert.equal(bareHeaderOk.status, 0, bareHeaderOk.stdout + bareHeaderOk.stderr);
    assertFails(otherBlock, /^FAIL \/from: is not the header of the old checkpoint/);
    assertFails(noHeader, /^FAIL \/from: .* holds no block header/);
  });

  it('proof operations: 403 without read scope on the type, 404 for an unknown version, 400 for a bad from, 409 beyond the checkpoint', async () => {
    const observationOnly = await t.token('user/Observation.read');
    const forbidden = await t.http.get(`/fhir/Patient/${patientId}/_history/1/$proof`).set('Authorization', `Bearer ${observationOnly}`);
    assert.equal(forbidden.status, 403, forbidden.text);
    assert.doesNotMatch(forbidden.text, /medblock-proof/);
    const allowed = await t.http.get(`/fhir/Observation/${observationId}/_history/1/$proof`).set('Authorization', `Bearer ${observationOnly}`);
    assert.equal(allowed.status, 200, allowed.text);

    const unknownVersion = await t.http.get(`/fhir/Patient/${patientId}/_history/99/$proof`).set('Authorization', `Bearer ${t.admin}`);
    assert.equal(unknownVersion.status, 404, unknownVersion.text);
    const unknownResource = await t.http.get('/fhir/Patient/no-such-patient/_history/1/$proof').set('Authorization', `Bearer ${t.admin}`);
    assert.equal(unknownResource.status, 404, unknownResource.text);
    assert.equal((await t.http.get(`/fhir/Patient/${patientId}/_history/1/$proof`)).status, 401);

    for (const from of ['abc', '-1', '1.5', '', '01']) {
      const res = await t.http.get(`/fhir/$consistency?from=${from}`).set('Authorization', `Bearer ${t.admin}`);
      assert.equal(res.status, 400, `from=${from}: ${res.status} ${res.text}`);
    }
    assert.equal((await t.http.get('/fhir/$consistency').set('Authorization', `Bearer ${t.admin}`)).status, 400);
    const beyond = await t.http.get('/fhir/$consistency?from=999999').set('Authorization', `Bearer ${t.admin}`);
    assert.equal(beyond.status, 409, beyond.text);
    assert.equal(beyond.headers['retry-after'], '1');
  });

  describe('`medblock verify` over the whole gateway, with each kind of tampering in its own copy of the data dir', () => {
    let gatewayEnv: (dataDir: string) => NodeJS.ProcessEnv;
    let audit: { id: string; version: number };
    let patientBlock: number;
    let patientEnvelope: number;
    let checkpointBlock: number;

    /** A fresh copy of the stopped gateway's data dir, tampered with by `tamper` (given the two SQLite files). */
    function tamperedCopy(name: string, tamper: (db: { vault: Database.Database; ledger: Database.Database }) => void): string {
      const dir = join(work, name);
      cpSync(t.dataDir, dir, { recursive: true });
      const vault = new Database(join(dir, 'vault.sqlite'));
      const ledger = new Database(join(dir, 'ledger.sqlite'));
      try {
        tamper({ vault, ledger });
      } finally {
        vault.close();
        ledger.close();
      }
      return dir;
    }

    const verifyDir = (dir: string) => medblock(['verify'], gatewayEnv(dir));

    /** GET `path` from a gateway started over `dir` (the tampered copy), then stopped. */
    async function readOnRestartedGateway(dir: string, path: string) {
      const gateway = await createGateway({
        host: '127.0.0.1', port: 0, dataDir: dir, maxBodyBytes: 8 * 1024 * 1024, baseUrl: 'http://gateway.test/fhir',
        hospitalId: HOSPITAL, masterKey: keySource(dir, {}), consortiumDir,
      });
      try {
        const token = await mintToken(gateway.issuer, { subject: 'tester', scope: 'user/*.cruds' });
        return await supertest(gateway.app).get(`/fhir/${path}`).set('Authorization', `Bearer ${token}`);
      } finally {
        await gateway.close();
      }
    }

    before(async () => {
      // An access-log record anchored (in an audit envelope) and final before the gateway stops.
      await t.gateway.accessLog!.drain();
      const search = await t.http.get('/fhir/AuditEvent?_count=1').set('Authorization', `Bearer ${t.admin}`);
      assert.equal(search.status, 200, search.text);
      const event = body(search).entry[0].resource;
      const auditProof = await proofOf(t, `AuditEvent/${event.id}/_history/1`);
      audit = { id: event.id, version: 1 };
      assert.equal(auditProof.resource.type, 'AuditEvent');
      const observationProof = await proofOf(t, `Observation/${observationId}/_history/1`);
      assert.ok(observationProof.anchor.blockNumber >= 0);
      patientBlock = proof.anchor.blockNumber;
      patientEnvelope = proof.anchor.envelopeIndex;
      await t.gateway.close();
      gatewayStopped = true;
      gatewayEnv = (dataDir) => ({ ...offlineEnv, MEDBLOCK_DATA_DIR: dataDir, MEDBLOCK_HOSPITAL_ID: HOSPITAL, MEDBLOCK_CONSORTIUM_DIR: consortiumDir });
      const ledger = new Database(join(t.dataDir, 'ledger.sqlite'), { readonly: true });
      checkpointBlock = (ledger.prepare('SELECT block FROM checkpoints').pluck().get() as number);
      ledger.close();
      assert.ok(checkpointBlock >= patientBlock);
    });

    it('untampered: exit 0 and OK', async () => {
      const res = await verifyDir(tamperedCopy('untampered', () => {}));
      assert.equal(res.status, 0, res.stdout + res.stderr);
      assert.match(res.stdout, /^OK: \d+ blocks, \d+ envelopes, \d+ attestations, checkpoint at block \d+; \d+ vault versions \(\d+ anchored, \d+ pending, 0 erased\)$/m);
      assert.deepEqual(failLines(res), []);
    });

    it('(a) a block altered: one byte of an envelope, or the header JSON', async () => {
      const envelopeByte = tamperedCopy('a-envelope', ({ ledger }) => {
        const row = ledger.prepare('SELECT bytes FROM block_envelopes WHERE number = ? AND position = ?').pluck().get(patientBlock, patientEnvelope) as Buffer;
        // Another digest in the anchored entry: still well-formed JSON, but no longer what was signed and hashed.
        const text = row.toString('utf8').replace(proof.resource.digest, flipHex(proof.resource.digest));
        assert.notEqual(text, row.toString('utf8'));
        ledger.prepare('UPDATE block_envelopes SET bytes = ? WHERE number = ? AND position = ?').run(Buffer.from(text), patientBlock, patientEnvelope);
      });
      const headerJson = tamperedCopy('a-header', ({ ledger }) => {
        const header = JSON.parse(ledger.prepare('SELECT header FROM blocks WHERE number = ?').pluck().get(patientBlock) as string);
        header.time = new Date(Date.parse(header.time) + 1).toISOString();
        ledger.prepare('UPDATE blocks SET header = ? WHERE number = ?').run(JSON.stringify(header), patientBlock);
      });
      const [envelopeRes, headerRes] = await Promise.all([verifyDir(envelopeByte), verifyDir(headerJson)]);
      assertFails(envelopeRes, new RegExp(`^FAIL block ${patientBlock}: /header/dataHash is not the Merkle root of the envelopes$`));
      assertFails(envelopeRes, new RegExp(`^FAIL block ${patientBlock}: /validity/${patientEnvelope} is valid, but validation says bad-signature$`));
      assertFails(envelopeRes, new RegExp(`^FAIL Patient/${patientId} v1: its anchor \\(block ${patientBlock}\\) holds no digest of this member$`));
      assertFails(headerRes, new RegExp(`^FAIL block ${patientBlock}: /header/time must be `));
      assertFails(headerRes, new RegExp(`^FAIL attestation ${HOSPITAL}@${patientBlock}: attests a header hash other than the block this ledger holds`));
      if (patientBlock < checkpointBlock) assertFails(headerRes, new RegExp(`^FAIL block ${patientBlock + 1}: /header/previousHash does not match`));
      else assertFails(headerRes, /^FAIL checkpoint: its header is not the block this ledger holds$/);
    });

    it('(b) a vault record altered: its digest, two content blobs swapped, a version deleted, its content blanked; the read path refuses it', async () => {
      const digest = tamperedCopy('b-digest', ({ vault }) => {
        const changes = vault.prepare("UPDATE versions SET digest = ? WHERE type = 'Patient' AND id = ? AND version = 1").run(flipHex(proof.resource.digest), patientId).changes;
        assert.equal(changes, 1);
      });
      const swapped = tamperedCopy('b-swap', ({ vault }) => {
        const rows = vault.prepare("SELECT seq, content FROM versions WHERE type = 'Patient' AND id = ? ORDER BY version").all(patientId) as Array<{ seq: number; content: Buffer }>;
        assert.equal(rows.length, 2);
        const update = vault.prepare('UPDATE versions SET content = ? WHERE seq = ?');
        update.run(rows[1].content, rows[0].seq);
        update.run(rows[0].content, rows[1].seq);
      });
      const deleted = tamperedCopy('b-delete', ({ vault }) => {
        assert.equal(vault.prepare("DELETE FROM versions WHERE type = 'Observation' AND id = ?").run(observationId).changes, 1);
        vault.prepare("DELETE FROM current WHERE type = 'Observation' AND id = ?").run(observationId);
      });
      const blanked = tamperedCopy('b-blank', ({ vault }) => {
        assert.equal(vault.prepare("UPDATE versions SET content = NULL WHERE type = 'Observation' AND id = ?").run(observationId).changes, 1);
      });
      const [digestRes, swappedRes, deletedRes, blankedRes] = await Promise.all([verifyDir(digest), verifyDir(swapped), verifyDir(deleted), verifyDir(blanked)]);
      assertFails(digestRes, new RegExp(`^FAIL Patient/${patientId} v1: its content and salt do not give the commitment the vault records$`));
      assertFails(swappedRes, new RegExp(`^FAIL Patient/${patientId} v1: cannot be opened: `));
      assertFails(swappedRes, new RegExp(`^FAIL Patient/${patientId} v2: cannot be opened: `));
      assertFails(deletedRes, /^FAIL block \d+ envelope \d+ entry \d+: this member anchored a version the vault no longer holds$/);
      assertFails(blankedRes, new RegExp(`^FAIL Observation/${observationId} v1: has no content or salt, yet is neither deleted nor erased: the record was blanked$`));

      // The read path of a gateway restarted over a tampered copy: an integrity error, never the tampered data.
      for (const [dir, path, message] of [
        [digest, `Patient/${patientId}/_history/1`, `Patient/${patientId} version 1 does not match its ledger anchor`],
        [swapped, `Patient/${patientId}`, `Patient/${patientId} version 2 fails authentication`],
        [swapped, `Patient/${patientId}/_history/1`, `Patient/${patientId} version 1 fails authentication`],
      ] as const) {
        const res = await readOnRestartedGateway(dir, path);
        assert.equal(res.status, 500, res.text);
        const outcome = body(res);
        assert.equal(outcome.resourceType, 'OperationOutcome');
        assert.equal(outcome.issue[0].severity, 'fatal');
        assert.match(outcome.issue[0].diagnostics, /the incident is logged$/);
        assert.ok(outcome.issue[0].diagnostics.startsWith(message), outcome.issue[0].diagnostics);
        assert.doesNotMatch(res.text, /Hoeger|"birthDate"/);
      }
    });

    it('(b) the read path refuses a blanked version', async () => {
      const blanked = tamperedCopy('b-blank-read', ({ vault }) => {
        assert.equal(vault.prepare("UPDATE versions SET content = NULL WHERE type = 'Observation' AND id = ?").run(observationId).changes, 1);
      });
      const res = await readOnRestartedGateway(blanked, `Observation/${observationId}`);
      assert.equal(res.status, 500, `${res.status} ${JSON.stringify(res.headers)} ${res.text}`);
    });

    it('(c) an attestation altered: its headerHash, its signature, or the checkpoint\'s', async () => {
      const alter = (name: string, change: (a: Attestation) => void) =>
        tamperedCopy(name, ({ ledger }) => {
          const a = JSON.parse(ledger.prepare('SELECT attestation FROM attestations WHERE block = ? AND member = ?').pluck().get(patientBlock, HOSPITAL) as string) as Attestation;
          change(a);
          ledger.prepare('UPDATE attestations SET attestation = ? WHERE block = ? AND member = ?').run(JSON.stringify(a), patientBlock, HOSPITAL);
        });
      const headerHash = alter('c-hash', (a) => void (a.headerHash = flipHex(a.headerHash)));
      const signature = alter('c-signature', (a) => void (a.signature = flipBase64url(a.signature)));
      const inCheckpoint = tamperedCopy('c-checkpoint', ({ ledger }) => {
        const c = JSON.parse(ledger.prepare('SELECT checkpoint FROM checkpoints').pluck().get() as string) as Checkpoint;
        c.attestations[0].signature = flipBase64url(c.attestations[0].signature);
        ledger.prepare('UPDATE checkpoints SET checkpoint = ?').run(JSON.stringify(c));
      });
      const [hashRes, signatureRes, checkpointRes] = await Promise.all([verifyDir(headerHash), verifyDir(signature), verifyDir(inCheckpoint)]);
      const where = `^FAIL attestation ${HOSPITAL}@${patientBlock}: bad-signature: /signature does not verify with the key of ${HOSPITAL}$`;
      assertFails(hashRes, new RegExp(where));
      assertFails(signatureRes, new RegExp(where));
      assertFails(checkpointRes, /^FAIL checkpoint: \/attestations\/0 bad-signature: /);
      assertFails(checkpointRes, /^FAIL checkpoint: \/attestations 0 valid attestations of the header hash < quorum 1$/);
    });

    it('(d) an access-log record (an AuditEvent anchored in an audit envelope) altered or deleted', async () => {
      const altered = tamperedCopy('d-digest', ({ vault }) => {
        const row = vault.prepare("SELECT digest, anchor_block FROM versions WHERE type = 'AuditEvent' AND id = ? AND version = ?").get(audit.id, audit.version) as { digest: string; anchor_block: number };
        assert.notEqual(row.anchor_block, null);
        vault.prepare("UPDATE versions SET digest = ? WHERE type = 'AuditEvent' AND id = ? AND version = ?").run(flipHex(row.digest), audit.id, audit.version);
      });
      const erased = tamperedCopy('d-delete', ({ vault }) => {
        assert.equal(vault.prepare("DELETE FROM versions WHERE type = 'AuditEvent' AND id = ?").run(audit.id).changes, 1);
        vault.prepare("DELETE FROM current WHERE type = 'AuditEvent' AND id = ?").run(audit.id);
        vault.prepare("DELETE FROM terms WHERE type = 'AuditEvent' AND id = ?").run(audit.id);
      });
      const [alteredRes, erasedRes] = await Promise.all([verifyDir(altered), verifyDir(erased)]);
      assertFails(alteredRes, new RegExp(`^FAIL AuditEvent/${audit.id} v1: its content and salt do not give the commitment the vault records$`));
      assertFails(erasedRes, /^FAIL block \d+ envelope \d+ entry \d+: this member anchored an? access-log record the vault no longer holds$/);
    });
  });
});
