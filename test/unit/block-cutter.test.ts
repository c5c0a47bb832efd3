import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  BlockCutter,
  BlockCutterConfigError,
  BlockCutterStateError,
  decodeCutterState,
  encodeCutterState,
  initialCutterState,
  stateAfterBlock,
  type BlockCutterConfig,
  type CutBlock,
  type OrderResult,
  type StreamRecord,
} from '../../src/ledger/block-cutter.ts';

const CONFIG: BlockCutterConfig = { maxMessageCount: 3, preferredMaxBytes: 100, absoluteMaxBytes: 200 };

/** An envelope whose bytes identify its offset, so misplaced envelopes show in comparisons. */
function envelope(offset: number, sizeBytes: number): StreamRecord {
  return { kind: 'envelope', offset, bytes: new Uint8Array(sizeBytes).fill(offset % 256) };
}

function timeToCut(offset: number, blockNumber: number): StreamRecord {
  return { kind: 'timeToCut', offset, blockNumber };
}

/** Envelopes of the given sizes at offsets 0, 1, 2 … */
function envelopes(...sizes: number[]): StreamRecord[] {
  return sizes.map((size, offset) => envelope(offset, size));
}

function feed(cutter: BlockCutter, records: StreamRecord[]): OrderResult[] {
  return records.map((record) => cutter.order(record));
}

/** Blocks as [number, offsets, reason]: readable in assertion diffs. */
function shape(blocks: CutBlock[]): [number, number[], string][] {
  return blocks.map((b) => [b.number, b.envelopes.map((e) => e.offset), b.cutReason]);
}

function blocksOf(results: OrderResult[]): CutBlock[] {
  return results.flatMap((r) => r.blocks);
}

function newCutter(config: BlockCutterConfig = CONFIG, firstBlockNumber = 0): BlockCutter {
  return new BlockCutter(config, initialCutterState(firstBlockNumber));
}

describe('block cutter: batch limits (Fabric blockcutter rules)', () => {
  it('cuts when the pending batch reaches maxMessageCount', () => {
    const cutter = newCutter();
    const results = feed(cutter, envelopes(10, 10, 10, 10));
    assert.deepEqual(shape(results[2].blocks), [[0, [0, 1, 2], 'maxMessages']]);
    assert.deepEqual(shape(blocksOf(results)), [[0, [0, 1, 2], 'maxMessages']]);
    assert.equal(cutter.pendingBlockNumber, 1);
    assert.deepEqual(results[2].blocks[0], {
      number: 0,
      envelopes: [0, 1, 2].map((offset) => ({ offset, bytes: new Uint8Array(10).fill(offset) })),
      firstOffset: 0,
      lastOffset: 2,
      cutReason: 'maxMessages',
    });
  });

  it('cuts the pending batch before an envelope that would push it past preferredMaxBytes', () => {
    const cutter = newCutter();
    const results = feed(cutter, envelopes(40, 40, 30));
    assert.deepEqual(shape(results[2].blocks), [[0, [0, 1], 'preferredMaxBytes']]);
    assert.deepEqual(cutter.snapshot().pending.map((e) => e.offset), [2]);
  });

  it('lets a batch fill preferredMaxBytes exactly', () => {
    const cutter = newCutter();
    assert.deepEqual(blocksOf(feed(cutter, envelopes(40, 60))), []);
    assert.deepEqual(cutter.snapshot().pending.map((e) => e.offset), [0, 1]);
  });

  it('gives an envelope larger than preferredMaxBytes a block of its own, after cutting the pending batch', () => {
    const cutter = newCutter();
    const results = feed(cutter, envelopes(10, 150, 10));
    assert.deepEqual(shape(results[1].blocks), [
      [0, [0], 'preferredMaxBytes'],
      [1, [1], 'oversize'],
    ]);
    assert.equal(results[2].batchStartedForBlock, 2);
  });

  it('cuts an oversize envelope alone when nothing is pending; exactly preferredMaxBytes is not oversize', () => {
    const cutter = newCutter();
    assert.deepEqual(shape(cutter.order(envelope(0, 101)).blocks), [[0, [0], 'oversize']]);
    assert.deepEqual(cutter.order(envelope(1, 100)).blocks, []);
    assert.equal(cutter.pendingBlockNumber, 1);
  });

  it('rejects an envelope larger than absoluteMaxBytes, reporting its offset, and leaves the batch alone', () => {
    const cutter = newCutter();
    const results = feed(cutter, [envelope(0, 10), envelope(1, 201), envelope(2, 200)]);
    assert.deepEqual(results[1], {
      blocks: [],
      rejected: { offset: 1, sizeBytes: 201, reason: 'exceedsAbsoluteMaxBytes' },
    });
    // 200 bytes is within absoluteMaxBytes: accepted, as an oversize block.
    assert.deepEqual(shape(results[2].blocks), [
      [0, [0], 'preferredMaxBytes'],
      [1, [2], 'oversize'],
    ]);
    assert.equal(cutter.snapshot().lastConsumedOffset, 2);
  });

  it('tells the caller when a batch starts pending, and for which block', () => {
    const cutter = newCutter(CONFIG, 7);
    const results = feed(cutter, envelopes(10, 10, 10, 95, 5));
    assert.deepEqual(
      results.map((r) => r.batchStartedForBlock),
      [7, undefined, undefined, 8, undefined],
    );
    // The envelope that overflows a batch starts the next one: block 9.
    assert.equal(cutter.order(envelope(5, 90)).batchStartedForBlock, 9);
  });

  it('never reports a pending batch when maxMessageCount is 1', () => {
    const cutter = newCutter({ ...CONFIG, maxMessageCount: 1 });
    const results = feed(cutter, envelopes(10, 10));
    assert.deepEqual(shape(blocksOf(results)), [
      [0, [0], 'maxMessages'],
      [1, [1], 'maxMessages'],
    ]);
    assert.ok(results.every((r) => r.batchStartedForBlock === undefined));
    assert.equal(cutter.pendingBlockNumber, undefined);
  });
});

