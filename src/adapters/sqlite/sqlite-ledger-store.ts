/**
 * The LedgerStore port on the embedded default: its own SQLite file (`ledger.sqlite` in the data dir), in
 * WAL mode with synchronous=FULL, so a block that appendBlock returned survives a crash or a power loss.
 * A block and its index entries are written in one SQLite transaction, so nothing of a block is ever
 * visible without the rest. Statements run on the calling thread: a block commit is one small transaction
 * and one fsync, off the FHIR request path.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Attestation, Checkpoint } from '../../ledger/attestation.ts';
import type { Block, BlockHeader, EnvelopeValidity } from '../../ledger/block.ts';
import type { ConfigChange } from '../../ledger/envelope.ts';
import { LedgerAppendError, type BlockIndex, type DigestLocation, type LedgerStore } from '../../ledger/ledger-store.ts';

/** Bumped when the layout changes incompatibly; a ledger of another version is refused (rebuild it from the orderer). */
export const LEDGER_SCHEMA_VERSION = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS blocks (
  channel TEXT NOT NULL, number INTEGER NOT NULL, header TEXT NOT NULL, validity TEXT NOT NULL,
  PRIMARY KEY (channel, number)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS block_envelopes (
  channel TEXT NOT NULL, number INTEGER NOT NULL, position INTEGER NOT NULL, bytes BLOB NOT NULL,
  PRIMARY KEY (channel, number, position)
);
CREATE TABLE IF NOT EXISTS digests (
  channel TEXT NOT NULL, digest TEXT NOT NULL, block INTEGER NOT NULL, envelope_index INTEGER NOT NULL,
  entry_index INTEGER NOT NULL, creator TEXT NOT NULL, kind TEXT NOT NULL,
  PRIMARY KEY (channel, digest)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS patients (
  channel TEXT NOT NULL, token TEXT NOT NULL, hospital TEXT NOT NULL,
  PRIMARY KEY (channel, token, hospital)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nonces (
  channel TEXT NOT NULL, creator TEXT NOT NULL, nonce TEXT NOT NULL,
  PRIMARY KEY (channel, creator, nonce)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS config_changes (
  channel TEXT NOT NULL, block INTEGER NOT NULL, position INTEGER NOT NULL, change TEXT NOT NULL,
  PRIMARY KEY (channel, block, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attestations (
  channel TEXT NOT NULL, block INTEGER NOT NULL, member TEXT NOT NULL, attestation TEXT NOT NULL,
  PRIMARY KEY (channel, block, member)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
  channel TEXT PRIMARY KEY, block INTEGER NOT NULL, checkpoint TEXT NOT NULL
) WITHOUT ROWID;
`;

/** SQLite binds at most 32766 variables per statement; lookups are chunked well below that. */
const LOOKUP_CHUNK = 500;

function chunks<T>(items: T[], size = LOOKUP_CHUNK): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

const placeholders = (n: number) => Array.from({ length: n }, () => '?').join(', ');

export class SqliteLedgerStore implements LedgerStore {
  private db!: Database.Database;
  private statements!: ReturnType<SqliteLedgerStore['prepare']>;
  private appendTransaction!: (block: Block, index: BlockIndex) => void;

  constructor(private readonly file: string) {}

  async init(): Promise<void> {
    if (this.file !== ':memory:') mkdirSync(dirname(this.file), { recursive: true });
    const db = new Database(this.file);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.pragma('busy_timeout = 5000');
    const version = db.pragma('user_version', { simple: true }) as number;
    const existing = db.prepare("SELECT COUNT(*) AS n FROM sqlite_master WHERE name = 'blocks'").get() as { n: number };
    if (existing.n > 0 && version !== LEDGER_SCHEMA_VERSION) {
      db.close();
      throw new Error(
        `${this.file} is a ledger of schema ${version}, this gateway uses schema ${LEDGER_SCHEMA_VERSION}: ` +
          'move the file away and restart, and the member rebuilds its ledger from the orderer',
      );
    }
    db.exec(SCHEMA);
    db.pragma(`user_version = ${LEDGER_SCHEMA_VERSION}`);
    this.db = db;
    this.statements = this.prepare();
    this.appendTransaction = db.transaction((block: Block, index: BlockIndex) => this.appendInTransaction(block, index));
  }

  private prepare() {
    const db = this.db;
    return {
      head: db.prepare('SELECT header FROM blocks WHERE channel = ? ORDER BY number DESC LIMIT 1').pluck(),
      insertBlock: db.prepare('INSERT INTO blocks (channel, number, header, validity) VALUES (?, ?, ?, ?)'),
      insertEnvelope: db.prepare('INSERT INTO block_envelopes (channel, number, position, bytes) VALUES (?, ?, ?, ?)'),
      insertDigest: db.prepare(
        'INSERT OR IGNORE INTO digests (channel, digest, block, envelope_index, entry_index, creator, kind) VALUES (?, ?, ?, ?, ?, ?, ?)',
      ),
      insertPatient: db.prepare('INSERT OR IGNORE INTO patients (channel, token, hospital) VALUES (?, ?, ?)'),
      insertNonce: db.prepare('INSERT OR IGNORE INTO nonces (channel, creator, nonce) VALUES (?, ?, ?)'),
      insertConfigChange: db.prepare('INSERT INTO config_changes (channel, block, position, change) VALUES (?, ?, ?, ?)'),
      block: db.prepare('SELECT header, validity FROM blocks WHERE channel = ? AND number = ?'),
      envelopes: db.prepare('SELECT bytes FROM block_envelopes WHERE channel = ? AND number = ? ORDER BY position').pluck(),
      headers: db.prepare('SELECT header FROM blocks WHERE channel = ? AND number BETWEEN ? AND ? ORDER BY number').pluck(),
      hospitals: db.prepare('SELECT hospital FROM patients WHERE channel = ? AND token = ? ORDER BY hospital').pluck(),
      nonce: db.prepare('SELECT 1 FROM nonces WHERE channel = ? AND creator = ? AND nonce = ?').pluck(),
      configChanges: db.prepare('SELECT block, change FROM config_changes WHERE channel = ? ORDER BY block, position'),
      insertAttestation: db.prepare('INSERT OR IGNORE INTO attestations (channel, block, member, attestation) VALUES (?, ?, ?, ?)'),
      attestations: db.prepare('SELECT attestation FROM attestations WHERE channel = ? AND block BETWEEN ? AND ? ORDER BY block, member').pluck(),
      saveCheckpoint: db.prepare(
        'INSERT INTO checkpoints (channel, block, checkpoint) VALUES (?, ?, ?) ' +
          'ON CONFLICT (channel) DO UPDATE SET block = excluded.block, checkpoint = excluded.checkpoint WHERE excluded.block > checkpoints.block',
      ),
      checkpoint: db.prepare('SELECT checkpoint FROM checkpoints WHERE channel = ?').pluck(),
    };
  }

  async close(): Promise<void> {
    this.db?.close();
  }

  async head(channel: string): Promise<BlockHeader | undefined> {
    const header = this.statements.head.get(channel) as string | undefined;
    return header === undefined ? undefined : (JSON.parse(header) as BlockHeader);
  }

  async appendBlock(block: Block, index: BlockIndex): Promise<void> {
    this.appendTransaction(block, index);
  }

  private appendInTransaction(block: Block, index: BlockIndex): void {
    const { channel, number } = block.header;
    const head = this.statements.head.get(channel) as string | undefined;
    const expected = head === undefined ? 0 : (JSON.parse(head) as BlockHeader).number + 1;
    if (number !== expected) throw new LedgerAppendError(`block ${number} of channel ${channel} does not follow the head (next is ${expected})`);
    const s = this.statements;
    s.insertBlock.run(channel, number, JSON.stringify(block.header), JSON.stringify(block.validity));
    block.envelopes.forEach((bytes, position) => s.insertEnvelope.run(channel, number, position, bytes));
    for (const d of index.digests) s.insertDigest.run(channel, d.digest, number, d.envelopeIndex, d.entryIndex, d.creator, d.kind);
    for (const p of index.patients) s.insertPatient.run(channel, p.token, p.hospital);
    for (const n of index.nonces) s.insertNonce.run(channel, n.creator, n.nonce);
    index.configChanges.forEach((change, position) => s.insertConfigChange.run(channel, number, position, JSON.stringify(change)));
  }

  async block(channel: string, blockNumber: number): Promise<Block | undefined> {
    const row = this.statements.block.get(channel, blockNumber) as { header: string; validity: string } | undefined;
    if (!row) return undefined;
    const envelopes = (this.statements.envelopes.all(channel, blockNumber) as Buffer[]).map((b) => new Uint8Array(b));
    return { header: JSON.parse(row.header) as BlockHeader, envelopes, validity: JSON.parse(row.validity) as EnvelopeValidity[] };
  }

  async headers(channel: string, from: number, to: number): Promise<BlockHeader[]> {
    return (this.statements.headers.all(channel, from, to) as string[]).map((h) => JSON.parse(h) as BlockHeader);
  }

  async locate(channel: string, digests: string[]): Promise<Map<string, DigestLocation>> {
    const found = new Map<string, DigestLocation>();
    for (const chunk of chunks([...new Set(digests)])) {
      const rows = this.db
        .prepare(
          `SELECT digest, block, envelope_index, entry_index, creator, kind FROM digests WHERE channel = ? AND digest IN (${placeholders(chunk.length)})`,
        )
        .all(channel, ...chunk) as Array<{ digest: string; block: number; envelope_index: number; entry_index: number; creator: string; kind: 'anchor' | 'audit' }>;
      for (const r of rows) {
        found.set(r.digest, { blockNumber: r.block, envelopeIndex: r.envelope_index, entryIndex: r.entry_index, creator: r.creator, kind: r.kind });
      }
    }
    return found;
  }

  async hospitalsForPatient(channel: string, token: string): Promise<string[]> {
    return this.statements.hospitals.all(channel, token) as string[];
  }

  async committedNonces(channel: string, pairs: Array<{ creator: string; nonce: string }>): Promise<Set<string>> {
    const committed = new Set<string>();
    for (const { creator, nonce } of pairs) if (this.statements.nonce.get(channel, creator, nonce) !== undefined) committed.add(`${creator} ${nonce}`);
    return committed;
  }

  async configChanges(channel: string): Promise<Array<{ blockNumber: number; change: ConfigChange }>> {
    return (this.statements.configChanges.all(channel) as Array<{ block: number; change: string }>).map((r) => ({
      blockNumber: r.block,
      change: JSON.parse(r.change) as ConfigChange,
    }));
  }

  async saveAttestations(attestations: Attestation[]): Promise<void> {
    const insert = this.statements.insertAttestation;
    this.db.transaction(() => {
      for (const a of attestations) insert.run(a.channel, a.blockNumber, a.member, JSON.stringify(a));
    })();
  }

  async attestations(channel: string, from: number, to: number): Promise<Attestation[]> {
    return (this.statements.attestations.all(channel, from, to) as string[]).map((a) => JSON.parse(a) as Attestation);
  }

  async saveCheckpoint(channel: string, checkpoint: Checkpoint): Promise<void> {
    this.statements.saveCheckpoint.run(channel, checkpoint.header.number, JSON.stringify(checkpoint));
  }

  async checkpoint(channel: string): Promise<Checkpoint | undefined> {
    const row = this.statements.checkpoint.get(channel) as string | undefined;
    return row === undefined ? undefined : (JSON.parse(row) as Checkpoint);
  }
}
