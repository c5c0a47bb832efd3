/**
 * Bearer tokens. On first start the gateway creates a development issuer key (ES256) in the data dir;
 * `medblock token` signs with the same key, and the gateway verifies against its public half.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, importJWK, jwtVerify, SignJWT, type JWK, type JWTPayload } from 'jose';
import { parseScopes, UnsupportedScopeError, type Grant } from './scopes.ts';

export const DEV_ISSUER = 'medblock-dev-issuer';
export const AUDIENCE = 'medblock-gateway';
const ALG = 'ES256';

export interface AuthContext {
  subject: string;
  grants: Grant[];
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

export async function mintToken(issuer: DevIssuer, opts: MintOptions): Promise<string> {
  const claims: JWTPayload = { scope: opts.scope };
  if (opts.patient) claims.patient = opts.patient;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: ALG, typ: 'JWT' })
    .setSubject(opts.subject)
    .setIssuer(DEV_ISSUER)
    .setAudience(AUDIENCE)
    .setIssuedAt()
    .setExpirationTime(opts.expiresIn ?? '8h')
    .sign(issuer.privateKey);
}

export async function verifyToken(issuer: DevIssuer, token: string): Promise<AuthContext> {
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(token, issuer.publicKey, {
      issuer: DEV_ISSUER,
      audience: AUDIENCE,
      algorithms: [ALG],
      requiredClaims: ['sub', 'exp'],
    }));
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
    patient: typeof payload.patient === 'string' ? payload.patient : undefined,
  };
}
