/**
 * Reads of the MongoDB store: a resource's current version and its index terms, one version, search, count
 * and history. What they show follows the visibility rule of mongo-store.ts: a version is visible iff the
 * current pointer of its resource is at that version or beyond.
 */
import type { Filter } from 'mongodb';
import { movedBack, type HeadCollections } from './mongo-head.ts';
import { pointerKey, slotKey, toStored, type PointerDoc, type Vault, type VersionDoc } from './mongo-vault.ts';
import type { HistoryQuery, IndexTerm, InstantBound, StoreQuery, StoredVersion } from '../../vault/store.ts';

function headCollections(vault: Vault): HeadCollections {
  const { versions, pointers, txs, decisions } = vault;
  return { versions, pointers, txs, decisions } as unknown as HeadCollections;
}

export async function current(vault: Vault, type: string, id: string): Promise<StoredVersion | undefined> {
  const pointer = await vault.pointers.findOne({ _id: pointerKey(type, id) }, { projection: { version: 1, deleted: 1, mac: 1 } });
  if (!pointer) return undefined;
  const [doc, superseded] = await Promise.all([
    vault.versions.findOne({ _id: slotKey(type, id, pointer.version) }),
    movedBack(headCollections(vault), [pointer]),
  ]);
  if (!doc) return undefined;
  return { ...toStored(doc), head: { mac: pointer.mac ?? null, hidden: pointer.deleted, superseded: superseded.size > 0 } };
}

export async function indexTerms(vault: Vault, type: string, id: string): Promise<IndexTerm[]> {
  const pointer = await vault.pointers.findOne({ _id: pointerKey(type, id) }, { projection: { terms: 1 } });
  return (pointer?.terms ?? []).map((term) => {
    const at = term.indexOf('=');
    return { param: term.slice(0, at), value: term.slice(at + 1) };
  });
}

export async function version(vault: Vault, type: string, id: string, versionId: number): Promise<StoredVersion | undefined> {
  const [doc, pointer] = await Promise.all([
    vault.versions.findOne({ _id: slotKey(type, id, versionId) }),
    vault.pointers.findOne({ _id: pointerKey(type, id) }, { projection: { version: 1 } }),
  ]);
  // Visible only once the pointer reached it: a version beyond the pointer is in flight or left over.
  return doc && pointer && doc.v <= pointer.version ? toStored(doc) : undefined;
}

const BOUND_OPS = { gt: '$gt', ge: '$gte', lt: '$lt', le: '$lte' } as const;

function boundFilter(bound: InstantBound): Filter<PointerDoc> {
  return { lastUpdated: { [BOUND_OPS[bound.op]]: bound.value } };
}

function searchFilter(query: StoreQuery, withCursor: boolean): Filter<PointerDoc> {
  const and: Filter<PointerDoc>[] = [{ type: query.type }, { deleted: false }];
  if (query.ids) and.push({ _id: { $in: query.ids.map((id) => pointerKey(query.type, id)) } });
  for (const clause of query.clauses) {
    const values = clause.anyOf.map((value) => `${clause.param}=${value}`);
    and.push({ terms: clause.negate ? { $nin: values } : { $in: values } });
  }
  for (const bound of query.lastUpdated) and.push(boundFilter(bound));
  if (withCursor && query.afterId !== undefined) and.push({ id: { $gt: query.afterId } });
  return { $and: and };
}

export async function search(vault: Vault, query: StoreQuery): Promise<StoredVersion[]> {
  if (query.limit <= 0) return [];
  const pointers = await vault.pointers
    .find(searchFilter(query, true), { projection: { type: 1, id: 1, version: 1, deleted: 1, mac: 1 } })
    .sort({ id: 1 })
    .limit(query.limit)
    .toArray();
  if (pointers.length === 0) return [];
  const slots = pointers.map((p) => slotKey(p.type, p.id, p.version));
  const [found, superseded] = await Promise.all([
    vault.versions.find({ _id: { $in: slots } }).toArray(),
    movedBack(headCollections(vault), pointers),
  ]);
  const docs = new Map(found.map((d) => [d._id, d]));
  return pointers.flatMap((p, i) => {
    const doc = docs.get(slots[i]);
    return doc ? [{ ...toStored(doc), head: { mac: p.mac ?? null, hidden: p.deleted, superseded: superseded.has(p._id) } }] : [];
  });
}

export async function count(vault: Vault, query: StoreQuery): Promise<number> {
  return vault.pointers.countDocuments(searchFilter(query, false));
}

function historyFilter(query: HistoryQuery): Filter<VersionDoc> {
  const filter: Filter<VersionDoc> = {};
  if (query.type !== undefined) filter.type = query.type;
  if (query.id !== undefined) filter.id = query.id;
  if (query.since !== undefined) filter.lastUpdated = { $gte: query.since };
  return filter;
}

export async function history(vault: Vault, query: HistoryQuery): Promise<StoredVersion[]> {
  if (query.limit <= 0) return [];
  const result: StoredVersion[] = [];
  let beforeSeq = query.beforeSeq;
  // Versions beyond their pointer (in flight, left over) are skipped; pages are refilled past them.
  for (;;) {
    const filter = historyFilter(query);
    if (beforeSeq !== undefined) filter.seq = { $lt: beforeSeq };
    const want = query.limit - result.length;
    const docs = await vault.versions.find(filter).sort({ seq: -1 }).limit(want).toArray();
    if (docs.length === 0) return result;
    const keys = [...new Set(docs.map((d) => pointerKey(d.type, d.id)))];
    const at = new Map(
      (await vault.pointers.find({ _id: { $in: keys } }, { projection: { version: 1 } }).toArray()).map((p) => [p._id, p.version]),
    );
    for (const d of docs) if (d.v <= (at.get(pointerKey(d.type, d.id)) ?? 0)) result.push(toStored(d));
    if (docs.length < want || result.length >= query.limit) return result;
    beforeSeq = docs[docs.length - 1].seq;
  }
}

/** Counts the versions written, including those of a batch still in flight (history() skips them). */
export async function countHistory(vault: Vault, query: HistoryQuery): Promise<number> {
  return vault.versions.countDocuments(historyFilter(query));
}
