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
import { mergedDisclosure, statedPurpose, type DisclosureFacts } from '../../access/consent-local.ts';
import { randomUUID } from 'node:crypto';
import type { FhirContext, FhirRequest, FhirResponse, Handler } from '../context.ts';
import { serializeBundle, type BundleEntryParts } from '../bundle-json.ts';
import { cloneFhirJson, stringifyFhirJson } from '../json.ts';
import { errors, FhirError } from '../outcome.ts';
import { parseConditionalReference, rewriteReferences } from '../references.ts';
import type { FhirResource, WriteSession } from '../repository.ts';
import type { Access } from '../../access/policy.ts';
import type { MatchScope } from '../write-session.ts';
import { parseIfMatch, resourceBody } from './common.ts';
import { authorizeCreate, authorizeDelete, authorizeUpdate, matchOne, matchScope } from './authorization.ts';
import { createResource, type WriteOutcome } from './create.ts';
import { conditionalDelete, deleteResource, type DeleteOutcome } from './delete.ts';
import { entryPatch, patchResource } from './patch.ts';
import { conditionalUpdateTarget, updateResource } from './update.ts';

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
  /** Conditional PUT that matched nothing and creates under a new server-assigned id. */
  serverAssigned?: boolean;
  /** What the token may do for this entry's interaction (GET/HEAD entries are authorized by their handler). */
  access?: Access;
}

/**
 * The entry's interaction authorized exactly as the top-level one: the same scope checks, before anything
 * is matched or written. The content checks run when the entry is written, after its references resolved.
 */
