/**
 * Wires the federated record (docs/federation.md, "The federated record") onto the channel
 * (federation-channel.ts): the holder operation on the listener, the asking side for the FHIR API, and the
 * adapters from their ports to the ledger service, the vault, Consent and the access log.
 */
import { decideConsent } from './access/consent.ts';
import { activeConsents } from './access/consent-source.ts';
import type { AccessLog } from './audit/access-log.ts';
import { FederationCallError } from './adapters/federation/client.ts';
import { ledgerView, openFederation, type Federation } from './federation-channel.ts';
import type { Assertion } from './federation/assertion.ts';
import { FederatedRecord, HOLDER_EVERYTHING_PATH } from './federation/federated-everything.ts';
import { holderEverything } from './federation/operations/everything.ts';
import { MalformedHolderPageError } from './federation/remote-check.ts';
import type { ConsentPort, FederationAccessLogPort, LinkedPatientsPort } from './federation/ports.ts';
import { federationBase } from './federation/routes.ts';
import { errors } from './fhir/outcome.ts';
import type { FhirRepository } from './fhir/repository.ts';
import type { Metrics } from './http/metrics.ts';
import type { MemberConsortium } from './identity/consortium-dir.ts';
import type { LedgerMember } from './ledger/member.ts';
import type { LedgerService } from './ledger/service.ts';

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
      // An answer too large to take is a malformed one, not a holder that could not be reached.
      request: (member, path, query, claims, options) => client.requestText(member, path, query, claims, options).catch((e: unknown) => {
        if (e instanceof FederationCallError && e.failure === 'too-large') throw new MalformedHolderPageError('larger than this gateway takes');
        throw e;
      }),
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
        consents: (r.consents.length ? r.consents : ['default']).map((consent) => ({ consent, withheld: [] })), disclosed: r.disclosed, status: r.status,
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
