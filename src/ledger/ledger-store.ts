/**
 * The LedgerStore port: a member's copy of one channel's chain and the indexes derived from it.
 *
 * The only atomic unit asked of an adapter is `appendBlock`: a block plus its index entries. An adapter
 * without multi-document transactions (FerretDB) writes the index entries first, tagged with the block
 * number, and the block last as the commit marker; readers ignore entries above the committed head and
 * `init()` deletes them (a crash between the two leaves nothing visible). So no query ever sees an index
 * entry of a block that is not committed.
 */
import type { Attestation, Checkpoint } from './attestation.ts';
import type { Block, BlockHeader } from './block.ts';
import type { ConfigChange } from './envelope.ts';

/** Where a digest was anchored: leaf `envelopeIndex` of block `blockNumber`, entry `entryIndex` of its payload. */
export interface DigestLocation {
  blockNumber: number;
  envelopeIndex: number;
  entryIndex: number;
  /** The member whose signed envelope carried it. */
  creator: string;
  kind: 'anchor' | 'audit';
}

/**
 * What the ledger says about an anchored digest now (docs/federation.md, "On the ledger"): its first location,
 * the locator tokens that entry carried, and whether its creator has since moved on from it.
 */
export type AnchorFacts = DigestLocation & {
  /** The patient locator token of the entry at the first location, if it had one. */
  patient?: string;
  /** The resource locator token of that entry, if it had one. */
  resource?: string;
  /** A later entry of the SAME creator carried the same `resource` token (another member's entries never count). */
  superseded: boolean;
  /** The creator anchored an erasure record of this entry's `patient` locator. */
  erased: boolean;
};

/** A (hospital, patient locator) whose latest Patient version lists a link token. */
export interface LinkHolder {
  hospital: string;
  locator: string;
}

/** What a committed block adds to the indexes; derived from the block's VALID envelopes only. */
export interface BlockIndex {
  /**
   * Every entry, in ledger order, with the locator tokens it carried. A digest already indexed keeps its first
   * location (and tokens); later ones are ignored.
   */
  digests: Array<Omit<DigestLocation, 'blockNumber'> & { digest: string; patient?: string; resource?: string }>;
  /** Pseudonymous patient token → the member (hospital) holding data on that patient. Duplicates allowed. */
  patients: Array<{ token: string; hospital: string }>;
  /** (creator, nonce) of every valid envelope, for replay protection. */
  nonces: Array<{ creator: string; nonce: string }>;
  /** Config changes committed in this block, in envelope order (they take effect from the next block). */
  configChanges: ConfigChange[];
  /**
   * Link sets as this block leaves them, one per (creator, patient locator) it touched: each REPLACES the set
   * the creator published before for that locator (`[]` removes it; an erasure record leaves `[]`).
   */
  linkSets: Array<{ creator: string; patient: string; links: string[] }>;
  /** Per (creator, resource locator) this block anchored: the digest of its last entry there, the resource's new head. */
  resourceHeads: Array<{ creator: string; resource: string; digest: string }>;
  /** (creator, patient locator) of this block's erasure records, each once. */
  erasures: Array<{ creator: string; patient: string }>;
}

export interface LedgerStore {
  /** Creates tables/indexes; removes index entries a crash left above the committed head. */
  init(): Promise<void>;
  close(): Promise<void>;
  /** Header of the highest committed block of the channel, or undefined before block 0. */
  head(channel: string): Promise<BlockHeader | undefined>;
  /**
   * Commits `block` (number = head + 1, or 0 on an empty channel) with its index entries, all or nothing.
   * Throws when the number does not follow the head (a caller bug or a second writer).
   */
  appendBlock(block: Block, index: BlockIndex): Promise<void>;
  block(channel: string, blockNumber: number): Promise<Block | undefined>;
  /** Headers of blocks `from`..`to` inclusive (those that exist), in number order. */
  headers(channel: string, from: number, to: number): Promise<BlockHeader[]>;
  /** Locations of those digests that are anchored (first occurrence each). */
  locate(channel: string, digests: string[]): Promise<Map<string, DigestLocation>>;
  /** Members that anchored data for this patient token, sorted, each once. */
  hospitalsForPatient(channel: string, token: string): Promise<string[]>;
  /** Current holders of a link token: each (hospital, patient locator) whose latest link set lists it, sorted by hospital then locator. */
  holdersOfLink(channel: string, linkToken: string): Promise<LinkHolder[]>;
  /** For each anchored digest (those not anchored are absent): where (first location), and what the ledger says about it now. */
  anchorFacts(channel: string, digests: string[]): Promise<Map<string, AnchorFacts>>;
  /** Which of these (creator, nonce) pairs were committed by a valid envelope; keys are `${creator} ${nonce}`. */
  committedNonces(channel: string, pairs: Array<{ creator: string; nonce: string }>): Promise<Set<string>>;
  /** Every config change committed so far, with the block that committed it, in ledger order. */
  configChanges(channel: string): Promise<Array<{ blockNumber: number; change: ConfigChange }>>;
  /** Keeps an accepted attestation (idempotent per member and block: the first one stays). */
  saveAttestations(attestations: Attestation[]): Promise<void>;
  /** Attestations kept for blocks `from`..`to` inclusive, by block number then member. */
  attestations(channel: string, from: number, to: number): Promise<Attestation[]>;
  /** Replaces the channel's latest checkpoint when this one is higher. */
  saveCheckpoint(channel: string, checkpoint: Checkpoint): Promise<void>;
  checkpoint(channel: string): Promise<Checkpoint | undefined>;
}

export class LedgerAppendError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LedgerAppendError';
  }
}
