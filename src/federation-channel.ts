/**
 * Wires the gateway-to-gateway channel (docs/federation.md, "The channel") from this member's consortium
 * directory and ledger replica: the client that asks other members, and, when a port is configured, the
 * mutual-TLS listener serving the federation route table to them; and the federated record on top of it
 * ("The federated record"): the holder operation on the listener, the asking side for the FHIR API, and the
 * adapters from their ports to the ledger service, the vault, Consent and the access log.
 */
import { FederationClient } from './adapters/federation/client.ts';
import { startFederationListener, type FederationListener } from './adapters/federation/listener.ts';
import { FederationGate } from './federation/gate.ts';
import type { LedgerView } from './federation/peers.ts';
import { federationBase, federationRoutes, type FederationRoute } from './federation/routes.ts';
import { createFederationApp } from './http/federation-app.ts';
import type { MemberConsortium } from './identity/consortium-dir.ts';
import type { LedgerMember } from './ledger/member.ts';
import type { LedgerService } from './ledger/service.ts';
import { log } from './log.ts';
import { decideConsent } from './access/consent.ts';
import { activeConsents } from './access/consent-source.ts';
import type { AccessLog } from './audit/access-log.ts';
import { FederatedRecord, HOLDER_EVERYTHING_PATH } from './federation/federated-everything.ts';
import { holderEverything } from './federation/operations/everything.ts';
import type { ConsentPort, FederationAccessLogPort, LinkedPatientsPort } from './federation/ports.ts';
import type { FhirRepository } from './fhir/repository.ts';
import type { Metrics } from './http/metrics.ts';
import type { Assertion } from './federation/assertion.ts';
import { errors } from './fhir/outcome.ts';

export interface Federation {
  client: FederationClient;
  /** Present when the configuration names a federation port. */
  listener?: FederationListener;
  close(): Promise<void>;
}

export interface FederationOptions {
  consortium: MemberConsortium;
  ledger: LedgerView;
  /** Where to serve the federation API; unset ⇒ this gateway only asks, it serves nothing. */
  listen?: { host: string; port: number };
  /** Holder operations added to the route table (after metadata). */
  operations?: FederationRoute[];
  /** A member's federation address; default: the ledger's (consortium.json, then setFederationAddress changes). */
  addressOf?: (memberId: string) => string | undefined;
  /** Default per-call timeout of the client. */
  timeoutMs?: number;
}

/** The replica's current membership and height, read at each use. */
export function ledgerView(member: LedgerMember): LedgerView {
  return { membership: () => member.currentMembership(), height: () => member.headHeader()?.number ?? -1 };
}

export async function openFederation(opts: FederationOptions): Promise<Federation> {
  const { consortium } = opts;
  const client = new FederationClient({
    signer: consortium.self,
    tls: consortium.tls,
    caCertificatePem: consortium.caCertificatePem,
    ledger: opts.ledger,
    addressOf: opts.addressOf ?? ((memberId) => opts.ledger.membership().federationAddress(memberId)),
    defaultTimeoutMs: opts.timeoutMs,
  });
  let listener: FederationListener | undefined;
  if (opts.listen) {
    const self = consortium.self.memberId;
    const gate = new FederationGate({ self, caCertificatePem: consortium.caCertificatePem, ledger: opts.ledger });
    const app = createFederationApp({ self, gate, routes: federationRoutes(opts.operations) });
    listener = await startFederationListener({ ...opts.listen, tls: consortium.tls, caCertificatePem: consortium.caCertificatePem, app }).catch(async (e) => {
      await client.close();
      throw new Error(`federation listener (MEDBLOCK_FEDERATION_PORT=${opts.listen!.port}): ${(e as Error).message}`, { cause: e });
    });
    log('info', 'federation_listening', { member: self, host: opts.listen.host, port: listener.port });
  }
  return {
    client,
    listener,
    close: async () => {
      await listener?.close();
      await client.close();
    },
  };
}

