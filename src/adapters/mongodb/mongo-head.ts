/**
 * The MongoStore's answer to "was this current pointer moved back?" (HeadState.superseded), kept beside
 * mongo-store.ts. See the protocol in mongo-commit.ts: a batch stages versions, passes its commit point (a 'committed'
 * decision), moves its pointers, and only then deletes its tx document. So a version beyond a pointer is
 * normal while its batch is in flight (no decision, or a tx document still there). Once the batch is
 * committed and its tx document is gone, the pointer was moved to it; if the pointer is behind it still
 * (re-read after that, since a reader's earlier pointer read may simply be older than the batch), someone
 * moved it back. Costs one exact-`_id` lookup per pointer (the one filter FerretDB answers without a scan)
 * and more only when a successor slot is taken.
 */
import type { Collection } from 'mongodb';

export interface HeadCollections {
  versions: Collection<{ _id: string; tx: number }>;
  pointers: Collection<{ _id: string; version: number }>;
  txs: Collection<{ _id: number }>;
  decisions: Collection<{ _id: number; outcome: 'committed' | 'aborted' }>;
}

/** A pointer as read: its `_id` (`Type/id`) and the version it was at. */
export interface PointerAt {
  _id: string;
  version: number;
}

/** The `_id`s of the pointers that a finished, committed batch moved past, and that are behind it again. */
export async function movedBack(c: HeadCollections, pointers: PointerAt[]): Promise<Set<string>> {
  const result = new Set<string>();
  if (pointers.length === 0) return result;
  const successorOf = new Map(pointers.map((p) => [`${p._id}/${p.version + 1}`, p]));
  const successors = await c.versions.find({ _id: { $in: [...successorOf.keys()] } }, { projection: { tx: 1 } }).toArray();
  if (successors.length === 0) return result;
  const txIds = [...new Set(successors.map((s) => s.tx))];
  const [open, committed] = await Promise.all([
    c.txs.find({ _id: { $in: txIds } }, { projection: { _id: 1 } }).toArray(),
    c.decisions.find({ _id: { $in: txIds }, outcome: 'committed' }, { projection: { _id: 1 } }).toArray(),
  ]);
  const inFlight = new Set(open.map((t) => t._id));
  const finished = new Set(committed.map((d) => d._id).filter((tx) => !inFlight.has(tx)));
  const suspects = successors.filter((s) => finished.has(s.tx)).map((s) => successorOf.get(s._id)!);
  if (suspects.length === 0) return result;
  const now = await c.pointers.find({ _id: { $in: suspects.map((p) => p._id) } }, { projection: { version: 1 } }).toArray();
  const at = new Map(now.map((p) => [p._id, p.version]));
  for (const p of suspects) if ((at.get(p._id) ?? 0) <= p.version) result.add(p._id);
  return result;
}
