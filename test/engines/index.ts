// Real engines for the tests: Apache Kafka (KRaft, jars from Maven Central) and
// FerretDB 1.x on SQLite (built from the Go module proxy). No Docker needed.
// See docs/engines.md.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, realpathSync, rmSync, statSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createTestCa, issueServerCertificate } from './tls.ts';

export const KAFKA_VERSION = '4.1.2';
/** The log4j2 version kafka-server 4.1.2 depends on; the slf4j binding must match it. */
const LOG4J_VERSION = '2.25.3';
/** Must match test/engines/ferretdb/go.mod. */
export const FERRETDB_VERSION = '1.24.2';
const DEPENDENCY_PLUGIN = 'org.apache.maven.plugins:maven-dependency-plugin:3.8.1';

export const cacheDir =
  process.env.MEDBLOCK_ENGINES_CACHE || path.join(os.homedir(), '.cache', 'medblock-engines');
const ferretSrc = path.join(path.dirname(fileURLToPath(import.meta.url)), 'ferretdb');

export interface RunningEngines {
  /** `mongodb://127.0.0.1:<port>/`, or '' when MongoDB was not started. */
  mongodbUri: string;
  /** `127.0.0.1:<port>`, or '' when Kafka was not started. */
  kafkaBrokers: string;
  logDir: string;
  /** Stops the engines; logs are kept when `keepLogs` (default: the start option) or after an unclean stop. */
  stop(keepLogs?: boolean): Promise<void>;
}

export interface StartOptions {
  kafka?: boolean;
  mongodb?: boolean;
  keepLogs?: boolean;
  onProgress?: (line: string) => void;
}

export class EnginesError extends Error {
  override name = 'EnginesError';
}

type Progress = (line: string) => void;

// ---------------------------------------------------------------- provisioning

export async function provisionEngines(
  opts: { onProgress?: Progress; kafka?: boolean; mongodb?: boolean } = {},
): Promise<void> {
  const progress = opts.onProgress ?? (() => {});
  requireTool('setpriv', 'util-linux (apt-get install util-linux)');
  // In parallel: the Kafka download waits on the network, the FerretDB build on the CPU.
  const results = await Promise.allSettled([
    opts.kafka !== false && provisionKafka(progress),
    opts.mongodb !== false && provisionFerretDB(progress),
  ]);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}

function kafkaHome(): string {
  return path.join(cacheDir, `kafka-${KAFKA_VERSION}`);
}

/** The java that runs Kafka: $JAVA_HOME/bin/java, else the one on PATH. */
function javaCmd(): string {
  return process.env.JAVA_HOME ? path.join(process.env.JAVA_HOME, 'bin', 'java') : 'java';
}

/** Kafka's class-data-sharing archive, keyed by the JVM that recorded it. */
function cdsArchive(): string {
  const java = javaCmd() === 'java' ? onPath('java') : javaCmd();
  const key = createHash('sha256').update(java ? realpathSync(java) : '').digest('hex').slice(0, 12);
  return path.join(kafkaHome(), `cds-${key}.jsa`);
}

function ferretBinary(): string {
  // Keyed by version and by the wrapper's sources, so editing them rebuilds.
  const hash = createHash('sha256');
  for (const f of ['go.mod', 'go.sum', 'main.go']) hash.update(readFileSync(path.join(ferretSrc, f)));
  const key = `${FERRETDB_VERSION}-${hash.digest('hex').slice(0, 12)}`;
  return path.join(cacheDir, `ferretdb-${key}`, 'ferretdb');
}

