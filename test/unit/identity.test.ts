/** Consortium CA and member certificates: fields, chain verification, validity windows, tampering, CSR flow. */
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, X509Certificate } from 'node:crypto';
import { before, describe, it } from 'node:test';
import forge from 'node-forge';
import {
  CA_VALIDITY_YEARS,
  createCa,
  createConsortium,
  createMemberRequest,
  issueMemberCertificate,
  MEMBER_VALIDITY_YEARS,
  RSA_BITS,
  verifyMemberCertificate,
  type CaMaterial,
  type Consortium,
  type MemberRequest,
} from '../../src/identity/ca.ts';
import { signingKeyUri } from '../../src/identity/signing-key.ts';

const NOW = new Date('2030-06-01T12:00:00Z');
const YEAR_MS = 365 * 24 * 3600_000;

let consortium: Consortium;
let otherCa: CaMaterial;
before(async () => {
  [consortium, otherCa] = await Promise.all([createConsortium({ members: ['h1', 'h2', 'h3'], now: NOW }), createCa({ now: NOW })]);
});

function extension<T>(certPem: string, name: string): T {
  return forge.pki.certificateFromPem(certPem).getExtension(name) as T;
}

/** The certificate with one byte of its signed part changed: "CN=h1" becomes "CN=h9". */
function tamperCommonName(certPem: string): string {
  const der = Buffer.from(new X509Certificate(certPem).raw);
  // commonName OID 2.5.4.3, then a string tag, length 2, "h1"
  const at = der.findIndex((_, i) => der.subarray(i, i + 3).equals(Buffer.from([0x55, 0x04, 0x03])) && der.subarray(i + 4, i + 7).toString('latin1') === '\x02h1');
  assert.ok(at > 0, 'CN bytes found');
  der[at + 6] = 0x39;
  return toPem('CERTIFICATE', der);
}

function toPem(label: string, der: Buffer): string {
  return `-----BEGIN ${label}-----\n${der.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END ${label}-----\n`;
}

describe('consortium CA', () => {
  it('is a self-signed RSA CA with keyCertSign/cRLSign, pathLen 0 and a 10-year validity', () => {
    const ca = new X509Certificate(consortium.ca.certPem);
    assert.ok(ca.ca);
    assert.ok(ca.checkIssued(ca) && ca.verify(ca.publicKey));
    assert.equal(ca.publicKey.asymmetricKeyDetails?.modulusLength, RSA_BITS);
    const constraints = extension<Record<string, unknown>>(consortium.ca.certPem, 'basicConstraints');
    assert.equal(constraints.critical, true);
    assert.equal(constraints.cA, true);
    assert.equal(constraints.pathLenConstraint, 0);
    const usage = extension<Record<string, unknown>>(consortium.ca.certPem, 'keyUsage');
    assert.equal(usage.critical, true);
    assert.equal(usage.keyCertSign, true);
    assert.equal(usage.cRLSign, true);
    assert.equal(usage.digitalSignature, false);
    const cert = forge.pki.certificateFromPem(consortium.ca.certPem);
    assert.ok(cert.validity.notBefore <= NOW);
    assert.equal(cert.validity.notAfter.getUTCFullYear(), NOW.getUTCFullYear() + CA_VALIDITY_YEARS);
    assert.equal(cert.siginfo.algorithmOid, forge.pki.oids.sha256WithRSAEncryption);
    assert.equal(createPrivateKey(consortium.ca.keyPem).asymmetricKeyType, 'rsa');
  });
});

