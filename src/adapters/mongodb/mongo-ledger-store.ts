/**
 * The LedgerStore port over the MongoDB wire protocol, next to the vault (MongoStore) in the same database,
 * for MongoDB ≥ 6 and FerretDB 1.24 alike. What FerretDB allows is described in mongo-store.ts; in short:
 * no multi-document transaction, updates are a non-atomic read-then-write, a unique insert IS atomic (exactly
 * one of N concurrent inserts of one `_id` succeeds), a delete by `_id` is atomic, and no query uses an index.
 * So this adapter never updates a document: it inserts and deletes only, and lets unique `_id`s decide.
 *
 * Collections (prefixed `ledger_`; `B` is the block number zero-padded to 16 digits, so `_id` order is number
 * order and `_id` ranges serve the range reads on MongoDB without a secondary index; channel names, member
 * ids, tokens and digests contain no `/`, and `channel/` prefixes of two channels never overlap):
 *   ledger_blocks      `{_id: 'ch/B', channel, number, hash, header, validity}`: THE COMMIT MARKER of a block.
 *                      `hash` is blockHeaderHash(header). Never updated nor deleted.
 *   ledger_envelopes   `{_id: 'ch/B/hash', envelopes: Binary[]}`: the block's wire bytes. One document per block:
 *                      a block holds at most the cutter's absoluteMaxBytes (4 MiB by default, see
 *                      consortium-dir.ts), well inside BSON's 16 MiB document limit; appendBlock refuses, before
 *                      writing anything, a block whose document would exceed it (a channel configured with
 *                      absoluteMaxBytes near 16 MiB would need envelopes split over several documents). They are
 *                      kept apart from the marker so that head/headers reads never load envelope bytes
 *                      (FerretDB decodes every document of a collection for any query but an exact `_id`).
 *   ledger_digests     `{_id: 'ch/digest', block, hash, envelopeIndex, entryIndex, creator, kind}`
 *   ledger_patients    `{_id: 'ch/token/hospital', token, hospital, block, hash}`
 *   ledger_nonces      `{_id: 'ch/creator/nonce', block, hash}`
 *   ledger_config_changes  `{_id: 'ch/B/hash/position', block, hash, position, change}`
 *   ledger_pending     `{_id: 'ch/B/hash', block, hash, createdAt (server clock)}`: an append in progress.
 *   ledger_attestations  `{_id: 'ch/B/member', block, member, attestation}`: a unique insert, the first stays.
 *   ledger_checkpoints `{_id: 'ch/B', block, checkpoint}`: one document per checkpointed block, inserted; the
 *                      highest is the channel's checkpoint (no update, so no lost update on FerretDB). A save
 *                      deletes the lower ones; a lower one saved late stays unread until the next higher save.
 * Every document also carries `channel`.
 *
 * Tags and visibility. Every index entry (digest, patient, nonce, config change, envelopes) is tagged with the
 * block number AND the header hash of the block it belongs to. An entry is visible iff the marker of its block
 * exists with that same hash. Markers are only ever inserted, in number order, so "a marker exists" means
 * "committed" (at or below the head), and the hash makes an entry of a crashed attempt at a block whose
 * number was later committed with OTHER content (a fork, or a caller bug) stay invisible instead of showing
 * a wrong location. Committed markers are immutable, so their hashes are cached.
 *
 * Append protocol (appendBlock of block N with header hash H; N must be head + 1):
 *   1. Upsert the pending document 'ch/N/H' (server-clock createdAt), so recovery can find the attempt.
 *   2. Insert the envelopes and the config changes (their `_id`s contain H: a duplicate is the same content).
 *   3. Insert the digest, patient and nonce entries (`insertMany`, unordered) and settle the duplicates, below.
 *   4. COMMIT POINT: insert the marker `{_id: 'ch/N'}`. Of two writers of block N exactly one succeeds; the
 *      other gets LedgerAppendError (and restores what it displaced, below).
 *   5. Delete the pending document. If it was already gone, a recoverer claimed the attempt (it took longer
 *      than staleAfterMs) and may have deleted entries; steps 2-3 are idempotent and run again.
 * A crash anywhere before step 4 leaves entries that no reader shows (their block has no marker), and a
 * crash after it leaves at most the pending document, which init() deletes.
 *
 * First location and orphans (step 3). The `_id` of a digest (patient pair, nonce) is the same in every
 * block, so an insert that hits a duplicate looks at the entry `e` that is there:
 *   - `e.hash == H`: it is ours already (left by an earlier attempt of this same block that crashed or failed,
 *     or written by another gateway appending the identical block right now): nothing to do.
 *   - the marker of `e.block` exists with `e.hash`: `e` is committed, in an earlier block, so it is the first
 *     location and stays. This is the only case where a later block's entry is dropped.
 *   - otherwise `e` can never become visible as it is, or is not yet: its block was committed with other
 *     content (dead), or `e` belongs to another, uncommitted attempt at block N with other content (an
 *     orphan a crash left, or a concurrent writer of a conflicting block N). It is deleted (conditionally on
 *     its hash) and ours inserted; then the duplicates of that insert are settled again, a few rounds at most.
 *   So an orphan never blocks a retry, and a committed first location is never overwritten: replacement
 *   only happens to entries whose block has no marker with their hash. An uncommitted entry of a conflicting
 *   attempt that this writer displaced is put back if that attempt wins the marker (so the winner's index is
 *   whole); caveat: if this writer dies between losing and putting back, the winner lacks those entries.
 *   Two writers of the SAME block (several gateways on one database, see member.ts) never displace each
 *   other: their entries are identical and tagged with the same hash.
 *
 * Recovery. init() reads the pending documents (normally none):
 *   - one whose block's marker has its hash was committed: the document is deleted;
 *   - one older than `staleAfterMs` (server clock) without that marker is claimed (a delete by `_id`: one
 *     claimer wins) and the entries tagged with its hash are deleted, so a crash leaves nothing behind;
 *   - younger ones may be appends in progress in another gateway and are left alone.
 *   A claimed attempt whose writer was only slow (over staleAfterMs between steps 1 and 4) notices at step 5
 *   and rewrites its entries; a reader may miss some of them in between.
 *   Entries of a crashed attempt that no init() cleaned are harmless meanwhile: they are invisible, and the
 *   next append of their block number (or of a later block with the same digest) replaces them.
 *
 * Cost on FerretDB (measured with 1.24.2, 200,000 small documents): an exact-`_id` query is a SQLite scan of
 * the collection (15-50 ms), any other query, `$in` and `_id` ranges included, decodes every document in Go
 * (10-17 s), and concurrent queries do not overlap. So lookups of a few `_id`s are exact queries one by one
 * and larger ones are one `$in`; a locate() of 1,000 digests costs one full decode of ledger_digests. On
 * MongoDB every lookup is `_id: {$in}` and range reads use the `_id` index; the only secondary index is
 * `{hash: 1}` on the entry collections, for recovery. On FerretDB no secondary index is created.
 *
 * Durability: writes use `{w: 'majority', j: true}`.
 */
