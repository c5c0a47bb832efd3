/**
 * Who is at the other end of a federation connection: the TLS peer certificate → the consortium member it
 * identifies, and whether that member is active at the ledger's current height. Pure: the caller gives the
 * certificate, the CA, the ledger's Membership and its height.
 *
 * Membership (src/ledger/membership.ts) holds each member's envelope-signing key, not its certificate, so a
 * certificate identifies a member when (1) it is a valid member certificate issued by the consortium CA
 * (identity/ca.ts verifyMemberCertificate: chain, validity, key usage, CN = member id), and (2) the
 * signing key it names (subjectAltName `ni:` URI) is that member's key on the ledger. A certificate of a
 * revoked member, of someone the ledger never admitted, or naming another key identifies no active member.
 */
import { X509Certificate } from 'node:crypto';
import { verifyMemberCertificate } from '../identity/ca.ts';
import { signingKeyUri } from '../identity/signing-key.ts';
import type { Member, Membership } from '../ledger/membership.ts';

/** What a member certificate says, once checked against the CA (cacheable per connection). */
export interface CertifiedMember {
  memberId: string;
  /** The signing key the certificate names (RFC 6920 URI). */
  signingKeyUri: string;
}

export type PeerCheck = { ok: true; memberId: string } | { ok: false; reason: string };

/** The certificate as PEM, from PEM or DER (a TLS socket's `getPeerCertificate().raw`). */
function certificatePem(certificate: string | Buffer): string {
  return typeof certificate === 'string' ? certificate : new X509Certificate(certificate).toString();
}

/** Checks `certificate` is a member certificate of this CA, valid at `at`; the member id and signing key it names. */
export function certifiedMember(caCertificatePem: string, certificate: string | Buffer, at = new Date()): CertifiedMember | { problem: string } {
  let pem: string;
  try {
    pem = certificatePem(certificate);
  } catch {
    return { problem: 'the peer certificate cannot be read' };
  }
  const check = verifyMemberCertificate(caCertificatePem, pem, { at });
  if (!check.ok || !check.memberId || !check.signingKeyUri) return { problem: `the peer certificate is not a consortium member certificate (${check.reasons.join('; ')})` };
  return { memberId: check.memberId, signingKeyUri: check.signingKeyUri };
}

const keyUris = new WeakMap<Member, string>();

/** The RFC 6920 name of a member's ledger signing key (memoized per Member: Memberships are immutable). */
function memberKeyUri(member: Member): string {
  let uri = keyUris.get(member);
  if (uri === undefined) {
    uri = signingKeyUri(member.publicKey.export({ type: 'spki', format: 'pem' }).toString());
    keyUris.set(member, uri);
  }
  return uri;
}

/**
 * Whether the certified member is active at the ledger's current `height` (the last committed block): a
 * config change committed in block `height` already applies (it takes effect at `height + 1`).
 */
export function activeMember(certified: CertifiedMember, membership: Membership, height: number): PeerCheck {
  const member = membership.get(certified.memberId);
  if (!member) return { ok: false, reason: `${certified.memberId} is not a member on the ledger` };
  if (!membership.isActiveAt(member.id, height + 1)) return { ok: false, reason: `${member.id} is not an active member (revoked)` };
  if (memberKeyUri(member) !== certified.signingKeyUri) {
    return { ok: false, reason: `the peer certificate names a signing key that is not ${member.id}'s on the ledger` };
  }
  return { ok: true, memberId: member.id };
}

/** Both checks: the certificate → an active member at `height`. */
export function checkPeer(caCertificatePem: string, certificate: string | Buffer, membership: Membership, height: number, at = new Date()): PeerCheck {
  const certified = certifiedMember(caCertificatePem, certificate, at);
  return 'problem' in certified ? { ok: false, reason: certified.problem } : activeMember(certified, membership, height);
}

/** What the channel needs of the local ledger replica, read at each use (membership and height move). */
export interface LedgerView {
  membership(): Membership;
  /** The last committed block (-1 before block 0). */
  height(): number;
}
