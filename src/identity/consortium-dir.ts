/**
 * A consortium directory as `medblock consortium init` writes it, and how a member's gateway loads it:
 *
 *   consortium.json            public: channel, quorum, ledger settings, link identifier systems, CA
 *                              fingerprint, every member's certificate and envelope-signing public key
 *   ca/ca.crt, ca/ca.key       the CA (ca.key stays with the CA operator, never on a gateway)
 *   <member>/member.crt|key    the member's RSA X.509 identity
 *   <member>/signing.key|pub   its ECDSA P-256 envelope-signing key
 *   <member>/patient-token.key the consortium's shared key for link tokens (federation/link-token.ts)
 *
 * A gateway needs consortium.json, ca/ca.crt and its own member directory. Loading checks every member
 * certificate against the CA and that it names the signing key listed for it, so a tampered
 * consortium.json is refused rather than trusted.
 */
import { createPrivateKey, createSecretKey, randomBytes, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { normalizeSystem, UnlinkableIdentifierError, US_SSN_SYSTEM } from '../federation/link-token.ts';
import type { BlockCutterConfig } from '../ledger/block-cutter.ts';
import { DEFAULT_MAX_ENVELOPE_BYTES, type ValidationContext } from '../ledger/envelope.ts';
import { federationAddressProblem, Membership } from '../ledger/membership.ts';
import { certificateFingerprint, createConsortium, createMemberRequest, RSA_BITS, verifyMemberCertificate, type Consortium } from './ca.ts';
import { SIGNING_KEY_CURVE, signingKeyUri } from './signing-key.ts';

/** Channel settings every member must share (the cutter's) plus the batch timeout each member arms. */
export interface LedgerSettings extends BlockCutterConfig {
  batchTimeoutMs: number;
  maxEnvelopeBytes: number;
  /**
   * The channel's clock rule: an envelope stamped further than this from the orderer's time is invalid
   * (docs/ledger.md, "Block time"). Written by `consortium init` since the rule exists; a consortium.json
   * without it keeps the old, unbounded rule, so existing chains replay to the same blocks.
   */
  maxClockSkewMs?: number;
}

/** Ten minutes: far beyond clock drift and append latency, far below what would let a member move time. */
export const DEFAULT_MAX_CLOCK_SKEW_MS = 10 * 60 * 1000;

/**
 * Defaults sized for anchors: a full anchor envelope (1000 digests) is ~150 KB, one Kafka message well under
 * the broker's default 1 MiB limit; a block holds up to ten of them (~10,000 digests, ~1.5 MB). The batch
 * timeout bounds how long a lone envelope waits, so it is most of the finality latency at low load.
 */
export const DEFAULT_LEDGER_SETTINGS: LedgerSettings = {
  maxMessageCount: 10,
  preferredMaxBytes: 2 * 1024 * 1024,
  absoluteMaxBytes: 4 * 1024 * 1024,
  batchTimeoutMs: 100,
  maxEnvelopeBytes: DEFAULT_MAX_ENVELOPE_BYTES,
};

export interface ConsortiumMember {
  id: string;
  certificatePem: string;
  signingPublicKeyPem: string;
}

/** What one member's gateway knows about its consortium. */
export interface MemberConsortium {
  /** consortium.json exactly as read: proofs carry it, verifiers pin its SHA-256 (docs/proofs.md). */
  manifestText: string;
  channel: string;
  quorum: number;
  ledger: LedgerSettings;
  caCertificatePem: string;
  members: ConsortiumMember[];
  self: { memberId: string; privateKey: KeyObject };
  /** This member's X.509 identity (member.crt, member.key): the federation channel's mutual TLS. */
  tls: { certificatePem: string; keyPem: string };
  patientTokenKey: KeyObject;
  federation: FederationSettings;
}

/** What a holder does with a patient's data when no Consent of theirs applies (docs/federation.md, "Consent"). */
export type DefaultConsent = 'opt-in' | 'opt-out';
export const DEFAULT_CONSENTS: readonly DefaultConsent[] = ['opt-in', 'opt-out'];

/** consortium.json `federation`: optional; a consortium.json without it links no one. */
export interface FederationSettings {
  /** The identifier systems that name one person across members (link tokens, docs/federation.md). */
  linkIdentifierSystems: string[];
  /** Member id → its federation listener's https URL, as of genesis (config changes on the ledger move them). */
  addresses: Record<string, string>;
  /** `opt-in`: nothing leaves a holder unless a Consent permits it; `opt-out`: everything may unless one denies it. */
  defaultConsent: DefaultConsent;
}

/** What `consortium init` writes: SSN, which every Synthea patient carries and US hospitals share. */
export const DEFAULT_LINK_IDENTIFIER_SYSTEMS = [US_SSN_SYSTEM];

const PATIENT_TOKEN_KEY_FILE = 'patient-token.key';

/**
 * Writes a new consortium directory; refuses an existing one. Every file is 0600 and every directory 0700
 * whatever the umask: the public files too, so that nobody else can swap a certificate or consortium.json.
 */
export function writeConsortiumDir(out: string, consortium: Consortium, federation: GenesisFederation = {}): void {
  mkdirSync(dirname(out), { recursive: true, mode: 0o700 });
  try {
    mkdirSync(out, { mode: 0o700 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new Error(`${out} already exists; refusing to overwrite it`);
    throw e;
  }
  writePrivateDir(join(out, 'ca'), { 'ca.crt': consortium.ca.certPem, 'ca.key': consortium.ca.keyPem });
  const patientTokenKey = randomBytes(32).toString('base64');
  for (const member of consortium.members) {
    writePrivateDir(
      join(out, member.id),
      {
        'member.crt': member.certPem, 'signing.pub': member.signingPublicKeyPem,
        'member.key': member.keyPem, 'signing.key': member.signingKeyPem, [PATIENT_TOKEN_KEY_FILE]: `${patientTokenKey}\n`,
      },
    );
  }
  writeFileSync(join(out, 'consortium.json'), `${JSON.stringify(manifest(consortium, federation), null, 2)}\n`, { mode: 0o600, flag: 'wx' });
}

/** A directory (0700) of files (0600), public ones and private keys; never overwrites a file. */
function writePrivateDir(dir: string, files: Record<string, string>): void {
  mkdirSync(dir, { mode: 0o700 });
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text, { mode: 0o600, flag: 'wx' });
}

/** What `consortium init` may set in consortium.json `federation` (checked by the caller). */
export interface GenesisFederation {
  /** Member id → https://host:port. */
  addresses?: Record<string, string>;
  defaultConsent?: DefaultConsent;
}

/** consortium.json: the public description every member loads (no private material). */
function manifest(consortium: Consortium, { addresses = {}, defaultConsent = 'opt-in' }: GenesisFederation) {
  return {
    channel: consortium.channel,
    quorum: consortium.quorum,
    ledger: { ...DEFAULT_LEDGER_SETTINGS, maxClockSkewMs: DEFAULT_MAX_CLOCK_SKEW_MS },
    federation: {
      linkIdentifierSystems: DEFAULT_LINK_IDENTIFIER_SYSTEMS,
      defaultConsent,
      members: Object.fromEntries(Object.entries(addresses).map(([id, address]) => [id, { address }])),
    },
    signatureSchemes: {
      certificates: `RSA-${RSA_BITS} sha256WithRSAEncryption (X.509)`,
      envelopes: `ECDSA ${SIGNING_KEY_CURVE} SHA-256, key named in the member certificate's subjectAltName`,
    },
    ca: { certificate: 'ca/ca.crt', sha256Fingerprint: certificateFingerprint(consortium.ca.certPem) },
    members: consortium.members.map((m) => ({
      id: m.id,
      certificate: `${m.id}/member.crt`,
      certificatePem: m.certPem,
      sha256Fingerprint: certificateFingerprint(m.certPem),
      signingKey: signingKeyUri(m.signingPublicKeyPem),
      signingPublicKey: m.signingPublicKeyPem,
    })),
  };
}

export class ConsortiumConfigError extends Error {
  constructor(dir: string, problem: string) {
    super(`consortium directory ${dir}: ${problem}`);
    this.name = 'ConsortiumConfigError';
  }
}

function readText(dir: string, path: string, what: string): string {
  try {
    return readFileSync(join(dir, path), 'utf8');
  } catch {
    throw new ConsortiumConfigError(dir, `cannot read ${what} (${path})`);
  }
}

/** Loads and checks the consortium as member `memberId` sees it. */
export function loadMemberConsortium(dir: string, memberId: string): MemberConsortium {
  let config: any;
  const manifestText = readText(dir, 'consortium.json', 'the consortium description');
  try {
    config = JSON.parse(manifestText);
  } catch (e) {
    if (e instanceof ConsortiumConfigError) throw e;
    throw new ConsortiumConfigError(dir, 'consortium.json is not JSON');
  }
  const caCertificatePem = readText(dir, config?.ca?.certificate ?? 'ca/ca.crt', 'the CA certificate');
  if (!Array.isArray(config?.members)) throw new ConsortiumConfigError(dir, 'consortium.json lists no members');
  const members: ConsortiumMember[] = config.members.map((m: any) => {
    const certificatePem: string = m.certificatePem ?? readText(dir, m.certificate, `member ${m.id}'s certificate`);
    const check = verifyMemberCertificate(caCertificatePem, certificatePem);
    if (!check.ok) throw new ConsortiumConfigError(dir, `member ${m.id}'s certificate is not valid: ${check.reasons.join('; ')}`);
    if (check.memberId !== m.id) throw new ConsortiumConfigError(dir, `member ${m.id}'s certificate names ${check.memberId}`);
    if (signingKeyUri(m.signingPublicKey) !== check.signingKeyUri) {
      throw new ConsortiumConfigError(dir, `member ${m.id}'s signing key is not the one its certificate names`);
    }
    return { id: m.id, certificatePem, signingPublicKeyPem: m.signingPublicKey };
  });
  if (!members.some((m) => m.id === memberId)) checkJoiningMember(dir, caCertificatePem, memberId);
  const privateKey = createPrivateKey(readText(dir, join(memberId, 'signing.key'), 'this member\'s signing key'));
  const tls = {
    certificatePem: readText(dir, join(memberId, 'member.crt'), 'this member\'s certificate'),
    keyPem: readText(dir, join(memberId, 'member.key'), 'this member\'s private key'),
  };
  const tokenKey = Buffer.from(readText(dir, join(memberId, PATIENT_TOKEN_KEY_FILE), 'the patient-token key').trim(), 'base64');
  if (tokenKey.length !== 32) throw new ConsortiumConfigError(dir, `${PATIENT_TOKEN_KEY_FILE} must hold 32 bytes in base64`);
  const quorum = Number(config.quorum);
  if (!Number.isInteger(quorum) || quorum < 1 || quorum > members.length) throw new ConsortiumConfigError(dir, 'quorum must be between 1 and the member count');
  return {
    manifestText,
    channel: String(config.channel),
    quorum,
    ledger: { ...DEFAULT_LEDGER_SETTINGS, ...(config.ledger ?? {}) },
    caCertificatePem,
    members,
    self: { memberId, privateKey },
    tls,
    patientTokenKey: createSecretKey(tokenKey),
    federation: federationSettings(dir, config.federation),
  };
}

/** `federation` of consortium.json: absent means no link systems; anything malformed is refused by name. */
function federationSettings(dir: string, federation: unknown): FederationSettings {
  if (federation === undefined) return { linkIdentifierSystems: [], addresses: {}, defaultConsent: 'opt-in' };
  if (typeof federation !== 'object' || federation === null || Array.isArray(federation)) {
    throw new ConsortiumConfigError(dir, 'consortium.json federation must be an object');
  }
  const { defaultConsent = 'opt-in', members = {} } = federation as { defaultConsent?: unknown; members?: unknown };
  if (!DEFAULT_CONSENTS.includes(defaultConsent as DefaultConsent)) {
    throw new ConsortiumConfigError(dir, `consortium.json federation.defaultConsent must be one of ${DEFAULT_CONSENTS.join(', ')}`);
  }
  return {
    linkIdentifierSystems: linkIdentifierSystems(dir, (federation as { linkIdentifierSystems?: unknown }).linkIdentifierSystems ?? []),
    addresses: federationAddresses(dir, members),
    defaultConsent: defaultConsent as DefaultConsent,
  };
}

/** `federation.members`: `{ "<member id>": { "address": "https://host:port" } }`. */
function federationAddresses(dir: string, members: unknown): Record<string, string> {
  const field = 'consortium.json federation.members';
  if (typeof members !== 'object' || members === null || Array.isArray(members)) throw new ConsortiumConfigError(dir, `${field} must be an object keyed by member id`);
  const addresses: Record<string, string> = {};
  for (const [id, entry] of Object.entries(members)) {
    const address = (entry as { address?: unknown } | null)?.address;
    const problem = federationAddressProblem(address);
    if (problem) throw new ConsortiumConfigError(dir, `${field}.${id}.address ${problem}`);
    addresses[id] = address as string;
  }
  return addresses;
}

function linkIdentifierSystems(dir: string, systems: unknown): string[] {
  const field = 'consortium.json federation.linkIdentifierSystems';
  if (!Array.isArray(systems)) throw new ConsortiumConfigError(dir, `${field} must be an array of identifier system URIs`);
  return systems.map((system, i) => {
    try {
      if (normalizeSystem(system) !== system) throw new UnlinkableIdentifierError('the system has surrounding whitespace');
    } catch (e) {
      if (!(e instanceof UnlinkableIdentifierError)) throw e;
      throw new ConsortiumConfigError(dir, `${field}[${i}] is not a usable identifier system (${e.reason})`);
    }
    if (systems.indexOf(system) !== i) throw new ConsortiumConfigError(dir, `${field}[${i}] repeats ${JSON.stringify(system)}`);
    return system as string;
  });
}

/**
 * A member that joined after genesis is not in consortium.json (which every member must keep identical: it
 * is the genesis membership). Its own directory holds the certificate the CA issued from its request; the
 * ledger admits it when the quorum-approved config change adding it commits, and until then its gateway
 * replays the chain but neither anchors nor attests.
 */
function checkJoiningMember(dir: string, caCertificatePem: string, memberId: string): void {
  const certificate = join(memberId, 'member.crt');
  if (!existsSync(join(dir, certificate))) {
    throw new ConsortiumConfigError(
      dir,
      `this gateway's MEDBLOCK_HOSPITAL_ID ${JSON.stringify(memberId)} is not a member, and ${certificate} (a joining member's certificate) does not exist`,
    );
  }
  const check = verifyMemberCertificate(caCertificatePem, readText(dir, certificate, 'this member\'s certificate'));
  if (!check.ok) throw new ConsortiumConfigError(dir, `${certificate} is not valid: ${check.reasons.join('; ')}`);
  if (check.memberId !== memberId) throw new ConsortiumConfigError(dir, `${certificate} names ${check.memberId}, not ${memberId}`);
  if (check.signingKeyUri !== signingKeyUri(readText(dir, join(memberId, 'signing.pub'), 'this member\'s signing public key'))) {
    throw new ConsortiumConfigError(dir, `${certificate} does not name the key in ${join(memberId, 'signing.pub')}`);
  }
}

/**
 * `medblock consortium request`: a joining member's directory with its private keys (0600) and the request
 * to send to the CA operator (request.json: the CSR, the signing public key and its proof of possession).
 */
export async function writeMemberRequestDir(out: string, memberId: string): Promise<void> {
  const { request, keyPem, signingKeyPem } = await createMemberRequest(memberId);
  if (existsSync(out)) throw new Error(`${out} already exists; refusing to overwrite it`);
  mkdirSync(dirname(out), { recursive: true, mode: 0o700 });
  writePrivateDir(out, {
    'request.json': `${JSON.stringify({ memberId, ...request }, null, 2)}\n`, 'signing.pub': request.signingPublicKeyPem,
    'member.key': keyPem, 'signing.key': signingKeyPem,
  });
}

/**
 * The embedded default: a consortium of one (this hospital), created in `<dataDir>/consortium` at first
 * start, so a lone gateway anchors, attests and proves exactly like a member of a larger consortium.
 */
export async function ensureLocalConsortium(dir: string, memberId: string): Promise<void> {
  if (existsSync(join(dir, 'consortium.json'))) return;
  writeConsortiumDir(dir, await createConsortium({ members: [memberId] }));
}

/** Kept exported from here: consortium.json's addresses are checked with it too. */
export { federationAddressProblem };

/** The members at block 0, as envelope validation sees them, with their federation addresses as of genesis. */
export function genesisMembership(consortium: Pick<MemberConsortium, 'members'> & { federation?: Pick<FederationSettings, 'addresses'> }): Membership {
  const addresses = consortium.federation?.addresses ?? {};
  return new Membership(
    Object.fromEntries(consortium.members.map((m) => [m.id, { publicKey: m.signingPublicKeyPem, federationAddress: Object.hasOwn(addresses, m.id) ? addresses[m.id] : undefined }])),
  );
}

/**
 * The deterministic certificate check a config envelope adding a member must pass: issued by the consortium
 * CA to that member id, naming that signing key, valid at the envelope's (signed) timestamp.
 */
export function memberCertificateCheck(caCertificatePem: string): NonNullable<ValidationContext['checkMemberCertificate']> {
  return (certificatePem, memberId, signingKeyPem, at) => {
    const check = verifyMemberCertificate(caCertificatePem, certificatePem, { at: new Date(at) });
    if (!check.ok) return `is not valid: ${check.reasons.join('; ')}`;
    if (check.memberId !== memberId) return `names ${check.memberId}, not ${memberId}`;
    return check.signingKeyUri === signingKeyUri(signingKeyPem) ? undefined : 'does not name the signing key of the change';
  };
}
