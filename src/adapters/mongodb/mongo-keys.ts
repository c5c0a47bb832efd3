/**
 * Data keys of the MongoDB store (collections `data_keys` and `erased_keys`, see mongo-store.ts): insert,
 * get, list, re-wrap and erase, and the index shredding an erasure implies.
 *
 * Erasure (crypto-shredding). eraseKey(k) runs three steps, each idempotent, so running it again finishes
 * an interrupted one:
 *   1. Insert the tombstone `erased_keys {_id: k}`. A unique insert: the first erasure's instant stands.
 *   2. Delete `data_keys {_id: k}`: the wrapped bytes are gone.
 *   3. Shred the index: pointers with keyId k get `deleted: true, terms: []`, versions with keyId k get
 *      `terms: []`. Returns how many pointers were hidden.
 *   The tombstone is a document of its own, not the key document rewritten, because of FerretDB's updates:
 *   a re-wrap writes back the whole document it read, which would overwrite a tombstone kept under the same
 *   `_id` with the live key. Here a late re-wrap writes to a row that step 2 deleted (FerretDB runs
 *   `UPDATE … WHERE _id = ?`, and an update without upsert never creates a document) or lands before step 2
 *   and is deleted by it. Every writer of a data key writes first and then reads the tombstone, while an
 *   erasure writes the tombstone first and then deletes or hides. So of two racing parties at least one sees
 *   the other's write:
 *   - insertKey inserts, then reads the tombstone; if there is one, it deletes the key again.
 *   - rewrapKey updates, then reads the tombstone; if there is one (also after an erasure interrupted
 *     between steps 1 and 2), it deletes the key and returns false.
 *   - getKey reads the key, then the tombstone, which wins; listKeys skips keys that have one.
 *   - Roll-forward (mongo-batch.ts) moves the pointers, then reads the tombstones of their keys and shreds
 *     those that are erased (before it deletes the tx document, so recovery repeats the check). So neither a
 *     batch that committed before the erasure and is rolled forward after it, by its gateway or by recovery,
 *     nor one sealed under the key after the erasure, leaves terms searchable once roll-forward is done.
 *   What the upper layer must guarantee: that it never seals new data under an erased key (getKey returns
 *   the tombstone, so the vault refuses to), and that in one gateway writes and erasures of one key are
 *   serialised. The adapter hides such data only after the fact: a reader may see it between the pointer
 *   moves and the check, and a version that its own batch superseded keeps its terms when only that version,
 *   not the batch's last one, was sealed under the erased key (the check looks at the pointers' keys).
 *   On FerretDB, step 3 racing with a roll-forward of the same resource may write back the pointer it read
 *   (hidden, at the superseded version): the lost update of the caveat in mongo-store.ts ("Concurrency").
 *   The resource stays hidden, but its pointer lags its committed version, so writes to it conflict.
 *   Physical deletion is the engine's: WiredTiger keeps deleted bytes until the space is reused and a replica
 *   set's oplog keeps the inserted key until it rolls over; FerretDB's SQLite runs without `secure_delete`
 *   unless its URI sets it. Retiring the master key a wrapped copy was made under bounds what lingers.
 */
import { Binary } from 'mongodb';
import type { Filter } from 'mongodb';
import { isDuplicateKey } from './driver.ts';
import { bytesOf, type DataKeyDoc, type ErasedKeyDoc, type Vault } from './mongo-vault.ts';
import type { KeyEntry, NewKey } from '../../vault/store.ts';

function liveKeyEntry(doc: DataKeyDoc): KeyEntry {
  return { keyId: doc._id, createdAt: doc.createdAt, masterKeyId: doc.masterKeyId, wrapped: bytesOf(doc.wrapped), erasedAt: null };
}

function tombstoneEntry(doc: ErasedKeyDoc): KeyEntry {
  return { keyId: doc._id, createdAt: doc.createdAt, masterKeyId: null, wrapped: null, erasedAt: doc.erasedAt };
}

export async function insertKey(vault: Vault, key: NewKey): Promise<KeyEntry> {
  const { keyId, createdAt, masterKeyId, wrapped } = key;
  try {
    await vault.dataKeys.insertOne({ _id: keyId, createdAt, masterKeyId, wrapped: new Binary(wrapped) });
  } catch (e) {
    if (!isDuplicateKey(e)) throw e; // the stored key stands
  }
  // Read after the insert: an erasure that missed the key we inserted has left a tombstone we see here.
  const stored = await getKey(vault, keyId);
  if (!stored) throw new Error(`data key ${keyId} vanished right after it was inserted`);
  if (stored.erasedAt !== null) await vault.dataKeys.deleteOne({ _id: keyId });
  return stored;
}

