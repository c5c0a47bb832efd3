/**
 * The anchor outbox of the MongoDB store: the versions the ledger has not anchored yet, and marking them.
 *
 * Versions are staged with `anchored: false`, and on MongoDB the index {anchored, seq} serves the outbox
 * query. Staged versions are in that state before their commit point too, so unanchored() keeps only those
 * whose batch has the 'committed' decision: a batch in flight, aborted or left over never shows, and one
 * that committed shows even before it is rolled forward (it will become visible). The decision is read after
 * the versions, and a 'committed' decision is permanent, so the check cannot go stale.
 * markAnchored is one conditional updateOne per version (`anchored: false`), so a version keeps its first
 * location. On FerretDB that condition is not a compare-and-set: two markAnchored of one version at once may
 * both apply (the later location stays), and one racing with an erasure's step 3 (mongo-keys.ts) may write
 * back the terms the erasure just emptied, or lose its anchor to the erasure's write-back (the version is
 * then in the outbox again and is anchored a second time). Written-back terms are handled as in roll-forward:
 * markAnchored reads the tombstones of the marked versions' keys after its writes and shreds again.
 */
import type { AnyBulkWriteOperation, Filter } from 'mongodb';
import { shredIfErased } from './mongo-keys.ts';
import { OUTBOX_PROJECTION, slotKey, toUnanchored, updateInCommands, type Vault, type VersionDoc } from './mongo-vault.ts';
import type { AnchorMark, UnanchoredVersion } from '../../vault/store.ts';

export async function unanchored(vault: Vault, query: { afterSeq?: number; limit: number }): Promise<UnanchoredVersion[]> {
  if (query.limit <= 0) return [];
  const result: UnanchoredVersion[] = [];
  let afterSeq = query.afterSeq;
  // Versions of batches not committed are skipped; pages are refilled past them.
  for (;;) {
    const filter: Filter<VersionDoc> = { anchored: false };
    if (afterSeq !== undefined) filter.seq = { $gt: afterSeq };
    const want = query.limit - result.length;
    const docs = await vault.versions.find(filter, { projection: OUTBOX_PROJECTION }).sort({ seq: 1 }).limit(want).toArray();
    if (docs.length === 0) return result;
    const decisions = await vault.decisions
      .find({ _id: { $in: [...new Set(docs.map((d) => d.tx))] }, outcome: 'committed' }, { projection: { _id: 1 } })
      .toArray();
    const committed = new Set(decisions.map((d) => d._id));
    for (const d of docs) if (committed.has(d.tx)) result.push(toUnanchored(d));
    if (docs.length < want || result.length >= query.limit) return result;
    afterSeq = docs[docs.length - 1].seq;
  }
}

export async function markAnchored(vault: Vault, marks: AnchorMark[]): Promise<void> {
  if (marks.length === 0) return;
  const slots = marks.map((m) => slotKey(m.type, m.id, m.versionId));
  const updates: AnyBulkWriteOperation<VersionDoc>[] = marks.map(({ blockNumber, envelopeIndex, entryIndex }, i) => ({
    updateOne: {
      filter: { _id: slots[i], anchored: false },
      update: { $set: { anchored: true, anchor: { blockNumber, envelopeIndex, entryIndex } } },
    },
  }));
  await updateInCommands(vault, vault.versions, updates);
  // FerretDB writes back the whole document it read: terms an erasure emptied meanwhile may be back.
  const sealed = await vault.versions.find({ _id: { $in: slots }, keyId: { $ne: null } }, { projection: { keyId: 1 } }).toArray();
  await shredIfErased(vault, sealed.map((d) => d.keyId!));
}
