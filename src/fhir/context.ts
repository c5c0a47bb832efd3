/** The shape of a FHIR interaction, independent of HTTP: what handlers receive and return. */
import type { AuthContext } from '../access/tokens.ts';
import type { FhirRepository } from './repository.ts';
import type { LedgerService } from '../ledger/service.ts';
import type { ConsentSettings, DisclosureFacts } from '../access/consent-local.ts';
import type { FederatedRecordPort } from '../federation/federated-everything.ts';

export type PreferReturn = 'minimal' | 'representation' | 'OperationOutcome';
/** `Prefer: handling=`: strict (the default) refuses unknown or unsupported parameters; lenient ignores them. */
export type PreferHandling = 'strict' | 'lenient';

export interface FhirRequest {
  method: string;
  /** Path segments after the FHIR base, e.g. ['Patient', '123', '_history', '2']. */
  path: string[];
  /** Query parameters in order (repeats allowed). */
  query: Array<[string, string]>;
  /** Parsed FHIR JSON body, if any. */
  body?: unknown;
  /** The body's media type without parameters (a PATCH's names its patch format). */
  contentType?: string;
  ifMatch?: string;
  ifNoneExist?: string;
  preferReturn?: PreferReturn;
  preferHandling?: PreferHandling;
  /** `X-Purpose-Of-Use` and `X-Break-Glass-Reason`, as sent: a stated purpose puts the request under Consent. */
  purposeOfUse?: string;
  breakGlassReason?: string;
  auth: AuthContext;
}

export interface FhirResponse {
  status: number;
  /** A resource object, or JSON text already serialized (stored versions are served as stored). */
  body?: object | string;
  headers?: Record<string, string>;
  /** For operations whose result is not a FHIR resource (a ledger proof): sent as-is with this media type. */
  contentType?: string;
  /** A request decided under Consent: what its access record states (purpose, deciding Consent, break-the-glass). */
  disclosure?: DisclosureFacts;
}

export interface FhirContext {
  repo: FhirRepository;
  /** Absolute FHIR base URL without a trailing slash, e.g. http://localhost:8080/fhir. */
  baseUrl: string;
  /** The consortium ledger (absent only in the benchmark's plaintext baseline). */
  ledger?: LedgerService;
  /** Runs a request through the route table (used by bundles for their GET entries). */
  dispatch?: (req: FhirRequest) => Promise<FhirResponse>;
  /** This member and the consortium's default Consent policy (absent: opt-in, no member). */
  consent?: ConsentSettings;
  /** The federated record (absent: this gateway does not federate; `federated=true` answers 400). */
  federation?: FederatedRecordPort;
}

export type Handler = (req: FhirRequest, ctx: FhirContext, params: Record<string, string>) => Promise<FhirResponse>;
