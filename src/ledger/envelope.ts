/**
 * Signed ledger envelopes and their deterministic validation (docs/ledger.md, "Envelopes").
 *
 * Wire form: the UTF-8 bytes of the envelope's canonical JSON (canonical-json.ts). Parsing accepts
 * exactly that form, so one envelope has one byte string and one digest.
 *
 * Signature: ECDSA P-256 / SHA-256, IEEE P1363 encoding (r ‖ s, 64 bytes, base64url), low-S only,
 * over `ENVELOPE_SIGNING_PREFIX ‖ canonical JSON of the envelope without "signature"`.
 *
 * Validation is a pure function of the bytes and a context the caller derives from the ledger (block
 * number, membership, committed nonces): no clock, no I/O, and no exception for any input.
 */
import { randomBytes, type KeyObject } from 'node:crypto';
import { canonicalize } from './canonical-json.ts';
import { SIGNATURE_BYTES, signedBytes, signLowS, verifyLowS } from './signature.ts';
import { isP256Key, MEMBER_ID_PATTERN, type Membership } from './membership.ts';
import { base64urlProblem, patternProblem, shapeProblem, type Problem } from './schema-checks.ts';
import {
  approvalSignedBytes,
  CONFIG_CHANGE_OPTIONAL,
  configChangeProblem,
  configChangeRejection,
  configPayloadProblem,
  type ConfigApproval,
  type ConfigChange,
  type ConfigPayload,
} from './config-change.ts';

export {
  CONFIG_APPROVAL_PREFIX,
  MAX_CERTIFICATE_CHARS,
  MAX_CONFIG_APPROVALS,
  type ConfigAction,
  type ConfigApproval,
  type ConfigChange,
  type ConfigPayload,
} from './config-change.ts';

export const ENVELOPE_TYPES = ['anchor', 'audit', 'consent', 'config'] as const;
export type EnvelopeType = (typeof ENVELOPE_TYPES)[number];

/** Domain separation: an envelope signature can never be replayed as an approval (CONFIG_APPROVAL_PREFIX), or the reverse. */
export const ENVELOPE_SIGNING_PREFIX = 'medblock/envelope/v1\n';

/** Fits an anchor of MAX_ANCHOR_ENTRIES entries (~170 bytes each). The channel's absoluteMaxBytes must be at least this. */
export const DEFAULT_MAX_ENVELOPE_BYTES = 256 * 1024;
export const MAX_ANCHOR_ENTRIES = 1000;
export const MAX_AUDIT_ENTRIES = 1000;

const NONCE_BYTES = 16;
/** Patient locator, resource locator and link tokens alike: 32 bytes, so a token can be told from PHI by its shape. */
const PATIENT_TOKEN_BYTES = 32;
/** Link tokens per Patient version: a person has few identifiers in the linking systems. */
export const MAX_LINK_TOKENS = 16;

/** Kafka topic characters, lowercase, as Fabric channel names. */
export const CHANNEL_PATTERN = /^[a-z][a-z0-9.-]{0,248}$/;
const DIGEST_PATTERN = /^[0-9a-f]{64}$/;
const RESOURCE_TYPE_PATTERN = /^[A-Z][A-Za-z]{0,63}$/;
/** Exactly what Date.prototype.toISOString writes for years 0–9999, so string order is time order. */
const TIMESTAMP_PATTERN = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;


// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

export interface AnchorEntry {
  /** The resource version's commitment (versionCommitmentHex), or a deletion's tombstone digest. */
  digest: string;
  /**
   * FHIR resourceType: accepted from older blocks, no longer written (the commitment binds the type; on the
   * ledger it was only metadata about the patient).
   */
  type?: string;
  /** Patient locator token (ledger/patient-token.ts): 32 bytes, base64url. Never PHI. */
  patient?: string;
  /**
   * Resource locator token of a patient's version (32 bytes, base64url; only with `patient`): names "this
   * resource at this hospital" without naming it, so a member can tell the newest anchored version of a
   * resource from a superseded one (docs/federation.md).
   */
  resource?: string;
  /**
   * A Patient version's identifier link tokens (federation/link-token.ts), sorted, each once; present on
   * every Patient version (empty for a tombstone or a patient with no linking identifier). Replaces the
   * set its hospital published before for the same patient locator.
   */
  links?: string[];
}
export interface AnchorPayload {
  entries: AnchorEntry[];
}
export interface AuditEntry {
  digest: string;
  /** On an erasure record: the locator token of the erased patient, whose links and versions it ends. */
  erased?: string;
}
export interface AuditPayload {
  /** Digests of access-log records. */
  entries: AuditEntry[];
}
/** Placeholder until consent is designed: the digest of a Consent version and its state. */
export interface ConsentPayload {
  patient: string;
  digest: string;
  status: 'active' | 'inactive';
}
export interface PayloadByType {
  anchor: AnchorPayload;
  audit: AuditPayload;
  consent: ConsentPayload;
  config: ConfigPayload;
}

