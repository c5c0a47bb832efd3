/**
 * The MongoDB store: the ResourceStore port over the MongoDB wire protocol, for MongoDB ≥ 6 (standalone,
 * replica set or sharded) and FerretDB 1.24 alike. It therefore uses no multi-document transactions, change
 * streams, `$lookup`, `$elemMatch` on subdocuments, partial or TTL indexes (see docs/engines.md).
 *
 * What FerretDB 1.24.2 (SQLite backend) allows shaped the protocol. These were measured against it:
 *   - An update is a read in Go followed by a write of the whole document, with no lock between them.
 *     Concurrent updates of one document lose writes: 100 concurrent `$inc` left a counter at 2, and several
 *     concurrent conditional updates all "matched". So no decision here rests on an update being atomic.
 *   - What is atomic: an insert checked by a unique index (exactly one of N concurrent inserts of a key
 *     succeeds) and a delete by `_id` (exactly one deleter gets deletedCount 1).
 *   - No query uses an index: the index expressions (`sjson->"_id"`) differ from the query expressions
 *     (`sjson->'$._id'`). Every statement scans its collection, and every updated document costs a scan.
 *     Inserts are cheap. So a create touches pointers only by insert, and commit() never updates a version
 *     (markAnchored does, once per version, off the request path).
 *   - An `update` command holds a pooled connection per statement until it ends, and the pool has 100
 *     connections. A command with ≥ 100 statements, or concurrent commands that add up to that, hangs.
 *     Update bulks are therefore sent in commands of at most 8 statements there.
 * On FerretDB, which is detected through `buildInfo.ferretdbVersion`, no secondary index is created: they
 * cost time on every write and never speed up a read.
 *
 * Collections
 *   seqblocks  `{_id: k}`: block k holds the seqs [k·2^20, (k+1)·2^20). A batch claims one block with a
 *              unique insert and uses k as its txId, so txIds are unique forever. These documents are
 *              permanent. `counters {_id: 'seqblock', next}` is only a hint of the next free k.
 *   txs        `{_id: txId, createdAt (server clock), writes}`: the batches in flight. A document is deleted
 *              when its batch is finished or undone.
 *   decisions  `{_id: txId, outcome: 'committed'|'aborted'}`: written once by a unique insert, and permanent.
 *              The commit point is the insert of 'committed'; a recoverer aborts by inserting 'aborted'.
 *              Whichever insert lands first wins, on FerretDB too.
 *   versions   `{_id: 'Type/id/v', seq, type, id, v, lastUpdated, deleted, content (binary), digest, salt, keyId,
 *              patientToken, terms, tx, anchored, anchor?}`. These documents are immutable, except that
 *              erasing a data key empties the terms of the versions sealed under it, that index rewrites
 *              (mongo-index.ts) replace or pull terms, and that markAnchored sets `anchored: true` and
 *              `anchor` once. The `_id` is the version's slot, so it is unique, and
 *              an exact `_id` is the one filter FerretDB pushes down to SQLite; current() and version() use it.
 *   current    one pointer per resource: `{_id: 'Type/id', type, id, version, seq, lastUpdated, deleted,
 *              keyId, terms, mac}`. `mac` is the vault's head MAC of the move (vault/head-mac.ts), also kept
 *              on the version (`headMac`) so that recovery rolls a batch forward with it; mongo-head.ts tells
 *              a pointer that was moved back from one whose batch is still rolling forward. `terms` is a flat array of `param=value` strings with a multikey index (param
 *              names never contain `=`). A clause becomes `$in` (`$nin` when negated, which also matches
 *              pointers without the param) and clauses are joined by `$and`. `deleted` hides the pointer from
 *              search and count; it is set for deletions and for resources whose data key was erased.
 *              `keyId` (null for deletions and plaintext) is the data key of the current version.
 *   data_keys  live data keys: `{_id: keyId, createdAt, masterKeyId, wrapped (binary)}`.
 *   erased_keys  tombstones: `{_id: keyId, createdAt, erasedAt}`, written once by a unique insert, permanent.
 *   vault_format  `{_id: 'format', version}`: the layout the data was written in (vault-format.ts).
 *
 * Visibility rule. A version is visible iff the current pointer of its resource is at that version or
 * beyond. Pointers move only after the commit point, so nothing else needs to be marked or unmarked.
 *
 * Version slots are the claims. A write supersedes `expectedVersion` with `versionId = expectedVersion + 1`
 * (enforced), and the unique `_id` 'Type/id/v' lets exactly one batch ever hold version v of a resource.
 * So of the writers that start from the same version, exactly one can insert its successor. For a create,
 * holding v1 also proves that the resource does not exist, because an existing resource has a committed
 * v1 and committed versions are never deleted.
 *
 * Commit protocol
 *   1. Claim a seq block: `seqblocks.insertOne({_id: k})`. On a duplicate, try a higher k.
 *   2. Insert the tx document. Its `createdAt` comes from `$currentDate`, and the seq hint moves on.
 *   3. Updates only: read the pointers of the updated resources (one query). Each one must be at its
 *      expected version. Only the holder of slot expected+1 can move it from there, so the check stays true.
 *   4. `insertMany` the versions (`tx: txId`). They are invisible. A duplicate slot means another batch
 *      holds it: VersionConflictError. The batch is undone: its versions, then its tx document.
 *   5. COMMIT POINT: `decisions.insertOne({_id: txId, outcome: 'committed'})`.
 *      - If the insert finds 'aborted' already there, a recoverer presumed the batch dead. The batch is
 *        undone and commit() throws CommitAbandonedError.
 *      - If the engine does not answer, the outcome is settled by inserting 'aborted' (or by reading the
 *        decision that is there). So commit() does not throw for a batch that will become visible. The one
 *        exception is CommitOutcomeUnknownError: the engine kept failing through about 30 s of retries.
 *   6. Roll forward. This is idempotent and anyone may do it once the batch is committed.
 *      - Pointers of creates: `insertMany`. A duplicate means an earlier run of this step inserted it, because
 *        only the holder of v1 ever inserts a pointer.
 *      - Pointers of updates: bulkWrite `updateOne({_id, version: expected}, {$set: …})`.
 *      - Delete the tx document.
 *      A failure after the commit point does not fail commit(): the batch IS committed, and recovery
 *      finishes it.
 *   After an engine error before the commit point, the batch is marked 'aborted' and its versions are
 *   deleted. Its tx document is left for recovery, which deletes versions again once the batch is stale,
 *   so a write the engine applied late (after its client gave up) is removed too.
 *
 * Visibility while committing. Until the commit point no pointer has moved, so nothing of the batch shows,
 * and a failed batch never shows. Between the commit point and the end of roll-forward (milliseconds), a
 * reader may see a COMMITTED batch partially: some resources at their new version and others not yet. If a
 * gateway dies in that window, its batch becomes whole when recovery rolls it forward. A writer that starts
 * from a version the batch superseded finds the slot taken and gets VersionConflictError.
 *
 * Recovery. `init()` runs `recover()` on every tx document:
 *   - 'committed' batches are rolled forward, whatever their age.
 *   - Undecided batches older than `staleAfterMs` (server clock) are aborted, by inserting 'aborted', and
 *     then undone.
 *   - 'aborted' batches are undone, and their tx document is deleted once it is stale.
 *   Younger undecided batches may belong to a live gateway (several gateways share one database) and are
 *   left alone. A writer refused by a slot or pointer of a stale batch resolves that batch the same way and
 *   retries once, so a crashed gateway does not block resources until the next restart. Versions of a batch
 *   with no tx document and no 'committed' decision are leftovers of an undone batch and are deleted then.
 *   `staleAfterMs` must exceed the longest commit. The default is 60 s; 0 is meant for tests.
 *
 * Concurrency. Writers of one resource from one version compete for one unique slot: exactly one wins and
 * the others get VersionConflictError. No update is lost. Overlapping batches may both lose, because each
 * holds a slot the other needs, but they never both win. Seq blocks are claimed before the commit point,
 * so concurrent batches may become visible out of seq order.
 * Caveat, on FerretDB only: a pointer move there is not a true compare-and-set. If a recoverer rolls a batch
 * forward at the same moment as the batch's own gateway, and a third writer commits a newer version of the
 * same resource inside that per-document read-then-write, the late write can put the pointer back. On
 * MongoDB the conditional update is atomic.
 *
 * Anchor outbox. Versions are staged with `anchored: false`, and on MongoDB the index {anchored, seq} serves
 * the outbox query. Staged versions are in that state before their commit point too, so unanchored() keeps
 * only those whose batch has the 'committed' decision: a batch in flight, aborted or left over never shows,
 * and one that committed shows even before it is rolled forward (it will become visible). The decision is
 * read after the versions, and a 'committed' decision is permanent, so the check cannot go stale.
 * markAnchored is one conditional updateOne per version (`anchored: false`), so a version keeps its first
 * location. On FerretDB that condition is not a compare-and-set: two markAnchored of one version at once may
 * both apply (the later location stays), and one racing with an erasure's step 3 (below) may write back the
 * terms the erasure just emptied, or lose its anchor to the erasure's write-back (the version is then in the
 * outbox again and is anchored a second time). Written-back terms are handled as in roll-forward:
 * markAnchored reads the tombstones of the marked versions' keys after its writes and shreds again.
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
 *   - Roll-forward moves the pointers, then reads the tombstones of their keys and shreds those that are
 *     erased (before it deletes the tx document, so recovery repeats the check). So neither a batch that
 *     committed before the erasure and is rolled forward after it, by its gateway or by recovery, nor one
 *     sealed under the key after the erasure, leaves terms searchable once roll-forward is done.
 *   What the upper layer must guarantee: that it never seals new data under an erased key (getKey returns
 *   the tombstone, so the vault refuses to), and that in one gateway writes and erasures of one key are
 *   serialised. The adapter hides such data only after the fact: a reader may see it between the pointer
 *   moves and the check, and a version that its own batch superseded keeps its terms when only that version,
 *   not the batch's last one, was sealed under the erased key (the check looks at the pointers' keys).
 *   On FerretDB, step 3 racing with a roll-forward of the same resource may write back the pointer it read
 *   (hidden, at the superseded version): the lost update of the caveat above. The resource stays hidden,
 *   but its pointer lags its committed version, so writes to it conflict.
 *   Physical deletion is the engine's: WiredTiger keeps deleted bytes until the space is reused and a replica
 *   set's oplog keeps the inserted key until it rolls over; FerretDB's SQLite runs without `secure_delete`
 *   unless its URI sets it. Retiring the master key a wrapped copy was made under bounds what lingers.
 *
 * Durability: writes use `{w: 'majority', j: true}`.
 */
