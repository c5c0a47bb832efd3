/**
 * The commit of a batch in the MongoDB store (the collections and the version slots are described in
 * mongo-store.ts; deciding, rolling forward, undoing and recovery are in mongo-batch.ts).
 *
 * Commit protocol
 *   1. Claim a seq block: `seqblocks.insertOne({_id: k})`. On a duplicate, try a higher k.
 *   2. Insert the tx document. Its `createdAt` comes from `$currentDate`, and the seq hint moves on.
 *   3. Updates only: read the pointers of the updated resources (one query). Each one must be at its
 *      expected version. Only the holder of slot expected+1 can move it from there, so the check stays true.
 *   4. `insertMany` the versions (`tx: txId`). They are invisible. A duplicate slot means another batch
 *      holds it: VersionConflictError. The batch is undone: its versions, then its tx document.
 *   5. COMMIT POINT: `decisions.insertOne({_id: txId, outcome: 'committed'})`.
 *      - If the insert finds 'aborted' already there, a recoverer presumed the batch dead. The batch is
 *        undone and commit() throws CommitAbandonedError.
 *      - If the engine does not answer, the outcome is settled by inserting 'aborted' (or by reading the
 *        decision that is there). So commit() does not throw for a batch that will become visible. The one
 *        exception is CommitOutcomeUnknownError: the engine kept failing through about 30 s of retries.
 *   6. Roll forward. This is idempotent and anyone may do it once the batch is committed.
 *      - Pointers of creates: `insertMany`. A duplicate means an earlier run of this step inserted it, because
 *        only the holder of v1 ever inserts a pointer.
 *      - Pointers of updates: bulkWrite `updateOne({_id, version: expected}, {$set: …})`.
 *      - Delete the tx document.
 *      A failure after the commit point does not fail commit(): the batch IS committed, and recovery
 *      finishes it.
 *   After an engine error before the commit point, the batch is marked 'aborted' and its versions are
 *   deleted. Its tx document is left for recovery, which deletes versions again once the batch is stale,
 *   so a write the engine applied late (after its client gave up) is removed too.
 *
 * Visibility while committing. Until the commit point no pointer has moved, so nothing of the batch shows,
 * and a failed batch never shows. Between the commit point and the end of roll-forward (milliseconds), a
 * reader may see a COMMITTED batch partially: some resources at their new version and others not yet. If a
 * gateway dies in that window, its batch becomes whole when recovery rolls it forward. A writer that starts
 * from a version the batch superseded finds the slot taken and gets VersionConflictError.
 */
import { Binary, MongoBulkWriteError } from 'mongodb';
import { isDuplicateKey, writeErrorsOf } from './driver.ts';
import { decide, resolveBlockers, rollForward, sleep, undo, type BatchContext, type Move } from './mongo-batch.ts';
import { termStrings } from './mongo-index.ts';
import { pointerKey, slotKey, type Outcome, type PointerDoc, type VersionDoc } from './mongo-vault.ts';
import { VersionConflictError, type VersionWrite } from '../../vault/store.ts';

/** Seqs per block: a batch holds at most this many writes. */
const BLOCK = 2 ** 20;

/** A slot or pointer is held by other batches; `blockers` are their txIds (recoverable when stale). */
class RefusedError extends Error {
  constructor(
    readonly conflict: VersionConflictError,
    readonly blockers: number[],
  ) {
    super(conflict.message);
  }
}

/**
 * The batch was aborted at its commit point, so nothing was written. Either a recoverer presumed it dead
 * (it took longer than staleAfterMs), or the engine failed while the decision was being written. Safe to retry.
 */
export class CommitAbandonedError extends Error {
  constructor(txId: number) {
    super(`vault batch ${txId} was aborted at its commit point (presumed dead by recovery, or the engine failed); nothing was written`);
    this.name = 'CommitAbandonedError';
  }
}

/**
 * The engine stopped answering while the commit decision was being written, and kept failing while the
 * outcome was being settled. The batch may or may not be committed; recovery settles it either way.
 */
