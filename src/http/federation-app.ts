/**
 * The federation API's express app, served by the mutual-TLS listener (adapters/federation/listener.ts) at
 * /federation/fhir. Every request passes the gate (federation/gate.ts: peer 403, assertion 401) before
 * the route table (federation/routes.ts) is consulted, so no handler, and no data, is reached by anyone
 * else. Answers are FHIR JSON; every failure is an OperationOutcome. The log names the interaction, the
 * peer member and the status: never the assertion's claims (user, link token) nor content.
 */
import type { TLSSocket } from 'node:tls';
import express, { type Request, type Response } from 'express';
import { ASSERTION_HEADER } from '../federation/assertion.ts';
import type { Certification, FederationGate } from '../federation/gate.ts';
import { FEDERATION_BASE_PATH, matchFederationRoute, type FederationRoute } from '../federation/routes.ts';
import { stringifyFhirJson } from '../fhir/json.ts';
import { errors, FhirError, operationOutcome } from '../fhir/outcome.ts';
import { log } from '../log.ts';

export interface FederationAppOptions {
  /** This holder's member id. */
  self: string;
  gate: FederationGate;
  routes: FederationRoute[];
}

function sendOutcome(res: Response, response: { status: number; body?: object | string; headers?: Record<string, string>; contentType?: string }): void {
  for (const [k, v] of Object.entries(response.headers ?? {})) res.setHeader(k, v);
  res.status(response.status);
  if (response.body === undefined) {
    res.end();
    return;
  }
  const text = typeof response.body === 'string' ? response.body : stringifyFhirJson(response.body);
  const bytes = Buffer.from(text, 'utf8');
  res.setHeader('Content-Type', `${response.contentType ?? 'application/fhir+json'}; charset=utf-8`);
  res.setHeader('Content-Length', bytes.length);
  res.end(bytes);
}

function pathSegments(path: string): string[] {
  try {
    return path.split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    throw errors.badRequest('the URL path is not validly percent-encoded');
  }
}

function queryPairs(req: Request): Array<[string, string]> {
  const q = req.originalUrl.indexOf('?');
  return q < 0 ? [] : [...new URLSearchParams(req.originalUrl.slice(q + 1))];
}

export function createFederationApp(opts: FederationAppOptions): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');
  // The certificate is checked against the CA once per TLS connection; the ledger check runs per request.
  const certifications = new WeakMap<object, Certification>();
  const certificationOf = (socket: TLSSocket): Certification => {
    let certification = certifications.get(socket);
    if (!certification) {
      certification = socket.authorized ? opts.gate.certify(socket.getPeerCertificate?.()?.raw) : { problem: 'the peer certificate was not verified by TLS' };
      certifications.set(socket, certification);
    }
    return certification;
  };

  const federation = express.Router();
  federation.use(async (req: Request, res: Response) => {
    const started = performance.now();
    let interaction = 'unknown';
    let peer = '';
    let response;
    try {
      const admission = await opts.gate.admit(certificationOf(req.socket as TLSSocket), req.get(ASSERTION_HEADER));
      peer = admission.peer;
      const path = pathSegments(req.path);
      const method = req.method === 'HEAD' ? 'GET' : req.method;
      const { route, params } = matchFederationRoute(opts.routes, method, path);
      interaction = route.interaction;
      response = await route.handler({ method, path, query: queryPairs(req), peer, assertion: admission.assertion, self: opts.self }, params);
    } catch (e) {
      const error = e instanceof FhirError ? e : internalError(e, interaction);
      response = { status: error.status, headers: error.headers, body: error.outcome };
    }
    try {
      sendOutcome(res, response);
    } finally {
      log(response.status >= 400 && response.status !== 404 ? 'warn' : 'info', 'federation_request', {
        interaction, method: req.method, peer, status: res.statusCode, ms: Math.round(performance.now() - started),
      });
    }
  });
  app.use(FEDERATION_BASE_PATH, federation);
  app.use((_req, res) => {
    sendOutcome(res, { status: 404, body: operationOutcome([{ severity: 'error', code: 'not-found', diagnostics: `not found; the federation API is at ${FEDERATION_BASE_PATH}` }]) });
  });
  return app;
}

function internalError(e: unknown, interaction: string): FhirError {
  // Only the error's type is logged: messages of foreign errors may quote data.
  log('error', 'federation_internal_error', { interaction, error: (e as Error)?.name ?? 'unknown' });
  return new FhirError(500, [{ severity: 'fatal', code: 'exception', diagnostics: 'internal server error' }]);
}