async function provisionKafka(progress: Progress): Promise<void> {
  requireJava();
  await buildOnce(kafkaHome(), progress, async (tmp, log) => {
    requireTool('mvn', 'Maven (apt-get install maven)');
    const dep = (g: string, a: string, v: string) =>
      `<dependency><groupId>${g}</groupId><artifactId>${a}</artifactId><version>${v}</version></dependency>`;
    const log4j = (a: string) => dep('org.apache.logging.log4j', a, LOG4J_VERSION);
    await fs.mkdir(tmp);
    await fs.writeFile(
      path.join(tmp, 'pom.xml'),
      `<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
<groupId>medblock.local</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
<dependencies>
${dep('org.apache.kafka', 'kafka_2.13', KAFKA_VERSION)}
${log4j('log4j-api')}
${log4j('log4j-core')}
${log4j('log4j-slf4j-impl')}
</dependencies></project>\n`,
    );
    progress(`kafka: fetching kafka_2.13 ${KAFKA_VERSION} and its jars with Maven`);
    await run('mvn', ['-B', '-ntp', '-f', 'pom.xml', `${DEPENDENCY_PLUGIN}:copy-dependencies`,
      '-DincludeScope=runtime', '-DoutputDirectory=libs'], { cwd: tmp, log, what: 'Kafka download (mvn)' });
  });
  // One training start records the classes Kafka loads; later JVMs map them and start ~40% faster.
  await buildOnce(cdsArchive(), progress, async (tmp) => {
    progress('kafka: one training start to record a class-data-sharing archive');
    const runDir = await fs.mkdtemp(path.join(os.tmpdir(), 'medblock-engines-cds-'));
    const pids: { kafka?: number } = {};
    let clean = false;
    try {
      await startKafka(runDir, false, pids, () => {}, [`-XX:ArchiveClassesAtExit=${tmp}`]);
    } finally {
      if (pids.kafka !== undefined) clean = await stopProcesses([pids.kafka]);
      await removeRunDir(runDir, !clean);
    }
    // The archive is written while the JVM exits; one cut short by SIGKILL is unusable.
    if (!clean || !existsSync(tmp)) throw new EnginesError(`Kafka wrote no CDS archive (${tmp})`);
  });
}

async function provisionFerretDB(progress: Progress): Promise<void> {
  const bin = ferretBinary();
  await buildOnce(path.dirname(bin), progress, async (tmp, log) => {
    requireTool('go', 'Go 1.24 or newer');
    progress(`ferretdb: building FerretDB ${FERRETDB_VERSION} (SQLite) with Go; the first build takes minutes`);
    await run('go', ['build', '-trimpath', '-o', path.join(tmp, 'ferretdb'), '.'], {
      cwd: ferretSrc, log, what: 'FerretDB build (go build)', env: { ...process.env, CGO_ENABLED: '0' },
    });
  });
}

/**
 * Makes `target` (a file or directory) exist exactly once: `build` creates it at a temporary
 * sibling path that is renamed into place only when complete, so a build killed midway is never
 * taken for a finished one.
 */
async function buildOnce(target: string, progress: Progress,
  build: (tmp: string, log: string) => Promise<void>): Promise<void> {
  if (existsSync(target)) return;
  const parent = path.dirname(target);
  const prefix = `${path.basename(target)}.tmp-`;
  await fs.mkdir(path.join(cacheDir, 'logs'), { recursive: true });
  await fs.mkdir(parent, { recursive: true });
  // Remove leftovers of builds whose process is gone.
  for (const entry of await fs.readdir(parent)) {
    const pid = entry.startsWith(prefix) ? Number(entry.slice(prefix.length).split('-')[0]) : 0;
    if (pid && !isAlive(pid)) await fs.rm(path.join(parent, entry), { recursive: true, force: true });
  }
  const tmp = path.join(parent, `${prefix}${process.pid}-${randomBytes(4).toString('hex')}`);
  const log = path.join(cacheDir, 'logs', `provision-${path.basename(target)}.log`);
  await fs.writeFile(log, '');
  const t0 = Date.now();
  try {
    await build(tmp, log);
    await fs.rename(tmp, target).catch((err) => {
      if (!existsSync(target)) throw err; // else a concurrent run finished first
    });
    progress(`provisioned ${target} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
}

function onPath(cmd: string): string | undefined {
  return (process.env.PATH ?? '').split(path.delimiter)
    .map((d) => path.join(d, cmd)).find((f) => path.isAbsolute(f) && existsSync(f));
}

function requireJava(): void {
  if (!process.env.JAVA_HOME) return requireTool('java', 'a JDK 17 or newer (apt-get install openjdk-17-jdk-headless)');
  if (!existsSync(javaCmd())) throw new EnginesError(`JAVA_HOME=${process.env.JAVA_HOME} has no bin/java`);
}

function requireTool(cmd: string, what: string): void {
  if (!onPath(cmd)) throw new EnginesError(`\`${cmd}\` not found on PATH: install ${what}`);
}

async function run(cmd: string, args: string[],
  o: { cwd: string; log: string; what: string; env?: NodeJS.ProcessEnv }): Promise<void> {
  const fd = openSync(o.log, 'a');
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', cmd, ...args],
    { cwd: o.cwd, env: o.env, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', resolve);
  });
  if (code !== 0) {
    throw new EnginesError(`${o.what} failed: \`${cmd} ${args.join(' ')}\` exited with ${code}. ` +
      `Log: ${o.log}\n${tail(o.log)}`);
  }
}

