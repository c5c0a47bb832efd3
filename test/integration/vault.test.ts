/**
 * The encrypted vault end to end, on every adapter: no PHI at rest, ciphertexts bound to their record,
 * $everything, the anchor outbox, and crypto-shredding with $erase.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { rawVaultBytes } from '../support/raw-vault.ts';
import { body, FHIR_DATA, FHIR_JSON, forEachStore, type TestGateway } from '../support/gateway.ts';
import { EncryptedStore, contentAad } from '../../src/vault/encrypted-store.ts';
import { open } from '../../src/vault/seal.ts';
import { openVersion } from '../../src/vault/commitment.ts';
import { MasterKeyring, keySource } from '../../src/vault/keyring.ts';
import { wrapAad } from '../../src/vault/data-keys.ts';
import { FhirRepository } from '../../src/fhir/repository.ts';
import type { KeyEntry } from '../../src/vault/store.ts';

const SMART = join(FHIR_DATA, 'synthea', 'smart-2019');
const BUNDLES = ['Buster_Hoeger_ad2e3fc5-2b5d-4cb9-8d03-9ea0f4ac8423.json', 'Liz_Conn_27c911c6-f045-4ffa-af5d-6eba57ac94b2.json'];

type Json = any;

function loadBundle(name: string): Json {
  return JSON.parse(readFileSync(join(SMART, name), 'utf8'));
}

/** Strings that identify the patient or describe their health, as they appear in the bundle (≥ 5 characters). */
function phiStrings(bundle: Json): string[] {
  const out = new Set<string>();
  const add = (v: unknown) => {
    if (typeof v === 'string' && v.length >= 5) out.add(v);
  };
  for (const { resource: r } of bundle.entry) {
    if (r.resourceType === 'Patient') {
      for (const n of r.name ?? []) [n.family, ...(n.given ?? [])].forEach(add);
      for (const i of r.identifier ?? []) add(i.value);
      add(r.birthDate);
      for (const a of r.address ?? []) [...(a.line ?? []), a.city].forEach(add);
      // A 5-digit postal code alone occurs by chance in MBs of hex digests and ciphertext: look for it as JSON.
      for (const a of r.address ?? []) if (a.postalCode) add(`"postalCode":"${a.postalCode}"`);
      for (const t of r.telecom ?? []) add(t.value);
      // Narrative: its longest text run between tags.
      const runs = String(r.text?.div ?? '').split(/<[^>]+>/).map((s) => s.trim());
      add(runs.sort((a, b) => b.length - a.length)[0]);
    }
    if (r.resourceType === 'Condition') add(r.code?.coding?.[0]?.display);
    if (r.resourceType === 'Observation' && r.valueQuantity) add(`"value":${r.valueQuantity.value},"unit":"${r.valueQuantity.unit}"`);
  }
  return [...out];
}

async function post(t: TestGateway, payload: unknown) {
  return t.http.post('/fhir').set('Authorization', `Bearer ${t.admin}`).set('Content-Type', FHIR_JSON).send(JSON.stringify(payload));
}

async function get(t: TestGateway, path: string) {
  return t.http.get(`/fhir/${path}`).set('Authorization', `Bearer ${t.admin}`);
}

function patientIdOf(res: { text: string }): string {
  const location: string = body(res).entry[0].response.location;
  return /^Patient\/([^/]+)/.exec(location)![1];
}

