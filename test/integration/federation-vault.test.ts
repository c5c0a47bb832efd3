/**
 * Issue #12, the vault's side of the ledger (docs/federation.md, "Resource locator tokens"), on every adapter:
 *
 * - the anchor entries the publisher commits carry the resource locator token of every patient version
 *   (tombstones too) and the link tokens of every Patient version (a new set when an identifier changes, []
 *   when the Patient is deleted); an erasure record's audit entry names the erased patient's locator token;
 * - the holder's local lookup "which of my patients carries link token T" is a blind-index search on the
 *   reserved `_link` term, follows identifier changes, deletion and erasure, finds no one through a forged
 *   index row, and is not a search parameter of the REST API.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { MongoClient } from 'mongodb';
import { linkToken, US_SSN_SYSTEM } from '../../src/federation/link-token.ts';
import { ERASURE_SYSTEM } from '../../src/audit/erasure.ts';
import { parseEnvelope, type AnchorEntry, type AuditEntry } from '../../src/ledger/envelope.ts';
import { resourceLocatorToken } from '../../src/ledger/patient-token.ts';
import { tombstoneDigest } from '../../src/ledger/tombstone.ts';
import { LINK_PARAM, type EncryptedStore } from '../../src/vault/encrypted-store.ts';
import { mintToken } from '../../src/access/tokens.ts';
import { body, FHIR_JSON, forEachStore, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { untilWithin } from '../support/until.ts';

const until = untilWithin(30_000, 50);
const SSN = ['999-11-2222', '999-33-4444', '999-55-6666', '999-77-8888'];

forEachStore((start, kind) => {
  describe(`federation tokens from the vault (${kind})`, () => {
    let t: TestGateway;
    let vault: EncryptedStore;
    let link: (ssn: string) => string;

    before(async () => {
      t = await start();
      vault = t.gateway.store as EncryptedStore;
      const { patientTokenKey, federation } = t.gateway.ledger!.consortium;
      assert.deepEqual(federation.linkIdentifierSystems, [US_SSN_SYSTEM]);
      link = (ssn) => linkToken(patientTokenKey, US_SSN_SYSTEM, ssn);
    });
    after(() => t?.close());

    const send = async (method: 'post' | 'put' | 'delete', path: string, resource?: object) => {
      const req = t.http[method](`/fhir/${path}`).set('Authorization', `Bearer ${t.admin}`);
      const res = resource ? await req.set('Content-Type', FHIR_JSON).send(JSON.stringify(resource)) : await req;
      assert.ok(res.status < 300, `${method} ${path}: ${res.status} ${res.text}`);
      return res.text ? body(res) : undefined;
    };
    const patient = (ssn?: string, id?: string) => ({
      resourceType: 'Patient', ...(id && { id }), name: [{ family: 'Linked' }],
      identifier: [{ system: 'http://example.org/mrn', value: `mrn-${ssn ?? 'none'}` }, ...(ssn ? [{ system: US_SSN_SYSTEM, value: ssn }] : [])],
    });
    const observation = (patientId: string) => ({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${patientId}` } });

    /** The committed ledger entry that anchors a version (found through the anchor location the vault records). */
    async function entryOf(type: string, id: string, versionId: number): Promise<{ type: string; entry: AnchorEntry & AuditEntry; digest: string }> {
      let location: { blockNumber: number; envelopeIndex: number; entryIndex: number } | undefined;
      await until(`${type}/${id}/${versionId} anchored`, async () => (location = (await vault.inner.version(type, id, versionId))?.anchor) !== undefined);
      const raw = (await vault.inner.version(type, id, versionId))!;
      const ledger = t.gateway.ledger!;
      const block = (await ledger.store.block(ledger.member.channel, location!.blockNumber))!;
      const verdict = parseEnvelope(block.envelopes[location!.envelopeIndex], Infinity);
      assert.ok(verdict.valid);
      const { type: envelopeType, payload } = verdict.envelope as { type: string; payload: { entries: Array<AnchorEntry & AuditEntry> } };
      const digest = raw.digest ?? tombstoneDigest(type, id, versionId, raw.lastUpdated);
      const entry = payload.entries[location!.entryIndex];
      assert.equal(entry.digest, digest, 'the anchor location names this version');
      return { type: envelopeType, entry, digest };
    }

    /** The tokens only the vault can compute: from the patient's live data key. */
    async function tokensOf(patientId: string) {
      const owner = `Patient/${patientId}`;
      const key = (await vault.keys.forRead(vault.keyIdFor(owner)))!;
      return { locator: (await vault.locatorTokenFor(owner))!, resource: (reference: string) => resourceLocatorToken(key, vault.hospitalId, reference) };
    }

    let a: string;
    let obs: string;

    it('a create: the Patient entry carries its locator, resource and link tokens; its Observation the locator and resource tokens', async () => {
      a = (await send('post', 'Patient', patient(SSN[0]))).id;
      obs = (await send('post', 'Observation', observation(a))).id;
      const { locator, resource } = await tokensOf(a);
      const p = await entryOf('Patient', a, 1);
      assert.equal(p.type, 'anchor');
      assert.deepEqual(p.entry, { digest: p.digest, patient: locator, resource: resource(`Patient/${a}`), links: [link(SSN[0])] });
      const o = await entryOf('Observation', obs, 1);
      assert.deepEqual(o.entry, { digest: o.digest, patient: locator, resource: resource(`Observation/${obs}`) });
      assert.notEqual(resource(`Patient/${a}`), locator);
      assert.deepEqual(await t.gateway.repo.patientsWithLinkToken(link(SSN[0])), [a]);
    });

    it('an identifier change: the new version carries the new link set, and the lookup follows it', async () => {
      await send('put', `Patient/${a}`, patient(SSN[1], a));
      const { locator, resource } = await tokensOf(a);
      const p = await entryOf('Patient', a, 2);
      assert.deepEqual(p.entry, { digest: p.digest, patient: locator, resource: resource(`Patient/${a}`), links: [link(SSN[1])] });
      assert.deepEqual(await t.gateway.repo.patientsWithLinkToken(link(SSN[0])), []);
      assert.deepEqual(await t.gateway.repo.patientsWithLinkToken(link(SSN[1])), [a]);
    });

    it('is no search parameter of the REST API: Patient?_link= is refused as unknown, or ignored when lenient', async () => {
      const search = (query: string, lenient = false) => {
        const req = t.http.get(`/fhir/Patient?${query}`).set('Authorization', `Bearer ${t.admin}`);
        return lenient ? req.set('Prefer', 'handling=lenient') : req;
      };
      const refused = await search(`${LINK_PARAM}=${link(SSN[1])}`);
      assert.equal(refused.status, 400);
      assert.equal(body(refused).resourceType, 'OperationOutcome');
      assert.ok(!refused.text.includes(link(SSN[1])), 'the error does not echo the token');
      const other = (await send('post', 'Patient', patient())).id;
      const ids = async (res: { text: string }) => (body(res).entry ?? []).map((e: { resource: { id: string } }) => e.resource.id).sort();
      const lenient = await search(`${LINK_PARAM}=${link(SSN[1])}&_count=1000`, true);
      assert.equal(lenient.status, 200);
      assert.ok((await ids(lenient)).includes(other), 'ignored, not applied: a patient without the token is still found');
      assert.deepEqual(await ids(lenient), await ids(await search('_count=1000')));
    });

    it('a forged _link index row (database write access, no key) finds no one: matches are re-checked against the content', async () => {
      const victim = (await send('post', 'Patient', patient())).id;
      const forged = vault.indexKeys.writer.index.token('Patient', LINK_PARAM, link(SSN[1]));
      if (kind === 'sqlite') {
        const db = new Database(`${t.dataDir}/vault.sqlite`);
        try {
          db.prepare('INSERT INTO terms (type, param, value, id) VALUES (?, ?, ?, ?)').run('Patient', LINK_PARAM, forged, victim);
        } finally {
          db.close();
        }
      } else {
        const { uri, database } = t.gateway.config.mongodb!;
        const client = await MongoClient.connect(uri);
        try {
          await client.db(database).collection<{ _id: string }>('current').updateOne({ _id: `Patient/${victim}` }, { $push: { terms: `${LINK_PARAM}=${forged}` } as never });
        } finally {
          await client.close();
        }
      }
      // The forged row is there (the blind index finds it) …
      const rows = await vault.inner.search({ type: 'Patient', clauses: [{ param: LINK_PARAM, anyOf: [forged] }], lastUpdated: [], limit: 10 });
      assert.deepEqual(rows.map((r) => r.id).sort(), [a, victim].sort());
      // … and the lookup does not serve it.
      assert.deepEqual(await t.gateway.repo.patientsWithLinkToken(link(SSN[1])), [a]);
      assert.deepEqual(await t.gateway.repo.patientsWithLinkToken('not a token'), []);
    });

    it('a deletion: tombstones carry the locator and resource tokens, the Patient\'s an empty link set; the lookup drops it', async () => {
      const { locator, resource } = await tokensOf(a);
      await send('delete', `Observation/${obs}`);
      await send('delete', `Patient/${a}`);
      const o = await entryOf('Observation', obs, 2);
      assert.deepEqual(o.entry, { digest: o.digest, patient: locator, resource: resource(`Observation/${obs}`) });
      const p = await entryOf('Patient', a, 3);
      assert.deepEqual(p.entry, { digest: p.digest, patient: locator, resource: resource(`Patient/${a}`), links: [] });
      assert.deepEqual(await t.gateway.repo.patientsWithLinkToken(link(SSN[1])), []);
    });

    it('an erasure: its record\'s audit entry names the erased locator token; the link term is gone with the key', async () => {
      const b = (await send('post', 'Patient', patient(SSN[2]))).id;
      await send('post', 'Observation', observation(b));
      const { locator } = await tokensOf(b);
      assert.deepEqual(await t.gateway.repo.patientsWithLinkToken(link(SSN[2])), [b]);
      assert.ok((await vault.inner.indexTerms('Patient', b)).some((term) => term.param === LINK_PARAM));
      await send('post', `Patient/${b}/$erase`);
      assert.deepEqual(await t.gateway.repo.patientsWithLinkToken(link(SSN[2])), []);
      assert.deepEqual(await vault.inner.indexTerms('Patient', b), []);

      const records = body(await t.http.get(`/fhir/AuditEvent?entity=Patient/${b}&subtype=${encodeURIComponent(`${ERASURE_SYSTEM}|erasure`)}`).set('Authorization', `Bearer ${t.admin}`));
      assert.equal(records.entry.length, 1);
      const record = await entryOf('AuditEvent', records.entry[0].resource.id, 1);
      assert.equal(record.type, 'audit');
      assert.deepEqual(record.entry, { digest: record.digest, erased: locator });
      // Only the erasure record says so: no access record (the $erase call's own included) carries `erased`.
      const ledger = t.gateway.ledger!;
      await until('the access records anchored', async () => (await vault.unanchored({ limit: 1000 })).every((v) => v.type !== 'AuditEvent'));
      const head = (await ledger.store.head(ledger.member.channel))!;
      const erased: string[] = [];
      for (let n = 0; n <= head.number; n++) {
        for (const bytes of (await ledger.store.block(ledger.member.channel, n))!.envelopes) {
          const verdict = parseEnvelope(bytes, Infinity);
          if (verdict.valid && verdict.envelope.type === 'audit') erased.push(...(verdict.envelope.payload.entries as AuditEntry[]).flatMap((e) => e.erased ?? []));
        }
      }
      assert.deepEqual(erased, [locator]);
    });
  });
});

