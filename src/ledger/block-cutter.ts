/**
 * Block cutter: turns the totally ordered stream of one channel into blocks, deterministically.
 *
 * Every consenter (embedded solo, Kafka) feeds it the channel's stream, so every member that replays
 * the same stream cuts the same blocks. It is a state machine over plain data with no clock, no I/O
 * and no randomness: the batch timeout is realised by time-to-cut markers that travel through the
 * stream itself. The rules, and where they differ from Hyperledger Fabric 1.x's blockcutter and Kafka
 * consenter, are in docs/ledger.md.
 */

/** Batch limits; the same on every member of the channel, or members fork. */
export interface BlockCutterConfig {
  /** A batch is cut as soon as it holds this many envelopes. */
  maxMessageCount: number;
  /** A batch is cut before it would grow past this many bytes; a larger envelope gets a block of its own. */
  preferredMaxBytes: number;
  /** Envelopes larger than this are rejected and never enter a block. */
  absoluteMaxBytes: number;
}

/** One record of the channel's stream, with its stream offset (Kafka partition offset or solo log index). */
export type StreamRecord = EnvelopeRecord | TimeToCutRecord;

/** An envelope, opaque to the cutter; its size is its byte length. */
export interface EnvelopeRecord {
  kind: 'envelope';
  offset: number;
  bytes: Uint8Array;
  ordererTime?: number;
}

/** A request, published by some member after its batch timeout, to cut the pending batch as block `blockNumber`. */
export interface TimeToCutRecord {
  kind: 'timeToCut';
  offset: number;
  blockNumber: number;
}

export interface OrderedEnvelope {
  offset: number;
  bytes: Uint8Array;
  /** The orderer's time for the record (ms since the epoch), the same for every member: bounds envelope timestamps. */
  ordererTime?: number;
}

export type CutReason = 'maxMessages' | 'preferredMaxBytes' | 'oversize' | 'timeToCut';

/** A block-to-be: the batch of envelopes a block will hold, before headers and hashes are added. */
export interface CutBlock {
  number: number;
  /** Never empty, in offset order. */
  envelopes: OrderedEnvelope[];
  firstOffset: number;
  lastOffset: number;
  cutReason: CutReason;
}

export interface RejectedEnvelope {
  offset: number;
  sizeBytes: number;
  reason: 'exceedsAbsoluteMaxBytes';
}

export interface IgnoredTimeToCut {
  offset: number;
  blockNumber: number;
  /** stale: that block is already cut; future: not the next block; nothingPending: no batch to cut. */
  reason: 'stale' | 'future' | 'nothingPending';
}

/** What one stream record did. */
export interface OrderResult {
  /** Blocks cut by this record, in number order: none, one, or two (a pending batch, then an oversize envelope). */
  blocks: CutBlock[];
  /**
   * Set when this record started a new pending batch, to the number that batch will get as a block.
   * The caller publishes a time-to-cut marker for that number once its batch timeout elapses.
   */
  batchStartedForBlock?: number;
  rejected?: RejectedEnvelope;
  ignoredTimeToCut?: IgnoredTimeToCut;
  /** The record's offset is not past the last consumed one: a redelivery, skipped. */
  alreadyConsumed?: true;
}

/** Everything a member needs to resume cutting exactly where it stopped. Plain data. */
export interface BlockCutterState {
  /** The number the next cut block gets. */
  nextBlockNumber: number;
  /** Offset of the last record applied, -1 before the first; the caller resumes reading after it. */
  lastConsumedOffset: number;
  /** Envelopes waiting for the next block, in offset order. */
  pending: OrderedEnvelope[];
}

export class BlockCutterConfigError extends RangeError {
  constructor(message: string) {
    super(`Invalid block cutter configuration: ${message}`);
    this.name = 'BlockCutterConfigError';
  }
}

export class BlockCutterStateError extends RangeError {
  constructor(message: string) {
    super(`Cannot resume block cutting: ${message}`);
    this.name = 'BlockCutterStateError';
  }
}

/** The state of a channel before its first record, whose first cut block will be `nextBlockNumber`. */
export function initialCutterState(nextBlockNumber: number): BlockCutterState {
  return { nextBlockNumber, lastConsumedOffset: -1, pending: [] };
}

/**
 * The state right after `block` was cut, derivable from the committed block alone (Fabric's
 * LastOffsetPersisted). Resuming here re-reads whatever followed the block's last envelope; those
 * records can only be rejected envelopes, time-to-cut markers (now stale, or with nothing pending)
 * or the envelope that cut the block by overflowing it, which re-enters an empty batch as it did
 * the first time. So the member cuts the same blocks without having persisted its pending batch.
 */
