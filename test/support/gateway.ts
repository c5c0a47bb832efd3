/** An in-process gateway on a temporary data dir, driven with supertest (or over a real HTTP listener). */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MongoClient } from 'mongodb';
import { describe } from 'node:test';
import supertest from 'supertest';
import { mintToken } from '../../src/access/tokens.ts';
import { createGateway, type Gateway } from '../../src/gateway.ts';
import type { GatewayConfig } from '../../src/config.ts';
import { describeWithEngine } from './engines.ts';
import { keySource } from '../../src/vault/keyring.ts';
import { testConsortium } from './consortium.ts';

process.env.MEDBLOCK_LOG ??= 'off';

export const FHIR_DATA = join(import.meta.dirname, '..', '..', '..', 'shared', 'fhir-data');
export const FHIR_JSON = 'application/fhir+json';

export interface TestGateway {
  gateway: Gateway;
  dataDir: string;
  /** Token with every permission on every type, the auditor scope and the erase scope (test/support only: no real token should hold all three). */
  admin: string;
  token(scope: string, patient?: string): Promise<string>;
  http: supertest.Agent;
  /** The FHIR base URL the gateway writes into links and Location headers. */
  baseUrl: string;
  close(): Promise<void>;
}

export interface TestGatewayOptions {
  /** MongoDB at this URI (in a fresh database dropped on close) instead of the embedded SQLite vault. */
  mongodbUri?: string;
  /**
   * Serve on a real HTTP listener on 127.0.0.1 (a free port), with the base URL pointing at it, so that
   * FHIR clients written by others can follow its `next` links and Location headers.
   */
  listen?: boolean;
  /** MEDBLOCK_ERASE_APPROVAL for this gateway (default none). */
  eraseApproval?: GatewayConfig['eraseApproval'];
}

/** Listens on a free port of 127.0.0.1 with no handler yet: the gateway's base URL needs the port first. */
async function freeListener(): Promise<{ server: Server; port: number }> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

/** A gateway on a temporary data dir (see TestGatewayOptions). */
export async function startTestGateway(opts: TestGatewayOptions = {}): Promise<TestGateway> {
  // One consortium (of this hospital alone) per test process: the solo orderer and ledger live in the data dir.
  const consortiumDir = await testConsortium(['test-hospital']);
  const dataDir = mkdtempSync(join(tmpdir(), 'medblock-test-'));
  const mongodb = opts.mongodbUri
    ? { uri: opts.mongodbUri, database: `medblock_test_${Math.random().toString(36).slice(2, 10)}` }
    : undefined;
  const listener = opts.listen ? await freeListener() : undefined;
  const baseUrl = listener ? `http://127.0.0.1:${listener.port}/fhir` : 'http://gateway.test/fhir';
  const gateway = await createGateway({
    host: '127.0.0.1', port: listener?.port ?? 0, dataDir, maxBodyBytes: 8 * 1024 * 1024,
    baseUrl,
    mongodb,
    hospitalId: 'test-hospital',
    masterKey: keySource(dataDir, {}),
    consortiumDir,
    eraseApproval: opts.eraseApproval,
    mode: 'dev',
  });
  listener?.server.on('request', gateway.app);
  const token = (scope: string, patient?: string) => mintToken(gateway.issuer, { subject: 'tester', scope, patient });
  return {
    gateway,
    dataDir,
    admin: await token('user/*.cruds user/AuditEvent.rs user/Patient.$erase'),
    token,
    http: supertest.agent(gateway.app),
    baseUrl,
    close: async () => {
      if (listener) {
        listener.server.closeAllConnections();
        await new Promise<void>((resolve) => listener.server.close(() => resolve()));
      }
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