import { BSON, Binary, MongoBulkWriteError, MongoClient } from 'mongodb';
import type { Collection, Db, Filter, MongoClientOptions, OptionalUnlessRequiredId } from 'mongodb';
import { isDuplicateKey, isFerretDb, serverNow, writeErrorsOf } from './driver.ts';
import type { Attestation, Checkpoint } from '../../ledger/attestation.ts';
import { blockHeaderHash, type Block, type BlockHeader, type EnvelopeValidity } from '../../ledger/block.ts';
import type { ConfigChange } from '../../ledger/envelope.ts';
import { LedgerAppendError, type BlockIndex, type DigestLocation, type LedgerStore } from '../../ledger/ledger-store.ts';
import { chunks } from '../chunks.ts';

/** Points inside appendBlock() where the test hook runs. */
export type AppendStep =
  | 'pending' // pending document written
  | 'staged' // envelopes and index entries written, marker not yet
  | 'committed'; // marker inserted

export interface MongoLedgerStoreOptions {
  /** An append in progress longer than this is presumed dead and init() removes its entries. Default 60 s. */
  staleAfterMs?: number;
  /** Test hook, awaited at each step of appendBlock(); throwing from it simulates a crash there. */
  onAppendStep?: (step: AppendStep, header: BlockHeader) => void | Promise<void>;
  /** Passed to MongoClient. */
  clientOptions?: MongoClientOptions;
}

/** What every index entry carries: the block it belongs to and that block's header hash. */
interface Tag {
  channel: string;
  block: number;
  hash: string;
}

interface BlockDoc {
  _id: string;
  channel: string;
  number: number;
  hash: string;
  header: BlockHeader;
  validity: EnvelopeValidity[];
}

