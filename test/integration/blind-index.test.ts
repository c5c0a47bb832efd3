/**
 * Blind-index hardening, attacked through the raw database on every adapter: keyed tokens separated per type,
 * parameter and index key; no frequency-readable tokens of gender or birth dates (and exact search on them
 * anyway); index key rotation that leaves no old token behind; erasure that removes the erased patient's
 * terms from resources sealed under other patients' keys.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { MongoClient } from 'mongodb';
import { rawVaultBytes } from '../support/raw-vault.ts';
import { body, FHIR_DATA, FHIR_JSON, forEachStore, type TestGateway } from '../support/gateway.ts';
import type { EncryptedStore } from '../../src/vault/encrypted-store.ts';
import { rotateIndexKey } from '../../src/vault/index-rotation.ts';
import { linkToken, US_SSN_SYSTEM } from '../../src/federation/link-token.ts';
import { resourceIndexTerms } from '../../src/fhir/write-session.ts';
import { termsNamingPatient } from '../../src/fhir/search/terms.ts';
import { knownResourceTypes } from '../../src/fhir/validation/index.ts';
import type { FhirResource } from '../../src/fhir/resource-version.ts';

type Json = any;
const SMART = join(FHIR_DATA, 'synthea', 'smart-2019');
const BUNDLES = ['Buster_Hoeger_ad2e3fc5-2b5d-4cb9-8d03-9ea0f4ac8423.json', 'Liz_Conn_27c911c6-f045-4ffa-af5d-6eba57ac94b2.json'];
/** Patients of chosen gender and birth date: several share a decade, some a year, two the same day. */
const PEOPLE: Array<[string, string]> = [
  ['female', '1970-01-01'], ['male', '1970-05-03'], ['female', '1974-12-31'], ['other', '1979-06-15'], ['male', '1980-01-01'],
  ['female', '1980-01-01'], ['unknown', '1985-07-04'], ['male', '1969-12-31'], ['female', '2001-02-03'], ['male', '2009-09-09'],
];

interface Row {
  type: string;
  param: string;
  value: string;
  id: string;
}

/** Every index row the adapter holds: SQLite's terms table, or the `terms` of MongoDB's pointers and versions. */
async function indexRows(t: TestGateway): Promise<Row[]> {
  const mongodb = t.gateway.config.mongodb;
  if (!mongodb) {
    const db = new Database(join(t.dataDir, 'vault.sqlite'), { readonly: true });
    try {
      return db.prepare('SELECT type, param, value, id FROM terms').all() as Row[];
    } finally {
      db.close();
    }
  }
  const client = await MongoClient.connect(mongodb.uri);
  try {
    const db = client.db(mongodb.database);
    const rows: Row[] = [];
    for (const name of ['current', 'versions']) {
      for (const doc of await db.collection(name).find({}, { projection: { type: 1, id: 1, terms: 1 } }).toArray()) {
        for (const term of doc.terms as string[]) {
          const eq = term.indexOf('=');
          rows.push({ type: doc.type, id: doc.id, param: term.slice(0, eq), value: term.slice(eq + 1) });
        }
      }
    }
    return rows;
  } finally {
    await client.close();
  }
}

