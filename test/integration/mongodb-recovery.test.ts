/**
 * MongoStore's commit protocol against the real engine: failed and interrupted batches never show (neither to
 * readers nor in the anchor outbox), recovery leaves a clean store, a batch killed after its commit point
 * becomes whole, and concurrent writers never both win. Crashes are real: this file re-runs itself as a child process (MEDBLOCK_RECOVERY_CHILD set)
 * that SIGKILLs itself at a chosen step of commit(), through the adapter's onStep hook.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { after, before, beforeEach, it } from 'node:test';
import { MongoClient, type Db } from 'mongodb';
import { MongoStore, type CommitStep, type MongoStoreOptions } from '../../src/adapters/mongodb/mongo-store.ts';
import { VersionConflictError, type VersionWrite } from '../../src/vault/store.ts';
import { describeWithEngine } from '../support/engines.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();
const T1 = '2024-01-01T00:00:00.000Z';
const T2 = '2024-02-01T00:00:00.000Z';

function write(id: string, versionId: number, lastUpdated = T1, mark = 'x', keyId?: string): VersionWrite {
  return {
    record: {
      type: 'Observation', id, versionId, lastUpdated, deleted: false,
      content: enc.encode(JSON.stringify({ resourceType: 'Observation', id, v: versionId, mark })),
      digest: `digest-${id}-${versionId}`,
      ...(keyId !== undefined && { keyId }),
    },
    terms: [{ param: 'code', value: `code-${versionId}` }, { param: 'subject', value: `Patient/${id.split('-')[0]}` }],
    expectedVersion: versionId - 1,
  };
}

const ids = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}-${String(i).padStart(4, '0')}`);

/** A batch that creates `creates` new resources and moves `updates` existing v1 resources to v2 (sealed under `keyId`). */
function mixedBatch(prefix: string, creates: number, updates: number, keyId?: string): VersionWrite[] {
  return [
    ...ids(`${prefix}u`, updates).map((id) => write(id, 2, T2, 'x', keyId)),
    ...ids(`${prefix}c`, creates).map((id) => write(id, 1, T2, 'x', keyId)),
  ];
}

// ------------------------------------------------------------------------------------------ child process

interface ChildOrder {
  uri: string;
  database: string;
  prefix: string;
  creates: number;
  updates: number;
  killAt: CommitStep;
  keyId?: string;
}

async function runChild(order: ChildOrder): Promise<void> {
  const store = new MongoStore(order.uri, order.database, {
    onStep: (step) => {
      if (step === order.killAt) process.kill(process.pid, 'SIGKILL');
    },
  });
  await store.init();
  await store.commit(mixedBatch(order.prefix, order.creates, order.updates, order.keyId));
  process.stdout.write('completed without being killed\n');
  await store.close();
}

function crashAt(order: ChildOrder): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url)], {
      env: { ...process.env, MEDBLOCK_RECOVERY_CHILD: JSON.stringify(order) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (signal === 'SIGKILL') resolve();
      else reject(new Error(`child was not killed at ${order.killAt} (exit ${code}): ${output}`));
    });
  });
}

// ------------------------------------------------------------------------------------------------- tests

