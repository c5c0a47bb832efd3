import type Database from 'better-sqlite3';
import type { Worker } from 'node:worker_threads';
import { startWorker } from '../../worker.ts';
import {
  CommitAbortedError,
  VersionConflictError,
  type AnchorMark,
  type HistoryQuery,
  type IndexTerm,
  type KeyEntry,
  type NewKey,
  type ResourceStore,
  type StoreQuery,
  type StoredVersion,
  type TermClause,
  type TypedTerm,
  type UnanchoredVersion,
  type VersionWrite,
} from '../../vault/store.ts';
import { KeyErasedError } from '../../vault/data-keys.ts';
import { openDatabase } from './schema.ts';
import { SqliteWriter, type KeyOperation } from './sqlite-writer.ts';
import type { WriterReply, WriterRequest } from './writer-protocol.ts';

interface OutboxRow {
  seq: number;
  type: string;
  id: string;
  version: number;
  last_updated: string;
  deleted: number;
  digest: string | null;
  patient_token: string | null;
  resource_token: string | null;
  link_tokens: string | null;
  erased_patient_token: string | null;
}

interface VersionRow extends OutboxRow {
  content: Buffer | null;
  salt: Buffer | null;
  key_id: string | null;
  anchor_block: number | null;
  anchor_envelope: number | null;
  anchor_entry: number | null;
}

/** A version read as current state, with its pointer (HEAD_COLUMNS). */
interface HeadRow extends VersionRow {
  head_mac: string | null;
  head_hidden: number;
  head_superseded: number;
}

interface KeyRow {
  key_id: string;
  created_at: string;
  master_key_id: string | null;
  wrapped: Buffer | null;
  erased_at: string | null;
}

function toKeyEntry(row: KeyRow): KeyEntry {
  return { keyId: row.key_id, createdAt: row.created_at, masterKeyId: row.master_key_id, wrapped: row.wrapped, erasedAt: row.erased_at };
}

const OUTBOX_COLUMNS =
  'v.seq, v.type, v.id, v.version, v.last_updated, v.deleted, v.digest, v.patient_token, v.resource_token, v.link_tokens, v.erased_patient_token';
const VERSION_COLUMNS = `${OUTBOX_COLUMNS}, v.content, v.salt, v.key_id, v.anchor_block, v.anchor_envelope, v.anchor_entry`;

function toUnanchored(row: OutboxRow): UnanchoredVersion {
  return {
    seq: row.seq,
    type: row.type,
    id: row.id,
    versionId: row.version,
    lastUpdated: row.last_updated,
    deleted: row.deleted === 1,
    digest: row.digest,
    ...(row.patient_token !== null && { patientToken: row.patient_token }),
    ...(row.resource_token !== null && { resourceToken: row.resource_token }),
    ...(row.link_tokens !== null && { linkTokens: JSON.parse(row.link_tokens) as string[] }),
    ...(row.erased_patient_token !== null && { erasedPatientToken: row.erased_patient_token }),
  };
}

function toStored(row: VersionRow): StoredVersion {
  return {
    ...toUnanchored(row),
    content: row.content,
    ...(row.salt !== null && { salt: row.salt }),
    ...(row.key_id !== null && { keyId: row.key_id }),
    ...(row.anchor_block !== null && {
      anchor: { blockNumber: row.anchor_block, envelopeIndex: row.anchor_envelope!, entryIndex: row.anchor_entry! },
    }),
  };
}

/**
 * The pointer `c` of a version `v` read as current state. Superseded: a newer version of the resource exists
 * (a batch commits in one transaction, so any newer version means the pointer was moved back); one probe of
 * the (type, id, version) index.
 */
const HEAD_COLUMNS = `c.mac AS head_mac, c.deleted AS head_hidden,
  EXISTS (SELECT 1 FROM versions n WHERE n.type = v.type AND n.id = v.id AND n.version > v.version) AS head_superseded`;

function toCurrent(row: HeadRow): StoredVersion {
  return { ...toStored(row), head: { mac: row.head_mac, hidden: row.head_hidden !== 0, superseded: row.head_superseded !== 0 } };
}

const BOUND_SQL = { gt: '>', ge: '>=', lt: '<', le: '<=' } as const;

/** See selectiveClause. */
const DRIVER_LIMIT = 2000;

/** Terms of one clause: parameters are type, param, then the values. */
function termMatch(clause: TermClause): string {
  return `t.type = ? AND t.param = ? AND t.value IN (${clause.anyOf.map(() => '?').join(', ')})`;
}

/**
 * The embedded default store: one SQLite file. Reads run on the main thread's connection; batches are
 * committed by a writer thread (its own connection) in submission order, so the fsync of one bundle overlaps
 * the processing of the next. `inlineWriter` commits on the calling thread instead (tools, crash tests).
 */
