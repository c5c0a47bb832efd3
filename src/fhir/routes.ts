/**
 * The route table of the FHIR API, read top to bottom: the first pattern whose segments match wins.
 * A path that matches some pattern but not with this method answers 405.
 */
import type { FhirContext, FhirRequest, FhirResponse, Handler } from './context.ts';
import { errors } from './outcome.ts';
import { matchPattern } from './route-pattern.ts';
import { capabilities } from './operations/capabilities.ts';
import { processBundle } from './operations/bundle.ts';
import { create, createConditional } from './operations/create.ts';
import { read } from './operations/read.ts';
import { vread } from './operations/vread.ts';
import { update, updateConditional } from './operations/update.ts';
import { patch } from './operations/patch.ts';
import { remove, removeConditional } from './operations/delete.ts';
import { compartmentSearch, search, systemSearch } from './operations/search.ts';
import { instanceHistory, systemHistory, typeHistory } from './operations/history.ts';
import { validate } from './operations/validate.ts';
import { everything, everythingByIdentifier } from './operations/everything.ts';
import { erase } from './operations/erase.ts';
import { checkpoint, consistency, proof } from './operations/proof.ts';

export interface Route {
  method: string;
  /** Segments: literals, or `:name` captures. `?` marks routes that need a query string. */
  pattern: string;
  handler: Handler;
  /** Name of the interaction, for metrics and logs (never carries ids or values). */
  interaction: string;
}

export const ROUTES: Route[] = [
  // The whole server
  { method: 'GET', pattern: 'metadata', handler: capabilities, interaction: 'capabilities' },
  { method: 'GET', pattern: '', handler: systemSearch, interaction: 'search-system' },
  { method: 'POST', pattern: '', handler: processBundle, interaction: 'batch/transaction' },
  { method: 'POST', pattern: '_search', handler: systemSearch, interaction: 'search-system' },
  { method: 'GET', pattern: '_history', handler: systemHistory, interaction: 'history-system' },
  { method: 'GET', pattern: '$checkpoint', handler: checkpoint, interaction: 'ledger-checkpoint' },
  { method: 'GET', pattern: '$consistency', handler: consistency, interaction: 'ledger-consistency' },
  // A type
  { method: 'GET', pattern: ':type', handler: search, interaction: 'search-type' },
  { method: 'POST', pattern: ':type?', handler: createConditional, interaction: 'conditional-create' },
  { method: 'POST', pattern: ':type', handler: create, interaction: 'create' },
  { method: 'PUT', pattern: ':type?', handler: updateConditional, interaction: 'conditional-update' },
  { method: 'DELETE', pattern: ':type?', handler: removeConditional, interaction: 'conditional-delete' },
  { method: 'GET', pattern: ':type/_history', handler: typeHistory, interaction: 'history-type' },
  { method: 'POST', pattern: ':type/_search', handler: search, interaction: 'search-type' },
  { method: 'POST', pattern: ':type/$validate', handler: validate, interaction: 'validate' },
  // One resource
  { method: 'GET', pattern: ':type/:id', handler: read, interaction: 'read' },
  { method: 'PUT', pattern: ':type/:id', handler: update, interaction: 'update' },
  { method: 'PATCH', pattern: ':type/:id', handler: patch, interaction: 'patch' },
  { method: 'DELETE', pattern: ':type/:id', handler: remove, interaction: 'delete' },
  { method: 'GET', pattern: ':type/:id/_history', handler: instanceHistory, interaction: 'history-instance' },
  { method: 'GET', pattern: ':type/:id/_history/:vid', handler: vread, interaction: 'vread' },
  { method: 'GET', pattern: ':type/:id/_history/:vid/$proof', handler: proof, interaction: 'proof' },
  { method: 'POST', pattern: ':type/:id/$validate', handler: validate, interaction: 'validate' },
  // A patient's compartment
  { method: 'GET', pattern: 'Patient/$everything', handler: everythingByIdentifier, interaction: 'everything' },
  { method: 'GET', pattern: 'Patient/:id/$everything', handler: everything, interaction: 'everything' },
  { method: 'POST', pattern: 'Patient/:id/$everything', handler: everything, interaction: 'everything' },
  { method: 'POST', pattern: 'Patient/:id/$erase', handler: erase, interaction: 'erase' },
  { method: 'GET', pattern: 'Patient/:id/:type', handler: compartmentSearch, interaction: 'search-compartment' },
];

interface Match {
  route: Route;
  params: Record<string, string>;
}

/** Query parameters that only shape the response do not make a request conditional. */
function hasCriteria(query: Array<[string, string]>): boolean {
  return query.some(([k]) => k !== '_format' && k !== '_pretty');
}

export function matchRoute(method: string, path: string[], query: Array<[string, string]>): Match {
  const hasQuery = hasCriteria(query);
  let pathMatched = false;
  for (const route of ROUTES) {
    const params = matchPattern(route, path, hasQuery);
    if (!params) continue;
    if (route.method === method || (method === 'HEAD' && route.method === 'GET')) return { route, params };
    pathMatched = true;
  }
  if (pathMatched) throw errors.methodNotAllowed(`${method} is not allowed on this URL`);
  throw errors.notFound('no FHIR interaction is defined at this URL');
}

/** Runs a request through the route table. */
export async function routeRequest(req: FhirRequest, ctx: FhirContext): Promise<FhirResponse> {
  const { route, params } = matchRoute(req.method, req.path, req.query);
  return route.handler(req, ctx, params);
}
