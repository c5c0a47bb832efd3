/**
 * Self-contained proofs a third party checks offline with only the consortium CA certificate:
 *
 * - a **resource proof**: this digest was anchored by this member, in this envelope, in this block, and
 *   that block is in the chain a quorum of members attested (docs/proofs.md, "Resource proofs");
 * - a **consistency proof**: the chain at an old block is a prefix of the chain at a newer checkpoint
 *   (nothing before the old block was rewritten), via the headers in between.
 *
 * Verification never throws; it returns every problem found, empty when the proof holds.
 */
import { verifyCheckpoint, type Checkpoint } from './attestation.ts';
import { blockHeaderHash, envelopeInclusionProof, headerProblems, verifyChain, verifyEnvelopeInclusion, type Block, type BlockHeader, type EnvelopeInclusionProof } from './block.ts';
import { validateEnvelope } from './envelope.ts';
import { Membership } from './membership.ts';
import { verifyMemberCertificate } from '../identity/ca.ts';
import { signingKeyUri } from '../identity/signing-key.ts';
import { createPublicKey } from 'node:crypto';
import { COMMITMENT_SALT_BYTES, versionCommitmentHex } from './canonical-json.ts';

export const RESOURCE_PROOF_FORMAT = 'medblock-proof/v1';
export const CONSISTENCY_PROOF_FORMAT = 'medblock-consistency/v1';

/** The public consortium material a verifier needs: every member's certificate and signing key. */
export interface ProofConsortium {
  channel: string;
  quorum: number;
  caCertificate: string;
  members: Array<{ id: string; certificate: string; signingKey: string; revokedAtBlock?: number }>;
}

export interface ResourceProof {
  format: typeof RESOURCE_PROOF_FORMAT;
  /**
   * The version and what it is anchored with: its commitment (`digest`) and the commitment's salt (hex; absent
   * for a deletion, whose tombstone digest needs none). With the resource's JSON, the salt lets anyone
   * recompute the commitment (verifyResourceCommitment); without the JSON it opens nothing but guesses.
   */
  resource: { type: string; id: string; versionId: number; digest: string; salt?: string };
  anchor: { blockNumber: number; envelopeIndex: number; entryIndex: number };
  /** The anchor envelope's wire bytes, base64url. */
  envelope: string;
  inclusion: EnvelopeInclusionProof;
  /** Header of the anchoring block. */
  header: BlockHeader;
  /** Headers from the anchoring block + 1 up to the checkpoint's block, each linking to the one before. */
  chain: BlockHeader[];
  checkpoint: Checkpoint;
  consortium: ProofConsortium;
}

export interface ConsistencyProof {
  format: typeof CONSISTENCY_PROOF_FORMAT;
  /** The old header (what the verifier kept from an earlier checkpoint). */
  from: BlockHeader;
  /** Headers from.number + 1 .. checkpoint.header.number. */
  headers: BlockHeader[];
  checkpoint: Checkpoint;
  consortium: ProofConsortium;
}

export interface ProofProblem {
  path: string;
  problem: string;
}

export function buildResourceProof(input: {
  resource: ResourceProof['resource'];
  anchor: ResourceProof['anchor'];
  block: Block;
  chain: BlockHeader[];
  checkpoint: Checkpoint;
  consortium: ProofConsortium;
}): ResourceProof {
  const { resource, anchor, block, chain, checkpoint, consortium } = input;
  return {
    format: RESOURCE_PROOF_FORMAT,
    resource,
    anchor,
    envelope: Buffer.from(block.envelopes[anchor.envelopeIndex]).toString('base64url'),
    inclusion: envelopeInclusionProof(block, anchor.envelopeIndex),
    header: block.header,
    chain,
    checkpoint,
    consortium,
  };
}

export interface ProofOptions {
  /** The CA certificate the verifier trusts; without it the proof's own CA is used and a warning is given. */
  trustedCaCertificate?: string;
}

export interface ProofReport {
  problems: ProofProblem[];
  warnings: string[];
}

/**
 * Checks the consortium section against the trusted CA and returns the membership it describes.
 * Certificates are checked at the checkpoint's block time, when the attestations were made, so an old
 * proof still verifies after its certificates expired.
 */
