/**
 * Keys away from the data they protect (docs/security.md, "Key placement"): a production gateway refuses
 * a master key inside MEDBLOCK_DATA_DIR and the consortium CA's private key; every file the gateway or
 * `medblock consortium init` writes is 0600 (directories 0700) even under umask 000; dev tokens live at
 * most 24 hours, and the gateway refuses longer-lived or undated ones signed by its own dev issuer.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SignJWT } from 'jose';
import { AUDIENCE, DEV_ISSUER } from '../../src/access/tokens.ts';
import { testConsortium } from '../support/consortium.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'medblock.js');
const work = mkdtempSync(join(tmpdir(), 'medblock-keys-'));
after(() => rmSync(work, { recursive: true, force: true }));
// Each case chooses its own mode and engines: nothing from the test run's environment.
const {
  MEDBLOCK_MONGODB_URI: _m, MEDBLOCK_KAFKA_BROKERS: _k, MEDBLOCK_MODE: _mode, MEDBLOCK_MASTER_KEY: _mk, MEDBLOCK_MASTER_KEY_FILE: _mf,
  MEDBLOCK_CONSORTIUM_DIR: _c, ...baseEnv
} = process.env;

interface Run {
  code: number | null;
  stderr: string;
  /** Whether it logged "started" (then it was stopped with SIGTERM). */
  started: boolean;
}

/**
 * `medblock start` (through `sh` when `umask` is given) until it exits, or until it has started: then
 * `whileRunning` looks at it and it is stopped.
 */
function start(env: NodeJS.ProcessEnv, opts: { umask?: string; whileRunning?: () => void } = {}): Promise<Run> {
  const { umask } = opts;
  const node = [process.execPath, BIN, 'start'];
  const [cmd, args] = umask === undefined ? [node[0]!, node.slice(1)] : ['/bin/sh', ['-c', `umask ${umask} && exec "$@"`, 'sh', ...node]];
  const child = spawn(cmd, args, { env: { ...baseEnv, MEDBLOCK_LOG: 'on', PORT: '0', HOST: '127.0.0.1', ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  let started = false;
  let failure: unknown;
  child.stderr.on('data', (d) => {
    stderr += d;
    if (!started && stderr.includes('"event":"started"')) {
      started = true;
      try {
        opts.whileRunning?.();
      } catch (e) {
        failure = e;
      }
      child.kill('SIGTERM');
    }
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`medblock start neither exited nor started; stderr: ${stderr}`));
    }, 90_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (failure) reject(failure);
      else resolve({ code, stderr, started });
    });
  });
}

/** The fatal line of a refused start-up. */
function refusal(run: Run): string {
  assert.equal(run.started, false, run.stderr);
  assert.equal(run.code, 1, run.stderr);
  const lines = run.stderr.split('\n').filter((l) => l.startsWith('medblock: '));
  assert.equal(lines.length, 1, run.stderr);
  return lines[0]!;
}

/** A consortium directory as a gateway should get it: without the CA's private key. */
function gatewayConsortium(from: string, to: string): string {
  cpSync(from, to, { recursive: true });
  rmSync(join(to, 'ca', 'ca.key'));
  return to;
}

