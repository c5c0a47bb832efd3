/** Every Synthea bundle in ../shared/fhir-data/synthea loads, with every reference resolved and no duplicates. */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { collectReferences } from '../../src/fhir/references.ts';
import { body, FHIR_DATA, FHIR_JSON, forEachStore, type TestGateway } from '../support/gateway.ts';

forEachStore((start, store) => {
  let t: TestGateway;
  before(async () => {
    t = await start();
  });
  after(async () => t.close());

  const SYNTHEA = join(FHIR_DATA, 'synthea');
  /** Resources the loads reported as created, and the references those resources carried when sent. */
  let created = 0;
  let sentReferences = 0;
  const isInfo = (f: string) => /^(hospital|practitioner)Information/.test(f);

  async function postBundle(file: string) {
    const text = readFileSync(file, 'utf8');
    const res = await t.http.post('/fhir').set('Authorization', `Bearer ${t.admin}`).set('Content-Type', FHIR_JSON).send(text);
    assert.equal(res.status, 200, `${file}: ${res.text.slice(0, 500)}`);
    const out = body(res);
    const failed = out.entry.filter((e: any) => !e.response.status.startsWith('2'));
    assert.deepEqual(failed, [], `${file}: entries failed`);
    const sent = JSON.parse(text).entry;
    out.entry.forEach((e: any, i: number) => {
      if (e.response.status !== '201 Created') return;
      created++;
      sentReferences += collectReferences(sent[i].resource).length;
    });
    return out;
  }

  const count = async (q: string) =>
    body(await t.http.get(`/fhir/${q}${q.includes('?') ? '&' : '?'}_summary=count`).set('Authorization', `Bearer ${t.admin}`)).total as number;

  describe('Synthea bundles', () => {
    const loadSet = async (set: string) => {
      const dir = join(SYNTHEA, set);
      const files = readdirSync(dir).sort((a, b) => Number(isInfo(b)) - Number(isInfo(a)) || a.localeCompare(b));
      for (const file of files) await postBundle(join(dir, file));
    };

    // FerretDB's SQLite backend uses no index for queries (see src/adapters/mongodb/mongo-store.ts), so the
    // 2,382 conditional creates of each hiv-2021 reference batch scan the collection every time: that set
    // runs on SQLite only; conditional references and ifNoneExist run on both vaults in bundles.test.ts.
    if (store === 'sqlite') {
      it('loads hiv-2021: the hospital and practitioner batches first, then patients with conditional references', async () => {
        await loadSet('hiv-2021');
      });

      it('creates no duplicate through ifNoneExist when the reference batches are loaded again', async () => {
        const before = { practitioners: await count('Practitioner'), organizations: await count('Organization'), locations: await count('Location') };
        const info = readdirSync(join(SYNTHEA, 'hiv-2021')).filter(isInfo);
        for (const file of info) {
          const requests = JSON.parse(readFileSync(join(SYNTHEA, 'hiv-2021', file), 'utf8')).entry.map((e: any) => e.request);
          const out = await postBundle(join(SYNTHEA, 'hiv-2021', file));
          const conditional = out.entry.filter((_: unknown, i: number) => requests[i].ifNoneExist);
          assert.ok(conditional.length > 1000);
          assert.ok(conditional.every((e: any) => e.response.status === '200 OK'), `${file}: ifNoneExist entries must create nothing`);
        }
        assert.deepEqual(
          { practitioners: await count('Practitioner'), organizations: await count('Organization'), locations: await count('Location') },
          before,
        );
        const npi = JSON.parse(readFileSync(join(SYNTHEA, 'hiv-2021', info.find((f) => f.startsWith('practitioner'))!), 'utf8'))
          .entry[0].resource.identifier[0];
        assert.equal(await count(`Practitioner?identifier=${npi.system}|${npi.value}`), 1);
      });
    }

    it('loads smart-2019 (transactions that re-POST their organizations and practitioners)', async () => {
      await loadSet('smart-2019');
    });

    it('left every reference resolved to a stored resource, with no urn:uuid or conditional reference', async () => {
      const store = t.gateway.store;
      const seen = new Set<string>();
      const references: string[] = [];
      let stored = 0;
      for (let cursor: number | undefined; ; ) {
        const page = await store.history({ limit: 5000, beforeSeq: cursor });
        for (const v of page) {
          // AuditEvents are the gateway's own access log, not data the bundles sent.
          if (v.deleted || v.type === 'AuditEvent' || seen.has(`${v.type}/${v.id}`)) continue;
          seen.add(`${v.type}/${v.id}`);
          stored++;
          references.push(...collectReferences(JSON.parse(new TextDecoder().decode(v.content!))));
        }
        if (page.length < 5000) break;
        cursor = page[page.length - 1].seq;
      }
      assert.equal(stored, created, "every resource reported created is stored, and nothing else");
      assert.equal(references.length, sentReferences, 'every reference sent is stored (rewritten, not dropped)');
      const unresolved = references.filter((r) => !r.startsWith('#') && !seen.has(r));
      assert.deepEqual(unresolved.slice(0, 10), [], `${unresolved.length} unresolved references`);
    });
  });
});
