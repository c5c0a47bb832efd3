/**
 * The orderer channel over TLS + SASL (docs/security.md, "Orderer channel"): a dedicated Kafka broker with
 * a SASL_SSL listener (a throwaway CA, SASL PLAIN). A gateway configured through MEDBLOCK_KAFKA_* anchors
 * through it; a client without credentials, with a wrong password or trusting another CA is refused; and
 * the settings are checked at start-up with errors that name the variable to fix.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import { createKafkaClient, type KafkaConnection } from '../../src/adapters/kafka/client.ts';
import { kafkaSecurity } from '../../src/adapters/kafka/security.ts';
import { loadConfig } from '../../src/config.ts';
import { createGateway, type Gateway } from '../../src/gateway.ts';
import { mintToken } from '../../src/access/tokens.ts';
import { startKafkaBroker, type KafkaBroker } from '../engines/index.ts';
import { createTestCa, issueServerCertificate } from '../engines/tls.ts';
import { testConsortium } from '../support/consortium.ts';
import { FHIR_JSON } from '../support/gateway.ts';
import { untilWithin } from '../support/until.ts';

const work = mkdtempSync(join(tmpdir(), 'medblock-kafka-tls-'));
after(() => rmSync(work, { recursive: true, force: true }));
const PASSWORD = 'orderer-secret-1';
const until = untilWithin(60_000, 100);

function file(name: string, text: string): string {
  const path = join(work, name);
  writeFileSync(path, text, { mode: 0o600 });
  return path;
}

/** Whether a kafkajs admin connects and lists topics with these settings (no retries: a refusal is final). */
async function connects(connection: KafkaConnection): Promise<true | string> {
  const admin = createKafkaClient({ ...connection, retry: { retries: 0 } }).admin();
  try {
    await admin.connect();
    await admin.listTopics();
    return true;
  } catch (e) {
    return (e as Error).message;
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

describe('the Kafka orderer over SASL_SSL', () => {
  let broker: KafkaBroker | undefined;
  let brokers: string;
  let caFile: string;
  before(async () => {
    try {
      broker = await startKafkaBroker({ saslSsl: { users: { medblock: PASSWORD } } });
    } catch (err) {
      // No skipping here: this is the only test of the orderer channel's security, so a missing toolchain fails it.
      throw new Error(`cannot start a dedicated Kafka broker with a SASL_SSL listener: ${(err as Error).message.split('\n')[0]}`, { cause: err });
    }
    brokers = broker.saslSsl!.brokers;
    caFile = file('kafka-ca.pem', broker.saslSsl!.caPem);
  });
  after(() => broker?.stop());

  const env = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({
    MEDBLOCK_KAFKA_TLS: '1', MEDBLOCK_KAFKA_CA_FILE: caFile,
    MEDBLOCK_KAFKA_SASL_MECHANISM: 'plain', MEDBLOCK_KAFKA_SASL_USERNAME: 'medblock', MEDBLOCK_KAFKA_SASL_PASSWORD_FILE: file('kafka-password', `${PASSWORD}\n`),
    ...extra,
  });

  it('refuses a client without credentials, with a wrong password, or trusting another CA; accepts the configured one', { timeout: 60_000 }, async () => {
    const good = kafkaSecurity(env());
    assert.equal(await connects({ brokers: [brokers], ...good }), true);
    assert.notEqual(await connects({ brokers: [brokers], ssl: good.ssl }), true, 'TLS without SASL');
    const wrongPassword = await connects({ brokers: [brokers], ...kafkaSecurity(env({ MEDBLOCK_KAFKA_SASL_PASSWORD_FILE: file('wrong', 'guess\n') })) });
    assert.match(String(wrongPassword), /SASL PLAIN authentication failed|Authentication failed/i);
    const otherCa = file('other-ca.pem', createTestCa('Someone else').certPem);
    const wrongCa = await connects({ brokers: [brokers], ...kafkaSecurity(env({ MEDBLOCK_KAFKA_CA_FILE: otherCa })) });
    assert.match(String(wrongCa), /self[- ]signed|unable to verify|certificate/i);
    assert.notEqual(await connects({ brokers: [brokers] }), true, 'plaintext to the TLS listener');
  });

  it('a production gateway configured by MEDBLOCK_KAFKA_* anchors through it', { timeout: 120_000 }, async () => {
    const full = await testConsortium(['tls-h1']);
    const consortiumDir = join(work, 'consortium');
    cpSync(full, consortiumDir, { recursive: true });
    rmSync(join(consortiumDir, 'ca', 'ca.key'));
    const dataDir = join(work, 'data');
    const config = loadConfig({
      ...env(), MEDBLOCK_KAFKA_BROKERS: brokers, MEDBLOCK_KAFKA_REPLICATION_FACTOR: '1', MEDBLOCK_KAFKA_MIN_INSYNC_REPLICAS: '1',
      MEDBLOCK_DATA_DIR: dataDir, MEDBLOCK_CONSORTIUM_DIR: consortiumDir, MEDBLOCK_HOSPITAL_ID: 'tls-h1', PORT: '0',
      MEDBLOCK_MASTER_KEY_FILE: file('master.key', `${Buffer.alloc(32, 7).toString('base64')}\n`), MEDBLOCK_LEDGER_BATCH_TIMEOUT_MS: '20',
    });
    const gateway: Gateway = await createGateway(config);
    try {
      const token = await mintToken(gateway.issuer, { subject: 'tester', scope: 'user/*.cruds' });
      const created = await supertest(gateway.app).post('/fhir/Patient').set('Authorization', `Bearer ${token}`).set('Content-Type', FHIR_JSON)
        .send({ resourceType: 'Patient', gender: 'female' });
      assert.equal(created.status, 201, created.text);
      const id = (JSON.parse(created.text) as { id: string }).id;
      await until('the version is anchored in a block ordered through the SASL_SSL listener', async () => {
        const proof = await supertest(gateway.app).get(`/fhir/Patient/${id}/_history/1/$proof`).set('Authorization', `Bearer ${token}`);
        return proof.status === 200;
      });
    } finally {
      await gateway.close();
    }
  });
});

describe('Kafka TLS/SASL settings are checked at start-up', () => {
  const ca = createTestCa();
  const server = issueServerCertificate(ca);
  const other = issueServerCertificate(ca);
  const caFile = file('settings-ca.pem', ca.certPem);

  it('names the variable to fix', () => {
    const refused = (env: NodeJS.ProcessEnv, message: RegExp) => assert.throws(() => kafkaSecurity(env), message);
    refused({ MEDBLOCK_KAFKA_SASL_MECHANISM: 'plain', MEDBLOCK_KAFKA_SASL_USERNAME: 'u', MEDBLOCK_KAFKA_SASL_PASSWORD: 'p' }, /needs TLS \(MEDBLOCK_KAFKA_TLS=1/);
    refused({ MEDBLOCK_KAFKA_TLS: '1', MEDBLOCK_KAFKA_SASL_MECHANISM: 'gssapi' }, /MEDBLOCK_KAFKA_SASL_MECHANISM must be plain, scram-sha-256 or scram-sha-512/);
    refused({ MEDBLOCK_KAFKA_TLS: '1', MEDBLOCK_KAFKA_SASL_MECHANISM: 'scram-sha-512', MEDBLOCK_KAFKA_SASL_USERNAME: 'u' }, /needs a password/);
    refused({ MEDBLOCK_KAFKA_TLS: '1', MEDBLOCK_KAFKA_SASL_MECHANISM: 'plain', MEDBLOCK_KAFKA_SASL_USERNAME: 'u', MEDBLOCK_KAFKA_SASL_PASSWORD_FILE: join(work, 'nope') }, /MEDBLOCK_KAFKA_SASL_PASSWORD_FILE: cannot read .*nope \(ENOENT\)/);
    refused({ MEDBLOCK_KAFKA_SASL_USERNAME: 'u' }, /need MEDBLOCK_KAFKA_SASL_MECHANISM/);
    refused({ MEDBLOCK_KAFKA_CA_FILE: file('not-pem', 'hello') }, /MEDBLOCK_KAFKA_CA_FILE: .*not-pem is not a PEM certificate/);
    refused({ MEDBLOCK_KAFKA_TLS: '0', MEDBLOCK_KAFKA_CA_FILE: caFile }, /MEDBLOCK_KAFKA_TLS=0 contradicts/);
    refused({ MEDBLOCK_KAFKA_TLS: 'yes' }, /MEDBLOCK_KAFKA_TLS must be 1 or 0/);
    refused({ MEDBLOCK_KAFKA_CERT_FILE: file('c.pem', server.certPem) }, /go together/);
    refused({ MEDBLOCK_KAFKA_CERT_FILE: file('c2.pem', server.certPem), MEDBLOCK_KAFKA_KEY_FILE: file('k2.pem', other.keyPem) }, /is not the private key of the certificate/);
    // A good mutual-TLS configuration: the CA, the client's certificate and its key.
    const mtls = kafkaSecurity({ MEDBLOCK_KAFKA_CA_FILE: caFile, MEDBLOCK_KAFKA_CERT_FILE: file('c3.pem', server.certPem), MEDBLOCK_KAFKA_KEY_FILE: file('k3.pem', server.keyPem) });
    assert.equal(mtls.ssl?.ca, ca.certPem);
    assert.equal(mtls.ssl?.cert, server.certPem);
  });

  it('the password never appears in an error', () => {
    assert.throws(() => kafkaSecurity({ MEDBLOCK_KAFKA_SASL_MECHANISM: 'plain', MEDBLOCK_KAFKA_SASL_USERNAME: 'u', MEDBLOCK_KAFKA_SASL_PASSWORD: 'hunter2-secret' }),
      (e: Error) => !e.message.includes('hunter2-secret'));
  });
});
