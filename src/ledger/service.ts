/**
 * What the rest of the gateway asks of the ledger: is this version's digest really the one anchored where
 * the vault says, and proofs a client can take away (resource proofs, checkpoints, consistency proofs).
 */
import type { AnchorPublisher } from './anchor-publisher.ts';
import type { Checkpoint } from './attestation.ts';
import type { AnchorFacts, LedgerStore, LinkHolder } from './ledger-store.ts';
import type { LedgerMember } from './member.ts';
import { parseEnvelope } from './envelope.ts';
import { buildResourceProof, CONSISTENCY_PROOF_FORMAT, proveConfigChange, type ConsistencyProof, type ProofConsortium, type ResourceProof } from './proof.ts';
import type { AnchorLocation } from '../vault/store.ts';

/** The consortium at genesis, as consortium.json describes it. */
export interface GenesisConsortium {
  /** consortium.json as read: what verifiers pin (by fingerprint) and proofs carry. */
  manifestText: string;
  caCertificatePem: string;
}

/** The vault's digest and the ledger disagree about a version: the vault record or the ledger was altered. */
export class AnchorMismatchError extends Error {
  constructor(readonly type: string, readonly id: string, readonly versionId: number) {
    super(`${type}/${id} version ${versionId} does not match its ledger anchor`);
    this.name = 'AnchorMismatchError';
  }
}

export type ProofResult<T> = { ok: true; proof: T } | { ok: false; reason: string };

export class LedgerService {
  constructor(
    readonly store: LedgerStore,
    readonly member: LedgerMember,
    private readonly genesis: GenesisConsortium,
    private readonly publisher?: AnchorPublisher,
  ) {}

  publisherCounters(): { published: number; anchored: number; inFlight: number } {
    const counters = this.publisher?.counters ?? { published: 0, anchored: 0 };
    return { published: counters.published, anchored: counters.anchored, inFlight: this.publisher?.inFlightCount ?? 0 };
  }

  get channel(): string {
    return this.member.channel;
  }

  /**
   * Throws AnchorMismatchError unless the ledger holds `digest` at `anchor`, anchored by this member: the
   * read path's check that a vault record is the version that was anchored.
   */
  async checkAnchor(version: { type: string; id: string; versionId: number; digest: string }, anchor: AnchorLocation): Promise<void> {
    const location = (await this.store.locate(this.channel, [version.digest])).get(version.digest);
    const matches =
      location !== undefined &&
      location.creator === this.member.memberId &&
      location.blockNumber === anchor.blockNumber &&
      location.envelopeIndex === anchor.envelopeIndex &&
      location.entryIndex === anchor.entryIndex;
    if (!matches) throw new AnchorMismatchError(version.type, version.id, version.versionId);
  }

  /** Who holds a record linked by this link token now: (hospital, patient locator) pairs, from this member's replica. */
  holdersOfLink(linkToken: string): Promise<LinkHolder[]> {
    return this.store.holdersOfLink(this.channel, linkToken);
  }

  /** Where each anchored digest is and whether its creator has since superseded or erased it (absent: not anchored). */
  anchorFacts(digests: string[]): Promise<Map<string, AnchorFacts>> {
    return this.store.anchorFacts(this.channel, digests);
  }

  /**
   * The consortium material for a proof up to block `upTo` (a checkpoint's): consortium.json, the CA, and every
   * valid config envelope committed up to that block with its inclusion and the attestations kept for its block.
   */
  async consortium(upTo: number): Promise<ProofConsortium> {
    const configChanges: ProofConsortium['configChanges'] = [];
    const configBlocks = new Set((await this.store.configChanges(this.channel)).map((c) => c.blockNumber).filter((n) => n <= upTo));
    for (const blockNumber of [...configBlocks].sort((a, b) => a - b)) {
      const block = await this.store.block(this.channel, blockNumber);
      if (!block) continue;
      const attestations = await this.store.attestations(this.channel, blockNumber, blockNumber);
      block.envelopes.forEach((bytes, index) => {
        const parsed = parseEnvelope(bytes, Infinity);
        if (block.validity[index]?.valid && parsed.valid && parsed.envelope.type === 'config') configChanges.push(proveConfigChange(block, index, attestations));
      });
    }
    return { genesis: this.genesis.manifestText, caCertificate: this.genesis.caCertificatePem, configChanges };
  }

  async checkpoint(): Promise<Checkpoint | undefined> {
    return this.store.checkpoint(this.channel);
  }

  async resourceProof(resource: ResourceProof['resource'], anchor: AnchorLocation): Promise<ProofResult<ResourceProof>> {
    const checkpoint = await this.checkpoint();
    if (!checkpoint || checkpoint.header.number < anchor.blockNumber) {
      return { ok: false, reason: `anchored in block ${anchor.blockNumber}, which a quorum has not attested yet` };
    }
    const block = await this.store.block(this.channel, anchor.blockNumber);
    if (!block) return { ok: false, reason: `block ${anchor.blockNumber} is not in this member's ledger` };
    const chain = await this.store.headers(this.channel, anchor.blockNumber + 1, checkpoint.header.number);
    return { ok: true, proof: buildResourceProof({ resource, anchor, block, chain, checkpoint, consortium: await this.consortium(checkpoint.header.number) }) };
  }

  /** Proves the chain at block `fromBlock` is a prefix of the chain at the latest checkpoint. */
  async consistencyProof(fromBlock: number): Promise<ProofResult<ConsistencyProof>> {
    const checkpoint = await this.checkpoint();
    if (!checkpoint) return { ok: false, reason: 'no block is final yet' };
    if (fromBlock > checkpoint.header.number) return { ok: false, reason: `block ${fromBlock} is after the latest checkpoint (block ${checkpoint.header.number})` };
    const [from] = await this.store.headers(this.channel, fromBlock, fromBlock);
    if (!from) return { ok: false, reason: `block ${fromBlock} is not in this member's ledger` };
    const headers = await this.store.headers(this.channel, fromBlock + 1, checkpoint.header.number);
    return { ok: true, proof: { format: CONSISTENCY_PROOF_FORMAT, from, headers, checkpoint, consortium: await this.consortium(checkpoint.header.number) } };
  }
}