function consortiumMembership(value: unknown, at: Date, options: ProofOptions, report: ProofReport): { membership: Membership; consortium: ProofConsortium } | undefined {
  const consortium = value as Partial<ProofConsortium> | undefined;
  if (!consortium || typeof consortium.channel !== 'string' || !Array.isArray(consortium.members) || typeof consortium.caCertificate !== 'string') {
    report.problems.push({ path: '/consortium', problem: 'must give channel, quorum, caCertificate and members' });
    return undefined;
  }
  let ca = consortium.caCertificate;
  if (options.trustedCaCertificate === undefined) {
    report.warnings.push('no trusted CA certificate given: trusting the CA certificate inside the proof (pass the consortium CA to check it)');
  } else {
    ca = options.trustedCaCertificate;
  }
  const entries = new Map<string, { publicKey: string; revokedAtBlock?: number }>();
  consortium.members.forEach((member, i) => {
    const path = `/consortium/members/${i}`;
    try {
      const check = verifyMemberCertificate(ca, member.certificate, { at });
      if (!check.ok) return void report.problems.push({ path, problem: `certificate: ${check.reasons.join('; ')}` });
      if (check.memberId !== member.id) return void report.problems.push({ path, problem: `the certificate names ${check.memberId}, not ${member.id}` });
      if (signingKeyUri(member.signingKey) !== check.signingKeyUri) return void report.problems.push({ path, problem: 'the signing key is not the one the certificate names' });
      createPublicKey(member.signingKey);
      entries.set(member.id, { publicKey: member.signingKey, revokedAtBlock: member.revokedAtBlock });
    } catch (e) {
      report.problems.push({ path, problem: `unusable member entry: ${(e as Error).message}` });
    }
  });
  try {
    return { membership: new Membership(entries), consortium: consortium as ProofConsortium };
  } catch (e) {
    report.problems.push({ path: '/consortium/members', problem: (e as Error).message });
    return undefined;
  }
}

/** The checkpoint is attested by a quorum and `headers` link `first` up to it. */
function checkChainToCheckpoint(first: BlockHeader | undefined, headers: unknown, checkpoint: unknown, channel: string, membership: Membership, quorum: number, report: ProofReport, chainPath: string): void {
  for (const p of verifyCheckpoint(checkpoint, channel, membership, quorum)) report.problems.push({ path: `/checkpoint${p.path}`, problem: p.problem });
  if (!Array.isArray(headers)) return void report.problems.push({ path: chainPath, problem: 'must be an array of headers' });
  if (first === undefined || headerProblems(first, '').length > 0) return;
  for (const p of verifyChain(headers, first)) report.problems.push({ path: `${chainPath}${p.path}`, problem: p.problem });
  const last = (headers.length ? headers[headers.length - 1] : first) as BlockHeader;
  const target = (checkpoint as Partial<Checkpoint> | undefined)?.header;
  if (!target || headerProblems(target, '').length > 0 || headerProblems(last, '').length > 0 || blockHeaderHash(last) !== blockHeaderHash(target)) {
    report.problems.push({ path: chainPath, problem: 'does not end at the checkpoint header' });
  }
}

function checkpointTime(checkpoint: unknown): Date {
  const time = Date.parse((checkpoint as Partial<Checkpoint> | undefined)?.header?.time ?? '');
  return Number.isNaN(time) ? new Date() : new Date(time);
}

export function verifyResourceProof(proof: unknown, options: ProofOptions = {}): ProofReport {
  const report: ProofReport = { problems: [], warnings: [] };
  const p = proof as Partial<ResourceProof> | null;
  if (!p || typeof p !== 'object' || p.format !== RESOURCE_PROOF_FORMAT) {
    report.problems.push({ path: '/format', problem: `must be ${RESOURCE_PROOF_FORMAT}` });
    return report;
  }
  const members = consortiumMembership(p.consortium, checkpointTime(p.checkpoint), options, report);
  if (!members) return report;
  const { membership, consortium } = members;
  const headerIssues = headerProblems(p.header, '/header');
  report.problems.push(...headerIssues);
  if (headerIssues.length > 0) return report;
  const header = p.header as BlockHeader;
  if (header.channel !== consortium.channel) report.problems.push({ path: '/header/channel', problem: `is not the consortium channel ${consortium.channel}` });
  checkChainToCheckpoint(header, p.chain, p.checkpoint, consortium.channel, membership, consortium.quorum, report, '/chain');

  const envelopeBytes = typeof p.envelope === 'string' ? Buffer.from(p.envelope, 'base64url') : undefined;
  if (!envelopeBytes) return report.problems.push({ path: '/envelope', problem: 'must be base64url' }), report;
  const inclusion = verifyEnvelopeInclusion(new Uint8Array(envelopeBytes), p.inclusion, header);
  if (!inclusion.included) report.problems.push({ path: '/inclusion', problem: inclusion.problem });
  else if (inclusion.validity !== 'valid') report.problems.push({ path: '/inclusion', problem: `the envelope was committed as invalid (${inclusion.validity})` });
  if (p.inclusion?.index !== p.anchor?.envelopeIndex) report.problems.push({ path: '/anchor/envelopeIndex', problem: 'is not the leaf the inclusion proof is for' });

  // Signature and membership at that block; replay was judged when the block was committed (the verdict above).
  const verdict = validateEnvelope(new Uint8Array(envelopeBytes), {
    channel: consortium.channel,
    blockNumber: header.number,
    members: membership,
    committedNonces: { has: () => false },
    maxEnvelopeBytes: Infinity,
  });
  if (!verdict.valid) return report.problems.push({ path: '/envelope', problem: `${verdict.reason}: ${verdict.detail}` }), report;
  const { envelope } = verdict;
  if (envelope.type !== 'anchor' && envelope.type !== 'audit') return report.problems.push({ path: '/envelope', problem: `is a ${envelope.type} envelope` }), report;
  const entry = envelope.payload.entries[p.anchor?.entryIndex ?? -1] as { digest: string; type?: string } | undefined;
  if (!entry) report.problems.push({ path: '/anchor/entryIndex', problem: 'is not an entry of the envelope' });
  else {
    if (entry.digest !== p.resource?.digest) report.problems.push({ path: '/resource/digest', problem: 'is not the commitment anchored at that entry' });
    if (entry.type !== undefined && entry.type !== p.resource?.type) report.problems.push({ path: '/resource/type', problem: `the entry anchors a ${entry.type}` });
  }
  return report;
}

