/**
 * Bearer tokens. On first start the gateway creates a development issuer key (ES256) in the data dir;
 * `medblock token` signs with the same key, and the gateway verifies against its public half.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeJwt, exportJWK, generateKeyPair, importJWK, jwtVerify, SignJWT, type JWK, type JWTPayload } from 'jose';
import { parseScopes, UnsupportedScopeError, type Grant } from './scopes.ts';

export const DEV_ISSUER = 'medblock-dev-issuer';
export const AUDIENCE = 'medblock-gateway';
const ALG = 'ES256';
/**
 * The longest a dev token may live (exp − iat), 24 hours: whoever copies one, or the dev issuer key in the
 * data dir, holds a bounded credential. The gateway refuses longer-lived or undated ones (no iat).
 */
export const DEV_TOKEN_MAX_LIFETIME_SECONDS = 24 * 60 * 60;

export interface AuthContext {
  subject: string;
  grants: Grant[];
  /** The token's whole scope string (operation scopes such as the erase scope are not resource grants). */
  scope?: string;
  /** The patient a `patient/` scope is bound to. */
  patient?: string;
}

export class InvalidTokenError extends Error {}

type Key = Awaited<ReturnType<typeof importJWK>>;

export interface DevIssuer {
  privateKey: Key;
  publicKey: Key;
}

/** Where a data dir keeps its development issuer key (created by the gateway's first start). */
export function devIssuerKeyFile(dataDir: string): string {
  return join(dataDir, 'keys', 'dev-issuer.jwk.json');
}

/** Loads the development issuer key from the data dir, creating it (mode 0600) on first use. */
export async function loadDevIssuer(dataDir: string): Promise<DevIssuer> {
  const file = devIssuerKeyFile(dataDir);
  let jwk: JWK;
  if (existsSync(file)) {
    jwk = JSON.parse(readFileSync(file, 'utf8')) as JWK;
  } else {
    const { privateKey } = await generateKeyPair(ALG, { extractable: true });
    jwk = { ...(await exportJWK(privateKey)), alg: ALG, kid: `dev-${Date.now().toString(36)}` };
    mkdirSync(join(dataDir, 'keys'), { recursive: true, mode: 0o700 });
    // 'wx' fails if another process created the key meanwhile; then use theirs.
    try {
      writeFileSync(file, JSON.stringify(jwk), { mode: 0o600, flag: 'wx' });
    } catch {
      jwk = JSON.parse(readFileSync(file, 'utf8')) as JWK;
    }
    chmodSync(file, 0o600);
  }
  const { d: _private, ...publicJwk } = jwk;
  return { privateKey: await importJWK(jwk, ALG), publicKey: await importJWK(publicJwk, ALG) };
}

export interface MintOptions {
  subject: string;
  scope: string;
  patient?: string;
  /** jose time span, e.g. '8h'. */
  expiresIn?: string;
}

export class TokenLifetimeError extends Error {}

/** Mints a dev token; a lifetime above {@link DEV_TOKEN_MAX_LIFETIME_SECONDS} is refused, as the gateway would refuse the token. */
export async function mintToken(issuer: DevIssuer, opts: MintOptions): Promise<string> {
  const claims: JWTPayload = { scope: opts.scope };
  if (opts.patient) claims.patient = opts.patient;
  const jwt = await new SignJWT(claims)
    .setProtectedHeader({ alg: ALG, typ: 'JWT' })
    .setSubject(opts.subject)
    .setIssuer(DEV_ISSUER)
    .setAudience(AUDIENCE)
    .setIssuedAt()
    .setExpirationTime(opts.expiresIn ?? '8h')
    .sign(issuer.privateKey);
  const { iat, exp } = decodeJwt(jwt);
  if (exp! - iat! > DEV_TOKEN_MAX_LIFETIME_SECONDS) {
    throw new TokenLifetimeError(`a dev token lives at most ${DEV_TOKEN_MAX_LIFETIME_SECONDS / 3600}h (asked: ${opts.expiresIn}); mint a new one when it expires`);
  }
  if (exp! <= iat!) throw new TokenLifetimeError(`a token's lifetime must be positive (asked: ${opts.expiresIn})`);
  return jwt;
}

export async function verifyToken(issuer: DevIssuer, token: string): Promise<AuthContext> {
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(token, issuer.publicKey, {
      issuer: DEV_ISSUER,
      audience: AUDIENCE,
      algorithms: [ALG],
      requiredClaims: ['sub', 'exp', 'iat'],
      maxTokenAge: DEV_TOKEN_MAX_LIFETIME_SECONDS,
    }));
    if (payload.exp! - payload.iat! > DEV_TOKEN_MAX_LIFETIME_SECONDS) throw new Error('lives longer than a dev token may');
  } catch (e) {
    const reason = (e as { code?: string }).code === 'ERR_JWT_EXPIRED' ? 'the token has expired' : 'the token is not valid';
    throw new InvalidTokenError(reason);
  }
  const scope = typeof payload.scope === 'string' ? payload.scope : '';
  let grants: Grant[];
  try {
    grants = parseScopes(scope);
  } catch (e) {
    throw e instanceof UnsupportedScopeError ? new InvalidTokenError(e.message) : e;
  }
  return {
    subject: payload.sub!,
    grants,
    scope,
    patient: typeof payload.patient === 'string' ? payload.patient : undefined,
  };
}
