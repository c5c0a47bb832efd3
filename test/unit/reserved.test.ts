/** The access-log and erase rules no resource wildcard covers (src/access/reserved.ts), through authorize(). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { authorize } from '../../src/access/policy.ts';
import { assertEraseScope } from '../../src/access/reserved.ts';
import { parseScopes } from '../../src/access/scopes.ts';

const auth = (scope: string, patient?: string) => ({ subject: 'a', grants: parseScopes(scope), scope, patient });
const status = (status: number) => (e: { status?: number }) => e.status === status;

describe('reserved access', () => {
  it('refuses every write of AuditEvent (405), whatever the grant', () => {
    for (const scope of ['user/*.cruds', 'system/*.*', 'user/AuditEvent.cruds', 'user/AuditEvent.write']) {
      for (const p of ['c', 'u', 'd'] as const) assert.throws(() => authorize(auth(scope), 'AuditEvent', p), status(405), `${scope} ${p}`);
    }
  });

  it('reads AuditEvent only under an explicit user/ or system/ grant', () => {
    for (const scope of ['user/*.cruds', 'system/*.rs', 'user/*.read', 'user/Observation.rs']) {
      assert.throws(() => authorize(auth(scope), 'AuditEvent', 'r'), status(403), scope);
    }
    assert.throws(() => authorize(auth('patient/AuditEvent.rs', 'p1'), 'AuditEvent', 's'), status(403));
    assert.deepEqual(authorize(auth('user/AuditEvent.rs'), 'AuditEvent', 's'), { kind: 'all' });
    assert.deepEqual(authorize(auth('system/AuditEvent.r patient/*.rs', 'p1'), 'AuditEvent', 'r'), { kind: 'all' });
    assert.throws(() => authorize(auth('user/AuditEvent.r'), 'AuditEvent', 's'), status(403));
    // Other types are untouched by the rule.
    assert.deepEqual(authorize(auth('user/*.rs'), 'Observation', 'r'), { kind: 'all' });
  });

  it('erases only with the erase scope', () => {
    assert.doesNotThrow(() => assertEraseScope(auth('user/Patient.$erase')));
    assert.doesNotThrow(() => assertEraseScope(auth('openid system/Patient.$erase')));
    for (const scope of ['user/Patient.cruds', 'user/*.*', 'patient/Patient.$erase', 'user/Patient.$erase2', '']) {
      assert.throws(() => assertEraseScope(auth(scope, 'p1')), status(403), scope);
    }
    assert.throws(() => assertEraseScope({ subject: 'a', grants: [] }), status(403));
  });
});
