/**
 * The federated record on a real gateway (vault + ledger), with fake consent / link-token / remote-holder
 * ports (the three-gateway test over the real channel is test/integration/federation.test.ts):
 * - the holder operation (src/federation/operations/everything.ts): anchored versions with salt and location
 *   that verify against the ledger, consent per type, 403 on a full deny, unanchored versions left out, paging;
 * - the caller's REST entry points (src/fhir/operations/federated.ts): 400 without federation, the merged
 *   record paged from a snapshot that another user cannot read, purpose headers, authorization.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { FederatedRecord } from '../../src/federation/federated-everything.ts';
import { linkToken, US_SSN_SYSTEM } from '../../src/federation/link-token.ts';
import { holderEverything, type HolderRequest } from '../../src/federation/operations/everything.ts';
import type { ConsentPort, DisclosureRecord } from '../../src/federation/ports.ts';
import { readHolderPage } from '../../src/federation/remote-check.ts';
import { FhirError } from '../../src/fhir/outcome.ts';
import { createApp } from '../../src/http/app.ts';
import { mintToken } from '../../src/access/tokens.ts';
import supertest from 'supertest';
import { body, FHIR_JSON, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { untilWithin } from '../support/until.ts';
import { bundleText, FakeHolders, FakeLedger, pagedHolder } from '../support/fake-holders.ts';

const until = untilWithin(10_000, 25);
const KEY = randomBytes(32);
const SSN = '999-59-2277';
const TOKEN = linkToken(KEY, US_SSN_SYSTEM, SSN);

const permitAll: ConsentPort = { decide: async () => ({ permits: () => true, breakTheGlass: false }) };

describe('federated record on a real gateway', () => {
  let gw: TestGateway;
  let patients: string[] = [];

  async function create(resource: object): Promise<string> {
    const res = await gw.http.post(`/fhir/${(resource as { resourceType: string }).resourceType}`).set('Authorization', `Bearer ${gw.admin}`).set('Content-Type', FHIR_JSON).send(resource);
    assert.equal(res.status, 201, res.text);
    return body(res).id;
  }

  async function anchoredAll(): Promise<boolean> {
    return (await gw.gateway.store.unanchored({ limit: 1000 })).length === 0;
  }

  before(async () => {
    gw = await startTestGateway();
    for (let p = 0; p < 2; p++) {
      const id = await create({ resourceType: 'Patient', identifier: [{ system: US_SSN_SYSTEM, value: SSN }], birthDate: '1970-01-01' });
      patients.push(id);
      for (let i = 0; i < 3; i++) {
        await create({ resourceType: 'Observation', status: 'final', code: { text: 'weight' }, subject: { reference: `Patient/${id}` }, valueQuantity: { value: Number(`7${i}.5`), unit: 'kg' } });
      }
      await create({ resourceType: 'Condition', subject: { reference: `Patient/${id}` }, code: { text: 'x' } });
    }
    patients = patients.sort();
    await until('every version anchored', anchoredAll);
  });
  after(() => gw.close());

  const holderRequest = (query: Array<[string, string]> = []): HolderRequest => ({
    peer: 'h1',
    assertion: { sub: 'dr-who', role: 'clinician', pou: 'TREAT', link: TOKEN },
    query,
  });
  const holderDeps = (over: Partial<Parameters<typeof holderEverything>[1]> = {}) => ({
    repo: gw.gateway.repo,
    linkedPatients: { patientsWithLinkToken: async (t: string) => (t === TOKEN ? patients : []) },
    consent: permitAll,
    baseUrl: 'https://holder.test/federation/fhir',
    ...over,
  });

  describe('the holder operation', () => {
    it('returns the linked patients\' compartments, each entry with a salt and location that verify against the ledger', async () => {
      const res = await holderEverything(holderRequest(), holderDeps());
      assert.equal(res.status, 200);
      const page = readHolderPage(res.body as string);
      assert.equal(page.candidates.length, 10);
      assert.equal(page.nextCursor, undefined);
      const ok = page.candidates.filter((c) => c.ok);
      assert.equal(ok.length, 10);
      const located = await gw.gateway.ledger!.store.locate(gw.gateway.ledger!.service.channel, ok.map((c) => c.commitment));
      for (const c of ok) {
        const at = located.get(c.commitment);
        assert.ok(at, `${c.type}/${c.id}: the recomputed commitment is anchored`);
        assert.deepEqual({ blockNumber: at.blockNumber, envelopeIndex: at.envelopeIndex, entryIndex: at.entryIndex }, c.anchor);
        assert.equal(at.creator, 'test-hospital');
      }
      assert.match(res.body as string, /"value":70\.5/, 'stored JSON served as stored');
    });

    it('pages across patients with _count and _cursor, never repeating or skipping', async () => {
      const seen: string[] = [];
      let cursor: string | undefined;
      let pages = 0;
      do {
        const res = await holderEverything(holderRequest([['_count', '3'], ...(cursor ? [['_cursor', cursor] as [string, string]] : [])]), holderDeps());
        const page = readHolderPage(res.body as string);
        assert.ok(page.candidates.length <= 3);
        seen.push(...page.candidates.map((c) => (c.ok ? `${c.type}/${c.id}` : 'bad')));
        cursor = page.nextCursor;
        pages++;
      } while (cursor && pages < 10);
      assert.equal(seen.length, 10);
      assert.equal(new Set(seen).size, 10);
    });

    it('sends only the types the consent decision permits, and records what left', async () => {
      const records: DisclosureRecord[] = [];
      const consent: ConsentPort = { decide: async () => ({ permits: (t) => t !== 'Condition', consent: 'Consent/c1/_history/2', breakTheGlass: false }) };
      const accessLog = { recordDisclosure: async (r: DisclosureRecord) => void records.push(r), recordFederatedRequest: async () => {} };
      const res = await holderEverything(holderRequest(), holderDeps({ consent, accessLog }));
      const types = readHolderPage(res.body as string).candidates.map((c) => (c.ok ? c.type : ''));
      assert.deepEqual([...new Set(types)].sort(), ['Observation', 'Patient']);
      assert.equal(records.length, 1);
      assert.deepEqual({ ...records[0], disclosed: records[0].disclosed.length }, {
        peer: 'h1', user: 'dr-who', role: 'clinician', purpose: 'TREAT', breakTheGlass: false, consents: ['Consent/c1/_history/2'], disclosed: 8, status: 200,
      });
      assert.ok(records[0].disclosed.every((d) => /^(Patient|Observation)\/[^/]+\/_history\/\d+$/.test(d)));
    });

    it('a consent that permits nothing: 403, recorded, nothing read out', async () => {
      const records: DisclosureRecord[] = [];
      const accessLog = { recordDisclosure: async (r: DisclosureRecord) => void records.push(r), recordFederatedRequest: async () => {} };
      const deny: ConsentPort = { decide: async () => ({ permits: () => false, breakTheGlass: false }) };
      await assert.rejects(holderEverything(holderRequest(), holderDeps({ consent: deny, accessLog })), (e: unknown) => e instanceof FhirError && e.status === 403);
      assert.deepEqual(records.map((r) => [r.status, r.disclosed.length]), [[403, 0]]);
    });

    it('an unknown link token: 404; unsupported parameters and malformed cursors: 400', async () => {
      const other = { ...holderRequest(), assertion: { ...holderRequest().assertion, link: 'x'.repeat(43) } };
      await assert.rejects(holderEverything(other, holderDeps()), (e: unknown) => e instanceof FhirError && e.status === 404);
      await assert.rejects(holderEverything(holderRequest([['_type', 'Observation']]), holderDeps()), (e: unknown) => e instanceof FhirError && e.status === 400);
      await assert.rejects(holderEverything(holderRequest([['_cursor', '0:zz']]), holderDeps()), (e: unknown) => e instanceof FhirError && e.status === 400);
    });

    it('answers a peer\'s hostile parameters with a 4xx or an empty page, never a 5xx, and never echoes them', async () => {
      const name = '123-45-6789';
      await assert.rejects(holderEverything(holderRequest([[name, 'x']]), holderDeps()), (e: unknown) => {
        assert.ok(e instanceof FhirError && e.status === 400);
        assert.doesNotMatch(JSON.stringify(e.outcome), new RegExp(name));
        return true;
      });
      for (const cursor of ['9999', '0:9999:a', '1:0:zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz', `0:0:${'9'.repeat(64)}`]) {
        const outcome = await holderEverything(holderRequest([['_cursor', cursor]]), holderDeps()).then(
          (r) => r.status,
          (e: unknown) => (e instanceof FhirError ? e.status : 500),
        );
        assert.ok(outcome === 200 || (outcome >= 400 && outcome < 500), `${cursor}: ${outcome}`);
      }
    });

    it('leaves out versions not anchored yet, and counts them', async () => {
      await gw.gateway.ledger!.publisher.stop();
      try {
        await create({ resourceType: 'Observation', status: 'final', code: { text: 'late' }, subject: { reference: `Patient/${patients[0]}` } });
        const page = readHolderPage((await holderEverything(holderRequest(), holderDeps())).body as string);
        assert.equal(page.candidates.length, 10);
        assert.equal(page.notYetAnchored, 1);
      } finally {
        gw.gateway.ledger!.publisher.start();
      }
      await until('the late version anchored', anchoredAll);
    });
  });

  describe('the caller\'s REST entry points', () => {
    let app: supertest.Agent;
    let remoteLedger: FakeLedger;

    before(async () => {
      // h1 (this gateway) asks a fake h2 whose entries the fake ledger says h2 anchored.
      remoteLedger = new FakeLedger();
      remoteLedger.link(TOKEN, 'h2', 'L'.repeat(43));
      const sent = [
        remoteLedger.anchor({ resourceType: 'Patient', id: 'far', identifier: [{ system: US_SSN_SYSTEM, value: SSN }] }, 'h2', 'L'.repeat(43)),
        ...[1, 2, 3].map((i) => remoteLedger.anchor({ resourceType: 'Observation', id: `far-${i}`, status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/far' } }, 'h2', 'L'.repeat(43))),
      ];
      const federation = new FederatedRecord({
        self: 'test-hospital',
        linkKey: KEY,
        linkSystems: [US_SSN_SYSTEM],
        ledger: remoteLedger,
        client: new FakeHolders({ h2: pagedHolder([bundleText(sent)]) }),
        linkedPatients: { patientsWithLinkToken: async (t) => (t === TOKEN ? patients : []) },
      });
      app = supertest.agent(createApp({ repo: gw.gateway.repo, issuer: gw.gateway.issuer, maxBodyBytes: 1 << 20, ledger: gw.gateway.ledger!.service, federation, baseUrl: gw.baseUrl }));
    });

    const get = (agent: supertest.Agent, url: string, token: string) => agent.get(url).set('Authorization', `Bearer ${token}`);

    it('federated=true on a gateway without federation: 400 saying so', async () => {
      // The gateway federates whenever it has a ledger: an app without the port stands for one that does not.
      const unfederated = supertest.agent(createApp({ repo: gw.gateway.repo, issuer: gw.gateway.issuer, maxBodyBytes: 1 << 20, ledger: gw.gateway.ledger!.service, baseUrl: gw.baseUrl }));
      const res = await get(unfederated, `/fhir/Patient/${patients[0]}/$everything?federated=true`, gw.admin);
      assert.equal(res.status, 400);
      assert.match(body(res).issue[0].diagnostics, /federation is not configured/);
      assert.equal((await get(unfederated, `/fhir/Patient/$everything?identifier=${encodeURIComponent(`${US_SSN_SYSTEM}|${SSN}`)}`, gw.admin)).status, 400);
    });

    it('merges the local record with the holder\'s, linked and attributed', async () => {
      const res = await get(app, `/fhir/Patient/${patients[0]}/$everything?federated=true`, gw.admin);
      assert.equal(res.status, 200, res.text);
      const bundle = body(res);
      const remote = bundle.entry.filter((e: any) => e.resource.meta?.source === 'urn:medblock:member:h2');
      assert.equal(remote.length, 4);
      assert.equal(bundle.total, 6 + 4, 'the local compartment (with the late Observation above) and the holder\'s');
      const local = bundle.entry.find((e: any) => e.fullUrl === `${gw.baseUrl}/Patient/${patients[0]}`);
      assert.deepEqual(local.resource.link, [{ other: { reference: 'https://h2.test:9443/federation/fhir/Patient/far' }, type: 'seealso' }]);
      assert.equal(bundle.entry.filter((e: any) => e.resource.resourceType === 'Provenance').length, 1);
    });

    it('pages the merged record from its snapshot; another user\'s cursor is refused', async () => {
      const first = body(await get(app, `/fhir/Patient/${patients[0]}/$everything?federated=true&_count=4`, gw.admin));
      const urls: string[] = first.entry.map((e: any) => e.fullUrl);
      let next = first.link.find((l: any) => l.relation === 'next')?.url as string | undefined;
      const firstNext = next!;
      while (next) {
        const page = body(await get(app, next.slice(gw.baseUrl.length - '/fhir'.length), gw.admin));
        urls.push(...page.entry.map((e: any) => e.fullUrl));
        next = page.link.find((l: any) => l.relation === 'next')?.url;
      }
      assert.equal(urls.length, 6 + 4 + 1, 'local, remote and the Provenance');
      assert.equal(new Set(urls).size, urls.length);
      const mallory = await mintToken(gw.gateway.issuer, { subject: 'mallory', scope: 'user/*.rs' });
      const stolen = await get(app, firstNext.slice(gw.baseUrl.length - '/fhir'.length), mallory);
      assert.equal(stolen.status, 400);
      assert.match(body(stolen).issue[0].diagnostics, /unknown or expired/);
    });

    it('by identifier, at the type level; the identifier never reaches a next link', async () => {
      const q = encodeURIComponent(`${US_SSN_SYSTEM}|${SSN}`);
      const res = await get(app, `/fhir/Patient/$everything?identifier=${q}&_count=3`, gw.admin);
      assert.equal(res.status, 200, res.text);
      const bundle = body(res);
      assert.equal(bundle.total, 11 + 4, 'both local patients carrying the SSN, and the holder\'s part');
      const next = bundle.link.find((l: any) => l.relation === 'next').url as string;
      assert.ok(!next.includes('999') && !next.includes('identifier'));
    });

    it('refuses a bad purpose, a break-the-glass reason without ETREAT, and a patient-bound token by identifier', async () => {
      const url = `/fhir/Patient/${patients[0]}/$everything?federated=true`;
      assert.equal((await get(app, url, gw.admin).set('X-Purpose-Of-Use', 'SNOOP')).status, 400);
      assert.equal((await get(app, url, gw.admin).set('X-Break-Glass-Reason', 'curious')).status, 400);
      assert.equal((await get(app, url, gw.admin).set('X-Purpose-Of-Use', 'ETREAT').set('X-Break-Glass-Reason', 'unconscious')).status, 200);
      const own = await gw.token('patient/*.rs', patients[1]);
      assert.equal((await get(app, url, own)).status, 404, "another patient's record");
      assert.equal((await get(app, `/fhir/Patient/$everything?identifier=${encodeURIComponent(`${US_SSN_SYSTEM}|${SSN}`)}`, own)).status, 403);
      assert.equal((await get(app, `/fhir/Patient/${patients[1]}/$everything?federated=true`, own)).status, 200);
    });
  });
});
