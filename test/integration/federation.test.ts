/**
 * The federated summarized record across three hospitals on the real engines (issue #12, item 6): h1 and h2
 * on SQLite, h3 on the MongoDB wire, one Kafka channel, each serving the federation listener over mutual TLS.
 * One Synthea patient (750 entries) is split over the three by date, each hospital registering the person
 * under its own id with the same SSN. Then:
 *  - the federated record reassembles the patient exactly, asked by id or by identifier, paged;
 *  - a patient with no shared identifier is not linked;
 *  - a Consent at h2 denying h1 removes exactly h2's part for h1 and nothing for h3; break-the-glass restores
 *    it and is flagged at both ends and counted on /metrics;
 *  - a holder editing a resource in flight, and a tampered vault record at a holder, are rejected and
 *    reported, never served;
 *  - the channel refuses a replayed and an expired assertion and a certificate of another CA;
 *  - a stopped member gives a partial result naming it; identifier corrections and $erase update the index;
 *    a revoked member is refused.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { Agent } from 'undici';
import { mintToken } from '../../src/access/tokens.ts';
import { ASSERTION_HEADER, createAssertion } from '../../src/federation/assertion.ts';
import { patientLinkTokens } from '../../src/federation/link-token.ts';
import { createConsortium } from '../../src/identity/ca.ts';
import { loadMemberConsortium } from '../../src/identity/consortium-dir.ts';
import type { ConfigChange } from '../../src/ledger/envelope.ts';
import { describeWithEngine } from '../support/engines.ts';
import { quorumConfigEnvelope, rawMtlsFetch } from '../support/federation-peers.ts';
import { startFederation, type Hospital, type TestFederation } from '../support/federation.ts';
import { body, FHIR_DATA, FHIR_JSON } from '../support/gateway.ts';
import { splitPatientBundle, type TransactionBundle } from '../support/split-patient.ts';
import { untilWithin } from '../support/until.ts';

const until = untilWithin(90_000, 200);
const SSN_SYSTEM = 'http://hl7.org/fhir/sid/us-ssn';
const SOURCE = join(FHIR_DATA, 'synthea', 'smart-2019', 'Darron_Feeney_ff447d4a-3e5c-4e90-9854-a66a1d0bdfac.json');
/** Reference data each hospital holds of its own; not part of a patient's compartment. */
const NOT_IN_COMPARTMENT = new Set(['Organization', 'Practitioner', 'Location', 'PractitionerRole']);

interface Entry {
  fullUrl?: string;
  resource: Record<string, any>;
  search?: { mode?: string };
}

