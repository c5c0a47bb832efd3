/** Turns a resource into the index terms of its searchable parameters. */
import type { IndexTerm } from '../../vault/store.ts';
import { indexedParams, referenceType } from './parameters.ts';

interface TokenLike {
  system?: unknown;
  code?: unknown;
  value?: unknown;
  coding?: unknown;
}

/**
 * Token terms: `code`, `system|code` and `system|` when a system is present, `|code` when it is absent —
 * exactly the forms a token query can take, so a query needs one equality lookup per value.
 */
function pushToken(out: Set<string>, system: unknown, code: unknown): void {
  if (typeof code === 'string' || typeof code === 'boolean') {
    const c = String(code);
    out.add(c);
    out.add(typeof system === 'string' ? `${system}|${c}` : `|${c}`);
  }
  if (typeof system === 'string') out.add(`${system}|`);
}

function tokenTerms(values: unknown[], out: Set<string>): void {
  for (const v of values) {
    if (typeof v === 'string' || typeof v === 'boolean') {
      pushToken(out, undefined, v);
    } else if (v && typeof v === 'object') {
      const t = v as TokenLike;
      if (Array.isArray(t.coding)) tokenTerms(t.coding, out);
      else if ('code' in t) pushToken(out, t.system, t.code);
      else if ('value' in t) pushToken(out, t.system, t.value);
    }
  }
}

/** `Patient/1/_history/2` → `Patient/1`; absolute URLs are kept whole; local `#id` references are not indexed. */
export function normalizeReference(reference: string): string | undefined {
  if (reference.startsWith('#')) return undefined;
  if (/^[a-z][a-z0-9+.-]*:/i.test(reference)) return reference;
  const type = referenceType(reference);
  if (!type) return undefined;
  return reference.replace(/\/_history\/[^/]+$/, '');
}

function referenceTerms(values: unknown[], out: Set<string>): void {
  for (const v of values) {
    const ref = (v as { reference?: unknown } | undefined)?.reference;
    if (typeof ref !== 'string') continue;
    const normalized = normalizeReference(ref);
    if (normalized) out.add(normalized);
  }
}

export function extractTerms(resourceType: string, resource: unknown): IndexTerm[] {
  const terms: IndexTerm[] = [];
  for (const param of indexedParams(resourceType).values()) {
    const values = param.extract(resource);
    if (values.length === 0) continue;
    const set = new Set<string>();
    if (param.type === 'token') tokenTerms(values, set);
    else referenceTerms(values, set);
    for (const value of set) terms.push({ param: param.code, value });
  }
  return terms;
}
