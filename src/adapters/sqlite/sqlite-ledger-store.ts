/**
 * The LedgerStore port on the embedded default: its own SQLite file (`ledger.sqlite` in the data dir), in
 * WAL mode with synchronous=FULL, so a block that appendBlock returned survives a crash or a power loss.
 * A block and its index entries are written in one SQLite transaction, so nothing of a block is ever
 * visible without the rest.
 *
 * Writes (appendBlock, saveAttestations, saveCheckpoint) run on a writer thread with its own connection
 * (ledger-writer-thread.ts), in the order they were called: a full block inserts ~10,000 index rows and
 * fsyncs, which would otherwise stall the gateway's event loop for tens to hundreds of milliseconds. Reads
 * run on the calling thread's connection (WAL: they see every acknowledged write and never wait on the
 * writer). `{ inline: true }` writes on the calling thread instead (tools, tests). The layout and the write
 * path are in ledger-writer.ts.
 */
import type Database from 'better-sqlite3';
import type { Worker } from 'node:worker_threads';
import { startWorker } from '../../worker.ts';
import type { Attestation, Checkpoint } from '../../ledger/attestation.ts';
import type { Block, BlockHeader, EnvelopeValidity } from '../../ledger/block.ts';
import type { ConfigChange } from '../../ledger/envelope.ts';
import { LedgerAppendError, type AnchorFacts, type BlockIndex, type DigestLocation, type LedgerStore, type LinkHolder } from '../../ledger/ledger-store.ts';
import {
  digestFromKey,
  digestKey,
  KINDS,
  LEDGER_SCHEMA,
  LEDGER_SCHEMA_VERSION,
  LedgerWriter,
  openLedgerConnection,
  READER_CACHE_KIB,
  WRITER_CACHE_KIB,
  type AppendRequest,
  type LedgerWriterReply,
  type LedgerWriterRequest,
} from './ledger-writer.ts';
import { chunks } from '../chunks.ts';
import { preparePrivateDatabaseFile } from './private-file.ts';

export { LEDGER_SCHEMA_VERSION };

/** SQLite binds at most 32766 variables per statement; lookups are chunked well below that. */
const LOOKUP_CHUNK = 500;

const placeholders = (n: number) => Array.from({ length: n }, () => '?').join(', ');

/** The block as it crosses to the writer: envelopes copied into one buffer (transferred, so copied once), locations packed. */
function appendRequest(block: Block, index: BlockIndex): { request: AppendRequest; transfer: ArrayBuffer[] } {
  const { channel, number } = block.header;
  const envelopeEnds = new Uint32Array(block.envelopes.length);
  let size = 0;
  block.envelopes.forEach((e, i) => (envelopeEnds[i] = size += e.byteLength));
  // A fresh buffer: the caller keeps its envelopes (they may be views into a larger, pooled buffer).
  const envelopes = new Uint8Array(size);
  let at = 0;
  for (const e of block.envelopes) {
    envelopes.set(e, at);
    at += e.byteLength;
  }
  const creators: string[] = [];
  const creatorIndex = new Map<string, number>();
  const locations = new Int32Array(4 * index.digests.length);
  const digests = new Array<string>(index.digests.length);
  index.digests.forEach((d, i) => {
    let creator = creatorIndex.get(d.creator);
    if (creator === undefined) creatorIndex.set(d.creator, (creator = creators.push(d.creator) - 1));
    const kind = KINDS.indexOf(d.kind);
    if (kind < 0) throw new TypeError(`digest ${d.digest}: unknown kind ${String(d.kind)}`);
    digests[i] = d.digest;
    locations[4 * i] = d.envelopeIndex;
    locations[4 * i + 1] = d.entryIndex;
    locations[4 * i + 2] = creator;
    locations[4 * i + 3] = kind;
  });
  return {
    request: {
      channel,
      number,
      header: JSON.stringify(block.header),
      validity: JSON.stringify(block.validity),
      envelopes,
      envelopeEnds,
      digests,
      locations,
      creators,
      entryPatients: index.digests.map((d) => d.patient ?? null),
      entryResources: index.digests.map((d) => d.resource ?? null),
      linkSets: index.linkSets.map((l) => [l.creator, l.patient, l.links]),
      resourceHeads: index.resourceHeads.map((h) => [h.creator, h.resource, h.digest]),
      erasures: index.erasures.map((e) => [e.creator, e.patient]),
      patients: index.patients.map((p) => [p.token, p.hospital]),
      nonces: index.nonces.map((n) => [n.creator, n.nonce]),
      configChanges: index.configChanges.map((c) => JSON.stringify(c)),
    },
    transfer: [envelopes.buffer, envelopeEnds.buffer, locations.buffer],
  };
}