interface EnvelopeHeader {
  channel: string;
  /** Member id of the signer. */
  creator: string;
  /** 128 random bits, base64url: unique per creator for the life of the ledger (or of the replay window). */
  nonce: string;
  /** ISO instant set by the creator. Informational unless the caller passes a timestamp window. */
  timestamp: string;
  signature: string;
}
export type EnvelopeOf<T extends EnvelopeType> = EnvelopeHeader & { type: T; payload: PayloadByType[T] };
export type Envelope = { [T in EnvelopeType]: EnvelopeOf<T> }[EnvelopeType];

export interface EnvelopeSigner {
  memberId: string;
  /** EC P-256 private key. */
  privateKey: KeyObject;
}

export type RejectionReason =
  | 'malformed'
  | 'oversize'
  | 'unknown-creator'
  | 'revoked-creator'
  | 'bad-signature'
  | 'replayed-nonce'
  | 'bad-timestamp'
  | 'wrong-channel'
  | 'bad-payload'
  | 'no-quorum';

/** `detail` is for logs: deterministic, and never echoes envelope content. */
export interface Rejection {
  valid: false;
  reason: RejectionReason;
  detail: string;
}
export type EnvelopeVerdict = { valid: true; envelope: Envelope } | Rejection;

/** Nonces of envelopes already committed valid, per creator. A ledger store implements it with an index. */
export interface CommittedNonceLookup {
  has(creator: string, nonce: string): boolean;
}

export interface ValidationContext {
  /** The channel being committed. */
  channel: string;
  /** The block the envelope is validated for: revocations apply from their block on. */
  blockNumber: number;
  members: Membership;
  committedNonces: CommittedNonceLookup;
  /**
   * Inclusive bounds on `timestamp`, for members that prune nonces older than a window. Must be derived
   * from the ledger (never from a local clock), or the members fork.
   */
  timestampWindow?: { notBefore: string; notAfter: string };
  /**
   * Checks an added member's certificate (issued by the consortium CA to that member id, naming that
   * signing key, valid at the envelope's timestamp); returns a problem or undefined. Must be deterministic.
   * Without it only the shapes are checked (unit tests).
   */
  checkMemberCertificate?: (certificatePem: string, memberId: string, signingKeyPem: string, at: string) => string | undefined;
  /** Channel configuration; defaults to DEFAULT_MAX_ENVELOPE_BYTES. */
  maxEnvelopeBytes?: number;
  /**
   * The channel's clock rule (docs/ledger.md, "Block time"): `timestamp` must be within `maxSkewMs` of
   * `ordererTime`, the time the orderer stamped on the block's records (the same bytes for every member).
   */
  clock?: { ordererTime: string; maxSkewMs: number };
}

/** Refused to create an envelope or approval that validation would reject. */
export class EnvelopeError extends TypeError {
  constructor(message: string) {
    super(message);
    this.name = 'EnvelopeError';
  }
}

// ---------------------------------------------------------------------------------------------
// Field checks. Each returns a problem (a path and what is wrong) or undefined.
// ---------------------------------------------------------------------------------------------

function timestampProblem(value: unknown, path: string): Problem {
  // Date.parse is NaN for impossible instants (month 13); the round trip rejects those it rolls over (Feb 30).
  const instant = typeof value === 'string' && TIMESTAMP_PATTERN.test(value) ? Date.parse(value) : NaN;
  const wellFormed = !Number.isNaN(instant) && new Date(instant).toISOString() === value;
  return wellFormed ? undefined : `${path} must be an ISO instant as toISOString writes it`;
}

function entriesProblem(
  payload: Record<string, unknown>,
  maxEntries: number,
  entryProblem: (entry: unknown, path: string) => Problem,
): Problem {
  const { entries } = payload;
  if (!Array.isArray(entries) || entries.length === 0 || entries.length > maxEntries) {
    return `/payload/entries must be an array of 1 to ${maxEntries} entries`;
  }
  // A digest is anchored once: the store indexes digest → (block, index).
  const digests = new Set<unknown>();
  for (let i = 0; i < entries.length; i++) {
    const problem = entryProblem(entries[i], `/payload/entries/${i}`);
    if (problem !== undefined) return problem;
    const { digest } = entries[i] as { digest: string };
    if (digests.has(digest)) return `/payload/entries/${i}/digest repeats an earlier entry`;
    digests.add(digest);
  }
  return undefined;
}

