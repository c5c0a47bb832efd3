/** Applies write batches to the vault file: one SQL transaction per batch, with the optimistic version check. */
import type Database from 'better-sqlite3';
import { VersionConflictError, type VersionWrite } from '../../vault/store.ts';

export class SqliteWriter {
  readonly statements;
  readonly apply: (writes: VersionWrite[]) => void;

  constructor(db: Database.Database) {
    this.statements = {
      insertVersion: db.prepare(
        'INSERT INTO versions (type, id, version, last_updated, deleted, content, digest, key_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      insertCurrent: db.prepare(
        'INSERT INTO current (type, id, version, seq, last_updated, deleted, key_id) VALUES (?, ?, ?, ?, ?, ?, ?)',
      ),
      moveCurrent: db.prepare(
        'UPDATE current SET version = ?, seq = ?, last_updated = ?, deleted = ?, key_id = ? WHERE type = ? AND id = ? AND version = ?',
      ),
      deleteTerms: db.prepare('DELETE FROM terms WHERE type = ? AND id = ?'),
      insertTerm: db.prepare('INSERT OR IGNORE INTO terms (type, param, value, id) VALUES (?, ?, ?, ?)'),
    };
    this.apply = db.transaction((writes: VersionWrite[]) => {
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
    const keyId = r.keyId ?? null;
    const { lastInsertRowid: seq } = s.insertVersion.run(r.type, r.id, r.versionId, r.lastUpdated, deleted, r.content, r.digest, keyId);
    // The current pointer moves only from the expected version: the optimistic concurrency check.
    if (expectedVersion === 0) {
      s.insertCurrent.run(r.type, r.id, r.versionId, seq, r.lastUpdated, deleted, keyId);
    } else {
      const moved = s.moveCurrent.run(r.versionId, seq, r.lastUpdated, deleted, keyId, r.type, r.id, expectedVersion);
      if (moved.changes !== 1) throw new VersionConflictError(r.type, r.id);
      s.deleteTerms.run(r.type, r.id);
    }
    for (const t of terms) s.insertTerm.run(r.type, t.param, t.value, r.id);
  }
}
