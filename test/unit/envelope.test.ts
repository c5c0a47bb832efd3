import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes, verify, type KeyObject } from 'node:crypto';
import { canonicalize } from '../../src/ledger/canonical-json.ts';
import {
  CommittedNonces,
  DEFAULT_MAX_ENVELOPE_BYTES,
  EnvelopeError,
  MAX_ANCHOR_ENTRIES,
  MAX_LINK_TOKENS,
  approveConfigChange,
  createEnvelope,
  encodeEnvelope,
  newNonce,
  parseEnvelope,
  validateBlockEnvelopes,
  validateEnvelope,
  type ConfigChange,
  type Envelope,
  type EnvelopeOf,
  type EnvelopeSigner,
  type EnvelopeVerdict,
  type ValidationContext,
} from '../../src/ledger/envelope.ts';
import { applyConfigChange, Membership, MembershipError, type MemberEntry } from '../../src/ledger/membership.ts';

// ---------------------------------------------------------------------------------------------
// Fixtures: a consortium h1..h4 where h4 is revoked from block 10.
// ---------------------------------------------------------------------------------------------

const CHANNEL = 'main';
const BLOCK = 20;

function p256(): { publicKey: KeyObject; privateKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' });
}

const keys = { h1: p256(), h2: p256(), h3: p256(), h4: p256(), outsider: p256() };
const signer = (memberId: keyof typeof keys): EnvelopeSigner => ({ memberId, privateKey: keys[memberId].privateKey });
const h1 = signer('h1');

const memberEntries: Record<string, MemberEntry> = {
  h1: { publicKey: keys.h1.publicKey },
  h2: { publicKey: keys.h2.publicKey.export({ type: 'spki', format: 'pem' }) as string }, // PEM form
  h3: { publicKey: keys.h3.publicKey },
  h4: { publicKey: keys.h4.publicKey, revokedAtBlock: 10 },
};
const members = new Membership(memberEntries);

function context(overrides: Partial<ValidationContext> = {}): ValidationContext {
  return { channel: CHANNEL, blockNumber: BLOCK, members, committedNonces: new CommittedNonces(), ...overrides };
}

const digest = (n: number): string => n.toString(16).padStart(64, '0');
const patientToken = (): string => randomBytes(32).toString('base64url');
const fakeCertificate = (): string =>
  `-----BEGIN CERTIFICATE-----\n${randomBytes(300).toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE-----\n`;

function anchor(entries = 3, by: EnvelopeSigner = h1): EnvelopeOf<'anchor'> {
  return createEnvelope(by, {
    channel: CHANNEL,
    type: 'anchor',
    payload: { entries: Array.from({ length: entries }, (_, i) => ({ digest: digest(i), type: 'Observation', patient: patientToken() })) },
  });
}

/** A config envelope by h1 approved by `approvers` (default h1, h2: a quorum of the 3 active members). */
function config(change: ConfigChange, approvers: EnvelopeSigner[] = [h1, signer('h2')], nonce = newNonce()): Envelope {
  const approvals = approvers.map((approver) => approveConfigChange(approver, CHANNEL, nonce, change));
  return createEnvelope(h1, { channel: CHANNEL, type: 'config', nonce, payload: { ...change, approvals } });
}

const h5SigningKey = p256().publicKey.export({ type: 'spki', format: 'pem' }).toString();
const addH5 = (): ConfigChange => ({ action: 'addMember', member: 'h5', certificate: fakeCertificate(), signingKey: h5SigningKey });

/** Wire bytes of an object as is, signature untouched (for shapes createEnvelope refuses to make). */
const wire = (value: unknown): Uint8Array => Buffer.from(canonicalize(value), 'utf8');

function assertRejected(verdict: EnvelopeVerdict, reason: string): void {
  assert.equal(verdict.valid, false, `expected ${reason}, got a valid envelope`);
  if (!verdict.valid) assert.equal(verdict.reason, reason, verdict.detail);
}

// ---------------------------------------------------------------------------------------------

