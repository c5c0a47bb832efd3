/**
 * Attestations and finality (docs/ledger.md, "Attestations and finality").
 *
 * After committing block N a member signs its header hash. A block is final once a quorum of the
 * members active at N attested the same hash; attestations that disagree are kept as divergences,
 * an alarm, never dropped. A checkpoint (the highest final header and the quorum's attestations) can
 * be checked offline with only the members' public keys.
 *
 * Signature: the envelope scheme (ECDSA P-256 / SHA-256, P1363, low-S, base64url) with its own
 * prefix, so an attestation never verifies as an envelope or an approval, nor the reverse.
 */
import { blockHeaderHash, headerProblems, type BlockHeader } from './block.ts';
import { CHANNEL_PATTERN, type EnvelopeSigner } from './envelope.ts';
import { isP256Key, MEMBER_ID_PATTERN, type Membership } from './membership.ts';
import { decodeBase64url, SIGNATURE_BYTES, signedBytes, signLowS, verifyLowS } from './signature.ts';

export const ATTESTATION_SIGNING_PREFIX = 'medblock/attestation/v1\n';

const HEX_HASH_PATTERN = /^[0-9a-f]{64}$/;

export interface Attestation {
  channel: string;
  blockNumber: number;
  /** blockHeaderHash of the block the member committed, lowercase hex. */
  headerHash: string;
  member: string;
  /** ECDSA P-256 over ATTESTATION_SIGNING_PREFIX ‖ canonical JSON of the other four members; P1363, base64url. */
  signature: string;
}

export type AttestationRejectionReason = 'malformed' | 'wrong-channel' | 'unknown-member' | 'revoked-member' | 'bad-signature';

export type AttestationVerdict =
  | { valid: true; attestation: Attestation }
  | { valid: false; reason: AttestationRejectionReason; detail: string };

/** Refused to attest: the signer or the header is not something verification would accept. */
export class AttestationError extends TypeError {
  constructor(message: string) {
    super(message);
    this.name = 'AttestationError';
  }
}

// ---------------------------------------------------------------------------------------------
// Signing and verifying one attestation
// ---------------------------------------------------------------------------------------------

function attestationSignedBytes({ channel, blockNumber, headerHash, member }: Omit<Attestation, 'signature'>): Buffer {
  return signedBytes(ATTESTATION_SIGNING_PREFIX, { channel, blockNumber, headerHash, member });
}

/** Signs the hash of a header this member committed. */
export function createAttestation(signer: EnvelopeSigner, header: BlockHeader): Attestation {
  if (!MEMBER_ID_PATTERN.test(signer.memberId)) throw new AttestationError(`signer id must match ${MEMBER_ID_PATTERN}`);
  if (!isP256Key(signer.privateKey, 'private')) throw new AttestationError('signer key must be an EC P-256 private key');
  const problems = headerProblems(header, '');
  if (problems.length > 0) throw new AttestationError(`cannot attest a malformed header: ${problems[0].path} ${problems[0].problem}`);
  const unsigned = { channel: header.channel, blockNumber: header.number, headerHash: blockHeaderHash(header), member: signer.memberId };
  return { ...unsigned, signature: signLowS(signer.privateKey, attestationSignedBytes(unsigned)) };
}

const ATTESTATION_MEMBERS = ['channel', 'blockNumber', 'headerHash', 'member', 'signature'];

function shapeProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'an attestation must be an object';
  const keys = Object.keys(value);
  if (keys.length !== ATTESTATION_MEMBERS.length || !ATTESTATION_MEMBERS.every((name) => keys.includes(name))) {
    return `an attestation has exactly the members ${ATTESTATION_MEMBERS.join(', ')}`;
  }
  const { channel, blockNumber, headerHash, member, signature } = value as Record<string, unknown>;
  if (typeof channel !== 'string' || !CHANNEL_PATTERN.test(channel)) return `/channel must match ${CHANNEL_PATTERN}`;
  if (!Number.isSafeInteger(blockNumber) || (blockNumber as number) < 0) return '/blockNumber must be a non-negative integer';
  if (typeof headerHash !== 'string' || !HEX_HASH_PATTERN.test(headerHash)) return '/headerHash must be 64 lowercase hex digits';
  if (typeof member !== 'string' || !MEMBER_ID_PATTERN.test(member)) return `/member must match ${MEMBER_ID_PATTERN}`;
  if (decodeBase64url(signature, SIGNATURE_BYTES) === undefined) return `/signature must be ${SIGNATURE_BYTES} bytes in base64url`;
  return undefined;
}

/**
 * Checks, in order: shape, channel, that the member is known and active at the attested block, and
 * the signature. Never throws.
 */