interface EnvelopesDoc extends Tag {
  _id: string;
  envelopes: Binary[];
}

interface DigestDoc extends Tag {
  _id: string;
  envelopeIndex: number;
  entryIndex: number;
  creator: string;
  kind: 'anchor' | 'audit';
}

interface PatientDoc extends Tag {
  _id: string;
  token: string;
  hospital: string;
}

interface NonceDoc extends Tag {
  _id: string;
}

interface ConfigChangeDoc extends Tag {
  _id: string;
  position: number;
  change: ConfigChange;
}

interface PendingDoc extends Tag {
  _id: string;
  createdAt: Date;
}

interface AttestationDoc {
  _id: string;
  channel: string;
  block: number;
  member: string;
  attestation: Attestation;
}

interface CheckpointDoc {
  _id: string;
  channel: string;
  block: number;
  checkpoint: Checkpoint;
}

type EntryDoc = Tag & { _id: string };

/** BSON's document limit (the server's maxBsonObjectSize). */
const MAX_DOCUMENT_BYTES = 16 * 1024 * 1024;
/** On FerretDB, lookups of at most this many `_id`s are exact queries, one by one (see the header). */
const FERRETDB_EXACT_LOOKUPS = 16;
/** `_id`s per `$in` query. */
const LOOKUP_CHUNK = 5000;
/** Rounds of settling duplicates before appendBlock gives up (each round needs a concurrent writer to fail). */
const SETTLE_ROUNDS = 5;
/** Committed block hashes kept in memory (they never change); the cache is emptied when it grows past this. */
const HASH_CACHE_LIMIT = 100_000;

const pad = (n: number): string => n.toString().padStart(16, '0');
const blockKey = (channel: string, n: number): string => `${channel}/${pad(n)}`;
/** Bounds of the `_id`s that start with `prefix/`: '0' follows '/' in every collation by code point. */
const under = (prefix: string) => ({ $gte: `${prefix}/`, $lt: `${prefix}0` });

/** Block number order, then `key` (compared by code unit, like SQLite's BINARY collation). */
function byBlockThen<T extends { block: number }>(key: (item: T) => number | string): (a: T, b: T) => number {
  return (a, b) => a.block - b.block || (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0);
}

export class MongoLedgerStore implements LedgerStore {
  private readonly client: MongoClient;
  private readonly db: Db;
  private readonly blocks: Collection<BlockDoc>;
  private readonly envelopes: Collection<EnvelopesDoc>;
  private readonly digests: Collection<DigestDoc>;
  private readonly patients: Collection<PatientDoc>;
  private readonly nonces: Collection<NonceDoc>;
  private readonly configs: Collection<ConfigChangeDoc>;
  private readonly pending: Collection<PendingDoc>;
  private readonly attestationDocs: Collection<AttestationDoc>;
  private readonly checkpoints: Collection<CheckpointDoc>;
  private readonly staleAfterMs: number;
  private readonly onAppendStep?: MongoLedgerStoreOptions['onAppendStep'];
  /** Until init() knows better, behave as on FerretDB (exact lookups for a few ids are right on both). */
  private ferretdb = true;
  /** The highest committed header seen per channel: head() walks forward from it by exact `_id`. */
  private readonly heads = new Map<string, BlockHeader>();
  /** `ch/B` → header hash of committed blocks. */
  private readonly committedHashCache = new Map<string, string>();

  constructor(uri: string, database: string, options: MongoLedgerStoreOptions = {}) {
    this.client = new MongoClient(uri, options.clientOptions);
    this.db = this.client.db(database, { writeConcern: { w: 'majority', journal: true }, ignoreUndefined: true });
    this.blocks = this.db.collection<BlockDoc>('ledger_blocks');
    this.envelopes = this.db.collection<EnvelopesDoc>('ledger_envelopes');
    this.digests = this.db.collection<DigestDoc>('ledger_digests');
    this.patients = this.db.collection<PatientDoc>('ledger_patients');
    this.nonces = this.db.collection<NonceDoc>('ledger_nonces');
    this.configs = this.db.collection<ConfigChangeDoc>('ledger_config_changes');
    this.pending = this.db.collection<PendingDoc>('ledger_pending');
    this.attestationDocs = this.db.collection<AttestationDoc>('ledger_attestations');
    this.checkpoints = this.db.collection<CheckpointDoc>('ledger_checkpoints');
    this.staleAfterMs = options.staleAfterMs ?? 60_000;
    this.onAppendStep = options.onAppendStep;
  }