export class SqliteStore implements ResourceStore {
  readonly pipelinedCommits: boolean;
  private db!: Database.Database;
  private statements!: ReturnType<SqliteStore['prepare']>;
  private readonly statementCache = new Map<string, Database.Statement>();
  private inline?: SqliteWriter;
  private thread?: Worker;
  private nextId = 1;
  private readonly pending = new Map<
    number,
    { resolve: (result?: number | boolean) => void; reject: (e: Error) => void; kind: WriterRequest['kind'] }
  >();

  constructor(
    private readonly file: string,
    private readonly options: { inlineWriter?: boolean } = {},
  ) {
    this.pipelinedCommits = !options.inlineWriter;
  }

  /** The inline writer (only with `inlineWriter`), for fault-injection tests. */
  get inlineWriter(): SqliteWriter | undefined {
    return this.inline;
  }

  async init(): Promise<void> {
    this.db = openDatabase(this.file);
    this.statements = this.prepare();
    if (this.options.inlineWriter) {
      this.inline = new SqliteWriter(this.db);
      return;
    }
    this.thread = startWorker(new URL('./writer-thread.ts', import.meta.url), { file: this.file });
    this.thread.on('message', (reply: WriterReply) => this.settle(reply));
    this.thread.on('error', (e) => this.failAll(e));
    this.thread.on('exit', () => this.failAll(new Error('the vault writer thread stopped')));
    // Do not keep the process alive for an idle writer.
    this.thread.unref();
  }

  private settle(reply: WriterReply): void {
    const waiter = this.pending.get(reply.id);
    if (!waiter) return;
    this.pending.delete(reply.id);
    if (this.pending.size === 0) this.thread!.unref();
    if (!reply.error) return waiter.resolve(reply.result);
    // A failed key or anchor write does not poison the batch queue; a failed batch does, until `resume`.
    if (waiter.kind !== 'commit') return waiter.reject(new Error(`vault ${waiter.kind} write failed (${reply.error.message})`));
    if (!reply.error.aborted) this.thread!.postMessage({ kind: 'resume' } satisfies WriterRequest);
    if (reply.error.conflict) waiter.reject(new VersionConflictError(reply.error.conflict.type, reply.error.conflict.id));
    else if (reply.error.erased) waiter.reject(new KeyErasedError(reply.error.erased.keyId, reply.error.erased.erasedAt));
    else if (reply.error.aborted) waiter.reject(new CommitAbortedError());
    else waiter.reject(new Error(`vault write failed (${reply.error.message})`));
  }

  private failAll(error: Error): void {
    for (const waiter of this.pending.values()) waiter.reject(error);
    this.pending.clear();
  }

  private prepare() {
    const db = this.db;
    return {
      current: db.prepare(
        `SELECT ${VERSION_COLUMNS}, ${HEAD_COLUMNS} FROM current c JOIN versions v ON v.seq = c.seq WHERE c.type = ? AND c.id = ?`,
      ),
      indexTerms: db.prepare('SELECT param, value FROM terms WHERE type = ? AND id = ?'),
      version: db.prepare(`SELECT ${VERSION_COLUMNS} FROM versions v WHERE v.type = ? AND v.id = ? AND v.version = ?`),
      // Answered from the partial index versions_unanchored: proportional to the backlog, not to the vault.
      unanchored: db.prepare(
        `SELECT ${OUTBOX_COLUMNS} FROM versions v WHERE v.anchor_block IS NULL AND v.seq > ? ORDER BY v.seq LIMIT ?`,
      ),
      getKey: db.prepare('SELECT * FROM data_keys WHERE key_id = ?'),
      listKeys: db.prepare(
        'SELECT * FROM data_keys WHERE erased_at IS NULL AND master_key_id <> ? AND key_id > ? ORDER BY key_id LIMIT ?',
      ),
    };
  }

  async close(): Promise<void> {
    if (this.thread) {
      const exited = new Promise((resolve) => this.thread!.once('exit', resolve));
      this.thread.ref();
      this.thread.postMessage({ kind: 'close' } satisfies WriterRequest);
      await exited;
    }
    this.db?.close();
  }

  async ping(): Promise<boolean> {
    return this.db.prepare('SELECT 1 AS ok').get() !== undefined;
  }

  async commit(writes: VersionWrite[]): Promise<void> {
    if (writes.length === 0) return;
    if (this.inline) {
      this.inline.apply(writes);
      return;
    }
    const id = this.nextId++;
    await this.post({ kind: 'commit', id, writes });
  }

