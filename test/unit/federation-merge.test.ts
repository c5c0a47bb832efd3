/** The merged federated record (src/federation/merge.ts) and its paging snapshots (src/federation/snapshots.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mergeRecord, recordPage, type HolderReport, type LocalEntry } from '../../src/federation/merge.ts';
import type { AcceptedEntry } from '../../src/federation/remote-check.ts';
import { formatRecordCursor, parseRecordCursor, RecordSnapshots } from '../../src/federation/snapshots.ts';
import { parseFhirJson } from '../../src/fhir/json.ts';

const local: LocalEntry[] = [
  { type: 'Patient', id: 'p1', json: '{"resourceType":"Patient","id":"p1","link":[{"other":{"reference":"Patient/old"},"type":"replaces"}]}', commitment: '1'.repeat(64), mode: 'match' },
  { type: 'Observation', id: 'o1', json: '{"resourceType":"Observation","id":"o1","valueQuantity":{"value":1.50}}', commitment: '2'.repeat(64), mode: 'match' },
  { type: 'Practitioner', id: 'dr', json: '{"resourceType":"Practitioner","id":"dr"}', commitment: '3'.repeat(64), mode: 'include' },
];

function accepted(holder: string, type: string, id: string, commitment: string, block: number, extra: object = {}): AcceptedEntry {
  return { holder, type, id, resource: { resourceType: type, id, ...extra }, commitment, anchor: { blockNumber: block, envelopeIndex: 1, entryIndex: 2 } };
}

function holder(member: string, entries: AcceptedEntry[], over: Partial<HolderReport> = {}): HolderReport {
  return { member, base: `https://${member}.test/federation/fhir`, result: 'ok', accepted: entries, rejected: {}, notYetAnchored: 0, ...over };
}

const merge = (holders: HolderReport[]) => mergeRecord({ baseUrl: 'https://h1.test/fhir', local, localPatients: ['p1'], holders, notes: [], recorded: '2024-05-01T00:00:00.000Z' });
const resourceOf = (e: { resourceJson?: string; resource?: object }) => (e.resourceJson ? parseFhirJson(e.resourceJson) : e.resource) as Record<string, any>;

describe('merging the federated record', () => {
  const h2 = holder('h2', [
    accepted('h2', 'Patient', 'p1', 'a'.repeat(64), 7, { meta: { source: 'ehr-x' } }),
    accepted('h2', 'Observation', 'o9', 'b'.repeat(64), 8, { valueQuantity: { value: parseFhirJson('2.50') } }),
    accepted('h2', 'Observation', 'o9', 'b'.repeat(64), 8), // the same version again (e.g. on two pages)
    accepted('h2', 'Observation', 'same-as-local', '2'.repeat(64), 9), // a commitment the local record holds
  ]);
  const h3 = holder('h3', [accepted('h3', 'Patient', 'p3', 'c'.repeat(64), 4)]);

  it('one entry per version: duplicates dropped, the local copy of a commitment wins', () => {
    const record = merge([h2, h3]);
    const urls = record.entries.map((e) => e.fullUrl);
    assert.deepEqual(urls.slice(0, 6), [
      'https://h1.test/fhir/Patient/p1',
      'https://h1.test/fhir/Observation/o1',
      'https://h1.test/fhir/Practitioner/dr',
      'https://h2.test/federation/fhir/Patient/p1',
      'https://h2.test/federation/fhir/Observation/o9',
      'https://h3.test/federation/fhir/Patient/p3',
    ]);
    assert.equal(record.entries.length, 8, 'plus one Provenance per holder');
    assert.equal(record.total, 5, 'matches only: the included Practitioner and the Provenances are not counted');
  });

  it('local entries are served as stored; remote ones name their holder in meta.source, decimals kept', () => {
    const record = merge([h2, h3]);
    assert.equal(record.entries[1].resourceJson, local[1].json);
    assert.equal(resourceOf(record.entries[3]).meta.source, 'urn:medblock:member:h2');
    assert.match(record.entries[4].resourceJson!, /"value":2\.50/);
  });

  it("links the Patients of different hospitals with Patient.link seealso, keeping their own links", () => {
    const record = merge([h2, h3]);
    const linksOf = (i: number) => resourceOf(record.entries[i]).link.map((l: any) => `${l.type} ${l.other.reference}`);
    assert.deepEqual(linksOf(0), ['replaces Patient/old', 'seealso https://h2.test/federation/fhir/Patient/p1', 'seealso https://h3.test/federation/fhir/Patient/p3']);
    assert.deepEqual(linksOf(3), ['seealso https://h1.test/fhir/Patient/p1', 'seealso https://h3.test/federation/fhir/Patient/p3']);
    assert.deepEqual(linksOf(5), ['seealso https://h1.test/fhir/Patient/p1', 'seealso https://h2.test/federation/fhir/Patient/p1']);
  });

  it('one Provenance per holder: its entries as targets with their anchors, the member as custodian, the blocks as entities', () => {
    const record = merge([h2, h3]);
    const provenance = resourceOf(record.entries[6]);
    assert.equal(provenance.resourceType, 'Provenance');
    assert.deepEqual(provenance.target.map((t: any) => t.reference), ['https://h2.test/federation/fhir/Patient/p1', 'https://h2.test/federation/fhir/Observation/o9']);
    assert.deepEqual(provenance.target[0].extension[0].extension.map((x: any) => [x.url, x.valueUnsignedInt]), [['blockNumber', 7], ['envelopeIndex', 1], ['entryIndex', 2]]);
    assert.deepEqual(provenance.agent[0].who, { type: 'Organization', identifier: { system: 'urn:medblock:member', value: 'h2' } });
    assert.deepEqual(provenance.entity.map((e: any) => e.what.identifier.value), ['7', '8']);
    assert.match(record.entries[6].fullUrl!, /^urn:uuid:[0-9a-f-]{36}$/);
  });

  it('the outcome names each holder that failed or sent rejected entries, by member id and counts', () => {
    const record = merge([
      holder('h2', [], { result: 'timeout', timeoutMs: 5000 }),
      holder('h3', [], { result: 'refused', status: 403 }),
      holder('h4', [], { result: 'unreachable' }),
      holder('h5', [], { rejected: { 'not-anchored': 2, superseded: 1 }, notYetAnchored: 3 }),
      holder('h6', []),
    ]);
    assert.deepEqual(record.outcome?.issue.map((i) => [i.severity, i.code, i.diagnostics]), [
      ['warning', 'timeout', 'member h2 did not answer within 5000 ms; its part of the record is missing'],
      ['warning', 'forbidden', 'member h3 refused the request (HTTP 403); its part of the record is missing'],
      ['warning', 'transient', 'member h4 is unreachable; its part of the record is missing'],
      ['warning', 'security', "member h5: 3 entries failed verification against this gateway's ledger and are left out (2 not-anchored, 1 superseded)"],
      ['information', 'incomplete', 'member h5: 3 versions not yet anchored there are left out'],
    ]);
  });

  it('pages the merged record, with the outcome on every page', () => {
    const record = merge([h2, holder('h9', [], { result: 'unreachable' })]);
    const page = (offset: number) => JSON.parse(recordPage(record, offset, 2, { self: 's', next: offset + 2 < record.entries.length ? 'n' : undefined }));
    const pages = [page(0), page(2), page(4)];
    assert.equal(record.entries.length, 6);
    assert.deepEqual(pages.map((p) => p.entry.length), [3, 3, 3]);
    assert.ok(pages.every((p) => p.entry.at(-1).search.mode === 'outcome' && p.total === 4));
    assert.deepEqual(pages.map((p) => p.link.map((l: any) => l.relation).join()), ['self,next', 'self,next', 'self']);
    const fullUrls = pages.flatMap((p) => p.entry.slice(0, -1).map((e: any) => e.fullUrl));
    assert.equal(new Set(fullUrls).size, record.entries.length, 'pages neither repeat nor skip an entry');
  });
});

describe('paging snapshots', () => {
  const record = { entries: [], total: 0 };

  it('gives a kept record back to the same binding only, until it expires', () => {
    let now = 0;
    const snapshots = new RecordSnapshots(1000, 10, () => now);
    const id = snapshots.put('alice\0Patient/p1', record);
    assert.equal(snapshots.get(id, 'alice\0Patient/p1'), record);
    assert.equal(snapshots.get(id, 'mallory\0Patient/p1'), undefined, "another user's cursor is unknown to them");
    assert.equal(snapshots.get(id, 'alice\0Patient/p2'), undefined);
    now = 1000;
    assert.equal(snapshots.get(id, 'alice\0Patient/p1'), undefined, 'expired');
  });

  it('drops the oldest when too many are held', () => {
    const snapshots = new RecordSnapshots(60_000, 2);
    const first = snapshots.put('a', record);
    const second = snapshots.put('a', record);
    snapshots.put('a', record);
    assert.equal(snapshots.get(first, 'a'), undefined);
    assert.equal(snapshots.get(second, 'a'), record);
  });

  it('cursors are <128-bit id>.<offset>; anything else is not one', () => {
    const id = new RecordSnapshots().put('a', record);
    assert.deepEqual(parseRecordCursor(formatRecordCursor(id, 40)), { id, offset: 40 });
    for (const bad of ['', `${id}`, `${id}.-1`, `${id}.01`, `x.1`, `${id}.1.2`]) assert.equal(parseRecordCursor(bad), undefined);
  });
});