function anchorEntryProblem(entry: unknown, path: string): Problem {
  const has = (name: string) => Object.hasOwn(entry as object, name);
  const { digest, type, patient, resource, links } = entry as Record<string, unknown>;
  return (
    shapeProblem(entry, path, ['digest'], ['type', 'patient', 'resource', 'links']) ??
    patternProblem(digest, `${path}/digest`, DIGEST_PATTERN) ??
    (has('type') ? patternProblem(type, `${path}/type`, RESOURCE_TYPE_PATTERN) : undefined) ??
    (has('patient') ? base64urlProblem(patient, `${path}/patient`, PATIENT_TOKEN_BYTES) : undefined) ??
    // A resource locator or a link set names something of a patient's record: never without the patient's locator.
    (!has('patient') && (has('resource') || has('links')) ? `${path}/resource and ${path}/links are only allowed with patient` : undefined) ??
    (has('resource') ? base64urlProblem(resource, `${path}/resource`, PATIENT_TOKEN_BYTES) : undefined) ??
    (has('links') ? linksProblem(links, `${path}/links`) : undefined)
  );
}

/** Sorted (by UTF-16 code unit) and unique, so one link set has one spelling. */
function linksProblem(links: unknown, path: string): Problem {
  if (!Array.isArray(links) || links.length > MAX_LINK_TOKENS) return `${path} must be an array of at most ${MAX_LINK_TOKENS} link tokens`;
  for (let i = 0; i < links.length; i++) {
    const problem = base64urlProblem(links[i], `${path}/${i}`, PATIENT_TOKEN_BYTES);
    if (problem !== undefined) return problem;
    if (i > 0 && !(links[i - 1] < links[i])) return `${path}/${i} must sort after the token before it (sorted, each once)`;
  }
  return undefined;
}

function auditEntryProblem(entry: unknown, path: string): Problem {
  return (
    shapeProblem(entry, path, ['digest'], ['erased']) ??
    patternProblem((entry as AuditEntry).digest, `${path}/digest`, DIGEST_PATTERN) ??
    (Object.hasOwn(entry as object, 'erased') ? base64urlProblem((entry as AuditEntry).erased, `${path}/erased`, PATIENT_TOKEN_BYTES) : undefined)
  );
}

/** Strict schema of each payload type: every member known, every value in its format. */
function payloadProblem(type: EnvelopeType, payload: unknown): Problem {
  switch (type) {
    case 'anchor':
      return shapeProblem(payload, '/payload', ['entries']) ?? entriesProblem(payload as Record<string, unknown>, MAX_ANCHOR_ENTRIES, anchorEntryProblem);
    case 'audit':
      return shapeProblem(payload, '/payload', ['entries']) ?? entriesProblem(payload as Record<string, unknown>, MAX_AUDIT_ENTRIES, auditEntryProblem);
    case 'consent': {
      const consent = payload as Record<string, unknown>;
      return (
        shapeProblem(payload, '/payload', ['patient', 'digest', 'status']) ??
        base64urlProblem(consent.patient, '/payload/patient', PATIENT_TOKEN_BYTES) ??
        patternProblem(consent.digest, '/payload/digest', DIGEST_PATTERN) ??
        (consent.status === 'active' || consent.status === 'inactive' ? undefined : '/payload/status must be active or inactive')
      );
    }
    case 'config':
      return shapeProblem(payload, '/payload', ['action', 'member', 'approvals'], CONFIG_CHANGE_OPTIONAL) ?? configPayloadProblem(payload as Record<string, unknown>);
  }
}

const ENVELOPE_MEMBERS = ['channel', 'type', 'payload', 'creator', 'nonce', 'timestamp', 'signature'] as const;

/** The envelope members other than payload and signature, which are checked on their own. */
function headerFieldsProblem(envelope: Record<string, unknown>): Problem {
  return (
    patternProblem(envelope.channel, '/channel', CHANNEL_PATTERN) ??
    ((ENVELOPE_TYPES as readonly unknown[]).includes(envelope.type) ? undefined : '/type is not an envelope type') ??
    patternProblem(envelope.creator, '/creator', MEMBER_ID_PATTERN) ??
    base64urlProblem(envelope.nonce, '/nonce', NONCE_BYTES) ??
    timestampProblem(envelope.timestamp, '/timestamp')
  );
}

