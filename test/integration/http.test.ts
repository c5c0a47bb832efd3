/**
 * The HTTP layer as real FHIR clients and hostile input meet it: _format, the public capability statement,
 * version ETags only, UTF-8 bodies, form-encoded POST _search, the three PATCH formats, and a base URL that
 * never comes from an arbitrary Host.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { Server } from 'node:http';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import { loadConfig } from '../../src/config.ts';
import { createApp } from '../../src/http/app.ts';
import { entryPatch } from '../../src/fhir/operations/patch.ts';
import type { AccessRecord } from '../../src/audit/access-log.ts';
import { body, FHIR_JSON, startTestGateway, type TestGateway } from '../support/gateway.ts';

describe('HTTP layer', () => {
  let t: TestGateway;
  before(async () => {
    t = await startTestGateway();
  });
  after(async () => t.close());

  const auth = () => ({ Authorization: `Bearer ${t.admin}` });
  const get = (path: string) => t.http.get(`/fhir/${path}`).set(auth());
  const create = async (resource: object) => {
    const res = await t.http.post(`/fhir/${(resource as { resourceType: string }).resourceType}`).set(auth())
      .set('Content-Type', FHIR_JSON).send(JSON.stringify(resource));
    assert.equal(res.status, 201, res.text);
    return body(res);
  };
  const patient = (family: string, extra: object = {}) => ({ resourceType: 'Patient', name: [{ family, given: ['Ada'] }], ...extra });

  function outcome(res: { status: number; text: string; headers: Record<string, string> }, status: number): string {
    assert.equal(res.status, status, res.text);
    assert.match(res.headers['content-type'], /application\/fhir\+json/);
    const oo = body(res);
    assert.equal(oo.resourceType, 'OperationOutcome');
    return oo.issue.map((i: { diagnostics: string }) => i.diagnostics).join(' | ');
  }

  describe('_format', () => {
    it('answers 406 to prototype keys and unknown formats, on every kind of route, without echoing the value', async () => {
      const { id } = await create(patient('Formatprobe'));
      for (const value of ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'text/turtle-probe', 'xml']) {
        for (const path of ['metadata', 'Patient', `Patient/${id}`, `Patient/${id}/_history`]) {
          const text = outcome(await get(`${path}?_format=${encodeURIComponent(value)}`), 406);
          assert.match(text, /_format is not supported/);
          assert.ok(!text.includes(value.slice(0, 5)), `the value is not echoed: ${text}`);
        }
      }
    });

    it('accepts json, application/fhir+json, application/json and application/json+fhir', async () => {
      const { id } = await create(patient('Formatok'));
      const expected: Record<string, string> = {
        json: 'application/fhir+json',
        'application/fhir+json': 'application/fhir+json',
        'application/json': 'application/json',
        'application/json+fhir': 'application/fhir+json',
        'application/fhir+json; fhirVersion=4.0': 'application/fhir+json',
      };
      for (const [format, type] of Object.entries(expected)) {
        const res = await get(`Patient/${id}?_format=${encodeURIComponent(format)}`);
        assert.equal(res.status, 200, `${format}: ${res.text}`);
        assert.equal(res.headers['content-type'], `${type}; charset=utf-8`);
        assert.equal(body(res).id, id);
      }
    });
  });

  describe('GET metadata', () => {
    it('answers without a token and writes no access record for it; every other route still needs one', async () => {
      const accessLog = t.gateway.accessLog!;
      const recorded: AccessRecord[] = [];
      const original = accessLog.record.bind(accessLog);
      accessLog.record = (r) => {
        recorded.push(r);
        return original(r);
      };
      try {
        const res = await t.http.get('/fhir/metadata');
        assert.equal(res.status, 200, res.text);
        const cs = body(res);
        assert.equal(cs.resourceType, 'CapabilityStatement');
        assert.equal(cs.fhirVersion, '4.0.1');
        assert.deepEqual(cs.patchFormat, ['application/json-patch+json', 'application/merge-patch+json', 'application/fhir+json', 'application/json']);
        assert.equal((await t.http.head('/fhir/metadata')).status, 200);
        assert.equal(recorded.length, 0, 'no access record without an actor');

        assert.equal((await get('metadata')).status, 200);
        assert.deepEqual(recorded.map((r) => [r.actor, r.interaction]), [['tester', 'capabilities']]);
      } finally {
        accessLog.record = original;
      }
      outcome(await t.http.get('/fhir/metadata').set('Authorization', 'Bearer not.a.jwt'), 401);
      outcome(await t.http.get('/fhir/Patient'), 401);
      outcome(await t.http.get('/fhir/metadata/x'), 401);
      outcome(await t.http.post('/fhir/metadata').set('Content-Type', FHIR_JSON).send('{}'), 401);
      outcome(await t.http.post('/fhir/Patient/_search').type('form').send('family=x'), 401);
    });
  });

  describe('ETags', () => {
    it('carries none on searches, metadata and errors, and never answers a search 304', async () => {
      await create(patient('Etagprobe'));
      const search = await get('Patient?family=Etagprobe').set('If-None-Match', '*');
      assert.equal(search.status, 200);
      assert.equal(search.headers.etag, undefined);
      assert.equal(body(search).entry.length, 1);
      const again = await get('Patient?family=Etagprobe').set('If-None-Match', 'W/"1"').set('If-Modified-Since', new Date(Date.now() + 60_000).toUTCString());
      assert.equal(again.status, 200);
      assert.equal(body(again).entry.length, 1);
      const metadata = await t.http.get('/fhir/metadata').set('If-None-Match', '*');
      assert.equal(metadata.status, 200);
      assert.equal(metadata.headers.etag, undefined);
      assert.equal(body(metadata).resourceType, 'CapabilityStatement');
      const missing = await get('Patient/no-such-patient');
      outcome(missing, 404);
      assert.equal(missing.headers.etag, undefined);
    });

    it('answers a read or vread 304 only when If-None-Match holds its version', async () => {
      const created = await create(patient('Etagread'));
      const updated = await t.http.put(`/fhir/Patient/${created.id}`).set(auth()).set('Content-Type', FHIR_JSON)
        .send(JSON.stringify({ ...created, active: true }));
      assert.equal(updated.headers.etag, 'W/"2"');
      const held = await get(`Patient/${created.id}`).set('If-None-Match', 'W/"2"');
      assert.equal(held.status, 304);
      assert.equal(held.text, '');
      assert.equal(held.headers.etag, 'W/"2"');
      const stale = await get(`Patient/${created.id}`).set('If-None-Match', 'W/"1"');
      assert.equal(stale.status, 200);
      assert.equal(body(stale).meta.versionId, '2');
      assert.equal((await get(`Patient/${created.id}/_history/1`).set('If-None-Match', '"1"')).status, 304);
      const vread = await get(`Patient/${created.id}/_history/1`).set('If-None-Match', 'W/"2"');
      assert.equal(vread.status, 200);
      assert.equal(body(vread).meta.versionId, '1');
      // A write answers its new version whatever If-None-Match says.
      const write = await t.http.put(`/fhir/Patient/${created.id}`).set(auth()).set('Content-Type', FHIR_JSON).set('If-None-Match', '*')
        .send(JSON.stringify({ ...created, active: false }));
      assert.equal(write.status, 200);
      assert.equal(body(write).meta.versionId, '3');
    });
  });

  describe('request bodies', () => {
    /** Sends the bytes as they are (superagent would JSON-encode a Buffer under a JSON Content-Type). */
    const raw = (bytes: Buffer) => bytes as unknown as string;
    it('refuses invalid UTF-8 with 400 and stores nothing', async () => {
      const json = Buffer.from(JSON.stringify(patient('Utf8probe', { gender: 'other' })));
      const bad = Buffer.concat([json.subarray(0, json.indexOf('Ada')), Buffer.from([0xc3, 0x28]), json.subarray(json.indexOf('Ada') + 3)]);
      const text = outcome(await t.http.post('/fhir/Patient').set(auth()).set('Content-Type', FHIR_JSON).serialize(raw).send(bad), 400);
      assert.match(text, /not valid UTF-8/);
      const found = body(await get('Patient?family=Utf8probe'));
      assert.equal(found.total ?? found.entry?.length ?? 0, 0);
      assert.equal(found.entry, undefined);
    });

    it('refuses a charset other than UTF-8 with 415 naming what is accepted, and keeps UTF-8 text exact', async () => {
      const latin1 = Buffer.from(JSON.stringify(patient('Zoë')), 'latin1');
      const text = outcome(await t.http.post('/fhir/Patient').set(auth()).set('Content-Type', `${FHIR_JSON}; charset=iso-8859-1`).serialize(raw).send(latin1), 415);
      assert.match(text, /must be UTF-8/);
      assert.ok(!text.includes('iso-8859'), 'the header value is not echoed');
      const res = await t.http.post('/fhir/Patient').set(auth()).set('Content-Type', `${FHIR_JSON}; charset="UTF-8"`).serialize(raw).send(Buffer.from(JSON.stringify(patient('Zoë'))));
      assert.equal(res.status, 201, res.text);
      assert.equal(body(await get(`Patient/${body(res).id}`)).name[0].family, 'Zoë');
    });
  });

  describe('POST [type]/_search', () => {
    it('searches with form-encoded parameters, joined to those of the URL', async () => {
      const a = await create(patient('Formsearch', { gender: 'female' }));
      await create(patient('Formsearch', { gender: 'male' }));
      const res = await t.http.post('/fhir/Patient/_search?gender=female').set(auth()).type('form').send('family=Formsearch&_count=5');
      assert.equal(res.status, 200, res.text);
      const bundle = body(res);
      assert.equal(bundle.type, 'searchset');
      assert.deepEqual(bundle.entry.map((e: any) => e.resource.id), [a.id]);
      const self = new URL(bundle.link.find((l: any) => l.relation === 'self').url);
      assert.equal(self.searchParams.get('family'), 'Formsearch');
      assert.equal(self.searchParams.get('gender'), 'female');
      const all = body(await t.http.post('/fhir/Patient/_search').set(auth()).type('form').send('family=Formsearch'));
      assert.equal(all.entry.length, 2);
    });

    it('takes form bodies only on _search, and only form bodies there', async () => {
      const text = outcome(await t.http.post('/fhir/Patient').set(auth()).type('form').send('family=x'), 415);
      assert.match(text, /only by POST \[type\]\/_search/);
      outcome(await t.http.post('/fhir/Patient/_search').set(auth()).set('Content-Type', FHIR_JSON).send('{"family":"x"}'), 415);
      outcome(await t.http.post('/fhir/Patient/_search').set(auth()).type('form').set('Content-Type', 'application/x-www-form-urlencoded; charset=iso-8859-1').send('family=x'), 415);
    });
  });

  describe('PATCH', () => {
    const patchWith = (id: string, type: string, document: unknown) =>
      t.http.patch(`/fhir/Patient/${id}`).set(auth()).set('Content-Type', type).send(JSON.stringify(document));
    const op = (type: string, path: string, ...parts: object[]) => ({
      name: 'operation',
      part: [{ name: 'type', valueCode: type }, { name: 'path', valueString: path }, ...parts],
    });
    const fhirPatch = (...operations: object[]) => ({ resourceType: 'Parameters', parameter: operations });

    it('applies a JSON merge patch (RFC 7386): objects merge, null removes, arrays replace', async () => {
      const created = await create(patient('Mergeprobe', { birthDate: '1970-01-01', gender: 'female' }));
      const res = await patchWith(created.id, 'application/merge-patch+json', { active: true, birthDate: null, name: [{ family: 'Merged' }] });
      assert.equal(res.status, 200, res.text);
      const patched = body(res);
      assert.equal(patched.meta.versionId, '2');
      assert.equal(patched.active, true);
      assert.equal(patched.gender, 'female');
      assert.equal(patched.birthDate, undefined);
      assert.deepEqual(patched.name, [{ family: 'Merged' }]);
      assert.deepEqual(body(await get(`Patient/${created.id}`)), patched);
      outcome(await patchWith(created.id, 'application/merge-patch+json', { id: null }), 422);
      outcome(await patchWith(created.id, 'application/merge-patch+json', [{ op: 'remove', path: '/active' }]), 400);
    });

    it('applies a FHIRPath Patch: replace, add, insert, move and delete on element paths', async () => {
      const created = await create(patient('Pathprobe', { birthDate: '1970-01-01', name: [{ family: 'Pathprobe', given: ['Ada', 'Byron'] }] }));
      const res = await patchWith(created.id, FHIR_JSON, fhirPatch(
        op('replace', 'Patient.birthDate', { name: 'value', valueDate: '1815-12-10' }),
        op('add', 'Patient', { name: 'name', valueString: 'telecom' }, { name: 'value', valueContactPoint: { system: 'email', value: 'ada@example.org' } }),
        op('add', 'Patient', { name: 'name', valueString: 'deceased' }, { name: 'value', valueBoolean: true }),
        op('insert', 'Patient.name[0].given', { name: 'value', valueString: 'Augusta' }, { name: 'index', valueInteger: 0 }),
        op('move', 'Patient.name[0].given', { name: 'source', valueInteger: 2 }, { name: 'destination', valueInteger: 0 }),
        op('delete', "Patient.name[0].given.where($this = 'Ada')"),
        op('delete', 'Patient.multipleBirth'),
        op('add', 'Patient', { name: 'name', valueString: 'contact' }, {
          name: 'value', part: [{ name: 'gender', valueCode: 'female' }],
        }),
        op('add', 'Patient.contact', { name: 'name', valueString: 'name' }, { name: 'value', valueHumanName: { family: 'Lovelace' } }),
      ));
      assert.equal(res.status, 200, res.text);
      const patched = body(res);
      assert.equal(patched.birthDate, '1815-12-10');
      assert.deepEqual(patched.telecom, [{ system: 'email', value: 'ada@example.org' }]);
      assert.equal(patched.deceasedBoolean, true);
      assert.deepEqual(patched.name[0].given, ['Byron', 'Augusta']);
      assert.deepEqual(patched.contact, [{ gender: 'female', name: { family: 'Lovelace' } }]);
      // A choice element is replaced by another of its types.
      const replaced = body(await patchWith(created.id, FHIR_JSON, fhirPatch(op('replace', 'Patient.deceased', { name: 'value', valueDateTime: '1852-11-27' }))));
      assert.equal(replaced.deceasedDateTime, '1852-11-27');
      assert.equal(replaced.deceasedBoolean, undefined);
      assert.equal(replaced.meta.versionId, '3');
    });

    it('answers 422 naming the operation, never its values, for what it cannot apply', async () => {
      const created = await create(patient('Pathfail', { birthDate: '1970-01-01', name: [{ family: 'Pathfail', given: ['Ada', 'Byron'] }] }));
      const cases: Array<[object, RegExp]> = [
        [fhirPatch(op('replace', 'Patient.gender', { name: 'value', valueCode: 'female' })), /operation 0 \(replace\) has a path that matches no element/],
        [fhirPatch(op('replace', 'Patient.name.given', { name: 'value', valueString: 'X' })), /matches more than one element/],
        [fhirPatch(op('replace', 'Patient.name.count()', { name: 'value', valueInteger: 1 })), /does not select elements of the resource/],
        [fhirPatch(op('replace', 'Patient.name[', { name: 'value', valueString: 'Secretvalue' })), /operation 0 has a path that is not a valid FHIRPath expression/],
        [fhirPatch(op('add', 'Patient', { name: 'name', valueString: 'birthDate' }, { name: 'value', valueDate: '1999-09-09' })), /present and does not repeat/],
        [fhirPatch(op('add', 'Patient', { name: 'name', valueString: 'nonsense' }, { name: 'value', valueString: 'Secretvalue' })), /names an element its target does not have/],
        [fhirPatch(op('insert', 'Patient.name[0].given', { name: 'value', valueString: 'Secretvalue' }, { name: 'index', valueInteger: 5 })), /index beyond the end/],
        [fhirPatch(op('replace', 'Patient.id', { name: 'value', valueId: 'other' })), /must not change resourceType or id/],
        [fhirPatch(op('frobnicate', 'Patient.id')), /operation 0 needs a type/],
        [fhirPatch(op('replace', 'Patient.gender', { name: 'value', valueCode: 'robot' }), op('replace', 'Patient.birthDate', { name: 'value', valueDate: '1999-09-09' })), /no element/],
      ];
      for (const [document, message] of cases) {
        const text = outcome(await patchWith(created.id, FHIR_JSON, document), 422);
        assert.match(text, message);
        assert.ok(!/Secretvalue|robot|1999/.test(text), text);
      }
      // Nothing of the failed patches was stored.
      const current = body(await get(`Patient/${created.id}`));
      assert.equal(current.meta.versionId, '1');
      assert.equal(current.birthDate, '1970-01-01');
      outcome(await patchWith(created.id, FHIR_JSON, { resourceType: 'Patient' }), 400);
    });

    it('keeps JSON Patch entries of a transaction working, and prepares the patch of any Bundle PATCH entry', async () => {
      const created = await create(patient('Entrypatch'));
      const binary = (contentType: string, document: unknown) => ({
        resourceType: 'Binary', contentType, data: Buffer.from(JSON.stringify(document)).toString('base64'),
      });
      const res = await t.http.post('/fhir').set(auth()).set('Content-Type', FHIR_JSON).send(JSON.stringify({
        resourceType: 'Bundle', type: 'transaction',
        entry: [{
          request: { method: 'PATCH', url: `Patient/${created.id}` },
          resource: binary('application/json-patch+json', [{ op: 'add', path: '/active', value: true }]),
        }],
      }));
      assert.equal(res.status, 200, res.text);
      assert.equal(body(await get(`Patient/${created.id}`)).active, true);

      const resource = () => ({ resourceType: 'Patient', id: 'p', active: true, gender: 'male' } as any);
      assert.deepEqual(entryPatch(binary('application/merge-patch+json', { active: null })).apply(resource()), { resourceType: 'Patient', id: 'p', gender: 'male' });
      assert.equal(entryPatch(fhirPatch(op('replace', 'Patient.gender', { name: 'value', valueCode: 'female' }))).apply(resource()).gender, 'female');
      assert.throws(() => entryPatch(binary('text/plain', [])), (e: any) => e.status === 400 && /Parameters resource .* or a Binary/.test(e.message));
    });

    it('refuses other media types with 415 naming the four it takes', async () => {
      const created = await create(patient('Patchtype'));
      for (const type of ['text/plain', 'application/xml', 'application/octet-stream']) {
        const text = outcome(await t.http.patch(`/fhir/Patient/${created.id}`).set(auth()).set('Content-Type', type).send('[]'), 415);
        assert.match(text, /application\/json-patch\+json.*application\/merge-patch\+json.*application\/fhir\+json.*application\/json/);
      }
    });

    it('reads the format of a plain application/json PATCH from its shape (as fhirpy sends it)', async () => {
      const created = await create(patient('Plainjson'));
      const patchJson = (doc: unknown) =>
        t.http.patch(`/fhir/Patient/${created.id}`).set(auth()).set('Content-Type', 'application/json').send(JSON.stringify(doc));
      // An object without resourceType: a JSON merge patch of the named fields.
      let res = await patchJson({ gender: 'female', active: false });
      assert.equal(res.status, 200, res.text);
      assert.deepEqual([body(res).gender, body(res).active, body(res).name[0].family], ['female', false, 'Plainjson']);
      // An array: a JSON Patch.
      res = await patchJson([{ op: 'replace', path: '/gender', value: 'male' }]);
      assert.equal(res.status, 200, res.text);
      assert.equal(body(res).gender, 'male');
      // A Parameters resource: a FHIRPath Patch.
      res = await patchJson(fhirPatch(op('replace', 'Patient.gender', { name: 'value', valueCode: 'other' })));
      assert.equal(res.status, 200, res.text);
      assert.equal(body(res).gender, 'other');
      assert.equal(body(res).meta.versionId, '4');
    });
  });

  describe('base URL without MEDBLOCK_BASE_URL', () => {
    const servers: Server[] = [];
    after(() => servers.forEach((s) => s.close()));
    /** A gateway app on its own listening server, as `medblock start` runs it (supertest(app) would take a new port per request). */
    const app = async (trustedProxies?: string[]) => {
      const server = createApp({ repo: t.gateway.repo, issuer: t.gateway.issuer, maxBodyBytes: 1 << 20, listen: { host: '127.0.0.1', port: 0 }, trustedProxies })
        .listen(0, '127.0.0.1');
      servers.push(server);
      await once(server, 'listening');
      return supertest(server);
    };
    const createWith = (http: ReturnType<typeof supertest>, headers: Record<string, string>) =>
      http.post('/fhir/Patient').set(auth()).set('Content-Type', FHIR_JSON).set(headers).send(JSON.stringify(patient('Baseprobe')));

    it('takes Location and links from a Host that names the listen address', async () => {
      const http = await app();
      const direct = await createWith(http, {});
      assert.equal(direct.status, 201, direct.text);
      const port = new URL(direct.headers.location).port;
      assert.match(direct.headers.location, new RegExp(`^http://127\\.0\\.0\\.1:${port}/fhir/Patient/[^/]+/_history/1$`));
      const local = await createWith(http, { Host: `localhost:${port}` });
      assert.match(local.headers.location, new RegExp(`^http://localhost:${port}/fhir/Patient/`));
      const search = body(await http.get('/fhir/Patient?family=Baseprobe').set(auth()).set('Host', `localhost:${port}`));
      assert.ok(search.entry.every((e: any) => e.fullUrl.startsWith(`http://localhost:${port}/fhir/Patient/`)));
      // Forwarding headers from a peer that is not a trusted proxy are ignored.
      const spoofed = await createWith(http, { 'X-Forwarded-Host': 'evil.example', Forwarded: 'host=evil.example;proto=https' });
      assert.match(spoofed.headers.location, /^http:\/\/127\.0\.0\.1:/);
    });

    it('answers 400 to a Host that does not name this gateway, without echoing it', async () => {
      const http = await app();
      for (const host of ['evil.example', 'evil.example:80', '127.0.0.1:1', 'localhost.evil.example']) {
        const res = await createWith(http, { Host: host });
        const text = outcome(res, 400);
        assert.match(text, /Host header does not name this gateway/);
        assert.ok(!text.includes('evil') && !text.includes('127.0.0.1:1'), text);
        assert.equal(res.headers.location, undefined);
      }
      outcome(await http.get('/fhir/metadata').set('Host', 'evil.example'), 400);
    });

    it('believes Forwarded and X-Forwarded-* only from a trusted proxy', async () => {
      const http = await app(['127.0.0.1']);
      const xf = await createWith(http, { Host: 'internal:8080', 'X-Forwarded-Host': 'gw.example.org', 'X-Forwarded-Proto': 'https' });
      assert.match(xf.headers.location, /^https:\/\/gw\.example\.org\/fhir\/Patient\/[^/]+\/_history\/1$/);
      const rfc = await createWith(http, { Forwarded: 'for=192.0.2.1;host=client-sent.example, for=192.0.2.60;host="gw2.example.org:8443";proto=https' });
      assert.match(rfc.headers.location, /^https:\/\/gw2\.example\.org:8443\/fhir\/Patient\//);
      const text = outcome(await createWith(http, { 'X-Forwarded-Host': 'bad host/evil' }), 400);
      assert.ok(!text.includes('evil'), text);
      outcome(await createWith(http, { 'X-Forwarded-Host': 'gw.example.org', 'X-Forwarded-Proto': 'gopher' }), 400);
      // A proxy that is not the one trusted is a client like any other.
      const other = await createWith(await app(['10.9.9.9']), { 'X-Forwarded-Host': 'gw.example.org' });
      assert.match(other.headers.location, /^http:\/\/127\.0\.0\.1:/);
    });

    it('reads MEDBLOCK_TRUSTED_PROXIES as IPs and CIDRs, refusing anything else', () => {
      assert.deepEqual(loadConfig({ MEDBLOCK_TRUSTED_PROXIES: '10.0.0.5, 172.16.0.0/12,::1,fd00::/8' }).trustedProxies, ['10.0.0.5', '172.16.0.0/12', '::1', 'fd00::/8']);
      assert.equal(loadConfig({}).trustedProxies, undefined);
      for (const bad of ['proxy.example', '10.0.0.0/33', '10.0.0.5/8/1', '*']) {
        assert.throws(() => loadConfig({ MEDBLOCK_TRUSTED_PROXIES: bad }), /MEDBLOCK_TRUSTED_PROXIES must be/);
      }
    });
  });
});
