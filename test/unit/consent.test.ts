/**
 * Consent decisions (src/access/consent.ts): the R4 examples that use what the gateway evaluates, the
 * combination and default rules of docs/federation.md "Consent", and the ways a Consent must not leak.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { decideConsent, isPurposeOfUse, MEMBER_SYSTEM, TOKEN_SUBJECT_SYSTEM, type ConsentRequest } from '../../src/access/consent.ts';

const EXAMPLES = join(import.meta.dirname, '..', '..', '..', 'shared', 'fhir-data', 'examples');
const TYPES = ['Patient', 'Observation', 'MedicationRequest', 'Condition'];

/** An R4 example as stored in a vault: with a version. */
function example(name: string): Record<string, unknown> {
  const resource = JSON.parse(readFileSync(join(EXAMPLES, `Consent-${name}.json`), 'utf8')) as Record<string, unknown>;
  return { ...resource, meta: { versionId: '1', lastUpdated: '2024-01-01T00:00:00Z' } };
}

let serial = 0;
/** A gateway-style Consent: active, patient-privacy, dated. */
function consent(provision: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> {
  serial += 1;
  return {
    resourceType: 'Consent',
    id: `c${serial}`,
    meta: { versionId: '3', lastUpdated: '2024-06-01T00:00:00Z' },
    status: 'active',
    scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
    patient: { reference: 'Patient/p1' },
    dateTime: '2024-06-01',
    provision,
    ...extra,
  };
}

const member = (value: string) => ({ reference: { identifier: { system: MEMBER_SYSTEM, value } } });
const subject = (value: string, of?: string) => ({
  reference: { identifier: { system: TOKEN_SUBJECT_SYSTEM, value, ...(of ? { assigner: { identifier: { system: MEMBER_SYSTEM, value: of } } } : {}) } },
});
const purpose = (code: string) => ({ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code });
const resourceClass = (code: string) => ({ system: 'http://hl7.org/fhir/resource-types', code });

function request(over: Partial<ConsentRequest> = {}): ConsentRequest {
  return { actor: { member: 'h2', practitioner: 'dr-b' }, purpose: 'TREAT', at: new Date('2025-01-15T10:00:00Z'), resourceTypes: TYPES, ...over };
}

const permitted = (d: { permit: Record<string, boolean> }) => Object.keys(d.permit).filter((t) => d.permit[t]);

describe('consent: no Consent, the consortium default', () => {
  it('opt-in denies everything, opt-out permits everything; both name the default', () => {
    const optIn = decideConsent([], request(), 'opt-in');
    assert.deepEqual(permitted(optIn), []);
    assert.equal(optIn.consent, 'default');
    assert.equal(optIn.basis, 'default');
    const optOut = decideConsent([], request(), 'opt-out');
    assert.deepEqual(permitted(optOut), TYPES);
    assert.equal(optOut.breakTheGlass, false);
  });
});

describe('consent: R4 examples', () => {
  it('consent-example-basic (OPTIN, root period 1964–2016) permits everything inside its period', () => {
    const d = decideConsent([example('consent-example-basic')], request({ at: new Date('2010-05-05T00:00:00Z') }), 'opt-in');
    assert.deepEqual(permitted(d), TYPES);
    assert.equal(d.consent, 'Consent/consent-example-basic/_history/1');
  });

  it('consent-example-basic is out of term after 2016-01-01: the default decides', () => {
    const d = decideConsent([example('consent-example-basic')], request({ at: new Date('2016-01-02T00:00:00Z') }), 'opt-in');
    assert.deepEqual(permitted(d), []);
    assert.equal(d.consent, 'default');
    // The end date is inclusive of its whole day.
    const lastDay = decideConsent([example('consent-example-basic')], request({ at: new Date('2016-01-01T23:59:59Z') }), 'opt-in');
    assert.deepEqual(permitted(lastDay), TYPES);
  });

  it('consent-example-notTime (a one-month period in 2015) does not apply today', () => {
    const d = decideConsent([example('consent-example-notTime')], request(), 'opt-out');
    assert.deepEqual(permitted(d), TYPES);
    assert.equal(d.consent, 'default');
  });

  it('consent-example-smartonfhir: inside its 30 minutes the nested permit of MedicationRequest holds', () => {
    const d = decideConsent([example('consent-example-smartonfhir')], request({ at: new Date('2016-06-23T07:10:00Z') }), 'opt-in');
    assert.equal(d.permit.MedicationRequest, true);
    assert.equal(d.basis, 'consent');
    const after = decideConsent([example('consent-example-smartonfhir')], request({ at: new Date('2016-06-23T07:40:00Z') }), 'opt-in');
    assert.deepEqual(permitted(after), []);
  });

  it('examples naming actors by literal reference (Out, notOrg, notThem, pkb, signature) are not evaluable: everything denied, never permitted', () => {
    for (const name of ['consent-example-Out', 'consent-example-notOrg', 'consent-example-notThem', 'consent-example-pkb', 'consent-example-Emergency']) {
      for (const policy of ['opt-in', 'opt-out'] as const) {
        const d = decideConsent([example(name)], request(), policy);
        assert.deepEqual(permitted(d), [], `${name} under ${policy}`);
        assert.equal(d.basis, 'unreadable');
        assert.equal(d.consent, `Consent/${name}/_history/1`);
      }
    }
    const signature = decideConsent([example('consent-example-signature')], request({ at: new Date('2016-01-01T00:00:00Z') }), 'opt-out');
    assert.equal(signature.basis, 'unreadable');
  });
});

describe('consent: provisions', () => {
  it('a root deny of one member removes exactly that member', () => {
    const c = consent({ type: 'deny', actor: [member('h1')] });
    assert.deepEqual(permitted(decideConsent([c], request({ actor: { member: 'h1' } }), 'opt-out')), []);
    const other = decideConsent([c], request({ actor: { member: 'h2' } }), 'opt-out');
    assert.deepEqual(permitted(other), TYPES, 'the Consent is silent for h2: the default permits');
    assert.equal(other.consent, 'default');
  });

  it('a nested deny inside a permit wins where it matches (depth wins)', () => {
    const c = consent({ type: 'permit', provision: [{ type: 'deny', class: [resourceClass('Observation')] }] });
    const d = decideConsent([c], request(), 'opt-in');
    assert.deepEqual(permitted(d), ['Patient', 'MedicationRequest', 'Condition']);
    assert.equal(d.consent, `Consent/${c.id}/_history/3`);
  });

  it('a permit nested in a deny nested in a permit: the deepest match decides', () => {
    const c = consent({
      type: 'permit',
      provision: [{ type: 'deny', actor: [member('h2')], provision: [{ type: 'permit', purpose: [purpose('ETREAT')] }] }],
    });
    assert.deepEqual(permitted(decideConsent([c], request(), 'opt-in')), []);
    const emergency = decideConsent([c], request({ purpose: 'ETREAT' }), 'opt-in');
    assert.deepEqual(permitted(emergency), TYPES);
    assert.equal(emergency.breakTheGlass, false, 'permitted by the Consent, not by breaking the glass');
  });

  it('deny wins a tie between matching siblings', () => {
    const c = consent({ type: 'permit', provision: [{ type: 'permit', actor: [member('h2')] }, { type: 'deny', purpose: [purpose('TREAT')] }] });
    assert.deepEqual(permitted(decideConsent([c], request(), 'opt-out')), []);
  });

  it('purpose: a mismatch does not match; a general purpose covers its specializations', () => {
    const c = consent({ type: 'deny', purpose: [purpose('HRESCH')] });
    assert.deepEqual(permitted(decideConsent([c], request({ purpose: 'TREAT' }), 'opt-out')), TYPES);
    assert.deepEqual(permitted(decideConsent([c], request({ purpose: 'HRESCH' }), 'opt-out')), []);
    assert.deepEqual(permitted(decideConsent([c], request({ purpose: 'CLINTRCHPC' }), 'opt-out')), []);
    const treat = consent({ type: 'deny', purpose: [purpose('TREAT')] });
    assert.deepEqual(permitted(decideConsent([treat], request({ purpose: 'ETREAT' }), 'opt-out')), []);
  });

  it('a nested provision with an expired period does not match', () => {
    const c = consent({ type: 'permit', provision: [{ type: 'deny', period: { start: '2020-01-01', end: '2024-12-31' } }] });
    assert.deepEqual(permitted(decideConsent([c], request(), 'opt-in')), TYPES);
    assert.deepEqual(permitted(decideConsent([c], request({ at: new Date('2024-12-31T12:00:00Z') }), 'opt-in')), []);
  });

  it('practitioner actor: by token subject, optionally of one member', () => {
    const anywhere = consent({ type: 'permit', actor: [subject('dr-b')] });
    assert.deepEqual(permitted(decideConsent([anywhere], request(), 'opt-in')), TYPES);
    assert.deepEqual(permitted(decideConsent([anywhere], request({ actor: { member: 'h2', practitioner: 'dr-c' } }), 'opt-in')), []);
    const ofH1 = consent({ type: 'permit', actor: [subject('dr-b', 'h1')] });
    assert.deepEqual(permitted(decideConsent([ofH1], request({ actor: { member: 'h1', practitioner: 'dr-b' } }), 'opt-in')), TYPES);
    assert.deepEqual(permitted(decideConsent([ofH1], request({ actor: { member: 'h2', practitioner: 'dr-b' } }), 'opt-in')), [], 'same subject at another member');
  });

  it('member actor and class: only the listed types for the listed member', () => {
    const c = consent({ type: 'permit', actor: [member('h2'), member('h3')], class: [resourceClass('Patient'), resourceClass('Condition')] });
    assert.deepEqual(permitted(decideConsent([c], request(), 'opt-in')), ['Patient', 'Condition']);
    assert.deepEqual(permitted(decideConsent([c], request({ actor: { member: 'h1' } }), 'opt-in')), []);
  });

  it('an action that is not a read (correct, collect) does not match; access does', () => {
    const action = (code: string) => ({ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentaction', code }] });
    assert.deepEqual(permitted(decideConsent([consent({ type: 'deny', action: [action('correct')] })], request(), 'opt-out')), TYPES);
    assert.deepEqual(permitted(decideConsent([consent({ type: 'deny', action: [action('access')] })], request(), 'opt-out')), []);
  });

  it('policyRule gives the root its type when it has none (OPTOUT ⇒ deny); a root type wins over it', () => {
    const optOut = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTOUT' }] };
    assert.deepEqual(permitted(decideConsent([consent({ actor: [member('h2')] }, { policyRule: optOut })], request(), 'opt-out')), []);
    assert.deepEqual(permitted(decideConsent([consent({ type: 'permit' }, { policyRule: optOut })], request(), 'opt-in')), TYPES);
  });
});

describe('consent: which Consent decides', () => {
  it('the latest dateTime decides alone; a tie goes to the latest lastUpdated', () => {
    const older = consent({ type: 'permit' }, { dateTime: '2023-01-01' });
    const newer = consent({ type: 'deny' }, { dateTime: '2024-01-01' });
    const d = decideConsent([newer, older], request(), 'opt-out');
    assert.deepEqual(permitted(d), []);
    assert.equal(d.consent, `Consent/${newer.id}/_history/3`);
    assert.deepEqual(permitted(decideConsent([older, newer], request(), 'opt-out')), [], 'order of the input does not matter');
    const sameDay = consent({ type: 'permit' }, { dateTime: '2024-01-01', meta: { versionId: '7', lastUpdated: '2024-09-01T00:00:00Z' } });
    const d2 = decideConsent([newer, sameDay], request(), 'opt-in');
    assert.deepEqual(permitted(d2), TYPES);
    assert.equal(d2.consent, `Consent/${sameDay.id}/_history/7`);
  });

  it('a newer Consent out of term leaves the older one in force', () => {
    const older = consent({ type: 'permit' }, { dateTime: '2023-01-01' });
    const expired = consent({ type: 'deny', period: { end: '2024-12-01' } }, { dateTime: '2024-06-01' });
    assert.deepEqual(permitted(decideConsent([older, expired], request(), 'opt-in')), TYPES);
  });

  it('inactive, draft, rejected, entered-in-error, other scopes and other resources are ignored', () => {
    const denyAll = { type: 'deny' };
    const ignored = [
      consent(denyAll, { status: 'inactive' }),
      consent(denyAll, { status: 'draft' }),
      consent(denyAll, { status: 'proposed' }),
      consent(denyAll, { status: 'rejected' }),
      consent(denyAll, { status: 'entered-in-error' }),
      consent(denyAll, { scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'research' }] } }),
      consent(denyAll, { scope: { coding: [{ code: 'patient-privacy' }] } }),
      { ...consent(denyAll), resourceType: 'Observation' },
      null,
      'Consent',
    ];
    const d = decideConsent(ignored, request(), 'opt-out');
    assert.deepEqual(permitted(d), TYPES);
    assert.equal(d.consent, 'default');
  });
});

