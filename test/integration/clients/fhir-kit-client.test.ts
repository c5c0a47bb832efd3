/**
 * fhir-kit-client (a JavaScript FHIR client written by others) drives a gateway over real HTTP, unchanged:
 * every interaction an app developer meets first, with the results checked, not just the status codes.
 */
import type { Bundle, BundleEntry, CapabilityStatement, Observation, OperationOutcome, Patient, Resource } from '@medplum/fhirtypes';
import { Client, type FhirResource } from 'fhir-kit-client';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { startTestGateway, type TestGateway } from '../../support/gateway.ts';
import { loadSyntheaPatient, type LoadedPatient } from './synthea-patient.ts';

let t: TestGateway;
let client: Client;
let buster: LoadedPatient;

before(async () => {
  t = await startTestGateway({ listen: true });
  client = new Client({ baseUrl: t.baseUrl, bearerToken: t.admin });
  buster = await loadSyntheaPatient(t);
});
after(async () => t.close());

/** The HTTP status, headers and OperationOutcome of a request the client reports as failed. */
async function failure(request: Promise<unknown>): Promise<{ status: number; headers: Headers; outcome: OperationOutcome }> {
  try {
    await request;
  } catch (e) {
    const { response, config } = e as { response?: { status: number; data: OperationOutcome }; config: { headers: Headers } };
    assert.ok(response, `not an HTTP failure: ${(e as Error).message}`);
    return { status: response.status, headers: config.headers, outcome: response.data };
  }
  assert.fail('the request succeeded; it should have failed');
}

/** fhir-kit-client types every resource as a plain record: these give them their FHIR types both ways. */
const got = async <T extends Resource>(response: Promise<FhirResource> | undefined): Promise<T> => (await response) as unknown as T;
const send = (resource: Resource): FhirResource => resource as unknown as FhirResource;

const header = (resource: unknown, name: string) => Client.httpFor(resource as FhirResource).response?.headers.get(name);
const status = (resource: unknown) => Client.httpFor(resource as FhirResource).response?.status;

/** A Patient with an identifier no other test uses. */
function newPatient(family = 'Kit'): Patient {
  return { resourceType: 'Patient', identifier: [{ system: 'urn:test:fhir-kit', value: randomUUID() }], name: [{ family, given: ['Client'] }] };
}
const identifierParam = (p: Patient) => `${p.identifier![0].system}|${p.identifier![0].value}`;

/** Every page of a search, from `first` on, following `next` with the client until there is none. */
async function allPages(first: Bundle): Promise<Bundle[]> {
  const pages = [first];
  for (;;) {
    assert.ok(pages.length <= 100, 'paging did not end within 100 pages');
    const next = client.nextPage({ bundle: pages.at(-1) as unknown as Parameters<Client['nextPage']>[0]['bundle'] });
    if (!next) return pages;
    pages.push(await got<Bundle>(next));
  }
}

const isMatch = (e: BundleEntry) => e.search?.mode !== 'include' && e.search?.mode !== 'outcome';

/** Checks that the pages of a search with `_count=count` hold exactly `expected` (`Type/id`s), once each, with links to the gateway. */
function assertPagedExactly(pages: Bundle[], expected: string[], count: number): void {
  const matches = pages.flatMap((p) => (p.entry ?? []).filter(isMatch));
  const refs = matches.map((e) => `${e.resource!.resourceType}/${e.resource!.id}`);
  assert.equal(new Set(refs).size, refs.length, 'no resource appears on two pages');
  assert.deepEqual([...refs].sort(), [...expected].sort(), 'the pages hold exactly the expected resources');
  assert.ok(pages.length >= Math.ceil(expected.length / count), `${pages.length} pages for ${expected.length} resources at _count=${count}`);
  pages.forEach((p, i) => {
    assert.equal(p.total, expected.length, `total on page ${i + 1}`);
    const onPage = (p.entry ?? []).filter(isMatch).length;
    assert.ok(onPage <= count, `page ${i + 1} holds ${onPage} matches, more than _count=${count}`);
    for (const l of p.link ?? []) assert.ok(l.url.startsWith(`${t.baseUrl}/`), `link ${l.relation} points at the gateway's base URL`);
  });
  for (const e of matches) assert.equal(e.fullUrl, `${t.baseUrl}/${e.resource!.resourceType}/${e.resource!.id}`);
}

