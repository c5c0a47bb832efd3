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
 *   ledger_link_sets   `{_id: 'ch/creator/patient/B', creator, patient, links, block, hash}`: the link set block B left
 *                      for (creator, patient locator); the highest visible B is the current set.
 *   ledger_links       `{_id: 'ch/token/creator/patient/B', …}`: one per token of each link set, to find sets by token.
 *   ledger_resource_heads  `{_id: 'ch/creator/resource/B', creator, resource, digest, block, hash}`: the highest
 *                      visible B gives the resource locator's current head.
 *   ledger_erasures    `{_id: 'ch/creator/patient', block, hash}`: erased patient locators (the first record stays).
 *   ledger_pending     `{_id: 'ch/B/hash', block, hash, createdAt (server clock)}`: an append in progress.
 *   ledger_attestations  `{_id: 'ch/B/member', block, member, attestation}`: a unique insert, the first stays.
 *   ledger_format      `{_id: 'format', version}`: LEDGER_FORMAT; a database with ledger blocks and another
 *                      format (or none: format 1, before the federation indexes) is refused at init().
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
 * The append protocol, first locations and recovery are in mongo-ledger-append.ts; the documents and the
 * lookups by `_id` in mongo-ledger-tables.ts.
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
import { MongoClient } from 'mongodb';
import type { Db, MongoClientOptions } from 'mongodb';
import { isDuplicateKey, isFerretDb } from './driver.ts';
import { appendBlock, recoverAppends, type AppendStep } from './mongo-ledger-append.ts';
import { blockKey, LedgerTables, under, type DigestDoc } from './mongo-ledger-tables.ts';
import type { Attestation, Checkpoint } from '../../ledger/attestation.ts';
import type { Block, BlockHeader } from '../../ledger/block.ts';
import type { ConfigChange } from '../../ledger/envelope.ts';
import type { AnchorFacts, BlockIndex, DigestLocation, LedgerStore, LinkHolder } from '../../ledger/ledger-store.ts';

export type { AppendStep } from './mongo-ledger-append.ts';

/** Bumped when what the ledger collections hold changes incompatibly. 2: the federation indexes (link sets, resource heads, erasures). */
export const LEDGER_FORMAT = 2;

/**
 * Refuses a database whose ledger was written in another format, as the SQLite ledger refuses another schema: a
 * ledger store is a replica, so the remedy is to drop it and let the member rebuild it from the orderer.
 */
async function checkLedgerFormat(t: LedgerTables): Promise<void> {
  let marker = await t.format.findOne({ _id: 'format' });
  if (!marker && !(await t.blocks.findOne({}, { projection: { _id: 1 } }))) {
    try {
      await t.format.insertOne({ _id: 'format', version: LEDGER_FORMAT });
    } catch (e) {
      if (!isDuplicateKey(e)) throw e;
    }
    marker = await t.format.findOne({ _id: 'format' });
  }
  const found = marker?.version ?? 1;
  if (found !== LEDGER_FORMAT) {
    throw new Error(
      `database ${t.db.databaseName} holds a ledger of format ${found}, this gateway uses format ${LEDGER_FORMAT}: ` +
        'drop its ledger_* collections and restart, and the member rebuilds its ledger from the orderer',
    );
  }
}

export interface MongoLedgerStoreOptions {
  /** An append in progress longer than this is presumed dead and init() removes its entries. Default 60 s. */
  staleAfterMs?: number;
  /** Test hook, awaited at each step of appendBlock(); throwing from it simulates a crash there. */
  onAppendStep?: (step: AppendStep, header: BlockHeader) => void | Promise<void>;
  /** Passed to MongoClient. */
  clientOptions?: MongoClientOptions;
}

const compare = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

function location(d: DigestDoc): DigestLocation {
  return { blockNumber: d.block, envelopeIndex: d.envelopeIndex, entryIndex: d.entryIndex, creator: d.creator, kind: d.kind };
}