export function verifyAttestation(value: unknown, channel: string, members: Membership): AttestationVerdict {
  const malformed = shapeProblem(value);
  if (malformed !== undefined) return { valid: false, reason: 'malformed', detail: malformed };
  const attestation = value as Attestation;
  if (attestation.channel !== channel) return { valid: false, reason: 'wrong-channel', detail: `/channel is not ${channel}` };
  const member = members.get(attestation.member);
  if (member === undefined) return { valid: false, reason: 'unknown-member', detail: `${attestation.member} is not a member` };
  if (!members.isActiveAt(member.id, attestation.blockNumber)) {
    return { valid: false, reason: 'revoked-member', detail: `${member.id} is revoked at block ${attestation.blockNumber}` };
  }
  if (!verifyLowS(member.publicKey, attestationSignedBytes(attestation), attestation.signature)) {
    return { valid: false, reason: 'bad-signature', detail: `/signature does not verify with the key of ${member.id}` };
  }
  return { valid: true, attestation };
}

/**
 * Attestations block `blockNumber` needs: `configured`, but never fewer than a strict majority of the
 * members active at that block, so two different hashes can never both be final.
 */
export function requiredAttestations(members: Membership, blockNumber: number, configured?: number): number {
  return Math.max(configured ?? 0, members.quorumAt(blockNumber));
}

// ---------------------------------------------------------------------------------------------
// Finality
// ---------------------------------------------------------------------------------------------

/** Who claimed which header hash for one block: evidence for the alarm. */
export interface Divergence {
  blockNumber: number;
  /** Each hash claimed for the block, with the members that signed it (in arrival order). */
  claims: { headerHash: string; members: string[] }[];
  /** This member's committed hash for the block, when it has one. */
  ownHeaderHash?: string;
  /** Members that signed two different hashes for this block: provable misbehaviour. */
  equivocators: string[];
}

/** The highest final block: its header and a quorum of attestations of its hash. Plain JSON data. */
export interface Checkpoint {
  header: BlockHeader;
  attestations: Attestation[];
}

export interface FinalityTrackerOptions {
  channel: string;
  members: Membership;
  /** Attestations needed for finality; raised to a strict majority of the active members if lower. */
  quorum?: number;
}

export type AttestationOutcome =
  | { accepted: true; becameFinal: boolean; divergence?: Divergence }
  | { accepted: false; reason: AttestationRejectionReason | 'duplicate'; detail: string };

interface BlockVotes {
  /** Each member's first attested hash, which alone counts toward the quorum. */
  byMember: Map<string, Attestation>;
  /** headerHash → attestations for it, in arrival order (an equivocator appears under both). */
  byHash: Map<string, Attestation[]>;
  equivocators: Set<string>;
  finalHash?: string;
}

/**
 * Pure state machine: fed with attestations (from every member, this one included) and with this
 * member's committed headers; no I/O, no clock. Every accepted attestation is kept in memory: a
 * caller that runs for long persists checkpoints and starts a new tracker from its store.
 */
export class FinalityTracker {
  readonly channel: string;
  readonly #quorum: number | undefined;
  #members: Membership;
  readonly #votes = new Map<number, BlockVotes>();
  readonly #ownHeaders = new Map<number, { header: BlockHeader; hash: string }>();
  #finalHeight = -1;

  constructor({ channel, members, quorum }: FinalityTrackerOptions) {
    if (!CHANNEL_PATTERN.test(channel)) throw new AttestationError(`channel must match ${CHANNEL_PATTERN}`);
    if (quorum !== undefined && !(Number.isSafeInteger(quorum) && quorum >= 1)) {
      throw new AttestationError(`quorum must be a positive integer, got ${quorum}`);
    }
    this.channel = channel;
    this.#quorum = quorum;
    this.#members = members;
  }

  /** The membership after a config block; attestations already accepted keep their verdicts. */
  updateMembership(members: Membership): void {
    this.#members = members;
  }

  /** Highest block number a quorum attested, or -1. Attesting block N also vouches for every block before it. */
  get finalHeight(): number {
    return this.#finalHeight;
  }

  isFinal(blockNumber: number): boolean {
    return blockNumber <= this.#finalHeight;
  }

