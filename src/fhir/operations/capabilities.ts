/**
 * GET [base]/metadata — generated from what is implemented: the route table's interactions and the
 * search parameters the gateway indexes. Nothing is advertised that does not work.
 */
import { ACCESS_LOG_TYPE } from '../../access/reserved.ts';
import type { Handler } from '../context.ts';
import { indexedParams, type IndexedParam } from '../search/parameters.ts';
import { heldProfileDetails, knownResourceTypes } from '../validation/index.ts';
import { PATCH_FORMATS } from './patch.ts';

const TYPE_INTERACTIONS = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'history-type', 'create', 'search-type'];
/** The access log is append-only through the API (access/reserved.ts): read and search only. */
const ACCESS_LOG_INTERACTIONS = ['read', 'vread', 'history-instance', 'history-type', 'search-type'];

const COMMON_SEARCH = [
  { name: '_id', type: 'token', definition: 'http://hl7.org/fhir/SearchParameter/Resource-id', documentation: 'Logical id; comma-separated for several' },
  {
    name: '_lastUpdated', type: 'date', definition: 'http://hl7.org/fhir/SearchParameter/Resource-lastUpdated',
    documentation: 'When the resource version last changed; prefixes eq, gt, ge, lt, le, sa, eb; sortable',
  },
];

/** A search across types (`GET [base]?_type=…`) takes the criteria every type shares. */
const SYSTEM_SEARCH = COMMON_SEARCH.map((p) => ({ ...p, documentation: p.documentation.replace('; sortable', '') }));

const HOW: Record<IndexedParam['type'], string> = {
  token: 'system|code, code or |code; :not',
  reference: 'Type/id, id, absolute URL; :Type; chained one level (param.name, param:Type.name)',
  string: 'starts with, case- and accent-insensitive; :exact',
  date: 'prefixes eq, lt, gt, le, ge, sa, eb',
  number: 'prefixes eq, ne, lt, gt, le, ge, sa, eb, ap',
  quantity: '[prefix]number, [prefix]number|system|code, [prefix]number||unit',
  uri: 'exact',
};

const PATIENT_OPERATIONS = [
  {
    name: 'everything', definition: 'http://hl7.org/fhir/OperationDefinition/Patient-everything',
    documentation: 'The patient compartment, paged; _since, _type, _count',
  },
  {
    name: 'erase', definition: 'urn:medblock:operation:erase',
    documentation: 'Right to erasure by crypto-shredding: destroys the patient\'s data key (POST; needs the erase scope user/Patient.$erase or system/Patient.$erase)',
  },
];

let cached: object | undefined;

/** `_revinclude` targets: Source:param for every reference parameter that can point at a type. */
function revIncludes(): Map<string, string[]> {
  const byTarget = new Map<string, string[]>();
  for (const source of knownResourceTypes()) {
    for (const p of indexedParams(source).values()) {
      if (p.type !== 'reference') continue;
      for (const t of p.targets) {
        const list = byTarget.get(t) ?? [];
        list.push(`${source}:${p.code}`);
        byTarget.set(t, list);
      }
    }
  }
  return byTarget;
}

function build(): object {
  const profiles = heldProfileDetails();
  const rev = revIncludes();
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    software: { name: 'MedBlock Gateway', version: process.env.npm_package_version ?? '0.1.0' },
    implementation: { description: 'MedBlock Gateway FHIR R4 endpoint' },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'application/json'],
    patchFormat: PATCH_FORMATS,
    rest: [
      {
        mode: 'server',
        security: {
          description: 'Bearer JWT required on every request except GET metadata; SMART v1 (user/Type.read|write) and v2 (user/Type.cruds) scopes',
          service: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR' }] }],
        },
        resource: knownResourceTypes().map((type) => {
          const supportedProfile = profiles.filter((p) => p.type === type).map((p) => p.url);
          return {
            type,
            ...(supportedProfile.length ? { supportedProfile } : {}),
            interaction: (type === ACCESS_LOG_TYPE ? ACCESS_LOG_INTERACTIONS : TYPE_INTERACTIONS).map((code) => ({ code })),
            versioning: 'versioned-update',
            readHistory: true,
            updateCreate: true,
            conditionalCreate: true,
            conditionalRead: 'not-supported',
            conditionalUpdate: true,
            conditionalDelete: 'single',
            ...(type === ACCESS_LOG_TYPE
              ? { documentation: 'The append-only access log: read and search with the auditor scope (user/AuditEvent.rs)', updateCreate: false, conditionalCreate: false, conditionalUpdate: false, conditionalDelete: 'not-supported' }
              : {}),
            searchInclude: [...indexedParams(type).values()].filter((p) => p.type === 'reference').map((p) => `${type}:${p.code}`),
            searchRevInclude: rev.get(type) ?? [],
            searchParam: [
              ...COMMON_SEARCH,
              ...[...indexedParams(type).values()].map((p) => ({
                name: p.code, type: p.type, definition: p.definition, documentation: `${p.documentation} [${HOW[p.type]}]`,
              })),
            ],
            operation: [
              { name: 'validate', definition: 'http://hl7.org/fhir/OperationDefinition/Resource-validate' },
              ...(type === 'Patient' ? PATIENT_OPERATIONS : []),
            ],
          };
        }),
        interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'history-system' }, { code: 'search-system' }],
        searchParam: SYSTEM_SEARCH,
        compartment: ['http://hl7.org/fhir/CompartmentDefinition/patient'],
      },
    ],
  };
}

export const capabilities: Handler = async () => {
  cached ??= build();
  return { status: 200, body: cached };
};
