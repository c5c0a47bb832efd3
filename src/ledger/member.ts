/**
 * A consortium member's ledger node: reads the channel's ordered log, cuts blocks with the shared block
 * cutter, validates and commits them to its own ledger store, attests each committed header, and tracks
 * finality from everyone's attestations. Every member running this over the same log commits the same
 * chain; a member that disagrees is caught by the attestations (a divergence), which raises an alarm and
 * stops this member from anchoring until an operator resolves it.
 *
 * Resume needs nothing but the store: the cutter restarts after the last committed block's last offset
 * (stateAfterBlock), the membership is the genesis one plus every committed config change, and the
 * finality tracker is refilled with the attestations kept for blocks not yet final.
 */
import { EventEmitter } from 'node:events';
import { createAttestation, FinalityTracker, type Attestation, type Checkpoint, type Divergence } from './attestation.ts';
import { buildBlockWithVerdicts, blockHeaderHash, type Block, type BlockHeader } from './block.ts';
import { BlockCutter, initialCutterState, type BlockCutterConfig, type CutBlock } from './block-cutter.ts';
import { canonicalize } from './canonical-json.ts';
import { type Envelope, type EnvelopeSigner, type EnvelopeVerdict, type ValidationContext } from './envelope.ts';
import { LedgerAppendError, type BlockIndex, type LedgerStore } from './ledger-store.ts';
import { applyConfigChange, type Membership } from './membership.ts';
import { decodeChannelMessage, encodeChannelMessage, type Orderer, type OrderedRecord, type Subscription } from './orderer.ts';

export interface LedgerMemberOptions {
  channel: string;
  /** This member: its id and envelope-signing key. */
  signer: EnvelopeSigner;
  /** The members at block 0 (consortium.json); config changes on the ledger evolve it. */
  genesis: Membership;
  /** Attestations needed for finality; at least (and by default) a strict majority. */
  quorum?: number;
  orderer: Orderer;
  store: LedgerStore;
  cutter: BlockCutterConfig;
  /** How long a batch may wait for more envelopes before this member asks for a cut. */
  batchTimeoutMs: number;
  maxEnvelopeBytes?: number;
  /** The channel's clock rule: envelope timestamps within this many ms of the orderer's time (docs/ledger.md, "Block time"). */
  maxClockSkewMs?: number;
  /** Checks the certificate of a member a config envelope adds (identity/consortium-dir.ts memberCertificateCheck). */
  checkMemberCertificate?: ValidationContext['checkMemberCertificate'];
  /** Structured events for the operator's log; never content. */
  log?: (event: string, fields: Record<string, string | number | boolean>) => void;
}

/** A committed block with each envelope's verdict (the parsed envelope when valid). */
export interface CommittedBlock {
  block: Block;
  headerHash: string;
  verdicts: EnvelopeVerdict[];
}

export interface LedgerStatus {
  channel: string;
  member: string;
  orderer: string;
  /** Highest committed block, -1 before block 0. */
  height: number;
  /** Highest block attested by a quorum, -1 before the first. */
  finalHeight: number;
  /** Blocks on which attestations (or this member's own header) disagree: never cleared. */
  divergences: Divergence[];
  /** True while this member has not yet consumed what the log held when it started. */
  catchingUp: boolean;
  /** Why this member stopped (a store or orderer failure), if it did. */
  failure?: string;
  /** False while a joining member waits for the config change that adds it, and once it is revoked. */
  activeMember: boolean;
}

