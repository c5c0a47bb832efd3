import type { Handler } from '../context.ts';
import { assertAnchorIntact, readAccessible, requireAccess, versionHeaders } from './common.ts';

/** GET [base]/[type]/[id] */
export const read: Handler = async (req, ctx, { type, id }) => {
  const access = requireAccess(req, type, 'r');
  const v = await readAccessible(ctx, access, type, id);
  await assertAnchorIntact(v, ctx);
  return { status: 200, headers: versionHeaders(v, ctx), body: v.json };
};
