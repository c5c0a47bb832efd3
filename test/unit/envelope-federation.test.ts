/**
 * The federation fields of ledger entries (issue #12): `resource` and `links` on anchor entries, `erased` on
 * audit entries. Well-formed ones are accepted; anything else is refused, so no PHI can ride in them.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { createEnvelope, EnvelopeError, MAX_ANCHOR_LINKS } from '../../src/ledger/envelope.ts';

const signer = { memberId: 'h1', privateKey: generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey };
const token = () => randomBytes(32).toString('base64url');
const digest = randomBytes(32).toString('hex');
const sorted = (n: number) => Array.from({ length: n }, token).sort();
const anchor = (entry: object) => createEnvelope(signer, { channel: 'c1', type: 'anchor', payload: { entries: [entry as never] } });
const audit = (entry: object) => createEnvelope(signer, { channel: 'c1', type: 'audit', payload: { entries: [entry as never] } });

describe('envelope: federation fields', () => {
  it('accepts resource and links beside a patient token, and erased on an audit entry', () => {
    const patient = token();
    for (const links of [[], sorted(1), sorted(MAX_ANCHOR_LINKS)]) {
      assert.deepEqual(anchor({ digest, patient, resource: token(), links }).payload.entries[0].links, links);
    }
    const erased = token();
    assert.equal(audit({ digest, erased }).payload.entries[0].erased, erased);
  });

  it('refuses them without a patient token, malformed, unsorted, repeated or too many', () => {
    const patient = token();
    const [a, b] = sorted(2);
    for (const entry of [
      { digest, resource: token() },
      { digest, links: [] },
      { digest, patient, resource: 'Patient/123' },
      { digest, patient, resource: token().slice(1) },
      { digest, patient, links: [b, a] },
      { digest, patient, links: [a, a] },
      { digest, patient, links: ['999-11-2222'] },
      { digest, patient, links: a },
      { digest, patient, links: sorted(MAX_ANCHOR_LINKS + 1) },
    ]) {
      assert.throws(() => anchor(entry), EnvelopeError, JSON.stringify(entry));
    }
    for (const entry of [{ digest, erased: 'Patient/123' }, { digest, erased: [token()] }, { digest, patient }]) {
      assert.throws(() => audit(entry), EnvelopeError, JSON.stringify(entry));
    }
  });
});
