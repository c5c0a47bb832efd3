/** The express application: health, readiness, metrics, and the FHIR API at /fhir. */
import express, { type NextFunction, type Request, type Response } from 'express';
import { InvalidTokenError, verifyToken, type AuthContext, type DevIssuer } from '../access/tokens.ts';
import type { FhirContext, FhirRequest, FhirResponse, PreferHandling, PreferReturn } from '../fhir/context.ts';
import { FhirJsonSyntaxError, parseFhirJson, stringifyFhirJson } from '../fhir/json.ts';
import { errors, FhirError, operationOutcome } from '../fhir/outcome.ts';
import { TamperedContentError } from '../vault/encrypted-store.ts';
import { AnchorMismatchError, type LedgerService } from '../ledger/service.ts';
import { ID_PATTERN, type FhirRepository } from '../fhir/repository.ts';
import { isKnownResourceType } from '../fhir/validation/index.ts';
import { matchRoute, routeRequest } from '../fhir/routes.ts';
import { log } from './log.ts';
import type { AccessLog } from '../audit/access-log.ts';
import { Metrics } from './metrics.ts';

export interface AppOptions {
  repo: FhirRepository;
  issuer: DevIssuer;
  /** Fixed public FHIR base URL; derived from each request's Host when absent. */
  baseUrl?: string;
  /** Request body limit in bytes. */
  maxBodyBytes: number;
  /** Where every authenticated FHIR request is recorded (an AuditEvent per request). */
  accessLog?: AccessLog;
  /** The consortium ledger: read-path anchor checks, proofs, and its state in /readyz and /metrics. */
  ledger?: LedgerService;
  metrics?: Metrics;
}

const JSON_TYPES = new Set(['application/fhir+json', 'application/json']);
const FORMAT_ALIASES: Record<string, string> = {
  json: 'application/fhir+json',
  'application/fhir+json': 'application/fhir+json',
  'application/json': 'application/json',
  'application/json+fhir': 'application/fhir+json',
};

function mediaType(header: string | undefined): string | undefined {
  return header?.split(';')[0].trim().toLowerCase() || undefined;
}

/** The response content type the client asked for with _format or Accept (406 when not JSON). */
function responseType(req: Request): string {
  const format = req.query._format;
  if (typeof format === 'string') {
    const t = FORMAT_ALIASES[format.toLowerCase()];
    if (!t) throw errors.notAcceptable(`_format=${format.slice(0, 40)} is not supported; this server speaks FHIR JSON`);
    return t;
  }
  const accept = req.get('Accept');
  if (!accept) return 'application/fhir+json';
  const types = accept.split(',').map((a) => mediaType(a)!);
  if (types.some((t) => t === 'application/fhir+json' || t === '*/*' || t === 'application/*')) return 'application/fhir+json';
  if (types.includes('application/json')) return 'application/json';
  throw errors.notAcceptable('Accept must allow application/fhir+json or application/json');
}

function preferReturn(req: Request): PreferReturn | undefined {
  const m = /return=(minimal|representation|OperationOutcome)/.exec(req.get('Prefer') ?? '');
  return m?.[1] as PreferReturn | undefined;
}

function preferHandling(req: Request): PreferHandling | undefined {
  const m = /handling=(strict|lenient)/.exec(req.get('Prefer') ?? '');
  return m?.[1] as PreferHandling | undefined;
}

function queryPairs(req: Request): Array<[string, string]> {
  const q = req.originalUrl.indexOf('?');
  return q < 0 ? [] : [...new URLSearchParams(req.originalUrl.slice(q + 1))];
}

function pathSegments(path: string): string[] {
  try {
    return path.split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    throw errors.badRequest('the URL path is not validly percent-encoded');
  }
}