function tail(file: string, lines = 25): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

// -------------------------------------------------------------------- running

/** Starts the engines as children that die with this process (see docs/engines.md). */
export async function startEngines(opts: StartOptions = {}): Promise<RunningEngines> {
  return (await launchEngines({ ...opts, detached: false })).engines;
}

/**
 * Starts the engines. With `detached`, they outlive this process (used by cli.ts) and their pids
 * are returned for a later {@link stopProcesses}.
 */
export async function launchEngines(opts: StartOptions & { detached: boolean }) {
  const progress = opts.onProgress ?? (() => {});
  const wantKafka = opts.kafka !== false;
  const wantMongo = opts.mongodb !== false;
  await provisionEngines({ onProgress: progress, kafka: wantKafka, mongodb: wantMongo });

  await removeStaleRunDirs();
  const runDir = await fs.mkdtemp(path.join(os.tmpdir(), 'medblock-engines-'));
  const logDir = path.join(runDir, 'logs');
  await fs.mkdir(logDir);
  // Lets a later run remove this one's data if this process gets killed (detached runs: see cli.ts).
  if (!opts.detached) await fs.writeFile(path.join(runDir, 'owner.pid'), `${process.pid}\n`);
  const pids: { kafka?: number; ferretdb?: number } = {};
  const allPids = () => [pids.kafka, pids.ferretdb].filter((p): p is number => p !== undefined);
  let stopped = false;
  const killOnExit = () => { // this process exits without stop(): take the engines along
    for (const pid of allPids()) signalGroup(pid, 'SIGKILL');
    if (!opts.keepLogs) rmSync(runDir, { recursive: true, force: true });
  };
  const stop = async (keepLogs = Boolean(opts.keepLogs)): Promise<void> => {
    if (stopped) return;
    stopped = true;
    process.off('exit', killOnExit);
    const clean = await stopProcesses(allPids());
    await removeRunDir(runDir, keepLogs || !clean);
  };
  if (!opts.detached) process.on('exit', killOnExit);

  const [mongo, kafka] = await Promise.allSettled([
    wantMongo ? startFerretDB(runDir, opts.detached, pids, progress) : '',
    wantKafka ? startKafka(runDir, opts.detached, pids, progress) : '',
  ]);
  if (mongo.status === 'rejected' || kafka.status === 'rejected') {
    stopped = true;
    process.off('exit', killOnExit);
    await stopProcesses(allPids());
    await removeRunDir(runDir, true);
    throw mongo.status === 'rejected' ? mongo.reason : (kafka as PromiseRejectedResult).reason;
  }
  const engines: RunningEngines = { mongodbUri: mongo.value, kafkaBrokers: kafka.value, logDir, stop };
  return { engines, pids, runDir };
}

