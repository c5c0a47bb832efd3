/**
 * Calls another member's federation API (fhir-kit-client over native fetch, with an undici Agent as the
 * dispatcher for mutual TLS 1.3). The server must prove it is the member this gateway meant: its
 * certificate chains to the consortium CA and identifies that member, active on this gateway's own
 * ledger replica (federation/peers.ts); anything else fails the handshake. Every request carries a fresh
 * requester assertion signed with this member's ledger key. Failures are FederationCallErrors naming the
 * member and what went wrong, never the request's content.
 *
 * `requestText` also hands back the answer's exact bytes: fhir-kit-client parses bodies with JSON.parse,
 * which turns the decimal `72.50` into 72.5, and a holder's commitments are over the exact lexemes. The
 * bytes are taken from the wire by an undici interceptor on this one request's dispatcher.
 */
import { Client, type FhirResource } from 'fhir-kit-client';
import type { PeerCertificate } from 'node:tls';
import { Agent, DecoratorHandler, type Dispatcher } from 'undici';
import { ASSERTION_HEADER, createAssertion, type AssertionClaims, type AssertionSigner } from '../../federation/assertion.ts';
import { DEFAULT_FEDERATION_TIMEOUT_MS } from '../../federation/federated-everything.ts';
import { checkPeer, type LedgerView } from '../../federation/peers.ts';
import { federationBase } from '../../federation/routes.ts';


export type FederationFailure =
  /** No federation address is known for the member. */
  | 'no-address'
  /** The member is not active on this gateway's ledger: it is not asked. */
  | 'inactive-member'
  /** The server's certificate does not identify the member that was meant. */
  | 'server-identity'
  | 'timeout'
  | 'aborted'
  /** Connection refused, TLS failure (e.g. the server refused this gateway's certificate), reset. */
  | 'unreachable'
  /** The server answered with an error status (its OperationOutcome is kept). */
  | 'http-error'
  /** The server answered something that is not FHIR JSON. */
  | 'bad-response'
  /** The answer grew past the client's limit (requestText); it was cut off. */
  | 'too-large';

export class FederationCallError extends Error {
  constructor(
    readonly member: string,
    readonly failure: FederationFailure,
    message: string,
    readonly status?: number,
    readonly outcome?: unknown,
  ) {
    super(`federation call to member ${member}: ${message}`);
    this.name = 'FederationCallError';
  }
}

/** The handshake's refusal of a server that is not the member meant (told apart from other TLS failures). */
class ServerIdentityError extends Error {}

export interface FederationClientOptions {
  /** This member: the assertion's issuer and signing key (consortium.self). */
  signer: AssertionSigner;
  /** This member's certificate and key (member.crt, member.key), presented to the server. */
  tls: { certificatePem: string; keyPem: string };
  caCertificatePem: string;
  /** This gateway's ledger replica: who is active, and their signing keys. */
  ledger: LedgerView;
  /** A member's federation address (`https://host:port`), if known. */
  addressOf(memberId: string): string | undefined;
  defaultTimeoutMs?: number;
  /** The most bytes requestText takes of one answer; default DEFAULT_MAX_RESPONSE_BYTES. */
  maxResponseBytes?: number;
}

/** Far above a holder's page of 1000 entries, far below what would exhaust the asking gateway's memory. */
export const DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024;

export interface FederationCallOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

export class FederationClient {
  /** One dispatcher per (member, address): its server check is bound to that member. */
  readonly #agents = new Map<string, Agent>();

  constructor(private readonly options: FederationClientOptions) {}

  /**
   * GET `path` (below /federation/fhir, e.g. `metadata`, `Patient/$everything`) at member `memberId`,
   * with a fresh assertion carrying `claims`. Resolves with the FHIR JSON answer.
   */
  async request(
    memberId: string,
    path: string,
    query: Array<[string, string]> | Record<string, string> = [],
    claims: AssertionClaims,
    call: FederationCallOptions = {},
  ): Promise<FhirResource> {
    return this.#call(memberId, path, query, claims, call, this.#agent.bind(this));
  }

  /**
   * Like request, but resolves with the status and the body exactly as sent, for any status the member
   * answered with; rejects (FederationCallError) only when no answer came.
   */
  async requestText(
    memberId: string,
    path: string,
    query: Array<[string, string]> | Record<string, string>,
    claims: AssertionClaims,
    call: FederationCallOptions = {},
  ): Promise<{ status: number; text: string }> {
    const chunks: Buffer[] = [];
    const limit = this.options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
    // A member that streams without end is cut off at the limit, not buffered until memory runs out.
    const overflow = new AbortController();
    let received = 0;
    const keep = (chunk: Buffer) => {
      received += chunk.length;
      if (received > limit) overflow.abort();
      else chunks.push(Buffer.from(chunk));
    };
    const capture = (memberId: string, address: string) =>
      this.#agent(memberId, address).compose((dispatch) => (opts, handler) => dispatch(opts, capturing(handler, keep)));
    const signal = call.signal ? AbortSignal.any([call.signal, overflow.signal]) : overflow.signal;
    try {
      const body = await this.#call(memberId, path, query, claims, { ...call, signal }, capture);
      return { status: Client.httpFor(body).response?.status ?? 200, text: Buffer.concat(chunks).toString('utf8') };
    } catch (e) {
      if (overflow.signal.aborted) throw new FederationCallError(memberId, 'too-large', `the answer is larger than ${limit} bytes`);
      if (e instanceof FederationCallError && e.status !== undefined) return { status: e.status, text: Buffer.concat(chunks).toString('utf8') };
      throw e;
    }
  }

