/**
 * FHIR semantics over the ResourceStore port: versions, ids, meta, validation, digests, index terms, and
 * all-or-nothing write sessions. Handlers talk to this, never to a store directly.
 */
import { randomUUID } from 'node:crypto';
import { createVersionChecker, type VersionChecker } from './checks/pool.ts';
import {
  CommitAbortedError,
  isErasable,
  VersionConflictError,
  type HistoryQuery,
  type IndexTerm,
  type ResourceStore,
  type StoreQuery,
  type StoredVersion,
  type VersionRecord,
  type VersionWrite,
} from '../vault/store.ts';
import { KeyErasedError } from '../vault/data-keys.ts';
import { stringifyFhirJson } from './json.ts';
import { errors, FhirError } from './outcome.ts';
import { parseSearch } from './search/query.ts';
import { extractTerms } from './search/terms.ts';
import { isKnownResourceType } from './validation/index.ts';
import { COMPARTMENT_PARAM, compartmentTerm, compartmentTypes, patientCompartments } from './compartment.ts';

export type FhirResource = Record<string, unknown> & { resourceType: string; id?: string; meta?: Record<string, unknown> };

/** A version as handlers see it: the stored record plus its serialized JSON. */
export interface ResourceVersion {
  type: string;
  id: string;
  versionId: number;
  lastUpdated: string;
  deleted: boolean;
  /** Serialized resource (absent for deletions). */
  json?: string;
}

export const ID_PATTERN = /^[A-Za-z0-9\-.]{1,64}$/;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function assertResourceType(type: string): void {
  if (!isKnownResourceType(type)) throw errors.notFound(`'${type}' is not a FHIR R4 resource type`);
}

export function assertId(id: string): void {
  if (!ID_PATTERN.test(id)) throw errors.badRequest(`'${id.slice(0, 70)}' is not a valid resource id`);
}

function toVersion(stored: VersionRecord): ResourceVersion {
  return {
    type: stored.type,
    id: stored.id,
    versionId: stored.versionId,
    lastUpdated: stored.lastUpdated,
    deleted: stored.deleted,
    json: stored.content ? decoder.decode(stored.content) : undefined,
  };
}

/** Puts id and meta first and stamps versionId/lastUpdated, keeping the client's other meta. */
function stamp(resource: FhirResource, id: string, versionId: number, lastUpdated: string): FhirResource {
  const { resourceType, id: _ignored, meta, ...rest } = resource;
  return {
    resourceType,
    id,
    meta: { ...(meta ?? {}), versionId: String(versionId), lastUpdated },
    ...rest,
  };
}

interface Staged {
  write: VersionWrite;
  version: ResourceVersion;
  /** Where the write came from, for error locations (e.g. `Bundle.entry[3]`). */
  label?: string;
}

export interface SearchPage {
  versions: ResourceVersion[];
  total?: number;
  /** Cursor for the next page, when there may be one. */
  nextCursor?: string;
  applied: Array<[string, string]>;
}