import { Binary, MongoBulkWriteError, MongoClient } from 'mongodb';
import type {
  AnyBulkWriteOperation,
  Collection,
  Db,
  Filter,
  IndexDescription,
  MongoClientOptions,
} from 'mongodb';
import { isDuplicateKey, isFerretDb, serverNow, writeErrorsOf } from './driver.ts';
import { checkVaultFormat } from './vault-format.ts';
import { movedBack, type HeadCollections } from './mongo-head.ts';
import { pullTerms, replaceResourceTerms, termStrings } from './mongo-index.ts';
import {
  VersionConflictError,
  type AnchorLocation,
  type AnchorMark,
  type HistoryQuery,
  type IndexTerm,
  type InstantBound,
  type KeyEntry,
  type NewKey,
  type ResourceStore,
  type StoreQuery,
  type StoredVersion,
  type TypedTerm,
  type UnanchoredVersion,
  type VersionWrite,
} from '../../vault/store.ts';

/** Points inside commit() where the test hook runs (fault injection: a child process kills itself there). */
export type CommitStep =
  | 'allocated' // seq block claimed
  | 'began' // tx document inserted
  | 'checked' // pointers of updated resources verified
  | 'staged' // versions inserted (invisible)
  | 'committed' // commit point passed
  | 'created' // pointers of created resources inserted
  | 'moved' // pointers of updated resources moved
  | 'finished'; // tx document deleted