describe('envelope round trip', () => {
  it('every envelope type encodes to canonical JSON and validates back to itself', () => {
    const envelopes: Envelope[] = [
      anchor(),
      createEnvelope(h1, { channel: CHANNEL, type: 'anchor', payload: { entries: [{ digest: digest(1), type: 'Patient' }] } }),
      createEnvelope(signer('h3'), { channel: CHANNEL, type: 'audit', payload: { entries: [{ digest: digest(7) }] } }),
      createEnvelope(h1, { channel: CHANNEL, type: 'consent', payload: { patient: patientToken(), digest: digest(2), status: 'active' } }),
      config(addH5()),
      config({ action: 'revokeMember', member: 'h3' }),
    ];
    for (const envelope of envelopes) {
      const bytes = encodeEnvelope(envelope);
      assert.equal(Buffer.from(bytes).toString('utf8'), canonicalize(envelope));
      const verdict = validateEnvelope(bytes, context());
      assert.ok(verdict.valid, verdict.valid ? '' : `${envelope.type}: ${verdict.reason} ${verdict.detail}`);
      assert.deepEqual(verdict.envelope, envelope);
      assert.deepEqual(parseEnvelope(bytes), verdict);
    }
  });

  it('createEnvelope fills a 128-bit nonce and the current instant, and keeps given ones', () => {
    const envelope = anchor();
    assert.equal(Buffer.from(envelope.nonce, 'base64url').length, 16);
    assert.ok(Math.abs(Date.parse(envelope.timestamp) - Date.now()) < 60_000);
    const fixed = createEnvelope(h1, {
      channel: CHANNEL,
      type: 'audit',
      payload: { entries: [{ digest: digest(1) }] },
      nonce: 'AAAAAAAAAAAAAAAAAAAAAA',
      timestamp: '2025-01-02T03:04:05.678Z',
    });
    assert.equal(fixed.nonce, 'AAAAAAAAAAAAAAAAAAAAAA');
    assert.equal(fixed.timestamp, '2025-01-02T03:04:05.678Z');
  });

  it('createEnvelope copies its input: changing the payload afterwards cannot change the envelope', () => {
    const payload = { entries: [{ digest: digest(1) }] };
    const envelope = createEnvelope(h1, { channel: CHANNEL, type: 'audit', payload });
    payload.entries[0].digest = digest(2);
    assert.equal(envelope.payload.entries[0].digest, digest(1));
  });

  it('createEnvelope and approveConfigChange refuse what validation would reject', () => {
    const refuse = (make: () => unknown) => assert.throws(make, EnvelopeError);
    const entry = { digest: digest(1), type: 'Patient' };
    refuse(() => createEnvelope(h1, { channel: CHANNEL, type: 'anchor', payload: { entries: [{ ...entry, patient: 'Jane Doe 1970-01-01' }] } }));
    refuse(() => createEnvelope(h1, { channel: CHANNEL, type: 'anchor', payload: { entries: [] } }));
    refuse(() => createEnvelope(h1, { channel: 'Main Channel', type: 'audit', payload: { entries: [{ digest: digest(1) }] } }));
    refuse(() => createEnvelope(h1, { channel: CHANNEL, type: 'audit', payload: { entries: [{ digest: digest(1) }] }, timestamp: '2025-02-30T00:00:00.000Z' }));
    refuse(() => createEnvelope({ memberId: 'h1', privateKey: generateKeyPairSync('ed25519').privateKey }, { channel: CHANNEL, type: 'audit', payload: { entries: [{ digest: digest(1) }] } }));
    refuse(() => approveConfigChange(h1, CHANNEL, newNonce(), { action: 'revokeMember', member: 'h2', certificate: fakeCertificate() }));
    refuse(() => approveConfigChange(h1, CHANNEL, 'short', { action: 'revokeMember', member: 'h2' }));
  });

  it('signatures are 64-byte IEEE P1363 and low-S; the high-S twin, which OpenSSL accepts, is rejected', () => {
    const order = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
    for (let i = 0; i < 20; i++) {
      const envelope = anchor(1);
      const signature = Buffer.from(envelope.signature, 'base64url');
      assert.equal(signature.length, 64);
      const s = BigInt(`0x${signature.subarray(32).toString('hex')}`);
      assert.ok(s <= order >> 1n);

      const twin = Buffer.from(signature);
      twin.write((order - s).toString(16).padStart(64, '0'), 32, 'hex');
      const { signature: _, ...unsigned } = envelope;
      const message = Buffer.from(`medblock/envelope/v1\n${canonicalize(unsigned)}`, 'utf8');
      assert.ok(verify('sha256', message, { key: keys.h1.publicKey, dsaEncoding: 'ieee-p1363' }, signature));
      assert.ok(verify('sha256', message, { key: keys.h1.publicKey, dsaEncoding: 'ieee-p1363' }, twin));
      assertRejected(validateEnvelope(wire({ ...envelope, signature: twin.toString('base64url') }), context()), 'bad-signature');
    }
  });
});

