import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dateRange, parseSearch } from '../../src/fhir/search/query.ts';
import { extractTerms } from '../../src/fhir/search/terms.ts';

describe('search parameters', () => {
  it('turns FHIR dates of every precision into UTC intervals', () => {
    assert.deepEqual(dateRange('2024'), { start: '2024-01-01T00:00:00.000Z', end: '2025-01-01T00:00:00.000Z' });
    assert.deepEqual(dateRange('2024-02'), { start: '2024-02-01T00:00:00.000Z', end: '2024-03-01T00:00:00.000Z' });
    assert.deepEqual(dateRange('2024-12-31'), { start: '2024-12-31T00:00:00.000Z', end: '2025-01-01T00:00:00.000Z' });
    assert.deepEqual(dateRange('2024-01-01T10:00+02:00'), { start: '2024-01-01T08:00:00.000Z', end: '2024-01-01T08:01:00.000Z' });
    assert.deepEqual(dateRange('2024-01-01T10:00:05.250Z'), { start: '2024-01-01T10:00:05.250Z', end: '2024-01-01T10:00:05.251Z' });
    assert.equal(dateRange('2024-13'), undefined);
    assert.equal(dateRange('yesterday'), undefined);
  });

  it('parses token, reference, _id, _lastUpdated and paging parameters', () => {
    const { query, countOnly } = parseSearch('Observation', [
      ['code', 'http://loinc.org|8867-4,|x'],
      ['patient', '123'],
      ['subject:Patient', 'Patient/9'],
      ['_lastUpdated', 'ge2024-01-01'],
      ['_lastUpdated', 'lt2025'],
      ['_count', '5000'],
      ['_summary', 'count'],
    ]);
    assert.equal(countOnly, true);
    assert.equal(query.limit, 1000);
    assert.deepEqual(query.clauses, [
      { param: 'code', anyOf: ['http://loinc.org|8867-4', '|x'] },
      { param: 'patient', anyOf: ['Patient/123'] },
      { param: 'subject', anyOf: ['Patient/9'] },
    ]);
    assert.deepEqual(query.lastUpdated, [{ op: 'ge', value: '2024-01-01T00:00:00.000Z' }, { op: 'lt', value: '2025-01-01T00:00:00.000Z' }]);
    const subject = parseSearch('Observation', [['subject', 'abc']]).query.clauses[0].anyOf;
    assert.ok(subject.includes('Patient/abc') && subject.includes('Group/abc') && subject.length > 3);
  });

  it('rejects what it does not support, with 400', () => {
    for (const params of [
      [['name', 'x']], [['code:text', 'x']], [['_sort', 'value-quantity']], [['_lastUpdated', 'ap2024']], [['_count', 'ten']],
      [['subject:Medication', '1']], [['code', 'http://loinc.org|']], [['date', 'ne2024']], [['date', 'ap2024']], [['date', 'yesterday']],
      [['value-string:contains', 'x']], [['_compartment', 'Patient/1']], [['_text', 'x']], [['_has:Observation:patient:code', 'x']],
      [['code:missing', 'true']], [['value-quantity', '5|kg']], [['value-quantity', 'abc']], [['subject.name.family', 'x']],
      [['subject.nope', 'x']], [['performer:Practitioner.birthdate', '2000']], [['_include', 'Observation:code']], [['_include', '*']],
      [['_include:iterate', 'Observation:subject']], [['_revinclude', 'Observation:subject']], [['_elements', 'nope']],
      [['_sort', 'date,_id']], [['_summary', 'true']], [['code-value-concept', 'x']],
    ]) {
      assert.throws(() => parseSearch('Observation', params as Array<[string, string]>), (e: { status?: number }) => e.status === 400, JSON.stringify(params));
    }
  });

  it('lenient handling leaves out unsupported parameters (and out of applied), but not malformed values', () => {
    const parsed = parseSearch('Observation', [['foo', 'bar'], ['code', 'x'], ['value-string:contains', 'y'], ['_has:Observation:patient:code', 'z']], { handling: 'lenient' });
    assert.deepEqual(parsed.applied, [['code', 'x']]);
    assert.deepEqual(parsed.query.clauses, [{ param: 'code', anyOf: ['x'] }]);
    for (const params of [[['date', 'yesterday']], [['_count', '-1']], [['_id', 'a b']]]) {
      assert.throws(() => parseSearch('Observation', params as Array<[string, string]>, { handling: 'lenient' }), (e: { status?: number }) => e.status === 400);
    }
  });

  it('_total and _totalMethod, _elements with id and resourceType, numbers beyond 2^53', () => {
    assert.equal(parseSearch('Patient', [['_total', 'none']]).total, 'none');
    assert.equal(parseSearch('Patient', [['_totalMethod', 'count']]).total, 'accurate');
    assert.equal(parseSearch('Patient', []).total, undefined);
    assert.deepEqual(parseSearch('Patient', [['_elements', 'id,resourceType,name']]).elements, ['name']);
    assert.deepEqual(parseSearch('Observation', [['_elements', 'id,subject']]).elements?.sort(), ['code', 'status', 'subject']);
    assert.equal(parseSearch('Observation', [['value-quantity', 'le9007199254740992']]).query.clauses.length, 1);
    for (const params of [
      [['_total', 'count']], [['_totalMethod', 'accurate']], [['_elements', '-name']], [['_count', '9007199254740993']],
      [['value-quantity', '9007199254740993']], [['value-quantity', '-1e16']], [['_sort', 'date'], ['_cursor', 'k99999999999999999.x']],
    ]) {
      assert.throws(() => parseSearch('Observation', params as Array<[string, string]>), (e: { status?: number }) => e.status === 400, JSON.stringify(params));
    }
  });

  it('extracts token terms for every query form and reference terms without version or base', () => {
    const terms = extractTerms('Observation', {
      resourceType: 'Observation',
      code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }, { code: 'local' }] },
      subject: { reference: 'Patient/p1/_history/3' },
      identifier: [{ system: 'urn:x', value: 'v1' }],
    }).map((t) => `${t.param}=${t.value}`).sort();
    assert.deepEqual(terms, [
      'code=8867-4', 'code=http://loinc.org|8867-4', 'code=local', 'code=|local',
      'combo-code=8867-4', 'combo-code=http://loinc.org|8867-4', 'combo-code=local', 'combo-code=|local',
      'identifier=urn:x|v1', 'identifier=v1',
      'patient=Patient/p1', 'subject=Patient/p1',
    ]);
    const group = extractTerms('Observation', { resourceType: 'Observation', subject: { reference: 'Group/g1' } }).map((t) => `${t.param}=${t.value}`);
    assert.deepEqual(group, ['subject=Group/g1'], 'patient only indexes references to a Patient');
  });
});

describe('index term extraction', () => {
  it('walks plain member paths exactly as fhirpath.js evaluates them, on every official example', async () => {
    const { readdirSync, readFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { parseFhirJson, stringifyFhirJson } = await import('../../src/fhir/json.ts');
    const { directExtractor, fhirpathExtractor, indexedParams } = await import('../../src/fhir/search/parameters.ts');
    const dir = join(import.meta.dirname, '..', '..', '..', 'shared', 'fhir-data', 'examples');
    let compared = 0;
    for (const file of readdirSync(dir)) {
      const resource = parseFhirJson(readFileSync(join(dir, file), 'utf8')) as { resourceType: string };
      for (const param of indexedParams(resource.resourceType).values()) {
        const reference = fhirpathExtractor(resource.resourceType, param.code)!;
        const direct = directExtractor(resource.resourceType, param.code)!;
        // As multisets: choice elements are walked one type at a time, fhirpath.js goes node by node.
        const sorted = (values: unknown[]) => values.map((v) => stringifyFhirJson(v)).sort();
        assert.deepEqual(sorted(direct(resource)), sorted(reference(resource)), `${file} ${param.code}`);
        compared++;
      }
    }
    assert.ok(compared > 10000, `compared ${compared}`);
  });
});
