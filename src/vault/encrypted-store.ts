/**
 * The vault: a ResourceStore decorator that seals every resource version (AES-256-GCM under its
 * compartment's data key, AAD binding hospital, type, id, version and key) and turns every index term into a
 * keyed blind index before anything reaches the adapter, and undoes both on the way out. The adapters below
 * only ever see ciphertext and blind-index tokens. The anchor outbox passes through in the clear (digests,
 * pseudonymous patient tokens, anchor locations): the ledger publisher reads it without any key.
 */
import type { BlindIndex } from './blind-index.ts';
import { DataKeys, KeyErasedError } from './data-keys.ts';
import { IndexKeys } from './index-keys.ts';
import { open, seal, SealError } from './seal.ts';
import type { MasterKeyring } from './keyring.ts';
import type {
  AnchorMark,
  ErasableStore,
  HistoryQuery,
  IndexTerm,
  KeyEntry,
  NewKey,
  ResourceStore,
  StoreQuery,
  StoredVersion,
  TypedTerm,
  UnanchoredVersion,
  VersionWrite,
} from './store.ts';

/** An owner's data key id: a blind token under the never-rotated key-id key (index-keys.ts). */
const keyIdOf = (keyIds: BlindIndex, owner: string): string => `k-${keyIds.token('', '_key', owner)}`;

/** A stored version failed authentication: it was altered or moved, or the keys do not belong to it. */
export class TamperedContentError extends Error {
  constructor(readonly type: string, readonly id: string, readonly versionId: number) {
    super(`${type}/${id} version ${versionId} fails authentication: it was altered, moved, or sealed under another key`);
    this.name = 'TamperedContentError';
  }
}

export function contentAad(hospitalId: string, type: string, id: string, versionId: number, keyId: string): string {
  return `medblock-resource/1\0${hospitalId}\0${type}\0${id}\0${versionId}\0${keyId}`;
}

export class EncryptedStore implements ErasableStore {
  readonly keys: DataKeys;
  readonly indexKeys: IndexKeys;
  private keyIds!: BlindIndex;

  constructor(
    readonly inner: ResourceStore,
    ring: MasterKeyring,
    readonly hospitalId: string,
  ) {
    this.keys = new DataKeys(inner, ring, hospitalId);
    this.indexKeys = new IndexKeys(inner, this.keys);
  }

  get pipelinedCommits(): boolean {
    return this.inner.pipelinedCommits;
  }