describe('envelope rejections', () => {
  it('malformed: not bytes, not UTF-8, not JSON, not canonical, not an envelope', () => {
    const good = anchor();
    const text = canonicalize(good);
    const cases: unknown[] = [
      undefined,
      null,
      text, // a string, not bytes
      [...Buffer.from(text)],
      new Uint8Array(0),
      Buffer.from([0xff, 0xfe, 0x7b, 0x7d]),
      Buffer.from(`\ufeff${text}`, 'utf8'), // BOM
      Buffer.from(`${text} `, 'utf8'),
      Buffer.from(JSON.stringify(good, null, 1), 'utf8'),
      Buffer.from(text.replace('"channel"', '"channel\\u0000"'), 'utf8'),
      Buffer.from(text.replace('"channel":"main"', '"channel":"m\\u0061in"'), 'utf8'), // another spelling of the same string
      wire([good]),
      wire({ ...good, extra: true }),
      Buffer.from(text.replace('{', '{"__proto__":{"polluted":true},'), 'utf8'),
      wire({ ...good, channel: 7 }),
      wire({ ...good, type: 'transfer' }),
      wire({ ...good, creator: '../h1' }),
      wire({ ...good, nonce: good.nonce.slice(1) }),
      wire({ ...good, nonce: `${good.nonce.slice(0, -1)}B` }), // non-zero padding bits: a second spelling of 16 bytes
      wire({ ...good, timestamp: '2025-01-01T00:00:00Z' }),
      wire({ ...good, timestamp: '2025-13-01T00:00:00.000Z' }),
      wire({ ...good, signature: Buffer.alloc(72).toString('base64url') }),
    ];
    for (const input of cases) assertRejected(validateEnvelope(input, context()), 'malformed');
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });

  it('malformed: numbers that have no canonical spelling and nesting beyond the canonical depth', () => {
    const text = canonicalize(anchor());
    for (const replacement of ['1e999', '-1e999', '12345678901234567890', '1.0', '-0', '0.1e1']) {
      assertRejected(validateEnvelope(Buffer.from(text.replace('"main"', replacement)), context()), 'malformed');
    }
    const deep = `${'['.repeat(5000)}${']'.repeat(5000)}`;
    assertRejected(validateEnvelope(Buffer.from(text.replace('"main"', deep)), context()), 'malformed');
    assertRejected(validateEnvelope(Buffer.from('['.repeat(100_000)), context()), 'malformed');
  });

  it('oversize: beyond the channel limit, checked before parsing', () => {
    const bytes = encodeEnvelope(anchor(20));
    assertRejected(validateEnvelope(bytes, context({ maxEnvelopeBytes: bytes.length - 1 })), 'oversize');
    assert.ok(validateEnvelope(bytes, context({ maxEnvelopeBytes: bytes.length })).valid);
    assertRejected(validateEnvelope(Buffer.alloc(DEFAULT_MAX_ENVELOPE_BYTES + 1, 0x20), context()), 'oversize');
  });

  it('the largest anchor with the longest resource types fits the default limit', () => {
    const envelope = createEnvelope(h1, {
      channel: CHANNEL,
      type: 'anchor',
      payload: { entries: Array.from({ length: MAX_ANCHOR_ENTRIES }, (_, i) => ({ digest: digest(i), type: `R${'x'.repeat(63)}`, patient: patientToken() })) },
    });
    assert.ok(validateEnvelope(encodeEnvelope(envelope), context()).valid);
  });

  it('wrong-channel', () => {
    const envelope = createEnvelope(h1, { channel: 'other', type: 'audit', payload: { entries: [{ digest: digest(1) }] } });
    assertRejected(validateEnvelope(encodeEnvelope(envelope), context()), 'wrong-channel');
  });

  it('unknown-creator', () => {
    const envelope = createEnvelope({ memberId: 'h9', privateKey: keys.outsider.privateKey }, { channel: CHANNEL, type: 'audit', payload: { entries: [{ digest: digest(1) }] } });
    assertRejected(validateEnvelope(encodeEnvelope(envelope), context()), 'unknown-creator');
  });

  it('revoked-creator: from revokedAtBlock on, not before', () => {
    const bytes = encodeEnvelope(anchor(1, signer('h4')));
    assertRejected(validateEnvelope(bytes, context({ blockNumber: 10 })), 'revoked-creator');
    assertRejected(validateEnvelope(bytes, context({ blockNumber: 11 })), 'revoked-creator');
    assert.ok(validateEnvelope(bytes, context({ blockNumber: 9 })).valid);
  });

  it('bad-signature: another key, a changed field, a signature of another envelope', () => {
    const impostor = createEnvelope({ memberId: 'h1', privateKey: keys.outsider.privateKey }, { channel: CHANNEL, type: 'audit', payload: { entries: [{ digest: digest(1) }] } });
    assertRejected(validateEnvelope(encodeEnvelope(impostor), context()), 'bad-signature');
    const good = anchor(2);
    const other = anchor(2);
    assertRejected(validateEnvelope(wire({ ...good, timestamp: '2020-01-01T00:00:00.000Z' }), context()), 'bad-signature');
    assertRejected(validateEnvelope(wire({ ...good, signature: other.signature }), context()), 'bad-signature');
    const moved = { ...good, payload: { entries: [...good.payload.entries].reverse() } };
    assertRejected(validateEnvelope(wire(moved), context()), 'bad-signature');
    assertRejected(validateEnvelope(wire({ ...good, signature: Buffer.alloc(64).toString('base64url') }), context()), 'bad-signature');
  });

  it('replayed-nonce: committed before, repeated in the same block, or outside the timestamp window', () => {
    const envelope = anchor();
    const bytes = encodeEnvelope(envelope);
    const committed = new CommittedNonces();
    committed.add('h2', envelope.nonce); // the same nonce from another creator is no replay
    assert.ok(validateEnvelope(bytes, context({ committedNonces: committed })).valid);
    committed.add('h1', envelope.nonce);
    assertRejected(validateEnvelope(bytes, context({ committedNonces: committed })), 'replayed-nonce');

    const other = encodeEnvelope(anchor());
    const verdicts = validateBlockEnvelopes([bytes, Buffer.from('junk'), other, bytes], context());
    assert.deepEqual(
      verdicts.map((v) => (v.valid ? 'valid' : v.reason)),
      ['valid', 'malformed', 'valid', 'replayed-nonce'],
    );

    // An invalid copy does not use up the nonce: the genuine envelope after it is still valid.
    const forged = wire({ ...envelope, timestamp: '2020-01-01T00:00:00.000Z' });
    assert.deepEqual(validateBlockEnvelopes([forged, bytes], context()).map((v) => v.valid), [false, true]);

    const window = (notBefore: string, notAfter: string) => context({ timestampWindow: { notBefore, notAfter } });
    const at = createEnvelope(h1, { channel: CHANNEL, type: 'audit', payload: { entries: [{ digest: digest(1) }] }, timestamp: '2025-06-01T12:00:00.000Z' });
    const atBytes = encodeEnvelope(at);
    assert.ok(validateEnvelope(atBytes, window('2025-06-01T12:00:00.000Z', '2025-06-01T12:00:00.000Z')).valid);
    assertRejected(validateEnvelope(atBytes, window('2025-06-01T12:00:00.001Z', '2025-06-02T00:00:00.000Z')), 'replayed-nonce');
    assertRejected(validateEnvelope(atBytes, window('2025-05-01T00:00:00.000Z', '2025-06-01T11:59:59.999Z')), 'replayed-nonce');
  });

  it('bad-payload: unknown members, PHI-shaped tokens, bounds, duplicates (checked before the signature)', () => {
    const good = anchor(2);
    const entry = good.payload.entries[0];
    const payloads: unknown[] = [
      null,
      [],
      'entries',
      {},
      { entries: [] },
      { entries: {} },
      { entries: [entry], extra: 1 },
      { entries: [{ ...entry, version: '2' }] },
      { entries: [{ ...entry, patient: 'Jane Doe' }] },
      { entries: [{ ...entry, patient: 'MRN-0012345678901234567890123456789012345' }] },
      { entries: [{ ...entry, patient: null }] },
      { entries: [{ ...entry, digest: 'AB'.repeat(32) }] },
      { entries: [{ ...entry, type: 'observation' }] },
      { entries: [entry, entry] },
      { entries: Array.from({ length: MAX_ANCHOR_ENTRIES + 1 }, (_, i) => ({ digest: digest(i), type: 'Patient' })) },
      { entries: [entry], ['__proto__']: { entries: [] } },
      JSON.parse('{"entries":[],"__proto__":{"entries":[{"digest":"00","type":"Patient"}]}}'),
    ];
    for (const payload of payloads) assertRejected(validateEnvelope(wire({ ...good, payload }), context()), 'bad-payload');

    const typed = (type: string, payload: unknown) => wire({ ...good, type, payload });
    assertRejected(validateEnvelope(typed('audit', { entries: [{ digest: digest(1), type: 'Patient' }] }), context()), 'bad-payload');
    assertRejected(validateEnvelope(typed('consent', { patient: patientToken(), digest: digest(1), status: 'draft' }), context()), 'bad-payload');
    assertRejected(validateEnvelope(typed('config', { action: 'revokeMember', member: 'h2', approvals: [] }), context()), 'bad-payload');
    assertRejected(validateEnvelope(typed('config', { action: 'addMember', member: 'h5', approvals: [{ member: 'h1', signature: good.signature }] }), context()), 'bad-payload');
    const approval = { member: 'h1', signature: good.signature };
    assertRejected(validateEnvelope(typed('config', { action: 'revokeMember', member: 'h2', approvals: [approval, approval] }), context()), 'bad-payload');
  });

  it('bad-payload: config changes that do not fit the membership (checked after the signature)', () => {
    assertRejected(validateEnvelope(encodeEnvelope(config({ ...addH5(), member: 'h2' })), context()), 'bad-payload');
    assertRejected(validateEnvelope(encodeEnvelope(config({ ...addH5(), member: 'h4' })), context()), 'bad-payload'); // revoked ids stay taken
    assertRejected(validateEnvelope(encodeEnvelope(config({ action: 'revokeMember', member: 'h4' })), context()), 'bad-payload');
    assertRejected(validateEnvelope(encodeEnvelope(config({ action: 'revokeMember', member: 'h9' })), context()), 'bad-payload');
  });

  it('no-quorum: too few approvals, approvals from non-members or revoked members, approvals of something else', () => {
    const ok = (envelope: Envelope, ctx = context()) => assert.ok(validateEnvelope(encodeEnvelope(envelope), ctx).valid);
    const noQuorum = (envelope: Envelope, ctx = context()) => assertRejected(validateEnvelope(encodeEnvelope(envelope), ctx), 'no-quorum');

    ok(config(addH5(), [h1, signer('h2')]));
    ok(config(addH5(), [signer('h3'), signer('h2'), h1]));
    noQuorum(config(addH5(), [h1]));
    noQuorum(config(addH5(), [h1, { memberId: 'h9', privateKey: keys.outsider.privateKey }]));
    noQuorum(config(addH5(), [h1, signer('h4')])); // h4 is revoked at block 20
    noQuorum(config(addH5(), [h1, signer('h4')]), context({ blockNumber: 5 })); // 4 active members at block 5: quorum 3
    ok(config(addH5(), [h1, signer('h2'), signer('h4')]), context({ blockNumber: 5 }));
    noQuorum(config(addH5(), [h1, { memberId: 'h2', privateKey: keys.h3.privateKey }]));

    // An approval is bound to its envelope's nonce and to the exact change.
    const change = addH5();
    const nonce = newNonce();
    const stale = approveConfigChange(signer('h2'), CHANNEL, newNonce(), change);
    const otherCertificate = approveConfigChange(signer('h2'), CHANNEL, nonce, { ...change, certificate: fakeCertificate() });
    const otherChannel = approveConfigChange(signer('h2'), 'other', nonce, change);
    for (const approval of [stale, otherCertificate, otherChannel]) {
      const approvals = [approveConfigChange(h1, CHANNEL, nonce, change), approval];
      noQuorum(createEnvelope(h1, { channel: CHANNEL, type: 'config', nonce, payload: { ...change, approvals } }));
    }

    // An envelope signature is not an approval (domain separation), even over the same bytes' worth of fields.
    const h2Envelope = createEnvelope(signer('h2'), { channel: CHANNEL, type: 'config', nonce, payload: { ...change, approvals: [approveConfigChange(h1, CHANNEL, nonce, change)] } });
    const borrowed = [approveConfigChange(h1, CHANNEL, nonce, change), { member: 'h2', signature: h2Envelope.signature }];
    noQuorum(createEnvelope(h1, { channel: CHANNEL, type: 'config', nonce, payload: { ...change, approvals: borrowed } }));
  });
});