  private post(request: Extract<WriterRequest, { id: number }>): Promise<number | boolean | undefined> {
    return new Promise((resolve, reject) => {
      this.pending.set(request.id, { resolve, reject, kind: request.kind });
      // Keep the process alive while a request is outstanding, and only then.
      this.thread!.ref();
      this.thread!.postMessage(request satisfies WriterRequest);
    });
  }

  /** Data-key writes and index rewrites go through the one writing connection (the writer thread unless inline). */
  private async keyOperation(operation: KeyOperation): Promise<number | boolean> {
    if (this.inline) return this.inline.applyKeyOperation(operation);
    return (await this.post({ kind: 'key', id: this.nextId++, operation })) as number | boolean;
  }

  async markAnchored(marks: AnchorMark[]): Promise<void> {
    if (marks.length === 0) return;
    if (this.inline) return this.inline.markAnchored(marks);
    await this.post({ kind: 'anchor', id: this.nextId++, marks });
  }

  async unanchored(query: { afterSeq?: number; limit: number }): Promise<UnanchoredVersion[]> {
    if (query.limit <= 0) return []; // LIMIT -1 would mean no limit
    const rows = this.statements.unanchored.all(query.afterSeq ?? 0, query.limit) as OutboxRow[];
    return rows.map(toUnanchored);
  }

  async current(type: string, id: string): Promise<StoredVersion | undefined> {
    const row = this.statements.current.get(type, id) as HeadRow | undefined;
    return row && toCurrent(row);
  }

  async indexTerms(type: string, id: string): Promise<IndexTerm[]> {
    return this.statements.indexTerms.all(type, id) as IndexTerm[];
  }

  async version(type: string, id: string, versionId: number): Promise<StoredVersion | undefined> {
    const row = this.statements.version.get(type, id, versionId) as VersionRow | undefined;
    return row && toStored(row);
  }

  /** WHERE clause over `current c` for a query; term clauses become semi-joins on the terms table. */
  /** WHERE clause over `current c` for a query; term clauses (but `skip`) become semi-joins on the terms table. */
  private where(query: StoreQuery, withCursor: boolean, skip?: TermClause): { sql: string; params: unknown[] } {
    const parts = ['c.type = ?', 'c.deleted = 0'];
    const params: unknown[] = [query.type];
    if (query.ids) {
      parts.push(`c.id IN (${query.ids.map(() => '?').join(', ')})`);
      params.push(...query.ids);
    }
    for (const clause of query.clauses) {
      if (clause === skip) continue;
      // Behind a driver the other clauses are probed per candidate (index lookups); without one, a clause is
      // a set the planner builds once.
      parts.push(
        skip
          ? `${clause.negate ? 'NOT ' : ''}EXISTS (SELECT 1 FROM terms t WHERE ${termMatch(clause)} AND t.id = c.id)`
          : `c.id ${clause.negate ? 'NOT IN' : 'IN'} (SELECT t.id FROM terms t WHERE ${termMatch(clause)})`,
      );
      params.push(query.type, clause.param, ...clause.anyOf);
    }
    for (const bound of query.lastUpdated) {
      parts.push(`c.last_updated ${BOUND_SQL[bound.op]} ?`);
      params.push(bound.value);
    }
    if (withCursor && query.afterId !== undefined) {
      parts.push('c.id > ?');
      params.push(query.afterId);
    }
    return { sql: parts.join(' AND '), params };
  }

  /** Prepared statements by SQL text: queries differ only in the number of clauses and values. */
  private statement(sql: string): Database.Statement {
    let stmt = this.statementCache.get(sql);
    if (!stmt) {
      if (this.statementCache.size >= 256) this.statementCache.delete(this.statementCache.keys().next().value!);
      stmt = this.db.prepare(sql);
      this.statementCache.set(sql, stmt);
    }
    return stmt;
  }

  /**
   * The term clause with the fewest matches when that is at most DRIVER_LIMIT (probed with capped counts).
   * SQLite cannot know that `patient=X` matches 10 rows while `code=Y` matches 50,000; left alone it walks
   * the whole type in id order. Driving from the selective clause keeps a search proportional to its
   * matches, not to the vault.
   */
  private selectiveClause(query: StoreQuery): TermClause | undefined {
    if (query.ids) return undefined;
    let best: TermClause | undefined;
    let fewest = DRIVER_LIMIT + 1;
    for (const clause of query.clauses) {
      if (clause.negate) continue;
      const { n } = this.statement(`SELECT COUNT(*) AS n FROM (SELECT 1 FROM terms t WHERE ${termMatch(clause)} LIMIT ${DRIVER_LIMIT + 1})`)
        .get(query.type, clause.param, ...clause.anyOf) as { n: number };
      if (n < fewest) {
        best = clause;
        fewest = n;
      }
    }
    return best;
  }

