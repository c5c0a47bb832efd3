/**
 * `medblock start` as a supervisor (systemd, Kubernetes, compose) sees it: a fatal start-up error ends the
 * process at once with a non-zero exit and one line on stderr that says what to change.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { SoloOrderer } from '../../src/adapters/solo/solo-orderer.ts';
import { SqliteLedgerStore } from '../../src/adapters/sqlite/sqlite-ledger-store.ts';
import { LedgerMember } from '../../src/ledger/member.ts';
import { Membership } from '../../src/ledger/membership.ts';
import { encodeChannelMessage, type Orderer } from '../../src/ledger/orderer.ts';
import { describeWithEngine } from '../support/engines.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'medblock.js');
const work = mkdtempSync(join(tmpdir(), 'medblock-startup-'));
after(() => rmSync(work, { recursive: true, force: true }));
// Each case names its own engines; the replication settings are left at their production defaults.
const {
  MEDBLOCK_MONGODB_URI: _m, MEDBLOCK_KAFKA_BROKERS: _k, MEDBLOCK_KAFKA_REPLICATION_FACTOR: _r, MEDBLOCK_KAFKA_MIN_INSYNC_REPLICAS: _i,
  ...baseEnv
} = process.env;

interface Exit {
  code: number | null;
  stderr: string;
}

/**
 * Runs `medblock start` until it exits. One still running after `limitMs` fails the test: before the fix,
 * a failed start kept running (stores and worker threads open) without serving. The limit is generous
 * because start-up takes seconds on a loaded machine.
 */
function startUntilExit(env: NodeJS.ProcessEnv, limitMs = 90_000): Promise<Exit> {
  const child = spawn(process.execPath, [BIN, 'start'], { env: { ...baseEnv, MEDBLOCK_LOG: 'off', ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`medblock start still running after ${limitMs} ms; stderr: ${stderr}`));
    }, limitMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
}

/** The failure as the operator reads it: exactly one line, without a stack. */
function fatalLine(exit: Exit): string {
  assert.equal(exit.code, 1, exit.stderr);
  const lines = exit.stderr.split('\n').filter(Boolean);
  assert.equal(lines.length, 1, exit.stderr);
  assert.doesNotMatch(exit.stderr, /^\s+at /m);
  return lines[0]!;
}

describe('medblock start: fatal start-up errors', () => {
  it('a port already in use ends the process at once with exit 1, naming the address and HOST/PORT', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const { port } = taken.address() as { port: number };
    try {
      const exit = await startUntilExit({ MEDBLOCK_DATA_DIR: join(work, 'port'), HOST: '127.0.0.1', PORT: String(port) });
      assert.equal(fatalLine(exit), `medblock: start-up failed: cannot listen on 127.0.0.1:${port} (HOST, PORT): ` +
        `listen EADDRINUSE: address already in use 127.0.0.1:${port}`);
    } finally {
      taken.close();
    }
  });

  it('a data dir that is a file ends the process with exit 1 and the reason; MEDBLOCK_LOG=debug adds the stack', async () => {
    const file = join(work, 'not-a-dir');
    writeFileSync(file, '');
    const exit = await startUntilExit({ MEDBLOCK_DATA_DIR: file, PORT: '0' });
    assert.match(fatalLine(exit), /^medblock: start-up failed: ENOTDIR: not a directory, mkdir '.*not-a-dir\/keys'$/);

    const debug = await startUntilExit({ MEDBLOCK_DATA_DIR: file, PORT: '0', MEDBLOCK_LOG: 'debug' });
    assert.equal(debug.code, 1);
    assert.match(debug.stderr, /^medblock: start-up failed: ENOTDIR.*\n/);
    assert.match(debug.stderr, /^\s+at .*gateway\.ts/m);
  });
});

