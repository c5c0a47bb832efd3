/** The ResourceStore contract: every adapter runs this same suite against its real engine. */
import assert from 'node:assert/strict';
import { describe, it, before, after } from 'node:test';
import {
  VersionConflictError,
  type AnchorMark,
  type IndexTerm,
  type ResourceStore,
  type UnanchoredVersion,
  type VersionWrite,
} from '../../src/vault/store.ts';

const enc = new TextEncoder();

function write(type: string, id: string, versionId: number, lastUpdated: string, terms: IndexTerm[] = [], deleted = false): VersionWrite {
  return {
    record: {
      type, id, versionId, lastUpdated, deleted,
      content: deleted ? null : enc.encode(JSON.stringify({ resourceType: type, id, v: versionId })),
      digest: deleted ? null : `digest-${id}-${versionId}`,
    },
    terms,
    expectedVersion: versionId - 1,
  };
}

const T1 = '2024-01-01T00:00:00.000Z';
const T2 = '2024-06-01T12:00:00.000Z';
const T3 = '2025-01-01T00:00:00.000Z';

export function storeContract(name: string, open: () => Promise<ResourceStore>): void {
  describe(`ResourceStore contract: ${name}`, () => {
    let store: ResourceStore;
    before(async () => {
      store = await open();
      await store.init();
    });
    after(async () => store.close());

    it('answers ping', async () => {
      assert.equal(await store.ping(), true);
    });

    it('commits versions and reads current and past versions back', async () => {
      await store.commit([write('Patient', 'p1', 1, T1, [{ param: 'identifier', value: 'sys|1' }])]);
      await store.commit([write('Patient', 'p1', 2, T2, [{ param: 'identifier', value: 'sys|2' }])]);
      const current = await store.current('Patient', 'p1');
      assert.equal(current?.versionId, 2);
      assert.equal(current?.lastUpdated, T2);
      assert.equal(current?.digest, 'digest-p1-2');
      assert.deepEqual(JSON.parse(new TextDecoder().decode(current!.content!)), { resourceType: 'Patient', id: 'p1', v: 2 });
      const first = await store.version('Patient', 'p1', 1);
      assert.equal(first?.versionId, 1);
      assert.equal(await store.version('Patient', 'p1', 3), undefined);
      assert.equal(await store.current('Patient', 'nope'), undefined);
    });

    it('replaces index terms on update', async () => {
      const q = (value: string) => ({ type: 'Patient', clauses: [{ param: 'identifier', anyOf: [value] }], lastUpdated: [], limit: 10 });
      assert.deepEqual((await store.search(q('sys|1'))).map((r) => r.id), []);
      assert.deepEqual((await store.search(q('sys|2'))).map((r) => r.id), ['p1']);
    });

    it('rejects a whole batch when one write conflicts, writing nothing', async () => {
      const batch = [write('Patient', 'p2', 1, T1), write('Patient', 'p1', 2, T3) /* p1 is already at 2 */];
      await assert.rejects(store.commit(batch), VersionConflictError);
      assert.equal(await store.current('Patient', 'p2'), undefined);
      assert.equal((await store.current('Patient', 'p1'))?.versionId, 2);
    });

    it('rejects a create of an existing resource', async () => {
      await assert.rejects(store.commit([write('Patient', 'p1', 1, T3)]), VersionConflictError);
    });

    it('searches by terms (AND across clauses, OR within), ids and lastUpdated, ordered by id with a cursor', async () => {
      const obs = (id: string, code: string, subject: string, at: string) =>
        write('Observation', id, 1, at, [{ param: 'code', value: code }, { param: 'subject', value: subject }]);
      await store.commit([
        obs('o3', 'A', 'Patient/p1', T1),
        obs('o1', 'A', 'Patient/p1', T2),
        obs('o2', 'B', 'Patient/p1', T3),
        obs('o4', 'A', 'Patient/p9', T3),
      ]);
      const base = { type: 'Observation', lastUpdated: [], limit: 10 };
      const ids = async (q: object) => (await store.search({ ...base, clauses: [], ...q })).map((r) => r.id);
      assert.deepEqual(await ids({ clauses: [{ param: 'code', anyOf: ['A'] }] }), ['o1', 'o3', 'o4']);
      assert.deepEqual(await ids({ clauses: [{ param: 'code', anyOf: ['A', 'B'] }, { param: 'subject', anyOf: ['Patient/p1'] }] }), ['o1', 'o2', 'o3']);
      assert.deepEqual(await ids({ ids: ['o2', 'o4', 'zz'] }), ['o2', 'o4']);
      assert.deepEqual(await ids({ lastUpdated: [{ op: 'ge', value: T2 }, { op: 'lt', value: T3 }] }), ['o1']);
      assert.deepEqual(await ids({ lastUpdated: [{ op: 'le', value: T2 }] }), ['o1', 'o3']);
      assert.deepEqual(await ids({ lastUpdated: [{ op: 'gt', value: T2 }] }), ['o2', 'o4']);
      assert.deepEqual(await ids({ afterId: 'o2', limit: 1 }), ['o3']);
      // `:not`: resources with none of the values, including those without the parameter at all.
      assert.deepEqual(await ids({ clauses: [{ param: 'code', anyOf: ['A'], negate: true }] }), ['o2']);
      assert.deepEqual(await ids({ clauses: [{ param: 'subject', anyOf: ['Patient/p9'], negate: true }, { param: 'code', anyOf: ['A'] }] }), ['o1', 'o3']);
      assert.equal(await store.count({ ...base, clauses: [{ param: 'code', anyOf: ['A'] }], afterId: 'o3', limit: 1 }), 3);
    });

    it('hides deleted resources from search but keeps their history', async () => {
      await store.commit([write('Observation', 'o4', 2, T3, [], true)]);
      const current = await store.current('Observation', 'o4');
      assert.equal(current?.deleted, true);
      assert.equal(current?.content, null);
      const found = await store.search({ type: 'Observation', clauses: [{ param: 'code', anyOf: ['A'] }], lastUpdated: [], limit: 10 });
      assert.deepEqual(found.map((r) => r.id), ['o1', 'o3']);
      const history = await store.history({ type: 'Observation', id: 'o4', limit: 10 });
      assert.deepEqual(history.map((r) => [r.versionId, r.deleted]), [[2, true], [1, false]]);
    });

    it('lists history newest first with a sequence cursor, per instance, type and system', async () => {
      const all = await store.history({ limit: 100 });
      const seqs = all.map((r) => r.seq);
      assert.deepEqual(seqs, [...seqs].sort((a, b) => b - a));
      assert.equal(all.length, 7);
      const page = await store.history({ limit: 2, beforeSeq: all[1].seq });
      assert.deepEqual(page.map((r) => r.seq), [all[2].seq, all[3].seq]);
      const patients = await store.history({ type: 'Patient', limit: 100 });
      assert.deepEqual(patients.map((r) => `${r.id}@${r.versionId}`), ['p1@2', 'p1@1']);
      const since = await store.history({ type: 'Observation', since: T3, limit: 100 });
      assert.ok(since.every((r) => r.lastUpdated >= T3) && since.length === 3);
    });

    it('writes a deleted resource again as its next version, current and searchable', async () => {
      await store.commit([write('Observation', 'o4', 3, T3, [{ param: 'code', value: 'A' }])]);
      const current = await store.current('Observation', 'o4');
      assert.equal(current?.versionId, 3);
      assert.equal(current?.deleted, false);
      const found = await store.search({ type: 'Observation', clauses: [{ param: 'code', anyOf: ['A'] }], lastUpdated: [], limit: 10 });
      assert.deepEqual(found.map((r) => r.id), ['o1', 'o3', 'o4']);
      const history = await store.history({ type: 'Observation', id: 'o4', limit: 10 });
      assert.deepEqual(history.map((r) => [r.versionId, r.deleted]), [[3, false], [2, true], [1, false]]);
      assert.equal((await store.version('Observation', 'o4', 2))?.deleted, true);
    });

    describe('head state', () => {
      const sorted = (terms: IndexTerm[]) => [...terms].sort((x, y) => `${x.param}=${x.value}`.localeCompare(`${y.param}=${y.value}`));
      const withMac = (w: VersionWrite, headMac: string): VersionWrite => ({ ...w, headMac });

      it('keeps the head MAC and search visibility with the pointer, on current() and search(); history has none', async () => {
        await store.commit([withMac(write('Device', 'd1', 1, T1, [{ param: 'code', value: 'A' }, { param: 'code', value: 'B' }]), 'mac-1')]);
        assert.deepEqual((await store.current('Device', 'd1'))!.head, { mac: 'mac-1', hidden: false, superseded: false });
        assert.deepEqual(sorted(await store.indexTerms('Device', 'd1')), [{ param: 'code', value: 'A' }, { param: 'code', value: 'B' }]);
        await store.commit([withMac(write('Device', 'd1', 2, T2, [{ param: 'code', value: 'C' }]), 'mac-2')]);
        const found = await store.search({ type: 'Device', clauses: [{ param: 'code', anyOf: ['C'] }], lastUpdated: [], limit: 10 });
        assert.deepEqual(found.map((v) => [v.versionId, v.head]), [[2, { mac: 'mac-2', hidden: false, superseded: false }]]);
        assert.deepEqual(await store.indexTerms('Device', 'd1'), [{ param: 'code', value: 'C' }]);
        assert.equal((await store.version('Device', 'd1', 1))!.head, undefined);
        assert.deepEqual((await store.history({ type: 'Device', limit: 10 })).map((v) => v.head), [undefined, undefined]);
      });

      it('hides a deleted resource\'s pointer and drops its terms; a write without a MAC leaves none', async () => {
        await store.commit([withMac(write('Device', 'd1', 3, T3, [], true), 'mac-3')]);
        assert.deepEqual((await store.current('Device', 'd1'))!.head, { mac: 'mac-3', hidden: true, superseded: false });
        assert.deepEqual(await store.indexTerms('Device', 'd1'), []);
        await store.commit([write('Device', 'd2', 1, T1)]);
        assert.deepEqual((await store.current('Device', 'd2'))!.head, { mac: null, hidden: false, superseded: false });
        assert.deepEqual(await store.indexTerms('Device', 'nothing'), []);
      });
    });

    describe('index rewrites', () => {
      const q = (param: string, value: string, negate = false) => ({
        type: 'Procedure', clauses: [{ param, anyOf: [value], ...(negate && { negate }) }], lastUpdated: [], limit: 10,
      });
      const ids = async (query: ReturnType<typeof q>) => (await store.search(query)).map((r) => r.id);

      it('replaces the terms of a current resource only at its current version, never of a deleted or missing one', async () => {
        await store.commit([write('Procedure', 'pr1', 1, T1, [{ param: 'code', value: 'A' }])]);
        await store.commit([write('Procedure', 'pr1', 2, T2, [{ param: 'code', value: 'B' }])]);
        await store.commit([write('Procedure', 'pr2', 1, T1, [{ param: 'code', value: 'B' }])]);
        await store.commit([write('Procedure', 'pr2', 2, T2, [], true)]);
        assert.equal(await store.replaceTerms('Procedure', 'pr1', 1, [{ param: 'code', value: 'C' }]), false);
        assert.equal(await store.replaceTerms('Procedure', 'pr2', 2, [{ param: 'code', value: 'C' }]), false);
        assert.equal(await store.replaceTerms('Procedure', 'nope', 1, [{ param: 'code', value: 'C' }]), false);
        assert.deepEqual(await ids(q('code', 'C')), []);

        assert.equal(await store.replaceTerms('Procedure', 'pr1', 2, [{ param: 'code', value: 'C' }, { param: '_index', value: 'g2' }]), true);
        assert.deepEqual(await ids(q('code', 'B')), []);
        assert.deepEqual(await ids(q('code', 'C')), ['pr1']);
        assert.deepEqual(await ids(q('_index', 'g2', true)), []);
        assert.equal((await store.current('Procedure', 'pr1'))?.versionId, 2);
        // The next write replaces the rewritten terms as usual.
        await store.commit([write('Procedure', 'pr1', 3, T3, [{ param: 'code', value: 'D' }])]);
        assert.deepEqual(await ids(q('code', 'C')), []);
        assert.deepEqual(await ids(q('_index', 'g2', true)), ['pr1']);
      });

      it('removes terms across resources, leaving every other term, idempotently', async () => {
        await store.commit([
          write('Procedure', 'pr3', 1, T1, [{ param: 'code', value: 'D' }, { param: 'subject', value: 'tok-b' }]),
          write('Procedure', 'pr4', 1, T1, [{ param: 'performer', value: 'tok-b' }, { param: 'subject', value: 'tok-a' }]),
        ]);
        const remove = [{ type: 'Procedure', param: 'subject', value: 'tok-b' }, { type: 'Procedure', param: 'performer', value: 'tok-b' }];
        await store.removeTerms(remove);
        await store.removeTerms(remove);
        await store.removeTerms([]);
        assert.deepEqual(await ids(q('subject', 'tok-b')), []);
        assert.deepEqual(await ids(q('performer', 'tok-b')), []);
        assert.deepEqual(await ids(q('subject', 'tok-a')), ['pr4']);
        assert.deepEqual(await ids(q('code', 'D')), ['pr1', 'pr3']);
      });
    });

    describe('data keys', () => {
      const bytes = (n: number) => new Uint8Array(48).fill(n);

      it('inserts a key once: a second insert of the same id returns the first one', async () => {
        const first = await store.insertKey({ keyId: 'k-a', masterKeyId: 'mk-1', wrapped: bytes(1), createdAt: T1 });
        assert.deepEqual([first.keyId, first.masterKeyId, Buffer.from(first.wrapped!)[0], first.erasedAt], ['k-a', 'mk-1', 1, null]);
        const second = await store.insertKey({ keyId: 'k-a', masterKeyId: 'mk-2', wrapped: bytes(2), createdAt: T2 });
        assert.deepEqual([second.masterKeyId, Buffer.from(second.wrapped!)[0], second.createdAt], ['mk-1', 1, T1]);
        assert.equal(await store.getKey('k-none'), undefined);
        const batch = await store.insertKeys([
          { keyId: 'k-batch-1', masterKeyId: 'mk-1', wrapped: bytes(7), createdAt: T1 },
          { keyId: 'k-a', masterKeyId: 'mk-3', wrapped: bytes(8), createdAt: T3 },
        ]);
        assert.deepEqual(batch.map((k) => [k.keyId, k.masterKeyId]), [['k-batch-1', 'mk-1'], ['k-a', 'mk-1']]);
      });

      it('lists keys not wrapped under a master key, by id with a cursor, and re-wraps them only from the expected master', async () => {
        await store.insertKey({ keyId: 'k-b', masterKeyId: 'mk-1', wrapped: bytes(3), createdAt: T1 });
        await store.insertKey({ keyId: 'k-c', masterKeyId: 'mk-2', wrapped: bytes(4), createdAt: T1 });
        const ids = async (q: { notWrappedUnder: string; afterKeyId?: string; limit: number }) => (await store.listKeys(q)).map((k) => k.keyId);
        assert.deepEqual(await ids({ notWrappedUnder: 'mk-2', limit: 10 }), ['k-a', 'k-b', 'k-batch-1']);
        assert.deepEqual(await ids({ notWrappedUnder: 'mk-2', afterKeyId: 'k-a', limit: 10 }), ['k-b', 'k-batch-1']);
        assert.deepEqual(await ids({ notWrappedUnder: 'mk-2', limit: 1 }), ['k-a']);
        assert.equal(await store.rewrapKey('k-a', 'mk-9', { masterKeyId: 'mk-2', wrapped: bytes(5) }), false);
        assert.equal(await store.rewrapKey('k-a', 'mk-1', { masterKeyId: 'mk-2', wrapped: bytes(5) }), true);
        const rewrapped = await store.getKey('k-a');
        assert.deepEqual([rewrapped?.masterKeyId, Buffer.from(rewrapped!.wrapped!)[0]], ['mk-2', 5]);
        assert.deepEqual(await ids({ notWrappedUnder: 'mk-2', limit: 10 }), ['k-b', 'k-batch-1']);
      });

      it('erases a key: tombstone, terms and search visibility gone, versions kept as sealed bytes, idempotent', async () => {
        const sealed = (id: string, versionId: number, code: string) => {
          const w = write('Condition', id, versionId, T2, [{ param: 'code', value: code }, { param: '_compartment', value: 'tok-p' }]);
          w.record.keyId = 'k-b';
          return w;
        };
        await store.commit([sealed('c1', 1, 'X'), sealed('c2', 1, 'X')]);
        await store.commit([sealed('c1', 2, 'Y')]);
        const other = write('Condition', 'c3', 1, T2, [{ param: 'code', value: 'X' }]);
        other.record.keyId = 'k-c';
        await store.commit([other]);
        assert.equal((await store.current('Condition', 'c1'))?.keyId, 'k-b');
        const q = (param: string, value: string) => ({ type: 'Condition', clauses: [{ param, anyOf: [value] }], lastUpdated: [], limit: 10 });

        assert.deepEqual(await store.eraseKey('k-b', T3), { resources: 2 });
        const tomb = await store.getKey('k-b');
        assert.deepEqual([tomb?.masterKeyId, tomb?.wrapped, tomb?.erasedAt], [null, null, T3]);
        assert.deepEqual((await store.search(q('code', 'X'))).map((r) => r.id), ['c3']);
        assert.deepEqual(await store.search(q('_compartment', 'tok-p')), []);
        assert.equal(await store.count({ type: 'Condition', clauses: [], lastUpdated: [], limit: 10 }), 1);
        assert.equal(await store.count(q('code', 'Y')), 0);
        // The sealed versions stay (their digests are anchored); without the key they are noise.
        const history = await store.history({ type: 'Condition', id: 'c1', limit: 10 });
        assert.deepEqual(history.map((r) => [r.versionId, r.keyId]), [[2, 'k-b'], [1, 'k-b']]);

        assert.deepEqual(await store.eraseKey('k-b', '2030-01-01T00:00:00.000Z'), { resources: 0 });
        assert.equal((await store.getKey('k-b'))?.erasedAt, T3);
        // An erased key can be neither re-created nor re-wrapped.
        const again = await store.insertKey({ keyId: 'k-b', masterKeyId: 'mk-2', wrapped: bytes(6), createdAt: T3 });
        assert.deepEqual([again.wrapped, again.erasedAt], [null, T3]);
        assert.equal(await store.rewrapKey('k-b', 'mk-1', { masterKeyId: 'mk-2', wrapped: bytes(6) }), false);
        assert.deepEqual((await store.listKeys({ notWrappedUnder: 'mk-x', limit: 10 })).map((k) => k.keyId), ['k-a', 'k-batch-1', 'k-c']);
        // A writer that still had the key (another process's cache) cannot make new data searchable under it:
        // the commit is refused, or (MongoDB, no transactions) its terms are shredded and it is hidden.
        const late = sealed('c9', 1, 'X');
        const refused = await store.commit([late]).then(() => false, () => true);
        assert.deepEqual((await store.search(q('code', 'X'))).map((r) => r.id), ['c3']);
        if (refused) assert.equal(await store.current('Condition', 'c9'), undefined);
        // Erasing a key never seen leaves a tombstone, so it cannot be created later.
        assert.deepEqual(await store.eraseKey('k-never', T3), { resources: 0 });
        assert.equal((await store.getKey('k-never'))?.erasedAt, T3);
      });
    });

    describe('anchor outbox', () => {
      const at = (blockNumber: number, envelopeIndex: number, entryIndex: number) => ({ blockNumber, envelopeIndex, entryIndex });
      const mark = (v: UnanchoredVersion, location: ReturnType<typeof at>): AnchorMark => ({ type: v.type, id: v.id, versionId: v.versionId, ...location });
      const slot = (v: { type: string; id: string; versionId: number }) => `${v.type}/${v.id}/${v.versionId}`;
      const outbox = async (query: { afterSeq?: number; limit: number } = { limit: 1000 }) => (await store.unanchored(query)).map(slot);

      it('holds every version committed so far, oldest first, until it is anchored', async () => {
        const backlog = await store.unanchored({ limit: 1000 });
        const history = await store.history({ limit: 1000 });
        assert.ok(backlog.length > 0);
        assert.deepEqual(backlog.map((v) => [v.seq, slot(v)]), history.reverse().map((v) => [v.seq, slot(v)]));
        await store.markAnchored(backlog.map((v, i) => mark(v, at(1, 0, i))));
        assert.deepEqual(await outbox(), []);
      });

      it('lists new versions in seq order with digest, patient token and deletions (digest null)', async () => {
        const e1 = write('Encounter', 'e1', 1, T1);
        e1.record.patientToken = 'tok-1';
        // A plaintext store keeps the commitment salt beside the content; the outbox never lists it.
        e1.record.salt = new Uint8Array(32).fill(7);
        await store.commit([e1, write('Encounter', 'e2', 1, T1)]);
        const deletion = write('Encounter', 'e1', 2, T2, [], true);
        deletion.record.patientToken = 'tok-1';
        await store.commit([deletion]);
        const listed = await store.unanchored({ limit: 10 });
        assert.deepEqual(listed.map(({ seq: _seq, ...v }) => v), [
          { type: 'Encounter', id: 'e1', versionId: 1, lastUpdated: T1, deleted: false, digest: 'digest-e1-1', patientToken: 'tok-1' },
          { type: 'Encounter', id: 'e2', versionId: 1, lastUpdated: T1, deleted: false, digest: 'digest-e2-1' },
          { type: 'Encounter', id: 'e1', versionId: 2, lastUpdated: T2, deleted: true, digest: null, patientToken: 'tok-1' },
        ]);
        assert.ok(listed[0].seq < listed[1].seq && listed[1].seq < listed[2].seq);
        assert.equal((await store.version('Encounter', 'e1', 1))?.patientToken, 'tok-1');
        assert.deepEqual([...(await store.version('Encounter', 'e1', 1))!.salt!], Array(32).fill(7));
        assert.equal((await store.current('Encounter', 'e2'))?.salt, undefined);
        assert.equal((await store.current('Encounter', 'e2'))?.patientToken, undefined);
      });

      it('pages by afterSeq and limit', async () => {
        const listed = await store.unanchored({ limit: 10 });
        assert.deepEqual(await outbox({ limit: 2 }), listed.slice(0, 2).map(slot));
        assert.deepEqual(await outbox({ afterSeq: listed[0].seq, limit: 10 }), listed.slice(1).map(slot));
        assert.deepEqual(await outbox({ afterSeq: listed[1].seq, limit: 1 }), [slot(listed[2])]);
        assert.deepEqual(await outbox({ afterSeq: listed[2].seq, limit: 10 }), []);
        assert.deepEqual(await outbox({ limit: 0 }), []);
      });

      it('gets nothing from a rejected batch', async () => {
        const before = await outbox();
        await assert.rejects(store.commit([write('Encounter', 'e3', 1, T3), write('Encounter', 'e2', 1, T3)]), VersionConflictError);
        assert.deepEqual(await outbox(), before);
      });

      it('anchors versions once: they leave the outbox, keep their first location, and reads show it', async () => {
        const [e1v1, e2v1, e1v2] = await store.unanchored({ limit: 10 });
        await store.markAnchored([mark(e1v1, at(7, 0, 0)), mark(e1v2, at(7, 0, 1))]);
        assert.deepEqual(await outbox(), [slot(e2v1)]);
        // Marked again elsewhere (a publisher retrying after a crash): the first location stands.
        await store.markAnchored([mark(e1v1, at(9, 2, 3)), mark(e2v1, at(8, 1, 0))]);
        assert.deepEqual(await outbox(), []);
        // A version that does not exist is ignored.
        await store.markAnchored([{ type: 'Encounter', id: 'nope', versionId: 1, ...at(9, 0, 0) }]);

        assert.deepEqual((await store.version('Encounter', 'e1', 1))?.anchor, at(7, 0, 0));
        assert.deepEqual((await store.current('Encounter', 'e1'))?.anchor, at(7, 0, 1));
        assert.deepEqual((await store.current('Encounter', 'e2'))?.anchor, at(8, 1, 0));
        const history = await store.history({ type: 'Encounter', id: 'e1', limit: 10 });
        assert.deepEqual(history.map((v) => [v.versionId, v.anchor]), [[2, at(7, 0, 1)], [1, at(7, 0, 0)]]);

        await store.commit([write('Encounter', 'e2', 2, T3)]);
        assert.equal((await store.current('Encounter', 'e2'))?.anchor, undefined);
        assert.deepEqual(await outbox(), ['Encounter/e2/2']);
      });

      it('keeps the federation tokens on the outbox: resource token, link tokens (also empty), erased patient token', async () => {
        const patient = write('Patient', 'pf', 1, T1);
        Object.assign(patient.record, { patientToken: 'tok-p', resourceToken: 'res-p', linkTokens: ['link-a', 'link-b'] });
        const observation = write('Observation', 'of', 1, T1);
        Object.assign(observation.record, { patientToken: 'tok-p', resourceToken: 'res-o' });
        await store.commit([patient, observation]);
        const tombstone = write('Patient', 'pf', 2, T2, [], true);
        Object.assign(tombstone.record, { patientToken: 'tok-p', resourceToken: 'res-p', linkTokens: [] });
        const erasure = write('AuditEvent', 'af', 1, T2);
        erasure.record.erasedPatientToken = 'tok-p';
        await store.commit([tombstone, erasure]);
        const mine = (await store.unanchored({ limit: 100 })).filter((v) => ['pf', 'of', 'af'].includes(v.id));
        assert.deepEqual(mine.map(({ seq: _seq, lastUpdated: _at, digest: _digest, ...v }) => v), [
          { type: 'Patient', id: 'pf', versionId: 1, deleted: false, patientToken: 'tok-p', resourceToken: 'res-p', linkTokens: ['link-a', 'link-b'] },
          { type: 'Observation', id: 'of', versionId: 1, deleted: false, patientToken: 'tok-p', resourceToken: 'res-o' },
          { type: 'Patient', id: 'pf', versionId: 2, deleted: true, patientToken: 'tok-p', resourceToken: 'res-p', linkTokens: [] },
          { type: 'AuditEvent', id: 'af', versionId: 1, deleted: false, erasedPatientToken: 'tok-p' },
        ]);
        // Versions read back carry them too; anchoring takes them out of the outbox like any version.
        assert.deepEqual((await store.version('Patient', 'pf', 1))?.linkTokens, ['link-a', 'link-b']);
        assert.equal((await store.current('Observation', 'of'))?.resourceToken, 'res-o');
        await store.markAnchored(mine.map((v, i) => mark(v, at(11, 0, i))));
        assert.deepEqual((await store.unanchored({ limit: 100 })).filter((v) => ['pf', 'of', 'af'].includes(v.id)), []);
      });
    });
  });
}