async function startFerretDB(runDir: string, detached: boolean, pids: { ferretdb?: number },
  progress: Progress): Promise<string> {
  const t0 = Date.now();
  const log = path.join(runDir, 'logs', 'ferretdb.log');
  const child = spawnEngine(ferretBinary(), ['-listen-addr', '127.0.0.1:0',
    '-sqlite-dir', path.join(runDir, 'ferretdb-data'), '-log-level', 'info'], log, detached);
  pids.ferretdb = child.pid;
  const m = await waitForLog(child, log, /FerretDB ready (mongodb:\/\/\S+)/, 30_000, 'FerretDB');
  progress(`ferretdb: ready in ${((Date.now() - t0) / 1000).toFixed(1)} s at ${m[1]}`);
  return m[1]!;
}

async function startKafka(runDir: string, detached: boolean, pids: { kafka?: number },
  progress: Progress, brokerJvm: string[] = []): Promise<string> {
  const t0 = Date.now();
  const log = path.join(runDir, 'logs', 'kafka.log');
  const jvm = await kafkaJvm(runDir);

  // Free ports are picked here and bound by Kafka later; retry if another process took one meanwhile.
  for (let attempt = 1; ; attempt++) {
    const [port, controllerPort] = await freePorts(2);
    const props = await formatKafka(runDir, jvm, { port: port!, controllerPort: controllerPort!,
      dataDir: path.join(runDir, `kafka-data-${attempt}`) });
    const child = spawnEngine(javaCmd(),
      ['-Xms128m', '-Xmx512m', ...jvm, ...brokerJvm, 'kafka.Kafka', props], log, detached);
    pids.kafka = child.pid;
    try {
      await waitForLog(child, log, /Kafka Server started/, 120_000, 'Kafka');
      progress(`kafka: ready in ${((Date.now() - t0) / 1000).toFixed(1)} s at 127.0.0.1:${port}`);
      return `127.0.0.1:${port}`;
    } catch (err) {
      if (attempt >= 3 || !/Address already in use/.test(tail(log, 200))) throw err;
      await stopProcesses([child.pid]);
      progress(`kafka: port taken, retrying (${attempt})`);
    }
  }
}

/** Writes the run's log4j2 config and returns the JVM options (classpath included) for Kafka's tools. */
async function kafkaJvm(runDir: string): Promise<string[]> {
  const log4j = path.join(runDir, 'kafka-log4j2.properties');
  await fs.writeFile(log4j, [
    'appender.out.type=Console', 'appender.out.name=OUT', 'appender.out.layout.type=PatternLayout',
    'appender.out.layout.pattern=[%d] %p %m (%c)%n', 'rootLogger.level=INFO', 'rootLogger.appenderRef.out.ref=OUT',
    // The broker's full config dump is long and rarely useful.
    'logger.config.name=org.apache.kafka.common.config.AbstractConfig', 'logger.config.level=WARN', '',
  ].join('\n'));
  await fs.mkdir(path.join(runDir, 'logs'), { recursive: true });
  const cds = cdsArchive();
  // C1 only (TieredStopAtLevel=1) starts much faster; tests never run long enough to miss C2.
  return ['-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1', '-XX:-UsePerfData', '-Djava.awt.headless=true',
    '-Dlog4j2.shutdownHookEnabled=false', // log Kafka's own shutdown to the end
    ...(existsSync(cds) ? [`-XX:SharedArchiveFile=${cds}`] : []),
    `-Dlog4j2.configurationFile=${log4j}`, '-cp', path.join(kafkaHome(), 'libs', '*')];
}

/**
 * Writes `kafka-server.properties` for a one-node KRaft cluster on these ports and data dir, and formats
 * the data dir (the controller's port goes into its bootstrap checkpoint). Returns the properties path.
 */
