import { assertEraseScope } from '../../access/reserved.ts';
import { eraseByPolicy } from '../../audit/erasure.ts';
import type { Handler } from '../context.ts';
import { errors, informational } from '../outcome.ts';
import { supportedParams } from './common.ts';

/**
 * POST [base]/Patient/[id]/$erase — right to erasure by crypto-shredding: the patient's data key is
 * destroyed, so every version sealed under it (the patient's compartment) is unreadable for good; its index
 * terms are removed. The erasure is recorded in the access log and anchored on the ledger before the key is
 * destroyed (audit/erasure.ts). Idempotent. Needs the erase scope (access/reserved.ts), never Patient.d.
 * With a second approver required, the first call answers 202 (pending) and a different user's call erases.
 */
export const erase: Handler = async (req, ctx, { id }) => {
  supportedParams(req, [], '$erase');
  assertEraseScope(req.auth);
  const policy = ctx.repo.erasurePolicy;
  if (!policy) throw errors.notSupported('this gateway is not configured to erase');
  const outcome = await eraseByPolicy(ctx.repo, policy, id, req.auth.subject);
  if (outcome.state === 'pending') {
    return {
      status: 202,
      body: {
        resourceType: 'Parameters',
        parameter: [
          { name: 'requestedAt', valueInstant: outcome.requestedAt },
          { name: 'outcome', resource: informational('the erasure request is recorded; a different user with the erase scope must call $erase on this patient to confirm it') },
        ],
      },
    };
  }
  return {
    status: 200,
    body: {
      resourceType: 'Parameters',
      parameter: [
        { name: 'erasedAt', valueInstant: outcome.erasedAt },
        { name: 'resourcesErased', valueInteger: outcome.resources },
        { name: 'outcome', resource: informational("the patient's data key is destroyed; every version sealed under it is unreadable for good") },
      ],
    },
  };
};

