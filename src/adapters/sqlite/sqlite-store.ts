import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import {
  VersionConflictError,
  type HistoryQuery,
  type ResourceStore,
  type StoreQuery,
  type StoredVersion,
  type VersionWrite,
} from '../../vault/store.ts';

interface VersionRow {
  seq: number;
  type: string;
  id: string;
  version: number;
  last_updated: string;
  deleted: number;
  content: Buffer | null;
  digest: string | null;
}

const SCHEMA = `
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

const VERSION_COLUMNS = 'v.seq, v.type, v.id, v.version, v.last_updated, v.deleted, v.content, v.digest';

function toStored(row: VersionRow): StoredVersion {
  return {
    seq: row.seq,
    type: row.type,
    id: row.id,
    versionId: row.version,
    lastUpdated: row.last_updated,
    deleted: row.deleted === 1,
    content: row.content,
    digest: row.digest,
  };
}

const BOUND_SQL = { gt: '>', ge: '>=', lt: '<', le: '<=' } as const;

/**
 * The embedded default store: one SQLite file in WAL mode with synchronous=FULL, so a commit that
 * returned survives a crash or power loss. A batch is one SQL transaction.
 */
export class SqliteStore implements ResourceStore {
  private db!: Database.Database;
  private statements!: ReturnType<SqliteStore['prepare']>;
  private applyBatch!: (writes: VersionWrite[]) => void;

  constructor(private readonly file: string) {}

  async init(): Promise<void> {
    if (this.file !== ':memory:') mkdirSync(dirname(this.file), { recursive: true });
    this.db = new Database(this.file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma(`synchronous = ${process.env.MEDBLOCK_SQLITE_SYNC ?? 'FULL'}`);
    this.db.pragma('busy_timeout = 5000');
    // A 64 MiB page cache and fewer, larger checkpoints: ingest writes megabytes per bundle.
    this.db.pragma('cache_size = -65536');
    this.db.pragma('wal_autocheckpoint = 4096');
    this.db.exec(SCHEMA);
    this.statements = this.prepare();
    this.applyBatch = this.db.transaction((writes: VersionWrite[]) => {
      for (const write of writes) {
        try {
          this.applyWrite(write);
        } catch (e) {
          // A taken (type, id, version) or an existing resource for a create: another writer came first.
          const code = (e as { code?: string }).code;
          if (code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
            throw new VersionConflictError(write.record.type, write.record.id);
          }
          throw e;
        }
      }
    });
  }

  private applyWrite({ record: r, terms, expectedVersion }: VersionWrite): void {
    const s = this.statements;
    if (r.versionId <= expectedVersion) throw new VersionConflictError(r.type, r.id);
    const deleted = r.deleted ? 1 : 0;
    const { lastInsertRowid: seq } = s.insertVersion.run(r.type, r.id, r.versionId, r.lastUpdated, deleted, r.content, r.digest);
    // The current pointer moves only from the expected version: the optimistic concurrency check.
    if (expectedVersion === 0) {
      s.insertCurrent.run(r.type, r.id, r.versionId, seq, r.lastUpdated, deleted);
    } else {
      const moved = s.moveCurrent.run(r.versionId, seq, r.lastUpdated, deleted, r.type, r.id, expectedVersion);
      if (moved.changes !== 1) throw new VersionConflictError(r.type, r.id);
      s.deleteTerms.run(r.type, r.id);
    }
    for (const t of terms) s.insertTerm.run(r.type, t.param, t.value, r.id);
  }

  private prepare() {
    const db = this.db;
    return {
      insertVersion: db.prepare(
        'INSERT INTO versions (type, id, version, last_updated, deleted, content, digest) VALUES (?, ?, ?, ?, ?, ?, ?)',
      ),
      insertCurrent: db.prepare('INSERT INTO current (type, id, version, seq, last_updated, deleted) VALUES (?, ?, ?, ?, ?, ?)'),
      moveCurrent: db.prepare(
        'UPDATE current SET version = ?, seq = ?, last_updated = ?, deleted = ? WHERE type = ? AND id = ? AND version = ?',
      ),
      deleteTerms: db.prepare('DELETE FROM terms WHERE type = ? AND id = ?'),
      insertTerm: db.prepare('INSERT OR IGNORE INTO terms (type, param, value, id) VALUES (?, ?, ?, ?)'),
      current: db.prepare(
        `SELECT ${VERSION_COLUMNS} FROM current c JOIN versions v ON v.seq = c.seq WHERE c.type = ? AND c.id = ?`,
      ),
      version: db.prepare(`SELECT ${VERSION_COLUMNS} FROM versions v WHERE v.type = ? AND v.id = ? AND v.version = ?`),
    };
  }

  async close(): Promise<void> {
    this.db?.close();
  }

  async ping(): Promise<boolean> {
    return this.db.prepare('SELECT 1 AS ok').get() !== undefined;
  }

  async commit(writes: VersionWrite[]): Promise<void> {
    if (writes.length > 0) this.applyBatch(writes);
  }

  async current(type: string, id: string): Promise<StoredVersion | undefined> {
    const row = this.statements.current.get(type, id) as VersionRow | undefined;
    return row && toStored(row);
  }

  async version(type: string, id: string, versionId: number): Promise<StoredVersion | undefined> {
    const row = this.statements.version.get(type, id, versionId) as VersionRow | undefined;
    return row && toStored(row);
  }

  /** WHERE clause over `current c` for a query; term clauses become semi-joins on the terms table. */
  private where(query: StoreQuery, withCursor: boolean): { sql: string; params: unknown[] } {
    const parts = ['c.type = ?', 'c.deleted = 0'];
    const params: unknown[] = [query.type];
    if (query.ids) {
      parts.push(`c.id IN (${query.ids.map(() => '?').join(', ')})`);
      params.push(...query.ids);
    }
    for (const clause of query.clauses) {
      parts.push(
        `c.id IN (SELECT t.id FROM terms t WHERE t.type = ? AND t.param = ? AND t.value IN (${clause.anyOf
          .map(() => '?')
          .join(', ')}))`,
      );
      params.push(query.type, clause.param, ...clause.anyOf);
    }
    for (const bound of query.lastUpdated) {
      parts.push(`c.last_updated ${BOUND_SQL[bound.op]} ?`);
      params.push(bound.value);
    }
    if (withCursor && query.afterId !== undefined) {
      parts.push('c.id > ?');
      params.push(query.afterId);
    }
    return { sql: parts.join(' AND '), params };
  }

  async search(query: StoreQuery): Promise<StoredVersion[]> {
    const { sql, params } = this.where(query, true);
    const rows = this.db
      .prepare(
        `SELECT ${VERSION_COLUMNS} FROM current c JOIN versions v ON v.seq = c.seq WHERE ${sql} ORDER BY c.id LIMIT ?`,
      )
      .all(...params, query.limit) as VersionRow[];
    return rows.map(toStored);
  }

  async count(query: StoreQuery): Promise<number> {
    const { sql, params } = this.where(query, false);
    const row = this.db.prepare(`SELECT COUNT(*) AS n FROM current c WHERE ${sql}`).get(...params) as { n: number };
    return row.n;
  }

  async history(query: HistoryQuery): Promise<StoredVersion[]> {
    const parts: string[] = [];
    const params: unknown[] = [];
    if (query.type !== undefined) {
      parts.push('v.type = ?');
      params.push(query.type);
    }
    if (query.id !== undefined) {
      parts.push('v.id = ?');
      params.push(query.id);
    }
    if (query.since !== undefined) {
      parts.push('v.last_updated >= ?');
      params.push(query.since);
    }
    if (query.beforeSeq !== undefined) {
      parts.push('v.seq < ?');
      params.push(query.beforeSeq);
    }
    const where = parts.length ? `WHERE ${parts.join(' AND ')}` : '';
    const rows = this.db
      .prepare(`SELECT ${VERSION_COLUMNS} FROM versions v ${where} ORDER BY v.seq DESC LIMIT ?`)
      .all(...params, query.limit) as VersionRow[];
    return rows.map(toStored);
  }
}
