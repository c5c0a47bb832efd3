/**
 * Authenticated head state (docs/security.md "Head state"), on every adapter. Someone with write access to
 * the database, without the master key, edits the raw store: moves a current pointer back (with the MAC it
 * had, too: a replay), flips deleted flags both ways, and copies another patient's index terms onto an
 * Observation. Every read of current state refuses (500, integrity alarm) and `medblock verify` reports
 * each by type/id; untouched resources still read, and the untampered vault verifies.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { MongoClient } from 'mongodb';
import supertest from 'supertest';
import { createGateway, type Gateway } from '../../src/gateway.ts';
import { mintToken } from '../../src/access/tokens.ts';
import { body, FHIR_JSON, forEachStore, type TestGateway } from '../support/gateway.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'medblock.js');

interface VerifyReport {
  ok: boolean;
  problems: Array<{ where: string; problem: string }>;
}

/** `medblock verify --json` over the stopped gateway's store. */
function verify(config: Gateway['config']): Promise<VerifyReport> {
  const { MEDBLOCK_MONGODB_URI: _m, MEDBLOCK_KAFKA_BROKERS: _k, ...env } = process.env;
  Object.assign(env, {
    MEDBLOCK_LOG: 'off', MEDBLOCK_DATA_DIR: config.dataDir, MEDBLOCK_HOSPITAL_ID: config.hospitalId, MEDBLOCK_CONSORTIUM_DIR: config.consortiumDir,
  });
  if (config.mongodb) env.MEDBLOCK_MONGODB_URI = config.mongodb.uri.replace(/^(mongodb(?:\+srv)?:\/\/[^/?]+)\/?[^?]*/, `$1/${config.mongodb.database}`);
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [BIN, 'verify', '--json'], { env, encoding: 'utf8', timeout: 120_000 }, (error, stdout, stderr) => {
      try {
        resolve(JSON.parse(stdout) as VerifyReport);
      } catch {
        reject(new Error(`verify printed no report (${error?.message}): ${stdout}${stderr}`));
      }
    });
  });
}

/** What the attacker does to the raw store, per adapter. */
interface RawStore {
  pointerMac(type: string, id: string): Promise<string>;
  /** Moves the pointer to `version`, with `mac` if given (else the pointer keeps its MAC). */
  movePointer(type: string, id: string, version: number, mac?: string): Promise<void>;
  /** The deleted flag of a version record (what a read serves). */
  setVersionDeleted(type: string, id: string, version: number, deleted: boolean): Promise<void>;
  /** The pointer's deleted flag (what hides a resource from search). */
  setPointerDeleted(type: string, id: string, deleted: boolean): Promise<void>;
  /** Copies the index terms of `params` from one resource onto another (blind tokens, no key needed). */
  copyTerms(type: string, fromId: string, toId: string, params: string[]): Promise<number>;
  close(): Promise<void>;
}

function sqliteRaw(file: string): RawStore {
  const db = new Database(file);
  const seqOf = (type: string, id: string, version: number) =>
    db.prepare('SELECT seq FROM versions WHERE type = ? AND id = ? AND version = ?').pluck().get(type, id, version) as number;
  return {
    async pointerMac(type, id) {
      return db.prepare('SELECT mac FROM current WHERE type = ? AND id = ?').pluck().get(type, id) as string;
    },
    async movePointer(type, id, version, mac) {
      const changes = mac
        ? db.prepare('UPDATE current SET version = ?, seq = ?, mac = ? WHERE type = ? AND id = ?').run(version, seqOf(type, id, version), mac, type, id).changes
        : db.prepare('UPDATE current SET version = ?, seq = ? WHERE type = ? AND id = ?').run(version, seqOf(type, id, version), type, id).changes;
      assert.equal(changes, 1);
    },
    async setVersionDeleted(type, id, version, deleted) {
      assert.equal(db.prepare('UPDATE versions SET deleted = ? WHERE type = ? AND id = ? AND version = ?').run(deleted ? 1 : 0, type, id, version).changes, 1);
    },
    async setPointerDeleted(type, id, deleted) {
      assert.equal(db.prepare('UPDATE current SET deleted = ? WHERE type = ? AND id = ?').run(deleted ? 1 : 0, type, id).changes, 1);
    },
    async copyTerms(type, fromId, toId, params) {
      return db.prepare(
        `INSERT OR IGNORE INTO terms (type, param, value, id) SELECT type, param, value, ? FROM terms
         WHERE type = ? AND id = ? AND param IN (${params.map(() => '?').join(', ')})`,
      ).run(toId, type, fromId, ...params).changes;
    },
    async close() {
      db.close();
    },
  };
}

