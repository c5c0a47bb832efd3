/** Small hand-made bundles for tests. */

/** A transaction: one Patient (urn:uuid) and `observations` Observations referring to it. */
export function transactionOf(observations: number, tag: string) {
  const patientUrl = 'urn:uuid:5d5c1e8a-0000-4000-8000-000000000001';
  return {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      {
        fullUrl: patientUrl,
        resource: { resourceType: 'Patient', identifier: [{ system: 'urn:test', value: tag }] },
        request: { method: 'POST', url: 'Patient' },
      },
      ...Array.from({ length: observations }, (_, i) => ({
        fullUrl: `urn:uuid:5d5c1e8a-0000-4000-8000-${String(i + 2).padStart(12, '0')}`,
        resource: {
          resourceType: 'Observation',
          status: 'final',
          identifier: [{ system: 'urn:test', value: `${tag}-${i}` }],
          code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
          subject: { reference: patientUrl },
          valueQuantity: { value: 60 + i, unit: '/min' },
        },
        request: { method: 'POST', url: 'Observation' },
      })),
    ],
  };
}