async function formatKafka(runDir: string, jvm: string[],
  at: { port: number; controllerPort: number; dataDir: string; saslSslPort?: number }, extraProperties: string[] = []): Promise<string> {
  const props = path.join(runDir, 'kafka-server.properties');
  const saslSsl = at.saslSslPort === undefined ? '' : `,SASL_SSL://127.0.0.1:${at.saslSslPort}`;
  await fs.writeFile(props, [
    'process.roles=broker,controller', 'node.id=1',
    `controller.quorum.bootstrap.servers=127.0.0.1:${at.controllerPort}`,
    `listeners=PLAINTEXT://127.0.0.1:${at.port},CONTROLLER://127.0.0.1:${at.controllerPort}${saslSsl}`,
    `advertised.listeners=PLAINTEXT://127.0.0.1:${at.port},CONTROLLER://127.0.0.1:${at.controllerPort}${saslSsl}`,
    'inter.broker.listener.name=PLAINTEXT', 'controller.listener.names=CONTROLLER',
    `listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT${saslSsl ? ',SASL_SSL:SASL_SSL' : ''}`,
    `log.dirs=${at.dataDir}`, 'num.partitions=1',
    'offsets.topic.replication.factor=1', 'offsets.topic.num.partitions=1',
    'transaction.state.log.replication.factor=1', 'transaction.state.log.min.isr=1',
    'transaction.state.log.num.partitions=1',
    'share.coordinator.state.topic.replication.factor=1', 'share.coordinator.state.topic.min.isr=1',
    'group.initial.rebalance.delay.ms=0', ...extraProperties, '',
  ].join('\n'));
  await run(javaCmd(), ['-Xmx256m', ...jvm, 'kafka.tools.StorageTool', 'format', '--standalone',
    '--cluster-id', clusterId(), '--config', props], { cwd: runDir, log: path.join(runDir, 'logs', 'kafka.log'),
    what: 'Kafka storage format' });
  return props;
}

// ------------------------------------------------------ a broker a test can crash

/** A Kafka broker of its own for one test, which it can SIGKILL and restart on the same data and ports. */
export interface KafkaBroker {
  /** `127.0.0.1:<port>`, the same across restarts. */
  brokers: string;
  dataDir: string;
  /** The broker's console log, appended to across restarts. */
  logFile: string;
  /** With the `saslSsl` option: the SASL_SSL listener (SASL PLAIN over TLS) and the CA that issued its certificate. */
  saslSsl?: { brokers: string; caPem: string };
  /** SIGKILLs the broker, as a crash would (no shutdown, nothing flushed by Kafka), and waits until it is gone. */
  kill(): Promise<void>;
  /** Starts it again on the same data dir and ports, without formatting, and waits until it serves. */
  restart(): Promise<void>;
  /** Stops it (SIGTERM, SIGKILL after 15 s) and removes its directory (logs kept with `keepLogs` or after a crash). */
  stop(): Promise<void>;
}

/**
 * Starts a dedicated one-node Kafka (provisioned like {@link startEngines}) that dies with this process.
 * Throws an {@link EnginesError} when the toolchain is missing or Kafka does not start.
 */
/**
 * After a SIGKILL the restarted node's controller still holds the dead broker's registration and
 * refuses the new one (DUPLICATE_BROKER_REGISTRATION) until its session expires: 9 s by default.
 */
const CRASHABLE_BROKER = ['broker.heartbeat.interval.ms=500', 'broker.session.timeout.ms=2000'];

/**
 * A SASL_SSL listener beside the plaintext one (which stays for the broker's own use): TLS with a
 * certificate for 127.0.0.1 from a throwaway CA, and SASL PLAIN with these users (name → password).
 */
export interface SaslSslListener {
  users: Record<string, string>;
}

/** Broker properties of the SASL_SSL listener: a PEM key store (key + certificate) and PLAIN users in its JAAS config. */
async function saslSslProperties(runDir: string, listener: SaslSslListener): Promise<{ properties: string[]; caPem: string }> {
  const ca = createTestCa();
  const server = issueServerCertificate(ca);
  const keystore = path.join(runDir, 'broker-keystore.pem');
  await fs.writeFile(keystore, `${server.keyPem}${server.certPem}`, { mode: 0o600 });
  const users = Object.entries(listener.users).map(([name, password]) => `user_${name}="${password}"`).join(' ');
  return {
    caPem: ca.certPem,
    properties: [
      'listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN',
      `listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required ${users};`,
      'listener.name.sasl_ssl.ssl.keystore.type=PEM', `listener.name.sasl_ssl.ssl.keystore.location=${keystore}`,
    ],
  };
}

