import { randomBytes } from 'node:crypto';
import { after } from 'node:test';
import { MongoClient } from 'mongodb';
import { MongoStore } from '../../src/adapters/mongodb/mongo-store.ts';
import { describeWithEngine } from '../support/engines.ts';
import { storeContract } from './store.contract.ts';

describeWithEngine('mongodb', 'MongoStore (real MongoDB-wire engine)', (uri) => {
  const database = `medblock_test_${randomBytes(6).toString('hex')}`;
  after(async () => {
    const client = await MongoClient.connect(uri);
    try {
      await client.db(database).dropDatabase();
    } finally {
      await client.close();
    }
  });
  storeContract('mongodb', async () => new MongoStore(uri, database));
});
