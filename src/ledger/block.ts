/**
 * Blocks: a cut batch plus a header that chains it to the block before (docs/ledger.md, "Blocks";
 * byte rules for third parties in docs/proofs.md, "Block headers").
 *
 * Every member builds the block for a cut batch from the same bytes with the same validation
 * context, so every member gets the same header hash; that hash is what members attest.
 * Building throws on caller bugs (a batch that does not follow the previous block); the verify
 * functions never throw and return every problem they find.
 */
import { createHash } from 'node:crypto';
import type { CutBlock } from './block-cutter.ts';
import { canonicalize } from './canonical-json.ts';
import {
  CHANNEL_PATTERN,
  parseEnvelope,
  validateBlockEnvelopes,
  type EnvelopeVerdict,
  type RejectionReason,
  type ValidationContext,
} from './envelope.ts';
import { HASH_BYTES, MerkleTree, hashLeaf, verifyInclusion } from './merkle.ts';

/** Domain separation: a header hash can never be confused with an envelope, validity or other digest. */
export const BLOCK_HEADER_HASH_PREFIX = 'medblock/block-header/v1\n';
export const BLOCK_VALIDITY_HASH_PREFIX = 'medblock/block-validity/v1\n';
export const CONFIG_CHAIN_HASH_PREFIX = 'medblock/config-chain/v1\n';

/** previousHash of block 0: there is no block before it. */
export const GENESIS_PREVIOUS_HASH = '0'.repeat(2 * HASH_BYTES);
/** The time a chain starts from: block 0 with no valid envelope gets this time. */
export const GENESIS_TIME = '1970-01-01T00:00:00.000Z';

const HEX_HASH_PATTERN = /^[0-9a-f]{64}$/;
const TIMESTAMP_PATTERN = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

export interface BlockHeader {
  channel: string;
  number: number;
  /** blockHeaderHash of block number − 1, or GENESIS_PREVIOUS_HASH for block 0. Lowercase hex. */
  previousHash: string;
  /** RFC 9162 Merkle root over the wire bytes of every envelope, valid or not. Lowercase hex. */
  dataHash: string;
  /** The Merkle tree size: an inclusion proof is checked against this and dataHash together. */
  envelopeCount: number;
  /** validityHash of the envelopes' verdicts, so an attestation also covers what the member accepted. */
  validityHash: string;
  /** Stream offsets of the first and last envelope. */
  firstOffset: number;
  lastOffset: number;
  /** max(previous time, latest timestamp of a valid envelope): see docs/ledger.md, "Block time". */
  time: string;
  /**
   * On channels with a clock rule (consortium.json `ledger.maxClockSkewMs`): the latest orderer time of the
   * block's records, which every envelope timestamp must be near. Absent otherwise (and in older blocks),
   * and then outside the hash, so older headers keep their hashes.
   */
  ordererTime?: string;
  /**
   * A hash chain over every valid config envelope committed up to and including this block (configChainHash),
   * so an attested header commits to the whole membership history. Absent while the chain has none (and in
   * blocks written before the field), and then outside the hash, so those headers keep their hashes.
   */
  configHash?: string;
}

/** What validating a block's envelopes needs: the validation context minus what the block itself gives (number, clock). */
export type BlockContext = Omit<ValidationContext, 'blockNumber' | 'clock'> & {
  /** The channel's clock rule (consortium.json `ledger.maxClockSkewMs`); without it, timestamps are not bounded. */
  maxClockSkewMs?: number;
};

/** `valid`, or why the envelope was rejected: what the validityHash commits to. */
export type ValidityCode = 'valid' | RejectionReason;

/** `detail` is for logs and is not hashed, so rewording a message cannot fork the members. */
export type EnvelopeValidity = { valid: true } | { valid: false; reason: RejectionReason; detail: string };

export interface Block {
  header: BlockHeader;
  /** Wire bytes in stream order. Invalid envelopes stay, marked in `validity`, as Fabric does. */
  envelopes: Uint8Array[];
  validity: EnvelopeValidity[];
}