function authorizeEntry(p: PlannedEntry, req: FhirRequest): Access | undefined {
  const conditional = !p.id && p.query !== undefined;
  switch (p.method) {
    case 'POST':
      return authorizeCreate(req, p.type, p.ifNoneExist !== undefined);
    case 'PUT':
      return authorizeUpdate(req, p.type, conditional);
    case 'PATCH':
      return authorizeUpdate(req, p.type, false);
    case 'DELETE':
      return authorizeDelete(req, p.type, conditional);
    default:
      return undefined;
  }
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

function planEntry(entry: BundleEntry, index: number, req: FhirRequest, baseUrl: string): PlannedEntry {
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
  try {
    planned.access = authorizeEntry(planned, req);
  } catch (e) {
    throw entryError(index, e);
  }
  return planned;
}

/** Decides ids up front so that urn:uuid fullUrls can be rewritten before anything is written. */
async function assignIdentity(session: WriteSession, p: PlannedEntry, scope: MatchScope): Promise<void> {
  if (p.method === 'POST') {
    const match = p.ifNoneExist === undefined ? undefined : await matchOne(session, p.type, p.ifNoneExist, scope, 'ifNoneExist');
    p.existing = match !== undefined;
    p.plannedId = match ?? randomUUID();
  } else if (p.method === 'PUT' && !p.id && p.query !== undefined) {
    const target = await conditionalUpdateTarget(session, p.resource!, p.query, p.access!, scope);
    p.plannedId = target.id;
    p.serverAssigned = target.serverAssigned;
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
  scope: MatchScope,
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
    const match = await matchOne(session, type, query, scope, `the conditional reference ${type}?…`);
    if (match === undefined) throw errors.notFound(`the conditional reference ${type}?… matched no ${type}`);
    conditional.set(ref, `${type}/${match}`);
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
  const access = p.access!;
  switch (p.method) {
    case 'POST':
      return writeEntry(await createResource(session, p.resource!, access, p.existing ? { existingId: p.plannedId } : { id: p.plannedId }), req);
    case 'PUT': {
      const resource = p.id ? p.resource! : { ...p.resource!, id: p.plannedId };
      return writeEntry(await updateResource(session, resource, p.plannedId!, access, p.ifMatch, p.serverAssigned), req);
    }
    case 'PATCH':
      if (!p.id) throw errors.notSupported('conditional PATCH is not supported');
      return writeEntry(await patchResource(session, p.type, p.id, entryPatch(p.resource), access, p.ifMatch), req);
    case 'DELETE':
      if (p.id) return deleteEntry(await deleteResource(session, p.type, p.id, access, p.ifMatch));
      return deleteEntry(await conditionalDelete(session, p.type, p.query ?? '', access, matchScope(req, 'conditional delete')));
    default:
      throw new Error(`not a write: ${p.method}`);
  }
}

/** A batch's GET/HEAD entry, after its writes are committed: a failed read is reported in its own entry. */
async function executeRead(p: PlannedEntry, req: FhirRequest, ctx: FhirContext, disclosures: DisclosureFacts[]): Promise<BundleEntryParts> {
  try {
    return await dispatchRead(p, req, ctx, disclosures);
  } catch (e) {
    return failedEntry(entryError(p.index, e));
  }
}

/**
 * GET/HEAD entries go through the same route table as top-level requests (which throw on failure), under the
 * bundle's stated purpose: what Consent decided for each is collected for the bundle's access record.
 */
async function dispatchRead(p: PlannedEntry, req: FhirRequest, ctx: FhirContext, disclosures: DisclosureFacts[]): Promise<BundleEntryParts> {
  const res = await ctx.dispatch!({
    method: 'GET',
    path: p.path,
    query: [...new URLSearchParams(p.query ?? '')],
    auth: req.auth,
    purposeOfUse: req.purposeOfUse,
    breakGlassReason: req.breakGlassReason,
  });
  if (res.disclosure) disclosures.push(res.disclosure);
  const body = typeof res.body === 'string' ? res.body : res.body ? stringifyFhirJson(res.body) : undefined;
  return {
    resourceJson: p.method === 'HEAD' ? undefined : body,
    response: { status: STATUS_TEXT[res.status] ?? String(res.status), ...(res.headers?.ETag ? { etag: res.headers.ETag } : {}) },
  };
}

function failedEntry(e: FhirError): BundleEntryParts {
  return { response: { status: String(e.status), outcome: e.outcome } };
}

async function transaction(req: FhirRequest, ctx: FhirContext, planned: PlannedEntry[], entries: BundleEntry[], disclosures: DisclosureFacts[]) {
  const results: BundleEntryParts[] = new Array(planned.length);
  const scope = matchScope(req, 'transaction');
  await ctx.repo.write(async (session) => {
    const targets = new Map<string, string>();
    for (const p of planned) {
      try {
        await assignIdentity(session, p, scope);
      } catch (e) {
        throw entryError(p.index, e);
      }
      const fullUrl = entries[p.index].fullUrl;
      if (fullUrl && p.plannedId) targets.set(fullUrl, `${p.type}/${p.plannedId}`);
    }
    const conditional = new Map<string, string>();
    for (const p of planned) {
      try {
        await resolveReferences(session, p, targets, conditional, scope);
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
        results[p.index] = await dispatchRead(p, req, ctx, disclosures);
      } catch (e) {
        throw entryError(p.index, e);
      }
    }
  });
  return results;
}

async function batch(req: FhirRequest, ctx: FhirContext, entries: BundleEntry[], disclosures: DisclosureFacts[]) {
  const results: BundleEntryParts[] = new Array(entries.length);
  const reads: PlannedEntry[] = [];
  const scope = matchScope(req, 'batch');
  await ctx.repo.write(async (session) => {
    const targets = new Map<string, string>();
    const planned: PlannedEntry[] = [];
    for (let i = 0; i < entries.length; i++) {
      try {
        const p = planEntry(entries[i], i, req, ctx.baseUrl);
        await assignIdentity(session, p, scope);
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
        await resolveReferences(session, p, targets, conditional, scope);
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
  for (const p of reads) results[p.index] = await executeRead(p, req, ctx, disclosures);
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
  // A stated purpose is checked before anything is written or read (its reads are decided under Consent).
  const stated = statedPurpose(req);
  const disclosures: DisclosureFacts[] = [];
  const results =
    bundle.type === 'transaction'
      ? await transaction(req, ctx, entries.map((e, i) => planEntry(e, i, req, ctx.baseUrl)), entries, disclosures)
      : await batch(req, ctx, entries, disclosures);
  const body = serializeBundle({ resourceType: 'Bundle', type: `${bundle.type}-response` }, results);
  return { status: 200, body, ...(stated && { disclosure: mergedDisclosure(stated.purpose, disclosures) }) };
};

