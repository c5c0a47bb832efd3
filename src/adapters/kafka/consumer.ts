/**
 * Reads a channel in offset order from a position the CALLER stores. The ledger keeps "last committed
 * offset" in its own store, atomically with the blocks it derives, so Kafka's consumer-group offsets
 * are never used for correctness: kafkajs needs a group to consume, so each consumer gets a fresh,
 * unique group id, commits nothing, and seeks to its own position whenever it (re)joins the group.
 *
 * The handler sees each message once, in order, the next only after the previous call resolved: one
 * message per call (`handler`), or runs of consecutive messages (`batchHandler`, for throughput).
 * kafkajs can fetch a message twice (a rejoin after a broker restart starts again from the earliest
 * offset); such re-reads are dropped here by offset. An offset jump (a hole in the log) stops the
 * consumer with an error instead of skipping data.
 */
import { randomUUID } from 'node:crypto';
import type { Admin, Consumer, EachBatchPayload, KafkaMessage } from 'kafkajs';
import { createKafkaClient, toOffset, type KafkaConnection } from './client.ts';
import { CHANNEL_MAX_BATCH_BYTES, channelTopic } from './topics.ts';

export interface ChannelRecord {
  offset: number;
  key: Buffer | null;
  /** The message body (a Kafka null value, which our producer never writes, arrives as an empty buffer). */
  value: Buffer;
  /** Milliseconds since the epoch: the broker's append time on channel topics (message.timestamp.type=LogAppendTime). */
  timestamp: number;
}

interface ChannelConsumerSettings extends KafkaConnection {
  channel: string;
  /** The first offset to deliver: the caller's last processed offset + 1, or 0 for the whole channel. */
  fromOffset: number;
  /** How long an idle fetch waits at the broker, which also bounds how long `stop()` takes. 500 ms by default. */
  maxWaitTimeMs?: number;
}

export type ChannelConsumerOptions = ChannelConsumerSettings & (
  | {
    /** Called once per message, in offset order; a rejection stops the consumer (see `done`). */
    handler: (record: ChannelRecord) => Promise<void>;
    batchHandler?: never;
  }
  | {
    /**
     * Called with 1 to MAX_BATCH_RECORDS consecutive messages (what one fetch brought), in offset
     * order; a rejection stops the consumer (see `done`) and none of these count as processed.
     */
    batchHandler: (records: ChannelRecord[]) => Promise<void>;
    handler?: never;
  });

/** At most this many records per batchHandler call, so that one fetch of small messages is not one huge call. */
const MAX_BATCH_RECORDS = 1000;

export class ChannelConsumer {
  /**
   * Settles when the consumer has stopped: resolves after `stop()`, rejects when the handler rejected,
   * the log had a hole, or kafkajs gave up. No message is delivered after it settles.
   */
  readonly done: Promise<void>;
  private next: number;
  private stopping = false;
  private failure: unknown;
  private shutdown: Promise<void> | undefined;
  private settle!: { resolve: () => void; reject: (err: unknown) => void };

  private constructor(private readonly consumer: Consumer, private readonly topic: string, fromOffset: number,
    private readonly deliver: (records: ChannelRecord[]) => Promise<void>, private readonly recordsPerCall: number) {
    this.next = fromOffset;
    this.done = new Promise((resolve, reject) => { this.settle = { resolve, reject }; });
    this.done.catch(() => {}); // a caller that only uses stop() must not get an unhandled rejection
  }

  /** Starts consuming; resolves once the consumer has joined its group and fetches from `fromOffset`. */
  static async start(options: ChannelConsumerOptions): Promise<ChannelConsumer> {
    const topic = channelTopic(options.channel);
    const { fromOffset } = options;
    if (!Number.isSafeInteger(fromOffset) || fromOffset < 0) throw new Error(`invalid fromOffset ${fromOffset}`);
    const kafka = createKafkaClient(options);
    await checkPosition(kafka.admin(), topic, fromOffset);
    const consumer = kafka.consumer({
      groupId: `medblock.${topic}.${randomUUID()}`,
      allowAutoTopicCreation: false,
      maxWaitTimeInMs: options.maxWaitTimeMs ?? 500,
      // A fetch must hold the largest record batch the topic accepts (see topics.ts); one partition.
      maxBytesPerPartition: CHANNEL_MAX_BATCH_BYTES,
      maxBytes: CHANNEL_MAX_BATCH_BYTES,
    });
    const { handler } = options;
    const channelConsumer = handler
      ? new ChannelConsumer(consumer, topic, fromOffset, (records) => handler(records[0]!), 1)
      : new ChannelConsumer(consumer, topic, fromOffset, options.batchHandler, MAX_BATCH_RECORDS);
    try {
      await channelConsumer.run();
    } catch (err) {
      await consumer.disconnect().catch(() => {});
      throw err;
    }
    return channelConsumer;
  }