export class CommitOutcomeUnknownError extends Error {
  constructor(txId: number, cause: unknown) {
    super(`vault batch ${txId}: the engine failed at the commit point; whether the batch committed is unknown until recovery settles it`, {
      cause,
    });
    this.name = 'CommitOutcomeUnknownError';
  }
}

/** Commits batches; holds this process's hint of the next free seq block. */
export class BatchCommitter {
  /** The next seq block this process will try to claim (a local hint). */
  private nextBlock = 0;

  constructor(private readonly ctx: BatchContext) {}

  async commit(writes: VersionWrite[]): Promise<void> {
    if (writes.length === 0) return;
    if (writes.length > BLOCK) throw new RangeError(`a batch holds at most ${BLOCK} writes`);
    const plan = planMoves(writes);
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.attempt(writes, plan);
      } catch (e) {
        if (!(e instanceof RefusedError)) throw e;
        // Refused by other batches: if they are dead (stale) or leftovers, clear them and try once more.
        if (attempt === 0 && e.blockers.length > 0 && (await resolveBlockers(this.ctx, e.blockers))) continue;
        throw e.conflict;
      }
    }
  }

  private async attempt(writes: VersionWrite[], plan: Move[]): Promise<void> {
    const { vault } = this.ctx;
    const txId = await this.claimBlock();
    const first = txId * BLOCK;
    await this.ctx.step('allocated', txId);
    await Promise.all([
      vault.txs.updateOne(
        { _id: txId },
        { $setOnInsert: { writes: writes.length }, $currentDate: { createdAt: true } },
        { upsert: true },
      ),
      // Only a hint for the next claimer (a lost update there costs a retry, never correctness).
      vault.counters.updateOne({ _id: 'seqblock' }, { $max: { next: txId + 1 } }, { upsert: true }).catch(() => undefined),
    ]);
    await this.ctx.step('began', txId);

    const moves = plan.map(({ expected, target }) => ({ expected, target: { ...target, seq: first + target.seq } }));
    try {
      await this.checkPointers(moves);
      await this.ctx.step('checked', txId);
      await this.stage(txId, first, writes);
      await this.ctx.step('staged', txId);
    } catch (e) {
      if (e instanceof RefusedError) {
        // Every operation was answered, so nothing of ours can land later: undo now.
        await undo(vault, txId, true).catch(() => undefined);
      } else {
        // The engine failed and a write may still land: abort, undo, leave the tx document for recovery.
        await this.abandon(txId).catch(() => undefined);
      }
      throw e;
    }

    let outcome: Outcome;
    try {
      outcome = await decide(vault, txId, 'committed');
    } catch (e) {
      throw new CommitOutcomeUnknownError(txId, e);
    }
    if (outcome !== 'committed') {
      await undo(vault, txId, true).catch(() => undefined);
      throw new CommitAbandonedError(txId);
    }
    await this.ctx.step('committed', txId);

    // Committed: from here on a failure does not fail the batch (see the header comment).
    for (let tries = 0; ; tries++) {
      try {
        return await rollForward(this.ctx, txId, moves);
      } catch {
        if (tries === 4) return; // recovery finishes it
        await sleep(100 * 2 ** tries);
      }
    }
  }

  /** Claims a seq block with a unique insert; its number is the batch's txId. */
  private async claimBlock(): Promise<number> {
    let k = this.nextBlock > 0 ? this.nextBlock : await this.blockHint();
    for (let tries = 0; ; tries++) {
      try {
        await this.ctx.vault.seqblocks.insertOne({ _id: k });
        this.nextBlock = k + 1;
        return k;
      } catch (e) {
        if (!isDuplicateKey(e) || tries === 1000) throw e;
        k = Math.max(k + 1, await this.blockHint());
      }
    }
  }

  private async blockHint(): Promise<number> {
    return (await this.ctx.vault.counters.findOne({ _id: 'seqblock' }))?.next ?? 1;
  }

  /** Pointers of updated resources must be at their expected version (creates are checked by their v1 slot). */
  private async checkPointers(moves: Move[]): Promise<void> {
    const { vault } = this.ctx;
    const updates = moves.filter((m) => m.expected > 0);
    if (updates.length === 0) return;
    const found = await vault.pointers
      .find({ _id: { $in: updates.map((m) => m.target._id) } }, { projection: { version: 1 } })
      .toArray();
    const at = new Map(found.map((p) => [p._id, p.version]));
    const refused = updates.filter((m) => at.get(m.target._id) !== m.expected);
    if (refused.length === 0) return;
    // A pointer behind its expected version may belong to a committed batch that its gateway did not finish.
    const behind = refused.filter((m) => (at.get(m.target._id) ?? 0) < m.expected);
    const holders = behind.length
      ? await vault.versions
          .find({ _id: { $in: behind.map((m) => slotKey(m.target.type, m.target.id, m.expected)) } }, { projection: { tx: 1 } })
          .toArray()
      : [];
    const culprit = refused[0].target;
    throw new RefusedError(new VersionConflictError(culprit.type, culprit.id), [...new Set(holders.map((h) => h.tx))]);
  }

  /** Inserts the versions: each one takes its (type, id, v) slot or the batch is refused. */
  private async stage(txId: number, first: number, writes: VersionWrite[]): Promise<void> {
    const { vault } = this.ctx;
    const docs: VersionDoc[] = writes.map(({ record: r, terms, headMac }, i) => ({
      _id: slotKey(r.type, r.id, r.versionId),
      seq: first + i,
      type: r.type,
      id: r.id,
      v: r.versionId,
      lastUpdated: r.lastUpdated,
      deleted: r.deleted,
      content: r.content ? new Binary(r.content) : null,
      digest: r.digest,
      salt: r.salt ? new Binary(r.salt) : null,
      keyId: r.keyId ?? null,
      patientToken: r.patientToken ?? null,
      ...(r.resourceToken !== undefined && { resourceToken: r.resourceToken }),
      ...(r.linkTokens !== undefined && { linkTokens: r.linkTokens }),
      ...(r.erasedPatientToken !== undefined && { erasedPatientToken: r.erasedPatientToken }),
      terms: termStrings(terms),
      headMac: headMac ?? null,
      tx: txId,
      anchored: false,
    }));
    try {
      await vault.versions.insertMany(docs, { ordered: false });
    } catch (e) {
      if (!isDuplicateKey(e)) throw e;
      const failed = writeErrorsOf(e as MongoBulkWriteError).map((w) => docs[w.index]);
      const holders = await vault.versions.find({ _id: { $in: failed.map((d) => d._id) } }, { projection: { tx: 1 } }).toArray();
      throw new RefusedError(
        new VersionConflictError(failed[0].type, failed[0].id),
        [...new Set(holders.map((h) => h.tx).filter((tx) => tx !== txId))],
      );
    }
  }

  /** After an engine error before the commit point: abort, undo what landed, keep the tx for recovery. */
  private async abandon(txId: number): Promise<void> {
    if ((await decide(this.ctx.vault, txId, 'aborted')) === 'aborted') await undo(this.ctx.vault, txId, false);
  }
}

