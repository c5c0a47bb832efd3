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

/** What a committed block adds to the indexes; derived from the block's VALID envelopes only. */
export interface BlockIndex {
  /** A digest already indexed keeps its first location; later ones are ignored. */
  digests: Array<Omit<DigestLocation, 'blockNumber'> & { digest: string }>;
  /** Pseudonymous patient token → the member (hospital) holding data on that patient. Duplicates allowed. */
  patients: Array<{ token: string; hospital: string }>;
  /** (creator, nonce) of every valid envelope, for replay protection. */
  nonces: Array<{ creator: string; nonce: string }>;
  /** Config changes committed in this block, in envelope order (they take effect from the next block). */
  configChanges: ConfigChange[];
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