export interface MongoStoreOptions {
  /** A batch in flight longer than this is presumed dead (its gateway crashed) and may be recovered. Default 60 s. */
  staleAfterMs?: number;
  /** Statements per update command. Default: unlimited on MongoDB (the driver splits), 8 on FerretDB. */
  maxUpdatesPerCommand?: number;
  /** Test hook, awaited at each step of commit(). */
  onStep?: (step: CommitStep, txId: number) => void | Promise<void>;
  /** Passed to MongoClient. */
  clientOptions?: MongoClientOptions;
}

type Outcome = 'committed' | 'aborted';

interface TxDoc {
  _id: number;
  createdAt: Date;
  writes: number;
}

interface DecisionDoc {
  _id: number;
  outcome: Outcome;
}

interface VersionDoc {
  /** The slot: `Type/id/v`. */
  _id: string;
  seq: number;
  type: string;
  id: string;
  v: number;
  lastUpdated: string;
  deleted: boolean;
  content: Binary | null;
  digest: string | null;
  /** The commitment salt of a plaintext store's version; null in a vault (sealed inside content). */
  salt: Binary | null;
  /** The data key the content is sealed under; null for deletions and plaintext. */
  keyId: string | null;
  patientToken: string | null;
  terms: string[];
  /** The head MAC the pointer gets when it moves to this version (absent on versions staged without one). */
  headMac?: string | null;
  tx: number;
  /** False while the version is in the anchor outbox. */
  anchored: boolean;
  /** Where the ledger anchored the version; set with `anchored: true`. */
  anchor?: AnchorLocation;
}

interface PointerDoc {
  _id: string;
  type: string;
  id: string;
  version: number;
  seq: number;
  lastUpdated: string;
  /** True for a deletion, and for a resource whose data key was erased (hidden from search). */
  deleted: boolean;
  /** Always present (null when plaintext or deleted), so that a pointer move's `$set` replaces it. */
  keyId: string | null;
  terms: string[];
  /** The vault's head MAC of this pointer state; null when the write carried none. */
  mac: string | null;
}

/** A live data key. Its tombstone is an ErasedKeyDoc with the same `_id` in another collection. */
interface DataKeyDoc {
  _id: string;
  createdAt: string;
  masterKeyId: string;
  wrapped: Binary;
}

interface ErasedKeyDoc {
  _id: string;
  createdAt: string;
  erasedAt: string;
}

interface CounterDoc {
  _id: string;
  next: number;
}

/** One resource of a batch: its pointer moves from `expected` to `target` when the batch rolls forward. */
interface Move {
  expected: number;
  target: PointerDoc;
}

/** Seqs per block: a batch holds at most this many writes. */
const BLOCK = 2 ** 20;
const FERRETDB_UPDATES_PER_COMMAND = 8;

const VERSION_INDEXES: IndexDescription[] = [
  { key: { seq: -1 }, name: 'history' },
  { key: { type: 1, seq: -1 }, name: 'history_by_type' },
  { key: { type: 1, id: 1, seq: -1 }, name: 'history_by_id' },
  { key: { tx: 1 }, name: 'by_tx' },
  { key: { anchored: 1, seq: 1 }, name: 'outbox' },
];
const POINTER_INDEXES: IndexDescription[] = [
  { key: { type: 1, id: 1 }, name: 'by_id' },
  { key: { terms: 1 }, name: 'by_term' },
  { key: { type: 1, lastUpdated: 1 }, name: 'by_last_updated' },
];

const pointerKey = (type: string, id: string): string => `${type}/${id}`;
const slotKey = (type: string, id: string, v: number): string => `${type}/${id}/${v}`;

function bytesOf(binary: Binary | null): Uint8Array | null {
  return binary ? binary.buffer.subarray(0, binary.length()) : null;
}

/** What unanchored() reads of a version: no content, no terms. */
const OUTBOX_FIELDS = ['seq', 'type', 'id', 'v', 'lastUpdated', 'deleted', 'digest', 'patientToken', 'tx'] as const;
const OUTBOX_PROJECTION = Object.fromEntries(OUTBOX_FIELDS.map((field) => [field, 1]));
type OutboxDoc = Pick<VersionDoc, (typeof OUTBOX_FIELDS)[number]>;

function toUnanchored(doc: OutboxDoc): UnanchoredVersion {
  return {
    seq: doc.seq,
    type: doc.type,
    id: doc.id,
    versionId: doc.v,
    lastUpdated: doc.lastUpdated,
    deleted: doc.deleted,
    digest: doc.digest,
    ...(doc.patientToken !== null && { patientToken: doc.patientToken }),
  };
}

function toStored(doc: VersionDoc): StoredVersion {
  return {
    ...toUnanchored(doc),
    content: bytesOf(doc.content),
    ...(doc.salt && { salt: bytesOf(doc.salt)! }),
    ...(doc.keyId !== null && { keyId: doc.keyId }),
    ...(doc.anchor && { anchor: doc.anchor }),
  };
}

function liveKeyEntry(doc: DataKeyDoc): KeyEntry {
  return { keyId: doc._id, createdAt: doc.createdAt, masterKeyId: doc.masterKeyId, wrapped: bytesOf(doc.wrapped), erasedAt: null };
}

function tombstoneEntry(doc: ErasedKeyDoc): KeyEntry {
  return { keyId: doc._id, createdAt: doc.createdAt, masterKeyId: null, wrapped: null, erasedAt: doc.erasedAt };
}

/** A slot or pointer is held by other batches; `blockers` are their txIds (recoverable when stale). */
class RefusedError extends Error {
  constructor(
    readonly conflict: VersionConflictError,
    readonly blockers: number[],
  ) {
    super(conflict.message);
  }
}