describe('block cutter: time-to-cut markers', () => {
  it('cuts the pending batch on the first marker for its block; duplicates are then stale', () => {
    const cutter = newCutter(CONFIG, 4);
    const results = feed(cutter, [envelope(0, 10), envelope(1, 10), timeToCut(2, 4), timeToCut(3, 4)]);
    assert.deepEqual(shape(results[2].blocks), [[4, [0, 1], 'timeToCut']]);
    assert.deepEqual(results[3], { blocks: [], ignoredTimeToCut: { offset: 3, blockNumber: 4, reason: 'stale' } });
  });

  it('ignores a marker for a block already cut by size, even with a new batch pending', () => {
    const cutter = newCutter();
    const results = feed(cutter, [...envelopes(10, 10, 10, 10), timeToCut(4, 0)]);
    assert.deepEqual(results[4].ignoredTimeToCut, { offset: 4, blockNumber: 0, reason: 'stale' });
    assert.equal(cutter.pendingBlockNumber, 1);
  });

  it('ignores a marker for a future block and does not remember it', () => {
    const cutter = newCutter();
    const results = feed(cutter, [envelope(0, 10), timeToCut(1, 1), envelope(2, 10), timeToCut(3, 0)]);
    assert.deepEqual(results[1].ignoredTimeToCut, { offset: 1, blockNumber: 1, reason: 'future' });
    assert.deepEqual(shape(results[3].blocks), [[0, [0, 2], 'timeToCut']]);
  });

  it('never cuts an empty block: a marker with nothing pending is ignored, and a later one still cuts', () => {
    const cutter = newCutter();
    const results = feed(cutter, [timeToCut(0, 0), envelope(1, 10), timeToCut(2, 0)]);
    assert.deepEqual(results[0], {
      blocks: [],
      ignoredTimeToCut: { offset: 0, blockNumber: 0, reason: 'nothingPending' },
    });
    assert.deepEqual(shape(results[2].blocks), [[0, [1], 'timeToCut']]);
    assert.deepEqual(cutter.order(timeToCut(3, 1)).ignoredTimeToCut?.reason, 'nothingPending');
  });
});