  async init(): Promise<void> {
    await this.inner.init();
    this.keyIds = await this.indexKeys.keyIdIndex();
    await this.indexKeys.load();
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  ping(): Promise<boolean> {
    return this.inner.ping();
  }

  /** The data key id of a compartment owner (`Patient/123`) or a resource (`Organization/7`): a blind token. */
  keyIdFor(owner: string): string {
    return keyIdOf(this.keyIds, owner);
  }

  async commit(writes: VersionWrite[]): Promise<void> {
    await this.indexKeys.fresh();
    const generation = this.indexKeys.writer;
    // Every term token of the batch at once (equal terms computed once), then each write's marker term.
    const tokens = generation.index.tokensOf(writes.flatMap((w) => w.terms.map((t) => ({ type: w.record.type, param: t.param, value: t.value }))));
    let next = 0;
    const keyIds = writes.map((w) => (w.record.content ? this.keyIdFor(w.owner ?? `${w.record.type}/${w.record.id}`) : undefined));
    const keys = await this.keys.forWrite(keyIds.filter((k): k is string => k !== undefined));
    const sealed = writes.map((w, i): VersionWrite => {
      const r = w.record;
      const keyId = keyIds[i];
      // Everything but the content stays as it is: digest and patientToken are what the ledger gets anyway.
      const record = keyId
        ? { ...r, keyId, content: seal(keys.get(keyId)!, r.content!, contentAad(this.hospitalId, r.type, r.id, r.versionId, keyId)) }
        : { ...r };
      const terms = w.terms.map((t) => ({ param: t.param, value: tokens[next++] }));
      if (r.content) terms.push(this.indexKeys.marker(generation, r.type));
      return { record, terms, expectedVersion: w.expectedVersion };
    });
    await this.inner.commit(sealed);
  }

  /** Opens one raw version read from the adapter (verify reads raw rows, so one bad record is one problem). */
  async unseal(stored: StoredVersion): Promise<StoredVersion> {
    if (!stored.content) return stored;
    if (!stored.keyId) throw new TamperedContentError(stored.type, stored.id, stored.versionId);
    let key: Buffer | undefined;
    try {
      key = await this.keys.forRead(stored.keyId);
    } catch (e) {
      if (e instanceof KeyErasedError) return { ...stored, content: null, erased: true };
      throw e;
    }
    if (!key) throw new TamperedContentError(stored.type, stored.id, stored.versionId);
    try {
      return { ...stored, content: open(key, stored.content, contentAad(this.hospitalId, stored.type, stored.id, stored.versionId, stored.keyId)) };
    } catch (e) {
      if (e instanceof SealError) throw new TamperedContentError(stored.type, stored.id, stored.versionId);
      throw e;
    }
  }

  async current(type: string, id: string): Promise<StoredVersion | undefined> {
    const stored = await this.inner.current(type, id);
    return stored && this.unseal(stored);
  }

  async version(type: string, id: string, versionId: number): Promise<StoredVersion | undefined> {
    const stored = await this.inner.version(type, id, versionId);
    return stored && this.unseal(stored);
  }

  /** A clause's values blinded under every live index generation (a resource's terms are under exactly one). */
  private async blindQuery(query: StoreQuery): Promise<StoreQuery> {
    await this.indexKeys.fresh();
    const blind = (param: string, values: string[]) =>
      this.indexKeys.readers.flatMap((g) => g.index.tokens(query.type, values.map((value) => ({ param, value }))));
    return { ...query, clauses: query.clauses.map((c) => ({ ...c, anyOf: blind(c.param, c.anyOf) })) };
  }

  async search(query: StoreQuery): Promise<StoredVersion[]> {
    const rows = await this.inner.search(await this.blindQuery(query));
    return Promise.all(rows.map((r) => this.unseal(r)));
  }

  async count(query: StoreQuery): Promise<number> {
    return this.inner.count(await this.blindQuery(query));
  }

  /** Plaintext terms in, blinded under the current write generation (index-rotation.ts blinds its own). */
  async replaceTerms(type: string, id: string, versionId: number, terms: IndexTerm[]): Promise<boolean> {
    await this.indexKeys.fresh();
    return this.inner.replaceTerms(type, id, versionId, this.indexKeys.blind(this.indexKeys.writer, type, terms));
  }

  /** Plaintext terms in: their index rows under every live generation are deleted. */
  async removeTerms(terms: TypedTerm[]): Promise<void> {
    await this.indexKeys.fresh();
    await this.inner.removeTerms(
      this.indexKeys.readers.flatMap((g) => terms.map((t) => ({ type: t.type, param: t.param, value: g.index.token(t.type, t.param, t.value) }))),
    );
  }

  async history(query: HistoryQuery): Promise<StoredVersion[]> {
    const rows = await this.inner.history(query);
    return Promise.all(rows.map((r) => this.unseal(r)));
  }

  countHistory(query: HistoryQuery): Promise<number> {
    return this.inner.countHistory(query);
  }

  unanchored(query: { afterSeq?: number; limit: number }): Promise<UnanchoredVersion[]> {
    return this.inner.unanchored(query);
  }

  markAnchored(marks: AnchorMark[]): Promise<void> {
    return this.inner.markAnchored(marks);
  }

  insertKey(key: NewKey): Promise<KeyEntry> {
    return this.inner.insertKey(key);
  }

  insertKeys(keys: NewKey[]): Promise<KeyEntry[]> {
    return this.inner.insertKeys(keys);
  }

  getKey(keyId: string): Promise<KeyEntry | undefined> {
    return this.inner.getKey(keyId);
  }

  listKeys(query: { notWrappedUnder: string; afterKeyId?: string; limit: number }): Promise<KeyEntry[]> {
    return this.inner.listKeys(query);
  }

  rewrapKey(keyId: string, fromMasterKeyId: string, next: { masterKeyId: string; wrapped: Uint8Array }): Promise<boolean> {
    return this.inner.rewrapKey(keyId, fromMasterKeyId, next);
  }

  async eraseKey(keyId: string, erasedAt: string): Promise<{ resources: number }> {
    this.keys.destroyed(keyId, erasedAt);
    return this.inner.eraseKey(keyId, erasedAt);
  }

  /**
   * Erasing again finishes an interrupted erasure and reports the first erasure's time. `references` are the
   * terms naming the owner in resources sealed under other keys (e.g. `subject` = `Patient/123` of a
   * resource sealed under another patient's key): they are removed too.
   */
  async eraseOwner(owner: string, erasedAt: string, references: TypedTerm[] = []): Promise<{ resources: number; erasedAt: string }> {
    const keyId = this.keyIdFor(owner);
    const { resources } = await this.eraseKey(keyId, erasedAt);
    await this.removeTerms(references);
    const tombstone = await this.inner.getKey(keyId);
    return { resources, erasedAt: tombstone?.erasedAt ?? erasedAt };
  }
}
