/** The vault's small crypto modules: sealing with AAD, blind index tokens, the master key ring. */
import assert from 'node:assert/strict';
import { createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { BlindIndex, INDEX_FORMAT } from '../../src/vault/blind-index.ts';
import { newKey, open, seal, SealError } from '../../src/vault/seal.ts';
import { KeyringError, masterKeyId, MasterKeyring } from '../../src/vault/keyring.ts';

const dir = mkdtempSync(join(tmpdir(), 'medblock-keyring-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('seal/open (AES-256-GCM with AAD)', () => {
  const key = newKey();
  const plaintext = Buffer.from('{"resourceType":"Patient","id":"p1"}');

  it('round-trips, with a fresh nonce every time', () => {
    const a = seal(key, plaintext, 'ctx');
    const b = seal(key, plaintext, 'ctx');
    assert.notDeepEqual(Buffer.from(a), Buffer.from(b));
    assert.deepEqual(open(key, a, 'ctx'), plaintext);
    assert.equal(a.length, 1 + 12 + plaintext.length + 16);
  });

  it('refuses another context, another key, a flipped bit, a truncation, an unknown format', () => {
    const sealed = Buffer.from(seal(key, plaintext, 'Patient/p1/1'));
    assert.throws(() => open(key, sealed, 'Patient/p1/2'), SealError);
    assert.throws(() => open(newKey(), sealed, 'Patient/p1/1'), SealError);
    for (const i of [1, 13, sealed.length - 1]) {
      const flipped = Buffer.from(sealed);
      flipped[i] ^= 1;
      assert.throws(() => open(key, flipped, 'Patient/p1/1'), SealError);
    }
    assert.throws(() => open(key, sealed.subarray(0, 20), 'Patient/p1/1'), SealError);
    assert.throws(() => open(key, Buffer.concat([Buffer.of(2), sealed.subarray(1)]), 'Patient/p1/1'), SealError);
  });
});

describe('BlindIndex', () => {
  const key = randomBytes(32);
  const index = new BlindIndex(key);

  it('is HMAC-SHA-256(HKDF(key, type 0 param), value)[0..16] in base64url, computed independently', () => {
    const subkey = hkdfSync('sha256', key, new Uint8Array(0), `${INDEX_FORMAT}\0Observation\0code`, 32);
    const mac = createHmac('sha256', new Uint8Array(subkey)).update('http://loinc.org|8867-4').digest().subarray(0, 16);
    assert.equal(index.token('Observation', 'code', 'http://loinc.org|8867-4'), mac.toString('base64url'));
    // A value longer than one SHA-256 block, and non-ASCII.
    const long = 'Ä'.repeat(100);
    assert.equal(index.token('Observation', 'code', long), createHmac('sha256', new Uint8Array(subkey)).update(long).digest().subarray(0, 16).toString('base64url'));
  });

  it('is deterministic, batch equals single, and separates types, params and keys', () => {
    const terms = [{ param: 'code', value: 'A' }, { param: 'code', value: 'B' }, { param: 'status', value: 'A' }];
    const batch = index.tokens('Observation', terms);
    assert.deepEqual(batch, terms.map((t) => index.token('Observation', t.param, t.value)));
    assert.equal(new Set(batch).size, 3);
    assert.ok(batch.every((t) => /^[A-Za-z0-9_-]{22}$/.test(t)));
    assert.notEqual(index.token('Condition', 'code', 'A'), batch[0]);
    assert.notEqual(new BlindIndex(randomBytes(32)).token('Observation', 'code', 'A'), batch[0]);
    assert.deepEqual(index.tokens('Observation', []), []);
  });
});

describe('MasterKeyring', () => {
  it('creates a key file with mode 0600 at first use and loads the same key afterwards', () => {
    const file = join(dir, 'a', 'master-keys.json');
    const ring = MasterKeyring.open({ file });
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, 'a')).mode & 0o777, 0o700);
    const again = MasterKeyring.open({ file });
    assert.equal(again.current.id, ring.current.id);
    assert.deepEqual(again.current.key, ring.current.key);
    assert.equal(ring.current.id, masterKeyId(ring.current.key));
  });

  it('accepts a bare base64 key file (a mounted secret) and a key from the environment', () => {
    const key = randomBytes(32);
    const file = join(dir, 'secret');
    writeFileSync(file, `${key.toString('base64')}\n`);
    assert.equal(MasterKeyring.open({ file }).current.id, masterKeyId(key));
    assert.equal(MasterKeyring.open({ envKey: key.toString('base64') }).current.id, masterKeyId(key));
    assert.throws(() => MasterKeyring.open({ envKey: 'c2hvcnQ=' }), /must be 32 bytes/);
    writeFileSync(file, '{"format":"something-else"}');
    assert.throws(() => MasterKeyring.open({ file }), KeyringError);
  });

  it('rotates in two idempotent steps: begin (resumable) and finish (drops the retiring keys)', () => {
    const file = join(dir, 'b', 'master-keys.json');
    const ring = MasterKeyring.open({ file });
    const old = ring.current.id;
    const begun = ring.beginRotation();
    assert.equal(begun.resumed, false);
    assert.deepEqual(ring.retiringIds, [old]);
    assert.ok(ring.key(old), 'the old key still unwraps during the rotation');
    // A second process sees the rotation and resumes it instead of adding a key.
    const other = MasterKeyring.open({ file });
    assert.deepEqual(other.beginRotation(), { id: begun.id, resumed: true });
    assert.deepEqual(other.finishRotation(), [old]);
    const ring3 = JSON.parse(readFileSync(file, 'utf8'));
    assert.deepEqual(Object.keys(ring3.keys), [begun.id]);
    assert.equal(MasterKeyring.open({ envKey: randomBytes(32).toString('base64') }).file, undefined);
    assert.throws(() => MasterKeyring.open({ envKey: randomBytes(32).toString('base64') }).beginRotation(), /needs the master key in a key file/);
  });
});
