/** `medblock keys …`: master and index key rotation and key status, against the data dir or MongoDB the env names. */
import { readFileSync } from 'node:fs';
import type { GatewayConfig } from '../config.ts';
import { resourceIndexTerms } from '../fhir/write-session.ts';
import { knownResourceTypes } from '../fhir/validation/index.ts';
import type { FhirResource } from '../fhir/resource-version.ts';
import { loadConsortium, openDatabaseStore, openVault } from '../gateway.ts';
import { rotateIndexKey } from '../vault/index-rotation.ts';
import { MasterKeyring } from '../vault/keyring.ts';
import { rotateMasterKey } from '../vault/rotation.ts';

export async function runRotate(
  config: GatewayConfig,
  opts: { batchSize: number; maxRate: number; newKeyFile?: string },
): Promise<number> {
  const ring = MasterKeyring.open(config.masterKey);
  if (!ring.file) {
    process.stderr.write('medblock keys rotate: the master key comes from MEDBLOCK_MASTER_KEY; rotation needs a key file (MEDBLOCK_MASTER_KEY_FILE)\n');
    return 2;
  }
  const newKey = opts.newKeyFile ? Buffer.from(readFileSync(opts.newKeyFile, 'utf8').trim(), 'base64') : undefined;
  const store = openDatabaseStore(config);
  await store.init();
  try {
    const result = await rotateMasterKey(store, ring, config.hospitalId, {
      batchSize: opts.batchSize,
      maxRate: opts.maxRate,
      newKey,
      onProgress: (p) => process.stderr.write(`re-wrapped ${p.rewrapped} data keys (${p.skipped} changed concurrently)\n`),
    });
    process.stdout.write(
      `${result.resumed ? 'resumed and finished' : 'finished'} rotation to master key ${result.masterKeyId}: ` +
        `${result.rewrapped} data keys re-wrapped, ${result.skipped} skipped; retired ${result.retired.join(', ') || 'none'}\n`,
    );
    return 0;
  } finally {
    await store.close();
  }
}

export async function runRotateIndex(config: GatewayConfig, opts: { batchSize: number; maxRate: number }): Promise<number> {
  // With the consortium: Patients' reserved link terms are re-derived too.
  const consortium = await loadConsortium(config);
  const vault = openVault(config, () => consortium);
  await vault.init();
  try {
    const result = await rotateIndexKey(vault, {
      ...opts,
      types: knownResourceTypes(),
      termsOf: (type, resource) => resourceIndexTerms(type, resource as FhirResource),
      onProgress: (p) => process.stderr.write(`re-indexed ${p.reindexed} resources (${p.skipped} changed concurrently)\n`),
    });
    process.stdout.write(
      `${result.resumed ? 'resumed and finished' : 'finished'} index key rotation to generation ${result.generation}: ` +
        `${result.reindexed} resources re-indexed, ${result.skipped} skipped; retired generation ${result.retired.join(', ') || 'none'}\n`,
    );
    return 0;
  } finally {
    await vault.close();
  }
}

export async function runKeyStatus(config: GatewayConfig): Promise<number> {
  const ring = MasterKeyring.open(config.masterKey);
  const store = openDatabaseStore(config);
  await store.init();
  try {
    const pending = await store.listKeys({ notWrappedUnder: ring.current.id, limit: 1_000_000 });
    const lines = [
      `master key: ${ring.current.id} (${ring.file ? `key file ${ring.file}` : 'MEDBLOCK_MASTER_KEY'})`,
      `retiring: ${ring.retiringIds.join(', ') || 'none'}`,
      `data keys not yet under the current master key: ${pending.length}`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
    return ring.retiringIds.length > 0 || pending.length > 0 ? 1 : 0;
  } finally {
    await store.close();
  }
}