export class SqliteLedgerStore implements LedgerStore {
  private db!: Database.Database;
  private statements!: ReturnType<SqliteLedgerStore['prepare']>;
  /** Channel name → id, for channels seen committed (ids never change once committed). */
  private readonly channelIds = new Map<string, number>();
  private inline?: LedgerWriter;
  private thread?: Worker;
  /** Why the writer thread stopped, when it did before close(). */
  private stopped?: Error;
  private closing = false;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();

  constructor(
    private readonly file: string,
    private readonly options: { inline?: boolean } = {},
  ) {}

  async init(): Promise<void> {
    preparePrivateDatabaseFile(this.file);
    const inline = this.options.inline || this.file === ':memory:';
    const db = openLedgerConnection(this.file, inline ? WRITER_CACHE_KIB : READER_CACHE_KIB);
    try {
      const version = db.pragma('user_version', { simple: true }) as number;
      const existing = db.prepare("SELECT COUNT(*) AS n FROM sqlite_master WHERE name = 'blocks'").get() as { n: number };
      if (existing.n > 0 && version !== LEDGER_SCHEMA_VERSION) {
        throw new Error(
          `${this.file} is a ledger of schema ${version}, this gateway uses schema ${LEDGER_SCHEMA_VERSION}: ` +
            'move the file away and restart, and the member rebuilds its ledger from the orderer',
        );
      }
      db.exec(LEDGER_SCHEMA);
      db.pragma(`user_version = ${LEDGER_SCHEMA_VERSION}`);
    } catch (e) {
      db.close();
      throw e;
    }
    this.db = db;
    this.statements = this.prepare();
    if (inline) {
      this.inline = new LedgerWriter(db);
      return;
    }
    const thread = startWorker(new URL('./ledger-writer-thread.ts', import.meta.url), { file: this.file });
    this.thread = thread;
    await new Promise<void>((resolve, reject) => {
      const onExit = () => reject(new Error(`the ledger writer thread of ${this.file} stopped while opening`));
      thread.once('error', reject);
      thread.once('exit', onExit);
      thread.once('message', (reply: LedgerWriterReply) => {
        thread.off('error', reject);
        thread.off('exit', onExit);
        if ('ready' in reply && reply.ready) resolve();
        else reject(new Error(`the ledger writer thread of ${this.file} could not open it: ${'message' in reply ? reply.message : '?'}`));
      });
    }).catch(async (e) => {
      await thread.terminate();
      db.close();
      throw e;
    });
    thread.on('message', (reply: LedgerWriterReply) => this.settle(reply));
    thread.on('error', (e) => this.stop(e));
    thread.on('exit', () => this.stop(new Error(`the ledger writer thread of ${this.file} stopped`)));
    // Do not keep the process alive for an idle writer.
    thread.unref();
  }

  private settle(reply: LedgerWriterReply): void {
    if (!('id' in reply)) return;
    const waiter = this.pending.get(reply.id);
    if (!waiter) return;
    this.pending.delete(reply.id);
    if (this.pending.size === 0) this.thread!.unref();
    const { error } = reply;
    if (!error) return waiter.resolve();
    if (error.append !== undefined) return waiter.reject(new LedgerAppendError(error.append));
    waiter.reject(Object.assign(new Error(`ledger write failed: ${error.message}`), { name: error.name ?? 'Error', code: error.code }));
  }

  private stop(error: Error): void {
    this.stopped ??= error;
    for (const waiter of this.pending.values()) waiter.reject(error);
    this.pending.clear();
  }

  /** Posts a write to the writer thread; resolves when it committed (or rejects as it failed). */
  private post(request: Exclude<LedgerWriterRequest, { kind: 'close' }>, transfer: ArrayBuffer[] = []): Promise<void> {
    if (this.closing) return Promise.reject(new Error(`the ledger store of ${this.file} is closed`));
    if (this.stopped) return Promise.reject(this.stopped);
    return new Promise((resolve, reject) => {
      this.pending.set(request.id, { resolve, reject });
      // Keep the process alive while a write is outstanding, and only then.
      this.thread!.ref();
      this.thread!.postMessage(request, transfer);
    });
  }

