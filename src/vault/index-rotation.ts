/**
 * Index key rotation: a new blind-index generation (index-keys.ts), every current resource's terms re-derived
 * from its decrypted content under it, then the old generation destroyed. Online and resumable:
 *   1. The next generation `@index.<n+1>` is created (a run that finds two live generations resumes instead).
 *      Gateways read it within REFRESH_MS and from then on search both generations; they write under it once
 *      it is ACTIVATE_AFTER_MS old. The sweep waits until then (`settleMs`), so no gateway still writes the
 *      old generation behind it.
 *   2. Sweep: for each type, the resources whose marker term is not the new generation's (a negated clause,
 *      in id order) are decrypted, their terms re-derived and replaced with a compare-and-set on the version
 *      (`replaceTerms`; a resource written meanwhile got its terms from its writer). Passes repeat until one
 *      finds nothing, which also catches a write that was blinded under the old generation just before it.
 *   3. The old generations' keys are destroyed (tombstones): their tokens are gone from every index row, and
 *      the keys that made them are gone too.
 * Searches stay exact throughout: each resource's terms are under one generation, and searches OR both.
 * Data key ids are blinded under their own key, which this never touches.
 */
import type { EncryptedStore } from './encrypted-store.ts';
import { ACTIVATE_AFTER_MS, REFRESH_MS } from './index-keys.ts';
import type { IndexTerm } from './store.ts';

export interface IndexRotationProgress {
  /** Resources whose terms were re-derived under the new generation. */
  reindexed: number;
  /** Resources a concurrent write, deletion or erasure changed first (their writer indexed them). */
  skipped: number;
}

export interface IndexRotationOptions {
  /** Every resource type the vault may hold. */
  types: readonly string[];
  /** A resource's plaintext index terms, exactly as a write stages them. */
  termsOf: (type: string, resource: unknown) => IndexTerm[];
  batchSize: number;
  /** Upper bound on re-indexed resources per second, to spare a production database (0 = unlimited). */
  maxRate: number;
  /** How long after the new generation appeared the sweep may start (default: every gateway writes it by then). */
  settleMs?: number;
  onProgress?: (p: IndexRotationProgress) => void;
}

export const SETTLE_MS = ACTIVATE_AFTER_MS + REFRESH_MS;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function rotateIndexKey(
  vault: EncryptedStore,
  options: IndexRotationOptions,
): Promise<IndexRotationProgress & { generation: number; resumed: boolean; retired: number[] }> {
  const { target, retiring, resumed } = await vault.indexKeys.beginRotation();
  const wait = target.createdAt + (options.settleMs ?? SETTLE_MS) - Date.now();
  if (wait > 0) await sleep(wait);
  const progress: IndexRotationProgress = { reindexed: 0, skipped: 0 };
  const started = Date.now();
  const decoder = new TextDecoder();
  for (;;) {
    let seen = 0;
    for (const type of options.types) {
      const marker = vault.indexKeys.marker(target, type);
      let afterId: string | undefined;
      for (;;) {
        const rows = await vault.inner.search({
          type, clauses: [{ param: marker.param, anyOf: [marker.value], negate: true }], lastUpdated: [], afterId, limit: options.batchSize,
        });
        for (const stored of rows) {
          seen++;
          const row = await vault.unseal(stored);
          const resource = row.content && JSON.parse(decoder.decode(row.content));
          // The vault's reserved `_link` terms are re-derived with the rest (termsOf gives the search terms only).
          const terms = resource && vault.indexKeys.blind(target, type, [...options.termsOf(type, resource), ...vault.linkTerms(type, resource, row.lastUpdated)]);
          if (terms && (await vault.inner.replaceTerms(type, row.id, row.versionId, terms))) progress.reindexed++;
          else progress.skipped++;
          if (options.maxRate > 0) {
            const due = started + ((progress.reindexed + progress.skipped) * 1000) / options.maxRate;
            if (due > Date.now()) await sleep(due - Date.now());
          }
        }
        if (rows.length < options.batchSize) break;
        afterId = rows[rows.length - 1].id;
      }
    }
    options.onProgress?.({ ...progress });
    if (seen === 0) break;
  }
  const retiredAt = new Date().toISOString();
  for (const old of retiring) await vault.eraseKey(old.keyId, retiredAt);
  await vault.indexKeys.load();
  return { ...progress, generation: target.generation, resumed, retired: retiring.map((g) => g.generation) };
}
