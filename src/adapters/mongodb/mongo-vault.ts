/**
 * The documents of the MongoDB vault (mongo-store.ts describes the collections and the rules they keep), the
 * collections that hold them, and the conversions to what the ResourceStore port returns. Every part of the
 * store (mongo-commit.ts, mongo-batch.ts, mongo-reads.ts, mongo-outbox.ts, mongo-keys.ts) works on a Vault.
 */
import type { AnyBulkWriteOperation, Binary, Collection, Db, Document } from 'mongodb';
import type { AnchorLocation, StoredVersion, UnanchoredVersion } from '../../vault/store.ts';
import { chunks } from '../chunks.ts';

export interface TxDoc {
  _id: number;
  createdAt: Date;
  writes: number;
}

export type Outcome = 'committed' | 'aborted';

export interface DecisionDoc {
  _id: number;
  outcome: Outcome;
}

export interface VersionDoc {
  /** The slot: `Type/id/v`. */
  _id: string;
  seq: number;
  type: string;
  id: string;
  v: number;
  lastUpdated: string;
  deleted: boolean;
  content: Binary | null;
  digest: string | null;
  /** The commitment salt of a plaintext store's version; null in a vault (sealed inside content). */
  salt: Binary | null;
  /** The data key the content is sealed under; null for deletions and plaintext. */
  keyId: string | null;
  patientToken: string | null;
  /** Federation tokens of the outbox (vault/store.ts VersionRecord); absent when unset and on documents written before them. */
  resourceToken?: string;
  linkTokens?: string[];
  erasedPatientToken?: string;
  terms: string[];
  /** The head MAC the pointer gets when it moves to this version (absent on versions staged without one). */
  headMac?: string | null;
  tx: number;
  /** False while the version is in the anchor outbox. */
  anchored: boolean;
  /** Where the ledger anchored the version; set with `anchored: true`. */
  anchor?: AnchorLocation;
}

export interface PointerDoc {
  _id: string;
  type: string;
  id: string;
  version: number;
  seq: number;
  lastUpdated: string;
  /** True for a deletion, and for a resource whose data key was erased (hidden from search). */
  deleted: boolean;
  /** Always present (null when plaintext or deleted), so that a pointer move's `$set` replaces it. */
  keyId: string | null;
  terms: string[];
  /** The vault's head MAC of this pointer state; null when the write carried none. */
  mac: string | null;
}

/** A live data key. Its tombstone is an ErasedKeyDoc with the same `_id` in another collection. */
export interface DataKeyDoc {
  _id: string;
  createdAt: string;
  masterKeyId: string;
  wrapped: Binary;
}

export interface ErasedKeyDoc {
  _id: string;
  createdAt: string;
  erasedAt: string;
}

export interface CounterDoc {
  _id: string;
  next: number;
}

/** The vault's collections, and what the store learned of the engine at init(). */
export function openVault(db: Db, updatesPerCommand: number) {
  return {
    db,
    counters: db.collection<CounterDoc>('counters'),
    seqblocks: db.collection<{ _id: number }>('seqblocks'),
    txs: db.collection<TxDoc>('txs'),
    decisions: db.collection<DecisionDoc>('decisions'),
    versions: db.collection<VersionDoc>('versions'),
    pointers: db.collection<PointerDoc>('current'),
    dataKeys: db.collection<DataKeyDoc>('data_keys'),
    erasedKeys: db.collection<ErasedKeyDoc>('erased_keys'),
    /** Statements per update command; until init() knows the engine, the FerretDB-safe value. */
    updatesPerCommand,
  };
}

export type Vault = ReturnType<typeof openVault>;

/** Sends update statements in commands of at most `vault.updatesPerCommand` (FerretDB hangs on large ones). */
export async function updateInCommands<T extends Document>(
  vault: Vault,
  collection: Collection<T>,
  updates: AnyBulkWriteOperation<T>[],
): Promise<void> {
  for (const command of chunks(updates, vault.updatesPerCommand)) await collection.bulkWrite(command, { ordered: false });
}

export const pointerKey = (type: string, id: string): string => `${type}/${id}`;
export const slotKey = (type: string, id: string, v: number): string => `${type}/${id}/${v}`;

export function bytesOf(binary: Binary | null): Uint8Array | null {
  return binary ? binary.buffer.subarray(0, binary.length()) : null;
}

/** What unanchored() reads of a version: no content, no terms. */
const OUTBOX_FIELDS = ['seq', 'type', 'id', 'v', 'lastUpdated', 'deleted', 'digest', 'patientToken', 'resourceToken', 'linkTokens', 'erasedPatientToken', 'tx'] as const;
export const OUTBOX_PROJECTION = Object.fromEntries(OUTBOX_FIELDS.map((field) => [field, 1]));
export type OutboxDoc = Pick<VersionDoc, (typeof OUTBOX_FIELDS)[number]>;

export function toUnanchored(doc: OutboxDoc): UnanchoredVersion {
  return {
    seq: doc.seq,
    type: doc.type,
    id: doc.id,
    versionId: doc.v,
    lastUpdated: doc.lastUpdated,
    deleted: doc.deleted,
    digest: doc.digest,
    ...(doc.patientToken !== null && { patientToken: doc.patientToken }),
    ...(typeof doc.resourceToken === 'string' && { resourceToken: doc.resourceToken }),
    ...(Array.isArray(doc.linkTokens) && { linkTokens: doc.linkTokens }),
    ...(typeof doc.erasedPatientToken === 'string' && { erasedPatientToken: doc.erasedPatientToken }),
  };
}

export function toStored(doc: VersionDoc): StoredVersion {
  return {
    ...toUnanchored(doc),
    content: bytesOf(doc.content),
    ...(doc.salt && { salt: bytesOf(doc.salt)! }),
    ...(doc.keyId !== null && { keyId: doc.keyId }),
    ...(doc.anchor && { anchor: doc.anchor }),
  };
}
