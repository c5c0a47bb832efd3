import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { authorize } from '../../src/access/policy.ts';
import { grantsFor, parseScopes, UnsupportedScopeError } from '../../src/access/scopes.ts';

describe('SMART scopes', () => {
  it('parses v1 read/write/* and v2 cruds letters, ignoring other scopes', () => {
    const grants = parseScopes('openid launch user/Observation.read patient/*.rs system/Patient.cud user/Encounter.* user/Bad.xyz');
    assert.deepEqual(
      grants.map((g) => `${g.context}/${g.type}:${[...g.permissions].sort().join('')}`),
      ['user/Observation:rs', 'patient/*:rs', 'system/Patient:cdu', 'user/Encounter:cdrsu'],
    );
    assert.equal(grantsFor(parseScopes('user/*.write'), 'Condition', 'c').length, 1);
    assert.equal(grantsFor(parseScopes('user/*.write'), 'Condition', 'r').length, 0);
  });

  it('authorizes all data for user/ scopes, one compartment for patient/ scopes, and 403 otherwise', () => {
    assert.deepEqual(authorize({ subject: 'a', grants: parseScopes('user/Observation.rs') }, 'Observation', 'r'), { kind: 'all' });
    assert.deepEqual(authorize({ subject: 'a', grants: parseScopes('patient/*.r'), patient: 'p1' }, 'Observation', 'r'), { kind: 'patient', patientId: 'p1' });
    assert.throws(() => authorize({ subject: 'a', grants: parseScopes('patient/*.r') }, 'Observation', 'r'), (e: { status?: number }) => e.status === 403);
    assert.throws(() => authorize({ subject: 'a', grants: parseScopes('user/Observation.r') }, 'Observation', 'c'), (e: { status?: number }) => e.status === 403);
  });
});

describe('SMART v2 scopes with a query restriction', () => {
  it('are refused, naming the scope but not the restriction, instead of being widened to the whole type', () => {
    assert.throws(
      () => parseScopes('openid patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory'),
      (e: Error) => e instanceof UnsupportedScopeError && /patient\/Observation\.rs\?… has a query restriction/.test(e.message) && !/laboratory/.test(e.message),
    );
    assert.equal(parseScopes('patient/Observation.rs').length, 1);
  });
});
