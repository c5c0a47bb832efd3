/**
 * Self-contained proofs a third party checks offline against the consortium it pinned out of band
 * (consortium.json or its fingerprint, and the CA certificate it names):
 *
 * - a **resource proof**: this digest was anchored by this member, in this envelope, in this block, and
 *   that block is in the chain a quorum of members attested (docs/proofs.md, "Resource proofs");
 * - a **consistency proof**: the chain at an old block is a prefix of the chain at a newer checkpoint
 *   (nothing before the old block was rewritten), via the headers in between.
 *
 * Verification never throws; it returns every problem found, empty when the proof holds.
 */
import { createHash } from 'node:crypto';
import { verifyCheckpoint, type Attestation, type Checkpoint } from './attestation.ts';
import { blockHeaderHash, configChainHash, envelopeInclusionProof, headerProblems, verifyChain, verifyEnvelopeInclusion, type Block, type BlockHeader, type EnvelopeInclusionProof } from './block.ts';
import { CHANNEL_PATTERN, validateEnvelope, type ConfigChange } from './envelope.ts';
import { applyConfigChange, Membership } from './membership.ts';
import { certificateFingerprint, verifyMemberCertificate } from '../identity/ca.ts';
import { memberCertificateCheck } from '../identity/consortium-dir.ts';
import { signingKeyUri } from '../identity/signing-key.ts';
import { COMMITMENT_SALT_BYTES, versionCommitmentHex } from './canonical-json.ts';

export const RESOURCE_PROOF_FORMAT = 'medblock-proof/v2';
export const CONSISTENCY_PROOF_FORMAT = 'medblock-consistency/v2';

/** One config envelope on the chain, with what binds it there: its block's header and a quorum's attestations of it. */
export interface ProvenConfigChange {
  /** The config envelope's wire bytes, base64url. */
  envelope: string;
  inclusion: EnvelopeInclusionProof;
  /** A quorum of the members in force at that block attesting its header. */
  checkpoint: Checkpoint;
}

/**
 * The consortium material a proof carries. None of it is trusted as given: `genesis` must match the
 * consortium.json (or its fingerprint) the verifier pinned out of band, the CA certificate must be the one
 * consortium.json names, and every later membership change is a config envelope on the chain.
 */
