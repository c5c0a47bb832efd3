/**
 * The vault: a ResourceStore decorator that seals every resource version (AES-256-GCM under its
 * compartment's data key, AAD binding hospital, type, id, version and key) and turns every index term into a
 * keyed blind index before anything reaches the adapter, and undoes both on the way out. The adapters below
 * only ever see ciphertext and blind-index tokens. Each version's commitment salt is sealed with its content
 * and the patient locator token is derived from the patient's data key (vault/commitment.ts), so erasing the
 * key leaves neither. The anchor outbox passes through in the clear (commitments, locator tokens, anchor
 * locations): the ledger publisher reads it without any key.
 */
import { BlindIndex } from './blind-index.ts';
import { DataKeys, INDEX_KEY_ID, KeyErasedError } from './data-keys.ts';
import { SealError } from './seal.ts';
import { isPatientOwner, locatorTokens, openVersion, sealVersion } from './commitment.ts';
import { HEAD_KEY_ID, HEAD_STATE_FORMAT, HeadMac } from './head-mac.ts';
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
  UnanchoredVersion,
  VersionWrite,
} from './store.ts';

/** The blind-index term whose token names an owner's data key. */
function keyIdTerm(owner: string): { type: string; param: string; value: string } {
  return { type: '', param: '_key', value: owner };
}

const keyIdOf = (token: string): string => `k-${token}`;

/** A stored version failed authentication: it was altered or moved, or the keys do not belong to it. */
export class TamperedContentError extends Error {
  constructor(readonly type: string, readonly id: string, readonly versionId: number) {
    super(`${type}/${id} version ${versionId} fails authentication: it was altered, moved, or sealed under another key`);
    this.name = 'TamperedContentError';
  }
}

/** The current state of a resource failed authentication: its pointer or deleted flag was altered or rolled back. */
export class HeadStateError extends TamperedContentError {
  constructor(type: string, id: string, versionId: number, readonly reason: string) {
    super(type, id, versionId);
    this.name = 'HeadStateError';
    this.message = `${type}/${id} current state (version ${versionId}) fails authentication: ${reason}`;
  }
}

export function contentAad(hospitalId: string, type: string, id: string, versionId: number, keyId: string): string {
  return `medblock-resource/2\0${hospitalId}\0${type}\0${id}\0${versionId}\0${keyId}`;
}

export class EncryptedStore implements ErasableStore {
  readonly keys: DataKeys;
  private index!: BlindIndex;
  private head!: HeadMac;

  constructor(
    readonly inner: ResourceStore,
    ring: MasterKeyring,
    readonly hospitalId: string,
  ) {
    this.keys = new DataKeys(inner, ring, hospitalId);
  }

  get pipelinedCommits(): boolean {
    return this.inner.pipelinedCommits;
  }