/** Of versioned documents (one per key and block), the one of the highest block for each key. */
function latestPerKey<T extends { block: number }>(docs: T[], key: (doc: T) => string): Map<string, T> {
  const latest = new Map<string, T>();
  for (const doc of docs) {
    const seen = latest.get(key(doc));
    if (seen === undefined || doc.block > seen.block) latest.set(key(doc), doc);
  }
  return latest;
}

/** Block number order, then `key` (compared by code unit, like SQLite's BINARY collation). */
function byBlockThen<T extends { block: number }>(key: (item: T) => number | string): (a: T, b: T) => number {
  return (a, b) => a.block - b.block || (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0);
}

export class MongoLedgerStore implements LedgerStore {
  private readonly client: MongoClient;
  private readonly db: Db;
  private readonly tables: LedgerTables;
  private readonly staleAfterMs: number;
  private readonly onAppendStep?: MongoLedgerStoreOptions['onAppendStep'];

  constructor(uri: string, database: string, options: MongoLedgerStoreOptions = {}) {
    this.client = new MongoClient(uri, options.clientOptions);
    this.db = this.client.db(database, { writeConcern: { w: 'majority', journal: true }, ignoreUndefined: true });
    this.tables = new LedgerTables(this.db);
    this.staleAfterMs = options.staleAfterMs ?? 60_000;
    this.onAppendStep = options.onAppendStep;
  }

  async init(): Promise<void> {
    await this.client.connect();
    this.tables.ferretdb = await isFerretDb(this.db);
    try {
      await checkLedgerFormat(this.tables);
    } catch (e) {
      await this.client.close();
      throw e;
    }
    // FerretDB evaluates every index on every write but answers no query from one.
    if (!this.tables.ferretdb) {
      await Promise.all(this.tables.entryCollections.map((c) => c.createIndex({ hash: 1 }, { name: 'by_hash' })));
    }
    await this.recover();
  }

  async close(): Promise<void> {
    await this.client.close();
  }

  /** Cleans up after crashed appends (mongo-ledger-append.ts, "Recovery"). */
  async recover(): Promise<void> {
    await recoverAppends(this.tables, this.staleAfterMs);
  }

  async head(channel: string): Promise<BlockHeader | undefined> {
    return this.tables.head(channel);
  }

  async appendBlock(block: Block, index: BlockIndex): Promise<void> {
    await appendBlock(this.tables, block, index, async (step, header) => {
      if (this.onAppendStep) await this.onAppendStep(step, header);
    });
  }

  // ------------------------------------------------------------------------------------------- reads

  async block(channel: string, blockNumber: number): Promise<Block | undefined> {
    if (!Number.isSafeInteger(blockNumber) || blockNumber < 0) return undefined;
    const marker = await this.tables.blocks.findOne({ _id: blockKey(channel, blockNumber) });
    if (!marker) return undefined;
    const body = await this.tables.envelopes.findOne({ _id: `${marker._id}/${marker.hash}` });
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
    const docs = await this.tables.blocks
      .find({ _id: { $gte: blockKey(channel, lo), $lte: blockKey(channel, hi) } }, { projection: { number: 1, header: 1 } })
      .sort({ _id: 1 })
      .toArray();
    return docs.sort((a, b) => a.number - b.number).map((d) => d.header);
  }

  async locate(channel: string, digests: string[]): Promise<Map<string, DigestLocation>> {
    const found = new Map<string, DigestLocation>();
    for (const d of await this.digestDocs(channel, digests)) found.set(d._id.slice(channel.length + 1), location(d));
    return found;
  }

  private async digestDocs(channel: string, digests: string[]): Promise<DigestDoc[]> {
    return this.tables.visible(channel, await this.tables.findByIds(this.tables.digests, digests.map((d) => `${channel}/${d}`)));
  }

