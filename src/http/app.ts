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
import { isPatchMediaType, PATCH_FORMATS_ACCEPTED } from '../fhir/operations/patch.ts';
import { publicBaseUrl, type BaseUrlOptions } from './base-url.ts';
import { log } from '../log.ts';
import type { AccessLog } from '../audit/access-log.ts';
import type { FederatedRecordPort } from '../federation/federated-everything.ts';
import { Metrics } from './metrics.ts';
import { BREAK_GLASS_HEADER, PURPOSE_HEADER, type ConsentSettings } from '../access/consent-local.ts';

export interface AppOptions {
  repo: FhirRepository;
  issuer: DevIssuer;
  /** Fixed public FHIR base URL; without it, derived from a Host that names this gateway (see publicBaseUrl). */
  baseUrl?: string;
  /** The configured listen address: its host name is a Host the gateway answers to (also localhost and 127.0.0.1). */
  listen?: { host: string; port: number };
  /** Proxies (IPs or CIDRs) whose Forwarded / X-Forwarded-Host / X-Forwarded-Proto headers are believed. */
  trustedProxies?: string[];
  /** Request body limit in bytes. */
  maxBodyBytes: number;
  /** Where every authenticated FHIR request is recorded (an AuditEvent per request). */
  accessLog?: AccessLog;
  /** The consortium ledger: read-path anchor checks, proofs, and its state in /readyz and /metrics. */
  ledger?: LedgerService;
  /** The federated record (Patient/$everything?federated=true); absent when the gateway does not federate. */
  federation?: FederatedRecordPort;
  metrics?: Metrics;
  /** This member and the consortium's default Consent policy, for requests that state a purpose of use. */
  consent?: ConsentSettings;
}

const JSON_TYPES = new Set(['application/fhir+json', 'application/json']);
const FORM = 'application/x-www-form-urlencoded';
/** `_format` values (FHIR's short names and media types) and the media type each answers with. */
const FORMATS = new Map([
  ['json', 'application/fhir+json'],
  ['application/fhir+json', 'application/fhir+json'],
  ['application/json', 'application/json'],
  ['application/json+fhir', 'application/fhir+json'],
]);
/** Invalid UTF-8 is refused, never decoded to U+FFFD (decode() of a whole buffer keeps no state). */
const UTF8 = new TextDecoder('utf-8', { fatal: true });
/** A request without a token reaches only the capability statement; it gets no grants. */
const NO_TOKEN: AuthContext = { subject: '', grants: [] };

function mediaType(header: string | undefined): string | undefined {
  return header?.split(';')[0].trim().toLowerCase() || undefined;
}

/** The response content type the client asked for with _format or Accept (406 when not JSON). */
function responseType(req: Request, query: Array<[string, string]>): string {
  const formats = query.filter(([k]) => k === '_format').map(([, v]) => FORMATS.get(mediaType(v) ?? ''));
  if (formats.length > 0) {
    if (formats.some((f) => f === undefined)) {
      throw errors.notAcceptable(`_format is not supported; this server speaks FHIR JSON (_format ${[...FORMATS.keys()].join(', ')})`);
    }
    return formats[0]!;
  }
  const accept = req.get('Accept');
  if (!accept) return 'application/fhir+json';
  const types = accept.split(',').map((a) => mediaType(a));
  if (types.some((t) => t === '*/*' || t === 'application/*' || FORMATS.get(t ?? '') === 'application/fhir+json')) return 'application/fhir+json';
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

/** The bearer token's identity (401 without one, or with one that does not verify). */
async function authenticate(issuer: DevIssuer, header: string | undefined): Promise<AuthContext> {
  const m = header && /^Bearer\s+(\S+)$/i.exec(header);
  if (!m) throw errors.unauthorized('an Authorization: Bearer token is required');
  return verifyToken(issuer, m[1]).catch((e: unknown) => {
    throw e instanceof InvalidTokenError ? errors.unauthorized(e.message) : e;
  });
}

/** FHIR and SMART clients read the capability statement before they have a token. */
function isPublic(method: string, path: string[]): boolean {
  return method === 'GET' && path.length === 1 && path[0] === 'metadata';
}

/** `POST [type]/_search` and `POST _search`: a search whose parameters come in a form-encoded body. */
function isSearchPost(method: string, path: string[]): boolean {
  return method === 'POST' && path.length <= 2 && path.at(-1) === '_search';
}

/** The body as text: UTF-8 only; another declared charset is refused (415), invalid bytes too (400). */
function bodyText(req: Request): string {
  const charset = /;\s*charset\s*=\s*"?([^";\s]*)/i.exec(req.get('Content-Type') ?? '')?.[1].toLowerCase();
  if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') {
    throw errors.unsupportedMediaType('the body must be UTF-8: send charset=utf-8 or no charset');
  }
  try {
    return UTF8.decode(req.body as Buffer);
  } catch {
    throw errors.badRequest('the body is not valid UTF-8');
  }
}

