/**
 * A consortium of hospital gateways in this process for federation tests and the benchmark: each with its own
 * data dir and vault (the ones named in `mongodb` on the MongoDB-wire engine, the others on SQLite), all on one
 * Kafka channel, each serving the federation listener on a free port of 127.0.0.1 whose address is in
 * consortium.json.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MongoClient } from 'mongodb';
import supertest from 'supertest';
import { mintToken } from '../../src/access/tokens.ts';
import { createGateway, type Gateway } from '../../src/gateway.ts';
import type { DefaultConsent } from '../../src/identity/consortium-dir.ts';
import { createConsortium } from '../../src/identity/ca.ts';
import { writeConsortiumDir } from '../../src/identity/consortium-dir.ts';
import { keySource } from '../../src/vault/keyring.ts';
import { freePorts } from '../engines/index.ts';

process.env.MEDBLOCK_LOG ??= 'off';

export interface Hospital {
  id: string;
  gateway: Gateway;
  dataDir: string;
  /** A clinician's token: read and write everything (no auditor or erase scope). */
  clinician: string;
  /** Token with the auditor scope too, to read the access log. */
  auditor: string;
  http: supertest.Agent;
  federationPort: number;
  /** Restarts the gateway on the same data dir (after `stop`). */
  start(): Promise<void>;
  stop(): Promise<void>;
}

export interface FederationOptions {
  members: string[];
  brokers: string;
  /** Members whose vault and ledger store live on the MongoDB-wire engine at this URI. */
  mongodb?: { uri: string; members: string[] };
  defaultConsent?: DefaultConsent;
}

export interface TestFederation {
  consortiumDir: string;
  hospitals: Record<string, Hospital>;
  close(): Promise<void>;
}

export async function startFederation(opts: FederationOptions): Promise<TestFederation> {
  const work = mkdtempSync(join(tmpdir(), 'medblock-federation-'));
  const consortiumDir = join(work, 'consortium');
  const consortium = await createConsortium({ members: opts.members, channel: `fed-${Math.random().toString(36).slice(2, 10)}` });
  writeConsortiumDir(consortiumDir, consortium);
  const ports = await freePorts(opts.members.length);
  const manifestPath = join(consortiumDir, 'consortium.json');
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
  manifest.federation = {
    ...manifest.federation,
    defaultConsent: opts.defaultConsent ?? 'opt-out',
    members: Object.fromEntries(opts.members.map((id, i) => [id, { address: `https://127.0.0.1:${ports[i]}` }])),
  };
  writeFileSync(manifestPath, JSON.stringify(manifest, null, 2));
  const databases: string[] = [];
  const hospitals: Record<string, Hospital> = {};
  for (const [i, id] of opts.members.entries()) {
    const dataDir = join(work, id);
    const onMongo = opts.mongodb?.members.includes(id);
    const database = onMongo ? `medblock_fed_${id}_${Math.random().toString(36).slice(2, 8)}` : undefined;
    if (database) databases.push(database);
    const config = {
      host: '127.0.0.1', port: 0, dataDir, maxBodyBytes: 8 * 1024 * 1024, baseUrl: `http://${id}.test/fhir`,
      hospitalId: id, masterKey: keySource(dataDir, {}), consortiumDir,
      mongodb: database ? { uri: opts.mongodb!.uri, database } : undefined,
      kafkaBrokers: opts.brokers.split(','), kafkaReplication: { replicationFactor: 1, minInsyncReplicas: 1 },
      federation: { host: '127.0.0.1', port: ports[i] },
      // Generous: FerretDB scans for every query and CI machines are busy; a timeout is tested on its own.
      federationTimeoutMs: 30_000,
      mode: 'dev' as const,
    };
    const hospital = { id, dataDir, federationPort: ports[i] } as Hospital;
    let running = false;
    hospital.start = async () => {
      hospital.gateway = await createGateway(config);
      hospital.http = supertest.agent(hospital.gateway.app);
      running = true;
    };
    hospital.stop = async () => {
      if (!running) return;
      running = false;
      await hospital.gateway.close();
    };
    await hospital.start();
    hospital.clinician = await mintToken(hospital.gateway.issuer, { subject: `${id}-clinician`, scope: 'user/*.cruds' });
    hospital.auditor = await mintToken(hospital.gateway.issuer, { subject: `${id}-auditor`, scope: 'user/*.cruds user/AuditEvent.rs' });
    hospitals[id] = hospital;
  }
  return {
    consortiumDir,
    hospitals,
    close: async () => {
      for (const h of Object.values(hospitals)) await h.stop();
      if (databases.length) {
        const client = await MongoClient.connect(opts.mongodb!.uri);
        for (const database of databases) await client.db(database).dropDatabase();
        await client.close();
      }
      rmSync(work, { recursive: true, force: true });
    },
  };
}
