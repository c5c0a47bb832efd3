import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, it } from 'node:test';
import { MongoClient } from 'mongodb';
import { MongoStore } from '../../src/adapters/mongodb/mongo-store.ts';
import { VAULT_FORMAT } from '../../src/adapters/mongodb/vault-format.ts';
import { describeWithEngine } from '../support/engines.ts';
import { storeContract } from './store.contract.ts';

describeWithEngine('mongodb', 'MongoStore (real MongoDB-wire engine)', (uri) => {
  const database = `medblock_test_${randomBytes(6).toString('hex')}`;
  const old = `${database}_old`;
  after(async () => {
    const client = await MongoClient.connect(uri);
    try {
      await client.db(database).dropDatabase();
      await client.db(old).dropDatabase();
    } finally {
      await client.close();
    }
  });
  storeContract('mongodb', async () => new MongoStore(uri, database));

  it('refuses a vault written before salted commitments (versions, no format marker), naming the way out', async () => {
    const client = await MongoClient.connect(uri);
    try {
      await client.db(old).collection('versions').insertOne({ _id: 'Patient/p1/1' as never, digest: 'x' });
    } finally {
      await client.close();
    }
    const store = new MongoStore(uri, old);
    try {
      await assert.rejects(store.init(), new RegExp(`is a vault of format 1, this gateway uses format ${VAULT_FORMAT} .*\\(docs/proofs.md, "Vaults written before commitments"\\)`));
    } finally {
      await store.close();
    }
  });
});
