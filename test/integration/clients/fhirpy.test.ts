/**
 * fhirpy (a Python FHIR client written by others) drives a gateway over real HTTP, unchanged. The checks
 * live in fhirpy_suite.py, run once in a cached venv (see support/python.ts); each is one test here.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { promisify } from 'node:util';
import { startTestGateway, type TestGateway } from '../../support/gateway.ts';
import { describeWithPython, pythonWith } from '../../support/python.ts';
import { loadSyntheaPatient } from './synthea-patient.ts';

const SUITE = join(import.meta.dirname, 'fhirpy_suite.py');
const REQUIREMENTS = join(import.meta.dirname, 'fhirpy-requirements.txt');

interface CheckResult {
  check: string;
  ok: boolean;
  description?: string;
  error?: string;
  trace?: string;
}

const jsonLines = (text: string) => text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as CheckResult);

describeWithPython(await pythonWith('fhirpy', REQUIREMENTS), 'fhirpy 2.3.1 against a listening gateway', (python) => {
  const checks = jsonLines(execFileSync(python, [SUITE, '--list'], { encoding: 'utf8' }));
  let t: TestGateway;
  let results: Map<string, CheckResult>;
  let output: string;

  before(async () => {
    t = await startTestGateway({ listen: true });
    const buster = await loadSyntheaPatient(t);
    // Asynchronous: the gateway answering the script runs in this process.
    const run = await promisify(execFile)(python, [SUITE], {
      env: {
        ...process.env,
        FHIR_BASE_URL: t.baseUrl,
        FHIR_TOKEN: t.admin,
        SYNTHEA_PATIENT_ID: buster.patientId,
        SYNTHEA_OBSERVATION_IDS: JSON.stringify(buster.ids.get('Observation')),
      },
      timeout: 120_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    output = `${run.stdout}${run.stderr}`;
    results = new Map(jsonLines(run.stdout).map((r) => [r.check, r]));
  });
  after(async () => t.close());

  for (const { check, description } of checks) {
    it(description ?? check, () => {
      const result = results.get(check);
      assert.ok(result, `fhirpy_suite.py reported nothing for ${check}:\n${output}`);
      if (!result.ok) assert.fail(`${check}: ${result.error}\n${result.trace}`);
    });
  }

  it('ran every check it lists, and no other', () => {
    assert.deepEqual([...results.keys()], checks.map((c) => c.check));
  });
});
