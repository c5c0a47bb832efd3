import { requestConsent } from '../../access/consent-filter.ts';
import type { Handler } from '../context.ts';
import { subsetted } from '../repository.ts';
import { parseElements } from '../search/query.ts';
import { assertAnchorIntact, requireAccess, supportedParams, versionHeaders } from './common.ts';
import { readAccessible } from './authorization.ts';

/** Query parameters of read and vread: `_elements` shapes the resource (marked SUBSETTED). */
export function readShaping(req: Parameters<Handler>[0], type: string, interaction: string): { elements?: string[] } {
  const elements = supportedParams(req, ['_elements'], interaction).filter(([k]) => k === '_elements');
  return elements.length ? { elements: parseElements(type, elements.map(([, v]) => v).join(',')) } : {};
}

/** GET [base]/[type]/[id] */
export const read: Handler = async (req, ctx, { type, id }) => {
  const access = requireAccess(req, type, 'r');
  const { elements } = readShaping(req, type, 'read');
  const consent = requestConsent(req, ctx);
  const v = await readAccessible(ctx, access, type, id);
  await assertAnchorIntact(v, ctx);
  // A request that states a purpose of use gets what the patient's Consent allows (access/consent-filter.ts).
  const refusal = await consent?.refusal(v);
  if (refusal) return refusal;
  return { status: 200, headers: versionHeaders(v, ctx), body: elements ? subsetted(v, elements).json : v.json, disclosure: consent?.facts() };
};
