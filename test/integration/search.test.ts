/**
 * FHIR search on real Synthea records, on every vault: each parameter kind, prefixes, chains, includes,
 * sort, _elements and paging, checked against expectations computed here from the loaded data (read back
 * through system history, not through search).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { body, FHIR_DATA, FHIR_JSON, forEachStore, type TestGateway } from '../support/gateway.ts';

const BUNDLES = [
  'Buster_Hoeger_ad2e3fc5-2b5d-4cb9-8d03-9ea0f4ac8423.json',
  'Liz_Conn_27c911c6-f045-4ffa-af5d-6eba57ac94b2.json',
  'Delbert_Williamson_61d8af4e-34ee-4e65-a055-db3806a0bcc2.json',
];

type R = Record<string, any>;

forEachStore((start) => {
  let t: TestGateway;
  const all = new Map<string, R[]>();
  const byType = (type: string) => all.get(type) ?? [];
  const auth = () => ({ Authorization: `Bearer ${t.admin}` });
  const get = (path: string) => t.http.get(`/fhir/${path}`).set(auth());

  /** Every match of a search, following next links; asserts no page repeats a resource and every page has the total. */
  async function searchAll(path: string, token?: string): Promise<{ ids: string[]; included: R[]; pages: number; total?: number }> {
    const ids: string[] = [];
    const included: R[] = [];
    let url = path;
    let pages = 0;
    let total: number | undefined;
    for (;;) {
      const res = await t.http.get(`/fhir/${url}`).set('Authorization', `Bearer ${token ?? t.admin}`);
      assert.equal(res.status, 200, `${url}: ${res.text}`);
      const bundle = body(res);
      if (pages === 0) total = bundle.total;
      else assert.equal(bundle.total, total, `${url}: every page carries the same total`);
      pages++;
      for (const e of bundle.entry ?? []) {
        if (e.search.mode === 'match') ids.push(e.resource.id);
        else if (e.search.mode === 'include') included.push(e.resource);
      }
      const next = bundle.link.find((l: any) => l.relation === 'next');
      if (!next) break;
      url = next.url.replace('http://gateway.test/fhir/', '');
    }
    assert.equal(new Set(ids).size, ids.length, `${path}: a resource was returned twice`);
    return { ids, included, pages, total };
  }

  const sorted = (ids: string[]) => [...ids].sort();
  async function expectSearch(path: string, expected: R[], message?: string): Promise<string[]> {
    const { ids, total } = await searchAll(path);
    assert.deepEqual(sorted(ids), sorted(expected.map((r) => r.id)), message ?? path);
    if (total !== undefined) assert.equal(total, expected.length, `${path}: total`);
    return ids;
  }

  before(async () => {
    t = await start();
    for (const file of BUNDLES) {
      const text = readFileSync(join(FHIR_DATA, 'synthea', 'smart-2019', file), 'utf8');
      const res = await t.http.post('/fhir').set(auth()).set('Content-Type', FHIR_JSON).send(text);
      assert.equal(res.status, 200, res.text.slice(0, 500));
    }
    // Ground truth: every current resource, read through system history (not search).
    let url = '_history?_count=1000';
    const seen = new Set<string>();
    for (;;) {
      const h = body(await get(url));
      for (const e of h.entry ?? []) {
        const r = e.resource;
        if (!r || seen.has(`${r.resourceType}/${r.id}`)) continue;
        seen.add(`${r.resourceType}/${r.id}`);
        all.set(r.resourceType, [...byType(r.resourceType), r]);
      }
      const next = h.link.find((l: any) => l.relation === 'next');
      if (!next) break;
      url = next.url.replace('http://gateway.test/fhir/', '');
    }
    assert.ok(byType('Observation').length > 100);
  });
  after(async () => t?.close());

  const codings = (cc: any): any[] => cc?.coding ?? [];
  const instant = (s: string) => Date.parse(s);

  it('token: system|code, code, |code and :not', async () => {
    const counts = new Map<string, number>();
    for (const o of byType('Observation')) for (const c of codings(o.code)) counts.set(`${c.system}|${c.code}`, (counts.get(`${c.system}|${c.code}`) ?? 0) + 1);
    const [top] = [...counts].sort((a, b) => b[1] - a[1])[0];
    const [system, code] = top.split('|');
    const has = (o: R) => codings(o.code).some((c) => c.system === system && c.code === code);
    await expectSearch(`Observation?code=${encodeURIComponent(top)}`, byType('Observation').filter(has));
    await expectSearch(`Observation?code=${code}`, byType('Observation').filter((o) => codings(o.code).some((c) => c.code === code)));
    await expectSearch(`Observation?code=${encodeURIComponent(`|${code}`)}`, []);
    await expectSearch(`Observation?code:not=${encodeURIComponent(top)}`, byType('Observation').filter((o) => !has(o)));
    await expectSearch('Patient?gender=male', byType('Patient').filter((p) => p.gender === 'male'));
    await expectSearch('Encounter?class=AMB', byType('Encounter').filter((e) => e.class?.code === 'AMB'));
  });

  it('reference: Type/id, plain id, :Type, absolute URL of this server', async () => {
    for (const p of byType('Patient')) {
      const mine = byType('Observation').filter((o) => o.subject?.reference === `Patient/${p.id}`);
      await expectSearch(`Observation?subject=Patient/${p.id}`, mine);
      await expectSearch(`Observation?patient=${p.id}`, mine);
      await expectSearch(`Observation?subject:Patient=${p.id}`, mine);
      await expectSearch(`Observation?subject=${encodeURIComponent(`http://gateway.test/fhir/Patient/${p.id}`)}`, mine);
    }
  });

  it('string: starts-with, case- and accent-insensitive, :exact, HumanName and Address parts; :contains is a 400', async () => {
    const created = body(await t.http.post('/fhir/Patient').set(auth()).set('Content-Type', FHIR_JSON)
      .send(JSON.stringify({ resourceType: 'Patient', name: [{ family: 'Müller-Lüdenscheidt', given: ['Zoë'] }], address: [{ city: 'São Paulo' }] })));
    const patients = [...byType('Patient'), created];
    const norm = (s: string) => s.normalize('NFD').replace(/[\u0300-\u036f]/g, '').toLowerCase();
    const nameParts = (p: R) => (p.name ?? []).flatMap((n: any) => [n.family, ...(n.given ?? []), ...(n.prefix ?? []), ...(n.suffix ?? []), n.text].filter(Boolean));
    for (const q of ['mul', 'MULLER-LUDENS', 'zoe', byType('Patient')[0].name[0].family.slice(0, 4).toUpperCase(), byType('Patient')[1].name[0].given[0]]) {
      await expectSearch(`Patient?name=${encodeURIComponent(q)}`, patients.filter((p) => nameParts(p).some((s: string) => norm(s).startsWith(norm(q)))), `name=${q}`);
    }
    const family = byType('Patient')[0].name[0].family;
    await expectSearch(`Patient?family:exact=${encodeURIComponent(family)}`, patients.filter((p) => p.name.some((n: any) => n.family === family)));
    await expectSearch(`Patient?family:exact=${encodeURIComponent(family.toLowerCase())}`, []);
    await expectSearch('Patient?address-city=sao%20p', [created]);
    const city = byType('Patient')[0].address[0].city;
    await expectSearch(`Patient?address=${encodeURIComponent(city)}`, patients.filter((p) => (p.address ?? []).some((a: any) => [a.city, ...(a.line ?? []), a.state, a.postalCode, a.country].some((s) => s && norm(s).startsWith(norm(city))))));
    const contains = await get('Patient?name:contains=ull');
    assert.equal(contains.status, 400);
    assert.equal(body(contains).issue[0].code, 'not-supported');
    await t.http.delete(`/fhir/Patient/${created.id}`).set(auth());
  });

  it('date: every prefix on dateTime, date and Period values, against the R4 semantics', async () => {
    const obs = byType('Observation').filter((o) => o.effectiveDateTime);
    const times = obs.map((o) => instant(o.effectiveDateTime)).sort((a, b) => a - b);
    const mid = new Date(times[Math.floor(times.length / 2)]).toISOString().slice(0, 10);
    const dayStart = instant(`${mid}T00:00:00Z`);
    const dayEnd = dayStart + 86_400_000;
    const at = (o: R) => instant(o.effectiveDateTime); // second precision: [at, at + 1 s)
    const cases: Array<[string, (o: R) => boolean]> = [
      [`eq${mid}`, (o) => at(o) >= dayStart && at(o) < dayEnd],
      [mid, (o) => at(o) >= dayStart && at(o) < dayEnd],
      [`lt${mid}`, (o) => at(o) < dayStart],
      [`eb${mid}`, (o) => at(o) + 1000 <= dayStart],
      [`le${mid}`, (o) => at(o) < dayEnd],
      [`gt${mid}`, (o) => at(o) + 1000 > dayEnd],
      [`sa${mid}`, (o) => at(o) >= dayEnd],
      [`ge${mid}`, (o) => at(o) >= dayStart],
      [`ge${mid.slice(0, 4)}`, (o) => at(o) >= instant(`${mid.slice(0, 4)}-01-01T00:00:00Z`)],
      [`lt${mid.slice(0, 7)}`, (o) => at(o) < instant(`${mid.slice(0, 7)}-01T00:00:00Z`)],
    ];
    for (const [q, expected] of cases) await expectSearch(`Observation?date=${q}`, obs.filter(expected), `date=${q}`);
    // Two bounds AND together; a comma ORs.
    const from = new Date(times[Math.floor(times.length / 4)]).toISOString().slice(0, 10);
    await expectSearch(`Observation?date=ge${from}&date=lt${mid}`, obs.filter((o) => at(o) >= instant(`${from}T00:00:00Z`) && at(o) < dayStart));
    await expectSearch(`Observation?date=${from},${mid}`, obs.filter((o) => (at(o) >= instant(`${from}T00:00:00Z`) && at(o) < instant(`${from}T00:00:00Z`) + 86_400_000) || (at(o) >= dayStart && at(o) < dayEnd)));
    // date (birthDate, day precision) and Period (Encounter.period).
    const p = byType('Patient')[0];
    await expectSearch(`Patient?birthdate=${p.birthDate}`, byType('Patient').filter((x) => x.birthDate === p.birthDate));
    await expectSearch(`Patient?birthdate=lt${p.birthDate}`, byType('Patient').filter((x) => x.birthDate < p.birthDate));
    const enc = byType('Encounter');
    const e0 = enc[Math.floor(enc.length / 2)];
    const pStart = (e: R) => instant(e.period.start);
    const pEnd = (e: R) => (e.period.end ? instant(e.period.end) + 1000 : Infinity);
    const eDay = e0.period.start.slice(0, 10);
    const s0 = instant(`${eDay}T00:00:00Z`);
    await expectSearch(`Encounter?date=${eDay}`, enc.filter((e) => pStart(e) >= s0 && pEnd(e) <= s0 + 86_400_000));
    await expectSearch(`Encounter?date=gt${eDay}`, enc.filter((e) => pEnd(e) > s0 + 86_400_000));
    for (const bad of ['ne2020', 'ap2020', 'yesterday']) assert.equal((await get(`Observation?date=${bad}`)).status, 400, bad);
  });

  it('quantity and number: prefixes with value|system|code and value||unit', async () => {
    const weights = byType('Observation').filter((o) => o.valueQuantity && codings(o.code).some((c: any) => c.code === '29463-7'));
    assert.ok(weights.length > 0);
    const values = weights.map((o) => o.valueQuantity.value).sort((a, b) => a - b);
    const mid = values[Math.floor(values.length / 2)];
    const q = (o: R) => o.valueQuantity;
    const allQ = byType('Observation').filter((o) => o.valueQuantity);
    await expectSearch(`Observation?value-quantity=gt${mid}|http://unitsofmeasure.org|kg`, allQ.filter((o) => q(o).system === 'http://unitsofmeasure.org' && q(o).code === 'kg' && q(o).value > mid));
    await expectSearch(`Observation?value-quantity=le${mid}||kg`, allQ.filter((o) => (q(o).code === 'kg' || q(o).unit === 'kg') && q(o).value <= mid));
    // One decimal: the implicit range is [x - 0.05, x + 0.05).
    const lexeme = mid.toFixed(1);
    const inRange = (v: number) => v >= Number(lexeme) - 0.05 && v < Number(lexeme) + 0.05;
    assert.ok(allQ.some((o) => inRange(q(o).value)));
    await expectSearch(`Observation?value-quantity=${lexeme}`, allQ.filter((o) => inRange(q(o).value)));
    await expectSearch(`Observation?value-quantity=ne${lexeme}||kg`, allQ.filter((o) => (q(o).code === 'kg' || q(o).unit === 'kg') && !inRange(q(o).value)));
    // The exact lexeme of a stored value finds it.
    await expectSearch(`Observation?value-quantity=${String(mid)}`, allQ.filter((o) => q(o).value === mid));
  });

  it('chains: subject:Patient.name, patient.identifier; a 400 when the inner search is ambiguous', async () => {
    const p = byType('Patient')[1];
    const mine = byType('Observation').filter((o) => o.subject?.reference === `Patient/${p.id}`);
    await expectSearch(`Observation?subject:Patient.name=${encodeURIComponent(p.name[0].family)}`, mine.filter(() => true));
    const ident = p.identifier.find((i: any) => i.system && i.value);
    await expectSearch(`Observation?patient.identifier=${encodeURIComponent(`${ident.system}|${ident.value}`)}`, mine);
    await expectSearch(`Encounter?subject.name=${encodeURIComponent(p.name[0].family)}`, byType('Encounter').filter((e) => e.subject?.reference === `Patient/${p.id}`));
    await expectSearch('Observation?subject:Patient.name=nobody-has-this-name', []);
    assert.equal((await get('Observation?subject.name.family=x')).status, 400);
  });

  it('_include and _revinclude, de-duplicated, with search.mode include', async () => {
    const p = byType('Patient')[0];
    const mine = byType('Encounter').filter((e) => e.subject?.reference === `Patient/${p.id}`);
    const inc = await searchAll(`Encounter?subject=Patient/${p.id}&_include=Encounter:subject`);
    assert.deepEqual(sorted(inc.ids), sorted(mine.map((e) => e.id)));
    assert.deepEqual(inc.included.map((r) => `${r.resourceType}/${r.id}`), [`Patient/${p.id}`]);
    const practitioners = new Set(mine.flatMap((e) => (e.participant ?? []).map((x: any) => x.individual?.reference)).filter(Boolean));
    const incP = await searchAll(`Encounter?subject=Patient/${p.id}&_include=Encounter:participant:Practitioner`);
    assert.deepEqual(sorted(incP.included.map((r) => `${r.resourceType}/${r.id}`)), sorted([...practitioners]));
    const rev = await searchAll(`Patient?_id=${p.id}&_revinclude=Encounter:subject&_revinclude=Condition:subject`);
    assert.deepEqual(rev.ids, [p.id]);
    const expected = [...mine, ...byType('Condition').filter((c) => c.subject?.reference === `Patient/${p.id}`)].map((r) => `${r.resourceType}/${r.id}`);
    assert.deepEqual(sorted(rev.included.map((r) => `${r.resourceType}/${r.id}`)), sorted(expected));
    // A patient-bound token gets only what it may read: the Practitioners are dropped.
    const tok = await t.token('patient/*.rs', p.id);
    const scoped = await searchAll('Encounter?_include=Encounter:participant&_include=Encounter:subject', tok);
    assert.deepEqual(scoped.included.map((r) => `${r.resourceType}/${r.id}`), [`Patient/${p.id}`]);
    assert.equal((await get('Encounter?_include=Encounter:nope')).status, 400);
  });

  it('_sort on a date parameter and _lastUpdated, both directions, with stable keyset paging', async () => {
    const p = byType('Patient')[2];
    const mine = byType('Observation').filter((o) => o.subject?.reference === `Patient/${p.id}` && o.effectiveDateTime);
    const key = (o: R) => instant(o.effectiveDateTime);
    const asc = [...mine].sort((a, b) => key(a) - key(b) || (a.id < b.id ? -1 : 1)).map((o) => o.id);
    const desc = [...mine].sort((a, b) => key(b) - key(a) || (a.id < b.id ? -1 : 1)).map((o) => o.id);
    const up = await searchAll(`Observation?patient=${p.id}&_sort=date&_count=7`);
    assert.deepEqual(up.ids, asc);
    assert.ok(up.pages > 2);
    const down = await searchAll(`Observation?patient=${p.id}&_sort=-date&_count=5`);
    assert.deepEqual(down.ids, desc);
    const byId = await searchAll(`Observation?patient=${p.id}&_sort=-_id&_count=9`);
    assert.deepEqual(byId.ids, [...mine.map((o) => o.id)].sort().reverse());
    const lu = await searchAll(`Observation?patient=${p.id}&_sort=_lastUpdated&_count=50`);
    assert.equal(lu.ids.length, mine.length);
    assert.equal((await get('Observation?_sort=value-quantity')).status, 400);
  });

  it('_elements returns a SUBSETTED top-level subset with the mandatory elements', async () => {
    const res = body(await get('Observation?_elements=subject&_count=3'));
    for (const e of res.entry) {
      const r = e.resource;
      assert.deepEqual(Object.keys(r).sort(), ['code', 'id', 'meta', 'resourceType', 'status', 'subject']);
      assert.ok(r.meta.tag.some((t: any) => t.code === 'SUBSETTED'));
    }
    assert.equal((await get('Observation?_elements=notAnElement')).status, 400);
  });

  it('pages with a post-filter never repeat or drop a resource; _summary=count agrees', async () => {
    const obs = byType('Observation').filter((o) => o.effectiveDateTime);
    const year = obs[0].effectiveDateTime.slice(0, 4);
    const expected = obs.filter((o) => instant(o.effectiveDateTime) >= instant(`${year}-01-01T00:00:00Z`));
    for (const count of [1, 7, 50]) {
      const { ids, pages } = await searchAll(`Observation?date=ge${year}&_count=${count}`);
      assert.deepEqual(sorted(ids), sorted(expected.map((o) => o.id)), `_count=${count}`);
      if (count === 1) assert.equal(pages, expected.length);
    }
    assert.equal(body(await get(`Observation?date=ge${year}&_summary=count`)).total, expected.length);
    const all = await searchAll('Observation?_count=13');
    assert.deepEqual(sorted(all.ids), sorted(byType('Observation').map((o) => o.id)));
  });

  it('conditional create decides date criteria exactly (post-filter in findMatches)', async () => {
    const p = byType('Patient')[0];
    const criteria = `family=${encodeURIComponent(p.name[0].family)}&birthdate=${p.birthDate}`;
    const res = await t.http.post('/fhir/Patient').set(auth()).set('Content-Type', FHIR_JSON).set('If-None-Exist', criteria)
      .send(JSON.stringify({ resourceType: 'Patient', name: p.name }));
    assert.equal(res.status, 200, res.text);
    assert.equal(body(res).id, p.id);
    const other = await t.http.post('/fhir/Patient').set(auth()).set('Content-Type', FHIR_JSON)
      .set('If-None-Exist', `family=${encodeURIComponent(p.name[0].family)}&birthdate=lt1800`)
      .send(JSON.stringify({ resourceType: 'Patient', name: [{ family: 'Conditional' }] }));
    assert.equal(other.status, 201);
    await t.http.delete(`/fhir/Patient/${body(other).id}`).set(auth());
  });
});