function masterKeyFile(path: string): string {
  writeFileSync(path, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
  return path;
}

describe('production mode refuses keys next to the data', () => {
  let full: string;
  before(async () => {
    full = await testConsortium(['h1']);
  });

  it('the master key inside MEDBLOCK_DATA_DIR (the default) → exit 1, naming MEDBLOCK_MASTER_KEY_FILE', async () => {
    const consortium = gatewayConsortium(full, join(work, 'c-master'));
    const run = await start({ MEDBLOCK_MODE: 'production', MEDBLOCK_DATA_DIR: join(work, 'd-master'), MEDBLOCK_CONSORTIUM_DIR: consortium, MEDBLOCK_HOSPITAL_ID: 'h1' });
    const line = refusal(run);
    assert.match(line, /^medblock: start-up failed: production mode .* refuses to start: the master key file .*d-master\/keys\/master-keys\.json is inside MEDBLOCK_DATA_DIR/);
    assert.match(line, /MEDBLOCK_MASTER_KEY_FILE/);
    assert.match(line, /docs\/security\.md, "Key placement"; MEDBLOCK_MODE=dev allows this for development only$/);
    // Refused before anything was created: no key to find in the data dir afterwards.
    assert.throws(() => statSync(join(work, 'd-master')), /ENOENT/);
  });

  it('MEDBLOCK_KAFKA_BROKERS alone means production: the refusal comes before any broker is contacted', async () => {
    const run = await start({ MEDBLOCK_KAFKA_BROKERS: '127.0.0.1:9', MEDBLOCK_DATA_DIR: join(work, 'd-kafka') });
    const line = refusal(run);
    assert.match(line, /the master key file .* is inside MEDBLOCK_DATA_DIR/);
    assert.match(line, /MEDBLOCK_CONSORTIUM_DIR is unset, so a consortium of one would be created in MEDBLOCK_DATA_DIR with its CA key/);
    assert.match(line, /the Kafka orderer connection is plaintext: set MEDBLOCK_KAFKA_TLS=1/);
  });

  it('the consortium CA private key on the gateway → refused, saying to keep ca/ca.key with the CA operator', async () => {
    const run = await start({
      MEDBLOCK_MODE: 'production', MEDBLOCK_DATA_DIR: join(work, 'd-ca'), MEDBLOCK_CONSORTIUM_DIR: full, MEDBLOCK_HOSPITAL_ID: 'h1',
      MEDBLOCK_MASTER_KEY_FILE: masterKeyFile(join(work, 'ca-case.key')),
    });
    const line = refusal(run);
    assert.match(line, /the consortium CA's private key .*\/ca\/ca\.key is on this gateway: a gateway needs only ca\/ca\.crt/);
    assert.doesNotMatch(line, /master key/);
  });

  it('a master key file that does not exist is refused rather than created (a mistyped secret path)', async () => {
    const consortium = gatewayConsortium(full, join(work, 'c-missing'));
    const missing = join(work, 'no-such-secret');
    const run = await start({ MEDBLOCK_MODE: 'production', MEDBLOCK_DATA_DIR: join(work, 'd-missing'), MEDBLOCK_CONSORTIUM_DIR: consortium, MEDBLOCK_HOSPITAL_ID: 'h1', MEDBLOCK_MASTER_KEY_FILE: missing });
    assert.match(refusal(run), new RegExp(`MEDBLOCK_MASTER_KEY_FILE ${missing} does not exist: create it first`));
    assert.throws(() => statSync(missing), /ENOENT/);
  });

  it('with the key in a file outside the data dir and no CA key, production starts', async () => {
    const consortium = gatewayConsortium(full, join(work, 'c-ok'));
    const run = await start({
      MEDBLOCK_MODE: 'production', MEDBLOCK_DATA_DIR: join(work, 'd-ok'), MEDBLOCK_CONSORTIUM_DIR: consortium, MEDBLOCK_HOSPITAL_ID: 'h1',
      MEDBLOCK_MASTER_KEY_FILE: masterKeyFile(join(work, 'ok.key')),
    });
    assert.equal(run.started, true, run.stderr);
  });

  it('MEDBLOCK_MODE=dev starts the same placements production refuses', async () => {
    const run = await start({ MEDBLOCK_MODE: 'dev', MEDBLOCK_DATA_DIR: join(work, 'd-dev'), MEDBLOCK_CONSORTIUM_DIR: full, MEDBLOCK_HOSPITAL_ID: 'h1' });
    assert.equal(run.started, true, run.stderr);
  });
});

/** Every file and directory under `dir` whose mode is not 0600 (files) or 0700 (directories). */
function looseModes(dir: string): string[] {
  const loose: string[] = [];
  const mode = (path: string) => statSync(path).mode & 0o777;
  if (mode(dir) !== 0o700) loose.push(`${dir} ${mode(dir).toString(8)}`);
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    const path = join(entry.parentPath, entry.name);
    const expected = entry.isDirectory() ? 0o700 : 0o600;
    if (mode(path) !== expected) loose.push(`${path} ${mode(path).toString(8)}`);
  }
  return loose;
}

describe('files are 0600 and directories 0700 whatever the umask', () => {
  it('a gateway started under umask 000 writes its data dir (vault, -wal, -shm, ledger, orderer log, keys, consortium of one) private', async () => {
    const dataDir = join(work, 'umask-data', 'nested');
    // Looked at while it runs: SQLite removes the -wal and -shm files when it closes the database.
    const whileRunning = () => {
      const names = readdirSync(dataDir);
      for (const expected of ['vault.sqlite', 'vault.sqlite-wal', 'vault.sqlite-shm', 'ledger.sqlite-wal', 'keys', 'consortium']) {
        assert.ok(names.includes(expected), `${expected} in ${names.join(', ')}`);
      }
      assert.ok(names.some((n) => /^orderer-.*\.sqlite-wal$/.test(n)), names.join(', '));
      assert.deepEqual(looseModes(dataDir), []);
    };
    const run = await start({ MEDBLOCK_DATA_DIR: dataDir }, { umask: '000', whileRunning });
    assert.equal(run.started, true, run.stderr);
    assert.deepEqual(looseModes(dataDir), []);
    assert.equal(statSync(join(work, 'umask-data')).mode & 0o777, 0o700, 'the parent it created for the data dir');
  });

  it('medblock consortium init under umask 000 writes every file 0600, the CA key and certificates included', () => {
    const out = join(work, 'umask-consortium');
    const res = spawnSync('/bin/sh', ['-c', 'umask 000 && exec "$@"', 'sh', process.execPath, BIN, 'consortium', 'init', '--members', 'a,b', '--out', out],
      { env: baseEnv, encoding: 'utf8', timeout: 120_000 });
    assert.equal(res.status, 0, res.stderr);
    assert.deepEqual(looseModes(out), []);
  });
});

describe('dev tokens have a bounded lifetime', () => {
  let t: TestGateway;
  before(async () => {
    t = await startTestGateway();
  });
  after(() => t.close());

  const forged = (claims: { iat?: number; exp: number }) => {
    const jwt = new SignJWT({ scope: 'user/*.cruds' }).setProtectedHeader({ alg: 'ES256' }).setSubject('mallory')
      .setIssuer(DEV_ISSUER).setAudience(AUDIENCE).setExpirationTime(claims.exp);
    if (claims.iat !== undefined) jwt.setIssuedAt(claims.iat);
    return jwt.sign(t.gateway.issuer.privateKey);
  };
  const status = async (token: string) => (await t.http.get('/fhir/Patient').set('Authorization', `Bearer ${token}`)).status;

  it('medblock token refuses a lifetime above 24h, and mints nothing', () => {
    const dataDir = join(work, 'token-data');
    const res = spawnSync(process.execPath, [BIN, 'token', '--sub', 'a', '--scope', 'user/*.rs', '--create-key', '--expires-in', '7d'],
      { env: { ...baseEnv, MEDBLOCK_DATA_DIR: dataDir }, encoding: 'utf8', timeout: 60_000 });
    assert.equal(res.status, 1);
    assert.equal(res.stdout, '');
    assert.equal(res.stderr, 'medblock: a dev token lives at most 24h (asked: 7d); mint a new one when it expires\n');
    const ok = spawnSync(process.execPath, [BIN, 'token', '--sub', 'a', '--scope', 'user/*.rs', '--expires-in', '24h'],
      { env: { ...baseEnv, MEDBLOCK_DATA_DIR: dataDir }, encoding: 'utf8', timeout: 60_000 });
    assert.equal(ok.status, 0, ok.stderr);
  });

  it('the gateway refuses a dev-issuer token signed for a year, or without iat; it accepts one within the bound', async () => {
    const now = Math.floor(Date.now() / 1000);
    assert.equal(await status(await forged({ iat: now, exp: now + 365 * 86400 })), 401);
    assert.equal(await status(await forged({ exp: now + 3600 })), 401);
    // iat in the future would stretch a short exp - iat window past the bound.
    assert.equal(await status(await forged({ iat: now + 30 * 86400, exp: now + 30 * 86400 + 3600 })), 401);
    assert.equal(await status(await forged({ iat: now, exp: now + 24 * 3600 })), 200);
  });
});