  private prepare() {
    const db = this.db;
    return {
      channelId: db.prepare('SELECT id FROM channels WHERE name = ?').pluck(),
      head: db.prepare('SELECT header FROM blocks WHERE channel = ? ORDER BY number DESC LIMIT 1').pluck(),
      block: db.prepare('SELECT header, validity FROM blocks WHERE channel = ? AND number = ?'),
      envelopes: db.prepare('SELECT bytes FROM block_envelopes WHERE channel = ? AND number = ? ORDER BY position').pluck(),
      headers: db.prepare('SELECT header FROM blocks WHERE channel = ? AND number BETWEEN ? AND ? ORDER BY number').pluck(),
      hospitals: db.prepare('SELECT hospital FROM patients WHERE channel = ? AND token = ? ORDER BY hospital').pluck(),
      holders: db.prepare('SELECT creator AS hospital, patient AS locator FROM links WHERE channel = ? AND token = ? ORDER BY creator, patient'),
      resourceHead: db.prepare('SELECT digest FROM resource_heads WHERE channel = ? AND creator = ? AND resource = ?').pluck(),
      erased: db.prepare('SELECT 1 FROM erasures WHERE channel = ? AND creator = ? AND patient = ?').pluck(),
      nonce: db.prepare('SELECT 1 FROM nonces WHERE channel = ? AND creator = ? AND nonce = ?').pluck(),
      configChanges: db.prepare('SELECT block, change FROM config_changes WHERE channel = ? ORDER BY block, position'),
      attestations: db.prepare('SELECT attestation FROM attestations WHERE channel = ? AND block BETWEEN ? AND ? ORDER BY block, member').pluck(),
      checkpoint: db.prepare('SELECT checkpoint FROM checkpoints WHERE channel = ?').pluck(),
    };
  }

  /** The channel's id, or undefined while nothing of it is committed (then every read is empty). */
  private channelId(channel: string): number | undefined {
    let id = this.channelIds.get(channel);
    if (id === undefined) {
      id = this.statements.channelId.get(channel) as number | undefined;
      if (id !== undefined) this.channelIds.set(channel, id);
    }
    return id;
  }

  /** Waits for every write already posted (acknowledged or not), then stops the writer thread. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const thread = this.thread;
    if (thread && !this.stopped) {
      const exited = new Promise((resolve) => thread.once('exit', resolve));
      thread.ref();
      // Queued behind every write posted before it: the thread answers them all, then closes its connection.
      thread.postMessage({ kind: 'close' } satisfies LedgerWriterRequest);
      await exited;
    }
    this.db?.close();
  }

  async head(channel: string): Promise<BlockHeader | undefined> {
    const id = this.channelId(channel);
    const header = id === undefined ? undefined : (this.statements.head.get(id) as string | undefined);
    return header === undefined ? undefined : (JSON.parse(header) as BlockHeader);
  }

  async appendBlock(block: Block, index: BlockIndex): Promise<void> {
    const { request, transfer } = appendRequest(block, index);
    if (this.inline) return this.inline.append(request);
    await this.post({ kind: 'append', id: this.nextId++, ...request }, transfer);
  }

  async block(channel: string, blockNumber: number): Promise<Block | undefined> {
    const id = this.channelId(channel);
    if (id === undefined) return undefined;
    const row = this.statements.block.get(id, blockNumber) as { header: string; validity: string } | undefined;
    if (!row) return undefined;
    const envelopes = (this.statements.envelopes.all(id, blockNumber) as Buffer[]).map((b) => new Uint8Array(b));
    return { header: JSON.parse(row.header) as BlockHeader, envelopes, validity: JSON.parse(row.validity) as EnvelopeValidity[] };
  }

  async headers(channel: string, from: number, to: number): Promise<BlockHeader[]> {
    const id = this.channelId(channel);
    if (id === undefined) return [];
    return (this.statements.headers.all(id, from, to) as string[]).map((h) => JSON.parse(h) as BlockHeader);
  }

  async locate(channel: string, digests: string[]): Promise<Map<string, DigestLocation>> {
    const found = new Map<string, DigestLocation>();
    for (const [digest, { location }] of this.digestRows(channel, digests)) found.set(digest, location);
    return found;
  }

  /** The digests' rows: first location and the locator tokens of that entry. */
  private digestRows(channel: string, digests: string[]): Map<string, { location: DigestLocation; patient: string | null; resource: string | null }> {
    const found = new Map<string, { location: DigestLocation; patient: string | null; resource: string | null }>();
    const id = this.channelId(channel);
    if (id === undefined) return found;
    for (const chunk of chunks([...new Set(digests)], LOOKUP_CHUNK)) {
      const rows = this.db
        .prepare(
          'SELECT digest, block, envelope_index, entry_index, creator, kind, patient, resource FROM digests ' +
            `WHERE channel = ? AND digest IN (${placeholders(chunk.length)})`,
        )
        .all(id, ...chunk.map(digestKey)) as Array<{
        digest: Buffer | string; block: number; envelope_index: number; entry_index: number; creator: string; kind: number; patient: string | null; resource: string | null;
      }>;
      for (const r of rows) {
        const location: DigestLocation = { blockNumber: r.block, envelopeIndex: r.envelope_index, entryIndex: r.entry_index, creator: r.creator, kind: KINDS[r.kind] };
        found.set(digestFromKey(r.digest), { location, patient: r.patient, resource: r.resource });
      }
    }
    return found;
  }