describe('block cutter: offsets and resume', () => {
  it('skips records at or before the last consumed offset (redelivery) and allows gaps', () => {
    const cutter = newCutter();
    cutter.order(envelope(5, 10));
    assert.deepEqual(cutter.order(envelope(5, 10)), { blocks: [], alreadyConsumed: true });
    assert.deepEqual(cutter.order(timeToCut(3, 0)), { blocks: [], alreadyConsumed: true });
    assert.deepEqual(shape(cutter.order(timeToCut(9, 0)).blocks), [[0, [5], 'timeToCut']]);
  });

  it('round-trips its state through encodeCutterState / decodeCutterState', () => {
    const cutter = newCutter(CONFIG, 3);
    feed(cutter, [envelope(0, 10), envelope(1, 0), envelope(4, 7), envelope(6, 20), envelope(7, 0)]);
    const decoded = decodeCutterState(encodeCutterState(cutter.snapshot()));
    assert.deepEqual(decoded, cutter.snapshot());
    assert.deepEqual(decoded.pending.map((e) => e.bytes.byteLength), [20, 0]);
    assert.equal(new BlockCutter(CONFIG, decoded).pendingBlockNumber, 4);
  });

  it('refuses a state this configuration could not have produced', () => {
    const pending = (...sizes: number[]) => sizes.map((size, offset) => ({ offset, bytes: new Uint8Array(size) }));
    const cases: [Partial<ReturnType<typeof initialCutterState>>, RegExp][] = [
      [{ nextBlockNumber: -1 }, /nextBlockNumber must be a non-negative integer/],
      [{ lastConsumedOffset: -2 }, /lastConsumedOffset must be an integer ≥ -1/],
      [{ lastConsumedOffset: 5, pending: pending(10, 10, 10) }, /3 envelopes are pending but maxMessageCount is 3/],
      [{ lastConsumedOffset: 5, pending: pending(60, 60) }, /120 bytes are pending but preferredMaxBytes is 100/],
      [{ lastConsumedOffset: 0, pending: pending(10, 10) }, /must increase and not pass lastConsumedOffset \(0\)/],
    ];
    for (const [override, message] of cases) {
      assert.throws(
        () => new BlockCutter(CONFIG, { ...initialCutterState(0), ...override }),
        (e: unknown) => e instanceof BlockCutterStateError && message.test(e.message),
      );
    }
    assert.throws(() => decodeCutterState('{"nextBlockNumber":1}'), BlockCutterStateError);
    assert.throws(
      () => decodeCutterState('{"nextBlockNumber":1,"lastConsumedOffset":0,"pending":[{"offset":0}]}'),
      BlockCutterStateError,
    );
  });

  it('validates its configuration with clear errors', () => {
    const cases: [Partial<BlockCutterConfig>, string][] = [
      [{ maxMessageCount: 0 }, 'maxMessageCount must be a positive integer, got 0'],
      [{ maxMessageCount: 1.5 }, 'maxMessageCount must be a positive integer, got 1.5'],
      [{ preferredMaxBytes: -1 }, 'preferredMaxBytes must be a positive integer, got -1'],
      [{ absoluteMaxBytes: Number.NaN }, 'absoluteMaxBytes must be a positive integer, got NaN'],
      [{ absoluteMaxBytes: undefined }, 'absoluteMaxBytes must be a positive integer, got undefined'],
      [{ preferredMaxBytes: 201 }, 'preferredMaxBytes (201) must not exceed absoluteMaxBytes (200)'],
    ];
    for (const [override, message] of cases) {
      assert.throws(() => newCutter({ ...CONFIG, ...override }), {
        name: 'BlockCutterConfigError',
        message: `Invalid block cutter configuration: ${message}`,
      });
    }
    assert.ok(newCutter({ maxMessageCount: 1, preferredMaxBytes: 1, absoluteMaxBytes: 1 }));
    assert.ok(new BlockCutterConfigError('x') instanceof RangeError);
  });

  it('throws on malformed records (a decoder bug), e.g. a string offset that would misorder', () => {
    const cutter = newCutter();
    const malformed = [
      { kind: 'envelope', offset: '10', bytes: new Uint8Array(1) },
      { kind: 'envelope', offset: 1, bytes: [1, 2] },
      { kind: 'timeToCut', offset: 1, blockNumber: 0.5 },
      { kind: 'checkpoint', offset: 1 },
    ];
    for (const record of malformed) assert.throws(() => cutter.order(record as unknown as StreamRecord), TypeError);
    assert.equal(cutter.snapshot().lastConsumedOffset, -1);
  });
});

