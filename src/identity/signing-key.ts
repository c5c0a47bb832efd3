/**
 * A member's ECDSA P-256 envelope-signing key and the name that binds it to the member's RSA certificate.
 *
 * node-forge cannot put an EC key in a certificate, so the certificate names the key instead: a
 * subjectAltName URI `ni:///sha-256;<base64url SHA-256 of the SPKI DER>` (RFC 6920 "named information").
 * Anyone holding the CA certificate, the member certificate and the public key can check the binding.
 */
import { createHash, createPublicKey, generateKeyPair, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';

const generateKeyPairAsync = promisify(generateKeyPair);

export const SIGNING_KEY_CURVE = 'P-256';
const NI_PREFIX = 'ni:///sha-256;';
const NI_PATTERN = /^ni:\/\/\/sha-256;[A-Za-z0-9_-]{43}$/;

export interface SigningKeyPair {
  /** PKCS#8 PEM. */
  privateKeyPem: string;
  /** SPKI PEM. */
  publicKeyPem: string;
}

export async function generateSigningKey(): Promise<SigningKeyPair> {
  const { privateKey, publicKey } = await generateKeyPairAsync('ec', { namedCurve: SIGNING_KEY_CURVE });
  return {
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

/** The RFC 6920 name of an envelope-signing public key; throws unless it is a P-256 key. */
export function signingKeyUri(publicKeyPem: string): string {
  const key = createPublicKey(publicKeyPem);
  assertP256(key);
  const spki = key.export({ type: 'spki', format: 'der' });
  return NI_PREFIX + createHash('sha256').update(spki).digest('base64url');
}

export function isSigningKeyUri(uri: string): boolean {
  return NI_PATTERN.test(uri);
}

function assertP256(key: KeyObject): void {
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new Error(`envelope-signing key must be ECDSA ${SIGNING_KEY_CURVE}`);
  }
}