describe('consent: a Consent that cannot be evaluated never permits', () => {
  const malformed: Array<[string, unknown, Record<string, unknown>?]> = [
    ['nested provision without type', { type: 'permit', provision: [{ actor: [member('h1')] }] }],
    ['unknown type', { type: 'allow' }],
    ['no type and no policyRule', { actor: [member('h2')] }],
    ['literal actor reference', { type: 'permit', actor: [{ reference: { reference: 'Organization/h2' } }] }],
    ['actor of another identifier system', { type: 'permit', actor: [{ reference: { identifier: { system: 'urn:other', value: 'h2' } } }] }],
    ['purpose of another system', { type: 'permit', purpose: [{ system: 'urn:other', code: 'TREAT' }] }],
    ['class of another system', { type: 'permit', class: [{ system: 'urn:ietf:bcp:13', code: 'text/plain' }] }],
    ['unsupported securityLabel', { type: 'permit', securityLabel: [{ system: 'x', code: 'N' }] }],
    ['unsupported data', { type: 'permit', data: [{ meaning: 'instance', reference: { reference: 'Observation/1' } }] }],
    ['unparsable period', { type: 'permit', period: { start: 'yesterday' } }],
    ['provision not an object', ['permit']],
    ['actor not an array', { type: 'permit', actor: member('h2') }],
    ['modifier extension', { type: 'permit', modifierExtension: [{ url: 'urn:x', valueBoolean: true }] }],
    ['unparsable dateTime', { type: 'permit' }, { dateTime: 'June' }],
  ];
  for (const [name, provision, extra] of malformed) {
    it(`${name}: denied under opt-in and opt-out, even over an older permit`, () => {
      const older = consent({ type: 'permit' }, { dateTime: '2020-01-01' });
      const bad = consent(provision, extra);
      for (const policy of ['opt-in', 'opt-out'] as const) {
        const d = decideConsent([older, bad], request(), policy);
        assert.deepEqual(permitted(d), [], policy);
        assert.equal(d.basis, 'unreadable');
        assert.equal(d.consent, `Consent/${bad.id}/_history/3`);
      }
    });
  }
});