describe('fhir-kit-client 2.0.3 against a listening gateway', () => {
  it('reads the capability statement without a token', async () => {
    const anonymous = new Client({ baseUrl: t.baseUrl });
    const cs = await got<CapabilityStatement>(anonymous.capabilityStatement());
    assert.equal(cs.resourceType, 'CapabilityStatement');
    assert.equal(cs.fhirVersion, '4.0.1');
    assert.equal(cs.kind, 'instance');
    const patient = cs.rest?.[0].resource?.find((r) => r.type === 'Patient');
    assert.ok(patient, 'Patient is listed');
    const interactions = patient.interaction?.map((i) => i.code) ?? [];
    for (const code of ['read', 'vread', 'update', 'delete', 'create', 'search-type', 'history-instance'] as const) {
      assert.ok(interactions.includes(code), `Patient supports ${code}`);
    }
  });

  it('creates, reads, updates and deletes a Patient, following the Location header it answers', async () => {
    const created = await got<Patient>(client.create({ resourceType: 'Patient', body: send(newPatient('Crud')) }));
    assert.equal(status(created), 201);
    assert.match(created.id!, /^[A-Za-z0-9\-.]{1,64}$/);
    assert.equal(created.meta?.versionId, '1');
    assert.deepEqual(created.name, [{ family: 'Crud', given: ['Client'] }]);
    const location = header(created, 'location');
    assert.equal(location, `${t.baseUrl}/Patient/${created.id}/_history/1`);
    assert.equal(header(created, 'etag'), 'W/"1"');

    const viaLocation = await got<Patient>(client.request(location!));
    assert.deepEqual(viaLocation, created);
    const read = await got<Patient>(client.read({ resourceType: 'Patient', id: created.id! }));
    assert.deepEqual(read, created);

    const updated = await got<Patient>(client.update({
      resourceType: 'Patient', id: created.id!, body: send({ ...read, birthDate: '1970-01-02', meta: undefined }),
    }));
    assert.equal(status(updated), 200);
    assert.equal(updated.meta?.versionId, '2');
    assert.equal(updated.birthDate, '1970-01-02');
    assert.equal((await got<Patient>(client.read({ resourceType: 'Patient', id: created.id! }))).birthDate, '1970-01-02');

    await client.delete({ resourceType: 'Patient', id: created.id! });
    const gone = await failure(client.read({ resourceType: 'Patient', id: created.id! }));
    assert.equal(gone.status, 410);
    assert.equal(gone.outcome.resourceType, 'OperationOutcome');
    const missing = await failure(client.read({ resourceType: 'Patient', id: randomUUID() }));
    assert.equal(missing.status, 404);
  });

  it('reads with _elements: only the elements asked for', async () => {
    const patient = await got<Patient>(client.request(`Patient/${buster.patientId}?_elements=name,gender`));
    assert.equal(patient.id, buster.patientId);
    assert.ok(patient.name?.length && patient.gender, 'the elements asked for are there');
    assert.deepEqual(Object.keys(patient).filter((k) => !['resourceType', 'id', 'meta', 'name', 'gender'].includes(k)), []);
  });

  it('gives ETags only where they name a version, and answers a repeated search in full', async () => {
    const patient = await got<Patient>(client.read({ resourceType: 'Patient', id: buster.patientId }));
    assert.equal(header(patient, 'etag'), `W/"${patient.meta?.versionId}"`);
    const searchParams = { patient: buster.patientId, _count: 5 };
    const first = await got<Bundle>(client.search({ resourceType: 'Observation', searchParams }));
    assert.equal(header(first, 'etag'), null, 'a search bundle has no version, so no ETag');
    assert.equal(header(await client.capabilityStatement(), 'etag'), null, 'no ETag on metadata');
    assert.equal((await failure(client.read({ resourceType: 'Patient', id: randomUUID() }))).headers.get('etag'), null, 'no ETag on an error');
    // A client that sends back whatever ETag it saw must still get the bundle, never an empty 304.
    const again = await got<Bundle>(client.search({ resourceType: 'Observation', searchParams, options: { headers: { 'If-None-Match': header(first, 'etag') ?? 'W/"1"' } } }));
    assert.equal(status(again), 200);
    assert.deepEqual(again.entry?.map((e) => e.resource?.id), first.entry?.map((e) => e.resource?.id));
  });

  it('vreads every version, each as it was', async () => {
    const v1 = await got<Patient>(client.create({ resourceType: 'Patient', body: send(newPatient('Before')) }));
    await client.update({ resourceType: 'Patient', id: v1.id!, body: send({ ...v1, meta: undefined, name: [{ family: 'After' }] }) });
    const old = await got<Patient>(client.vread({ resourceType: 'Patient', id: v1.id!, version: '1' }));
    assert.deepEqual(old, v1);
    const now = await got<Patient>(client.vread({ resourceType: 'Patient', id: v1.id!, version: '2' }));
    assert.equal(now.meta?.versionId, '2');
    assert.deepEqual(now.name, [{ family: 'After' }]);
    assert.equal((await failure(client.vread({ resourceType: 'Patient', id: v1.id!, version: '3' }))).status, 404);
  });

  it('updates with If-Match: the current version wins, a stale one gets 412 and changes nothing', async () => {
    const v1 = await got<Patient>(client.create({ resourceType: 'Patient', body: send(newPatient('Match')) }));
    const body = (gender: Patient['gender']) => send({ ...v1, meta: undefined, gender });
    const v2 = await got<Patient>(client.update({ resourceType: 'Patient', id: v1.id!, body: body('female'), options: { headers: { 'If-Match': 'W/"1"' } } }));
    assert.equal(v2.meta?.versionId, '2');
    assert.equal(v2.gender, 'female');

    const stale = await failure(client.update({ resourceType: 'Patient', id: v1.id!, body: body('male'), options: { headers: { 'If-Match': 'W/"1"' } } }));
    assert.equal(stale.status, 412);
    const current = await got<Patient>(client.read({ resourceType: 'Patient', id: v1.id! }));
    assert.equal(current.meta?.versionId, '2');
    assert.equal(current.gender, 'female');
  });

  it('creates conditionally with If-None-Exist: the second create finds the first, no duplicate', async () => {
    const patient = newPatient('Once');
    const ifNoneExist = { headers: { 'If-None-Exist': `identifier=${identifierParam(patient)}` } };
    const first = await got<Patient>(client.create({ resourceType: 'Patient', body: send(patient), options: ifNoneExist }));
    assert.equal(status(first), 201);
    const second = await got<Patient>(client.create({ resourceType: 'Patient', body: send(patient), options: ifNoneExist }));
    assert.equal(status(second), 200);
    assert.equal(second.id, first.id);
    const found = await got<Bundle>(client.search({ resourceType: 'Patient', searchParams: { identifier: identifierParam(patient) } }));
    assert.equal(found.total, 1);
    assert.deepEqual(found.entry?.map((e) => e.resource?.id), [first.id]);
  });

  it('updates conditionally: the first PUT by identifier creates, the second updates the same resource', async () => {
    const patient = newPatient('Conditional');
    const searchParams = { identifier: identifierParam(patient) };
    const created = await got<Patient>(client.update({ resourceType: 'Patient', searchParams, body: send(patient) }));
    assert.equal(status(created), 201);
    assert.equal(created.meta?.versionId, '1');
    const updated = await got<Patient>(client.update({ resourceType: 'Patient', searchParams, body: send({ ...patient, active: true }) }));
    assert.equal(status(updated), 200);
    assert.equal(updated.id, created.id);
    assert.equal(updated.meta?.versionId, '2');
    assert.equal(updated.active, true);
    const found = await got<Bundle>(client.search({ resourceType: 'Patient', searchParams }));
    assert.deepEqual(found.entry?.map((e) => e.resource?.id), [created.id]);
  });

  it('pages a search of real Synthea Observations to exhaustion, with total on every page', async () => {
    const expected = buster.ids.get('Observation')!.map((id) => `Observation/${id}`);
    assert.equal(expected.length, 33);
    const first = await got<Bundle>(client.search({ resourceType: 'Observation', searchParams: { patient: buster.patientId, _count: 10 } }));
    const pages = await allPages(first);
    assert.equal(pages.length, 4);
    assertPagedExactly(pages, expected, 10);
    for (const e of pages.flatMap((p) => p.entry ?? [])) assert.equal((e.resource as Observation).subject?.reference, `Patient/${buster.patientId}`);
  });

  it('searches by POST to _search with a form-encoded body, and pages on', async () => {
    const expected = buster.ids.get('Observation')!.map((id) => `Observation/${id}`);
    const first = await got<Bundle>(client.search({
      resourceType: 'Observation', searchParams: { patient: buster.patientId, _count: 10 }, options: { postSearch: true },
    }));
    assertPagedExactly(await allPages(first), expected, 10);
  });

  it('searches a patient compartment (Patient/{id}/Observation)', async () => {
    const expected = buster.ids.get('Observation')!.map((id) => `Observation/${id}`);
    const first = await got<Bundle>(client.search({
      resourceType: 'Observation', compartment: { resourceType: 'Patient', id: buster.patientId }, searchParams: { _count: 10 },
    }));
    assertPagedExactly(await allPages(first), expected, 10);
    const encounters = await got<Bundle>(client.compartmentSearch({
      resourceType: 'Encounter', compartment: { resourceType: 'Patient', id: buster.patientId },
    }));
    assert.deepEqual(encounters.entry?.map((e) => e.resource?.id).sort(), [...buster.ids.get('Encounter')!].sort());
  });

  it('searches the whole system by _id and by _type', async () => {
    const byId = await got<Bundle>(client.systemSearch({ searchParams: { _id: buster.patientId } }));
    assert.deepEqual(byId.entry?.map((e) => `${e.resource?.resourceType}/${e.resource?.id}`), [`Patient/${buster.patientId}`]);
    assert.equal(byId.total, 1);
    const byType = await got<Bundle>(client.systemSearch({ searchParams: { _type: 'Organization,Practitioner', _count: 100 } }));
    const types = new Set(byType.entry?.map((e) => e.resource?.resourceType));
    assert.deepEqual([...types].sort(), ['Organization', 'Practitioner']);
    const refs = byType.entry!.map((e) => `${e.resource?.resourceType}/${e.resource?.id}`);
    assert.ok(refs.includes(`Organization/${buster.ids.get('Organization')![0]}`));
    assert.ok(refs.includes(`Practitioner/${buster.ids.get('Practitioner')![0]}`));
  });

  /** A Patient created, updated and deleted; returns its id, what the DELETE answered and its history. */
  async function threeVersions(family: string) {
    const created = await got<Patient>(client.create({ resourceType: 'Patient', body: send(newPatient(family)) }));
    await client.update({ resourceType: 'Patient', id: created.id!, body: send({ ...created, meta: undefined, active: false }) });
    const deleted = await client.delete({ resourceType: 'Patient', id: created.id! });
    const history = await got<Bundle>(client.resourceHistory({ resourceType: 'Patient', id: created.id! }));
    return { id: created.id!, deleted, history };
  }

  it('reads an instance history, newest first, with its total', async () => {
    const { id, history } = await threeVersions('History');
    assert.equal(history.type, 'history');
    const entries = history.entry as BundleEntry[];
    assert.deepEqual(entries.map((e) => e.request?.method), ['DELETE', 'PUT', 'POST']);
    assert.deepEqual(entries.map((e) => e.request?.url), [`Patient/${id}`, `Patient/${id}`, 'Patient']);
    assert.deepEqual(entries.slice(1).map((e) => e.resource?.meta?.versionId), ['2', '1']);
    assert.equal((entries[1].resource as Patient).active, false);
    assert.equal(entries[0].resource, undefined, 'a deletion carries no resource');
    assert.equal(history.total, 3);
  });

  it('records a DELETE in the history with the answer the client got for it', async () => {
    const { deleted, history } = await threeVersions('Deleted');
    const entry = history.entry![0];
    assert.equal(entry.request?.method, 'DELETE');
    assert.equal(entry.response?.status.split(' ')[0], String(status(deleted)));
    assert.equal(entry.response?.etag, header(deleted, 'etag'));
  });

  it('commits a transaction whose references use urn:uuid, rewritten to the assigned ids', async () => {
    const patientUrn = `urn:uuid:${randomUUID()}`;
    const response = await got<Bundle>(client.transaction({
      body: send({
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [
          { fullUrl: patientUrn, resource: newPatient('Transaction'), request: { method: 'POST', url: 'Patient' } },
          {
            fullUrl: `urn:uuid:${randomUUID()}`,
            resource: {
              resourceType: 'Observation', status: 'final', code: { text: 'body weight' }, subject: { reference: patientUrn },
              valueQuantity: { value: 72.50, unit: 'kg', system: 'http://unitsofmeasure.org', code: 'kg' },
            },
            request: { method: 'POST', url: 'Observation' },
          },
        ],
      }),
    }));
    assert.equal(response.type, 'transaction-response');
    assert.deepEqual(response.entry?.map((e) => e.response?.status.split(' ')[0]), ['201', '201']);
    const [patientRef, observationRef] = response.entry!.map((e) => e.response!.location!.split('/_history/')[0]);
    assert.match(patientRef, /^Patient\/[^/]+$/);
    const [, observationId] = observationRef.split('/');
    const observation = await got<Observation>(client.read({ resourceType: 'Observation', id: observationId }));
    assert.equal(observation.subject?.reference, patientRef);
    assert.equal(observation.valueQuantity?.value, 72.5);
  });

  it('answers a batch entry by entry: a create, a read of a real patient and a read of a missing one', async () => {
    const response = await got<Bundle>(client.batch({
      body: send({
        resourceType: 'Bundle',
        type: 'batch',
        entry: [
          { resource: newPatient('Batch'), request: { method: 'POST', url: 'Patient' } },
          { request: { method: 'GET', url: `Patient/${buster.patientId}` } },
          { request: { method: 'GET', url: `Patient/${randomUUID()}` } },
        ],
      }),
    }));
    assert.equal(response.type, 'batch-response');
    const [created, read, missing] = response.entry!;
    assert.equal(created.response?.status.split(' ')[0], '201');
    const createdId = created.response!.location!.split('/')[1];
    assert.deepEqual((await got<Patient>(client.read({ resourceType: 'Patient', id: createdId }))).name, [{ family: 'Batch', given: ['Client'] }]);
    assert.equal(read.response?.status.split(' ')[0], '200');
    assert.equal(read.resource?.id, buster.patientId);
    assert.equal(missing.response?.status.split(' ')[0], '404');
    assert.equal(missing.response?.outcome?.resourceType, 'OperationOutcome');
  });

  describe('$everything of a real Synthea patient', () => {
    /** Every page of `$everything` must hold the whole record once, its referenced resources included once. */
    function assertWholeRecord(pages: Bundle[], count: number) {
      const refs = pages.flatMap((p) => (p.entry ?? []).map((e) => `${e.resource!.resourceType}/${e.resource!.id}`));
      assert.equal(new Set(refs).size, refs.length, 'no resource appears twice across the pages');
      assert.deepEqual([...refs].sort(), [...buster.references].sort(), 'the pages hold the patient’s whole record');
      // Bundle.total counts the matches (the compartment), not the referenced resources included with them.
      const matches = pages.flatMap((p) => (p.entry ?? []).filter((e) => e.search?.mode === 'match'));
      assert.ok(matches.length > 0 && matches.length < refs.length, 'the record holds both matches and included resources');
      pages.forEach((p, i) => {
        assert.equal(p.total, matches.length, `total on page ${i + 1}`);
        assert.ok((p.entry ?? []).length <= count, `page ${i + 1} holds ${(p.entry ?? []).length} entries, more than _count=${count}`);
      });
    }

    it('by GET, paged with _count to exhaustion', async () => {
      const first = await got<Bundle>(client.operation({
        name: '$everything', resourceType: 'Patient', id: buster.patientId, method: 'GET', input: { _count: 20 },
      }));
      assertWholeRecord(await allPages(first), 20);
    });

    it('by POST with a Parameters body, paged with _count to exhaustion', async () => {
      const first = await got<Bundle>(client.operation({
        name: '$everything', resourceType: 'Patient', id: buster.patientId, method: 'POST',
        input: { resourceType: 'Parameters', parameter: [{ name: '_count', valueInteger: 20 }] },
      }));
      assertWholeRecord(await allPages(first), 20);
    });
  });
});
