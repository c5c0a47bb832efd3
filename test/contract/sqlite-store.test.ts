import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, it } from 'node:test';
import Database from 'better-sqlite3';
import { SqliteStore } from '../../src/adapters/sqlite/sqlite-store.ts';
import { storeContract } from './store.contract.ts';

const dir = mkdtempSync(join(tmpdir(), 'medblock-sqlite-'));
after(() => rmSync(dir, { recursive: true, force: true }));
storeContract('sqlite', async () => new SqliteStore(join(dir, 'vault.sqlite')));

it('refuses a vault of another schema version (here 2, before the anchor outbox) instead of migrating it', async () => {
  const file = join(dir, 'v2.sqlite');
  const db = new Database(file);
  db.exec('CREATE TABLE versions (seq INTEGER PRIMARY KEY)');
  db.pragma('user_version = 2');
  db.close();
  await assert.rejects(new SqliteStore(file).init(), /is a vault of schema 2, this gateway uses schema 4 .*new MEDBLOCK_DATA_DIR/);
});