describe('consent: break-the-glass', () => {
  const deny = consent({ type: 'deny', actor: [member('h2')] });

  it('ETREAT with a reason turns every deny into a permit, flagged, naming the Consent it overrode', () => {
    const d = decideConsent([deny], request({ purpose: 'ETREAT', btgReason: 'unconscious in ER' }), 'opt-in');
    assert.deepEqual(permitted(d), TYPES);
    assert.equal(d.breakTheGlass, true);
    assert.equal(d.consent, `Consent/${deny.id}/_history/3`);
  });

  it('also opens the opt-in default and an unreadable Consent', () => {
    assert.equal(decideConsent([], request({ purpose: 'ETREAT', btgReason: 'x' }), 'opt-in').breakTheGlass, true);
    const bad = consent({ type: 'permit', data: [] });
    const d = decideConsent([bad], request({ purpose: 'ETREAT', btgReason: 'x' }), 'opt-in');
    assert.deepEqual(permitted(d), TYPES);
    assert.equal(d.breakTheGlass, true);
  });

  it('no reason, a blank reason or another purpose: no override', () => {
    for (const over of [{ purpose: 'ETREAT' }, { purpose: 'ETREAT', btgReason: '  ' }, { purpose: 'TREAT', btgReason: 'urgent' }]) {
      const d = decideConsent([deny], request(over), 'opt-in');
      assert.deepEqual(permitted(d), [], JSON.stringify(over));
      assert.equal(d.breakTheGlass, false);
    }
  });

  it('nothing denied: not flagged', () => {
    const d = decideConsent([], request({ purpose: 'ETREAT', btgReason: 'x' }), 'opt-out');
    assert.equal(d.breakTheGlass, false);
  });
});

