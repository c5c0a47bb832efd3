/**
 * The ResourceStore port: where resource versions live.
 *
 * Shaped so that a document database without multi-document transactions (FerretDB, MongoDB without a
 * replica set) can implement it: the only atomic unit asked of an adapter is `commit(writes)`, a batch of
 * immutable version records plus the "current" pointer moves they imply. An adapter realises that
 * atomicity however its engine allows (one SQL transaction; pending records made visible by one
 * single-document commit marker, rolled forward or back on restart). Content is opaque bytes so the vault
 * can store ciphertext; index terms are opaque strings so they can become keyed blind indexes.
 */

export interface VersionRecord {
  type: string;
  id: string;
  /** 1, 2, 3 … per resource. */
  versionId: number;
  /** ISO-8601 instant in UTC with milliseconds (`2026-01-02T03:04:05.678Z`), so it orders as text. */
  lastUpdated: string;
  deleted: boolean;
  /** The serialized resource version; null for a deletion. */
  content: Uint8Array | null;
  /**
   * What the ledger anchors: the version's commitment, hex SHA-256 over a domain tag, `salt` and its canonical
   * JSON (docs/proofs.md); null for a deletion (anchored with its tombstone digest).
   */
  digest: string | null;
  /**
   * The commitment's 32 random bytes; absent for a deletion. The vault seals it with the content under the
   * same data key (so erasing the key destroys it too) and hands it to the adapter only inside the
   * ciphertext; a plaintext store keeps it beside the plaintext content.
   */
  salt?: Uint8Array;
  /** The data key the content is sealed under (absent for deletions and plaintext vaults). */
  keyId?: string;
  /**
   * The patient locator token the version is anchored with (ledger/patient-token.ts): set by the vault,
   * from the owner's data key, for resources in a patient compartment. Not PHI; once the key is erased
   * nobody can tell whose it was.
   */
  patientToken?: string;
  /** The resource locator token (with patientToken, from the same key): AnchorEntry.resource. Set by the vault. */
  resourceToken?: string;
  /** A Patient version's link tokens, sorted (empty for its deletion): AnchorEntry.links. Set by the vault. */
  linkTokens?: string[];
  /** An erasure record's: the erased patient's locator token, computed before its key was destroyed. Set by the vault. */
  erasedPatientToken?: string;
}

/** Where the consortium ledger anchored a version: entry `entryIndex` of envelope `envelopeIndex` of block `blockNumber`. */
export interface AnchorLocation {
  blockNumber: number;
  envelopeIndex: number;
  entryIndex: number;
}

/**
 * The current pointer of a resource as the adapter holds it, read with the version it points at (current()
 * and search() set it). The vault authenticates it (vault/head-mac.ts): someone with write access to the
 * database must not be able to move a pointer back, flip a deleted flag or re-point it unnoticed.
 */
export interface HeadState {
  /** The head MAC the vault wrote with the pointer move (VersionWrite.headMac); null when the pointer has none. */
  mac: string | null;
  /** The pointer is hidden from search and count: the resource is deleted, or its data key was erased. */
  hidden: boolean;
  /**
   * The store holds a newer committed version of the resource whose batch has finished moving its pointers:
   * this pointer was moved back (a batch still rolling forward does not count).
   */
  superseded: boolean;
}

/** A version as read back, with the store-wide sequence number it was committed under. */
export interface StoredVersion extends VersionRecord {
  seq: number;
  /** The current pointer, on versions read as current state (current(), search()); absent on history and version reads. */
  head?: HeadState;
  /** Set by the vault when the version's data key was destroyed (crypto-shredded): content is null. */
  erased?: boolean;
  /** Set once the ledger block anchoring this version committed; absent while the version is in the outbox. */
  anchor?: AnchorLocation;
}

/** A committed version waiting in the outbox to be anchored (no content: the digest is all the ledger gets). */
export interface UnanchoredVersion {
  seq: number;
  type: string;
  id: string;
  versionId: number;
  lastUpdated: string;
  deleted: boolean;
  digest: string | null;
  patientToken?: string;
  /** Resource locator token (with patientToken): see AnchorEntry.resource. */
  resourceToken?: string;
  /** A Patient version's link tokens (possibly empty); absent on other types. */
  linkTokens?: string[];
  /** An erasure record: the erased patient's locator token, computed before its data key was destroyed. */
  erasedPatientToken?: string;
}