describe('federation tokens: an erasure request names no one (second approver, SQLite)', () => {
  it('only the erasure record carries the erased locator token, not the request before it', async () => {
    const t = await startTestGateway({ eraseApproval: 'second-approver' });
    try {
      const vault = t.gateway.store as EncryptedStore;
      const created = await t.http.post('/fhir/Patient').set('Authorization', `Bearer ${t.admin}`).set('Content-Type', FHIR_JSON)
        .send(JSON.stringify({ resourceType: 'Patient', identifier: [{ system: US_SSN_SYSTEM, value: SSN[3] }] }));
      const id = body(created).id as string;
      const locator = await vault.locatorTokenFor(`Patient/${id}`);
      const erase = (token: string) => t.http.post(`/fhir/Patient/${id}/$erase`).set('Authorization', `Bearer ${token}`);
      assert.equal((await erase(t.admin)).status, 202);
      const approver = await mintToken(t.gateway.issuer, { subject: 'second-approver', scope: 'user/*.cruds user/AuditEvent.rs user/Patient.$erase' });
      assert.equal((await erase(approver)).status, 200);
      const records = async (code: string) => {
        const found = body(await t.http.get(`/fhir/AuditEvent?entity=Patient/${id}&subtype=${encodeURIComponent(`${ERASURE_SYSTEM}|${code}`)}`).set('Authorization', `Bearer ${t.admin}`));
        return Promise.all(found.entry.map((e: { resource: { id: string } }) => vault.inner.version('AuditEvent', e.resource.id, 1)));
      };
      assert.deepEqual((await records('request')).map((v) => v?.erasedPatientToken), [undefined]);
      assert.deepEqual((await records('erasure')).map((v) => v?.erasedPatientToken), [locator]);
    } finally {
      await t.close();
    }
  });
});
