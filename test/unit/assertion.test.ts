/**
 * The requester assertion (src/federation/assertion.ts): every way an assertion can be wrong is refused,
 * with a message naming the rule; a good one verifies once and only once.
 */
import assert from 'node:assert/strict';
import { createHmac, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { describe, it } from 'node:test';
import { SignJWT } from 'jose';
import {
  ASSERTION_TYPE,
  AssertionError,
  createAssertion,
  ReplayCache,
  verifyAssertion,
  type AssertionClaims,
} from '../../src/federation/assertion.ts';
import { Membership } from '../../src/ledger/membership.ts';
import { isPurposeOfUse } from '../../src/access/consent.ts';

const keys = Object.fromEntries(['h1', 'h2', 'h3'].map((id) => [id, generateKeyPairSync('ec', { namedCurve: 'P-256' })]));
const membership = new Membership(Object.fromEntries(Object.entries(keys).map(([id, k]) => [id, { publicKey: k.publicKey }])));
const signer = (id: string) => ({ memberId: id, privateKey: keys[id].privateKey });
const LINK = randomBytes(32).toString('base64url');
const CLAIMS: AssertionClaims = { sub: 'dr-who', role: 'clinician', pou: 'TREAT', link: LINK };
const NOW = new Date('2026-06-01T12:00:00Z');
const at = (seconds: number) => new Date(NOW.getTime() + seconds * 1000);

/** h2 asking h1, over a connection whose certificate is h2's. */
function context(overrides: Partial<Parameters<typeof verifyAssertion>[1]> = {}) {
  return { peer: 'h2', self: 'h1', membership, replay: new ReplayCache(), now: NOW, ...overrides };
}

/** A token built by hand, for the shapes createAssertion refuses to make. */
async function handMade(
  claims: Record<string, unknown>,
  opts: { key?: KeyObject; header?: Record<string, unknown>; iat?: number; exp?: number } = {},
): Promise<string> {
  const iat = opts.iat ?? Math.floor(NOW.getTime() / 1000);
  return new SignJWT({ role: 'clinician', pou: 'TREAT', ...claims })
    .setProtectedHeader({ alg: 'ES256', typ: ASSERTION_TYPE, kid: 'h2', ...opts.header })
    .setIssuer((claims.iss as string) ?? 'h2')
    .setAudience((claims.aud as string) ?? 'h1')
    .setSubject('dr-who')
    .setJti(randomBytes(16).toString('base64url'))
    .setIssuedAt(iat)
    .setExpirationTime(opts.exp ?? iat + 60)
    .sign(opts.key ?? keys.h2.privateKey);
}

async function refused(token: unknown, pattern: RegExp, ctx = context()): Promise<void> {
  await assert.rejects(verifyAssertion(token, ctx), (e: unknown) => {
    assert.ok(e instanceof AssertionError, `an AssertionError, got ${(e as Error)?.name}`);
    assert.match(e.message, pattern);
    return true;
  });
}

describe('requester assertion', () => {
  it('verifies a fresh assertion from the TLS peer to this holder, with every claim', async () => {
    const token = await createAssertion(signer('h2'), 'h1', { ...CLAIMS, pou: 'ETREAT', btg: 'unconscious, no record here' }, { now: NOW });
    const assertion = await verifyAssertion(token, context());
    assert.equal(assertion.iss, 'h2');
    assert.equal(assertion.aud, 'h1');
    assert.equal(assertion.sub, 'dr-who');
    assert.equal(assertion.role, 'clinician');
    assert.equal(assertion.pou, 'ETREAT');
    assert.equal(assertion.btg, 'unconscious, no record here');
    assert.equal(assertion.link, LINK);
    assert.equal(assertion.exp - assertion.iat, 60);
    assert.ok(Buffer.from(assertion.jti, 'base64url').length >= 16, 'a nonce of at least 128 bits');
  });

  it('gives every assertion its own nonce', async () => {
    const a = await verifyAssertion(await createAssertion(signer('h2'), 'h1', CLAIMS, { now: NOW }), context());
    const b = await verifyAssertion(await createAssertion(signer('h2'), 'h1', CLAIMS, { now: NOW }), context());
    assert.notEqual(a.jti, b.jti);
  });

  it('refuses an expired assertion (beyond the 30 s clock skew), and accepts one within the skew', async () => {
    const token = await createAssertion(signer('h2'), 'h1', CLAIMS, { now: NOW });
    await refused(token, /expired/, context({ now: at(60 + 31) }));
    assert.equal((await verifyAssertion(token, context({ now: at(60 + 29) }))).sub, 'dr-who');
  });

  it('refuses an assertion not yet valid (issued in the future beyond the skew)', async () => {
    const token = await createAssertion(signer('h2'), 'h1', CLAIMS, { now: at(120) });
    await refused(token, /not valid yet/);
    const nbf = await new SignJWT({ role: 'clinician', pou: 'TREAT' })
      .setProtectedHeader({ alg: 'ES256', typ: ASSERTION_TYPE, kid: 'h2' }).setIssuer('h2').setAudience('h1').setSubject('dr-who')
      .setJti(randomBytes(16).toString('base64url')).setIssuedAt(Math.floor(NOW.getTime() / 1000)).setNotBefore(Math.floor(NOW.getTime() / 1000) + 120)
      .setExpirationTime(Math.floor(NOW.getTime() / 1000) + 180).sign(keys.h2.privateKey);
    await refused(nbf, /not valid yet/);
  });

  it('refuses an assertion that lives longer than 300 s, and will not create one', async () => {
    const iat = Math.floor(NOW.getTime() / 1000);
    await refused(await handMade({}, { iat, exp: iat + 301 }), /longer than 300 seconds/);
    await assert.rejects(createAssertion(signer('h2'), 'h1', CLAIMS, { lifetimeSeconds: 301 }), AssertionError);
  });

  it('refuses an assertion meant for another holder (aud)', async () => {
    const token = await createAssertion(signer('h2'), 'h3', CLAIMS, { now: NOW });
    await refused(token, /meant for another member/);
  });

  it('refuses an assertion whose issuer is not the TLS peer, even correctly signed by its issuer', async () => {
    const token = await createAssertion(signer('h3'), 'h1', CLAIMS, { now: NOW });
    await refused(token, /issuer is not the member whose certificate made this connection/);
    // A kid naming the peer does not help: iss must be the peer too.
    await refused(await handMade({ iss: 'h3' }, { key: keys.h3.privateKey }), /issuer is not the member/);
  });

  it('refuses an assertion claiming the peer as issuer but signed with another member\'s key', async () => {
    await refused(await handMade({}, { key: keys.h3.privateKey }), /signature does not verify/);
  });

  it('refuses a replayed assertion (same jti), but not the same user\'s next assertion', async () => {
    const ctx = context();
    const token = await createAssertion(signer('h2'), 'h1', CLAIMS, { now: NOW });
    await verifyAssertion(token, ctx);
    await refused(token, /replayed/, ctx);
    await verifyAssertion(await createAssertion(signer('h2'), 'h1', CLAIMS, { now: NOW }), ctx);
  });

  it('does not let a refused assertion take a place in the replay cache', async () => {
    const ctx = context();
    await refused(await handMade({ pou: 'SHOPPING' }), /pou/, ctx);
    assert.equal(ctx.replay.size, 0);
  });

  it('refuses alg none and HS256 signed with the issuer\'s public key (algorithm confusion)', async () => {
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const iat = Math.floor(NOW.getTime() / 1000);
    const payload = b64({ iss: 'h2', aud: 'h1', sub: 'dr-who', role: 'clinician', pou: 'TREAT', jti: randomBytes(16).toString('base64url'), iat, exp: iat + 60 });
    const none = `${b64({ alg: 'none', typ: ASSERTION_TYPE, kid: 'h2' })}.${payload}.`;
    await refused(none, /ES256/);
    const hsHeader = b64({ alg: 'HS256', typ: ASSERTION_TYPE, kid: 'h2' });
    const publicPem = keys.h2.publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const mac = createHmac('sha256', publicPem).update(`${hsHeader}.${payload}`).digest('base64url');
    await refused(`${hsHeader}.${payload}.${mac}`, /ES256/);
  });

  it('refuses an access token or any JWS of another type (typ)', async () => {
    await refused(await handMade({}, { header: { typ: 'JWT' } }), /typ/);
  });

  it('refuses break-the-glass (btg) without purpose ETREAT, and will not create it', async () => {
    await refused(await handMade({ pou: 'TREAT', btg: 'curious' }), /btg .* only with pou ETREAT/);
    await assert.rejects(createAssertion(signer('h2'), 'h1', { ...CLAIMS, btg: 'curious' }), /only with pou ETREAT/);
    await refused(await handMade({ pou: 'ETREAT', btg: 'x'.repeat(501) }), /btg must be a reason of 1-500/);
  });

  it('refuses an unknown purpose of use, and a missing one', async () => {
    await refused(await handMade({ pou: 'SHOPPING' }), /pou must be one of/);
    await refused(await handMade({ pou: undefined }), /pou must be one of/);
    assert.ok(isPurposeOfUse('HPAYMT') && isPurposeOfUse('HRESCH') && isPurposeOfUse('PUBHLTH'));
    assert.ok(!isPurposeOfUse('toString') && !isPurposeOfUse(7), 'no prototype key or non-string counts as a code');
  });

  it('refuses a malformed link token, role or nonce, and a missing assertion', async () => {
    await refused(await handMade({ link: 'Patient/123' }), /link must be a link token/);
    await refused(await handMade({ role: 'a role with spaces' }), /role/);
    const shortJti = await new SignJWT({ role: 'clinician', pou: 'TREAT' }).setProtectedHeader({ alg: 'ES256', typ: ASSERTION_TYPE, kid: 'h2' })
      .setIssuer('h2').setAudience('h1').setSubject('dr-who').setJti('1').setIssuedAt(Math.floor(NOW.getTime() / 1000))
      .setExpirationTime(Math.floor(NOW.getTime() / 1000) + 60).sign(keys.h2.privateKey);
    await refused(shortJti, /128 bits/);
    await refused(undefined, /required/);
    await refused('not.a.jws', /not a compact JWS/);
    await refused('x'.repeat(5000), /too long/);
  });

  it('never echoes claim values in its refusals', async () => {
    await assert.rejects(verifyAssertion(await handMade({ pou: 'SECRET-VALUE-42' }), context()), (e: Error) => !e.message.includes('SECRET-VALUE-42'));
  });
});

describe('replay cache', () => {
  it('forgets a nonce once its assertion can no longer be accepted, and keeps issuers apart', () => {
    const cache = new ReplayCache();
    assert.equal(cache.claim('h2', 'n1', 1_000, 0), 'fresh');
    assert.equal(cache.claim('h2', 'n1', 1_000, 999), 'replayed');
    assert.equal(cache.claim('h3', 'n1', 1_000, 999), 'fresh', 'another issuer\'s nonce');
    assert.equal(cache.claim('h2', 'n1', 2_000, 1_000), 'fresh', 'expired entry');
  });

  it('fails closed when full of unexpired nonces (the holder answers 429)', () => {
    const cache = new ReplayCache(2);
    assert.equal(cache.claim('h2', 'a', 10_000, 0), 'fresh');
    assert.equal(cache.claim('h2', 'b', 10_000, 0), 'fresh');
    assert.equal(cache.claim('h2', 'c', 10_000, 0), 'full');
    assert.equal(cache.claim('h2', 'c', 20_000, 10_000), 'fresh', 'room again once the others expired');
  });
});
