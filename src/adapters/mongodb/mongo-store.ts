/**
 * The MongoDB store: the ResourceStore port on the MongoDB wire protocol, for MongoDB ≥ 6 (standalone, replica
 * set or sharded) and for FerretDB 1.24 alike. It therefore uses NO multi-document transactions, change
 * streams, `$lookup`, `$elemMatch` on subdocuments, partial or TTL indexes (see docs/engines.md).
 *
 * Collections
 *   counters  `{_id: 'seq', value}`: the store-wide sequence; blocks are taken with one `$inc`.
 *   txs       one small document per in-flight batch: `{_id: txId, state: 'pending'|'committed'|'aborted',
 *             createdAt (server clock), writes}`. The collection is empty when nothing is in flight.
 *   versions  `{_id: seq, type, id, v, lastUpdated, deleted, content (binary), digest, tx, pending}`; immutable
 *             once published; unique on (type, id, v). `pending: true` versions are invisible to every read.
 *   current   one pointer per resource: `{_id: 'Type/id', type, id, version, seq, lastUpdated, deleted,
 *             terms, lock, next?}`. `terms` is a flat array of `param=value` strings (multikey index; param
 *             names never contain `=`), queried with `$in` per clause, `$and` across clauses. `version: 0`
 *             is a placeholder a create holds while in flight: readers treat it as absent. `lock` is the
 *             txId of the batch that claimed the pointer (null when free); `next` is what that batch will
 *             move the pointer to, so anyone can finish a committed batch from the pointers alone.
 *
 * Commit protocol (the one atomic step is a single-document update of the tx document):
 *   1. allocate a block of seq numbers: `findOneAndUpdate($inc)` on the counter. txId = the first seq of
 *      the block (unique forever); writes get the block's seqs in batch order.
 *   2. insert the tx document `{state: 'pending'}` (createdAt by `$currentDate`, the server's clock).
 *   3. claim every pointer in ONE unordered bulkWrite: an update claims with
 *      `updateOne({_id, version: expected, lock: null}, {$set: {lock: txId, next}})`, a create inserts a
 *      placeholder `{version: 0, lock: txId, next}` relying on the unique `_id`. Claims before the versions
 *      so a conflict costs no content upload. Fewer claims than pointers ⇒ roll back, VersionConflictError.
 *      Several writes of one resource in a batch must chain (expected = the previous write's version);
 *      the pointer is claimed once from the first expected and moves to the last.
 *   4. insert the version documents `pending: true, tx: txId` (insertMany). A duplicate (type, id, v) is a
 *      conflict too (a dead batch's leftover: see recovery below).
 *   5. COMMIT POINT: `updateOne({_id: txId, state: 'pending'}, {$set: {state: 'committed'}})`. If it matches
 *      nothing, a recoverer declared this batch dead and aborted it: roll back, throw. If the engine does not
 *      answer, the outcome is settled by the same conditional update from 'pending' to 'aborted' (or by
 *      reading the tx), so commit() never throws for a batch that will become visible.
 *   6. roll forward (idempotent, anyone may do it once committed): `pending: false` on the versions
 *      (updateMany), move the pointers from `next` and clear `lock` (bulkWrite, each filtered on
 *      `lock: txId`), delete the tx document. A failure here does not fail commit(): the batch IS
 *      committed; whoever next meets one of its locks (a writer, or init()) finishes it.
 * Rolling back (before the commit point only): delete placeholders `{lock: txId, version: 0}`, release the
 * other locks, delete `{tx: txId, pending: true}` versions, then delete the tx document (last, so a crash
 * midway leaves it for recovery).
 *
 * Visibility. Until the commit point nothing of a batch is visible: reads go through pointers whose lock
 * does not change what they point to, placeholders read as absent, pending versions are filtered out. A
 * failed batch therefore never shows. Between the commit point and the end of roll-forward (a few ms) a
 * reader may see a COMMITTED batch partially: its versions in history() before its pointers move, or some
 * pointers moved and others not yet. Writers never act on that window: a pointer still locked by a committed
 * batch refuses claims (VersionConflictError, or it is finished first, see below).
 *
 * Recovery. `init()` resolves every tx document older than `staleAfterMs` (server clock): 'pending' is
 * moved to 'aborted' by the same conditional update the commit point uses (exactly one of the two wins) and
 * rolled back; 'aborted' is rolled back; 'committed' is rolled forward. Then it removes orphans: pending
 * versions and locks whose tx document no longer exists (a write the engine applied after its batch was
 * already rolled back, e.g. after a client timeout); a tx document is created before any of its writes and
 * deleted only once its batch is finished, so an orphan is never part of a live or committed batch. Younger
 * txs belong to gateways that may still be running (several gateways share one database) and are left
 * alone. A writer whose claim is refused by a lock (or a version) of another batch resolves that batch the
 * same way (committed: roll it forward; pending and stale: abort it; gone: orphan) and retries once, so a
 * crashed gateway never blocks resources until the next restart. `staleAfterMs` must exceed the longest
 * commit (default 60 s; 0 is for tests). Clocks: only the server's clock is compared with itself.
 *
 * Concurrency. A pointer moves only from the claimed expected version, and a claim is one atomic
 * single-document update (or a unique insert), so of concurrent writers of one resource exactly one can
 * claim it; the others get VersionConflictError. Writers of overlapping batches may both lose (each holding
 * the other's key); they never both win and never lose an update. Seqs are allocated before the commit
 * point, so concurrent batches may become visible out of seq order.
 *
 * Durability: every write uses `{w: 'majority', j: true}`.
 */
