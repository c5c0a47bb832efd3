/** The `medblock` command as a user runs it: token, import, bench, start. */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { FHIR_DATA } from '../support/gateway.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'medblock.js');
const dataDir = mkdtempSync(join(tmpdir(), 'medblock-cli-'));
after(() => rmSync(dataDir, { recursive: true, force: true }));
// The CLI runs on the embedded default here; the engine addresses of the test run are not passed on.
const { MEDBLOCK_MONGODB_URI: _m, MEDBLOCK_KAFKA_BROKERS: _k, ...baseEnv } = process.env;
const env = { ...baseEnv, MEDBLOCK_DATA_DIR: dataDir, MEDBLOCK_LOG: 'on' };

function medblock(...args: string[]) {
  return spawnSync(process.execPath, [BIN, ...args], { env, encoding: 'utf8', timeout: 300_000 });
}

describe('medblock CLI', () => {
  it('token refuses a data dir without a gateway key, naming MEDBLOCK_DATA_DIR and the ways out', () => {
    const res = medblock('token', '--sub', 'alice', '--scope', 'user/*.rs');
    assert.equal(res.status, 1);
    assert.equal(res.stdout, '');
    assert.equal(res.stderr, `medblock: MEDBLOCK_DATA_DIR ${dataDir} has no gateway key (${join(dataDir, 'keys', 'dev-issuer.jwk.json')}), ` +
      'so no gateway would accept a token minted now. Set MEDBLOCK_DATA_DIR to the data dir of the gateway, or start the ' +
      'gateway once to create its key, or pass --create-key to create it here for a gateway started later on this data dir\n');
    assert.equal(existsSync(join(dataDir, 'keys', 'dev-issuer.jwk.json')), false);
  });

  it('token --create-key prints the JWT alone on stdout (the gateway started below accepts its key)', () => {
    const res = medblock('token', '--sub', 'alice', '--scope', 'user/*.rs', '--patient', 'p1', '--create-key');
    assert.equal(res.status, 0, res.stderr);
    assert.match(res.stdout, /^[\w-]+\.[\w-]+\.[\w-]+\n$/);
    const claims = JSON.parse(Buffer.from(res.stdout.split('.')[1], 'base64url').toString());
    assert.equal(claims.sub, 'alice');
    assert.equal(claims.scope, 'user/*.rs');
    assert.equal(claims.patient, 'p1');
  });

  it('bench runs the benchmark (here only its compute floor) and writes its results file', () => {
    const results = join(dataDir, 'bench-results.json');
    const res = spawnSync(process.execPath, [BIN, 'bench'], {
      encoding: 'utf8',
      timeout: 300_000,
      env: { ...env, BENCH_STORES: '', BENCH_VAULT_RESOURCES: '0', BENCH_VALIDATION: '0', BENCH_LEDGER: '0', BENCH_FLOOR_RESOURCES: '200', BENCH_RESULTS: results },
    });
    assert.equal(res.status, 0, res.stderr);
    assert.match(res.stdout, /\| \*\*compute floor\*\* .*\| \d+ /);
    const written = JSON.parse(readFileSync(results, 'utf8'));
    assert.ok(written.computeFloor.resourcesPerSecond > 0);
  });

  it('import loads bundles with a summary and exits 0; failures are listed and exit non-zero', () => {
    const ok = medblock('import', join(FHIR_DATA, 'synthea', 'smart-2019', 'Buster_Hoeger_ad2e3fc5-2b5d-4cb9-8d03-9ea0f4ac8423.json'));
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stderr, /imported \d+ resources from 1 files in [\d.]+ s \(\d+ resources\/s\); 0 failures/);
    const bad = join(dataDir, 'bad.ndjson');
    writeFileSync(bad, `${JSON.stringify({ resourceType: 'Patient', gender: 'robot' })}\n${JSON.stringify({ resourceType: 'Patient', id: 'ndjson-ok' })}\n`);
    const res = medblock('import', bad);
    assert.equal(res.status, 1);
    assert.match(res.stderr, /imported 1 resources from 1 files/);
    assert.match(res.stderr, /bad\.ndjson:1-2 entry\[0\]: 422 /);
  });

  it('start serves /healthz, /readyz and the FHIR API with a minted token, and stops on SIGTERM', async () => {
    const port = 18000 + Math.floor(Math.random() * 2000);
    const child = spawn(process.execPath, [BIN, 'start'], { env: { ...env, PORT: String(port) }, stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      await new Promise<void>((resolve, reject) => {
        let log = '';
        child.stderr.on('data', (d) => {
          log += d;
          if (log.includes('"event":"started"')) resolve();
        });
        child.on('exit', (code) => reject(new Error(`exited ${code}: ${log}`)));
      });
      // Minted before the first request: a blocking mint that outlasts the keep-alive timeout would leave
      // fetch a socket the gateway is closing.
      const token = medblock('token', '--sub', 'bob', '--scope', 'user/Patient.read').stdout.trim();
      const base = `http://127.0.0.1:${port}`;
      assert.equal((await fetch(`${base}/healthz`)).status, 200);
      assert.equal((await fetch(`${base}/readyz`)).status, 200);
      assert.equal((await fetch(`${base}/fhir/Patient`)).status, 401);
      const res = await fetch(`${base}/fhir/Patient/ndjson-ok`, { headers: { Authorization: `Bearer ${token}` } });
      assert.equal(res.status, 200);
      assert.match(await (await fetch(`${base}/metrics`)).text(), /medblock_http_requests_total\{interaction="read",status="200"\} 1/);
    } finally {
      const exited = new Promise((r) => child.on('exit', r));
      child.kill('SIGTERM');
      assert.equal(await exited, 0);
    }
  });
});