/** Where a problem is (a JSON Pointer into the checked value) and what is wrong. */
export interface BlockProblem {
  path: string;
  problem: string;
}

/** A batch that cannot become the next block: a caller bug, never a property of the data. */
export class BlockError extends RangeError {
  constructor(message: string) {
    super(message);
    this.name = 'BlockError';
  }
}

// ---------------------------------------------------------------------------------------------
// Hashes
// ---------------------------------------------------------------------------------------------

function sha256Hex(prefix: string, value: unknown): string {
  return createHash('sha256').update(prefix + canonicalize(value), 'utf8').digest('hex');
}

/** SHA-256 over UTF-8(BLOCK_HEADER_HASH_PREFIX ‖ canonical JSON of the header), lowercase hex. */
export function blockHeaderHash(header: BlockHeader): string {
  const { channel, number, previousHash, dataHash, envelopeCount, validityHash, firstOffset, lastOffset, time, ordererTime, configHash } = header;
  return sha256Hex(BLOCK_HEADER_HASH_PREFIX, {
    ...(ordererTime === undefined ? {} : { ordererTime }),
    ...(configHash === undefined ? {} : { configHash }),
    channel,
    number,
    previousHash,
    dataHash,
    envelopeCount,
    validityHash,
    firstOffset,
    lastOffset,
    time,
  });
}

/** SHA-256 over UTF-8(BLOCK_VALIDITY_HASH_PREFIX ‖ canonical JSON array of the codes), lowercase hex. */
export function validityHash(codes: readonly ValidityCode[]): string {
  return sha256Hex(BLOCK_VALIDITY_HASH_PREFIX, codes);
}

export function validityCode(validity: EnvelopeValidity): ValidityCode {
  return validity.valid ? 'valid' : validity.reason;
}

/**
 * The configHash of block `blockNumber`: unchanged from the previous block's (absent when it has none) when
 * the block holds no valid config envelope, else SHA-256 over UTF-8(CONFIG_CHAIN_HASH_PREFIX ‖ canonical JSON
 * of {block, envelopes, previous}): the SHA-256 (hex) of each valid config envelope's wire bytes in block
 * order, and the previous configHash or 64 zeros.
 */
export function configChainHash(previous: string | undefined, blockNumber: number, configEnvelopes: readonly Uint8Array[]): string | undefined {
  if (configEnvelopes.length === 0) return previous;
  const envelopes = configEnvelopes.map((bytes) => createHash('sha256').update(bytes).digest('hex'));
  return sha256Hex(CONFIG_CHAIN_HASH_PREFIX, { block: blockNumber, envelopes, previous: previous ?? GENESIS_PREVIOUS_HASH });
}

/** validityHash of untrusted codes, or undefined when they are not all strings with a canonical form. */
function checkedValidityHash(codes: readonly unknown[]): string | undefined {
  for (let index = 0; index < codes.length; index++) if (typeof codes[index] !== 'string') return undefined;
  try {
    return validityHash(codes as ValidityCode[]);
  } catch {
    return undefined; // a lone surrogate has no canonical JSON
  }
}

function dataHash(envelopes: readonly Uint8Array[]): string {
  return Buffer.from(MerkleTree.fromLeaves(envelopes).root()).toString('hex');
}

/** The validation context's clock for a block with this orderer time, when the channel has a clock rule. */
export function blockClock(ordererTime: string | undefined, maxSkewMs: number | undefined): ValidationContext['clock'] {
  return ordererTime === undefined || maxSkewMs === undefined ? undefined : { ordererTime, maxSkewMs };
}

/** The latest orderer time of a cut batch, when the orderer stamped every record and the channel has a clock rule. */
function cutOrdererTime(cut: CutBlock, maxSkewMs: number | undefined): string | undefined {
  if (maxSkewMs === undefined || cut.envelopes.some((e) => e.ordererTime === undefined)) return undefined;
  return new Date(Math.max(...cut.envelopes.map((e) => e.ordererTime!))).toISOString();
}

