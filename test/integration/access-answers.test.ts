/**
 * What the gateway answers about access and parameters (issue #10): a patient-bound token learns nothing
 * about other patients' resources (their answers are those of missing ones), unsupported query parameters
 * on writes follow `Prefer: handling=`, and `POST Type?criteria` is a conditional create.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { body, FHIR_JSON, forEachStore, type TestGateway } from '../support/gateway.ts';

forEachStore((start) => {
  let t: TestGateway;
  before(async () => {
    t = await start();
  });
  after(async () => t.close());

  const unique = () => `v-${Math.random().toString(36).slice(2)}`;
  const patient = (identifier = unique()) => ({
    resourceType: 'Patient',
    identifier: [{ system: 'urn:mrn', value: identifier }],
    name: [{ family: 'Answers', given: ['Ada'] }],
  });
  const observation = (patientId: string, identifier = unique()) => ({
    resourceType: 'Observation',
    identifier: [{ system: 'urn:obs', value: identifier }],
    status: 'final',
    code: { text: 'weight' },
    subject: { reference: `Patient/${patientId}` },
  });

  /** A request as `token` (the admin's by default), with a JSON body when one is given. */
  function send(method: 'get' | 'post' | 'put' | 'patch' | 'delete', path: string, opts: { token?: string; body?: unknown; headers?: Record<string, string> } = {}) {
    let req = t.http[method](`/fhir/${path}`).set('Authorization', `Bearer ${opts.token ?? t.admin}`).set(opts.headers ?? {});
    if (opts.body !== undefined) {
      const type = method === 'patch' ? 'application/json-patch+json' : FHIR_JSON;
      req = req.set('Content-Type', opts.headers?.['Content-Type'] ?? type).send(JSON.stringify(opts.body));
    }
    return req;
  }
  const lenient = { Prefer: 'handling=lenient' };
  const count = async (query: string) => body(await send('get', `${query}&_summary=count`)).total as number;

  describe('a patient-bound token asking for another patient\'s resource', () => {
    let mine: string;
    let other: string;
    let otherObs: any;
    let token: string;
    before(async () => {
      mine = body(await send('post', 'Patient', { body: patient() })).id;
      other = body(await send('post', 'Patient', { body: patient() })).id;
      otherObs = body(await send('post', 'Observation', { body: observation(other) }));
      token = await t.token('patient/*.cruds', mine);
    });

    /** Asserts both requests get the same answer, byte for byte, and that it is a 404 naming no id. */
    async function assertSameAnswer(forOthers: { status: number; text: string; headers: Record<string, string> }, forMissing: { status: number; text: string; headers: Record<string, string> }) {
      assert.equal(forOthers.status, 404, forOthers.text);
      assert.equal(forOthers.status, forMissing.status);
      assert.equal(forOthers.text, forMissing.text);
      assert.equal(forOthers.headers.etag, forMissing.headers.etag);
      const outcome = body(forOthers);
      assert.equal(outcome.issue[0].code, 'not-found');
      assert.doesNotMatch(forOthers.text, new RegExp(`${otherObs.id}|${other}|no-such`));
    }

    it('reads, vreads and history answer as for a missing resource', async () => {
      await assertSameAnswer(await send('get', `Observation/${otherObs.id}`, { token }), await send('get', 'Observation/no-such-obs', { token }));
      await assertSameAnswer(await send('get', `Patient/${other}`, { token }), await send('get', 'Patient/no-such-patient', { token }));
      await assertSameAnswer(
        await send('get', `Observation/${otherObs.id}/_history/1`, { token }),
        await send('get', 'Observation/no-such-obs/_history/1', { token }),
      );
      await assertSameAnswer(await send('get', `Observation/${otherObs.id}/_history`, { token }), await send('get', 'Observation/no-such-obs/_history', { token }));
      await assertSameAnswer(await send('get', `Patient/${other}/$everything`, { token }), await send('get', 'Patient/no-such-patient/$everything', { token }));
    });

    it('DELETE, PATCH and PUT answer as for a missing resource and change nothing', async () => {
      await assertSameAnswer(await send('delete', `Observation/${otherObs.id}`, { token }), await send('delete', 'Observation/no-such-obs', { token }));
      const ops = [{ op: 'replace', path: '/status', value: 'amended' }];
      await assertSameAnswer(
        await send('patch', `Observation/${otherObs.id}`, { token, body: ops, headers: { 'If-Match': 'W/"9"' } }),
        await send('patch', 'Observation/no-such-obs', { token, body: ops, headers: { 'If-Match': 'W/"9"' } }),
      );
      // The body lies in the token's own compartment: only the resource the URL names is someone else's.
      await assertSameAnswer(
        await send('put', `Observation/${otherObs.id}`, { token, body: { ...observation(mine), id: otherObs.id } }),
        await send('put', 'Observation/no-such-obs', { token, body: { ...observation(mine), id: 'no-such-obs' } }),
      );
      const stored = body(await send('get', `Observation/${otherObs.id}`));
      assert.equal(stored.meta.versionId, '1');
      assert.equal(stored.status, 'final');
      assert.equal(stored.subject.reference, `Patient/${other}`);
    });

    it('a deleted or erased resource answers as a missing one', async () => {
      const gone = body(await send('post', 'Observation', { body: observation(other) }));
      assert.equal((await send('delete', `Observation/${gone.id}`)).status, 200);
      assert.equal((await send('get', `Observation/${gone.id}`)).status, 410, 'gone, for a token that may see it');
      await assertSameAnswer(await send('get', `Observation/${gone.id}`, { token }), await send('get', 'Observation/no-such-obs', { token }));
      await assertSameAnswer(await send('get', `Observation/${gone.id}/_history/2`, { token }), await send('get', 'Observation/no-such-obs/_history/2', { token }));
      await assertSameAnswer(await send('get', `Observation/${gone.id}/_history`, { token }), await send('get', 'Observation/no-such-obs/_history', { token }));
      await assertSameAnswer(await send('delete', `Observation/${gone.id}`, { token }), await send('delete', 'Observation/no-such-obs', { token }));
      const ops = [{ op: 'replace', path: '/status', value: 'amended' }];
      await assertSameAnswer(await send('patch', `Observation/${gone.id}`, { token, body: ops }), await send('patch', 'Observation/no-such-obs', { token, body: ops }));

      const erasedPatient = body(await send('post', 'Patient', { body: patient() })).id;
      const erased = body(await send('post', 'Observation', { body: observation(erasedPatient) }));
      assert.equal((await send('post', `Patient/${erasedPatient}/$erase`)).status, 200);
      assert.equal((await send('get', `Observation/${erased.id}`)).status, 410, 'gone, for a token that may see it');
      await assertSameAnswer(await send('get', `Observation/${erased.id}`, { token }), await send('get', 'Observation/no-such-obs', { token }));
    });

    it('still reads, updates and deletes its own resources', async () => {
      const own = body(await send('post', 'Observation', { token, body: observation(mine) }));
      assert.equal(body(await send('get', `Observation/${own.id}`, { token })).id, own.id);
      const updated = await send('put', `Observation/${own.id}`, { token, body: { ...own, status: 'amended' } });
      assert.equal(updated.status, 200, updated.text);
      assert.equal(body(updated).status, 'amended');
      assert.equal((await send('delete', `Observation/${own.id}`, { token })).status, 200);
      assert.equal((await send('get', `Observation/${own.id}`)).status, 410);
    });

    it('conditional create and update match only within its compartment', async () => {
      const criteria = `identifier=urn:obs|${otherObs.identifier[0].value}`;
      const created = await send('post', 'Observation', { token, body: observation(mine, otherObs.identifier[0].value), headers: { 'If-None-Exist': criteria } });
      assert.equal(created.status, 201, created.text);
      assert.notEqual(body(created).id, otherObs.id);
      assert.equal(body(created).subject.reference, `Patient/${mine}`);
      // The same identifier now matches the token's own new Observation, never the other patient's.
      const updated = await send('put', `Observation?${criteria}`, { token, body: { ...observation(mine, otherObs.identifier[0].value), status: 'amended' } });
      assert.equal(updated.status, 200, updated.text);
      assert.equal(body(updated).id, body(created).id);
      const untouched = body(await send('get', `Observation/${otherObs.id}`));
      assert.equal(untouched.meta.versionId, '1');
      assert.equal(untouched.subject.reference, `Patient/${other}`);
    });

    it('a write that would put a new resource into another compartment is refused with 403', async () => {
      const res = await send('post', 'Observation', { token, body: observation(other) });
      assert.equal(res.status, 403, res.text);
      assert.equal(body(res).issue[0].code, 'forbidden');
    });
  });

  describe('attacks of the security review on authorization (issue #11)', () => {
    let mine: string;
    let victim: string;
    let victimMrn: string;
    let token: string;
    before(async () => {
      mine = body(await send('post', 'Patient', { body: patient() })).id;
      victimMrn = unique();
      victim = body(await send('post', 'Patient', { body: patient(victimMrn) })).id;
      token = await t.token('patient/*.cruds', mine);
    });
    const bundle = (type: 'batch' | 'transaction', entry: unknown[]) => ({ resourceType: 'Bundle', type, entry });

    it('a patient token cannot take over another patient\'s Observation with a Bundle PUT, nor read the original through _history', async () => {
      const original = body(await send('post', 'Observation', { body: { ...observation(victim), code: { text: 'HIV infection, active' } } }));
      for (const type of ['transaction', 'batch'] as const) {
        const takeover = { ...observation(mine), id: original.id };
        const res = await send('post', '', { token, body: bundle(type, [{ resource: takeover, request: { method: 'PUT', url: `Observation/${original.id}` } }]) });
        const status = type === 'transaction' ? res.status : Number.parseInt(body(res).entry[0].response.status, 10);
        assert.equal(status, 404, res.text);
        assert.doesNotMatch(res.text, /HIV/);
      }
      const stored = body(await send('get', `Observation/${original.id}`));
      assert.equal(stored.meta.versionId, '1');
      assert.equal(stored.subject.reference, `Patient/${victim}`);
      const history = await send('get', `Observation/${original.id}/_history`, { token });
      assert.equal(history.status, 404, history.text);
      assert.doesNotMatch(history.text, /HIV/);
    });

    it('history serves a patient token only the versions of its own compartment', async () => {
      // Filed under the victim first, then moved to the token's patient: version 1 stays the victim's.
      const misfiled = body(await send('post', 'Observation', { body: { ...observation(victim), code: { text: 'HIV infection, active' } } }));
      const moved = await send('put', `Observation/${misfiled.id}`, { body: { ...misfiled, subject: { reference: `Patient/${mine}` }, code: { text: 'weight' } } });
      assert.equal(moved.status, 200, moved.text);
      const history = await send('get', `Observation/${misfiled.id}/_history`, { token });
      assert.equal(history.status, 200, history.text);
      assert.deepEqual(body(history).entry.map((e: any) => e.resource.meta.versionId), ['2']);
      assert.equal(body(history).total, undefined, 'no total that counts the versions left out');
      assert.doesNotMatch(history.text, new RegExp(`HIV|${victim}`));
      assert.equal((await send('get', `Observation/${misfiled.id}/_history/1`, { token })).status, 404);
    });

    it('a create-only token learns no patient id through If-None-Exist or conditional references', async () => {
      const createOnly = await t.token('user/Patient.c user/Observation.c');
      const ifNoneExist = await send('post', 'Patient', { token: createOnly, body: patient(), headers: { 'If-None-Exist': `identifier=urn:mrn|${victimMrn}` } });
      assert.equal(ifNoneExist.status, 403, ifNoneExist.text);
      const byReference = { ...observation(mine), subject: { reference: `Patient?identifier=urn:mrn|${victimMrn}` } };
      const tx = await send('post', '', { token: createOnly, body: bundle('transaction', [{ resource: byReference, request: { method: 'POST', url: 'Observation' } }]) });
      assert.equal(tx.status, 403, tx.text);
      assert.doesNotMatch(tx.text + ifNoneExist.text, new RegExp(victim));
      const conditionalUpdate = await send('put', `Patient?identifier=urn:mrn|${victimMrn}`, { token: await t.token('user/Patient.cu'), body: patient(victimMrn) });
      assert.equal(conditionalUpdate.status, 403, conditionalUpdate.text);
    });

    it('a patient token\'s If-None-Exist in a Bundle does not return another patient\'s Condition', async () => {
      const code = unique();
      const theirs = body(await send('post', 'Condition', { body: { resourceType: 'Condition', identifier: [{ system: 'urn:cond', value: code }], subject: { reference: `Patient/${victim}` }, code: { text: 'HIV infection, active' } } }));
      const mineCondition = { resourceType: 'Condition', identifier: [{ system: 'urn:cond', value: code }], subject: { reference: `Patient/${mine}` }, code: { text: 'weight loss' } };
      const res = await send('post', '', { token, headers: { Prefer: 'return=representation' }, body: bundle('batch', [{ resource: mineCondition, request: { method: 'POST', url: 'Condition', ifNoneExist: `identifier=urn:cond|${code}` } }]) });
      assert.equal(res.status, 200, res.text);
      assert.equal(body(res).entry[0].response.status, '201 Created');
      assert.doesNotMatch(res.text, new RegExp(`${theirs.id}|${victim}|HIV`));
    });

    it('a SMART v2 scope with a query restriction is refused, not widened', async () => {
      const restricted = await t.token('patient/Observation.rs?category=laboratory', mine);
      const res = await send('get', 'Observation', { token: restricted });
      assert.equal(res.status, 401, res.text);
      assert.match(body(res).issue[0].diagnostics, /query restriction/);
      assert.doesNotMatch(res.text, /laboratory/);
    });
  });

  describe('unsupported query parameters on writes', () => {
    it('create, update and delete refuse them by default and ignore them under Prefer: handling=lenient', async () => {
      const created = body(await send('post', 'Patient', { body: patient() }));
      const refusedUpdate = await send('put', `Patient/${created.id}?foo=bar`, { body: { ...created, active: true } });
      assert.equal(refusedUpdate.status, 400, refusedUpdate.text);
      assert.equal(body(refusedUpdate).issue[0].code, 'not-supported');
      assert.match(body(refusedUpdate).issue[0].diagnostics, /'foo'/);
      assert.doesNotMatch(refusedUpdate.text, /bar/);
      assert.equal(body(await send('get', `Patient/${created.id}`)).meta.versionId, '1');
      const lenientUpdate = await send('put', `Patient/${created.id}?foo=bar`, { body: { ...created, active: true }, headers: lenient });
      assert.equal(lenientUpdate.status, 200, lenientUpdate.text);
      assert.equal(body(lenientUpdate).active, true);

      const refusedDelete = await send('delete', `Patient/${created.id}?foo=bar`);
      assert.equal(refusedDelete.status, 400, refusedDelete.text);
      assert.equal((await send('get', `Patient/${created.id}`)).status, 200);
      assert.equal((await send('delete', `Patient/${created.id}?foo=bar`, { headers: lenient })).status, 200);
      assert.equal((await send('get', `Patient/${created.id}`)).status, 410);
    });

    it('conditional criteria are never ignored: unknown search parameters are refused even when lenient', async () => {
      const p = patient();
      const created = body(await send('post', 'Patient', { body: p }));
      const criteria = `identifier=urn:mrn|${p.identifier[0].value}`;
      for (const headers of [{}, lenient]) {
        const del = await send('delete', `Patient?${criteria}&nosuchparam=x`, { headers });
        assert.equal(del.status, 400, del.text);
        assert.match(body(del).issue[0].diagnostics, /nosuchparam/);
        const put = await send('put', `Patient?${criteria}&nosuchparam=x`, { body: { ...p, active: false }, headers });
        assert.equal(put.status, 400, put.text);
        const post = await send('post', `Patient?${criteria}&nosuchparam=x`, { body: p, headers });
        assert.equal(post.status, 400, post.text);
      }
      const stored = body(await send('get', `Patient/${created.id}`));
      assert.equal(stored.meta.versionId, '1');
      assert.equal(await count(`Patient?${criteria}`), 1);
    });

    it('result parameters select nothing: refused in conditional criteria, dropped when lenient', async () => {
      const p = patient();
      const criteria = `identifier=urn:mrn|${p.identifier[0].value}`;
      const refused = await send('put', `Patient?${criteria}&_count=5`, { body: p });
      assert.equal(refused.status, 400, refused.text);
      assert.match(body(refused).issue[0].diagnostics, /'_count'/);
      assert.equal(await count(`Patient?${criteria}`), 0);
      const created = await send('put', `Patient?${criteria}&_count=5`, { body: p, headers: lenient });
      assert.equal(created.status, 201, created.text);
      assert.equal(await count(`Patient?${criteria}`), 1);
    });

    it('operations refuse parameters they do not know', async () => {
      const refused = await send('post', 'Patient/$validate?mode=create', { body: patient() });
      assert.equal(refused.status, 400, refused.text);
      const accepted = await send('post', 'Patient/$validate?mode=create', { body: patient(), headers: lenient });
      assert.equal(accepted.status, 200, accepted.text);
      assert.equal(body(accepted).issue[0].diagnostics, 'the resource is valid');
    });
  });

  describe('POST [type]?[criteria] is a conditional create (fhirpy get_or_create)', () => {
    it('creates on no match, returns the match on one, 412 on several; never a duplicate', async () => {
      const p = patient();
      const criteria = `identifier=urn:mrn|${p.identifier[0].value}`;
      const first = await send('post', `Patient?${criteria}`, { body: p });
      assert.equal(first.status, 201, first.text);
      const second = await send('post', `Patient?${criteria}`, { body: { ...p, active: true } });
      assert.equal(second.status, 200, second.text);
      assert.equal(body(second).id, body(first).id);
      assert.equal(body(second).active, undefined, 'the existing resource, unchanged');
      assert.equal(await count(`Patient?${criteria}`), 1);

      const shared = unique();
      await send('post', 'Patient', { body: patient(shared) });
      await send('post', 'Patient', { body: patient(shared) });
      const several = await send('post', `Patient?identifier=urn:mrn|${shared}`, { body: patient(shared) });
      assert.equal(several.status, 412, several.text);
      assert.equal(body(several).issue[0].code, 'multiple-matches');
      assert.equal(await count(`Patient?identifier=urn:mrn|${shared}`), 2);
    });

    it('If-None-Exist beside the query must hold the same criteria', async () => {
      const p = patient();
      const criteria = `identifier=urn:mrn|${p.identifier[0].value}`;
      const same = await send('post', `Patient?${criteria}`, { body: p, headers: { 'If-None-Exist': criteria } });
      assert.equal(same.status, 201, same.text);
      const different = await send('post', `Patient?${criteria}`, { body: p, headers: { 'If-None-Exist': 'identifier=urn:mrn|other' } });
      assert.equal(different.status, 400, different.text);
      assert.doesNotMatch(different.text, /urn:mrn/);
      assert.equal(await count(`Patient?${criteria}`), 1);
    });

    it('_format and _pretty alone do not make a create conditional', async () => {
      const p = patient();
      assert.equal((await send('post', 'Patient?_format=json', { body: p })).status, 201);
      assert.equal((await send('post', 'Patient?_pretty=true', { body: p })).status, 201);
      assert.equal(await count(`Patient?identifier=urn:mrn|${p.identifier[0].value}`), 2);
    });
  });

  describe('error texts name no request values', () => {
    it('not-found, gone, If-Match and id errors carry no id or header value', async () => {
      const created = body(await send('post', 'Patient', { body: patient() }));
      const mismatch = await send('put', `Patient/${created.id}`, { body: created, headers: { 'If-Match': 'W/"777"' } });
      assert.equal(mismatch.status, 412, mismatch.text);
      assert.doesNotMatch(mismatch.text, /777|Patient\//);
      assert.equal((await send('delete', `Patient/${created.id}`)).status, 200);
      const gone = await send('get', `Patient/${created.id}`);
      assert.equal(gone.status, 410);
      const badId = await send('get', 'Patient/not_a*valid~id');
      assert.equal(badId.status, 400, badId.text);
      const missingVersion = await send('get', `Patient/${created.id}/_history/99`);
      assert.equal(missingVersion.status, 404);
      for (const res of [gone, badId, missingVersion]) assert.doesNotMatch(res.text, new RegExp(`${created.id}|not_a|99`));
    });
  });
});