interface Body {
  /** Parsed FHIR JSON. */
  json?: unknown;
  contentType?: string;
  /** The parameters of a form-encoded search. */
  form?: Array<[string, string]>;
}

function readBody(req: Request, method: string, path: string[]): Body {
  if (!Buffer.isBuffer(req.body) || req.body.length === 0) return {};
  const type = mediaType(req.get('Content-Type'));
  if (isSearchPost(method, path)) {
    if (type !== FORM) throw errors.unsupportedMediaType(`POST _search takes its parameters as ${FORM}`);
    return { form: [...new URLSearchParams(bodyText(req))] };
  }
  if (method === 'PATCH') {
    if (!isPatchMediaType(type)) throw errors.unsupportedMediaType(PATCH_FORMATS_ACCEPTED);
  } else if (type === FORM) {
    throw errors.unsupportedMediaType(`${FORM} is accepted only by POST [type]/_search`);
  } else if (!JSON_TYPES.has(type ?? '')) {
    throw errors.unsupportedMediaType('Content-Type must be application/fhir+json or application/json');
  }
  try {
    return { json: parseFhirJson(bodyText(req)), contentType: type };
  } catch (e) {
    if (e instanceof FhirJsonSyntaxError) throw errors.badRequest(`the body is not valid JSON: ${e.message}`);
    throw e;
  }
}

/** True when an If-None-Match header lists the response's ETag (weak comparison) or is `*`. */
function notModified(ifNoneMatch: string | undefined, etag: string | undefined): boolean {
  if (!ifNoneMatch || !etag) return false;
  const opaque = (tag: string) => tag.trim().replace(/^W\//, '');
  return ifNoneMatch.split(',').some((tag) => tag.trim() === '*' || opaque(tag) === opaque(etag));
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
  // Not res.send: its freshness check would answer 304 to any If-None-Match: * (a search included).
  const bytes = Buffer.from(text, 'utf8');
  res.setHeader('Content-Length', bytes.length);
  res.end(bytes);
}

export function createApp(opts: AppOptions): express.Express {
  const metrics = opts.metrics ?? new Metrics();
  const app = express();
  app.disable('x-powered-by');
  // ETags are FHIR versions, set by the handlers; a hash of the body would make searches and errors cacheable.
  app.set('etag', false);
  app.set('query parser', 'simple');
  if (opts.trustedProxies?.length) app.set('trust proxy', opts.trustedProxies);
  const baseUrlOf = (req: Request) =>
    opts.baseUrl ?? publicBaseUrl(req, { listen: opts.listen, trusted: app.get('trust proxy fn') as BaseUrlOptions['trusted'] });

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
      const query = queryPairs(req);
      contentType = responseType(req, query);
      const baseUrl = baseUrlOf(req);
      path = pathSegments(req.path);
      const method = req.method === 'HEAD' ? 'GET' : req.method;
      const authorization = req.get('Authorization');
      if (authorization !== undefined || !isPublic(method, path)) auth = await authenticate(opts.issuer, authorization);
      const body = readBody(req, method, path);
      if (body.form) query.push(...body.form);
      interaction = matchRoute(method, path, query).route.interaction;
      const ctx: FhirContext = { repo: opts.repo, baseUrl, ledger: opts.ledger, consent: opts.consent, federation: opts.federation };
      ctx.dispatch = (r) => routeRequest(r, ctx);
      const fhirRequest: FhirRequest = {
        method,
        path,
        query,
        body: body.json,
        contentType: body.contentType,
        ifMatch: req.get('If-Match'),
        ifNoneExist: req.get('If-None-Exist'),
        preferReturn: preferReturn(req),
        preferHandling: preferHandling(req),
        purposeOfUse: req.get(PURPOSE_HEADER),
        breakGlassReason: req.get(BREAK_GLASS_HEADER),
        // Unauthenticated requests reach only public routes; they are not access-logged (no actor).
        auth: auth ?? NO_TOKEN,
      };
      response = await routeRequest(fhirRequest, ctx);
      // A read the client holds already (same version) answers 304; no other interaction does.
      if ((interaction === 'read' || interaction === 'vread') && response.status === 200 && notModified(req.get('If-None-Match'), response.headers?.ETag)) {
        response = { status: 304, headers: response.headers };
      }
    } catch (e) {
      const error = e instanceof FhirError ? e : internalError(e, interaction);
      response = { status: error.status, headers: error.headers, body: error.outcome };
    }
    try {
      // No answer leaves before its access-log record is durable: an access that is not logged never happened.
      if (auth && opts.accessLog) {
        await opts.accessLog.record(accessRecord(auth, req.method, path, interaction, response)).then(() => {
          if (response.disclosure?.breakTheGlass) metrics.breakGlass.inc({ side: 'holder' });
        }, () => {
          const error = errors.accessLogUnavailable();
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
    ...response.disclosure,
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
