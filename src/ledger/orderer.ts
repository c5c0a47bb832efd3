/**
 * The Orderer port: one channel's totally ordered, durable, append-only log. Every member reads the same
 * sequence of messages from it and derives the same blocks (block-cutter.ts). Two adapters: solo
 * (embedded, a local persistent log) and Kafka (one single-partition topic per channel).
 *
 * Three kinds of message travel on a channel, so that every member sees them in one order: envelopes
 * (cut into blocks), time-to-cut markers (the batch timeout) and attestations (finality). The orderer
 * does not interpret them: it stores and delivers the bytes `encodeChannelMessage` produced, and a
 * member decodes them with `decodeChannelMessage`, which never throws.
 */
import { canonicalize } from './canonical-json.ts';

export type ChannelMessage =
  | { kind: 'envelope'; bytes: Uint8Array }
  | { kind: 'timeToCut'; blockNumber: number }
  /** The attestation's canonical JSON (attestation.ts), as bytes. */
  | { kind: 'attestation'; bytes: Uint8Array };

/** A raw record of the log with its offset: offsets start at 0 and increase by one per record. */
export interface OrderedRecord {
  offset: number;
  bytes: Uint8Array;
  /**
   * When the orderer appended the record (ms since the epoch), stored with it, so every member reads the same
   * value: Kafka's LogAppendTime (the broker's clock), the solo log's own stamp. Absent for records an older
   * solo log holds. Members bound envelope timestamps by it (docs/ledger.md, "Block time").
   */
  time?: number;
}

export interface Subscription {
  /** Stops delivery; resolves once no handler call is running or will start. */
  stop(): Promise<void>;
  /** Settles when delivery ends: resolves after stop(), rejects when the handler or the log failed. */
  readonly done: Promise<void>;
}

/**
 * The largest record an orderer takes (an encoded channel message: tag byte and body). Both adapters
 * refuse a larger one the same way, so a member cannot depend on which one it runs on; a channel's
 * `absoluteMaxBytes` must stay below it.
 */
export const MAX_RECORD_BYTES = 4 * 1024 * 1024;

/** What append() checks before writing anything: every record a Uint8Array of at most MAX_RECORD_BYTES. */
export function checkAppendable(messages: Uint8Array[]): void {
  for (const bytes of messages) {
    if (!(bytes instanceof Uint8Array)) throw new TypeError('an orderer record must be a Uint8Array');
    if (bytes.length > MAX_RECORD_BYTES) {
      throw new RangeError(`a record of ${bytes.length} bytes exceeds the orderer's limit of ${MAX_RECORD_BYTES} bytes`);
    }
  }
}

export interface Orderer {
  /** `solo` or `kafka`, for logs and metrics. */
  readonly kind: string;
  /**
   * Appends the messages, in this order, and resolves with their offsets once they are durable (solo: on
   * disk; Kafka: acknowledged by all in-sync replicas). Offsets increase in call order, also across
   * concurrent calls on one orderer; another member's appends may land in between. A rejection means
   * the outcome is unknown: the messages may or may not be in the log (members reject replayed envelopes
   * by nonce). Only a refusal by checkAppendable (a TypeError or RangeError) means nothing was appended.
   */
  append(messages: Uint8Array[]): Promise<number[]>;
  /**
   * Appends small control messages (attestations, time-to-cut markers) without queueing behind this
   * orderer's envelope appends: otherwise a member's attestation waits for megabytes of its own anchors,
   * and finality with it. Their order relative to append() calls is not kept (nothing relies on it);
   * among appendControl calls it is. Same durability and same failure meaning as append().
   */
  appendControl(messages: Uint8Array[]): Promise<number[]>;
  /**
   * Delivers every record from `fromOffset` on, in offset order, each once, in batches of one or more;
   * the next batch only after the handler's promise resolved. Records appended later are delivered as
   * they arrive. A `fromOffset` past endOffset() is refused. Do not await the subscription's stop(), or
   * close(), inside the handler: both wait for the handler.
   */
  subscribe(fromOffset: number, handler: (records: OrderedRecord[]) => Promise<void>): Promise<Subscription>;
  /** Offset the next appended record will get (the log's length): a member has caught up when it consumed all before it. */
  endOffset(): Promise<number>;
  /** Stops this orderer's subscriptions (their `done` resolves) and releases the log. */
  close(): Promise<void>;
}

const ENVELOPE_TAG = 0x45; // 'E'
const TIME_TO_CUT_TAG = 0x54; // 'T'
const ATTESTATION_TAG = 0x41; // 'A'
const MARKER_PATTERN = /^\{"blockNumber":(0|[1-9]\d{0,15})\}$/;

/** The record for a message. A block number that is not a safe non-negative integer is a RangeError. */
export function encodeChannelMessage(message: ChannelMessage): Uint8Array {
  if (message.kind === 'timeToCut') {
    // decodeChannelMessage would refuse it: a marker every member skips must not be published at all.
    if (!Number.isSafeInteger(message.blockNumber) || message.blockNumber < 0) {
      throw new RangeError(`invalid block number ${message.blockNumber} for a time-to-cut marker`);
    }
    return Buffer.concat([Buffer.of(TIME_TO_CUT_TAG), Buffer.from(canonicalize({ blockNumber: message.blockNumber }), 'utf8')]);
  }
  return Buffer.concat([Buffer.of(message.kind === 'envelope' ? ENVELOPE_TAG : ATTESTATION_TAG), message.bytes]);
}

/**
 * The message a record carries, or undefined for a record no member wrote (unknown tag, bad marker):
 * every member skips such a record the same way, so a foreign write to the topic cannot fork anyone.
 * Only the exact bytes encodeChannelMessage writes are accepted. The `bytes` of an envelope or an
 * attestation are a view into `bytes`, not a copy.
 */
export function decodeChannelMessage(bytes: Uint8Array): ChannelMessage | undefined {
  if (bytes.length === 0) return undefined;
  const body = bytes.subarray(1);
  switch (bytes[0]) {
    case ENVELOPE_TAG:
      return { kind: 'envelope', bytes: body };
    case ATTESTATION_TAG:
      return { kind: 'attestation', bytes: body };
    case TIME_TO_CUT_TAG: {
      const m = MARKER_PATTERN.exec(Buffer.from(body).toString('latin1'));
      const blockNumber = m ? Number(m[1]) : NaN;
      return Number.isSafeInteger(blockNumber) ? { kind: 'timeToCut', blockNumber } : undefined;
    }
    default:
      return undefined;
  }
}
