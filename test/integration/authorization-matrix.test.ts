/**
 * The authorization matrix (issue #11, item 1): every interaction × token kind × own or other patient, on
 * the embedded default. Each row states the status, and every row checks that no other patient's content or
 * id reaches a token that may not see it. Writes go top-level, as a batch entry and as a transaction entry,
 * with the same expectation: a Bundle reaches nothing its entries could not reach one by one.
 *
 * Token kinds: `user` (user/*.cruds), `patient` (patient/*.cruds bound to patient A), `narrow`
 * (user/Observation.rs only). "own" is patient A's data, "other" patient B's.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { body, FHIR_JSON, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { untilWithin } from '../support/until.ts';

type Kind = 'user' | 'patient' | 'narrow';
type Target = 'own' | 'other';
type Via = 'top-level' | 'batch' | 'transaction';
/** A status per token kind, for own and other data: `[own, other]`, or one status for both. */
type Expect = Record<Kind, number | [number, number]>;

interface Seed {
  patient: string;
  mrn: string;
  family: string;
  obs: string;
  obsIdentifier: string;
  condition: string;
}

interface Request {
  method: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  url: string;
  body?: unknown;
  headers?: Record<string, string>;
}

describe('authorization matrix (SQLite)', () => {
  let t: TestGateway;
  const tokens = {} as Record<Kind, string>;
  const seed = {} as Record<Target, Seed>;
  const practitioner = { id: '' };
  let counter = 0;
  const unique = (prefix: string) => `${prefix}-${process.pid}-${++counter}`;

  const patientBody = (family: string, mrn: string) => ({
    resourceType: 'Patient',
    identifier: [{ system: 'urn:mrn', value: mrn }],
    name: [{ family, given: ['Matrix'] }],
  });
  const observationBody = (subject: string, identifier = unique('obs'), performer?: string) => ({
    resourceType: 'Observation',
    identifier: [{ system: 'urn:obs', value: identifier }],
    status: 'final',
    code: { text: 'body weight' },
    subject: { reference: `Patient/${subject}` },
    performer: [{ reference: performer ? `Patient/${performer}` : `Practitioner/${practitioner.id}` }],
    valueQuantity: { value: 72, unit: 'kg' },
  });

  async function send(token: string, r: Request) {
    const method = r.method.toLowerCase() as 'get' | 'head' | 'post' | 'put' | 'patch' | 'delete';
    let req = t.http[method](`/fhir/${r.url}`).set('Authorization', `Bearer ${token}`).set(r.headers ?? {});
    if (r.body !== undefined) {
      const type = r.method === 'PATCH' ? 'application/json-patch+json' : FHIR_JSON;
      req = req.set('Content-Type', type).send(JSON.stringify(r.body));
    }
    return req;
  }
  const admin = (r: Request) => send(t.admin, r);

  /** Observations of each patient, written by the admin in one batch: a fresh one for each write row. */
  const pool: Record<Target, Array<{ id: string; identifier: string }>> = { own: [], other: [] };

  async function fillPool(target: Target, n: number): Promise<void> {
    const identifiers = Array.from({ length: n }, () => unique('fresh'));
    const entry = identifiers.map((identifier) => ({ resource: observationBody(seed[target].patient, identifier), request: { method: 'POST', url: 'Observation' } }));
    const res = await admin({ method: 'POST', url: '', body: { resourceType: 'Bundle', type: 'batch', entry } });
    assert.equal(res.status, 200, res.text);
    body(res).entry.forEach((e: any, i: number) => {
      assert.equal(e.response.status, '201 Created');
      pool[target].push({ id: e.response.location.split('/')[1], identifier: identifiers[i] });
    });
  }

  async function freshObservation(target: Target): Promise<{ id: string; identifier: string }> {
    const fresh = pool[target].pop();
    assert.ok(fresh, 'the pool of fresh Observations is large enough');
    return fresh;
  }

  before(async () => {
    t = await startTestGateway();
    tokens.user = t.admin;
    const practitionerRes = await admin({ method: 'POST', url: 'Practitioner', body: { resourceType: 'Practitioner', name: [{ family: 'Doctorow' }] } });
    practitioner.id = body(practitionerRes).id;
    for (const [target, family] of [['own', 'Ownerson'], ['other', 'Zebedee']] as const) {
      const mrn = unique(`mrn-${target}`);
      const patient = body(await admin({ method: 'POST', url: 'Patient', body: patientBody(family, mrn) })).id;
      const obsIdentifier = unique(`obs-${target}`);
      const obs = body(await admin({ method: 'POST', url: 'Observation', body: observationBody(patient, obsIdentifier) })).id;
      const condition = body(
        await admin({ method: 'POST', url: 'Condition', body: { resourceType: 'Condition', subject: { reference: `Patient/${patient}` }, code: { text: `condition-of-${family}` } } }),
      ).id;
      seed[target] = { patient, mrn, family, obs, obsIdentifier, condition };
    }
    // One per write row, token kind and way of sending, plus the forged-index test's.
    for (const target of ['own', 'other'] as const) await fillPool(target, 3 * 3 * writeRows.length + 1);
    tokens.patient = await t.token('patient/*.cruds', seed.own.patient);
    tokens.narrow = await t.token('user/Observation.rs');
    // $proof needs the seed anchored.
    const until = untilWithin(15_000, 50);
    for (const target of ['own', 'other'] as const) {
      await until('the seed anchored', async () => (await admin({ method: 'GET', url: `Observation/${seed[target].obs}` })).headers['x-medblock-anchor'] !== 'pending');
    }
  });
  after(async () => t?.close());

  /** What a token may not see of the other patient: ids, identifiers, names, and (narrow) every Patient's and Condition's content. */
  function forbiddenIn(kind: Kind, target: Target): string[] {
    if (kind === 'user') return [];
    if (kind === 'narrow') return [seed.own.family, seed.other.family, 'condition-of-', seed.own.mrn, seed.other.mrn];
    if (target === 'own') return [seed.other.patient, seed.other.obs, seed.other.family, seed.other.mrn, seed.other.condition, seed.other.obsIdentifier];
    return [seed.other.patient, seed.other.obs, seed.other.family, seed.other.mrn, seed.other.condition, seed.other.obsIdentifier];
  }

  function expected(e: Expect, kind: Kind, target: Target): number {
    const v = e[kind];
    return typeof v === 'number' ? v : v[target === 'own' ? 0 : 1];
  }

  /** Bundles' links (also of a searchset inside a batch answer) repeat the request's own query: what the caller sent is no leak. */
  function withoutLinks(text: string): string {
    if (!text.startsWith('{')) return text;
    const isBundleLinks = (v: unknown) => Array.isArray(v) && v.every((l) => typeof l === 'object' && l !== null && 'relation' in l);
    return JSON.stringify(JSON.parse(text, (key, value) => (key === 'link' && isBundleLinks(value) ? undefined : value)));
  }

  function assertNoLeak(answer: string, kind: Kind, target: Target, row: string): void {
    const text = withoutLinks(answer);
    for (const secret of forbiddenIn(kind, target)) {
      assert.ok(!text.includes(secret), `${row}: the answer holds '${secret}', which this token may not see:\n${text.slice(0, 2000)}`);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Reads: each row a request for own or other data, its status per token kind, and an optional check.

  interface ReadRow {
    name: string;
    request: (s: Seed) => Request;
    expect: Expect;
    /** For a 200: what the Bundle or resource must hold, given the target's seed. */
    check?: (res: { text: string }, kind: Kind, target: Target) => void;
    /** A search across types: a Bundle entry's URL names a type, so it exists top-level only. */
    topLevelOnly?: boolean;
  }

  const matchIds = (res: { text: string }) => ((body(res).entry ?? []) as any[]).filter((e) => e.search?.mode === 'match').map((e) => `${e.resource.resourceType}/${e.resource.id}`);
  const allIds = (res: { text: string }) => ((body(res).entry ?? []) as any[]).filter((e) => e.resource).map((e) => `${e.resource.resourceType}/${e.resource.id}`);

  /** A patient-bound token searching the other patient finds nothing; everyone else finds the target's. */
  const findsTarget = (type: string, id: (s: Seed) => string) => (res: { text: string }, kind: Kind, target: Target) => {
    const ids = matchIds(res);
    if (kind === 'patient' && target === 'other') assert.deepEqual(ids, []);
    else assert.ok(ids.includes(`${type}/${id(seed[target])}`), `expected ${type} of ${target} among ${ids}`);
  };

  const readRows: ReadRow[] = [
    { name: 'read Observation', request: (s) => ({ method: 'GET', url: `Observation/${s.obs}` }), expect: { user: 200, patient: [200, 404], narrow: 200 } },
    { name: 'read Patient', request: (s) => ({ method: 'GET', url: `Patient/${s.patient}` }), expect: { user: 200, patient: [200, 404], narrow: 403 } },
    { name: 'read Condition', request: (s) => ({ method: 'GET', url: `Condition/${s.condition}` }), expect: { user: 200, patient: [200, 404], narrow: 403 } },
    { name: 'vread', request: (s) => ({ method: 'GET', url: `Observation/${s.obs}/_history/1` }), expect: { user: 200, patient: [200, 404], narrow: 200 } },
    { name: 'instance history', request: (s) => ({ method: 'GET', url: `Observation/${s.obs}/_history` }), expect: { user: 200, patient: [200, 404], narrow: 200 } },
    { name: 'instance history of a Patient', request: (s) => ({ method: 'GET', url: `Patient/${s.patient}/_history` }), expect: { user: 200, patient: [200, 404], narrow: 403 } },
    { name: 'type history', request: () => ({ method: 'GET', url: 'Observation/_history' }), expect: { user: 200, patient: 403, narrow: 200 } },
    { name: 'type history of Patient', request: () => ({ method: 'GET', url: 'Patient/_history' }), expect: { user: 200, patient: 403, narrow: 403 } },
    { name: 'system history', request: () => ({ method: 'GET', url: '_history' }), expect: { user: 200, patient: 403, narrow: 403 } },
    {
      name: 'search by subject',
      request: (s) => ({ method: 'GET', url: `Observation?subject=Patient/${s.patient}&_count=1000` }),
      expect: { user: 200, patient: 200, narrow: 200 },
      check: findsTarget('Observation', (s) => s.obs),
    },
    {
      name: 'search by identifier',
      request: (s) => ({ method: 'GET', url: `Observation?identifier=urn:obs|${s.obsIdentifier}` }),
      expect: { user: 200, patient: 200, narrow: 200 },
      check: findsTarget('Observation', (s) => s.obs),
    },
    {
      name: 'search with _include',
      request: (s) => ({ method: 'GET', url: `Observation?_id=${s.obs}&_include=Observation:subject` }),
      expect: { user: 200, patient: 200, narrow: 200 },
      check: (res, kind, target) => {
        findsTarget('Observation', (s) => s.obs)(res, kind, target);
        const included = allIds(res).includes(`Patient/${seed[target].patient}`);
        assert.equal(included, kind === 'user' || (kind === 'patient' && target === 'own'), 'the included Patient');
      },
    },
    {
      name: 'search with _revinclude',
      request: (s) => ({ method: 'GET', url: `Patient?_id=${s.patient}&_revinclude=Observation:subject` }),
      expect: { user: 200, patient: 200, narrow: 403 },
      check: (res, kind, target) => {
        findsTarget('Patient', (s) => s.patient)(res, kind, target);
        assert.equal(allIds(res).includes(`Observation/${seed[target].obs}`), kind === 'user' || target === 'own', 'the revincluded Observation');
      },
    },
    {
      name: 'chained search',
      request: (s) => ({ method: 'GET', url: `Observation?subject:Patient.identifier=urn:mrn|${s.mrn}&_count=1000` }),
      expect: { user: 200, patient: 200, narrow: 403 },
      check: findsTarget('Observation', (s) => s.obs),
    },
    {
      name: 'compartment search',
      request: (s) => ({ method: 'GET', url: `Patient/${s.patient}/Observation?_count=1000` }),
      expect: { user: 200, patient: 200, narrow: 200 },
      check: findsTarget('Observation', (s) => s.obs),
    },
    {
      name: 'system search',
      request: (s) => ({ method: 'GET', url: `?_type=Observation,Condition&_id=${s.obs},${s.condition}` }),
      expect: { user: 200, patient: 200, narrow: 403 },
      check: findsTarget('Observation', (s) => s.obs),
      topLevelOnly: true,
    },
    {
      name: '$everything',
      request: (s) => ({ method: 'GET', url: `Patient/${s.patient}/$everything` }),
      expect: { user: 200, patient: [200, 404], narrow: 403 },
      check: (res, _kind, target) => {
        const ids = allIds(res);
        for (const key of [`Patient/${seed[target].patient}`, `Observation/${seed[target].obs}`, `Condition/${seed[target].condition}`]) assert.ok(ids.includes(key), key);
      },
    },
    { name: '$proof', request: (s) => ({ method: 'GET', url: `Observation/${s.obs}/_history/1/$proof` }), expect: { user: 200, patient: [200, 404], narrow: 200 } },
  ];

  /**
   * Sends `r` top-level, or as the one entry of a batch or transaction; returns the interaction's status
   * (a batch entry's, or a failed transaction's) and the whole answer's text.
   */
  async function sendVia(via: Via, token: string, r: Request, entry: Record<string, unknown>): Promise<{ status: number; text: string; entryText?: string }> {
    if (via === 'top-level') {
      const res = await send(token, r);
      return { status: res.status, text: res.text };
    }
    const res = await send(token, { method: 'POST', url: '', body: { resourceType: 'Bundle', type: via, entry: [entry] } });
    if (via === 'transaction' && res.status !== 200) return { status: res.status, text: res.text };
    assert.equal(res.status, 200, res.text.slice(0, 500));
    const answer = body(res).entry[0];
    return { status: Number.parseInt(String(answer.response.status), 10), text: res.text, entryText: answer.resource ? JSON.stringify(answer.resource) : undefined };
  }

  for (const row of readRows) {
    const vias: Via[] = row.topLevelOnly ? ['top-level'] : ['top-level', 'batch', 'transaction'];
    for (const via of vias) {
      for (const kind of ['user', 'patient', 'narrow'] as const) {
        for (const target of ['own', 'other'] as const) {
          const name = `${row.name} (${via}) × ${kind} × ${target}`;
          it(name, async () => {
            const r = row.request(seed[target]);
            const res = await sendVia(via, tokens[kind], r, { request: { method: r.method, url: r.url } });
            assert.equal(res.status, expected(row.expect, kind, target), `${name}: ${res.text.slice(0, 500)}`);
            assertNoLeak(res.text, kind, target, name);
            if (res.status === 200) row.check?.({ text: res.entryText ?? res.text }, kind, target);
          });
        }
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Writes: each row builds its request (top-level) and the same as a Bundle entry, on fresh data.

  interface WriteRow {
    name: string;
    /** The write, on a fresh Observation of the target patient (`fresh`). */
    request: (s: Seed, fresh: { id: string; identifier: string }) => Request & { entry?: Record<string, unknown> };
    expect: Expect;
    /** Whether the other patient's fresh Observation must be left as it was, whatever the answer. */
    untouched?: boolean;
    /** Where the interaction exists (conditional references only in Bundles); all three by default. */
    vias?: Via[];
  }

  const writeRows: WriteRow[] = [
    { name: 'create', request: (s) => ({ method: 'POST', url: 'Observation', body: observationBody(s.patient) }), expect: { user: 201, patient: [201, 403], narrow: 403 } },
    {
      name: 'create into two compartments (subject the target, performer the token\'s patient)',
      request: (s) => ({ method: 'POST', url: 'Observation', body: observationBody(s.patient, unique('mixed'), seed.own.patient) }),
      expect: { user: 201, patient: [201, 403], narrow: 403 },
    },
    {
      name: 'conditional create (If-None-Exist)',
      // The body is the token's own patient's; the criteria name the target's existing Observation.
      request: (_s, fresh) => ({ method: 'POST', url: 'Observation', body: observationBody(seed.own.patient), headers: { 'If-None-Exist': `identifier=urn:obs|${fresh.identifier}` }, entry: { ifNoneExist: `identifier=urn:obs|${fresh.identifier}` } }),
      expect: { user: 200, patient: [200, 201], narrow: 403 },
      untouched: true,
    },
    {
      name: 'update',
      request: (s, fresh) => ({ method: 'PUT', url: `Observation/${fresh.id}`, body: { ...observationBody(seed.own.patient, fresh.identifier), id: fresh.id, status: 'amended' } }),
      expect: { user: 200, patient: [200, 404], narrow: 403 },
      untouched: true,
    },
    {
      name: 'update keeping the target as subject',
      request: (s, fresh) => ({ method: 'PUT', url: `Observation/${fresh.id}`, body: { ...observationBody(s.patient, fresh.identifier), id: fresh.id, status: 'amended' } }),
      expect: { user: 200, patient: [200, 404], narrow: 403 },
      untouched: true,
    },
    {
      name: 'conditional update',
      request: (_s, fresh) => ({ method: 'PUT', url: `Observation?identifier=urn:obs|${fresh.identifier}`, body: { ...observationBody(seed.own.patient, unique('cu')), status: 'amended' } }),
      // Within its compartment a patient token's criteria match nothing of the other patient's: a new resource.
      expect: { user: 200, patient: [200, 201], narrow: 403 },
      untouched: true,
    },
    {
      name: 'patch',
      request: (_s, fresh) => ({ method: 'PATCH', url: `Observation/${fresh.id}`, body: [{ op: 'replace', path: '/status', value: 'amended' }] }),
      expect: { user: 200, patient: [200, 404], narrow: 403 },
      untouched: true,
    },
    {
      name: 'patch moving the resource into the token\'s compartment',
      request: (_s, fresh) => ({ method: 'PATCH', url: `Observation/${fresh.id}`, body: [{ op: 'replace', path: '/subject/reference', value: `Patient/${seed.own.patient}` }] }),
      expect: { user: 200, patient: [200, 404], narrow: 403 },
      untouched: true,
    },
    { name: 'delete', request: (_s, fresh) => ({ method: 'DELETE', url: `Observation/${fresh.id}` }), expect: { user: 200, patient: [200, 404], narrow: 403 }, untouched: true },
    {
      name: 'conditional delete',
      request: (_s, fresh) => ({ method: 'DELETE', url: `Observation?identifier=urn:obs|${fresh.identifier}` }),
      expect: { user: 200, patient: 403, narrow: 403 },
      untouched: true,
    },
    {
      name: 'create with a conditional reference',
      request: (s) => ({ method: 'POST', url: 'Observation', body: { ...observationBody(seed.own.patient), subject: { reference: `Patient?identifier=urn:mrn|${s.mrn}` } } }),
      // Within its compartment the other patient's identifier matches nothing: as for an unknown identifier.
      expect: { user: 201, patient: [201, 404], narrow: 403 },
      vias: ['batch', 'transaction'],
    },
  ];

  function asEntry(r: ReturnType<WriteRow['request']>): Record<string, unknown> {
    const entry: Record<string, unknown> = { request: { method: r.method, url: r.url, ...(r.entry ?? {}) } };
    if (r.method === 'PATCH') {
      entry.resource = { resourceType: 'Binary', contentType: 'application/json-patch+json', data: Buffer.from(JSON.stringify(r.body)).toString('base64') };
    } else if (r.body !== undefined) entry.resource = r.body;
    return entry;
  }

  for (const row of writeRows) {
    for (const via of row.vias ?? (['top-level', 'batch', 'transaction'] as const)) {
      for (const kind of ['user', 'patient', 'narrow'] as const) {
        for (const target of ['own', 'other'] as const) {
          const name = `${row.name} (${via}) × ${kind} × ${target}`;
          it(name, async () => {
            const fresh = await freshObservation(target);
            const before = (await admin({ method: 'GET', url: `Observation/${fresh.id}` })).text;
            const r = row.request(seed[target], fresh);
            const want = expected(row.expect, kind, target);
            const { status, text } = await sendVia(via, tokens[kind], r, asEntry(r));
            assert.equal(status, want, `${name}: ${text.slice(0, 500)}`);
            assertNoLeak(text, kind, target, name);
            if (row.untouched && target === 'other' && kind !== 'user') {
              assert.equal((await admin({ method: 'GET', url: `Observation/${fresh.id}` })).text, before, `${name}: the other patient's Observation changed`);
            }
          });
        }
      }
    }
  }
  // ---------------------------------------------------------------------------------------------
  // Last, as it corrupts the index: someone with write access to the vault gives the other patient's
  // Observation the own patient's index terms, compartment term included.

  it('forged index terms route nothing to another compartment: results are re-checked after decryption', async () => {
    const forged = await freshObservation('other');
    const vault = new Database(join(t.dataDir, 'vault.sqlite'));
    try {
      const copied = vault
        .prepare("INSERT OR IGNORE INTO terms (type, param, value, id) SELECT type, param, value, ? FROM terms WHERE type = 'Observation' AND id = ?")
        .run(forged.id, seed.own.obs).changes;
      assert.ok(copied > 0);
    } finally {
      vault.close();
    }
    const alarms: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    const logSetting = process.env.MEDBLOCK_LOG;
    process.env.MEDBLOCK_LOG = 'on';
    process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      if (String(chunk).includes('vault_integrity_alarm')) alarms.push(String(chunk));
      return (write as (...args: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof process.stderr.write;
    try {
      const requests: Request[] = [
        { method: 'GET', url: 'Observation?_count=1000' },
        { method: 'GET', url: `Observation?subject=Patient/${seed.own.patient}&_count=1000` },
        { method: 'GET', url: `Patient/${seed.own.patient}/Observation?_count=1000` },
        { method: 'GET', url: `Patient/${seed.own.patient}/$everything` },
        { method: 'GET', url: `?_type=Observation&_id=${forged.id}` },
      ];
      for (const r of requests) {
        const res = await send(tokens.patient, r);
        assert.equal(res.status, 200, `${r.url}: ${res.text.slice(0, 300)}`);
        assert.ok(!res.text.includes(forged.id) || r.url.includes(forged.id), `${r.url} served the forged Observation`);
        // (Earlier rows wrote legitimate data in both compartments: only the forged resource is checked here.)
        assert.ok(!allIds(res).includes(`Observation/${forged.id}`), `${r.url} served the forged Observation`);
      }
      // The user token's compartment search and $everything of the own patient check the content too.
      for (const url of [`Patient/${seed.own.patient}/Observation?_count=1000`, `Patient/${seed.own.patient}/$everything`]) {
        assert.ok(!allIds(await send(tokens.user, { method: 'GET', url })).includes(`Observation/${forged.id}`), url);
      }
      // A conditional match within the compartment does not find it either: a new resource is created.
      const res = await send(tokens.patient, { method: 'POST', url: 'Observation', body: observationBody(seed.own.patient), headers: { 'If-None-Exist': `identifier=urn:obs|${seed.own.obsIdentifier}` } });
      assert.equal(res.status, 200, res.text);
      assert.equal(body(res).id, seed.own.obs);
    } finally {
      process.stderr.write = write;
      if (logSetting === undefined) delete process.env.MEDBLOCK_LOG;
      else process.env.MEDBLOCK_LOG = logSetting;
    }
    assert.ok(alarms.length >= 5, `integrity alarms logged: ${alarms.length}`);
    for (const alarm of alarms) {
      const event = JSON.parse(alarm);
      assert.equal(event.reason, 'outside-compartment');
      assert.equal(event.id, forged.id);
      assertNoLeak(alarm, 'patient', 'own', 'the alarm');
    }
  });
});