  async holdersOfLink(channel: string, linkToken: string): Promise<LinkHolder[]> {
    const t = this.tables;
    const rows = (await t.visible(channel, await t.links.find({ _id: under(`${channel}/${linkToken}`) }).toArray())).filter((d) => d.token === linkToken);
    if (rows.length === 0) return [];
    // A row only says the token was in some set once: the pair holds it iff its CURRENT (highest visible) set lists it.
    const current = latestPerKey(await t.visibleUnder(channel, t.linkSets, rows.map((r) => `${channel}/${r.creator}/${r.patient}`)), (d) => `${d.creator}/${d.patient}`);
    return [...current.values()]
      .filter((set) => set.links.includes(linkToken))
      .map((set) => ({ hospital: set.creator, locator: set.patient }))
      .sort((a, b) => compare(a.hospital, b.hospital) || compare(a.locator, b.locator));
  }

  async anchorFacts(channel: string, digests: string[]): Promise<Map<string, AnchorFacts>> {
    const t = this.tables;
    const docs = await this.digestDocs(channel, digests);
    const withResource = docs.filter((d) => d.resource !== undefined);
    const heads = latestPerKey(await t.visibleUnder(channel, t.resourceHeads, withResource.map((d) => `${channel}/${d.creator}/${d.resource}`)), (h) => `${h.creator}/${h.resource}`);
    const withPatient = docs.filter((d) => d.patient !== undefined);
    const erased = new Set(
      (await t.visible(channel, await t.findByIds(t.erasures, withPatient.map((d) => `${channel}/${d.creator}/${d.patient}`)))).map((e) => `${e.creator}/${e.patient}`),
    );
    const facts = new Map<string, AnchorFacts>();
    for (const d of docs) {
      const digest = d._id.slice(channel.length + 1);
      const head = d.resource === undefined ? undefined : heads.get(`${d.creator}/${d.resource}`);
      facts.set(digest, {
        ...location(d),
        ...(d.patient !== undefined && { patient: d.patient }),
        ...(d.resource !== undefined && { resource: d.resource }),
        superseded: head !== undefined && head.digest !== digest,
        erased: d.patient !== undefined && erased.has(`${d.creator}/${d.patient}`),
      });
    }
    return facts;
  }

  async hospitalsForPatient(channel: string, token: string): Promise<string[]> {
    const docs = await this.tables.patients.find({ _id: under(`${channel}/${token}`) }).toArray();
    const hospitals = (await this.tables.visible(channel, docs.filter((d) => d.token === token))).map((d) => d.hospital);
    return [...new Set(hospitals)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  async committedNonces(channel: string, pairs: Array<{ creator: string; nonce: string }>): Promise<Set<string>> {
    const ids = pairs.map(({ creator, nonce }) => `${channel}/${creator}/${nonce}`);
    const committed = new Set((await this.tables.visible(channel, await this.tables.findByIds(this.tables.nonces, ids))).map((d) => d._id));
    const result = new Set<string>();
    pairs.forEach(({ creator, nonce }, i) => committed.has(ids[i]) && result.add(`${creator} ${nonce}`));
    return result;
  }

  async configChanges(channel: string): Promise<Array<{ blockNumber: number; change: ConfigChange }>> {
    const docs = await this.tables.visible(channel, await this.tables.configs.find({ _id: under(channel) }).toArray());
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
    await this.tables.insertMissing(this.tables.attestations, docs); // a duplicate: the first one stays
  }

  async attestations(channel: string, from: number, to: number): Promise<Attestation[]> {
    const lo = Math.max(0, Math.ceil(from));
    const hi = Math.min(Number.MAX_SAFE_INTEGER, Math.floor(to));
    if (!(hi >= lo)) return [];
    const docs = await this.tables.attestations
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
    await this.tables.insertMissing(this.tables.checkpoints, [{ _id, channel, block, checkpoint }]);
    // Only the highest is read; lower ones are garbage (deleting them is safe whatever runs concurrently).
    await this.tables.checkpoints.deleteMany({ _id: { $gte: `${channel}/`, $lt: _id } });
  }

  async checkpoint(channel: string): Promise<Checkpoint | undefined> {
    const [last] = await this.tables.checkpoints.find({ _id: under(channel) }).sort({ _id: -1 }).limit(1).toArray();
    return last?.checkpoint;
  }
}
