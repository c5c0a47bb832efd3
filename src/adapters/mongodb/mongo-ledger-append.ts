/**
 * Appending a block to the MongoDB ledger, and recovering appends that crashed (the collections and the
 * tags that make entries visible are described in mongo-ledger-store.ts).
 *
 * Append protocol (appendBlock of block N with header hash H; N must be head + 1):
 *   1. Upsert the pending document 'ch/N/H' (server-clock createdAt), so recovery can find the attempt.
 *   2. Insert the envelopes and the config changes (their `_id`s contain H: a duplicate is the same content).
 *   3. Insert the digest, patient, nonce, link-set, link, resource-head and erasure entries (`insertMany`,
 *      unordered) and settle the duplicates, below.
 *   4. COMMIT POINT: insert the marker `{_id: 'ch/N'}`. Of two writers of block N exactly one succeeds; the
 *      other gets LedgerAppendError (and restores what it displaced, below).
 *   5. Delete the pending document. If it was already gone, a recoverer claimed the attempt (it took longer
 *      than staleAfterMs) and may have deleted entries; steps 2-3 are idempotent and run again.
 * A crash anywhere before step 4 leaves entries that no reader shows (their block has no marker), and a
 * crash after it leaves at most the pending document, which init() deletes.
 *
 * Replaced values (link sets, resource heads) are never updated either: each block that changes one inserts a
 * version whose `_id` ends with the block number, and readers take the highest VISIBLE version, so a version
 * of a block above the head (a crashed or lost attempt) is ignored like any other entry.
 *
 * First location and orphans (step 3). The `_id` of a digest (patient pair, nonce, erasure) is the same in every
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
 */
import { BSON, Binary } from 'mongodb';
import type { Collection } from 'mongodb';
import { isDuplicateKey, serverNow } from './driver.ts';
import {
  blockKey,
  pad,
  type BlockDoc,
  type DigestDoc,
  type EntryDoc,
  type EnvelopesDoc,
  type ErasureDoc,
  type LedgerTables,
  type LinkDoc,
  type LinkSetDoc,
  type NonceDoc,
  type PatientDoc,
  type ResourceHeadDoc,
  type Tag,
} from './mongo-ledger-tables.ts';
import { blockHeaderHash, type Block, type BlockHeader } from '../../ledger/block.ts';
import { LedgerAppendError, type BlockIndex } from '../../ledger/ledger-store.ts';

/** Points inside appendBlock() where the test hook runs. */
export type AppendStep =
  | 'pending' // pending document written
  | 'staged' // envelopes and index entries written, marker not yet
  | 'committed'; // marker inserted

/** Runs the test hook at a step of appendBlock(); throwing from it simulates a crash there. */
export type AppendStepHook = (step: AppendStep, header: BlockHeader) => Promise<void>;

/** BSON's document limit (the server's maxBsonObjectSize). */
const MAX_DOCUMENT_BYTES = 16 * 1024 * 1024;
/** Rounds of settling duplicates before appendBlock gives up (each round needs a concurrent writer to fail). */
const SETTLE_ROUNDS = 5;

/** Entries of other uncommitted attempts that settle() deleted to make room, per collection. */
type Displaced = Array<[Collection<EntryDoc>, EntryDoc[]]>;

export async function appendBlock(t: LedgerTables, block: Block, index: BlockIndex, step: AppendStepHook): Promise<void> {
  const { header } = block;
  const { channel, number } = header;
  const head = await t.head(channel);
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
    await t.pending.updateOne({ _id: `${key}/${hash}` }, attempt, { upsert: true });
  } catch (e) {
    // Two upserts of one new `_id` race (a second gateway appending the same block): the other inserted it.
    if (!isDuplicateKey(e)) throw e;
    await t.pending.updateOne({ _id: `${key}/${hash}` }, attempt, { upsert: true });
  }
  await step('pending', header);
  const displaced = await stage(t, block, index, tag, body);
  await step('staged', header);

  try {
    await t.blocks.insertOne(marker);
  } catch (e) {
    if (!isDuplicateKey(e)) throw e;
    const winner = (await t.committedHashes(channel, [number])).get(number);
    await putBack(t, displaced, winner, hash);
    throw new LedgerAppendError(`block ${number} of channel ${channel} was committed by another writer`);
  }
  t.noteCommitted(header, hash);
  await step('committed', header);

  if ((await t.pending.deleteOne({ _id: `${key}/${hash}` })).deletedCount !== 1) {
    // A recoverer claimed this attempt (presumed dead) and may have deleted its entries: write them again.
    await stage(t, block, index, tag, body);
  }
}

