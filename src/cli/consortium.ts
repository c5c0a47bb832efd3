/** `medblock consortium init`: a new consortium's CA, member certificates and keys, written to a fresh directory. */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { certificateFingerprint, createConsortium, RSA_BITS, type Consortium } from '../identity/ca.ts';
import { SIGNING_KEY_CURVE, signingKeyUri } from '../identity/signing-key.ts';

export interface ConsortiumInitOptions {
  /** Comma-separated member ids. */
  members: string;
  out: string;
  channel?: string;
  quorum?: number;
}

export async function runConsortiumInit(opts: ConsortiumInitOptions): Promise<void> {
  const out = resolve(opts.out);
  // Checked before key generation to fail fast; the non-recursive mkdir below is the real guard.
  if (existsSync(out)) throw new Error(`${out} already exists; refusing to overwrite it (choose a new --out directory)`);
  const consortium = await createConsortium({
    members: opts.members.split(',').map((id) => id.trim()),
    channel: opts.channel,
    quorum: opts.quorum,
  });
  writeConsortiumDir(out, consortium);
  process.stdout.write(
    `created consortium "${consortium.channel}" in ${out}: CA and ${consortium.members.length} members ` +
      `(${consortium.members.map((m) => m.id).join(', ')}), quorum ${consortium.quorum}\n` +
      `each member directory holds private keys: hand it to that member only, over a secure channel\n`,
  );
}

function writeConsortiumDir(out: string, consortium: Consortium): void {
  mkdirSync(dirname(out), { recursive: true });
  try {
    mkdirSync(out);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new Error(`${out} already exists; refusing to overwrite it`);
    throw e;
  }
  writePrivateDir(join(out, 'ca'), { 'ca.crt': consortium.ca.certPem }, { 'ca.key': consortium.ca.keyPem });
  for (const member of consortium.members) {
    writePrivateDir(
      join(out, member.id),
      { 'member.crt': member.certPem, 'signing.pub': member.signingPublicKeyPem },
      { 'member.key': member.keyPem, 'signing.key': member.signingKeyPem },
    );
  }
  writeFileSync(join(out, 'consortium.json'), `${JSON.stringify(manifest(consortium), null, 2)}\n`, { flag: 'wx' });
}

/** A directory (0700) of public files (0644) and private keys (0600); never overwrites a file. */
function writePrivateDir(dir: string, publicFiles: Record<string, string>, privateFiles: Record<string, string>): void {
  mkdirSync(dir, { mode: 0o700 });
  for (const [name, text] of Object.entries(publicFiles)) writeFileSync(join(dir, name), text, { mode: 0o644, flag: 'wx' });
  for (const [name, text] of Object.entries(privateFiles)) writeFileSync(join(dir, name), text, { mode: 0o600, flag: 'wx' });
}

/** consortium.json: the public description every member loads (no private material). */
function manifest(consortium: Consortium) {
  return {
    channel: consortium.channel,
    quorum: consortium.quorum,
    signatureSchemes: {
      certificates: `RSA-${RSA_BITS} sha256WithRSAEncryption (X.509)`,
      envelopes: `ECDSA ${SIGNING_KEY_CURVE} SHA-256, key named in the member certificate's subjectAltName`,
    },
    ca: { certificate: 'ca/ca.crt', sha256Fingerprint: certificateFingerprint(consortium.ca.certPem) },
    members: consortium.members.map((m) => ({
      id: m.id,
      certificate: `${m.id}/member.crt`,
      sha256Fingerprint: certificateFingerprint(m.certPem),
      signingKey: signingKeyUri(m.signingPublicKeyPem),
      signingPublicKey: m.signingPublicKeyPem,
    })),
  };
}
