/**
 * The Kafka adapter (src/adapters/kafka) against a real broker, never a mock: the properties the
 * consortium ledger builds on. A channel's topic is one partition with the ledger's settings; two
 * producers get one total order, and the offsets they are told are the order consumers see; a consumer
 * resumes from a caller-stored offset with no duplicate and no gap, and stops on a handler error; a send
 * that failed after its batch was written does not make the next one vanish (a kafkajs trap); and a
 * broker SIGKILLed while producing loses no acknowledged message and duplicates none (on a dedicated
 * broker of its own, see test/engines startKafkaBroker).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import kafkajs from 'kafkajs';
import type { ISocketFactory } from 'kafkajs';
import {
  ChannelConsumer, ChannelProducer, createKafkaClient, ensureChannelTopic, parseBrokerList, type ChannelRecord,
} from '../../src/adapters/kafka/index.ts';
import { startKafkaBroker, type KafkaBroker } from '../engines/index.ts';
import { describeWithEngine } from '../support/engines.ts';

/** One broker: one copy, acknowledged by that copy. */
const ONE_BROKER = { replicationFactor: 1, minInsyncReplicas: 1 };
const newChannel = (what: string) => `test.${what}.${randomUUID().slice(0, 8)}`;
const text = (record: ChannelRecord) => record.value.toString('utf8');

/**
 * Runs a consumer from `fromOffset` until it delivered `count` records, stopping it from inside the
 * handler at that point (so any later delivery would be a bug and show up as an extra record).
 * `onRecord` runs inside the handler. Fails after `timeoutMs` with what was received.
 */
async function consume(brokers: string[], channel: string, fromOffset: number, count: number,
  opts: { timeoutMs?: number; onRecord?: (record: ChannelRecord, received: number) => void } = {}): Promise<ChannelRecord[]> {
  const records: ChannelRecord[] = [];
  let started!: () => void;
  const isStarted = new Promise<void>((resolve) => { started = resolve; });
  const consumer: ChannelConsumer = await ChannelConsumer.start({
    brokers, channel, fromOffset,
    handler: async (record) => {
      records.push(record);
      opts.onRecord?.(record, records.length);
      if (records.length === count) {
        await isStarted; // delivery can begin before start() has returned the consumer
        void consumer.stop();
      }
    },
  });
  started();
  if (count === 0) void consumer.stop();
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const timer = sleep(timeoutMs, 'timeout', { ref: false });
  if (await Promise.race([consumer.done, timer]) === 'timeout') {
    await consumer.stop();
    assert.fail(`consumer got ${records.length} of ${count} records from offset ${fromOffset} in ${timeoutMs} ms`);
  }
  return records;
}

function assertContiguous(records: ChannelRecord[], from: number, to: number): void {
  assert.deepEqual(records.map((r) => r.offset), Array.from({ length: to - from }, (_, i) => from + i),
    `offsets ${from}..${to - 1}, each once, in order`);
}

