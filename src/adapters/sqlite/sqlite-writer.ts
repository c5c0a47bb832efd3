/**
 * Every write to the vault file: version batches (one SQL transaction each, with the optimistic version
 * check), data-key changes and anchor locations. One connection does all writing, so writes never wait on
 * each other's locks.
 */
import type Database from 'better-sqlite3';
import { KeyErasedError } from '../../vault/data-keys.ts';
import { VersionConflictError, type AnchorMark, type IndexTerm, type NewKey, type TypedTerm, type VersionWrite } from '../../vault/store.ts';

export type KeyOperation =
  | { name: 'insertKeys'; keys: NewKey[] }
  | { name: 'rewrapKey'; keyId: string; fromMasterKeyId: string; masterKeyId: string; wrapped: Uint8Array }
  | { name: 'eraseKey'; keyId: string; erasedAt: string }
  | { name: 'replaceTerms'; type: string; id: string; versionId: number; terms: IndexTerm[] }
  | { name: 'removeTerms'; terms: TypedTerm[] };

export class SqliteWriter {
  readonly statements;
  readonly apply: (writes: VersionWrite[]) => void;
  /** Records anchor locations, all in one transaction; a version already anchored keeps its first location. */
  readonly markAnchored: (marks: AnchorMark[]) => void;
  private readonly keys;
  private readonly erase: (keyId: string, erasedAt: string) => number;
  private readonly insertKeys: (keys: NewKey[]) => number;
  private readonly replaceTerms: (op: Extract<KeyOperation, { name: 'replaceTerms' }>) => boolean;
  private readonly removeTerms: (terms: TypedTerm[]) => number;

