/**
 * The federation API's route table (served at /federation/fhir on the mutual-TLS listener): plain async
 * handlers, like src/fhir/operations, that only ever see requests from an admitted member (gate.ts ran
 * first: TLS peer active on the ledger, requester assertion verified). Read top to bottom; the first
 * pattern whose segments match wins; a path that matches with another method answers 405.
 *
 * Holder operations are added with `federationRoutes([...])`; the metadata route lists them.
 */
import type { FhirResponse } from '../fhir/context.ts';
import { errors } from '../fhir/outcome.ts';
import { matchPattern } from '../fhir/route-pattern.ts';
import type { Assertion } from './assertion.ts';
import { federationCapabilities } from './operations/metadata.ts';

/** Where the listener serves the federation API. */
export const FEDERATION_BASE_PATH = '/federation/fhir';

/** A member's federation FHIR base, from its federation address (`https://host:port`). */
export function federationBase(address: string): string {
  return `${address.replace(/\/+$/, '')}${FEDERATION_BASE_PATH}`;
}

/** A request an admitted member sent over the channel. */
export interface FederationRequest {
  method: string;
  /** Path segments below /federation/fhir, percent-decoded. */
  path: string[];
  query: Array<[string, string]>;
  /** The asking member: its TLS certificate identifies it and the ledger says it is active. */
  peer: string;
  /** Its verified requester assertion (iss = peer, aud = this holder). */
  assertion: Assertion;
  /** The holder: this gateway's member id. */
  self: string;
}

export type FederationResponse = FhirResponse;
export type FederationHandler = (req: FederationRequest, params: Record<string, string>) => Promise<FederationResponse>;

export interface FederationRoute {
  method: 'GET' | 'POST';
  /** Segments below /federation/fhir: literals or `:name` captures (fhir/route-pattern.ts). */
  pattern: string;
  handler: FederationHandler;
  /** For metrics and logs: never carries ids or values. */
  interaction: string;
  /** A FHIR operation this route implements, advertised by the metadata route. */
  operation?: { name: string; definition: string; documentation: string };
}

/** The route table: the metadata route, then the holder operations given (in their order). */
export function federationRoutes(operations: FederationRoute[] = []): FederationRoute[] {
  const routes: FederationRoute[] = [];
  const metadata: FederationRoute = {
    method: 'GET', pattern: 'metadata', interaction: 'federation-metadata', handler: federationCapabilities(() => routes),
  };
  routes.push(metadata, ...operations);
  return routes;
}

export function matchFederationRoute(routes: FederationRoute[], method: string, path: string[]): { route: FederationRoute; params: Record<string, string> } {
  let pathMatched = false;
  for (const route of routes) {
    const params = matchPattern(route, path, false);
    if (!params) continue;
    if (route.method === method || (method === 'HEAD' && route.method === 'GET')) return { route, params };
    pathMatched = true;
  }
  if (pathMatched) throw errors.methodNotAllowed(`${method} is not allowed on this URL`);
  throw errors.notFound('no federation interaction is defined at this URL');
}
