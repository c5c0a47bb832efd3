import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { MongoClient, type Db } from 'mongodb';
import { MongoLedgerStore, type AppendStep } from '../../src/adapters/mongodb/mongo-ledger-store.ts';
import { blockHeaderHash, buildBlockWithVerdicts, type Block, type BlockHeader } from '../../src/ledger/block.ts';
import { createEnvelope, encodeEnvelope, type AuditEntry, type EnvelopeSigner } from '../../src/ledger/envelope.ts';
import { LedgerAppendError, type BlockIndex } from '../../src/ledger/ledger-store.ts';
import { blockIndex } from '../../src/ledger/member.ts';
import { Membership } from '../../src/ledger/membership.ts';
import { describeWithEngine } from '../support/engines.ts';
import { ledgerStoreContract } from './ledger-store.contract.ts';

const keys = { h1: generateKeyPairSync('ec', { namedCurve: 'P-256' }), h2: generateKeyPairSync('ec', { namedCurve: 'P-256' }) };
const signer = (id: 'h1' | 'h2'): EnvelopeSigner => ({ memberId: id, privateKey: keys[id].privateKey });
const members = new Membership({ h1: { publicKey: keys.h1.publicKey }, h2: { publicKey: keys.h2.publicKey } });
const hex = () => randomBytes(32).toString('hex');
const token = () => randomBytes(32).toString('base64url');
const newChannel = () => `mongo-${randomBytes(5).toString('hex')}`;
type Entry = { digest: string; type?: string; patient?: string; resource?: string; links?: string[] };

/** Real blocks of one channel; `previous` lets two different blocks with the same number be built. */
function build(channel: string, previous: Block | undefined, envelopes: Array<{ by: 'h1' | 'h2'; entries: Entry[] } | { by: 'h1' | 'h2'; audit: AuditEntry[] }>): { block: Block; index: BlockIndex } {
  const first = previous ? previous.header.lastOffset + 1 : 0;
  const cut = {
    number: previous ? previous.header.number + 1 : 0,
    envelopes: envelopes.map((e, i) => ({
      offset: first + i,
      bytes: encodeEnvelope(
        'audit' in e
          ? createEnvelope(signer(e.by), { channel, type: 'audit', payload: { entries: e.audit } })
          : createEnvelope(signer(e.by), { channel, type: 'anchor', payload: { entries: e.entries } }),
      ),
    })),
    firstOffset: first,
    lastOffset: first + envelopes.length - 1,
    cutReason: 'maxMessages' as const,
  };
  const { block, verdicts } = buildBlockWithVerdicts(cut, previous?.header, { channel, members, committedNonces: { has: () => false } });
  return { block, index: blockIndex(verdicts) };
}

class Crash extends Error {}

/** A hook that throws (a simulated crash) at `at` while appending block 1. */
const crashAt = (at: AppendStep) => (step: AppendStep, header: BlockHeader) => {
  if (step === at && header.number === 1) throw new Crash(`crash at ${step}`);
};

const ENTRY_COLLECTIONS = [
  'ledger_digests', 'ledger_patients', 'ledger_nonces', 'ledger_config_changes', 'ledger_envelopes', 'ledger_pending',
  'ledger_link_sets', 'ledger_links', 'ledger_resource_heads', 'ledger_erasures',
];

async function tagged(db: Db, hash: string): Promise<number> {
  let n = 0;
  for (const name of ENTRY_COLLECTIONS) n += await db.collection(name).countDocuments({ hash });
  return n;
}

