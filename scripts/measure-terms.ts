/**
 * Measures extractTerms over every resource of the Synthea bundles in ../shared/fhir-data/synthea:
 * µs per resource and terms per resource, overall and per type. Not a test: `npx tsx scripts/measure-terms.ts`.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseFhirJson } from '../src/fhir/json.ts';
import { extractTerms } from '../src/fhir/search/terms.ts';

const root = join(import.meta.dirname, '..', '..', 'shared', 'fhir-data', 'synthea');
const resources: Array<{ resourceType: string }> = [];
for (const dir of readdirSync(root)) {
  for (const file of readdirSync(join(root, dir))) {
    if (!file.endsWith('.json')) continue;
    const bundle = parseFhirJson(readFileSync(join(root, dir, file), 'utf8')) as { entry?: Array<{ resource?: { resourceType: string } }> };
    for (const e of bundle.entry ?? []) if (e.resource) resources.push(e.resource);
  }
}
const t0 = performance.now();
extractTerms('Patient', { resourceType: 'Patient' }); // compiles the parameters
const compileMs = performance.now() - t0;
const perType = new Map<string, { n: number; terms: number; params: Map<string, number> }>();
let terms = 0;
for (const r of resources) {
  const t = extractTerms(r.resourceType, r);
  terms += t.length;
  const s = perType.get(r.resourceType) ?? { n: 0, terms: 0, params: new Map() };
  s.n++;
  s.terms += t.length;
  for (const x of t) s.params.set(x.param, (s.params.get(x.param) ?? 0) + 1);
  perType.set(r.resourceType, s);
}
let best = Infinity;
for (let round = 0; round < 5; round++) {
  const start = performance.now();
  for (const r of resources) extractTerms(r.resourceType, r);
  best = Math.min(best, performance.now() - start);
}
console.log(`compile: ${compileMs.toFixed(0)} ms; ${resources.length} resources; ${(terms / resources.length).toFixed(1)} terms/resource; ` +
  `extractTerms: ${((best * 1000) / resources.length).toFixed(2)} µs/resource (best of 5 rounds)`);
for (const [type, s] of [...perType].sort((a, b) => b[1].n - a[1].n)) {
  const top = [...s.params].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([p, n]) => `${p} ${(n / s.n).toFixed(1)}`).join(', ');
  console.log(`${type.padEnd(28)} ${String(s.n).padStart(6)}  ${(s.terms / s.n).toFixed(1).padStart(6)} terms  [${top}]`);
}