describe('member certificates', () => {
  it('carry CN = member id, a random positive serial, digitalSignature only, TLS EKUs, 3-year validity and the signing-key name', () => {
    const serials = new Set<string>();
    const caKeyId = extension<{ subjectKeyIdentifier: string }>(consortium.ca.certPem, 'subjectKeyIdentifier').subjectKeyIdentifier;
    for (const member of consortium.members) {
      const cert = forge.pki.certificateFromPem(member.certPem);
      assert.equal(cert.subject.getField('CN').value, member.id);
      assert.match(cert.serialNumber, /^[4-7][0-9a-f]{31}$/);
      serials.add(cert.serialNumber);
      const usage = extension<Record<string, unknown>>(member.certPem, 'keyUsage');
      assert.equal(usage.critical, true);
      assert.deepEqual(
        ['digitalSignature', 'nonRepudiation', 'keyEncipherment', 'dataEncipherment', 'keyAgreement', 'keyCertSign', 'cRLSign'].filter((k) => usage[k]),
        ['digitalSignature'],
      );
      const eku = extension<Record<string, unknown>>(member.certPem, 'extKeyUsage');
      assert.ok(eku.serverAuth && eku.clientAuth);
      assert.equal(extension<{ cA: boolean }>(member.certPem, 'basicConstraints').cA, false);
      assert.ok(cert.validity.notBefore <= NOW);
      assert.equal(cert.validity.notAfter.getUTCFullYear(), NOW.getUTCFullYear() + MEMBER_VALIDITY_YEARS);
      const altNames = extension<{ altNames: { type: number; value: string }[] }>(member.certPem, 'subjectAltName').altNames;
      assert.deepEqual(altNames.map((n) => [n.type, n.value]), [[6, signingKeyUri(member.signingPublicKeyPem)]]);
      const x509 = new X509Certificate(member.certPem);
      assert.ok(createPublicKey(member.keyPem).equals(x509.publicKey), 'member.key matches the certificate');
      // forge does not decode authorityKeyIdentifier; its DER ends with the 20-byte key id.
      assert.equal(forge.util.bytesToHex(extension<{ value: string }>(member.certPem, 'authorityKeyIdentifier').value).slice(-40), caKeyId);
    }
    assert.equal(serials.size, 3);
  });

  it('default to the consortium channel and a majority quorum', () => {
    assert.equal(consortium.channel, 'consortium');
    assert.equal(consortium.quorum, 2);
    assert.deepEqual(consortium.members.map((m) => m.id), ['h1', 'h2', 'h3']);
  });

  it('give each member a P-256 envelope-signing key that signs and verifies', () => {
    const member = consortium.members[0];
    const key = createPrivateKey(member.signingKeyPem);
    assert.equal(key.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    const envelope = Buffer.from('{"channel":"consortium"}');
    assert.ok(verify('sha256', envelope, createPublicKey(member.signingPublicKeyPem), sign('sha256', envelope, key)));
  });

  it('signingKeyUri refuses a key that is not P-256', () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
    assert.throws(() => signingKeyUri(publicKey.export({ type: 'spki', format: 'pem' }).toString()), /ECDSA P-256/);
  });
});

describe('verifyMemberCertificate', () => {
  it('accepts every member certificate under its CA and reports its id and signing key', () => {
    for (const member of consortium.members) {
      assert.deepEqual(verifyMemberCertificate(consortium.ca.certPem, member.certPem, { at: NOW }), {
        ok: true,
        memberId: member.id,
        signingKeyUri: signingKeyUri(member.signingPublicKeyPem),
        reasons: [],
      });
    }
  });

  it('rejects a certificate checked against another CA, even one with the same name', () => {
    const result = verifyMemberCertificate(otherCa.certPem, consortium.members[0].certPem, { at: NOW });
    assert.equal(result.ok, false);
    assert.equal(result.memberId, 'h1');
    assert.match(result.reasons.join('\n'), /not issued by this CA/);
  });

  it('rejects a certificate outside its validity window', () => {
    const cert = forge.pki.certificateFromPem(consortium.members[0].certPem);
    const expired = verifyMemberCertificate(consortium.ca.certPem, consortium.members[0].certPem, { at: new Date(cert.validity.notAfter.getTime() + 1000) });
    assert.equal(expired.ok, false);
    assert.match(expired.reasons.join('\n'), /certificate is not valid at/);
    const early = verifyMemberCertificate(consortium.ca.certPem, consortium.members[0].certPem, { at: new Date(cert.validity.notBefore.getTime() - 1000) });
    assert.equal(early.ok, false);
    assert.equal(verifyMemberCertificate(consortium.ca.certPem, consortium.members[0].certPem, { at: cert.validity.notAfter }).ok, true);
  });

  it('rejects everything once the CA itself has expired', () => {
    const result = verifyMemberCertificate(consortium.ca.certPem, consortium.members[0].certPem, { at: new Date(NOW.getTime() + 11 * YEAR_MS) });
    assert.equal(result.ok, false);
    assert.match(result.reasons.join('\n'), /CA certificate is not valid at/);
  });

  it('rejects a tampered certificate and never throws on garbage', () => {
    const tampered = verifyMemberCertificate(consortium.ca.certPem, tamperCommonName(consortium.members[0].certPem), { at: NOW });
    assert.equal(tampered.ok, false);
    assert.equal(tampered.memberId, 'h9');
    assert.match(tampered.reasons.join('\n'), /signature does not verify/);
    const garbage = verifyMemberCertificate(consortium.ca.certPem, 'not a certificate', { at: NOW });
    assert.equal(garbage.ok, false);
    assert.match(garbage.reasons[0], /cannot be parsed/);
    assert.equal(verifyMemberCertificate('nope', consortium.members[0].certPem).ok, false);
  });

  it('rejects the CA certificate presented as a member certificate', () => {
    const result = verifyMemberCertificate(consortium.ca.certPem, consortium.ca.certPem, { at: NOW });
    assert.equal(result.ok, false);
    const reasons = result.reasons.join('\n');
    assert.match(reasons, /is a CA certificate/);
    assert.match(reasons, /lacks keyUsage digitalSignature/);
    assert.match(reasons, /exactly one envelope-signing key/);
  });
});