/** Serialises writers within this process; the store's version check catches writers elsewhere. */
class Mutex {
  private tail: Promise<void> = Promise.resolve();
  async run<T>(fn: () => Promise<T>): Promise<T> {
    const previous = this.tail;
    let release!: () => void;
    this.tail = new Promise((r) => (release = r));
    await previous;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

export class FhirRepository {
  private readonly writeLock = new Mutex();
  /** Submitted batches that are not durable yet, oldest first. */
  private readonly inflight: WriteSession[] = [];

  constructor(
    readonly store: ResourceStore,
    private readonly checker: VersionChecker = createVersionChecker(0),
  ) {}

  async read(type: string, id: string): Promise<ResourceVersion> {
    assertResourceType(type);
    assertId(id);
    const stored = await this.store.current(type, id);
    if (!stored) throw errors.notFound(`${type}/${id} is not known`);
    if (stored.erased) throw erasedError(type, id);
    if (stored.deleted) throw goneError(type, id, stored.versionId);
    return toVersion(stored);
  }

  async vread(type: string, id: string, versionId: string): Promise<ResourceVersion> {
    assertResourceType(type);
    assertId(id);
    if (!/^[1-9]\d{0,15}$/.test(versionId)) throw errors.notFound(`${type}/${id} has no version '${versionId}'`);
    const stored = await this.store.version(type, id, Number(versionId));
    if (!stored) throw errors.notFound(`${type}/${id} has no version ${versionId}`);
    if (stored.erased) throw erasedError(type, id);
    if (stored.deleted) throw goneError(type, id, stored.versionId);
    return toVersion(stored);
  }

  /** `restrict` narrows the query further, e.g. to the patient compartment a token is bound to. */
  async search(
    type: string,
    params: Array<[string, string]>,
    restrict?: (query: StoreQuery) => StoreQuery,
  ): Promise<SearchPage> {
    assertResourceType(type);
    const parsed = parseSearch(type, params);
    const { countOnly, applied } = parsed;
    const query = restrict ? restrict(parsed.query) : parsed.query;
    const total = query.afterId === undefined || countOnly ? await this.store.count(query) : undefined;
    if (countOnly || query.limit === 0) return { versions: [], total, applied };
    const rows = await this.store.search({ ...query, limit: query.limit + 1 });
    const hasMore = rows.length > query.limit;
    const page = hasMore ? rows.slice(0, query.limit) : rows;
    return {
      versions: page.map(toVersion),
      total,
      nextCursor: hasMore ? page[page.length - 1].id : undefined,
      applied,
    };
  }

  /**
   * `Patient/[id]/$everything`: the Patient, then every resource of its compartment type by type (in
   * compartmentTypes() order) and by id within a type, so the cursor `<type index>:<last id>` pages stably.
   */
  async everything(
    patientId: string,
    options: { since?: string; types?: string[]; limit: number; cursor?: { typeIndex: number; afterId: string } },
  ): Promise<{ versions: ResourceVersion[]; nextCursor?: string }> {
    const patient = await this.read('Patient', patientId);
    const types = compartmentTypes().filter((t) => !options.types || options.types.includes(t));
    const since = options.since ? [{ op: 'ge' as const, value: options.since }] : [];
    const versions: ResourceVersion[] = [];
    let { typeIndex, afterId } = options.cursor ?? { typeIndex: 0, afterId: undefined as string | undefined };
    // Position of the last resource returned: the next page starts after it.
    let last = options.cursor && `${options.cursor.typeIndex}:${options.cursor.afterId}`;
    for (; typeIndex < types.length; typeIndex++, afterId = undefined) {
      const type = types[typeIndex];
      const room = options.limit - versions.length;
      const query: StoreQuery =
        type === 'Patient'
          ? { type, ids: [patientId], clauses: [], lastUpdated: since, afterId, limit: room + 1 }
          : { type, clauses: [{ param: COMPARTMENT_PARAM, anyOf: [compartmentTerm(patientId)] }], lastUpdated: since, afterId, limit: room + 1 };
      const rows = type === 'Patient' && !since.length && afterId === undefined ? [patient] : (await this.store.search(query)).filter((r) => !r.erased).map(toVersion);
      if (rows.length > room) {
        versions.push(...rows.slice(0, room));
        if (room > 0) last = `${typeIndex}:${versions[versions.length - 1].id}`;
        return { versions, nextCursor: last };
      }
      versions.push(...rows);
      if (rows.length > 0) last = `${typeIndex}:${rows[rows.length - 1].id}`;
    }
    return { versions };
  }

  /**
   * `Patient/[id]/$erase`: crypto-shreds the patient's data key, after every write already accepted is
   * durable (new writes wait on the lock, then find the key destroyed).
   */
  async erase(patientId: string): Promise<{ resources: number; erasedAt: string }> {
    assertId(patientId);
    if (!isErasable(this.store)) throw errors.notSupported('this vault does not encrypt per patient, so it cannot crypto-shred');
    const store = this.store;
    return this.writeLock.run(async () => {
      await Promise.allSettled(this.inflight.map((s) => s.durable));
      const current = await this.store.current('Patient', patientId);
      if (!current) throw errors.notFound(`Patient/${patientId} is not known`);
      return store.eraseOwner(compartmentTerm(patientId), new Date().toISOString());
    });
  }

  async history(query: HistoryQuery): Promise<{ versions: Array<ResourceVersion & { seq: number }>; nextCursor?: number }> {
    if (query.type) assertResourceType(query.type);
    if (query.id) assertId(query.id);
    const rows = await this.store.history({ ...query, limit: query.limit + 1 });
    const hasMore = rows.length > query.limit;
    const page = hasMore ? rows.slice(0, query.limit) : rows;
    return {
      // Erased versions are left out; the cursor still moves past them.
      versions: page.filter((r) => !r.erased).map((r) => ({ ...toVersion(r), seq: r.seq })),
      nextCursor: hasMore ? page[page.length - 1].seq : undefined,
    };
  }

  /**
   * Runs `fn` with a write session and commits everything it staged in one store batch: all of it becomes
   * visible, or (on any error) none of it. Resolves once the batch is durable.
   *
   * Sessions are serialised by a lock, but when the store applies commits in order (pipelinedCommits) the
   * lock is released as soon as a batch is submitted: the next session sees the submitted batches through
   * the in-flight overlay, and if one of them fails the store aborts every later batch.
   */
  async write<T>(fn: (session: WriteSession) => Promise<T>): Promise<T> {
    let durable: Promise<void> | undefined;
    const result = await this.writeLock.run(async () => {
      const session = new WriteSession(this.store, this.checker, [...this.inflight]);
      const value = await fn(session);
      this.inflight.push(session);
      durable = this.finish(session);
      if (!this.store.pipelinedCommits) await durable;
      return value;
    });
    await durable;
    return result;
  }

  /**
   * Validates and digests the session's versions (on the checker's worker threads), waits for the in-flight
   * sessions it read from, then commits. A failure of a session this one read from aborts this one too.
   */
  private finish(session: WriteSession): Promise<void> {
    const done = (async () => {
      try {
        const failures = await session.check();
        if (failures.length > 0) throw failures[0].error;
        for (const dependency of session.readFrom) {
          if (!(await dependency.durable!.then(() => true, () => false))) {
            throw errors.conflict('an earlier write this request depends on failed; nothing was written; retry the request');
          }
        }
        await session.commit();
      } finally {
        this.inflight.splice(this.inflight.indexOf(session), 1);
      }
    })();
    session.durable = done;
    return done;
  }
}

function erasedError(type: string, id: string): FhirError {
  return errors.gone(`${type}/${id} was erased at the patient's request: its content is destroyed and cannot be recovered`);
}

function goneError(type: string, id: string, versionId: number): FhirError {
  const e = errors.gone(`${type}/${id} was deleted`);
  return new FhirError(e.status, e.issues, { ETag: `W/"${versionId}"` });
}

/** Staged, not yet visible writes with read-your-own-writes for the session's own lookups. */
export class WriteSession {
  private readonly staged = new Map<string, Staged>();
  /** One instant for everything the session writes: a transaction happens at one time. */
  readonly now = new Date().toISOString();
  /** Location recorded with the next staged writes, for error messages (set by bundle processing). */
  label?: string;
  /** In-flight sessions whose writes this session read: it must not commit if one of them fails. */
  readonly readFrom = new Set<WriteSession>();
  /** Settles when this session's batch is durable (or failed); set by the repository when submitted. */
  durable?: Promise<void>;

  /** `predecessors`: submitted sessions not yet durable, oldest first; their writes count as current. */
  constructor(
    private readonly store: ResourceStore,
    private readonly checker: VersionChecker,
    private readonly predecessors: WriteSession[] = [],
  ) {}

  /** The newest write to `key` not yet in the store: this session's own, else the latest in-flight one. */
  private overlay(key: string): Staged | undefined {
    const own = this.staged.get(key);
    if (own) return own;
    for (let i = this.predecessors.length - 1; i >= 0; i--) {
      const theirs = this.predecessors[i].staged.get(key);
      if (theirs) {
        this.readFrom.add(this.predecessors[i]);
        return theirs;
      }
    }
    return undefined;
  }

  /** Every write of this session and its predecessors of one type, newest per resource, with its session. */
  private overlayWrites(type: string): Map<string, { staged: Staged; session: WriteSession }> {
    const all = new Map<string, { staged: Staged; session: WriteSession }>();
    for (const session of [...this.predecessors, this]) {
      for (const [key, staged] of session.staged) if (staged.write.record.type === type) all.set(key, { staged, session });
    }
    return all;
  }

  private async currentVersion(type: string, id: string): Promise<ResourceVersion | undefined> {
    const pending = this.overlay(`${type}/${id}`);
    if (pending) return pending.version;
    const stored = await this.store.current(type, id);
    return stored && toVersion(stored);
  }

  /** The current state of a resource as this session sees it (staged writes included). */
  async current(type: string, id: string): Promise<ResourceVersion | undefined> {
    assertResourceType(type);
    assertId(id);
    return this.currentVersion(type, id);
  }

  private stage(type: string, id: string, resource: FhirResource | null, previous: number): ResourceVersion {
    const key = `${type}/${id}`;
    if (this.staged.has(key)) {
      throw errors.badRequest(`${key} is written more than once in one transaction`);
    }
    const versionId = previous + 1;
    let record: VersionRecord;
    let terms: IndexTerm[] = [];
    let json: string | undefined;
    // A resource in a patient compartment is sealed under that patient's key (the first one, by definition order).
    let owner: string | undefined;
    if (resource) {
      const stamped = stamp(resource, id, versionId, this.now);
      json = stringifyFhirJson(stamped);
      const patients = patientCompartments(type, stamped);
      terms = extractTerms(type, stamped);
      for (const patient of patients) terms.push({ param: COMPARTMENT_PARAM, value: compartmentTerm(patient) });
      if (patients.length > 0) owner = compartmentTerm(patients[0]);
      // The digest is set by check(), with validation, before the batch is committed.
      record = { type, id, versionId, lastUpdated: this.now, deleted: false, content: encoder.encode(json), digest: null };
    } else {
      record = { type, id, versionId, lastUpdated: this.now, deleted: true, content: null, digest: null };
    }
    const version: ResourceVersion = { type, id, versionId, lastUpdated: this.now, deleted: !resource, json };
    this.staged.set(key, { write: { record, terms, expectedVersion: previous, owner }, version, label: this.label });
    return version;
  }

  /** Creates a resource under a new server-assigned id (any id in the body is replaced). */
  async create(resource: FhirResource, id: string = randomUUID()): Promise<ResourceVersion> {
    assertResourceType(resource.resourceType);
    return this.stage(resource.resourceType, id, resource, 0);
  }

  /** Updates (or creates with the client's id). `ifMatch` is the version the client expects to replace. */
  async update(
    resource: FhirResource,
    id: string,
    ifMatch?: number,
  ): Promise<{ version: ResourceVersion; created: boolean }> {
    assertResourceType(resource.resourceType);
    assertId(id);
    const current = await this.currentVersion(resource.resourceType, id);
    if (ifMatch !== undefined && current?.versionId !== ifMatch) {
      throw errors.preconditionFailed(
        `If-Match expects version ${ifMatch} of ${resource.resourceType}/${id}, the current version is ${current?.versionId ?? 'none'}`,
      );
    }
    const created = !current || current.deleted;
    return { version: this.stage(resource.resourceType, id, resource, current?.versionId ?? 0), created };
  }

  /** Deletes; returns undefined when the resource never existed, the current state if already deleted. */
  async delete(type: string, id: string, ifMatch?: number): Promise<ResourceVersion | undefined> {
    assertResourceType(type);
    assertId(id);
    const current = await this.currentVersion(type, id);
    if (ifMatch !== undefined && current?.versionId !== ifMatch) {
      throw errors.preconditionFailed(`If-Match expects version ${ifMatch} of ${type}/${id}`);
    }
    if (!current || current.deleted) return current;
    return this.stage(type, id, null, current.versionId);
  }

  /**
   * Ids of current resources matching a search query (at most `limit`), seeing this session's staged
   * writes: used by conditional create/update/delete and conditional references.
   */
  async findMatches(type: string, queryString: string, limit = 2): Promise<string[]> {
    assertResourceType(type);
    const params = [...new URLSearchParams(queryString)];
    if (params.length === 0) throw errors.badRequest(`a conditional ${type} query must have criteria`);
    const { query } = parseSearch(type, params);
    const pending = this.overlayWrites(type);
    const stored = await this.store.search({ ...query, afterId: undefined, limit: limit + pending.size });
    const ids = new Set<string>();
    for (const r of stored) if (!pending.has(`${type}/${r.id}`)) ids.add(r.id);
    for (const { staged, session } of pending.values()) {
      if (!matchesStaged(query, staged.write)) continue;
      ids.add(staged.write.record.id);
      if (session !== this) this.readFrom.add(session);
    }
    return [...ids].slice(0, limit);
  }

  /**
   * Validates and digests every staged version not checked yet. Returns the failures (422s located by their
   * label); failed versions are dropped from the session, so the rest can still commit (batches).
   */
  async check(): Promise<Array<{ label?: string; error: FhirError }>> {
    const toCheck = [...this.staged.entries()].filter(([, s]) => !s.write.record.deleted && s.write.record.digest === null);
    const checks = await this.checker.check(toCheck.map(([, s]) => s.version.json!));
    const failures: Array<{ label?: string; error: FhirError }> = [];
    toCheck.forEach(([key, staged], i) => {
      const { digest, issues } = checks[i];
      if (digest !== undefined) {
        staged.write.record.digest = digest;
        return;
      }
      const error = errors.unprocessable(issues);
      failures.push({ label: staged.label, error: staged.label ? error.within(staged.label) : error });
      this.staged.delete(key);
    });
    return failures;
  }

  async commit(): Promise<void> {
    if (this.staged.size === 0) return;
    try {
      await this.store.commit([...this.staged.values()].map((s) => s.write));
    } catch (e) {
      if (e instanceof VersionConflictError) {
        throw errors.conflict(`${e.type}/${e.id} was changed concurrently; retry the request`);
      }
      if (e instanceof CommitAbortedError) throw errors.conflict(`${e.message}; retry the request`);
      if (e instanceof KeyErasedError) {
        throw errors.gone('the patient compartment this data belongs to was erased at the patient\'s request; it accepts no new data');
      }
      throw e;
    }
  }
}

function matchesStaged(query: StoreQuery, write: VersionWrite): boolean {
  const r = write.record;
  if (r.deleted) return false;
  if (query.ids && !query.ids.includes(r.id)) return false;
  for (const b of query.lastUpdated) {
    const ok =
      b.op === 'gt' ? r.lastUpdated > b.value
      : b.op === 'ge' ? r.lastUpdated >= b.value
      : b.op === 'lt' ? r.lastUpdated < b.value
      : r.lastUpdated <= b.value;
    if (!ok) return false;
  }
  return query.clauses.every(
    (c) => write.terms.some((t) => t.param === c.param && c.anyOf.includes(t.value)) !== (c.negate === true),
  );
}
