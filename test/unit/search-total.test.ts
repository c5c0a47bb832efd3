/**
 * `_total` when counting is cheap and when it is not: a search whose post-filter would scan more than
 * MAX_SCAN candidates, on a store that holds them only virtually (rows are made on demand).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FhirRepository, MAX_SCAN } from '../../src/fhir/repository.ts';
import type { ResourceStore, StoreQuery, StoredVersion } from '../../src/vault/store.ts';

/** `n` Observations `o-00000…` with valueQuantity 0, 1, 0, 1 …; search and count ignore the clauses. */
function virtualStore(n: number): ResourceStore {
  const id = (i: number) => `o-${String(i).padStart(6, '0')}`;
  const row = (i: number): StoredVersion => ({
    type: 'Observation', id: id(i), versionId: 1, lastUpdated: '2024-01-01T00:00:00.000Z', deleted: false, seq: i + 1, digest: null,
    content: new TextEncoder().encode(JSON.stringify({
      resourceType: 'Observation', id: id(i), status: 'final', code: { text: 'x' }, valueQuantity: { value: i % 2, unit: 'kg' },
    })),
  });
  const store: Partial<ResourceStore> = {
    search: async (q: StoreQuery) => {
      const from = q.afterId === undefined ? 0 : Number(q.afterId.slice(2)) + 1;
      return Array.from({ length: Math.max(0, Math.min(q.limit, n - from)) }, (_, k) => row(from + k));
    },
    count: async () => n,
  };
  return store as ResourceStore;
}

const ONES = ['value-quantity', 'ge1'] as [string, string];

describe('search totals', () => {
  it('an exact total on every page when the post-filter scan stays within the cap', async () => {
    const repo = new FhirRepository(virtualStore(30));
    let page = await repo.search('Observation', [ONES, ['_count', '4']]);
    const seen: string[] = [];
    for (;;) {
      assert.equal(page.total, 15);
      seen.push(...page.versions.map((v) => v.id));
      if (page.nextCursor === undefined) break;
      page = await repo.search('Observation', [ONES, ['_count', '4'], ['_cursor', page.nextCursor]]);
    }
    assert.equal(seen.length, 15);
    assert.equal((await repo.search('Observation', [ONES, ['_total', 'none']])).total, undefined);
  });

  it('beyond the cap: left out with a warning by default, an upper bound for estimate, 400 too-costly for accurate', async () => {
    const n = MAX_SCAN + 2;
    const repo = new FhirRepository(virtualStore(n));
    const plain = await repo.search('Observation', [ONES, ['_count', '2']]);
    assert.equal(plain.total, undefined);
    assert.match(plain.warnings.join(), /total left out/);
    assert.equal(plain.versions.length, 2);
    const estimate = await repo.search('Observation', [ONES, ['_count', '2'], ['_total', 'estimate']]);
    assert.equal(estimate.total, n);
    assert.deepEqual(estimate.warnings, []);
    await assert.rejects(repo.search('Observation', [ONES, ['_total', 'accurate']]), (e: { status?: number; issues?: Array<{ code: string }> }) =>
      e.status === 400 && e.issues?.[0].code === 'too-costly');
    const none = await repo.search('Observation', [ONES, ['_total', 'none']]);
    assert.equal(none.total, undefined);
    assert.deepEqual(none.warnings, []);
  });
});
