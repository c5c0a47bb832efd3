/**
 * Config changes on the ledger (docs/ledger.md, "Payloads" and "Membership"): what a change is (add or revoke a member,
 * move its federation address), its strict schema, what an approver signs, and whether a signed config
 * envelope may commit (fits the membership, approved by a quorum of active members). Envelope framing,
 * signing and the order of checks stay in envelope.ts, which re-exports the types.
 */
import { createPublicKey } from 'node:crypto';
import type { ValidationContext } from './envelope.ts';
import { federationAddressProblem, isP256Key, MEMBER_ID_PATTERN } from './membership.ts';
import { base64urlProblem, patternProblem, shapeProblem, type Problem } from './schema-checks.ts';
import { SIGNATURE_BYTES, signedBytes, verifyLowS } from './signature.ts';

export const CONFIG_APPROVAL_PREFIX = 'medblock/config-approval/v1\n';
export const MAX_CONFIG_APPROVALS = 256;
export const MAX_CERTIFICATE_CHARS = 16 * 1024;
/** Shape only: the CA work replaces this with X.509 parsing and a chain check. */
const PUBLIC_KEY_PEM_PATTERN = /^-----BEGIN PUBLIC KEY-----\r?\n[A-Za-z0-9+/=\r\n]+-----END PUBLIC KEY-----(?:\r?\n)?$/;
const MAX_SIGNING_KEY_CHARS = 1024;
const CERTIFICATE_PEM_PATTERN = /^-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----(?:\r?\n)?$/;

export type ConfigAction = 'addMember' | 'revokeMember' | 'setFederationAddress';
export interface ConfigChange {
  action: ConfigAction;
  member: string;
  /** PEM certificate of the member to add; required for addMember, absent otherwise. */
  certificate?: string;
  /** SPKI PEM of the added member's P-256 envelope-signing key (named by its certificate); addMember only. */
  signingKey?: string;
  /** The added member's federation listener (`https://host:port`); optional, addMember only. */
  federationAddress?: string;
  /** The member's new federation listener (`https://host:port`); required for setFederationAddress, absent otherwise. */
  address?: string;
}
export interface ConfigApproval {
  member: string;
  signature: string;
}
export interface ConfigPayload extends ConfigChange {
  /** Signatures of current members over the change, bound to this envelope's channel and nonce. */
  approvals: ConfigApproval[];
}

/** The optional members of a config change, and the actions each one belongs to. */
const CONFIG_CHANGE_FIELDS: Readonly<Record<string, readonly ConfigAction[]>> = {
  certificate: ['addMember'],
  signingKey: ['addMember'],
  federationAddress: ['addMember'],
  address: ['setFederationAddress'],
};
export const CONFIG_CHANGE_OPTIONAL = Object.keys(CONFIG_CHANGE_FIELDS);

export function configChangeProblem(change: Record<string, unknown>, path: string): Problem {
  const { action, member, certificate, signingKey } = change;
  if (action !== 'addMember' && action !== 'revokeMember' && action !== 'setFederationAddress') {
    return `${path}/action must be addMember, revokeMember or setFederationAddress`;
  }
  const memberProblem = patternProblem(member, `${path}/member`, MEMBER_ID_PATTERN);
  if (memberProblem !== undefined) return memberProblem;
  for (const [field, actions] of Object.entries(CONFIG_CHANGE_FIELDS)) {
    if (Object.hasOwn(change, field) && !actions.includes(action)) return `${path}/${field} is not allowed for ${action}`;
  }
  if (action === 'revokeMember') return undefined;
  if (action === 'setFederationAddress') return addressProblem(change.address, `${path}/address`);
  if (Object.hasOwn(change, 'federationAddress')) {
    const problem = addressProblem(change.federationAddress, `${path}/federationAddress`);
    if (problem !== undefined) return problem;
  }
  const wellFormed =
    typeof certificate === 'string' && certificate.length <= MAX_CERTIFICATE_CHARS && CERTIFICATE_PEM_PATTERN.test(certificate);
  if (!wellFormed) return `${path}/certificate must be a PEM certificate for addMember`;
  return isP256PublicKeyPem(signingKey) ? undefined : `${path}/signingKey must be the SPKI PEM of a P-256 public key for addMember`;
}

