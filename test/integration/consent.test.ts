/**
 * Consent on local `Patient/{id}/$everything` (docs/federation.md "Consent"): a request that states a purpose
 * of use gets what the patient's Consent (or the consortium default, opt-in here) allows, the Bundle says
 * what was withheld, and break-the-glass is counted on /metrics and flagged in the access record with the
 * deciding Consent version. Without the header nothing changes.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { mintToken } from '../../src/access/tokens.ts';
import { body, FHIR_JSON, startTestGateway, type TestGateway } from '../support/gateway.ts';

const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
const MEMBER = 'urn:medblock:member';
const SUBJECT = 'urn:medblock:token-subject';
const PHI = /Qwertzuiop|Asdfghjk|1959-04-05/;

describe('consent on local $everything', () => {
  let t: TestGateway;
  let patientId: string;
  let otherPatientId: string;
  const ids: Record<string, string> = {};

  const create = async (resource: Record<string, unknown>) => {
    const res = await t.http.post(`/fhir/${resource.resourceType}`).set('Authorization', `Bearer ${t.admin}`).set('Content-Type', FHIR_JSON).send(JSON.stringify(resource));
    assert.equal(res.status, 201, res.text);
    return body(res) as { id: string; meta: { versionId: string } };
  };
  const consent = (patient: string, provision: unknown, dateTime: string) => ({
    resourceType: 'Consent',
    status: 'active',
    scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: { reference: `Patient/${patient}` },
    dateTime,
    // R4 wants a policy or policyRule (ppc-1); the root's own type, where given, wins over it.
    policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] },
    provision,
  });
  /** A provision actor (R4 wants a role: the information recipient). */
  const actor = (system: string, value: string) => ({
    role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] },
    reference: { identifier: { system, value } },
  });
  const everything = (token: string, headers: Record<string, string> = {}) => {
    let req = t.http.get(`/fhir/Patient/${patientId}/$everything`).set('Authorization', `Bearer ${token}`);
    for (const [k, v] of Object.entries(headers)) req = req.set(k, v);
    return req;
  };
  const typesIn = (bundle: any) => [...new Set<string>((bundle.entry ?? []).filter((e: any) => e.search.mode !== 'outcome').map((e: any) => e.resource.resourceType))].sort();
  const outcomeOf = (bundle: any) => (bundle.entry ?? []).find((e: any) => e.search.mode === 'outcome')?.resource;
  /** The newest access record of $everything on the patient. */
  const lastRecord = async () => {
    const res = await t.http.get(`/fhir/AuditEvent?entity=${encodeURIComponent(`Patient/${patientId}`)}&_count=1000`).set('Authorization', `Bearer ${t.admin}`);
    const records = (body(res).entry ?? []).map((e: any) => e.resource).filter((r: any) => r.outcomeDesc?.endsWith('operation') || r.subtype?.[0]?.code === 'operation');
    return records.sort((a: any, b: any) => (a.recorded < b.recorded ? -1 : a.recorded > b.recorded ? 1 : Number(a.id > b.id) - 0.5)).at(-1);
  };
  const breakGlassCount = async () => {
    const text = (await t.http.get('/metrics')).text;
    const m = /^medblock_break_glass_total\{side="holder"\} (\d+)$/m.exec(text);
    return m ? Number(m[1]) : 0;
  };

  before(async () => {
    t = await startTestGateway();
    const practitioner = await create({ resourceType: 'Practitioner', name: [{ family: 'Careful' }] });
    patientId = (await create({ resourceType: 'Patient', name: [{ family: 'Qwertzuiop', given: ['Asdfghjk'] }], birthDate: '1959-04-05', generalPractitioner: [{ reference: `Practitioner/${practitioner.id}` }] })).id;
    otherPatientId = (await create({ resourceType: 'Patient', name: [{ family: 'Other' }] })).id;
    ids.Observation = (await create({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${patientId}` } })).id;
    ids.Condition = (await create({ resourceType: 'Condition', subject: { reference: `Patient/${patientId}` }, code: { text: 'y' } })).id;
  });
  after(async () => t.close());

  it('without X-Purpose-Of-Use nothing changes: the whole record, no outcome, no purpose on record', async () => {
    const res = await everything(t.admin);
    assert.equal(res.status, 200);
    assert.deepEqual(typesIn(body(res)), ['Condition', 'Observation', 'Patient', 'Practitioner']);
    assert.equal(outcomeOf(body(res)), undefined);
    const record = await lastRecord();
    assert.equal(record.purposeOfEvent, undefined);
    assert.equal(record.meta.security, undefined);
  });

  it('refuses a purpose that is not a v3 ActReason purpose of use, and break-the-glass without ETREAT or without a reason (400, no data, no echo)', async () => {
    const cases: Array<Record<string, string>> = [
      { 'X-Purpose-Of-Use': 'CURIOSITY' },
      { 'X-Purpose-Of-Use': 'treat' },
      { 'X-Purpose-Of-Use': '' },
      { 'X-Purpose-Of-Use': 'BTG' },
      { 'X-Purpose-Of-Use': 'ETREAT', 'X-Break-Glass-Reason': '   ' },
      { 'X-Purpose-Of-Use': 'TREAT', 'X-Break-Glass-Reason': 'Qwertzuiop is unconscious' },
      { 'X-Break-Glass-Reason': 'Qwertzuiop is unconscious' },
      { 'X-Purpose-Of-Use': 'ETREAT', 'X-Break-Glass-Reason': 'x'.repeat(501) },
    ];
    for (const headers of cases) {
      const res = await everything(t.admin, headers);
      assert.equal(res.status, 400, JSON.stringify(headers));
      assert.equal(body(res).resourceType, 'OperationOutcome');
      assert.doesNotMatch(res.text, /CURIOSITY|Qwertzuiop|xxxxxxxx/);
    }
    assert.equal(await breakGlassCount(), 0);
  });

  it('with a purpose and no Consent, the opt-in default withholds everything and says so without PHI', async () => {
    const res = await everything(t.admin, { 'X-Purpose-Of-Use': 'TREAT' });
    assert.equal(res.status, 200);
    assert.deepEqual(typesIn(body(res)), []);
    const outcome = outcomeOf(body(res));
    assert.equal(outcome.issue[0].code, 'suppressed');
    assert.match(outcome.issue[0].diagnostics, /consortium default \(opt-in\).*Observation/);
    assert.doesNotMatch(res.text, PHI);
    const record = await lastRecord();
    assert.deepEqual(record.purposeOfEvent, [{ coding: [{ system: ACT_REASON, code: 'TREAT' }] }]);
    const entity = record.entity.find((e: any) => e.type?.code === 'Consent');
    assert.deepEqual(entity.what, { identifier: { system: 'urn:medblock:consent', value: 'default' } });
    assert.match(entity.detail[0].valueString, /Observation/);
  });

  let consentId: string;
  it('a Consent permitting this hospital except Observations: exactly Observations withheld, the Consent version on record', async () => {
    const created = await create(consent(patientId, {
      type: 'permit',
      actor: [actor(MEMBER, 'test-hospital')],
      provision: [{ type: 'deny', class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Observation' }] }],
    }, '2024-01-01'));
    consentId = created.id;
    const res = await everything(t.admin, { 'X-Purpose-Of-Use': 'TREAT' });
    assert.deepEqual(typesIn(body(res)), ['Condition', 'Consent', 'Patient', 'Practitioner']);
    assert.match(outcomeOf(body(res)).issue[0].diagnostics, new RegExp(`Consent/${consentId}/_history/1\\): Observation$`));
    const record = await lastRecord();
    const entity = record.entity.find((e: any) => e.type?.code === 'Consent');
    assert.equal(entity.what.reference, `Consent/${consentId}/_history/1`);
    assert.equal(entity.detail[0].valueString, 'Observation');
    assert.equal(record.meta.security, undefined, 'no break-the-glass');
  });

  it('applies to a token that may not read Consent: the gateway reads the Consents itself', async () => {
    const clinician = await t.token('user/Patient.rs user/Observation.rs user/Condition.rs user/Practitioner.rs');
    const res = await everything(clinician, { 'X-Purpose-Of-Use': 'TREAT' });
    assert.equal(res.status, 200);
    assert.deepEqual(typesIn(body(res)), ['Condition', 'Patient', 'Practitioner']);
  });

  it('a practitioner actor: a newer Consent denying one user withholds everything from them alone', async () => {
    const updated = await t.http.put(`/fhir/Consent/${consentId}`).set('Authorization', `Bearer ${t.admin}`).set('Content-Type', FHIR_JSON).send(JSON.stringify({
      ...consent(patientId, { type: 'permit', provision: [{ type: 'deny', actor: [actor(SUBJECT, 'dr-nosy')] }] }, '2024-02-01'),
      id: consentId,
    }));
    assert.equal(updated.status, 200, updated.text);
    const nosy = await mintToken(t.gateway.issuer, { subject: 'dr-nosy', scope: 'user/*.rs' });
    const denied = await everything(nosy, { 'X-Purpose-Of-Use': 'TREAT' });
    assert.deepEqual(typesIn(body(denied)), []);
    assert.match(outcomeOf(body(denied)).issue[0].diagnostics, new RegExp(`Consent/${consentId}/_history/2\\)`));
    const allowed = await everything(t.admin, { 'X-Purpose-Of-Use': 'TREAT' });
    assert.deepEqual(typesIn(body(allowed)), ['Condition', 'Consent', 'Observation', 'Patient', 'Practitioner']);
  });

  it('another patient\'s Consent does not touch this record', async () => {
    await create(consent(otherPatientId, { type: 'deny' }, '2025-01-01'));
    const res = await everything(t.admin, { 'X-Purpose-Of-Use': 'TREAT' });
    assert.deepEqual(typesIn(body(res)), ['Condition', 'Consent', 'Observation', 'Patient', 'Practitioner']);
  });

  it('break-the-glass (ETREAT + reason) opens a denied record: counted on /metrics, BTG-labelled with the Consent version, reason not stored', async () => {
    const nosy = await mintToken(t.gateway.issuer, { subject: 'dr-nosy', scope: 'user/*.rs' });
    const before = await breakGlassCount();
    // ETREAT alone is not break-the-glass: the deny holds.
    assert.deepEqual(typesIn(body(await everything(nosy, { 'X-Purpose-Of-Use': 'ETREAT' }))), []);
    assert.equal(await breakGlassCount(), before);

    const res = await everything(nosy, { 'X-Purpose-Of-Use': 'ETREAT', 'X-Break-Glass-Reason': 'Qwertzuiop arrived unconscious' });
    assert.equal(res.status, 200);
    assert.deepEqual(typesIn(body(res)), ['Condition', 'Consent', 'Observation', 'Patient', 'Practitioner']);
    const outcome = outcomeOf(body(res));
    assert.equal(outcome.issue[0].severity, 'warning');
    assert.match(outcome.issue[0].diagnostics, /break-the-glass/);
    assert.equal(await breakGlassCount(), before + 1);

    const record = await lastRecord();
    assert.deepEqual(record.meta.security, [{ system: ACT_REASON, code: 'BTG', display: 'break the glass' }]);
    assert.deepEqual(record.purposeOfEvent, [{ coding: [{ system: ACT_REASON, code: 'ETREAT' }] }]);
    assert.equal(record.agent[0].who.identifier.value, 'dr-nosy');
    assert.equal(record.entity.find((e: any) => e.type?.code === 'Consent').what.reference, `Consent/${consentId}/_history/2`);
    assert.doesNotMatch(JSON.stringify(record), /unconscious|Qwertzuiop/, 'the reason is free text: not in the access record');

    // Compliance finds break-the-glass accesses by their label.
    const flagged = await t.http.get(`/fhir/AuditEvent?_security=${encodeURIComponent(`${ACT_REASON}|BTG`)}`).set('Authorization', `Bearer ${t.admin}`);
    assert.equal(flagged.status, 200);
    assert.ok(body(flagged).entry.some((e: any) => e.resource.id === record.id));
  });

  it('break-the-glass where nothing is denied is not counted', async () => {
    const before = await breakGlassCount();
    const res = await everything(t.admin, { 'X-Purpose-Of-Use': 'ETREAT', 'X-Break-Glass-Reason': 'check' });
    assert.equal(outcomeOf(body(res)), undefined);
    assert.equal(await breakGlassCount(), before);
    assert.equal((await lastRecord()).meta.security, undefined);
  });

  it('recordDisclosure writes both ends of a federated request as valid, anchored-like-any AuditEvents', async () => {
    const log = t.gateway.accessLog!;
    await log.recordDisclosure({
      side: 'holder', actor: 'dr-remote', requester: 'h2', patient: patientId, purpose: 'ETREAT', breakTheGlass: true,
      consent: `Consent/${consentId}/_history/2`, withheld: [], disclosed: [`Observation/${ids.Observation}/_history/1`], status: 200,
    });
    await log.recordDisclosure({ side: 'requester', actor: 'tester', patient: patientId, purpose: 'TREAT', breakTheGlass: false, holders: ['h2', 'h3'], status: 200 });
    const res = await t.http.get(`/fhir/AuditEvent?entity=${encodeURIComponent(`Patient/${patientId}`)}&_count=1000`).set('Authorization', `Bearer ${t.admin}`);
    const records = (body(res).entry ?? []).map((e: any) => e.resource);
    const holder = records.find((r: any) => r.outcomeDesc === 'HTTP 200 federated-disclosure');
    assert.deepEqual(holder.agent[0].who.identifier, { system: SUBJECT, value: 'dr-remote', assigner: { identifier: { system: MEMBER, value: 'h2' } } });
    assert.deepEqual(holder.meta.security, [{ system: ACT_REASON, code: 'BTG', display: 'break the glass' }]);
    assert.ok(holder.entity.some((e: any) => e.what.reference === `Observation/${ids.Observation}/_history/1`));
    const requester = records.find((r: any) => r.outcomeDesc === 'HTTP 200 federated-request');
    assert.deepEqual(requester.entity.filter((e: any) => e.type?.code === 'Organization').map((e: any) => e.what.identifier.value), ['h2', 'h3']);
    assert.equal(requester.meta.security, undefined);
  });
});

/**
 * Consent on the other local reads (access/consent-filter.ts): read and vread of a denied type answer 403
 * naming the deciding Consent version; searches and histories leave out what the patients' Consents
 * withhold and say how many and by which versions; resources in no compartment are untouched.
 */
describe('consent on local reads, searches and histories', () => {
  let t: TestGateway;
  let permitted: string; // patient whose Consent permits this hospital everything but Observations
  let unconsented: string; // patient with no Consent: the opt-in default denies
  let consentRef: string;
  const ids: Record<string, string> = {};
  const SECRET = /Zyxwvut|Mnbvcxy/;
  const PURPOSE = { 'X-Purpose-Of-Use': 'TREAT' };
  const GLASS = { 'X-Purpose-Of-Use': 'ETREAT', 'X-Break-Glass-Reason': 'Mnbvcxy collapsed in the ward' };

  const create = async (resource: Record<string, unknown>) => {
    const res = await t.http.post(`/fhir/${resource.resourceType}`).set('Authorization', `Bearer ${t.admin}`).set('Content-Type', FHIR_JSON).send(JSON.stringify(resource));
    assert.equal(res.status, 201, res.text);
    return (body(res) as { id: string }).id;
  };
  const get = (path: string, headers: Record<string, string> = {}) => {
    let req = t.http.get(`/fhir/${path}`).set('Authorization', `Bearer ${t.admin}`);
    for (const [k, v] of Object.entries(headers)) req = req.set(k, v);
    return req;
  };
  const resources = (bundle: any) => (bundle.entry ?? []).filter((e: any) => e.search?.mode !== 'outcome' && e.resource?.resourceType !== 'OperationOutcome').map((e: any) => `${e.resource.resourceType}/${e.resource.id}`).sort();
  const outcomeOf = (bundle: any) => (bundle.entry ?? []).find((e: any) => e.resource?.resourceType === 'OperationOutcome')?.resource;
  /** The newest access record of an interaction (the RESTful subtype code). */
  const lastRecord = async (interaction: string) => {
    const res = await t.http.get('/fhir/AuditEvent?_count=1000').set('Authorization', `Bearer ${t.admin}`);
    const records = (body(res).entry ?? []).map((e: any) => e.resource).filter((r: any) => r.subtype?.[0]?.code === interaction);
    return records.sort((a: any, b: any) => (a.recorded < b.recorded ? -1 : a.recorded > b.recorded ? 1 : 0)).at(-1);
  };
  const consentEntities = (record: any) => (record.entity ?? []).filter((e: any) => e.type?.code === 'Consent');
  const breakGlassCount = async () => {
    const m = /^medblock_break_glass_total\{side="holder"\} (\d+)$/m.exec((await t.http.get('/metrics')).text);
    return m ? Number(m[1]) : 0;
  };

  before(async () => {
    t = await startTestGateway();
    ids.Practitioner = await create({ resourceType: 'Practitioner', name: [{ family: 'Careful' }] });
    permitted = await create({ resourceType: 'Patient', name: [{ family: 'Zyxwvut' }] });
    unconsented = await create({ resourceType: 'Patient', name: [{ family: 'Mnbvcxy' }] });
    const observation = (patient: string) => ({ resourceType: 'Observation', status: 'final', code: { text: 'Zyxwvut marker' }, subject: { reference: `Patient/${patient}` } });
    ids.permittedObservation = await create(observation(permitted));
    ids.unconsentedObservation = await create(observation(unconsented));
    ids.permittedCondition = await create({ resourceType: 'Condition', subject: { reference: `Patient/${permitted}` }, code: { text: 'Zyxwvut' } });
    ids.unconsentedCondition = await create({ resourceType: 'Condition', subject: { reference: `Patient/${unconsented}` }, code: { text: 'Mnbvcxy' } });
    // A second version, for history.
    const updated = await t.http.put(`/fhir/Observation/${ids.permittedObservation}`).set('Authorization', `Bearer ${t.admin}`).set('Content-Type', FHIR_JSON)
      .send(JSON.stringify({ ...observation(permitted), id: ids.permittedObservation, status: 'amended' }));
    assert.equal(updated.status, 200, updated.text);
    const consentId = await create({
      resourceType: 'Consent', status: 'active',
      scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
      category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
      patient: { reference: `Patient/${permitted}` }, dateTime: '2024-01-01',
      policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] },
      provision: {
        type: 'permit',
        actor: [{ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] }, reference: { identifier: { system: MEMBER, value: 'test-hospital' } } }],
        provision: [{ type: 'deny', class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Observation' }] }],
      },
    });
    consentRef = `Consent/${consentId}/_history/1`;
  });
  after(async () => t.close());

  it('without X-Purpose-Of-Use nothing changes: reads, searches and histories answer as before, no purpose on record', async () => {
    assert.equal((await get(`Observation/${ids.permittedObservation}`)).status, 200);
    assert.equal((await get(`Observation/${ids.permittedObservation}/_history/1`)).status, 200);
    const search = body(await get('Observation'));
    assert.deepEqual(resources(search), [`Observation/${ids.permittedObservation}`, `Observation/${ids.unconsentedObservation}`].sort());
    assert.equal(outcomeOf(search), undefined);
    assert.equal(resources(body(await get(`Observation/${ids.permittedObservation}/_history`))).length, 2);
    const record = await lastRecord('history-instance');
    assert.equal(record.purposeOfEvent, undefined);
    assert.deepEqual(consentEntities(record), []);
  });

  it('read and vread of a denied type: 403 naming the deciding Consent version, no content; the record names it too', async () => {
    for (const path of [`Observation/${ids.permittedObservation}`, `Observation/${ids.permittedObservation}/_history/1`]) {
      const res = await get(path, PURPOSE);
      assert.equal(res.status, 403, path);
      assert.equal(body(res).resourceType, 'OperationOutcome');
      assert.match(body(res).issue[0].diagnostics, new RegExp(`\\(${consentRef}\\) does not permit disclosing this Observation for purpose TREAT`));
      assert.doesNotMatch(res.text, SECRET);
    }
    const record = await lastRecord('vread');
    assert.equal(record.outcome, '4');
    assert.deepEqual(record.purposeOfEvent, [{ coding: [{ system: ACT_REASON, code: 'TREAT' }] }]);
    assert.deepEqual(consentEntities(record).map((e: any) => [e.what.reference, e.detail?.[0].valueString]), [[consentRef, 'Observation']]);
    // The opt-in default denies the patient without a Consent: named as such.
    const byDefault = await get(`Condition/${ids.unconsentedCondition}`, PURPOSE);
    assert.equal(byDefault.status, 403);
    assert.match(body(byDefault).issue[0].diagnostics, /consortium default \(opt-in\)/);
  });

  it('read of a permitted type is served, its record naming the permitting Consent', async () => {
    const res = await get(`Condition/${ids.permittedCondition}`, PURPOSE);
    assert.equal(res.status, 200);
    assert.equal(body(res).id, ids.permittedCondition);
    const record = await lastRecord('read');
    assert.deepEqual(consentEntities(record).map((e: any) => [e.what.reference, e.detail]), [[consentRef, undefined]]);
  });

  it('a resource in no patient compartment is untouched by a stated purpose', async () => {
    const res = await get(`Practitioner/${ids.Practitioner}`, PURPOSE);
    assert.equal(res.status, 200);
    assert.equal(body(res).name[0].family, 'Careful');
    const search = body(await get('Practitioner', PURPOSE));
    assert.deepEqual(resources(search), [`Practitioner/${ids.Practitioner}`]);
    assert.equal(outcomeOf(search), undefined);
  });

  it('refuses a bad purpose on a read or a search before anything is read (400, no echo)', async () => {
    for (const path of [`Observation/${ids.permittedObservation}`, 'Observation', `Patient/${permitted}/Observation`, '_history']) {
      const res = await get(path, { 'X-Purpose-Of-Use': 'TREAT', 'X-Break-Glass-Reason': 'Mnbvcxy is unconscious' });
      assert.equal(res.status, 400, path);
      assert.doesNotMatch(res.text, SECRET);
    }
  });

  it('a type search leaves out what each patient\'s Consent withholds, saying how many and by which versions', async () => {
    const observations = body(await get('Observation', PURPOSE));
    assert.deepEqual(resources(observations), []);
    const issue = outcomeOf(observations).issue[0];
    assert.equal(issue.code, 'suppressed');
    assert.equal(issue.diagnostics, `2 resources withheld by consent (${consentRef}: Observation; the consortium default (opt-in): Observation)`);
    assert.doesNotMatch(JSON.stringify(observations), SECRET);

    const conditions = body(await get('Condition', PURPOSE));
    assert.deepEqual(resources(conditions), [`Condition/${ids.permittedCondition}`]);
    assert.equal(outcomeOf(conditions).issue[0].diagnostics, '1 resource withheld by consent (the consortium default (opt-in): Condition)');
    const record = await lastRecord('search-type');
    assert.deepEqual(consentEntities(record).map((e: any) => [e.what.reference ?? e.what.identifier.value, e.detail?.[0].valueString]).sort(), [[consentRef, undefined], ['default', 'Condition']]);
  });

  it('a compartment search, a search across types and _include are filtered the same way', async () => {
    const denied = body(await get(`Patient/${permitted}/Observation`, PURPOSE));
    assert.deepEqual(resources(denied), []);
    assert.match(outcomeOf(denied).issue[0].diagnostics, new RegExp(`^1 resource withheld by consent \\(${consentRef}: Observation\\)$`));
    const allowed = body(await get(`Patient/${permitted}/Condition`, PURPOSE));
    assert.deepEqual(resources(allowed), [`Condition/${ids.permittedCondition}`]);
    assert.equal(outcomeOf(allowed), undefined);

    const across = body(await get('?_type=Observation,Condition,Practitioner', PURPOSE));
    assert.deepEqual(resources(across), [`Condition/${ids.permittedCondition}`, `Practitioner/${ids.Practitioner}`].sort());
    assert.match(outcomeOf(across).issue[0].diagnostics, /^3 resources withheld by consent/);

    // The Patient is permitted, its Observations are not: an _revinclude brings none of them.
    const included = body(await get(`Patient?_id=${permitted}&_revinclude=Observation:subject`, PURPOSE));
    assert.deepEqual(resources(included), [`Patient/${permitted}`]);
    assert.match(outcomeOf(included).issue[0].diagnostics, /^1 resource withheld/);
  });

  it('histories leave out the withheld versions, each decided by its own content', async () => {
    const instance = body(await get(`Observation/${ids.permittedObservation}/_history`, PURPOSE));
    assert.deepEqual(resources(instance), []);
    assert.match(outcomeOf(instance).issue[0].diagnostics, new RegExp(`^2 resources withheld by consent \\(${consentRef}: Observation\\)$`));
    const type = body(await get('Condition/_history', PURPOSE));
    assert.deepEqual(resources(type), [`Condition/${ids.permittedCondition}`]);
    const system = body(await get('_history?_count=100', PURPOSE));
    const served = resources(system);
    assert.ok(served.includes(`Practitioner/${ids.Practitioner}`) && served.includes(`Condition/${ids.permittedCondition}`));
    assert.ok(!served.some((r: string) => r.startsWith('Observation/') || r === `Condition/${ids.unconsentedCondition}` || r === `Patient/${unconsented}`));
    assert.doesNotMatch(JSON.stringify(system), /Mnbvcxy|Zyxwvut marker/);
  });

  it('break-the-glass on a read: served, counted once, flagged, the record naming the Consent; a search over two denials counts once', async () => {
    const before = await breakGlassCount();
    const res = await get(`Observation/${ids.permittedObservation}`, GLASS);
    assert.equal(res.status, 200);
    assert.equal(body(res).id, ids.permittedObservation);
    assert.equal(await breakGlassCount(), before + 1);
    const record = await lastRecord('read');
    assert.deepEqual(record.meta.security, [{ system: ACT_REASON, code: 'BTG', display: 'break the glass' }]);
    assert.deepEqual(consentEntities(record).map((e: any) => e.what.reference), [consentRef]);
    assert.doesNotMatch(JSON.stringify(record), /collapsed|Mnbvcxy/, 'the reason is not stored');

    const search = body(await get('Observation', GLASS));
    assert.equal(resources(search).length, 2);
    assert.match(outcomeOf(search).issue[0].diagnostics, /^break-the-glass/);
    assert.equal(await breakGlassCount(), before + 2, 'one request, one count');

    // Nothing denied, nothing broken: a permitted read with ETREAT and a reason is neither counted nor flagged.
    assert.equal((await get(`Condition/${ids.permittedCondition}`, GLASS)).status, 200);
    assert.equal(await breakGlassCount(), before + 2);
    assert.equal((await lastRecord('read')).meta?.security, undefined);
  });

  it("a batch's GET entries are decided under the batch's purpose; its record names the decisions and break-the-glass counts once", async () => {
    const send = (headers: Record<string, string>) => {
      let req = t.http.post('/fhir').set('Authorization', `Bearer ${t.admin}`).set('Content-Type', FHIR_JSON);
      for (const [k, v] of Object.entries(headers)) req = req.set(k, v);
      return req.send(JSON.stringify({
        resourceType: 'Bundle', type: 'batch',
        entry: [
          { request: { method: 'GET', url: `Observation/${ids.permittedObservation}` } },
          { request: { method: 'GET', url: `Condition/${ids.permittedCondition}` } },
          { request: { method: 'GET', url: 'Observation' } },
        ],
      }));
    };
    const plain = body(await send({}));
    assert.deepEqual(plain.entry.map((e: any) => e.response.status), ['200 OK', '200 OK', '200 OK'], 'no purpose: as before');

    const decided = await send(PURPOSE);
    assert.equal(decided.status, 200);
    const [denied, permittedRead, search] = body(decided).entry;
    assert.match(denied.response.status, /^403/);
    assert.doesNotMatch(JSON.stringify(denied), SECRET);
    assert.equal(permittedRead.resource.id, ids.permittedCondition);
    assert.deepEqual(resources(search.resource), [], 'both Observations withheld from the search entry');
    // A bundle's record has the RESTful subtype `operation`, its outcome description names batch/transaction.
    const lastBatchRecord = async () => {
      const res = await t.http.get('/fhir/AuditEvent?_count=1000').set('Authorization', `Bearer ${t.admin}`);
      const records = (body(res).entry ?? []).map((e: any) => e.resource).filter((r: any) => / batch\/transaction$/.test(r.outcomeDesc ?? ''));
      return records.sort((a: any, b: any) => (a.recorded < b.recorded ? -1 : a.recorded > b.recorded ? 1 : 0)).at(-1);
    };
    const record = await lastBatchRecord();
    assert.deepEqual(record.purposeOfEvent, [{ coding: [{ system: ACT_REASON, code: 'TREAT' }] }]);
    assert.ok(consentEntities(record).some((e: any) => e.what.reference === consentRef), 'the batch record names the deciding Consent');

    const before = await breakGlassCount();
    const glass = body(await send(GLASS));
    assert.equal(glass.entry[0].resource.id, ids.permittedObservation, 'break-the-glass opens the denied read');
    assert.equal(await breakGlassCount(), before + 1, 'one batch, one count');
    assert.deepEqual((await lastBatchRecord()).meta.security, [{ system: ACT_REASON, code: 'BTG', display: 'break the glass' }]);

    const bad = await t.http.post('/fhir').set('Authorization', `Bearer ${t.admin}`).set('Content-Type', FHIR_JSON).set('X-Purpose-Of-Use', 'SHOPPING')
      .send(JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: 'Observation' } }] }));
    assert.equal(bad.status, 400, 'a bad purpose is refused before any entry runs');
  });
});
