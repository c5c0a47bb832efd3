/** Runtime configuration from the environment (see the README's configuration table). */
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { kafkaSecurity, type KafkaSecurity } from './adapters/kafka/security.ts';
import { keySource, type KeySource } from './vault/keyring.ts';
import { ERASE_APPROVALS, type EraseApproval } from './audit/erasure.ts';

/**
 * `production` refuses key placements that put keys next to the data they protect (docs/security.md, "Key
 * placement"); `dev` allows them, as the embedded default `npm start` needs.
 */
export type GatewayMode = 'dev' | 'production';

export interface GatewayConfig {
  host: string;
  port: number;
  dataDir: string;
  /** Public FHIR base URL, e.g. https://gw.example.org/fhir; derived from requests when unset. */
  baseUrl?: string;
  /** Proxies (IPs or CIDRs) whose Forwarded / X-Forwarded-Host / X-Forwarded-Proto headers give the base URL. */
  trustedProxies?: string[];
  maxBodyBytes: number;
  /** Worker threads for validation and digests (default: one per core beyond the first; 0 = inline). */
  workers?: number;
  /** MongoDB vault instead of the embedded SQLite one. */
  mongodb?: { uri: string; database: string };
  /** Kafka brokers of the consortium's ordering service (the Kafka orderer); unset ⇒ the embedded solo orderer. */
  kafkaBrokers?: string[];
  /** Replication of the channel topic when this gateway creates it: 3 and 2 in production, 1 and 1 on one broker. */
  kafkaReplication?: { replicationFactor: number; minInsyncReplicas: number };
  /** The consortium directory (`medblock consortium init`); unset ⇒ a consortium of one in `<dataDir>/consortium`. */
  consortiumDir?: string;
  /** Overrides the consortium's batch timeout (how long a lone envelope waits before this member asks for a cut). */
  ledgerBatchTimeoutMs?: number;
  /** This hospital's id in the consortium; bound into every ciphertext's authenticated data. */
  hospitalId: string;
  /** Where the master key ring comes from. */
  masterKey: KeySource;
  /** MEDBLOCK_ERASE_APPROVAL: whether `$erase` needs a second user to confirm it (default none). */
  eraseApproval?: EraseApproval;
  /** TLS and SASL towards the Kafka brokers (MEDBLOCK_KAFKA_TLS, MEDBLOCK_KAFKA_SASL_*…). */
  kafkaSecurity?: KafkaSecurity;
  /** MEDBLOCK_FEDERATION_PORT / _HOST: the gateway-to-gateway listener (mutual TLS); unset port ⇒ none. */
  federation?: { host: string; port: number };
  /** MEDBLOCK_FEDERATION_TIMEOUT_MS: how long a federated $everything waits for each holder (all its pages); unset ⇒ 5000. */
  federationTimeoutMs?: number;
  /** Unset ⇒ {@link gatewayMode}'s inference: production with MongoDB or Kafka, dev for the embedded default. */
  mode?: GatewayMode;
}

/**
 * The mode a configuration runs in: the explicit one (MEDBLOCK_MODE), else production as soon as it names a
 * production engine (MEDBLOCK_MONGODB_URI or MEDBLOCK_KAFKA_BROKERS), else dev (the embedded default).
 */
export function gatewayMode(config: Pick<GatewayConfig, 'mode' | 'mongodb' | 'kafkaBrokers'>): GatewayMode {
  return config.mode ?? (config.mongodb || config.kafkaBrokers ? 'production' : 'dev');
}

function explicitMode(raw: string | undefined): GatewayMode | undefined {
  const mode = raw?.trim();
  if (!mode) return undefined;
  if (mode !== 'dev' && mode !== 'production') throw new Error('MEDBLOCK_MODE must be dev or production');
  return mode;
}

/** The database named in a MongoDB URI's path (`mongodb://h1,h2/hospital_a?replicaSet=rs0`), if any. */
export function mongoDatabase(uri: string): string | undefined {
  const m = /^mongodb(?:\+srv)?:\/\/[^/]+\/([^?]+)/.exec(uri);
  return m ? decodeURIComponent(m[1]) : undefined;
}