  async #call(
    memberId: string,
    path: string,
    query: Array<[string, string]> | Record<string, string>,
    claims: AssertionClaims,
    call: FederationCallOptions,
    dispatcherFor: (memberId: string, address: string) => Dispatcher,
  ): Promise<FhirResource> {
    const address = this.options.addressOf(memberId);
    if (!address) throw new FederationCallError(memberId, 'no-address', 'no federation address is known for this member');
    if (!this.options.ledger.membership().isActiveAt(memberId, this.options.ledger.height() + 1)) {
      throw new FederationCallError(memberId, 'inactive-member', 'the member is not active on this gateway\'s ledger');
    }
    const assertion = await createAssertion(this.options.signer, memberId, claims);
    const timeout = AbortSignal.timeout(call.timeoutMs ?? this.options.defaultTimeoutMs ?? DEFAULT_FEDERATION_TIMEOUT_MS);
    const signal = call.signal ? AbortSignal.any([timeout, call.signal]) : timeout;
    const client = new Client({ baseUrl: federationBase(address), requestOptions: { dispatcher: dispatcherFor(memberId, address) } });
    const search = new URLSearchParams(query).toString();
    const url = path.split('/').map((segment) => encodeURIComponent(segment).replace(/^%24/, '$')).join('/') + (search ? `?${search}` : '');
    try {
      // identity: the bytes the interceptor sees are the body itself, not a compressed form of it.
      return await client.request(url, { options: { headers: { [ASSERTION_HEADER]: assertion, 'accept-encoding': 'identity' }, signal } });
    } catch (e) {
      throw this.#failure(memberId, e, timeout, call.signal);
    }
  }

  /** The member's federation address, if known. */
  addressOf(memberId: string): string | undefined {
    return this.options.addressOf(memberId);
  }

  async close(): Promise<void> {
    const agents = [...this.#agents.values()];
    this.#agents.clear();
    await Promise.all(agents.map((agent) => agent.close()));
  }

  #agent(memberId: string, address: string): Agent {
    const key = `${memberId}\n${address}`;
    let agent = this.#agents.get(key);
    if (!agent) {
      const { caCertificatePem, tls, ledger } = this.options;
      agent = new Agent({
        connect: {
          ca: caCertificatePem,
          cert: tls.certificatePem,
          key: tls.keyPem,
          minVersion: 'TLSv1.3',
          // No TLS session resumption: Node skips checkServerIdentity on a resumed session.
          maxCachedSessions: 0,
          // Replaces the host-name check: member certificates name a member, not a host.
          checkServerIdentity: (_host: string, certificate: PeerCertificate) => {
            const check = checkPeer(caCertificatePem, certificate.raw, ledger.membership(), ledger.height());
            if (!check.ok) return new ServerIdentityError(check.reason);
            if (check.memberId !== memberId) return new ServerIdentityError(`the server is member ${check.memberId}, not ${memberId}`);
            return undefined;
          },
        },
      });
      this.#agents.set(key, agent);
    }
    return agent;
  }

  #failure(memberId: string, e: unknown, timeout: AbortSignal, callerSignal: AbortSignal | undefined): FederationCallError {
    const response = (e as { response?: { status?: number; data?: unknown } }).response;
    if (response?.status !== undefined) {
      if (typeof response.data === 'string') return new FederationCallError(memberId, 'bad-response', `the answer (status ${response.status}) is not JSON`, response.status);
      return new FederationCallError(memberId, 'http-error', `the member answered ${response.status}`, response.status, response.data);
    }
    if (timeout.aborted) return new FederationCallError(memberId, 'timeout', 'no answer in time');
    if (callerSignal?.aborted) return new FederationCallError(memberId, 'aborted', 'the call was cancelled');
    for (let cause: unknown = e; cause instanceof Error; cause = cause.cause) {
      if (cause instanceof ServerIdentityError) return new FederationCallError(memberId, 'server-identity', `the server is not the member meant: ${cause.message}`);
    }
    if (e instanceof SyntaxError) return new FederationCallError(memberId, 'bad-response', 'the answer is not JSON');
    const code = (e as { cause?: { code?: string } }).cause?.code;
    return new FederationCallError(memberId, 'unreachable', `the member cannot be reached${code ? ` (${code})` : ''}`);
  }
}

/** Passes every body chunk of one response on, showing each to `keep` first. */
function capturing(handler: Dispatcher.DispatchHandlers, keep: (chunk: Buffer) => void): Dispatcher.DispatchHandlers {
  const decorated = new DecoratorHandler(handler) as Dispatcher.DispatchHandlers;
  const onData = decorated.onData!.bind(decorated);
  decorated.onData = (chunk: Buffer) => {
    keep(chunk);
    return onData(chunk);
  };
  return decorated;
}
