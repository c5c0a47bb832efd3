/** The SQLite schema and connection settings shared by the reader (main thread) and the writer thread. */
import Database from 'better-sqlite3';
import { preparePrivateDatabaseFile } from './private-file.ts';

/** Bumped when the layout changes incompatibly; a vault of another version is refused, never migrated blindly. */
export const SCHEMA_VERSION = 5;
/** What the current schema holds, for the refusal message. */
const SCHEMA_DESCRIPTION = 'encrypted, anchored with salted commitments, with authenticated head state and federation tokens';

export const SCHEMA = `
CREATE TABLE IF NOT EXISTS versions (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
  last_updated TEXT NOT NULL, deleted INTEGER NOT NULL, digest TEXT, key_id TEXT, patient_token TEXT,
  anchor_block INTEGER, anchor_envelope INTEGER, anchor_entry INTEGER,
  -- The commitment salt of a plaintext store's version; NULL in a vault, which seals it inside content.
  salt BLOB,
  -- Federation (outbox, see vault/store.ts VersionRecord): resource locator token, a Patient version's link
  -- tokens (JSON array), an erasure record's erased patient locator token.
  resource_token TEXT, link_tokens TEXT, erased_patient_token TEXT,
  -- Last, so that reading the other columns (the outbox) never walks a large content's overflow pages.
  content BLOB,
  UNIQUE (type, id, version)
);
-- The anchor outbox: only versions not anchored yet are in this index, so the publisher's scan stays as
-- small as its backlog however large the vault grows.
CREATE INDEX IF NOT EXISTS versions_unanchored ON versions (seq) WHERE anchor_block IS NULL;
CREATE TABLE IF NOT EXISTS current (
  type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, seq INTEGER NOT NULL,
  last_updated TEXT NOT NULL, deleted INTEGER NOT NULL, key_id TEXT,
  -- The vault's head MAC over (hospital, type, id, version, deleted): see vault/head-mac.ts.
  mac TEXT,
  PRIMARY KEY (type, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS current_by_last_updated ON current (type, last_updated);
CREATE INDEX IF NOT EXISTS current_by_key ON current (key_id) WHERE key_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS data_keys (
  key_id TEXT PRIMARY KEY, created_at TEXT NOT NULL,
  master_key_id TEXT, wrapped BLOB, erased_at TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS terms (
  type TEXT NOT NULL, param TEXT NOT NULL, value TEXT NOT NULL, id TEXT NOT NULL,
  PRIMARY KEY (type, param, value, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS terms_by_resource ON terms (type, id);
`;

/**
 * Opens the vault file in WAL mode with synchronous=FULL: a commit that returned survives a crash or a power
 * loss, and readers never block the writer.
 */
export function openDatabase(file: string): Database.Database {
  preparePrivateDatabaseFile(file);
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('busy_timeout = 5000');
  // A 64 MiB page cache and fewer, larger checkpoints: ingest writes megabytes per bundle.
  db.pragma('cache_size = -65536');
  db.pragma('wal_autocheckpoint = 4096');
  // Deleted content (an erased data key, dropped index terms) is overwritten with zeros, not left in free pages.
  db.pragma('secure_delete = ON');
  const version = db.pragma('user_version', { simple: true }) as number;
  const fresh = db.prepare("SELECT COUNT(*) AS n FROM sqlite_master WHERE name = 'versions'").get() as { n: number };
  if (fresh.n > 0 && version !== SCHEMA_VERSION) {
    db.close();
    throw new Error(
      `${file} is a vault of schema ${version}, this gateway uses schema ${SCHEMA_VERSION} (${SCHEMA_DESCRIPTION}) ` +
        'and does not migrate vaults: export the data with the gateway version that wrote it and import it into a ' +
        'new MEDBLOCK_DATA_DIR (docs/proofs.md, "Vaults written before commitments")',
    );
  }
  db.exec(SCHEMA);
  db.pragma(`user_version = ${SCHEMA_VERSION}`);
  return db;
}