/** What the federated record needs from the rest of the gateway. */
export interface FederatedRecordWiring {
  consortium: MemberConsortium;
  ledger: { member: LedgerMember; service: LedgerService };
  repo: FhirRepository;
  linkedPatients: LinkedPatientsPort;
  accessLog?: AccessLog;
  metrics: Metrics;
  listen?: { host: string; port: number };
  timeoutMs?: number;
}

/** The channel with the holder operation on its listener, and the federated record asking through its client. */
export async function openFederatedRecord(w: FederatedRecordWiring): Promise<{ federation: Federation; record: FederatedRecord }> {
  const accessLog = w.accessLog && federationAccessLog(w.accessLog, w.metrics);
  const consent = consentPort(w.repo, w.consortium);
  const listenBase = w.listen && federationBase(`https://${w.listen.host}:${w.listen.port}`);
  const federation = await openFederation({
    consortium: w.consortium,
    ledger: ledgerView(w.ledger.member),
    listen: w.listen,
    timeoutMs: w.timeoutMs,
    operations: [{
      method: 'GET',
      pattern: HOLDER_EVERYTHING_PATH,
      interaction: 'federation-everything',
      operation: {
        name: 'everything',
        definition: 'http://hl7.org/fhir/OperationDefinition/Patient-everything',
        documentation: "The current versions of the linked patients' compartments that their Consent permits for the asking member, with commitment salts and anchor locations",
      },
      handler: (req) => holderEverything(
        { peer: req.peer, assertion: { ...req.assertion, link: linkOf(req.assertion) }, query: req.query },
        { repo: w.repo, linkedPatients: w.linkedPatients, consent, accessLog, baseUrl: listenBase ?? '' },
      ),
    }],
  });
  const client = federation.client;
  const record = new FederatedRecord({
    self: w.consortium.self.memberId,
    linkKey: w.consortium.patientTokenKey,
    linkSystems: w.consortium.federation.linkIdentifierSystems,
    ledger: { holdersOfLink: (token) => w.ledger.service.holdersOfLink(token), anchorFacts: (digests) => w.ledger.service.anchorFacts(digests) },
    client: {
      request: (member, path, query, claims, options) => client.requestText(member, path, query, claims, options),
      addressOf: (member) => client.addressOf(member),
    },
    linkedPatients: w.linkedPatients,
    accessLog,
    timeoutMs: w.timeoutMs,
  });
  return { federation, record };
}

/** The link token a holder request is about: the assertion must name one. */
function linkOf(assertion: Assertion): string {
  if (assertion.link === undefined) throw errors.badRequest('the requester assertion names no link token');
  return assertion.link;
}

/** Consent at the holder: the patient's active Consents, decided for the asking member and its user. */
function consentPort(repo: FhirRepository, consortium: MemberConsortium): ConsentPort {
  return {
    async decide(patientId, request) {
      const decision = decideConsent(await activeConsents(repo, patientId), request, consortium.federation.defaultConsent);
      return {
        permits: (type) => decision.permit[type] === true,
        ...(decision.consent !== 'default' && { consent: decision.consent }),
        breakTheGlass: decision.breakTheGlass,
      };
    },
  };
}

/** Access records at both ends; a break-the-glass is counted once its record is durable. */
function federationAccessLog(accessLog: AccessLog, metrics: Metrics): FederationAccessLogPort {
  return {
    async recordDisclosure(r) {
      await accessLog.recordDisclosure({
        side: 'holder', actor: r.user, requester: r.peer, purpose: r.purpose, breakTheGlass: r.breakTheGlass,
        consent: r.consents[0] ?? 'default', disclosed: r.disclosed, status: r.status,
      });
      if (r.breakTheGlass) metrics.breakGlass.inc({ side: 'holder' });
    },
    async recordFederatedRequest(r) {
      await accessLog.recordDisclosure({
        side: 'requester', actor: r.user, holders: r.holders.map((h) => h.member), purpose: r.purpose,
        breakTheGlass: r.breakTheGlass, status: 200,
      });
      if (r.breakTheGlass) metrics.breakGlass.inc({ side: 'requester' });
    },
  };
}
