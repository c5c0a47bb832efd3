/** What an attacker holding the database sees: every persisted byte of a test gateway's vault. */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BSON, MongoClient } from 'mongodb';
import type { TestGateway } from './gateway.ts';

/** Every byte the adapter persisted: the SQLite files, or every document of the MongoDB database as BSON. */
export async function rawVaultBytes(t: TestGateway): Promise<Buffer> {
  const mongodb = t.gateway.config.mongodb;
  if (!mongodb) {
    const file = join(t.dataDir, 'vault.sqlite');
    return Buffer.concat([file, `${file}-wal`].filter(existsSync).map((f) => readFileSync(f)));
  }
  const client = await MongoClient.connect(mongodb.uri);
  try {
    const db = client.db(mongodb.database);
    const parts: Uint8Array[] = [];
    for (const { name } of await db.listCollections().toArray()) {
      for (const doc of await db.collection(name).find().toArray()) parts.push(BSON.serialize(doc));
    }
    return Buffer.concat(parts);
  } finally {
    await client.close();
  }
}
