/** Composition root: wires the stores, ledger, repository, token issuer and HTTP app from a configuration. */
import type { Server } from 'node:http';
import { join } from 'node:path';
import { loadDevIssuer, type DevIssuer } from './access/tokens.ts';
import { AccessLog } from './audit/access-log.ts';
import { KafkaOrderer } from './adapters/kafka/kafka-orderer.ts';
import { ChannelReplicationError } from './adapters/kafka/topics.ts';
import { MongoLedgerStore } from './adapters/mongodb/mongo-ledger-store.ts';
import { MongoStore } from './adapters/mongodb/mongo-store.ts';
import { SoloOrderer } from './adapters/solo/solo-orderer.ts';
import { SqliteLedgerStore } from './adapters/sqlite/sqlite-ledger-store.ts';
import { SqliteStore } from './adapters/sqlite/sqlite-store.ts';
import { gatewayMode, type GatewayConfig } from './config.ts';
import { createVersionChecker } from './fhir/checks/pool.ts';
import { FhirRepository } from './fhir/repository.ts';
import { initValidation } from './fhir/validation/index.ts';
import { createApp } from './http/app.ts';
import type { Federation } from './federation-channel.ts';
import { openFederatedRecord } from './federated-record.ts';
import { Metrics } from './http/metrics.ts';
import { log } from './log.ts';
import {
  ensureLocalConsortium,
  genesisMembership,
  loadMemberConsortium,
  memberCertificateCheck,
  type MemberConsortium,
} from './identity/consortium-dir.ts';
import { AnchorPublisher } from './ledger/anchor-publisher.ts';
import type { LedgerStore } from './ledger/ledger-store.ts';
import { LedgerMember } from './ledger/member.ts';
import type { Orderer } from './ledger/orderer.ts';
import { productionProblems, productionRefusal } from './production-checks.ts';
import { LedgerService } from './ledger/service.ts';
import type { ResourceStore } from './vault/store.ts';
import { EncryptedStore } from './vault/encrypted-store.ts';
import { patientLinkTokens } from './federation/link-token.ts';
import { MasterKeyring } from './vault/keyring.ts';

export interface Ledger {
  consortium: MemberConsortium;
  store: LedgerStore;
  orderer: Orderer;
  member: LedgerMember;
  publisher: AnchorPublisher;
  service: LedgerService;
}

export interface Gateway {
  config: GatewayConfig;
  store: ResourceStore;
  repo: FhirRepository;
  issuer: DevIssuer;
  /** Absent only in the benchmark's plaintext baseline. */
  ledger?: Ledger;
  accessLog?: AccessLog;
  /** The gateway-to-gateway channel (with the ledger): its client, and its listener when MEDBLOCK_FEDERATION_PORT is set. */
  federation?: Federation;
  /** /metrics of this gateway: the federation listener counts its break-the-glass disclosures here too. */
  metrics: Metrics;
  app: ReturnType<typeof createApp>;
  close(): Promise<void>;
}

/** The database adapter: MongoDB when configured, else the embedded SQLite file in the data dir. */
export function openDatabaseStore(config: GatewayConfig): ResourceStore {
  if (config.mongodb) return new MongoStore(config.mongodb.uri, config.mongodb.database);
  return new SqliteStore(join(config.dataDir, 'vault.sqlite'));
}

/**
 * The vault: the database adapter behind envelope encryption and blind indexes (not yet initialised). With a
 * consortium, it gives Patient versions their link tokens (federation): whatever writes or re-indexes the vault
 * passes it. Asked for at the first Patient write, so it may be loaded after the vault's init().
 */
export function openVault(config: GatewayConfig, consortium?: () => Pick<MemberConsortium, 'patientTokenKey' | 'federation'> | undefined): EncryptedStore {
  return new EncryptedStore(openDatabaseStore(config), MasterKeyring.open(config.masterKey), config.hospitalId, {
    linkTokensOf: consortium && ((patient, at) => {
      const loaded = consortium();
      if (!loaded) throw new Error('the vault wrote a Patient before the consortium was loaded');
      return patientLinkTokens(loaded.patientTokenKey, patient, loaded.federation.linkIdentifierSystems, at);
    }),
  });
}

