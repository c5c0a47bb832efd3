/** An in-process gateway on a temporary data dir, driven with supertest. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MongoClient } from 'mongodb';
import { describe } from 'node:test';
import supertest from 'supertest';
import { mintToken } from '../../src/access/tokens.ts';
import { createGateway, type Gateway } from '../../src/gateway.ts';
import { describeWithEngine } from './engines.ts';
import { keySource } from '../../src/vault/keyring.ts';
import { testConsortium } from './consortium.ts';

process.env.MEDBLOCK_LOG ??= 'off';

export const FHIR_DATA = join(import.meta.dirname, '..', '..', '..', 'shared', 'fhir-data');
export const FHIR_JSON = 'application/fhir+json';

export interface TestGateway {
  gateway: Gateway;
  dataDir: string;
  /** Token with every permission on every type. */
  admin: string;
  token(scope: string, patient?: string): Promise<string>;
  http: supertest.Agent;
  close(): Promise<void>;
}

/** A gateway on the embedded SQLite vault, or on MongoDB at `mongodbUri` (in a fresh database dropped on close). */
export async function startTestGateway(opts: { mongodbUri?: string } = {}): Promise<TestGateway> {
  // One consortium (of this hospital alone) per test process: the solo orderer and ledger live in the data dir.
  const consortiumDir = await testConsortium(['test-hospital']);
  const dataDir = mkdtempSync(join(tmpdir(), 'medblock-test-'));
  const mongodb = opts.mongodbUri
    ? { uri: opts.mongodbUri, database: `medblock_test_${Math.random().toString(36).slice(2, 10)}` }
    : undefined;
  const gateway = await createGateway({
    host: '127.0.0.1', port: 0, dataDir, maxBodyBytes: 8 * 1024 * 1024,
    baseUrl: 'http://gateway.test/fhir',
    mongodb,
    hospitalId: 'test-hospital',
    masterKey: keySource(dataDir, {}),
    consortiumDir,
  });
  const token = (scope: string, patient?: string) => mintToken(gateway.issuer, { subject: 'tester', scope, patient });
  return {
    gateway,
    dataDir,
    admin: await token('user/*.cruds'),
    token,
    http: supertest.agent(gateway.app),
    close: async () => {
      await gateway.close();
      rmSync(dataDir, { recursive: true, force: true });
      if (mongodb) {
        const client = await MongoClient.connect(mongodb.uri);
        await client.db(mongodb.database).dropDatabase();
        await client.close();
      }
    },
  };
}

/**
 * Declares `suite` once per vault adapter: SQLite always, MongoDB on the real engine the test run provides
 * (failing under MEDBLOCK_REQUIRE_SERVICES=1 when there is none, see engines.ts).
 */
export function forEachStore(suite: (start: () => Promise<TestGateway>, store: 'sqlite' | 'mongodb') => void): void {
  describe('on SQLite', () => suite(() => startTestGateway(), 'sqlite'));
  describeWithEngine('mongodb', 'on MongoDB', (uri) => suite(() => startTestGateway({ mongodbUri: uri }), 'mongodb'));
}

/** The JSON body of a FHIR response (supertest only parses application/json itself). */
export function body<T = any>(res: { text: string }): T {
  return JSON.parse(res.text) as T;
}
