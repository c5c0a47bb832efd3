/**
 * Settling a batch of the MongoDB store once it was staged (the commit protocol is in mongo-commit.ts):
 * writing its one decision, rolling a committed batch forward, undoing one that will never commit, and the
 * recovery that does these for batches whose gateway is gone.
 *
 * Recovery. `init()` runs `recover()` on every tx document:
 *   - 'committed' batches are rolled forward, whatever their age.
 *   - Undecided batches older than `staleAfterMs` (server clock) are aborted, by inserting 'aborted', and
 *     then undone.
 *   - 'aborted' batches are undone, and their tx document is deleted once it is stale.
 *   Younger undecided batches may belong to a live gateway (several gateways share one database) and are
 *   left alone. A writer refused by a slot or pointer of a stale batch resolves that batch the same way and
 *   retries once, so a crashed gateway does not block resources until the next restart. Versions of a batch
 *   with no tx document and no 'committed' decision are leftovers of an undone batch and are deleted then.
 *   `staleAfterMs` must exceed the longest commit. The default is 60 s; 0 is meant for tests.
 */
import type { AnyBulkWriteOperation } from 'mongodb';
import { isDuplicateKey, serverNow } from './driver.ts';
import { shredIfErased } from './mongo-keys.ts';
import { pointerKey, updateInCommands, type Outcome, type PointerDoc, type Vault } from './mongo-vault.ts';

/** Points inside commit() where the test hook runs (fault injection: a child process kills itself there). */
export type CommitStep =
  | 'allocated' // seq block claimed
  | 'began' // tx document inserted
  | 'checked' // pointers of updated resources verified
  | 'staged' // versions inserted (invisible)
  | 'committed' // commit point passed
  | 'created' // pointers of created resources inserted
  | 'moved' // pointers of updated resources moved
  | 'finished'; // tx document deleted

/** What committing and settling batches need besides the vault. */
export interface BatchContext {
  readonly vault: Vault;
  /** A batch in flight longer than this is presumed dead (its gateway crashed) and may be recovered. */
  readonly staleAfterMs: number;
  /** Runs the test hook at a step of commit(). */
  step(step: CommitStep, txId: number): Promise<void>;
}

