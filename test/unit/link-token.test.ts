/**
 * Link tokens (src/federation/link-token.ts): the vectors of docs/federation.md, read from the document itself
 * (computed there by an independent Python implementation), the edge cases, and every Synthea patient's SSN.
 */
import assert from 'node:assert/strict';
import { createSecretKey, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { linkToken, normalizeIdentifier, patientLinkTokens, UnlinkableIdentifierError, US_SSN_SYSTEM } from '../../src/federation/link-token.ts';

const doc = readFileSync(join(import.meta.dirname, '..', '..', 'docs', 'federation.md'), 'utf8');
const SYNTHEA = join(import.meta.dirname, '..', '..', '..', 'shared', 'fhir-data', 'synthea');

interface Vector { name: string; system: string; value: string; normalized?: string; token?: string }

/** Rows `| Ln | `system` | `"json string"` | `system\|value` or not linkable | `token` or — |`. */
function vectors(): { key: Buffer; rows: Vector[] } {
  const section = doc.slice(doc.indexOf('### Test vectors'));
  const key = /Key \(hex\): `([0-9a-f]{64})`/.exec(section);
  assert.ok(key, 'docs/federation.md names the vectors\' key');
  const rows = [...section.matchAll(/^\| (L\d+) \| `([^`]+)` \| `("[^`]*")` \| (?:`([^`]+)`|not linkable) \| (?:`([A-Za-z0-9_-]{43})`|—) \|$/gm)];
  return {
    key: Buffer.from(key[1], 'hex'),
    rows: rows.map(([, name, system, value, normalized, token]) => ({
      name,
      system,
      value: JSON.parse(value),
      normalized: normalized === undefined ? undefined : JSON.parse(`"${normalized.replace('\\|', '|')}"`),
      token,
    })),
  };
}

const unlinkable = (f: () => unknown) => assert.throws(f, UnlinkableIdentifierError);

describe('link tokens: the docs/federation.md vectors', () => {
  const { key, rows } = vectors();

  it('the document lists the eleven vectors', () => {
    assert.deepEqual(rows.map((v) => v.name), Array.from({ length: 11 }, (_, i) => `L${i + 1}`));
  });

  for (const v of rows) {
    it(`${v.name}: ${v.token ? 'normalizes and hashes to the documented token' : 'is not linkable'}`, () => {
      if (v.token === undefined) {
        unlinkable(() => normalizeIdentifier(v.system, v.value));
        unlinkable(() => linkToken(key, v.system, v.value));
        return;
      }
      const normalized = normalizeIdentifier(v.system, v.value);
      assert.equal(`${normalized.system}|${normalized.value}`, v.normalized);
      assert.equal(linkToken(key, v.system, v.value), v.token);
      assert.equal(linkToken(createSecretKey(key), v.system, v.value), v.token, 'a KeyObject gives the same token');
    });
  }
});

describe('link tokens: normalization edge cases', () => {
  const key = randomBytes(32);

  it('refuses empty, non-string and malformed systems and values, without echoing the value', () => {
    for (const [system, value] of [
      ['', '1'], ['  ', '1'], ['http://x.org/a b', '1'], ['http://x.org/a|b', '1'], ['http://x.org/\u0000', '1'], [42, '1'], [undefined, '1'],
      ['http://x.org', ''], ['http://x.org', ' \u3000 '], ['http://x.org', 42], ['http://x.org', null], ['http://x.org', 'a\uD800'],
    ] as const) {
      unlinkable(() => normalizeIdentifier(system, value));
    }
    assert.throws(() => linkToken(key, US_SSN_SYSTEM, '123-45-678'), (e: Error) => !e.message.includes('678'));
  });

  it('trims the system but never folds its case', () => {
    assert.equal(linkToken(key, ' http://x.org/id\n', 'A1'), linkToken(key, 'http://x.org/id', 'A1'));
    assert.notEqual(linkToken(key, 'HTTP://x.org/id', 'A1'), linkToken(key, 'http://x.org/id', 'A1'));
    assert.notEqual(linkToken(key, 'http://x.org/id', 'a1'), linkToken(key, 'http://x.org/id', 'A1'), 'values keep their case');
  });

  it('a value may contain "|", a system may not, so system|value splits one way only', () => {
    assert.match(linkToken(key, 'http://x.org/a', 'b|c'), /^[A-Za-z0-9_-]{43}$/);
    unlinkable(() => linkToken(key, 'http://x.org/a|b', 'c'));
  });

  it('US SSN: dashes and spaces only, nine ASCII digits, no never-issued number', () => {
    for (const ssn of ['123-45-6789', '123 45 6789', '123456789', '12-345-6789', '\t123-45-6789\u00a0']) {
      assert.equal(normalizeIdentifier(US_SSN_SYSTEM, ssn).value, '123456789');
    }
    for (const ssn of [
      '123–45–6789', '１２３４５６７８９', '123.45.6789', '12345678', '1234567890', 'SSN 123456789',
      '000-12-3456', '666-12-3456', '123-00-4567', '123-45-0000', '999-99-9999', '111111111',
    ]) {
      unlinkable(() => normalizeIdentifier(US_SSN_SYSTEM, ssn));
    }
    assert.equal(normalizeIdentifier(US_SSN_SYSTEM, '900-12-3456').value, '900123456', 'area 9xx (test SSNs) links');
  });

  it('a different key gives a different token', () => {
    assert.notEqual(linkToken(key, US_SSN_SYSTEM, '123-45-6789'), linkToken(randomBytes(32), US_SSN_SYSTEM, '123-45-6789'));
  });
});

