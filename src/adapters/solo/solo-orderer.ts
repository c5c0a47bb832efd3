/**
 * The embedded orderer: one channel's log in a SQLite file of its own, for a gateway that runs alone
 * (`npm start` without Kafka). The offset of a record is its row key, assigned here from 0 up, so the
 * log has no holes; WAL with synchronous=FULL makes an append that resolved survive a crash or a power
 * loss. Each record is stored with the time it was appended (this process's clock, never going back), the
 * orderer time members bound envelope timestamps by. Only this process writes the file, so subscribers are woken by append() itself, never by polling.
 * Open a file once: a second SoloOrderer on it would not wake the first one's subscribers, and both
 * would hand out the same offsets (the later write then fails on the primary key rather than fork the log).
 */
import Database from 'better-sqlite3';
import { preparePrivateDatabaseFile } from '../sqlite/private-file.ts';
import { checkAppendable, type OrderedRecord, type Orderer, type Subscription } from '../../ledger/orderer.ts';

/** Bumped when the layout changes; version 1 (no `time` column) is upgraded in place, its records keep no time. */
const SCHEMA_VERSION = 2;
/** A batch handed to a handler: up to this many records, and stopping at the first record that reaches… */
const MAX_BATCH_RECORDS = 1000;
/** …this many bytes, so a catch-up over large envelopes does not load the whole log into memory. */
const MAX_BATCH_BYTES = 4 * 1024 * 1024;

export class SoloOrderer implements Orderer {
  readonly kind = 'solo';
  private readonly subscriptions = new Set<SoloSubscription>();
  private readonly insert: Database.Statement<[number, Uint8Array, number]>;
  private readonly readFrom: Database.Statement<[number, number], { offset: number; bytes: Buffer; time: number | null }>;
  /** The last time stamped: never goes back, even if the machine's clock does. */
  private lastTime: number;
  private readonly appendAll: (first: number, messages: Uint8Array[]) => void;
  private end: number;
  private closed = false;

  private constructor(private readonly db: Database.Database) {
    this.insert = db.prepare('INSERT INTO records ("offset", bytes, time) VALUES (?, ?, ?)');
    this.readFrom = db.prepare('SELECT "offset", bytes, time FROM records WHERE "offset" >= ? ORDER BY "offset" LIMIT ?');
    this.appendAll = db.transaction((first: number, messages: Uint8Array[]) => {
      this.lastTime = Math.max(this.lastTime, Date.now());
      messages.forEach((bytes, i) => this.insert.run(first + i, bytes, this.lastTime));
    });
    const last = db.prepare('SELECT max("offset") AS last, max(time) AS time FROM records').get() as { last: number | null; time: number | null };
    this.end = last.last === null ? 0 : last.last + 1;
    this.lastTime = last.time ?? 0;
  }

  /** Opens the log in `file`, creating it (and its directory) if needed; a reopened log continues its offsets. */
  static open(file: string): SoloOrderer {
    preparePrivateDatabaseFile(file);
    const db = new Database(file);
    try {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      const version = db.pragma('user_version', { simple: true }) as number;
      const tables = db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table'").get() as { n: number };
      if (tables.n > 0 && version !== SCHEMA_VERSION && version !== 1) {
        throw new Error(`${file} is not a solo orderer log of schema ${SCHEMA_VERSION} (user_version ${version})`);
      }
      if (tables.n > 0 && version === 1) db.exec('ALTER TABLE records ADD COLUMN time INTEGER');
      db.exec('CREATE TABLE IF NOT EXISTS records ("offset" INTEGER PRIMARY KEY, bytes BLOB NOT NULL, time INTEGER)');
      db.pragma(`user_version = ${SCHEMA_VERSION}`);
      return new SoloOrderer(db);
    } catch (err) {
      db.close();
      throw err;
    }
  }

  /** Synchronous inside (one SQLite transaction), so concurrent calls get offsets in call order. */
  async append(messages: Uint8Array[]): Promise<number[]> {
    this.assertOpen();
    checkAppendable(messages);
    const first = this.end;
    this.appendAll(first, messages);
    this.end = first + messages.length;
    if (messages.length > 0) for (const subscription of this.subscriptions) subscription.wake();
    return messages.map((_, i) => first + i);
  }

  /** The solo log has no queue to jump: the same as append(). */
  appendControl(messages: Uint8Array[]): Promise<number[]> {
    return this.append(messages);
  }

  async subscribe(fromOffset: number, handler: (records: OrderedRecord[]) => Promise<void>): Promise<Subscription> {
    this.assertOpen();
    if (!Number.isSafeInteger(fromOffset) || fromOffset < 0) throw new Error(`invalid fromOffset ${fromOffset}`);
    if (fromOffset > this.end) {
      throw new Error(`solo log: cannot resume at offset ${fromOffset}, the log holds offsets 0..${this.end - 1}`);
    }
    const subscription = new SoloSubscription((from) => this.readBatch(from), fromOffset, handler,
      () => this.subscriptions.delete(subscription));
    this.subscriptions.add(subscription);
    return subscription;
  }

  async endOffset(): Promise<number> {
    this.assertOpen();
    return this.end;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.subscriptions].map((subscription) => subscription.stop()));
    this.db.close();
  }

  private readBatch(from: number): OrderedRecord[] {
    const records: OrderedRecord[] = [];
    let bytes = 0;
    for (const row of this.readFrom.iterate(from, MAX_BATCH_RECORDS)) {
      // Rows are written without gaps; a gap means the file was altered, and skipping it would fork this member.
      if (row.offset !== from + records.length) {
        throw new Error(`solo log: offset ${from + records.length} is missing (next found: ${row.offset})`);
      }
      records.push(row.time === null ? { offset: row.offset, bytes: row.bytes } : { offset: row.offset, bytes: row.bytes, time: row.time });
      bytes += row.bytes.length;
      if (bytes >= MAX_BATCH_BYTES) break;
    }
    return records;
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('SoloOrderer is closed');
  }
}

/** One subscriber's delivery loop: read a batch, await the handler, repeat; sleep at the end of the log until woken. */
class SoloSubscription implements Subscription {
  readonly done: Promise<void>;
  private stopped = false;
  private wakeUp: (() => void) | undefined;

  constructor(private readonly read: (from: number) => OrderedRecord[], fromOffset: number,
    private readonly handler: (records: OrderedRecord[]) => Promise<void>, onEnd: () => void) {
    this.done = this.run(fromOffset).finally(onEnd);
    this.done.catch(() => {}); // a caller that only uses stop() must not get an unhandled rejection
  }

  /** Called after an append, and by stop(). */
  wake(): void {
    this.wakeUp?.();
    this.wakeUp = undefined;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake();
    await this.done.catch(() => {});
  }

  private async run(fromOffset: number): Promise<void> {
    await Promise.resolve(); // the handler never runs inside subscribe() itself
    let next = fromOffset;
    while (!this.stopped) {
      const records = this.read(next);
      if (records.length === 0) {
        // Reading and arming the wake-up happen in one synchronous step, so no append can slip between them.
        await new Promise<void>((resolve) => { this.wakeUp = resolve; });
        continue;
      }
      await this.handler(records);
      next = records[records.length - 1]!.offset + 1;
    }
  }
}
