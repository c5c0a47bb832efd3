/**
 * Route patterns (segments: literals, or `:name` captures; a trailing `?` marks routes that need a query
 * string), shared by the FHIR route table (routes.ts) and the federation one (federation/routes.ts).
 * No imports: the federation table uses it without pulling in the FHIR operations.
 */

/** The captures of `path` under `route.pattern`, if it matches. */
export function matchPattern(route: { pattern: string }, path: string[], hasQuery: boolean): Record<string, string> | undefined {
  const needsQuery = route.pattern.endsWith('?');
  const segments = (needsQuery ? route.pattern.slice(0, -1) : route.pattern).split('/').filter(Boolean);
  if (segments.length !== path.length || (needsQuery && !hasQuery)) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i];
    if (seg.startsWith(':')) {
      // A capture never swallows a literal path keyword such as _history or an operation.
      if (path[i].startsWith('_') || path[i].startsWith('$')) return undefined;
      params[seg.slice(1)] = path[i];
    } else if (seg !== path[i]) return undefined;
  }
  return params;
}