describe('federation fields (docs/federation.md, "On the ledger")', () => {
  const sortedTokens = (n: number): string[] => Array.from({ length: n }, patientToken).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const anchorWith = (entry: Record<string, unknown>) => wire({ ...anchor(1), payload: { entries: [{ digest: digest(1), ...entry }] } });
  const auditWith = (entry: Record<string, unknown>) => wire({ ...anchor(1), type: 'audit', payload: { entries: [{ digest: digest(1), ...entry }] } });

  it('accepts a resource locator and a sorted link set with the patient locator, and an erasure record naming a locator', () => {
    const links = sortedTokens(MAX_LINK_TOKENS);
    const envelope = createEnvelope(h1, {
      channel: CHANNEL,
      type: 'anchor',
      payload: {
        entries: [
          { digest: digest(1), patient: patientToken(), resource: patientToken(), links },
          { digest: digest(2), patient: patientToken(), resource: patientToken(), links: [] },
          { digest: digest(3), patient: patientToken(), resource: patientToken() },
        ],
      },
    });
    const verdict = validateEnvelope(encodeEnvelope(envelope), context());
    assert.ok(verdict.valid);
    assert.deepEqual((verdict.envelope as EnvelopeOf<'anchor'>).payload.entries[0].links, links);
    const erasure = createEnvelope(h1, { channel: CHANNEL, type: 'audit', payload: { entries: [{ digest: digest(4), erased: patientToken() }] } });
    assert.ok(validateEnvelope(encodeEnvelope(erasure), context()).valid);
  });

  it('bad-payload: a resource or link set without a patient, PHI-shaped or unsorted tokens, too many links, a malformed erasure', () => {
    const [a, b] = sortedTokens(2);
    const patient = patientToken();
    const rejectedAnchors: Array<Record<string, unknown>> = [
      { resource: patientToken() },
      { links: [a] },
      { links: [] },
      { patient, resource: 'Patient/123' },
      { patient, resource: 'urn:oid:2.16.840.1.113883.4.1|123-45-6789' },
      { patient, resource: `${patientToken()}=` },
      { patient, resource: null },
      { patient, links: [b, a] },
      { patient, links: [a, a] },
      { patient, links: ['123-45-6789'] },
      { patient, links: [a.slice(0, -1)] },
      { patient, links: a },
      { patient, links: null },
      { patient, links: [...sortedTokens(MAX_LINK_TOKENS + 1)] },
    ];
    for (const entry of rejectedAnchors) assertRejected(validateEnvelope(anchorWith(entry), context()), 'bad-payload');
    for (const erased of ['Patient/123', null, '', `${a}A`, [a]]) assertRejected(validateEnvelope(auditWith({ erased }), context()), 'bad-payload');
    assertRejected(validateEnvelope(auditWith({ erased: a, patient }), context()), 'bad-payload');
    assertRejected(validateEnvelope(auditWith({ links: [a] }), context()), 'bad-payload');
    assert.throws(
      () => createEnvelope(h1, { channel: CHANNEL, type: 'anchor', payload: { entries: [{ digest: digest(1), patient, links: [b, a] }] } }),
      EnvelopeError,
    );
  });
});

