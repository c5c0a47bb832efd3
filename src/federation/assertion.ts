/**
 * The requester assertion (docs/federation.md, "The channel"): a short-lived compact JWS a requesting member
 * signs with its ledger signing key (ES256, P-256) for every federated request. It tells the holder who
 * asks (the end user, their role), why (the purpose of use), about whom (the link token) and carries a
 * nonce the holder refuses to see twice. Pure apart from the clock and the replay cache's memory.
 */
import { EMERGENCY_TREATMENT, isPurposeOfUse, MAX_BREAK_GLASS_REASON, PURPOSES_OF_USE } from '../access/consent.ts';
import { randomBytes, type KeyObject } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify, SignJWT, type JWTPayload } from 'jose';
import type { Membership } from '../ledger/membership.ts';

/** The HTTP header that carries the assertion. */
export const ASSERTION_HEADER = 'X-MedBlock-Assertion';
/** JWS `typ`: an assertion is never mistaken for an access token, nor one for it. */
export const ASSERTION_TYPE = 'medblock-assertion+jwt';
export const DEFAULT_ASSERTION_LIFETIME_SECONDS = 60;
export const MAX_ASSERTION_LIFETIME_SECONDS = 300;
/** Clock difference tolerated between members, on iat, nbf and exp. */
export const ASSERTION_CLOCK_SKEW_SECONDS = 30;
/** A whole assertion: far above a real one (~700 characters), far below a header limit. */
const MAX_ASSERTION_CHARS = 4096;

/** What the requesting gateway states about its request. */
export interface AssertionClaims {
  /** The end user: their access token's subject. */
  sub: string;
  /** The end user's role (`clinician` when their token names none). */
  role: string;
  /** An HL7 v3 ActReason purpose of use (access/consent.ts, PURPOSES_OF_USE). */
  pou: string;
  /** Break-the-glass reason; only with `pou: ETREAT`. */
  btg?: string;
  /** The link token asked about (docs/federation.md, "Linking a person across members"); absent for requests about no patient. */
  link?: string;
}

/** A verified assertion: the stated claims plus who signed it, for whom, its nonce and lifetime (seconds since the epoch). */
export interface Assertion extends AssertionClaims {
  iss: string;
  aud: string;
  jti: string;
  iat: number;
  exp: number;
}

/** Why an assertion was refused; the message names the rule, never a claim's value. */
export class AssertionError extends Error {
  /** 401, or 429 when the replay cache is full (a flood of valid assertions): retry later. */
  constructor(message: string, readonly status: 401 | 429 = 401) {
    super(message);
    this.name = 'AssertionError';
  }
}

const SUBJECT_PATTERN = /^[\x21-\x7e]{1,256}$/;
const ROLE_PATTERN = /^[A-Za-z0-9._:/-]{1,64}$/;
const LINK_TOKEN_PATTERN = /^[A-Za-z0-9_-]{43}$/;
/** 16 to 64 random bytes in base64url: at least 128 bits. */
const NONCE_PATTERN = /^[A-Za-z0-9_-]{22,86}$/;

/** Why these claims cannot be asserted, if they cannot. */
function claimsProblem(claims: Partial<AssertionClaims>): string | undefined {
  if (typeof claims.sub !== 'string' || !SUBJECT_PATTERN.test(claims.sub)) return 'sub must be the end user\'s token subject (1-256 printable ASCII characters)';
  if (typeof claims.role !== 'string' || !ROLE_PATTERN.test(claims.role)) return 'role must be 1-64 letters, digits or ._:/-';
  if (!isPurposeOfUse(claims.pou)) return `pou must be one of the purpose-of-use codes ${PURPOSES_OF_USE.join(', ')}`;
  if (claims.btg !== undefined) {
    if (claims.pou !== EMERGENCY_TREATMENT) return `btg (break-the-glass) is allowed only with pou ${EMERGENCY_TREATMENT}`;
    if (typeof claims.btg !== 'string' || claims.btg.trim() === '' || claims.btg.length > MAX_BREAK_GLASS_REASON) {
      return `btg must be a reason of 1-${MAX_BREAK_GLASS_REASON} characters`;
    }
  }
  if (claims.link !== undefined && (typeof claims.link !== 'string' || !LINK_TOKEN_PATTERN.test(claims.link))) return 'link must be a link token (43 base64url characters)';
  return undefined;
}

