import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compareDecimal, floorDecimal, implicitRange, numberMatches, numberQueryTerms, parseDecimal, rangeMatches } from '../../src/fhir/search/numbers.ts';
import { normalizeString, PREFIX_TERMS, stringQueryTerm, stringTerms } from '../../src/fhir/search/strings.ts';
import { parseSearch } from '../../src/fhir/search/query.ts';
import { extractTerms } from '../../src/fhir/search/terms.ts';
import { parseFhirJson } from '../../src/fhir/json.ts';

const d = (s: string) => parseDecimal(s)!;

describe('string search values', () => {
  it('normalizes case, accents and whitespace', () => {
    assert.equal(normalizeString('  Zoë   Müller-Ñúñez '), 'zoe muller-nunez');
    assert.equal(normalizeString('ÅNGSTRÖM'), 'angstrom');
    assert.equal(normalizeString('Smith'), 'smith');
  });

  it('stores prefix terms up to PREFIX_TERMS and one exact term', () => {
    const out = new Set<string>();
    stringTerms('Émile Zola', out);
    const prefixes = [...out].filter((t) => t.startsWith('p:'));
    assert.equal(prefixes.length, PREFIX_TERMS);
    assert.ok(out.has('p:e') && out.has('p:emile z') && out.has('x:Émile Zola'));
    assert.deepEqual(stringQueryTerm('EMI'), { term: 'p:emi', exact: true });
    assert.deepEqual(stringQueryTerm('Emile Zola'), { term: `p:${'emile zola'.slice(0, PREFIX_TERMS)}`, exact: false });
    assert.equal(stringQueryTerm('  '), undefined);
  });

  it('indexes every HumanName and Address part', () => {
    const terms = extractTerms('Patient', {
      resourceType: 'Patient',
      name: [{ family: 'Hoeger', given: ['Buster', 'Q'], prefix: ['Mr.'] }],
      address: [{ line: ['1 Main St'], city: 'Boston', state: 'MA', postalCode: '02110', country: 'US' }],
    }).map((t) => `${t.param}=${t.value}`);
    for (const t of ['name=p:hoe', 'name=p:bus', 'name=p:q', 'name=p:mr.', 'family=x:Hoeger', 'given=p:q', 'address=p:bost', 'address=p:1 main', 'address-city=p:b', 'address-postalcode=p:021', 'address-country=x:US']) {
      assert.ok(terms.includes(t), t);
    }
    assert.ok(!terms.some((t) => t.startsWith('family=p:bus')), 'family does not index given names');
  });
});

describe('number and quantity search values', () => {
  it('does exact decimal arithmetic on lexemes', () => {
    assert.equal(compareDecimal(d('1.50'), d('1.5')), 0);
    assert.equal(compareDecimal(d('0.1'), d('0.10000000000000000001')), -1);
    assert.equal(floorDecimal(d('-2.5')), -3n);
    assert.equal(floorDecimal(d('1e2')), 100n);
    assert.equal(floorDecimal(d('99.999')), 99n);
    const r = implicitRange(d('100'));
    assert.equal(compareDecimal(r.lo, d('99.5')), 0);
    assert.equal(compareDecimal(r.hi, d('100.5')), 0);
    const e = implicitRange(d('1e2'));
    assert.equal(compareDecimal(e.lo, d('95')), 0);
  });

  it('applies the R4 number prefixes with the implicit precision of eq', () => {
    assert.ok(numberMatches('eq', d('100.4'), d('100')));
    assert.ok(!numberMatches('eq', d('100.5'), d('100')));
    assert.ok(numberMatches('eq', d('99.5'), d('100')));
    assert.ok(!numberMatches('eq', d('100.4'), d('100.0')));
    assert.ok(numberMatches('ne', d('101'), d('100')));
    assert.ok(numberMatches('gt', d('100.01'), d('100')) && !numberMatches('gt', d('100'), d('100')));
    assert.ok(numberMatches('ge', d('100'), d('100')) && numberMatches('le', d('100'), d('100')));
    assert.ok(numberMatches('lt', d('-1'), d('0')));
    assert.ok(numberMatches('ap', d('109'), d('100')) && !numberMatches('ap', d('111'), d('100')));
    assert.ok(rangeMatches('eq', d('5'), d('10'), d('7')));
    assert.ok(rangeMatches('gt', d('5'), undefined, d('700')));
    assert.ok(!rangeMatches('lt', d('5'), d('10'), d('5')));
  });

  it('selects eq by floor buckets, wide ranges and other prefixes by presence', () => {
    assert.deepEqual(numberQueryTerms('eq', d('100'), true), ['f:99', 'f:100']);
    assert.deepEqual(numberQueryTerms('eq', d('72.5'), true), ['f:72']);
    assert.deepEqual(numberQueryTerms('eq', d('1e3'), true), ['*'], 'a range of 100 integers');
    assert.deepEqual(numberQueryTerms('gt', d('5'), true), ['*']);
    assert.deepEqual(numberQueryTerms('eq', d('5'), false), ['*']);
  });

  it('indexes quantities by floor bucket, presence and unit, and parses quantity queries', () => {
    const obs = parseFhirJson('{"resourceType":"Observation","valueQuantity":{"value":72.50,"unit":"kg","system":"http://unitsofmeasure.org","code":"kg"}}');
    const terms = extractTerms('Observation', obs).filter((t) => t.param === 'value-quantity').map((t) => t.value).sort();
    assert.deepEqual(terms, ['*', 'f:72', 'u:||kg']);
    const parsed = parseSearch('Observation', [['value-quantity', 'gt70|http://unitsofmeasure.org|kg']]);
    assert.deepEqual(parsed.query.clauses, [{ param: 'value-quantity', anyOf: ['u:||kg'] }]);
    assert.ok(parsed.postFilter!(obs as Record<string, unknown>));
    assert.ok(!parseSearch('Observation', [['value-quantity', 'gt80||kg']]).postFilter!(obs as Record<string, unknown>));
    assert.ok(!parseSearch('Observation', [['value-quantity', '72.5|http://other|kg']]).postFilter!(obs as Record<string, unknown>));
    assert.ok(parseSearch('Observation', [['value-quantity', '72.5']]).postFilter!(obs as Record<string, unknown>));
    assert.ok(!parseSearch('Observation', [['value-quantity', '72']]).postFilter!(obs as Record<string, unknown>));
  });
});