describe('config change setFederationAddress', () => {
  const moveH2 = (address = 'https://h2.example.org:8443'): ConfigChange => ({ action: 'setFederationAddress', member: 'h2', address });

  it('is valid with a quorum of approvals for an active member, and moves its address from the next block', () => {
    const verdict = validateEnvelope(encodeEnvelope(config(moveH2())), context());
    assert.ok(verdict.valid);
    const before = new Membership({ ...memberEntries, h2: { ...memberEntries.h2, federationAddress: 'https://old.example.org' } });
    assert.equal(before.federationAddress('h2'), 'https://old.example.org');
    const after = applyConfigChange(before, moveH2(), BLOCK + 1);
    assert.equal(after.federationAddress('h2'), 'https://h2.example.org:8443');
    assert.equal(after.federationAddress('h1'), undefined);
    assert.equal(applyConfigChange(after, { action: 'revokeMember', member: 'h3' }, BLOCK + 2).federationAddress('h2'), 'https://h2.example.org:8443');
  });

  it('an added member may bring its address; approvals cover it', () => {
    const change = { ...addH5(), federationAddress: 'https://h5.example.org' };
    assert.ok(validateEnvelope(encodeEnvelope(config(change)), context()).valid);
    assert.equal(applyConfigChange(members, change, BLOCK + 1).federationAddress('h5'), 'https://h5.example.org');
    // An approval of the change without the address does not approve the change with it.
    const nonce = newNonce();
    const approvals = [approveConfigChange(h1, CHANNEL, nonce, change), approveConfigChange(signer('h2'), CHANNEL, nonce, addH5())];
    assertRejected(validateEnvelope(encodeEnvelope(createEnvelope(h1, { channel: CHANNEL, type: 'config', nonce, payload: { ...change, approvals } })), context()), 'no-quorum');
  });

  it('refuses bad addresses, misplaced fields, inactive members and too few approvals', () => {
    for (const address of ['http://h2.example.org', 'https://h2.example.org/fhir', 'https://user:pw@h2.example.org', 'https://H2.example.org', `https://${'h'.repeat(250)}.org`, 'h2.example.org']) {
      assert.throws(() => config(moveH2(address)), EnvelopeError, address);
    }
    const good = config(moveH2());
    const { approvals } = good.payload as { approvals: unknown };
    const bad: unknown[] = [
      { action: 'setFederationAddress', member: 'h2', approvals },
      { action: 'setFederationAddress', member: 'h2', address: 'http://h2.example.org', approvals },
      { action: 'setFederationAddress', member: 'h2', address: 'https://h2.example.org', certificate: fakeCertificate(), approvals },
      { action: 'setFederationAddress', member: 'h2', address: 'https://h2.example.org', federationAddress: 'https://h2.example.org', approvals },
      { action: 'revokeMember', member: 'h2', address: 'https://h2.example.org', approvals },
      { ...addH5(), address: 'https://h5.example.org', approvals },
      { ...addH5(), federationAddress: 'ftp://h5.example.org', approvals },
    ];
    for (const payload of bad) assertRejected(validateEnvelope(wire({ ...good, payload }), context()), 'bad-payload');
    assertRejected(validateEnvelope(encodeEnvelope(config({ ...moveH2(), member: 'h4' })), context()), 'bad-payload'); // revoked
    assertRejected(validateEnvelope(encodeEnvelope(config({ ...moveH2(), member: 'h9' })), context()), 'bad-payload'); // unknown
    assertRejected(validateEnvelope(encodeEnvelope(config(moveH2(), [signer('h2')])), context()), 'no-quorum');
  });

  it('a membership refuses a malformed federation address', () => {
    assert.throws(() => new Membership({ a: { publicKey: keys.h1.publicKey, federationAddress: 'http://a.example.org' } }), MembershipError);
  });
});

