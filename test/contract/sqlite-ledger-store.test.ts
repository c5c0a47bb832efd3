import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, it } from 'node:test';
import Database from 'better-sqlite3';
import { SqliteLedgerStore } from '../../src/adapters/sqlite/sqlite-ledger-store.ts';
import { ledgerStoreContract } from './ledger-store.contract.ts';

const dir = mkdtempSync(join(tmpdir(), 'medblock-sqlite-ledger-'));
after(() => rmSync(dir, { recursive: true, force: true }));
ledgerStoreContract('sqlite', async () => new SqliteLedgerStore(join(dir, 'ledger.sqlite')));
ledgerStoreContract('sqlite, writing inline', async () => new SqliteLedgerStore(join(dir, 'inline-ledger.sqlite'), { inline: true }));

it('refuses a ledger file of another schema version instead of reading it', async () => {
  const file = join(dir, 'old.sqlite');
  const db = new Database(file);
  db.exec('CREATE TABLE blocks (number INTEGER PRIMARY KEY)');
  db.pragma('user_version = 0');
  db.close();
  await assert.rejects(new SqliteLedgerStore(file).init(), /is a ledger of schema 0, this gateway uses schema 3: .*rebuilds its ledger from the orderer/);
});