  private get entryCollections(): Array<Collection<EntryDoc>> {
    return [this.digests, this.patients, this.nonces, this.configs, this.envelopes] as unknown as Array<Collection<EntryDoc>>;
  }

  async init(): Promise<void> {
    await this.client.connect();
    this.ferretdb = await isFerretDb(this.db);
    // FerretDB evaluates every index on every write but answers no query from one.
    if (!this.ferretdb) {
      await Promise.all(this.entryCollections.map((c) => c.createIndex({ hash: 1 }, { name: 'by_hash' })));
    }
    await this.recover();
  }

  async close(): Promise<void> {
    await this.client.close();
  }

  /**
   * Deletes the pending documents of committed appends, and the entries of appends pending longer than
   * `staleAfterMs` whose block has no marker with their hash (a crash between the entries and the marker).
   */
  async recover(): Promise<void> {
    const staleBefore = new Date((await serverNow(this.db)) - this.staleAfterMs);
    for (const p of await this.pending.find({}).toArray()) {
      const committed = (await this.committedHashes(p.channel, [p.block])).get(p.block);
      if (committed === p.hash) {
        await this.pending.deleteOne({ _id: p._id });
        continue;
      }
      if (p.createdAt >= staleBefore) continue; // maybe an append in progress in another gateway
      // Claim it, unless its writer (or an identical retry) refreshed createdAt since we read it.
      if ((await this.pending.deleteOne({ _id: p._id, createdAt: p.createdAt })).deletedCount !== 1) continue;
      for (const c of this.entryCollections) await c.deleteMany({ hash: p.hash });
    }
  }

  // ------------------------------------------------------------------------------------------- helpers

  /** Documents with these `_id`s (see the header for why FerretDB gets exact queries for a few). */
  private async findByIds<T extends { _id: string }>(collection: Collection<T>, ids: string[]): Promise<T[]> {
    const unique = [...new Set(ids)];
    if (unique.length === 0) return [];
    const found: T[] = [];
    if (this.ferretdb && unique.length <= FERRETDB_EXACT_LOOKUPS) {
      for (const id of unique) {
        const doc = await collection.findOne({ _id: id } as Filter<T>);
        if (doc) found.push(doc as T);
      }
      return found;
    }
    for (const chunk of chunks(unique, LOOKUP_CHUNK)) found.push(...((await collection.find({ _id: { $in: chunk } } as Filter<T>).toArray()) as T[]));
    return found;
  }

  /** Header hashes of those of these blocks that are committed (have a marker). */
  private async committedHashes(channel: string, numbers: number[]): Promise<Map<number, string>> {
    const result = new Map<number, string>();
    const missing: string[] = [];
    for (const n of new Set(numbers)) {
      const cached = this.committedHashCache.get(blockKey(channel, n));
      if (cached !== undefined) result.set(n, cached);
      else missing.push(blockKey(channel, n));
    }
    if (missing.length > 0) {
      if (this.committedHashCache.size > HASH_CACHE_LIMIT) this.committedHashCache.clear();
      for (const doc of await this.findByIds(this.blocks, missing)) {
        this.committedHashCache.set(doc._id, doc.hash);
        result.set(doc.number, doc.hash);
      }
    }
    return result;
  }

  /** The entries whose block is committed with their hash. */
  private async visible<T extends EntryDoc>(channel: string, docs: T[]): Promise<T[]> {
    if (docs.length === 0) return [];
    const committed = await this.committedHashes(channel, docs.map((d) => d.block));
    return docs.filter((d) => d.channel === channel && committed.get(d.block) === d.hash);
  }

  /** Inserts the documents; returns those whose `_id` was taken. */
  private async insertMissing<T extends { _id: string }>(collection: Collection<T>, docs: T[]): Promise<T[]> {
    if (docs.length === 0) return [];
    try {
      await collection.insertMany(docs as OptionalUnlessRequiredId<T>[], { ordered: false });
      return [];
    } catch (e) {
      if (!isDuplicateKey(e)) throw e;
      if (e instanceof MongoBulkWriteError) return writeErrorsOf(e).map((w) => docs[w.index]);
      return docs; // a single-document insert
    }
  }