// ---------------------------------------------------------------------------------------------
// Determinism over random streams
// ---------------------------------------------------------------------------------------------

/** mulberry32: a tiny seeded PRNG, so every run tests the same streams. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Scenario {
  config: BlockCutterConfig;
  firstBlockNumber: number;
  records: StreamRecord[];
}

/**
 * A channel as the members would produce it: envelopes of mixed sizes (small, oversize, over the
 * absolute limit), offsets with gaps, and time-to-cut markers published a few records after a batch
 * starts by one to three members (so duplicates), plus stray markers for nearby block numbers.
 */
function scenario(seed: number, length: number): Scenario {
  const next = random(seed);
  const int = (min: number, max: number) => min + Math.floor(next() * (max - min + 1));
  const preferredMaxBytes = int(20, 200);
  const config = {
    maxMessageCount: int(1, 8),
    preferredMaxBytes,
    absoluteMaxBytes: int(preferredMaxBytes, 2 * preferredMaxBytes),
  };
  const firstBlockNumber = int(0, 3);
  const members = new BlockCutter(config, initialCutterState(firstBlockNumber));
  const scheduledMarkers: { dueAt: number; blockNumber: number }[] = [];
  const records: StreamRecord[] = [];
  let offset = 0;
  while (records.length < length) {
    offset += next() < 0.1 ? int(2, 5) : 1;
    const dueIndex = scheduledMarkers.findIndex((m) => m.dueAt <= records.length);
    let record: StreamRecord;
    if (dueIndex >= 0) {
      record = timeToCut(offset, scheduledMarkers.splice(dueIndex, 1)[0].blockNumber);
    } else if (next() < 0.05) {
      record = timeToCut(offset, Math.max(0, members.snapshot().nextBlockNumber + int(-3, 3)));
    } else {
      const roll = next();
      const { absoluteMaxBytes } = config;
      if (roll < 0.8) record = envelope(offset, int(0, Math.ceil(preferredMaxBytes / 3)));
      else if (roll < 0.95) record = envelope(offset, int(preferredMaxBytes, absoluteMaxBytes));
      else record = envelope(offset, int(absoluteMaxBytes, absoluteMaxBytes + 50));
    }
    const { batchStartedForBlock } = members.order(record);
    if (batchStartedForBlock !== undefined) {
      for (let member = int(1, 3); member > 0; member--) {
        scheduledMarkers.push({ dueAt: records.length + int(1, 12), blockNumber: batchStartedForBlock });
      }
    }
    records.push(record);
  }
  return { config, firstBlockNumber, records };
}

const SEEDS = Array.from({ length: 12 }, (_, i) => 1000 + i);
const STREAM_LENGTH = 250;

function replay({ config, firstBlockNumber, records }: Scenario): OrderResult[] {
  return feed(new BlockCutter(config, initialCutterState(firstBlockNumber)), records);
}

