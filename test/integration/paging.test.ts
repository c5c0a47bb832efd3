/**
 * Paging and result shaping as FHIR clients use them: $everything by GET and POST with _count, totals on
 * every page (_total, _totalMethod), compartment and system search, POST _search, _elements on read,
 * history totals and DELETE entries, lenient handling, and numbers beyond 2^53.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { body, FHIR_DATA, FHIR_JSON, forEachStore, type TestGateway } from '../support/gateway.ts';

type R = Record<string, any>;
const BASE = 'http://gateway.test/fhir';

forEachStore((start, store) => {
  let t: TestGateway;
  const auth = (token?: string) => ({ Authorization: `Bearer ${token ?? t.admin}` });
  const get = (path: string, token?: string) => t.http.get(`/fhir/${path}`).set(auth(token));
  const post = (path: string, resource: unknown) =>
    t.http.post(`/fhir/${path}`).set(auth()).set('Content-Type', FHIR_JSON).send(JSON.stringify(resource));
  const relative = (url: string) => url.slice(BASE.length).replace(/^\//, '');

  /** Every page of a searchset, following next links; the bundles as returned. */
  async function pages(first: () => Promise<{ status: number; text: string }>, token?: string): Promise<R[]> {
    const out: R[] = [];
    let res = await first();
    for (;;) {
      assert.equal(res.status, 200, res.text);
      const bundle = body(res);
      out.push(bundle);
      const next = bundle.link.find((l: R) => l.relation === 'next');
      if (!next) return out;
      res = await get(relative(next.url), token);
    }
  }
  const entriesOf = (bundles: R[]) => bundles.flatMap((b) => b.entry ?? []);
  const fullUrls = (bundles: R[]) => entriesOf(bundles).map((e: R) => e.fullUrl);

  // A patient whose Encounters refer, in rotation, to practitioners and organizations outside the compartment.
  let patientId: string;
  let otherPatientId: string;
  const practitioners: string[] = [];
  const organizations: string[] = [];
  const encounters: string[] = [];
  const observations: string[] = [];
  let hoegerId: string;

  before(async () => {
    t = await start();
    patientId = body(await post('Patient', { resourceType: 'Patient', name: [{ family: 'Paging' }] })).id;
    otherPatientId = body(await post('Patient', { resourceType: 'Patient', name: [{ family: 'Other' }] })).id;
    for (let i = 0; i < 4; i++) practitioners.push(body(await post('Practitioner', { resourceType: 'Practitioner', name: [{ family: `Doc${i}` }] })).id);
    for (let i = 0; i < 3; i++) organizations.push(body(await post('Organization', { resourceType: 'Organization', name: `Org${i}` })).id);
    for (let i = 0; i < 23; i++) {
      const enc = await post('Encounter', {
        resourceType: 'Encounter', status: 'finished', class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' },
        subject: { reference: `Patient/${patientId}` },
        participant: [{ individual: { reference: `Practitioner/${practitioners[i % 4]}` } }],
        serviceProvider: { reference: `Organization/${organizations[i % 3]}` },
      });
      encounters.push(body(enc).id);
      const obs = await post('Observation', {
        resourceType: 'Observation', status: 'final',
        code: { coding: [{ system: 'http://loinc.org', code: i % 2 ? '8867-4' : '29463-7' }] },
        subject: { reference: `Patient/${patientId}` },
        valueQuantity: { value: 60 + i, unit: 'kg', system: 'http://unitsofmeasure.org', code: 'kg' },
      });
      observations.push(body(obs).id);
    }
    await post('Observation', {
      resourceType: 'Observation', status: 'final', code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
      subject: { reference: `Patient/${otherPatientId}` },
    });
    const text = readFileSync(join(FHIR_DATA, 'synthea', 'smart-2019', 'Buster_Hoeger_ad2e3fc5-2b5d-4cb9-8d03-9ea0f4ac8423.json'), 'utf8');
    const tx = await t.http.post('/fhir').set(auth()).set('Content-Type', FHIR_JSON).send(text);
    assert.equal(tx.status, 200, tx.text.slice(0, 300));
    hoegerId = body(tx).entry.find((e: R) => e.response.location.startsWith('Patient/')).response.location.split('/')[1];
  });
  after(async () => t?.close());

  describe('$everything', () => {
    // The Synthea record pages the same store queries again: once, on the embedded default, is enough.
    for (const who of store === 'sqlite' ? (['synthetic', 'Synthea'] as const) : (['synthetic'] as const)) {
      it(`${who}: pages of _count=10 hold at most 10 entries, never repeat one, and together are the unpaged result`, async () => {
        const id = who === 'synthetic' ? patientId : hoegerId;
        const whole = await pages(() => get(`Patient/${id}/$everything`));
        assert.equal(whole.length, 1);
        const expected = fullUrls(whole);
        const paged = await pages(() => get(`Patient/${id}/$everything?_count=10`));
        for (const page of paged) assert.ok((page.entry ?? []).length <= 10, 'a page holds at most _count entries');
        const union = fullUrls(paged);
        assert.equal(new Set(union).size, union.length, 'no entry on two pages');
        assert.deepEqual([...union].sort(), [...expected].sort());
        assert.equal(paged.length, Math.ceil(expected.length / 10));
        // total counts the matches, on every page.
        const matches = entriesOf(whole).filter((e: R) => e.search.mode === 'match').length;
        for (const page of [...whole, ...paged]) assert.equal(page.total, matches);
        // Referenced resources outside the compartment are included once, after the compartment.
        const included = entriesOf(paged).filter((e: R) => e.search.mode === 'include').map((e: R) => e.fullUrl);
        if (who === 'synthetic') {
          assert.equal(matches, 1 + 23 + 23);
          assert.deepEqual([...included].sort(), [
            ...organizations.map((o) => `${BASE}/Organization/${o}`),
            ...practitioners.map((p) => `${BASE}/Practitioner/${p}`),
          ].sort());
        }
        const modes = entriesOf(paged).map((e: R) => e.search.mode);
        assert.deepEqual(modes, [...modes].sort((a, b) => (a === b ? 0 : a === 'match' ? -1 : 1)), 'every match before every include');
      });
    }

    it('POST with a Parameters body or query parameters pages like GET', async () => {
      const viaGet = fullUrls(await pages(() => get(`Patient/${patientId}/$everything?_count=7&_type=Patient,Encounter`)));
      const viaBody = await pages(() => post(`Patient/${patientId}/$everything`, {
        resourceType: 'Parameters',
        parameter: [{ name: '_count', valueInteger: 7 }, { name: '_type', valueString: 'Patient,Encounter' }],
      }));
      assert.deepEqual(fullUrls(viaBody), viaGet);
      assert.ok(viaBody[0].link.find((l: R) => l.relation === 'next').url.includes('_count=7'));
      const viaQuery = await pages(() => t.http.post(`/fhir/Patient/${patientId}/$everything?_count=7&_type=Patient,Encounter`).set(auth()));
      assert.deepEqual(fullUrls(viaQuery), viaGet);
      assert.equal(viaGet.filter((u) => u.includes('/Encounter/')).length, 23);
      const bad = await post(`Patient/${patientId}/$everything`, { resourceType: 'Patient' });
      assert.equal(bad.status, 400);
    });

    it('a patient-bound token gets the same answer for another patient as for a missing one', async () => {
      const token = await t.token('patient/*.rs', otherPatientId);
      const other = await get(`Patient/${patientId}/$everything`, token);
      const missing = await get('Patient/no-such-patient/$everything', token);
      assert.equal(other.status, 404);
      assert.deepEqual(body(other), body(missing));
      const own = await pages(() => get(`Patient/${otherPatientId}/$everything`, token), token);
      assert.equal(own[0].total, 2);
    });
  });

  describe('search totals and _total', () => {
    it('every page carries the total; _total=none leaves it out; _totalMethod=count with _count=0 counts (fhirpy)', async () => {
      const paged = await pages(() => get(`Observation?patient=${patientId}&_count=5`));
      assert.equal(paged.length, 5);
      for (const page of paged) assert.equal(page.total, 23);
      // With a post-filter (a quantity comparison) too.
      const filtered = await pages(() => get(`Observation?patient=${patientId}&value-quantity=ge70&_count=4`));
      for (const page of filtered) assert.equal(page.total, 13);
      assert.equal(entriesOf(filtered).length, 13);
      const none = await pages(() => get(`Observation?patient=${patientId}&_count=5&_total=none`));
      for (const page of none) assert.equal(page.total, undefined);
      assert.ok(none[0].link[0].url.includes('_total=none'));
      for (const mode of ['accurate', 'estimate']) assert.equal(body(await get(`Observation?patient=${patientId}&_total=${mode}`)).total, 23);
      const count = body(await get(`Observation?patient=${patientId}&_count=0&_totalMethod=count`));
      assert.equal(count.total, 23);
      assert.equal(count.entry, undefined);
      assert.equal((await get('Observation?_total=sometimes')).status, 400);
    });

    it('history bundles carry the total, and a DELETE entry agrees with the DELETE answer', async () => {
      const created = body(await post('Patient', { resourceType: 'Patient', name: [{ family: 'Deleted' }] }));
      await t.http.put(`/fhir/Patient/${created.id}`).set(auth()).set('Content-Type', FHIR_JSON)
        .send(JSON.stringify({ ...created, active: true }));
      const del = await t.http.delete(`/fhir/Patient/${created.id}`).set(auth());
      const history = await pages(() => get(`Patient/${created.id}/_history?_count=2`));
      assert.equal(history.length, 2);
      for (const page of history) assert.equal(page.total, 3);
      const entries = entriesOf(history);
      assert.deepEqual(entries.map((e: R) => e.request.method), ['DELETE', 'PUT', 'POST']);
      assert.equal(entries[0].response.status, `${del.status} OK`);
      assert.deepEqual(entries.map((e: R) => e.response.status), ['200 OK', '200 OK', '201 Created']);
      const typeHistory = body(await get('Practitioner/_history?_count=1'));
      assert.equal(typeHistory.entry.length, 1);
      assert.equal(typeHistory.total, body(await get('Practitioner?_summary=count')).total, 'Practitioners are never updated');
      assert.equal(body(await get('_history?_count=0')).entry, undefined);
    });
  });

  describe('compartment, system and POST search', () => {
    it('Patient/[id]/Observation is the Observation search within the compartment; no existence oracle', async () => {
      const viaCompartment = await pages(() => get(`Patient/${patientId}/Observation?code=8867-4&_count=4`));
      const viaSearch = await pages(() => get(`Observation?patient=${patientId}&code=8867-4&_count=4`));
      assert.deepEqual(fullUrls(viaCompartment), fullUrls(viaSearch));
      assert.equal(viaCompartment[0].total, 11);
      assert.ok(viaCompartment[0].link[0].url.startsWith(`${BASE}/Patient/${patientId}/Observation?`));
      const all = body(await get(`Patient/${patientId}/Encounter`));
      assert.equal(all.total, 23);
      // A missing patient and another patient under a patient-bound token: both an empty searchset.
      const token = await t.token('patient/*.rs', otherPatientId);
      const missing = body(await get('Patient/no-such-patient/Observation'));
      const hidden = body(await get(`Patient/${patientId}/Observation`, token));
      assert.equal(missing.total, 0);
      assert.equal(hidden.total, 0);
      assert.equal(hidden.entry, undefined);
      assert.equal(body(await get(`Patient/${otherPatientId}/Observation`, token)).total, 1);
      assert.equal((await get(`Patient/${patientId}/Practitioner`)).status, 400);
    });

    it('system search by _id and _type pages across types with a total on every page', async () => {
      const byId = body(await get(`?_id=${patientId},${encounters[0]},${practitioners[0]}`));
      assert.deepEqual(byId.entry.map((e: R) => `${e.resource.resourceType}/${e.resource.id}`).sort(),
        [`Encounter/${encounters[0]}`, `Patient/${patientId}`, `Practitioner/${practitioners[0]}`].sort());
      assert.equal(byId.total, 3);
      const typed = await pages(() => get('?_type=Practitioner,Organization&_count=3'));
      assert.ok(typed.length >= 3);
      const expected = [...practitioners.map((p) => `Practitioner/${p}`), ...organizations.map((o) => `Organization/${o}`)];
      const got = entriesOf(typed).map((e: R) => `${e.resource.resourceType}/${e.resource.id}`);
      for (const key of expected) assert.ok(got.includes(key), key);
      assert.equal(new Set(got).size, got.length);
      for (const page of typed) assert.equal(page.total, got.length);
      assert.equal(body(await get('?_type=Organization&_summary=count')).total, got.filter((k) => k.startsWith('Organization/')).length);
      const unsupported = await get('?name=x');
      assert.equal(unsupported.status, 400);
      assert.equal(body(unsupported).issue[0].code, 'not-supported');
      const lenient = await get(`?_id=${patientId}&name=x`).set('Prefer', 'handling=lenient');
      assert.equal(body(lenient).total, 1);
      assert.equal((await get('?_type=NotAType')).status, 400);
      // A patient-bound token sees only its compartment.
      const token = await t.token('patient/*.rs', otherPatientId);
      const own = body(await get(`?_type=Patient,Observation`, token));
      assert.deepEqual(own.entry.map((e: R) => e.resource.subject?.reference ?? `Patient/${e.resource.id}`), [`Patient/${otherPatientId}`, `Patient/${otherPatientId}`]);
    });

    it('POST [type]/_search and POST _search answer like GET', async () => {
      const viaGet = body(await get(`Observation?patient=${patientId}&code=8867-4`));
      const viaPost = body(await t.http.post(`/fhir/Observation/_search?patient=${patientId}&code=8867-4`).set(auth()));
      assert.deepEqual(viaPost.entry.map((e: R) => e.fullUrl), viaGet.entry.map((e: R) => e.fullUrl));
      assert.equal(viaPost.total, 11);
      const system = body(await t.http.post(`/fhir/_search?_id=${patientId}`).set(auth()));
      assert.equal(system.entry[0].resource.id, patientId);
    });
  });

  describe('_elements, unsupported parameters and numbers', () => {
    it('_elements on search accepts id and resourceType; on read and vread it subsets and tags SUBSETTED', async () => {
      const searched = body(await get(`Patient?_id=${patientId}&_elements=id,resourceType,name`));
      assert.deepEqual(Object.keys(searched.entry[0].resource).sort(), ['id', 'meta', 'name', 'resourceType']);
      for (const path of [`Patient/${patientId}?_elements=name`, `Patient/${patientId}/_history/1?_elements=name,id`]) {
        const res = await get(path);
        assert.equal(res.status, 200, res.text);
        const r = body(res);
        assert.deepEqual(Object.keys(r).sort(), ['id', 'meta', 'name', 'resourceType'], path);
        assert.ok(r.meta.tag.some((tag: R) => tag.system === 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue' && tag.code === 'SUBSETTED'));
        assert.equal(res.headers.etag, 'W/"1"');
      }
      assert.equal((await get(`Patient/${patientId}?_elements=notAnElement`)).status, 400);
    });

    it('unknown parameters on read and vread: 400 when strict, ignored when lenient', async () => {
      for (const path of [`Patient/${patientId}?foo=bar`, `Patient/${patientId}/_history/1?foo=bar`]) {
        const strict = await get(path);
        assert.equal(strict.status, 400);
        assert.equal(body(strict).issue[0].code, 'not-supported');
        const lenient = await get(path).set('Prefer', 'handling=lenient');
        assert.equal(lenient.status, 200);
        assert.equal(body(lenient).id, patientId);
      }
    });

    it('lenient search ignores unknown parameters and leaves them out of the self link', async () => {
      const strict = await get(`Observation?patient=${patientId}&foo=bar`);
      assert.equal(strict.status, 400);
      const lenient = body(await get(`Observation?patient=${patientId}&foo=bar&name:contains=x`).set('Prefer', 'handling=lenient'));
      assert.equal(lenient.total, 23);
      assert.equal(lenient.link[0].url, `${BASE}/Observation?patient=${patientId}`);
      // A malformed value is still an error.
      assert.equal((await get('Observation?date=yesterday').set('Prefer', 'handling=lenient')).status, 400);
    });

    it('numbers beyond 2^53 are refused, not rounded', async () => {
      for (const path of [
        'Observation?_count=9007199254740993',
        'Observation?value-quantity=9007199254740993',
        'Observation?value-quantity=1e400',
        'Observation?_sort=date&_cursor=k9007199254740993.abc',
        `Patient/${patientId}/$everything?_count=99999999999999999999`,
        '_history?_count=9007199254740993',
      ]) {
        const res = await get(path);
        assert.equal(res.status, 400, path);
      }
      assert.equal(body(await get(`Observation?patient=${patientId}&value-quantity=le9007199254740992`)).total, 23);
    });

    it('error texts name the parameter, never the value sent', async () => {
      const secret = 'Jane-Secret-Doe';
      for (const path of [
        `Observation?subject=${secret}%20x`, `Observation?date=${secret}`, `Observation?value-quantity=${secret}`,
        `Observation?_id=${secret}!`, `Patient?_summary=${secret}`, `Observation?_elements=${secret}`, `Observation?_sort=${secret}`,
        `Observation?_include=Observation:${secret}`, `Observation?_lastUpdated=${secret}`, `Patient/${secret}!`, `Patient/${secret}`,
        `Patient/${secret}/_history/99`, `Patient/${secret}/$everything`, `Observation?_total=${secret}`,
      ]) {
        const res = await get(path);
        assert.ok(res.status >= 400 && res.status < 500, `${path}: ${res.status}`);
        assert.ok(!res.text.includes(secret), `${path}: ${res.text}`);
      }
    });
  });
});