/**
 * Groups a batch by resource. Every write must supersede its expected version by exactly one, and several
 * writes of one resource must chain; the pointer moves once, from the first expected version to the last
 * write. `target.seq` is the index of that write in the batch (made absolute per attempt).
 */
function planMoves(writes: VersionWrite[]): Move[] {
  const moves = new Map<string, Move>();
  writes.forEach(({ record: r, terms, expectedVersion, headMac }, index) => {
    if (r.versionId <= expectedVersion) throw new VersionConflictError(r.type, r.id);
    if (r.versionId !== expectedVersion + 1) {
      throw new RangeError(`${r.type}/${r.id}: versionId ${r.versionId} must be expectedVersion + 1 (${expectedVersion + 1})`);
    }
    const key = pointerKey(r.type, r.id);
    const target: PointerDoc = {
      _id: key, type: r.type, id: r.id, version: r.versionId, seq: index, lastUpdated: r.lastUpdated, deleted: r.deleted,
      keyId: r.keyId ?? null, terms: termStrings(terms), mac: headMac ?? null,
    };
    const move = moves.get(key);
    if (!move) moves.set(key, { expected: expectedVersion, target });
    else if (expectedVersion !== move.target.version) throw new VersionConflictError(r.type, r.id);
    else move.target = target;
  });
  return [...moves.values()];
}