describeWithEngine('kafka', 'kafka adapter (shared broker)', (address) => {
  const brokers = parseBrokerList(address);

  test('a channel topic has one partition and the ledger settings; creating it again is fine', async () => {
    const channel = newChannel('topic');
    assert.deepEqual(await ensureChannelTopic({ brokers, channel, ...ONE_BROKER }), { topic: channel, created: true });
    assert.deepEqual(await ensureChannelTopic({ brokers, channel, ...ONE_BROKER }), { topic: channel, created: false });

    const admin = createKafkaClient({ brokers }).admin();
    await admin.connect();
    try {
      const { topics } = await admin.fetchTopicMetadata({ topics: [channel] });
      assert.equal(topics[0]!.partitions.length, 1);
      const { resources } = await admin.describeConfigs({ resources: [{ type: kafkajs.ConfigResourceTypes.TOPIC, name: channel }], includeSynonyms: false });
      const config = new Map(resources[0]!.configEntries.map((e) => [e.configName, e.configValue]));
      assert.equal(config.get('min.insync.replicas'), '1');
      assert.equal(config.get('unclean.leader.election.enable'), 'false');
      assert.equal(config.get('retention.ms'), '-1');
      assert.equal(config.get('retention.bytes'), '-1');
      assert.equal(config.get('cleanup.policy'), 'delete');

      // A topic made elsewhere with two partitions and a finite retention is refused, with the reasons.
      const foreign = newChannel('foreign');
      await admin.createTopics({ topics: [{ topic: foreign, numPartitions: 2, replicationFactor: 1,
        configEntries: [{ name: 'retention.ms', value: '60000' }] }] });
      await assert.rejects(ensureChannelTopic({ brokers, channel: foreign, ...ONE_BROKER }),
        /cannot be used as a ledger channel: it has 2 partitions.*retention\.ms is "60000"/);
      // More replicas than brokers: Kafka's own error, not a silently weaker topic.
      await assert.rejects(ensureChannelTopic({ brokers, channel: newChannel('rf3') }), /replication factor 3\) failed: Replication-factor is invalid/);
    } finally {
      await admin.disconnect();
    }
    await assert.rejects(ensureChannelTopic({ brokers, channel: 'no spaces' }), /invalid channel name/);
  });

  test('two producers sending concurrently get one total order, the one consumers see', async (t) => {
    const channel = newChannel('order');
    await ensureChannelTopic({ brokers, channel, ...ONE_BROKER });
    const [a, b] = await Promise.all([ChannelProducer.connect({ brokers }), ChannelProducer.connect({ brokers })]);
    const BATCHES = 20;
    const SIZE = 5;
    const valueAt = new Map<number, string>(); // what each producer was told: offset → value
    const run = async (name: string, producer: ChannelProducer): Promise<number[]> => {
      const offsets: number[] = [];
      for (let batch = 0; batch < BATCHES; batch++) {
        const values = Array.from({ length: SIZE }, (_, i) => `${name}-${batch}-${i}`);
        const got = await producer.send(channel, values.map((value) => ({ key: name, value })));
        got.forEach((offset, i) => {
          assert.ok(!valueAt.has(offset), `offset ${offset} was handed out twice`);
          valueAt.set(offset, values[i]!);
        });
        offsets.push(...got);
      }
      return offsets;
    };
    const t0 = Date.now();
    const [offsetsA, offsetsB] = await Promise.all([run('A', a), run('B', b)]);
    const sendMs = Date.now() - t0;
    await Promise.all([a.disconnect(), b.disconnect()]);

    const total = 2 * BATCHES * SIZE;
    for (const offsets of [offsetsA, offsetsB]) {
      assert.ok(offsets.every((o, i) => i === 0 || o > offsets[i - 1]!), 'each producer sees strictly increasing offsets');
    }
    assert.deepEqual([...valueAt.keys()].sort((x, y) => x - y), Array.from({ length: total }, (_, i) => i),
      'together the producers were given offsets 0..total-1, no gap, none twice');
    const producerAt = Array.from({ length: total }, (_, i) => valueAt.get(i)![0]);
    const switches = producerAt.filter((p, i) => i > 0 && p !== producerAt[i - 1]).length;
    assert.ok(switches >= 2, `the two producers' batches interleaved (${switches} switches)`);

    const records = await consume(brokers, channel, 0, total);
    assertContiguous(records, 0, total);
    assert.deepEqual(records.map(text), records.map((r) => valueAt.get(r.offset)), 'consumed order = acknowledged offsets');
    assert.ok(records.every((r) => r.key?.toString() === text(r)[0] && Number.isFinite(r.timestamp) && r.timestamp > 0));
    t.diagnostic(`total order: ${total} messages from 2 producers in ${sendMs} ms, ${switches} producer switches`);
  });

  test('a consumer restarted mid-stream resumes exactly after its stored offset', async () => {
    const channel = newChannel('resume');
    await ensureChannelTopic({ brokers, channel, ...ONE_BROKER });
    const producer = await ChannelProducer.connect({ brokers });
    try {
      const M = 60;
      const N = 25;
      for (let from = 0; from < M; from += 20) {
        await producer.send(channel, Array.from({ length: 20 }, (_, i) => ({ value: `m${from + i}` })));
      }
      // The caller's store: the last offset it processed.
      let stored = -1;
      const first = await consume(brokers, channel, stored + 1, N, { onRecord: (r) => { stored = r.offset; } });
      assertContiguous(first, 0, N);
      assert.equal(stored, N - 1);

      // Restart from stored + 1: the rest, then messages produced while it is at the end of the log.
      const LIVE = 5;
      let live: Promise<number[]> | undefined;
      const rest = await consume(brokers, channel, stored + 1, M - N + LIVE, {
        onRecord: (r, received) => {
          stored = r.offset;
          if (received === M - N) {
            live = producer.send(channel, Array.from({ length: LIVE }, (_, i) => ({ value: `m${M + i}` })));
          }
        },
      });
      assert.deepEqual(await live, Array.from({ length: LIVE }, (_, i) => M + i));
      assertContiguous(rest, N, M + LIVE);
      assert.deepEqual([...first, ...rest].map(text), Array.from({ length: M + LIVE }, (_, i) => `m${i}`));

      // A stored offset the log does not reach is refused, not waited on forever.
      await assert.rejects(ChannelConsumer.start({ brokers, channel, fromOffset: M + LIVE + 1, handler: async () => {} }),
        /cannot resume at offset 66, the log holds offsets 0\.\.64/);
    } finally {
      await producer.disconnect();
    }
  });

  test('a send whose acknowledgement was lost, then failed, does not swallow the next send', async () => {
    // The broker appends batch X, but its response never reaches the producer and every reconnection
    // fails until the retries run out: X is in the log, the send rejected. kafkajs would give the next
    // batch X's sequence numbers, and the broker would drop it as a retry of X while acknowledging it.
    const channel = newChannel('lost-ack');
    await ensureChannelTopic({ brokers, channel, ...ONE_BROKER });
    let cut = false; // while set, whatever the broker sends back is lost and the connection dropped
    const socketFactory: ISocketFactory = ({ host, port, onConnect }) => {
      const socket = net.connect({ host, port }, onConnect);
      const emit = socket.emit.bind(socket) as (event: string, ...args: unknown[]) => boolean;
      socket.emit = ((event: string, ...args: unknown[]) => {
        if (event === 'data' && cut) {
          socket.destroy(new Error('test: response lost'));
          return true;
        }
        return emit(event, ...args);
      }) as typeof socket.emit;
      return socket;
    };
    const producer = await ChannelProducer.connect({
      brokers, socketFactory, retry: { retries: 2, initialRetryTime: 50, maxRetryTime: 100 },
    });
    try {
      const batch = (name: string) => ['1', '2', '3'].map((i) => ({ value: `${name}${i}` }));
      assert.deepEqual(await producer.send(channel, batch('w')), [0, 1, 2]);
      cut = true;
      await assert.rejects(producer.send(channel, batch('x')), (err: Error) => err.name === 'ChannelSendError');
      cut = false;
      assert.deepEqual(await producer.send(channel, batch('y')), [6, 7, 8], 'y is appended after x, which was written');
    } finally {
      await producer.disconnect();
    }
    const records = await consume(brokers, channel, 0, 9);
    assert.deepEqual(records.map(text), ['w1', 'w2', 'w3', 'x1', 'x2', 'x3', 'y1', 'y2', 'y3']);
  });

  test('a handler that throws stops the consumer; nothing is delivered after it', async () => {
    const channel = newChannel('handler-error');
    await ensureChannelTopic({ brokers, channel, ...ONE_BROKER });
    const producer = await ChannelProducer.connect({ brokers });
    await producer.send(channel, Array.from({ length: 10 }, (_, i) => ({ value: `m${i}` })));
    await producer.disconnect();
    const seen: number[] = [];
    const consumer = await ChannelConsumer.start({
      brokers, channel, fromOffset: 2,
      handler: async (record) => {
        seen.push(record.offset);
        if (record.offset === 4) throw new Error('handler failed at 4');
      },
    });
    await assert.rejects(consumer.done, /handler failed at 4/);
    await sleep(300);
    assert.deepEqual(seen, [2, 3, 4]);
    assert.equal(consumer.nextOffset, 4, 'the failed message is the next one to deliver');
    await consumer.stop(); // harmless after a failure
  });
});