/** Timestamps are toISOString form, so string order is time order. */
function blockTime(previousTime: string, validTimestamps: readonly string[]): string {
  return validTimestamps.reduce((latest, timestamp) => (timestamp > latest ? timestamp : latest), previousTime);
}

// ---------------------------------------------------------------------------------------------
// Building
// ---------------------------------------------------------------------------------------------

/**
 * The block for `cut`, which must be the batch right after `previous` (or block 0 when there is no
 * previous block). Envelopes are validated for block `cut.number`; the caller's context supplies the
 * channel, the membership and the nonces committed before this block.
 */
export function buildBlock(
  cut: CutBlock,
  previous: BlockHeader | undefined,
  context: BlockContext,
): Block {
  return buildBlockWithVerdicts(cut, previous, context).block;
}

/** buildBlock, also returning each envelope's verdict (with the parsed envelope when valid) for indexing. */
export function buildBlockWithVerdicts(
  cut: CutBlock,
  previous: BlockHeader | undefined,
  context: BlockContext,
): { block: Block; verdicts: EnvelopeVerdict[] } {
  const expectedNumber = previous === undefined ? 0 : previous.number + 1;
  if (cut.number !== expectedNumber) throw new BlockError(`cut batch ${cut.number} is not the next block (${expectedNumber})`);
  if (cut.envelopes.length === 0) throw new BlockError(`cut batch ${cut.number} has no envelopes`);
  if (previous !== undefined && previous.channel !== context.channel) {
    throw new BlockError(`the previous block is on channel ${previous.channel}, not ${context.channel}`);
  }
  if (previous !== undefined && cut.firstOffset <= previous.lastOffset) {
    throw new BlockError(`cut batch ${cut.number} starts at offset ${cut.firstOffset}, not after ${previous.lastOffset}`);
  }
  const envelopes = cut.envelopes.map(({ bytes }) => bytes);
  const ordererTime = cutOrdererTime(cut, context.maxClockSkewMs);
  const verdicts = validateBlockEnvelopes(envelopes, { ...context, blockNumber: cut.number, clock: blockClock(ordererTime, context.maxClockSkewMs) });
  const validity: EnvelopeValidity[] = verdicts.map((verdict) =>
    verdict.valid ? { valid: true } : { valid: false, reason: verdict.reason, detail: verdict.detail },
  );
  const validTimestamps = verdicts.flatMap((verdict) => (verdict.valid ? [verdict.envelope.timestamp] : []));
  const configEnvelopes = envelopes.filter((_, index) => {
    const verdict = verdicts[index];
    return verdict.valid && verdict.envelope.type === 'config';
  });
  const configHash = configChainHash(previous?.configHash, cut.number, configEnvelopes);
  const header: BlockHeader = {
    channel: context.channel,
    number: cut.number,
    previousHash: previous === undefined ? GENESIS_PREVIOUS_HASH : blockHeaderHash(previous),
    dataHash: dataHash(envelopes),
    envelopeCount: envelopes.length,
    validityHash: validityHash(validity.map(validityCode)),
    firstOffset: cut.firstOffset,
    lastOffset: cut.lastOffset,
    time: blockTime(previous?.time ?? GENESIS_TIME, validTimestamps),
    ...(ordererTime === undefined ? {} : { ordererTime }),
    ...(configHash === undefined ? {} : { configHash }),
  };
  return { block: { header, envelopes, validity }, verdicts };
}

// ---------------------------------------------------------------------------------------------
// Verifying. Input is untrusted (read from a store or a peer): every check tolerates any value.
// ---------------------------------------------------------------------------------------------

const HEADER_FIELDS = [
  'channel',
  'number',
  'previousHash',
  'dataHash',
  'envelopeCount',
  'validityHash',
  'firstOffset',
  'lastOffset',
  'time',
  'ordererTime',
  'configHash',
] as const;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

function isTimestamp(value: unknown): value is string {
  return typeof value === 'string' && TIMESTAMP_PATTERN.test(value) && new Date(Date.parse(value)).toISOString() === value;
}

