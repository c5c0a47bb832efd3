/**
 * Appends messages to a channel and reports where they landed. The ledger needs each acknowledged
 * message exactly once in the log, so the producer is idempotent (the broker drops a retried batch it
 * already has), waits for all in-sync replicas (`acks=-1`) and sends one request at a time, and `send`
 * resolves only with the broker's acknowledgement and the assigned offsets.
 *
 * A kafkajs quirk shapes the error path: when a send finally fails, kafkajs rolls its sequence number
 * back, so the NEXT batch would reuse the failed batch's sequence numbers. If the failed batch had in
 * fact been written (the acknowledgement was lost), the broker would take the next batch for a retry of
 * it, drop it, and acknowledge it: silent loss. So after a failed send this producer replaces its
 * kafkajs producer (a new producer id, fresh sequence numbers) before sending anything else.
 */
import kafkajs from 'kafkajs';
import type { Kafka, Producer, RecordMetadata } from 'kafkajs';
import { createKafkaClient, toOffset, type KafkaConnection } from './client.ts';
import { channelTopic } from './topics.ts';

export interface OutgoingMessage {
  key?: string | Buffer | null;
  value: string | Buffer;
}

/**
 * A send that failed after all retries. Its outcome is unknown: its messages may or may not be in the
 * log, so sending them again may duplicate them (the ledger rejects replayed envelopes by nonce).
 */
export class ChannelSendError extends Error {
  override name = 'ChannelSendError';
}

export class ChannelProducer {
  private producer: Producer | undefined;
  /** Set by a failed send: the kafkajs producer must be replaced before the next one. */
  private stale = false;
  private closed = false;
  /** Sends run one after another, in call order. */
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(private readonly kafka: Kafka) {}

  static async connect(connection: KafkaConnection): Promise<ChannelProducer> {
    const channelProducer = new ChannelProducer(createKafkaClient(connection));
    channelProducer.producer = await channelProducer.newProducer();
    return channelProducer;
  }

  /**
   * Appends `messages`, in order, to the channel as one batch and resolves with their offsets once the
   * broker acknowledged them (so they are contiguous and increasing). Concurrent calls are queued.
   */
  send(channel: string, messages: OutgoingMessage[]): Promise<number[]> {
    const result = this.queue.then(() => this.sendNow(channelTopic(channel), messages));
    this.queue = result.catch(() => {});
    return result;
  }

  async disconnect(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue;
    await this.producer?.disconnect();
    this.producer = undefined;
  }

  private async sendNow(topic: string, messages: OutgoingMessage[]): Promise<number[]> {
    if (this.closed) throw new Error('ChannelProducer is disconnected');
    if (messages.length === 0) return [];
    if (this.stale || !this.producer) {
      await this.producer?.disconnect().catch(() => {});
      this.producer = undefined;
      this.producer = await this.newProducer();
      this.stale = false;
    }
    let metadata: RecordMetadata[];
    try {
      metadata = await this.producer.send({
        topic,
        acks: -1,
        messages: messages.map(({ key, value }) => ({ partition: 0, key: key ?? null, value })),
      });
    } catch (err) {
      this.stale = true;
      throw new ChannelSendError(`send to channel "${topic}" failed; its ${messages.length} message(s) may or may not ` +
        `have been appended: ${(err as Error).message}`, { cause: err });
    }
    const ack = metadata.find((m) => m.topicName === topic && m.partition === 0);
    if (!ack || ack.errorCode !== 0 || ack.baseOffset === undefined || metadata.length !== 1) {
      this.stale = true;
      throw new ChannelSendError(`unexpected acknowledgement for channel "${topic}": ${JSON.stringify(metadata)}`);
    }
    const base = toOffset(ack.baseOffset);
    return messages.map((_, i) => base + i);
  }

  private async newProducer(): Promise<Producer> {
    const producer = this.kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
      // Retries come from the client (DEFAULT_RETRY, bounded); see the header for why bounded is safe here.
      // Every message names partition 0; this only silences kafkajs's partitioner-change warning.
      createPartitioner: kafkajs.Partitioners.DefaultPartitioner,
    });
    await producer.connect();
    return producer;
  }
}