  /** The offset of the next message the handler will be given. */
  get nextOffset(): number {
    return this.next;
  }

  /**
   * Stops delivering at once (a handler already running is awaited, no later one starts), then leaves
   * the group and disconnects. Safe to call twice. Do not await it inside the handler: it waits for it.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.close();
  }

  private async run(): Promise<void> {
    await this.consumer.connect();
    // Each (re)join would otherwise resume from the group's committed offset (none) or the earliest one.
    this.consumer.on(this.consumer.events.GROUP_JOIN, () => this.seekToNext());
    this.consumer.on(this.consumer.events.CRASH, ({ payload }) => {
      if (!payload.restart) this.fail(payload.error);
    });
    // fromBeginning: until the seek applies, kafkajs reads from offset 0, whose messages are dropped below.
    await this.consumer.subscribe({ topics: [this.topic], fromBeginning: true });
    // eachBatch rather than eachMessage: a whole fetch per call, many times faster on a busy channel.
    await this.consumer.run({ autoCommit: false, eachBatch: (payload) => this.consumeBatch(payload) });
  }

  private seekToNext(): void {
    try {
      this.consumer.seek({ topic: this.topic, partition: 0, offset: String(this.next) });
    } catch (err) {
      this.fail(err);
    }
  }

  private async consumeBatch({ batch, heartbeat }: EachBatchPayload): Promise<void> {
    if (this.stopping) return;
    if (batch.partition !== 0) return this.fail(new Error(`channel topic "${this.topic}" has a partition ${batch.partition}; channels have one`));
    const records: ChannelRecord[] = [];
    let hole: number | undefined;
    for (const message of batch.messages) {
      const offset = toOffset(message.offset);
      const expected = this.next + records.length;
      if (offset < expected) continue; // fetched again after a rejoin: already delivered
      if (offset > expected) {
        hole = offset;
        break;
      }
      records.push(toRecord(offset, message));
    }
    for (let start = 0; start < records.length; start += this.recordsPerCall) {
      if (this.stopping) return;
      const slice = records.slice(start, start + this.recordsPerCall);
      try {
        await this.deliver(slice);
      } catch (err) {
        return this.fail(err);
      }
      this.next = slice[slice.length - 1]!.offset + 1;
      await heartbeat(); // a long batch must not make the group coordinator drop this consumer
    }
    if (hole !== undefined) {
      this.fail(new Error(`channel "${this.topic}": offset ${this.next} is missing from the log (next found: ${hole})`));
    }
  }

  private fail(err: unknown): void {
    if (this.stopping) return;
    this.stopping = true;
    this.failure = err ?? new Error('consumer failed');
    void this.close();
  }

  private close(): Promise<void> {
    this.shutdown ??= (async () => {
      await this.consumer.disconnect().catch(() => {});
      if (this.failure !== undefined) this.settle.reject(this.failure);
      else this.settle.resolve();
    })();
    return this.shutdown;
  }
}

function toRecord(offset: number, message: KafkaMessage): ChannelRecord {
  return { offset, key: message.key, value: message.value ?? Buffer.alloc(0), timestamp: Number(message.timestamp) };
}

/**
 * Refuses a position outside the log: before its start (data the caller never saw is gone) or past its
 * end (the caller has processed messages this topic does not have, e.g. the topic was recreated).
 */
async function checkPosition(admin: Admin, topic: string, fromOffset: number): Promise<void> {
  await admin.connect();
  try {
    const partitions = await admin.fetchTopicOffsets(topic);
    if (partitions.length !== 1) throw new Error(`channel topic "${topic}" has ${partitions.length} partitions; channels have one`);
    const low = toOffset(partitions[0]!.low);
    const high = toOffset(partitions[0]!.high);
    if (fromOffset < low || fromOffset > high) {
      throw new Error(`channel "${topic}": cannot resume at offset ${fromOffset}, the log holds offsets ${low}..${high - 1}`);
    }
  } finally {
    await admin.disconnect();
  }
}