function parseBody(req: Request): unknown {
  if (!Buffer.isBuffer(req.body) || req.body.length === 0) return undefined;
  const type = mediaType(req.get('Content-Type'));
  const allowed = req.method === 'PATCH' ? type === 'application/json-patch+json' : JSON_TYPES.has(type ?? '');
  if (!allowed) {
    throw errors.unsupportedMediaType(
      req.method === 'PATCH'
        ? 'PATCH needs Content-Type application/json-patch+json'
        : 'Content-Type must be application/fhir+json or application/json',
    );
  }
  try {
    return parseFhirJson(req.body.toString('utf8'));
  } catch (e) {
    if (e instanceof FhirJsonSyntaxError) throw errors.badRequest(`the body is not valid JSON: ${e.message}`);
    throw e;
  }
}

function send(res: Response, response: FhirResponse, contentType: string, pretty: boolean): void {
  for (const [k, v] of Object.entries(response.headers ?? {})) res.setHeader(k, v);
  res.status(response.status);
  if (response.body === undefined) {
    res.end();
    return;
  }
  let text = typeof response.body === 'string' ? response.body : stringifyFhirJson(response.body);
  if (pretty) text = stringifyFhirJson(parseFhirJson(text), 2);
  res.setHeader('Content-Type', `${response.contentType ?? contentType}; charset=utf-8`);
  res.send(text);
}

export function createApp(opts: AppOptions): express.Express {
  const metrics = opts.metrics ?? new Metrics();
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  const ledger = opts.ledger;
  if (ledger) metrics.observeLedger(() => ledger.member.status(), () => ledger.publisherCounters());
  app.get('/readyz', async (_req, res) => {
    const store = await opts.repo.store.ping().catch(() => false);
    const checks: Record<string, string> = { store: store ? 'ok' : 'down' };
    let degraded = false;
    if (ledger) {
      const status = ledger.member.status();
      // A divergence stops anchoring until an operator resolves it: the gateway is degraded, not down.
      if (status.divergences.length > 0) {
        degraded = true;
        checks.ledger = `diverged at block ${status.divergences.map((d) => d.blockNumber).join(', ')}`;
      } else {
        checks.ledger = status.failure
          ? 'down'
          : status.catchingUp
            ? 'catching up'
            : status.activeMember
              ? 'ok'
              : `${status.member} is not an active member of channel ${status.channel} (joining: waiting for the config change that adds it; or revoked)`;
      }
    }
    const ok = Object.values(checks).every((c) => c === 'ok');
    res.status(ok ? 200 : 503).json({ status: ok ? 'ready' : degraded ? 'degraded' : 'unavailable', checks });
  });
  app.get('/metrics', async (_req, res) => {
    res.setHeader('Content-Type', metrics.registry.contentType);
    res.send(await metrics.registry.metrics());
  });

  const fhir = express.Router();
  fhir.use(express.raw({ type: () => true, limit: opts.maxBodyBytes }));
  fhir.use(async (req: Request, res: Response) => {
    const started = performance.now();
    let interaction = 'unknown';
    let contentType = 'application/fhir+json';
    let auth: AuthContext | undefined;
    let path: string[] = [];
    let response: FhirResponse;
    const pretty = req.query._pretty === 'true';
    try {
      contentType = responseType(req);
      const header = req.get('Authorization');
      const m = header && /^Bearer\s+(\S+)$/i.exec(header);
      if (!m) throw errors.unauthorized('an Authorization: Bearer token is required');
      auth = await verifyToken(opts.issuer, m[1]).catch((e: unknown) => {
        throw e instanceof InvalidTokenError ? errors.unauthorized(e.message) : e;
      });
      path = pathSegments(req.path);
      const query = queryPairs(req);
      interaction = matchRoute(req.method === 'HEAD' ? 'GET' : req.method, path, query).route.interaction;
      const baseUrl = opts.baseUrl ?? `${req.protocol}://${req.get('host')}${req.baseUrl}`;
      const ctx: FhirContext = { repo: opts.repo, baseUrl, ledger: opts.ledger };
      ctx.dispatch = (r) => routeRequest(r, ctx);
      const fhirRequest: FhirRequest = {
        method: req.method === 'HEAD' ? 'GET' : req.method,
        path,
        query,
        body: parseBody(req),
        ifMatch: req.get('If-Match'),
        ifNoneExist: req.get('If-None-Exist'),
        preferReturn: preferReturn(req),
        preferHandling: preferHandling(req),
        auth,
      };
      response = await routeRequest(fhirRequest, ctx);
    } catch (e) {
      const error = e instanceof FhirError ? e : internalError(e, interaction);
      response = { status: error.status, headers: error.headers, body: error.outcome };
    }
    try {
      // No answer leaves before its access-log record is durable: an access that is not logged never happened.
      if (auth && opts.accessLog) {
        await opts.accessLog.record(accessRecord(auth, req.method, path, interaction, response)).catch(() => {
          const error = new FhirError(503, [{ severity: 'error', code: 'transient', diagnostics: 'the access log cannot be written; nothing was returned' }], { 'Retry-After': '5' });
          response = { status: error.status, headers: error.headers, body: error.outcome };
        });
      }
      send(res, response, contentType, pretty);
    } finally {
      metrics.requests.inc({ interaction, status: String(res.statusCode) });
      metrics.duration.observe({ interaction }, (performance.now() - started) / 1000);
      log('info', 'fhir_request', { interaction, method: req.method, status: res.statusCode, ms: Math.round(performance.now() - started) });
    }
  });
  // Errors raised before the handler (body too large, aborted upload) arrive here.
  fhir.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    const type = (err as { type?: string }).type;
    const error =
      type === 'entity.too.large'
        ? errors.payloadTooLarge(`the body exceeds the limit of ${opts.maxBodyBytes} bytes`)
        : type === 'request.aborted' || type === 'encoding.unsupported' || type === 'charset.unsupported'
          ? errors.badRequest('the request body could not be read')
          : internalError(err, 'body');
    res.status(error.status).type('application/fhir+json').send(JSON.stringify(error.outcome));
  });
  app.use('/fhir', fhir);
  app.use((_req, res) => {
    res.status(404).type('application/fhir+json').send(
      JSON.stringify(operationOutcome([{ severity: 'error', code: 'not-found', diagnostics: 'not found; the FHIR API is at /fhir' }])),
    );
  });
  return app;
}