  private async deleteIfTagged(collection: Collection<EntryDoc>, ids: string[], hash: string): Promise<void> {
    if (ids.length === 0) return;
    if (this.ferretdb && ids.length <= FERRETDB_EXACT_LOOKUPS) {
      for (const _id of ids) await collection.deleteOne({ _id, hash });
      return;
    }
    for (const chunk of chunks(ids, LOOKUP_CHUNK)) await collection.deleteMany({ _id: { $in: chunk }, hash });
  }

  /**
   * Writes entries of block `tag` (first location: see the header). Returns the entries of OTHER uncommitted
   * attempts that it deleted to make room, so a loser at the commit point can put back the winner's.
   */
  private async settle<T extends EntryDoc>(collection: Collection<T>, docs: T[], tag: Tag): Promise<T[]> {
    const displaced: T[] = [];
    const entries = collection as unknown as Collection<EntryDoc>;
    let toInsert = docs;
    for (let round = 0; ; round++) {
      const taken = await this.insertMissing(collection, toInsert);
      if (taken.length === 0) return displaced;
      if (round === SETTLE_ROUNDS) {
        throw new Error(`${collection.collectionName}: ${taken.length} entries of block ${tag.block} of ${tag.channel} kept being taken by other writers`);
      }
      const existing = new Map((await this.findByIds(collection, taken.map((d) => d._id))).map((e) => [e._id, e]));
      const foreign = [...existing.values()].filter((e) => e.hash !== tag.hash);
      const committed = await this.committedHashes(tag.channel, foreign.map((e) => e.block));
      toInsert = [];
      const replace = new Map<string, string[]>(); // hash → ids to delete
      for (const doc of taken) {
        const e = existing.get(doc._id);
        if (!e) {
          toInsert.push(doc); // deleted in between
          continue;
        }
        if (e.hash === tag.hash) continue; // ours already
        const committedHash = committed.get(e.block);
        if (committedHash === e.hash) continue; // committed earlier: the first location stays
        // Dead (its block committed other content) or another attempt's, not committed: make room.
        if (committedHash === undefined) displaced.push(e);
        replace.set(e.hash, [...(replace.get(e.hash) ?? []), e._id]);
        toInsert.push(doc);
      }
      for (const [hash, ids] of replace) await this.deleteIfTagged(entries, ids, hash);
    }
  }

  private async step(step: AppendStep, header: BlockHeader): Promise<void> {
    if (this.onAppendStep) await this.onAppendStep(step, header);
  }

  // ------------------------------------------------------------------------------------------- append

  async head(channel: string): Promise<BlockHeader | undefined> {
    let head: BlockHeader | undefined = this.heads.get(channel);
    if (!head) {
      const [last] = await this.blocks.find({ _id: under(channel) }, { projection: { header: 1 } }).sort({ _id: -1 }).limit(1).toArray();
      if (!last) return undefined;
      head = last.header;
    }
    // Walk forward by exact `_id`: another store sharing the database may have appended since.
    for (;;) {
      const next: Pick<BlockDoc, 'header'> | null = await this.blocks.findOne(
        { _id: blockKey(channel, head.number + 1) },
        { projection: { header: 1 } },
      );
      if (!next) break;
      head = next.header;
    }
    this.heads.set(channel, head);
    return head;
  }

