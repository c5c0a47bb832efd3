/**
 * The compute floor (DESIGN.md, "Performance budget"): parse + validate + canonicalize + SHA-256 + AES-256-GCM
 * encryption of the canonical bytes, in-process, no I/O, on the same resources the ingest sends.
 */
import { createHash, randomBytes } from 'node:crypto';
import { parseFhirJson } from '../src/fhir/json.ts';
import { initValidation, validateResource } from '../src/fhir/validation/index.ts';
import { canonicalize } from '../src/ledger/canonical-json.ts';
import { contentAad } from '../src/vault/encrypted-store.ts';
import { KEY_BYTES, seal } from '../src/vault/seal.ts';
import { patientStream, type PatientTemplate } from './workload.ts';

export interface Floor {
  resources: number;
  resourcesPerSecond: number;
  cpuUsPerResource: number;
}

export function computeFloor(templates: PatientTemplate[], target: number): Floor {
  initValidation();
  const key = randomBytes(KEY_BYTES);
  const texts = patientStream(templates, target).map(({ template, clone }) => template.clone(clone).text);
  let resources = 0;
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  for (const text of texts) {
    const bundle = parseFhirJson(text) as { entry: Array<{ resource: { resourceType: string } }> };
    for (const { resource } of bundle.entry) {
      if (validateResource(resource).some((issue) => issue.severity === 'error')) throw new Error('floor: invalid resource');
      const canonical = Buffer.from(canonicalize(resource), 'utf8');
      createHash('sha256').update(canonical).digest();
      seal(key, canonical, contentAad('bench', resource.resourceType, String(resources), 1, 'k-bench'));
      resources++;
    }
  }
  const seconds = (performance.now() - started) / 1000;
  const used = process.cpuUsage(cpuBefore);
  return { resources, resourcesPerSecond: Math.round(resources / seconds), cpuUsPerResource: Math.round((used.user + used.system) / resources) };
}