forEachStore((start, store) => {
  describe(`blind-index hardening (${store})`, () => {
    let t: TestGateway;
    let vault: EncryptedStore;
    const request = (method: 'get' | 'post', path: string, payload?: unknown) => {
      const r = t.http[method](`/fhir/${path}`).set('Authorization', `Bearer ${t.admin}`);
      return payload === undefined ? r : r.set('Content-Type', FHIR_JSON).send(JSON.stringify(payload));
    };
    const ids = async (path: string): Promise<string[]> => {
      const res = await request('get', `${path}${path.includes('?') ? '&' : '?'}_count=1000`);
      assert.equal(res.status, 200, res.text);
      return (body(res).entry ?? []).filter((e: Json) => e.search.mode === 'match').map((e: Json) => e.resource.id).sort();
    };
    let patients: Json[] = [];

    before(async () => {
      t = await start();
      vault = t.gateway.store as EncryptedStore;
      for (const name of BUNDLES) {
        const res = await request('post', '', JSON.parse(readFileSync(join(SMART, name), 'utf8')));
        assert.equal(res.status, 200, res.text);
      }
      for (const [gender, birthDate] of PEOPLE) {
        assert.equal((await request('post', 'Patient', { resourceType: 'Patient', gender, birthDate, name: [{ family: 'Index' }] })).status, 201);
      }
      patients = body(await request('get', 'Patient?_count=1000')).entry.map((e: Json) => e.resource);
      assert.equal(patients.length, BUNDLES.length + PEOPLE.length);
    });
    after(async () => t?.close());

    /** Expected result sets computed from the data itself. */
    const where = (test: (p: Json) => boolean) => patients.filter(test).map((p) => p.id).sort();
    const born = (test: (date: string) => boolean) => where((p) => p.birthDate !== undefined && test(p.birthDate));
    const searches = (): Array<[string, string[]]> => [
      ['Patient?gender=female', where((p) => p.gender === 'female')],
      ['Patient?gender=male,other', where((p) => p.gender === 'male' || p.gender === 'other')],
      ['Patient?gender:not=male', where((p) => p.gender !== 'male')],
      ['Patient?birthdate=1980-01-01', born((d) => d === '1980-01-01')],
      ['Patient?birthdate=1970', born((d) => d.startsWith('1970'))],
      ['Patient?birthdate=ge1970-05-03', born((d) => d >= '1970-05-03')],
      ['Patient?birthdate=gt1970-05-03', born((d) => d > '1970-05-03')],
      ['Patient?birthdate=lt1980-01-01', born((d) => d < '1980-01-01')],
      ['Patient?birthdate=le1980-01-01', born((d) => d <= '1980-01-01')],
      ['Patient?birthdate=sa1974-12-31', born((d) => d > '1974-12-31')],
      ['Patient?birthdate=eb1970-01-01', born((d) => d < '1970-01-01')],
      ['Patient?gender=female&birthdate=ge1975-01-01&birthdate=lt2005-01-01', born((d) => d >= '1975-01-01' && d < '2005-01-01').filter((id) => where((p) => p.gender === 'female').includes(id))],
    ];

    const searchesAreExact = async () => {
      for (const [path, expected] of searches()) {
        assert.ok(expected.length > 0, path);
        assert.deepEqual(await ids(path), expected, path);
      }
    };

    it('searches by gender and birthdate (every prefix) return exactly the expected sets', searchesAreExact);

    it('gives a value unrelated tokens under another type or parameter: a reference cannot be linked across them', async () => {
      const rows = await indexRows(t);
      const patient = patients.find((p) => p.name?.[0]?.family !== 'Index')!;
      const value = `Patient/${patient.id}`;
      const index = vault.indexKeys.writer.index;
      const pairs = [['Observation', 'subject'], ['Observation', 'patient'], ['Encounter', 'subject'], ['Condition', 'subject'], ['Observation', '_compartment']];
      const tokens = pairs.map(([type, param]) => index.token(type, param, value));
      assert.equal(new Set(tokens).size, pairs.length);
      // Each token is in the rows of its own (type, param) only.
      for (const [i, [type, param]] of pairs.entries()) {
        const holders = rows.filter((r) => r.value === tokens[i]);
        assert.ok(holders.length > 0, `${type}.${param}`);
        assert.ok(holders.every((r) => r.type === type && r.param === param), `${type}.${param}`);
      }
    });

    it('holds no gender, status or boolean token, and birth dates only by decade: nothing to count', async () => {
      // (AuditEvents, the access log, keep their codes indexed for compliance queries.)
      const rows = (await indexRows(t)).filter((r) => r.type !== 'AuditEvent');
      const low = rows.filter((r) => ['gender', 'status', 'active', 'deceased', 'clinical-status', 'verification-status'].includes(r.param));
      assert.deepEqual(low, []);
      // Birth dates: patients born in the same decade hold the very same birthdate tokens, whatever their day.
      const byPatient = new Map<string, string>();
      for (const r of rows) if (r.type === 'Patient' && r.param === 'birthdate') byPatient.set(r.id, [byPatient.get(r.id) ?? '', r.value].sort().join(' '));
      const decadeOf = (p: Json) => p.birthDate.slice(0, 3);
      for (const a of patients) {
        for (const b of patients) {
          assert.equal(byPatient.get(a.id) === byPatient.get(b.id), decadeOf(a) === decadeOf(b), `${a.birthDate} vs ${b.birthDate}`);
        }
      }
      // No day, month or year node of any birth date is in the index.
      const index = vault.indexKeys.writer.index;
      const fine = patients.flatMap((p) => [`c:${p.birthDate}`, `a:${p.birthDate.slice(0, 7)}`, `a:${p.birthDate.slice(0, 4)}`]);
      const values = new Set(rows.map((r) => r.value));
      assert.deepEqual(fine.filter((v) => values.has(index.token('Patient', 'birthdate', v))), []);
    });

    it('erasing patient B leaves no index row anywhere naming B, also in resources sealed under A', async () => {
      const created = body(await request('post', '', {
        resourceType: 'Bundle', type: 'transaction',
        entry: [
          { fullUrl: 'urn:uuid:a', resource: { resourceType: 'Patient', name: [{ family: 'Alpha' }] }, request: { method: 'POST', url: 'Patient' } },
          { fullUrl: 'urn:uuid:b', resource: { resourceType: 'Patient', name: [{ family: 'Bravo' }] }, request: { method: 'POST', url: 'Patient' } },
          // In both compartments, sealed under A's key (subject comes first): it names B as performer.
          { resource: { resourceType: 'Observation', status: 'final', code: { text: 'shared' }, subject: { reference: 'urn:uuid:a' }, performer: [{ reference: 'urn:uuid:b' }] }, request: { method: 'POST', url: 'Observation' } },
          // Outside any compartment, naming B.
          { resource: { resourceType: 'Group', type: 'person', actual: true, member: [{ entity: { reference: 'urn:uuid:b' } }] }, request: { method: 'POST', url: 'Group' } },
        ],
      }));
      const [a, b, observation] = created.entry.map((e: Json) => /^[A-Za-z]+\/([^/]+)/.exec(e.response.location)![1]);
      const namingB = () => {
        const named = termsNamingPatient(b);
        return new Set(vault.indexKeys.readers.flatMap((g) => named.map((n) => g.index.token(n.type, n.param, n.value))));
      };
      const rowsNamingB = async () => {
        const tokens = namingB();
        return (await indexRows(t)).filter((r) => r.type !== 'AuditEvent' && tokens.has(r.value));
      };
      // The attack without the fix: A's Observation and the Group carry B's reference terms.
      assert.deepEqual(new Set((await rowsNamingB()).map((r) => `${r.type}.${r.param}`)), new Set([
        'Patient._compartment', 'Observation._compartment', 'Observation.performer', 'Group._compartment', 'Group.member',
      ]));
      assert.deepEqual(await ids(`Observation?performer=Patient/${b}`), [observation]);

      assert.equal((await request('post', `Patient/${b}/$erase`, {})).status, 200);
      assert.deepEqual(await rowsNamingB(), []);
      // MongoDB: in no document at all. (SQLite may keep a deleted key as a B-tree divider in an interior page
      // until the page is rebuilt: docs/security.md; its rows are checked above.)
      if (store === 'mongodb') {
        const raw = await rawVaultBytes(t);
        assert.deepEqual([...namingB()].filter((token) => raw.includes(Buffer.from(token))), []);
      }
      // A's data is untouched and found as before.
      assert.deepEqual(await ids(`Observation?subject=Patient/${a}`), [observation]);
      assert.deepEqual(await ids(`Observation?performer=Patient/${b}`), []);
      assert.equal((await request('get', `Observation/${observation}`)).status, 200);
    });

    it('rotates the index key online: correct mid-way, then no old token in the database, key ids unchanged', async () => {
      patients = body(await request('get', 'Patient?_count=1000')).entry.map((e: Json) => e.resource);
      const before = new Set((await indexRows(t)).map((r) => r.value));
      const synthea = patients.find((p) => p.identifier?.length)!;
      const keyIdBefore = vault.keyIdFor(`Patient/${synthea.id}`);
      const oldIndex = vault.indexKeys.writer.index;
      const sample = { type: 'Patient', param: 'identifier', value: `${synthea.identifier[0].system}|${synthea.identifier[0].value}` };
      // The vault's reserved link term (federation) is re-derived too.
      const ssn = synthea.identifier.find((i: Json) => i.system === US_SSN_SYSTEM).value;
      const linked = linkToken(t.gateway.ledger!.consortium.patientTokenKey, US_SSN_SYSTEM, ssn);
      assert.deepEqual(await vault.patientsWithLinkToken(linked), [synthea.id]);

      // Half-way: a new generation exists and only the Index patients are re-derived under it.
      const { target } = await vault.indexKeys.beginRotation();
      for (const p of patients.filter((p) => p.name?.[0]?.family === 'Index')) {
        const stored = (await vault.current('Patient', p.id))!;
        const terms = vault.indexKeys.blind(target, 'Patient', resourceIndexTerms('Patient', p as FhirResource));
        assert.equal(await vault.inner.replaceTerms('Patient', p.id, stored.versionId, terms), true);
      }
      await searchesAreExact();

      // Resumed and finished.
      const result = await rotateIndexKey(vault, {
        types: knownResourceTypes(), termsOf: (type, r) => resourceIndexTerms(type, r as FhirResource), batchSize: 50, maxRate: 0, settleMs: 0,
      });
      assert.equal(result.resumed, true);
      assert.equal(result.generation, target.generation);
      assert.ok(result.reindexed >= patients.length, String(result.reindexed));
      assert.deepEqual(vault.indexKeys.readers.map((g) => g.generation), [target.generation]);
      assert.ok((await vault.inner.getKey(`@index.${target.generation - 1}`))?.erasedAt);

      const afterRows = await indexRows(t);
      assert.deepEqual(afterRows.filter((r) => before.has(r.value)), []);
      if (store === 'mongodb') {
        const raw = await rawVaultBytes(t);
        assert.deepEqual([...before].filter((token) => raw.includes(Buffer.from(token))).slice(0, 5), []);
      }
      // The same value gets an unrelated token under the new key.
      assert.notEqual(vault.indexKeys.writer.index.token(sample.type, sample.param, sample.value), oldIndex.token(sample.type, sample.param, sample.value));
      assert.equal(vault.keyIdFor(`Patient/${synthea.id}`), keyIdBefore);
      await searchesAreExact();
      assert.deepEqual(await ids(`Patient?identifier=${encodeURIComponent(sample.value)}`), [synthea.id]);
      assert.deepEqual(await vault.patientsWithLinkToken(linked), [synthea.id]);
      assert.equal((await request('get', `Patient/${synthea.id}`)).status, 200);
    });
  });
});