/**
 * The batch was aborted at its commit point, so nothing was written. Either a recoverer presumed it dead
 * (it took longer than staleAfterMs), or the engine failed while the decision was being written. Safe to retry.
 */
export class CommitAbandonedError extends Error {
  constructor(txId: number) {
    super(`vault batch ${txId} was aborted at its commit point (presumed dead by recovery, or the engine failed); nothing was written`);
    this.name = 'CommitAbandonedError';
  }
}

/**
 * The engine stopped answering while the commit decision was being written, and kept failing while the
 * outcome was being settled. The batch may or may not be committed; recovery settles it either way.
 */
export class CommitOutcomeUnknownError extends Error {
  constructor(txId: number, cause: unknown) {
    super(`vault batch ${txId}: the engine failed at the commit point; whether the batch committed is unknown until recovery settles it`, {
      cause,
    });
    this.name = 'CommitOutcomeUnknownError';
  }
}

function historyFilter(query: HistoryQuery): Filter<VersionDoc> {
  const filter: Filter<VersionDoc> = {};
  if (query.type !== undefined) filter.type = query.type;
  if (query.id !== undefined) filter.id = query.id;
  if (query.since !== undefined) filter.lastUpdated = { $gte: query.since };
  return filter;
}

export class MongoStore implements ResourceStore {
  /** Each commit() stands alone: a caller waits for one batch before depending on it. */
  readonly pipelinedCommits = false;
  private readonly client: MongoClient;
  private readonly db: Db;
  private readonly counters: Collection<CounterDoc>;
  private readonly seqblocks: Collection<{ _id: number }>;
  private readonly txs: Collection<TxDoc>;
  private readonly decisions: Collection<DecisionDoc>;
  private readonly versions: Collection<VersionDoc>;
  private readonly pointers: Collection<PointerDoc>;
  private readonly dataKeys: Collection<DataKeyDoc>;
  private readonly erasedKeys: Collection<ErasedKeyDoc>;
  private readonly staleAfterMs: number;
  private readonly onStep?: MongoStoreOptions['onStep'];
  /** Statements per update command; until init() knows the engine, the FerretDB-safe value. */
  private updatesPerCommand: number;
  /** The next seq block this process will try to claim (a local hint). */
  private nextBlock = 0;

  constructor(uri: string, database = 'medblock', private readonly options: MongoStoreOptions = {}) {
    this.client = new MongoClient(uri, options.clientOptions);
    this.db = this.client.db(database, { writeConcern: { w: 'majority', journal: true } });
    this.counters = this.db.collection<CounterDoc>('counters');
    this.seqblocks = this.db.collection<{ _id: number }>('seqblocks');
    this.txs = this.db.collection<TxDoc>('txs');
    this.decisions = this.db.collection<DecisionDoc>('decisions');
    this.versions = this.db.collection<VersionDoc>('versions');
    this.pointers = this.db.collection<PointerDoc>('current');
    this.dataKeys = this.db.collection<DataKeyDoc>('data_keys');
    this.erasedKeys = this.db.collection<ErasedKeyDoc>('erased_keys');
    this.staleAfterMs = options.staleAfterMs ?? 60_000;
    this.onStep = options.onStep;
    this.updatesPerCommand = options.maxUpdatesPerCommand ?? FERRETDB_UPDATES_PER_COMMAND;
  }

  async init(): Promise<void> {
    await this.client.connect();
    await checkVaultFormat(this.db);
    const ferretdb = await isFerretDb(this.db);
    this.updatesPerCommand = this.options.maxUpdatesPerCommand ?? (ferretdb ? FERRETDB_UPDATES_PER_COMMAND : Infinity);
    // FerretDB evaluates every index on every write but answers no query from one.
    if (!ferretdb) await Promise.all([this.versions.createIndexes(VERSION_INDEXES), this.pointers.createIndexes(POINTER_INDEXES)]);
    await this.recover();
  }

  async close(): Promise<void> {
    await this.client.close();
  }

  async ping(): Promise<boolean> {
    try {
      return (await this.db.command({ ping: 1 })).ok === 1;
    } catch {
      return false;
    }
  }

  // ---------------------------------------------------------------------------------------------- commit