export class LedgerMember extends EventEmitter<{ block: [CommittedBlock]; final: [number]; divergence: [Divergence]; failure: [Error] }> {
  readonly channel: string;
  readonly memberId: string;
  private membership: Membership;
  private tracker!: FinalityTracker;
  private cutter!: BlockCutter;
  private head: BlockHeader | undefined;
  private subscription: Subscription | undefined;
  private catchUpTarget = 0;
  private consumedOffset = -1;
  private timers = new Map<number, NodeJS.Timeout>();
  private failure: Error | undefined;
  private readonly log: NonNullable<LedgerMemberOptions['log']>;
  private caughtUpWaiters: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];

  constructor(private readonly options: LedgerMemberOptions) {
    super();
    this.channel = options.channel;
    this.memberId = options.signer.memberId;
    this.membership = options.genesis;
    this.log = options.log ?? (() => {});
  }

  async start(): Promise<void> {
    const { store, channel } = this.options;
    this.head = await store.head(channel);
    for (const { blockNumber, change } of await store.configChanges(channel)) {
      this.membership = applyConfigChange(this.membership, change, blockNumber + 1);
    }
    this.tracker = new FinalityTracker({ channel, members: this.membership, quorum: this.options.quorum });
    await this.refillTracker();
    const state = this.head
      ? { nextBlockNumber: this.head.number + 1, lastConsumedOffset: this.head.lastOffset, pending: [] }
      : initialCutterState(0);
    this.cutter = new BlockCutter(this.options.cutter, state);
    this.consumedOffset = state.lastConsumedOffset;
    this.catchUpTarget = await this.options.orderer.endOffset();
    this.subscription = await this.options.orderer.subscribe(state.lastConsumedOffset + 1, (records) => this.consume(records));
    this.subscription.done.catch((e: unknown) => this.fail(e));
    if (this.consumedOffset + 1 >= this.catchUpTarget) this.resolveCaughtUp();
  }

  async stop(): Promise<void> {
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    await this.subscription?.stop();
    this.subscription = undefined;
  }

  /** Resolves once this member consumed everything the log held when it started; rejects if it fails before. */
  caughtUp(): Promise<void> {
    if (!this.status().catchingUp) return Promise.resolve();
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => this.caughtUpWaiters.push({ resolve, reject }));
  }

  status(): LedgerStatus {
    return {
      channel: this.channel,
      member: this.memberId,
      orderer: this.options.orderer.kind,
      height: this.head?.number ?? -1,
      finalHeight: this.tracker?.finalHeight ?? -1,
      divergences: this.tracker?.divergences ?? [],
      catchingUp: this.consumedOffset + 1 < this.catchUpTarget,
      failure: this.failure?.message,
      activeMember: this.membership.isActiveAt(this.memberId, (this.head?.number ?? -1) + 1),
    };
  }

  /** True when this member may anchor: running, caught up, no divergence, and an active member of the channel. */
  healthy(): boolean {
    const status = this.status();
    return !status.failure && !status.catchingUp && status.divergences.length === 0 && this.subscription !== undefined && status.activeMember;
  }

  currentMembership(): Membership {
    return this.membership;
  }

  headHeader(): BlockHeader | undefined {
    return this.head;
  }

  latestCheckpoint(): Checkpoint | undefined {
    return this.tracker.checkpoint();
  }

  /** Orders signed envelopes (wire bytes); resolves with their log offsets once durable. */
  submit(envelopes: Uint8Array[]): Promise<number[]> {
    return this.options.orderer.append(envelopes.map((bytes) => encodeChannelMessage({ kind: 'envelope', bytes })));
  }

  private async refillTracker(): Promise<void> {
    if (!this.head) return;
    const { store, channel } = this.options;
    const checkpoint = await store.checkpoint(channel);
    const from = checkpoint ? checkpoint.header.number : 0;
    for (const header of await store.headers(channel, from, this.head.number)) this.tracker.recordCommitted(header);
    for (const attestation of await store.attestations(channel, from, this.head.number)) this.tracker.addAttestation(attestation);
  }

  private async consume(records: OrderedRecord[]): Promise<void> {
    const attestations: unknown[] = [];
    for (const record of records) {
      const message = decodeChannelMessage(record.bytes);
      if (message?.kind === 'attestation') {
        attestations.push(parseJson(message.bytes));
      } else if (message) {
        const result = this.cutter.order(
          message.kind === 'envelope'
            ? { kind: 'envelope', offset: record.offset, bytes: message.bytes, ordererTime: record.time }
            : { kind: 'timeToCut', offset: record.offset, blockNumber: message.blockNumber },
        );
        if (result.rejected) this.log('ledger_envelope_rejected', { offset: record.offset, reason: result.rejected.reason, bytes: result.rejected.sizeBytes });
        for (const cut of result.blocks) {
          await this.takeAttestations(attestations.splice(0));
          await this.commit(cut);
        }
        if (result.batchStartedForBlock !== undefined) this.armTimeToCut(result.batchStartedForBlock);
      }
      this.consumedOffset = record.offset;
    }
    await this.takeAttestations(attestations);
    if (!this.status().catchingUp) this.resolveCaughtUp();
  }

  private async commit(cut: CutBlock): Promise<void> {
    const { channel } = this.options;
    this.clearTimer(cut.number);
    const committedNonces = await this.committedNoncesOf(cut);
    const { block, verdicts } = buildBlockWithVerdicts(cut, this.head, {
      channel,
      members: this.membership,
      committedNonces: { has: (creator, nonce) => committedNonces.has(`${creator} ${nonce}`) },
      maxEnvelopeBytes: this.options.maxEnvelopeBytes,
      maxClockSkewMs: this.options.maxClockSkewMs,
      checkMemberCertificate: this.options.checkMemberCertificate,
    });
    const index = blockIndex(verdicts);
    await this.append(block, index);
    this.head = block.header;
    for (const change of index.configChanges) this.membership = applyConfigChange(this.membership, change, block.header.number + 1);
    if (index.configChanges.length > 0) this.tracker.updateMembership(this.membership);
    const headerHash = blockHeaderHash(block.header);
    const divergence = this.tracker.recordCommitted(block.header);
    if (divergence) this.raiseDivergence(divergence);
    // A joining (not yet admitted) or revoked member does not attest: the others would reject its attestation.
    if (this.membership.isActiveAt(this.memberId, block.header.number)) {
      const attestation = createAttestation(this.options.signer, block.header);
      // Not awaited: ordering our own attestation must not hold up the next block; a failure only delays finality.
      this.options.orderer
        .appendControl([encodeChannelMessage({ kind: 'attestation', bytes: Buffer.from(canonicalize(attestation), 'utf8') })])
        .catch((e: unknown) => this.log('ledger_attestation_send_failed', { block: block.header.number, error: (e as Error).message }));
    }
    this.emit('block', { block, headerHash, verdicts });
  }

  /**
   * Appends the block; when another gateway of this hospital sharing the ledger store (several gateways on
   * one MongoDB) committed the same block first, the stored one must be identical, else it is a fork.
   */
  private async append(block: Block, index: BlockIndex): Promise<void> {
    try {
      await this.options.store.appendBlock(block, index);
    } catch (e) {
      if (!(e instanceof LedgerAppendError)) throw e;
      const stored = await this.options.store.block(this.channel, block.header.number);
      if (!stored || blockHeaderHash(stored.header) !== blockHeaderHash(block.header)) throw e;
    }
  }

  /** The nonces of this batch's envelopes that earlier blocks committed (the validation context needs a sync lookup). */
  private async committedNoncesOf(cut: CutBlock): Promise<Set<string>> {
    const pairs = noncePairs(cut.envelopes);
    const committed = pairs.length ? await this.options.store.committedNonces(this.options.channel, pairs) : new Set<string>();
    if (committed.size === 0) return committed;
    // Another gateway of this hospital sharing the ledger store may have committed this very block already:
    // the nonces its valid envelopes committed are not replays here. (append() then checks the block we
    // build is identical to the stored one, so a wrong verdict of that gateway is caught, not adopted.)
    const sibling = await this.options.store.block(this.options.channel, cut.number);
    if (sibling) {
      const firstCommittedHere = noncePairs(sibling.envelopes.filter((_, i) => sibling.validity[i]?.valid === true));
      for (const { creator, nonce } of firstCommittedHere) committed.delete(`${creator} ${nonce}`);
    }
    return committed;
  }

  private async takeAttestations(values: unknown[]): Promise<void> {
    if (values.length === 0) return;
    const before = this.tracker.finalHeight;
    const accepted: Attestation[] = [];
    for (const value of values) {
      const outcome = this.tracker.addAttestation(value);
      if (outcome.accepted) {
        accepted.push(value as Attestation);
        if (outcome.divergence) this.raiseDivergence(outcome.divergence);
      } else if (outcome.reason !== 'duplicate') {
        this.log('ledger_attestation_rejected', { reason: outcome.reason });
      }
    }
    if (accepted.length) await this.options.store.saveAttestations(accepted);
    const after = this.tracker.finalHeight;
    if (after > before) {
      const checkpoint = this.tracker.checkpoint();
      if (checkpoint) await this.options.store.saveCheckpoint(this.channel, checkpoint);
      this.emit('final', after);
    }
  }

  private raiseDivergence(divergence: Divergence): void {
    this.log('ledger_divergence_alarm', { block: divergence.blockNumber, hashes: divergence.claims.length, equivocators: divergence.equivocators.join(',') });
    this.emit('divergence', divergence);
  }

  private armTimeToCut(blockNumber: number): void {
    if (this.timers.has(blockNumber)) return;
    const timer = setTimeout(() => {
      this.timers.delete(blockNumber);
      this.options.orderer
        .appendControl([encodeChannelMessage({ kind: 'timeToCut', blockNumber })])
        .catch((e: unknown) => this.log('ledger_time_to_cut_send_failed', { block: blockNumber, error: (e as Error).message }));
    }, this.options.batchTimeoutMs);
    timer.unref();
    this.timers.set(blockNumber, timer);
  }

  private clearTimer(blockNumber: number): void {
    const timer = this.timers.get(blockNumber);
    if (timer) clearTimeout(timer);
    this.timers.delete(blockNumber);
  }

  private resolveCaughtUp(): void {
    for (const { resolve } of this.caughtUpWaiters.splice(0)) resolve();
  }

  private fail(e: unknown): void {
    this.failure = e instanceof Error ? e : new Error(String(e));
    this.log('ledger_member_failed', { error: this.failure.message });
    for (const { reject } of this.caughtUpWaiters.splice(0)) reject(this.failure);
    this.emit('failure', this.failure);
  }
}