/** Steps 2 and 3 of the append protocol; idempotent. */
async function stage(t: LedgerTables, block: Block, index: BlockIndex, tag: Tag, body: EnvelopesDoc): Promise<Displaced> {
  const { channel, block: number, hash } = tag;
  const key = blockKey(channel, number);
  await t.insertMissing(t.envelopes, [body]);
  await t.insertMissing(
    t.configs,
    index.configChanges.map((change, position) => ({ _id: `${key}/${hash}/${pad(position)}`, ...tag, position, change })),
  );
  const digests = new Map<string, DigestDoc>();
  for (const d of index.digests) {
    const _id = `${channel}/${d.digest}`;
    // Within a block too, the first occurrence is the location.
    if (!digests.has(_id)) {
      const tokens = { ...(d.patient !== undefined && { patient: d.patient }), ...(d.resource !== undefined && { resource: d.resource }) };
      digests.set(_id, { _id, ...tag, envelopeIndex: d.envelopeIndex, entryIndex: d.entryIndex, creator: d.creator, kind: d.kind, ...tokens });
    }
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
  // Versions of replaced values: `_id`s end with the block number (blockIndex gives one per key and block).
  const version = pad(number);
  const linkSets: LinkSetDoc[] = index.linkSets.map(({ creator, patient, links }) => ({ _id: `${channel}/${creator}/${patient}/${version}`, ...tag, creator, patient, links }));
  const links: LinkDoc[] = index.linkSets.flatMap(({ creator, patient, links }) =>
    links.map((token) => ({ _id: `${channel}/${token}/${creator}/${patient}/${version}`, ...tag, token, creator, patient })),
  );
  const heads: ResourceHeadDoc[] = index.resourceHeads.map(({ creator, resource, digest }) => ({ _id: `${channel}/${creator}/${resource}/${version}`, ...tag, creator, resource, digest }));
  const erasures: ErasureDoc[] = index.erasures.map(({ creator, patient }) => ({ _id: `${channel}/${creator}/${patient}`, ...tag, creator, patient }));
  const pairs: Array<[Collection<EntryDoc>, EntryDoc[]]> = [
    [t.digests, [...digests.values()]],
    [t.patients, [...patients.values()]],
    [t.nonces, [...nonces.values()]],
    [t.linkSets, linkSets],
    [t.links, links],
    [t.resourceHeads, heads],
    [t.erasures, erasures],
  ] as unknown as Array<[Collection<EntryDoc>, EntryDoc[]]>;
  const displaced: Displaced = [];
  for (const [collection, docs] of pairs) displaced.push([collection, await settle(t, collection, docs, tag)]);
  return displaced;
}

/** After losing the commit point: entries this writer displaced that belong to the winner go back. */
async function putBack(t: LedgerTables, displaced: Displaced, winner: string | undefined, mine: string): Promise<void> {
  if (winner === undefined || winner === mine) return;
  for (const [collection, docs] of displaced) {
    const back = docs.filter((d) => d.hash === winner);
    if (back.length === 0) continue;
    await t.deleteIfTagged(collection, back.map((d) => d._id), mine);
    await t.insertMissing(collection, back);
  }
}

/**
 * Writes entries of block `tag` (first location: see above). Returns the entries of OTHER uncommitted
 * attempts that it deleted to make room, so a loser at the commit point can put back the winner's.
 */
async function settle<T extends EntryDoc>(t: LedgerTables, collection: Collection<T>, docs: T[], tag: Tag): Promise<T[]> {
  const displaced: T[] = [];
  const entries = collection as unknown as Collection<EntryDoc>;
  let toInsert = docs;
  for (let round = 0; ; round++) {
    const taken = await t.insertMissing(collection, toInsert);
    if (taken.length === 0) return displaced;
    if (round === SETTLE_ROUNDS) {
      throw new Error(`${collection.collectionName}: ${taken.length} entries of block ${tag.block} of ${tag.channel} kept being taken by other writers`);
    }
    const existing = new Map((await t.findByIds(collection, taken.map((d) => d._id))).map((e) => [e._id, e]));
    const foreign = [...existing.values()].filter((e) => e.hash !== tag.hash);
    const committed = await t.committedHashes(tag.channel, foreign.map((e) => e.block));
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
    for (const [hash, ids] of replace) await t.deleteIfTagged(entries, ids, hash);
  }
}

/**
 * Deletes the pending documents of committed appends, and the entries of appends pending longer than
 * `staleAfterMs` whose block has no marker with their hash (a crash between the entries and the marker).
 */
export async function recoverAppends(t: LedgerTables, staleAfterMs: number): Promise<void> {
  const staleBefore = new Date((await serverNow(t.db)) - staleAfterMs);
  for (const p of await t.pending.find({}).toArray()) {
    const committed = (await t.committedHashes(p.channel, [p.block])).get(p.block);
    if (committed === p.hash) {
      await t.pending.deleteOne({ _id: p._id });
      continue;
    }
    if (p.createdAt >= staleBefore) continue; // maybe an append in progress in another gateway
    // Claim it, unless its writer (or an identical retry) refreshed createdAt since we read it.
    if ((await t.pending.deleteOne({ _id: p._id, createdAt: p.createdAt })).deletedCount !== 1) continue;
    for (const c of t.entryCollections) await c.deleteMany({ hash: p.hash });
  }
}