describe('block cutter: determinism over random streams', () => {
  it('cuts identical blocks when the same stream is replayed', () => {
    for (const seed of SEEDS) {
      const s = scenario(seed, STREAM_LENGTH);
      assert.deepEqual(replay(s), replay(scenario(seed, STREAM_LENGTH)), `seed ${seed}`);
    }
  });

  it('keeps every rule on every cut block', () => {
    for (const seed of SEEDS) {
      const s = scenario(seed, STREAM_LENGTH);
      const { maxMessageCount, preferredMaxBytes, absoluteMaxBytes } = s.config;
      const cutter = new BlockCutter(s.config, initialCutterState(s.firstBlockNumber));
      const results = feed(cutter, s.records);
      const blocks = blocksOf(results);
      const reasons = new Set(blocks.map((b) => b.cutReason));
      assert.ok(reasons.size >= 3, `seed ${seed} exercises several cut reasons: ${[...reasons].join(', ')}`);

      assert.deepEqual(
        blocks.map((b) => b.number),
        blocks.map((_, i) => s.firstBlockNumber + i),
        'blocks are numbered consecutively',
      );
      const size = (b: CutBlock) => b.envelopes.reduce((total, e) => total + e.bytes.byteLength, 0);
      for (const block of blocks) {
        assert.ok(block.envelopes.length > 0 && block.envelopes.length <= maxMessageCount);
        assert.equal(block.firstOffset, block.envelopes[0].offset);
        assert.equal(block.lastOffset, block.envelopes.at(-1)?.offset);
        if (block.cutReason === 'oversize') {
          assert.equal(block.envelopes.length, 1);
          assert.ok(size(block) > preferredMaxBytes && size(block) <= absoluteMaxBytes);
        } else {
          assert.ok(size(block) <= preferredMaxBytes, `seed ${seed} block ${block.number} within preferredMaxBytes`);
        }
        if (block.cutReason === 'maxMessages') assert.equal(block.envelopes.length, maxMessageCount);
      }

      // Every envelope within absoluteMaxBytes is in exactly one block or still pending, in stream order.
      const isEnvelope = (r: StreamRecord) => r.kind === 'envelope';
      const accepted = s.records.filter((r) => isEnvelope(r) && r.bytes.byteLength <= absoluteMaxBytes);
      const placed = [...blocks.flatMap((b) => b.envelopes), ...cutter.snapshot().pending];
      assert.deepEqual(placed.map((e) => e.offset), accepted.map((r) => r.offset));
      assert.deepEqual(
        results.flatMap((r) => (r.rejected ? [r.rejected.offset] : [])),
        s.records.filter((r) => isEnvelope(r) && r.bytes.byteLength > absoluteMaxBytes).map((r) => r.offset),
      );

      // A time-to-cut block is cut by a marker naming it; every other marker changed nothing.
      results.forEach((result, i) => {
        const record = s.records[i];
        if (record.kind !== 'timeToCut') return;
        if (result.blocks.length === 0) assert.ok(result.ignoredTimeToCut, `seed ${seed} offset ${record.offset}`);
        else assert.deepEqual(shape(result.blocks), [[record.blockNumber, shape(result.blocks)[0][1], 'timeToCut']]);
      });
    }
  });

  it('cuts identical blocks after a crash at any position, resuming from the serialized state', () => {
    for (const seed of SEEDS) {
      const s = scenario(seed, STREAM_LENGTH);
      const reference = replay(s);
      const running = new BlockCutter(s.config, initialCutterState(s.firstBlockNumber));
      s.records.forEach((record, crashAt) => {
        const restarted = new BlockCutter(s.config, decodeCutterState(encodeCutterState(running.snapshot())));
        // At-least-once redelivery from the start of the stream: what was consumed is skipped.
        const resumed = feed(restarted, s.records);
        assert.ok(resumed.slice(0, crashAt).every((r) => r.alreadyConsumed), `seed ${seed} crash at ${crashAt}`);
        assert.deepEqual(resumed.slice(crashAt), reference.slice(crashAt), `seed ${seed} crash at ${crashAt}`);
        running.order(record);
      });
    }
  });

  it('cuts identical blocks resuming from any committed block alone, with no pending batch persisted', () => {
    for (const seed of SEEDS) {
      const s = scenario(seed, STREAM_LENGTH);
      const reference = blocksOf(replay(s));
      for (const [i, committed] of reference.entries()) {
        const restarted = new BlockCutter(s.config, stateAfterBlock(committed));
        const resumed = blocksOf(feed(restarted, s.records));
        assert.deepEqual(resumed, reference.slice(i + 1), `seed ${seed} after block ${committed.number}`);
      }
    }
  });
});