export interface AssertionSigner {
  memberId: string;
  /** The member's ledger (envelope) signing key: EC P-256. */
  privateKey: KeyObject;
}

/** Signs a fresh assertion (a new nonce each time) from `signer` to holder `audience`. */
export async function createAssertion(
  signer: AssertionSigner,
  audience: string,
  claims: AssertionClaims,
  options: { now?: Date; lifetimeSeconds?: number } = {},
): Promise<string> {
  const problem = claimsProblem(claims);
  if (problem) throw new AssertionError(`cannot create the assertion: ${problem}`);
  const lifetime = options.lifetimeSeconds ?? DEFAULT_ASSERTION_LIFETIME_SECONDS;
  if (!(Number.isInteger(lifetime) && lifetime > 0 && lifetime <= MAX_ASSERTION_LIFETIME_SECONDS)) {
    throw new AssertionError(`an assertion lives 1-${MAX_ASSERTION_LIFETIME_SECONDS} seconds`);
  }
  const iat = Math.floor((options.now ?? new Date()).getTime() / 1000);
  const { sub, role, pou, btg, link } = claims;
  return new SignJWT({ role, pou, ...(btg !== undefined ? { btg } : {}), ...(link !== undefined ? { link } : {}) })
    .setProtectedHeader({ alg: 'ES256', typ: ASSERTION_TYPE, kid: signer.memberId })
    .setIssuer(signer.memberId)
    .setAudience(audience)
    .setSubject(sub)
    .setJti(randomBytes(16).toString('base64url'))
    .setIssuedAt(iat)
    .setExpirationTime(iat + lifetime)
    .sign(signer.privateKey);
}

/**
 * Nonces seen, per issuer, kept until their assertion can no longer be accepted (exp + skew). In memory:
 * a holder that restarts forgets them, so an assertion captured before the restart could be replayed
 * after it for at most its remaining lifetime (≤ 5 minutes; docs/federation.md, "Limits").
 */
export class ReplayCache {
  readonly #seen = new Map<string, number>();
  #nextSweep = 0;

  constructor(readonly maxEntries = 100_000) {}