async function mongoRaw(uri: string, database: string): Promise<RawStore> {
  const client = await MongoClient.connect(uri);
  const db = client.db(database);
  const pointers = db.collection<{ _id: string; mac: string; terms: string[] }>('current');
  const versions = db.collection<{ _id: string }>('versions');
  return {
    async pointerMac(type, id) {
      return (await pointers.findOne({ _id: `${type}/${id}` }))!.mac;
    },
    async movePointer(type, id, version, mac) {
      const res = await pointers.updateOne({ _id: `${type}/${id}` }, { $set: { version, ...(mac && { mac }) } });
      assert.equal(res.matchedCount, 1);
    },
    async setVersionDeleted(type, id, version, deleted) {
      assert.equal((await versions.updateOne({ _id: `${type}/${id}/${version}` }, { $set: { deleted } })).matchedCount, 1);
    },
    async setPointerDeleted(type, id, deleted) {
      assert.equal((await pointers.updateOne({ _id: `${type}/${id}` }, { $set: { deleted } })).matchedCount, 1);
    },
    async copyTerms(type, fromId, toId, params) {
      const from = (await pointers.findOne({ _id: `${type}/${fromId}` }))!.terms.filter((t) => params.some((p) => t.startsWith(`${p}=`)));
      const to = (await pointers.findOne({ _id: `${type}/${toId}` }))!.terms;
      await pointers.updateOne({ _id: `${type}/${toId}` }, { $set: { terms: [...new Set([...to, ...from])] } });
      return from.filter((t) => !to.includes(t)).length;
    },
    async close() {
      await client.close();
    },
  };
}