describe('ledger member start-up', () => {
  it('caughtUp() rejects when the member fails while catching up, instead of waiting forever', { timeout: 30_000 }, async () => {
    const dir = mkdtempSync(join(work, 'member-'));
    const solo = SoloOrderer.open(join(dir, 'orderer.sqlite'));
    const store = new SqliteLedgerStore(join(dir, 'ledger.sqlite'));
    await store.init();
    try {
      await solo.append([encodeChannelMessage({ kind: 'timeToCut', blockNumber: 0 })]);
      // The log holds a record to catch up on, and delivering it fails (as an unreadable log or a broken store would).
      const orderer: Orderer = {
        kind: solo.kind,
        append: (messages) => solo.append(messages),
        appendControl: (messages) => solo.appendControl(messages),
        endOffset: () => solo.endOffset(),
        close: () => solo.close(),
        subscribe: (fromOffset) => solo.subscribe(fromOffset, () => Promise.reject(new Error('injected: the record cannot be delivered'))),
      };
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const member = new LedgerMember({
        channel: 'startup', signer: { memberId: 'h1', privateKey }, genesis: new Membership({ h1: { publicKey } }), orderer, store,
        batchTimeoutMs: 50, cutter: { maxMessageCount: 4, preferredMaxBytes: 64 * 1024, absoluteMaxBytes: 256 * 1024 },
      });
      await member.start();
      await assert.rejects(member.caughtUp(), /injected: the record cannot be delivered/);
      assert.equal(member.status().failure, 'injected: the record cannot be delivered');
      await assert.rejects(member.caughtUp(), /injected/); // asked again after the failure
      await member.stop();
    } finally {
      await solo.close();
      await store.close();
    }
  });
});

describeWithEngine('kafka', 'medblock start on a single Kafka broker', (brokers) => {
  const channel = `startup-rf-${randomUUID().slice(0, 8)}`;
  const consortiumDir = join(work, 'consortium');
  const env = {
    MEDBLOCK_KAFKA_BROKERS: brokers, MEDBLOCK_CONSORTIUM_DIR: consortiumDir, MEDBLOCK_HOSPITAL_ID: 'h1',
    MEDBLOCK_DATA_DIR: join(work, 'h1'), HOST: '127.0.0.1', PORT: '0',
  };
  const singleBroker = { MEDBLOCK_KAFKA_REPLICATION_FACTOR: '1', MEDBLOCK_KAFKA_MIN_INSYNC_REPLICAS: '1' };
  const advice = 'on a single broker set MEDBLOCK_KAFKA_REPLICATION_FACTOR=1 MEDBLOCK_KAFKA_MIN_INSYNC_REPLICAS=1';

  it('with the default replication factor (3) exits 1 at once and names the two variables to set', async () => {
    const init = spawnSync(process.execPath, [BIN, 'consortium', 'init', '--members', 'h1', '--out', consortiumDir, '--channel', channel],
      { env: baseEnv, encoding: 'utf8' });
    assert.equal(init.status, 0, init.stderr);
    const exit = await startUntilExit(env);
    assert.equal(fatalLine(exit), `medblock: start-up failed: Kafka orderer (MEDBLOCK_KAFKA_BROKERS=${brokers}): creating Kafka topic ` +
      `"${channel}" (1 partition, replication factor 3) failed: Replication-factor is invalid (the cluster has 1 broker); ${advice}`);
  });

  it('starts with the variables set; without them again, the existing one-replica topic is refused with the same advice', async () => {
    const child = spawn(process.execPath, [BIN, 'start'], { env: { ...baseEnv, MEDBLOCK_LOG: 'on', ...env, ...singleBroker }, stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    await new Promise<void>((resolve, reject) => {
      child.stderr.on('data', (d) => {
        log += d;
        if (log.includes('"event":"started"')) resolve();
      });
      child.on('exit', (code) => reject(new Error(`exited ${code}: ${log}`)));
    });
    const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    child.kill('SIGTERM');
    assert.deepEqual(await exited, { code: 0, signal: null }, log);

    const line = fatalLine(await startUntilExit(env));
    assert.match(line, new RegExp(`^medblock: start-up failed: Kafka orderer \\(MEDBLOCK_KAFKA_BROKERS=[^)]+\\): Kafka topic "${channel}" cannot be used as a ledger channel: `));
    assert.match(line, /replication factor is 1, expected 3; min\.insync\.replicas is "1", expected "2"/);
    assert.ok(line.endsWith(`; ${advice}`), line);
  });
});