function integer(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name} must be an integer between ${min} and ${max}`);
  return n;
}

function kafkaReplication(env: NodeJS.ProcessEnv): GatewayConfig['kafkaReplication'] {
  const replicationFactor = integer(env, 'MEDBLOCK_KAFKA_REPLICATION_FACTOR', 3, 1, 32);
  const minInsyncReplicas = integer(env, 'MEDBLOCK_KAFKA_MIN_INSYNC_REPLICAS', Math.min(2, replicationFactor), 1, replicationFactor);
  return { replicationFactor, minInsyncReplicas };
}

/** MEDBLOCK_TRUSTED_PROXIES: comma-separated IP addresses or CIDRs (express's `trust proxy` syntax). */
function trustedProxies(raw: string | undefined): string[] | undefined {
  const list = raw?.split(',').map((p) => p.trim()).filter(Boolean);
  if (!list?.length) return undefined;
  for (const entry of list) {
    const [address, prefix, ...rest] = entry.split('/');
    const version = isIP(address);
    const bits = version === 4 ? 32 : 128;
    if (!version || rest.length > 0 || (prefix !== undefined && !(/^\d{1,3}$/.test(prefix) && Number(prefix) <= bits))) {
      throw new Error('MEDBLOCK_TRUSTED_PROXIES must be comma-separated IP addresses or CIDRs, e.g. 10.0.0.5,172.16.0.0/12');
    }
  }
  return list;
}

/** The federation listener, when MEDBLOCK_FEDERATION_PORT is set: on MEDBLOCK_FEDERATION_HOST, else HOST. */
function federationListener(env: NodeJS.ProcessEnv, host: string, port: number): GatewayConfig['federation'] {
  if (!env.MEDBLOCK_FEDERATION_PORT?.trim()) return undefined;
  const federationPort = integer(env, 'MEDBLOCK_FEDERATION_PORT', 0, 1, 65535);
  const federationHost = env.MEDBLOCK_FEDERATION_HOST?.trim() || host;
  if (federationPort === port) throw new Error('MEDBLOCK_FEDERATION_PORT must differ from PORT: the federation listener is a separate mutual-TLS server');
  return { host: federationHost, port: federationPort };
}

function eraseApproval(raw: string | undefined): EraseApproval {
  const value = raw?.trim() || 'none';
  if (!(ERASE_APPROVALS as readonly string[]).includes(value)) throw new Error(`MEDBLOCK_ERASE_APPROVAL must be one of ${ERASE_APPROVALS.join(', ')}`);
  return value as EraseApproval;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): GatewayConfig {
  const mongoUri = env.MEDBLOCK_MONGODB_URI?.trim();
  if (mongoUri && !/^mongodb(\+srv)?:\/\//.test(mongoUri)) throw new Error('MEDBLOCK_MONGODB_URI must start with mongodb:// or mongodb+srv://');
  const hospitalId = env.MEDBLOCK_HOSPITAL_ID?.trim() || 'local';
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(hospitalId)) {
    throw new Error('MEDBLOCK_HOSPITAL_ID must be 1-64 letters, digits, dots, dashes or underscores');
  }
  const dataDir = resolve(env.MEDBLOCK_DATA_DIR || './data');
  const brokers = env.MEDBLOCK_KAFKA_BROKERS?.split(',').map((b) => b.trim()).filter(Boolean);
  const host = env.HOST || '127.0.0.1';
  const port = integer(env, 'PORT', 8080, 0, 65535);
  return {
    host,
    port,
    dataDir,
    baseUrl: env.MEDBLOCK_BASE_URL?.replace(/\/+$/, '') || undefined,
    trustedProxies: trustedProxies(env.MEDBLOCK_TRUSTED_PROXIES),
    maxBodyBytes: integer(env, 'MEDBLOCK_MAX_BODY_MB', 64, 1, 1024) * 1024 * 1024,
    workers: env.MEDBLOCK_WORKERS ? integer(env, 'MEDBLOCK_WORKERS', 0, 0, 64) : undefined,
    mongodb: mongoUri ? { uri: mongoUri, database: mongoDatabase(mongoUri) ?? 'medblock' } : undefined,
    kafkaBrokers: brokers?.length ? brokers : undefined,
    kafkaReplication: kafkaReplication(env),
    consortiumDir: env.MEDBLOCK_CONSORTIUM_DIR ? resolve(env.MEDBLOCK_CONSORTIUM_DIR) : undefined,
    ledgerBatchTimeoutMs: env.MEDBLOCK_LEDGER_BATCH_TIMEOUT_MS ? integer(env, 'MEDBLOCK_LEDGER_BATCH_TIMEOUT_MS', 100, 1, 60_000) : undefined,
    hospitalId,
    masterKey: keySource(dataDir, env),
    eraseApproval: eraseApproval(env.MEDBLOCK_ERASE_APPROVAL),
    kafkaSecurity: brokers?.length ? kafkaSecurity(env) : undefined,
    federationTimeoutMs: integer(env, 'MEDBLOCK_FEDERATION_TIMEOUT_MS', 5000, 100, 120_000),
    mode: explicitMode(env.MEDBLOCK_MODE),
    federation: federationListener(env, host, port),
  };
}