describe('kafka adapter (dedicated broker, SIGKILLed while producing)', () => {
  test('no acknowledged message is lost and none is duplicated', { timeout: 90_000 }, async (t) => {
    let broker: KafkaBroker;
    try {
      broker = await startKafkaBroker();
    } catch (err) {
      const why = `cannot start a dedicated Kafka broker: ${(err as Error).message.split('\n')[0]}`;
      if (process.env.MEDBLOCK_REQUIRE_SERVICES === '1') throw new Error(`${why} (MEDBLOCK_REQUIRE_SERVICES=1)`, { cause: err });
      process.stderr.write(`\n*** SKIPPING the Kafka crash test: ${why}\n\n`);
      t.skip(`SKIPPED: ${why}`);
      return;
    }
    const hardStop = Date.now() + 60_000; // every loop below ends by then, whatever happens
    try {
      const brokers = [broker.brokers];
      const channel = newChannel('crash');
      await ensureChannelTopic({ brokers, channel, ...ONE_BROKER });
      // A consumer reading live through the crash, as a ledger member would.
      const live: ChannelRecord[] = [];
      const liveConsumer = await ChannelConsumer.start({ brokers, channel, fromOffset: 0, handler: async (r) => { live.push(r); } });

      const acked = new Map<string, number>(); // message id → the offset its acknowledgement gave
      const unknown = new Set<string>(); // ids of sends that failed: maybe written, maybe not
      let killedAt = 0;
      let restartedAt = 0;
      let spanningSends = 0; // sends in flight at the kill that were acknowledged after the restart
      let producing = true;
      const produce = async (name: string) => {
        const producer = await ChannelProducer.connect({ brokers });
        for (let n = 0; producing && Date.now() < hardStop; n++) {
          const ids = ['a', 'b', 'c'].map((i) => `${name}-${n}-${i}`);
          const startedAt = Date.now();
          try {
            const offsets = await producer.send(channel, ids.map((id) => ({ key: id, value: id })));
            ids.forEach((id, i) => acked.set(id, offsets[i]!));
            if (killedAt && startedAt < killedAt) spanningSends++;
          } catch {
            ids.forEach((id) => unknown.add(id)); // not retried: the assertion is about acknowledged ones
            await sleep(100);
          }
        }
        await producer.disconnect();
      };
      const waitFor = async (done: () => boolean, what: string) => {
        const deadline = Math.min(Date.now() + 20_000, hardStop);
        while (!done()) {
          assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
          await sleep(20);
        }
      };
      const producers = Promise.all([produce('p1'), produce('p2')]);
      try {
        await waitFor(() => acked.size >= 90, '90 acknowledged messages before the kill');
        killedAt = Date.now();
        await broker.kill();
        const ackedBeforeRestart = acked.size;
        await sleep(1_000);
        await broker.restart();
        restartedAt = Date.now();
        await waitFor(() => acked.size >= ackedBeforeRestart + 90, '90 more acknowledged messages after the restart');
      } finally {
        producing = false;
        await producers;
      }
      assert.ok(spanningSends + unknown.size > 0, 'the kill hit a send in flight');

      const admin = createKafkaClient({ brokers }).admin();
      await admin.connect();
      const [partition] = await admin.fetchTopicOffsets(channel);
      await admin.disconnect();
      const end = Number(partition!.high);
      const records = await consume(brokers, channel, 0, end);
      assertContiguous(records, 0, end);

      const seen = new Map<string, number[]>();
      for (const r of records) seen.set(text(r), [...(seen.get(text(r)) ?? []), r.offset]);
      const duplicated = [...seen].filter(([, offsets]) => offsets.length > 1);
      assert.deepEqual(duplicated, [], 'no message appears twice');
      for (const [id, offset] of acked) {
        assert.deepEqual(seen.get(id), [offset], `acknowledged ${id} is in the log once, at its acknowledged offset`);
      }
      for (const id of seen.keys()) assert.ok(acked.has(id) || unknown.has(id), `${id} was sent by this test`);

      // The live consumer rode out the crash: the same log, each message once, in order.
      await Promise.race([
        waitFor(() => liveConsumer.nextOffset === end, `the live consumer to reach offset ${end} (at ${liveConsumer.nextOffset})`),
        liveConsumer.done.then(() => assert.fail('the live consumer stopped')),
      ]);
      await liveConsumer.stop();
      assertContiguous(live, 0, end);
      assert.deepEqual(live.map(text), records.map(text));

      t.diagnostic(`broker crash: ${acked.size} acknowledged by 2 producers (${spanningSends} send(s) spanning the kill), ` +
        `${unknown.size} in failed sends, ${end} in the log; broker down ${((restartedAt - killedAt) / 1000).toFixed(1)} s ` +
        '(SIGKILL, 1 s, restart until serving)');
    } finally {
      await broker.stop();
    }
  });
});
