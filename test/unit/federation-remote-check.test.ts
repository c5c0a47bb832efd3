/**
 * The caller's verification of a holder's entries (src/federation/remote-check.ts): every rejection reason,
 * and a resource edited in flight, which recomputes to a commitment nobody anchored.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkRemoteEntries, MalformedHolderPageError, readHolderPage } from '../../src/federation/remote-check.ts';
import { bundleText, FakeLedger, type SentEntry } from '../support/fake-holders.ts';

const HOLDER = 'h2';
const LOCATOR = 'L'.repeat(43);
const observation = (value: string) => ({
  resourceType: 'Observation',
  id: 'obs-1',
  status: 'final',
  code: { text: 'weight' },
  subject: { reference: 'Patient/p2' },
  valueQuantity: { value: 72.5, unit: 'kg' },
  note: [{ text: value }],
});

async function check(ledger: FakeLedger, entries: SentEntry[] | string) {
  const page = readHolderPage(typeof entries === 'string' ? entries : bundleText(entries));
  const commitments = page.candidates.flatMap((c) => (c.ok ? [c.commitment] : []));
  return checkRemoteEntries(HOLDER, new Set([LOCATOR]), page.candidates, await ledger.anchorFacts(commitments));
}

describe('remote check: what the caller accepts of a holder', () => {
  it('accepts an entry anchored by the holder, where it says, for the linked patient', async () => {
    const ledger = new FakeLedger();
    const sent = ledger.anchor(observation('a'), HOLDER, LOCATOR);
    const result = await check(ledger, [sent]);
    assert.deepEqual(result.rejected, {});
    assert.equal(result.accepted.length, 1);
    assert.equal(result.accepted[0].commitment, sent.commitment);
    assert.equal(result.accepted[0].type, 'Observation');
  });

  it('verifies decimals by their lexeme: 72.50 as stored verifies, the 72.5 a JSON.parse would give does not', async () => {
    const ledger = new FakeLedger();
    const stored = JSON.stringify(observation('a')).replace('"value":72.5', '"value":72.50');
    const sent = ledger.anchor(stored, HOLDER, LOCATOR);
    assert.equal((await check(ledger, [sent])).accepted.length, 1);
    const reparsed = { ...sent, json: JSON.stringify(JSON.parse(sent.json)) };
    assert.deepEqual((await check(ledger, [reparsed])).rejected, { 'not-anchored': 1 });
  });

  it('rejects a resource edited in flight (one field changed): not-anchored', async () => {
    const ledger = new FakeLedger();
    const sent = ledger.anchor(observation('original note'), HOLDER, LOCATOR);
    const tampered = { ...sent, json: sent.json.replace('original note', 'edited note') };
    const result = await check(ledger, [tampered]);
    assert.equal(result.accepted.length, 0);
    assert.deepEqual(result.rejected, { 'not-anchored': 1 });
  });

  it('rejects an entry whose salt was swapped: not-anchored', async () => {
    const ledger = new FakeLedger();
    const sent = ledger.anchor(observation('a'), HOLDER, LOCATOR);
    const result = await check(ledger, [{ ...sent, salt: 'ab'.repeat(32) }]);
    assert.deepEqual(result.rejected, { 'not-anchored': 1 });
  });

  it('rejects a version another member anchored: anchored-by-another-member', async () => {
    const ledger = new FakeLedger();
    const sent = ledger.anchor(observation('a'), 'h3', LOCATOR);
    assert.deepEqual((await check(ledger, [sent])).rejected, { 'anchored-by-another-member': 1 });
  });

  it('rejects a claimed location the ledger does not hold: location-mismatch', async () => {
    const ledger = new FakeLedger();
    const sent = ledger.anchor(observation('a'), HOLDER, LOCATOR);
    const moved = { ...sent, anchor: { ...sent.anchor, entryIndex: sent.anchor.entryIndex + 1 } };
    assert.deepEqual((await check(ledger, [moved])).rejected, { 'location-mismatch': 1 });
  });

  it('rejects a version anchored under a patient the link token does not name: other-patient', async () => {
    const ledger = new FakeLedger();
    const sent = ledger.anchor(observation('a'), HOLDER, 'M'.repeat(43));
    assert.deepEqual((await check(ledger, [sent])).rejected, { 'other-patient': 1 });
  });

  it('rejects a superseded version and an erased one', async () => {
    const ledger = new FakeLedger();
    const old = ledger.anchor(observation('old'), HOLDER, LOCATOR, { superseded: true });
    const erased = ledger.anchor(observation('gone'), HOLDER, LOCATOR, { erased: true });
    assert.deepEqual((await check(ledger, [old, erased])).rejected, { superseded: 1, erased: 1 });
  });

  it('rejects a bad salt and malformed entries, and counts them apart', async () => {
    const ledger = new FakeLedger();
    const sent = ledger.anchor(observation('a'), HOLDER, LOCATOR);
    const noAnchor = `{"resource":${sent.json},"search":{"mode":"match"}}`;
    const noResource = `{"extension":[],"search":{"mode":"match"}}`;
    const badId = bundleText([{ ...sent, json: sent.json.replace('"id":"obs-1"', '"id":"../x"') }]);
    const page = bundleText([{ ...sent, salt: 'xyz' }, { ...sent, salt: 'AB'.repeat(32) }], undefined, [noAnchor, noResource]);
    assert.deepEqual((await check(ledger, page)).rejected, { 'bad-salt': 2, malformed: 2 });
    assert.deepEqual((await check(ledger, badId)).rejected, { malformed: 1 });
  });

  it('refuses a page that is not a searchset Bundle', () => {
    assert.throws(() => readHolderPage('not json'), MalformedHolderPageError);
    assert.throws(() => readHolderPage('{"resourceType":"Bundle","type":"collection"}'), MalformedHolderPageError);
    assert.throws(() => readHolderPage('{"resourceType":"Bundle","type":"searchset","entry":{}}'), MalformedHolderPageError);
  });

  it('reads a holder outcome whose diagnostics is not a string as no count (no TypeError from String())', () => {
    const coding = [{ system: 'https://medblock.dev/fhir/CodeSystem/federation', code: 'not-yet-anchored' }];
    for (const diagnostics of [{ toString: 1 }, { valueOf: 'x' }, ['7 versions'], 7]) {
      const text = JSON.stringify({ resourceType: 'Bundle', type: 'searchset', entry: [{ search: { mode: 'outcome' }, resource: { issue: [{ details: { coding }, diagnostics }, null] } }] });
      assert.equal(readHolderPage(text).notYetAnchored, 0);
    }
  });

  it('takes only the _cursor of the next link, and the not-yet-anchored count of the outcome', () => {
    const outcome = `{"resource":{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"incomplete","details":{"coding":[{"system":"https://medblock.dev/fhir/CodeSystem/federation","code":"not-yet-anchored"}]},"diagnostics":"3 versions not yet anchored are left out"}]},"search":{"mode":"outcome"}}`;
    const page = readHolderPage(bundleText([], '0:1:abc', [outcome]));
    assert.equal(page.nextCursor, '0:1:abc');
    assert.equal(page.notYetAnchored, 3);
    assert.equal(page.candidates.length, 0);
  });
});
