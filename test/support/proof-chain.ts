/**
 * A consortium chain built in-process for proof tests: real CA, certificates and signing keys, blocks built with
 * the members' own block builder and validation, attestations signed by the members. No orderer: each call
 * commits one block, so a test controls exactly what is on the chain, and when (envelope timestamps).
 */
import { createPrivateKey } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAttestation, type Attestation, type Checkpoint } from '../../src/ledger/attestation.ts';
import { blockHeaderHash, buildBlockWithVerdicts, type Block } from '../../src/ledger/block.ts';
import { canonicalDigestHex } from '../../src/ledger/canonical-json.ts';
import { approveConfigChange, CommittedNonces, createEnvelope, encodeEnvelope, newNonce, type ConfigChange, type EnvelopeSigner } from '../../src/ledger/envelope.ts';
import { blockIndex } from '../../src/ledger/member.ts';
import { applyConfigChange, type Membership } from '../../src/ledger/membership.ts';
import { buildResourceProof, proveConfigChange, type ResourceProof } from '../../src/ledger/proof.ts';
import { createConsortium, createMemberRequest, issueMemberCertificate, type Consortium } from '../../src/identity/ca.ts';
import { genesisMembership, memberCertificateCheck, writeConsortiumDir } from '../../src/identity/consortium-dir.ts';

export class ProofChain {
  readonly blocks: Block[] = [];
  readonly attestations = new Map<number, Attestation[]>();
  readonly signers = new Map<string, EnvelopeSigner>();
  membership: Membership;
  /** False: headers as the code before configHash wrote them (a chain committed before the field existed). */
  writeConfigHash = true;
  private readonly nonces = new CommittedNonces();
  private offset = 0;

  private constructor(readonly consortium: Consortium, readonly manifestText: string) {
    for (const m of consortium.members) this.signers.set(m.id, { memberId: m.id, privateKey: createPrivateKey(m.signingKeyPem) });
    this.membership = genesisMembership({ members: consortium.members.map((m) => ({ id: m.id, certificatePem: m.certPem, signingPublicKeyPem: m.signingPublicKeyPem })) });
  }

  /** A consortium (certificates issued at `now`) and its consortium.json as `medblock consortium init` writes it. */
  static async create(members: string[], now?: Date): Promise<ProofChain> {
    const consortium = await createConsortium({ members, now, channel: 'proof-chain' });
    const dir = mkdtempSync(join(tmpdir(), 'medblock-proof-chain-'));
    try {
      writeConsortiumDir(join(dir, 'c'), consortium);
      return new ProofChain(consortium, readFileSync(join(dir, 'c', 'consortium.json'), 'utf8'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  /** Another chain from the same genesis (a member's private fork): same consortium, keys and signers, no blocks. */
  fork(): ProofChain {
    const fork = new ProofChain(this.consortium, this.manifestText);
    for (const [id, signer] of this.signers) fork.signers.set(id, signer);
    return fork;
  }

  get channel(): string {
    return this.consortium.channel;
  }

  signer(id: string): EnvelopeSigner {
    const signer = this.signers.get(id);
    if (!signer) throw new Error(`no signer ${id}`);
    return signer;
  }

  anchor(by: string, digest: string, timestamp: string): Uint8Array {
    return encodeEnvelope(createEnvelope(this.signer(by), { channel: this.channel, type: 'anchor', payload: { entries: [{ digest, type: 'Patient' }] }, timestamp }));
  }

  /** A config envelope carrying the change, approved by `approvers`, created by the first of them. */
  config(change: ConfigChange, approvers: string[], timestamp: string): Uint8Array {
    const nonce = newNonce();
    const approvals = approvers.map((id) => approveConfigChange(this.signer(id), this.channel, nonce, change));
    return encodeEnvelope(createEnvelope(this.signer(approvers[0]), { channel: this.channel, type: 'config', payload: { ...change, approvals }, nonce, timestamp }));
  }

  /** A joining member's keys and its certificate from the consortium CA; the signer is known from then on. */
  async newMember(id: string, now?: Date): Promise<ConfigChange> {
    const { request, signingKeyPem } = await createMemberRequest(id);
    const certificate = issueMemberCertificate(this.consortium.ca, request, id, { now });
    this.signers.set(id, { memberId: id, privateKey: createPrivateKey(signingKeyPem) });
    return { action: 'addMember', member: id, certificate, signingKey: request.signingPublicKeyPem };
  }

  /** Commits a block of these envelopes, validated as every member would, and has `attesters` attest it. */
  commit(envelopes: Uint8Array[], attesters: string[]): Block {
    const previous = this.blocks.at(-1)?.header;
    const cut = { number: this.blocks.length, envelopes: envelopes.map((bytes) => ({ offset: this.offset++, bytes })), firstOffset: 0, lastOffset: 0, cutReason: 'maxMessages' as const };
    cut.firstOffset = cut.envelopes[0].offset;
    cut.lastOffset = cut.envelopes.at(-1)!.offset;
    const { block, verdicts } = buildBlockWithVerdicts(cut, previous, {
      channel: this.channel, members: this.membership, committedNonces: this.nonces, checkMemberCertificate: memberCertificateCheck(this.consortium.ca.certPem),
    });
    if (!this.writeConfigHash) delete block.header.configHash;
    const index = blockIndex(verdicts);
    for (const { creator, nonce } of index.nonces) this.nonces.add(creator, nonce);
    for (const change of index.configChanges) this.membership = applyConfigChange(this.membership, change, block.header.number + 1);
    this.blocks.push(block);
    this.attestations.set(block.header.number, attesters.map((id) => createAttestation(this.signer(id), block.header)));
    return block;
  }

  checkpoint(blockNumber = this.blocks.length - 1): Checkpoint {
    return { header: this.blocks[blockNumber].header, attestations: this.attestations.get(blockNumber) ?? [] };
  }

  /** The proof a gateway would serve for the first entry of envelope `envelopeIndex` of block `blockNumber`. */
  resourceProof(blockNumber: number, envelopeIndex: number, digest: string, checkpointBlock = this.blocks.length - 1): ResourceProof {
    const configChanges = this.blocks.slice(0, checkpointBlock + 1).flatMap((block) =>
      block.envelopes.flatMap((bytes, i) => {
        const value = JSON.parse(Buffer.from(bytes).toString('utf8'));
        return block.validity[i].valid && value.type === 'config' ? [proveConfigChange(block, i, this.attestations.get(block.header.number) ?? [])] : [];
      }));
    return buildResourceProof({
      resource: { type: 'Patient', id: 'p1', versionId: 1, digest },
      anchor: { blockNumber, envelopeIndex, entryIndex: 0 },
      block: this.blocks[blockNumber],
      chain: this.blocks.slice(blockNumber + 1, checkpointBlock + 1).map((b) => b.header),
      checkpoint: this.checkpoint(checkpointBlock),
      consortium: { genesis: this.manifestText, caCertificate: this.consortium.ca.certPem, configChanges },
    });
  }
}

export const digestOf = (text: string) => canonicalDigestHex({ text });
export const headerHashOf = (block: Block) => blockHeaderHash(block.header);
