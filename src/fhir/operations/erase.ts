import type { Handler } from '../context.ts';
import { errors } from '../outcome.ts';
import { requireAccess, supportedParams } from './common.ts';

/**
 * POST [base]/Patient/[id]/$erase — right to erasure by crypto-shredding: the patient's data key is
 * destroyed, so every version sealed under it (the patient's compartment) is unreadable for good; its index
 * terms are removed. The erasure is kept as the key's tombstone (time only, no PHI). Idempotent.
 * Needs delete on Patient with user- or system-level access: a patient-bound token cannot erase.
 */
export const erase: Handler = async (req, ctx, { id }) => {
  supportedParams(req, [], '$erase');
  const access = requireAccess(req, 'Patient', 'd');
  if (access.kind !== 'all') throw errors.forbidden('$erase needs user/ or system/ delete access on Patient');
  const { resources, erasedAt } = await ctx.repo.erase(id);
  return {
    status: 200,
    body: {
      resourceType: 'Parameters',
      parameter: [
        { name: 'erasedAt', valueInstant: erasedAt },
        { name: 'resourcesErased', valueInteger: resources },
        { name: 'outcome', resource: { resourceType: 'OperationOutcome', issue: [{ severity: 'information', code: 'informational', diagnostics: "the patient's data key is destroyed; every version sealed under it is unreadable for good" }] } },
      ],
    },
  };
};
