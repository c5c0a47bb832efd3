/** The SQLite schema and connection settings shared by the reader (main thread) and the writer thread. */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

export const SCHEMA = `
CREATE TABLE IF NOT EXISTS versions (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
  last_updated TEXT NOT NULL, deleted INTEGER NOT NULL, content BLOB, digest TEXT,
  UNIQUE (type, id, version)
);
CREATE TABLE IF NOT EXISTS current (
  type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, seq INTEGER NOT NULL,
  last_updated TEXT NOT NULL, deleted INTEGER NOT NULL,
  PRIMARY KEY (type, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS current_by_last_updated ON current (type, last_updated);
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
  if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('busy_timeout = 5000');
  // A 64 MiB page cache and fewer, larger checkpoints: ingest writes megabytes per bundle.
  db.pragma('cache_size = -65536');
  db.pragma('wal_autocheckpoint = 4096');
  db.exec(SCHEMA);
  return db;
}