  /** Every block where the attested hashes, or this member's own hash, disagree. */
  get divergences(): Divergence[] {
    return [...this.#votes.keys()]
      .sort((a, b) => a - b)
      .map((blockNumber) => this.#divergenceAt(blockNumber))
      .filter((divergence) => divergence !== undefined);
  }

  /** Records a header this member committed, to compare with the quorum and to build checkpoints. */
  recordCommitted(header: BlockHeader): Divergence | undefined {
    this.#ownHeaders.set(header.number, { header, hash: blockHeaderHash(header) });
    return this.#divergenceAt(header.number);
  }

  addAttestation(value: unknown): AttestationOutcome {
    const verdict = verifyAttestation(value, this.channel, this.#members);
    if (!verdict.valid) return { accepted: false, reason: verdict.reason, detail: verdict.detail };
    const { attestation } = verdict;
    const votes = this.#votesFor(attestation.blockNumber);
    const earlier = votes.byMember.get(attestation.member);
    if (earlier?.headerHash === attestation.headerHash) {
      return { accepted: false, reason: 'duplicate', detail: `${attestation.member} already attested this hash` };
    }
    if (earlier !== undefined) votes.equivocators.add(attestation.member);
    else votes.byMember.set(attestation.member, attestation);
    const sameHash = votes.byHash.get(attestation.headerHash) ?? [];
    votes.byHash.set(attestation.headerHash, [...sameHash, attestation]);

    const becameFinal = votes.finalHash === undefined && this.#countFor(votes, attestation.headerHash) >= this.#required(attestation.blockNumber);
    if (becameFinal) {
      votes.finalHash = attestation.headerHash;
      this.#finalHeight = Math.max(this.#finalHeight, attestation.blockNumber);
    }
    return { accepted: true, becameFinal, divergence: this.#divergenceAt(attestation.blockNumber) };
  }

  /**
   * The highest final block whose header this member committed with the quorum's hash, with the
   * quorum's attestations (only members whose first attestation was that hash).
   */
  checkpoint(): Checkpoint | undefined {
    const finalNumbers = [...this.#votes.entries()]
      .filter(([, votes]) => votes.finalHash !== undefined)
      .map(([blockNumber]) => blockNumber)
      .sort((a, b) => b - a);
    for (const blockNumber of finalNumbers) {
      const votes = this.#votes.get(blockNumber)!;
      const own = this.#ownHeaders.get(blockNumber);
      if (own === undefined || own.hash !== votes.finalHash) continue;
      const attestations = [...votes.byMember.values()].filter((attestation) => attestation.headerHash === votes.finalHash);
      return { header: own.header, attestations };
    }
    return undefined;
  }

  #votesFor(blockNumber: number): BlockVotes {
    let votes = this.#votes.get(blockNumber);
    if (votes === undefined) {
      votes = { byMember: new Map(), byHash: new Map(), equivocators: new Set() };
      this.#votes.set(blockNumber, votes);
    }
    return votes;
  }

  #required(blockNumber: number): number {
    return requiredAttestations(this.#members, blockNumber, this.#quorum);
  }

  /** Members whose counted (first) attestation is this hash. */
  #countFor(votes: BlockVotes, headerHash: string): number {
    let count = 0;
    for (const attestation of votes.byMember.values()) if (attestation.headerHash === headerHash) count++;
    return count;
  }

  #divergenceAt(blockNumber: number): Divergence | undefined {
    const votes = this.#votes.get(blockNumber);
    const ownHeaderHash = this.#ownHeaders.get(blockNumber)?.hash;
    if (votes === undefined) return undefined;
    const hashes = new Set(votes.byHash.keys());
    if (ownHeaderHash !== undefined) hashes.add(ownHeaderHash);
    if (hashes.size < 2) return undefined;
    return {
      blockNumber,
      claims: [...votes.byHash].map(([headerHash, attestations]) => ({ headerHash, members: attestations.map(({ member }) => member) })),
      ...(ownHeaderHash === undefined ? {} : { ownHeaderHash }),
      equivocators: [...votes.equivocators],
    };
  }
}

/** Where a checkpoint fails, and why. */
export interface CheckpointProblem {
  path: string;
  problem: string;
}

/**
 * Checks a checkpoint offline: a well-formed header of `channel`, and attestations of its hash by at
 * least `requiredAttestations` distinct members active at that block, each with a valid signature.
 * Never throws.
 */
export function verifyCheckpoint(checkpoint: unknown, channel: string, members: Membership, quorum?: number): CheckpointProblem[] {
  if (typeof checkpoint !== 'object' || checkpoint === null) return [{ path: '', problem: 'the checkpoint must be an object' }];
  const { header, attestations } = checkpoint as Partial<Checkpoint>;
  const problems: CheckpointProblem[] = headerProblems(header, '/header');
  if (!Array.isArray(attestations)) problems.push({ path: '/attestations', problem: 'must be an array' });
  if (problems.length > 0) return problems;
  const { number, channel: headerChannel } = header as BlockHeader;
  if (headerChannel !== channel) problems.push({ path: '/header/channel', problem: `is not ${channel}` });
  const headerHash = blockHeaderHash(header as BlockHeader);
  const attesters = new Set<string>();
  (attestations as unknown[]).forEach((value, index) => {
    const path = `/attestations/${index}`;
    const verdict = verifyAttestation(value, channel, members);
    if (!verdict.valid) return void problems.push({ path, problem: `${verdict.reason}: ${verdict.detail}` });
    const { attestation } = verdict;
    if (attestation.blockNumber !== number || attestation.headerHash !== headerHash) {
      return void problems.push({ path, problem: 'attests another block or hash' });
    }
    if (attesters.has(attestation.member)) return void problems.push({ path, problem: `${attestation.member} attests twice` });
    attesters.add(attestation.member);
  });
  const required = requiredAttestations(members, number, quorum);
  if (attesters.size < required) {
    problems.push({ path: '/attestations', problem: `${attesters.size} valid attestations of the header hash < quorum ${required}` });
  }
  return problems;
}
