/**
 * Index rewrites of the MongoDB store (see mongo-store.ts for the collections): re-deriving one resource's
 * terms (index key rotation) and deleting terms across resources (erasure of the references to a patient).
 * Both also rewrite the `terms` of version documents, which hold a copy of their version's terms for
 * roll-forward: otherwise superseded tokens would stay in the database.
 */
import type { Collection } from 'mongodb';
import type { IndexTerm } from '../../vault/store.ts';

/** The fields of the `current` and `versions` documents these rewrites touch. */
interface PointerFields {
  _id: string;
  version: number;
  deleted: boolean;
  keyId: string | null;
  terms: string[];
}
interface VersionFields {
  _id: string;
  type: string;
  id: string;
  v: number;
  terms: string[];
}

/** A term as stored: `param=value` (param names never contain `=`). */
export function termStrings(terms: IndexTerm[]): string[] {
  return [...new Set(terms.map((t) => `${t.param}=${t.value}`))];
}

/**
 * Sets the terms of a resource whose pointer is still at `versionId` and not deleted (a conditional update:
 * atomic on MongoDB; on FerretDB it shares the read-then-write caveat of pointer moves). Returns the pointer's
 * key id when it applied (the caller re-checks that key's tombstone), false otherwise.
 */
export async function replaceResourceTerms<P extends PointerFields, V extends VersionFields>(
  pointers: Collection<P>,
  versions: Collection<V>,
  ref: { pointerId: string; slotId: string; type: string; id: string; versionId: number },
  terms: IndexTerm[],
): Promise<{ keyId: string | null } | false> {
  const strings = termStrings(terms);
  const pointers_ = pointers as unknown as Collection<PointerFields>;
  const versions_ = versions as unknown as Collection<VersionFields>;
  // updateOne, not findOneAndUpdate: FerretDB implements no projection on findAndModify.
  const { matchedCount } = await pointers_.updateOne({ _id: ref.pointerId, version: ref.versionId, deleted: false }, { $set: { terms: strings } });
  if (matchedCount !== 1) return false;
  const applied = await pointers_.findOne({ _id: ref.pointerId }, { projection: { keyId: 1 } });
  await versions_.updateOne({ _id: ref.slotId }, { $set: { terms: strings } });
  await versions_.updateMany({ type: ref.type, id: ref.id, v: { $lt: ref.versionId }, terms: { $ne: [] } }, { $set: { terms: [] } });
  return { keyId: applied?.keyId ?? null };
}

/** Pulls these `param=value` terms out of every pointer and version that holds one. */
export async function pullTerms<P extends PointerFields, V extends VersionFields>(
  pointers: Collection<P>,
  versions: Collection<V>,
  terms: IndexTerm[],
): Promise<void> {
  const strings = termStrings(terms);
  if (strings.length === 0) return;
  const filter = { terms: { $in: strings } };
  const update = { $pullAll: { terms: strings } };
  await (pointers as unknown as Collection<PointerFields>).updateMany(filter, update);
  await (versions as unknown as Collection<VersionFields>).updateMany(filter, update);
}
