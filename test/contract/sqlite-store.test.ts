import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { SqliteStore } from '../../src/adapters/sqlite/sqlite-store.ts';
import { storeContract } from './store.contract.ts';

const dir = mkdtempSync(join(tmpdir(), 'medblock-sqlite-'));
after(() => rmSync(dir, { recursive: true, force: true }));
storeContract('sqlite', async () => new SqliteStore(join(dir, 'vault.sqlite')));
