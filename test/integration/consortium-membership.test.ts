/**
 * Membership changes as config transactions on the real Kafka, driven through the `medblock consortium`
 * CLI as operators run it: a hospital joins (request → CA issues → a member proposes → a quorum approves
 * → submit), its gateway waits for admission and then anchors and attests; a member is revoked by a quorum;
 * a change approved by too few members is marked invalid by every member and changes nothing; a member's
 * federation address moves by a quorum-approved change.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import supertest from 'supertest';
import { mintToken } from '../../src/access/tokens.ts';
import { createGateway, type Gateway } from '../../src/gateway.ts';
import { blockHeaderHash } from '../../src/ledger/block.ts';
import { keySource } from '../../src/vault/keyring.ts';
import { testConsortium } from '../support/consortium.ts';
import { describeWithEngine } from '../support/engines.ts';
import { untilWithin } from '../support/until.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'medblock.js');
const FHIR = 'application/fhir+json';
const work = mkdtempSync(join(tmpdir(), 'medblock-membership-'));
after(() => rmSync(work, { recursive: true, force: true }));

const until = untilWithin(30_000, 50);

describeWithEngine('kafka', 'consortium membership changes on Kafka (medblock consortium CLI)', (brokers) => {
  let consortiumDir: string;
  const gateways: Record<string, Gateway> = {};
  const tokens: Record<string, string> = {};

  /** The CLI as member `member` runs it (its own data dir, the shared consortium dir, the Kafka brokers). */
  const medblock = (member: string, ...args: string[]) => {
    const result = spawnSync(process.execPath, [BIN, ...args], {
      encoding: 'utf8',
      timeout: 120_000,
      env: {
        ...process.env, MEDBLOCK_LOG: 'off', MEDBLOCK_HOSPITAL_ID: member, MEDBLOCK_DATA_DIR: join(work, member), MEDBLOCK_CONSORTIUM_DIR: consortiumDir,
        MEDBLOCK_KAFKA_BROKERS: brokers, MEDBLOCK_KAFKA_REPLICATION_FACTOR: '1', MEDBLOCK_MONGODB_URI: '',
      },
    });
    return { status: result.status, out: `${result.stdout}${result.stderr}` };
  };
  const ok = (member: string, ...args: string[]) => {
    const result = medblock(member, ...args);
    assert.equal(result.status, 0, `medblock ${args.join(' ')} as ${member}: ${result.out}`);
    return result.out;
  };

  async function start(id: string): Promise<Gateway> {
    const dataDir = join(work, id);
    const gateway = await createGateway({
      host: '127.0.0.1', port: 0, dataDir, maxBodyBytes: 8 * 1024 * 1024, baseUrl: `http://${id}.test/fhir`,
      hospitalId: id, masterKey: keySource(dataDir, {}), consortiumDir, kafkaBrokers: brokers.split(','),
      kafkaReplication: { replicationFactor: 1, minInsyncReplicas: 1 }, ledgerBatchTimeoutMs: 50, mode: 'dev',
    });
    gateways[id] = gateway;
    tokens[id] = await mintToken(gateway.issuer, { subject: `${id}-tester`, scope: 'user/*.cruds' });
    return gateway;
  }

  const createPatient = (id: string) =>
    supertest(gateways[id].app).post('/fhir/Patient').set('Authorization', `Bearer ${tokens[id]}`).set('Content-Type', FHIR).send(JSON.stringify({ resourceType: 'Patient', active: true }));
  const fullyAnchored = async (id: string) => (await gateways[id].store.unanchored({ limit: 1 })).length === 0;
  const channelOf = () => gateways.h1.ledger!.member.channel;
  const configChanges = (id: string) => gateways[id].ledger!.store.configChanges(channelOf());

  before(async () => {
    consortiumDir = await testConsortium(['h1', 'h2', 'h3']);
    // The test consortium is shared per process: the joining member gets a directory of its own copy.
    const copy = join(work, 'consortium');
    spawnSync('cp', ['-r', consortiumDir, copy]);
    consortiumDir = copy;
    await start('h1');
    await start('h2');
  });

  after(async () => {
    for (const gateway of Object.values(gateways)) await gateway.close();
  });

  it('admits a joining hospital once a quorum approved its certificate; it then anchors and attests', async () => {
    // The joining hospital makes its keys and request; the CA operator issues its certificate.
    assert.match(ok('h4', 'consortium', 'request', '--member', 'h4', '--out', join(consortiumDir, 'h4')), /request\.json/);
    ok('h4', 'consortium', 'issue', '--ca', join(consortiumDir, 'ca'), '--request', join(consortiumDir, 'h4', 'request.json'), '--out', join(consortiumDir, 'h4', 'member.crt'));
    // The consortium's patient-token key is shared: an existing member hands it over.
    copyFileSync(join(consortiumDir, 'h1', 'patient-token.key'), join(consortiumDir, 'h4', 'patient-token.key'));
    // Its gateway starts and replays the chain, but is not a member yet: it neither anchors nor is ready.
    const h4 = await start('h4');
    assert.equal(h4.ledger!.member.status().activeMember, false);
    const waiting = await supertest(h4.app).get('/readyz');
    assert.equal(waiting.status, 503);
    assert.match(waiting.body.checks.ledger, /h4 is not an active member .*waiting for the config change/);
    assert.equal((await createPatient('h4')).status, 201, 'its vault accepts writes, which wait in its outbox');

    const proposal = join(work, 'add-h4.json');
    const addH4 = ['--add', 'h4', '--certificate', join(consortiumDir, 'h4', 'member.crt'), '--signing-key', join(consortiumDir, 'h4', 'signing.pub')];
    assert.match(medblock('h1', 'consortium', 'propose', ...addH4, '--federation-address', 'http://h4.example.org', '--out', proposal).out, /--federation-address must use https/);
    ok('h1', 'consortium', 'propose', ...addH4, '--federation-address', 'https://h4.example.org:9443', '--out', proposal);
    assert.match(ok('h1', 'consortium', 'approve', proposal), /h1 approved: 1 approval/);
    assert.equal(medblock('h1', 'consortium', 'approve', proposal).status, 1, 'one approval per member');
    assert.match(ok('h2', 'consortium', 'approve', proposal), /h2 approved: 2 approval\(s\) \(h1, h2\)/);
    assert.match(ok('h1', 'consortium', 'submit', proposal), /submitted to the kafka orderer/);

    await until('h4 admitted on h1, h2 and h4', () => ['h1', 'h2', 'h4'].every((id) => gateways[id].ledger!.member.currentMembership().get('h4') !== undefined));
    for (const id of ['h1', 'h2', 'h4']) assert.deepEqual((await configChanges(id)).map((c) => [c.change.action, c.change.member]), [['addMember', 'h4']]);
    for (const id of ['h1', 'h2', 'h4']) assert.equal(gateways[id].ledger!.member.currentMembership().federationAddress('h4'), 'https://h4.example.org:9443');
    await until('h4 active and ready', async () => (await supertest(h4.app).get('/readyz')).status === 200);
    await until('h4 anchored what waited in its outbox', () => fullyAnchored('h4'));
    // h4's attestations now count: a block is final with h4 among its attesters.
    assert.equal((await createPatient('h1')).status, 201);
    await until('h1 anchored', () => fullyAnchored('h1'));
    await until('a checkpoint attested by h4', async () => (await gateways.h1.ledger!.store.checkpoint(channelOf()))?.attestations.some((a) => a.member === 'h4') ?? false);
    // Its proofs carry the config envelope that added it, so a verifier pinned to consortium.json learns of h4.
    const proven = (await gateways.h1.ledger!.service.consortium(Number.MAX_SAFE_INTEGER)).configChanges;
    assert.deepEqual(proven.map((c) => JSON.parse(Buffer.from(c.envelope, 'base64url').toString('utf8')).payload.member), ['h4']);
  });

  it('marks a change approved by too few members invalid on every member, and changes nothing', async () => {
    const proposal = join(work, 'revoke-h2-alone.json');
    ok('h1', 'consortium', 'propose', '--revoke', 'h2', '--out', proposal);
    ok('h1', 'consortium', 'approve', proposal);
    ok('h1', 'consortium', 'submit', proposal);
    const channel = channelOf();
    // Find the block that holds it: its config envelope is there, marked invalid (no quorum: 1 of 4 active).
    const nonce = JSON.parse(readFileSync(proposal, 'utf8')).nonce as string;
    let verdict: unknown;
    await until('the config envelope committed', async () => {
      const head = await gateways.h2.ledger!.store.head(channel);
      for (let n = head?.number ?? -1; n >= 0 && verdict === undefined; n--) {
        const block = (await gateways.h2.ledger!.store.block(channel, n))!;
        block.envelopes.forEach((bytes, i) => {
          if (JSON.parse(Buffer.from(bytes).toString('utf8'))?.nonce === nonce) verdict = block.validity[i];
        });
      }
      return verdict !== undefined;
    });
    assert.equal((verdict as { valid: boolean; reason: string }).reason, 'no-quorum');
    for (const id of ['h1', 'h2', 'h4']) assert.equal((await configChanges(id)).length, 1, `${id} applied nothing`);
    assert.equal(gateways.h2.ledger!.member.status().activeMember, true);
  });

  it('revokes a member with a quorum of approvals: its envelopes are invalid from the next block', async () => {
    const proposal = join(work, 'revoke-h3.json');
    ok('h2', 'consortium', 'propose', '--revoke', 'h3', '--out', proposal);
    for (const id of ['h1', 'h2', 'h4']) ok(id, 'consortium', 'approve', proposal); // 3 of 4 active members
    ok('h4', 'consortium', 'submit', proposal);
    await until('h3 revoked everywhere', async () => {
      for (const id of ['h1', 'h2', 'h4']) if ((await configChanges(id)).length !== 2) return false;
      return true;
    });
    const revokedAt = gateways.h1.ledger!.member.currentMembership().get('h3')!.revokedAtBlock!;
    assert.ok(Number.isInteger(revokedAt));
    // A revoked member cannot approve a change any more: its approval does not count towards a quorum.
    const late = join(work, 'revoke-h1-by-h3.json');
    ok('h2', 'consortium', 'propose', '--revoke', 'h1', '--out', late);
    ok('h3', 'consortium', 'approve', late);
    ok('h2', 'consortium', 'approve', late);
    assert.equal(medblock('h2', 'consortium', 'submit', late).status, 0);
    // All members end on the same head.
    assert.equal((await createPatient('h2')).status, 201);
    await until('h2 anchored', () => fullyAnchored('h2'));
    const channel = channelOf();
    await until('same height everywhere', async () => {
      const heights = await Promise.all(['h1', 'h2', 'h4'].map(async (id) => (await gateways[id].ledger!.store.head(channel))!.number));
      return heights.every((h) => h === heights[0]);
    });
    const hashes = await Promise.all(['h1', 'h2', 'h4'].map(async (id) => blockHeaderHash((await gateways[id].ledger!.store.head(channel))!)));
    assert.equal(new Set(hashes).size, 1, 'one chain');
    assert.equal((await configChanges('h1')).length, 2, 'the change approved by a revoked member did not apply');
    assert.equal(gateways.h1.ledger!.member.status().activeMember, true);
  });

  it('moves a member\'s federation address with a quorum of approvals; the CLI refuses a bad address before anyone signs', async () => {
    const bad = medblock('h1', 'consortium', 'propose', '--set-federation-address', 'h2', '--address', 'https://h2.example.org/fhir', '--out', join(work, 'bad.json'));
    assert.equal(bad.status, 1);
    assert.match(bad.out, /--address must be only https:\/\/host:port/);
    assert.equal(medblock('h1', 'consortium', 'propose', '--set-federation-address', 'h2', '--out', join(work, 'bad.json')).status, 1, '--address is required');
    const proposal = join(work, 'move-h2.json');
    assert.match(ok('h2', 'consortium', 'propose', '--set-federation-address', 'h2', '--address', 'https://h2.example.org:9443', '--out', proposal), /setFederationAddress h2 \(https:\/\/h2\.example\.org:9443\)/);
    for (const id of ['h2', 'h4']) ok(id, 'consortium', 'approve', proposal); // 2 of the 3 active members
    ok('h2', 'consortium', 'submit', proposal);
    await until('h2 moved everywhere', () => ['h1', 'h2', 'h4'].every((id) => gateways[id].ledger!.member.currentMembership().federationAddress('h2') === 'https://h2.example.org:9443'));
    for (const id of ['h1', 'h2', 'h4']) assert.deepEqual((await configChanges(id)).at(-1)?.change, { action: 'setFederationAddress', member: 'h2', address: 'https://h2.example.org:9443' });
    assert.equal(gateways.h1.ledger!.member.currentMembership().federationAddress('h1'), undefined, 'no one else moved');
    // Proofs carry the change (the config chain every verifier replays).
    const proven = (await gateways.h1.ledger!.service.consortium(Number.MAX_SAFE_INTEGER)).configChanges;
    assert.equal(JSON.parse(Buffer.from(proven.at(-1)!.envelope, 'base64url').toString('utf8')).payload.action, 'setFederationAddress');
  });
});
