/**
 * A write session: staged versions (stamped, indexed, sealed under their owner's key) that become visible
 * together at commit, with read-your-own-writes and the in-flight sessions' writes for its own lookups.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { VersionChecker } from './checks/pool.ts';
import {
  CommitAbortedError,
  VersionConflictError,
  type IndexTerm,
  type ResourceStore,
  type StoreQuery,
  type VersionRecord,
  type VersionWrite,
} from '../vault/store.ts';
import { KeyErasedError } from '../vault/data-keys.ts';
import { COMMITMENT_SALT_BYTES } from '../ledger/canonical-json.ts';
import { stringifyFhirJson } from './json.ts';
import { errors, type FhirError } from './outcome.ts';
import { assertId, assertResourceType, parseVersion, toVersion, type FhirResource, type ResourceVersion } from './resource-version.ts';
import { parseSearch } from './search/query.ts';
import { MAX_SCAN, resolveChains, scanMatches, tooCostly } from './search/scan.ts';
import { indexTerms } from './search/terms.ts';
import { compartmentTerm, patientCompartments } from './compartment.ts';

/**
 * AuditEvents are the hospital's access records, not a patient's data: they are in no patient compartment
 * (not in `$everything`, not under `patient/` scopes, not in the ledger's patient locator) and all are
 * sealed under one audit key (an owner no resource id can spell), so erasing a patient keeps the record
 * of who accessed them. Compliance finds them by patient with `AuditEvent?patient=` / `entity=`.
 */
const AUDIT_RECORD_TYPE = 'AuditEvent';
const AUDIT_KEY_OWNER = 'AuditEvent/_access-log';

/** The patients whose compartment holds a resource version (none for an access record). */
function compartmentsOf(type: string, resource: FhirResource): string[] {
  return type === AUDIT_RECORD_TYPE ? [] : patientCompartments(type, resource);
}

/** A stored resource's index terms as a write stages them (index key rotation re-derives them so). */
export function resourceIndexTerms(type: string, resource: FhirResource): IndexTerm[] {
  return indexTerms(type, resource, compartmentsOf(type, resource));
}

const encoder = new TextEncoder();

/** What a caller may match (see findMatches). */
export interface MatchScope {
  /** The narrowing for searching `type` (e.g. to a patient compartment); throws when the caller may not. */
  restrictFor(type: string): ((query: StoreQuery) => StoreQuery) | undefined;
  /** Whether a decrypted candidate is one the caller may see. */
  canSee(v: ResourceVersion, resource: () => Record<string, unknown>): boolean;
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

  /**
   * `replaced`: the version a deletion replaces, whose compartment names the tombstone's owner (the vault
   * gives a patient's tombstones its locator tokens). `erases`: see VersionWrite.erases.
   */
  private stage(
    type: string,
    id: string,
    resource: FhirResource | null,
    previous: number,
    { replaced, erases }: { replaced?: ResourceVersion; erases?: string } = {},
  ): ResourceVersion {
    const key = `${type}/${id}`;
    if (this.staged.has(key)) {
      throw errors.badRequest(`one ${type} is written more than once in one transaction`);
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
      const patients = compartmentsOf(type, stamped);
      terms = indexTerms(type, stamped, patients);
      owner = type === AUDIT_RECORD_TYPE ? AUDIT_KEY_OWNER : patients.length > 0 ? compartmentTerm(patients[0]) : undefined;
      // The commitment (digest) is computed by check(), with validation, under a salt drawn per version.
      const salt = randomBytes(COMMITMENT_SALT_BYTES);
      record = { type, id, versionId, lastUpdated: this.now, deleted: false, content: encoder.encode(json), digest: null, salt };
    } else {
      record = { type, id, versionId, lastUpdated: this.now, deleted: true, content: null, digest: null };
      const patients = replaced?.json ? compartmentsOf(type, parseVersion(replaced) as FhirResource) : [];
      owner = patients.length > 0 ? compartmentTerm(patients[0]) : undefined;
    }
    const version: ResourceVersion = { type, id, versionId, lastUpdated: this.now, deleted: !resource, json };
    this.staged.set(key, { write: { record, terms, expectedVersion: previous, owner, ...(erases && { erases }) }, version, label: this.label });
    return version;
  }

  /**
   * Creates a resource under a new server-assigned id (any id in the body is replaced). `erases`: only for the
   * erasure record (audit/erasure.ts), see VersionWrite.erases.
   */
  async create(resource: FhirResource, id: string = randomUUID(), { erases }: { erases?: string } = {}): Promise<ResourceVersion> {
    assertResourceType(resource.resourceType);
    return this.stage(resource.resourceType, id, resource, 0, { erases });
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
      throw errors.preconditionFailed(`If-Match names another version than the current one (${current?.versionId ?? 'none'})`);
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
      throw errors.preconditionFailed('If-Match names another version than the current one');
    }
    if (!current || current.deleted) return current;
    return this.stage(type, id, null, current.versionId, { replaced: current });
  }

  /**
   * Ids of current resources matching a search query (at most `limit`), seeing this session's staged
   * writes: used by conditional create/update/delete and conditional references. The match runs inside the
   * caller's `scope`: its narrowing of the type and of any chained type (which throws when the caller may not
   * search one), and a re-check of each decrypted match, so a forged index term matches nothing.
   */
  async findMatches(type: string, queryString: string, scope: MatchScope, limit = 2): Promise<string[]> {
    assertResourceType(type);
    const restrict = scope.restrictFor(type);
    const params = [...new URLSearchParams(queryString)];
    if (params.length === 0) throw errors.badRequest(`a conditional ${type} query must have criteria`);
    const parsed = parseSearch(type, params);
    // Chained parameters see the stored data only (not this session's staged writes).
    const resolved = await resolveChains(this.store, parsed, { restrictFor: scope.restrictFor });
    const query = resolved && restrict ? restrict(resolved) : resolved;
    const pending = this.overlayWrites(type);
    const ids = new Set<string>();
    if (query) {
      const filter = parsed.postFilter;
      const result = await scanMatches(this.store, { ...query, afterId: undefined }, filter, undefined, MAX_SCAN, (row, resource) => {
        if (!pending.has(`${type}/${row.id}`) && scope.canSee(toVersion(row), () => resource ?? parseVersion(row))) ids.add(row.id);
        return ids.size < limit;
      });
      if (!result.exhausted && !result.stopped) throw tooCostly(`the conditional ${type} query needs to check more than ${MAX_SCAN} candidates; narrow it`);
      for (const { staged, session } of pending.values()) {
        if (!matchesStaged(query, staged.write)) continue;
        const resource = parseVersion(staged.version);
        if (filter && !filter(resource)) continue;
        if (!scope.canSee(staged.version, () => resource)) continue;
        ids.add(staged.write.record.id);
        if (session !== this) this.readFrom.add(session);
      }
    }
    return [...ids].slice(0, limit);
  }

  /**
   * Validates every staged version not checked yet and computes its commitment. Returns the failures (422s located by their
   * label); failed versions are dropped from the session, so the rest can still commit (batches).
   */
  async check(): Promise<Array<{ label?: string; error: FhirError }>> {
    const toCheck = [...this.staged.entries()].filter(([, s]) => !s.write.record.deleted && s.write.record.digest === null);
    const checks = await this.checker.check(toCheck.map(([, s]) => ({ json: s.version.json!, salt: s.write.record.salt! })));
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
        throw errors.conflict(`a ${e.type} this request writes was changed concurrently; retry the request`);
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