function envelopeShapeProblem(value: unknown): Problem {
  return (
    shapeProblem(value, '', ENVELOPE_MEMBERS) ??
    headerFieldsProblem(value as Record<string, unknown>) ??
    base64urlProblem((value as Record<string, unknown>).signature, '/signature', SIGNATURE_BYTES)
  );
}

// ---------------------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------------------

function envelopeSignedBytes(envelope: Omit<Envelope, 'signature'> & { signature?: string }): Buffer {
  const { signature: _excluded, ...unsigned } = envelope;
  return signedBytes(ENVELOPE_SIGNING_PREFIX, unsigned);
}

function assertSigner(signer: EnvelopeSigner): void {
  if (!MEMBER_ID_PATTERN.test(signer.memberId)) throw new EnvelopeError(`signer id must match ${MEMBER_ID_PATTERN}`);
  if (!isP256Key(signer.privateKey, 'private')) throw new EnvelopeError('signer key must be an EC P-256 private key');
}

// ---------------------------------------------------------------------------------------------
// Creating
// ---------------------------------------------------------------------------------------------

/** A fresh envelope nonce. Config creators take one first, since the approvals are bound to it. */
export function newNonce(): string {
  return randomBytes(NONCE_BYTES).toString('base64url');
}

export interface EnvelopeFields<T extends EnvelopeType> {
  channel: string;
  type: T;
  payload: PayloadByType[T];
  /** Defaults to newNonce(). */
  nonce?: string;
  /** Defaults to the current time. */
  timestamp?: string;
}

/**
 * Signs an envelope. Throws EnvelopeError for anything validation would call malformed or bad-payload.
 * The result is a fresh copy, read back from its wire bytes, so later changes to `fields` cannot touch it.
 */
export function createEnvelope<T extends EnvelopeType>(signer: EnvelopeSigner, fields: EnvelopeFields<T>): EnvelopeOf<T> {
  assertSigner(signer);
  const unsigned = {
    channel: fields.channel,
    type: fields.type,
    payload: fields.payload,
    creator: signer.memberId,
    nonce: fields.nonce ?? newNonce(),
    timestamp: fields.timestamp ?? new Date().toISOString(),
  };
  const problem = headerFieldsProblem(unsigned) ?? payloadProblem(unsigned.type, unsigned.payload);
  if (problem !== undefined) throw new EnvelopeError(`invalid envelope: ${problem}`);
  const signature = signLowS(signer.privateKey, envelopeSignedBytes(unsigned));
  // Size is the channel's limit, not the envelope's: the caller's orderer enforces it.
  const readBack = parseEnvelope(encodeEnvelope({ ...unsigned, signature } as Envelope), Infinity);
  if (!readBack.valid) throw new EnvelopeError(`invalid envelope: ${readBack.detail}`);
  return readBack.envelope as EnvelopeOf<T>;
}

/** A member's approval of a config change carried by the envelope with this channel and nonce. */
export function approveConfigChange(signer: EnvelopeSigner, channel: string, nonce: string, change: ConfigChange): ConfigApproval {
  assertSigner(signer);
  const problem =
    patternProblem(channel, 'channel', CHANNEL_PATTERN) ??
    base64urlProblem(nonce, 'nonce', NONCE_BYTES) ??
    shapeProblem(change, 'change', ['action', 'member'], CONFIG_CHANGE_OPTIONAL) ??
    configChangeProblem(change as unknown as Record<string, unknown>, 'change');
  if (problem !== undefined) throw new EnvelopeError(`invalid approval: ${problem}`);
  return { member: signer.memberId, signature: signLowS(signer.privateKey, approvalSignedBytes(channel, nonce, change)) };
}

/** The wire bytes: UTF-8 of the canonical JSON. */
export function encodeEnvelope(envelope: Envelope): Uint8Array {
  return Buffer.from(canonicalize(envelope), 'utf8');
}

// ---------------------------------------------------------------------------------------------
// Parsing and validating
// ---------------------------------------------------------------------------------------------

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function reject(reason: RejectionReason, detail: string): Rejection {
  return { valid: false, reason, detail };
}

/**
 * Everything that needs no context: size, canonical JSON, envelope shape, payload schema. `valid: true`
 * means well-formed, not authentic. Never throws.
 */