export interface AnchorMark extends AnchorLocation {
  type: string;
  id: string;
  versionId: number;
}

/** One search index entry of the current version of a resource: e.g. `identifier` = `http://x|123`. */
export interface IndexTerm {
  param: string;
  value: string;
}

/** An index row named across resources: a resource type, a parameter and a value. */
export interface TypedTerm extends IndexTerm {
  type: string;
}

export interface VersionWrite {
  record: VersionRecord;
  /** Index terms of this version (empty for a deletion); they replace the previous version's terms. */
  terms: IndexTerm[];
  /** The version this write supersedes: 0 when the resource must not exist yet. */
  expectedVersion: number;
  /**
   * Whose data key seals the content: the patient compartment the resource belongs to (`Patient/123`);
   * absent for resources outside any patient compartment, which get a key of their own.
   */
  owner?: string;
  /** Authenticates the pointer move to this version (set by the vault); the adapter stores it on the pointer. */
  headMac?: string;
  /**
   * This version is the record of erasing this patient compartment (`Patient/123`, audit/erasure.ts): the vault
   * stores the patient's locator token on it (erasedPatientToken) while the key still exists.
   */
  erases?: string;
}

export interface TermClause {
  param: string;
  /** Matches when the resource has any of these values for `param`. */
  anyOf: string[];
  /** Inverts the clause: matches when the resource has none of these values (`:not`). */
  negate?: boolean;
}

export interface InstantBound {
  op: 'gt' | 'ge' | 'lt' | 'le';
  value: string;
}

export interface StoreQuery {
  type: string;
  /** Restrict to these ids (`_id`). */
  ids?: string[];
  /** Every clause must match. */
  clauses: TermClause[];
  /** Every bound must hold for lastUpdated. */
  lastUpdated: InstantBound[];
  /** Keyset cursor: only ids strictly greater than this one (results are ordered by id). */
  afterId?: string;
  limit: number;
}

export interface HistoryQuery {
  type?: string;
  id?: string;
  /** Only versions with lastUpdated ≥ since. */
  since?: string;
  /** Keyset cursor: only versions with seq strictly below this one (results are newest first). */
  beforeSeq?: number;
  limit: number;
}

/**
 * A data key as the store keeps it: wrapped (AES-256-GCM) under a master key the store never sees, or a
 * tombstone once destroyed. Tombstones stay so that an erased key can never be created again.
 */
export interface KeyEntry {
  keyId: string;
  createdAt: string;
  /** The master key the data key is wrapped under; null once erased. */
  masterKeyId: string | null;
  wrapped: Uint8Array | null;
  erasedAt: string | null;
}

export interface NewKey {
  keyId: string;
  masterKeyId: string;
  wrapped: Uint8Array;
  createdAt: string;
}

/** A concurrent writer moved a resource first: the whole batch was rejected, nothing was written. */
export class VersionConflictError extends Error {
  constructor(
    readonly type: string,
    readonly id: string,
  ) {
    super(`version conflict on ${type}/${id}`);
    this.name = 'VersionConflictError';
  }
}

/**
 * Nothing of the batch was written because a batch submitted before it failed and this one may depend on it
 * (see ResourceStore.pipelinedCommits). Safe to retry.
 */
export class CommitAbortedError extends Error {
  constructor() {
    super('an earlier write this one may depend on failed; nothing was written');
    this.name = 'CommitAbortedError';
  }
}

export interface ResourceStore {
  /**
   * True when commit() applies batches strictly in call order and fails (CommitAbortedError) every batch
   * submitted after a failed one. Then a caller may submit the next batch before the previous one is durable,
   * provided it read the previous batch's writes itself (the repository's in-flight overlay).
   */
  readonly pipelinedCommits: boolean;
  /** Creates tables/indexes and finishes or undoes any batch a crash interrupted. */
  init(): Promise<void>;
  close(): Promise<void>;
  /** True when the store answers queries. */
  ping(): Promise<boolean>;
  /** Writes every version and moves every current pointer, or nothing (throws VersionConflictError). */
  commit(writes: VersionWrite[]): Promise<void>;
  current(type: string, id: string): Promise<StoredVersion | undefined>;
  version(type: string, id: string, versionId: number): Promise<StoredVersion | undefined>;
  /** Current, non-deleted resources matching the query, ordered by id. */
  search(query: StoreQuery): Promise<StoredVersion[]>;
  /** Number of current, non-deleted resources matching the query (ignores limit and cursor). */
  count(query: StoreQuery): Promise<number>;
  /** The index terms stored for the current version of a resource (any order; `medblock verify` recomputes them). */
  indexTerms(type: string, id: string): Promise<IndexTerm[]>;
  /** Versions newest first. */
  history(query: HistoryQuery): Promise<StoredVersion[]>;
  /** Number of versions history() would return for the query (ignores limit and cursor). */
  countHistory(query: HistoryQuery): Promise<number>;