export function verifyConsistencyProof(proof: unknown, options: ProofOptions & { oldHeader?: BlockHeader } = {}): ProofReport {
  const report: ProofReport = { problems: [], warnings: [] };
  const p = proof as Partial<ConsistencyProof> | null;
  if (!p || typeof p !== 'object' || p.format !== CONSISTENCY_PROOF_FORMAT) {
    report.problems.push({ path: '/format', problem: `must be ${CONSISTENCY_PROOF_FORMAT}` });
    return report;
  }
  const members = consortiumMembership(p.consortium, checkpointTime(p.checkpoint), options, report);
  if (!members) return report;
  const fromIssues = headerProblems(p.from, '/from');
  report.problems.push(...fromIssues);
  if (fromIssues.length > 0) return report;
  if (options.oldHeader && blockHeaderHash(options.oldHeader) !== blockHeaderHash(p.from as BlockHeader)) {
    report.problems.push({ path: '/from', problem: 'is not the header of the old checkpoint: the chain was rewritten at or before that block' });
  }
  checkChainToCheckpoint(p.from, p.headers, p.checkpoint, members.consortium.channel, members.membership, members.consortium.quorum, report, '/headers');
  return report;
}

const SALT_HEX = new RegExp(`^[0-9a-f]{${2 * COMMITMENT_SALT_BYTES}}$`);

/**
 * Checks a resource version (parsed with parseFhirJson) against the `resource` section of a proof: its
 * commitment under the proof's salt is the proven one, and its type, id and version are the ones the proof
 * names (the ledger holds only the commitment; they are bound to it through the version's own JSON).
 */
export function verifyResourceCommitment(claimed: Partial<ResourceProof['resource']> | undefined, resource: unknown): ProofProblem[] {
  const problems: ProofProblem[] = [];
  const r = resource as { resourceType?: unknown; id?: unknown; meta?: { versionId?: unknown } } | null;
  if (typeof claimed?.salt !== 'string' || !SALT_HEX.test(claimed.salt)) {
    problems.push({ path: '/resource/salt', problem: `must be the commitment salt, ${2 * COMMITMENT_SALT_BYTES} lowercase hex digits` });
  } else {
    let commitment: string | undefined;
    try {
      commitment = versionCommitmentHex(Buffer.from(claimed.salt, 'hex'), resource);
    } catch {
      problems.push({ path: '/resource', problem: 'the resource has no canonical form' });
    }
    if (commitment !== undefined && commitment !== claimed.digest) {
      problems.push({ path: '/resource/digest', problem: `the resource and salt give the commitment ${commitment}, not the proven one` });
    }
  }
  if (r?.resourceType !== claimed?.type) problems.push({ path: '/resource/type', problem: `the resource is a ${String(r?.resourceType)}, not a ${String(claimed?.type)}` });
  if (r?.id !== claimed?.id) problems.push({ path: '/resource/id', problem: `the resource has id ${JSON.stringify(r?.id ?? null)}, not ${JSON.stringify(claimed?.id ?? null)}` });
  if (r?.meta?.versionId !== String(claimed?.versionId)) {
    problems.push({ path: '/resource/versionId', problem: `the resource is version ${JSON.stringify(r?.meta?.versionId ?? null)}, not ${JSON.stringify(String(claimed?.versionId))}` });
  }
  return problems;
}
