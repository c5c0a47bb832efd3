/**
 * The gateway-to-gateway channel on real TLS (docs/federation.md, "The channel"). Holder h1 is a real
 * gateway (SQLite, solo orderer) serving MEDBLOCK_FEDERATION_PORT; the asking members h2 and h3 are
 * built from their own member directories of the same three-member consortium. Refusal tests run against
 * a second listener on h1's real ledger replica whose route table has a spy operation, to show that a
 * refused request never reaches a handler (no data is read).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FederationCallError, FederationClient } from '../../src/adapters/federation/client.ts';
import { loadConfig } from '../../src/config.ts';
import { ASSERTION_HEADER, createAssertion, type AssertionClaims } from '../../src/federation/assertion.ts';
import { ledgerView, openFederation, type Federation } from '../../src/federation-channel.ts';
import type { FederationRoute } from '../../src/federation/routes.ts';
import { createGateway, type Gateway } from '../../src/gateway.ts';
import { createConsortium } from '../../src/identity/ca.ts';
import { genesisMembership, loadMemberConsortium, type MemberConsortium } from '../../src/identity/consortium-dir.ts';
import { keySource } from '../../src/vault/keyring.ts';
import { testConsortium } from '../support/consortium.ts';
import { quorumConfigEnvelope, rawMtlsFetch } from '../support/federation-peers.ts';
import { untilWithin } from '../support/until.ts';

process.env.MEDBLOCK_LOG ??= 'off';
const until = untilWithin(20_000, 50);
const CLAIMS: AssertionClaims = { sub: 'dr-asker', role: 'clinician', pou: 'TREAT' };

describe('federation channel (mutual TLS + requester assertion)', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'medblock-federation-channel-'));
  let holder: Gateway;
  let members: Record<'h1' | 'h2' | 'h3', MemberConsortium>;
  /** A second listener on h1's ledger replica, with a spy operation that counts the requests reaching it. */
  let spyHolder: Federation;
  let spyCalls = 0;
  let holderAddress: string;
  let spyAddress: string;
  const asking: Federation[] = [];

  /** Member `id` asking, from its own directory, with its genesis view of the ledger; every member's address is `address`. */
  async function askingMember(id: 'h2' | 'h3', address: () => string | undefined): Promise<Federation> {
    const federation = await openFederation({
      consortium: members[id],
      ledger: { membership: () => genesisMembership(members[id]), height: () => -1 },
      addressOf: address,
    });
    asking.push(federation);
    return federation;
  }

  const asH2 = () => ({ cert: members.h2.tls.certificatePem, key: members.h2.tls.keyPem, ca: members.h2.caCertificatePem });

  before(async () => {
    const dir = await testConsortium(['h1', 'h2', 'h3']);
    members = { h1: loadMemberConsortium(dir, 'h1'), h2: loadMemberConsortium(dir, 'h2'), h3: loadMemberConsortium(dir, 'h3') };
    holder = await createGateway({
      host: '127.0.0.1', port: 0, dataDir, maxBodyBytes: 1024 * 1024, baseUrl: 'http://h1.test/fhir',
      hospitalId: 'h1', masterKey: keySource(dataDir, {}), consortiumDir: dir, mode: 'dev',
      federation: { host: '127.0.0.1', port: 0 },
    });
    holderAddress = `https://127.0.0.1:${holder.federation!.listener!.port}`;
    const spy: FederationRoute = {
      method: 'GET', pattern: 'spy', interaction: 'spy',
      handler: async (req) => {
        spyCalls++;
        return { status: 200, body: { resourceType: 'Parameters', parameter: [{ name: 'peer', valueString: req.peer }] } };
      },
    };
    spyHolder = await openFederation({
      consortium: members.h1, ledger: ledgerView(holder.ledger!.member), listen: { host: '127.0.0.1', port: 0 }, operations: [spy],
    });
    spyAddress = `https://127.0.0.1:${spyHolder.listener!.port}`;
  });

  after(async () => {
    for (const federation of asking) await federation.close();
    await spyHolder?.close();
    await holder?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('serves its CapabilityStatement to an active member that asks with a valid assertion (gateway listener)', async () => {
    const h2 = await askingMember('h2', () => holderAddress);
    const capabilities = await h2.client.request('h1', 'metadata', [], CLAIMS);
    assert.equal(capabilities.resourceType, 'CapabilityStatement');
    assert.match(String((capabilities.implementation as { description: string }).description), /Holder h1/);
    // The table lists only served operations: on the gateway's, the holder's Patient/$everything.
    const resources = (capabilities.rest as Array<{ resource: Array<{ type: string; operation: Array<{ name: string }> }> }>)[0].resource;
    assert.deepEqual(resources.map((r) => [r.type, r.operation.map((o) => o.name)]), [['Patient', ['everything']]]);
  });

  it('cuts off an answer larger than the client takes, instead of buffering it without end', async () => {
    const h2 = members.h2;
    const options = {
      signer: h2.self, tls: h2.tls, caCertificatePem: h2.caCertificatePem, ledger: { membership: () => genesisMembership(h2), height: () => -1 },
      addressOf: () => holderAddress,
    };
    const small = new FederationClient({ ...options, maxResponseBytes: 256 });
    const roomy = new FederationClient(options);
    try {
      await assert.rejects(small.requestText('h1', 'metadata', [], CLAIMS), (e: unknown) => e instanceof FederationCallError && e.failure === 'too-large');
      assert.equal((await roomy.requestText('h1', 'metadata', [], CLAIMS)).status, 200, 'the same answer within the default limit');
    } finally {
      await small.close();
      await roomy.close();
    }
  });

  it('refuses a connection without a client certificate during the TLS handshake', async () => {
    const before = spyCalls;
    const assertion = await createAssertion(members.h2.self, 'h1', CLAIMS);
    await assert.rejects(rawMtlsFetch(`${spyAddress}/federation/fhir/spy`, { ca: members.h2.caCertificatePem }, { [ASSERTION_HEADER]: assertion }), (e: Error) => {
      assert.match(String((e.cause as { code?: string })?.code ?? e.cause), /CERTIFICATE_REQUIRED|ECONNRESET|EPIPE|UND_ERR_SOCKET/);
      return true;
    });
    assert.equal(spyCalls, before, 'no handler ran');
  });

  it('refuses a certificate from another CA, even one naming a member', async () => {
    const rogue = await createConsortium({ members: ['h2'] });
    const before = spyCalls;
    const assertion = await createAssertion(members.h2.self, 'h1', CLAIMS);
    const tls = { cert: rogue.members[0].certPem, key: rogue.members[0].keyPem, ca: members.h2.caCertificatePem };
    await assert.rejects(rawMtlsFetch(`${spyAddress}/federation/fhir/spy`, tls, { [ASSERTION_HEADER]: assertion }), (e: Error) => {
      assert.match(String((e.cause as { code?: string })?.code ?? e.cause), /UNKNOWN_CA|ECONNRESET|EPIPE|UND_ERR_SOCKET/);
      return true;
    });
    assert.equal(spyCalls, before, 'no handler ran');
  });

  it('admits a member with a fresh assertion to a holder operation (the spy sees the peer)', async () => {
    const res = await rawMtlsFetch(`${spyAddress}/federation/fhir/spy`, asH2(), { [ASSERTION_HEADER]: await createAssertion(members.h2.self, 'h1', CLAIMS) });
    assert.equal(res.status, 200);
    assert.equal((await res.json()).parameter[0].valueString, 'h2');
  });

  it('refuses a request without an assertion, an expired one, and a replayed one with 401 before any handler', async () => {
    const before = spyCalls;
    const url = `${spyAddress}/federation/fhir/spy`;
    const none = await rawMtlsFetch(url, asH2());
    assert.equal(none.status, 401);
    assert.match((await none.json()).issue[0].diagnostics, /requester assertion .* is required/);

    const expired = await createAssertion(members.h2.self, 'h1', CLAIMS, { now: new Date(Date.now() - 10 * 60_000) });
    const old = await rawMtlsFetch(url, asH2(), { [ASSERTION_HEADER]: expired });
    assert.equal(old.status, 401);
    const outcome = await old.json();
    assert.equal(outcome.resourceType, 'OperationOutcome');
    assert.match(outcome.issue[0].diagnostics, /expired/);
    assert.equal(spyCalls, before, 'no handler ran');

    const once = await createAssertion(members.h2.self, 'h1', CLAIMS);
    assert.equal((await rawMtlsFetch(url, asH2(), { [ASSERTION_HEADER]: once })).status, 200);
    const replay = await rawMtlsFetch(url, asH2(), { [ASSERTION_HEADER]: once });
    assert.equal(replay.status, 401);
    assert.match((await replay.json()).issue[0].diagnostics, /replayed/);
    assert.equal(spyCalls, before + 1, 'only the first use reached the handler');
  });

  it('refuses an assertion whose issuer is not the member of the TLS certificate (h3 signs, h2 connects)', async () => {
    const before = spyCalls;
    const res = await rawMtlsFetch(`${spyAddress}/federation/fhir/spy`, asH2(), { [ASSERTION_HEADER]: await createAssertion(members.h3.self, 'h1', CLAIMS) });
    assert.equal(res.status, 401);
    assert.match((await res.json()).issue[0].diagnostics, /issuer is not the member whose certificate made this connection/);
    assert.equal(spyCalls, before);
  });

  it('answers an unknown route with a 404 OperationOutcome (after admission)', async () => {
    const res = await rawMtlsFetch(`${spyAddress}/federation/fhir/Patient/123/secret`, asH2(), { [ASSERTION_HEADER]: await createAssertion(members.h2.self, 'h1', CLAIMS) });
    assert.equal(res.status, 404);
    assert.equal((await res.json()).resourceType, 'OperationOutcome');
    const outside = await rawMtlsFetch(`${spyAddress}/fhir/metadata`, asH2());
    assert.equal(outside.status, 404);
    assert.equal((await outside.json()).resourceType, 'OperationOutcome');
  });

  it('refuses to talk to a server that is not the member meant (h1 answering at h3\'s address)', async () => {
    const h2 = await askingMember('h2', () => holderAddress);
    await assert.rejects(h2.client.request('h3', 'metadata', [], CLAIMS), (e: unknown) => {
      assert.ok(e instanceof FederationCallError);
      assert.equal(e.failure, 'server-identity');
      assert.equal(e.member, 'h3');
      assert.match(e.message, /server is member h1, not h3/);
      return true;
    });
  });

  it('names the member when no federation address is known for it', async () => {
    const h2 = await askingMember('h2', () => undefined);
    await assert.rejects(h2.client.request('h1', 'metadata', [], CLAIMS), (e: unknown) => e instanceof FederationCallError && e.failure === 'no-address' && /member h1/.test(e.message));
  });

  it('refuses a member revoked on the holder\'s ledger with 403 before any handler (its certificate still chains to the CA)', async () => {
    const h3 = await askingMember('h3', () => spyAddress);
    const before = spyCalls;
    assert.equal((await h3.client.request('h1', 'spy', [], CLAIMS)).resourceType, 'Parameters', 'h3 is admitted while active');
    assert.equal(spyCalls, before + 1);

    // h1 and h2 (a quorum of 3) revoke h3; h1 submits the config envelope to its orderer.
    const member = holder.ledger!.member;
    await member.submit([quorumConfigEnvelope([members.h1, members.h2], { action: 'revokeMember', member: 'h3' })]);
    await until('h3 revoked on h1\'s ledger', () => !member.currentMembership().isActiveAt('h3', (member.headHeader()?.number ?? -1) + 1));

    await assert.rejects(h3.client.request('h1', 'spy', [], CLAIMS), (e: unknown) => {
      assert.ok(e instanceof FederationCallError, String(e));
      assert.equal(e.failure, 'http-error');
      assert.equal(e.status, 403);
      const outcome = e.outcome as { resourceType: string; issue: Array<{ diagnostics: string }> };
      assert.equal(outcome.resourceType, 'OperationOutcome');
      assert.match(outcome.issue[0].diagnostics, /h3 is not an active member/);
      return true;
    });
    assert.equal(spyCalls, before + 1, 'the revoked member reached no handler');
    // h1 refuses to ask h3 as well: the client checks its own replica.
    const h1Asking = await openFederation({ consortium: members.h1, ledger: ledgerView(member), addressOf: () => spyAddress });
    asking.push(h1Asking);
    await assert.rejects(h1Asking.client.request('h3', 'metadata', [], CLAIMS), (e: unknown) => e instanceof FederationCallError && e.failure === 'inactive-member');
  });
});

describe('federation configuration', () => {
  it('serves no listener unless MEDBLOCK_FEDERATION_PORT is set; the host defaults to HOST', () => {
    assert.equal(loadConfig({}).federation, undefined);
    assert.deepEqual(loadConfig({ MEDBLOCK_FEDERATION_PORT: '9443', HOST: '0.0.0.0' }).federation, { host: '0.0.0.0', port: 9443 });
    assert.deepEqual(loadConfig({ MEDBLOCK_FEDERATION_PORT: '9443', MEDBLOCK_FEDERATION_HOST: '10.0.0.7' }).federation, { host: '10.0.0.7', port: 9443 });
  });

  it('refuses a port that is not one, or the FHIR API\'s own', () => {
    for (const bad of ['0', '70000', 'https', '9443.5']) assert.throws(() => loadConfig({ MEDBLOCK_FEDERATION_PORT: bad }), /MEDBLOCK_FEDERATION_PORT must be an integer between 1 and 65535/);
    assert.throws(() => loadConfig({ MEDBLOCK_FEDERATION_PORT: '8080' }), /must differ from PORT/);
  });
});
