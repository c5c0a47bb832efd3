/**
 * Admission to the federation API, before any handler runs and so before any data is read:
 *   1. the TLS peer certificate identifies a member that is active at the ledger's current height
 *      (peers.ts), else 403;
 *   2. the request carries a requester assertion that this member signed for this holder, unexpired
 *      and never seen before (assertion.ts), else 401.
 */
import { errors, FhirError } from '../fhir/outcome.ts';
import { AssertionError, ReplayCache, verifyAssertion, type Assertion } from './assertion.ts';
import { activeMember, certifiedMember, type CertifiedMember, type LedgerView } from './peers.ts';

export interface FederationGateOptions {
  /** This holder's member id. */
  self: string;
  caCertificatePem: string;
  ledger: LedgerView;
  replay?: ReplayCache;
}

export interface Admission {
  peer: string;
  assertion: Assertion;
}

export type Certification = CertifiedMember | { problem: string };

export class FederationGate {
  readonly replay: ReplayCache;

  constructor(private readonly options: FederationGateOptions) {
    this.replay = options.replay ?? new ReplayCache();
  }

  /** What the peer's certificate says (checked against the CA); the caller may keep it for the connection. */
  certify(certificate: Buffer | undefined): Certification {
    if (!certificate?.length) return { problem: 'no client certificate was presented' };
    return certifiedMember(this.options.caCertificatePem, certificate);
  }

  /** The admitted request's peer and assertion; throws a FhirError (403 peer, 401 assertion) otherwise. */
  async admit(certification: Certification, assertionHeader: string | undefined): Promise<Admission> {
    if ('problem' in certification) throw errors.forbidden(`federation peer refused: ${certification.problem}`);
    const membership = this.options.ledger.membership();
    const peer = activeMember(certification, membership, this.options.ledger.height());
    if (!peer.ok) throw errors.forbidden(`federation peer refused: ${peer.reason}`);
    try {
      const assertion = await verifyAssertion(assertionHeader, { peer: peer.memberId, self: this.options.self, membership, replay: this.replay });
      return { peer: peer.memberId, assertion };
    } catch (e) {
      if (!(e instanceof AssertionError)) throw e;
      if (e.status === 429) throw new FhirError(429, [{ severity: 'error', code: 'throttled', diagnostics: e.message }], { 'Retry-After': '5' });
      throw new FhirError(401, [{ severity: 'error', code: 'security', diagnostics: e.message }]);
    }
  }
}