describeWithEngine('mongodb', 'MongoLedgerStore (real MongoDB-wire engine)', (uri) => {
  const database = `medblock_test_${randomBytes(6).toString('hex')}`;
  let client: MongoClient;
  let db: Db;
  before(async () => {
    client = await MongoClient.connect(uri);
    db = client.db(database);
  });
  after(async () => {
    try {
      await client.db(database).dropDatabase();
    } finally {
      await client.close();
    }
  });

  ledgerStoreContract('mongodb', async () => new MongoLedgerStore(uri, database));

  describe('crash between the index entries and the block marker', () => {
    const open = async (options: ConstructorParameters<typeof MongoLedgerStore>[2] = {}) => {
      const store = new MongoLedgerStore(uri, database, options);
      await store.init();
      return store;
    };

    /** Block 0 committed, and block 1 that repeats one of block 0's digests and adds its own entries. */
    function scenario() {
      const channel = newChannel();
      const repeated = hex();
      const patient = token();
      // Federation indexes: h1's Patient (locator p0, resource r0) links `link`; block 1 replaces its link set with
      // `relinked`, supersedes the version and then erases the patient, so every kind of entry is in the crashed block.
      const [p0, r0, link, relinked] = [token(), token(), token(), token()];
      const b0 = build(channel, undefined, [{ by: 'h1', entries: [{ digest: repeated, patient: p0, resource: r0, links: [link] }] }]);
      const fresh = [hex(), hex(), hex()];
      const b1 = build(channel, b0.block, [
        { by: 'h2', entries: [{ digest: fresh[0], type: 'Patient', patient }, { digest: repeated, type: 'Patient', patient }] },
        { by: 'h1', entries: [{ digest: fresh[1], type: 'Observation' }, { digest: fresh[2], type: 'Observation', patient }] },
        { by: 'h1', entries: [{ digest: hex(), patient: p0, resource: r0, links: [relinked] }] },
        { by: 'h1', audit: [{ digest: hex(), erased: p0 }] },
      ]);
      b1.index.configChanges = [{ action: 'revokeMember', member: 'h9' }];
      return { channel, repeated, patient, fresh, b0, b1, p0, r0, link, relinked };
    }

    async function assertBlock1Invisible(store: MongoLedgerStore, s: ReturnType<typeof scenario>): Promise<void> {
      assert.equal((await store.head(s.channel))?.number, 0);
      assert.equal(await store.block(s.channel, 1), undefined);
      assert.deepEqual(await store.headers(s.channel, 0, 5), [s.b0.block.header]);
      const found = await store.locate(s.channel, [s.repeated, ...s.fresh]);
      assert.deepEqual([...found.keys()], [s.repeated]);
      assert.equal(found.get(s.repeated)?.blockNumber, 0);
      assert.deepEqual(await store.hospitalsForPatient(s.channel, s.patient), []);
      assert.equal((await store.committedNonces(s.channel, s.b1.index.nonces)).size, 0);
      assert.deepEqual(await store.configChanges(s.channel), []);
      assert.deepEqual(await store.holdersOfLink(s.channel, s.link), [{ hospital: 'h1', locator: s.p0 }]);
      assert.deepEqual(await store.holdersOfLink(s.channel, s.relinked), []);
      const facts = (await store.anchorFacts(s.channel, [s.repeated])).get(s.repeated);
      assert.deepEqual([facts?.superseded, facts?.erased], [false, false], 'the uncommitted newer version and erasure are ignored');
    }

    async function assertBlock1Committed(store: MongoLedgerStore, s: ReturnType<typeof scenario>): Promise<void> {
      assert.deepEqual(await store.head(s.channel), s.b1.block.header);
      const read = await store.block(s.channel, 1);
      assert.ok(read);
      assert.equal(blockHeaderHash(read.header), blockHeaderHash(s.b1.block.header));
      assert.deepEqual(read.envelopes.map((e) => Buffer.from(e).toString('hex')), s.b1.block.envelopes.map((e) => Buffer.from(e).toString('hex')));
      const found = await store.locate(s.channel, [s.repeated, ...s.fresh]);
      assert.deepEqual(found.get(s.repeated), { blockNumber: 0, envelopeIndex: 0, entryIndex: 0, creator: 'h1', kind: 'anchor' }, 'the first location stays');
      assert.deepEqual(found.get(s.fresh[0]), { blockNumber: 1, envelopeIndex: 0, entryIndex: 0, creator: 'h2', kind: 'anchor' });
      assert.deepEqual(found.get(s.fresh[1]), { blockNumber: 1, envelopeIndex: 1, entryIndex: 0, creator: 'h1', kind: 'anchor' });
      assert.deepEqual(found.get(s.fresh[2]), { blockNumber: 1, envelopeIndex: 1, entryIndex: 1, creator: 'h1', kind: 'anchor' });
      assert.deepEqual(await store.hospitalsForPatient(s.channel, s.patient), ['h1', 'h2']);
      assert.equal((await store.committedNonces(s.channel, s.b1.index.nonces)).size, s.b1.index.nonces.length);
      assert.deepEqual(await store.configChanges(s.channel), [{ blockNumber: 1, change: { action: 'revokeMember', member: 'h9' } }]);
      assert.deepEqual(await store.holdersOfLink(s.channel, s.link), []);
      assert.deepEqual(await store.holdersOfLink(s.channel, s.relinked), [], 'the erasure after it removed the new link set');
      const facts = (await store.anchorFacts(s.channel, [s.repeated])).get(s.repeated);
      assert.deepEqual([facts?.superseded, facts?.erased], [true, true]);
    }

    it('leaves nothing visible; init() removes the orphans; the retried append then succeeds', async () => {
      const s = scenario();
      const hash = blockHeaderHash(s.b1.block.header);
      const crashing = await open({ onAppendStep: crashAt('staged') });
      try {
        await crashing.appendBlock(s.b0.block, s.b0.index);
        await assert.rejects(crashing.appendBlock(s.b1.block, s.b1.index), Crash);
      } finally {
        await crashing.close();
      }
      assert.ok((await tagged(db, hash)) >= 8, 'the crash left entries, envelopes and the pending document behind');
      const restarted = await open({ staleAfterMs: 0 });
      try {
        assert.equal(await tagged(db, hash), 0, 'init() removed everything of the crashed attempt');
        await assertBlock1Invisible(restarted, s);
        await restarted.appendBlock(s.b1.block, s.b1.index);
        await assertBlock1Committed(restarted, s);
        assert.equal(await db.collection('ledger_pending').countDocuments({ hash }), 0);
      } finally {
        await restarted.close();
      }
    });

    it('leaves nothing visible, and a retry without init() is not blocked by the orphans', async () => {
      const s = scenario();
      let crash = true;
      const store = await open({ onAppendStep: (step, header) => { if (crash && step === 'staged' && header.number === 1) throw new Crash('crash'); } });
      try {
        await store.appendBlock(s.b0.block, s.b0.index);
        await assert.rejects(store.appendBlock(s.b1.block, s.b1.index), Crash);
        await assertBlock1Invisible(store, s);
        const reader = await open(); // a young attempt: init() must leave it alone (it may be in progress)
        try {
          assert.ok((await tagged(db, blockHeaderHash(s.b1.block.header))) >= 8);
          await assertBlock1Invisible(reader, s);
        } finally {
          await reader.close();
        }
        crash = false;
        await store.appendBlock(s.b1.block, s.b1.index);
        await assertBlock1Committed(store, s);
      } finally {
        await store.close();
      }
    });

    it('keeps orphans of a DIFFERENT block with the same number invisible, and replaces them on the next append', async () => {
      const s = scenario();
      // The crashed attempt was another block 1: it shares fresh[0] (at another place) and has digests of its own.
      const other = build(s.channel, s.b0.block, [
        { by: 'h1', entries: [{ digest: hex(), type: 'Observation', patient: s.patient }, { digest: s.fresh[0], type: 'Observation' }] },
      ]);
      const otherHash = blockHeaderHash(other.block.header);
      const crashing = await open({ onAppendStep: crashAt('staged') });
      try {
        await crashing.appendBlock(s.b0.block, s.b0.index);
        await assert.rejects(crashing.appendBlock(other.block, other.index), Crash);
      } finally {
        await crashing.close();
      }
      const store = await open(); // the orphans are young: init() leaves them
      try {
        await assertBlock1Invisible(store, s);
        await store.appendBlock(s.b1.block, s.b1.index);
        await assertBlock1Committed(store, s);
        const otherOnly = other.index.digests[0].digest;
        assert.equal((await store.locate(s.channel, [otherOnly])).size, 0, "a digest only in the crashed block stays invisible after block 1 commits");
        assert.ok((await db.collection('ledger_digests').countDocuments({ hash: otherHash })) >= 1, 'its orphan is still there');
      } finally {
        await store.close();
      }
      const restarted = await open({ staleAfterMs: 0 });
      try {
        assert.equal(await tagged(db, otherHash), 0, 'init() removed the stale attempt');
        await assertBlock1Committed(restarted, s);
      } finally {
        await restarted.close();
      }
    });

    it('orphan entries written directly (tagged head + 1, unknown hash) are invisible and do not block the append', async () => {
      const s = scenario();
      const store = await open();
      try {
        await store.appendBlock(s.b0.block, s.b0.index);
        const tag = { channel: s.channel, block: 1, hash: 'f'.repeat(64) };
        await db.collection('ledger_digests').insertMany([
          { _id: `${s.channel}/${s.fresh[1]}` as never, ...tag, envelopeIndex: 7, entryIndex: 7, creator: 'h2', kind: 'audit' },
        ]);
        await db.collection('ledger_patients').insertOne({ _id: `${s.channel}/${s.patient}/h1` as never, ...tag, token: s.patient, hospital: 'h1' });
        await db.collection('ledger_nonces').insertOne({ _id: `${s.channel}/${s.b1.index.nonces[0].creator}/${s.b1.index.nonces[0].nonce}` as never, ...tag });
        // Federation index entries above the head: an emptied link set, a newer resource head, an erasure.
        const version = '1'.padStart(16, '0');
        const [creator, patient, resource] = ['h1', s.p0, s.r0];
        await db.collection('ledger_link_sets').insertOne({ _id: `${s.channel}/${creator}/${patient}/${version}` as never, ...tag, creator, patient, links: [] });
        await db.collection('ledger_links').insertOne({ _id: `${s.channel}/${s.relinked}/${creator}/${patient}/${version}` as never, ...tag, token: s.relinked, creator, patient });
        await db.collection('ledger_link_sets').insertOne({ _id: `${s.channel}/h2/${token()}/${version}` as never, ...tag, creator: 'h2', patient: token(), links: [s.link] });
        await db.collection('ledger_resource_heads').insertOne({ _id: `${s.channel}/${creator}/${resource}/${version}` as never, ...tag, creator, resource, digest: hex() });
        await db.collection('ledger_erasures').insertOne({ _id: `${s.channel}/${creator}/${patient}` as never, ...tag, creator, patient });
        await assertBlock1Invisible(store, s);
        await store.appendBlock(s.b1.block, s.b1.index);
        await assertBlock1Committed(store, s);
      } finally {
        await store.close();
      }
    });

    it('a writer that displaced a conflicting attempt and lost the marker puts the winner\'s entries back', async () => {
      const s = scenario();
      const other = build(s.channel, s.b0.block, [{ by: 'h1', entries: [{ digest: s.fresh[0], type: 'Observation' }] }]);
      let releaseA!: () => void;
      const aStaged = new Promise<void>((resolve) => {
        releaseA = resolve;
      });
      let aReached!: () => void;
      const aWaiting = new Promise<void>((resolve) => {
        aReached = resolve;
      });
      const a = await open({ onAppendStep: async (step, header) => { if (step === 'staged' && header.number === 1) { aReached(); await aStaged; } } });
      let bStaged!: () => void;
      const bWaiting = new Promise<void>((resolve) => {
        bStaged = resolve;
      });
      let releaseB!: () => void;
      const bRelease = new Promise<void>((resolve) => {
        releaseB = resolve;
      });
      const b = await open({ onAppendStep: async (step, header) => { if (step === 'staged' && header.number === 1) { bStaged(); await bRelease; } } });
      try {
        await a.appendBlock(s.b0.block, s.b0.index);
        const appendA = a.appendBlock(s.b1.block, s.b1.index);
        await aWaiting; // A's entries are in, its marker not yet
        const appendB = b.appendBlock(other.block, other.index);
        await bWaiting; // B replaced A's entry of fresh[0] with its own
        releaseA();
        await appendA; // A wins the marker
        releaseB();
        await assert.rejects(appendB, LedgerAppendError);
        await assertBlock1Committed(a, s);
      } finally {
        releaseA();
        releaseB();
        await a.close();
        await b.close();
      }
    });
  });

  it('refuses a database whose ledger predates its format (no marker) instead of reading it', async () => {
    const old = `medblock_test_${randomBytes(6).toString('hex')}`;
    try {
      await client.db(old).collection('ledger_blocks').insertOne({ _id: 'main/0000000000000000' as never, channel: 'main', number: 0 });
      await assert.rejects(
        new MongoLedgerStore(uri, old).init(),
        /holds a ledger of format 1, this gateway uses format 2: drop its ledger_\* collections and restart, and the member rebuilds its ledger from the orderer/,
      );
    } finally {
      await client.db(old).dropDatabase();
    }
  });

  it('refuses a block too large for one BSON document before writing anything', async () => {
    const store = new MongoLedgerStore(uri, database);
    await store.init();
    try {
      const channel = newChannel();
      const { block, index } = build(channel, undefined, [{ by: 'h1', entries: [{ digest: hex(), type: 'Patient' }] }]);
      const huge: Block = { ...block, envelopes: [new Uint8Array(17 * 1024 * 1024)], validity: [{ valid: false, reason: 'malformed', detail: 'x' }] };
      await assert.rejects(store.appendBlock(huge, index), /over BSON's 16777216; lower the channel's absoluteMaxBytes/);
      assert.equal(await store.head(channel), undefined);
      assert.equal(await db.collection('ledger_pending').countDocuments({ channel }), 0);
    } finally {
      await store.close();
    }
  });
});
