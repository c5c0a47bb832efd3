/**
 * FHIR semantics over the ResourceStore port: versions, ids, meta, validation, digests, index terms, and
 * all-or-nothing write sessions. Handlers talk to this, never to a store directly.
 */
import { randomUUID } from 'node:crypto';
import { createVersionChecker, type VersionChecker } from './checks/pool.ts';
import {
  type AnchorLocation,
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
import { parseFhirJson, stringifyFhirJson } from './json.ts';
import { errors, FhirError } from './outcome.ts';
import { dateSortKey, parseSearch, type Cursor, type IncludeSpec, type ParsedSearch, type Predicate, type SortSpec } from './search/query.ts';
import { normalizeReference, referenceValueTerms } from './search/terms.ts';
import { extractTerms } from './search/terms.ts';
import { isKnownResourceType, knownResourceTypes } from './validation/index.ts';
import { COMPARTMENT_PARAM, compartmentParams, compartmentTerm, compartmentTypes, patientCompartments } from './compartment.ts';

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
  /** Hex SHA-256 of the canonical JSON, as the vault recorded it (absent for deletions). */
  digest?: string;
  /** Where the ledger anchored this version; absent while it waits in the outbox. */
  anchor?: AnchorLocation;
}

export const ID_PATTERN = /^[A-Za-z0-9\-.]{1,64}$/;

/**
 * AuditEvents are the hospital's access records, not a patient's data: they are in no patient compartment
 * (not in `$everything`, not under `patient/` scopes, not in the ledger's patient locator) and all are
 * sealed under one audit key (an owner no resource id can spell), so erasing a patient keeps the record
 * of who accessed them. Compliance finds them by patient with `AuditEvent?patient=` / `entity=`.
 */
const AUDIT_RECORD_TYPE = 'AuditEvent';
const AUDIT_KEY_OWNER = 'AuditEvent/_access-log';
const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function assertResourceType(type: string): void {
  if (!isKnownResourceType(type)) throw errors.notFound('the resource type is not a FHIR R4 resource type');
}

export function assertId(id: string): void {
  if (!ID_PATTERN.test(id)) throw errors.badRequest("the resource id is not valid (1 to 64 of A-Z, a-z, 0-9, '-' and '.')");
}