export interface ProofConsortium {
  /** consortium.json exactly as every member holds it (its bytes' SHA-256 is the consortium fingerprint). */
  genesis: string;
  caCertificate: string;
  /** Every valid config envelope up to the checkpoint's block, in chain order. */
  configChanges: ProvenConfigChange[];
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

/** The consortium fingerprint: lowercase hex SHA-256 of consortium.json's bytes (`sha256sum consortium.json`). */
export function consortiumFingerprint(consortiumJson: string | Uint8Array): string {
  return createHash('sha256').update(consortiumJson).digest('hex');
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

/** A config envelope of a committed block, with its inclusion and the attestations kept for that block. */
export function proveConfigChange(block: Block, envelopeIndex: number, attestations: Attestation[]): ProvenConfigChange {
  const headerHash = blockHeaderHash(block.header);
  return {
    envelope: Buffer.from(block.envelopes[envelopeIndex]).toString('base64url'),
    inclusion: envelopeInclusionProof(block, envelopeIndex),
    checkpoint: { header: block.header, attestations: attestations.filter((a) => a.headerHash === headerHash) },
  };
}

/**
 * What the verifier trusts, given out of band. Fail-closed: without `consortium` or `consortiumFingerprint`
 * every proof fails, since the membership, the quorum and the CA would otherwise be whatever the prover wrote.
 */
export interface ProofOptions {
  /** consortium.json as the verifier holds it (text or bytes). */
  consortium?: string | Uint8Array;
  /** Or only its SHA-256 (consortiumFingerprint), lowercase hex. */
  consortiumFingerprint?: string;
  /** The CA certificate the verifier holds; it must be the one consortium.json names (by fingerprint). */
  trustedCaCertificate?: string;
}

export interface ProofReport {
  problems: ProofProblem[];
  warnings: string[];
}

interface Genesis {
  channel: string;
  quorum: number;
  caFingerprint: string;
  members: Array<{ id: string; certificatePem: string; signingPublicKey: string }>;
}

/** The fields of consortium.json a verifier uses, or a problem. */
function parseGenesis(text: string): Genesis | string {
  let config: any;
  try {
    config = JSON.parse(text);
  } catch {
    return 'is not JSON';
  }
  const { channel, quorum, ca, members } = config ?? {};
  if (typeof channel !== 'string' || !CHANNEL_PATTERN.test(channel)) return 'has no valid channel';
  if (!Number.isSafeInteger(quorum) || quorum < 1) return 'has no valid quorum';
  if (typeof ca?.sha256Fingerprint !== 'string' || !/^[0-9a-f]{64}$/.test(ca.sha256Fingerprint)) return 'has no CA sha256Fingerprint';
  if (!Array.isArray(members) || members.length === 0) return 'lists no members';
  for (const m of members) {
    if (typeof m?.id !== 'string' || typeof m.certificatePem !== 'string' || typeof m.signingPublicKey !== 'string') {
      return 'must give every member inline (id, certificatePem, signingPublicKey)';
    }
  }
  return { channel, quorum, caFingerprint: ca.sha256Fingerprint, members };
}

/** The trust anchors: the pinned genesis, its CA, and the membership at block 0 (certificates judged at `at`). */
interface Trust {
  genesis: Genesis;
  caCertificate: string;
  genesisMembership: Membership;
}

function fingerprintOfCa(pem: string): string | undefined {
  try {
    return certificateFingerprint(pem);
  } catch {
    return undefined;
  }
}

function pinnedTrust(value: unknown, at: Date, options: ProofOptions, report: ProofReport): Trust | undefined {
  const problem = (path: string, text: string) => void report.problems.push({ path, problem: text });
  const pinned = options.consortium !== undefined ? consortiumFingerprint(options.consortium) : options.consortiumFingerprint?.toLowerCase();
  if (pinned === undefined) {
    return problem('/consortium', 'no pinned consortium: give the consortium.json you trust (or its SHA-256 fingerprint); the membership, quorum and CA inside a proof prove nothing on their own'), undefined;
  }
  const consortium = value as Partial<ProofConsortium> | undefined;
  if (!consortium || typeof consortium.genesis !== 'string' || typeof consortium.caCertificate !== 'string' || !Array.isArray(consortium.configChanges)) {
    return problem('/consortium', 'must give genesis, caCertificate and configChanges'), undefined;
  }
  if (consortiumFingerprint(consortium.genesis) !== pinned) {
    return problem('/consortium/genesis', 'is not the pinned consortium.json (its SHA-256 differs)'), undefined;
  }
  const genesis = parseGenesis(consortium.genesis);
  if (typeof genesis === 'string') return problem('/consortium/genesis', genesis), undefined;
  const caCertificate = options.trustedCaCertificate ?? consortium.caCertificate;
  if (fingerprintOfCa(caCertificate) !== genesis.caFingerprint) {
    const which = options.trustedCaCertificate === undefined ? '/consortium/caCertificate' : '/consortium';
    return problem(which, `${options.trustedCaCertificate === undefined ? 'is' : 'the trusted CA certificate is'} not the CA consortium.json names`), undefined;
  }
  const entries = new Map<string, { publicKey: string }>();
  genesis.members.forEach((member, i) => {
    const path = `/consortium/genesis/members/${i}`;
    const check = verifyMemberCertificate(caCertificate, member.certificatePem, { at });
    if (!check.ok) return problem(path, `certificate: ${check.reasons.join('; ')}`);
    if (check.memberId !== member.id) return problem(path, `the certificate names ${check.memberId}, not ${member.id}`);
    if (signingKeyUri(member.signingPublicKey) !== check.signingKeyUri) return problem(path, 'the signing key is not the one the certificate names');
    entries.set(member.id, { publicKey: member.signingPublicKey });
  });
  try {
    return { genesis, caCertificate, genesisMembership: new Membership(entries) };
  } catch (e) {
    return problem('/consortium/genesis/members', (e as Error).message), undefined;
  }
}

/**
 * The membership in force at each block up to `lastBlock`: genesis, then each config envelope the proof
 * carries, checked in chain order exactly as members validate it (approvals of a quorum of the members in
 * force at its block, the added member's certificate by the pinned CA at the envelope's time), included in
 * its block as valid, and that block attested by a quorum of the members in force there.
 */
function membershipHistory(trust: Trust, configChanges: unknown[], lastBlock: number, report: ProofReport): ((blockNumber: number) => Membership) | undefined {
  const { channel, quorum } = trust.genesis;
  const steps: Array<{ from: number; membership: Membership }> = [{ from: 0, membership: trust.genesisMembership }];
  const checkCertificate = memberCertificateCheck(trust.caCertificate);
  let previous = { block: -1, envelope: -1 };
  let pending: Array<{ change: ConfigChange; block: number }> = [];
  let membership = trust.genesisMembership;
  const applyPending = () => {
    for (const { change, block } of pending) membership = applyConfigChange(membership, change, block + 1);
    if (pending.length) steps.push({ from: pending[0].block + 1, membership });
    pending = [];
  };
  for (let i = 0; i < configChanges.length; i++) {
    const path = `/consortium/configChanges/${i}`;
    const problemsBefore = report.problems.length;
    const entry = configChanges[i] as Partial<ProvenConfigChange> | null;
    const header = entry?.checkpoint?.header;
    if (!entry || headerProblems(header, '').length > 0) return void report.problems.push({ path, problem: 'must give envelope, inclusion and checkpoint {header, attestations}' });
    const { number } = header as BlockHeader;
    const index = (entry.inclusion as Partial<EnvelopeInclusionProof> | undefined)?.index ?? -1;
    if (number > lastBlock) return void report.problems.push({ path, problem: `is in block ${number}, after the checkpoint` });
    if (number < previous.block || (number === previous.block && index <= previous.envelope)) {
      return void report.problems.push({ path, problem: 'is not after the config change before it' });
    }
    if (number > previous.block) applyPending();
    previous = { block: number, envelope: index };
    for (const p of verifyCheckpoint(entry.checkpoint, channel, membership, quorum)) report.problems.push({ path: `${path}/checkpoint${p.path}`, problem: p.problem });
    const bytes = typeof entry.envelope === 'string' ? new Uint8Array(Buffer.from(entry.envelope, 'base64url')) : undefined;
    const inclusion = bytes && verifyEnvelopeInclusion(bytes, entry.inclusion, header as BlockHeader);
    if (!inclusion || !inclusion.included) report.problems.push({ path: `${path}/inclusion`, problem: inclusion ? inclusion.problem : 'the envelope must be base64url' });
    else if (inclusion.validity !== 'valid') report.problems.push({ path: `${path}/inclusion`, problem: `the envelope was committed as invalid (${inclusion.validity})` });
    const verdict = validateEnvelope(bytes, { channel, blockNumber: number, members: membership, committedNonces: { has: () => false }, maxEnvelopeBytes: Infinity, checkMemberCertificate: checkCertificate });
    if (!verdict.valid) report.problems.push({ path: `${path}/envelope`, problem: `${verdict.reason}: ${verdict.detail}` });
    else if (verdict.envelope.type !== 'config') report.problems.push({ path: `${path}/envelope`, problem: `is a ${verdict.envelope.type} envelope` });
    // A membership built on an unproven change would judge everything after it: stop here.
    if (report.problems.length > problemsBefore || !verdict.valid || verdict.envelope.type !== 'config') return undefined;
    const { approvals: _approvals, ...change } = verdict.envelope.payload;
    pending.push({ change, block: number });
  }
  applyPending();
  return (blockNumber) => steps.reduce((found, step) => (step.from <= blockNumber ? step.membership : found), trust.genesisMembership);
}

/**
 * The config changes carried (already proven genuine, in chain order) are all those of the attested chain: the
 * configHash recomputed over them, block by block, must be each config block's own attested configHash and, at
 * the end, the checkpoint's. Config blocks written before headers had the field commit to nothing (a warning).
 */
function checkConfigCompleteness(configChanges: ProvenConfigChange[], checkpointHeader: BlockHeader, report: ProofReport): void {
  const leftOutOrAdded = 'is not the hash chain of the config changes the proof carries: one is left out, or they are not this chain\'s';
  let chained: string | undefined;
  const uncommitted: number[] = [];
  for (let first = 0; first < configChanges.length; ) {
    const blockNumber = configChanges[first].checkpoint.header.number;
    let end = first;
    while (end < configChanges.length && configChanges[end].checkpoint.header.number === blockNumber) end++;
    const group = configChanges.slice(first, end);
    if (chained === undefined && group.every((change) => change.checkpoint.header.configHash === undefined)) uncommitted.push(blockNumber);
    else {
      chained = configChainHash(chained, blockNumber, group.map((change) => new Uint8Array(Buffer.from(change.envelope, 'base64url'))));
      group.forEach((change, k) => {
        if (change.checkpoint.header.configHash !== chained) report.problems.push({ path: `/consortium/configChanges/${first + k}/checkpoint/header/configHash`, problem: leftOutOrAdded });
      });
    }
    first = end;
  }
  if (checkpointHeader.configHash !== chained) report.problems.push({ path: '/checkpoint/header/configHash', problem: leftOutOrAdded });
  if (uncommitted.length > 0) {
    report.warnings.push(`the config changes of block(s) ${uncommitted.join(', ')} predate the headers' configHash: that none of them is left out is not attested`);
  }
}

/** The trust a proof establishes: the pinned genesis and the membership in force at any block up to the checkpoint. */
function consortiumAt(value: unknown, checkpoint: unknown, options: ProofOptions, report: ProofReport): { channel: string; quorum: number; membershipAt: (blockNumber: number) => Membership } | undefined {
  const checkpointHeader = (checkpoint as Partial<Checkpoint> | undefined)?.header;
  if (headerProblems(checkpointHeader, '').length > 0) {
    report.problems.push({ path: '/checkpoint/header', problem: 'must be a well-formed block header' });
    return undefined;
  }
  // Judged at the checkpoint's time, which a quorum attests (checked below with this membership): an old
  // proof still verifies after its certificates expired, and the prover alone cannot pick the time.
  const { number, time } = checkpointHeader as BlockHeader;
  const trust = pinnedTrust(value, new Date(time), options, report);
  if (!trust) return undefined;
  const membershipAt = membershipHistory(trust, (value as ProofConsortium).configChanges, number, report);
  if (!membershipAt) return undefined;
  checkConfigCompleteness((value as ProofConsortium).configChanges, checkpointHeader as BlockHeader, report);
  return { channel: trust.genesis.channel, quorum: trust.genesis.quorum, membershipAt };
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

export function verifyResourceProof(proof: unknown, options: ProofOptions = {}): ProofReport {
  const report: ProofReport = { problems: [], warnings: [] };
  const p = proof as Partial<ResourceProof> | null;
  if (!p || typeof p !== 'object' || p.format !== RESOURCE_PROOF_FORMAT) {
    report.problems.push({ path: '/format', problem: `must be ${RESOURCE_PROOF_FORMAT}` });
    return report;
  }
  const consortium = consortiumAt(p.consortium, p.checkpoint, options, report);
  if (!consortium) return report;
  const headerIssues = headerProblems(p.header, '/header');
  report.problems.push(...headerIssues);
  if (headerIssues.length > 0) return report;
  const header = p.header as BlockHeader;
  if (header.channel !== consortium.channel) report.problems.push({ path: '/header/channel', problem: `is not the consortium channel ${consortium.channel}` });
  const checkpointBlock = (p.checkpoint as Checkpoint).header.number;
  checkChainToCheckpoint(header, p.chain, p.checkpoint, consortium.channel, consortium.membershipAt(checkpointBlock), consortium.quorum, report, '/chain');

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
    members: consortium.membershipAt(header.number),
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
  const consortium = consortiumAt(p.consortium, p.checkpoint, options, report);
  if (!consortium) return report;
  const fromIssues = headerProblems(p.from, '/from');
  report.problems.push(...fromIssues);
  if (fromIssues.length > 0) return report;
  if (options.oldHeader && blockHeaderHash(options.oldHeader) !== blockHeaderHash(p.from as BlockHeader)) {
    report.problems.push({ path: '/from', problem: 'is not the header of the old checkpoint: the chain was rewritten at or before that block' });
  }
  const checkpointBlock = (p.checkpoint as Checkpoint).header.number;
  checkChainToCheckpoint(p.from, p.headers, p.checkpoint, consortium.channel, consortium.membershipAt(checkpointBlock), consortium.quorum, report, '/headers');
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