forEachStore((start, store) => {
  describe(`authenticated head state (${store})`, () => {
    let t: TestGateway;
    let config: Gateway['config'];
    let reopened: Gateway;
    let http: supertest.Agent;
    let admin: string;
    const ids: Record<string, string> = {};
    let baseline: VerifyReport;
    let tampered: VerifyReport;
    let forgedTerms = 0;

    const send = (method: 'post' | 'put', path: string, resource: object) =>
      t.http[method](`/fhir/${path}`).set('Authorization', `Bearer ${t.admin}`).set('Content-Type', FHIR_JSON).send(JSON.stringify(resource));
    async function create(name: string, resource: { resourceType: string }): Promise<string> {
      const res = await send('post', resource.resourceType, resource);
      assert.equal(res.status, 201, res.text);
      return (ids[name] = body(res).id);
    }
    // With an SSN: the vault's reserved `_link` terms are part of what `verify` recomputes.
    const ssn = (value: string) => `999-42-${1000 + ([...value].reduce((n, c) => n * 31 + c.charCodeAt(0), 7) % 9000)}`;
    const patient = (value: string) => ({ resourceType: 'Patient', identifier: [{ system: 'urn:head-test', value }, { system: 'http://hl7.org/fhir/sid/us-ssn', value: ssn(value) }] });
    const allergy = (patientId: string, severe: boolean) => ({
      resourceType: 'AllergyIntolerance',
      clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical', code: 'active' }] },
      code: { text: 'penicillin' },
      patient: { reference: `Patient/${patientId}` },
      criticality: severe ? 'high' : 'low',
      ...(severe && { reaction: [{ manifestation: [{ text: 'anaphylaxis' }], severity: 'severe' }] }),
    });
    const observation = (patientId: string) => ({ resourceType: 'Observation', status: 'final', code: { text: 'weight' }, subject: { reference: `Patient/${patientId}` } });

    before(async () => {
      t = await start();
      config = t.gateway.config;
      const a = await create('a', patient('a'));
      const b = await create('b', patient('b'));
      const allergyId = await create('allergy', allergy(a, false));
      assert.equal((await send('put', `AllergyIntolerance/${allergyId}`, { ...allergy(a, true), id: allergyId })).status, 200);
      const replayed = await create('replayed', patient('r1'));
      await create('resurrected', patient('d'));
      assert.equal((await t.http.delete(`/fhir/Patient/${ids.resurrected}`).set('Authorization', `Bearer ${t.admin}`)).status, 200);
      await create('hidden', patient('h'));
      await create('unlisted', patient('s'));
      await create('x', observation(a));
      await create('y', observation(b));

      // The attacker kept an old copy of the database: Patient `replayed` at version 1, with its MAC then.
      const raw0 = store === 'sqlite' ? sqliteRaw(join(config.dataDir, 'vault.sqlite')) : await mongoRaw(config.mongodb!.uri, config.mongodb!.database);
      const oldMac = await raw0.pointerMac('Patient', replayed);
      await raw0.close();
      assert.equal((await send('put', `Patient/${replayed}`, { ...patient('r2'), id: replayed })).status, 200);
      await t.gateway.close();
      baseline = await verify(config);

      const raw = store === 'sqlite' ? sqliteRaw(join(config.dataDir, 'vault.sqlite')) : await mongoRaw(config.mongodb!.uri, config.mongodb!.database);
      try {
        await raw.movePointer('AllergyIntolerance', allergyId, 1); // the severe allergy served as its milder v1
        await raw.movePointer('Patient', replayed, 1, oldMac); // the same, replaying the MAC v1 had
        await raw.setVersionDeleted('Patient', ids.resurrected, 2, false); // resurrect a deleted resource
        await raw.setPointerDeleted('Patient', ids.resurrected, false);
        await raw.setVersionDeleted('Patient', ids.hidden, 1, true); // delete a live one
        await raw.setPointerDeleted('Patient', ids.hidden, true);
        await raw.setPointerDeleted('Patient', ids.unlisted, true); // hide a live one from search only
        // Observation x (patient a) routed into patient b's compartment and searches.
        forgedTerms = await raw.copyTerms('Observation', ids.y, ids.x, ['_compartment', 'patient', 'subject']);
        assert.ok(forgedTerms >= 2, `forged ${forgedTerms} terms`);
      } finally {
        await raw.close();
      }
      tampered = await verify(config);
      reopened = await createGateway({ ...config });
      http = supertest.agent(reopened.app);
      admin = await mintToken(reopened.issuer, { subject: 'tester', scope: 'user/*.cruds' });
    });

    after(async () => {
      if (reopened) await reopened.close();
      rmSync(config.dataDir, { recursive: true, force: true });
      if (config.mongodb) {
        const client = await MongoClient.connect(config.mongodb.uri);
        await client.db(config.mongodb.database).dropDatabase();
        await client.close();
      }
    });

    const get = (path: string) => http.get(`/fhir/${path}`).set('Authorization', `Bearer ${admin}`);
    async function assertRefused(path: string, reason: RegExp) {
      const res = await get(path);
      assert.equal(res.status, 500, `${path}: ${res.status} ${res.text}`);
      const diagnostics = body(res).issue[0].diagnostics as string;
      assert.match(diagnostics, /current state \(version \d+\) fails authentication/);
      assert.match(diagnostics, reason);
      assert.match(diagnostics, /the incident is logged/);
    }

    it('the untampered vault verifies, head state and index terms included', () => {
      assert.deepEqual(baseline.problems, []);
      assert.equal(baseline.ok, true);
    });

    it('a pointer moved back is refused on read and search, and verify names it', async () => {
      await assertRefused(`AllergyIntolerance/${ids.allergy}`, /head MAC does not match/);
      await assertRefused(`AllergyIntolerance?patient=${ids.a}`, /head MAC does not match/);
      const where = `AllergyIntolerance/${ids.allergy} current (v1)`;
      assert.ok(tampered.problems.some((p) => p.where === where && /not the newest version: the vault holds v2/.test(p.problem)), JSON.stringify(tampered.problems));
      assert.ok(tampered.problems.some((p) => p.where === where && /head MAC does not match/.test(p.problem)));
    });

    it('a pointer moved back with the MAC it had then (a replay) is refused, and verify names it', async () => {
      await assertRefused(`Patient/${ids.replayed}`, /newer version is committed: the pointer was moved back/);
      await assertRefused('Patient?identifier=urn:head-test|r2', /moved back/);
      const where = `Patient/${ids.replayed} current (v1)`;
      assert.ok(tampered.problems.some((p) => p.where === where && /not the newest version: the vault holds v2/.test(p.problem)));
      assert.ok(tampered.problems.some((p) => p.where === where && /head state: a newer version is committed/.test(p.problem)));
      assert.ok(!tampered.problems.some((p) => p.where === where && /head MAC/.test(p.problem)), 'the replayed MAC itself is genuine');
    });

    it('a deleted flag flipped either way is refused, and verify names it', async () => {
      await assertRefused(`Patient/${ids.resurrected}`, /head MAC does not match/);
      await assertRefused(`Patient?_id=${ids.resurrected}`, /head MAC does not match/);
      await assertRefused(`Patient/${ids.hidden}`, /head MAC does not match/);
      await assertRefused(`Patient/${ids.unlisted}`, /hidden from search, yet neither deleted nor erased/);
      const unlisted = await get('Patient?identifier=urn:head-test|s');
      assert.equal(unlisted.status, 200);
      assert.deepEqual(body(unlisted).entry ?? [], [], 'hidden from search: only verify can see it');
      for (const [name, reason] of [['resurrected', /head MAC does not match/], ['hidden', /head MAC does not match/], ['unlisted', /hidden from search/]] as const) {
        assert.ok(tampered.problems.some((p) => p.where.startsWith(`Patient/${ids[name]} current`) && reason.test(p.problem)), `${name}: ${JSON.stringify(tampered.problems)}`);
      }
    });

    it('index terms that route an Observation into another patient\'s compartment are reported by verify', async () => {
      const problem = tampered.problems.find((p) => p.where === `Observation/${ids.x} current (v1)`);
      assert.ok(problem, JSON.stringify(tampered.problems));
      assert.match(problem.problem, new RegExp(`^${forgedTerms} stored index term\\(s\\) its content does not have \\(forged, for _compartment, .*(patient|subject)`));
      assert.ok(!tampered.problems.some((p) => p.where.startsWith(`Observation/${ids.y} `)));
    });

    it('untouched resources still read, and no report quotes content', async () => {
      assert.equal((await get(`Patient/${ids.a}`)).status, 200);
      assert.equal((await get(`Observation/${ids.y}`)).status, 200);
      assert.equal(tampered.ok, false);
      assert.doesNotMatch(JSON.stringify(tampered.problems), /anaphylaxis|penicillin|urn:head-test|weight/);
    });

  });
});
