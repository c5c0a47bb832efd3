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
 *              patientToken, resourceToken?, linkTokens?, erasedPatientToken?, terms, tx, anchored, anchor?}`
 *              (the three federation tokens are absent when unset, and on versions written before them).
 *              These documents are immutable, except that
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
 * Concurrency. Writers of one resource from one version compete for one unique slot: exactly one wins and
 * the others get VersionConflictError. No update is lost. Overlapping batches may both lose, because each
 * holds a slot the other needs, but they never both win. Seq blocks are claimed before the commit point,
 * so concurrent batches may become visible out of seq order.
 * Caveat, on FerretDB only: a pointer move there is not a true compare-and-set. If a recoverer rolls a batch
 * forward at the same moment as the batch's own gateway, and a third writer commits a newer version of the
 * same resource inside that per-document read-then-write, the late write can put the pointer back. On
 * MongoDB the conditional update is atomic.
 *
 * The parts, one job each: mongo-vault.ts (documents, collections), mongo-commit.ts (commit protocol),
 * mongo-batch.ts (decision, roll-forward, undo, recovery), mongo-reads.ts (current, search, history),
 * mongo-head.ts (pointers moved back), mongo-index.ts (index rewrites), mongo-outbox.ts (anchor outbox),
 * mongo-keys.ts (data keys, erasure), vault-format.ts (the format marker).
 *
 * Durability: writes use `{w: 'majority', j: true}`.
 */
import { MongoClient } from 'mongodb';
import type { Db, IndexDescription, MongoClientOptions } from 'mongodb';
import { isFerretDb } from './driver.ts';
import { checkVaultFormat } from './vault-format.ts';
import { recover, type BatchContext, type CommitStep } from './mongo-batch.ts';
import { BatchCommitter } from './mongo-commit.ts';
import { pullTerms, replaceResourceTerms } from './mongo-index.ts';
import { eraseKey, getKey, insertKey, listKeys, rewrapKey, shredIfErased } from './mongo-keys.ts';
import { markAnchored, unanchored } from './mongo-outbox.ts';
import * as reads from './mongo-reads.ts';
import { openVault, pointerKey, slotKey, type Vault } from './mongo-vault.ts';
import type {
  ResourceStore, VersionWrite, StoreQuery, StoredVersion, HistoryQuery, IndexTerm, TypedTerm,
  AnchorMark, UnanchoredVersion, KeyEntry, NewKey,
} from '../../vault/store.ts';

export type { CommitStep } from './mongo-batch.ts';
export { CommitAbandonedError, CommitOutcomeUnknownError } from './mongo-commit.ts';

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

export class MongoStore implements ResourceStore {
  /** Each commit() stands alone: a caller waits for one batch before depending on it. */
  readonly pipelinedCommits = false;
  private readonly client: MongoClient;
  private readonly db: Db;
  private readonly vault: Vault;
  private readonly batches: BatchContext;
  private readonly committer: BatchCommitter;

  constructor(uri: string, database = 'medblock', private readonly options: MongoStoreOptions = {}) {
    this.client = new MongoClient(uri, options.clientOptions);
    this.db = this.client.db(database, { writeConcern: { w: 'majority', journal: true } });
    this.vault = openVault(this.db, options.maxUpdatesPerCommand ?? FERRETDB_UPDATES_PER_COMMAND);
    const { onStep } = options;
    this.batches = {
      vault: this.vault,
      staleAfterMs: options.staleAfterMs ?? 60_000,
      step: async (step, txId) => {
        if (onStep) await onStep(step, txId);
      },
    };
    this.committer = new BatchCommitter(this.batches);
  }

  async init(): Promise<void> {
    await this.client.connect();
    await checkVaultFormat(this.db);
    const ferretdb = await isFerretDb(this.db);
    this.vault.updatesPerCommand = this.options.maxUpdatesPerCommand ?? (ferretdb ? FERRETDB_UPDATES_PER_COMMAND : Infinity);
    // FerretDB evaluates every index on every write but answers no query from one.
    if (!ferretdb) await Promise.all([this.vault.versions.createIndexes(VERSION_INDEXES), this.vault.pointers.createIndexes(POINTER_INDEXES)]);
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

  async commit(writes: VersionWrite[]): Promise<void> {
    await this.committer.commit(writes);
  }

  /** Settles the batches left in flight (mongo-batch.ts, "Recovery"); safe to run at any time. */
  async recover(): Promise<void> {
    await recover(this.batches);
  }

  async current(type: string, id: string): Promise<StoredVersion | undefined> {
    return reads.current(this.vault, type, id);
  }

  async indexTerms(type: string, id: string): Promise<IndexTerm[]> {
    return reads.indexTerms(this.vault, type, id);
  }

  async version(type: string, id: string, versionId: number): Promise<StoredVersion | undefined> {
    return reads.version(this.vault, type, id, versionId);
  }

  async search(query: StoreQuery): Promise<StoredVersion[]> {
    return reads.search(this.vault, query);
  }

  async count(query: StoreQuery): Promise<number> {
    return reads.count(this.vault, query);
  }

  async history(query: HistoryQuery): Promise<StoredVersion[]> {
    return reads.history(this.vault, query);
  }

  async countHistory(query: HistoryQuery): Promise<number> {
    return reads.countHistory(this.vault, query);
  }

  async unanchored(query: { afterSeq?: number; limit: number }): Promise<UnanchoredVersion[]> {
    return unanchored(this.vault, query);
  }

  async markAnchored(marks: AnchorMark[]): Promise<void> {
    await markAnchored(this.vault, marks);
  }

  async insertKey(key: NewKey): Promise<KeyEntry> {
    return insertKey(this.vault, key);
  }

  async insertKeys(keys: NewKey[]): Promise<KeyEntry[]> {
    return Promise.all(keys.map((k) => insertKey(this.vault, k)));
  }

  async getKey(keyId: string): Promise<KeyEntry | undefined> {
    return getKey(this.vault, keyId);
  }

  async listKeys(query: { notWrappedUnder: string; afterKeyId?: string; limit: number }): Promise<KeyEntry[]> {
    return listKeys(this.vault, query);
  }

  async rewrapKey(keyId: string, fromMasterKeyId: string, next: { masterKeyId: string; wrapped: Uint8Array }): Promise<boolean> {
    return rewrapKey(this.vault, keyId, fromMasterKeyId, next);
  }

  async eraseKey(keyId: string, erasedAt: string): Promise<{ resources: number }> {
    return eraseKey(this.vault, keyId, erasedAt);
  }

  async replaceTerms(type: string, id: string, versionId: number, terms: IndexTerm[]): Promise<boolean> {
    const ref = { pointerId: pointerKey(type, id), slotId: slotKey(type, id, versionId), type, id, versionId };
    const applied = await replaceResourceTerms(this.vault.pointers, this.vault.versions, ref, terms);
    // As after a roll-forward: an erasure that raced with this write must not leave terms searchable.
    if (applied && applied.keyId !== null) await shredIfErased(this.vault, [applied.keyId]);
    return applied !== false;
  }

  /** Term values are blind tokens unique to their type, so `param=value` alone names the rows. */
  async removeTerms(terms: TypedTerm[]): Promise<void> {
    await pullTerms(this.vault.pointers, this.vault.versions, terms);
  }
}
