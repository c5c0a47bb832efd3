/**
 * FHIR semantics over the ResourceStore port: reads, searches, $everything, history, and all-or-nothing
 * writes through write sessions (write-session.ts). Handlers talk to this, never to a store directly.
 */
import { createVersionChecker, type VersionChecker } from './checks/pool.ts';
import { hasLinkIndex, isErasable, type ErasableStore, type HistoryQuery, type ResourceStore, type StoreQuery, type StoredVersion } from '../vault/store.ts';
import { errors } from './outcome.ts';
import {
  assertId,
  assertResourceType,
  erasedError,
  goneError,
  parseVersion,
  subsetted,
  toVersion,
  unknownResource,
  unknownVersion,
  type ResourceVersion,
} from './resource-version.ts';
import { dateSortKey, parseSearch, type Cursor, type ParsedSearch, type SortSpec } from './search/query.ts';
import { countMatches, MAX_INCLUDES, MAX_SCAN, PAGE_SCAN_BUDGET, resolveChains, SCAN_CHUNK, scanMatches, tooCostly } from './search/scan.ts';
import { normalizeReference, referenceValueTerms, termsNamingPatient } from './search/terms.ts';
import { knownResourceTypes } from './validation/index.ts';
import { COMPARTMENT_PARAM, compartmentParams, compartmentTerm, compartmentTypes } from './compartment.ts';
import { WriteSession } from './write-session.ts';
import type { ErasurePolicy } from '../audit/erasure.ts';

export {
  assertId,
  assertResourceType,
  ID_PATTERN,
  subsetted,
  unknownResource,
  unknownVersion,
  type FhirResource,
  type ResourceVersion,
} from './resource-version.ts';
export { MAX_CHAIN_IDS, MAX_INCLUDES, MAX_SCAN } from './search/scan.ts';
export { WriteSession } from './write-session.ts';

export interface SearchPage {
  /** The matches of this page (search.mode 'match'). */
  versions: ResourceVersion[];
  /** `_include`/`_revinclude` results (search.mode 'include'), de-duplicated, not among the matches. */
  included: ResourceVersion[];
  total?: number;
  /** Cursor for the next page, when there may be one. */
  nextCursor?: string;
  applied: Array<[string, string]>;
  /** Things the client should know (e.g. an include cap was reached), for an OperationOutcome entry. */
  warnings: string[];
}

/** A position in a paging over several types: the query's index in the list and the last id returned. */
export interface TypeCursor {
  typeIndex: number;
  afterId: string;
}

/** A link token's shape (federation/link-token.ts): 32 bytes, base64url. */
const LINK_TOKEN = /^[A-Za-z0-9_-]{43}$/;

const TYPE_CURSOR = /^(\d{1,3}):([A-Za-z0-9\-.]{1,64})$/;

/** A TypeCursor as a `_cursor` value: `typeIndex:afterId`. */
export function formatTypeCursor(c: TypeCursor): string {
  return `${c.typeIndex}:${c.afterId}`;
}

/** The TypeCursor of a `_cursor` value (400 when malformed). */
export function parseTypeCursor(value: string): TypeCursor {
  const m = TYPE_CURSOR.exec(value);
  if (!m) throw errors.badRequest('_cursor is malformed');
  return { typeIndex: Number(m[1]), afterId: m[2] };
}

/** A position in $everything: among the compartment resources, or among the referenced ones (by `Type/id`). */
export type EverythingCursor = ({ phase: 'compartment' } & TypeCursor) | { phase: 'referenced'; afterKey: string };

export interface SearchOptions {
  /** This server's FHIR base: absolute references to it count as local. */
  baseUrl?: string;
  /**
   * The caller's restriction for searching another type (chained parameters, `_revinclude`); throws (403)
   * when the caller may not search that type at all.
   */
  restrictFor?: (type: string) => ((query: StoreQuery) => StoreQuery) | undefined;
  /** Whether an included resource may be returned to the caller (others are dropped). */
  canInclude?: (v: ResourceVersion) => boolean;
  /**
   * Whether a match, decrypted, is one the caller may see: the index chose it, and an index can be forged
   * by whoever writes to the store. Others are dropped from the page.
   */
  canSee?: (v: ResourceVersion, resource: () => Record<string, unknown>) => boolean;
  /** `Prefer: handling=`: lenient leaves unknown or unsupported parameters out instead of a 400. */
  handling?: 'strict' | 'lenient';
}




