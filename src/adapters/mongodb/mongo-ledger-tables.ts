/**
 * The documents and collections of the MongoDB ledger (mongo-ledger-store.ts describes them), and the
 * lookups that both the append protocol (mongo-ledger-append.ts) and the reads use: documents by `_id`,
 * the head and which blocks are committed with which hash (cached: committed markers are immutable), which
 * entries are visible, and inserts and deletes that tolerate what is already there.
 */
import { MongoBulkWriteError } from 'mongodb';
import type { Binary, Collection, Db, Filter, OptionalUnlessRequiredId } from 'mongodb';
import { isDuplicateKey, writeErrorsOf } from './driver.ts';
import type { Attestation, Checkpoint } from '../../ledger/attestation.ts';
import type { BlockHeader, EnvelopeValidity } from '../../ledger/block.ts';
import type { ConfigChange } from '../../ledger/envelope.ts';
import { chunks } from '../chunks.ts';

/** What every index entry carries: the block it belongs to and that block's header hash. */
export interface Tag {
  channel: string;
  block: number;
  hash: string;
}

export interface BlockDoc {
  _id: string;
  channel: string;
  number: number;
  hash: string;
  header: BlockHeader;
  validity: EnvelopeValidity[];
}

export interface EnvelopesDoc extends Tag {
  _id: string;
  envelopes: Binary[];
}

export interface DigestDoc extends Tag {
  _id: string;
  envelopeIndex: number;
  entryIndex: number;
  creator: string;
  kind: 'anchor' | 'audit';
  patient?: string;
  resource?: string;
}

/** A link set as block `block` left it for (creator, patient): the latest committed one is current. */
export interface LinkSetDoc extends Tag {
  _id: string;
  creator: string;
  patient: string;
  links: string[];
}

/** One token of a link set, so that the sets naming a token are found by `_id` prefix. */
export interface LinkDoc extends Tag {
  _id: string;
  token: string;
  creator: string;
  patient: string;
}

/** The head of (creator, resource) as block `block` left it: the latest committed one is current. */
export interface ResourceHeadDoc extends Tag {
  _id: string;
  creator: string;
  resource: string;
  digest: string;
}

export interface ErasureDoc extends Tag {
  _id: string;
  creator: string;
  patient: string;
}

/** `{_id: 'format', version}`: what this database's ledger collections were written as. */
export interface FormatDoc {
  _id: 'format';
  version: number;
}

export interface PatientDoc extends Tag {
  _id: string;
  token: string;
  hospital: string;
}

export interface NonceDoc extends Tag {
  _id: string;
}

export interface ConfigChangeDoc extends Tag {
  _id: string;
  position: number;
  change: ConfigChange;
}

export interface PendingDoc extends Tag {
  _id: string;
  createdAt: Date;
}

export interface AttestationDoc {
  _id: string;
  channel: string;
  block: number;
  member: string;
  attestation: Attestation;
}

export interface CheckpointDoc {
  _id: string;
  channel: string;
  block: number;
  checkpoint: Checkpoint;
}

export type EntryDoc = Tag & { _id: string };

/** On FerretDB, lookups of at most this many `_id`s are exact queries, one by one (see mongo-ledger-store.ts). */
const FERRETDB_EXACT_LOOKUPS = 16;
/** `_id`s per `$in` query. */
const LOOKUP_CHUNK = 5000;
/** `_id` ranges per `$or` query. */
const RANGE_CHUNK = 1000;
/** Committed block hashes kept in memory (they never change); the cache is emptied when it grows past this. */
const HASH_CACHE_LIMIT = 100_000;

export const pad = (n: number): string => n.toString().padStart(16, '0');
export const blockKey = (channel: string, n: number): string => `${channel}/${pad(n)}`;
/** Bounds of the `_id`s that start with `prefix/`: '0' follows '/' in every collation by code point. */
export const under = (prefix: string) => ({ $gte: `${prefix}/`, $lt: `${prefix}0` });

