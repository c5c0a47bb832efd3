import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, it } from 'node:test';
import Database from 'better-sqlite3';
import { SCHEMA_VERSION } from '../../src/adapters/sqlite/schema.ts';
import { SqliteStore } from '../../src/adapters/sqlite/sqlite-store.ts';
import { storeContract } from './store.contract.ts';

const dir = mkdtempSync(join(tmpdir(), 'medblock-sqlite-'));
after(() => rmSync(dir, { recursive: true, force: true }));
storeContract('sqlite', async () => new SqliteStore(join(dir, 'vault.sqlite')));

it('refuses a vault written before salted commitments (schema 3) instead of migrating it, naming the way out', async () => {
  const file = join(dir, 'v3.sqlite');
  const db = new Database(file);
  db.exec('CREATE TABLE versions (seq INTEGER PRIMARY KEY)');
  db.pragma('user_version = 3');
  db.close();
  await assert.rejects(
    new SqliteStore(file).init(),
    new RegExp(`is a vault of schema 3, this gateway uses schema ${SCHEMA_VERSION} .*new MEDBLOCK_DATA_DIR \\(docs/proofs.md, "Vaults written before commitments"\\)`),
  );
});
