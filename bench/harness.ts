/** Gateway child processes for the benchmark, and the HTTP ingest driver shared by its parts. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MongoClient } from 'mongodb';
import { loadDevIssuer, mintToken } from '../src/access/tokens.ts';
import type { BundleFile } from './workload.ts';

export const ROOT = join(import.meta.dirname, '..');

export type Store = 'sqlite' | 'mongodb';
export type Vault = 'encrypted' | 'plaintext';

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

export const round1 = (n: number) => Number(n.toFixed(1));

/** CPU seconds (user + system, all threads) a process has used so far. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

export interface Gateway {
  store: Store;
  vault: Vault;
  port: number;
  dataDir: string;
  token: string;
  child: ChildProcess;
  cpuSeconds(): number;
  peakRssMb(): number;
  stop(): Promise<void>;
}

/**
 * Starts bench/gateway.ts on a fresh vault (SQLite in a temporary data dir, or a fresh database of
 * `mongodbUri`) and mints a system token for it. BENCH_PROFILE=<dir> writes a V8 CPU profile per gateway.
 */
export async function startGateway(store: Store, vault: Vault, mongodbUri?: string): Promise<Gateway> {
  const dataDir = mkdtempSync(join(tmpdir(), 'medblock-bench-'));
  const database = `medblock_bench_${vault}_${Date.now().toString(36)}`;
  // The gateway runs the embedded default's ledger (solo orderer) whatever this shell exports: the ledger part
  // measures Kafka on its own, and the security tax must not change with the environment it is run from.
  const { MEDBLOCK_MONGODB_URI: _unused, MEDBLOCK_KAFKA_BROKERS: _kafka, BENCH_PLAINTEXT: _mode, ...baseEnv } = process.env;
  const env: NodeJS.ProcessEnv = { ...baseEnv, PORT: String(await freePort()), MEDBLOCK_DATA_DIR: dataDir, MEDBLOCK_LOG: 'on', MEDBLOCK_MODE: 'dev' };
  if (vault === 'plaintext') env.BENCH_PLAINTEXT = '1';
  if (store === 'mongodb') env.MEDBLOCK_MONGODB_URI = `${mongodbUri!.replace(/\/+$/, '')}/${database}`;
  const args = ['--import', 'tsx', join(ROOT, 'bench', 'gateway.ts')];
  if (process.env.BENCH_PROFILE) {
    const dir = join(process.env.BENCH_PROFILE, `${store}-${vault}`);
    mkdirSync(dir, { recursive: true });
    args.unshift('--cpu-prof', `--cpu-prof-dir=${dir}`);
  }
  const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    let log = '';
    const onData = (d: Buffer) => {
      log += d;
      if (log.includes('"event":"started"')) {
        child.stderr!.off('data', onData);
        // Error events are passed on (the gateway's log never carries resource content).
        child.stderr!.on('data', (d: Buffer) => {
          for (const line of String(d).split('\n')) if (line.includes('"level":"error"')) process.stderr.write(`[gateway ${store}/${vault}] ${line}\n`);
        });
        child.off('exit', onExit);
        resolve();
      }
    };
    const onExit = (code: number | null) => reject(new Error(`gateway exited ${code}: ${log}`));
    child.stderr!.on('data', onData);
    child.once('exit', onExit);
  });
  const token = await mintToken(await loadDevIssuer(dataDir), { subject: 'bench', scope: 'system/*.cruds' });
  const pid = child.pid!;
  return {
    store,
    vault,
    port: Number(env.PORT),
    dataDir,
    token,
    child,
    cpuSeconds: () => cpuSeconds(pid),
    peakRssMb: () => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dataDir, { recursive: true, force: true });
      if (store === 'mongodb') {
        const client = await MongoClient.connect(mongodbUri!);
        try {
          await client.db(database).dropDatabase();
        } finally {
          await client.close();
        }
      }
    },
  };
}

/** GET on the gateway's FHIR base; returns the latency (ms) and the body. Throws unless 200. */
export async function get(gw: Gateway, path: string): Promise<{ ms: number; text: string }> {
  const started = performance.now();
  const res = await fetch(`http://127.0.0.1:${gw.port}/fhir/${path}`, { headers: { Authorization: `Bearer ${gw.token}` } });
  const text = await res.text();
  const ms = performance.now() - started;
  if (res.status !== 200) throw new Error(`GET ${path}: ${res.status} ${text.slice(0, 300)}`);
  return { ms, text };
}

/** POSTs a transaction/batch bundle; returns the latency (ms) and the response Bundle's text. */
export async function postBundle(gw: Gateway, file: BundleFile): Promise<{ ms: number; text: string }> {
  const started = performance.now();
  const res = await fetch(`http://127.0.0.1:${gw.port}/fhir`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/fhir+json', Authorization: `Bearer ${gw.token}`, Prefer: 'return=minimal' },
    body: file.text,
  });
  const text = await res.text();
  const ms = performance.now() - started;
  if (res.status !== 200 || text.includes('"outcome"')) throw new Error(`${file.name}: ${res.status} ${text.slice(0, 300)}`);
  return { ms, text };
}

export interface IngestTally {
  resources: number;
  bundles: number;
  seconds: number;
  cpuSeconds: number;
  latenciesMs: number[];
}

export const emptyTally = (): IngestTally => ({ resources: 0, bundles: 0, seconds: 0, cpuSeconds: 0, latenciesMs: [] });

/**
 * Sends `count` bundles made by `make(i)` with `concurrency` requests in flight, adding wall time, gateway
 * CPU time and per-bundle latency to `tally`. `onResponse` sees each response (outside nothing timed here
 * but the request itself).
 */
export async function ingest(
  gw: Gateway,
  count: number,
  make: (i: number) => BundleFile,
  concurrency: number,
  tally: IngestTally,
  onResponse?: (i: number, responseText: string) => void,
): Promise<void> {
  let next = 0;
  const cpuBefore = gw.cpuSeconds();
  const started = performance.now();
  const worker = async () => {
    while (next < count) {
      const i = next++;
      const file = make(i);
      const { ms, text } = await postBundle(gw, file);
      tally.resources += file.entries;
      tally.bundles++;
      tally.latenciesMs.push(ms);
      onResponse?.(i, text);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  tally.seconds += (performance.now() - started) / 1000;
  tally.cpuSeconds += gw.cpuSeconds() - cpuBefore;
}
