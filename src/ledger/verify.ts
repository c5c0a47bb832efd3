/**
 * `medblock verify`'s ledger half: re-derives everything a member's ledger store claims from the blocks
 * themselves and the genesis membership, trusting nothing the store computed:
 *
 * - every block: header format and link, Merkle dataHash, validityHash, time, and every verdict
 *   recomputed (signatures, membership at that block, replayed nonces from the blocks before it);
 * - every kept attestation: its signature, and that it attests the hash this member recomputes for that
 *   block (an attestation of another hash is a divergence, or a block that was altered after attesting);
 * - the checkpoint: a quorum of valid attestations of the recomputed hash.
 *
 * The digests anchored by this member (block, envelope, entry → digest) are returned for the vault half.
 */
import { verifyAttestation, verifyCheckpoint } from './attestation.ts';
import { blockClock, blockHeaderHash, verifyBlock, type Block, type BlockHeader } from './block.ts';
import { CommittedNonces, validateBlockEnvelopes, type ValidationContext } from './envelope.ts';
import type { LedgerStore } from './ledger-store.ts';
import { blockIndex } from './member.ts';
import { applyConfigChange, type Membership } from './membership.ts';

export interface VerificationProblem {
  /** What is wrong: `block 12`, `attestation h2@12`, `checkpoint`, `Patient/1 v2`. */
  where: string;
  problem: string;
}

export interface AnchoredEntry {
  digest: string;
  kind: 'anchor' | 'audit';
  blockNumber: number;
  envelopeIndex: number;
  entryIndex: number;
}

export interface LedgerVerification {
  blocks: number;
  envelopes: number;
  attestations: number;
  checkpointBlock?: number;
  problems: VerificationProblem[];
  /** Every digest this member anchored in a valid envelope, keyed `block:envelope:entry`. */
  anchoredByMember: Map<string, AnchoredEntry>;
}

export interface VerifyLedgerOptions {
  channel: string;
  memberId: string;
  genesis: Membership;
  quorum: number;
  maxEnvelopeBytes?: number;
  maxClockSkewMs?: number;
  checkMemberCertificate?: ValidationContext['checkMemberCertificate'];
  onProgress?: (blocksDone: number, blocksTotal: number) => void;
}

export function anchorKey(blockNumber: number, envelopeIndex: number, entryIndex: number): string {
  return `${blockNumber}:${envelopeIndex}:${entryIndex}`;
}

export async function verifyLedger(store: LedgerStore, options: VerifyLedgerOptions): Promise<LedgerVerification> {
  const { channel, memberId, quorum } = options;
  const result: LedgerVerification = { blocks: 0, envelopes: 0, attestations: 0, problems: [], anchoredByMember: new Map() };
  const problem = (where: string, text: string) => result.problems.push({ where, problem: text });
  const head = await store.head(channel);
  const hashes: string[] = [];
  let membership = options.genesis;
  const nonces = new CommittedNonces();
  let previous: BlockHeader | undefined;
  const total = head ? head.number + 1 : 0;
  for (let n = 0; n < total; n++) {
    const block: Block | undefined = await store.block(channel, n);
    if (!block) {
      problem(`block ${n}`, 'is missing from the ledger store');
      break;
    }
    const context = { channel, members: membership, committedNonces: nonces, maxEnvelopeBytes: options.maxEnvelopeBytes, maxClockSkewMs: options.maxClockSkewMs, checkMemberCertificate: options.checkMemberCertificate };
    for (const p of verifyBlock(block, previous, context)) problem(`block ${n}`, `${p.path} ${p.problem}`);
    // Index and membership follow the recomputed verdicts, not the stored ones.
    const verdicts = validateBlockEnvelopes(block.envelopes, { ...context, blockNumber: n, clock: blockClock(block.header.ordererTime, options.maxClockSkewMs) });
    const index = blockIndex(verdicts);
    for (const { creator, nonce } of index.nonces) nonces.add(creator, nonce);
    for (const entry of index.digests) {
      if (entry.creator === memberId) {
        result.anchoredByMember.set(anchorKey(n, entry.envelopeIndex, entry.entryIndex), { digest: entry.digest, kind: entry.kind, blockNumber: n, envelopeIndex: entry.envelopeIndex, entryIndex: entry.entryIndex });
      }
    }
    for (const change of index.configChanges) membership = applyConfigChange(membership, change, n + 1);
    hashes.push(blockHeaderHash(block.header));
    result.blocks++;
    result.envelopes += block.envelopes.length;
    previous = block.header;
    options.onProgress?.(n + 1, total);
  }
  if (previous && head && blockHeaderHash(previous) !== blockHeaderHash(head)) problem('head', 'the stored head header is not the last block\'s header');

  for (const attestation of await store.attestations(channel, 0, Math.max(total - 1, 0))) {
    result.attestations++;
    const where = `attestation ${attestation.member}@${attestation.blockNumber}`;
    const verdict = verifyAttestation(attestation, channel, membership);
    if (!verdict.valid) problem(where, `${verdict.reason}: ${verdict.detail}`);
    else if (hashes[attestation.blockNumber] !== undefined && attestation.headerHash !== hashes[attestation.blockNumber]) {
      problem(where, 'attests a header hash other than the block this ledger holds (a divergence, or the block was altered)');
    }
  }

  const checkpoint = await store.checkpoint(channel);
  if (checkpoint) {
    result.checkpointBlock = checkpoint.header.number;
    for (const p of verifyCheckpoint(checkpoint, channel, membership, quorum)) problem('checkpoint', `${p.path} ${p.problem}`);
    const own = hashes[checkpoint.header.number];
    if (own === undefined) problem('checkpoint', `is for block ${checkpoint.header.number}, beyond this ledger's head`);
    else if (blockHeaderHash(checkpoint.header) !== own) problem('checkpoint', 'its header is not the block this ledger holds');
  }
  return result;
}