describeWithEngine('kafka', 'the federated record across three hospitals', (brokers) => {
  describeWithEngine('mongodb', 'h1 and h2 on SQLite, h3 on the MongoDB wire', (mongodbUri) => {
    let fed: TestFederation;
    let h: Record<string, Hospital>;
    let ssn: string;
    /** Each hospital's id for the shared patient. */
    const patientId: Record<string, string> = {};
    /** Each hospital's compartment of the patient: `Type/id` → stored JSON (parsed), from its own local $everything. */
    const held: Record<string, Map<string, Record<string, any>>> = {};
    let parts: TransactionBundle[];

    const get = (at: Hospital, path: string, headers: Record<string, string> = {}, token = at.clinician) => {
      let req = at.http.get(path).set('Authorization', `Bearer ${token}`);
      for (const [k, v] of Object.entries(headers)) req = req.set(k, v);
      return req;
    };

    /** Every page of a searchset, following `next` links on the same gateway. */
    async function allPages(at: Hospital, path: string, headers: Record<string, string> = {}): Promise<{ entries: Entry[]; pages: number }> {
      const entries: Entry[] = [];
      let pages = 0;
      for (let next: string | undefined = path; next; pages++) {
        const res = await get(at, next, headers);
        assert.equal(res.status, 200, `${next}: ${res.text.slice(0, 300)}`);
        const bundle = body(res);
        entries.push(...(bundle.entry ?? []));
        const link = bundle.link?.find((l: { relation: string }) => l.relation === 'next')?.url as string | undefined;
        next = link && new URL(link).pathname + new URL(link).search;
      }
      return { entries, pages };
    }

    const federated = (at: Hospital, headers: Record<string, string> = {}) =>
      allPages(at, `/fhir/Patient/${patientId[at.id]}/$everything?federated=true&_count=500`, headers);

    /** Which member an entry came from: meta.source on remote entries, the asking hospital otherwise. */
    const holderOf = (asker: string, e: Entry) => /^urn:medblock:member:(.+)$/.exec(e.resource.meta?.source ?? '')?.[1] ?? asker;
    const records = (entries: Entry[]) => entries.filter((e) => e.search?.mode !== 'outcome' && e.resource.resourceType !== 'Provenance');
    const outcomes = (entries: Entry[]) => entries.filter((e) => e.search?.mode === 'outcome').flatMap((e) => e.resource.issue as Array<{ diagnostics?: string; severity: string }>);
    /** `holder Type/id` of every compartment entry (not the asker's referenced reference data). */
    const compartmentKeys = (asker: string, entries: Entry[]) =>
      records(entries).filter((e) => !NOT_IN_COMPARTMENT.has(e.resource.resourceType)).map((e) => `${holderOf(asker, e)} ${e.resource.resourceType}/${e.resource.id}`);
    const expectedKeys = (holders: string[]) => holders.flatMap((id) => [...held[id].keys()].map((k) => `${id} ${k}`)).sort();
    /** The record holds exactly these holders' compartments; a failure says what is missing or extra, and the outcome. */
    function assertHolds(asker: string, entries: Entry[], holders: string[]): void {
      const actual = compartmentKeys(asker, entries);
      const expected = expectedKeys(holders);
      const missing = expected.filter((k) => !actual.includes(k));
      const extra = actual.filter((k) => !expected.includes(k));
      const count = (keys: string[]) => {
        const by = new Map<string, number>();
        for (const k of keys) by.set(k.split(' ')[0], (by.get(k.split(' ')[0]) ?? 0) + 1);
        return JSON.stringify([...by]);
      };
      assert.ok(
        missing.length === 0 && extra.length === 0 && actual.length === expected.length,
        `holds ${count(actual)}, expected ${count(expected)}; missing ${missing.slice(0, 5)}; extra ${extra.slice(0, 5)}; outcome ${JSON.stringify(outcomes(entries)).slice(0, 800)}`,
      );
    }

    /** A remote entry as its holder stored it: without what the merge adds (meta.source, Patient.link). */
    function asStored(resource: Record<string, any>, stored: Record<string, any>): Record<string, any> {
      const copy = structuredClone(resource);
      if (stored.meta?.source === undefined) delete copy.meta.source;
      else copy.meta.source = stored.meta.source;
      if (copy.resourceType === 'Patient') {
        const own = stored.link?.length ?? 0;
        if (own) copy.link = copy.link.slice(0, own);
        else delete copy.link;
      }
      return copy;
    }

    before(async () => {
      fed = await startFederation({ members: ['h1', 'h2', 'h3'], brokers, mongodb: { uri: mongodbUri, members: ['h3'] }, defaultConsent: 'opt-out' });
      h = fed.hospitals;
      const source = JSON.parse(readFileSync(SOURCE, 'utf8'));
      ssn = source.entry[0].resource.identifier.find((i: { system: string }) => i.system === SSN_SYSTEM).value;
      parts = splitPatientBundle(source, 3);
      await Promise.all(['h1', 'h2', 'h3'].map(async (id, i) => {
        const res = await h[id].http.post('/fhir').set('Authorization', `Bearer ${h[id].clinician}`).set('Content-Type', FHIR_JSON).send(JSON.stringify(parts[i]));
        assert.equal(res.status, 200, res.text.slice(0, 300));
        const patient = body(res).entry.find((e: { response: { location: string } }) => e.response.location.startsWith('Patient/'));
        patientId[id] = patient.response.location.split('/')[1];
      }));
      for (const id of ['h1', 'h2', 'h3']) {
        const { entries } = await allPages(h[id], `/fhir/Patient/${patientId[id]}/$everything?_count=500`);
        held[id] = new Map(entries.filter((e) => e.search?.mode === 'match').map((e) => [`${e.resource.resourceType}/${e.resource.id}`, e.resource]));
      }
      // Every version anchored at its holder, and every replica has seen every holder's anchors.
      await until('all versions anchored', async () => {
        for (const id of ['h1', 'h2', 'h3']) if ((await h[id].gateway.store.unanchored({ limit: 1 })).length) return false;
        return true;
      });
      await until('every replica at the same height', async () => {
        const heights = ['h1', 'h2', 'h3'].map((id) => h[id].gateway.ledger!.member.headHeader()?.number ?? -1);
        const top = Math.max(...heights);
        await new Promise((r) => setTimeout(r, 300));
        return ['h1', 'h2', 'h3'].every((id) => (h[id].gateway.ledger!.member.headHeader()?.number ?? -1) >= top);
      });
    });

    after(async () => {
      await fed?.close();
    });

    it('each hospital holds its part of the patient, under its own id', () => {
      const compartmentCount = (part: TransactionBundle) => part.entry.filter((e) => !NOT_IN_COMPARTMENT.has(e.resource.resourceType)).length;
      for (const [i, id] of ['h1', 'h2', 'h3'].entries()) assert.equal(held[id].size, compartmentCount(parts[i]), `${id} holds its part`);
      assert.equal(new Set(Object.values(patientId)).size, 3, 'three different local ids');
      const total = ['h1', 'h2', 'h3'].reduce((n, id) => n + held[id].size, 0);
      assert.equal(total, 748 + 2, 'the 748 compartment resources, with the Patient at each hospital');
    });

    it('reassembles the patient exactly at h1 (asked by id): every version of every holder once, as anchored', async () => {
      const { entries, pages } = await federated(h.h1);
      assert.ok(pages >= 2, `paged with _count=500 (${pages} pages)`);
      const keys = compartmentKeys('h1', entries);
      assert.equal(new Set(keys).size, keys.length, 'no duplicates');
      assertHolds('h1', entries, ['h1', 'h2', 'h3']);
      for (const e of records(entries)) {
        const holder = holderOf('h1', e);
        if (holder === 'h1' || NOT_IN_COMPARTMENT.has(e.resource.resourceType)) continue;
        const stored = held[holder].get(`${e.resource.resourceType}/${e.resource.id}`)!;
        assert.deepEqual(asStored(e.resource, stored), stored, `${holder} ${e.resource.resourceType}/${e.resource.id} as its holder stored it`);
      }
      const provenance = entries.filter((e) => e.resource.resourceType === 'Provenance');
      assert.deepEqual(provenance.map((p) => p.resource.agent[0].who.identifier.value).sort(), ['h2', 'h3'], 'one Provenance per holder');
      // The three Patients are linked to each other.
      const patients = records(entries).filter((e) => e.resource.resourceType === 'Patient');
      assert.equal(patients.length, 3);
      for (const p of patients) assert.equal(p.resource.link?.filter((l: { type: string }) => l.type === 'seealso').length, 2, 'linked to the two others');
      assert.equal(outcomes(entries).filter((i) => i.severity === 'error' || i.severity === 'warning').length, 0, JSON.stringify(outcomes(entries)));
    });

    it('gives the same record at h3 (MongoDB) asked by identifier, and writes the access record at both ends', async () => {
      const { entries } = await allPages(h.h3, `/fhir/Patient/$everything?identifier=${encodeURIComponent(`${SSN_SYSTEM}|${ssn}`)}&_count=1000`);
      assertHolds('h3', entries, ['h1', 'h2', 'h3']);
      // h3 recorded whom it asked; h1 recorded what left for h3.
      await untilWithin(20_000, 500)('access records at both ends', async () => {
        const asked = body(await get(h.h3, '/fhir/AuditEvent?subtype=urn:medblock:federation|federated-request', {}, h.h3.auditor)).entry ?? [];
        const disclosed = body(await get(h.h1, '/fhir/AuditEvent?subtype=urn:medblock:federation|federated-disclosure', {}, h.h1.auditor)).entry ?? [];
        return asked.length > 0 && disclosed.length > 0;
      });
      const [asked] = body(await get(h.h3, '/fhir/AuditEvent?subtype=urn:medblock:federation|federated-request', {}, h.h3.auditor)).entry;
      const members = asked.resource.entity.flatMap((e: any) => (e.what?.identifier?.system === 'urn:medblock:member' ? [e.what.identifier.value] : []));
      assert.deepEqual(members.sort(), ['h1', 'h2'], 'the asker names the members it asked');
      const disclosures = body(await get(h.h1, '/fhir/AuditEvent?subtype=urn:medblock:federation|federated-disclosure', {}, h.h1.auditor)).entry;
      const toH3 = disclosures.map((e: any) => e.resource).find((r: any) => r.agent[0].who.identifier.assigner?.identifier.value === 'h3');
      assert.ok(toH3, 'the holder names the asking member');
      assert.ok(toH3.entity.some((e: any) => e.what?.identifier?.value === 'default'), 'and the decision: the consortium default, no Consent');
      assert.ok(toH3.entity.filter((e: any) => /^[A-Z][A-Za-z]+\/[^/]+\/_history\/\d+$/.test(e.what?.reference ?? '')).length >= held.h1.size, 'and every version that left');
      assert.deepEqual(toH3.purposeOfEvent[0].coding[0].code, 'TREAT');
    });

    it('does not link a patient with no shared identifier', async () => {
      const res = await h.h1.http.post('/fhir/Patient').set('Authorization', `Bearer ${h.h1.clinician}`).set('Content-Type', FHIR_JSON)
        .send(JSON.stringify({ resourceType: 'Patient', name: [{ family: 'Unlinked' }], identifier: [{ system: 'urn:local:mrn', value: 'u-1' }] }));
      assert.equal(res.status, 201);
      const id = body(res).id;
      const { entries } = await allPages(h.h1, `/fhir/Patient/${id}/$everything?federated=true`);
      assert.deepEqual(records(entries).map((e) => e.resource.resourceType), ['Patient']);
      assert.ok(outcomes(entries).some((i) => /carries no identifier in a system this consortium links/i.test(i.diagnostics ?? '')), JSON.stringify(outcomes(entries)));
    });

    describe('consent at the holder', () => {
      it("a Consent at h2 denying h1 removes exactly h2's part for h1, and nothing for h3", async () => {
        const consent = privacyConsent(patientId.h2, {
          type: 'deny',
          actor: [{ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] }, reference: { identifier: { system: 'urn:medblock:member', value: 'h1' } } }],
        });
        const res = await h.h2.http.post('/fhir/Consent').set('Authorization', `Bearer ${h.h2.clinician}`).set('Content-Type', FHIR_JSON).send(JSON.stringify(consent));
        assert.equal(res.status, 201, res.text);
        held.h2.set(`Consent/${body(res).id}`, body(res));
        await until('the Consent anchored', async () => (await h.h2.gateway.store.unanchored({ limit: 1 })).length === 0);

        const atH1 = await federated(h.h1);
        assertHolds('h1', atH1.entries, ['h1', 'h3']);
        assert.ok(outcomes(atH1.entries).some((i) => /h2/.test(i.diagnostics ?? '') && /refused|403/.test(i.diagnostics ?? '')), JSON.stringify(outcomes(atH1.entries)));
        await until('h3 sees the Consent anchored', async () => {
          const atH3 = await federated(h.h3);
          return compartmentKeys('h3', atH3.entries).length === expectedKeys(['h1', 'h2', 'h3']).length;
        });
        const atH3 = await federated(h.h3);
        assertHolds('h3', atH3.entries, ['h1', 'h2', 'h3']);
      });

      it('break-the-glass restores it, flagged in both access logs and counted on /metrics', async () => {
        const metric = async (at: Hospital, side: string) => {
          const text = (await at.http.get('/metrics')).text;
          return Number(new RegExp(`medblock_break_glass_total\\{side="${side}"\\} (\\d+)`).exec(text)?.[1] ?? 0);
        };
        const [holderBefore, requesterBefore] = [await metric(h.h2, 'holder'), await metric(h.h1, 'requester')];
        const btg = { 'X-Purpose-Of-Use': 'ETREAT', 'X-Break-Glass-Reason': 'unconscious in the emergency department' };
        const { entries } = await federated(h.h1, btg);
        assertHolds('h1', entries, ['h1', 'h2', 'h3']);
        assert.equal(await metric(h.h2, 'holder'), holderBefore + 1);
        assert.equal(await metric(h.h1, 'requester'), requesterBefore + 1);
        for (const at of [h.h1, h.h2]) {
          const flagged = body(await get(at, '/fhir/AuditEvent?_security=http://terminology.hl7.org/CodeSystem/v3-ActReason|BTG', {}, at.auditor)).entry ?? [];
          assert.ok(flagged.length >= 1, `${at.id} flags the break-the-glass`);
          assert.ok(!JSON.stringify(flagged).includes('unconscious'), 'the reason (free text) is not stored');
        }
      });
    });

    it("applies the caller's own Consents to its local part when the user states a purpose", async () => {
      const consent = privacyConsent(patientId.h1, {
        type: 'deny',
        purpose: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'HPAYMT' }],
        class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Observation' }],
      });
      const res = await h.h1.http.post('/fhir/Consent').set('Authorization', `Bearer ${h.h1.clinician}`).set('Content-Type', FHIR_JSON).send(JSON.stringify(consent));
      assert.equal(res.status, 201, res.text);
      held.h1.set(`Consent/${body(res).id}`, body(res));
      const { entries } = await federated(h.h1, { 'X-Purpose-Of-Use': 'HPAYMT' });
      const local = compartmentKeys('h1', entries).filter((k) => k.startsWith('h1 '));
      const expected = expectedKeys(['h1']).filter((k) => !k.startsWith('h1 Observation/'));
      assert.deepEqual(local.sort(), expected, "h1's part without its Observations");
      assert.ok(expected.length < held.h1.size);
      assert.ok(outcomes(entries).some((i) => /withheld by consent/.test(i.diagnostics ?? '')), JSON.stringify(outcomes(entries)));
      const treat = await federated(h.h1);
      assert.equal(compartmentKeys('h1', treat.entries).filter((k) => k.startsWith('h1 ')).length, held.h1.size, 'another purpose: all of it');
    });

    it('rejects and reports a resource a holder edits in flight; serves the rest of its part', async () => {
      // A holder that edits what it sends: a proxy presenting h2's certificate in front of h2's listener,
      // moved to by a quorum-approved address change on the ledger.
      const proxy = await editingProxy(fed, 'h2', h.h2.federationPort);
      try {
        await changeAddress(fed, 'h2', `https://127.0.0.1:${proxy.port}`);
        proxy.tamper = true;
        const { entries } = await federated(h.h3);
        const fromH2 = compartmentKeys('h3', entries).filter((k) => k.startsWith('h2 '));
        assert.equal(fromH2.length, held.h2.size - 1, 'all of h2 but the edited resource');
        assert.ok(!JSON.stringify(records(entries)).includes(proxy.marker), 'the edited value is never served');
        assert.ok(outcomes(entries).some((i) => /h2/.test(i.diagnostics ?? '') && /1 entr/.test(i.diagnostics ?? '') && /not-anchored/.test(i.diagnostics ?? '')), JSON.stringify(outcomes(entries)));
      } finally {
        proxy.tamper = false;
        await changeAddress(fed, 'h2', `https://127.0.0.1:${h.h2.federationPort}`);
        await proxy.close();
      }
    });

    it("reports a holder whose vault record was tampered with, and serves the other holders' parts", async () => {
      // Someone with write access to h2's database (no keys) flips a byte of one sealed version.
      const db = new Database(join(h.h2.dataDir, 'vault.sqlite'));
      const row = db.prepare("SELECT seq, content FROM versions WHERE type = 'Observation' LIMIT 1").get() as { seq: number; content: Buffer };
      const original = Buffer.from(row.content);
      const tampered = Buffer.from(original);
      tampered[tampered.length - 20] ^= 0x01;
      assert.equal(db.prepare('UPDATE versions SET content = ? WHERE seq = ?').run(tampered, row.seq).changes, 1);
      try {
        const res = await get(h.h3, `/fhir/Patient/${patientId.h3}/$everything?federated=true&_count=1000`);
        assert.equal(res.status, 200, 'never a 5xx for a holder\'s failure');
        const { entries } = await federated(h.h3);
        const keys = compartmentKeys('h3', entries);
        assertHolds('h3', entries.filter((e) => holderOf('h3', e) !== 'h2'), ['h1', 'h3']);
        assert.ok(outcomes(entries).some((i) => /h2/.test(i.diagnostics ?? '')), JSON.stringify(outcomes(entries)));
      } finally {
        db.prepare('UPDATE versions SET content = ? WHERE seq = ?').run(original, row.seq);
        db.close();
      }
    });

    it('refuses on the channel: a replayed and an expired assertion, a certificate from another CA', async () => {
      const h1 = loadMemberConsortium(fed.consortiumDir, 'h1');
      const url = `https://127.0.0.1:${h.h2.federationPort}/federation/fhir/metadata`;
      const asH1 = { cert: h1.tls.certificatePem, key: h1.tls.keyPem, ca: h1.caCertificatePem };
      const claims = { sub: 'h1-clinician', role: 'clinician', pou: 'TREAT' };
      const assertion = await createAssertion(h1.self, 'h2', claims);
      assert.equal((await rawMtlsFetch(url, asH1, { [ASSERTION_HEADER]: assertion })).status, 200);
      assert.equal((await rawMtlsFetch(url, asH1, { [ASSERTION_HEADER]: assertion })).status, 401, 'the same nonce again');
      const expired = await createAssertion(h1.self, 'h2', claims, { now: new Date(Date.now() - 10 * 60_000) });
      assert.equal((await rawMtlsFetch(url, asH1, { [ASSERTION_HEADER]: expired })).status, 401, 'expired');
      const stranger = await createConsortium({ members: ['h1'], channel: 'elsewhere' });
      const foreign = { cert: stranger.members[0].certPem, key: stranger.members[0].keyPem, ca: h1.caCertificatePem };
      await assert.rejects(rawMtlsFetch(url, foreign, { [ASSERTION_HEADER]: await createAssertion(h1.self, 'h2', claims) }), 'a certificate of another CA fails the handshake');
      await assert.rejects(rawMtlsFetch(url, { ca: h1.caCertificatePem }, {}), 'no client certificate fails the handshake');
    });

    it('gives a partial result naming a stopped member, never a 5xx', async () => {
      await h.h2.stop();
      try {
        const { entries } = await federated(h.h1);
        assertHolds('h1', entries, ['h1', 'h3']);
        assert.ok(outcomes(entries).some((i) => /h2/.test(i.diagnostics ?? '') && /unreachable|did not answer/.test(i.diagnostics ?? '')), JSON.stringify(outcomes(entries)));
      } finally {
        await h.h2.start();
      }
    });

    /** The members h1's own replica lists as holding the patient's link token. */
    const holdersSeenByH1 = async () => {
      const consortium = h.h1.gateway.ledger!.consortium;
      const [token] = patientLinkTokens(consortium.patientTokenKey, { identifier: [{ system: SSN_SYSTEM, value: ssn }] }, consortium.federation.linkIdentifierSystems);
      return (await h.h1.gateway.ledger!.service.holdersOfLink(token)).map((x) => x.hospital);
    };

    it('follows identifier corrections: h2 removing the SSN unlinks its part, restoring it links it again', async () => {
      const current = body(await get(h.h2, `/fhir/Patient/${patientId.h2}`));
      const put = (patient: unknown) => h.h2.http.put(`/fhir/Patient/${patientId.h2}`).set('Authorization', `Bearer ${h.h2.clinician}`).set('Content-Type', FHIR_JSON).send(JSON.stringify(patient));
      const withoutSsn = { ...current, identifier: current.identifier.filter((i: { system: string }) => i.system !== SSN_SYSTEM) };
      assert.equal((await put(withoutSsn)).status, 200);
      await until("h1's replica no longer lists h2", async () => !(await holdersSeenByH1()).includes('h2'));
      const unlinked = await federated(h.h1);
      assertHolds('h1', unlinked.entries, ['h1', 'h3']);
      assert.deepEqual(outcomes(unlinked.entries).filter((i) => i.severity !== 'information'), [], 'no error: h2 simply holds no one of that identifier now');
      assert.equal((await put({ ...withoutSsn, identifier: current.identifier })).status, 200);
      await until("h1's replica lists h2 again", async () => (await holdersSeenByH1()).includes('h2'));
      held.h2.set(`Patient/${patientId.h2}`, body(await get(h.h2, `/fhir/Patient/${patientId.h2}`)));
      // Asked by h3: h2's Consent (above) still denies h1.
      await until("h3's replica has h2's restored Patient", async () => compartmentKeys('h3', (await federated(h.h3)).entries).filter((k) => k.startsWith('h2 ')).length === held.h2.size);
      assertHolds('h3', (await federated(h.h3)).entries, ['h1', 'h2', 'h3']);
    });

    it('drops an erased patient from the index: after $erase at h2, h1 no longer asks h2', async () => {
      const eraser = await mintToken(h.h2.gateway.issuer, { subject: 'h2-privacy-officer', scope: 'user/*.cruds user/Patient.$erase' });
      const erased = await h.h2.http.post(`/fhir/Patient/${patientId.h2}/$erase`).set('Authorization', `Bearer ${eraser}`);
      assert.equal(erased.status, 200, erased.text);
      await until("h1's replica no longer lists h2", async () => !(await holdersSeenByH1()).includes('h2'));
      const { entries } = await federated(h.h1);
      assertHolds('h1', entries, ['h1', 'h3']);
      assert.deepEqual(outcomes(entries).filter((i) => i.severity !== 'information'), []);
    });

    it('refuses a revoked member: h3, revoked by h1 and h2, gets nothing from them', async () => {
      await submitConfig(h, fed.consortiumDir, { action: 'revokeMember', member: 'h3' });
      await until('h3 revoked on h1 and h2', () => ['h1', 'h2'].every((id) => {
        const member = h[id].gateway.ledger!.member;
        return !member.currentMembership().isActiveAt('h3', (member.headHeader()?.number ?? -1) + 1);
      }));
      const { entries } = await federated(h.h3);
      assertHolds('h3', entries, ['h3']);
      // h1 refuses it; h2 erased the patient (above), so the index names no one there to ask.
      assert.ok(outcomes(entries).some((i) => /member h1 refused the request \(HTTP 403\)/.test(i.diagnostics ?? '')), JSON.stringify(outcomes(entries)));
    });
  });
});