import { Binary, MongoBulkWriteError, MongoClient, MongoServerError } from 'mongodb';
import type { AnyBulkWriteOperation, Collection, Db, Document, Filter, MongoClientOptions } from 'mongodb';
import {
  VersionConflictError,
  type HistoryQuery,
  type InstantBound,
  type ResourceStore,
  type StoreQuery,
  type StoredVersion,
  type VersionRecord,
  type VersionWrite,
} from '../../vault/store.ts';

/** Points inside commit() where a test hook runs (fault injection: a child process kills itself there). */
export type CommitStep =
  | 'allocated' // seq block taken
  | 'began' // tx document inserted
  | 'claimed' // every pointer claimed
  | 'staged' // pending versions inserted
  | 'committed' // commit point passed
  | 'published' // versions no longer pending
  | 'moved' // pointers moved, locks released
  | 'finished'; // tx document deleted

export interface MongoStoreOptions {
  /** A tx document older than this is presumed dead (its gateway crashed) and may be recovered. Default 60 s. */
  staleAfterMs?: number;
  /** Test hook, awaited at each step of commit(). */
  onStep?: (step: CommitStep, txId: number) => void | Promise<void>;
  /** Passed to MongoClient. */
  clientOptions?: MongoClientOptions;
}

type TxState = 'pending' | 'committed' | 'aborted';

interface TxDoc {
  _id: number;
  state: TxState;
  createdAt: Date;
  writes: number;
}

interface VersionDoc {
  _id: number;
  type: string;
  id: string;
  v: number;
  lastUpdated: string;
  deleted: boolean;
  content: Binary | null;
  digest: string | null;
  tx: number;
  pending: boolean;
}

/** Where a claimed pointer moves when its batch rolls forward. */
interface NextPointer {
  version: number;
  seq: number;
  lastUpdated: string;
  deleted: boolean;
  terms: string[];
}

interface PointerDoc extends NextPointer {
  _id: string;
  type: string;
  id: string;
  lock: number | null;
  next?: NextPointer;
}

interface CounterDoc {
  _id: string;
  value: number;
}

/** One resource of a batch: claimed once from `expected`, moved to `next`. */
interface PlannedPointer {
  key: string;
  type: string;
  id: string;
  expected: number;
  last: VersionWrite;
  lastIndex: number;
}

const DUPLICATE_KEY = 11000;
const WRITE_CONCERN = { w: 'majority' as const, journal: true };