export class LedgerTables {
  readonly blocks: Collection<BlockDoc>;
  readonly envelopes: Collection<EnvelopesDoc>;
  readonly digests: Collection<DigestDoc>;
  readonly patients: Collection<PatientDoc>;
  readonly nonces: Collection<NonceDoc>;
  readonly configs: Collection<ConfigChangeDoc>;
  readonly pending: Collection<PendingDoc>;
  readonly attestations: Collection<AttestationDoc>;
  readonly checkpoints: Collection<CheckpointDoc>;
  readonly linkSets: Collection<LinkSetDoc>;
  readonly links: Collection<LinkDoc>;
  readonly resourceHeads: Collection<ResourceHeadDoc>;
  readonly erasures: Collection<ErasureDoc>;
  readonly format: Collection<FormatDoc>;
  /** Until init() knows better, behave as on FerretDB (exact lookups for a few ids are right on both). */
  ferretdb = true;
  /** The highest committed header seen per channel: head() walks forward from it by exact `_id`. */
  private readonly heads = new Map<string, BlockHeader>();
  /** `ch/B` → header hash of committed blocks. */
  private readonly committedHashCache = new Map<string, string>();

  constructor(readonly db: Db) {
    this.blocks = db.collection<BlockDoc>('ledger_blocks');
    this.envelopes = db.collection<EnvelopesDoc>('ledger_envelopes');
    this.digests = db.collection<DigestDoc>('ledger_digests');
    this.patients = db.collection<PatientDoc>('ledger_patients');
    this.nonces = db.collection<NonceDoc>('ledger_nonces');
    this.configs = db.collection<ConfigChangeDoc>('ledger_config_changes');
    this.pending = db.collection<PendingDoc>('ledger_pending');
    this.attestations = db.collection<AttestationDoc>('ledger_attestations');
    this.checkpoints = db.collection<CheckpointDoc>('ledger_checkpoints');
    this.linkSets = db.collection<LinkSetDoc>('ledger_link_sets');
    this.links = db.collection<LinkDoc>('ledger_links');
    this.resourceHeads = db.collection<ResourceHeadDoc>('ledger_resource_heads');
    this.erasures = db.collection<ErasureDoc>('ledger_erasures');
    this.format = db.collection<FormatDoc>('ledger_format');
  }

  /** The collections whose documents are tagged with a block and its hash. */
  get entryCollections(): Array<Collection<EntryDoc>> {
    return [
      this.digests, this.patients, this.nonces, this.configs, this.envelopes, this.linkSets, this.links, this.resourceHeads, this.erasures,
    ] as unknown as Array<Collection<EntryDoc>>;
  }

  /**
   * The visible documents whose `_id` starts with one of `prefixes` + '/': one query per chunk (an `$or` of `_id`
   * ranges: the `_id` index on MongoDB, one decode of the collection on FerretDB).
   */
  async visibleUnder<T extends EntryDoc>(channel: string, collection: Collection<T>, prefixes: string[]): Promise<T[]> {
    const unique = [...new Set(prefixes)];
    const found: T[] = [];
    for (const chunk of chunks(unique, RANGE_CHUNK)) {
      found.push(...((await collection.find({ $or: chunk.map((prefix) => ({ _id: under(prefix) })) } as Filter<T>).toArray()) as T[]));
    }
    return this.visible(channel, found);
  }

  /** Documents with these `_id`s (see mongo-ledger-store.ts for why FerretDB gets exact queries for a few). */
  async findByIds<T extends { _id: string }>(collection: Collection<T>, ids: string[]): Promise<T[]> {
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
  async committedHashes(channel: string, numbers: number[]): Promise<Map<number, string>> {
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

  /** Remembers a block this store just committed: the new head of its channel, and its hash. */
  noteCommitted(header: BlockHeader, hash: string): void {
    this.committedHashCache.set(blockKey(header.channel, header.number), hash);
    this.heads.set(header.channel, header);
  }

  /** The entries whose block is committed with their hash. */
  async visible<T extends EntryDoc>(channel: string, docs: T[]): Promise<T[]> {
    if (docs.length === 0) return [];
    const committed = await this.committedHashes(channel, docs.map((d) => d.block));
    return docs.filter((d) => d.channel === channel && committed.get(d.block) === d.hash);
  }

  /** Inserts the documents; returns those whose `_id` was taken. */
  async insertMissing<T extends { _id: string }>(collection: Collection<T>, docs: T[]): Promise<T[]> {
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

  async deleteIfTagged(collection: Collection<EntryDoc>, ids: string[], hash: string): Promise<void> {
    if (ids.length === 0) return;
    if (this.ferretdb && ids.length <= FERRETDB_EXACT_LOOKUPS) {
      for (const _id of ids) await collection.deleteOne({ _id, hash });
      return;
    }
    for (const chunk of chunks(ids, LOOKUP_CHUNK)) await collection.deleteMany({ _id: { $in: chunk }, hash });
  }
}
