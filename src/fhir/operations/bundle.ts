/**
 * POST [base] with a batch or transaction Bundle.
 *
 * A transaction runs in ONE write session: every entry is staged, then committed in one store batch, so
 * either all of it becomes visible or none of it (also across a crash: the store's commit is atomic).
 * Its GET/HEAD entries run last, as the spec orders, but still inside the transaction: before the commit,
 * so a failing read fails the whole transaction. They read the stored data, which does not hold the
 * transaction's own writes yet; reading by id a resource the transaction writes is refused rather than
 * answered with its old state (searches, which cannot be checked that way, see the stored data only).
 * A batch runs its entries independently; their successful writes are committed together, and its reads
 * run after that commit.
 *
 * Handlers never change the request they were given: entry resources are copied before their references
 * are rewritten, so the same Bundle object can be sent again (`medblock import` retries transactions).
 */
import { randomUUID } from 'node:crypto';
import type { FhirContext, FhirRequest, FhirResponse, Handler } from '../context.ts';
import { serializeBundle, type BundleEntryParts } from '../bundle-json.ts';
import { cloneFhirJson, parseFhirJson, stringifyFhirJson } from '../json.ts';
import { errors, FhirError } from '../outcome.ts';
import { parseConditionalReference, rewriteReferences } from '../references.ts';
import type { FhirResource, WriteSession } from '../repository.ts';
import { assertAccessible, parseIfMatch, requireAccess, resourceBody } from './common.ts';
import { createResource, type WriteOutcome } from './create.ts';
import { conditionalDelete, deleteResource, type DeleteOutcome } from './delete.ts';
import { entryPatch, patchResource } from './patch.ts';
import { updateResource } from './update.ts';

type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** Processing order the spec prescribes for a transaction. */
const ORDER: Record<Method, number> = { DELETE: 0, POST: 1, PUT: 2, PATCH: 2, GET: 3, HEAD: 3 };

interface BundleEntry {
  fullUrl?: string;
  resource?: FhirResource;
  request?: { method?: string; url?: string; ifNoneExist?: string; ifMatch?: string };
}

interface PlannedEntry {
  index: number;
  method: Method;
  type: string;
  id?: string;
  /** The query of a conditional or search URL. */
  query?: string;
  /** Path after the base for GET entries, e.g. ['Patient', '1']. */
  path: string[];
  resource?: FhirResource;
  ifNoneExist?: string;
  ifMatch?: number;
  /** Id decided before processing (POST: new or the single If-None-Exist match; conditional PUT: match). */
  plannedId?: string;
  /** POST whose If-None-Exist matched an existing resource: nothing is created. */
  existing?: boolean;
}