  async commit(writes: VersionWrite[]): Promise<void> {
    if (writes.length === 0) return;
    if (writes.length > BLOCK) throw new RangeError(`a batch holds at most ${BLOCK} writes`);
    const plan = planMoves(writes);
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.attempt(writes, plan);
      } catch (e) {
        if (!(e instanceof RefusedError)) throw e;
        // Refused by other batches: if they are dead (stale) or leftovers, clear them and try once more.
        if (attempt === 0 && e.blockers.length > 0 && (await this.resolveBlockers(e.blockers))) continue;
        throw e.conflict;
      }
    }
  }

  private async step(step: CommitStep, txId: number): Promise<void> {
    if (this.onStep) await this.onStep(step, txId);
  }

  private async attempt(writes: VersionWrite[], plan: Move[]): Promise<void> {
    const txId = await this.claimBlock();
    const first = txId * BLOCK;
    await this.step('allocated', txId);
    await Promise.all([
      this.txs.updateOne(
        { _id: txId },
        { $setOnInsert: { writes: writes.length }, $currentDate: { createdAt: true } },
        { upsert: true },
      ),
      // Only a hint for the next claimer (a lost update there costs a retry, never correctness).
      this.counters.updateOne({ _id: 'seqblock' }, { $max: { next: txId + 1 } }, { upsert: true }).catch(() => undefined),
    ]);
    await this.step('began', txId);

    const moves = plan.map(({ expected, target }) => ({ expected, target: { ...target, seq: first + target.seq } }));
    try {
      await this.checkPointers(moves);
      await this.step('checked', txId);
      await this.stage(txId, first, writes);
      await this.step('staged', txId);
    } catch (e) {
      if (e instanceof RefusedError) {
        // Every operation was answered, so nothing of ours can land later: undo now.
        await this.undo(txId, true).catch(() => undefined);
      } else {
        // The engine failed and a write may still land: abort, undo, leave the tx document for recovery.
        await this.abandon(txId).catch(() => undefined);
      }
      throw e;
    }

    let outcome: Outcome;
    try {
      outcome = await this.decide(txId, 'committed');
    } catch (e) {
      throw new CommitOutcomeUnknownError(txId, e);
    }
    if (outcome !== 'committed') {
      await this.undo(txId, true).catch(() => undefined);
      throw new CommitAbandonedError(txId);
    }
    await this.step('committed', txId);

    // Committed: from here on a failure does not fail the batch (see the header comment).
    for (let tries = 0; ; tries++) {
      try {
        return await this.rollForward(txId, moves);
      } catch {
        if (tries === 4) return; // recovery finishes it
        await sleep(100 * 2 ** tries);
      }
    }
  }

  /** Claims a seq block with a unique insert; its number is the batch's txId. */
  private async claimBlock(): Promise<number> {
    let k = this.nextBlock > 0 ? this.nextBlock : await this.blockHint();
    for (let tries = 0; ; tries++) {
      try {
        await this.seqblocks.insertOne({ _id: k });
        this.nextBlock = k + 1;
        return k;
      } catch (e) {
        if (!isDuplicateKey(e) || tries === 1000) throw e;
        k = Math.max(k + 1, await this.blockHint());
      }
    }
  }

  private async blockHint(): Promise<number> {
    return (await this.counters.findOne({ _id: 'seqblock' }))?.next ?? 1;
  }

  /**
   * Writes the one decision of a batch: the first insert wins. Returns the outcome that stands. When the
   * engine does not answer, the outcome is settled by inserting 'aborted' (the first insert still wins).
   */
  private async decide(txId: number, outcome: Outcome): Promise<Outcome> {
    let wanted = outcome;
    for (let tries = 0; ; tries++) {
      try {
        await this.decisions.insertOne({ _id: txId, outcome: wanted });
        return wanted;
      } catch (e) {
        if (isDuplicateKey(e)) {
          const decision = await this.decisions.findOne({ _id: txId }).catch(() => null);
          if (decision) return decision.outcome;
        }
        if (tries === 20) throw e;
        // Unknown whether our insert landed: from now on only ever try to abort, which settles it either way.
        wanted = 'aborted';
        await sleep(Math.min(100 * 2 ** tries, 2_000));
      }
    }
  }

  /** Pointers of updated resources must be at their expected version (creates are checked by their v1 slot). */
  private async checkPointers(moves: Move[]): Promise<void> {
    const updates = moves.filter((m) => m.expected > 0);
    if (updates.length === 0) return;
    const found = await this.pointers
      .find({ _id: { $in: updates.map((m) => m.target._id) } }, { projection: { version: 1 } })
      .toArray();
    const at = new Map(found.map((p) => [p._id, p.version]));
    const refused = updates.filter((m) => at.get(m.target._id) !== m.expected);
    if (refused.length === 0) return;
    // A pointer behind its expected version may belong to a committed batch that its gateway did not finish.
    const behind = refused.filter((m) => (at.get(m.target._id) ?? 0) < m.expected);
    const holders = behind.length
      ? await this.versions
          .find({ _id: { $in: behind.map((m) => slotKey(m.target.type, m.target.id, m.expected)) } }, { projection: { tx: 1 } })
          .toArray()
      : [];
    const culprit = refused[0].target;
    throw new RefusedError(new VersionConflictError(culprit.type, culprit.id), [...new Set(holders.map((h) => h.tx))]);
  }

  /** Inserts the versions: each one takes its (type, id, v) slot or the batch is refused. */
  private async stage(txId: number, first: number, writes: VersionWrite[]): Promise<void> {
    const docs: VersionDoc[] = writes.map(({ record: r, terms, headMac }, i) => ({
      _id: slotKey(r.type, r.id, r.versionId),
      seq: first + i,
      type: r.type,
      id: r.id,
      v: r.versionId,
      lastUpdated: r.lastUpdated,
      deleted: r.deleted,
      content: r.content ? new Binary(r.content) : null,
      digest: r.digest,
      salt: r.salt ? new Binary(r.salt) : null,
      keyId: r.keyId ?? null,
      patientToken: r.patientToken ?? null,
      terms: termStrings(terms),
      headMac: headMac ?? null,
      tx: txId,
      anchored: false,
    }));
    try {
      await this.versions.insertMany(docs, { ordered: false });
    } catch (e) {
      if (!isDuplicateKey(e)) throw e;
      const failed = writeErrorsOf(e as MongoBulkWriteError).map((w) => docs[w.index]);
      const holders = await this.versions.find({ _id: { $in: failed.map((d) => d._id) } }, { projection: { tx: 1 } }).toArray();
      throw new RefusedError(
        new VersionConflictError(failed[0].type, failed[0].id),
        [...new Set(holders.map((h) => h.tx).filter((tx) => tx !== txId))],
      );
    }
  }

  /** Idempotent: moves the pointers of a committed batch, then deletes its tx document. */
  private async rollForward(txId: number, moves?: Move[]): Promise<void> {
    moves ??= await this.movesOf(txId);
    const creates = moves.filter((m) => m.expected === 0).map((m) => m.target);
    if (creates.length > 0) {
      try {
        await this.pointers.insertMany(creates, { ordered: false });
      } catch (e) {
        if (!isDuplicateKey(e)) throw e; // inserted by an earlier run: only the holder of v1 inserts a pointer
      }
    }
    await this.step('created', txId);
    const updates: AnyBulkWriteOperation<PointerDoc>[] = moves
      .filter((m) => m.expected > 0)
      .map(({ expected, target: { _id, ...fields } }) => ({
        updateOne: { filter: { _id, version: expected }, update: { $set: fields } },
      }));
    for (let i = 0; i < updates.length; i += this.updatesPerCommand) {
      await this.pointers.bulkWrite(updates.slice(i, i + this.updatesPerCommand), { ordered: false });
    }
    await this.step('moved', txId);
    // Before the tx document goes, so that recovery repeats this check if the gateway dies here.
    await this.shredIfErased(moves.flatMap((m) => m.target.keyId ?? []));
    await this.txs.deleteOne({ _id: txId });
    await this.step('finished', txId);
  }

  /**
   * Shreds again what was just written under these data keys if they were erased meanwhile (see "Erasure" in
   * the header comment): the documents were written before the tombstones are read here, and eraseKey inserts
   * its tombstone before it shreds, so either this read sees the tombstone or the erasure sees the writes.
   */
  private async shredIfErased(writtenUnder: string[]): Promise<void> {
    const keyIds = [...new Set(writtenUnder)];
    if (keyIds.length === 0) return;
    const erased = await this.erasedKeys.find({ _id: { $in: keyIds } }, { projection: { _id: 1 } }).toArray();
    if (erased.length > 0) await this.shredIndex(erased.map((e) => e._id));
  }

  /** Rebuilds a batch's pointer moves from its versions (recovery of a committed batch). */
  private async movesOf(txId: number): Promise<Move[]> {
    const docs = await this.versions.find({ tx: txId }, { projection: { content: 0 } }).sort({ seq: 1 }).toArray();
    const moves = new Map<string, Move>();
    for (const d of docs) {
      const key = pointerKey(d.type, d.id);
      const target: PointerDoc = {
        _id: key, type: d.type, id: d.id, version: d.v, seq: d.seq, lastUpdated: d.lastUpdated, deleted: d.deleted,
        keyId: d.keyId, terms: d.terms, mac: d.headMac ?? null,
      };
      const move = moves.get(key);
      if (move) move.target = target;
      else moves.set(key, { expected: d.v - 1, target });
    }
    return [...moves.values()];
  }

  /** Undoes a batch that will never commit: its versions, then (if asked) its tx document. */
  private async undo(txId: number, deleteTx: boolean): Promise<void> {
    await this.versions.deleteMany({ tx: txId });
    if (deleteTx) await this.txs.deleteOne({ _id: txId });
  }

  /** After an engine error before the commit point: abort, undo what landed, keep the tx for recovery. */
  private async abandon(txId: number): Promise<void> {
    if ((await this.decide(txId, 'aborted')) === 'aborted') await this.undo(txId, false);
  }

  // -------------------------------------------------------------------------------------------- recovery

  private async staleBefore(): Promise<Date> {
    return new Date((await serverNow(this.db)) - this.staleAfterMs);
  }

  /**
   * Settles one batch. Committed: roll forward (young ones only when `finishYoung`, i.e. from init()).
   * Undecided and stale: abort, undo. Aborted: undo. Gone without a 'committed' decision: delete its leftover
   * versions. Returns whether anything changed.
   */
  private async resolve(txId: number, staleBefore: Date, finishYoung: boolean): Promise<boolean> {
    // The tx document first: a decision is always written before the tx document is deleted.
    const tx = await this.txs.findOne({ _id: txId });
    let decision = (await this.decisions.findOne({ _id: txId }))?.outcome;
    if (!tx) {
      if (decision === 'committed') return false; // finished
      return (await this.versions.deleteMany({ tx: txId })).deletedCount > 0;
    }
    const stale = tx.createdAt < staleBefore;
    if (!decision) {
      if (!stale) return false; // its gateway may be alive
      decision = await this.decide(txId, 'aborted');
    }
    if (decision === 'committed') {
      if (!stale && !finishYoung) return false; // its gateway is finishing it
      await this.rollForward(txId);
    } else {
      await this.undo(txId, stale);
    }
    return true;
  }

  private async resolveBlockers(blockers: number[]): Promise<boolean> {
    const staleBefore = await this.staleBefore();
    let changed = false;
    for (const txId of blockers) if (await this.resolve(txId, staleBefore, false)) changed = true;
    return changed;
  }

  /**
   * Finishes every committed batch and undoes those in flight longer than `staleAfterMs` (their gateway is
   * presumed dead). Run by init(); safe to run at any time, from any number of gateways.
   */
  async recover(): Promise<void> {
    const staleBefore = await this.staleBefore();
    const open = await this.txs.find({}, { projection: { _id: 1 } }).toArray();
    for (const { _id } of open) await this.resolve(_id, staleBefore, true);
  }

  // ----------------------------------------------------------------------------------------------- reads

  private get headCollections(): HeadCollections {
    return { versions: this.versions, pointers: this.pointers, txs: this.txs, decisions: this.decisions } as unknown as HeadCollections;
  }

  async current(type: string, id: string): Promise<StoredVersion | undefined> {
    const pointer = await this.pointers.findOne({ _id: pointerKey(type, id) }, { projection: { version: 1, deleted: 1, mac: 1 } });
    if (!pointer) return undefined;
    const [doc, superseded] = await Promise.all([
      this.versions.findOne({ _id: slotKey(type, id, pointer.version) }),
      movedBack(this.headCollections, [pointer]),
    ]);
    if (!doc) return undefined;
    return { ...toStored(doc), head: { mac: pointer.mac ?? null, hidden: pointer.deleted, superseded: superseded.size > 0 } };
  }

  async indexTerms(type: string, id: string): Promise<IndexTerm[]> {
    const pointer = await this.pointers.findOne({ _id: pointerKey(type, id) }, { projection: { terms: 1 } });
    return (pointer?.terms ?? []).map((term) => {
      const at = term.indexOf('=');
      return { param: term.slice(0, at), value: term.slice(at + 1) };
    });
  }

  async version(type: string, id: string, versionId: number): Promise<StoredVersion | undefined> {
    const [doc, pointer] = await Promise.all([
      this.versions.findOne({ _id: slotKey(type, id, versionId) }),
      this.pointers.findOne({ _id: pointerKey(type, id) }, { projection: { version: 1 } }),
    ]);
    // Visible only once the pointer reached it: a version beyond the pointer is in flight or left over.
    return doc && pointer && doc.v <= pointer.version ? toStored(doc) : undefined;
  }

  private filter(query: StoreQuery, withCursor: boolean): Filter<PointerDoc> {
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

  async search(query: StoreQuery): Promise<StoredVersion[]> {
    if (query.limit <= 0) return [];
    const pointers = await this.pointers
      .find(this.filter(query, true), { projection: { type: 1, id: 1, version: 1, deleted: 1, mac: 1 } })
      .sort({ id: 1 })
      .limit(query.limit)
      .toArray();
    if (pointers.length === 0) return [];
    const slots = pointers.map((p) => slotKey(p.type, p.id, p.version));
    const [found, superseded] = await Promise.all([this.versions.find({ _id: { $in: slots } }).toArray(), movedBack(this.headCollections, pointers)]);
    const docs = new Map(found.map((d) => [d._id, d]));
    return pointers.flatMap((p, i) => {
      const doc = docs.get(slots[i]);
      return doc ? [{ ...toStored(doc), head: { mac: p.mac ?? null, hidden: p.deleted, superseded: superseded.has(p._id) } }] : [];
    });
  }

  async count(query: StoreQuery): Promise<number> {
    return this.pointers.countDocuments(this.filter(query, false));
  }

  async history(query: HistoryQuery): Promise<StoredVersion[]> {
    if (query.limit <= 0) return [];
    const result: StoredVersion[] = [];
    let beforeSeq = query.beforeSeq;
    // Versions beyond their pointer (in flight, left over) are skipped; pages are refilled past them.
    for (;;) {
      const filter = historyFilter(query);
      if (beforeSeq !== undefined) filter.seq = { $lt: beforeSeq };
      const want = query.limit - result.length;
      const docs = await this.versions.find(filter).sort({ seq: -1 }).limit(want).toArray();
      if (docs.length === 0) return result;
      const keys = [...new Set(docs.map((d) => pointerKey(d.type, d.id)))];
      const at = new Map(
        (await this.pointers.find({ _id: { $in: keys } }, { projection: { version: 1 } }).toArray()).map((p) => [p._id, p.version]),
      );
      for (const d of docs) if (d.v <= (at.get(pointerKey(d.type, d.id)) ?? 0)) result.push(toStored(d));
      if (docs.length < want || result.length >= query.limit) return result;
      beforeSeq = docs[docs.length - 1].seq;
    }
  }

  /** Counts the versions written, including those of a batch still in flight (history() skips them). */
  async countHistory(query: HistoryQuery): Promise<number> {
    return this.versions.countDocuments(historyFilter(query));
  }

  // ------------------------------------------------------------------------------------------ anchor outbox

  async unanchored(query: { afterSeq?: number; limit: number }): Promise<UnanchoredVersion[]> {
    if (query.limit <= 0) return [];
    const result: UnanchoredVersion[] = [];
    let afterSeq = query.afterSeq;
    // Versions of batches not committed are skipped; pages are refilled past them.
    for (;;) {
      const filter: Filter<VersionDoc> = { anchored: false };
      if (afterSeq !== undefined) filter.seq = { $gt: afterSeq };
      const want = query.limit - result.length;
      const docs = await this.versions.find(filter, { projection: OUTBOX_PROJECTION }).sort({ seq: 1 }).limit(want).toArray();
      if (docs.length === 0) return result;
      const decisions = await this.decisions
        .find({ _id: { $in: [...new Set(docs.map((d) => d.tx))] }, outcome: 'committed' }, { projection: { _id: 1 } })
        .toArray();
      const committed = new Set(decisions.map((d) => d._id));
      for (const d of docs) if (committed.has(d.tx)) result.push(toUnanchored(d));
      if (docs.length < want || result.length >= query.limit) return result;
      afterSeq = docs[docs.length - 1].seq;
    }
  }

  async markAnchored(marks: AnchorMark[]): Promise<void> {
    if (marks.length === 0) return;
    const slots = marks.map((m) => slotKey(m.type, m.id, m.versionId));
    const updates: AnyBulkWriteOperation<VersionDoc>[] = marks.map(({ blockNumber, envelopeIndex, entryIndex }, i) => ({
      updateOne: {
        filter: { _id: slots[i], anchored: false },
        update: { $set: { anchored: true, anchor: { blockNumber, envelopeIndex, entryIndex } } },
      },
    }));
    for (let i = 0; i < updates.length; i += this.updatesPerCommand) {
      await this.versions.bulkWrite(updates.slice(i, i + this.updatesPerCommand), { ordered: false });
    }
    // FerretDB writes back the whole document it read: terms an erasure emptied meanwhile may be back.
    const sealed = await this.versions.find({ _id: { $in: slots }, keyId: { $ne: null } }, { projection: { keyId: 1 } }).toArray();
    await this.shredIfErased(sealed.map((d) => d.keyId!));
  }

  // ------------------------------------------------------------------------------------------- data keys

  async insertKey(key: { keyId: string; masterKeyId: string; wrapped: Uint8Array; createdAt: string }): Promise<KeyEntry> {
    const { keyId, createdAt, masterKeyId, wrapped } = key;
    try {
      await this.dataKeys.insertOne({ _id: keyId, createdAt, masterKeyId, wrapped: new Binary(wrapped) });
    } catch (e) {
      if (!isDuplicateKey(e)) throw e; // the stored key stands
    }
    // Read after the insert: an erasure that missed the key we inserted has left a tombstone we see here.
    const stored = await this.getKey(keyId);
    if (!stored) throw new Error(`data key ${keyId} vanished right after it was inserted`);
    if (stored.erasedAt !== null) await this.dataKeys.deleteOne({ _id: keyId });
    return stored;
  }

  async insertKeys(keys: NewKey[]): Promise<KeyEntry[]> {
    return Promise.all(keys.map((k) => this.insertKey(k)));
  }

  async getKey(keyId: string): Promise<KeyEntry | undefined> {
    // The live key first, then the tombstone: an erasure inserts the tombstone before it deletes the key, so
    // a key found missing here always has its tombstone visible to the second read.
    const live = await this.dataKeys.findOne({ _id: keyId });
    const tombstone = await this.erasedKeys.findOne({ _id: keyId });
    if (tombstone) return tombstoneEntry(tombstone);
    return live ? liveKeyEntry(live) : undefined;
  }

  async listKeys(query: { notWrappedUnder: string; afterKeyId?: string; limit: number }): Promise<KeyEntry[]> {
    const result: KeyEntry[] = [];
    let afterKeyId = query.afterKeyId;
    // Keys whose erasure was interrupted (tombstone in, key not yet deleted) are skipped; pages are refilled past them.
    while (result.length < query.limit) {
      const filter: Filter<DataKeyDoc> = { masterKeyId: { $ne: query.notWrappedUnder } };
      if (afterKeyId !== undefined) filter._id = { $gt: afterKeyId };
      const want = query.limit - result.length;
      const docs = await this.dataKeys.find(filter).sort({ _id: 1 }).limit(want).toArray();
      if (docs.length === 0) break;
      const erased = await this.erasedKeys.find({ _id: { $in: docs.map((d) => d._id) } }, { projection: { _id: 1 } }).toArray();
      const erasedIds = new Set(erased.map((e) => e._id));
      result.push(...docs.filter((d) => !erasedIds.has(d._id)).map(liveKeyEntry));
      if (docs.length < want) break;
      afterKeyId = docs[docs.length - 1]._id;
    }
    return result;
  }

  async rewrapKey(keyId: string, fromMasterKeyId: string, next: { masterKeyId: string; wrapped: Uint8Array }): Promise<boolean> {
    const { matchedCount } = await this.dataKeys.updateOne(
      { _id: keyId, masterKeyId: fromMasterKeyId },
      { $set: { masterKeyId: next.masterKeyId, wrapped: new Binary(next.wrapped) } },
    );
    if (matchedCount !== 1) return false;
    // Read after the write: the key may be erased (concurrently, or by an erasure interrupted before it
    // deleted the key); then it was not re-wrapped, and its bytes must not outlive the tombstone.
    if (await this.erasedKeys.findOne({ _id: keyId }, { projection: { _id: 1 } })) {
      await this.dataKeys.deleteOne({ _id: keyId });
      return false;
    }
    return true;
  }

  async eraseKey(keyId: string, erasedAt: string): Promise<{ resources: number }> {
    const live = await this.dataKeys.findOne({ _id: keyId }, { projection: { createdAt: 1 } });
    try {
      await this.erasedKeys.insertOne({ _id: keyId, createdAt: live?.createdAt ?? erasedAt, erasedAt });
    } catch (e) {
      if (!isDuplicateKey(e)) throw e; // erased before: the first erasure's instant stands
    }
    await this.dataKeys.deleteOne({ _id: keyId });
    return { resources: await this.shredIndex([keyId]) };
  }

  // -------------------------------------------------------------------------------- index rewrites (mongo-index.ts)

  async replaceTerms(type: string, id: string, versionId: number, terms: IndexTerm[]): Promise<boolean> {
    const ref = { pointerId: pointerKey(type, id), slotId: slotKey(type, id, versionId), type, id, versionId };
    const applied = await replaceResourceTerms(this.pointers, this.versions, ref, terms);
    // As after a roll-forward: an erasure that raced with this write must not leave terms searchable.
    if (applied && applied.keyId !== null) await this.shredIfErased([applied.keyId]);
    return applied !== false;
  }

  /** Term values are blind tokens unique to their type, so `param=value` alone names the rows. */
  async removeTerms(terms: TypedTerm[]): Promise<void> {
    await pullTerms(this.pointers, this.versions, terms);
  }

  /**
   * Removes the index terms of every pointer and version sealed under these keys and hides the pointers
   * from search and count. Returns how many pointers it hid.
   */
  private async shredIndex(keyIds: string[]): Promise<number> {
    const sealed = { keyId: { $in: keyIds } };
    const hidden = await this.pointers.updateMany({ ...sealed, deleted: false }, { $set: { deleted: true, terms: [] } });
    await this.versions.updateMany({ ...sealed, terms: { $ne: [] } }, { $set: { terms: [] } });
    return hidden.modifiedCount;
  }
}