function toVersion(stored: VersionRecord & { anchor?: AnchorLocation }): ResourceVersion {
  return {
    type: stored.type,
    id: stored.id,
    versionId: stored.versionId,
    lastUpdated: stored.lastUpdated,
    deleted: stored.deleted,
    json: stored.content ? decoder.decode(stored.content) : undefined,
    digest: stored.digest ?? undefined,
    anchor: stored.anchor,
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
  /** `Prefer: handling=`: lenient leaves unknown or unsupported parameters out instead of a 400. */
  handling?: 'strict' | 'lenient';
}

/** Candidates scanned in one store round trip when a post-filter or an in-memory sort runs. */
const SCAN_CHUNK = 500;
/** Candidates a page may scan (post-filter) before it returns what it has with a next link. */
const PAGE_SCAN_BUDGET = 5_000;
/** Candidates a sorted search, a filtered count or a chain may scan before it answers "narrow the search". */
export const MAX_SCAN = 10_000;
/** Ids a chained parameter may resolve to. */
export const MAX_CHAIN_IDS = 1_000;
/** Included plus revincluded resources per page. */
export const MAX_INCLUDES = 1_000;

function tooCostly(message: string): FhirError {
  return new FhirError(400, [{ severity: 'error', code: 'too-costly', diagnostics: message }]);
}

function parseVersion(v: { content: Uint8Array | null } | ResourceVersion): Record<string, unknown> {
  const json = 'content' in v ? (v.content ? decoder.decode(v.content) : undefined) : v.json;
  return json ? (parseFhirJson(json) as Record<string, unknown>) : {};
}

/**
 * Current resources matching `query` and `filter`, scanned in id order from `afterId`: calls `visit` for
 * each match until it returns false. Returns the last id scanned and whether the candidates ran out.
 */
async function scanMatches(
  store: ResourceStore,
  query: StoreQuery,
  filter: Predicate | undefined,
  afterId: string | undefined,
  budget: number,
  visit: (row: StoredVersion, parsed: Record<string, unknown> | undefined) => boolean,
): Promise<{ lastScanned?: string; exhausted: boolean; scanned: number; stopped: boolean }> {
  let position = afterId;
  let scanned = 0;
  for (;;) {
    const want = Math.min(SCAN_CHUNK, budget - scanned);
    if (want <= 0) return { lastScanned: position, exhausted: false, scanned, stopped: false };
    const rows = await store.search({ ...query, afterId: position, limit: want });
    for (const row of rows) {
      const parsed = filter && !row.erased ? parseVersion(row) : undefined;
      // A row erased between the query and its decryption is skipped like a non-match.
      if (!row.erased && (!filter || filter(parsed!))) {
        if (!visit(row, parsed)) return { lastScanned: position, exhausted: false, scanned, stopped: true };
      }
      position = row.id;
      scanned++;
    }
    if (rows.length < want) return { lastScanned: position, exhausted: true, scanned, stopped: false };
  }
}

/** Number of current resources matching query and filter (undefined when more than `cap` candidates). */
async function countMatches(store: ResourceStore, query: StoreQuery, filter: Predicate | undefined, cap: number): Promise<number | undefined> {
  if (!filter) return store.count(query);
  let n = 0;
  const result = await scanMatches(store, query, filter, undefined, cap, () => {
    n++;
    return true;
  });
  return result.exhausted ? n : undefined;
}

/**
 * Resolves chained parameters into reference clauses by running each inner search (at most MAX_CHAIN_IDS
 * ids). Returns undefined when a chain matches nothing (so the whole search matches nothing).
 */
async function resolveChains(
  store: ResourceStore,
  parsed: ParsedSearch,
  options: SearchOptions,
): Promise<StoreQuery | undefined> {
  if (parsed.chains.length === 0) return parsed.query;
  const clauses = [...parsed.query.clauses];
  for (const chain of parsed.chains) {
    const refs: string[] = [];
    for (const target of chain.targets) {
      const inner = parseSearch(target, [chain.inner], { baseUrl: options.baseUrl });
      const restrict = options.restrictFor?.(target);
      const query = { ...(restrict ? restrict(inner.query) : inner.query), afterId: undefined };
      const result = await scanMatches(store, query, inner.postFilter, undefined, MAX_SCAN, (row) => {
        refs.push(`${target}/${row.id}`);
        return refs.length <= MAX_CHAIN_IDS;
      });
      if (refs.length > MAX_CHAIN_IDS || (!result.exhausted && !result.stopped)) {
        throw tooCostly(`chained parameter ${chain.param}.${chain.inner[0]} matches more than ${MAX_CHAIN_IDS} resources; narrow it`);
      }
    }
    if (refs.length === 0) return undefined;
    clauses.push({ param: chain.param, anyOf: refs });
  }
  return { ...parsed.query, clauses };
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

/** The pseudonymous ledger token of a patient compartment owner (`Patient/123`), set on the versions it owns. */
export type PatientTokenOf = (owner: string) => string;

export interface RepositoryOptions {
  patientToken?: PatientTokenOf;
  /** Called after each batch is durable (the ledger's outbox publisher looks at the outbox at once). */
  afterCommit?: () => void;
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
      if (!current) throw unknownResource('Patient');
      return store.eraseOwner(compartmentTerm(patientId), new Date().toISOString());
    });
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
      const session = new WriteSession(this.store, this.checker, [...this.inflight], this.options.patientToken);
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

/**
 * The answer for a resource that is not there, and for one a patient-bound token may not see: the same,
 * byte for byte, so that it tells nothing about other patients' data (and it names no id).
 */
export function unknownResource(type: string): FhirError {
  return errors.notFound(`no ${type} with this id is known`);
}

/** As unknownResource, for a version (vread). */
export function unknownVersion(type: string): FhirError {
  return errors.notFound(`no ${type} version with this id and version number is known`);
}

function erasedError(type: string): FhirError {
  return errors.gone(`this ${type} was erased at the patient's request: its content is destroyed and cannot be recovered`);
}

function goneError(type: string, versionId: number): FhirError {
  const e = errors.gone(`this ${type} was deleted`);
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
    private readonly patientToken?: PatientTokenOf,
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
      throw errors.badRequest(`one ${type} is written more than once in one transaction`);
    }
    const versionId = previous + 1;
    let record: VersionRecord;
    let terms: IndexTerm[] = [];
    let json: string | undefined;
    // A resource in a patient compartment is sealed under that patient's key (the first one, by definition order).
    let owner: string | undefined;
    let patient: string | undefined;
    if (resource) {
      const stamped = stamp(resource, id, versionId, this.now);
      json = stringifyFhirJson(stamped);
      const patients = type === AUDIT_RECORD_TYPE ? [] : patientCompartments(type, stamped);
      terms = extractTerms(type, stamped);
      for (const patient of patients) terms.push({ param: COMPARTMENT_PARAM, value: compartmentTerm(patient) });
      if (patients.length > 0) patient = compartmentTerm(patients[0]);
      owner = type === AUDIT_RECORD_TYPE ? AUDIT_KEY_OWNER : patient;
      // The digest is set by check(), with validation, before the batch is committed.
      record = { type, id, versionId, lastUpdated: this.now, deleted: false, content: encoder.encode(json), digest: null };
    } else {
      record = { type, id, versionId, lastUpdated: this.now, deleted: true, content: null, digest: null };
    }
    if (patient !== undefined && this.patientToken) record.patientToken = this.patientToken(patient);
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
    return this.stage(type, id, null, current.versionId);
  }

  /**
   * Ids of current resources matching a search query (at most `limit`), seeing this session's staged
   * writes: used by conditional create/update/delete and conditional references. `restrict` narrows the
   * matches as a search's, e.g. to the patient compartment a token is bound to.
   */
  async findMatches(type: string, queryString: string, restrict?: (q: StoreQuery) => StoreQuery, limit = 2): Promise<string[]> {
    assertResourceType(type);
    const params = [...new URLSearchParams(queryString)];
    if (params.length === 0) throw errors.badRequest(`a conditional ${type} query must have criteria`);
    const parsed = parseSearch(type, params);
    // Chained parameters see the stored data only (not this session's staged writes).
    const resolved = await resolveChains(this.store, parsed, {});
    const query = resolved && restrict ? restrict(resolved) : resolved;
    const pending = this.overlayWrites(type);
    const ids = new Set<string>();
    if (query) {
      const filter = parsed.postFilter;
      const result = await scanMatches(this.store, { ...query, afterId: undefined }, filter, undefined, MAX_SCAN, (row) => {
        if (!pending.has(`${type}/${row.id}`)) ids.add(row.id);
        return ids.size < limit;
      });
      if (!result.exhausted && !result.stopped) throw tooCostly(`the conditional ${type} query needs to check more than ${MAX_SCAN} candidates; narrow it`);
      for (const { staged, session } of pending.values()) {
        if (!matchesStaged(query, staged.write)) continue;
        if (filter && !filter(parseVersion(staged.version))) continue;
        ids.add(staged.write.record.id);
        if (session !== this) this.readFrom.add(session);
      }
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

/** A local `Type/id` for a reference term (absolute ones only when they point at this server's base). */
function localReference(ref: string, baseUrl: string | undefined): string | undefined {
  if (!/^[a-z][a-z0-9+.-]*:/i.test(ref)) return ref.includes('/') ? ref : undefined;
  if (baseUrl && ref.startsWith(`${baseUrl}/`)) return normalizeReference(ref.slice(baseUrl.length + 1));
  return undefined;
}

const SUBSETTED = { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED' };

/** `_elements`: the resource with only the listed top-level elements (plus id and meta), tagged SUBSETTED. */
export function subsetted(v: ResourceVersion, elements: string[], parsed?: Record<string, unknown>): ResourceVersion {
  const resource = parsed ?? parseVersion(v);
  const keep = new Set(elements);
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(resource)) {
    const name = key.startsWith('_') ? key.slice(1) : key;
    const choice = /^([a-z][A-Za-z]*?)[A-Z]/.exec(name);
    let kept = key === 'resourceType' || key === 'id' || key === 'meta' || keep.has(name);
    if (!kept && choice) {
      // valueQuantity is kept by `value` (choice elements are named without their type).
      for (const e of keep) if (name.startsWith(e) && /^[A-Z]/.test(name.slice(e.length))) kept = true;
    }
    if (kept) out[key] = value;
  }
  const meta = { ...((out.meta as Record<string, unknown> | undefined) ?? {}) };
  const tags = Array.isArray(meta.tag) ? [...meta.tag] : [];
  if (!tags.some((t) => t?.system === SUBSETTED.system && t?.code === SUBSETTED.code)) tags.push(SUBSETTED);
  meta.tag = tags;
  out.meta = meta;
  const ordered: Record<string, unknown> = { resourceType: out.resourceType, id: out.id, meta };
  for (const [k, val] of Object.entries(out)) if (!(k in ordered)) ordered[k] = val;
  return { ...v, json: stringifyFhirJson(ordered) };
}
