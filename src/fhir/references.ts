/** Finds and rewrites Reference.reference values anywhere in a resource (nested elements and contained). */

type Rewrite = (reference: string) => string | undefined;

function walk(node: unknown, rewrite: Rewrite): void {
  if (Array.isArray(node)) {
    for (const item of node) walk(item, rewrite);
    return;
  }
  if (node === null || typeof node !== 'object') return;
  const obj = node as Record<string, unknown>;
  for (const key in obj) {
    const value = obj[key];
    if (key === 'reference' && typeof value === 'string') {
      const replaced = rewrite(value);
      if (replaced !== undefined) obj[key] = replaced;
    } else if (typeof value === 'object' && value !== null) {
      walk(value, rewrite);
    }
  }
}

/** Replaces, in place, every reference for which `rewrite` returns a value. */
export function rewriteReferences(resource: unknown, rewrite: Rewrite): void {
  walk(resource, rewrite);
}

/** Every Reference.reference string in the resource. */
export function collectReferences(resource: unknown): string[] {
  const found: string[] = [];
  walk(resource, (ref) => {
    found.push(ref);
    return undefined;
  });
  return found;
}

/** Conditional reference such as `Practitioner?identifier=http://x|1` → type and query. */
export function parseConditionalReference(reference: string): { type: string; query: string } | undefined {
  const m = /^([A-Z][A-Za-z]+)\?(.+)$/.exec(reference);
  return m ? { type: m[1], query: m[2] } : undefined;
}