function pointerKey(type: string, id: string): string {
  return `${type}/${id}`;
}

function termStrings(write: VersionWrite): string[] {
  return [...new Set(write.terms.map((t) => `${t.param}=${t.value}`))];
}

function bytesOf(binary: Binary | null): Uint8Array | null {
  if (!binary) return null;
  return binary.buffer.subarray(0, binary.length());
}

function toStored(doc: VersionDoc): StoredVersion {
  return {
    seq: doc._id,
    type: doc.type,
    id: doc.id,
    versionId: doc.v,
    lastUpdated: doc.lastUpdated,
    deleted: doc.deleted,
    content: bytesOf(doc.content),
    digest: doc.digest,
  };
}

const BOUND_OPS = { gt: '$gt', ge: '$gte', lt: '$lt', le: '$lte' } as const;

function isDuplicateKey(e: unknown): boolean {
  if (e instanceof MongoBulkWriteError) {
    const errors = Array.isArray(e.writeErrors) ? e.writeErrors : [e.writeErrors];
    return errors.length > 0 && errors.every((w) => w.code === DUPLICATE_KEY);
  }
  return e instanceof MongoServerError && e.code === DUPLICATE_KEY;
}

/** A claim or version insert was refused; `blockers` are the other batches holding what we needed. */
class RefusedError extends Error {
  constructor(
    readonly conflict: VersionConflictError,
    readonly blockers: number[],
  ) {
    super(conflict.message);
  }
}

/** The batch was aborted by a recoverer that presumed its gateway dead (it took longer than staleAfterMs). */
export class CommitAbandonedError extends Error {
  constructor(txId: number) {
    super(`vault batch ${txId} took longer than the staleness threshold and was rolled back by recovery; nothing was written`);
    this.name = 'CommitAbandonedError';
  }
}

export class MongoStore implements ResourceStore {
  /** Every commit() stands alone: the caller waits for one batch before depending on it. */
  readonly pipelinedCommits = false;
  private readonly client: MongoClient;
  private readonly db: Db;
  private readonly counters: Collection<CounterDoc>;
  private readonly txs: Collection<TxDoc>;
  private readonly versions: Collection<VersionDoc>;
  private readonly pointers: Collection<PointerDoc>;
  private readonly staleAfterMs: number;
  private readonly onStep?: MongoStoreOptions['onStep'];

  constructor(uri: string, database = 'medblock', options: MongoStoreOptions = {}) {
    this.client = new MongoClient(uri, options.clientOptions);
    this.db = this.client.db(database, { writeConcern: WRITE_CONCERN });
    this.counters = this.db.collection<CounterDoc>('counters');
    this.txs = this.db.collection<TxDoc>('txs');
    this.versions = this.db.collection<VersionDoc>('versions');
    this.pointers = this.db.collection<PointerDoc>('current');
    this.staleAfterMs = options.staleAfterMs ?? 60_000;
    this.onStep = options.onStep;
  }

  async init(): Promise<void> {
    await this.client.connect();
    await Promise.all([
      this.versions.createIndexes([
        { key: { type: 1, id: 1, v: 1 }, name: 'by_version', unique: true },
        { key: { type: 1, _id: -1 }, name: 'history_by_type' },
        { key: { pending: 1, tx: 1 }, name: 'by_tx' },
      ]),
      this.pointers.createIndexes([
        { key: { type: 1, id: 1 }, name: 'by_id' },
        { key: { terms: 1 }, name: 'by_term' },
        { key: { type: 1, lastUpdated: 1 }, name: 'by_last_updated' },
        { key: { lock: 1 }, name: 'by_lock' },
      ]),
    ]);
    try {
      await this.counters.updateOne({ _id: 'seq' }, { $setOnInsert: { value: 0 } }, { upsert: true });
    } catch (e) {
      if (!isDuplicateKey(e)) throw e; // another gateway's init() created it at the same moment
    }
    await this.recover();
  }

