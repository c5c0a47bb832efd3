/**
 * The vault: a ResourceStore decorator that seals every resource version (AES-256-GCM under its
 * compartment's data key, AAD binding hospital, type, id, version and key) and turns every index term into a
 * keyed blind index before anything reaches the adapter, and undoes both on the way out. The adapters below
 * only ever see ciphertext and blind-index tokens. Each version's commitment salt is sealed with its content
 * and the patient and resource locator tokens are derived from the patient's data key (vault/commitment.ts),
 * so erasing the key leaves neither. A Patient version's link tokens (federation, computed by the function the
 * composition root passes in) go to the outbox and into the blind index as the reserved `_link` term. The
 * anchor outbox passes through in the clear (commitments, locator and link tokens, anchor locations): the
 * ledger publisher reads it without any key.
 */
import type { BlindIndex } from './blind-index.ts';
import { DataKeys, KeyErasedError } from './data-keys.ts';
import { IndexKeys, KEY_ID_KEY_ID } from './index-keys.ts';
import { SealError } from './seal.ts';
import { isPatientOwner, locatorTokens, openVersion, sealVersion } from './commitment.ts';
import { MAX_LINK_TOKENS } from '../ledger/envelope.ts';
import { resourceLocatorToken } from '../ledger/patient-token.ts';
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
  TypedTerm,
  UnanchoredVersion,
  VersionRecord,
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

/** The current state of a resource failed authentication: its pointer or deleted flag was altered or rolled back. */
export class HeadStateError extends TamperedContentError {
  constructor(type: string, id: string, versionId: number, readonly reason: string) {
    super(type, id, versionId);
    this.name = 'HeadStateError';
    this.message = `${type}/${id} current state (version ${versionId}) fails authentication: ${reason}`;
  }
}

/**
 * The reserved index parameter of a Patient's link tokens (like `_compartment`): no FHIR search parameter, so
 * the REST API cannot search it; patientsWithLinkToken() does.
 */
export const LINK_PARAM = '_link';
/** Patients read per page by patientsWithLinkToken (one person is rarely held twice at one hospital). */
const LINK_PAGE = 100;

export interface EncryptedStoreOptions {
  /**
   * A Patient's link tokens as of `at` (federation/link-token.ts patientLinkTokens under the consortium's key
   * and systems), sorted. Absent: no link tokens (no federation). The vault does not know the consortium.
   */
  linkTokensOf?: (patient: unknown, at: Date) => string[];
}

export function contentAad(hospitalId: string, type: string, id: string, versionId: number, keyId: string): string {
  return `medblock-resource/2\0${hospitalId}\0${type}\0${id}\0${versionId}\0${keyId}`;
}

export class EncryptedStore implements ErasableStore {
  readonly keys: DataKeys;
  readonly indexKeys: IndexKeys;
  private keyIds!: BlindIndex;
  private head!: HeadMac;

  constructor(
    readonly inner: ResourceStore,
    ring: MasterKeyring,
    readonly hospitalId: string,
    private readonly options: EncryptedStoreOptions = {},
  ) {
    this.keys = new DataKeys(inner, ring, hospitalId);
    this.indexKeys = new IndexKeys(inner, this.keys);
  }

  get pipelinedCommits(): boolean {
    return this.inner.pipelinedCommits;
  }