forEachStore((start, store) => {
  describe(`encrypted vault (${store})`, () => {
    let t: TestGateway;
    const patients: string[] = [];
    const bundles = BUNDLES.map(loadBundle);

    before(async () => {
      t = await start();
      for (const bundle of bundles) {
        const res = await post(t, bundle);
        assert.equal(res.status, 200, res.text);
        patients.push(patientIdOf(res));
      }
    });
    after(async () => t?.close());

    it('stores no name, identifier, birth date, address, telecom, narrative or clinical value in plaintext', async () => {
      const raw = await rawVaultBytes(t);
      const strings = bundles.flatMap(phiStrings);
      assert.ok(strings.length > 30, `only ${strings.length} PHI strings collected`);
      const found = strings.filter((s) => raw.includes(Buffer.from(s, 'utf8')));
      assert.deepEqual(found, []);
      // …while the same strings are served decrypted to an authorized client.
      const patient = body(await get(t, `Patient/${patients[0]}`));
      assert.equal(patient.name[0].family, bundles[0].entry[0].resource.name[0].family);
      assert.equal(patient.birthDate, bundles[0].entry[0].resource.birthDate);
    });

    it('finds patients by blind-indexed identifier', async () => {
      const identifier = bundles[1].entry[0].resource.identifier[0];
      const res = body(await get(t, `Patient?identifier=${encodeURIComponent(`${identifier.system}|${identifier.value}`)}`));
      assert.deepEqual(res.entry.map((e: Json) => e.resource.id), [patients[1]]);
    });

    it('returns the whole patient compartment with $everything, paged without repeats, by _type and _since', async () => {
      const bundle = bundles[0];
      const patientUrl = bundle.entry[0].fullUrl;
      // Expected: the Patient and every entry that refers to it (Organization and Practitioner do not).
      const expected = new Map<string, number>();
      for (const e of bundle.entry) {
        if (e.resource.resourceType === 'Patient' || JSON.stringify(e.resource).includes(`"reference":"${patientUrl}"`)) {
          expected.set(e.resource.resourceType, (expected.get(e.resource.resourceType) ?? 0) + 1);
        }
      }
      const byType = (entries: Json[]) => {
        const m = new Map<string, number>();
        for (const e of entries) m.set(e.resource.resourceType, (m.get(e.resource.resourceType) ?? 0) + 1);
        return m;
      };
      const all = body(await get(t, `Patient/${patients[0]}/$everything`));
      const matches = (page: Json) => page.entry.filter((e: Json) => e.search.mode === 'match');
      assert.deepEqual(byType(matches(all)), expected);
      assert.equal(all.entry[0].resource.resourceType, 'Patient');
      assert.ok(!all.link.some((l: Json) => l.relation === 'next'));
      // Included once: the practitioners and organizations the record refers to (no compartment holds them).
      const outside = new Map<string, string>(
        bundle.entry.filter((e: Json) => ['Organization', 'Practitioner'].includes(e.resource.resourceType)).map((e: Json) => [e.fullUrl, e.resource.resourceType]),
      );
      const referenced = new Set<string>();
      for (const e of bundle.entry) {
        for (const m of JSON.stringify(e.resource).matchAll(/"reference":"(urn:uuid:[^"]+)"/g)) if (outside.has(m[1])) referenced.add(m[1]);
      }
      const includes = all.entry.filter((e: Json) => e.search.mode === 'include');
      assert.ok(referenced.size > 0);
      assert.deepEqual(byType(includes), byType([...referenced].map((url) => ({ resource: { resourceType: outside.get(url) } }))));

      const seen: string[] = [];
      let url: string | undefined = `Patient/${patients[0]}/$everything?_count=7`;
      while (url) {
        const page: Json = body(await get(t, url));
        assert.ok(matches(page).length <= 7);
        seen.push(...matches(page).map((e: Json) => e.fullUrl));
        url = page.link.find((l: Json) => l.relation === 'next')?.url.replace('http://gateway.test/fhir/', '');
      }
      assert.equal(new Set(seen).size, seen.length, 'a resource was repeated across pages');
      assert.deepEqual(new Set(seen), new Set(matches(all).map((e: Json) => e.fullUrl)));

      const some = body(await get(t, `Patient/${patients[0]}/$everything?_type=Observation,Condition`));
      assert.deepEqual(byType(matches(some)), new Map([...expected].filter(([k]) => k === 'Observation' || k === 'Condition')));
      const future = body(await get(t, `Patient/${patients[0]}/$everything?_since=2999-01-01T00:00:00Z`));
      assert.equal(future.entry?.length ?? 0, 0);
      assert.equal((await get(t, `Patient/${patients[0]}/$everything?_type=Organization`)).status, 400);
      assert.equal((await get(t, `Patient/${patients[0]}/$everything?_count=0`)).status, 400);
      assert.equal((await get(t, 'Patient/unknown-patient/$everything')).status, 404);
    });

    it('limits patient-bound tokens to their own compartment', async () => {
      const token = await t.token('patient/*.rs', patients[1]);
      const own = await t.http.get(`/fhir/Patient/${patients[1]}/$everything`).set('Authorization', `Bearer ${token}`);
      assert.equal(own.status, 200);
      const other = await t.http.get(`/fhir/Patient/${patients[0]}/$everything`).set('Authorization', `Bearer ${token}`);
      assert.equal(other.status, 404, 'answered as a missing patient: no existence oracle');
      const search = body(await t.http.get('/fhir/Condition?_count=1000').set('Authorization', `Bearer ${token}`));
      const conditions = bundles[1].entry.filter((e: Json) => e.resource.resourceType === 'Condition').length;
      assert.equal(search.entry?.length ?? 0, conditions);
      assert.ok(search.entry.every((e: Json) => e.resource.subject.reference === `Patient/${patients[1]}`));
    });

    it('keeps the anchor outbox readable without keys: locator tokens and commitments in the clear, anchors on reads', async () => {
      const repo = new FhirRepository(t.gateway.store);
      // The gateway's own publisher would anchor these versions while the test looks at them.
      const publisher = t.gateway.ledger!.publisher;
      await publisher.stop();
      after(() => publisher.start());
      const [patient, observation, organization] = await repo.write(async (s) => {
        const p = await s.create({ resourceType: 'Patient', name: [{ family: 'Outbox' }] });
        const o = await s.create({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${p.id}` } });
        return [p, o, await s.create({ resourceType: 'Organization', name: 'Outbox clinic' })];
      });
      const vault = t.gateway.store as EncryptedStore;
      // The live gateway keeps writing access records and anchoring meanwhile: compare only this test's versions.
      const mine = (versions: Awaited<ReturnType<typeof vault.unanchored>>) => versions.filter((v) => [patient.id, observation.id, organization.id].includes(v.id));
      const ours = mine(await vault.unanchored({ limit: 100_000 }));
      // The adapter's own outbox is the same: the publisher needs no key.
      assert.deepEqual(mine(await vault.inner.unanchored({ limit: 100_000 })), ours);
      // The locator token comes from the patient's data key, inside the vault.
      const token = await vault.locatorTokenFor(`Patient/${patient.id}`);
      assert.match(token ?? '', /^[A-Za-z0-9_-]{43}$/);
      assert.deepEqual(ours.map((v) => [v.type, v.patientToken]), [
        ['Patient', token],
        ['Observation', token],
        ['Organization', undefined],
      ]);
      assert.ok(ours.every((v) => /^[0-9a-f]{64}$/.test(v.digest!)));

      const anchor = { blockNumber: 3, envelopeIndex: 1, entryIndex: 4 };
      await vault.markAnchored([{ type: 'Observation', id: observation.id, versionId: 1, ...anchor }]);
      const stored = await vault.current('Observation', observation.id);
      assert.deepEqual(stored?.anchor, anchor);
      assert.equal(JSON.parse(new TextDecoder().decode(stored!.content!)).subject.reference, `Patient/${patient.id}`);
      assert.ok(!(await vault.unanchored({ limit: 100_000 })).some((v) => v.id === observation.id));
    });

    it('crypto-shreds a patient with $erase: 410 everywhere, nothing in the store opens the old ciphertext', async () => {
      const vault = t.gateway.store as EncryptedStore;
      const id = patients[0];
      const everything = body(await get(t, `Patient/${id}/$everything`)).entry.filter((e: Json) => e.search.mode === 'match').map((e: Json) => e.resource);
      const observation = everything.find((r: Json) => r.resourceType === 'Observation');
      const keyId = vault.keyIdFor(`Patient/${id}`);
      const sealed = await vault.inner.current('Observation', observation.id);
      assert.equal(sealed?.keyId, keyId);
      const wrappedBefore = (await vault.inner.getKey(keyId))!;
      const ring = MasterKeyring.open(keySource(t.dataDir, {}));
      const master = ring.key(wrappedBefore.masterKeyId!)!;
      const aad = contentAad(vault.hospitalId, 'Observation', observation.id, sealed!.versionId, keyId);
      // Sanity: before the erasure, the master key opens the data key, which opens the record.
      const dataKey = open(master, wrappedBefore.wrapped!, wrapAad(vault.hospitalId, keyId, wrappedBefore.masterKeyId!));
      assert.equal(JSON.parse(openVersion(dataKey, sealed!.content!, aad).content.toString()).id, observation.id);

      const noToken = await t.http.post(`/fhir/Patient/${id}/$erase`).set('Authorization', `Bearer ${await t.token('patient/*.cruds', id)}`);
      assert.equal(noToken.status, 403);
      const erased = await t.http.post(`/fhir/Patient/${id}/$erase`).set('Authorization', `Bearer ${t.admin}`);
      assert.equal(erased.status, 200, erased.text);
      const result = body(erased).parameter;
      assert.equal(result.find((p: Json) => p.name === 'resourcesErased').valueInteger, everything.length);

      for (const path of [`Patient/${id}`, `Observation/${observation.id}`, `Observation/${observation.id}/_history/1`, `Patient/${id}/$everything`]) {
        const res = await get(t, path);
        assert.equal(res.status, 410, path);
        assert.equal(body(res).resourceType, 'OperationOutcome');
      }
      const code = observation.code.coding[0];
      const search = body(await get(t, `Observation?code=${encodeURIComponent(`${code.system}|${code.code}`)}&_count=1000`));
      assert.ok(!(search.entry ?? []).some((e: Json) => everything.some((r: Json) => r.id === e.resource.id)));
      const history = body(await get(t, `Observation/${observation.id}/_history`));
      assert.equal(history.entry?.length ?? 0, 0);
      // The other patient is untouched.
      assert.equal((await get(t, `Patient/${patients[1]}`)).status, 200);
      // No new data is accepted into the erased compartment.
      const late = await t.http.post('/fhir/Observation').set('Authorization', `Bearer ${t.admin}`).set('Content-Type', FHIR_JSON)
        .send(JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${id}` } }));
      assert.equal(late.status, 410, late.text);
      // Idempotent: a second erasure reports the first one's time.
      const again = body(await t.http.post(`/fhir/Patient/${id}/$erase`).set('Authorization', `Bearer ${t.admin}`)).parameter;
      assert.equal(again.find((p: Json) => p.name === 'erasedAt').valueInstant, result.find((p: Json) => p.name === 'erasedAt').valueInstant);

      // The access log survives the erasure: it is the hospital's record, sealed under its own key.
      const accesses = body(await get(t, `AuditEvent?entity=${encodeURIComponent(`Patient/${id}`)}&_count=1000`)).entry ?? [];
      const erasures = accesses.filter((e: Json) => e.resource.subtype?.[0]?.code === 'operation' && e.resource.action === 'C' && e.resource.outcome === '0');
      assert.ok(erasures.length >= 1, `the $erase itself is on record (${accesses.length} access records about the patient)`);

      // Anyone holding the master key and the whole database: no key in the store opens the old ciphertext.
      const tombstone = await vault.inner.getKey(keyId);
      assert.deepEqual([tombstone?.wrapped, tombstone?.masterKeyId], [null, null]);
      const remaining: KeyEntry[] = await vault.inner.listKeys({ notWrappedUnder: '-', limit: 100_000 });
      assert.ok(remaining.length > 0);
      for (const entry of remaining) {
        const k = open(ring.key(entry.masterKeyId!)!, entry.wrapped!, wrapAad(vault.hospitalId, entry.keyId, entry.masterKeyId!));
        assert.throws(() => openVersion(k, sealed!.content!, aad));
      }
      const raw = await rawVaultBytes(t);
      assert.equal(raw.includes(Buffer.from(wrappedBefore.wrapped!)), false, 'the wrapped data key is still in the database');
      if (store === 'sqlite') assert.equal(raw.includes(Buffer.from(sealed!.content!)), true, 'the ciphertext itself is kept (anchored digests)');
    });
  });
});