/** One resource of a batch: its pointer moves from `expected` to `target` when the batch rolls forward. */
export interface Move {
  expected: number;
  target: PointerDoc;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Writes the one decision of a batch: the first insert wins. Returns the outcome that stands. When the
 * engine does not answer, the outcome is settled by inserting 'aborted' (the first insert still wins).
 */
export async function decide(vault: Vault, txId: number, outcome: Outcome): Promise<Outcome> {
  let wanted = outcome;
  for (let tries = 0; ; tries++) {
    try {
      await vault.decisions.insertOne({ _id: txId, outcome: wanted });
      return wanted;
    } catch (e) {
      if (isDuplicateKey(e)) {
        const decision = await vault.decisions.findOne({ _id: txId }).catch(() => null);
        if (decision) return decision.outcome;
      }
      if (tries === 20) throw e;
      // Unknown whether our insert landed: from now on only ever try to abort, which settles it either way.
      wanted = 'aborted';
      await sleep(Math.min(100 * 2 ** tries, 2_000));
    }
  }
}

/** Idempotent: moves the pointers of a committed batch, then deletes its tx document. */
export async function rollForward(ctx: BatchContext, txId: number, moves?: Move[]): Promise<void> {
  const { vault } = ctx;
  moves ??= await movesOf(vault, txId);
  const creates = moves.filter((m) => m.expected === 0).map((m) => m.target);
  if (creates.length > 0) {
    try {
      await vault.pointers.insertMany(creates, { ordered: false });
    } catch (e) {
      if (!isDuplicateKey(e)) throw e; // inserted by an earlier run: only the holder of v1 inserts a pointer
    }
  }
  await ctx.step('created', txId);
  const updates: AnyBulkWriteOperation<PointerDoc>[] = moves
    .filter((m) => m.expected > 0)
    .map(({ expected, target: { _id, ...fields } }) => ({
      updateOne: { filter: { _id, version: expected }, update: { $set: fields } },
    }));
  await updateInCommands(vault, vault.pointers, updates);
  await ctx.step('moved', txId);
  // Before the tx document goes, so that recovery repeats this check if the gateway dies here.
  await shredIfErased(vault, moves.flatMap((m) => m.target.keyId ?? []));
  await vault.txs.deleteOne({ _id: txId });
  await ctx.step('finished', txId);
}

/** Rebuilds a batch's pointer moves from its versions (recovery of a committed batch). */
async function movesOf(vault: Vault, txId: number): Promise<Move[]> {
  const docs = await vault.versions.find({ tx: txId }, { projection: { content: 0 } }).sort({ seq: 1 }).toArray();
  const moves = new Map<string, Move>();
  for (const d of docs) {
    const key = pointerKey(d.type, d.id);
    const target: PointerDoc = {
      _id: key, type: d.type, id: d.id, version: d.v, seq: d.seq, lastUpdated: d.lastUpdated, deleted: d.deleted,
      keyId: d.keyId, terms: d.terms, mac: d.headMac ?? null,
    };
    const move = moves.get(key);
    if (move) move.target = target;
    else moves.set(key, { expected: d.v - 1, target });
  }
  return [...moves.values()];
}

/** Undoes a batch that will never commit: its versions, then (if asked) its tx document. */
export async function undo(vault: Vault, txId: number, deleteTx: boolean): Promise<void> {
  await vault.versions.deleteMany({ tx: txId });
  if (deleteTx) await vault.txs.deleteOne({ _id: txId });
}

async function staleBefore(ctx: BatchContext): Promise<Date> {
  return new Date((await serverNow(ctx.vault.db)) - ctx.staleAfterMs);
}

/**
 * Settles one batch. Committed: roll forward (young ones only when `finishYoung`, i.e. from init()).
 * Undecided and stale: abort, undo. Aborted: undo. Gone without a 'committed' decision: delete its leftover
 * versions. Returns whether anything changed.
 */
async function resolve(ctx: BatchContext, txId: number, staleBefore: Date, finishYoung: boolean): Promise<boolean> {
  const { vault } = ctx;
  // The tx document first: a decision is always written before the tx document is deleted.
  const tx = await vault.txs.findOne({ _id: txId });
  let decision = (await vault.decisions.findOne({ _id: txId }))?.outcome;
  if (!tx) {
    if (decision === 'committed') return false; // finished
    return (await vault.versions.deleteMany({ tx: txId })).deletedCount > 0;
  }
  const stale = tx.createdAt < staleBefore;
  if (!decision) {
    if (!stale) return false; // its gateway may be alive
    decision = await decide(vault, txId, 'aborted');
  }
  if (decision === 'committed') {
    if (!stale && !finishYoung) return false; // its gateway is finishing it
    await rollForward(ctx, txId);
  } else {
    await undo(vault, txId, stale);
  }
  return true;
}

/** Settles the batches that refused a writer; returns whether any of them changed (worth a retry). */
export async function resolveBlockers(ctx: BatchContext, blockers: number[]): Promise<boolean> {
  const before = await staleBefore(ctx);
  let changed = false;
  for (const txId of blockers) if (await resolve(ctx, txId, before, false)) changed = true;
  return changed;
}

/**
 * Finishes every committed batch and undoes those in flight longer than `staleAfterMs` (their gateway is
 * presumed dead). Run by init(); safe to run at any time, from any number of gateways.
 */
export async function recover(ctx: BatchContext): Promise<void> {
  const before = await staleBefore(ctx);
  const open = await ctx.vault.txs.find({}, { projection: { _id: 1 } }).toArray();
  for (const { _id } of open) await resolve(ctx, _id, before, true);
}