  async init(): Promise<void> {
    await this.inner.init();
    const [headKey, keyIdKey] = await Promise.all([this.inner.getKey(HEAD_KEY_ID), this.inner.getKey(KEY_ID_KEY_ID)]);
    if (!headKey && keyIdKey) {
      throw new Error(
        `this vault predates authenticated head state (${HEAD_STATE_FORMAT}): its current pointers carry no MACs and cannot be ` +
          'trusted silently; import the data into a new vault (see docs/security.md, "Head state")',
      );
    }
    // The head key strictly before the key-id key, so that a gateway starting beside this one never sees the
    // key-id key without the head key (the marker above).
    this.head = new HeadMac((await this.keys.forWrite([HEAD_KEY_ID])).get(HEAD_KEY_ID)!, this.hospitalId);
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

  /** The ledger locator token of a patient (`Patient/123`); undefined when the vault holds no live key for them. */
  async locatorTokenFor(owner: string): Promise<string | undefined> {
    const key = await this.keys.forRead(this.keyIdFor(owner)).catch((e: unknown) => {
      if (e instanceof KeyErasedError) return undefined;
      throw e;
    });
    return key && locatorTokens(this.hospitalId)(owner, key);
  }

  /**
   * A Patient version's link tokens as of its lastUpdated (so verify and index rotation derive the same ones):
   * [] for its deletion; undefined for other types, or without federation.
   */
  linkTokensOf(record: Pick<VersionRecord, 'type' | 'deleted' | 'content' | 'lastUpdated'>): string[] | undefined {
    if (!this.options.linkTokensOf || record.type !== 'Patient') return undefined;
    if (record.deleted || !record.content) return [];
    return this.patientLinks(JSON.parse(new TextDecoder().decode(record.content)), record.lastUpdated);
  }

  private patientLinks(patient: unknown, lastUpdated: string): string[] {
    // An anchor entry holds at most MAX_LINK_TOKENS; a Patient with more linking identifiers is one to fix at the source.
    return this.options.linkTokensOf!(patient, new Date(lastUpdated)).slice(0, MAX_LINK_TOKENS);
  }

  /**
   * The reserved `_link` index terms (plaintext) a version of this content gets besides its search terms
   * (index rotation and verify add them to what they re-derive); [] for any resource but a Patient.
   */
  linkTerms(type: string, resource: unknown, lastUpdated: string): IndexTerm[] {
    if (!this.options.linkTokensOf || type !== 'Patient') return [];
    return this.patientLinks(resource, lastUpdated).map((value) => ({ param: LINK_PARAM, value }));
  }

  /** Live data keys of patient compartments, read (never created); an erased or unknown key is left out. */
  private async liveKeys(owners: Iterable<string>): Promise<Map<string, Buffer>> {
    const keys = new Map<string, Buffer>();
    await Promise.all([...new Set(owners)].map(async (owner) => {
      const key = await this.keys.forRead(this.keyIdFor(owner)).catch((e: unknown) => {
        if (e instanceof KeyErasedError) return undefined;
        throw e;
      });
      if (key) keys.set(owner, key);
    }));
    return keys;
  }

  async commit(writes: VersionWrite[]): Promise<void> {
    await this.indexKeys.fresh();
    const generation = this.indexKeys.writer;
    const links = writes.map((w) => this.linkTokensOf(w.record));
    const plainTerms = writes.map((w, i) => (links[i]?.length ? [...w.terms, ...links[i]!.map((value) => ({ param: LINK_PARAM, value }))] : w.terms));
    // Every term token of the batch at once (equal terms computed once), then each write's marker term.
    const tokens = generation.index.tokensOf(writes.flatMap((w, i) => plainTerms[i].map((t) => ({ type: w.record.type, param: t.param, value: t.value }))));
    let next = 0;
    const keyIds = writes.map((w) => (w.record.content ? this.keyIdFor(w.owner ?? `${w.record.type}/${w.record.id}`) : undefined));
    const keys = await this.keys.forWrite(keyIds.filter((k): k is string => k !== undefined));
    // A patient's tombstones carry its tokens too, and an erasure record the erased patient's locator: from the
    // patient's key as it is now (read, never created; none once erased).
    const live = await this.liveKeys(writes.flatMap((w) => [...(!w.record.content && isPatientOwner(w.owner) ? [w.owner] : []), ...(w.erases ? [w.erases] : [])]));
    const locator = locatorTokens(this.hospitalId);
    const sealed = writes.map((w, i): VersionWrite => {
      const r = w.record;
      const keyId = keyIds[i];
      // The salt goes inside the ciphertext; the commitment (digest) and the tokens are what the ledger gets.
      const key = keyId && keys.get(keyId)!;
      const patientKey = isPatientOwner(w.owner) ? key || live.get(w.owner) : undefined;
      const erasedKey = w.erases && live.get(w.erases);
      const record: VersionRecord = {
        ...r,
        ...(key && {
          keyId,
          content: sealVersion(key, r.content!, r.salt, contentAad(this.hospitalId, r.type, r.id, r.versionId, keyId)),
          salt: undefined,
        }),
        ...(patientKey && {
          patientToken: locator(w.owner!, patientKey),
          resourceToken: resourceLocatorToken(patientKey, this.hospitalId, `${r.type}/${r.id}`),
        }),
        ...(links[i] && { linkTokens: links[i] }),
        ...(erasedKey && { erasedPatientToken: locator(w.erases!, erasedKey) }),
      };
      const terms = plainTerms[i].map((t) => ({ param: t.param, value: tokens[next++] }));
      if (r.content) terms.push(this.indexKeys.marker(generation, r.type));
      return { record, terms, expectedVersion: w.expectedVersion, headMac: this.head.mac(r.type, r.id, r.versionId, r.deleted) };
    });
    await this.inner.commit(sealed);
  }

  /**
   * Ids of the current, live Patients whose link tokens include `token` (federation: "which local patient is
   * this"): a blind-index search on the reserved `_link` term, each match re-checked against its decrypted
   * content, so a forged index row finds no one. Sorted.
   */
  async patientsWithLinkToken(token: string): Promise<string[]> {
    const ids: string[] = [];
    let afterId: string | undefined;
    for (;;) {
      const page = await this.search({ type: 'Patient', clauses: [{ param: LINK_PARAM, anyOf: [token] }], lastUpdated: [], afterId, limit: LINK_PAGE });
      for (const v of page) if (!v.erased && v.content && this.linkTokensOf(v)?.includes(token)) ids.push(v.id);
      if (page.length < LINK_PAGE) return ids;
      afterId = page[page.length - 1].id;
    }
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

  /**
   * The blind-index forms of plaintext terms of a resource of `type`, as commit() stores them, one per live
   * index generation (a resource's terms are under exactly one; verify compares).
   */
  async blindTerms(type: string, terms: IndexTerm[]): Promise<IndexTerm[][]> {
    await this.indexKeys.fresh();
    return this.indexKeys.readers.map((g) => this.indexKeys.blind(g, type, terms));
  }

  indexTerms(type: string, id: string): Promise<IndexTerm[]> {
    return this.inner.indexTerms(type, id);
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
    return Promise.all(rows.map((r) => this.checkedHead(r, query.type, undefined)));
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
