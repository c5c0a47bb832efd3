/**
 * Issue #11 items 2 and 8, as the review ran them against a copy of a gateway:
 *
 * - brute-forcing low-entropy content ("HIV infection, active", "72 kg") against the digests stored in
 *   the database (raw SQLite file, raw MongoDB documents) and anchored on the ledger: it used to succeed
 *   in under a millisecond, because a digest was the unsalted SHA-256 of the canonical JSON. Now every
 *   anchor is a salted commitment whose salt exists only inside the ciphertext, and after `$erase` nowhere;
 * - a member holding the consortium key testing a known patient id against the ledger's patient tokens:
 *   they were HMAC(consortium key, `Patient/<id>`) and stayed linkable after `$erase`. Now they come from
 *   the patient's data key, which erasure destroys.
 */
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import Database from 'better-sqlite3';
import { MongoClient } from 'mongodb';
import { parseFhirJson } from '../../src/fhir/json.ts';
import { canonicalDigestHex, versionCommitmentHex } from '../../src/ledger/canonical-json.ts';
import { parseEnvelope, type AnchorEntry } from '../../src/ledger/envelope.ts';
import type { ResourceProof } from '../../src/ledger/proof.ts';
import type { EncryptedStore } from '../../src/vault/encrypted-store.ts';
import { body, FHIR_JSON, forEachStore, type TestGateway } from '../support/gateway.ts';
import { untilWithin } from '../support/until.ts';

const until = untilWithin(30_000, 50);

/** What an attacker would try for the diagnosis text and the body weight. */
const DIAGNOSES = ['HIV infection, active', 'Hypertension', 'Type 2 diabetes', 'Asthma', 'Depression', 'Hepatitis C'];
const WEIGHTS_KG = Array.from({ length: 121 }, (_, i) => 30 + i);

