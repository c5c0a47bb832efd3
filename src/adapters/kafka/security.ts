/**
 * The channel to the ordering service: TLS (a CA file, optionally a client certificate and key for mutual
 * TLS) and SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) for every kafkajs client, from the environment.
 * Everything is read and checked at start-up, so that a wrong path or a certificate that does not match
 * its key stops the gateway with the variable to fix, not a broker handshake failing later.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import type { SASLOptions } from 'kafkajs';

export interface KafkaSecurity {
  /** TLS options of every broker connection (the broker's certificate and host name are always verified); absent ⇒ plaintext. */
  ssl?: ConnectionOptions;
  sasl?: SASLOptions;
  /** MEDBLOCK_KAFKA_TLS=0: plaintext chosen on purpose (e.g. a service mesh encrypts); production refuses it otherwise. */
  plaintextChosen?: boolean;
}

const MECHANISMS = ['plain', 'scram-sha-256', 'scram-sha-512'] as const;

function readSecretFile(variable: string, file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${variable}: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

function certificates(variable: string, file: string): string {
  const pem = readSecretFile(variable, file);
  try {
    new X509Certificate(pem);
  } catch {
    throw new Error(`${variable}: ${file} is not a PEM certificate`);
  }
  return pem;
}

function flag(variable: string, raw: string | undefined): boolean | undefined {
  const value = raw?.trim().toLowerCase();
  if (!value) return undefined;
  if (value === '1' || value === 'true') return true;
  if (value === '0' || value === 'false') return false;
  throw new Error(`${variable} must be 1 or 0`);
}

function clientCertificate(env: NodeJS.ProcessEnv): Pick<ConnectionOptions, 'cert' | 'key'> {
  const certFile = env.MEDBLOCK_KAFKA_CERT_FILE?.trim();
  const keyFile = env.MEDBLOCK_KAFKA_KEY_FILE?.trim();
  if (!certFile && !keyFile) return {};
  if (!certFile || !keyFile) throw new Error('MEDBLOCK_KAFKA_CERT_FILE and MEDBLOCK_KAFKA_KEY_FILE go together (mutual TLS needs both)');
  const cert = certificates('MEDBLOCK_KAFKA_CERT_FILE', certFile);
  const key = readSecretFile('MEDBLOCK_KAFKA_KEY_FILE', keyFile);
  let matches: boolean;
  try {
    matches = new X509Certificate(cert).checkPrivateKey(createPrivateKey(key));
  } catch {
    throw new Error(`MEDBLOCK_KAFKA_KEY_FILE: ${keyFile} is not an unencrypted PEM private key`);
  }
  if (!matches) throw new Error('MEDBLOCK_KAFKA_KEY_FILE is not the private key of the certificate in MEDBLOCK_KAFKA_CERT_FILE');
  return { cert, key };
}

function sasl(env: NodeJS.ProcessEnv): SASLOptions | undefined {
  const raw = env.MEDBLOCK_KAFKA_SASL_MECHANISM?.trim().toLowerCase();
  const username = env.MEDBLOCK_KAFKA_SASL_USERNAME?.trim();
  const passwordFile = env.MEDBLOCK_KAFKA_SASL_PASSWORD_FILE?.trim();
  const inline = env.MEDBLOCK_KAFKA_SASL_PASSWORD;
  if (!raw) {
    if (username || passwordFile || inline) throw new Error('MEDBLOCK_KAFKA_SASL_USERNAME/PASSWORD need MEDBLOCK_KAFKA_SASL_MECHANISM (plain, scram-sha-256 or scram-sha-512)');
    return undefined;
  }
  const mechanism = MECHANISMS.find((m) => m === raw);
  if (!mechanism) throw new Error('MEDBLOCK_KAFKA_SASL_MECHANISM must be plain, scram-sha-256 or scram-sha-512');
  if (!username) throw new Error(`MEDBLOCK_KAFKA_SASL_MECHANISM=${mechanism} needs MEDBLOCK_KAFKA_SASL_USERNAME`);
  if (passwordFile && inline !== undefined) throw new Error('give MEDBLOCK_KAFKA_SASL_PASSWORD or MEDBLOCK_KAFKA_SASL_PASSWORD_FILE, not both');
  // A secret file usually ends with a newline that is not part of the password.
  const password = passwordFile ? readSecretFile('MEDBLOCK_KAFKA_SASL_PASSWORD_FILE', passwordFile).replace(/\r?\n$/, '') : inline;
  if (!password) throw new Error(`MEDBLOCK_KAFKA_SASL_MECHANISM=${mechanism} needs a password: MEDBLOCK_KAFKA_SASL_PASSWORD_FILE (a secret) or MEDBLOCK_KAFKA_SASL_PASSWORD`);
  return { mechanism, username, password };
}

/**
 * MEDBLOCK_KAFKA_TLS (1 | 0; a CA or client certificate file implies 1), MEDBLOCK_KAFKA_CA_FILE (PEM, the CA
 * that issued the brokers' certificates; default: the system's), MEDBLOCK_KAFKA_CERT_FILE +
 * MEDBLOCK_KAFKA_KEY_FILE (mutual TLS), MEDBLOCK_KAFKA_SASL_MECHANISM, _USERNAME, _PASSWORD or _PASSWORD_FILE.
 * SASL needs TLS: without it a PLAIN password, and every ledger envelope, would cross the network in clear.
 */
export function kafkaSecurity(env: NodeJS.ProcessEnv): KafkaSecurity {
  const caFile = env.MEDBLOCK_KAFKA_CA_FILE?.trim();
  const client = clientCertificate(env);
  const tls = flag('MEDBLOCK_KAFKA_TLS', env.MEDBLOCK_KAFKA_TLS);
  const filesGiven = Boolean(caFile || client.cert);
  if (tls === false && filesGiven) throw new Error('MEDBLOCK_KAFKA_TLS=0 contradicts MEDBLOCK_KAFKA_CA_FILE / MEDBLOCK_KAFKA_CERT_FILE');
  const credentials = sasl(env);
  const ssl = tls || filesGiven ? { ...(caFile ? { ca: certificates('MEDBLOCK_KAFKA_CA_FILE', caFile) } : {}), ...client } : undefined;
  if (credentials && !ssl) throw new Error('MEDBLOCK_KAFKA_SASL_MECHANISM needs TLS (MEDBLOCK_KAFKA_TLS=1, MEDBLOCK_KAFKA_CA_FILE): SASL over plaintext would expose the credentials');
  return { ssl, sasl: credentials, plaintextChosen: tls === false };
}

/** What a start-up in production refuses about the orderer channel, if anything. */
export function plaintextProblem(security: KafkaSecurity | undefined): string | undefined {
  if (security?.ssl || security?.plaintextChosen) return undefined;
  return 'the Kafka orderer connection is plaintext: set MEDBLOCK_KAFKA_TLS=1 and MEDBLOCK_KAFKA_CA_FILE (plus SASL or a client certificate, ' +
    'see docs/security.md, "Orderer channel"), or MEDBLOCK_KAFKA_TLS=0 if something else encrypts it';
}