  /** Stores a new wrapped data key unless one with its id exists; returns the entry that is stored. */
  insertKey(key: NewKey): Promise<KeyEntry>;
  /** insertKey for several keys in one round trip (a bundle's new patients and resources); same order. */
  insertKeys(keys: NewKey[]): Promise<KeyEntry[]>;
  getKey(keyId: string): Promise<KeyEntry | undefined>;
  /** Live keys wrapped under a master key other than `notWrappedUnder`, ordered by id (rotation). */
  listKeys(query: { notWrappedUnder: string; afterKeyId?: string; limit: number }): Promise<KeyEntry[]>;
  /** Replaces a live key's wrapping if it is still wrapped under `fromMasterKeyId`; false otherwise. */
  rewrapKey(keyId: string, fromMasterKeyId: string, next: { masterKeyId: string; wrapped: Uint8Array }): Promise<boolean>;
  /**
   * Crypto-shredding: replaces the key by a tombstone (its wrapped bytes are deleted), removes the index
   * terms of every current resource sealed under it and hides those resources from search. Idempotent, so
   * an interrupted erasure is finished by running it again. Returns how many current resources it hid.
   */
  eraseKey(keyId: string, erasedAt: string): Promise<{ resources: number }>;

  /**
   * Replaces the index terms of a resource if its current version is still `versionId` and not deleted
   * (index key rotation re-derives every resource's terms). False when a write moved or deleted it meanwhile,
   * or an erasure hid it: then its terms are that writer's. Terms of older versions are dropped too.
   */
  replaceTerms(type: string, id: string, versionId: number, terms: IndexTerm[]): Promise<boolean>;
  /**
   * Deletes every index row holding one of these terms, whatever resource holds it, current or past version
   * (erasing a patient removes the references to it from resources sealed under other keys). Idempotent.
   */
  removeTerms(terms: TypedTerm[]): Promise<void>;

  /**
   * The outbox: every committed version is in it from the moment commit() resolves (same atomic write)
   * until markAnchored. Oldest first (seq ascending), only versions with seq > afterSeq. Never returns a
   * version of a batch that is not (yet) committed.
   */
  unanchored(query: { afterSeq?: number; limit: number }): Promise<UnanchoredVersion[]>;
  /** Records where the ledger anchored these versions; idempotent (a version keeps its first location). */
  markAnchored(marks: AnchorMark[]): Promise<void>;
}

/** A vault that seals content under per-owner data keys can crypto-shred everything of one owner. */
export interface ErasableStore extends ResourceStore {
  /** The id of the data key that seals `owner`'s content (what an erasure record names). */
  keyIdFor(owner: string): string;
  /**
   * Destroys the data key of `owner` (e.g. `Patient/123`): see eraseKey. Then removes `references`, the
   * plaintext terms that name the owner in resources sealed under other keys (see removeTerms).
   */
  eraseOwner(owner: string, erasedAt: string, references?: TypedTerm[]): Promise<{ resources: number; erasedAt: string }>;
}

export function isErasable(store: ResourceStore): store is ErasableStore {
  return typeof (store as Partial<ErasableStore>).eraseOwner === 'function';
}

/** A vault that indexes Patients by their link tokens (federation: which local patient is this person). */
export interface LinkIndexedStore extends ResourceStore {
  /** Ids of the current, live (not deleted, not erased) Patients whose link tokens include `token`, sorted. */
  patientsWithLinkToken(token: string): Promise<string[]>;
}

export function hasLinkIndex(store: ResourceStore): store is LinkIndexedStore {
  return typeof (store as Partial<LinkIndexedStore>).patientsWithLinkToken === 'function';
}
