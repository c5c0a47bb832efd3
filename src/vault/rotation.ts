/**
 * Master key rotation: every data key is re-wrapped under a new master key; no resource is re-encrypted.
 * Online (gateways keep serving: they unwrap with either key and wrap new keys under the new one as soon as
 * the key file names it current) and resumable (the ring records the retiring keys until the sweep is
 * done, so a rotation interrupted at any point continues where the store says it stopped).
 */
import { open, seal } from './seal.ts';
import { wrapAad } from './data-keys.ts';
import type { MasterKeyring } from './keyring.ts';
import type { ResourceStore } from './store.ts';

export interface RotationProgress {
  rewrapped: number;
  /** Keys a concurrent erasure or rotation changed first (left as they are). */
  skipped: number;
}

export interface RotationOptions {
  batchSize: number;
  /** Upper bound on re-wraps per second, to spare a production database (0 = unlimited). */
  maxRate: number;
  newKey?: Buffer;
  onProgress?: (p: RotationProgress) => void;
}

export async function rotateMasterKey(
  store: ResourceStore,
  ring: MasterKeyring,
  hospitalId: string,
  options: RotationOptions,
): Promise<RotationProgress & { masterKeyId: string; resumed: boolean; retired: string[] }> {
  const { id: target, resumed } = ring.beginRotation(options.newKey);
  const progress: RotationProgress = { rewrapped: 0, skipped: 0 };
  const started = Date.now();
  const next = ring.current;
  // Sweep until a whole pass from the start finds nothing: keys created during the sweep, behind its cursor,
  // by a gateway that had not yet re-read the key file, are caught by the next pass.
  for (;;) {
    let seen = 0;
    let afterKeyId: string | undefined;
    for (;;) {
      const batch = await store.listKeys({ notWrappedUnder: target, afterKeyId, limit: options.batchSize });
      if (batch.length === 0) break;
      for (const entry of batch) {
        seen++;
        const from = entry.masterKeyId!;
        const master = ring.key(from);
        if (!master) throw new Error(`data key ${entry.keyId} is wrapped under master key ${from}, which the key file does not hold`);
        const key = open(master, entry.wrapped!, wrapAad(hospitalId, entry.keyId, from));
        const wrapped = seal(next.key, key, wrapAad(hospitalId, entry.keyId, next.id));
        if (await store.rewrapKey(entry.keyId, from, { masterKeyId: next.id, wrapped })) progress.rewrapped++;
        else progress.skipped++;
        if (options.maxRate > 0) {
          const due = started + ((progress.rewrapped + progress.skipped) * 1000) / options.maxRate;
          if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
        }
      }
      afterKeyId = batch[batch.length - 1].keyId;
      options.onProgress?.({ ...progress });
    }
    if (seen === 0) break;
  }
  const retired = ring.finishRotation();
  return { ...progress, masterKeyId: target, resumed, retired };
}