  async close(): Promise<void> {
    await this.client.close();
  }

  async ping(): Promise<boolean> {
    try {
      const reply = await this.db.command({ ping: 1 });
      return reply.ok === 1;
    } catch {
      return false;
    }
  }

  // ---------------------------------------------------------------------------------------------- commit

  async commit(writes: VersionWrite[]): Promise<void> {
    if (writes.length === 0) return;
    const plan = planPointers(writes);
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.attempt(writes, plan);
      } catch (e) {
        if (!(e instanceof RefusedError)) throw e;
        // Refused by another batch: finish it if it is committed, undo it if its gateway is presumed dead.
        if (attempt === 0 && e.blockers.length > 0 && (await this.resolveBlockers(e.blockers))) continue;
        throw e.conflict;
      }
    }
  }

  private async step(step: CommitStep, txId: number): Promise<void> {
    if (this.onStep) await this.onStep(step, txId);
  }

  private async attempt(writes: VersionWrite[], plan: PlannedPointer[]): Promise<void> {
    const last = await this.allocate(writes.length);
    const first = last - writes.length + 1;
    const txId = first;
    await this.step('allocated', txId);

    await this.txs.updateOne(
      { _id: txId },
      { $setOnInsert: { state: 'pending', writes: writes.length }, $currentDate: { createdAt: true } },
      { upsert: true },
    );
    await this.step('began', txId);

    try {
      await this.claim(txId, first, plan);
      await this.step('claimed', txId);
      await this.stage(txId, first, writes);
      await this.step('staged', txId);
    } catch (e) {
      // Before the commit point: undo. If the undo fails too (engine gone), recovery finishes it.
      await this.rollBack(txId).catch(() => undefined);
      throw e;
    }

    await this.commitPoint(txId);
    await this.step('committed', txId);

    // Committed. A failure from here on does not make the batch fail; see the header comment.
    const moves = plan.map((p) => ({ key: p.key, next: nextOf(p, first) }));
    for (let tries = 0; tries < 3; tries++) {
      try {
        await this.rollForward(txId, moves);
        return;
      } catch {
        await sleep(50 * (tries + 1));
      }
    }
  }

  private async allocate(n: number): Promise<number> {
    for (let tries = 0; ; tries++) {
      try {
        const doc = await this.counters.findOneAndUpdate(
          { _id: 'seq' },
          { $inc: { value: n } },
          { upsert: true, returnDocument: 'after' },
        );
        return doc!.value;
      } catch (e) {
        // Two first-ever upserts raced; the loser retries against the now existing counter.
        if (tries > 0 || !isDuplicateKey(e)) throw e;
      }
    }
  }

  private async claim(txId: number, first: number, plan: PlannedPointer[]): Promise<void> {
    const ops: AnyBulkWriteOperation<PointerDoc>[] = plan.map((p) => {
      const next = nextOf(p, first);
      if (p.expected === 0) {
        const placeholder: PointerDoc = {
          _id: p.key, type: p.type, id: p.id, version: 0, seq: 0, lastUpdated: '', deleted: true, terms: [],
          lock: txId, next,
        };
        return { insertOne: { document: placeholder } };
      }
      return {
        updateOne: { filter: { _id: p.key, version: p.expected, lock: null }, update: { $set: { lock: txId, next } } },
      };
    });
    let claimed: number;
    try {
      const result = await this.pointers.bulkWrite(ops, { ordered: false });
      claimed = result.insertedCount + result.matchedCount;
    } catch (e) {
      if (!isDuplicateKey(e)) throw e;
      claimed = -1;
    }
    if (claimed === plan.length) return;
    // Find a pointer we could not claim, and who holds the ones that are locked.
    const seen = await this.pointers
      .find({ _id: { $in: plan.map((p) => p.key) } }, { projection: { lock: 1, version: 1 } })
      .toArray();
    const byKey = new Map(seen.map((d) => [d._id, d]));
    const refused = plan.filter((p) => byKey.get(p.key)?.lock !== txId);
    const blockers = new Set<number>();
    for (const p of refused) {
      const lock = byKey.get(p.key)?.lock;
      if (lock !== null && lock !== undefined) blockers.add(lock);
    }
    const culprit = refused[0] ?? plan[0];
    throw new RefusedError(new VersionConflictError(culprit.type, culprit.id), [...blockers]);
  }

  private async stage(txId: number, first: number, writes: VersionWrite[]): Promise<void> {
    const docs: VersionDoc[] = writes.map(({ record: r }, i) => ({
      _id: first + i,
      type: r.type,
      id: r.id,
      v: r.versionId,
      lastUpdated: r.lastUpdated,
      deleted: r.deleted,
      content: r.content ? new Binary(r.content) : null,
      digest: r.digest,
      tx: txId,
      pending: true,
    }));
    try {
      await this.versions.insertMany(docs, { ordered: false });
    } catch (e) {
      if (!isDuplicateKey(e)) throw e;
      // A version we hold the pointer for exists already: the leftover of a batch that died (an orphan).
      const taken = await this.versions
        .find({ $or: writes.map(({ record: r }) => ({ type: r.type, id: r.id, v: r.versionId })) }, { projection: { content: 0 } })
        .toArray();
      const foreign = taken.filter((d) => d.tx !== txId);
      const culprit: VersionRecord = foreign.length
        ? writes.find((w) => w.record.type === foreign[0].type && w.record.id === foreign[0].id)!.record
        : writes[0].record;
      throw new RefusedError(
        new VersionConflictError(culprit.type, culprit.id),
        [...new Set(foreign.filter((d) => d.pending).map((d) => d.tx))],
      );
    }
  }

  /** The one atomic step. Returns when committed; throws (after rolling back) when it is not. */
  private async commitPoint(txId: number): Promise<void> {
    let outcome: 'committed' | 'aborted';
    try {
      const r = await this.txs.updateOne({ _id: txId, state: 'pending' }, { $set: { state: 'committed' } });
      outcome = r.matchedCount === 1 ? 'committed' : 'aborted';
    } catch (e) {
      outcome = await this.settleUnknownOutcome(txId, e);
    }
    if (outcome === 'committed') return;
    await this.rollBack(txId).catch(() => undefined);
    throw new CommitAbandonedError(txId);
  }

  /**
   * The commit-point update failed in transit, so it may or may not have been applied. Settle it: either it
   * is committed, or we move it from pending to aborted ourselves, so it can never commit later.
   */
  private async settleUnknownOutcome(txId: number, cause: unknown): Promise<'committed' | 'aborted'> {
    for (let tries = 0; tries < 20; tries++) {
      try {
        const r = await this.txs.updateOne({ _id: txId, state: 'pending' }, { $set: { state: 'aborted' } });
        if (r.matchedCount === 1) {
          await this.rollBack(txId).catch(() => undefined);
          throw cause;
        }
        const tx = await this.txs.findOne({ _id: txId });
        if (tx) return tx.state === 'committed' ? 'committed' : 'aborted';
        // Gone: finished by a recoverer, one way or the other; published versions tell which.
        return (await this.versions.findOne({ tx: txId, pending: false }, { projection: { _id: 1 } })) ? 'committed' : 'aborted';
      } catch (e) {
        if (e === cause) throw e;
        await sleep(Math.min(100 * 2 ** tries, 2_000));
      }
    }
    throw new Error(`vault commit outcome of batch ${txId} unknown: the engine did not answer (${(cause as Error).message})`);
  }

  /** Idempotent: publishes the versions, moves the pointers still locked by the batch, deletes its tx. */
  private async rollForward(txId: number, moves?: { key: string; next: NextPointer }[]): Promise<void> {
    await this.versions.updateMany({ pending: true, tx: txId }, { $set: { pending: false } });
    await this.step('published', txId);
    if (!moves) {
      const locked = await this.pointers.find({ lock: txId }, { projection: { next: 1 } }).toArray();
      moves = locked.filter((d) => d.next).map((d) => ({ key: d._id, next: d.next! }));
    }
    if (moves.length > 0) {
      await this.pointers.bulkWrite(
        moves.map(({ key, next }) => ({
          updateOne: {
            filter: { _id: key, lock: txId },
            update: { $set: { ...next, lock: null }, $unset: { next: '' } },
          },
        })),
        { ordered: false },
      );
    }
    await this.step('moved', txId);
    await this.txs.deleteOne({ _id: txId });
    await this.step('finished', txId);
  }

  /** Idempotent: undoes everything a batch that never committed wrote, the tx document last. */
  private async rollBack(txId: number): Promise<void> {
    await Promise.all([
      this.pointers
        .deleteMany({ lock: txId, version: 0 })
        .then(() => this.pointers.updateMany({ lock: txId }, { $set: { lock: null }, $unset: { next: '' } })),
      this.versions.deleteMany({ pending: true, tx: txId }),
    ]);
    await this.txs.deleteOne({ _id: txId, state: { $ne: 'committed' } });
  }

  // -------------------------------------------------------------------------------------------- recovery

  private async serverNow(): Promise<Date> {
    const hello = await this.db.admin().command({ hello: 1 });
    return hello.localTime instanceof Date ? hello.localTime : new Date();
  }

  /**
   * Settles one batch: committed ⇒ roll forward; aborted ⇒ roll back; pending ⇒ abort and roll back when
   * older than the staleness threshold (else leave it: its gateway may be alive); gone ⇒ remove its orphans.
   * Returns whether anything was done.
   */
  private async resolve(txId: number, staleBefore: Date): Promise<boolean> {
    let tx = await this.txs.findOne({ _id: txId });
    if (!tx) {
      await this.removeOrphans(txId);
      return true;
    }
    if (tx.state === 'pending') {
      if (tx.createdAt >= staleBefore) return false;
      const r = await this.txs.updateOne({ _id: txId, state: 'pending' }, { $set: { state: 'aborted' } });
      if (r.matchedCount === 0) {
        tx = await this.txs.findOne({ _id: txId });
        if (!tx) return true; // finished meanwhile
      } else {
        tx.state = 'aborted';
      }
    }
    if (tx.state === 'committed') await this.rollForward(txId);
    else await this.rollBack(txId);
    return true;
  }

  /** Pending versions and locks of a batch whose tx document is gone: never part of a live or committed batch. */
  private async removeOrphans(txId: number): Promise<void> {
    await this.rollBack(txId);
  }

  private async resolveBlockers(blockers: number[]): Promise<boolean> {
    const staleBefore = new Date((await this.serverNow()).getTime() - this.staleAfterMs);
    let resolved = false;
    for (const txId of blockers) if (await this.resolve(txId, staleBefore)) resolved = true;
    return resolved;
  }

  /** Finishes or undoes the batches of gateways presumed dead, then removes orphans. Run by init(). */
  async recover(): Promise<void> {
    const staleBefore = new Date((await this.serverNow()).getTime() - this.staleAfterMs);
    const stale = await this.txs.find({ createdAt: { $lt: staleBefore } }, { projection: { _id: 1 } }).toArray();
    for (const { _id } of stale) await this.resolve(_id, staleBefore);
    // Orphans: read the referencing documents first, then the tx documents (created before them).
    const referenced = new Set<number>([
      ...((await this.versions.distinct('tx', { pending: true })) as number[]),
      ...((await this.pointers.distinct('lock', { lock: { $ne: null } })) as number[]),
    ]);
    if (referenced.size === 0) return;
    const live = new Set(
      (await this.txs.find({ _id: { $in: [...referenced] } }, { projection: { _id: 1 } }).toArray()).map((d) => d._id),
    );
    for (const txId of referenced) if (!live.has(txId)) await this.removeOrphans(txId);
  }

  // ----------------------------------------------------------------------------------------------- reads

  private async versionsBySeq(seqs: number[]): Promise<Map<number, VersionDoc>> {
    if (seqs.length === 0) return new Map();
    const docs = await this.versions.find({ _id: { $in: seqs } }).toArray();
    return new Map(docs.map((d) => [d._id, d]));
  }

  async current(type: string, id: string): Promise<StoredVersion | undefined> {
    const pointer = await this.pointers.findOne({ _id: pointerKey(type, id) }, { projection: { version: 1, seq: 1 } });
    if (!pointer || pointer.version === 0) return undefined;
    const doc = await this.versions.findOne({ _id: pointer.seq });
    return doc ? toStored(doc) : undefined;
  }

  async version(type: string, id: string, versionId: number): Promise<StoredVersion | undefined> {
    const doc = await this.versions.findOne({ type, id, v: versionId, pending: false });
    return doc ? toStored(doc) : undefined;
  }

  private filter(query: StoreQuery, withCursor: boolean): Filter<PointerDoc> {
    const and: Filter<PointerDoc>[] = [{ type: query.type }, { deleted: false }];
    if (query.ids) and.push({ _id: { $in: query.ids.map((id) => pointerKey(query.type, id)) } });
    for (const clause of query.clauses) {
      and.push({ terms: { $in: clause.anyOf.map((value) => `${clause.param}=${value}`) } });
    }
    for (const bound of query.lastUpdated) and.push(boundFilter(bound));
    if (withCursor && query.afterId !== undefined) and.push({ id: { $gt: query.afterId } });
    return { $and: and };
  }

  async search(query: StoreQuery): Promise<StoredVersion[]> {
    if (query.limit <= 0) return [];
    const pointers = await this.pointers
      .find(this.filter(query, true), { projection: { seq: 1 } })
      .sort({ id: 1 })
      .limit(query.limit)
      .toArray();
    const bySeq = await this.versionsBySeq(pointers.map((p) => p.seq));
    return pointers.flatMap((p) => {
      const doc = bySeq.get(p.seq);
      return doc ? [toStored(doc)] : [];
    });
  }

  async count(query: StoreQuery): Promise<number> {
    return this.pointers.countDocuments(this.filter(query, false));
  }

  async history(query: HistoryQuery): Promise<StoredVersion[]> {
    if (query.limit <= 0) return [];
    const filter: Filter<VersionDoc> = { pending: false };
    if (query.type !== undefined) filter.type = query.type;
    if (query.id !== undefined) filter.id = query.id;
    if (query.since !== undefined) filter.lastUpdated = { $gte: query.since };
    if (query.beforeSeq !== undefined) filter._id = { $lt: query.beforeSeq };
    const docs = await this.versions.find(filter).sort({ _id: -1 }).limit(query.limit).toArray();
    return docs.map(toStored);
  }
}

