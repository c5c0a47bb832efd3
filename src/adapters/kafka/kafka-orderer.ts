/**
 * The Orderer port on Kafka: the channel is one single-partition topic (topics.ts), appends go through
 * the idempotent ChannelProducer, and each subscription is a ChannelConsumer of its own, reading from
 * the offset the caller gives. Every member of the consortium appends to and reads the same topic.
 */
import type { Admin } from 'kafkajs';
import { CHANNEL_PATTERN } from '../../ledger/envelope.ts';
import { checkAppendable, type OrderedRecord, type Orderer, type Subscription } from '../../ledger/orderer.ts';
import { createKafkaClient, toOffset, type KafkaConnection } from './client.ts';
import { ChannelConsumer } from './consumer.ts';
import { ChannelProducer } from './producer.ts';
import { CHANNEL_MAX_BATCH_BYTES, ensureChannelTopic, type ChannelTopicOptions } from './topics.ts';

/** Brokers, channel, and the topic's replication (3 copies, 2 in sync by default; 1 and 1 on a single broker). */
export type KafkaOrdererOptions = ChannelTopicOptions;

/** Upper bounds in Kafka's record format v2: a record's framing around a value (no key, no headers)… */
const RECORD_FRAMING_BYTES = 32;
/** …and a record batch's header. One append is split into requests that stay within CHANNEL_MAX_BATCH_BYTES. */
const BATCH_HEADER_BYTES = 64;

interface SendLane {
  producer: ChannelProducer;
  tail: Promise<unknown>;
}

export class KafkaOrderer implements Orderer {
  readonly kind = 'kafka';
  private readonly subscriptions = new Set<ChannelConsumer>();
  private closed = false;
  /**
   * A producer and the appends queued on it, run one after another so that the requests of one append are
   * never interleaved with another's. Control messages have a lane of their own, so they never wait behind envelopes.
   */
  private readonly envelopes: SendLane;
  private readonly control: SendLane;

  private constructor(private readonly channel: string, private readonly connection: KafkaConnection,
    envelopeProducer: ChannelProducer, controlProducer: ChannelProducer, private readonly admin: Admin) {
    this.envelopes = { producer: envelopeProducer, tail: Promise.resolve() };
    this.control = { producer: controlProducer, tail: Promise.resolve() };
  }

  /** Creates the channel's topic if needed (or checks the existing one), then connects a producer. */
  static async connect(options: KafkaOrdererOptions): Promise<KafkaOrderer> {
    const { channel, replicationFactor, minInsyncReplicas, ...connection } = options;
    // The channel's envelopes name it, and envelope validation only accepts this form: refuse any other up front.
    if (!CHANNEL_PATTERN.test(channel)) throw new Error(`invalid channel name ${JSON.stringify(channel)}: use ${CHANNEL_PATTERN}`);
    const { topic } = await ensureChannelTopic(options);
    const admin = createKafkaClient(connection).admin();
    await admin.connect();
    const producers: ChannelProducer[] = [];
    try {
      producers.push(await ChannelProducer.connect(connection));
      producers.push(await ChannelProducer.connect(connection));
      return new KafkaOrderer(topic, connection, producers[0]!, producers[1]!, admin);
    } catch (err) {
      await Promise.all(producers.map((p) => p.disconnect().catch(() => {})));
      await admin.disconnect().catch(() => {});
      throw err;
    }
  }

  append(messages: Uint8Array[]): Promise<number[]> {
    return this.enqueue(this.envelopes, messages);
  }

  appendControl(messages: Uint8Array[]): Promise<number[]> {
    return this.enqueue(this.control, messages);
  }

  private enqueue(lane: SendLane, messages: Uint8Array[]): Promise<number[]> {
    try {
      this.assertOpen();
      checkAppendable(messages);
    } catch (err) {
      return Promise.reject(err);
    }
    const result = lane.tail.then(() => this.send(lane.producer, messages));
    lane.tail = result.catch(() => {});
    return result;
  }

  async subscribe(fromOffset: number, handler: (records: OrderedRecord[]) => Promise<void>): Promise<Subscription> {
    this.assertOpen();
    const consumer = await ChannelConsumer.start({
      ...this.connection, channel: this.channel, fromOffset,
      batchHandler: (records) => handler(records.map(({ offset, value, timestamp }) => ({ offset, bytes: value, time: timestamp }))),
    });
    if (this.closed) { // closed while the consumer was joining its group
      await consumer.stop();
      throw new Error('KafkaOrderer is closed');
    }
    this.subscriptions.add(consumer);
    void consumer.done.finally(() => this.subscriptions.delete(consumer)).catch(() => {});
    return consumer;
  }

  /** The partition's high watermark: every offset below it is acknowledged by the in-sync replicas. */
  async endOffset(): Promise<number> {
    this.assertOpen();
    const partitions = await this.admin.fetchTopicOffsets(this.channel);
    if (partitions.length !== 1) throw new Error(`channel topic "${this.channel}" has ${partitions.length} partitions; channels have one`);
    return toOffset(partitions[0]!.high);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.subscriptions].map((consumer) => consumer.stop()));
    const lanes = [this.envelopes, this.control];
    await Promise.all(lanes.map((lane) => lane.tail));
    await Promise.all(lanes.map((lane) => lane.producer.disconnect()));
    await this.admin.disconnect();
  }

  private async send(producer: ChannelProducer, messages: Uint8Array[]): Promise<number[]> {
    const offsets: number[] = [];
    for (const request of splitIntoRequests(messages)) {
      // A failed request rejects the append, and its later requests are never sent.
      offsets.push(...await producer.send(this.channel, request.map((bytes) => ({ value: asBuffer(bytes) }))));
    }
    return offsets;
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('KafkaOrderer is closed');
  }
}

/** Consecutive runs of messages, each small enough to be one record batch the topic accepts. */
function splitIntoRequests(messages: Uint8Array[]): Uint8Array[][] {
  const requests: Uint8Array[][] = [];
  let current: Uint8Array[] = [];
  let size = BATCH_HEADER_BYTES;
  for (const bytes of messages) {
    const cost = bytes.length + RECORD_FRAMING_BYTES;
    if (current.length > 0 && size + cost > CHANNEL_MAX_BATCH_BYTES) {
      requests.push(current);
      current = [];
      size = BATCH_HEADER_BYTES;
    }
    current.push(bytes);
    size += cost;
  }
  if (current.length > 0) requests.push(current);
  return requests;
}

/** kafkajs wants Buffers; this one shares the bytes instead of copying them. */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
