/**
 * Every write to a member's ledger file (block appends, attestations, checkpoints), shared by the writer
 * thread (ledger-writer-thread.ts, the default) and the inline mode of SqliteLedgerStore. Also the file's
 * layout, its connection settings and the key encodings both sides use.
 *
 * Layout (schema 3): a channel name is stored once, in `channels`, and every other table keys on its
 * integer id. A digest is stored as its 32 raw bytes when it is 64 lowercase hex digits (every anchor and
 * audit digest: the envelope validator insists on it), and as the TEXT it was otherwise, so any string still
 * round-trips exactly; a block's digests are inserted in key order, so the B-tree insertions of one block
 * walk its pages once, left to right. Schema 3 adds the federation indexes (docs/federation.md, "On the ledger"):
 * each digest's locator tokens, the current link sets (replaced per creator and patient locator), the head of
 * each resource locator per creator, and erased patient locators.
 */
import Database from 'better-sqlite3';
import { LedgerAppendError } from '../../ledger/ledger-store.ts';

/** Bumped when the layout changes incompatibly; a ledger of another version is refused (rebuild it from the orderer). */
export const LEDGER_SCHEMA_VERSION = 3;

export const LEDGER_SCHEMA = `
CREATE TABLE IF NOT EXISTS channels (
  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS blocks (
  channel INTEGER NOT NULL, number INTEGER NOT NULL, header TEXT NOT NULL, validity TEXT NOT NULL,
  PRIMARY KEY (channel, number)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS block_envelopes (
  channel INTEGER NOT NULL, number INTEGER NOT NULL, position INTEGER NOT NULL, bytes BLOB NOT NULL,
  PRIMARY KEY (channel, number, position)
);
-- digest: 32 raw bytes (a hex SHA-256), or the original TEXT for anything else; kind: 0 anchor, 1 audit;
-- patient, resource: the locator tokens of the entry, when it carried them.
CREATE TABLE IF NOT EXISTS digests (
  channel INTEGER NOT NULL, digest BLOB NOT NULL, block INTEGER NOT NULL, envelope_index INTEGER NOT NULL,
  entry_index INTEGER NOT NULL, creator TEXT NOT NULL, kind INTEGER NOT NULL, patient TEXT, resource TEXT,
  PRIMARY KEY (channel, digest)
) WITHOUT ROWID;
-- The current link set of each (creator, patient locator): one row per token, replaced as a whole.
CREATE TABLE IF NOT EXISTS links (
  channel INTEGER NOT NULL, creator TEXT NOT NULL, patient TEXT NOT NULL, token TEXT NOT NULL,
  PRIMARY KEY (channel, creator, patient, token)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS links_by_token ON links (channel, token);
-- digest: keyed as in digests; the latest entry of the creator that carried the resource locator.
CREATE TABLE IF NOT EXISTS resource_heads (
  channel INTEGER NOT NULL, creator TEXT NOT NULL, resource TEXT NOT NULL, digest BLOB NOT NULL,
  PRIMARY KEY (channel, creator, resource)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS erasures (
  channel INTEGER NOT NULL, creator TEXT NOT NULL, patient TEXT NOT NULL,
  PRIMARY KEY (channel, creator, patient)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS patients (
  channel INTEGER NOT NULL, token TEXT NOT NULL, hospital TEXT NOT NULL,
  PRIMARY KEY (channel, token, hospital)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nonces (
  channel INTEGER NOT NULL, creator TEXT NOT NULL, nonce TEXT NOT NULL,
  PRIMARY KEY (channel, creator, nonce)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS config_changes (
  channel INTEGER NOT NULL, block INTEGER NOT NULL, position INTEGER NOT NULL, change TEXT NOT NULL,
  PRIMARY KEY (channel, block, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attestations (
  channel INTEGER NOT NULL, block INTEGER NOT NULL, member TEXT NOT NULL, attestation TEXT NOT NULL,
  PRIMARY KEY (channel, block, member)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
  channel INTEGER PRIMARY KEY, block INTEGER NOT NULL, checkpoint TEXT NOT NULL
);
`;

/** Page cache of the writing connection, in KiB (negative cache_size): ~64 MiB keeps the digest index's hot pages in memory. */
export const WRITER_CACHE_KIB = 65_536;
/** The reading connection's; another connection's commit invalidates it anyway (WAL), so it matters less. */
export const READER_CACHE_KIB = 16_384;

/** Opens a connection with the ledger's settings: WAL, synchronous=FULL (an acknowledged block survives a power loss). */
export function openLedgerConnection(file: string, cacheKiB: number): Database.Database {
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('busy_timeout = 5000');
  db.pragma(`cache_size = -${cacheKiB}`);
  return db;
}

