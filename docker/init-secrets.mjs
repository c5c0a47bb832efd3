// One-shot, run by the compose file's `consortium-init` service in the gateway image (as root, before
// anything else starts). Idempotent: what exists is kept. Writes, every file 0600 and owned by uid 1000
// (the gateway's `node` user and the Kafka image's `appuser`):
//
//   /ca/medblock/…                 the whole consortium directory (`medblock consortium init`), CA key included:
//                                  the CA operator's volume, mounted by no gateway
//   /gateways/<hospital>/          one volume per hospital, mounted on that gateway's /keys:
//     consortium/                  consortium.json, ca/ca.crt and its own member directory (no CA key)
//     master-key                   its master key (MEDBLOCK_MASTER_KEY_FILE), apart from its /data volume
//     kafka-ca.pem                 the CA of the brokers' TLS certificates (MEDBLOCK_KAFKA_CA_FILE)
//     kafka-password               its SASL PLAIN password (MEDBLOCK_KAFKA_SASL_PASSWORD_FILE; user: the id, - as _)
//   /kafka-tls/                    mounted read-only by the Kafka nodes:
//     kafka-<n>.pem                each broker's key and certificate (PEM key store), for host kafka-<n>
//     sasl.properties              `jaas=`: the PLAIN login module with every hospital's user and password
//
// Usage: node /medblock/init-secrets.mjs <hospital,…> <broker count>
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const forge = createRequire('/app/package.json')('node-forge');
const [hospitals, brokerCount] = [process.argv[2].split(','), Number(process.argv[3])];
const OWNER = 1000;

function writeSecret(path, text) {
  if (!existsSync(path)) writeFileSync(path, text, { mode: 0o600 });
}

function ownAll(dir) {
  chownSync(dir, OWNER, OWNER);
  chmodSync(dir, 0o700);
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) ownAll(path);
    else chownSync(path, OWNER, OWNER);
  }
}

function rsa() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 3072 });
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const key = forge.pki.privateKeyFromPem(keyPem);
  return { keyPem, key, publicKey: forge.pki.setRsaPublicKey(key.n, key.e) };
}

function certificate(subject, issuer, publicKey, signingKey, years, extensions) {
  const cert = forge.pki.createCertificate();
  cert.publicKey = publicKey;
  cert.serialNumber = `01${randomBytes(8).toString('hex')}`;
  cert.validity.notBefore = new Date();
  cert.validity.notAfter = new Date(Date.now() + years * 365 * 86_400_000);
  cert.setSubject([{ name: 'commonName', value: subject }]);
  cert.setIssuer([{ name: 'commonName', value: issuer }]);
  cert.setExtensions(extensions);
  cert.sign(signingKey, forge.md.sha256.create());
  return forge.pki.certificateToPem(cert);
}

// --- the consortium: created once, in the CA operator's volume
const consortium = '/ca/medblock';
if (!existsSync(join(consortium, 'consortium.json'))) {
  const addresses = hospitals.map((h) => `${h}=https://${h}:8443`).join(',');
  execFileSync('node', ['/app/bin/medblock.js', 'consortium', 'init', '--members', hospitals.join(','), '--channel', 'consortium', '--federation-addresses', addresses, '--out', consortium], { stdio: 'inherit' });
}

// --- the brokers' TLS: a CA of their own (its key stays in /kafka-tls/ca, read by no service)
mkdirSync('/kafka-tls/ca', { recursive: true, mode: 0o700 });
if (!existsSync('/kafka-tls/ca/ca.key')) {
  const ca = rsa();
  writeSecret('/kafka-tls/ca/ca.crt', certificate('MedBlock Kafka CA', 'MedBlock Kafka CA', ca.publicKey, ca.key, 10, [
    { name: 'basicConstraints', cA: true, critical: true }, { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
  ]));
  writeSecret('/kafka-tls/ca/ca.key', ca.keyPem);
}
const kafkaCa = { certPem: readFileSync('/kafka-tls/ca/ca.crt', 'utf8'), key: forge.pki.privateKeyFromPem(readFileSync('/kafka-tls/ca/ca.key', 'utf8')) };
for (let n = 1; n <= brokerCount; n++) {
  const store = `/kafka-tls/kafka-${n}.pem`;
  if (existsSync(store)) continue;
  const broker = rsa();
  const cert = certificate(`kafka-${n}`, 'MedBlock Kafka CA', broker.publicKey, kafkaCa.key, 3, [
    { name: 'basicConstraints', cA: false }, { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
    { name: 'extKeyUsage', serverAuth: true }, { name: 'subjectAltName', altNames: [{ type: 2, value: `kafka-${n}` }] },
  ]);
  writeSecret(store, `${broker.keyPem}${cert}`);
}

// --- each hospital's /keys volume, and its SASL user
const users = [];
for (const hospital of hospitals) {
  const keys = `/gateways/${hospital}`;
  mkdirSync(join(keys, 'consortium', 'ca'), { recursive: true, mode: 0o700 });
  cpSync(join(consortium, 'consortium.json'), join(keys, 'consortium', 'consortium.json'));
  cpSync(join(consortium, 'ca', 'ca.crt'), join(keys, 'consortium', 'ca', 'ca.crt'));
  cpSync(join(consortium, hospital), join(keys, 'consortium', hospital), { recursive: true });
  writeSecret(join(keys, 'master-key'), `${randomBytes(32).toString('base64')}\n`);
  writeSecret(join(keys, 'kafka-password'), `${randomBytes(24).toString('base64url')}\n`);
  writeSecret(join(keys, 'kafka-ca.pem'), kafkaCa.certPem);
  // JAAS option names take no dashes: hospital-a is the Kafka user hospital_a (MEDBLOCK_KAFKA_SASL_USERNAME).
  users.push(`user_${hospital.replaceAll('-', '_')}="${readFileSync(join(keys, 'kafka-password'), 'utf8').trim()}"`);
  ownAll(keys);
}
writeFileSync('/kafka-tls/sasl.properties', `jaas=org.apache.kafka.common.security.plain.PlainLoginModule required ${users.join(' ')};\n`, { mode: 0o600 });
ownAll('/kafka-tls');
ownAll('/ca');
console.log(`consortium, master keys, Kafka TLS and SASL users ready for ${hospitals.join(', ')}`);