export async function getKey(vault: Vault, keyId: string): Promise<KeyEntry | undefined> {
  // The live key first, then the tombstone: an erasure inserts the tombstone before it deletes the key, so
  // a key found missing here always has its tombstone visible to the second read.
  const live = await vault.dataKeys.findOne({ _id: keyId });
  const tombstone = await vault.erasedKeys.findOne({ _id: keyId });
  if (tombstone) return tombstoneEntry(tombstone);
  return live ? liveKeyEntry(live) : undefined;
}

export async function listKeys(vault: Vault, query: { notWrappedUnder: string; afterKeyId?: string; limit: number }): Promise<KeyEntry[]> {
  const result: KeyEntry[] = [];
  let afterKeyId = query.afterKeyId;
  // Keys whose erasure was interrupted (tombstone in, key not yet deleted) are skipped; pages are refilled past them.
  while (result.length < query.limit) {
    const filter: Filter<DataKeyDoc> = { masterKeyId: { $ne: query.notWrappedUnder } };
    if (afterKeyId !== undefined) filter._id = { $gt: afterKeyId };
    const want = query.limit - result.length;
    const docs = await vault.dataKeys.find(filter).sort({ _id: 1 }).limit(want).toArray();
    if (docs.length === 0) break;
    const erased = await vault.erasedKeys.find({ _id: { $in: docs.map((d) => d._id) } }, { projection: { _id: 1 } }).toArray();
    const erasedIds = new Set(erased.map((e) => e._id));
    result.push(...docs.filter((d) => !erasedIds.has(d._id)).map(liveKeyEntry));
    if (docs.length < want) break;
    afterKeyId = docs[docs.length - 1]._id;
  }
  return result;
}

export async function rewrapKey(
  vault: Vault,
  keyId: string,
  fromMasterKeyId: string,
  next: { masterKeyId: string; wrapped: Uint8Array },
): Promise<boolean> {
  const { matchedCount } = await vault.dataKeys.updateOne(
    { _id: keyId, masterKeyId: fromMasterKeyId },
    { $set: { masterKeyId: next.masterKeyId, wrapped: new Binary(next.wrapped) } },
  );
  if (matchedCount !== 1) return false;
  // Read after the write: the key may be erased (concurrently, or by an erasure interrupted before it
  // deleted the key); then it was not re-wrapped, and its bytes must not outlive the tombstone.
  if (await vault.erasedKeys.findOne({ _id: keyId }, { projection: { _id: 1 } })) {
    await vault.dataKeys.deleteOne({ _id: keyId });
    return false;
  }
  return true;
}

export async function eraseKey(vault: Vault, keyId: string, erasedAt: string): Promise<{ resources: number }> {
  const live = await vault.dataKeys.findOne({ _id: keyId }, { projection: { createdAt: 1 } });
  try {
    await vault.erasedKeys.insertOne({ _id: keyId, createdAt: live?.createdAt ?? erasedAt, erasedAt });
  } catch (e) {
    if (!isDuplicateKey(e)) throw e; // erased before: the first erasure's instant stands
  }
  await vault.dataKeys.deleteOne({ _id: keyId });
  return { resources: await shredIndex(vault, [keyId]) };
}

/**
 * Shreds again what was just written under these data keys if they were erased meanwhile (see "Erasure"
 * above): the documents were written before the tombstones are read here, and eraseKey inserts its
 * tombstone before it shreds, so either this read sees the tombstone or the erasure sees the writes.
 */
export async function shredIfErased(vault: Vault, writtenUnder: string[]): Promise<void> {
  const keyIds = [...new Set(writtenUnder)];
  if (keyIds.length === 0) return;
  const erased = await vault.erasedKeys.find({ _id: { $in: keyIds } }, { projection: { _id: 1 } }).toArray();
  if (erased.length > 0) await shredIndex(vault, erased.map((e) => e._id));
}

/**
 * Removes the index terms of every pointer and version sealed under these keys and hides the pointers
 * from search and count. Returns how many pointers it hid.
 */
async function shredIndex(vault: Vault, keyIds: string[]): Promise<number> {
  const sealed = { keyId: { $in: keyIds } };
  const hidden = await vault.pointers.updateMany({ ...sealed, deleted: false }, { $set: { deleted: true, terms: [] } });
  await vault.versions.updateMany({ ...sealed, terms: { $ne: [] } }, { $set: { terms: [] } });
  return hidden.modifiedCount;
}
