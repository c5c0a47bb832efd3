/**
 * Scanning the store for search matches: candidates in id order with an optional post-filter, counts,
 * and chained parameters resolved into reference clauses, each within a budget (400 too-costly beyond it).
 */
import type { ResourceStore, StoreQuery, StoredVersion } from '../../vault/store.ts';
import { FhirError } from '../outcome.ts';
import { parseVersion } from '../resource-version.ts';
import type { SearchOptions } from '../repository.ts';
import { parseSearch, type ParsedSearch, type Predicate } from './query.ts';

/** Candidates scanned in one store round trip when a post-filter or an in-memory sort runs. */
export const SCAN_CHUNK = 500;
/** Candidates a page may scan (post-filter) before it returns what it has with a next link. */
export const PAGE_SCAN_BUDGET = 5_000;
/** Candidates a sorted search, a filtered count or a chain may scan before it answers "narrow the search". */
export const MAX_SCAN = 10_000;
/** Ids a chained parameter may resolve to. */
export const MAX_CHAIN_IDS = 1_000;
/** Included plus revincluded resources per page. */
export const MAX_INCLUDES = 1_000;

export function tooCostly(message: string): FhirError {
  return new FhirError(400, [{ severity: 'error', code: 'too-costly', diagnostics: message }]);
}

/**
 * Current resources matching `query` and `filter`, scanned in id order from `afterId`: calls `visit` for
 * each match until it returns false. Returns the last id scanned and whether the candidates ran out.
 */
export async function scanMatches(
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
export async function countMatches(store: ResourceStore, query: StoreQuery, filter: Predicate | undefined, cap: number): Promise<number | undefined> {
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
export async function resolveChains(
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
