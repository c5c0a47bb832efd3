/**
 * `medblock import`: loads Bundles and NDJSON into the gateway, in-process against the data dir or over
 * HTTP to a running gateway. A transaction that fails is retried once after everything else, so bundles
 * that depend on reference data (conditional references to practitioners, organizations) load in any order.
 * A job keeps its Bundle as JSON text and every attempt sends a fresh parse of it, so a retry never sees
 * what an earlier attempt did to the parsed value.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import cliProgress from 'cli-progress';
import { mintToken } from '../access/tokens.ts';
import { gatewayDevIssuer } from './token.ts';
import { parseScopes } from '../access/scopes.ts';
import type { GatewayConfig } from '../config.ts';
import type { FhirContext } from '../fhir/context.ts';
import { parseFhirJson, stringifyFhirJson } from '../fhir/json.ts';
import { FhirError } from '../fhir/outcome.ts';
import { createVersionChecker } from '../fhir/checks/pool.ts';
import { FhirRepository } from '../fhir/repository.ts';
import { routeRequest } from '../fhir/routes.ts';
import { initValidation } from '../fhir/validation/index.ts';
import { loadConsortium, openVault } from '../gateway.ts';

interface Job {
  label: string;
  type: 'batch' | 'transaction';
  /** The Bundle as JSON text. */
  text: string;
  bytes: number;
}

interface Failure {
  label: string;
  status: string;
  reason: string;
}

interface EntryResponse {
  response?: { status?: string; outcome?: { issue?: Array<{ diagnostics?: string }> } };
}

/** Sends one bundle (JSON text); resolves with the HTTP status and response text. */
type Send = (bundle: string) => Promise<{ status: number; text: string }>;

function listFiles(paths: string[]): string[] {
  const files: string[] = [];
  for (const p of paths) {
    if (statSync(p).isDirectory()) {
      files.push(...listFiles(readdirSync(p).sort().map((name) => join(p, name))));
    } else if (/\.(json|ndjson)$/i.test(p)) {
      files.push(p);
    }
  }
  return files;
}

function entryFor(resource: { resourceType?: string; id?: string }) {
  return resource.id
    ? { resource, request: { method: 'PUT', url: `${resource.resourceType}/${resource.id}` } }
    : { resource, request: { method: 'POST', url: resource.resourceType } };
}

/** Turns one file into bundles the gateway accepts. */
function* jobsOf(file: string, batchSize: number): Generator<Job> {
  const text = readFileSync(file, 'utf8');
  if (/\.ndjson$/i.test(file)) {
    const lines = text.split('\n').filter((l) => l.trim() !== '');
    for (let start = 0; start < lines.length; start += batchSize) {
      const chunk = lines.slice(start, start + batchSize);
      const entry = chunk.map((l) => entryFor(parseFhirJson(l) as { resourceType: string }));
      yield { label: `${file}:${start + 1}-${start + chunk.length}`, ...batchOf(entry), bytes: chunk.reduce((n, l) => n + l.length + 1, 0) };
    }
    return;
  }
  const value = parseFhirJson(text) as { resourceType?: string; type?: string; entry?: Array<{ resource?: object }> };
  if (value.resourceType === 'Bundle' && (value.type === 'transaction' || value.type === 'batch')) {
    yield { label: file, type: value.type, text, bytes: text.length };
  } else if (value.resourceType === 'Bundle') {
    const entry = (value.entry ?? []).filter((e) => e.resource).map((e) => entryFor(e.resource!));
    yield { label: file, ...batchOf(entry), bytes: text.length };
  } else {
    yield { label: file, ...batchOf([entryFor(value)]), bytes: text.length };
  }
}

function batchOf(entry: unknown[]): Pick<Job, 'type' | 'text'> {
  return { type: 'batch', text: stringifyFhirJson({ resourceType: 'Bundle', type: 'batch', entry }) };
}

async function inProcessSender(config: GatewayConfig): Promise<{ send: Send; close: () => Promise<void> }> {
  // With the consortium: imported Patients get their link tokens like those written through the API.
  const consortium = await loadConsortium(config);
  const store = openVault(config, () => consortium);
  await store.init();
  initValidation();
  const checker = createVersionChecker(config.workers);
  // What it writes lands in the vault's outbox (patient locator tokens come from the vault's data keys); the
  // gateway's publisher anchors it (at its next start if it is stopped).
  const repo = new FhirRepository(store, checker);
  const ctx: FhirContext = { repo, baseUrl: 'urn:medblock:import' };
  ctx.dispatch = (req) => routeRequest(req, ctx);
  const auth = { subject: 'medblock-import', grants: parseScopes('system/*.cruds') };
  return {
    send: async (bundle) => {
      try {
        const res = await routeRequest({ method: 'POST', path: [], query: [], body: parseFhirJson(bundle), auth }, ctx);
        return { status: res.status, text: typeof res.body === 'string' ? res.body : stringifyFhirJson(res.body) };
      } catch (e) {
        if (e instanceof FhirError) return { status: e.status, text: JSON.stringify(e.outcome) };
        throw e;
      }
    },
    close: async () => {
      await checker.close();
      await store.close();
    },
  };
}