/** Every field in its format, and nothing else (an extra field would be outside the hash). */
export function headerProblems(value: unknown, path: string): BlockProblem[] {
  if (!isPlainObject(value)) return [{ path, problem: 'the header must be an object' }];
  const problems: BlockProblem[] = [];
  const report = (field: string, problem: string): void => void problems.push({ path: `${path}/${field}`, problem });
  for (const field of Object.keys(value)) {
    if (!(HEADER_FIELDS as readonly string[]).includes(field)) report(field, 'is not a header field');
  }
  const header = value as Partial<Record<(typeof HEADER_FIELDS)[number], unknown>>;
  if (typeof header.channel !== 'string' || !CHANNEL_PATTERN.test(header.channel)) report('channel', `must match ${CHANNEL_PATTERN}`);
  for (const field of ['number', 'firstOffset', 'lastOffset'] as const) {
    if (!isCount(header[field])) report(field, 'must be a non-negative integer');
  }
  if (!isCount(header.envelopeCount) || header.envelopeCount === 0) report('envelopeCount', 'must be a positive integer');
  for (const field of ['previousHash', 'dataHash', 'validityHash'] as const) {
    if (typeof header[field] !== 'string' || !HEX_HASH_PATTERN.test(header[field])) report(field, 'must be 64 lowercase hex digits');
  }
  if (header.configHash !== undefined && (typeof header.configHash !== 'string' || !HEX_HASH_PATTERN.test(header.configHash))) {
    report('configHash', 'must be 64 lowercase hex digits');
  }
  if (!isTimestamp(header.time)) report('time', 'must be an ISO instant as toISOString writes it');
  if (header.ordererTime !== undefined && !isTimestamp(header.ordererTime)) report('ordererTime', 'must be an ISO instant as toISOString writes it');
  if (problems.length === 0) {
    const { firstOffset, lastOffset, envelopeCount } = value as unknown as BlockHeader;
    if (firstOffset > lastOffset) report('lastOffset', `is before firstOffset ${firstOffset}`);
    // Offsets are distinct, so a block cannot hold more envelopes than its offset range.
    else if (envelopeCount > lastOffset - firstOffset + 1) report('envelopeCount', `exceeds the offset range ${firstOffset}..${lastOffset}`);
  }
  return problems;
}

/** How `header` (well-formed) must follow `previous` (well-formed), or start the chain. */
function linkProblems(header: BlockHeader, previous: BlockHeader | undefined, path: string): BlockProblem[] {
  const problems: BlockProblem[] = [];
  const report = (field: string, problem: string): void => void problems.push({ path: `${path}/${field}`, problem });
  if (previous === undefined) {
    if (header.number !== 0) report('number', `block ${header.number} has no previous block, so it must be block 0`);
    if (header.previousHash !== GENESIS_PREVIOUS_HASH) report('previousHash', 'block 0 must have the all-zero previousHash');
    return problems;
  }
  if (header.number !== previous.number + 1) report('number', `block ${header.number} does not follow block ${previous.number}`);
  if (header.previousHash !== blockHeaderHash(previous)) {
    report('previousHash', `does not match the hash of the previous header (block ${previous.number})`);
  }
  if (header.channel !== previous.channel) report('channel', `differs from the previous block's channel ${previous.channel}`);
  if (header.firstOffset <= previous.lastOffset) {
    report('firstOffset', `${header.firstOffset} is not after the previous block's lastOffset ${previous.lastOffset}`);
  }
  if (header.time < previous.time) report('time', `is before the previous block's time ${previous.time}`);
  if (previous.configHash !== undefined && header.configHash === undefined) report('configHash', 'is missing, but the previous block has one');
  return problems;
}

/**
 * Checks that `headers` form a chain: each well-formed and linked to the one before it. Without
 * `previous` the chain must start at block 0; with it, `headers` continue after that (trusted) header.
 * A tampered last header is not detectable here: its hash is checked by attestations (attestation.ts).
 */
