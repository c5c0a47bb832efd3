import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { body, FHIR_JSON, forEachStore, type TestGateway } from '../support/gateway.ts';

forEachStore((start, store) => {
  let t: TestGateway;
  before(async () => {
    t = await start();
  });
  after(async () => t.close());

  const auth = () => ({ Authorization: `Bearer ${t.admin}` });
  const patient = (extra: object = {}) => ({
    resourceType: 'Patient',
    identifier: [{ system: 'urn:mrn', value: `mrn-${Math.random().toString(36).slice(2)}` }],
    name: [{ family: 'Test', given: ['Ada'] }],
    ...extra,
  });

  function post(path: string, resource: unknown, headers: Record<string, string> = {}) {
    return t.http.post(`/fhir/${path}`).set(auth()).set('Content-Type', FHIR_JSON).set(headers).send(JSON.stringify(resource));
  }
  function put(path: string, resource: unknown, headers: Record<string, string> = {}) {
    return t.http.put(`/fhir/${path}`).set(auth()).set('Content-Type', FHIR_JSON).set(headers).send(JSON.stringify(resource));
  }
  function get(path: string) {
    return t.http.get(`/fhir/${path}`).set(auth());
  }

  function assertOutcome(res: { status: number; text: string; headers: Record<string, string> }, status: number, code?: string) {
    assert.equal(res.status, status, res.text);
    assert.match(res.headers['content-type'], /application\/fhir\+json/);
    const oo = body(res);
    assert.equal(oo.resourceType, 'OperationOutcome');
    assert.ok(oo.issue.length > 0);
    if (code) assert.equal(oo.issue[0].code, code);
    return oo;
  }

  describe('create, read, vread, update, delete', () => {
    it('creates with a server id, version 1, ETag, Last-Modified and Location', async () => {
      const res = await post('Patient', { ...patient(), id: 'client-chosen' });
      assert.equal(res.status, 201);
      const created = body(res);
      assert.notEqual(created.id, 'client-chosen');
      assert.equal(created.meta.versionId, '1');
      assert.equal(res.headers.etag, 'W/"1"');
      assert.equal(res.headers.location, `http://gateway.test/fhir/Patient/${created.id}/_history/1`);
      assert.equal(new Date(res.headers['last-modified']).getTime(), Math.floor(Date.parse(created.meta.lastUpdated) / 1000) * 1000);
      const read = await get(`Patient/${created.id}`);
      assert.equal(read.status, 200);
      assert.deepEqual(body(read), created);
    });

    it('updates to version 2, keeps version 1 readable, and updates-as-create with a client id', async () => {
      const created = body(await post('Patient', patient()));
      const res = await put(`Patient/${created.id}`, { ...created, active: true });
      assert.equal(res.status, 200);
      assert.equal(body(res).meta.versionId, '2');
      assert.equal(res.headers.etag, 'W/"2"');
      assert.equal(body(await get(`Patient/${created.id}/_history/1`)).active, undefined);
      assert.equal(body(await get(`Patient/${created.id}/_history/2`)).active, true);
      const asCreate = await put('Patient/my-own-id', { ...patient(), id: 'my-own-id' });
      assert.equal(asCreate.status, 201);
      assert.equal(body(asCreate).id, 'my-own-id');
    });

    it('enforces If-Match with 412 on mismatch', async () => {
      const created = body(await post('Patient', patient()));
      assertOutcome(await put(`Patient/${created.id}`, created, { 'If-Match': 'W/"7"' }), 412);
      assert.equal((await put(`Patient/${created.id}`, created, { 'If-Match': 'W/"1"' })).status, 200);
    });

    it('deletes: 410 Gone afterwards, history keeps every version, re-create works', async () => {
      const created = body(await post('Patient', patient()));
      const del = await t.http.delete(`/fhir/Patient/${created.id}`).set(auth());
      assert.equal(del.status, 200);
      assertOutcome(await get(`Patient/${created.id}`), 410, 'deleted');
      assertOutcome(await get(`Patient/${created.id}/_history/2`), 410, 'deleted');
      assert.equal((await get(`Patient/${created.id}/_history/1`)).status, 200);
      const history = body(await get(`Patient/${created.id}/_history`));
      assert.equal(history.type, 'history');
      assert.deepEqual(history.entry.map((e: any) => e.request.method), ['DELETE', 'POST']);
      assert.equal((await t.http.delete(`/fhir/Patient/${created.id}`).set(auth())).status, 200, 'delete is idempotent');
      const again = await put(`Patient/${created.id}`, created);
      assert.equal(again.status, 201);
      assert.equal(body(again).meta.versionId, '3');
    });

    it('honours Prefer: return=minimal and return=OperationOutcome', async () => {
      const minimal = await post('Patient', patient(), { Prefer: 'return=minimal' });
      assert.equal(minimal.status, 201);
      assert.equal(minimal.text, '');
      assert.ok(minimal.headers.location);
      const oo = await post('Patient', patient(), { Prefer: 'return=OperationOutcome' });
      assert.equal(body(oo).resourceType, 'OperationOutcome');
    });

    it('keeps decimal lexemes exactly', async () => {
      const text = '{"resourceType":"Observation","status":"final","code":{"text":"w"},"valueQuantity":{"value":1.50,"unit":"kg"},' +
        '"component":[{"code":{"text":"x"},"valueQuantity":{"value":391.83200000000005}},{"code":{"text":"y"},"valueQuantity":{"value":0.0}}]}';
      const res = await t.http.post('/fhir/Observation').set(auth()).set('Content-Type', FHIR_JSON).send(text);
      assert.equal(res.status, 201, res.text);
      const read = await get(`Observation/${body(res).id}`);
      assert.match(read.text, /"value":1\.50,/);
      assert.match(read.text, /"value":391\.83200000000005\}/);
      assert.match(read.text, /"value":0\.0\}/);
      const pretty = await get(`Observation/${body(res).id}?_pretty=true`);
      assert.match(pretty.text, /"value": 1\.50,\n/);
    });

    it('accepts application/json and a leading UTF-8 BOM, returns the requested format', async () => {
      const res = await t.http.post('/fhir/Patient').set(auth()).set('Content-Type', 'application/json; charset=utf-8')
        .send(`\uFEFF${JSON.stringify(patient())}`);
      assert.equal(res.status, 201, res.text);
      const asJson = await get(`Patient/${body(res).id}?_format=json`);
      assert.match(asJson.headers['content-type'], /application\/fhir\+json/);
      const plain = await get(`Patient/${body(res).id}`).set('Accept', 'application/json');
      assert.match(plain.headers['content-type'], /^application\/json/);
    });
  });

  describe('conditional interactions and patch', () => {
    it('conditional create returns the existing match instead of a duplicate', async () => {
      const p = patient();
      const first = await post('Patient', p, { 'If-None-Exist': `identifier=urn:mrn|${p.identifier[0].value}` });
      assert.equal(first.status, 201);
      const second = await post('Patient', p, { 'If-None-Exist': `identifier=urn:mrn|${p.identifier[0].value}` });
      assert.equal(second.status, 200);
      assert.equal(body(second).id, body(first).id);
      const count = body(await get(`Patient?identifier=urn:mrn|${p.identifier[0].value}&_summary=count`));
      assert.equal(count.total, 1);
    });

    it('conditional update creates on no match, updates one match, 412 on several', async () => {
      const p = patient();
      const q = `identifier=urn:mrn|${p.identifier[0].value}`;
      const created = await put(`Patient?${q}`, p);
      assert.equal(created.status, 201);
      const updated = await put(`Patient?${q}`, { ...p, active: false });
      assert.equal(updated.status, 200);
      assert.equal(body(updated).id, body(created).id);
      await post('Patient', { ...patient(), identifier: [{ system: 'urn:dup', value: 'x' }] });
      await post('Patient', { ...patient(), identifier: [{ system: 'urn:dup', value: 'x' }] });
      assertOutcome(await put('Patient?identifier=urn:dup|x', patient()), 412, 'multiple-matches');
    });

    it('conditional delete removes the single match', async () => {
      const p = patient();
      const created = body(await post('Patient', p));
      const res = await t.http.delete(`/fhir/Patient?identifier=urn:mrn|${p.identifier[0].value}`).set(auth());
      assert.equal(res.status, 200);
      assert.equal((await get(`Patient/${created.id}`)).status, 410);
    });

    it('applies JSON Patch and validates the result', async () => {
      const created = body(await post('Patient', patient()));
      const ops = [{ op: 'replace', path: '/name/0/family', value: 'Patched' }];
      const res = await t.http.patch(`/fhir/Patient/${created.id}`).set(auth()).set('Content-Type', 'application/json-patch+json').send(JSON.stringify(ops));
      assert.equal(res.status, 200, res.text);
      assert.equal(body(res).name[0].family, 'Patched');
      assert.equal(body(res).meta.versionId, '2');
      const bad = [{ op: 'replace', path: '/gender', value: 'robot' }];
      assertOutcome(await t.http.patch(`/fhir/Patient/${created.id}`).set(auth()).set('Content-Type', 'application/json-patch+json').send(JSON.stringify(bad)), 422);
      const unresolvable = [{ op: 'remove', path: '/nothing/here' }];
      assertOutcome(await t.http.patch(`/fhir/Patient/${created.id}`).set(auth()).set('Content-Type', 'application/json-patch+json').send(JSON.stringify(unresolvable)), 422);
    });
  });

  describe('search and history', () => {
    it('finds by identifier, code, subject/patient, _id and _lastUpdated, and pages with next links that never repeat', async () => {
      const subject = body(await post('Patient', patient()));
      const obs = (code: string) => ({
        resourceType: 'Observation', status: 'final',
        code: { coding: [{ system: 'http://loinc.org', code }] },
        subject: { reference: `Patient/${subject.id}` },
      });
      const ids = [];
      for (let i = 0; i < 5; i++) ids.push(body(await post('Observation', obs(i < 3 ? '8867-4' : '8480-6'))).id);
      const search = async (q: string) => body(await get(`Observation?${q}`));
      assert.equal((await search(`subject=Patient/${subject.id}`)).total, 5);
      assert.equal((await search(`patient=${subject.id}`)).total, 5);
      assert.equal((await search(`code=http://loinc.org|8867-4&subject=Patient/${subject.id}`)).total, 3);
      assert.equal((await search(`code=8480-6&patient=${subject.id}`)).total, 2);
      assert.equal((await search(`code=http://loinc.org|8867-4,http://loinc.org|8480-6&patient=${subject.id}`)).total, 5);
      assert.equal((await search(`code=|8480-6&patient=${subject.id}`)).total, 0);
      assert.equal((await search(`_id=${ids[0]},${ids[1]}`)).total, 2);
      assert.equal((await search(`patient=${subject.id}&_lastUpdated=gt2100-01-01`)).total, 0);
      assert.equal((await search(`patient=${subject.id}&_lastUpdated=ge2020-01-01`)).total, 5);
      const seen: string[] = [];
      let page = await search(`patient=${subject.id}&_count=2`);
      for (;;) {
        seen.push(...page.entry.map((e: any) => e.resource.id));
        const next = page.link.find((l: any) => l.relation === 'next');
        if (!next) break;
        page = body(await get(next.url.replace('http://gateway.test/fhir/', '')));
      }
      assert.deepEqual([...seen].sort(), [...ids].sort());
      const count = await search(`patient=${subject.id}&_summary=count`);
      assert.equal(count.total, 5);
      assert.equal(count.entry, undefined);
    });

    it('rejects unsupported parameters with 400 instead of ignoring them', async () => {
      assertOutcome(await get('Observation?foo=bar'), 400, 'not-supported');
      assertOutcome(await get('Observation?_lastUpdated=yesterday'), 400);
      assertOutcome(await get('Observation?_count=-1'), 400);
    });

    it('serves type and system history', async () => {
      const created = body(await post('Patient', patient()));
      const typeHistory = body(await get('Patient/_history?_count=1'));
      assert.equal(typeHistory.entry.length, 1);
      assert.ok(typeHistory.link.some((l: any) => l.relation === 'next'));
      const system = body(await get('_history?_count=50'));
      assert.ok(system.entry.some((e: any) => e.resource?.id === created.id));
    });
  });

  describe('metadata and $validate', () => {
    it('advertises exactly the implemented interactions and search parameters', async () => {
      const cs = body(await get('metadata'));
      assert.equal(cs.resourceType, 'CapabilityStatement');
      assert.equal(cs.fhirVersion, '4.0.1');
      const obs = cs.rest[0].resource.find((r: any) => r.type === 'Observation');
      const names = obs.searchParam.map((p: any) => p.name);
      for (const n of ['_id', '_lastUpdated', '_tag', '_profile', 'code', 'identifier', 'patient', 'subject', 'date', 'value-quantity', 'value-string', 'status', 'category']) {
        assert.ok(names.includes(n), n);
      }
      assert.ok(!names.includes('code-value-concept'), 'composite parameters are not advertised');
      assert.ok(obs.searchInclude.includes('Observation:subject'));
      const patientRes = cs.rest[0].resource.find((r: any) => r.type === 'Patient');
      assert.ok(patientRes.searchParam.some((p: any) => p.name === 'name' && p.type === 'string'));
      assert.ok(!patientRes.searchParam.some((p: any) => p.name === 'phonetic'));
      assert.ok(patientRes.searchRevInclude.includes('Observation:subject'));
      assert.ok(obs.interaction.some((i: any) => i.code === 'patch'));
      assert.equal(cs.rest[0].resource.length, 146);
      // Every advertised parameter of every type answers 200 with a value of its type.
      const sample: Record<string, string> = { token: 'a', reference: 'x', string: 'a', date: 'ge2020-01-01', number: 'gt1', quantity: '1', uri: 'http://a' };
      const calls: Array<[string, string]> = [];
      // Query parsing does not depend on the vault: the full sweep runs on SQLite; on the MongoDB-wire engine
      // (FerretDB scans for every query) a sample of types, each with all its parameters.
      const sampled = new Set(['Observation', 'Patient', 'Encounter', 'Condition', 'CarePlan', 'Claim', 'RiskAssessment', 'ChargeItem']);
      for (const r of cs.rest[0].resource) {
        if (store === 'mongodb' && !sampled.has(r.type)) continue;
        for (const p of r.searchParam) {
          const value = p.name === '_id' ? 'x' : sample[p.type];
          assert.ok(value !== undefined, `${r.type}?${p.name}: type ${p.type}`);
          calls.push([`${r.type}?${p.name}`, `${r.type}?${p.name}=${encodeURIComponent(value)}`]);
        }
        for (const inc of r.searchInclude.slice(0, 3)) calls.push([`${r.type}?_include=${inc}`, `${r.type}?_include=${inc}`]);
      }
      // Sixteen at a time: the MongoDB-wire engine answers each query slowly, but in parallel.
      for (let i = 0; i < calls.length; i += 16) {
        await Promise.all(calls.slice(i, i + 16).map(async ([label, path]) => {
          const res = await get(path);
          assert.equal(res.status, 200, `${label}: ${res.text}`);
        }));
      }
      const called = calls.length;
      assert.ok(called > (store === 'mongodb' ? 150 : 2000), `called ${called}`);
    });

    it('$validate reports issues with expressions and 200', async () => {
      const res = await post('Patient/$validate', { resourceType: 'Patient', gender: 'robot' });
      assert.equal(res.status, 200);
      const oo = body(res);
      assert.ok(oo.issue.some((i: any) => i.severity === 'error' && i.expression?.[0]?.startsWith('Patient.gender')));
      const ok = body(await post('Patient/$validate', patient()));
      assert.ok(ok.issue.every((i: any) => i.severity !== 'error'));
    });
  });

  describe('errors are OperationOutcomes with the right status', () => {
    it('400 unparseable JSON, body without resourceType, type mismatch, id mismatch', async () => {
      assertOutcome(await t.http.post('/fhir/Patient').set(auth()).set('Content-Type', FHIR_JSON).send('{"resourceType": "Patient",'), 400);
      assertOutcome(await post('Patient', { name: [] }), 400);
      assertOutcome(await post('Patient', { resourceType: 'Observation', status: 'final', code: { text: 'x' } }), 400);
      assertOutcome(await put('Patient/abc', { ...patient(), id: 'xyz' }), 400);
      assertOutcome(await put('Patient/abc', patient()), 400);
      assertOutcome(await get('Patient/bad%20id!'), 400);
      assertOutcome(await get('Patient/%E0%A4%A'), 400);
    });

    it('401 without or with a bad token, 403 without the scope', async () => {
      assertOutcome(await t.http.get('/fhir/Patient'), 401, 'login');
      assertOutcome(await t.http.get('/fhir/Patient').set('Authorization', 'Bearer not.a.jwt'), 401, 'login');
      const readOnly = await t.token('user/Observation.read');
      assertOutcome(await t.http.get('/fhir/Patient').set('Authorization', `Bearer ${readOnly}`), 403, 'forbidden');
      assertOutcome(await t.http.post('/fhir/Observation').set('Authorization', `Bearer ${readOnly}`).set('Content-Type', FHIR_JSON).send('{}'), 403);
      assert.equal((await t.http.get('/fhir/Observation').set('Authorization', `Bearer ${readOnly}`)).status, 200);
      const v2 = await t.token('user/Patient.rs');
      assert.equal((await t.http.get('/fhir/Patient').set('Authorization', `Bearer ${v2}`)).status, 200);
      assertOutcome(await t.http.post('/fhir/Patient').set('Authorization', `Bearer ${v2}`).set('Content-Type', FHIR_JSON).send(JSON.stringify(patient())), 403);
    });

    it('patient/ scopes see only their own compartment', async () => {
      const mine = body(await post('Patient', patient()));
      const other = body(await post('Patient', patient()));
      const obs = (p: string) => ({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${p}` } });
      const myObs = body(await post('Observation', obs(mine.id)));
      const otherObs = body(await post('Observation', obs(other.id)));
      const tok = await t.token('patient/*.rs', mine.id);
      const as = (path: string) => t.http.get(`/fhir/${path}`).set('Authorization', `Bearer ${tok}`);
      assert.equal((await as(`Patient/${mine.id}`)).status, 200);
      assertOutcome(await as(`Patient/${other.id}`), 404, 'not-found');
      assert.equal((await as(`Observation/${myObs.id}`)).status, 200);
      assertOutcome(await as(`Observation/${otherObs.id}`), 404, 'not-found');
      const found = body(await as('Observation'));
      assert.deepEqual(found.entry.map((e: any) => e.resource.id), [myObs.id]);
    });

    it('404 unknown type or id, 405 wrong method, 406 unsupported format, 409 on a concurrent version, 413, 415, 422', async () => {
      assertOutcome(await get('NotAType/1'), 404);
      assertOutcome(await get('Patient/does-not-exist'), 404, 'not-found');
      assertOutcome(await t.http.delete('/fhir/metadata').set(auth()), 405);
      assertOutcome(await t.http.put('/fhir/Patient').set(auth()).set('Content-Type', FHIR_JSON).send('{}'), 405);
      assertOutcome(await get('Patient?_format=xml'), 406);
      assertOutcome(await t.http.post('/fhir/Patient').set(auth()).set('Content-Type', 'application/xml').send('<Patient/>'), 415);
      const big = JSON.stringify({ ...patient(), text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${'x'.repeat(9 * 1024 * 1024)}</div>` } });
      assertOutcome(await t.http.post('/fhir/Patient').set(auth()).set('Content-Type', FHIR_JSON).send(big), 413);
      const invalid = assertOutcome(await post('Patient', { resourceType: 'Patient', gender: 'robot', birthDate: '1990-13-45' }), 422);
      const expressions = invalid.issue.flatMap((i: any) => i.expression ?? []);
      assert.ok(expressions.some((e: string) => e.startsWith('Patient.gender')), JSON.stringify(expressions));
      assert.ok(expressions.some((e: string) => e.startsWith('Patient.birthDate')), JSON.stringify(expressions));
    });

    it('409 when another writer moved the resource between read and commit', async () => {
      const created = body(await post('Patient', patient()));
      const { FhirRepository } = await import('../../src/fhir/repository.ts');
      const otherGateway = new FhirRepository(t.gateway.store); // a second gateway process on the same store
      await assert.rejects(
        otherGateway.write(async (session) => {
          await session.update({ ...created, active: true }, created.id);
          // Before this session commits, the HTTP gateway writes version 2.
          assert.equal((await put(`Patient/${created.id}`, { ...created, active: false })).status, 200);
        }),
        (e: { status?: number }) => e.status === 409,
      );
      assert.equal(body(await get(`Patient/${created.id}`)).active, false);
    });
  });
});