export function parseEnvelope(bytes: unknown, maxEnvelopeBytes = DEFAULT_MAX_ENVELOPE_BYTES): EnvelopeVerdict {
  if (!(bytes instanceof Uint8Array)) return reject('malformed', 'not a byte array');
  if (bytes.byteLength > maxEnvelopeBytes) return reject('oversize', `${bytes.byteLength} bytes > ${maxEnvelopeBytes}`);
  let value: unknown;
  try {
    const text = utf8.decode(bytes);
    value = JSON.parse(text);
    // One spelling per envelope: otherwise re-encodings of a signed envelope would be distinct ledger entries.
    if (canonicalize(value) !== text) return reject('malformed', 'not canonical JSON');
  } catch {
    // Invalid UTF-8, invalid JSON, or JSON that has no canonical form (lone surrogate, 1e999, too deep).
    return reject('malformed', 'not canonical JSON');
  }
  const problem = envelopeShapeProblem(value);
  if (problem !== undefined) return reject('malformed', problem);
  const envelope = value as Envelope;
  const badPayload = payloadProblem(envelope.type, envelope.payload);
  if (badPayload !== undefined) return reject('bad-payload', badPayload);
  return { valid: true, envelope };
}

/**
 * The verdict every member reaches for these bytes in this context. Checks, in this order (the first
 * failure is the reason): oversize, malformed, bad-payload (schema), wrong-channel, unknown-creator,
 * revoked-creator, bad-signature, replayed-nonce, then for config: bad-payload (membership) and no-quorum.
 */
export function validateEnvelope(bytes: unknown, context: ValidationContext): EnvelopeVerdict {
  const parsed = parseEnvelope(bytes, context.maxEnvelopeBytes);
  if (!parsed.valid) return parsed;
  const { envelope } = parsed;
  if (envelope.channel !== context.channel) return reject('wrong-channel', '/channel is not the channel being committed');
  const creator = context.members.get(envelope.creator);
  if (creator === undefined) return reject('unknown-creator', '/creator is not a member');
  if (!context.members.isActiveAt(creator.id, context.blockNumber)) return reject('revoked-creator', '/creator is revoked');
  if (!verifyLowS(creator.publicKey, envelopeSignedBytes(envelope), envelope.signature)) {
    return reject('bad-signature', '/signature does not verify with the creator key');
  }
  if (context.clock !== undefined && clockProblem(envelope.timestamp, context.clock)) {
    return reject('bad-timestamp', `/timestamp is more than ${context.clock.maxSkewMs} ms from the orderer's time`);
  }
  const window = context.timestampWindow;
  if (window !== undefined && (envelope.timestamp < window.notBefore || envelope.timestamp > window.notAfter)) {
    // Nonces older than the window may be pruned, so such an envelope cannot be shown not to be a replay.
    return reject('replayed-nonce', '/timestamp is outside the replay window');
  }
  if (context.committedNonces.has(envelope.creator, envelope.nonce)) return reject('replayed-nonce', '/nonce was already committed');
  if (envelope.type === 'config') {
    const refused = configChangeRejection(envelope, context);
    if (refused !== undefined) return reject(refused.reason, refused.detail);
  }
  return parsed;
}

function clockProblem(timestamp: string, { ordererTime, maxSkewMs }: NonNullable<ValidationContext['clock']>): boolean {
  return Math.abs(Date.parse(timestamp) - Date.parse(ordererTime)) > maxSkewMs;
}

/** Nonces per creator, in memory: block-local tracking, tests, or a cache in front of a store. */
export class CommittedNonces implements CommittedNonceLookup {
  readonly #byCreator = new Map<string, Set<string>>();

  has(creator: string, nonce: string): boolean {
    return this.#byCreator.get(creator)?.has(nonce) ?? false;
  }

  add(creator: string, nonce: string): void {
    let nonces = this.#byCreator.get(creator);
    if (nonces === undefined) this.#byCreator.set(creator, (nonces = new Set()));
    nonces.add(nonce);
  }
}

/**
 * Verdicts for a block's envelopes, in block order. An envelope's nonce counts as committed for the
 * envelopes after it once it is valid, so a second copy in the same block is a replay.
 */
export function validateBlockEnvelopes(envelopes: readonly unknown[], context: ValidationContext): EnvelopeVerdict[] {
  const inThisBlock = new CommittedNonces();
  const committedNonces: CommittedNonceLookup = {
    has: (creator, nonce) => inThisBlock.has(creator, nonce) || context.committedNonces.has(creator, nonce),
  };
  return envelopes.map((bytes) => {
    const verdict = validateEnvelope(bytes, { ...context, committedNonces });
    if (verdict.valid) inThisBlock.add(verdict.envelope.creator, verdict.envelope.nonce);
    return verdict;
  });
}