/** This member's view of its consortium: MEDBLOCK_CONSORTIUM_DIR, or a consortium of one created in the data dir. */
export async function loadConsortium(config: GatewayConfig): Promise<MemberConsortium> {
  const dir = config.consortiumDir ?? join(config.dataDir, 'consortium');
  if (!config.consortiumDir) await ensureLocalConsortium(dir, config.hospitalId);
  return loadMemberConsortium(dir, config.hospitalId);
}

/** The ledger store sits next to the vault: in MongoDB when configured, else its own SQLite file. */
export function openLedgerStore(config: GatewayConfig): LedgerStore {
  if (config.mongodb) return new MongoLedgerStore(config.mongodb.uri, config.mongodb.database);
  return new SqliteLedgerStore(join(config.dataDir, 'ledger.sqlite'));
}

/** Kafka when brokers are configured, else the embedded solo orderer's log in the data dir. */
export async function openOrderer(config: GatewayConfig, channel: string): Promise<Orderer> {
  if (config.kafkaBrokers) {
    try {
      return await KafkaOrderer.connect({ brokers: config.kafkaBrokers, channel, ...config.kafkaReplication, ...config.kafkaSecurity });
    } catch (e) {
      // Name the settings involved, so that the operator knows what to change.
      const advice = e instanceof ChannelReplicationError ? `; ${replicationAdvice(e.available)}` : '';
      throw new Error(`Kafka orderer (MEDBLOCK_KAFKA_BROKERS=${config.kafkaBrokers.join(',')}): ${(e as Error).message}${advice}`, { cause: e });
    }
  }
  return SoloOrderer.open(join(config.dataDir, `orderer-${channel}.sqlite`));
}

function replicationAdvice(replicas: number): string {
  if (replicas === 1) return 'on a single broker set MEDBLOCK_KAFKA_REPLICATION_FACTOR=1 MEDBLOCK_KAFKA_MIN_INSYNC_REPLICAS=1';
  return `set MEDBLOCK_KAFKA_REPLICATION_FACTOR=${replicas} and MEDBLOCK_KAFKA_MIN_INSYNC_REPLICAS to at most ${replicas}`;
}

/** Closers of what a start-up has opened so far, in opening order. */
type Opened = Array<() => Promise<void>>;

/**
 * Runs a start-up that records a closer for everything it opens. If it fails, closes those, last opened
 * first, and rejects with its error (a failing close must not hide it).
 */
async function closingOnFailure<T>(startUp: (opened: Opened) => Promise<T>): Promise<T> {
  const opened: Opened = [];
  try {
    return await startUp(opened);
  } catch (e) {
    for (const close of opened.reverse()) await close().catch(() => {});
    throw e;
  }
}

/**
 * Starts this member's ledger node and its outbox publisher; resolves once the node has caught up with the
 * log. On failure, closes what it had opened and rejects.
 */
export function openLedger(config: GatewayConfig, outbox: ResourceStore, consortium: MemberConsortium): Promise<Ledger> {
  return closingOnFailure((opened) => startLedger(config, outbox, consortium, opened));
}

async function startLedger(config: GatewayConfig, outbox: ResourceStore, consortium: MemberConsortium, opened: Opened): Promise<Ledger> {
  const store = openLedgerStore(config);
  opened.push(() => store.close());
  await store.init();
  const orderer = await openOrderer(config, consortium.channel);
  opened.push(() => orderer.close());
  const { batchTimeoutMs, maxEnvelopeBytes, maxClockSkewMs, ...cutter } = consortium.ledger;
  const signer = consortium.self;
  const member = new LedgerMember({
    channel: consortium.channel,
    signer,
    genesis: genesisMembership(consortium),
    quorum: consortium.quorum,
    orderer,
    store,
    cutter,
    batchTimeoutMs: config.ledgerBatchTimeoutMs ?? batchTimeoutMs,
    maxEnvelopeBytes,
    maxClockSkewMs,
    checkMemberCertificate: memberCertificateCheck(consortium.caCertificatePem),
    log: (event, fields) => log(event.includes('alarm') || event.includes('failed') ? 'error' : 'warn', event, fields),
  });
  opened.push(() => member.stop());
  await member.start();
  await member.caughtUp();
  const publisher = new AnchorPublisher({ outbox, member, ledger: store, signer, maxEnvelopeBytes, log: (event, fields) => log('warn', event, fields) });
  publisher.start();
  const service = new LedgerService(store, member, consortium, publisher);
  return { consortium, store, orderer, member, publisher, service };
}