function httpSender(url: string, token: string): { send: Send; close: () => Promise<void> } {
  return {
    send: async (bundle) => {
      const res = await fetch(url.replace(/\/+$/, ''), {
        method: 'POST',
        headers: { 'Content-Type': 'application/fhir+json', Accept: 'application/fhir+json', Authorization: `Bearer ${token}` },
        body: bundle,
      });
      return { status: res.status, text: await res.text() };
    },
    close: async () => {},
  };
}

function firstDiagnostic(outcome?: { issue?: Array<{ diagnostics?: string }> }): string {
  return outcome?.issue?.[0]?.diagnostics ?? 'no reason given';
}

/** Counts successes and failures in a response; a failed transaction fails every entry. */
function tally(job: Job, status: number, text: string): { ok: number; failures: Failure[] } {
  let body: { entry?: EntryResponse[]; issue?: Array<{ diagnostics?: string }> } = {};
  try {
    body = JSON.parse(text);
  } catch {
    /* non-JSON error body: reported with the status below */
  }
  if (status !== 200 || !Array.isArray(body.entry)) {
    return { ok: 0, failures: [{ label: job.label, status: String(status), reason: body.issue?.[0]?.diagnostics ?? 'request failed' }] };
  }
  const failures: Failure[] = [];
  let ok = 0;
  body.entry.forEach((e, i) => {
    const s = e.response?.status ?? '';
    if (s.startsWith('2')) ok++;
    else failures.push({ label: `${job.label} entry[${i}]`, status: s, reason: firstDiagnostic(e.response?.outcome) });
  });
  return { ok, failures };
}

export async function runImport(
  config: GatewayConfig,
  paths: string[],
  opts: { url?: string; token?: string; batchSize: number },
): Promise<number> {
  const files = listFiles(paths);
  if (files.length === 0) {
    process.stderr.write('medblock import: no .json or .ndjson files found\n');
    return 1;
  }
  const target = opts.url
    ? httpSender(opts.url, opts.token ?? (await mintToken(await gatewayDevIssuer(config, 'pass --token with a token the gateway at --url accepts'), { subject: 'medblock-import', scope: 'system/*.cruds', expiresIn: '2h' })))
    : await inProcessSender(config);
  const totalBytes = files.reduce((n, f) => n + statSync(f).size, 0);
  const bar = new cliProgress.SingleBar(
    { format: 'importing [{bar}] {percentage}% | {resources} resources | {failed} failed | {eta_formatted} left', stream: process.stderr, hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  bar.start(totalBytes, 0, { resources: 0, failed: 0 });
  const started = performance.now();
  let imported = 0;
  const failures: Failure[] = [];
  const deferred: Job[] = [];
  const run = async (job: Job, retrying: boolean) => {
    const { status, text } = await target.send(job.text);
    const result = tally(job, status, text);
    if (job.type === 'transaction' && result.ok === 0 && !retrying) {
      deferred.push(job);
      return;
    }
    imported += result.ok;
    failures.push(...result.failures);
    bar.increment(job.bytes, { resources: imported, failed: failures.length });
  };
  try {
    for (const file of files) {
      try {
        for (const job of jobsOf(file, opts.batchSize)) await run(job, false);
      } catch (e) {
        failures.push({ label: file, status: 'unreadable', reason: (e as Error).message });
        bar.increment(statSync(file).size, { resources: imported, failed: failures.length });
      }
    }
    for (const job of deferred.splice(0)) await run(job, true);
  } finally {
    bar.stop();
    await target.close();
  }
  const seconds = (performance.now() - started) / 1000;
  process.stderr.write(
    `imported ${imported} resources from ${files.length} files in ${seconds.toFixed(1)} s ` +
      `(${Math.round(imported / Math.max(seconds, 1e-3))} resources/s); ${failures.length} failures\n`,
  );
  for (const f of failures.slice(0, 50)) process.stderr.write(`  ${f.label}: ${f.status} ${f.reason}\n`);
  if (failures.length > 50) process.stderr.write(`  … and ${failures.length - 50} more\n`);
  return failures.length > 0 ? 1 : 0;
}
