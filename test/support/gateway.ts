/** An in-process gateway on a temporary data dir, driven with supertest. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import supertest from 'supertest';
import { mintToken } from '../../src/access/tokens.ts';
import { createGateway, type Gateway } from '../../src/gateway.ts';

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

export async function startTestGateway(): Promise<TestGateway> {
  const dataDir = mkdtempSync(join(tmpdir(), 'medblock-test-'));
  const gateway = await createGateway({
    host: '127.0.0.1', port: 0, dataDir, maxBodyBytes: 8 * 1024 * 1024,
    baseUrl: 'http://gateway.test/fhir',
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
    },
  };
}

/** The JSON body of a FHIR response (supertest only parses application/json itself). */
export function body<T = any>(res: { text: string }): T {
  return JSON.parse(res.text) as T;
}