const HEX_DIGEST = /^[0-9a-f]{64}$/;

/** How a digest is keyed: 32 bytes for a lowercase hex SHA-256, the string itself otherwise (lossless either way). */
export function digestKey(digest: string): Buffer | string {
  return HEX_DIGEST.test(digest) ? Buffer.from(digest, 'hex') : digest;
}

export function digestFromKey(key: Buffer | string): string {
  return typeof key === 'string' ? key : key.toString('hex');
}

export const KINDS = ['anchor', 'audit'] as const;

/**
 * A block append as it crosses to the writer thread: the envelopes concatenated into one transferred
 * buffer, the digest locations as one transferred Int32Array, and the rest already serialised.
 */
export interface AppendRequest {
  channel: string;
  number: number;
  header: string;
  validity: string;
  /** Every envelope's bytes, back to back. */
  envelopes: Uint8Array;
  /** Envelope i is envelopes[ends[i-1] ?? 0, ends[i]). */
  envelopeEnds: Uint32Array;
  digests: string[];
  /** Per digest: envelopeIndex, entryIndex, creator (an index into `creators`), kind (an index into KINDS). */
  locations: Int32Array;
  creators: string[];
  /** Per digest: the patient and resource locator tokens its entry carried, or null. */
  entryPatients: Array<string | null>;
  entryResources: Array<string | null>;
  linkSets: Array<[creator: string, patient: string, links: string[]]>;
  resourceHeads: Array<[creator: string, resource: string, digest: string]>;
  erasures: Array<[creator: string, patient: string]>;
  patients: Array<[token: string, hospital: string]>;
  nonces: Array<[creator: string, nonce: string]>;
  configChanges: string[];
}

export type LedgerWriterRequest =
  | ({ kind: 'append'; id: number } & AppendRequest)
  | { kind: 'attestations'; id: number; rows: Array<[channel: string, block: number, member: string, attestation: string]> }
  | { kind: 'checkpoint'; id: number; channel: string; block: number; checkpoint: string }
  | { kind: 'close' };

export type LedgerWriterReply =
  | { ready: true }
  | { ready: false; message: string }
  | { id: number; error?: { append?: string; name?: string; message?: string; code?: string } };

/** The writing side of the ledger file: one connection, one transaction per call. */
export class LedgerWriter {
  /** Channel ids known to be committed (an id is never reused or renumbered once committed). */
  private readonly channelIds = new Map<string, number>();
  private readonly s;
  private readonly appendTransaction: { immediate: (request: AppendRequest) => number };
  private readonly attestationTransaction: { immediate: (rows: Array<[string, number, string, string]>) => Map<string, number> };
  private readonly checkpointTransaction: { immediate: (channel: string, block: number, checkpoint: string) => number };

