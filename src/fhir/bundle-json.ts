import { stringifyFhirJson } from './json.ts';

/**
 * Bundles serialized by splicing stored resource JSON into the envelope, so stored versions are served
 * byte-for-byte as stored (decimal lexemes included) without re-parsing them.
 */

export interface BundleEntryParts {
  fullUrl?: string;
  /** Bundle.entry.extension (e.g. a federation holder's anchor extension). */
  extension?: object[];
  /** Serialized resource, spliced verbatim. */
  resourceJson?: string;
  /** Resource object (serialized here), when there is no stored JSON. */
  resource?: object;
  search?: object;
  request?: object;
  response?: object;
}

export function serializeBundle(envelope: Record<string, unknown>, entries: BundleEntryParts[]): string {
  const head = JSON.stringify(envelope);
  if (entries.length === 0) return head;
  const parts = entries.map((e) => {
    const fields: string[] = [];
    if (e.extension) fields.push(`"extension":${JSON.stringify(e.extension)}`);
    if (e.fullUrl !== undefined) fields.push(`"fullUrl":${JSON.stringify(e.fullUrl)}`);
    if (e.resourceJson !== undefined) fields.push(`"resource":${e.resourceJson}`);
    else if (e.resource !== undefined) fields.push(`"resource":${stringifyFhirJson(e.resource)}`);
    if (e.search) fields.push(`"search":${JSON.stringify(e.search)}`);
    if (e.request) fields.push(`"request":${JSON.stringify(e.request)}`);
    if (e.response) fields.push(`"response":${JSON.stringify(e.response)}`);
    return `{${fields.join(',')}}`;
  });
  return `${head.slice(0, -1)}${head.length > 2 ? ',' : ''}"entry":[${parts.join(',')}]}`;
}