export async function startKafkaBroker(opts: { keepLogs?: boolean; onProgress?: Progress; saslSsl?: SaslSslListener } = {}): Promise<KafkaBroker> {
  const progress = opts.onProgress ?? (() => {});
  await provisionEngines({ onProgress: progress, kafka: true, mongodb: false });
  const runDir = await fs.mkdtemp(path.join(os.tmpdir(), 'medblock-engines-'));
  await fs.writeFile(path.join(runDir, 'owner.pid'), `${process.pid}\n`);
  const logFile = path.join(runDir, 'logs', 'kafka.log');
  let pid: number | undefined;
  const killOnExit = () => { // this process exits without stop(): take the broker along
    if (pid !== undefined) signalGroup(pid, 'SIGKILL');
    if (!opts.keepLogs) rmSync(runDir, { recursive: true, force: true });
  };
  process.on('exit', killOnExit);

  /** Starts Kafka on `props`; rejects with "Address already in use" in the log if a port was taken. */
  const launch = async (jvm: string[], props: string): Promise<void> => {
    const from = existsSync(logFile) ? statSync(logFile).size : 0; // earlier starts logged "started" too
    const child = spawnEngine(javaCmd(), ['-Xms128m', '-Xmx512m', ...jvm, 'kafka.Kafka', props], logFile, false);
    pid = child.pid;
    try {
      await waitForLog(child, logFile, /Kafka Server started/, 120_000, 'Kafka', from);
    } catch (err) {
      await stopProcesses([child.pid]);
      pid = undefined;
      throw err;
    }
  };
  const portTaken = () => /Address already in use/.test(tail(logFile, 200));

  try {
    const t0 = Date.now();
    const jvm = await kafkaJvm(runDir);
    const tls = opts.saslSsl ? await saslSslProperties(runDir, opts.saslSsl) : undefined;
    let props: string, port: number, saslSslPort: number | undefined, dataDir: string;
    for (let attempt = 1; ; attempt++) { // as in startKafka: new ports if one was taken meanwhile
      const [p, controllerPort, sasl] = await freePorts(tls ? 3 : 2);
      port = p!;
      saslSslPort = tls ? sasl : undefined;
      dataDir = path.join(runDir, `kafka-data-${attempt}`);
      props = await formatKafka(runDir, jvm, { port, controllerPort: controllerPort!, dataDir, saslSslPort }, [...CRASHABLE_BROKER, ...(tls?.properties ?? [])]);
      try {
        await launch(jvm, props);
        break;
      } catch (err) {
        if (attempt >= 3 || !portTaken()) throw err;
      }
    }
    progress(`kafka (dedicated): ready in ${((Date.now() - t0) / 1000).toFixed(1)} s at 127.0.0.1:${port}`);
    return {
      brokers: `127.0.0.1:${port}`, dataDir, logFile,
      saslSsl: tls && { brokers: `127.0.0.1:${saslSslPort}`, caPem: tls.caPem },
      async kill() {
        if (pid === undefined) return;
        signalGroup(pid, 'SIGKILL');
        while (isAlive(pid)) await sleep(20);
        pid = undefined;
      },
      async restart() {
        if (pid !== undefined) throw new EnginesError('the dedicated Kafka broker is still running');
        for (let attempt = 1; ; attempt++) { // the same ports are needed: wait for them instead
          try {
            return await launch(jvm, props);
          } catch (err) {
            if (attempt >= 3 || !portTaken()) throw err;
            await sleep(1_000);
          }
        }
      },
      async stop() {
        process.off('exit', killOnExit);
        const clean = pid === undefined || await stopProcesses([pid]);
        pid = undefined;
        await removeRunDir(runDir, Boolean(opts.keepLogs) || !clean);
      },
    };
  } catch (err) {
    process.off('exit', killOnExit);
    if (pid !== undefined) await stopProcesses([pid]);
    await removeRunDir(runDir, true);
    throw err;
  }
}