  constructor(private readonly db: Database.Database) {
    this.s = {
      channelId: db.prepare('SELECT id FROM channels WHERE name = ?').pluck(),
      insertChannel: db.prepare('INSERT INTO channels (name) VALUES (?)'),
      headNumber: db.prepare('SELECT max(number) FROM blocks WHERE channel = ?').pluck(),
      insertBlock: db.prepare('INSERT INTO blocks (channel, number, header, validity) VALUES (?, ?, ?, ?)'),
      insertEnvelope: db.prepare('INSERT INTO block_envelopes (channel, number, position, bytes) VALUES (?, ?, ?, ?)'),
      insertDigest: db.prepare(
        'INSERT OR IGNORE INTO digests (channel, digest, block, envelope_index, entry_index, creator, kind, patient, resource) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      deleteLinks: db.prepare('DELETE FROM links WHERE channel = ? AND creator = ? AND patient = ?'),
      insertLink: db.prepare('INSERT OR IGNORE INTO links (channel, creator, patient, token) VALUES (?, ?, ?, ?)'),
      setResourceHead: db.prepare(
        'INSERT INTO resource_heads (channel, creator, resource, digest) VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET digest = excluded.digest',
      ),
      insertErasure: db.prepare('INSERT OR IGNORE INTO erasures (channel, creator, patient) VALUES (?, ?, ?)'),
      insertPatient: db.prepare('INSERT OR IGNORE INTO patients (channel, token, hospital) VALUES (?, ?, ?)'),
      insertNonce: db.prepare('INSERT OR IGNORE INTO nonces (channel, creator, nonce) VALUES (?, ?, ?)'),
      insertConfigChange: db.prepare('INSERT INTO config_changes (channel, block, position, change) VALUES (?, ?, ?, ?)'),
      insertAttestation: db.prepare('INSERT OR IGNORE INTO attestations (channel, block, member, attestation) VALUES (?, ?, ?, ?)'),
      saveCheckpoint: db.prepare(
        'INSERT INTO checkpoints (channel, block, checkpoint) VALUES (?, ?, ?) ' +
          'ON CONFLICT (channel) DO UPDATE SET block = excluded.block, checkpoint = excluded.checkpoint WHERE excluded.block > checkpoints.block',
      ),
    };
    // IMMEDIATE: the write lock is taken before the head is read, so two writers on one file (two stores,
    // two processes) serialise on it and the second one sees the first one's block.
    this.appendTransaction = db.transaction((r: AppendRequest) => this.appendInTransaction(r));
    this.attestationTransaction = db.transaction((rows: Array<[string, number, string, string]>) => {
      const ids = new Map<string, number>();
      for (const [channel, block, member, attestation] of rows) {
        let id = ids.get(channel);
        if (id === undefined) ids.set(channel, (id = this.channelIdInTransaction(channel)));
        this.s.insertAttestation.run(id, block, member, attestation);
      }
      return ids;
    });
    this.checkpointTransaction = db.transaction((channel: string, block: number, checkpoint: string) => {
      const id = this.channelIdInTransaction(channel);
      this.s.saveCheckpoint.run(id, block, checkpoint);
      return id;
    });
  }

  /** The channel's id, created if need be; cached by the callers only once their transaction committed. */
  private channelIdInTransaction(channel: string): number {
    const known = this.channelIds.get(channel);
    if (known !== undefined) return known;
    const id = this.s.channelId.get(channel) as number | undefined;
    return id ?? Number(this.s.insertChannel.run(channel).lastInsertRowid);
  }

  /** Commits a block and its index entries, all or nothing; LedgerAppendError when the number does not follow the head. */
  append(request: AppendRequest): void {
    const id = this.appendTransaction.immediate(request);
    this.channelIds.set(request.channel, id);
  }

  private appendInTransaction(r: AppendRequest): number {
    const s = this.s;
    const channel = this.channelIdInTransaction(r.channel);
    const head = s.headNumber.get(channel) as number | null;
    const expected = head === null ? 0 : head + 1;
    if (r.number !== expected) throw new LedgerAppendError(`block ${r.number} of channel ${r.channel} does not follow the head (next is ${expected})`);
    s.insertBlock.run(channel, r.number, r.header, r.validity);
    let start = 0;
    for (let position = 0; position < r.envelopeEnds.length; position++) {
      const end = r.envelopeEnds[position];
      s.insertEnvelope.run(channel, r.number, position, r.envelopes.subarray(start, end));
      start = end;
    }
    // Key order (memcmp for the 32-byte keys, as SQLite compares BLOBs; the rare TEXT keys sort before
    // them, as in SQLite). The sort is stable: of two equal digests in one block the first one still wins.
    const keys = r.digests.map(digestKey);
    const order = Array.from(keys.keys()).sort((a, b) => compareKeys(keys[a], keys[b]));
    const loc = r.locations;
    for (const i of order) {
      s.insertDigest.run(channel, keys[i], r.number, loc[4 * i], loc[4 * i + 1], r.creators[loc[4 * i + 2]], loc[4 * i + 3], r.entryPatients[i], r.entryResources[i]);
    }
    for (const [creator, patient, links] of r.linkSets) {
      s.deleteLinks.run(channel, creator, patient);
      for (const token of links) s.insertLink.run(channel, creator, patient, token);
    }
    for (const [creator, resource, digest] of r.resourceHeads) s.setResourceHead.run(channel, creator, resource, digestKey(digest));
    for (const [creator, patient] of r.erasures) s.insertErasure.run(channel, creator, patient);
    for (const [token, hospital] of r.patients) s.insertPatient.run(channel, token, hospital);
    for (const [creator, nonce] of r.nonces) s.insertNonce.run(channel, creator, nonce);
    r.configChanges.forEach((change, position) => s.insertConfigChange.run(channel, r.number, position, change));
    return channel;
  }

  saveAttestations(rows: Array<[string, number, string, string]>): void {
    if (rows.length === 0) return;
    for (const [channel, id] of this.attestationTransaction.immediate(rows)) this.channelIds.set(channel, id);
  }

  saveCheckpoint(channel: string, block: number, checkpoint: string): void {
    this.channelIds.set(channel, this.checkpointTransaction.immediate(channel, block, checkpoint));
  }
}

function compareKeys(a: Buffer | string, b: Buffer | string): number {
  if (typeof a === 'string' || typeof b === 'string') {
    if (typeof a !== 'string') return 1;
    if (typeof b !== 'string') return -1;
    return a < b ? -1 : a > b ? 1 : 0;
  }
  return Buffer.compare(a, b);
}