if (process.env.MEDBLOCK_RECOVERY_CHILD) {
  await runChild(JSON.parse(process.env.MEDBLOCK_RECOVERY_CHILD) as ChildOrder);
} else {
  describeWithEngine('mongodb', 'MongoStore commit protocol and recovery (real MongoDB-wire engine)', (uri) => {
    // One database per test keeps collections small: FerretDB scans a whole collection per statement.
    const run = `medblock_test_${randomBytes(4).toString('hex')}`;
    const databases: string[] = [];
    let client: MongoClient;
    let db: Db;
    let database: string;
    const stores: MongoStore[] = [];

    async function open(options: MongoStoreOptions = {}): Promise<MongoStore> {
      const store = new MongoStore(uri, database, options);
      stores.push(store);
      await store.init();
      return store;
    }

    /** Everything a reader could see of a set of resources, plus the raw bookkeeping. */
    async function snapshot(store: MongoStore, resourceIds: string[]) {
      const current = await Promise.all(resourceIds.map(async (id) => (await store.current('Observation', id))?.versionId ?? 0));
      const v2 = await Promise.all(resourceIds.map(async (id) => (await store.version('Observation', id, 2)) !== undefined));
      const history = await store.history({ type: 'Observation', limit: 100_000 });
      const query = { type: 'Observation', clauses: [], lastUpdated: [], limit: 100_000 };
      return {
        current,
        v2,
        history: history.map((h) => `${h.id}@${h.versionId}`).sort(),
        search: (await store.search(query)).map((r) => `${r.id}@${r.versionId}`),
        count: await store.count(query),
        byCode2: await store.count({ ...query, clauses: [{ param: 'code', anyOf: ['code-2'] }] }),
        outbox: (await store.unanchored({ limit: 100_000 })).map((v) => `${v.id}@${v.versionId}`).sort(),
        txs: await db.collection('txs').countDocuments(),
        versions: await db.collection('versions').countDocuments(),
      };
    }

    before(async () => {
      client = await MongoClient.connect(uri);
    });
    beforeEach(() => {
      database = `${run}_${databases.length}`;
      databases.push(database);
      db = client.db(database);
    });
    after(async () => {
      for (const store of stores) await store.close().catch(() => undefined);
      for (const name of databases) await client.db(name).dropDatabase();
      await client.close();
    });

    it('(a) a batch refused midway by a version conflict leaves nothing visible and nothing behind', async () => {
      const store = await open();
      await store.commit([...ids('au', 20).map((id) => write(id, 1)), write('ax-taken', 1)]);
      await store.commit([write('ax-moved', 1), write('ax-moved', 2)]); // a chain within one batch
      const watched = [...ids('au', 20), ...ids('ac', 30), 'ax-taken', 'ax-moved'];
      const baseline = await snapshot(store, watched);
      assert.equal(baseline.txs, 0);

      // The conflict comes from a version slot (a create of an existing resource), found while staging.
      const slotConflict = [...mixedBatch('a', 15, 10), write('ax-taken', 1), ...ids('ac', 30).slice(15).map((id) => write(id, 1))];
      await assert.rejects(store.commit(slotConflict), (e: unknown) => e instanceof VersionConflictError && e.id === 'ax-taken');
      assert.deepEqual(await snapshot(store, watched), baseline);

      // The conflict comes from a pointer that moved on (a stale expected version), found before staging.
      const stale = [...mixedBatch('a', 15, 10), write('ax-moved', 2), ...ids('au', 20).slice(10).map((id) => write(id, 2))];
      await assert.rejects(store.commit(stale), (e: unknown) => e instanceof VersionConflictError && e.id === 'ax-moved');
      assert.deepEqual(await snapshot(store, watched), baseline);

      // Nothing is stuck: the same resources can be written right away.
      await store.commit(mixedBatch('a', 30, 20));
      const done = await snapshot(store, [...ids('au', 20), ...ids('ac', 30)]);
      assert.deepEqual(done.current, [...Array(20).fill(2), ...Array(30).fill(1)]);
      assert.equal(done.txs, 0);
    });

    for (const killAt of ['allocated', 'began', 'checked', 'staged'] as const) {
      it(`(b) a gateway killed before the commit point (at '${killAt}') leaves nothing visible; init() cleans up`, async () => {
        const prefix = `b${killAt}`;
        const setup = await open();
        await setup.commit(ids(`${prefix}u`, 20).map((id) => write(id, 1)));
        const watched = [...ids(`${prefix}u`, 20), ...ids(`${prefix}c`, 20)];
        const baseline = await snapshot(setup, watched);

        await crashAt({ uri, database, prefix, creates: 20, updates: 20, killAt });

        // A live-looking batch (younger than the default 60 s) is left alone by another gateway's init()...
        const other = await open();
        const seen = await snapshot(other, watched);
        assert.deepEqual({ ...seen, txs: 0, versions: 0 }, { ...baseline, txs: 0, versions: 0 }, 'nothing of the batch is visible');
        if (killAt !== 'allocated') assert.equal(seen.txs, 1, 'the dead batch is still in flight');
        if (killAt === 'staged') {
          assert.equal(seen.versions, baseline.versions + 40, 'its versions are there, invisible');
          await assert.rejects(other.commit([write(`${prefix}u-0000`, 2)]), VersionConflictError);
        }

        // ...and recovered by a gateway that presumes it dead.
        const recovering = await open({ staleAfterMs: 0 });
        const clean = await snapshot(recovering, watched);
        assert.deepEqual(clean, baseline, 'no tx document, no orphan version left');

        await recovering.commit(mixedBatch(prefix, 20, 20));
        const done = await snapshot(recovering, watched);
        assert.deepEqual(done.current, [...Array(20).fill(2), ...Array(20).fill(1)]);
        assert.equal(done.txs, 0);
      });
    }

    it('(b) a writer blocked by a dead batch resolves it itself once it is stale, without a restart', async () => {
      const setup = await open();
      await setup.commit(ids('bwu', 10).map((id) => write(id, 1)));
      await crashAt({ uri, database, prefix: 'bw', creates: 10, updates: 10, killAt: 'staged' });
      const writer = new MongoStore(uri, database, { staleAfterMs: 0 });
      stores.push(writer);
      // No init(): the refused write resolves the dead batch it ran into, then retries.
      await writer.commit(mixedBatch('bw', 10, 10));
      const done = await snapshot(writer, [...ids('bwu', 10), ...ids('bwc', 10)]);
      assert.deepEqual(done.current, [...Array(10).fill(2), ...Array(10).fill(1)]);
      assert.equal(done.txs, 0);
    });

    for (const killAt of ['committed', 'created', 'moved'] as const) {
      it(`(c) a gateway killed after the commit point (at '${killAt}') has its whole batch visible after init()`, async () => {
        const prefix = `c${killAt}`;
        const setup = await open();
        await setup.commit(ids(`${prefix}u`, 20).map((id) => write(id, 1)));
        const watched = [...ids(`${prefix}u`, 20), ...ids(`${prefix}c`, 20)];
        const baseline = await snapshot(setup, watched);

        await crashAt({ uri, database, prefix, creates: 20, updates: 20, killAt });

        // Committed, so already in the outbox before anyone rolls it forward (a store without init() recovers nothing).
        const observer = new MongoStore(uri, database);
        stores.push(observer);
        const batch = [...ids(`${prefix}u`, 20).map((id) => `${id}@2`), ...ids(`${prefix}c`, 20).map((id) => `${id}@1`)];
        assert.deepEqual((await snapshot(observer, watched)).outbox, [...baseline.outbox, ...batch].sort());

        // Committed batches are finished whatever their age: the default staleness does not hold them back.
        const restarted = await open();
        const seen = await snapshot(restarted, watched);
        assert.deepEqual(seen.current, [...Array(20).fill(2), ...Array(20).fill(1)]);
        assert.deepEqual(seen.v2, [...Array(20).fill(true), ...Array(20).fill(false)]);
        assert.equal(seen.history.length, baseline.history.length + 40);
        assert.equal(seen.count, baseline.count + 20);
        assert.equal(seen.byCode2, baseline.byCode2 + 20);
        assert.equal(seen.txs, 0);
        assert.deepEqual(seen.outbox, [...baseline.outbox, ...batch].sort());
        const one = await restarted.current('Observation', `${prefix}u-0007`);
        assert.deepEqual(JSON.parse(dec.decode(one!.content!)), { resourceType: 'Observation', id: `${prefix}u-0007`, v: 2, mark: 'x' });
      });
    }

    it('(d) two gateways writing one resource at once: exactly one wins, the other gets VersionConflictError', async () => {
      const a = await open();
      const b = await open();
      await a.commit([write('d-1', 1)]);
      for (let round = 0; round < 15; round++) {
        const v = round + 2;
        const results = await Promise.allSettled([a.commit([write('d-1', v, T1, 'a')]), b.commit([write('d-1', v, T1, 'b')])]);
        const won = results.filter((r) => r.status === 'fulfilled');
        assert.equal(won.length, 1, `round ${round}: ${results.map((r) => r.status).join(', ')}`);
        const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
        assert.ok(lost.reason instanceof VersionConflictError, String(lost.reason));
        const current = await a.current('Observation', 'd-1');
        assert.equal(current?.versionId, v);
        assert.equal(JSON.parse(dec.decode(current!.content!)).mark, results[0].status === 'fulfilled' ? 'a' : 'b');
      }
      // Creates of one new id race the same way.
      const creates = await Promise.allSettled([a.commit([write('d-new', 1)]), b.commit([write('d-new', 1)])]);
      assert.deepEqual(creates.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
    });

    it('(d) read-modify-write from four gateways never loses an update', async () => {
      const gateways = await Promise.all([open(), open(), open(), open()]);
      await gateways[0].commit([write('d-counter', 1)]);
      const perGateway = 8;
      let conflicts = 0;
      await Promise.all(
        gateways.map(async (store, g) => {
          for (let done = 0; done < perGateway; ) {
            const current = (await store.current('Observation', 'd-counter'))!;
            try {
              await store.commit([write('d-counter', current.versionId + 1, T1, `g${g}`)]);
              done++;
            } catch (e) {
              if (!(e instanceof VersionConflictError)) throw e;
              conflicts++;
            }
          }
        }),
      );
      const history = await gateways[0].history({ type: 'Observation', id: 'd-counter', limit: 1000 });
      assert.equal((await gateways[0].current('Observation', 'd-counter'))?.versionId, 1 + 4 * perGateway);
      assert.deepEqual(history.map((h) => h.versionId), Array.from({ length: 1 + 4 * perGateway }, (_, i) => 4 * perGateway + 1 - i));
      assert.equal(await db.collection('txs').countDocuments(), 0);
      assert.ok(conflicts >= 0);
    });

    it('(d) gateways committing disjoint batches at once all succeed, with distinct seqs', async () => {
      const gateways = await Promise.all([open(), open(), open(), open()]);
      await Promise.all(
        gateways.map(async (store, g) => {
          for (let b = 0; b < 8; b++) await store.commit(ids(`s${g}x${b}`, 5).map((id) => write(id, 1)));
        }),
      );
      const history = await gateways[0].history({ limit: 1000 });
      assert.equal(history.length, 4 * 8 * 5);
      assert.equal(new Set(history.map((h) => h.seq)).size, history.length);
      assert.equal(await db.collection('txs').countDocuments(), 0);
    });

    for (const killAt of ['committed', 'created'] as const) {
      it(`(e) a key erased while a batch sealed under it is interrupted (at '${killAt}'): recovery finishes the batch, no term shows`, async () => {
        const prefix = `e${killAt}`;
        const key = `key-${prefix}`;
        const setup = await open();
        await setup.commit(ids(`${prefix}u`, 10).map((id) => write(id, 1, T1, 'x', key)));
        await setup.commit([write(`${prefix}-other`, 1, T1, 'x', 'key-other')]);

        await crashAt({ uri, database, prefix, creates: 10, updates: 10, killAt, keyId: key });

        // Erased before anyone recovers the batch (a store without init() recovers nothing)...
        const eraser = new MongoStore(uri, database);
        stores.push(eraser);
        const { resources } = await eraser.eraseKey(key, T2);
        // ...hiding the v1 pointers, and at 'created' also the pointers the dead gateway had inserted.
        assert.equal(resources, killAt === 'created' ? 20 : 10);

        const recovered = await open();
        const watched = [...ids(`${prefix}u`, 10), ...ids(`${prefix}c`, 10)];
        const seen = await snapshot(recovered, watched);
        assert.deepEqual(seen.current, [...Array(10).fill(2), ...Array(10).fill(1)], 'the committed batch was rolled forward');
        assert.equal(seen.txs, 0);
        assert.deepEqual(seen.search, [`${prefix}-other@1`], 'only the resource under another key is visible');
        assert.equal(seen.count, 1);
        assert.equal(seen.byCode2, 0);
        const bySubject = (subject: string) => ({ type: 'Observation', clauses: [{ param: 'subject', anyOf: [subject] }], lastUpdated: [], limit: 100 });
        for (const subject of [`Patient/${prefix}u`, `Patient/${prefix}c`]) {
          assert.deepEqual(await recovered.search(bySubject(subject)), []);
        }

        // A batch sealed under the erased key after the erasure (the gateway refuses to; here forced) is hidden too.
        await recovered.commit([write(`${prefix}-late`, 1, T2, 'x', key)]);
        assert.equal(await recovered.count({ type: 'Observation', clauses: [], lastUpdated: [], limit: 100 }), 1);
        // No term of the erased key is left anywhere, searchable or not.
        assert.equal(await db.collection('current').countDocuments({ keyId: key, $or: [{ deleted: false }, { terms: { $ne: [] } }] }), 0);
        assert.equal(await db.collection('versions').countDocuments({ keyId: key, terms: { $ne: [] } }), 0);
        assert.equal(await db.collection('versions').countDocuments({ keyId: key }), 31);
      });
    }

    it('(e) markAnchored shreds again the terms of an erased key that its write may have put back (FerretDB write-back)', async () => {
      const store = await open();
      await store.commit([write('ea-1', 1, T1, 'x', 'key-ea')]);
      await store.eraseKey('key-ea', T2);
      // What a markAnchored that read the version before the erasure emptied its terms writes back on FerretDB.
      const versions = db.collection<{ _id: string; terms: string[] }>('versions');
      await versions.updateOne({ _id: 'Observation/ea-1/1' }, { $set: { terms: ['code=code-1'] } });
      await store.markAnchored([{ type: 'Observation', id: 'ea-1', versionId: 1, blockNumber: 1, envelopeIndex: 0, entryIndex: 0 }]);
      assert.equal(await versions.countDocuments({ keyId: 'key-ea', terms: { $ne: [] } }), 0);
      assert.deepEqual((await store.version('Observation', 'ea-1', 1))?.anchor, { blockNumber: 1, envelopeIndex: 0, entryIndex: 0 });
    });

    it('(e) an erasure wins over a re-wrap and an insert of the same key racing with it', async () => {
      const eraser = await open();
      const rotator = await open();
      const wrapped = (n: number) => new Uint8Array(48).fill(n);
      for (let round = 0; round < 20; round++) {
        const keyId = `race-${round}`;
        await eraser.insertKey({ keyId, masterKeyId: 'mk-1', wrapped: wrapped(1), createdAt: T1 });
        await Promise.all([
          eraser.eraseKey(keyId, T2),
          rotator.rewrapKey(keyId, 'mk-1', { masterKeyId: 'mk-2', wrapped: wrapped(2) }),
          rotator.insertKey({ keyId, masterKeyId: 'mk-3', wrapped: wrapped(3), createdAt: T2 }),
        ]);
        const stored = await rotator.getKey(keyId);
        assert.deepEqual([stored?.wrapped, stored?.masterKeyId, stored?.erasedAt], [null, null, T2], `round ${round}`);
        assert.equal(await db.collection<{ _id: string }>('data_keys').countDocuments({ _id: keyId }), 0, `round ${round}: wrapped bytes left`);
      }
      assert.deepEqual(await rotator.listKeys({ notWrappedUnder: 'mk-x', limit: 100 }), []);
    });

    it('(e) an erasure interrupted after its tombstone: the key reads as erased, is neither listed nor re-wrapped, and erasing again finishes it', async () => {
      const store = await open();
      const wrapped = new Uint8Array(48).fill(7);
      for (const keyId of ['k-1', 'k-2', 'k-3']) await store.insertKey({ keyId, masterKeyId: 'mk-1', wrapped, createdAt: T1 });
      // The state an erasure leaves when its gateway dies between the tombstone and the delete.
      const tombstones = db.collection<{ _id: string; createdAt: string; erasedAt: string }>('erased_keys');
      await tombstones.insertMany(['k-1', 'k-2'].map((_id) => ({ _id, createdAt: T1, erasedAt: T2 })));

      assert.deepEqual((await store.getKey('k-1'))?.erasedAt, T2);
      // The first page holds only interrupted erasures: it is refilled past them.
      assert.deepEqual((await store.listKeys({ notWrappedUnder: 'mk-2', limit: 1 })).map((k) => k.keyId), ['k-3']);
      assert.equal(await store.rewrapKey('k-1', 'mk-1', { masterKeyId: 'mk-2', wrapped }), false);
      assert.deepEqual((await store.insertKey({ keyId: 'k-2', masterKeyId: 'mk-1', wrapped, createdAt: T2 })).erasedAt, T2);
      const leftover = db.collection<{ _id: string }>('data_keys');
      assert.deepEqual((await leftover.find({}).toArray()).map((d) => d._id), ['k-3'], 'a refused re-wrap or insert deletes the bytes');

      await tombstones.insertOne({ _id: 'k-3', createdAt: T1, erasedAt: T2 });
      assert.deepEqual(await store.eraseKey('k-3', '2030-01-01T00:00:00.000Z'), { resources: 0 });
      assert.equal(await leftover.countDocuments(), 0);
      assert.equal((await store.getKey('k-3'))?.erasedAt, T2);
    });

    it('commits large batches: 750 creates, then 150 updates (more than one update command holds on FerretDB)', async (t) => {
      const store = await open();
      const created = ids('big', 750).map((id) => write(id, 1));
      const started = performance.now();
      await store.commit(created);
      const createMs = performance.now() - started;
      const updated = ids('big', 150).map((id) => write(id, 2, T2));
      const startedUpdate = performance.now();
      await store.commit(updated);
      const updateMs = performance.now() - startedUpdate;
      t.diagnostic(`750-resource create batch: ${createMs.toFixed(0)} ms; 150-resource update batch: ${updateMs.toFixed(0)} ms`);
      const query = { type: 'Observation', clauses: [{ param: 'code', anyOf: ['code-2'] }], lastUpdated: [], limit: 10 };
      const found = await store.search({ ...query, ids: ids('big', 750) });
      assert.deepEqual(found.map((r) => r.id), ids('big', 10));
      assert.equal(await store.count({ ...query, ids: ids('big', 750) }), 150);
      assert.equal(await store.count({ ...query, clauses: [], ids: ids('big', 750) }), 750);
    });
  });
}
