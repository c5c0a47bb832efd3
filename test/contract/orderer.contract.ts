/**
 * The Orderer contract: every adapter runs this same suite against its real log. `open` opens the one
 * log the suite works on: empty at the first call, the same log again at every later one (solo: the
 * same file; Kafka: the same channel), which is how persistence is checked. The suite keeps its own
 * copy of what it appended, by offset, and every read is compared with it.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import {
  decodeChannelMessage, encodeChannelMessage, MAX_RECORD_BYTES, type ChannelMessage, type OrderedRecord, type Orderer,
  type Subscription,
} from '../../src/ledger/orderer.ts';

const WAIT_MS = 30_000;

interface Reading {
  records: OrderedRecord[];
  batches: OrderedRecord[][];
  subscription: Subscription;
  /** Resolves once `count` records arrived; fails on timeout or when delivery ended first. */
  until(count: number): Promise<void>;
}

/** Subscribes and collects what arrives; `onBatch` runs inside the handler, before it resolves. */
async function read(orderer: Orderer, fromOffset: number,
  onBatch?: (batch: OrderedRecord[]) => Promise<void>): Promise<Reading> {
  const records: OrderedRecord[] = [];
  const batches: OrderedRecord[][] = [];
  let ended = false;
  const subscription = await orderer.subscribe(fromOffset, async (batch) => {
    batches.push(batch);
    records.push(...batch);
    await onBatch?.(batch);
  });
  void subscription.done.finally(() => { ended = true; }).catch(() => {});
  const until = async (count: number) => {
    const deadline = Date.now() + WAIT_MS;
    while (records.length < count) {
      if (ended) assert.fail(`delivery ended after ${records.length} of ${count} records from offset ${fromOffset}`);
      if (Date.now() > deadline) assert.fail(`got ${records.length} of ${count} records from offset ${fromOffset} in ${WAIT_MS} ms`);
      await sleep(10);
    }
  };
  return { records, batches, subscription, until };
}

/** Reads from `fromOffset` to the end of the log as `expected` describes it, then stops. */
async function readAll(orderer: Orderer, fromOffset: number, expected: Buffer[]): Promise<OrderedRecord[]> {
  const reading = await read(orderer, fromOffset);
  try {
    await reading.until(expected.length - fromOffset);
  } finally {
    await reading.subscription.stop();
  }
  return reading.records;
}

function assertRecords(records: OrderedRecord[], expected: Buffer[], fromOffset: number): void {
  assert.deepEqual(records.map((r) => r.offset), range(fromOffset, expected.length), `offsets ${fromOffset}..${expected.length - 1}, each once, in order`);
  records.forEach((r, i) => assert.ok(Buffer.from(r.bytes).equals(expected[fromOffset + i]!), `the bytes at offset ${r.offset}`));
}

const range = (from: number, to: number) => Array.from({ length: Math.max(0, to - from) }, (_, i) => from + i);
const message = (text: string) => Buffer.from(text, 'utf8');