describe('ciphertext binding (SQLite)', () => {
  it('refuses a ciphertext moved to another resource or replayed as another version', async () => {
    const { startTestGateway } = await import('../support/gateway.ts');
    const t = await startTestGateway();
    try {
      const create = async (value: string) => {
        const res = await t.http.post('/fhir/Patient').set('Authorization', `Bearer ${t.admin}`).set('Content-Type', FHIR_JSON)
          .send(JSON.stringify({ resourceType: 'Patient', identifier: [{ system: 'urn:test', value }] }));
        return body(res).id as string;
      };
      const a = await create('a');
      const b = await create('b');
      await t.http.put(`/fhir/Patient/${a}`).set('Authorization', `Bearer ${t.admin}`).set('Content-Type', FHIR_JSON)
        .send(JSON.stringify({ resourceType: 'Patient', id: a, identifier: [{ system: 'urn:test', value: 'a2' }] }));
      await t.gateway.close();
      const db = new Database(join(t.dataDir, 'vault.sqlite'));
      const content = (id: string, v: number) => (db.prepare('SELECT content FROM versions WHERE id = ? AND version = ?').get(id, v) as { content: Buffer }).content;
      // Replay: version 1's ciphertext written over version 2 (same key, same resource).
      db.prepare('UPDATE versions SET content = ? WHERE id = ? AND version = 2').run(content(a, 1), a);
      // Swap: b's row given a ciphertext of its own key but... a single flipped bit.
      const flipped = Buffer.from(content(b, 1));
      flipped[flipped.length - 20] ^= 1;
      db.prepare('UPDATE versions SET content = ? WHERE id = ? AND version = 1').run(flipped, b);
      db.close();
      const { createGateway } = await import('../../src/gateway.ts');
      const reopened = await createGateway({ ...t.gateway.config });
      try {
        const supertest = (await import('supertest')).default;
        const http = supertest(reopened.app);
        for (const path of [`Patient/${a}`, `Patient/${b}`]) {
          const res = await http.get(`/fhir/${path}`).set('Authorization', `Bearer ${t.admin}`);
          assert.equal(res.status, 500, path);
          assert.match(body(res).issue[0].diagnostics, /fails authentication/);
        }
        assert.equal((await http.get(`/fhir/Patient/${a}/_history/1`).set('Authorization', `Bearer ${t.admin}`)).status, 200);
      } finally {
        await reopened.close();
      }
      // The vault fails closed, with a clear message, under another hospital id or another master key.
      await assert.rejects(createGateway({ ...t.gateway.config, hospitalId: 'other-hospital' }), /does not open with master key mk-\w+ for hospital 'other-hospital'/);
      await assert.rejects(
        createGateway({ ...t.gateway.config, masterKey: { envKey: Buffer.alloc(32, 9).toString('base64') } }),
        /wrapped under master key mk-\w+, which the configured key ring does not hold/,
      );
    } finally {
      const { rmSync } = await import('node:fs');
      rmSync(t.dataDir, { recursive: true, force: true });
    }
  });
});