async function closeLedger(ledger: Ledger): Promise<void> {
  await ledger.publisher.stop();
  await ledger.member.stop();
  await ledger.orderer.close();
  await ledger.store.close();
}

export interface GatewayOptions {
  /**
   * Benchmarks only, never reachable from the CLI or the environment: the same pipeline with the database
   * adapter used directly (plaintext content and index terms) and no ledger, to measure what encryption
   * and anchoring cost.
   */
  plaintextVaultForBenchmark?: boolean;
}

/** Opens and starts everything the configuration names; on failure, closes what it had opened and rejects. */
export function createGateway(config: GatewayConfig, options: GatewayOptions = {}): Promise<Gateway> {
  return closingOnFailure((opened) => assembleGateway(config, options, opened));
}

/**
 * Production refuses keys beside the data (production-checks.ts); dev mode with a production engine starts,
 * and says what production would refuse.
 */
function checkKeyPlacement(config: GatewayConfig): void {
  const problems = productionProblems(config);
  if (problems.length === 0) return;
  if (gatewayMode(config) === 'production') throw productionRefusal(problems);
  if (config.mongodb || config.kafkaBrokers) log('warn', 'dev_mode', { refusedInProduction: problems.length });
}

async function assembleGateway(config: GatewayConfig, options: GatewayOptions, opened: Opened): Promise<Gateway> {
  checkKeyPlacement(config);
  const baseline = options.plaintextVaultForBenchmark === true;
  // The vault first, so that a vault of another hospital or master key is refused for that reason.
  let consortium: MemberConsortium | undefined;
  const store = baseline ? openDatabaseStore(config) : openVault(config, () => consortium);
  opened.push(() => store.close());
  await store.init();
  initValidation();
  consortium = baseline ? undefined : await loadConsortium(config);
  const ledger = consortium ? await openLedger(config, store, consortium) : undefined;
  if (ledger) opened.push(() => closeLedger(ledger));
  const checker = createVersionChecker(config.workers);
  opened.push(() => checker.close());
  const repo = new FhirRepository(store, checker, {
    afterCommit: ledger ? () => ledger.publisher.notify() : undefined,
    erasure: { approval: config.eraseApproval ?? 'none', hospitalId: config.hospitalId },
  });
  const issuer = await loadDevIssuer(config.dataDir);
  const accessLog = baseline ? undefined : new AccessLog(repo, config.hospitalId, (e) => log('error', 'access_log_write_failed', { error: e.name }));
  const metrics = new Metrics();
  const federated = ledger
    ? await openFederatedRecord({
      consortium: ledger.consortium, ledger, repo, linkedPatients: repo, accessLog, metrics,
      listen: config.federation, timeoutMs: config.federationTimeoutMs,
    })
    : undefined;
  const federation = federated?.federation;
  if (federation) opened.push(() => federation.close());
  const app = createApp({
    metrics,
    repo,
    issuer,
    baseUrl: config.baseUrl,
    listen: { host: config.host, port: config.port },
    trustedProxies: config.trustedProxies,
    maxBodyBytes: config.maxBodyBytes,
    accessLog,
    ledger: ledger?.service,
    consent: consortium && { member: consortium.self.memberId, defaultPolicy: consortium.federation.defaultConsent },
    federation: federated?.record,
  });
  const close = async () => {
    await federation?.close();
    await accessLog?.drain();
    if (ledger) await closeLedger(ledger);
    await checker.close();
    await store.close();
  };
  return { config, store, repo, issuer, ledger, accessLog, federation, metrics, app, close };
}

/** Listens on the configured host and port; resolves with the server once it accepts connections. */
export function listen(gateway: Gateway): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = gateway.app.listen(gateway.config.port, gateway.config.host, (err?: Error) => (err ? reject(err) : resolve(server)));
  });
}