function parseJson(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    return undefined;
  }
}

/**
 * Index entries of a block: from its valid envelopes only, so a forged envelope indexes nothing. Link sets,
 * resource heads and erasures are folded in ledger order (envelope, then entry): what the block leaves for each key.
 */
export function blockIndex(verdicts: EnvelopeVerdict[]): BlockIndex {
  const index: BlockIndex = { digests: [], patients: [], nonces: [], configChanges: [], linkSets: [], resourceHeads: [], erasures: [] };
  const patients = new Set<string>();
  const linkSets = new Map<string, BlockIndex['linkSets'][number]>();
  const resourceHeads = new Map<string, BlockIndex['resourceHeads'][number]>();
  const erasures = new Map<string, BlockIndex['erasures'][number]>();
  verdicts.forEach((verdict, envelopeIndex) => {
    if (!verdict.valid) return;
    const envelope: Envelope = verdict.envelope;
    const { creator } = envelope;
    index.nonces.push({ creator, nonce: envelope.nonce });
    if (envelope.type === 'anchor') {
      envelope.payload.entries.forEach(({ digest, patient, resource, links }, entryIndex) => {
        index.digests.push({ digest, envelopeIndex, entryIndex, creator, kind: 'anchor', ...(patient && { patient }), ...(resource && { resource }) });
        if (!patient) return;
        if (!patients.has(`${patient} ${creator}`)) {
          patients.add(`${patient} ${creator}`);
          index.patients.push({ token: patient, hospital: creator });
        }
        if (resource) resourceHeads.set(`${creator} ${resource}`, { creator, resource, digest });
        if (links) linkSets.set(`${creator} ${patient}`, { creator, patient, links });
      });
    } else if (envelope.type === 'audit') {
      envelope.payload.entries.forEach(({ digest, erased }, entryIndex) => {
        index.digests.push({ digest, envelopeIndex, entryIndex, creator, kind: 'audit' });
        if (!erased) return;
        erasures.set(`${creator} ${erased}`, { creator, patient: erased });
        linkSets.set(`${creator} ${erased}`, { creator, patient: erased, links: [] });
      });
    } else if (envelope.type === 'config') {
      const { approvals: _approvals, ...change } = envelope.payload;
      index.configChanges.push(change);
    }
  });
  index.linkSets = [...linkSets.values()];
  index.resourceHeads = [...resourceHeads.values()];
  index.erasures = [...erasures.values()];
  return index;
}

/**
 * The (creator, nonce) pairs of envelopes. A plain parse is enough (building the block validates fully): only
 * envelopes that validate are looked up, and those carry exactly these creator and nonce values.
 */
function noncePairs(envelopes: Array<Uint8Array | { bytes: Uint8Array }>): Array<{ creator: string; nonce: string }> {
  const pairs: Array<{ creator: string; nonce: string }> = [];
  for (const envelope of envelopes) {
    const value = parseJson('bytes' in envelope ? envelope.bytes : envelope) as { creator?: unknown; nonce?: unknown } | undefined;
    if (typeof value?.creator === 'string' && typeof value.nonce === 'string') pairs.push({ creator: value.creator, nonce: value.nonce });
  }
  return pairs;
}
