import type { Handler } from '../context.ts';
import { assertAnchorIntact, assertVersionAccessible, requireAccess, versionHeaders } from './common.ts';

/** GET [base]/[type]/[id] */
export const read: Handler = async (req, ctx, { type, id }) => {
  const access = requireAccess(req, type, 'r');
  const v = await ctx.repo.read(type, id);
  assertVersionAccessible(access, v);
  await assertAnchorIntact(v, ctx);
  return { status: 200, headers: versionHeaders(v, ctx), body: v.json };
};