describe('adding a member through a CSR', () => {
  let joining: Awaited<ReturnType<typeof createMemberRequest>>;
  before(async () => {
    joining = await createMemberRequest('h4');
  });

  it('the CA signs a valid request into a certificate that verifies', () => {
    const certPem = issueMemberCertificate(consortium.ca, joining.request, 'h4', { now: NOW });
    const result = verifyMemberCertificate(consortium.ca.certPem, certPem, { at: NOW });
    assert.deepEqual(result, { ok: true, memberId: 'h4', signingKeyUri: signingKeyUri(joining.request.signingPublicKeyPem), reasons: [] });
    assert.ok(createPublicKey(joining.keyPem).equals(new X509Certificate(certPem).publicKey));
    assert.ok(createPublicKey(joining.signingKeyPem).equals(createPublicKey(joining.request.signingPublicKeyPem)));
  });

  it('refuses a request for another member id', () => {
    assert.throws(() => issueMemberCertificate(consortium.ca, joining.request, 'h5'), /CSR is for "h4", not "h5"/);
  });

  it('refuses a request whose signing key was swapped', () => {
    const swapped: MemberRequest = { ...joining.request, signingPublicKeyPem: consortium.members[0].signingPublicKeyPem };
    assert.throws(() => issueMemberCertificate(consortium.ca, swapped, 'h4'), /does not name the signing key/);
  });

  it('refuses a request without proof of possession of the signing key', () => {
    const forged = sign('sha256', Buffer.from('something else'), createPrivateKey(joining.signingKeyPem)).toString('base64');
    assert.throws(() => issueMemberCertificate(consortium.ca, { ...joining.request, signingKeyProof: forged }, 'h4'), /proof of possession/);
  });

  it('refuses a CSR whose self-signature does not verify', () => {
    const der = Buffer.from(forge.util.decode64(joining.request.csrPem.replace(/-----[^-]+-----|\s/g, '')), 'latin1');
    der[der.length - 1] ^= 1; // the last byte of the signature
    const tampered = { ...joining.request, csrPem: toPem('CERTIFICATE REQUEST', der) };
    assert.throws(() => issueMemberCertificate(consortium.ca, tampered, 'h4'), /self-signature/);
  });
});

describe('createConsortium input checks', () => {
  const cases: [string, Parameters<typeof createConsortium>[0], RegExp][] = [
    ['no members', { members: [] }, /at least one member/],
    ['a duplicate', { members: ['h1', 'h2', 'h1'] }, /duplicate member id "h1"/],
    ['an id starting with a dot', { members: ['.h1'] }, /invalid member id/],
    ['an id with a slash', { members: ['h1/../x'] }, /invalid member id/],
    ['an empty id', { members: ['h1', ''] }, /invalid member id ""/],
    ['a 65-character id', { members: ['a'.repeat(65)] }, /invalid member id/],
    ['a quorum above the member count', { members: ['h1', 'h2'], quorum: 3 }, /quorum must be an integer between 1 and 2/],
    ['a zero quorum', { members: ['h1'], quorum: 0 }, /quorum/],
    ['a bad channel name', { members: ['h1'], channel: 'a b' }, /invalid channel name/],
  ];
  for (const [name, options, error] of cases) {
    it(`refuses ${name}`, async () => assert.rejects(createConsortium(options), error));
  }

  it('accepts the longest valid id and a custom quorum', async () => {
    const single = await createConsortium({ members: ['a'.repeat(64)], quorum: 1 });
    assert.equal(single.quorum, 1);
    assert.equal(verifyMemberCertificate(single.ca.certPem, single.members[0].certPem).memberId, 'a'.repeat(64));
  });
});