export function verifyChain(headers: readonly unknown[], previous?: BlockHeader): BlockProblem[] {
  if (!Array.isArray(headers)) return [{ path: '', problem: 'the headers must be an array' }];
  if (previous !== undefined && headerProblems(previous, '').length > 0) return [{ path: '', problem: 'the previous header is malformed' }];
  const problems: BlockProblem[] = [];
  let before = previous;
  for (let position = 0; position < headers.length; position++) {
    const path = `/${position}`;
    const shape = headerProblems(headers[position], path);
    problems.push(...shape);
    if (shape.length > 0) {
      // Later links cannot be checked against a malformed header; resume checking after it.
      before = undefined;
      continue;
    }
    const header = headers[position] as BlockHeader;
    if (before !== undefined || position === 0) problems.push(...linkProblems(header, before, path));
    before = header;
  }
  return problems;
}

function envelopeListProblems(block: Record<string, unknown>): BlockProblem[] {
  const { envelopes, validity } = block;
  if (!Array.isArray(envelopes) || envelopes.length === 0) return [{ path: '/envelopes', problem: 'must be a non-empty array' }];
  const problems: BlockProblem[] = [];
  for (let index = 0; index < envelopes.length; index++) {
    if (!(envelopes[index] instanceof Uint8Array)) problems.push({ path: `/envelopes/${index}`, problem: 'must be bytes' });
  }
  if (!Array.isArray(validity) || validity.length !== envelopes.length) {
    return [...problems, { path: '/validity', problem: 'must hold one verdict per envelope' }];
  }
  for (let index = 0; index < validity.length; index++) {
    const verdict = validity[index] as Partial<EnvelopeValidity> | null;
    const wellFormed =
      isPlainObject(verdict) &&
      (verdict.valid === true || (verdict.valid === false && typeof verdict.reason === 'string' && typeof verdict.detail === 'string'));
    if (!wellFormed) problems.push({ path: `/validity/${index}`, problem: 'must be {valid: true} or {valid: false, reason, detail}' });
  }
  return problems;
}

/**
 * Checks a block on its own and against the header before it (undefined for block 0): header format
 * and link, dataHash, envelopeCount, validityHash and time recomputed from the contents. With a
 * validation context (the nonces committed before this block), the verdicts are also recomputed
 * and compared. Never throws.
 */
