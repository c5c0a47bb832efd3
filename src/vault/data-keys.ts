/**
 * Envelope encryption keys: one random AES-256 data key per patient compartment (and per resource outside
 * any compartment), stored wrapped under the hospital master key; plus the blind-index keys (index-keys.ts),
 * wrapped the same way so every gateway of a hospital sharing one database uses the same index keys.
 */
import type { KeyEntry, ResourceStore } from './store.ts';
import { newKey, open, seal, SealError } from './seal.ts';
import type { MasterKeyring } from './keyring.ts';

/** The data key was destroyed by an erasure: whatever it sealed is unreadable for good. */
export class KeyErasedError extends Error {
  constructor(readonly keyId: string, readonly erasedAt: string) {
    super('the data key was destroyed (erased)');
    this.name = 'KeyErasedError';
  }
}

/** A data key cannot be unwrapped: the configured master key or hospital id does not belong to this vault. */
export class KeyUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeyUnavailableError';
  }
}

export function wrapAad(hospitalId: string, keyId: string, masterKeyId: string): string {
  return `medblock-data-key/1\0${hospitalId}\0${keyId}\0${masterKeyId}`;
}

interface Cached {
  key?: Buffer;
  erasedAt?: string;
  until: number;
}

/**
 * Unwrapped keys are cached briefly: an erasure done by another gateway on the same database takes effect
 * here within CACHE_MS (this gateway's own erasures take effect at once).
 */
const CACHE_MS = 30_000;
const CACHE_MAX = 50_000;

export class DataKeys {
  private readonly cache = new Map<string, Cached>();

  constructor(
    private readonly store: ResourceStore,
    private readonly ring: MasterKeyring,
    readonly hospitalId: string,
  ) {}

  private unwrap(entry: KeyEntry): Buffer {
    if (entry.erasedAt !== null) throw new KeyErasedError(entry.keyId, entry.erasedAt);
    const master = this.ring.key(entry.masterKeyId!);
    if (!master) {
      throw new KeyUnavailableError(
        `data key ${entry.keyId} is wrapped under master key ${entry.masterKeyId}, which the configured key ring does not hold`,
      );
    }
    try {
      return open(master, entry.wrapped!, wrapAad(this.hospitalId, entry.keyId, entry.masterKeyId!));
    } catch (e) {
      if (!(e instanceof SealError)) throw e;
      throw new KeyUnavailableError(`data key ${entry.keyId} does not open with master key ${entry.masterKeyId} for hospital '${this.hospitalId}'`);
    }
  }

  private remember(keyId: string, value: Omit<Cached, 'until'>): void {
    if (this.cache.size >= CACHE_MAX) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(keyId, { ...value, until: Date.now() + CACHE_MS });
  }

  private cached(keyId: string): Buffer | undefined {
    const hit = this.cache.get(keyId);
    if (!hit || hit.until < Date.now()) return undefined;
    if (hit.erasedAt !== undefined) throw new KeyErasedError(keyId, hit.erasedAt);
    return hit.key!;
  }

  /** The key for reading; KeyErasedError if destroyed, undefined if it never existed. */
  async forRead(keyId: string): Promise<Buffer | undefined> {
    const hit = this.cached(keyId);
    if (hit) return hit;
    const entry = await this.store.getKey(keyId);
    if (!entry) return undefined;
    return this.load(entry);
  }

  private load(entry: KeyEntry): Buffer {
    try {
      const key = this.unwrap(entry);
      this.remember(entry.keyId, { key });
      return key;
    } catch (e) {
      if (e instanceof KeyErasedError) this.remember(entry.keyId, { erasedAt: e.erasedAt });
      throw e;
    }
  }

  /**
   * The keys for sealing new content, created (and stored wrapped) on first use, all new ones in one store
   * round trip; KeyErasedError if one was destroyed.
   */
  async forWrite(keyIds: string[]): Promise<Map<string, Buffer>> {
    const keys = new Map<string, Buffer>();
    const unknown: string[] = [];
    for (const keyId of new Set(keyIds)) {
      const hit = this.cached(keyId);
      if (hit) keys.set(keyId, hit);
      else unknown.push(keyId);
    }
    if (unknown.length === 0) return keys;
    const missing: string[] = [];
    for (const [i, entry] of (await Promise.all(unknown.map((k) => this.store.getKey(k)))).entries()) {
      if (entry) keys.set(entry.keyId, this.load(entry));
      else missing.push(unknown[i]);
    }
    if (missing.length === 0) return keys;
    // A rotation started elsewhere must be seen before wrapping, or a new key could land under a retiring master.
    this.ring.refresh();
    const master = this.ring.current;
    const createdAt = new Date().toISOString();
    const stored = await this.store.insertKeys(
      missing.map((keyId) => ({ keyId, masterKeyId: master.id, wrapped: seal(master.key, newKey(), wrapAad(this.hospitalId, keyId, master.id)), createdAt })),
    );
    // Another gateway may have created some first: use whatever the store kept.
    for (const entry of stored) keys.set(entry.keyId, this.load(entry));
    return keys;
  }

  /** Marks a key destroyed in this process at once (the store tombstone does it for everyone). */
  destroyed(keyId: string, erasedAt: string): void {
    this.remember(keyId, { erasedAt });
  }
}