/** What the access log keeps of a request: who, which interaction, which resource or type, the status. */
function accessRecord(auth: AuthContext, method: string, path: string[], interaction: string, response: FhirResponse) {
  // A create names its new resource only in the answer's Location.
  const created = /\/([A-Za-z]+)\/([^/]+)\/_history\/[^/]+$/.exec(response.headers?.Location ?? '');
  const [type, id] = path.length === 1 && created ? [created[1], created[2]] : path;
  // Only what makes a valid AuditEvent: a request for an unknown type or a malformed id is logged by type or not at all.
  const typed = type !== undefined && isKnownResourceType(type);
  return {
    actor: auth.subject,
    interaction,
    method,
    resource: typed && id !== undefined && ID_PATTERN.test(id) ? `${type}/${id}` : undefined,
    resourceType: typed ? type : undefined,
    patient: auth.patient !== undefined && ID_PATTERN.test(auth.patient) ? auth.patient : undefined,
    status: response.status,
    recorded: new Date().toISOString(),
  };
}

function internalError(e: unknown, interaction: string): FhirError {
  if (e instanceof AnchorMismatchError) {
    log('error', 'ledger_integrity_alarm', { interaction, type: e.type, id: e.id, version: e.versionId });
    return new FhirError(500, [{ severity: 'fatal', code: 'exception', diagnostics: `${e.message}; the incident is logged` }]);
  }
  if (e instanceof TamperedContentError) {
    // An integrity alarm, not a bug: stored bytes were altered or moved. Type, id and version are not PHI.
    log('error', 'vault_integrity_alarm', { interaction, type: e.type, id: e.id, version: e.versionId });
    return new FhirError(500, [{ severity: 'fatal', code: 'exception', diagnostics: `${e.message}; the incident is logged` }]);
  }
  // Only the error's type and stack are logged: messages of foreign errors may quote data.
  log('error', 'internal_error', { interaction, error: (e as Error)?.name ?? 'unknown', stack: (e as Error)?.stack?.split('\n').slice(1, 6).join(' | ') ?? '' });
  return new FhirError(500, [{ severity: 'fatal', code: 'exception', diagnostics: 'internal server error' }]);
}
