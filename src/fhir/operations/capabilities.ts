/**
 * GET [base]/metadata — generated from what is implemented: the route table's interactions and the
 * search parameters the gateway indexes. Nothing is advertised that does not work.
 */
import type { Handler } from '../context.ts';
import { indexedParams } from '../search/parameters.ts';
import { heldProfileDetails, knownResourceTypes } from '../validation/index.ts';

const TYPE_INTERACTIONS = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'history-type', 'create', 'search-type'];

const COMMON_SEARCH = [
  { name: '_id', type: 'token', definition: 'http://hl7.org/fhir/SearchParameter/Resource-id', documentation: 'Logical id; comma-separated for several' },
  {
    name: '_lastUpdated', type: 'date', definition: 'http://hl7.org/fhir/SearchParameter/Resource-lastUpdated',
    documentation: 'When the resource version last changed; prefixes eq, gt, ge, lt, le, sa, eb',
  },
];

let cached: object | undefined;

function build(): object {
  const profiles = heldProfileDetails();
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    software: { name: 'MedBlock Gateway', version: process.env.npm_package_version ?? '0.1.0' },
    implementation: { description: 'MedBlock Gateway FHIR R4 endpoint' },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'application/json'],
    patchFormat: ['application/json-patch+json'],
    rest: [
      {
        mode: 'server',
        security: {
          description: 'Bearer JWT required on every request; SMART v1 (user/Type.read|write) and v2 (user/Type.cruds) scopes',
          service: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR' }] }],
        },
        resource: knownResourceTypes().map((type) => {
          const supportedProfile = profiles.filter((p) => p.type === type).map((p) => p.url);
          return {
            type,
            ...(supportedProfile.length ? { supportedProfile } : {}),
            interaction: TYPE_INTERACTIONS.map((code) => ({ code })),
            versioning: 'versioned-update',
            readHistory: true,
            updateCreate: true,
            conditionalCreate: true,
            conditionalRead: 'not-supported',
            conditionalUpdate: true,
            conditionalDelete: 'single',
            searchParam: [
              ...COMMON_SEARCH,
              ...[...indexedParams(type).values()].map((p) => ({
                name: p.code, type: p.type, definition: p.definition, documentation: p.documentation,
              })),
            ],
            operation: [{ name: 'validate', definition: 'http://hl7.org/fhir/OperationDefinition/Resource-validate' }],
          };
        }),
        interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'history-system' }],
      },
    ],
  };
}

export const capabilities: Handler = async () => {
  cached ??= build();
  return { status: 200, body: cached };
};