function addressProblem(address: unknown, path: string): Problem {
  const problem = federationAddressProblem(address);
  return problem === undefined ? undefined : `${path} ${problem}`;
}

function isP256PublicKeyPem(value: unknown): boolean {
  if (typeof value !== 'string' || value.length > MAX_SIGNING_KEY_CHARS || !PUBLIC_KEY_PEM_PATTERN.test(value)) return false;
  try {
    return isP256Key(createPublicKey(value), 'public');
  } catch {
    return false;
  }
}

export function configPayloadProblem(payload: Record<string, unknown>): Problem {
  const changeProblem = configChangeProblem(payload, '/payload');
  if (changeProblem !== undefined) return changeProblem;
  const { approvals } = payload;
  if (!Array.isArray(approvals) || approvals.length === 0 || approvals.length > MAX_CONFIG_APPROVALS) {
    return `/payload/approvals must be an array of 1 to ${MAX_CONFIG_APPROVALS} approvals`;
  }
  const approvers = new Set<unknown>();
  for (let i = 0; i < approvals.length; i++) {
    const path = `/payload/approvals/${i}`;
    const problem =
      shapeProblem(approvals[i], path, ['member', 'signature']) ??
      patternProblem(approvals[i].member, `${path}/member`, MEMBER_ID_PATTERN) ??
      base64urlProblem(approvals[i].signature, `${path}/signature`, SIGNATURE_BYTES);
    if (problem !== undefined) return problem;
    if (approvers.has(approvals[i].member)) return `${path}/member approved twice`;
    approvers.add(approvals[i].member);
  }
  return undefined;
}

/**
 * What an approver signs: the change, bound to one envelope (channel and nonce) so it cannot be reused. An
 * absent field is absent from the canonical JSON, so approvals of changes without the later fields keep their bytes.
 */
export function approvalSignedBytes(channel: string, nonce: string, { action, member, certificate, signingKey, federationAddress, address }: ConfigChange): Buffer {
  return signedBytes(CONFIG_APPROVAL_PREFIX, { channel, nonce, action, member, certificate, signingKey, federationAddress, address });
}

/** What the ledger needs to decide a config change: the membership at the block, and the certificate check. */
export type ConfigChangeContext = Pick<ValidationContext, 'members' | 'blockNumber' | 'checkMemberCertificate'>;

/** Why a well-formed, signed config envelope cannot commit. */
export interface ConfigChangeRefusal {
  reason: 'bad-payload' | 'no-quorum';
  detail: string;
}

/** Config changes must fit the membership and carry approvals of a quorum of active members. */
export function configChangeRejection(
  envelope: { channel: string; nonce: string; timestamp: string; payload: ConfigPayload },
  { members, blockNumber, checkMemberCertificate }: ConfigChangeContext,
): ConfigChangeRefusal | undefined {
  const { payload } = envelope;
  if (payload.action === 'addMember' && members.get(payload.member) !== undefined) {
    return refuse('bad-payload', '/payload/member is already a member id (ids are never reused)');
  }
  if (payload.action === 'addMember' && checkMemberCertificate !== undefined) {
    const problem = checkMemberCertificate(payload.certificate!, payload.member, payload.signingKey!, envelope.timestamp);
    if (problem !== undefined) return refuse('bad-payload', `/payload/certificate ${problem}`);
  }
  if (payload.action !== 'addMember' && !members.isActiveAt(payload.member, blockNumber)) {
    return refuse('bad-payload', '/payload/member is not an active member');
  }
  const message = approvalSignedBytes(envelope.channel, envelope.nonce, payload);
  for (let i = 0; i < payload.approvals.length; i++) {
    const { member, signature } = payload.approvals[i];
    if (!members.isActiveAt(member, blockNumber)) return refuse('no-quorum', `/payload/approvals/${i} is not from an active member`);
    if (!verifyLowS(members.get(member)!.publicKey, message, signature)) {
      return refuse('no-quorum', `/payload/approvals/${i} has a bad signature`);
    }
  }
  const quorum = members.quorumAt(blockNumber);
  if (payload.approvals.length < quorum) return refuse('no-quorum', `${payload.approvals.length} approvals < quorum ${quorum}`);
  return undefined;
}

function refuse(reason: ConfigChangeRefusal['reason'], detail: string): ConfigChangeRefusal {
  return { reason, detail };
}
