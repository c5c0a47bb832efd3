/** `medblock consortium init` as an operator runs it: the files, their modes, consortium.json, refusals. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createPublicKey, X509Certificate } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runConsortiumInit } from '../../src/cli/consortium.ts';
import { certificateFingerprint, verifyMemberCertificate } from '../../src/identity/ca.ts';
import { ConsortiumConfigError, loadMemberConsortium } from '../../src/identity/consortium-dir.ts';
import { signingKeyUri } from '../../src/identity/signing-key.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'medblock.js');
const work = mkdtempSync(join(tmpdir(), 'medblock-consortium-'));
after(() => rmSync(work, { recursive: true, force: true }));

function medblock(...args: string[]) {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 });
}

function mode(path: string): number {
  return statSync(path).mode & 0o777;
}

function hasOpenssl(): boolean {
  return spawnSync('openssl', ['version'], { encoding: 'utf8' }).status === 0;
}

describe('medblock consortium init', () => {
  const out = join(work, 'nested', 'consortium');
  let init: ReturnType<typeof medblock>;
  before(() => {
    init = medblock('consortium', 'init', '--members', 'h1,h2,h3', '--out', out);
  });

  it('creates the CA, each member\'s certificate and keys, and consortium.json', () => {
    assert.equal(init.status, 0, init.stderr);
    assert.match(init.stdout, /created consortium "consortium" .*3 members \(h1, h2, h3\), quorum 2/);
    assert.deepEqual(readdirSync(out).sort(), ['ca', 'consortium.json', 'h1', 'h2', 'h3']);
    assert.deepEqual(readdirSync(join(out, 'ca')).sort(), ['ca.crt', 'ca.key']);
    for (const id of ['h1', 'h2', 'h3']) {
      assert.deepEqual(readdirSync(join(out, id)).sort(), ['member.crt', 'member.key', 'patient-token.key', 'signing.key', 'signing.pub']);
    }
  });

  it('makes private keys readable by the owner only', () => {
    assert.equal(mode(join(out, 'ca', 'ca.key')), 0o600);
    assert.equal(mode(join(out, 'ca')), 0o700);
    for (const id of ['h1', 'h2', 'h3']) {
      assert.equal(mode(join(out, id, 'member.key')), 0o600);
      assert.equal(mode(join(out, id, 'signing.key')), 0o600);
      assert.equal(mode(join(out, id)), 0o700);
    }
  });

  it('writes certificates that verify under the CA and match their keys and consortium.json', () => {
    const caPem = readFileSync(join(out, 'ca', 'ca.crt'), 'utf8');
    const config = JSON.parse(readFileSync(join(out, 'consortium.json'), 'utf8'));
    assert.equal(config.channel, 'consortium');
    assert.equal(config.quorum, 2);
    assert.equal(config.ca.certificate, 'ca/ca.crt');
    assert.equal(config.ca.sha256Fingerprint, certificateFingerprint(caPem));
    assert.deepEqual(config.members.map((m: { id: string }) => m.id), ['h1', 'h2', 'h3']);
    for (const member of config.members) {
      const certPem = readFileSync(join(out, member.certificate), 'utf8');
      const signingPub = readFileSync(join(out, member.id, 'signing.pub'), 'utf8');
      assert.equal(member.sha256Fingerprint, certificateFingerprint(certPem));
      assert.equal(member.signingPublicKey, signingPub);
      assert.equal(member.signingKey, signingKeyUri(signingPub));
      assert.deepEqual(verifyMemberCertificate(caPem, certPem), { ok: true, memberId: member.id, signingKeyUri: member.signingKey, reasons: [] });
      assert.ok(createPublicKey(readFileSync(join(out, member.id, 'member.key'), 'utf8')).equals(new X509Certificate(certPem).publicKey));
      assert.ok(createPublicKey(readFileSync(join(out, member.id, 'signing.key'), 'utf8')).equals(createPublicKey(signingPub)));
    }
    assert.doesNotMatch(readFileSync(join(out, 'consortium.json'), 'utf8'), /PRIVATE KEY/);
  });

  it('produces certificates OpenSSL reads and verifies', (t) => {
    if (!hasOpenssl()) {
      t.skip('openssl is not installed: the OpenSSL cross-check is skipped (every other assertion still runs)');
      return;
    }
    const text = spawnSync('openssl', ['x509', '-in', join(out, 'h1', 'member.crt'), '-noout', '-text'], { encoding: 'utf8' });
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, /Subject: CN\s?=\s?h1/);
    assert.match(text.stdout, /Public-Key: \(3072 bit\)/);
    assert.match(text.stdout, /Signature Algorithm: sha256WithRSAEncryption/);
    assert.match(text.stdout, /X509v3 Key Usage: critical\s+Digital Signature\n/);
    assert.match(text.stdout, /CA:FALSE/);
    assert.match(text.stdout, /URI:ni:\/\/\/sha-256;[A-Za-z0-9_-]{43}/);
    const caText = spawnSync('openssl', ['x509', '-in', join(out, 'ca', 'ca.crt'), '-noout', '-text'], { encoding: 'utf8' });
    assert.match(caText.stdout, /CA:TRUE, pathlen:0/);
    assert.match(caText.stdout, /Certificate Sign, CRL Sign/);
    const chain = spawnSync('openssl', ['verify', '-CAfile', join(out, 'ca', 'ca.crt'), join(out, 'h2', 'member.crt')], { encoding: 'utf8' });
    assert.equal(chain.status, 0, chain.stderr);
  });

  it('refuses to overwrite an existing directory, leaving it untouched', () => {
    const caKey = readFileSync(join(out, 'ca', 'ca.key'), 'utf8');
    const again = medblock('consortium', 'init', '--members', 'h1', '--out', out);
    assert.notEqual(again.status, 0);
    assert.match(again.stderr, /already exists; refusing to overwrite/);
    assert.equal(readFileSync(join(out, 'ca', 'ca.key'), 'utf8'), caKey);

    const empty = join(work, 'empty');
    mkdirSync(empty);
    const intoEmpty = medblock('consortium', 'init', '--members', 'h1', '--out', empty);
    assert.notEqual(intoEmpty.status, 0);
    assert.deepEqual(readdirSync(empty), []);

    const file = join(work, 'a-file');
    writeFileSync(file, 'keep me');
    assert.notEqual(medblock('consortium', 'init', '--members', 'h1', '--out', file).status, 0);
    assert.equal(readFileSync(file, 'utf8'), 'keep me');
  });

  it('refuses invalid or duplicate member ids and a bad quorum without creating anything', () => {
    for (const [members, error, extra] of [
      ['h1,../evil', /invalid member id "\.\.\/evil"/, []],
      ['h1,h2,h1', /duplicate member id "h1"/, []],
      ['', /invalid member id ""/, []],
      ['h1,h2', /quorum must be an integer between 1 and 2/, ['--quorum', '3']],
    ] as const) {
      const target = join(work, 'refused');
      const res = medblock('consortium', 'init', '--members', members, '--out', target, ...extra);
      assert.notEqual(res.status, 0, `--members ${JSON.stringify(members)}`);
      assert.match(res.stderr, error);
      assert.equal(existsSync(target), false);
    }
  });

  it('takes a channel name and quorum', () => {
    const target = join(work, 'custom');
    const res = medblock('consortium', 'init', '--members', 'north.hospital,south_hospital', '--out', target, '--channel', 'region-1', '--quorum', '1');
    assert.equal(res.status, 0, res.stderr);
    const config = JSON.parse(readFileSync(join(target, 'consortium.json'), 'utf8'));
    assert.equal(config.channel, 'region-1');
    assert.equal(config.quorum, 1);
    assert.deepEqual(config.members.map((m: { id: string }) => m.id), ['north.hospital', 'south_hospital']);
  });

  it('names the SSN as the link identifier system and opt-in as the default consent; loads a consortium.json without federation; refuses a bad one by field', () => {
    const written = { linkIdentifierSystems: ['http://hl7.org/fhir/sid/us-ssn'], defaultConsent: 'opt-in', members: {} };
    assert.deepEqual(JSON.parse(readFileSync(join(out, 'consortium.json'), 'utf8')).federation, written);
    assert.deepEqual(loadMemberConsortium(out, 'h1').federation, { linkIdentifierSystems: ['http://hl7.org/fhir/sid/us-ssn'], defaultConsent: 'opt-in', addresses: {} });
    const copy = join(work, 'federation-copy');
    cpSync(out, copy, { recursive: true });
    const config = JSON.parse(readFileSync(join(out, 'consortium.json'), 'utf8'));
    const withFederation = (federation: unknown) => {
      writeFileSync(join(copy, 'consortium.json'), JSON.stringify({ ...config, federation }));
      return () => loadMemberConsortium(copy, 'h1');
    };
    const none = { linkIdentifierSystems: [], defaultConsent: 'opt-in', addresses: {} };
    assert.deepEqual(withFederation(undefined)().federation, none, 'a consortium.json from before federation');
    assert.deepEqual(withFederation({})().federation, none);
    assert.deepEqual(
      withFederation({ defaultConsent: 'opt-out', members: { h2: { address: 'https://h2.example:8443' } } })().federation,
      { linkIdentifierSystems: [], defaultConsent: 'opt-out', addresses: { h2: 'https://h2.example:8443' } },
    );
    for (const [federation, error] of [
      [[], /federation must be an object/],
      [{ linkIdentifierSystems: 'http://hl7.org/fhir/sid/us-ssn' }, /federation\.linkIdentifierSystems must be an array/],
      [{ linkIdentifierSystems: ['http://a.org/x', 7] }, /federation\.linkIdentifierSystems\[1\] is not a usable identifier system/],
      [{ linkIdentifierSystems: [' http://a.org/x'] }, /federation\.linkIdentifierSystems\[0\] is not a usable identifier system \(the system has surrounding whitespace\)/],
      [{ linkIdentifierSystems: ['http://a.org/x|y'] }, /federation\.linkIdentifierSystems\[0\]/],
      [{ linkIdentifierSystems: ['http://a.org/x', 'http://a.org/x'] }, /federation\.linkIdentifierSystems\[1\] repeats/],
      [{ defaultConsent: 'ask' }, /federation\.defaultConsent must be one of opt-in, opt-out/],
      [{ members: [] }, /federation\.members must be an object keyed by member id/],
      [{ members: { h2: { address: 'http://h2.example:8443' } } }, /federation\.members\.h2\.address must use https/],
      [{ members: { h2: { address: 'https://h2.example:8443/fhir' } } }, /federation\.members\.h2\.address must be only https:\/\/host:port/],
      [{ members: { h2: {} } }, /federation\.members\.h2\.address must be an https URL/],
    ] as const) {
      assert.throws(withFederation(federation), (e: Error) => e instanceof ConsortiumConfigError && error.test(e.message), JSON.stringify(federation));
    }
  });

  it('writes --federation-addresses and --default-consent into consortium.json, which the gateway loads back', () => {
    const target = join(work, 'federated');
    const res = medblock(
      'consortium', 'init', '--members', 'h1,h2,h3', '--out', target,
      '--federation-addresses', 'h1=https://127.0.0.1:9441, h3=https://h3.example.org:8443', '--default-consent', 'opt-out',
    );
    assert.equal(res.status, 0, res.stderr);
    assert.match(res.stdout, /federation: 2 address\(es\), default consent opt-out/);
    assert.deepEqual(JSON.parse(readFileSync(join(target, 'consortium.json'), 'utf8')).federation, {
      linkIdentifierSystems: ['http://hl7.org/fhir/sid/us-ssn'],
      defaultConsent: 'opt-out',
      members: { h1: { address: 'https://127.0.0.1:9441' }, h3: { address: 'https://h3.example.org:8443' } },
    });
    const loaded = loadMemberConsortium(target, 'h2');
    assert.deepEqual(loaded.federation.addresses, { h1: 'https://127.0.0.1:9441', h3: 'https://h3.example.org:8443' });
    assert.equal(loaded.federation.defaultConsent, 'opt-out');
  });

  it('takes the address list docker/init-secrets.mjs passes', () => {
    const script = readFileSync(join(import.meta.dirname, '..', '..', 'docker', 'init-secrets.mjs'), 'utf8');
    assert.match(script, /'--federation-addresses', addresses/, 'init-secrets passes --federation-addresses');
    assert.match(script, /`\$\{h\}=https:\/\/\$\{h\}:8443`/, 'as <id>=https://<id>:8443');
    const hospitals = ['hospital-a', 'hospital-b', 'hospital-c'];
    const target = join(work, 'compose');
    const res = medblock(
      'consortium', 'init', '--members', hospitals.join(','), '--channel', 'consortium',
      '--federation-addresses', hospitals.map((h) => `${h}=https://${h}:8443`).join(','), '--out', target,
    );
    assert.equal(res.status, 0, res.stderr);
    assert.deepEqual(loadMemberConsortium(target, 'hospital-b').federation.addresses, Object.fromEntries(hospitals.map((h) => [h, `https://${h}:8443`])));
    assert.equal(loadMemberConsortium(target, 'hospital-b').federation.defaultConsent, 'opt-in');
  });

  it('refuses a bad federation address, an unknown or repeated member, and a bad default consent, naming them, without creating anything', async () => {
    const target = join(work, 'refused-federation');
    // Through the command line: commander's choice check, and the message an operator sees.
    for (const [extra, error] of [
      [['--default-consent', 'ask'], /--default-consent .*ask.* invalid\. Allowed choices are opt-in, opt-out/],
      [['--federation-addresses', 'h1=http://127.0.0.1:9441'], /^medblock: --federation-addresses h1: must use https\n$/],
    ] as const) {
      const res = medblock('consortium', 'init', '--members', 'h1,h2', '--out', target, ...extra);
      assert.notEqual(res.status, 0, extra.join(' '));
      assert.match(res.stderr, error, extra.join(' '));
      assert.equal(existsSync(target), false, extra.join(' '));
    }
    // In process (each refusal comes before any key is generated): every shape of a bad list.
    for (const [federationAddresses, error] of [
      ['h1=https://127.0.0.1:9441/fhir', /^Error: --federation-addresses h1: must be only https:\/\/host:port$/],
      ['h1=https://user@127.0.0.1:9441', /^Error: --federation-addresses h1: must be only https:\/\/host:port$/],
      ['h1=https://H1.example:443', /^Error: --federation-addresses h1: must be written as https:\/\/h1\.example$/],
      ['h1=not a url', /^Error: --federation-addresses h1: is not a URL$/],
      ['h1=', /^Error: --federation-addresses h1: is not a URL$/],
      [`h1=https://${'a'.repeat(250)}.org`, /^Error: --federation-addresses h1: must be an https URL of at most 256 characters$/],
      ['h1=https://a.org,h9=https://b.org', /^Error: --federation-addresses names "h9", which is not one of --members$/],
      ['h1=https://a.org,h1=https://b.org', /^Error: --federation-addresses gives h1 twice$/],
      ['https://a.org', /^Error: --federation-addresses entry 1 must be <member id>=https:\/\/host:port$/],
      ['h1=https://a.org,', /^Error: --federation-addresses entry 2 must be/],
    ] as const) {
      await assert.rejects(runConsortiumInit({ members: 'h1,h2', out: target, federationAddresses }), error, federationAddresses);
      assert.equal(existsSync(target), false, federationAddresses);
    }
    await assert.rejects(runConsortiumInit({ members: 'h1,h2', out: target, defaultConsent: 'opt-maybe' }), /^Error: --default-consent must be one of opt-in, opt-out$/);
    assert.equal(existsSync(target), false);
  });
});
