/**
 * What a gateway in production mode refuses to start with (docs/security.md, "Key placement"): keys stored
 * beside the data they protect, so that one copy of MEDBLOCK_DATA_DIR (a backup, a stolen disk, a volume
 * snapshot) would hold both; the consortium CA's private key on a gateway; a plaintext orderer channel.
 * The embedded default runs in dev mode, where the same placements are allowed for `npm start`.
 */
import { existsSync, realpathSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { plaintextProblem } from './adapters/kafka/security.ts';
import type { GatewayConfig } from './config.ts';

/** The path with symbolic links resolved as far as it exists (a key file may not exist yet). */
function realPath(path: string): string {
  const absolute = resolve(path);
  if (existsSync(absolute)) return realpathSync(absolute);
  const parent = dirname(absolute);
  return parent === absolute ? absolute : join(realPath(parent), absolute.slice(parent.length));
}

export function isInside(path: string, dir: string): boolean {
  const rel = relative(realPath(dir), realPath(path));
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

/** The CA's private key where `medblock consortium init` writes it. */
export function caKeyFile(consortiumDir: string): string {
  return join(consortiumDir, 'ca', 'ca.key');
}

/** Every placement production refuses in this configuration, each with its fix; empty when none. */
export function productionProblems(config: GatewayConfig): string[] {
  const problems: string[] = [];
  const keyFile = config.masterKey.envKey ? undefined : config.masterKey.file;
  if (keyFile && isInside(keyFile, config.dataDir)) {
    problems.push(
      `the master key file ${keyFile} is inside MEDBLOCK_DATA_DIR: keep it apart from the data, e.g. a mounted secret ` +
        'named by MEDBLOCK_MASTER_KEY_FILE, or MEDBLOCK_MASTER_KEY',
    );
  } else if (keyFile && !existsSync(keyFile)) {
    // A mistyped secret path would otherwise get a fresh key, and the vault data it encrypts would be lost with it.
    problems.push(`MEDBLOCK_MASTER_KEY_FILE ${keyFile} does not exist: create it first (32 random bytes in base64, e.g. openssl rand -base64 32)`);
  }
  if (!config.consortiumDir) {
    problems.push(
      'MEDBLOCK_CONSORTIUM_DIR is unset, so a consortium of one would be created in MEDBLOCK_DATA_DIR with its CA key: create it with ' +
        '`medblock consortium init` and give the gateway consortium.json, ca/ca.crt and its own member directory',
    );
  } else {
    if (isInside(config.consortiumDir, config.dataDir)) {
      problems.push(`MEDBLOCK_CONSORTIUM_DIR ${config.consortiumDir} (this member's signing and patient-token keys) is inside MEDBLOCK_DATA_DIR: move it out`);
    }
    if (existsSync(caKeyFile(config.consortiumDir))) {
      problems.push(
        `the consortium CA's private key ${caKeyFile(config.consortiumDir)} is on this gateway: a gateway needs only ca/ca.crt; ` +
          'keep ca/ca.key with the CA operator, offline',
      );
    }
  }
  if (config.kafkaBrokers) {
    const plaintext = plaintextProblem(config.kafkaSecurity);
    if (plaintext) problems.push(plaintext);
  }
  return problems;
}

export function productionRefusal(problems: string[]): Error {
  return new Error(
    `production mode (MEDBLOCK_MONGODB_URI or MEDBLOCK_KAFKA_BROKERS set, or MEDBLOCK_MODE=production) refuses to start: ` +
      `${problems.join('; ')}. See docs/security.md, "Key placement"; MEDBLOCK_MODE=dev allows this for development only`,
  );
}