  /** Records (issuer, jti) until `expiresAtMs`: `fresh` the first time, `replayed` after; `full` refuses (fail closed). */
  claim(issuer: string, jti: string, expiresAtMs: number, nowMs = Date.now()): 'fresh' | 'replayed' | 'full' {
    const key = `${issuer}\n${jti}`;
    const known = this.#seen.get(key);
    if (known !== undefined && known > nowMs) return 'replayed';
    if (nowMs >= this.#nextSweep || this.#seen.size >= this.maxEntries) this.#sweep(nowMs);
    if (this.#seen.size >= this.maxEntries) return 'full';
    this.#seen.set(key, expiresAtMs);
    return 'fresh';
  }

  get size(): number {
    return this.#seen.size;
  }

  #sweep(nowMs: number): void {
    for (const [key, expires] of this.#seen) if (expires <= nowMs) this.#seen.delete(key);
    this.#nextSweep = nowMs + 10_000;
  }
}

export interface VerifyAssertionContext {
  /** The member at the other end of the TLS connection (peers.ts): the only issuer accepted. */
  peer: string;
  /** This holder's member id: the only audience accepted. */
  self: string;
  /** The ledger's current membership: the issuer's signing key. */
  membership: Membership;
  replay: ReplayCache;
  now?: Date;
}

/**
 * Verifies an assertion received over a connection from `peer`. Throws AssertionError (the holder answers
 * 401) for anything but a well-formed, unexpired, first-seen assertion that `peer` signed for this holder.
 */
export async function verifyAssertion(token: unknown, context: VerifyAssertionContext): Promise<Assertion> {
  if (typeof token !== 'string' || token.length === 0) throw new AssertionError(`a requester assertion (${ASSERTION_HEADER}) is required`);
  if (token.length > MAX_ASSERTION_CHARS) throw new AssertionError('the requester assertion is too long');
  let header: ReturnType<typeof decodeProtectedHeader>;
  let unverified: JWTPayload;
  try {
    header = decodeProtectedHeader(token);
    unverified = decodeJwt(token);
  } catch {
    throw new AssertionError('the requester assertion is not a compact JWS');
  }
  // Checked before the signature only to name the refusal well: the signature is verified with the peer's key alone.
  if (header.alg !== 'ES256') throw new AssertionError('the requester assertion must be signed with ES256');
  if (header.typ !== ASSERTION_TYPE) throw new AssertionError(`the requester assertion's typ must be ${ASSERTION_TYPE}`);
  if (unverified.iss !== context.peer || header.kid !== context.peer) {
    throw new AssertionError('the requester assertion\'s issuer is not the member whose certificate made this connection');
  }
  const member = context.membership.get(context.peer);
  if (!member) throw new AssertionError('the requester assertion\'s issuer is not a member');
  const now = context.now ?? new Date();
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(token, member.publicKey, {
      algorithms: ['ES256'],
      typ: ASSERTION_TYPE,
      issuer: context.peer,
      audience: context.self,
      clockTolerance: ASSERTION_CLOCK_SKEW_SECONDS,
      currentDate: now,
      requiredClaims: ['iss', 'aud', 'sub', 'jti', 'iat', 'exp'],
    }));
  } catch (e) {
    throw new AssertionError(joseRefusal(e));
  }
  const { iat, exp, jti, aud } = payload as { iat: number; exp: number; jti: unknown; aud: unknown };
  const nowSeconds = now.getTime() / 1000;
  if (aud !== context.self) throw new AssertionError('the requester assertion is meant for another member (aud)');
  if (iat > nowSeconds + ASSERTION_CLOCK_SKEW_SECONDS) throw new AssertionError('the requester assertion is not valid yet (iat in the future)');
  if (exp - iat > MAX_ASSERTION_LIFETIME_SECONDS) throw new AssertionError(`the requester assertion lives longer than ${MAX_ASSERTION_LIFETIME_SECONDS} seconds`);
  if (typeof jti !== 'string' || !NONCE_PATTERN.test(jti)) throw new AssertionError('the requester assertion\'s jti must be a random nonce of at least 128 bits (base64url)');
  const claims = payload as unknown as Partial<AssertionClaims>;
  const problem = claimsProblem(claims);
  if (problem) throw new AssertionError(`the requester assertion is malformed: ${problem}`);
  // Last, so that an assertion refused for another reason does not take a place in the cache.
  const replay = context.replay.claim(context.peer, jti, (exp + ASSERTION_CLOCK_SKEW_SECONDS) * 1000, now.getTime());
  if (replay === 'replayed') throw new AssertionError('the requester assertion was used before (replayed jti)');
  if (replay === 'full') throw new AssertionError('too many recent assertions to check for replay; retry shortly', 429);
  const { sub, role, pou, btg, link } = claims as AssertionClaims;
  return { iss: context.peer, aud: context.self, sub, role, pou, ...(btg !== undefined ? { btg } : {}), ...(link !== undefined ? { link } : {}), jti, iat, exp };
}

function joseRefusal(e: unknown): string {
  if (e instanceof joseErrors.JWTExpired) return 'the requester assertion has expired';
  if (e instanceof joseErrors.JWTClaimValidationFailed) {
    if (e.claim === 'aud') return 'the requester assertion is meant for another member (aud)';
    if (e.claim === 'nbf') return 'the requester assertion is not valid yet (nbf)';
    return `the requester assertion's ${e.claim} claim is missing or invalid`;
  }
  if (e instanceof joseErrors.JWSSignatureVerificationFailed) return 'the requester assertion\'s signature does not verify with the issuer\'s ledger signing key';
  if (e instanceof joseErrors.JOSEAlgNotAllowed) return 'the requester assertion must be signed with ES256';
  return 'the requester assertion is invalid';
}
