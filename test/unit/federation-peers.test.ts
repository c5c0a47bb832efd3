/**
 * TLS peer certificate → active member (src/federation/peers.ts), on certificates of a real consortium CA:
 * a certificate identifies a member only while the ledger counts it active and names the signing key the
 * ledger holds for it.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { before, describe, it } from 'node:test';
import { checkPeer } from '../../src/federation/peers.ts';
import { createCa, issueMemberCertificate } from '../../src/identity/ca.ts';
import { genesisMembership, loadMemberConsortium, type MemberConsortium } from '../../src/identity/consortium-dir.ts';
import { applyConfigChange, Membership } from '../../src/ledger/membership.ts';
import { testConsortium } from '../support/consortium.ts';

describe('federation peers', () => {
  let h1: MemberConsortium;
  const certificateOf = (id: string) => h1.members.find((m) => m.id === id)!.certificatePem;

  before(async () => {
    h1 = loadMemberConsortium(await testConsortium(['h1', 'h2', 'h3']), 'h1');
  });

  it('identifies an active member from its certificate, PEM or DER', () => {
    const membership = genesisMembership(h1);
    assert.deepEqual(checkPeer(h1.caCertificatePem, certificateOf('h2'), membership, 0), { ok: true, memberId: 'h2' });
    const der = Buffer.from(certificateOf('h2').replace(/-----[^-]+-----|\s/g, ''), 'base64');
    assert.deepEqual(checkPeer(h1.caCertificatePem, der, membership, 0), { ok: true, memberId: 'h2' });
  });

  it('refuses a member from the block its revocation takes effect (a change committed at the current height applies)', () => {
    const revoked = applyConfigChange(genesisMembership(h1), { action: 'revokeMember', member: 'h2' }, 5);
    assert.equal(checkPeer(h1.caCertificatePem, certificateOf('h2'), revoked, 3).ok, true, 'before the revoking block');
    const check = checkPeer(h1.caCertificatePem, certificateOf('h2'), revoked, 4);
    assert.equal(check.ok, false);
    assert.match(!check.ok ? check.reason : '', /h2 is not an active member/);
  });

  it('refuses a CA-issued certificate whose named signing key is not the member\'s key on the ledger', () => {
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey;
    const entries = Object.fromEntries(genesisMembership(h1).entries().map((m) => [m.id, { publicKey: m.id === 'h2' ? other : m.publicKey }]));
    const check = checkPeer(h1.caCertificatePem, certificateOf('h2'), new Membership(entries), 0);
    assert.equal(check.ok, false);
    assert.match(!check.ok ? check.reason : '', /signing key that is not h2's/);
  });

  it('refuses a certificate of a member the ledger never admitted, and one of another CA', async () => {
    const without = new Membership(Object.fromEntries(genesisMembership(h1).entries().filter((m) => m.id !== 'h3').map((m) => [m.id, { publicKey: m.publicKey }])));
    const check = checkPeer(h1.caCertificatePem, certificateOf('h3'), without, 0);
    assert.match(!check.ok ? check.reason : '', /h3 is not a member on the ledger/);
    const rogueCa = await createCa();
    const h2 = h1.members.find((m) => m.id === 'h2')!;
    const forged = issueMemberCertificate(rogueCa, { publicKeyPem: publicKeyOf(h2.certificatePem), signingPublicKeyPem: h2.signingPublicKeyPem }, 'h2');
    const foreign = checkPeer(h1.caCertificatePem, forged, genesisMembership(h1), 0);
    assert.match(!foreign.ok ? foreign.reason : '', /not a consortium member certificate/);
    assert.equal(checkPeer(h1.caCertificatePem, Buffer.from('junk'), genesisMembership(h1), 0).ok, false);
  });
});

function publicKeyOf(certificatePem: string): string {
  return new X509Certificate(certificatePem).publicKey.export({ type: 'spki', format: 'pem' }).toString();
}