export function stateAfterBlock(block: CutBlock): BlockCutterState {
  return { nextBlockNumber: block.number + 1, lastConsumedOffset: block.lastOffset, pending: [] };
}

export class BlockCutter {
  readonly config: Readonly<BlockCutterConfig>;
  #nextBlockNumber: number;
  #lastConsumedOffset: number;
  #pending: OrderedEnvelope[];
  #pendingBytes: number;

  constructor(config: BlockCutterConfig, state: BlockCutterState) {
    this.config = checkConfig(config);
    checkState(state, this.config);
    this.#nextBlockNumber = state.nextBlockNumber;
    this.#lastConsumedOffset = state.lastConsumedOffset;
    this.#pending = [...state.pending];
    this.#pendingBytes = sizeOf(this.#pending);
  }

  /** The block number the pending batch will get, if one is pending: after a resume, arm its timeout. */
  get pendingBlockNumber(): number | undefined {
    return this.#pending.length > 0 ? this.#nextBlockNumber : undefined;
  }

  /** A copy of the state, to persist for a resume. Envelope bytes are shared, never mutated. */
  snapshot(): BlockCutterState {
    return {
      nextBlockNumber: this.#nextBlockNumber,
      lastConsumedOffset: this.#lastConsumedOffset,
      pending: [...this.#pending],
    };
  }

  /** Applies the next record of the stream. Offsets must increase; gaps are fine (Kafka leaves some). */
  order(record: StreamRecord): OrderResult {
    checkRecord(record);
    if (record.offset <= this.#lastConsumedOffset) return { blocks: [], alreadyConsumed: true };
    this.#lastConsumedOffset = record.offset;
    return record.kind === 'envelope' ? this.#orderEnvelope(record) : this.#applyTimeToCut(record);
  }

  #orderEnvelope({ offset, bytes, ordererTime }: EnvelopeRecord): OrderResult {
    const envelope: OrderedEnvelope = ordererTime === undefined ? { offset, bytes } : { offset, bytes, ordererTime };
    const { maxMessageCount, preferredMaxBytes, absoluteMaxBytes } = this.config;
    const sizeBytes = bytes.byteLength;
    if (sizeBytes > absoluteMaxBytes) {
      return { blocks: [], rejected: { offset, sizeBytes, reason: 'exceedsAbsoluteMaxBytes' } };
    }
    const blocks: CutBlock[] = [];
    // Also covers an oversize envelope: the batch before it is cut first, so it stays in order.
    if (this.#pending.length > 0 && this.#pendingBytes + sizeBytes > preferredMaxBytes) {
      blocks.push(this.#cutPending('preferredMaxBytes'));
    }
    if (sizeBytes > preferredMaxBytes) {
      blocks.push(this.#cut([envelope], 'oversize'));
      return { blocks };
    }
    const startsBatch = this.#pending.length === 0;
    this.#pending.push(envelope);
    this.#pendingBytes += sizeBytes;
    if (this.#pending.length >= maxMessageCount) {
      blocks.push(this.#cutPending('maxMessages'));
      return { blocks };
    }
    return startsBatch ? { blocks, batchStartedForBlock: this.#nextBlockNumber } : { blocks };
  }

  #applyTimeToCut({ offset, blockNumber }: TimeToCutRecord): OrderResult {
    // Every member's timer publishes a marker for the same block, so all but the first arrive stale.
    const ignore = (reason: IgnoredTimeToCut['reason']): OrderResult => ({
      blocks: [],
      ignoredTimeToCut: { offset, blockNumber, reason },
    });
    if (blockNumber < this.#nextBlockNumber) return ignore('stale');
    if (blockNumber > this.#nextBlockNumber) return ignore('future');
    // Markers come from members we do not trust: one with nothing to cut must not create an empty block.
    if (this.#pending.length === 0) return ignore('nothingPending');
    return { blocks: [this.#cutPending('timeToCut')] };
  }

  #cutPending(cutReason: CutReason): CutBlock {
    const envelopes = this.#pending;
    this.#pending = [];
    this.#pendingBytes = 0;
    return this.#cut(envelopes, cutReason);
  }

  #cut(envelopes: OrderedEnvelope[], cutReason: CutReason): CutBlock {
    return {
      number: this.#nextBlockNumber++,
      envelopes,
      firstOffset: envelopes[0].offset,
      lastOffset: envelopes[envelopes.length - 1].offset,
      cutReason,
    };
  }
}

/** The state as JSON (envelope bytes in base64), for a store to persist between restarts. */
export function encodeCutterState(state: BlockCutterState): string {
  return JSON.stringify({
    nextBlockNumber: state.nextBlockNumber,
    lastConsumedOffset: state.lastConsumedOffset,
    pending: state.pending.map(({ offset, bytes, ordererTime }) => ({
      offset,
      ordererTime,
      bytes: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64'),
    })),
  });
}

/** Reverses encodeCutterState. The BlockCutter constructor checks the state against its configuration. */
export function decodeCutterState(json: string): BlockCutterState {
  const parsed: unknown = JSON.parse(json);
  const { nextBlockNumber, lastConsumedOffset, pending } = (parsed ?? {}) as Record<string, unknown>;
  if (typeof nextBlockNumber !== 'number' || typeof lastConsumedOffset !== 'number' || !Array.isArray(pending)) {
    throw new BlockCutterStateError('the stored state lacks nextBlockNumber, lastConsumedOffset or pending');
  }
  return {
    nextBlockNumber,
    lastConsumedOffset,
    pending: pending.map((entry: { offset?: unknown; bytes?: unknown; ordererTime?: unknown }) => {
      if (typeof entry?.offset !== 'number' || typeof entry.bytes !== 'string') {
        throw new BlockCutterStateError('a stored pending envelope lacks its offset or base64 bytes');
      }
      const envelope = { offset: entry.offset, bytes: new Uint8Array(Buffer.from(entry.bytes, 'base64')) };
      return typeof entry.ordererTime === 'number' ? { ...envelope, ordererTime: entry.ordererTime } : envelope;
    }),
  };
}

function checkConfig(config: BlockCutterConfig): Readonly<BlockCutterConfig> {
  const { maxMessageCount, preferredMaxBytes, absoluteMaxBytes } = config;
  for (const [name, value] of Object.entries({ maxMessageCount, preferredMaxBytes, absoluteMaxBytes })) {
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new BlockCutterConfigError(`${name} must be a positive integer, got ${value}`);
    }
  }
  if (preferredMaxBytes > absoluteMaxBytes) {
    throw new BlockCutterConfigError(
      `preferredMaxBytes (${preferredMaxBytes}) must not exceed absoluteMaxBytes (${absoluteMaxBytes})`,
    );
  }
  return Object.freeze({ maxMessageCount, preferredMaxBytes, absoluteMaxBytes });
}

/** A pending batch this configuration could not have produced would make this member cut differently. */
function checkState(state: BlockCutterState, config: Readonly<BlockCutterConfig>): void {
  const { nextBlockNumber, lastConsumedOffset, pending } = state;
  if (!isCount(nextBlockNumber)) {
    throw new BlockCutterStateError(`nextBlockNumber must be a non-negative integer, got ${nextBlockNumber}`);
  }
  if (!isCount(lastConsumedOffset + 1)) {
    throw new BlockCutterStateError(`lastConsumedOffset must be an integer ≥ -1, got ${lastConsumedOffset}`);
  }
  let previousOffset = -1;
  for (const { offset, bytes } of pending) {
    if (!isCount(offset) || offset <= previousOffset || offset > lastConsumedOffset) {
      throw new BlockCutterStateError(
        `pending offsets must increase and not pass lastConsumedOffset (${lastConsumedOffset}), got ${offset}`,
      );
    }
    if (!(bytes instanceof Uint8Array)) throw new BlockCutterStateError(`pending envelope ${offset} has no bytes`);
    previousOffset = offset;
  }
  if (pending.length >= config.maxMessageCount) {
    throw new BlockCutterStateError(
      `${pending.length} envelopes are pending but maxMessageCount is ${config.maxMessageCount}`,
    );
  }
  const pendingBytes = sizeOf(pending);
  if (pendingBytes > config.preferredMaxBytes) {
    throw new BlockCutterStateError(
      `${pendingBytes} bytes are pending but preferredMaxBytes is ${config.preferredMaxBytes}`,
    );
  }
}

/** Stream records come from our own decoders: a malformed one is a bug, and e.g. a string offset would misorder. */
function checkRecord(record: StreamRecord): void {
  if (!isCount(record.offset)) {
    throw new TypeError(`A stream record offset must be a non-negative integer, got ${record.offset}`);
  }
  if (record.kind === 'envelope') {
    if (!(record.bytes instanceof Uint8Array)) throw new TypeError(`Envelope at offset ${record.offset} has no bytes`);
  } else if (record.kind === 'timeToCut') {
    if (!isCount(record.blockNumber)) {
      throw new TypeError(
        `Time-to-cut at offset ${record.offset}: blockNumber must be a non-negative integer, got ${record.blockNumber}`,
      );
    }
  } else {
    throw new TypeError(`Unknown stream record kind ${String((record as { kind: unknown }).kind)}`);
  }
}

function isCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

function sizeOf(envelopes: readonly OrderedEnvelope[]): number {
  return envelopes.reduce((total, { bytes }) => total + bytes.byteLength, 0);
}