describe('envelope validation is total and deterministic', () => {
  it('one bit flipped anywhere in the wire bytes makes the envelope invalid, without throwing', () => {
    for (const envelope of [anchor(2), config(addH5())]) {
      const bytes = Buffer.from(encodeEnvelope(envelope));
      const reasons = new Map<string, number>();
      for (let bit = 0; bit < bytes.length * 8; bit++) {
        const flipped = Buffer.from(bytes);
        flipped[bit >> 3] ^= 1 << (bit & 7);
        const verdict = validateEnvelope(flipped, context());
        assert.equal(verdict.valid, false, `bit ${bit} flipped still validates`);
        if (!verdict.valid) reasons.set(verdict.reason, (reasons.get(verdict.reason) ?? 0) + 1);
      }
      assert.ok(reasons.has('malformed') && reasons.has('bad-signature'), JSON.stringify([...reasons]));
    }
  });

  /** mulberry32: a seeded generator, so a failing fuzz case can be replayed. */
  function seeded(seed: number): () => number {
    return () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  it('2,000 random and mutated inputs: never throws, never validates a changed envelope, same verdict twice', () => {
    const random = seeded(0x5eed);
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)];
    const int = (below: number): number => Math.floor(random() * below);
    const bytesOf = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => int(256)));

    const seeds = [anchor(3), config(addH5()), createEnvelope(h1, { channel: CHANNEL, type: 'consent', payload: { patient: patientToken(), digest: digest(3), status: 'inactive' } })];
    const seedTexts = seeds.map((envelope) => canonicalize(envelope));
    const nasty: unknown[] = [
      null, true, 0, -1, 1.5, 2 ** 53 + 2, '', 'x'.repeat(1000), '\u2028', [], {}, [[[[[]]]]],
      JSON.parse('{"__proto__":{"valid":true,"polluted":1}}'),
      JSON.parse('{"constructor":{"prototype":{"polluted":1}}}'),
      { toString: 'x', hasOwnProperty: 'y', valueOf: 1 },
    ];
    const fragments = ['1e999', '-0', '12345678901234567890', '"\\ud800"', '{"__proto__":{"polluted":1}}', '['.repeat(2000), 'null', '"', '\\', '\u0000', ',', '}', '{'];

    /** Replace one random node of a parsed envelope, keeping the text canonical so the deeper checks run. */
    function mutateStructure(value: unknown): unknown {
      if (typeof value !== 'object' || value === null || random() < 0.25) return pick(nasty);
      const keys = Object.keys(value);
      if (keys.length === 0 || random() < 0.1) return pick(nasty);
      const copy: Record<string, unknown> | unknown[] = Array.isArray(value) ? [...value] : { ...value };
      const key = pick(keys);
      (copy as Record<string, unknown>)[key] = mutateStructure((value as Record<string, unknown>)[key]);
      if (!Array.isArray(copy) && random() < 0.1) Object.defineProperty(copy, pick(['__proto__', 'extra', 'prototype']), { value: pick(nasty), enumerable: true });
      return copy;
    }

    function mutateBytes(text: string): Buffer {
      const bytes = Buffer.from(text, 'utf8');
      switch (int(5)) {
        case 0: {
          for (let flips = 1 + int(4); flips > 0; flips--) bytes[int(bytes.length)] ^= 1 << int(8);
          return bytes;
        }
        case 1:
          return bytes.subarray(0, int(bytes.length));
        case 2: {
          const at = int(bytes.length);
          return Buffer.concat([bytes.subarray(0, at), bytesOf(1 + int(8)), bytes.subarray(at)]);
        }
        case 3: {
          const at = int(text.length);
          return Buffer.from(text.slice(0, at) + pick(fragments) + text.slice(at + int(4)), 'utf8');
        }
        default: {
          const at = int(bytes.length);
          return Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + 1 + int(16))]);
        }
      }
    }

    const counts = new Map<string, number>();
    for (let i = 0; i < 2000; i++) {
      const which = int(seeds.length);
      let input: Uint8Array;
      switch (i % 4) {
        case 0:
          input = bytesOf(int(300));
          break;
        case 1:
        case 2:
          input = mutateBytes(seedTexts[which]);
          break;
        default: {
          let mutated: unknown;
          try {
            input = Buffer.from(canonicalize((mutated = mutateStructure(JSON.parse(seedTexts[which])))), 'utf8');
          } catch {
            input = Buffer.from(JSON.stringify(mutated) ?? 'undefined', 'utf8');
          }
        }
      }
      const first = validateEnvelope(input, context());
      const second = validateEnvelope(Buffer.from(input), context());
      assert.deepEqual(second, first, `case ${i}: not deterministic`);
      const unchanged = Buffer.from(input).equals(Buffer.from(seedTexts[which], 'utf8'));
      if (!unchanged) assert.equal(first.valid, false, `case ${i}: a changed envelope validates: ${Buffer.from(input).toString('hex')}`);
      const label = first.valid ? 'valid' : first.reason;
      counts.set(label, (counts.get(label) ?? 0) + 1);
    }
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.equal(({} as Record<string, unknown>).valid, undefined);
    for (const reason of ['malformed', 'bad-payload', 'bad-signature']) assert.ok(counts.has(reason), JSON.stringify([...counts]));
  });

  it('the same bytes get the same verdict from independently built memberships and contexts', () => {
    const inputs = [encodeEnvelope(anchor()), encodeEnvelope(config(addH5())), encodeEnvelope(anchor(1, signer('h4'))), Buffer.from('{}')];
    const verdictsOf = () => validateBlockEnvelopes(inputs, { ...context(), members: new Membership(new Map(Object.entries(memberEntries))) });
    const first = verdictsOf();
    assert.deepEqual(verdictsOf(), first);
    assert.deepEqual(first.map((v) => (v.valid ? 'valid' : v.reason)), ['valid', 'valid', 'revoked-creator', 'malformed']);
  });
});