describe('link tokens: patientLinkTokens', () => {
  const key = randomBytes(32);
  const at = new Date('2026-06-15T12:00:00Z');
  const ssn = (value: string, extra: object = {}) => ({ system: US_SSN_SYSTEM, value, ...extra });
  const tokensOf = (identifier: unknown, systems = [US_SSN_SYSTEM]) => patientLinkTokens(key, { resourceType: 'Patient', identifier }, systems, at);

  it('gives sorted, de-duplicated tokens of the configured systems only', () => {
    const tokens = tokensOf([ssn('123-45-6789'), ssn('123 45 6789'), { system: 'http://x.org/mrn', value: 'M1' }, ssn('234-56-7890')], [US_SSN_SYSTEM, 'http://x.org/mrn']);
    const expected = [linkToken(key, US_SSN_SYSTEM, '123456789'), linkToken(key, US_SSN_SYSTEM, '234567890'), linkToken(key, 'http://x.org/mrn', 'M1')];
    assert.deepEqual(tokens, [...expected].sort((a, b) => (a < b ? -1 : 1)));
    assert.deepEqual(tokensOf([{ system: 'http://x.org/mrn', value: 'M1' }]), [], 'a system not configured never links');
    assert.deepEqual(tokensOf([ssn('123-45-6789')], []), [], 'no configured system: no tokens');
  });

  it('skips, never throws on, bad identifiers and bad resources', () => {
    const good = linkToken(key, US_SSN_SYSTEM, '123456789');
    assert.deepEqual(tokensOf([null, 7, 'x', [], {}, { system: US_SSN_SYSTEM }, ssn(''), ssn('12'), ssn('a\uD800'), { system: 5, value: '1' }, ssn('123-45-6789')]), [good]);
    for (const patient of [null, undefined, 'Patient', 42, [], { identifier: 'x' }, { identifier: { system: US_SSN_SYSTEM } }]) {
      assert.deepEqual(patientLinkTokens(key, patient, [US_SSN_SYSTEM], at), []);
    }
  });

  it('skips identifiers marked old or whose period ended before the given time', () => {
    const good = linkToken(key, US_SSN_SYSTEM, '123456789');
    for (const end of ['2026-06-15T11:59:59Z', '2026-06-15T14:00:00+02:01', '2026-06-14', '2026-05', '2025', 'yesterday', 20260101, null]) {
      assert.deepEqual(tokensOf([ssn('123-45-6789', { period: { end } })]), [], `period.end ${JSON.stringify(end)}`);
    }
    assert.deepEqual(tokensOf([ssn('123-45-6789', { period: 'x' })]), [], 'a malformed period');
    assert.deepEqual(tokensOf([ssn('123-45-6789', { use: 'old' })]), []);
    for (const end of ['2026-06-15T12:00:01Z', '2026-06-15T14:00:00+01:59', '2026-06-15', '2026-06', '2026', '2030-01-01']) {
      assert.deepEqual(tokensOf([ssn('123-45-6789', { period: { end } })]), [good], `period.end ${end} has not passed`);
    }
    assert.deepEqual(tokensOf([ssn('123-45-6789', { use: 'official', period: { start: '2099' } })]), [good], 'period.start is not consulted');
  });
});

describe('link tokens: the Synthea patients', () => {
  const key = randomBytes(32);
  const patients = readdirSync(SYNTHEA).flatMap((dir) =>
    readdirSync(join(SYNTHEA, dir))
      .filter((file) => !/^(hospital|practitioner)Information/.test(file))
      .flatMap((file) => JSON.parse(readFileSync(join(SYNTHEA, dir, file), 'utf8')).entry
        .map((e: { resource: { resourceType: string } }) => e.resource)
        .filter((r: { resourceType: string }) => r.resourceType === 'Patient')));

  it('every patient has exactly one SSN link token, and no two patients share one', () => {
    assert.equal(patients.length, 11, 'eight smart-2019 and three hiv-2021 patients');
    const owners = new Map<string, string>();
    for (const patient of patients) {
      const tokens = patientLinkTokens(key, patient, [US_SSN_SYSTEM]);
      assert.equal(tokens.length, 1, `Patient/${patient.id} has one linkable SSN`);
      assert.match(tokens[0], /^[A-Za-z0-9_-]{43}$/);
      assert.equal(owners.get(tokens[0]), undefined, `Patient/${patient.id} shares a token with Patient/${owners.get(tokens[0])}`);
      owners.set(tokens[0], patient.id);
    }
  });

  it('the same person held under another local id, with the SSN written differently, gets the same token', () => {
    const [patient] = patients;
    const elsewhere = {
      ...patient,
      id: 'another-local-id',
      identifier: patient.identifier.map((i: { system: string; value: string }) =>
        (i.system === US_SSN_SYSTEM ? { ...i, value: ` ${i.value.replace(/-/g, ' ')} ` } : { ...i, value: `local-${i.value}` })),
    };
    assert.deepEqual(patientLinkTokens(key, elsewhere, [US_SSN_SYSTEM]), patientLinkTokens(key, patient, [US_SSN_SYSTEM]));
  });
});