  async holdersOfLink(channel: string, linkToken: string): Promise<LinkHolder[]> {
    const id = this.channelId(channel);
    return id === undefined ? [] : (this.statements.holders.all(id, linkToken) as LinkHolder[]);
  }

  async anchorFacts(channel: string, digests: string[]): Promise<Map<string, AnchorFacts>> {
    const facts = new Map<string, AnchorFacts>();
    const id = this.channelId(channel);
    for (const [digest, { location, patient, resource }] of this.digestRows(channel, digests)) {
      const head = resource === null ? undefined : (this.statements.resourceHead.get(id, location.creator, resource) as Buffer | string | undefined);
      facts.set(digest, {
        ...location,
        ...(patient !== null && { patient }),
        ...(resource !== null && { resource }),
        superseded: head !== undefined && digestFromKey(head) !== digest,
        erased: patient !== null && this.statements.erased.get(id, location.creator, patient) !== undefined,
      });
    }
    return facts;
  }

  async hospitalsForPatient(channel: string, token: string): Promise<string[]> {
    const id = this.channelId(channel);
    return id === undefined ? [] : (this.statements.hospitals.all(id, token) as string[]);
  }

  async committedNonces(channel: string, pairs: Array<{ creator: string; nonce: string }>): Promise<Set<string>> {
    const committed = new Set<string>();
    const id = this.channelId(channel);
    if (id === undefined) return committed;
    for (const { creator, nonce } of pairs) if (this.statements.nonce.get(id, creator, nonce) !== undefined) committed.add(`${creator} ${nonce}`);
    return committed;
  }

  async configChanges(channel: string): Promise<Array<{ blockNumber: number; change: ConfigChange }>> {
    const id = this.channelId(channel);
    if (id === undefined) return [];
    return (this.statements.configChanges.all(id) as Array<{ block: number; change: string }>).map((r) => ({
      blockNumber: r.block,
      change: JSON.parse(r.change) as ConfigChange,
    }));
  }

  async saveAttestations(attestations: Attestation[]): Promise<void> {
    if (attestations.length === 0) return;
    const rows = attestations.map((a): [string, number, string, string] => [a.channel, a.blockNumber, a.member, JSON.stringify(a)]);
    if (this.inline) return this.inline.saveAttestations(rows);
    await this.post({ kind: 'attestations', id: this.nextId++, rows });
  }

  async attestations(channel: string, from: number, to: number): Promise<Attestation[]> {
    const id = this.channelId(channel);
    if (id === undefined) return [];
    return (this.statements.attestations.all(id, from, to) as string[]).map((a) => JSON.parse(a) as Attestation);
  }

  async saveCheckpoint(channel: string, checkpoint: Checkpoint): Promise<void> {
    const json = JSON.stringify(checkpoint);
    if (this.inline) return this.inline.saveCheckpoint(channel, checkpoint.header.number, json);
    await this.post({ kind: 'checkpoint', id: this.nextId++, channel, block: checkpoint.header.number, checkpoint: json });
  }

  async checkpoint(channel: string): Promise<Checkpoint | undefined> {
    const id = this.channelId(channel);
    const row = id === undefined ? undefined : (this.statements.checkpoint.get(id) as string | undefined);
    return row === undefined ? undefined : (JSON.parse(row) as Checkpoint);
  }
}