interface SortItem {
  row: StoredVersion;
  key: number | string | undefined;
}

function sortComparator(sort: SortSpec): (a: { key: number | string | undefined; id: string }, b: { key: number | string | undefined; id: string }) => number {
  const dir = sort.descending ? -1 : 1;
  if (sort.param === '_id') return (a, b) => (a.id < b.id ? -dir : a.id > b.id ? dir : 0);
  return (a, b) => {
    if (a.key !== b.key) {
      if (a.key === undefined) return 1; // missing values last, in both directions
      if (b.key === undefined) return -1;
      return (a.key < b.key ? -1 : 1) * dir;
    }
    return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  };
}

function encodeSortCursor(item: { key: number | string | undefined; id: string }): string {
  return typeof item.key === 'number' ? `k${item.key}.${item.id}` : `n.${item.id}`;
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

const decoder = new TextDecoder();

export interface RepositoryOptions {
  /** Called after each batch is durable (the ledger's outbox publisher looks at the outbox at once). */
  afterCommit?: () => void;
  /** How `$erase` is approved and recorded (audit/erasure.ts); absent ⇒ this repository cannot erase. */
  erasure?: ErasurePolicy;
}

export class FhirRepository {
  private readonly writeLock = new Mutex();
  /** Submitted batches that are not durable yet, oldest first. */
  private readonly inflight: WriteSession[] = [];

  constructor(
    readonly store: ResourceStore,
    private readonly checker: VersionChecker = createVersionChecker(0),
    private readonly options: RepositoryOptions = {},
  ) {}

  async read(type: string, id: string): Promise<ResourceVersion> {
    assertResourceType(type);
    assertId(id);
    const stored = await this.store.current(type, id);
    if (!stored) throw unknownResource(type);
    if (stored.erased) throw erasedError(type);
    if (stored.deleted) throw goneError(type, stored.versionId);
    return toVersion(stored);
  }

  async vread(type: string, id: string, versionId: string): Promise<ResourceVersion> {
    assertResourceType(type);
    assertId(id);
    const n = /^[1-9]\d{0,15}$/.test(versionId) ? Number(versionId) : NaN;
    const stored = Number.isSafeInteger(n) ? await this.store.version(type, id, n) : undefined;
    if (!stored) throw unknownVersion(type);
    if (stored.erased) throw erasedError(type);
    if (stored.deleted) throw goneError(type, stored.versionId);
    return toVersion(stored);
  }

  /**
   * FHIR search. The store answers the equality term clauses (ordered by id, keyset cursor); what they
   * cannot decide exactly is decided by the parsed post-filter on the decrypted resource. `restrict`
   * narrows the query further, e.g. to the patient compartment a token is bound to.
   *
   * Paging: in id order the cursor is the last id consumed (a match returned, or a candidate scanned and
   * rejected), so post-filtering never repeats or drops a resource. With `_sort` on anything but `_id`
   * ascending, every candidate is scanned (at most MAX_SCAN), sorted in memory on (key, id), and the
   * cursor is that keyset pair.
   */
  async search(
    type: string,
    params: Array<[string, string]>,
    restrict?: (query: StoreQuery) => StoreQuery,
    options: SearchOptions = {},
  ): Promise<SearchPage> {
    assertResourceType(type);
    const parsed = parseSearch(type, params, { baseUrl: options.baseUrl, handling: options.handling });
    const { countOnly, applied } = parsed;
    const resolved = await resolveChains(this.store, parsed, options);
    const warnings: string[] = [];
    if (!resolved) return { versions: [], included: [], total: parsed.total === 'none' ? undefined : 0, applied, warnings };
    const query = restrict ? restrict(resolved) : resolved;
    const filter = parsed.postFilter;
    const limit = query.limit;

    if (countOnly) {
      const total = await countMatches(this.store, query, filter, MAX_SCAN);
      if (total === undefined) throw tooCostly(`counting needs to check more than ${MAX_SCAN} candidates; narrow the search`);
      return { versions: [], included: [], total, applied, warnings };
    }
    // The total of every page, as `_total` asks (see docs/search.md).
    const pageTotal = async (): Promise<number | undefined> => {
      if (parsed.total === 'none') return undefined;
      const exact = await countMatches(this.store, query, filter, MAX_SCAN);
      if (exact !== undefined) return exact;
      if (parsed.total === 'accurate') throw tooCostly(`an accurate total needs to check more than ${MAX_SCAN} candidates; narrow the search or ask _total=estimate`);
      if (parsed.total === 'estimate') return this.store.count(query);
      warnings.push(`total left out: counting needs to check more than ${MAX_SCAN} candidates (_total=estimate gives an upper bound)`);
      return undefined;
    };

    let versions: ResourceVersion[];
    let total: number | undefined;
    let nextCursor: string | undefined;
    const parsedById = new Map<string, Record<string, unknown>>();
    if (parsed.sort && !(parsed.sort.param === '_id' && !parsed.sort.descending)) {
      const sort = parsed.sort;
      const items: Array<SortItem & { id: string }> = [];
      const needsResource = sort.dateParam !== undefined;
      const result = await scanMatches(this.store, { ...query, afterId: undefined }, filter, undefined, MAX_SCAN + 1, (row, p) => {
        let key: number | string | undefined;
        if (sort.param === '_lastUpdated') key = Date.parse(row.lastUpdated);
        else if (needsResource) {
          const resource = p ?? parseVersion(row);
          key = dateSortKey(sort.dateParam!, resource, sort.descending);
        }
        items.push({ row, key, id: row.id });
        return true;
      });
      if (!result.exhausted) throw tooCostly(`sorting needs to check more than ${MAX_SCAN} candidates; narrow the search`);
      const cmp = sortComparator(sort);
      items.sort(cmp);
      const cursor = parsed.cursor as Extract<Cursor, { kind: 'sort' }> | undefined;
      const from = cursor ? items.findIndex((i) => cmp(i, { key: cursor.key, id: cursor.id }) > 0) : 0;
      const start = from < 0 ? items.length : from;
      const page = items.slice(start, start + limit);
      versions = page.map((i) => toVersion(i.row));
      total = parsed.total === 'none' ? undefined : items.length;
      if (start + limit < items.length && page.length > 0) nextCursor = encodeSortCursor(page[page.length - 1]);
    } else if (!filter) {
      total = await pageTotal();
      if (limit === 0) return { versions: [], included: [], total, applied, warnings };
      const rows = await this.store.search({ ...query, limit: limit + 1 });
      const hasMore = rows.length > limit;
      const page = hasMore ? rows.slice(0, limit) : rows;
      versions = page.filter((r) => !r.erased).map(toVersion);
      nextCursor = hasMore ? page[page.length - 1].id : undefined;
    } else {
      total = await pageTotal();
      if (limit === 0) return { versions: [], included: [], total, applied, warnings };
      const page: StoredVersion[] = [];
      let lastConsumed = query.afterId;
      const result = await scanMatches(this.store, query, filter, query.afterId, PAGE_SCAN_BUDGET, (row, p) => {
        if (page.length === limit) return false; // one more match exists: it starts the next page
        page.push(row);
        if (p) parsedById.set(row.id, p);
        return true;
      });
      lastConsumed = result.lastScanned ?? lastConsumed;
      versions = page.map(toVersion);
      if (!result.exhausted && lastConsumed !== undefined) nextCursor = lastConsumed;
    }

    if (options.canSee) {
      const canSee = options.canSee;
      // Parsed only when the check needs the content (a patient-bound token's compartment).
      versions = versions.filter((v) => canSee(v, () => parsedById.get(v.id) ?? parseVersion(v)));
    }
    const included = await this.includes(type, parsed, versions, parsedById, options, warnings);
    if (parsed.elements) versions = versions.map((v) => subsetted(v, parsed.elements!, parsedById.get(v.id)));
    return { versions, included, total, nextCursor, applied, warnings };
  }

  /** `_include` and `_revinclude` for one page of matches. */
  private async includes(
    type: string,
    parsed: ParsedSearch,
    matches: ResourceVersion[],
    parsedById: Map<string, Record<string, unknown>>,
    options: SearchOptions,
    warnings: string[],
  ): Promise<ResourceVersion[]> {
    if ((parsed.include.length === 0 && parsed.revinclude.length === 0) || matches.length === 0) return [];
    const seen = new Set(matches.map((v) => `${v.type}/${v.id}`));
    const wanted: string[] = [];
    let capped = false;
    const want = (key: string) => {
      if (seen.has(key)) return;
      if (seen.size - matches.length >= MAX_INCLUDES) {
        capped = true;
        return;
      }
      seen.add(key);
      wanted.push(key);
    };
    for (const spec of parsed.include) {
      for (const v of matches) {
        const resource = parsedById.get(v.id) ?? parseVersion(v);
        parsedById.set(v.id, resource);
        const refs = new Set<string>();
        spec.param.forEachValue(resource, (value) => referenceValueTerms(value, refs));
        for (const ref of refs) {
          const local = localReference(ref, options.baseUrl);
          if (!local) continue;
          const [t] = local.split('/', 1);
          if (spec.targetType !== undefined ? t !== spec.targetType : !spec.param.targets.includes(t)) continue;
          want(local);
        }
      }
    }
    const included: ResourceVersion[] = [];
    for (let i = 0; i < wanted.length; i += 100) {
      const batch = await Promise.all(
        wanted.slice(i, i + 100).map((key) => {
          const [t, id] = key.split('/');
          return this.store.current(t, id);
        }),
      );
      for (const row of batch) if (row && !row.deleted && !row.erased) included.push(toVersion(row));
    }
    for (const spec of parsed.revinclude) {
      let restrict: ((q: StoreQuery) => StoreQuery) | undefined;
      try {
        restrict = options.restrictFor?.(spec.sourceType);
      } catch {
        continue; // the caller may not search that type: nothing to include from it
      }
      const targets = [...new Set(matches.map((v) => `${type}/${v.id}`))];
      const base: StoreQuery = { type: spec.sourceType, clauses: [{ param: spec.param.code, anyOf: targets }], lastUpdated: [], limit: MAX_INCLUDES + 1 };
      const rows = await this.store.search(restrict ? restrict(base) : base);
      for (const row of rows) {
        const key = `${row.type}/${row.id}`;
        if (seen.has(key) || row.erased) continue;
        if (seen.size - matches.length >= MAX_INCLUDES) {
          capped = true;
          break;
        }
        seen.add(key);
        included.push(toVersion(row));
      }
    }
    if (capped) warnings.push(`only the first ${MAX_INCLUDES} included resources of this page are returned; use a smaller _count`);
    return options.canInclude ? included.filter((v) => options.canInclude!(v)) : included;
  }

  /**
   * Current resources of several queries (one per type), paged query after query and by id within one, so
   * the cursor `{typeIndex, afterId}` (the position of the last resource returned) pages stably.
   */
  private async pageAcross(queries: StoreQuery[], limit: number, cursor?: TypeCursor): Promise<{ versions: ResourceVersion[]; nextCursor?: TypeCursor }> {
    const versions: ResourceVersion[] = [];
    let last = cursor;
    let afterId = cursor?.afterId;
    for (let typeIndex = cursor?.typeIndex ?? 0; typeIndex < queries.length; typeIndex++, afterId = undefined) {
      const room = limit - versions.length;
      const rows = await this.store.search({ ...queries[typeIndex], afterId, limit: room + 1 });
      const taken = rows.slice(0, room);
      versions.push(...taken.filter((r) => !r.erased).map(toVersion));
      if (taken.length > 0) last = { typeIndex, afterId: taken[taken.length - 1].id };
      // A full page resumes after its last resource (which may lie in an earlier query).
      if (rows.length > room) return { versions, nextCursor: last };
    }
    return { versions };
  }

  /** Number of current resources matching any of the queries (each query is of its own type). */
  private async countAcross(queries: StoreQuery[]): Promise<number> {
    const counts = await Promise.all(queries.map((q) => this.store.count(q)));
    return counts.reduce((a, b) => a + b, 0);
  }

  /**
   * System search (`GET [base]?_type=…`): the resources of several types matching store-native criteria
   * (`_id`, `_lastUpdated`), paged type after type. `total` counts every type's matches (one count each).
   */
  async searchAcross(
    queries: StoreQuery[],
    options: { limit: number; cursor?: TypeCursor; withTotal: boolean },
  ): Promise<{ versions: ResourceVersion[]; total?: number; nextCursor?: TypeCursor }> {
    const total = options.withTotal ? await this.countAcross(queries) : undefined;
    if (options.limit === 0) return { versions: [], total };
    return { ...(await this.pageAcross(queries, options.limit, options.cursor)), total };
  }

  /**
   * `Patient/[id]/$everything`: the Patient, then every resource of its compartment types (in
   * compartmentTypes() order, by id within a type), then the resources they refer to that no compartment
   * can hold (Practitioner, Organization, Location, Medication …) in `Type/id` order, each once, as
   * `included`. A page holds at most `limit` entries of both kinds; the cursor is the position in that order,
   * so the pages never repeat an entry. `total` counts the compartment resources (the matches).
   */
  async everything(
    patientId: string,
    options: {
      since?: string;
      types?: string[];
      limit: number;
      cursor?: EverythingCursor;
      /** Whether resources of a type outside the compartment may be included (the caller's access). */
      canInclude: (type: string) => boolean;
    },
  ): Promise<{ versions: ResourceVersion[]; included: ResourceVersion[]; total: number; nextCursor?: EverythingCursor }> {
    await this.read('Patient', patientId);
    const since = options.since ? [{ op: 'ge' as const, value: options.since }] : [];
    const queries: StoreQuery[] = compartmentTypes()
      .filter((t) => !options.types || options.types.includes(t))
      .map((type) =>
        type === 'Patient'
          ? { type, ids: [patientId], clauses: [], lastUpdated: since, limit: 0 }
          : { type, clauses: [{ param: COMPARTMENT_PARAM, anyOf: [compartmentTerm(patientId)] }], lastUpdated: since, limit: 0 },
      );
    const cursor = options.cursor;
    let versions: ResourceVersion[] = [];
    if (cursor?.phase !== 'referenced') {
      const page = await this.pageAcross(queries, options.limit, cursor);
      if (page.nextCursor) {
        return { versions: page.versions, included: [], total: await this.countAcross(queries), nextCursor: { phase: 'compartment', ...page.nextCursor } };
      }
      versions = page.versions;
    }
    // A first page that holds the whole compartment counts it (an erased patient never gets this far).
    const total = cursor === undefined ? versions.length : await this.countAcross(queries);
    const room = options.limit - versions.length;
    const after = cursor?.phase === 'referenced' ? cursor.afterKey : '';
    // A first page that holds the whole compartment has every reference in hand: no second scan.
    const referenced = cursor === undefined
      ? referencedKeys(versions.map((v) => v.json ?? ''), options.canInclude)
      : await this.referencedOutsideCompartment(queries, options.canInclude);
    const keys = referenced.filter((k) => k > after);
    const included = await this.currentOf(keys.slice(0, room));
    const nextCursor: EverythingCursor | undefined =
      keys.length > room ? { phase: 'referenced', afterKey: room > 0 ? keys[room - 1] : after } : undefined;
    return { versions, included, total, nextCursor };
  }

  /**
   * The `Type/id`s, sorted, that the queries' resources refer to and that no patient compartment can hold:
   * $everything SHOULD return them with the record. Reads every matching resource.
   */
  private async referencedOutsideCompartment(queries: StoreQuery[], canInclude: (type: string) => boolean): Promise<string[]> {
    // A caller who may read none of those types (a patient-bound token) is spared the scan.
    if (!knownResourceTypes().some((t) => !compartmentParams().has(t) && canInclude(t))) return [];
    const jsons: string[] = [];
    for (const query of queries) {
      let afterId: string | undefined;
      for (;;) {
        const rows = await this.store.search({ ...query, afterId, limit: SCAN_CHUNK });
        for (const row of rows) if (row.content && !row.erased) jsons.push(decoder.decode(row.content));
        if (rows.length < SCAN_CHUNK) break;
        afterId = rows[rows.length - 1].id;
      }
    }
    return referencedKeys(jsons, canInclude);
  }

  /** The current, live versions of `Type/id` keys, in their order (missing, deleted and erased ones left out). */
  private async currentOf(keys: string[]): Promise<ResourceVersion[]> {
    const rows = await Promise.all(keys.map((key) => {
      const [type, id] = key.split('/');
      return this.store.current(type, id);
    }));
    return rows.filter((r): r is StoredVersion => r !== undefined && !r.deleted && !r.erased).map(toVersion);
  }

  /** The data key `$erase` would destroy for a patient, and when it was destroyed if it already was. */
  get erasurePolicy(): ErasurePolicy | undefined {
    return this.options.erasure;
  }

  async erasureTarget(patientId: string): Promise<{ keyId: string; erasedAt?: string }> {
    const store = this.erasableStore();
    assertId(patientId);
    if (!(await store.current('Patient', patientId))) throw unknownResource('Patient');
    const keyId = store.keyIdFor(compartmentTerm(patientId));
    return { keyId, erasedAt: (await store.getKey(keyId))?.erasedAt ?? undefined };
  }

  /**
   * `Patient/[id]/$erase`: crypto-shreds the patient's data key, after every write already accepted is
   * durable (new writes wait on the lock, then find the key destroyed). The caller records the erasure
   * first (audit/erasure.ts): a destroyed key without an anchored record is what `verify` calls tampering.
   */
  async erase(patientId: string, erasedAt: string): Promise<{ resources: number; erasedAt: string }> {
    const store = this.erasableStore();
    assertId(patientId);
    return this.writeLock.run(async () => {
      await Promise.allSettled(this.inflight.map((s) => s.durable));
      if (!(await store.current('Patient', patientId))) throw unknownResource('Patient');
      return store.eraseOwner(compartmentTerm(patientId), erasedAt, termsNamingPatient(patientId));
    });
  }

  /**
   * Federation, for the holder: ids of the current, live local Patients carrying this link token (a blind-index
   * lookup in the vault; none for a malformed token). Never reachable as a search parameter.
   */
  async patientsWithLinkToken(token: string): Promise<string[]> {
    if (!hasLinkIndex(this.store)) throw errors.notSupported('this vault keeps no link index');
    return LINK_TOKEN.test(token) ? this.store.patientsWithLinkToken(token) : [];
  }

  private erasableStore(): ErasableStore {
    if (!isErasable(this.store)) throw errors.notSupported('this vault does not encrypt per patient, so it cannot crypto-shred');
    return this.store;
  }

  /**
   * A page of history, newest first, with the total number of versions in the range (erased versions are
   * counted but left out of the page: their content is gone).
   */
  async history(query: HistoryQuery): Promise<{ versions: Array<ResourceVersion & { seq: number }>; total: number; nextCursor?: number }> {
    if (query.type) assertResourceType(query.type);
    if (query.id) assertId(query.id);
    const [rows, total] = await Promise.all([this.store.history({ ...query, limit: query.limit + 1 }), this.store.countHistory(query)]);
    const hasMore = rows.length > query.limit;
    const page = hasMore ? rows.slice(0, query.limit) : rows;
    return {
      total,
      // Erased versions are left out; the cursor still moves past them.
      versions: page.filter((r) => !r.erased).map((r) => ({ ...toVersion(r), seq: r.seq })),
      nextCursor: hasMore && page.length > 0 ? page[page.length - 1].seq : undefined,
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
        this.options.afterCommit?.();
      } finally {
        this.inflight.splice(this.inflight.indexOf(session), 1);
      }
    })();
    session.durable = done;
    return done;
  }
}

/** The sorted `Type/id`s that stored JSONs refer to, of types no patient compartment holds and the caller may read. */
function referencedKeys(jsons: string[], canInclude: (type: string) => boolean): string[] {
  const wanted = new Set<string>();
  for (const json of jsons) {
    // Stored JSON is compact, so a reference is exactly `"reference":"Type/id"` (relative, local).
    for (const m of json.matchAll(/"reference":"([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[A-Za-z0-9\-.]{1,64})?"/g)) {
      if (!compartmentParams().has(m[1]) && canInclude(m[1])) wanted.add(`${m[1]}/${m[2]}`);
    }
  }
  return [...wanted].sort();
}

/** A local `Type/id` for a reference term (absolute ones only when they point at this server's base). */
function localReference(ref: string, baseUrl: string | undefined): string | undefined {
  if (!/^[a-z][a-z0-9+.-]*:/i.test(ref)) return ref.includes('/') ? ref : undefined;
  if (baseUrl && ref.startsWith(`${baseUrl}/`)) return normalizeReference(ref.slice(baseUrl.length + 1));
  return undefined;
}