  async appendBlock(block: Block, index: BlockIndex): Promise<void> {
    const { header } = block;
    const { channel, number } = header;
    const head = await this.head(channel);
    const expected = head === undefined ? 0 : head.number + 1;
    if (number !== expected) throw new LedgerAppendError(`block ${number} of channel ${channel} does not follow the head (next is ${expected})`);
    const hash = blockHeaderHash(header);
    const tag: Tag = { channel, block: number, hash };
    const key = blockKey(channel, number);
    const body: EnvelopesDoc = { _id: `${key}/${hash}`, ...tag, envelopes: block.envelopes.map((bytes) => new Binary(bytes)) };
    const size = BSON.calculateObjectSize(body);
    if (size > MAX_DOCUMENT_BYTES) {
      throw new RangeError(
        `block ${number} of channel ${channel}: its envelopes take ${size} bytes in one document, over BSON's ${MAX_DOCUMENT_BYTES}; ` +
          "lower the channel's absoluteMaxBytes",
      );
    }
    const marker: BlockDoc = { _id: key, channel, number, hash, header, validity: block.validity };

    const attempt = { $setOnInsert: { channel, block: number, hash }, $currentDate: { createdAt: true as const } };
    try {
      await this.pending.updateOne({ _id: `${key}/${hash}` }, attempt, { upsert: true });
    } catch (e) {
      // Two upserts of one new `_id` race (a second gateway appending the same block): the other inserted it.
      if (!isDuplicateKey(e)) throw e;
      await this.pending.updateOne({ _id: `${key}/${hash}` }, attempt, { upsert: true });
    }
    await this.step('pending', header);
    const displaced = await this.stage(block, index, tag, body);
    await this.step('staged', header);

    try {
      await this.blocks.insertOne(marker);
    } catch (e) {
      if (!isDuplicateKey(e)) throw e;
      const winner = (await this.committedHashes(channel, [number])).get(number);
      await this.putBack(displaced, winner, hash);
      throw new LedgerAppendError(`block ${number} of channel ${channel} was committed by another writer`);
    }
    this.committedHashCache.set(key, hash);
    this.heads.set(channel, header);
    await this.step('committed', header);

    if ((await this.pending.deleteOne({ _id: `${key}/${hash}` })).deletedCount !== 1) {
      // A recoverer claimed this attempt (presumed dead) and may have deleted its entries: write them again.
      await this.stage(block, index, tag, body);
    }
  }

  /** Steps 2 and 3 of the append protocol; idempotent. */
  private async stage(block: Block, index: BlockIndex, tag: Tag, body: EnvelopesDoc): Promise<Displaced> {
    const { channel, block: number, hash } = tag;
    const key = blockKey(channel, number);
    await this.insertMissing(this.envelopes, [body]);
    await this.insertMissing(
      this.configs,
      index.configChanges.map((change, position) => ({ _id: `${key}/${hash}/${pad(position)}`, ...tag, position, change })),
    );
    const digests = new Map<string, DigestDoc>();
    for (const d of index.digests) {
      const _id = `${channel}/${d.digest}`;
      // Within a block too, the first occurrence is the location.
      if (!digests.has(_id)) digests.set(_id, { _id, ...tag, envelopeIndex: d.envelopeIndex, entryIndex: d.entryIndex, creator: d.creator, kind: d.kind });
    }
    const patients = new Map<string, PatientDoc>();
    for (const { token, hospital } of index.patients) {
      const _id = `${channel}/${token}/${hospital}`;
      if (!patients.has(_id)) patients.set(_id, { _id, ...tag, token, hospital });
    }
    const nonces = new Map<string, NonceDoc>();
    for (const { creator, nonce } of index.nonces) {
      const _id = `${channel}/${creator}/${nonce}`;
      nonces.set(_id, { _id, ...tag });
    }
    return {
      digests: await this.settle(this.digests, [...digests.values()], tag),
      patients: await this.settle(this.patients, [...patients.values()], tag),
      nonces: await this.settle(this.nonces, [...nonces.values()], tag),
    };
  }

  /** After losing the commit point: entries this writer displaced that belong to the winner go back. */
  private async putBack(displaced: Displaced, winner: string | undefined, mine: string): Promise<void> {
    if (winner === undefined || winner === mine) return;
    const pairs: Array<[Collection<EntryDoc>, EntryDoc[]]> = [
      [this.digests as unknown as Collection<EntryDoc>, displaced.digests],
      [this.patients as unknown as Collection<EntryDoc>, displaced.patients],
      [this.nonces as unknown as Collection<EntryDoc>, displaced.nonces],
    ];
    for (const [collection, docs] of pairs) {
      const back = docs.filter((d) => d.hash === winner);
      if (back.length === 0) continue;
      await this.deleteIfTagged(collection, back.map((d) => d._id), mine);
      await this.insertMissing(collection, back);
    }
  }

  // ------------------------------------------------------------------------------------------- reads

  async block(channel: string, blockNumber: number): Promise<Block | undefined> {
    if (!Number.isSafeInteger(blockNumber) || blockNumber < 0) return undefined;
    const marker = await this.blocks.findOne({ _id: blockKey(channel, blockNumber) });
    if (!marker) return undefined;
    const body = await this.envelopes.findOne({ _id: `${marker._id}/${marker.hash}` });
    if (!body) throw new Error(`block ${blockNumber} of channel ${channel} is committed but its envelopes are missing`);
    return {
      header: marker.header,
      envelopes: body.envelopes.map((b) => new Uint8Array(b.buffer.subarray(0, b.length()))),
      validity: marker.validity,
    };
  }