describe('membership', () => {
  it('accepts P-256 keys as KeyObject or SPKI PEM, and refuses anything else', () => {
    const pem = keys.h1.publicKey.export({ type: 'spki', format: 'pem' }) as string;
    assert.equal(new Membership({ a: { publicKey: pem } }).get('a')?.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    const refused: Record<string, MemberEntry>[] = [
      { a: { publicKey: generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey } },
      { a: { publicKey: generateKeyPairSync('ed25519').publicKey } },
      { a: { publicKey: keys.h1.privateKey } },
      { a: { publicKey: 'not a key' } },
      { 'bad id': { publicKey: keys.h1.publicKey } },
      { a: { publicKey: keys.h1.publicKey, revokedAtBlock: -1 } },
      { a: { publicKey: keys.h1.publicKey, revokedAtBlock: 1.5 } },
    ];
    for (const entries of refused) assert.throws(() => new Membership(entries), MembershipError);
  });

  it('revocation applies from revokedAtBlock; quorum is a strict majority of active members', () => {
    assert.equal(members.isActiveAt('h4', 9), true);
    assert.equal(members.isActiveAt('h4', 10), false);
    assert.equal(members.isActiveAt('h9', 0), false);
    assert.deepEqual([members.activeCountAt(9), members.quorumAt(9)], [4, 3]);
    assert.deepEqual([members.activeCountAt(10), members.quorumAt(10)], [3, 2]);
    assert.equal(new Membership({ a: { publicKey: keys.h1.publicKey } }).quorumAt(0), 1);
  });
});