/** Removes the run dirs of attached runs whose process was killed before it could clean up. */
async function removeStaleRunDirs(): Promise<void> {
  for (const entry of await fs.readdir(os.tmpdir())) {
    if (!entry.startsWith('medblock-engines-')) continue;
    const dir = path.join(os.tmpdir(), entry);
    const owner = Number(await fs.readFile(path.join(dir, 'owner.pid'), 'utf8').catch(() => '0'));
    if (owner && !isAlive(owner)) await fs.rm(dir, { recursive: true, force: true });
  }
}

/**
 * A random KRaft cluster id: 16 bytes, URL-safe base64 without padding. The top bit of the first byte is
 * cleared so the id never starts with '-' (or '_'): StorageTool's argument parser would take `-…` for an
 * option and fail the format (seen in CI, about one run in 64 brokers).
 */
function clusterId(): string {
  const bytes = randomBytes(16);
  bytes[0] &= 0x7f;
  return bytes.toString('base64url');
}

/** `n` ports free on 127.0.0.1 right now (the test gateways and engines take them next). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: n }, () => new Promise<net.Server>((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => resolve(s));
  })));
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}

interface EngineChild {
  pid: number;
  exit: Promise<number | null>;
}

/**
 * Spawns an engine in its own process group, output appended to `log`.
 * Attached engines run under `setpriv --pdeathsig KILL`, so the kernel kills them when this
 * process dies, however it dies. Detached ones are left running after this process exits.
 */
function spawnEngine(cmd: string, args: string[], log: string, detached: boolean): EngineChild {
  const fd = openSync(log, 'a');
  const child = detached
    ? spawn(cmd, args, { detached: true, stdio: ['ignore', fd, fd] })
    : spawn('setpriv', ['--pdeathsig', 'KILL', '--', cmd, ...args], { detached: true, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  if (child.pid === undefined) throw new EnginesError(`could not start ${cmd}; log: ${log}`);
  if (detached) child.unref();
  const exit = new Promise<number | null>((resolve) => {
    child.on('error', () => resolve(-1));
    child.on('exit', (code) => resolve(code));
  });
  return { pid: child.pid, exit };
}

/** Waits until `ready` appears in `log` after byte `from` (earlier starts may have written it before). */
async function waitForLog(child: EngineChild, log: string, ready: RegExp, timeoutMs: number,
  name: string, from = 0): Promise<RegExpMatchArray> {
  let exited: number | null | undefined;
  void child.exit.then((code) => { exited = code; });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = existsSync(log) ? readFileSync(log).subarray(from).toString('utf8').match(ready) : null;
    if (m) return m;
    if (exited !== undefined || Date.now() > deadline) {
      const why = exited !== undefined ? `exited with code ${exited}` : `not ready after ${timeoutMs / 1000} s`;
      throw new EnginesError(`${name} ${why}. Log: ${log}\n${tail(log)}`);
    }
    await sleep(100);
  }
}

// ------------------------------------------------------------------- stopping

/**
 * SIGTERM to each process group, SIGKILL after `graceMs`, then waits until all are gone.
 * Resolves to true when every process was running and exited on SIGTERM (a clean stop).
 */
export async function stopProcesses(pids: number[], graceMs = 15_000): Promise<boolean> {
  let clean = pids.every(isAlive);
  for (const pid of pids) signalGroup(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (pids.some(isAlive) && Date.now() < deadline) await sleep(100);
  for (const pid of pids.filter(isAlive)) {
    clean = false;
    signalGroup(pid, 'SIGKILL');
  }
  while (pids.some(isAlive)) await sleep(50);
  return clean;
}

export async function removeRunDir(runDir: string, keepLogs: boolean): Promise<void> {
  if (!keepLogs) return fs.rm(runDir, { recursive: true, force: true });
  for (const entry of await fs.readdir(runDir).catch(() => [] as string[])) {
    if (entry !== 'logs') await fs.rm(path.join(runDir, entry), { recursive: true, force: true });
  }
  process.stderr.write(`engines: logs kept in ${path.join(runDir, 'logs')}\n`);
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

/** True while `pid` runs (a zombie counts as gone). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