const BOUND_OPS = { gt: '$gt', ge: '$gte', lt: '$lt', le: '$lte' } as const;

function boundFilter(bound: InstantBound): Filter<PointerDoc> {
  return { lastUpdated: { [BOUND_OPS[bound.op]]: bound.value } };
}

/**
 * Groups a batch by resource. Every write must supersede its expected version by exactly one, and several
 * writes of one resource must chain; the pointer moves once, from the first expected version to the last
 * write. `target.seq` is the index of that write in the batch (made absolute per attempt).
 */
function planMoves(writes: VersionWrite[]): Move[] {
  const moves = new Map<string, Move>();
  writes.forEach(({ record: r, terms, expectedVersion, headMac }, index) => {
    if (r.versionId <= expectedVersion) throw new VersionConflictError(r.type, r.id);
    if (r.versionId !== expectedVersion + 1) {
      throw new RangeError(`${r.type}/${r.id}: versionId ${r.versionId} must be expectedVersion + 1 (${expectedVersion + 1})`);
    }
    const key = pointerKey(r.type, r.id);
    const target: PointerDoc = {
      _id: key, type: r.type, id: r.id, version: r.versionId, seq: index, lastUpdated: r.lastUpdated, deleted: r.deleted,
      keyId: r.keyId ?? null, terms: termStrings(terms), mac: headMac ?? null,
    };
    const move = moves.get(key);
    if (!move) moves.set(key, { expected: expectedVersion, target });
    else if (expectedVersion !== move.target.version) throw new VersionConflictError(r.type, r.id);
    else move.target = target;
  });
  return [...moves.values()];
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
