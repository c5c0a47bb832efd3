/**
 * The one place that builds kafkajs clients for MedBlock, so that every producer, consumer and admin
 * shares the same settings: a quiet log creator (kafkajs logs retriable ERROR lines on a fresh broker,
 * and its log entries must never carry message payloads, which may hold ledger data), no automatic
 * topic creation anywhere, and offsets as plain numbers instead of kafkajs's strings.
 */
import kafkajs from 'kafkajs';
import type { ISocketFactory, Kafka, LogEntry, RetryOptions } from 'kafkajs';
import { log } from '../../log.ts';
import type { KafkaSecurity } from './security.ts';

export interface KafkaConnection extends KafkaSecurity {
  /** `host:port` entries; parse `MEDBLOCK_KAFKA_BROKERS` with {@link parseBrokerList} at the call site. */
  brokers: string[];
  /** Shown in the broker's logs and metrics; defaults to `medblock-gateway`. */
  clientId?: string;
  /** Backoff for connecting, metadata and (for producers) each send; see {@link DEFAULT_RETRY}. */
  retry?: RetryOptions;
  /** How broker connections are opened (kafkajs's option): TLS wrappers, or tests that inject network faults. */
  socketFactory?: ISocketFactory;
}

/**
 * About 30 s of retrying (waits of 100 ms doubling to at most 2 s, 18 retries): long enough to ride out a
 * broker restart or a leader election without surfacing an error, short enough that a dead cluster is
 * reported, and a recovered broker is noticed within about 2 s.
 */
export const DEFAULT_RETRY: RetryOptions = { initialRetryTime: 100, maxRetryTime: 2_000, retries: 18 };

/** `"h1:9092, h2:9092"` → `["h1:9092", "h2:9092"]`; an empty or malformed list is an error. */
export function parseBrokerList(value: string | undefined): string[] {
  const brokers = (value ?? '').split(',').map((b) => b.trim()).filter(Boolean);
  if (brokers.length === 0) throw new Error('no Kafka brokers given (expected "host:port[,host:port…]")');
  for (const broker of brokers) {
    if (!/^[^\s:]+:\d{1,5}$/.test(broker)) throw new Error(`invalid Kafka broker address: ${JSON.stringify(broker)}`);
  }
  return brokers;
}

export function createKafkaClient(connection: KafkaConnection): Kafka {
  if (connection.brokers.length === 0) throw new Error('no Kafka brokers given');
  return new kafkajs.Kafka({
    brokers: connection.brokers,
    clientId: connection.clientId ?? 'medblock-gateway',
    retry: { ...DEFAULT_RETRY, ...connection.retry },
    logLevel: kafkajs.logLevel.WARN,
    logCreator: quietLogCreator,
    ...(connection.socketFactory ? { socketFactory: connection.socketFactory } : {}),
    ...(connection.ssl ? { ssl: connection.ssl } : {}),
    ...(connection.sasl ? { sasl: connection.sasl } : {}),
  });
}

/** Only these fields of a kafkajs log entry are passed on: names and errors, never data. */
const SAFE_FIELDS = ['error', 'broker', 'groupId', 'topic', 'partition', 'retryCount', 'retryTime'] as const;

/**
 * kafkajs's log entries, WARN and above, as MedBlock log lines (event `kafka`), with only the fields in
 * SAFE_FIELDS. Errors of kafkajs's connection layer (a refused connection, a broker's error response such
 * as "coordinator is loading" on a fresh broker) are demoted to `warn`: kafkajs hands each of them to the
 * operation, which retries it or fails, and that failure is what reaches the caller.
 */
export function quietLogCreator(): (entry: LogEntry) => void {
  return ({ namespace, level, log: entry }) => {
    if (level > kafkajs.logLevel.WARN || level === kafkajs.logLevel.NOTHING) return;
    // kafkajs wants an idempotent producer to retry forever; ours bounds retries and then replaces its
    // kafkajs producer, which keeps the guarantee (see producer.ts), so this warning does not apply.
    if (entry.message.startsWith('Limiting retries for the idempotent producer')) return;
    const severity = level === kafkajs.logLevel.ERROR && namespace !== 'Connection' ? 'error' : 'warn';
    const fields: Record<string, string | number | boolean> = { namespace, message: entry.message };
    for (const name of SAFE_FIELDS) {
      const value: unknown = entry[name];
      if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') fields[name] = value;
    }
    log(severity, 'kafka', fields);
  };
}

/** A Kafka offset (int64, a string in kafkajs) as a number; it cannot exceed 2^53 in practice, but is checked. */
export function toOffset(value: string): number {
  const offset = Number(value);
  if (!Number.isSafeInteger(offset) || offset < 0) throw new Error(`unexpected Kafka offset ${JSON.stringify(value)}`);
  return offset;
}
