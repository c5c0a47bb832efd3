import { requestConsent } from '../../access/consent-filter.ts';
import type { Handler } from '../context.ts';
import { subsetted } from '../repository.ts';
import { readShaping } from './read.ts';
import { assertAnchorIntact, requireAccess, versionHeaders } from './common.ts';
import { vreadAccessible } from './authorization.ts';

/** GET [base]/[type]/[id]/_history/[vid] */
export const vread: Handler = async (req, ctx, { type, id, vid }) => {
  const access = requireAccess(req, type, 'r');
  const { elements } = readShaping(req, type, 'vread');
  const consent = requestConsent(req, ctx);
  const v = await vreadAccessible(ctx, access, type, id, vid);
  await assertAnchorIntact(v, ctx);
  // A request that states a purpose of use gets what the patient's Consent allows (access/consent-filter.ts).
  const refusal = await consent?.refusal(v);
  if (refusal) return refusal;
  return { status: 200, headers: versionHeaders(v, ctx), body: elements ? subsetted(v, elements).json : v.json, disclosure: consent?.facts() };
};