  async headers(channel: string, from: number, to: number): Promise<BlockHeader[]> {
    const lo = Math.max(0, Math.ceil(from));
    const hi = Math.min(Number.MAX_SAFE_INTEGER, Math.floor(to));
    if (!(hi >= lo)) return [];
    const docs = await this.blocks
      .find({ _id: { $gte: blockKey(channel, lo), $lte: blockKey(channel, hi) } }, { projection: { number: 1, header: 1 } })
      .sort({ _id: 1 })
      .toArray();
    return docs.sort((a, b) => a.number - b.number).map((d) => d.header);
  }

  async locate(channel: string, digests: string[]): Promise<Map<string, DigestLocation>> {
    const docs = await this.visible(channel, await this.findByIds(this.digests, digests.map((d) => `${channel}/${d}`)));
    const found = new Map<string, DigestLocation>();
    for (const d of docs) {
      found.set(d._id.slice(channel.length + 1), {
        blockNumber: d.block,
        envelopeIndex: d.envelopeIndex,
        entryIndex: d.entryIndex,
        creator: d.creator,
        kind: d.kind,
      });
    }
    return found;
  }

  async hospitalsForPatient(channel: string, token: string): Promise<string[]> {
    const docs = await this.patients.find({ _id: under(`${channel}/${token}`) }).toArray();
    const hospitals = (await this.visible(channel, docs.filter((d) => d.token === token))).map((d) => d.hospital);
    return [...new Set(hospitals)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  async committedNonces(channel: string, pairs: Array<{ creator: string; nonce: string }>): Promise<Set<string>> {
    const ids = pairs.map(({ creator, nonce }) => `${channel}/${creator}/${nonce}`);
    const committed = new Set((await this.visible(channel, await this.findByIds(this.nonces, ids))).map((d) => d._id));
    const result = new Set<string>();
    pairs.forEach(({ creator, nonce }, i) => committed.has(ids[i]) && result.add(`${creator} ${nonce}`));
    return result;
  }

  async configChanges(channel: string): Promise<Array<{ blockNumber: number; change: ConfigChange }>> {
    const docs = await this.visible(channel, await this.configs.find({ _id: under(channel) }).toArray());
    return docs.sort(byBlockThen((d) => d.position)).map((d) => ({ blockNumber: d.block, change: d.change }));
  }

  // ------------------------------------------------------------------------------ attestations, checkpoints

  async saveAttestations(attestations: Attestation[]): Promise<void> {
    const docs = attestations.map((a) => ({
      _id: `${blockKey(a.channel, a.blockNumber)}/${a.member}`,
      channel: a.channel,
      block: a.blockNumber,
      member: a.member,
      attestation: a,
    }));
    await this.insertMissing(this.attestationDocs, docs); // a duplicate: the first one stays
  }

  async attestations(channel: string, from: number, to: number): Promise<Attestation[]> {
    const lo = Math.max(0, Math.ceil(from));
    const hi = Math.min(Number.MAX_SAFE_INTEGER, Math.floor(to));
    if (!(hi >= lo)) return [];
    const docs = await this.attestationDocs
      .find({ _id: { $gte: `${blockKey(channel, lo)}/`, $lt: `${blockKey(channel, hi)}0` } })
      .toArray();
    return docs
      .filter((d) => d.channel === channel)
      .sort(byBlockThen((d) => d.member))
      .map((d) => d.attestation);
  }

  async saveCheckpoint(channel: string, checkpoint: Checkpoint): Promise<void> {
    const block = checkpoint.header.number;
    const _id = blockKey(channel, block);
    await this.insertMissing(this.checkpoints, [{ _id, channel, block, checkpoint }]);
    // Only the highest is read; lower ones are garbage (deleting them is safe whatever runs concurrently).
    await this.checkpoints.deleteMany({ _id: { $gte: `${channel}/`, $lt: _id } });
  }

  async checkpoint(channel: string): Promise<Checkpoint | undefined> {
    const [last] = await this.checkpoints.find({ _id: under(channel) }).sort({ _id: -1 }).limit(1).toArray();
    return last?.checkpoint;
  }
}

interface Displaced {
  digests: DigestDoc[];
  patients: PatientDoc[];
  nonces: NonceDoc[];
}