  async init(): Promise<void> {
    await this.inner.init();
    const [headKey, indexKey] = await Promise.all([this.inner.getKey(HEAD_KEY_ID), this.inner.getKey(INDEX_KEY_ID)]);
    if (!headKey && indexKey) {
      throw new Error(
        `this vault predates authenticated head state (${HEAD_STATE_FORMAT}): its current pointers carry no MACs and cannot be ` +
          'trusted silently; import the data into a new vault (see docs/security.md, "Head state")',
      );
    }
    // The head key strictly before the index key, so that a gateway starting beside this one never sees the
    // index key without the head key (the marker above).
    this.head = new HeadMac((await this.keys.forWrite([HEAD_KEY_ID])).get(HEAD_KEY_ID)!, this.hospitalId);
    this.index = new BlindIndex((await this.keys.forWrite([INDEX_KEY_ID])).get(INDEX_KEY_ID)!);
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  ping(): Promise<boolean> {
    return this.inner.ping();
  }

  /** The data key id of a compartment owner (`Patient/123`) or a resource (`Organization/7`): a blind token. */
  keyIdFor(owner: string): string {
    const { type, param, value } = keyIdTerm(owner);
    return keyIdOf(this.index.token(type, param, value));
  }

  /** The ledger locator token of a patient (`Patient/123`); undefined when the vault holds no live key for them. */
  async locatorTokenFor(owner: string): Promise<string | undefined> {
    const key = await this.keys.forRead(this.keyIdFor(owner)).catch((e: unknown) => {
      if (e instanceof KeyErasedError) return undefined;
      throw e;
    });
    return key && locatorTokens(this.hospitalId)(owner, key);
  }

  async commit(writes: VersionWrite[]): Promise<void> {
    // Every blind token of the batch in one AES pass: the key ids (as keyIdFor), then each write's terms.
    const inputs: Array<{ type: string; param: string; value: string }> = [];
    for (const w of writes) if (w.record.content) inputs.push(keyIdTerm(w.owner ?? `${w.record.type}/${w.record.id}`));
    for (const w of writes) for (const t of w.terms) inputs.push({ type: w.record.type, param: t.param, value: t.value });
    const tokens = this.index.tokensOf(inputs);
    let next = 0;
    const keyIds = writes.map((w) => (w.record.content ? keyIdOf(tokens[next++]) : undefined));
    const keys = await this.keys.forWrite(keyIds.filter((k): k is string => k !== undefined));
    const locator = locatorTokens(this.hospitalId);
    const sealed = writes.map((w, i): VersionWrite => {
      const r = w.record;
      const keyId = keyIds[i];
      // The salt goes inside the ciphertext; the commitment (digest) and the locator token are what the ledger gets.
      const key = keyId && keys.get(keyId)!;
      const record = key
        ? {
            ...r,
            keyId,
            content: sealVersion(key, r.content!, r.salt, contentAad(this.hospitalId, r.type, r.id, r.versionId, keyId)),
            salt: undefined,
            patientToken: isPatientOwner(w.owner) ? locator(w.owner, key) : undefined,
          }
        : { ...r };
      const terms = w.terms.map((t) => ({ param: t.param, value: tokens[next++] }));
      return { record, terms, expectedVersion: w.expectedVersion, headMac: this.head.mac(r.type, r.id, r.versionId, r.deleted) };
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
      return { ...stored, ...openVersion(key, stored.content, contentAad(this.hospitalId, stored.type, stored.id, stored.versionId, stored.keyId)) };
    } catch (e) {
      if (e instanceof SealError) throw new TamperedContentError(stored.type, stored.id, stored.versionId);
      throw e;
    }
  }

  async current(type: string, id: string): Promise<StoredVersion | undefined> {
    const stored = await this.inner.current(type, id);
    return stored && this.checkedHead(stored, type, id);
  }

  /**
   * Why a raw current state (from inner.current or inner.search) is not authentic, or undefined: the head MAC,
   * a newer finished version, and the pointer's hidden flag against the version's deleted flag and its key.
   */
  async headProblem(stored: StoredVersion, type: string, id: string | undefined, opened?: StoredVersion): Promise<string | undefined> {
    const problem = this.head.problem(stored, type, id);
    if (problem || !stored.head) return problem;
    if (!stored.head.hidden && stored.deleted) return 'the resource is deleted, yet its pointer is visible to search (a flipped flag)';
    // Hidden and not deleted is an erased data key; this gateway's key cache may not know of another's erasure yet.
    if (stored.head.hidden && !stored.deleted && !opened?.erased) {
      const key = stored.keyId ? await this.inner.getKey(stored.keyId) : undefined;
      if (key?.erasedAt == null) return 'the resource is hidden from search, yet neither deleted nor erased (a flipped flag)';
    }
    return undefined;
  }

  /** Opens a version read as current state, after authenticating its head (HeadStateError otherwise). */
  private async checkedHead(stored: StoredVersion, type: string, id: string | undefined): Promise<StoredVersion> {
    const opened = await this.unseal(stored);
    const problem = await this.headProblem(stored, type, id, opened);
    if (problem) throw new HeadStateError(stored.type, stored.id, stored.versionId, problem);
    return opened;
  }

  /** The blind-index form of plaintext terms of a resource of `type`, as commit() stores them (verify compares). */
  blindTerms(type: string, terms: IndexTerm[]): IndexTerm[] {
    const tokens = this.index.tokens(type, terms);
    return terms.map((t, i) => ({ param: t.param, value: tokens[i] }));
  }

  indexTerms(type: string, id: string): Promise<IndexTerm[]> {
    return this.inner.indexTerms(type, id);
  }

  async version(type: string, id: string, versionId: number): Promise<StoredVersion | undefined> {
    const stored = await this.inner.version(type, id, versionId);
    return stored && this.unseal(stored);
  }

  private blindQuery(query: StoreQuery): StoreQuery {
    return {
      ...query,
      clauses: query.clauses.map((c) => ({ ...c, anyOf: this.index.tokens(query.type, c.anyOf.map((value) => ({ param: c.param, value }))) })),
    };
  }

  async search(query: StoreQuery): Promise<StoredVersion[]> {
    const rows = await this.inner.search(this.blindQuery(query));
    return Promise.all(rows.map((r) => this.checkedHead(r, query.type, undefined)));
  }

  count(query: StoreQuery): Promise<number> {
    return this.inner.count(this.blindQuery(query));
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

  /** Erasing again finishes an interrupted erasure and reports the first erasure's time. */
  async eraseOwner(owner: string, erasedAt: string): Promise<{ resources: number; erasedAt: string }> {
    const keyId = this.keyIdFor(owner);
    const { resources } = await this.eraseKey(keyId, erasedAt);
    const tombstone = await this.inner.getKey(keyId);
    return { resources, erasedAt: tombstone?.erasedAt ?? erasedAt };
  }
}