function entryError(index: number, e: unknown): FhirError {
  if (e instanceof FhirError) return e.within(`Bundle.entry[${index}]`);
  throw e;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** An entry that is no object, or has no request (bdl-3), makes the Bundle itself malformed: 400 for all of it. */
function assertEntryShape(entry: unknown, index: number): asserts entry is BundleEntry {
  const where = `Bundle.entry[${index}]`;
  if (!isObject(entry)) throw errors.badRequest(`${where} is not an object`, [where]);
  if (!isObject(entry.request)) {
    throw errors.badRequest(`${where}.request is missing: every entry of a batch or transaction needs one`, [`${where}.request`]);
  }
}

function parseEntryUrl(raw: string, baseUrl: string): { path: string[]; query?: string } {
  let url = raw.startsWith(`${baseUrl}/`) ? raw.slice(baseUrl.length + 1) : raw;
  if (url.startsWith('/')) url = url.slice(1);
  const q = url.indexOf('?');
  const path = (q >= 0 ? url.slice(0, q) : url).split('/').filter(Boolean);
  return { path, query: q >= 0 ? url.slice(q + 1) : undefined };
}

function planEntry(entry: BundleEntry, index: number, baseUrl: string): PlannedEntry {
  const where = `Bundle.entry[${index}]`;
  const method = entry.request?.method as Method | undefined;
  if (!method || !(method in ORDER)) throw errors.badRequest(`${where}.request.method must be GET, HEAD, POST, PUT, PATCH or DELETE`, [`${where}.request.method`]);
  if (typeof entry.request?.url !== 'string' || entry.request.url === '') {
    throw errors.badRequest(`${where}.request.url is missing`, [`${where}.request.url`]);
  }
  const { path, query } = parseEntryUrl(entry.request.url, baseUrl);
  const [type, id] = path;
  if (!type) throw errors.badRequest(`${where}.request.url names no resource type`, [`${where}.request.url`]);
  const planned: PlannedEntry = { index, method, type, id, query, path, ifNoneExist: entry.request.ifNoneExist };
  try {
    planned.ifMatch = parseIfMatch(entry.request.ifMatch);
    // A copy: resolveReferences rewrites references in place.
    if (method === 'POST' || method === 'PUT') planned.resource = cloneFhirJson(resourceBody(entry.resource, type));
    if (method === 'PATCH') planned.resource = entry.resource;
  } catch (e) {
    throw entryError(index, e);
  }
  if ((method === 'PUT' || method === 'PATCH' || method === 'DELETE') && !id && !query) {
    throw errors.badRequest(`${where}: ${method} needs Type/id or Type?criteria`, [`${where}.request.url`]);
  }
  if (method === 'POST' && path.length !== 1) throw errors.badRequest(`${where}: POST url must be a resource type`);
  return planned;
}

/** Decides ids up front so that urn:uuid fullUrls can be rewritten before anything is written. */
async function assignIdentity(session: WriteSession, p: PlannedEntry): Promise<void> {
  if (p.method === 'POST') {
    if (p.ifNoneExist !== undefined) {
      const matches = await session.findMatches(p.type, p.ifNoneExist);
      if (matches.length > 1) throw errors.preconditionFailed(`ifNoneExist matched more than one ${p.type}`, 'multiple-matches');
      if (matches.length === 1) {
        p.plannedId = matches[0];
        p.existing = true;
        return;
      }
    }
    p.plannedId = randomUUID();
  } else if (p.method === 'PUT' && !p.id && p.query !== undefined) {
    const matches = await session.findMatches(p.type, p.query);
    if (matches.length > 1) throw errors.preconditionFailed(`the conditional update matched more than one ${p.type}`, 'multiple-matches');
    const bodyId = typeof p.resource?.id === 'string' ? p.resource.id : undefined;
    p.plannedId = matches[0] ?? bodyId ?? randomUUID();
    if (bodyId !== undefined && bodyId !== p.plannedId) {
      throw errors.badRequest(`the body's id does not match the resource the condition selected`, ['id']);
    }
  } else if (p.id) {
    p.plannedId = p.id;
  }
}

/** Rewrites urn:uuid / fullUrl references to assigned ids and resolves conditional references. */
async function resolveReferences(
  session: WriteSession,
  p: PlannedEntry,
  targets: Map<string, string>,
  conditional: Map<string, string>,
): Promise<void> {
  if (!p.resource || p.method === 'PATCH') return;
  const pending: string[] = [];
  rewriteReferences(p.resource, (ref) => {
    const target = targets.get(ref) ?? conditional.get(ref);
    if (target === undefined && parseConditionalReference(ref)) pending.push(ref);
    return target;
  });
  for (const ref of pending) {
    if (conditional.has(ref)) continue;
    const { type, query } = parseConditionalReference(ref)!;
    const matches = await session.findMatches(type, query);
    if (matches.length === 0) throw errors.notFound(`the conditional reference ${type}?… matched no ${type}`);
    if (matches.length > 1) throw errors.preconditionFailed(`the conditional reference ${type}?… matched more than one ${type}`, 'multiple-matches');
    conditional.set(ref, `${type}/${matches[0]}`);
  }
  if (pending.length) rewriteReferences(p.resource, (ref) => conditional.get(ref));
}

const STATUS_TEXT: Record<number, string> = { 200: '200 OK', 201: '201 Created', 204: '204 No Content' };

function writeEntry(result: WriteOutcome, req: FhirRequest): BundleEntryParts {
  const v = result.version;
  const parts: BundleEntryParts = {
    response: {
      status: STATUS_TEXT[result.status] ?? String(result.status),
      location: `${v.type}/${v.id}/_history/${v.versionId}`,
      etag: `W/"${v.versionId}"`,
      lastModified: v.lastUpdated,
    },
  };
  if (req.preferReturn === 'representation') parts.resourceJson = v.json;
  return parts;
}

function deleteEntry(result: DeleteOutcome): BundleEntryParts {
  return { response: { status: STATUS_TEXT[result.status], ...(result.versionId ? { etag: `W/"${result.versionId}"` } : {}) } };
}

async function executeWrite(session: WriteSession, p: PlannedEntry, req: FhirRequest): Promise<BundleEntryParts> {
  switch (p.method) {
    case 'POST': {
      const access = requireAccess(req, p.type, 'c');
      assertAccessible(access, p.type, p.resource);
      if (p.existing) {
        const existing = (await session.current(p.type, p.plannedId!))!;
        return writeEntry({ status: 200, version: existing, message: '' }, req);
      }
      return writeEntry(await createResource(session, p.resource!, undefined, p.plannedId), req);
    }
    case 'PUT': {
      const access = requireAccess(req, p.type, 'u');
      assertAccessible(access, p.type, p.resource);
      const resource = p.id ? p.resource! : { ...p.resource!, id: p.plannedId };
      return writeEntry(await updateResource(session, resource, p.plannedId!, p.ifMatch), req);
    }
    case 'PATCH': {
      const access = requireAccess(req, p.type, 'u');
      if (!p.id) throw errors.notSupported('conditional PATCH is not supported');
      return writeEntry(await patchResource(session, p.type, p.id, entryPatch(p.resource), p.ifMatch, access), req);
    }
    case 'DELETE': {
      const access = requireAccess(req, p.type, 'd');
      if (p.id) return deleteEntry(await deleteResource(session, p.type, p.id, p.ifMatch, access));
      if (access.kind === 'patient') throw errors.forbidden('conditional delete needs a user/ or system/ scope');
      return deleteEntry(await conditionalDelete(session, p.type, p.query ?? ''));
    }
    default:
      throw new Error(`not a write: ${p.method}`);
  }
}

/** A batch's GET/HEAD entry, after its writes are committed: a failed read is reported in its own entry. */
async function executeRead(p: PlannedEntry, req: FhirRequest, ctx: FhirContext): Promise<BundleEntryParts> {
  try {
    return await dispatchRead(p, req, ctx);
  } catch (e) {
    return failedEntry(entryError(p.index, e));
  }
}

/** GET/HEAD entries go through the same route table as top-level requests (which throw on failure). */
async function dispatchRead(p: PlannedEntry, req: FhirRequest, ctx: FhirContext): Promise<BundleEntryParts> {
  const res = await ctx.dispatch!({
    method: 'GET',
    path: p.path,
    query: [...new URLSearchParams(p.query ?? '')],
    auth: req.auth,
  });
  const body = typeof res.body === 'string' ? res.body : res.body ? stringifyFhirJson(res.body) : undefined;
  return {
    resourceJson: p.method === 'HEAD' ? undefined : body,
    response: { status: STATUS_TEXT[res.status] ?? String(res.status), ...(res.headers?.ETag ? { etag: res.headers.ETag } : {}) },
  };
}

function failedEntry(e: FhirError): BundleEntryParts {
  return { response: { status: String(e.status), outcome: e.outcome } };
}

async function transaction(req: FhirRequest, ctx: FhirContext, planned: PlannedEntry[], entries: BundleEntry[]) {
  const results: BundleEntryParts[] = new Array(planned.length);
  await ctx.repo.write(async (session) => {
    const targets = new Map<string, string>();
    for (const p of planned) {
      try {
        await assignIdentity(session, p);
      } catch (e) {
        throw entryError(p.index, e);
      }
      const fullUrl = entries[p.index].fullUrl;
      if (fullUrl && p.plannedId) targets.set(fullUrl, `${p.type}/${p.plannedId}`);
    }
    const conditional = new Map<string, string>();
    for (const p of planned) {
      try {
        await resolveReferences(session, p, targets, conditional);
      } catch (e) {
        throw entryError(p.index, e);
      }
    }
    const writes = planned.filter((p) => ORDER[p.method] < 3).sort((a, b) => ORDER[a.method] - ORDER[b.method]);
    for (const p of writes) {
      session.label = `Bundle.entry[${p.index}]`;
      try {
        results[p.index] = await executeWrite(session, p, req);
      } catch (e) {
        throw entryError(p.index, e);
      }
    }
    // Reads last, still inside the session: throwing here aborts the transaction before its commit.
    const written = new Set(writes.filter((p) => !p.existing).map((p) => `${p.type}/${p.plannedId}`));
    for (const p of planned.filter((p) => ORDER[p.method] === 3)) {
      try {
        if (p.id && written.has(`${p.type}/${p.id}`)) {
          throw errors.badRequest(`${p.method} of a resource this transaction writes: its new state is not readable before the commit; read it after the transaction`);
        }
        results[p.index] = await dispatchRead(p, req, ctx);
      } catch (e) {
        throw entryError(p.index, e);
      }
    }
  });
  return results;
}

async function batch(req: FhirRequest, ctx: FhirContext, entries: BundleEntry[]) {
  const results: BundleEntryParts[] = new Array(entries.length);
  const reads: PlannedEntry[] = [];
  await ctx.repo.write(async (session) => {
    const targets = new Map<string, string>();
    const planned: PlannedEntry[] = [];
    for (let i = 0; i < entries.length; i++) {
      try {
        const p = planEntry(entries[i], i, ctx.baseUrl);
        await assignIdentity(session, p);
        const fullUrl = entries[i].fullUrl;
        if (fullUrl && p.plannedId) targets.set(fullUrl, `${p.type}/${p.plannedId}`);
        planned.push(p);
      } catch (e) {
        results[i] = failedEntry(entryError(i, e));
      }
    }
    const conditional = new Map<string, string>();
    const entryOfLabel = new Map<string, number>();
    for (const p of planned) {
      if (ORDER[p.method] === 3) {
        reads.push(p);
        continue;
      }
      session.label = `Bundle.entry[${p.index}]`;
      entryOfLabel.set(session.label, p.index);
      try {
        await resolveReferences(session, p, targets, conditional);
        results[p.index] = await executeWrite(session, p, req);
      } catch (e) {
        results[p.index] = failedEntry(entryError(p.index, e));
      }
    }
    // Entries that fail validation are dropped from the batch and answered with their outcome.
    for (const { label, error } of await session.check()) {
      results[entryOfLabel.get(label!)!] = failedEntry(error);
    }
  });
  for (const p of reads) results[p.index] = await executeRead(p, req, ctx);
  return results;
}

/** POST [base] */
export const processBundle: Handler = async (req, ctx): Promise<FhirResponse> => {
  const bundle = req.body as { resourceType?: unknown; type?: unknown; entry?: unknown };
  if (bundle?.resourceType !== 'Bundle') throw errors.badRequest('POST to the base needs a Bundle', ['resourceType']);
  if (bundle.type !== 'transaction' && bundle.type !== 'batch') {
    throw errors.badRequest('the Bundle type must be transaction or batch', ['Bundle.type']);
  }
  const entries: unknown = bundle.entry ?? [];
  if (!Array.isArray(entries)) throw errors.badRequest('Bundle.entry must be an array', ['Bundle.entry']);
  entries.forEach(assertEntryShape);
  const results =
    bundle.type === 'transaction'
      ? await transaction(req, ctx, entries.map((e, i) => planEntry(e, i, ctx.baseUrl)), entries)
      : await batch(req, ctx, entries);
  const body = serializeBundle({ resourceType: 'Bundle', type: `${bundle.type}-response` }, results);
  return { status: 200, body };
};

