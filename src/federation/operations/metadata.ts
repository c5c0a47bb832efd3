/**
 * GET /federation/fhir/metadata — the holder's CapabilityStatement for other members: the operations its
 * route table serves, and how a request is admitted. Generated from the route table, so nothing is
 * advertised that is not served.
 */
import { ASSERTION_HEADER, ASSERTION_TYPE } from '../assertion.ts';
import type { FederationHandler, FederationRoute } from '../routes.ts';

export function federationCapabilities(routes: () => FederationRoute[]): FederationHandler {
  return async (req) => {
    const byType = new Map<string, Array<NonNullable<FederationRoute['operation']>>>();
    for (const route of routes()) {
      if (!route.operation) continue;
      const type = route.pattern.split('/')[0];
      byType.set(type, [...(byType.get(type) ?? []), route.operation]);
    }
    return {
      status: 200,
      body: {
        resourceType: 'CapabilityStatement',
        status: 'active',
        date: new Date().toISOString(),
        kind: 'instance',
        software: { name: 'MedBlock Gateway federation listener' },
        implementation: { description: `Holder ${req.self}: the consortium's gateway-to-gateway API (mutual TLS, requester assertions)` },
        fhirVersion: '4.0.1',
        format: ['application/fhir+json'],
        rest: [
          {
            mode: 'server',
            documentation: 'Consortium members only: mutual TLS with a member certificate of the consortium CA, the member active on the ledger; ' +
              `every request carries a requester assertion (${ASSERTION_HEADER}: compact JWS, typ ${ASSERTION_TYPE}, ES256 with the member's ledger signing key).`,
            security: { cors: false, description: 'Mutual TLS (TLS 1.3) with consortium member certificates, plus a per-request signed requester assertion' },
            resource: [...byType].map(([type, ops]) => ({
              type,
              operation: ops.map((o) => ({ name: o.name, definition: o.definition, documentation: o.documentation })),
            })),
          },
        ],
      },
    };
  };
}