export function ordererContract(name: string, open: () => Promise<Orderer>): void {
  describe(`Orderer contract: ${name}`, () => {
    let orderer: Orderer;
    /** The log as it must read: what the suite appended, at the offsets it was told. */
    const log: Buffer[] = [];
    const append = async (messages: Buffer[]): Promise<number[]> => {
      const offsets = await orderer.append(messages);
      offsets.forEach((offset, i) => { log[offset] = messages[i]!; });
      return offsets;
    };
    /** `count` new records for the log, each naming itself. */
    let made = 0;
    const fresh = (count: number) => Array.from({ length: count }, () => message(`record ${made++}`));

    before(async () => { orderer = await open(); });
    after(async () => orderer.close());

    it('starts empty; appends get contiguous offsets from 0, in call order, also when concurrent', async () => {
      assert.equal(await orderer.endOffset(), 0);
      assert.deepEqual(await orderer.append([]), []);
      assert.deepEqual(await append(fresh(2)), [0, 1]);
      const batches = Array.from({ length: 20 }, (_, i) => fresh(1 + (i % 3)));
      const offsets = await Promise.all(batches.map((batch) => append(batch)));
      assert.deepEqual(offsets.flat(), range(2, log.length), 'concurrent appends are ordered as they were called');
      assert.equal(await orderer.endOffset(), log.length);
    });

    it('a subscriber from 0 gets every record in order, then records appended after it subscribed', async () => {
      const reading = await read(orderer, 0);
      try {
        await reading.until(log.length);
        await append(fresh(3));
        await Promise.all([append(fresh(2)), append(fresh(1))]);
        await reading.until(log.length);
        await sleep(100); // room for a wrong extra delivery
      } finally {
        await reading.subscription.stop();
      }
      assertRecords(reading.records, log, 0);
    });

    it('a subscriber from the middle, or from the end, gets exactly the records from there on', async () => {
      const middle = Math.floor(log.length / 2);
      assertRecords(await readAll(orderer, middle, log), log, middle);

      const end = log.length;
      const reading = await read(orderer, end);
      try {
        await sleep(100);
        assert.equal(reading.records.length, 0, 'nothing to deliver at the end of the log');
        await append(fresh(2));
        await reading.until(2);
      } finally {
        await reading.subscription.stop();
      }
      assertRecords(reading.records, log, end);
    });

    it('refuses a fromOffset past the end of the log or not an offset', async () => {
      const end = await orderer.endOffset();
      await assert.rejects(orderer.subscribe(end + 1, async () => {}), /cannot resume at offset/);
      await assert.rejects(orderer.subscribe(-1, async () => {}), /invalid fromOffset/);
      await assert.rejects(orderer.subscribe(1.5, async () => {}), /invalid fromOffset/);
    });

    it('two subscribers see the same sequence while appends go on', async () => {
      const from = log.length - 5;
      const [a, b] = await Promise.all([read(orderer, from), read(orderer, from)]);
      try {
        await Promise.all(Array.from({ length: 10 }, () => append(fresh(5))));
        await Promise.all([a.until(log.length - from), b.until(log.length - from)]);
      } finally {
        await Promise.all([a.subscription.stop(), b.subscription.stop()]);
      }
      assertRecords(a.records, log, from);
      assertRecords(b.records, log, from);
    });

    it('hands over the next batch only after the handler resolved', async () => {
      const from = log.length;
      await append(fresh(2500)); // more than one batch's worth, in both adapters
      let running = false;
      let overlaps = 0;
      const reading = await read(orderer, from, async () => {
        if (running) overlaps++;
        running = true;
        await sleep(20);
        running = false;
      });
      try {
        await reading.until(1);
        await Promise.all([append(fresh(10)), append(fresh(10)), append(fresh(10))]);
        await reading.until(log.length - from);
      } finally {
        await reading.subscription.stop();
      }
      assert.equal(overlaps, 0, 'no handler call started while another was running');
      assert.ok(reading.batches.length >= 3, `several batches (${reading.batches.length})`);
      assert.ok(reading.batches.every((batch) => batch.length > 0), 'no empty batch');
      assertRecords(reading.records, log, from);
    });

    it('a rejecting handler rejects done and stops delivery', async () => {
      const from = log.length;
      await append(fresh(10));
      let calls = 0;
      const subscription = await orderer.subscribe(from, async () => {
        calls++;
        throw new Error('handler failed');
      });
      await assert.rejects(subscription.done, /handler failed/);
      await append(fresh(3));
      await sleep(300);
      assert.equal(calls, 1, 'no handler call after the one that rejected');
      await subscription.stop(); // harmless after a failure
    });

    it('stop() waits for the running handler, resolves done, and nothing is delivered after it', async () => {
      const from = log.length;
      let finished = false;
      const reading = await read(orderer, from, async () => {
        await sleep(200);
        finished = true;
      });
      await append(fresh(1));
      await reading.until(1);
      await reading.subscription.stop();
      assert.equal(finished, true, 'stop() resolved only after the handler did');
      await reading.subscription.done;
      const delivered = reading.records.length;
      await append(fresh(3));
      await sleep(300);
      assert.equal(reading.records.length, delivered, 'no delivery after stop()');
    });

    it('appendControl() appends like append(), in call order among control appends, also while envelopes are being appended', async () => {
      const envelopes = Array.from({ length: 5 }, () => fresh(50));
      const controls = Array.from({ length: 5 }, () => fresh(1));
      const appending = envelopes.map((batch) => append(batch));
      const controlOffsets = await Promise.all(controls.map(async (batch) => {
        const offsets = await orderer.appendControl(batch);
        offsets.forEach((offset, i) => { log[offset] = batch[i]!; });
        return offsets[0]!;
      }));
      await Promise.all(appending);
      assert.deepEqual(controlOffsets, [...controlOffsets].sort((a, b) => a - b), 'control appends keep their call order');
      assert.equal(await orderer.endOffset(), log.length);
      assert.equal(log.filter(Boolean).length, log.length, 'no hole in the log');
      await assert.rejects(orderer.appendControl([Buffer.alloc(MAX_RECORD_BYTES + 1)]), RangeError);
      const reading = await read(orderer, 0);
      try {
        await reading.until(log.length);
      } finally {
        await reading.subscription.stop();
      }
      assertRecords(reading.records, log, 0);
    });

    it('endOffset() is the length of the log', async () => {
      assert.equal(await orderer.endOffset(), log.length);
      await append(fresh(4));
      assert.equal(await orderer.endOffset(), log.length);
    });

    it('carries every channel message byte for byte, a 1 MiB envelope and an empty record', async () => {
      const messages: ChannelMessage[] = [
        { kind: 'envelope', bytes: message('{"channel":"c","type":"anchor"}') },
        { kind: 'timeToCut', blockNumber: 0 },
        { kind: 'attestation', bytes: message('{"blockNumber":7,"headerHash":"ab"}') },
        { kind: 'envelope', bytes: randomBytes(1024 * 1024) },
        { kind: 'timeToCut', blockNumber: Number.MAX_SAFE_INTEGER },
        { kind: 'attestation', bytes: Buffer.alloc(0) },
      ];
      const from = log.length;
      await append([...messages.map((m) => Buffer.from(encodeChannelMessage(m))), Buffer.alloc(0)]);
      const records = await readAll(orderer, from, log);
      assertRecords(records, log, from);
      assert.deepEqual(records.slice(0, messages.length).map((r) => decodeChannelMessage(r.bytes)), messages);
      assert.equal(decodeChannelMessage(records[messages.length]!.bytes), undefined, 'an empty record is no message');
    });

    it('takes records up to MAX_RECORD_BYTES, also several in one append, and refuses a larger one whole', async () => {
      const end = log.length;
      await assert.rejects(orderer.append([message('fits'), Buffer.alloc(MAX_RECORD_BYTES + 1)]), RangeError);
      await assert.rejects(orderer.append(['not bytes' as unknown as Uint8Array]), TypeError);
      assert.equal(await orderer.endOffset(), end, 'a refused append appends nothing');

      const largest = [1, 2, 3].map((n) => Buffer.alloc(MAX_RECORD_BYTES, n));
      assert.deepEqual(await append([...largest, message('after')]), range(end, end + 4));
      assertRecords(await readAll(orderer, end, log), log, end);
    });

    it('after close and reopen, offsets continue and every record is delivered again', async () => {
      const open1 = await read(orderer, log.length);
      await orderer.close();
      await open1.subscription.done; // close() ended the subscription
      await assert.rejects(orderer.append(fresh(1)), /closed/);

      orderer = await open();
      assert.equal(await orderer.endOffset(), log.length);
      const before = log.length;
      assert.deepEqual(await append(fresh(3)), range(before, before + 3));
      assertRecords(await readAll(orderer, 0, log), log, 0);
    });
  });
}