/** An active patient-privacy Consent of `patientId`: permit (opt-out), except what `exception` says. */
function privacyConsent(patientId: string, exception: Record<string, unknown>): Record<string, unknown> {
  return {
    resourceType: 'Consent', status: 'active',
    scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: { reference: `Patient/${patientId}` },
    dateTime: new Date().toISOString(),
    policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTOUT' }] },
    provision: { type: 'permit', provision: [exception] },
  };
}

/** Orders a config change approved by h1 and h2 (the quorum of three) through h1, and waits for all three to apply it. */
async function submitConfig(h: Record<string, Hospital>, consortiumDir: string, change: ConfigChange): Promise<void> {
  const approvers = [loadMemberConsortium(consortiumDir, 'h1'), loadMemberConsortium(consortiumDir, 'h2')];
  const before = h.h1.gateway.ledger!.member.headHeader()?.number ?? -1;
  await h.h1.gateway.ledger!.member.submit([quorumConfigEnvelope(approvers, change)]);
  await untilWithin(60_000, 100)('the config change committed everywhere', () =>
    ['h1', 'h2', 'h3'].every((id) => (h[id].gateway.ledger!.member.headHeader()?.number ?? -1) > before));
}

/** Moves `member`'s federation address by a quorum-approved config change. */
async function changeAddress(fed: TestFederation, member: string, address: string): Promise<void> {
  await submitConfig(fed.hospitals, fed.consortiumDir, { action: 'setFederationAddress', member, address } as ConfigChange);
}