  constructor(private readonly db: Database.Database) {
    this.keys = {
      insert: db.prepare(
        'INSERT INTO data_keys (key_id, created_at, master_key_id, wrapped) VALUES (?, ?, ?, ?) ON CONFLICT (key_id) DO NOTHING',
      ),
      rewrap: db.prepare(
        'UPDATE data_keys SET master_key_id = ?, wrapped = ? WHERE key_id = ? AND master_key_id = ? AND erased_at IS NULL',
      ),
      tombstone: db.prepare(
        `INSERT INTO data_keys (key_id, created_at, erased_at) VALUES (?, ?, ?)
         ON CONFLICT (key_id) DO UPDATE SET master_key_id = NULL, wrapped = NULL, erased_at = coalesce(erased_at, excluded.erased_at)`,
      ),
      dropTerms: db.prepare('DELETE FROM terms WHERE (type, id) IN (SELECT type, id FROM current WHERE key_id = ?)'),
      hide: db.prepare('UPDATE current SET deleted = 1 WHERE key_id = ? AND deleted = 0'),
    };
    this.insertKeys = db.transaction((keys: NewKey[]) => {
      let inserted = 0;
      for (const k of keys) inserted += this.keys.insert.run(k.keyId, k.createdAt, k.masterKeyId, k.wrapped).changes;
      return inserted;
    });
    this.erase = db.transaction((keyId: string, erasedAt: string) => {
      this.keys.tombstone.run(keyId, erasedAt, erasedAt);
      this.keys.dropTerms.run(keyId);
      return this.keys.hide.run(keyId).changes;
    });
    this.statements = {
      insertVersion: db.prepare(
        `INSERT INTO versions (type, id, version, last_updated, deleted, content, digest, key_id, patient_token, salt,
           resource_token, link_tokens, erased_patient_token)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      insertCurrent: db.prepare(
        'INSERT INTO current (type, id, version, seq, last_updated, deleted, key_id, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      moveCurrent: db.prepare(
        'UPDATE current SET version = ?, seq = ?, last_updated = ?, deleted = ?, key_id = ?, mac = ? WHERE type = ? AND id = ? AND version = ?',
      ),
      deleteTerms: db.prepare('DELETE FROM terms WHERE type = ? AND id = ?'),
      insertTerm: db.prepare('INSERT OR IGNORE INTO terms (type, param, value, id) VALUES (?, ?, ?, ?)'),
    };
    const isCurrent = db.prepare('SELECT 1 FROM current WHERE type = ? AND id = ? AND version = ? AND deleted = 0');
    this.replaceTerms = db.transaction(({ type, id, versionId, terms }: Extract<KeyOperation, { name: 'replaceTerms' }>) => {
      if (!isCurrent.get(type, id, versionId)) return false;
      this.statements.deleteTerms.run(type, id);
      for (const t of terms) this.statements.insertTerm.run(type, t.param, t.value, id);
      return true;
    });
    const removeTerm = db.prepare('DELETE FROM terms WHERE type = ? AND param = ? AND value = ?');
    this.removeTerms = db.transaction((terms: TypedTerm[]) => {
      let removed = 0;
      for (const t of terms) removed += removeTerm.run(t.type, t.param, t.value).changes;
      return removed;
    });
    const anchor = db.prepare(
      `UPDATE versions SET anchor_block = ?, anchor_envelope = ?, anchor_entry = ?
       WHERE type = ? AND id = ? AND version = ? AND anchor_block IS NULL`,
    );
    this.markAnchored = db.transaction((marks: AnchorMark[]) => {
      for (const m of marks) anchor.run(m.blockNumber, m.envelopeIndex, m.entryIndex, m.type, m.id, m.versionId);
    });
    const erasedAt = db.prepare('SELECT erased_at FROM data_keys WHERE key_id = ? AND erased_at IS NOT NULL');
    this.apply = db.transaction((writes: VersionWrite[]) => {
      // Another process may still hold an erased key in its cache: nothing sealed under it may land.
      for (const keyId of new Set(writes.map((w) => w.record.keyId).filter((k) => k !== undefined))) {
        const erased = erasedAt.get(keyId) as { erased_at: string } | undefined;
        if (erased) throw new KeyErasedError(keyId, erased.erased_at);
      }
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

  private applyWrite({ record: r, terms, expectedVersion, headMac }: VersionWrite): void {
    const s = this.statements;
    if (r.versionId <= expectedVersion) throw new VersionConflictError(r.type, r.id);
    const deleted = r.deleted ? 1 : 0;
    const keyId = r.keyId ?? null;
    const { lastInsertRowid: seq } = s.insertVersion.run(
      r.type, r.id, r.versionId, r.lastUpdated, deleted, r.content, r.digest, keyId, r.patientToken ?? null, r.salt ?? null,
      r.resourceToken ?? null, r.linkTokens ? JSON.stringify(r.linkTokens) : null, r.erasedPatientToken ?? null,
    );
    // The current pointer moves only from the expected version: the optimistic concurrency check.
    if (expectedVersion === 0) {
      s.insertCurrent.run(r.type, r.id, r.versionId, seq, r.lastUpdated, deleted, keyId, headMac ?? null);
    } else {
      const moved = s.moveCurrent.run(r.versionId, seq, r.lastUpdated, deleted, keyId, headMac ?? null, r.type, r.id, expectedVersion);
      if (moved.changes !== 1) throw new VersionConflictError(r.type, r.id);
      s.deleteTerms.run(r.type, r.id);
    }
    for (const t of terms) s.insertTerm.run(r.type, t.param, t.value, r.id);
  }

  /** Returns how many keys were new, how many resources an erasure hid, or whether a re-wrap applied. */
  applyKeyOperation(op: KeyOperation): number | boolean {
    switch (op.name) {
      case 'insertKeys':
        return this.insertKeys(op.keys);
      case 'rewrapKey':
        return this.keys.rewrap.run(op.masterKeyId, op.wrapped, op.keyId, op.fromMasterKeyId).changes === 1;
      case 'eraseKey': {
        const hidden = this.erase(op.keyId, op.erasedAt);
        this.purgeWal();
        return hidden;
      }
      case 'replaceTerms':
        return this.replaceTerms(op);
      case 'removeTerms': {
        const removed = this.removeTerms(op.terms);
        this.purgeWal();
        return removed;
      }
    }
  }

  /**
   * Copies the WAL into the database and truncates it, so the pre-erasure pages (holding the wrapped key)
   * do not linger in the WAL file; secure_delete has zeroed them in the database itself. Readers on other
   * connections can hold the checkpoint back briefly: retry for up to a second.
   */
  private purgeWal(): void {
    for (let attempt = 0; attempt < 50; attempt++) {
      const [result] = this.db.pragma('wal_checkpoint(TRUNCATE)') as Array<{ busy: number }>;
      if (result.busy === 0) return;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }
}