function boundFilter(bound: InstantBound): Filter<PointerDoc> {
  return { lastUpdated: { [BOUND_OPS[bound.op]]: bound.value } } as Document as Filter<PointerDoc>;
}

function nextOf(p: PlannedPointer, first: number): NextPointer {
  const r = p.last.record;
  return { version: r.versionId, seq: first + p.lastIndex, lastUpdated: r.lastUpdated, deleted: r.deleted, terms: termStrings(p.last) };
}

/** Groups a batch by resource; several writes of one resource must chain, else the batch conflicts. */
function planPointers(writes: VersionWrite[]): PlannedPointer[] {
  const byKey = new Map<string, PlannedPointer>();
  writes.forEach((write, index) => {
    const r = write.record;
    if (r.versionId <= write.expectedVersion) throw new VersionConflictError(r.type, r.id);
    const key = pointerKey(r.type, r.id);
    const planned = byKey.get(key);
    if (!planned) {
      byKey.set(key, { key, type: r.type, id: r.id, expected: write.expectedVersion, last: write, lastIndex: index });
    } else {
      if (write.expectedVersion !== planned.last.record.versionId) throw new VersionConflictError(r.type, r.id);
      planned.last = write;
      planned.lastIndex = index;
    }
  });
  return [...byKey.values()];
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