describe('query parsing', () => {
  it('turns each parameter kind into equality clauses, with post-filters only where needed', () => {
    const token = parseSearch('Observation', [['category:not', 'a,b'], ['code', '|x']]);
    assert.deepEqual(token.query.clauses[0], { param: 'category', anyOf: ['a', 'b'], negate: true });
    assert.deepEqual(token.query.clauses[1], { param: 'code', anyOf: ['|x'] });
    assert.equal(token.postFilter, undefined);
    // Low-cardinality parameters (statuses, gender) have no index terms: the post-filter decides.
    const status = parseSearch('Observation', [['status:not', 'final,amended']]);
    assert.deepEqual(status.query.clauses, []);
    assert.ok(status.postFilter!({ resourceType: 'Observation', status: 'preliminary' }));
    assert.ok(!status.postFilter!({ resourceType: 'Observation', status: 'amended' }));
    const gender = parseSearch('Patient', [['gender', '|male']]);
    assert.deepEqual(gender.query.clauses, []);
    assert.ok(gender.postFilter!({ resourceType: 'Patient', gender: 'male' }), 'a code has no system');
    assert.ok(!gender.postFilter!({ resourceType: 'Patient', gender: 'female' }));
    const name = parseSearch('Patient', [['name', 'Hoe'], ['family:exact', 'Hoeger']]);
    assert.deepEqual(name.query.clauses, [{ param: 'name', anyOf: ['p:hoe'] }, { param: 'family', anyOf: ['x:Hoeger'] }]);
    assert.equal(name.postFilter, undefined);
    assert.ok(parseSearch('Patient', [['name', 'Hoeger123456']]).postFilter);
    const date = parseSearch('Observation', [['date', 'ge2012-03-05']]);
    assert.equal(date.query.clauses.length, 1);
    assert.ok(['c:20xx', 'a:2012-04', 'c:2012-03-05', 'rc:20xx', 'ra:20xx', 'lc:2012-03-05', 'all'].every((t) => date.query.clauses[0].anyOf.includes(t)));
    assert.ok(date.postFilter);
    const ref = parseSearch('Observation', [['subject', 'http://gw/fhir/Patient/1']], { baseUrl: 'http://gw/fhir' });
    assert.deepEqual(ref.query.clauses[0].anyOf, ['http://gw/fhir/Patient/1', 'Patient/1']);
    const chain = parseSearch('Observation', [['subject:Patient.identifier', 'urn:x|1']]);
    assert.deepEqual(chain.chains, [{ param: 'subject', targets: ['Patient'], inner: ['identifier', 'urn:x|1'] }]);
    assert.deepEqual(parseSearch('Observation', [['patient.name', 'x']]).chains[0].targets, ['Patient']);
    const shaped = parseSearch('Observation', [['_sort', '-date'], ['_include', 'Observation:subject:Patient'], ['_revinclude', 'Provenance:target'], ['_elements', 'code,value']]);
    assert.equal(shaped.sort?.descending, true);
    assert.equal(shaped.include[0].targetType, 'Patient');
    assert.equal(shaped.revinclude[0].sourceType, 'Provenance');
    assert.ok(shaped.elements!.includes('status'), 'mandatory elements are always kept');
    assert.deepEqual(parseSearch('Observation', [['_sort', 'date'], ['_cursor', 'k100.abc']]).cursor, { kind: 'sort', key: 100, id: 'abc' });
  });
});
