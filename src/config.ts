/** Runtime configuration from the environment (see the README's configuration table). */
import { resolve } from 'node:path';

export interface GatewayConfig {
  host: string;
  port: number;
  dataDir: string;
  /** Public FHIR base URL, e.g. https://gw.example.org/fhir; derived from requests when unset. */
  baseUrl?: string;
  maxBodyBytes: number;
  /** Worker threads for validation and digests (default: one per core beyond the first; 0 = inline). */
  workers?: number;
}

function integer(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name} must be an integer between ${min} and ${max}`);
  return n;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): GatewayConfig {
  for (const name of ['MEDBLOCK_MONGODB_URI', 'MEDBLOCK_KAFKA_BROKERS']) {
    if (env[name]) {
      throw new Error(`${name} is set, but this build has only the embedded default (SQLite vault, solo orderer); unset it`);
    }
  }
  return {
    host: env.HOST || '127.0.0.1',
    port: integer('PORT', 8080, 0, 65535),
    dataDir: resolve(env.MEDBLOCK_DATA_DIR || './data'),
    baseUrl: env.MEDBLOCK_BASE_URL?.replace(/\/+$/, '') || undefined,
    maxBodyBytes: integer('MEDBLOCK_MAX_BODY_MB', 64, 1, 1024) * 1024 * 1024,
    workers: env.MEDBLOCK_WORKERS ? integer('MEDBLOCK_WORKERS', 0, 0, 64) : undefined,
  };
}