describe('consent: purposes of use', () => {
  it('knows the v3 PurposeOfUse codes, not BTG or junk', () => {
    for (const code of ['TREAT', 'ETREAT', 'HPAYMT', 'HRESCH', 'HOPERAT', 'PUBHLTH']) assert.ok(isPurposeOfUse(code), code);
    for (const code of ['BTG', 'treat', '', 'TREAT ', 'constructor', '__proto__']) assert.ok(!isPurposeOfUse(code), code);
  });
});

describe('consent: the example of docs/federation.md', () => {
  const doc = readFileSync(join(import.meta.dirname, '..', '..', 'docs', 'federation.md'), 'utf8');
  const section = doc.slice(doc.indexOf('## Consent'));
  const example = { ...JSON.parse(/```json\n([\s\S]*?)```/.exec(section)![1]), id: 'doc', meta: { versionId: '1', lastUpdated: '2025-03-01T00:00:00Z' } };

  it('decides as its table says', () => {
    const at = new Date('2025-06-01T00:00:00Z');
    const decide = (memberId: string, purposeCode: string, btgReason?: string) =>
      decideConsent([example], request({ actor: { member: memberId }, purpose: purposeCode, at, btgReason }), 'opt-in');
    assert.deepEqual(permitted(decide('h2', 'TREAT')), TYPES);
    assert.deepEqual(permitted(decide('h1', 'TREAT')), []);
    assert.deepEqual(permitted(decide('h2', 'CLINTRCH')), []);
    const glass = decide('h1', 'ETREAT', 'unconscious');
    assert.deepEqual(permitted(glass), TYPES);
    assert.equal(glass.breakTheGlass, true);
    assert.equal(glass.consent, 'Consent/doc/_history/1');
  });
});