forEachStore((start, kind) => {
  let t: TestGateway;
  let patientId: string;
  let condition: Record<string, any>;
  let weight: Record<string, any>;
  const proofs: Record<string, ResourceProof> = {};

  before(async () => {
    t = await start();
    const post = async (resource: object) => {
      const res = await t.http.post(`/fhir/${(resource as { resourceType: string }).resourceType}`).set('Authorization', `Bearer ${t.admin}`).set('Content-Type', FHIR_JSON).send(JSON.stringify(resource));
      assert.equal(res.status, 201, res.text);
      return body(res);
    };
    patientId = (await post({ resourceType: 'Patient', name: [{ family: 'Brute' }] })).id;
    const subject = { reference: `Patient/${patientId}` };
    condition = await post({ resourceType: 'Condition', subject, code: { text: 'HIV infection, active' }, clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' }] } });
    weight = await post({ resourceType: 'Observation', status: 'final', subject, code: { text: 'Body weight' }, valueQuantity: { value: 72, unit: 'kg', system: 'http://unitsofmeasure.org', code: 'kg' } });
    for (const [name, r] of [['Patient', { resourceType: 'Patient', id: patientId }], ['Condition', condition], ['Observation', weight]] as const) {
      await until(`${name} anchored and final`, async () => {
        const res = await t.http.get(`/fhir/${r.resourceType}/${r.id}/_history/1/$proof`).set('Authorization', `Bearer ${t.admin}`);
        if (res.status === 200) proofs[name] = body(res);
        return res.status === 200;
      });
    }
  });
  after(() => t?.close());

  /** Every guess, written exactly as the gateway stored the real version except for the guessed value. */
  function guesses(): Array<Record<string, unknown>> {
    return [
      ...DIAGNOSES.map((text) => ({ ...condition, code: { text } })),
      ...WEIGHTS_KG.map((value) => ({ ...weight, valueQuantity: { ...weight.valueQuantity, value } })),
    ];
  }

  /** The unsalted digests an attacker computes for every guess: the old anchoring rule. */
  function guessedDigests(): Set<string> {
    const digests = new Set(guesses().map((g) => canonicalDigestHex(parseFhirJson(JSON.stringify(g)))));
    // The true contents are among the guesses: if these do not match, no guess can.
    assert.ok(digests.has(canonicalDigestHex(parseFhirJson(JSON.stringify(condition)))));
    assert.ok(digests.has(canonicalDigestHex(parseFhirJson(JSON.stringify(weight)))));
    return digests;
  }

  /** What a copy of the database holds in the clear beside each version, and its raw bytes. */
  async function databaseCopy(): Promise<{ digests: string[]; tokens: string[]; bytes: Buffer }> {
    if (kind === 'sqlite') {
      const files = readdirSync(t.dataDir).filter((f) => f.startsWith('vault.sqlite')).map((f) => readFileSync(join(t.dataDir, f)));
      const db = new Database(join(t.dataDir, 'vault.sqlite'), { readonly: true });
      try {
        const rows = db.prepare('SELECT digest, patient_token FROM versions').all() as Array<{ digest: string | null; patient_token: string | null }>;
        return { digests: rows.flatMap((r) => r.digest ?? []), tokens: rows.flatMap((r) => r.patient_token ?? []), bytes: Buffer.concat(files) };
      } finally {
        db.close();
      }
    }
    const { uri, database } = t.gateway.config.mongodb!;
    const client = await MongoClient.connect(uri);
    try {
      const docs = await client.db(database).collection('versions').find({}).toArray();
      const bytes = Buffer.from(JSON.stringify(docs.map((d) => ({ ...d, content: d.content?.buffer && Buffer.from(d.content.buffer).toString('hex'), salt: d.salt && Buffer.from(d.salt.buffer).toString('hex') }))));
      return { digests: docs.flatMap((d) => d.digest ?? []), tokens: docs.flatMap((d) => d.patientToken ?? []), bytes };
    } finally {
      await client.close();
    }
  }

  /** Every entry this gateway's ledger copy holds (what every member replicates). */
  async function ledgerEntries(): Promise<AnchorEntry[]> {
    const ledger = t.gateway.ledger!;
    const head = (await ledger.store.head(ledger.member.channel))!;
    const entries: AnchorEntry[] = [];
    for (let n = 0; n <= head.number; n++) {
      for (const bytes of (await ledger.store.block(ledger.member.channel, n))!.envelopes) {
        const verdict = parseEnvelope(bytes, Infinity);
        if (verdict.valid && (verdict.envelope.type === 'anchor' || verdict.envelope.type === 'audit')) entries.push(...(verdict.envelope.payload.entries as AnchorEntry[]));
      }
    }
    return entries;
  }

  /** The tokens a member holding the consortium key computes for a known patient id (the old scheme and variants). */
  function memberGuessedTokens(): string[] {
    const key = t.gateway.ledger!.consortium.patientTokenKey;
    const reference = `Patient/${patientId}`;
    return [
      createHmac('sha256', key).update('medblock/patient-token/v1\n').update(reference).digest('base64url'),
      createHmac('sha256', key).update(reference).digest('base64url'),
      createHmac('sha256', key).update(patientId).digest('base64url'),
      createHash('sha256').update(reference).digest('base64url'),
    ];
  }

  it('anchors commitments that open only with the salt sealed in the vault', () => {
    for (const [name, resource] of [['Condition', condition], ['Observation', weight]] as const) {
      const { digest, salt } = proofs[name].resource;
      assert.equal(versionCommitmentHex(Buffer.from(salt!, 'hex'), parseFhirJson(JSON.stringify(resource))), digest, name);
    }
  });

  it('a database copy and the ledger give nothing to brute-force "HIV infection, active" or "72 kg" against', async () => {
    const guessed = guessedDigests();
    const copy = await databaseCopy();
    const ledger = await ledgerEntries();
    assert.ok(copy.digests.length >= 3 && ledger.length >= 3);
    assert.deepEqual(copy.digests.filter((d) => guessed.has(d)), [], 'a stored digest matched a guess');
    assert.deepEqual(ledger.filter((e) => guessed.has(e.digest)), [], 'an anchored digest matched a guess');
    // The salts are not in the database in the clear (only inside the ciphertext), so commitments cannot be
    // recomputed for guesses either.
    for (const proof of Object.values(proofs)) {
      assert.ok(!copy.bytes.includes(Buffer.from(proof.resource.salt!, 'hex')), 'a salt is readable in the database copy');
      assert.ok(!copy.bytes.includes(Buffer.from(proof.resource.salt!, 'utf8')));
    }
    // Anchor entries carry the commitment and a locator token, not what kind of record the patient has.
    assert.ok(ledger.every((e) => !('type' in e)));
  });

  it('a member holding the consortium key cannot link a patient id to the anchors, before or after $erase', async () => {
    const vault = t.gateway.store as EncryptedStore;
    const locator = await vault.locatorTokenFor(`Patient/${patientId}`);
    const anchored = (await ledgerEntries()).filter((e) => Object.values(proofs).some((p) => p.resource.digest === e.digest));
    assert.equal(anchored.length, 3);
    assert.deepEqual(anchored.map((e) => e.patient), [locator, locator, locator], 'one locator token for the patient\'s anchors');
    const tokens = new Set([...(await ledgerEntries()).flatMap((e) => e.patient ?? []), ...(await databaseCopy()).tokens]);
    for (const guess of memberGuessedTokens()) assert.ok(!tokens.has(guess), 'a token computed from the consortium key and the id is on the ledger');

    const erased = await t.http.post(`/fhir/Patient/${patientId}/$erase`).set('Authorization', `Bearer ${t.admin}`);
    assert.equal(erased.status, 200, erased.text);
    // The anchors stay, under a token nobody can derive any more: the hospital itself no longer holds the key.
    assert.equal(await vault.locatorTokenFor(`Patient/${patientId}`), undefined);
    assert.ok((await ledgerEntries()).some((e) => e.patient === locator));
    const after = new Set([...(await ledgerEntries()).flatMap((e) => e.patient ?? []), ...(await databaseCopy()).tokens]);
    for (const guess of memberGuessedTokens()) assert.ok(!after.has(guess));
  });

  it('after $erase nothing brute-forceable is left: no salt, no proof, no matching digest', async () => {
    // (Runs after the erasure above.)
    for (const [name, r] of [['Condition', condition], ['Observation', weight]] as const) {
      const res = await t.http.get(`/fhir/${r.resourceType}/${r.id}/_history/1/$proof`).set('Authorization', `Bearer ${t.admin}`);
      assert.equal(res.status, 410, `${name} $proof after erasure: ${res.text}`);
    }
    const guessed = guessedDigests();
    const copy = await databaseCopy();
    assert.deepEqual(copy.digests.filter((d) => guessed.has(d)), []);
    assert.deepEqual((await ledgerEntries()).filter((e) => guessed.has(e.digest)), []);
    for (const proof of Object.values(proofs)) assert.ok(!copy.bytes.includes(Buffer.from(proof.resource.salt!, 'hex')));
    // The key that sealed content and salts is a tombstone: nothing left to open them with.
    const vault = t.gateway.store as EncryptedStore;
    const key = await vault.inner.getKey(vault.keyIdFor(`Patient/${patientId}`));
    assert.equal(key?.wrapped, null);
    assert.ok(key?.erasedAt);
  });
});
