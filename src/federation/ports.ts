/**
 * The ports the federated record (docs/federation.md, "The federated record") is written against: what it asks
 * of the ledger index, the federation channel, the vault's link-token lookup, consent and the access log.
 * Interfaces only; the composition root connects them to LedgerService, FederationClient, the vault and the
 * consent module. Nothing here names a driver or express.
 */
import type { ConsentRequest as DecisionRequest } from '../access/consent.ts';
import type { AnchorLocation } from '../vault/store.ts';

/** Where the ledger anchored a digest, and what it says about it now (LedgerStore.anchorFacts). */
export interface AnchorFacts extends AnchorLocation {
  /** The member whose signed envelope carried it. */
  creator: string;
  kind: 'anchor' | 'audit';
  /** Patient locator token of the entry, if it had one. */
  patient?: string;
  /** Resource locator token of the entry, if it had one. */
  resource?: string;
  /** A later entry of the same creator carried the same resource locator token. */
  superseded: boolean;
  /** The creator anchored an erasure of this entry's patient locator. */
  erased: boolean;
}

/** The caller's OWN ledger replica (LedgerService.holdersOfLink / anchorFacts, on its channel). */
export interface LedgerIndexPort {
  /** Each (hospital, patient locator) whose latest Patient version lists this link token. Sorted. */
  holdersOfLink(linkToken: string): Promise<Array<{ hospital: string; locator: string }>>;
  anchorFacts(digests: string[]): Promise<Map<string, AnchorFacts>>;
}

/** Who asks, as the requester assertion names them (the client adds iss, aud, jti, iat, exp). */
export interface Requester {
  /** The end user: the access token's subject. */
  sub: string;
  role: string;
  /** HL7 v3 ActReason code (access/consent.ts, PURPOSES_OF_USE). */
  pou: string;
  /** Break-the-glass reason; only with pou ETREAT. */
  btg?: string;
}

/** A holder's answer, body as raw text: decimals keep their lexeme (a JSON.parse'd body breaks commitments). */
export interface HolderResponse {
  status: number;
  text: string;
}

/**
 * The federation channel (FederationClient over mTLS, a fresh assertion per call). Resolves with any HTTP
 * status; rejects when no answer came (unreachable, TLS refused, aborted by `signal`), or with a
 * MalformedHolderPageError when the answer is larger than the client takes.
 */
export interface HolderClientPort {
  request(
    member: string,
    /** Path under the holder's /federation/fhir, e.g. `Patient/$everything`. */
    path: string,
    query: Array<[string, string]>,
    claims: Requester & { link: string },
    options: { timeoutMs: number; signal: AbortSignal },
  ): Promise<HolderResponse>;
  /** The member's federation address (Membership.federationAddress), if the ledger knows one. */
  addressOf(member: string): string | undefined;
}

/** The vault's link-token lookup (VAULT): ids of this hospital's Patients whose current version carries it. */
export interface LinkedPatientsPort {
  patientsWithLinkToken(linkToken: string): Promise<string[]>;
}

/** One consent decision for one patient (CONSENT's decideConsent over the patient's active Consents). */
export interface ConsentVerdict {
  /** Whether resources of this type may leave. */
  permits(resourceType: string): boolean;
  /** `Consent/id/_history/v` of the deciding Consent; absent when the consortium default decided. */
  consent?: string;
  /** A deny turned into a permit by break-the-glass. */
  breakTheGlass: boolean;
}

/** access/consent.ts's request, with the asking member and its user (as the assertion names them) always known. */
export interface ConsentRequest extends Omit<DecisionRequest, 'actor'> {
  actor: { member: string; practitioner: string; role: string };
}

export interface ConsentPort {
  decide(patientId: string, request: ConsentRequest): Promise<ConsentVerdict>;
}

/** The holder's access record of one federated page (CONSENT's access-record API; anchored like any record). */
export interface DisclosureRecord {
  peer: string;
  user: string;
  role: string;
  purpose: string;
  breakTheGlass: boolean;
  /** The deciding Consent versions, one per patient that had one. */
  consents: string[];
  /** `Type/id/_history/v` of every version that left. */
  disclosed: string[];
  status: number;
}

/** The caller's access record of one federated request. */
export interface FederatedRequestRecord {
  user: string;
  purpose: string;
  breakTheGlass: boolean;
  /** Every member asked, with what came of it (`ok`, `timeout`, `unreachable`, `refused`, …). */
  holders: Array<{ member: string; result: string }>;
}

export interface FederationAccessLogPort {
  recordDisclosure(record: DisclosureRecord): Promise<void>;
  recordFederatedRequest(record: FederatedRequestRecord): Promise<void>;
}