  /** FROM … WHERE for a query: from the selective clause's terms when there is one, else from `current`. */
  private source(query: StoreQuery, withCursor: boolean): { from: string; sql: string; params: unknown[] } {
    const driver = this.selectiveClause(query);
    const { sql, params } = this.where(query, withCursor, driver);
    if (!driver) return { from: 'current c', sql, params };
    return {
      // CROSS JOIN fixes the join order: the driver's matches first.
      from: `(SELECT DISTINCT t.id AS id FROM terms t WHERE ${termMatch(driver)}) d CROSS JOIN current c ON c.type = ? AND c.id = d.id`,
      sql,
      params: [query.type, driver.param, ...driver.anyOf, query.type, ...params],
    };
  }

  async search(query: StoreQuery): Promise<StoredVersion[]> {
    const { from, sql, params } = this.source(query, true);
    const rows = this.statement(
      `SELECT ${VERSION_COLUMNS}, ${HEAD_COLUMNS} FROM ${from} CROSS JOIN versions v ON v.seq = c.seq WHERE ${sql} ORDER BY c.id LIMIT ?`,
    ).all(...params, query.limit) as HeadRow[];
    return rows.map(toCurrent);
  }

  async count(query: StoreQuery): Promise<number> {
    const { from, sql, params } = this.source(query, false);
    const row = this.statement(`SELECT COUNT(*) AS n FROM ${from} WHERE ${sql}`).get(...params) as { n: number };
    return row.n;
  }

  async insertKey(key: NewKey): Promise<KeyEntry> {
    return (await this.insertKeys([key]))[0];
  }

  async insertKeys(keys: NewKey[]): Promise<KeyEntry[]> {
    await this.keyOperation({ name: 'insertKeys', keys });
    return Promise.all(keys.map(async (k) => (await this.getKey(k.keyId))!));
  }

  async getKey(keyId: string): Promise<KeyEntry | undefined> {
    const row = this.statements.getKey.get(keyId) as KeyRow | undefined;
    return row && toKeyEntry(row);
  }

  async listKeys(query: { notWrappedUnder: string; afterKeyId?: string; limit: number }): Promise<KeyEntry[]> {
    const rows = this.statements.listKeys.all(query.notWrappedUnder, query.afterKeyId ?? '', query.limit) as KeyRow[];
    return rows.map(toKeyEntry);
  }

  async rewrapKey(keyId: string, fromMasterKeyId: string, next: { masterKeyId: string; wrapped: Uint8Array }): Promise<boolean> {
    return (await this.keyOperation({ name: 'rewrapKey', keyId, fromMasterKeyId, ...next })) as boolean;
  }

  async eraseKey(keyId: string, erasedAt: string): Promise<{ resources: number }> {
    return { resources: (await this.keyOperation({ name: 'eraseKey', keyId, erasedAt })) as number };
  }

  async replaceTerms(type: string, id: string, versionId: number, terms: IndexTerm[]): Promise<boolean> {
    return (await this.keyOperation({ name: 'replaceTerms', type, id, versionId, terms })) as boolean;
  }

  async removeTerms(terms: TypedTerm[]): Promise<void> {
    if (terms.length > 0) await this.keyOperation({ name: 'removeTerms', terms });
  }

  async history(query: HistoryQuery): Promise<StoredVersion[]> {
    const { where, params } = historyWhere(query, true);
    const rows = this.db
      .prepare(`SELECT ${VERSION_COLUMNS} FROM versions v ${where} ORDER BY v.seq DESC LIMIT ?`)
      .all(...params, query.limit) as VersionRow[];
    return rows.map(toStored);
  }

  async countHistory(query: HistoryQuery): Promise<number> {
    const { where, params } = historyWhere(query, false);
    return (this.db.prepare(`SELECT COUNT(*) AS n FROM versions v ${where}`).get(...params) as { n: number }).n;
  }
}

/** WHERE of a history query (the seq cursor only when paging). */
function historyWhere(query: HistoryQuery, withCursor: boolean): { where: string; params: unknown[] } {
  const parts: string[] = [];
  const params: unknown[] = [];
  if (query.type !== undefined) {
    parts.push('v.type = ?');
    params.push(query.type);
  }
  if (query.id !== undefined) {
    parts.push('v.id = ?');
    params.push(query.id);
  }
  if (query.since !== undefined) {
    parts.push('v.last_updated >= ?');
    params.push(query.since);
  }
  if (withCursor && query.beforeSeq !== undefined) {
    parts.push('v.seq < ?');
    params.push(query.beforeSeq);
  }
  return { where: parts.length ? `WHERE ${parts.join(' AND ')}` : '', params };
}