export function verifyBlock(
  block: unknown,
  previous: BlockHeader | undefined,
  context?: BlockContext,
): BlockProblem[] {
  if (!isPlainObject(block)) return [{ path: '', problem: 'the block must be an object' }];
  if (previous !== undefined && headerProblems(previous, '').length > 0) return [{ path: '', problem: 'the previous header is malformed' }];
  const headerShape = headerProblems(block.header, '/header');
  const contents = envelopeListProblems(block);
  if (headerShape.length > 0 || contents.length > 0) return [...headerShape, ...contents];

  const { header, envelopes, validity } = block as unknown as Block;
  const problems = linkProblems(header, previous, '/header');
  const report = (path: string, problem: string): void => void problems.push({ path, problem });
  if (header.envelopeCount !== envelopes.length) report('/header/envelopeCount', `is not the ${envelopes.length} envelopes of the block`);
  if (header.dataHash !== dataHash(envelopes)) report('/header/dataHash', 'is not the Merkle root of the envelopes');
  const codes = validity.map(validityCode);
  if (header.validityHash !== checkedValidityHash(codes)) report('/header/validityHash', 'is not the hash of the verdicts');

  const validTimestamps: string[] = [];
  const configEnvelopes: Uint8Array[] = [];
  codes.forEach((code, index) => {
    if (code !== 'valid') return;
    const parsed = parseEnvelope(envelopes[index], Infinity);
    if (!parsed.valid) return report(`/validity/${index}`, `marked valid but the envelope is ${parsed.reason}`);
    validTimestamps.push(parsed.envelope.timestamp);
    if (parsed.envelope.type === 'config') configEnvelopes.push(envelopes[index]);
  });
  const expectedTime = blockTime(previous?.time ?? GENESIS_TIME, validTimestamps);
  if (header.time !== expectedTime) report('/header/time', `must be ${expectedTime} (latest valid envelope timestamp)`);
  const expectedConfigHash = configChainHash(previous?.configHash, header.number, configEnvelopes);
  // A config block written before the field existed has none, and neither has any block before it.
  const writtenBeforeConfigHash = header.configHash === undefined && previous?.configHash === undefined;
  if (header.configHash !== expectedConfigHash && !writtenBeforeConfigHash) {
    report('/header/configHash', `must be ${expectedConfigHash ?? 'absent'} (the hash chain of the valid config envelopes)`);
  }

  if (context !== undefined) {
    if (header.channel !== context.channel) report('/header/channel', `is not the channel ${context.channel} being verified`);
    const verdicts = validateBlockEnvelopes(envelopes, { ...context, blockNumber: header.number, clock: blockClock(header.ordererTime, context.maxClockSkewMs) });
    verdicts.forEach((verdict, index) => {
      const expected: ValidityCode = verdict.valid ? 'valid' : verdict.reason;
      if (codes[index] !== expected) report(`/validity/${index}`, `is ${codes[index]}, but validation says ${expected}`);
    });
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Inclusion proofs
// ---------------------------------------------------------------------------------------------

/**
 * Proves that an envelope is leaf `index` of a block and what verdict it got. `validity` is the
 * whole verdict list (checked against the header's validityHash); the tree size and root come from
 * the header the verifier holds, never from the proof.
 */
export interface EnvelopeInclusionProof {
  channel: string;
  blockNumber: number;
  index: number;
  /** RFC 9162 PATH(index, envelopes), lowest sibling first, lowercase hex. */
  auditPath: string[];
  validity: ValidityCode[];
}

export type InclusionCheck = { included: true; validity: ValidityCode } | { included: false; problem: string };

export function envelopeInclusionProof(block: Block, index: number): EnvelopeInclusionProof {
  const tree = MerkleTree.fromLeaves(block.envelopes);
  return {
    channel: block.header.channel,
    blockNumber: block.header.number,
    index,
    auditPath: tree.inclusionProof(index).map((hash) => Buffer.from(hash).toString('hex')),
    validity: block.validity.map(validityCode),
  };
}

function hexHash(value: unknown): Uint8Array | undefined {
  return typeof value === 'string' && HEX_HASH_PATTERN.test(value) ? Buffer.from(value, 'hex') : undefined;
}

/** Checks `envelopeBytes` against a proof and a header the caller trusts (e.g. from a checkpoint). Never throws. */
export function verifyEnvelopeInclusion(envelopeBytes: unknown, proof: unknown, header: BlockHeader): InclusionCheck {
  const fail = (problem: string): InclusionCheck => ({ included: false, problem });
  if (headerProblems(header, '').length > 0) return fail('the header is malformed');
  if (!(envelopeBytes instanceof Uint8Array)) return fail('the envelope must be bytes');
  if (!isPlainObject(proof)) return fail('the proof must be an object');
  const { channel, blockNumber, index, auditPath, validity } = proof as Partial<EnvelopeInclusionProof>;
  if (channel !== header.channel || blockNumber !== header.number) return fail('the proof is for another block');
  if (!isCount(index) || index >= header.envelopeCount) return fail('the index is not in the block');
  const path = Array.isArray(auditPath) ? auditPath.map(hexHash) : [];
  if (!Array.isArray(auditPath) || path.some((hash) => hash === undefined)) return fail('the audit path must be hex hashes');
  const root = Buffer.from(header.dataHash, 'hex');
  if (!verifyInclusion(hashLeaf(envelopeBytes), index, header.envelopeCount, path as Uint8Array[], root)) {
    return fail('the audit path does not lead to the header dataHash');
  }
  if (!Array.isArray(validity) || validity.length !== header.envelopeCount || checkedValidityHash(validity) !== header.validityHash) {
    return fail('the verdicts do not match the header validityHash');
  }
  return { included: true, validity: validity[index] };
}
