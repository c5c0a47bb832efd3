/** Composition root: wires the store, repository, token issuer and HTTP app from a configuration. */
import type { Server } from 'node:http';
import { join } from 'node:path';
import { loadDevIssuer, type DevIssuer } from './access/tokens.ts';
import { kafkaReachable } from './adapters/kafka/health.ts';
import { MongoStore } from './adapters/mongodb/mongo-store.ts';
import { SqliteStore } from './adapters/sqlite/sqlite-store.ts';
import type { GatewayConfig } from './config.ts';
import { createVersionChecker } from './fhir/checks/pool.ts';
import { FhirRepository } from './fhir/repository.ts';
import { initValidation } from './fhir/validation/index.ts';
import { createApp } from './http/app.ts';
import type { ResourceStore } from './vault/store.ts';
import { EncryptedStore } from './vault/encrypted-store.ts';
import { MasterKeyring } from './vault/keyring.ts';

export interface Gateway {
  config: GatewayConfig;
  store: ResourceStore;
  repo: FhirRepository;
  issuer: DevIssuer;
  app: ReturnType<typeof createApp>;
  close(): Promise<void>;
}

/** The database adapter: MongoDB when configured, else the embedded SQLite file in the data dir. */
export function openDatabaseStore(config: GatewayConfig): ResourceStore {
  if (config.mongodb) return new MongoStore(config.mongodb.uri, config.mongodb.database);
  return new SqliteStore(join(config.dataDir, 'vault.sqlite'));
}

/** The vault: the database adapter behind envelope encryption and blind indexes (not yet initialised). */
export function openVault(config: GatewayConfig): EncryptedStore {
  return new EncryptedStore(openDatabaseStore(config), MasterKeyring.open(config.masterKey), config.hospitalId);
}

export interface GatewayOptions {
  /**
   * Benchmarks only, never reachable from the CLI or the environment: the same pipeline with the database
   * adapter used directly (plaintext content and index terms), to measure what encryption costs.
   */
  plaintextVaultForBenchmark?: boolean;
}

export async function createGateway(config: GatewayConfig, options: GatewayOptions = {}): Promise<Gateway> {
  const store = options.plaintextVaultForBenchmark ? openDatabaseStore(config) : openVault(config);
  await store.init();
  initValidation();
  const checker = createVersionChecker(config.workers);
  const repo = new FhirRepository(store, checker);
  const issuer = await loadDevIssuer(config.dataDir);
  // The ordering service is used by the consortium ledger; until then the gateway only checks it is reachable.
  const brokers = config.kafkaBrokers;
  const readiness = brokers ? { kafka: () => kafkaReachable({ brokers }) } : undefined;
  const app = createApp({ repo, issuer, baseUrl: config.baseUrl, maxBodyBytes: config.maxBodyBytes, readiness });
  const close = async () => {
    await checker.close();
    await store.close();
  };
  return { config, store, repo, issuer, app, close };
}

/** Listens on the configured host and port; resolves with the server once it accepts connections. */
export function listen(gateway: Gateway): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = gateway.app.listen(gateway.config.port, gateway.config.host, (err?: Error) => (err ? reject(err) : resolve(server)));
  });
}