interface EditingProxy {
  port: number;
  tamper: boolean;
  /** The value the proxy writes into the one resource it edits. */
  marker: string;
  close(): Promise<void>;
}

/**
 * A TLS server with `member`'s certificate forwarding to its real listener (as the asking member, whose
 * certificate the test holds), which, when `tamper` is set, changes one value of one resource in the answer.
 */
async function editingProxy(fed: TestFederation, member: string, upstreamPort: number): Promise<EditingProxy> {
  const self = loadMemberConsortium(fed.consortiumDir, member);
  const agents = new Map<string, Agent>();
  const proxy: EditingProxy = { port: 0, tamper: false, marker: '"value":987654.321', close: async () => {} };
  const server: Server = createHttpsServer({ cert: self.tls.certificatePem, key: self.tls.keyPem, ca: self.caCertificatePem, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, async (req, res) => {
    // Forward as the asking member: the assertion it signed must match the TLS peer upstream.
    const peerId = String((req.socket as TLSSocket).getPeerCertificate().subject.CN);
    const asker = loadMemberConsortium(fed.consortiumDir, peerId);
    let agent = agents.get(peerId);
    if (!agent) agents.set(peerId, (agent = new Agent({ connect: { cert: asker.tls.certificatePem, key: asker.tls.keyPem, ca: asker.caCertificatePem, minVersion: 'TLSv1.3', checkServerIdentity: () => undefined } })));
    const upstream = await fetch(`https://127.0.0.1:${upstreamPort}${req.url}`, { headers: { [ASSERTION_HEADER]: String(req.headers[ASSERTION_HEADER.toLowerCase()] ?? '') }, dispatcher: agent } as RequestInit);
    let text = await upstream.text();
    if (proxy.tamper) text = text.replace(/"valueQuantity":\{"value":[0-9.]+/, `"valueQuantity":{${proxy.marker}`);
    res.writeHead(upstream.status, { 'content-type': upstream.headers.get('content-type') ?? 'application/fhir+json' });
    res.end(text);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.port = (server.address() as AddressInfo).port;
  proxy.close = async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    for (const agent of agents.values()) await agent.close();
  };
  return proxy;
}
